/**
 * The panel store's behaviour, the same suite on the embedded database and on a real PostgreSQL
 * cluster started by the test: migrations, users, the queue's operations and refusals, the audit
 * log, keyset pages. Lease expiry is driven by a settable clock, never by waiting. The
 * multi-process side (concurrent agents, SIGKILL) is test/panel_queue_agents_test.ts.
 */
import { ProvisioningError } from "../core/errors.ts";
import { isPostgresUrl } from "../core/panel/store/mod.ts";
import { migrate } from "../core/panel/store/migrate.ts";
import { openPostgresDatabase } from "../core/panel/store/postgres.ts";
import { migrations } from "../core/panel/store/schema.ts";
import type { SqlDatabase } from "../core/panel/store/sql.ts";
import { openSqliteDatabase } from "../core/panel/store/sqlite.ts";
import type { LeaseAnswer } from "../core/panel/store/types.ts";
import { assert, assertEquals, deepStrictEqual, rejects } from "./assert.ts";
import {
  openTestStore,
  seedUsers,
  type StoreBackend,
  TestClock,
  withPostgres,
  withSqlite,
} from "./support/panel_store.ts";

function rawDatabase(location: string): SqlDatabase {
  return isPostgresUrl(location)
    ? openPostgresDatabase(location, { maxConnections: 1 })
    : openSqliteDatabase(location);
}

/** A loopback port nothing listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function refusedWith(answer: LeaseAnswer, reason: string): void {
  assert(!answer.accepted, `expected a refusal (${reason}), got acceptance`);
  if (!answer.accepted) assertEquals(answer.reason, reason);
}

async function suite(t: Deno.TestContext, backend: StoreBackend): Promise<void> {
  await t.step("migrations are applied once, in order, and reopening applies nothing", async () => {
    const database = await backend.fresh("migrations");
    const first = await openTestStore(database);
    deepStrictEqual(first.migrations, { applied: [1, 2], version: 2 });
    if (backend.name === "sqlite" && Deno.build.os !== "windows") {
      for (const file of [database, `${database}-wal`]) {
        assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600, `${file} is the owner's only`);
      }
    }
    await first.close();
    const again = await openTestStore(database);
    deepStrictEqual(again.migrations, { applied: [], version: 2 });
    await again.close();
    const db = rawDatabase(database);
    try {
      const rows = await db.query("SELECT version, name FROM schema_migrations ORDER BY version");
      deepStrictEqual(
        rows.map((r) => [Number(r.version), r.name]),
        migrations.map((m) => [m.version, m.name]),
      );
      // An edited released migration, or a schema newer than the program, is refused.
      const edited = [{ ...migrations[0]!, statements: () => ["SELECT 1"] }];
      const mismatch = await rejects(migrate(db, { migrations: edited }), ProvisioningError);
      assertEquals(mismatch.code, "panel-schema-mismatch");
      const older = await rejects(migrate(db, { migrations: [] }), ProvisioningError);
      assertEquals(older.code, "panel-schema-newer");
      // A further migration is applied on the next open, after the others.
      const next = [...migrations, {
        version: 3,
        name: "test column",
        statements: () => ["ALTER TABLE agents ADD COLUMN label TEXT"],
      }];
      deepStrictEqual(await migrate(db, { migrations: next }), { applied: [3], version: 3 });
      deepStrictEqual(await migrate(db, { migrations: next }), { applied: [], version: 3 });
    } finally {
      await db.close();
    }
  });

  if (backend.name === "postgres") {
    await t.step("two panels opening one new database at once apply the migration once", async () => {
      const database = await backend.fresh("concurrent_open");
      const [a, b] = await Promise.all([openTestStore(database), openTestStore(database)]);
      deepStrictEqual([...a.migrations.applied, ...b.migrations.applied].sort(), [1, 2]);
      await a.close();
      await b.close();
    });
  }

  await t.step("a database that cannot be opened is a clear error, without the password", async () => {
    const location = backend.name === "postgres"
      ? `postgres://panel:s3cret-pw@127.0.0.1:${closedPort()}/nowhere`
      : `/tmp/provisioning-no-such-folder-${crypto.randomUUID()}/panel.sqlite`;
    const error = await rejects(openTestStore(location, { connectTimeoutSeconds: 5 }), ProvisioningError);
    assertEquals(
      error.code,
      backend.name === "postgres" ? "panel-database-unreachable" : "panel-database-open",
    );
    assert(!error.message.includes("s3cret-pw"), error.message);
    assert(error.hint !== undefined);
  });

  await t.step(
    "importing users is an upsert by object id; a full sync marks the missing not in sync",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("users"), { now: clock.now });
      const first = await store.importUsers({
        provider: "sandbox",
        actor: "admin@contoso.test",
        users: [
          { objectId: "o-1", signInName: "Bob@contoso.test", displayName: "Bob", passkeyStatus: "none" },
          { objectId: "o-2", signInName: "alice@contoso.test" },
          { objectId: "o-2", signInName: "alice@contoso.test", displayName: "Alice" },
        ],
      });
      deepStrictEqual(first, { imported: 2, notInSync: 0 });
      clock.advance(1000);
      const second = await store.importUsers({
        provider: "sandbox",
        actor: "admin@contoso.test",
        users: [{ objectId: "o-1", signInName: "bob@contoso.test", displayName: "Bob B." }],
        fullSync: true,
      });
      deepStrictEqual(second, { imported: 1, notInSync: 1 });
      const page = await store.listUsers();
      deepStrictEqual(
        page.items.map((u) => [u.objectId, u.signInName, u.displayName, u.syncState, u.passkeyStatus]),
        [
          ["o-2", "alice@contoso.test", "Alice", "not-in-sync", "unknown"],
          // An import that did not ask for passkeys keeps the status an earlier one found.
          ["o-1", "bob@contoso.test", "Bob B.", "in-sync", "none"],
        ],
      );
      const audit = await store.listAudit();
      deepStrictEqual(audit.items.map((a) => [a.action, a.actor, a.detail?.imported]), [
        ["users.import", "admin@contoso.test", 1],
        ["users.import", "admin@contoso.test", 2],
      ]);
    },
  );

  await t.step(
    "a user is queued once while a job waits or runs; not-in-sync and unknown users are refused",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("enqueue"), { now: clock.now });
      const [alice, bob] = await seedUsers(store, 2);
      await store.importUsers({
        provider: "sandbox",
        actor: "t",
        users: [{ objectId: "object-000001", signInName: "user000001@contoso.test" }],
      });
      clock.advance(1);
      await store.importUsers({
        provider: "sandbox",
        actor: "t",
        users: [{ objectId: "object-000001", signInName: "user000001@contoso.test" }],
        fullSync: true,
      });
      // bob (object-000002) was not in the full sync: he is not in sync now.
      const first = await store.enqueue({ userIds: [alice!, alice!, bob!, 999_999], actor: "admin" });
      assertEquals(first[0]!.outcome, "queued");
      const jobId = first[0]!.outcome === "queued" ? first[0]!.jobId : -1;
      deepStrictEqual(first.slice(1), [
        { userId: alice!, outcome: "already-queued", jobId },
        { userId: bob!, outcome: "not-in-sync" },
        { userId: 999_999, outcome: "unknown-user" },
      ]);
      const [leased] = await store.lease({ agent: "a1", limit: 5, leaseMs: 1000 });
      assertEquals(leased!.job.id, jobId);
      deepStrictEqual(await store.enqueue({ userIds: [alice!], actor: "admin" }), [
        { userId: alice!, outcome: "already-queued", jobId },
      ]);
      assert((await store.complete(leased!.lease, { state: "verified" })).accepted);
      // Finished: the user can be queued again (a new job).
      const again = await store.enqueue({ userIds: [alice!], actor: "admin" });
      assertEquals(again[0]!.outcome, "queued");
      assert(again[0]!.outcome === "queued" && again[0]!.jobId !== jobId);
      const enqueues = (await store.listAudit({ limit: 100 })).items.filter((a) =>
        a.action === "job.enqueue"
      );
      deepStrictEqual(enqueues.map((a) => a.outcome).sort(), [
        "ok",
        "ok",
        "refused",
        "refused",
        "refused",
        "refused",
      ]);
    },
  );

  await t.step(
    "concurrent enqueues of the same users, in opposite orders, queue each user once",
    async () => {
      const database = await backend.fresh("enqueue_race");
      await using a = await openTestStore(database);
      // PostgreSQL: a second store is a second pool of connections. SQLite: one store per process.
      await using b = backend.name === "postgres" ? await openTestStore(database) : null;
      const users = await seedUsers(a, 200);
      const [one, two] = await Promise.all([
        a.enqueue({ userIds: users, actor: "admin-1" }),
        (b ?? a).enqueue({ userIds: users.toReversed(), actor: "admin-2" }),
      ]);
      const queued = [...one, ...two].filter((o) => o.outcome === "queued");
      assertEquals(queued.length, 200);
      assertEquals(new Set(queued.map((o) => o.userId)).size, 200);
      assertEquals((await a.counts()).queued, 200);
      // A repeated id in one call is answered with the job its first occurrence got.
      const repeated = await a.enqueue({ userIds: [users[0]!, users[0]!], actor: "admin-1" });
      deepStrictEqual(repeated.map((o) => o.outcome), ["already-queued", "already-queued"]);
    },
  );

  await t.step(
    "only the lease holder completes; a late answer after the job was re-leased is refused and audited",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("lease"), { now: clock.now });
      const users = await seedUsers(store, 3);
      await store.enqueue({ userIds: users, actor: "admin" });
      const a = await store.lease({ agent: "agent-a", limit: 2, leaseMs: 10_000 });
      deepStrictEqual(a.map((l) => [l.job.state, l.job.attempts, l.reclaimedFrom, l.user.signInName]), [
        ["leased", 1, null, "user000001@contoso.test"],
        ["leased", 1, null, "user000002@contoso.test"],
      ]);
      const b = await store.lease({ agent: "agent-b", limit: 5, leaseMs: 10_000 });
      deepStrictEqual(b.map((l) => l.job.userId), [users[2]]);
      deepStrictEqual(await store.lease({ agent: "agent-b", limit: 5, leaseMs: 10_000 }), []);
      assert((await store.complete(b[0]!.lease, { state: "verified" })).accepted);

      // Another agent, or a forged token, cannot answer for agent-a's lease.
      refusedWith(
        await store.complete({ ...a[0]!.lease, agent: "agent-b" }, { state: "verified" }),
        "lease-lost",
      );
      refusedWith(
        await store.complete({ ...a[0]!.lease, token: crypto.randomUUID() }, { state: "verified" }),
        "lease-lost",
      );
      // Renewing keeps it and records the step.
      clock.advance(8000);
      const renewed = await store.renew(a[0]!.lease, { leaseMs: 10_000, step: "created" });
      assert(
        renewed.accepted && renewed.job.leaseExpiresAt === clock.time + 10_000 &&
          renewed.job.step === "created",
      );

      // agent-a goes quiet: the second job's lease expires and agent-b takes it over.
      clock.advance(2001);
      const taken = await store.lease({ agent: "agent-b", limit: 5, leaseMs: 10_000 });
      deepStrictEqual(taken.map((l) => [l.job.id, l.reclaimedFrom, l.job.attempts]), [[
        a[1]!.job.id,
        "agent-a",
        2,
      ]]);
      // agent-a's late answers are refused; agent-b's count.
      refusedWith(await store.complete(a[1]!.lease, { state: "verified" }), "lease-lost");
      refusedWith(await store.renew(a[1]!.lease, { leaseMs: 1000 }), "lease-lost");
      assert(
        (await store.complete(taken[0]!.lease, { state: "verified", result: { credentialId: "c1" } }))
          .accepted,
      );
      refusedWith(await store.complete(a[1]!.lease, { state: "verified" }), "finished");
      refusedWith(await store.complete(taken[0]!.lease, { state: "skipped" }), "finished");
      // A lease past its expiry that nobody took over is still its holder's.
      clock.advance(30_000);
      assert(
        (await store.complete(a[0]!.lease, { state: "skipped", result: { reason: "has-passkey" } })).accepted,
      );

      const job = await store.getJob(a[1]!.job.id);
      deepStrictEqual([job!.state, job!.leaseHolder, job!.result], ["verified", "agent-b", {
        credentialId: "c1",
      }]);
      const history = (await store.listAudit({ jobId: a[1]!.job.id, limit: 20 })).items.toReversed();
      deepStrictEqual(
        history.map((
          e,
        ) => [e.action, e.actor, e.outcome, e.detail?.reason ?? e.detail?.reclaimedFrom ?? null]),
        [
          ["job.enqueue", "admin", "ok", null],
          ["job.lease", "agent-a", "ok", null],
          ["job.lease", "agent-b", "ok", "agent-a"],
          ["job.complete", "agent-a", "refused", "lease-lost"],
          ["job.renew", "agent-a", "refused", "lease-lost"],
          ["job.complete", "agent-b", "ok", null],
          ["job.complete", "agent-a", "refused", "finished"],
          ["job.complete", "agent-b", "refused", "finished"],
        ],
      );
      deepStrictEqual((await store.listAgents()).map((g) => g.id), ["agent-a", "agent-b"]);
    },
  );

  await t.step(
    "a retryable failure returns after its backoff until attempts run out; others fail at once",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("fail"), {
        now: clock.now,
        maxAttempts: 2,
        retryDelayMs: () => 5000,
      });
      const [u1, u2] = await seedUsers(store, 2);
      await store.enqueue({ userIds: [u1!, u2!], actor: "admin" });
      const [j1, j2] = await store.lease({ agent: "a", limit: 2, leaseMs: 60_000 });
      const soft = await store.fail(j1!.lease, {
        code: "throttled",
        message: "Graph answered 429",
        retryable: true,
      });
      assert(soft.accepted && soft.job.state === "queued" && soft.job.availableAt === clock.time + 5000);
      const hard = await store.fail(j2!.lease, {
        code: "attestation-refused",
        message: "x".repeat(5000),
        retryable: false,
      });
      assert(
        hard.accepted && hard.job.state === "failed" && hard.job.lastError?.code === "attestation-refused",
      );
      assertEquals(hard.job.lastError?.message.length, 2000);
      deepStrictEqual(
        await store.lease({ agent: "a", limit: 2, leaseMs: 60_000 }),
        [],
        "not before the backoff",
      );
      clock.advance(5000);
      const [again] = await store.lease({ agent: "a", limit: 2, leaseMs: 60_000 });
      assertEquals(again!.job.attempts, 2);
      const last = await store.fail(again!.lease, { code: "throttled", message: "again", retryable: true });
      assert(last.accepted && last.job.state === "failed", "attempts exhausted");
      deepStrictEqual(await store.counts(), {
        queued: 0,
        leased: 0,
        verified: 0,
        skipped: 0,
        failed: 2,
        cancelled: 0,
      });
    },
  );

  await t.step(
    "a job whose every lease expired is failed for the admin, not handed out forever",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("poison"), {
        now: clock.now,
        maxAttempts: 2,
      });
      const [u1, u2] = await seedUsers(store, 2);
      await store.enqueue({ userIds: [u1!], actor: "admin" });
      const [first] = await store.lease({ agent: "a", limit: 1, leaseMs: 1000 });
      clock.advance(1000);
      const [second] = await store.lease({ agent: "b", limit: 1, leaseMs: 1000 });
      deepStrictEqual([second!.job.id, second!.reclaimedFrom, second!.job.attempts], [first!.job.id, "a", 2]);
      clock.advance(1000);
      await store.enqueue({ userIds: [u2!], actor: "admin" });
      const third = await store.lease({ agent: "c", limit: 5, leaseMs: 1000 });
      deepStrictEqual(third.map((l) => l.job.userId), [u2], "the exhausted job is not leased again");
      const job = await store.getJob(first!.job.id);
      deepStrictEqual([job!.state, job!.lastError?.code], ["failed", "lease-expired"]);
      const [last] = (await store.listAudit({ jobId: first!.job.id, limit: 1 })).items;
      deepStrictEqual([last!.actor, last!.action, last!.detail?.holder], ["panel", "job.fail", "b"]);
      const retried = await store.retry({ jobId: first!.job.id, actor: "admin" });
      assert(retried.done && retried.job.state === "queued");
    },
  );

  await t.step(
    "release gives a job back without counting the attempt; cancel and retry by an admin",
    async () => {
      const clock = new TestClock();
      await using store = await openTestStore(await backend.fresh("release"), { now: clock.now });
      const [u1, u2] = await seedUsers(store, 2);
      await store.enqueue({ userIds: [u1!, u2!], actor: "admin" });
      const [j1, j2] = await store.lease({ agent: "a", limit: 2, leaseMs: 60_000 });
      const released = await store.release(j1!.lease);
      assert(released.accepted && released.job.state === "queued" && released.job.attempts === 0);
      refusedWith(await store.complete(j1!.lease, { state: "verified" }), "lease-lost");

      // Cancel a leased job: its holder's next renew is refused as cancelled.
      const cancelled = await store.cancel({ jobId: j2!.job.id, actor: "admin" });
      assert(cancelled.done && cancelled.job.state === "cancelled");
      refusedWith(await store.renew(j2!.lease, { leaseMs: 1000 }), "cancelled");
      deepStrictEqual(await store.cancel({ jobId: j2!.job.id, actor: "admin" }), {
        done: false,
        reason: "finished",
        job: cancelled.job,
      });
      // Retry puts it back; a user with another active job is not queued twice.
      const retried = await store.retry({ jobId: j2!.job.id, actor: "admin" });
      assert(retried.done && retried.job.state === "queued");
      const notAgain = await store.retry({ jobId: j2!.job.id, actor: "admin" });
      assert(!notAgain.done && notAgain.reason === "not-retryable");
      await store.cancel({ jobId: j2!.job.id, actor: "admin" });
      const other = await store.enqueue({ userIds: [u2!], actor: "admin" });
      assertEquals(other[0]!.outcome, "queued");
      const blocked = await store.retry({ jobId: j2!.job.id, actor: "admin" });
      assert(!blocked.done && blocked.reason === "already-queued");
      const missing = await store.cancel({ jobId: 424242, actor: "admin" });
      assert(!missing.done && missing.reason === "unknown-job");
      const actions = (await store.listAudit({ limit: 100 })).items.map((e) => `${e.action}:${e.outcome}`)
        .reverse();
      deepStrictEqual(actions.slice(-11), [
        "job.release:ok",
        "job.complete:refused",
        "job.cancel:ok",
        "job.renew:refused",
        "job.cancel:refused",
        "job.retry:ok",
        "job.retry:refused",
        "job.cancel:ok",
        "job.enqueue:ok",
        "job.retry:refused",
        "job.cancel:refused",
      ]);
    },
  );

  await t.step("users, jobs and the audit log page by keyset: every row once, in order", async () => {
    await using store = await openTestStore(await backend.fresh("pages"));
    const ids = await seedUsers(store, 1234);
    assertEquals(new Set(ids).size, 1234);
    await store.enqueue({ userIds: ids.slice(0, 120), actor: "admin" });
    const names: string[] = [];
    let withJob = 0;
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Awaited<ReturnType<typeof store.listUsers>> = await store.listUsers({ cursor, limit: 100 });
      names.push(...page.items.map((u) => u.signInName));
      withJob += page.items.filter((u) => u.latestJob?.state === "queued").length;
      cursor = page.next;
      pages++;
    } while (cursor !== null);
    assertEquals(pages, 13);
    deepStrictEqual(names, [...names].sort());
    assertEquals(new Set(names).size, 1234);
    assertEquals(withJob, 120);
    const jobIds: number[] = [];
    cursor = null;
    do {
      const page: Awaited<ReturnType<typeof store.listJobs>> = await store.listJobs({
        state: "queued",
        cursor,
        limit: 50,
      });
      jobIds.push(...page.items.map((j) => j.id));
      cursor = page.next;
    } while (cursor !== null);
    assertEquals(jobIds.length, 120);
    deepStrictEqual(jobIds, [...jobIds].sort((x, y) => y - x));
    // A search by sign-in prefix pages the same way.
    const found: string[] = [];
    cursor = null;
    do {
      const page: Awaited<ReturnType<typeof store.listUsers>> = await store.listUsers({
        cursor,
        limit: 30,
        prefix: "USER0001",
      });
      found.push(...page.items.map((u) => u.signInName));
      cursor = page.next;
    } while (cursor !== null);
    deepStrictEqual(found, Array.from({ length: 100 }, (_, i) => `user000${100 + i}@contoso.test`));
    deepStrictEqual((await store.listUsers({ prefix: "nobody" })).items, []);
    const bad = await rejects(store.listUsers({ cursor: "not-a-cursor" }), ProvisioningError);
    assertEquals(bad.code, "panel-cursor-invalid");
  });
}

Deno.test("panel store on the embedded database (SQLite)", async (t) => {
  await withSqlite((backend) => suite(t, backend));
});

Deno.test("panel store on PostgreSQL (a throwaway cluster on 127.0.0.1)", async (t) => {
  await withPostgres((backend) => suite(t, backend));
});
