/**
 * The queue under several agents, each its own process with its own connection
 * (test/support/queue_agent.ts), the same on the embedded database and on PostgreSQL: 2 and 8
 * agents drain 2,000 jobs with every job completed exactly once; agents killed with SIGKILL
 * mid-lease and mid-stream lose nothing, their jobs come back after the lease and are finished by
 * another agent, a late answer is refused; concurrent first opens apply the migration once.
 */
import { isPostgresUrl } from "../core/panel/store/mod.ts";
import { openPostgresDatabase } from "../core/panel/store/postgres.ts";
import type { SqlDatabase } from "../core/panel/store/sql.ts";
import { openSqliteDatabase } from "../core/panel/store/sqlite.ts";
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import {
  type AgentLine,
  agentLines,
  openTestStore,
  parseLines,
  readUntil,
  seedUsers,
  spawnAgent,
  type StoreBackend,
  withPostgres,
  withSqlite,
} from "./support/panel_store.ts";

function rawDatabase(location: string): SqlDatabase {
  return isPostgresUrl(location)
    ? openPostgresDatabase(location, { maxConnections: 1 })
    : openSqliteDatabase(location);
}

function completedBy(lines: readonly AgentLine[]): number[] {
  return lines.flatMap((l) => "completed" in l ? [l.completed] : []);
}

/** Per job id, how many accepted completions the audit log recorded. */
async function acceptedCompletions(database: string): Promise<Map<number, number>> {
  const db = rawDatabase(database);
  try {
    const rows = await db.query(
      "SELECT job_id, count(*) AS n FROM audit WHERE action = 'job.complete' AND outcome = 'ok' GROUP BY job_id",
    );
    return new Map(rows.map((r) => [Number(r.job_id), Number(r.n)]));
  } finally {
    await db.close();
  }
}

/** Queues `count` users on a fresh database and returns its location and the job ids. */
async function queueOf(
  backend: StoreBackend,
  label: string,
  count: number,
): Promise<{ database: string; jobIds: number[] }> {
  const database = await backend.fresh(label);
  await using store = await openTestStore(database);
  const users = await seedUsers(store, count);
  const outcomes = await store.enqueue({ userIds: users, actor: "admin" });
  return { database, jobIds: outcomes.map((o) => "jobId" in o ? o.jobId : -1) };
}

/** Kills `child` with SIGKILL and reads what it printed before dying. */
async function kill(
  child: Deno.ChildProcess,
  output: { reader: ReadableStreamDefaultReader<string>; rest: string },
): Promise<string> {
  child.kill("SIGKILL");
  let rest = output.rest;
  for (;;) {
    const { value, done } = await output.reader.read();
    if (done) break;
    rest += value;
  }
  await child.stderr.cancel();
  const status = await child.status;
  assertEquals(status.signal, "SIGKILL");
  return rest;
}

async function suite(t: Deno.TestContext, backend: StoreBackend): Promise<void> {
  await t.step("processes opening one new database at once apply each migration once", async () => {
    const database = await backend.fresh("open_race");
    const agents = Array.from(
      { length: 4 },
      (_, i) => spawnAgent(database, `opener-${i}`, { mode: "open-only" }),
    );
    const reports = await Promise.all(agents.map((a, i) => agentLines(a, `opener-${i}`)));
    const applied = reports.flat().flatMap((l) => "migrations" in l ? l.migrations.applied : []);
    deepStrictEqual(applied.sort(), [1, 2]);
  });

  for (const agents of [2, 8]) {
    await t.step(
      `${agents} agents drain 2,000 jobs: every job completed exactly once, none lost`,
      async () => {
        const { database, jobIds } = await queueOf(backend, `drain${agents}`, 2000);
        const children = Array.from(
          { length: agents },
          (_, i) => spawnAgent(database, `agent-${i}`, { batch: 10 }),
        );
        const outputs = await Promise.all(children.map((c, i) => agentLines(c, `agent-${i}`)));
        const completed = outputs.flatMap(completedBy);
        assertEquals(completed.length, 2000, "one accepted completion per job across all agents");
        deepStrictEqual([...completed].sort((a, b) => a - b), [...jobIds].sort((a, b) => a - b));
        assertEquals(outputs.flat().filter((l) => "refused" in l).length, 0);
        const audit = await acceptedCompletions(database);
        assertEquals(audit.size, 2000);
        assert(
          [...audit.values()].every((n) => n === 1),
          "the audit log has one accepted completion per job",
        );
        await using store = await openTestStore(database);
        deepStrictEqual(await store.counts(), {
          queued: 0,
          leased: 0,
          verified: 2000,
          skipped: 0,
          failed: 0,
          cancelled: 0,
        });
      },
    );
  }

  await t.step(
    "agents killed mid-lease lose nothing: their jobs return after the lease, another agent finishes them, a late answer is refused",
    async () => {
      const total = 600;
      const { database, jobIds } = await queueOf(backend, "killed", total);

      // An agent is killed in the middle of its stream of completions (it pauses 20 ms after each,
      // so it is still busy when the test has seen 50).
      const streaming = spawnAgent(database, "streaming", { batch: 10, leaseMs: 1500, pauseMs: 20 });
      const streamOut = await readUntil(streaming, (_, seen) => completedBy(seen).length >= 50);
      const streamed = completedBy([...streamOut.lines, ...parseLines(await kill(streaming, streamOut))]);
      assert(streamed.length >= 50 && streamed.length < total - 50);

      // An agent takes 25 jobs and is killed while holding them.
      const victim = spawnAgent(database, "victim", {
        mode: "wait-before-complete",
        batch: 25,
        leaseMs: 8000,
      });
      const victimOut = await readUntil(victim, (l) => "leased" in l);
      const victimJobs = victimOut.lines.flatMap((l) => "leased" in l ? l.leased : []);
      const victimToken = victimOut.lines.flatMap((l) => "leased" in l && l.token ? [l.token] : [])[0]!;
      assertEquals(victimJobs.length, 25);
      await kill(victim, victimOut);

      // An agent takes 25 jobs and stays silent until the end: its answers will be late.
      const late = spawnAgent(database, "late", { mode: "wait-before-complete", batch: 25, leaseMs: 8000 });
      const lateOut = await readUntil(late, (l) => "leased" in l);
      const lateJobs = lateOut.lines.flatMap((l) => "leased" in l ? l.leased : []);
      assertEquals(lateJobs.length, 25);

      // Reopened after the kills: everything the killed agents were told is there.
      {
        await using store = await openTestStore(database);
        deepStrictEqual(store.migrations.applied, [], "migrations are not applied again");
        for (const id of streamed) {
          const job = await store.getJob(id);
          deepStrictEqual([job?.state, job?.leaseHolder], ["verified", "streaming"], `job ${id}`);
        }
        for (const id of victimJobs) {
          const job = await store.getJob(id);
          deepStrictEqual([job?.state, job?.leaseHolder], ["leased", "victim"], `job ${id}`);
        }
        const counts = await store.counts();
        assertEquals(counts.verified, streamed.length);
        assertEquals(counts.queued + counts.leased + counts.verified, total);
      }

      // Another agent drains the rest, and the killed and silent agents' jobs once their leases expire.
      const rescuer = spawnAgent(database, "rescuer", { batch: 10, leaseMs: 30_000 });
      const rescued = completedBy(await agentLines(rescuer, "rescuer"));
      deepStrictEqual(
        [...streamed, ...rescued].sort((a, b) => a - b),
        [...jobIds].sort((a, b) => a - b),
        "every job finished once, by the streaming agent or the rescuer",
      );
      for (const id of [...victimJobs, ...lateJobs]) {
        assert(rescued.includes(id), `job ${id} finished by the rescuer`);
      }

      // The silent agent wakes up: its late answers are refused.
      const writer = late.stdin.getWriter();
      await writer.write(new TextEncoder().encode("answer\n"));
      await writer.close();
      let rest = lateOut.rest;
      for (;;) {
        const { value, done } = await lateOut.reader.read();
        if (done) break;
        rest += value;
      }
      await late.stderr.cancel();
      assert((await late.status).success);
      const lateAnswers = parseLines(rest);
      deepStrictEqual(
        lateAnswers.map((l) => "refused" in l ? l.reason : "accepted"),
        lateJobs.map(() => "finished"),
      );

      await using store = await openTestStore(database);
      // The killed agent's answer, had it come back (a restarted agent replaying its journal): refused.
      const ghost = await store.complete({ jobId: victimJobs[0]!, agent: "victim", token: victimToken }, {
        state: "verified",
      });
      deepStrictEqual([ghost.accepted, !ghost.accepted && ghost.reason], [false, "finished"]);
      deepStrictEqual(await store.counts(), {
        queued: 0,
        leased: 0,
        verified: total,
        skipped: 0,
        failed: 0,
        cancelled: 0,
      });
      const audit = await acceptedCompletions(database);
      assert(jobIds.every((id) => audit.get(id) === 1), "one accepted completion per job in the audit log");
      const history = (await store.listAudit({ jobId: victimJobs[0]!, limit: 20 })).items.toReversed();
      deepStrictEqual(
        history.slice(-4).map((
          e,
        ) => [e.action, e.actor, e.outcome, e.detail?.reclaimedFrom ?? e.detail?.reason ?? null]),
        [
          ["job.lease", "victim", "ok", history.at(-4)?.detail?.reclaimedFrom ?? null],
          ["job.lease", "rescuer", "ok", "victim"],
          ["job.complete", "rescuer", "ok", null],
          ["job.complete", "victim", "refused", "finished"],
        ],
      );
      const lateHistory = (await store.listAudit({ jobId: lateJobs[0]!, limit: 20 })).items.toReversed();
      deepStrictEqual(lateHistory.at(-1)?.actor, "late");
      deepStrictEqual([lateHistory.at(-1)?.outcome, lateHistory.at(-1)?.detail?.reason], [
        "refused",
        "finished",
      ]);
    },
  );
}

Deno.test("queue agents on the embedded database (SQLite), one process each", async (t) => {
  await withSqlite((backend) => suite(t, backend));
});

Deno.test("queue agents on PostgreSQL (a throwaway cluster on 127.0.0.1), one process each", async (t) => {
  await withPostgres((backend) => suite(t, backend));
});
