/**
 * The bulk engine in-process against the Entra sandbox and a software key: dry runs, the skip
 * policy and --force, a failure that halts the run, and resuming a journal left in `created`
 * (reconciled when the registration got through, registered anew when it did not).
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { formatAaguid } from "../core/aaguid.ts";
import { runBulk } from "../core/jobs/engine.ts";
import type { JobEvent } from "../core/jobs/events.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { provisionUser } from "../core/jobs/provision_user.ts";
import { readUsersFromList } from "../core/jobs/sources/csv.ts";
import type { ProviderSession } from "../core/plugin.ts";
import type { Sandbox } from "../plugins/entra/sandbox/server.ts";
import type { EntraSession } from "../plugins/entra/session.ts";
import { cliSandbox, passkeysByUser, readOutput, sandboxSession } from "./bulk_support.ts";

const pin = "482916";

interface World extends AsyncDisposable {
  sandbox: Sandbox;
  session: ProviderSession;
  dir: string;
  upns: string[];
}

async function world(): Promise<World> {
  const sandbox = await cliSandbox({ users: 12 });
  const dir = await Deno.makeTempDir({ prefix: "engine-test-" });
  const session = await sandboxSession(sandbox, dir);
  const upns = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u));
  return {
    sandbox,
    session,
    dir,
    upns,
    async [Symbol.asyncDispose]() {
      await session[Symbol.asyncDispose]();
      await sandbox.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function run(
  w: World,
  users: string[],
  options: {
    dryRun?: boolean;
    force?: boolean;
    replaceExisting?: boolean;
    keyPin?: string | null;
    journal?: string;
    displayName?: string;
    concurrency?: number;
    maxAttempts?: number;
  } = {},
) {
  await using key = await newTestKey(options.keyPin === null ? {} : { pin: options.keyPin ?? pin });
  const aaguid = formatAaguid((await key.client.getInfo()).aaguid);
  await using results = await openResultsFile(`${w.dir}/results.csv`, { fresh: true });
  await using failures = await openFailuresFile(`${w.dir}/failures.csv`, { fresh: true });
  await using journal = options.dryRun
    ? undefined
    : await openJournal(`${w.dir}/${options.journal ?? "run"}.jsonl`, {
      runId: "0123456789ab",
      fingerprint: "f",
      // As the CLI opens it: finished users stay on disk.
      keepFinished: false,
    });
  const events: JobEvent[] = [];
  const summary = await runBulk({
    runId: "0123456789ab",
    source: readUsersFromList(users),
    session: w.session,
    authenticator: key,
    authenticatorAaguid: aaguid,
    interaction: scriptedUser([pin]),
    displayName: options.displayName ?? "Security key",
    concurrency: options.concurrency ?? 3,
    ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
    ...(options.dryRun ? { dryRun: true } : {}),
    ...(options.force ? { force: true } : {}),
    ...(options.replaceExisting ? { replaceExisting: true } : {}),
    ...(journal ? { journal } : {}),
    results,
    failures,
    onEvent: (event) => events.push(event),
    retryDelayMs: 10,
  });
  await results.close();
  await failures.close();
  return {
    summary,
    events,
    results: await readOutput(`${w.dir}/results.csv`),
    failures: await readOutput(`${w.dir}/failures.csv`),
  };
}

Deno.test("engine: a dry run creates nothing; a run provisions; the next run skips; --force adds one", async () => {
  await using w = await world();
  const users = w.upns.slice(0, 3);
  const dry = await run(w, users, { dryRun: true });
  assertEquals(dry.summary.counts.dryRun, 3);
  assertEquals(passkeysByUser(w.sandbox).size, 0);
  deepStrictEqual(dry.results.map((r) => r["status"]), ["dry-run", "dry-run", "dry-run"]);

  const first = await run(w, users);
  assertEquals(first.summary.counts.provisioned, 3);
  const states = first.events.filter((e) => e.type === "user-state" && e.user === users[0]).map((e) =>
    e.type === "user-state" ? e.state : ""
  );
  deepStrictEqual(states, ["queued", "resolved", "options", "created", "registered", "verified"]);

  const second = await run(w, users, { journal: "second" });
  assertEquals(second.summary.counts.skipped, 3);
  assertEquals(second.results[0]!["status"], "skipped");
  for (const upn of users) assertEquals(passkeysByUser(w.sandbox).get(upn)?.length, 1);

  const forced = await run(w, users.slice(0, 1), { journal: "third", force: true, displayName: "Spare key" });
  assertEquals(forced.summary.counts.provisioned, 1);
  assertEquals(passkeysByUser(w.sandbox).get(users[0]!)?.length, 2);
});

Deno.test("engine: object ids need no lookup: creation options are asked for with the listing, 3 Graph calls a user; the journal gets the UPN from the answer", async () => {
  await using w = await world();
  const people = w.sandbox.tenant.users().filter((u) => w.upns.slice(0, 3).includes(u.userPrincipalName));
  // Upper case, as an export may have them: Graph answers ids in lower case.
  const ids = people.map((u) => u.id.toUpperCase());
  const unknown = "0badc0de-0000-4000-8000-000000000000";
  const before = { ...w.sandbox.inspect().calls } as Record<string, number>;
  const first = await run(w, [...ids, unknown, people[0]!.userPrincipalName]);
  const calls = w.sandbox.inspect().calls as Record<string, number>;
  const made = (route: string) => (calls[route] ?? 0) - (before[route] ?? 0);
  assertEquals(first.summary.counts.provisioned, 3);
  for (const person of people) {
    assertEquals(passkeysByUser(w.sandbox).get(person.userPrincipalName)?.length, 1);
  }
  const failures = Object.fromEntries(first.failures.map((r) => [r["user"], r["reason code"]]));
  deepStrictEqual(failures, { [unknown]: "user-not-found", [people[0]!.userPrincipalName]: "duplicate" });
  // The unknown id is looked up after its listing said "not found"; the UPN row is looked up to
  // find it is the first row's user again. No other lookup.
  assertEquals(made("GET /v1.0/users/{id}"), 2);
  assertEquals(made("GET /v1.0/users/{id}/authentication/fido2Methods"), 4);
  assertEquals(made("GET /v1.0/users/{id}/authentication/fido2Methods/creationOptions"), 4);
  assertEquals(made("POST /v1.0/users/{id}/authentication/fido2Methods"), 3);
  const objectIds = Object.fromEntries(first.results.map((r) => [r["user"]!.toLowerCase(), r["object id"]]));
  deepStrictEqual(objectIds, Object.fromEntries(people.map((u) => [u.id.toLowerCase(), u.id])));
  const journal = (await Deno.readTextFile(`${w.dir}/run.jsonl`)).split("\n").filter((l) =>
    l.includes('"verified"')
  );
  for (const person of people) {
    assert.ok(
      journal.some((line) => line.includes(`"upn":"${person.userPrincipalName}"`)),
      `the journal names ${person.userPrincipalName}`,
    );
  }

  // The next run lists, finds the passkeys and skips: the creation options it asked for created nothing.
  const second = await run(w, ids, { journal: "second" });
  assertEquals(second.summary.counts.skipped, 3);
  for (const person of people) {
    assertEquals(passkeysByUser(w.sandbox).get(person.userPrincipalName)?.length, 1);
  }
});

Deno.test("engine: a key without a PIN halts the run at the first user instead of failing everyone", async () => {
  await using w = await world();
  const outcome = await run(w, w.upns.slice(0, 8), { keyPin: null });
  assertEquals(outcome.summary.halted?.code, "pin-not-set");
  assert.ok(outcome.summary.counts.failed <= 3, "only the users in flight when it happened");
  assert.ok(outcome.events.some((e) => e.type === "stopping" && e.reason === "halt"));
  assertEquals(passkeysByUser(w.sandbox).size, 0);
});

Deno.test("engine: a journal left in `created` is reconciled when it got through, registered anew when not", async () => {
  await using w = await world();
  const [through, lost] = w.upns;
  // An earlier attempt: user "through" registered but died before journaling it; user "lost"
  // died between the key and the POST.
  {
    await using journal = await openJournal(`${w.dir}/run.jsonl`, {
      runId: "0123456789ab",
      fingerprint: "f",
    });
    await using key = await newTestKey({ pin });
    for (const upn of [through!, lost!]) {
      const user = await w.session.resolveUser(upn);
      await journal.append({ k: upn, s: "resolved", userId: user.id, upn: user.userPrincipalName, ref: upn });
      await provisionUser({
        session: w.session,
        user,
        authenticator: key,
        interaction: scriptedUser([pin]),
        displayName: "Security key",
        onTransition: async (t) => {
          if (t.state !== "created") return;
          await journal.append({
            k: upn,
            s: "created",
            credentialId: t.credentialId,
            existing: [],
            displayName: t.displayName,
          });
          if (upn === lost) throw new Error("power cut");
        },
      }).catch((error) => {
        if (!(error instanceof Error && error.message === "power cut")) throw error;
      });
    }
  }
  assertEquals(passkeysByUser(w.sandbox).get(through!)?.length, 1);
  assertEquals(passkeysByUser(w.sandbox).get(lost!), undefined);

  const resumed = await run(w, [through!, lost!]);
  assertEquals(resumed.summary.counts.reconciled, 1);
  assertEquals(resumed.summary.counts.provisioned, 1);
  assertEquals(passkeysByUser(w.sandbox).get(through!)?.length, 1);
  assertEquals(passkeysByUser(w.sandbox).get(lost!)?.length, 1);
  const statuses = Object.fromEntries(resumed.results.map((r) => [r["user"], r["status"]]));
  deepStrictEqual(statuses, { [through!]: "reconciled", [lost!]: "provisioned" });
});

Deno.test("engine: --replace-existing leaves each user with only the new passkey, deleting the older ones after it", async () => {
  await using w = await world();
  const users = w.upns.slice(0, 2);
  await run(w, users, { journal: "old", displayName: "Old key" });
  await run(w, users.slice(0, 1), { journal: "older", displayName: "Older key", force: true });
  assertEquals(passkeysByUser(w.sandbox).get(users[0]!)?.length, 2);
  const replaced = await run(w, users, { journal: "new", displayName: "New key", replaceExisting: true });
  assertEquals(replaced.summary.counts.provisioned, 2);
  for (const upn of users) {
    const held = passkeysByUser(w.sandbox).get(upn)!;
    deepStrictEqual(held.map((p) => p.displayName), ["New key"]);
  }
});

Deno.test("engine: a sign-in pass an interrupted browser attempt left is deleted at the user's next attempt", async () => {
  await using w = await world();
  const [upn] = w.upns;
  const user = await w.session.resolveUser(upn!);
  // The earlier attempt created a one-time pass, journaled its id, and died in the middle of the flow.
  const entra = w.session as EntraSession;
  const pass = await entra.createTemporaryAccessPass(user, { isUsableOnce: true });
  {
    await using journal = await openJournal(`${w.dir}/run.jsonl`, {
      runId: "0123456789ab",
      fingerprint: "f",
    });
    await journal.append({
      k: upn!,
      s: "created",
      ref: upn!,
      userId: user.id,
      upn: user.userPrincipalName,
      existing: [],
      createdAt: new Date().toISOString(),
      displayName: "Security key",
      passId: pass.id,
    });
  }
  assertEquals(w.sandbox.tenant.temporaryAccessPasses().length, 1);

  const resumed = await run(w, [upn!]);
  assertEquals(resumed.summary.counts.provisioned, 1, JSON.stringify(resumed.failures));
  assertEquals(w.sandbox.tenant.temporaryAccessPasses().length, 0, "the leftover pass is gone");
  assert.ok(
    resumed.events.some((e) => e.type === "user-state" && e.detail?.includes("sign-in pass")),
    "the deletion is reported",
  );
  const lines = (await Deno.readTextFile(`${w.dir}/run.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(lines.filter((l) => l.k === upn && "passId" in l).at(-1)?.passId, "");
});

Deno.test("engine: --replace-existing keeps the older passkey when the new one is refused (failure injected by policy)", async () => {
  await using w = await world();
  const users = w.upns.slice(0, 3);
  const old = await run(w, users, { journal: "old", displayName: "Old key" });
  assertEquals(old.summary.counts.provisioned, 3);
  // The tenant now blocks the key's model: every new registration is refused by Graph.
  await using key = await newTestKey({ pin });
  const aaguid = formatAaguid((await key.client.getInfo()).aaguid);
  w.sandbox.tenant.setFido2Policy({
    keyRestrictions: { isEnforced: true, enforcementType: "block", aaGuids: [aaguid] },
  });
  const replaced = await run(w, users, { journal: "new", displayName: "New key", replaceExisting: true });
  assertEquals(replaced.summary.counts.provisioned, 0);
  assert.ok(replaced.summary.counts.failed >= 1);
  assertEquals(replaced.results.length, 0);
  for (const upn of users) {
    deepStrictEqual(passkeysByUser(w.sandbox).get(upn)?.map((p) => p.displayName), ["Old key"], upn);
  }
});

Deno.test("engine: a provider that answers every call with a server error halts the run after 5 users in a row, not one by one", async () => {
  await using w = await world();
  const users = w.upns.slice(0, 12);
  w.sandbox.faults.configure({ serverErrorRate: 1 });
  const outcome = await run(w, users, { concurrency: 2, maxAttempts: 1 });
  assertEquals(outcome.summary.halted?.code, "provider-unavailable");
  assert.match(outcome.summary.halted!.message, /5 users in a row failed the same way \(graph-error\)/);
  assert.match(outcome.summary.halted!.message, /Check the network/);
  // The five, and at most the one other user in flight when the fifth failed.
  assert.ok(
    outcome.summary.counts.failed >= 5 && outcome.summary.counts.failed <= 6,
    String(outcome.summary.counts.failed),
  );
  assertEquals(outcome.failures.length, outcome.summary.counts.failed);
  assert.ok(outcome.events.some((e) => e.type === "stopping" && e.reason === "halt"));
  assertEquals(passkeysByUser(w.sandbox).size, 0);
  // A success in between resets the count: with the provider back, the same run finishes everyone.
  w.sandbox.faults.configure({ serverErrorRate: 0 });
  const again = await run(w, users);
  assertEquals(again.summary.halted, undefined);
  assertEquals(again.summary.counts.provisioned, 12);
});
