/**
 * The bulk engine's states without any real provider: driven through its exported API
 * (`runBulk`, `openJournal`, the output writers) against the scripted provider
 * (test/conformance/scripted_provider.ts, which passes the provider conformance suite and has its
 * registrations verified by @simplewebauthn/server) and the real journal store on disk.
 *
 * Shown: the path queued → resolved → options → created → registered → verified; skipped; failed
 * per user; retries of throttling and transient errors; reconciliation after a lost answer and
 * after a crash in `created` or `registered`; halting on a run-wide failure and on a provider that is down;
 * resuming from the journal without redoing finished users.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { formatAaguid } from "../core/aaguid.ts";
import { runBulk } from "../core/jobs/engine.ts";
import type { JobEvent, RunSummary, UserState } from "../core/jobs/events.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { provisionUser } from "../core/jobs/provision_user.ts";
import { readUsersFromList } from "../core/jobs/sources/csv.ts";
import {
  scriptedCodes,
  ScriptedProvider,
  type ScriptedProviderOptions,
} from "./conformance/scripted_provider.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";

const pin = "482916";
const runId = "0123456789ab";
const users = Array.from({ length: 12 }, (_, i) => `user${i + 1}@scripted.test`);

interface World extends AsyncDisposable {
  readonly provider: ScriptedProvider;
  readonly dir: string;
}

async function world(options: Partial<ScriptedProviderOptions> = {}): Promise<World> {
  const provider = new ScriptedProvider({ users, ...options });
  const dir = await Deno.makeTempDir({ prefix: "engine-states-test-" });
  return { provider, dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

interface RunOutcome {
  readonly summary: RunSummary;
  readonly events: JobEvent[];
}

/** One attempt of a run, as the CLI makes it: a journal per run id, fresh output files per attempt. */
async function run(
  w: World,
  list: readonly string[],
  options: {
    journal?: string;
    attempt?: string;
    concurrency?: number;
    maxAttempts?: number;
    abort?: AbortSignal;
    force?: boolean;
  } = {},
): Promise<RunOutcome> {
  await using key = await newTestKey({ pin });
  const aaguid = formatAaguid((await key.client.getInfo()).aaguid);
  const attempt = options.attempt ?? "a";
  await using results = await openResultsFile(`${w.dir}/${attempt}-results.csv`, { fresh: true });
  await using failures = await openFailuresFile(`${w.dir}/${attempt}-failures.csv`, { fresh: true });
  await using journal = await openJournal(`${w.dir}/${options.journal ?? "run"}.jsonl`, {
    runId,
    fingerprint: "f",
    keepFinished: false,
  });
  await using session = await w.provider.connect();
  const events: JobEvent[] = [];
  const summary = await runBulk({
    runId,
    source: readUsersFromList([...list]),
    session,
    authenticator: key,
    authenticatorAaguid: aaguid,
    interaction: scriptedUser([pin]),
    displayName: "Security key",
    concurrency: options.concurrency ?? 3,
    maxAttempts: options.maxAttempts ?? 3,
    retryDelayMs: 5,
    journal,
    results,
    failures,
    onEvent: (event) => events.push(event),
    ...(options.abort ? { abort: options.abort } : {}),
    ...(options.force ? { force: true } : {}),
  });
  return { summary, events };
}

function statesOf(events: readonly JobEvent[], user: string): UserState[] {
  return events.flatMap((e) => e.type === "user-state" && e.user === user ? [e.state] : []);
}

function finishOf(events: readonly JobEvent[], user: string) {
  return events.find((e): e is Extract<JobEvent, { type: "user-finished" }> =>
    e.type === "user-finished" && e.user === user
  );
}

/** The journal's records for one user, in order. */
async function journalOf(w: World, user: string, name = "run"): Promise<Record<string, unknown>[]> {
  const lines = (await Deno.readTextFile(`${w.dir}/${name}.jsonl`)).trim().split("\n");
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r["k"] === user);
}

Deno.test("engine states: each user goes queued → resolved → options → created → registered → verified, journaled in that order", async () => {
  await using w = await world();
  const list = users.slice(0, 4);
  const outcome = await run(w, list);
  assertEquals(outcome.summary.counts.provisioned, 4);
  for (const user of list) {
    deepStrictEqual(statesOf(outcome.events, user), [
      "queued",
      "resolved",
      "options",
      "created",
      "registered",
      "verified",
    ]);
    assertEquals(w.provider.passkeysOf(user).length, 1);
    assert.ok(w.provider.passkeysOf(user)[0]!.verified, "verified by @simplewebauthn/server");
    const journaled = (await journalOf(w, user)).map((r) => r["s"]);
    deepStrictEqual(journaled.filter((s, i) => s !== journaled[i - 1]), [
      "resolved",
      "options",
      "created",
      "registered",
      "verified",
    ]);
  }
});

Deno.test("engine states: a user who already holds a passkey of this key is skipped; --force provisions anyway", async () => {
  await using w = await world();
  const list = users.slice(0, 2);
  await run(w, list, { journal: "first" });
  const second = await run(w, list, { journal: "second" });
  assertEquals(second.summary.counts.skipped, 2);
  assertEquals(finishOf(second.events, list[0]!)?.code, "has-passkey");
  assertEquals(statesOf(second.events, list[0]!).at(-1), "skipped");
  assertEquals(w.provider.passkeysOf(list[0]!).length, 1);
  const forced = await run(w, list.slice(0, 1), { journal: "third", force: true });
  assertEquals(forced.summary.counts.provisioned, 1);
  assertEquals(w.provider.passkeysOf(list[0]!).length, 2);
});

Deno.test("engine states: throttling and transient errors are retried; a user refused fails alone; the rest are provisioned", async () => {
  await using w = await world({
    scripts: {
      [users[0]!]: { kind: "throttle", times: 2, call: "creationOptions" },
      [users[1]!]: { kind: "transient", times: 1 },
      [users[2]!]: { kind: "fail-user", call: "creationOptions" },
      [users[3]!]: { kind: "transient", times: Infinity, call: "resolveUser" },
    },
  });
  const list = users.slice(0, 6);
  const outcome = await run(w, list, { maxAttempts: 3 });
  assertEquals(outcome.summary.halted, undefined);
  assertEquals(outcome.summary.counts.provisioned, 4, JSON.stringify(outcome.summary.counts));
  assertEquals(outcome.summary.counts.failed, 2);
  assertEquals(finishOf(outcome.events, users[2]!)?.code, scriptedCodes.userRefused);
  assertEquals(finishOf(outcome.events, users[3]!)?.code, scriptedCodes.unavailable);
  assertEquals(statesOf(outcome.events, users[2]!).at(-1), "failed");
  // A refusal is not retried; a transient failure is, up to maxAttempts.
  assertEquals(w.provider.calls.filter((c) => c === `creationOptions ${users[2]}`).length, 1);
  assertEquals(w.provider.calls.filter((c) => c === `resolveUser ${users[3]}`).length, 3);
  assertEquals(w.provider.calls.filter((c) => c === `creationOptions ${users[0]}`).length, 3);
  for (const user of [users[0]!, users[1]!, users[4]!, users[5]!]) {
    assertEquals(w.provider.passkeysOf(user).length, 1, user);
  }
  assertEquals(w.provider.passkeysOf(users[2]!).length, 0);
});

Deno.test("engine states: a registration whose answer was lost after the provider stored it is reconciled, not registered twice", async () => {
  await using w = await world({ scripts: { [users[0]!]: { kind: "lose-answer" } } });
  const outcome = await run(w, users.slice(0, 2));
  assertEquals(outcome.summary.counts.reconciled + outcome.summary.counts.provisioned, 2);
  assertEquals(finishOf(outcome.events, users[0]!)?.outcome, "reconciled");
  assertEquals(w.provider.passkeysOf(users[0]!).length, 1, "one passkey, not two");
  assertEquals(statesOf(outcome.events, users[0]!).at(-1), "verified");
});

Deno.test("engine states: a crash after `created` leaves the journal there; the next attempt reconciles from the listing", async () => {
  const abort = new AbortController();
  await using w = await world({
    scripts: { [users[0]!]: { kind: "die" } },
    onDie: () => abort.abort(new Error("power cut")),
  });
  const crashed = await run(w, users.slice(0, 1), { abort: abort.signal, concurrency: 1 });
  assert.ok(crashed.summary.interrupted, "the run reports it was cut short");
  assertEquals(crashed.summary.counts.provisioned, 0);
  assertEquals((await journalOf(w, users[0]!)).at(-1)?.["s"], "created", "left as journaled");
  assertEquals(w.provider.passkeysOf(users[0]!).length, 1, "the provider had stored it");

  const resumed = await run(w, users.slice(0, 2), { attempt: "b" });
  assertEquals(finishOf(resumed.events, users[0]!)?.outcome, "reconciled");
  assertEquals(finishOf(resumed.events, users[1]!)?.outcome, "provisioned");
  assertEquals(w.provider.passkeysOf(users[0]!).length, 1, "not registered twice");
  assertEquals(w.provider.calls.filter((c) => c === `registerPasskey ${users[0]}`).length, 1);
});

Deno.test("engine states: a run-wide failure halts the run at the first user instead of failing everyone", async () => {
  await using w = await world({
    scripts: Object.fromEntries(
      users.map((u) => [u, { kind: "fail-run", call: "creationOptions" } as const]),
    ),
  });
  const outcome = await run(w, users, { concurrency: 2 });
  assertEquals(outcome.summary.halted?.code, scriptedCodes.runWide);
  assert.ok(outcome.summary.counts.failed <= 2, "only the users in flight when it happened");
  assert.ok(outcome.events.some((e) => e.type === "stopping" && e.reason === "halt"));
  for (const user of users) assertEquals(w.provider.passkeysOf(user).length, 0);
});

Deno.test("engine states: a provider down for every user halts after 5 in a row with provider-unavailable", async () => {
  await using w = await world({
    scripts: Object.fromEntries(
      users.map((u) => [u, { kind: "transient", times: Infinity, call: "resolveUser" } as const]),
    ),
  });
  const outcome = await run(w, users, { concurrency: 2, maxAttempts: 1 });
  assertEquals(outcome.summary.halted?.code, "provider-unavailable");
  assert.ok(
    outcome.summary.counts.failed >= 5 && outcome.summary.counts.failed <= 6,
    String(outcome.summary.counts.failed),
  );
});

Deno.test("engine states: an interrupted run resumes from its journal; finished users are not redone", async () => {
  const abort = new AbortController();
  await using w = await world({
    scripts: { [users[3]!]: { kind: "die" } },
    onDie: () => abort.abort(new Error("Ctrl+C twice")),
  });
  const list = users.slice(0, 6);
  const first = await run(w, list, { abort: abort.signal, concurrency: 1 });
  assertEquals(first.summary.counts.provisioned, 3, "the three before the crash");
  assert.ok(first.summary.interrupted);

  const resumed = await run(w, list, { attempt: "b", concurrency: 2 });
  assertEquals(resumed.summary.fromEarlierAttempts, 3);
  const started = resumed.events.find((e) => e.type === "run-started");
  assert.ok(started?.type === "run-started" && started.resumed && started.alreadyDone === 3);
  assertEquals(resumed.summary.counts.provisioned + resumed.summary.counts.reconciled, 3);
  for (const user of list) assertEquals(w.provider.passkeysOf(user).length, 1, user);
  for (const user of list.slice(0, 3)) {
    assertEquals(statesOf(resumed.events, user).length, 0, `${user} was finished and is not touched`);
  }
});

Deno.test("engine states: a crash after `registered` is journaled resumes to `verified` from the listing, without registering again", async () => {
  await using w = await world();
  const [user] = users;
  // The earlier attempt, step by step as the engine journals it, killed right after `registered`.
  {
    await using journal = await openJournal(`${w.dir}/run.jsonl`, { runId, fingerprint: "f" });
    await using key = await newTestKey({ pin });
    await using session = await w.provider.connect();
    const resolved = await session.resolveUser(user!);
    await journal.append({
      k: user!,
      s: "resolved",
      ref: user!,
      userId: resolved.id,
      upn: resolved.userPrincipalName,
    });
    const killed = new Error("kill -9");
    await provisionUser({
      session,
      user: resolved,
      authenticator: key,
      interaction: scriptedUser([pin]),
      displayName: "Security key",
      existingMethodIds: [],
      onTransition: async (t) => {
        if (t.state === "created") {
          await journal.append({
            k: user!,
            s: "created",
            credentialId: t.credentialId,
            createdAt: t.createdAt.toISOString(),
            displayName: t.displayName,
            existing: [],
          });
        } else if (t.state === "registered") {
          await journal.append({ k: user!, s: "registered", methodId: t.methodId });
          throw killed;
        }
      },
    }).catch((error) => {
      if (error !== killed) throw error;
    });
  }
  assertEquals((await journalOf(w, user!)).at(-1)?.["s"], "registered");
  assertEquals(w.provider.passkeysOf(user!).length, 1);

  const resumed = await run(w, [user!, users[1]!]);
  assertEquals(finishOf(resumed.events, user!)?.outcome, "reconciled");
  assertEquals(finishOf(resumed.events, users[1]!)?.outcome, "provisioned");
  assertEquals(w.provider.passkeysOf(user!).length, 1, "not registered twice");
  assertEquals(w.provider.calls.filter((c) => c === `registerPasskey ${user}`).length, 1);
  assertEquals((await journalOf(w, user!)).at(-1)?.["s"], "verified");
});
