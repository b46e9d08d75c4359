/**
 * `provisioning revoke` against the sandbox: it deletes what a run created and nothing else (a
 * passkey a user held before the run stays), by run id or from results.csv, and a second revoke
 * finds nothing left to fail on.
 */
import { assert, assertEquals } from "./assert.ts";
import {
  type BulkFixture,
  bulkFixture,
  passkeysByUser,
  sandboxSession,
  spawnCli,
  writeUsersCsv,
} from "./bulk_support.ts";
import type { EntraSession } from "../plugins/entra/session.ts";
import { runCli } from "./cli.ts";

Deno.test("revoke --run and --csv delete the passkeys a run created, and only those", async () => {
  await using fixture = await bulkFixture({ users: 10 });
  const upns = fixture.upns(4);
  // user 1 holds a passkey from before, under another name: the run skips them, revoke keeps it.
  const before = await runCli(fixture.dir, fixture.env, [], "--user", upns[0]!, "--display-name", "Old key");
  assertEquals(before.code, 0, before.stderr);
  const csv = await writeUsersCsv(fixture, upns);
  const run = await runCli(fixture.dir, fixture.env, [], "--csv", csv);
  assertEquals(run.code, 0, run.stderr);
  assert.match(run.stdout, /skipped\s+1\n/);
  const runId = /^Run ([0-9a-f]{12})/m.exec(run.stdout)?.[1];
  assert.ok(runId, run.stdout);
  assertEquals(passkeysByUser(fixture.sandbox).size, 4);

  const dry = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", runId!, "--dry-run");
  assertEquals(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /3 passkeys would be deleted/);
  assertEquals(passkeysByUser(fixture.sandbox).size, 4);

  const revoke = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", runId!);
  assertEquals(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, /Revoked 3 of 3 passkeys/);
  const left = passkeysByUser(fixture.sandbox);
  assertEquals([...left.keys()].join(), upns[0]);
  assertEquals(left.get(upns[0]!)![0]!.displayName, "Old key");

  // Gone already: a second revoke succeeds without deleting anything.
  const again = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", runId!);
  assertEquals(again.code, 0, again.stderr);

  // Re-running the provisioning command provisions them again; revoke from its results.csv.
  const rerun = await runCli(fixture.dir, fixture.env, [], "--csv", csv);
  assertEquals(rerun.code, 0, rerun.stderr);
  assertEquals(passkeysByUser(fixture.sandbox).size, 4);
  const fromCsv = await runCli(fixture.dir, fixture.env, [], "revoke", "--csv", "results.csv");
  assertEquals(fromCsv.code, 0, fromCsv.stderr);
  assertEquals([...passkeysByUser(fixture.sandbox).keys()].join(), upns[0]);

  const bad = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", "nope");
  assertEquals(bad.code, 2);
  const missing = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", "0123456789ab");
  assertEquals(missing.code, 2);
  assert.match(missing.stderr, /does not exist/);
});

Deno.test("revoke --run also finds the passkey of a user whose attempt stopped after the key made it", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const [upn] = fixture.upns(1);
  // The registration got through, but the run stopped before journaling it (as after kill -9).
  const made = await runCli(fixture.dir, fixture.env, [], "--user", upn!, "--display-name", "Stopped run");
  assertEquals(made.code, 0, made.stderr);
  const user = fixture.sandbox.tenant.user(upn!)!;
  const runId = "0123456789ab";
  const at = new Date(Date.now() - 60_000).toISOString();
  await writeStoppedRun(fixture, runId, at, {
    k: upn,
    s: "created",
    row: 2,
    userId: user.id,
    upn,
    existing: [],
    displayName: "Stopped run",
    createdAt: at,
  });
  const revoke = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", runId);
  assertEquals(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, /Revoked 1 of 1 passkeys/);
  assertEquals(passkeysByUser(fixture.sandbox).get(upn!), undefined);
});

Deno.test("revoke --run also deletes a sign-in pass an interrupted browser attempt left", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const [upn] = fixture.upns(1);
  const user = fixture.sandbox.tenant.user(upn!)!;
  {
    await using session = await sandboxSession(fixture.sandbox, fixture.dir) as EntraSession;
    const pass = await session.createTemporaryAccessPass({ id: user.id, userPrincipalName: upn! }, {
      isUsableOnce: true,
    });
    const at = new Date().toISOString();
    await writeStoppedRun(fixture, "0123456789ab", at, {
      k: upn,
      s: "created",
      row: 2,
      userId: user.id,
      upn,
      existing: [],
      createdAt: at,
      passId: pass.id,
    });
  }
  assertEquals(fixture.sandbox.tenant.temporaryAccessPasses().length, 1);
  const dry = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", "0123456789ab", "--dry-run");
  assertEquals(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /would delete the sign-in pass/);
  assertEquals(fixture.sandbox.tenant.temporaryAccessPasses().length, 1);
  const revoke = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", "0123456789ab");
  assertEquals(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, /Deleted the sign-in pass an interrupted attempt left/);
  assertEquals(fixture.sandbox.tenant.temporaryAccessPasses().length, 0);
});

Deno.test("revoke stopped by Ctrl+C says what it deleted and what is left, exits non-zero, and a re-run finishes", async () => {
  await using fixture = await bulkFixture({ users: 16 });
  const upns = fixture.upns(16);
  const run = await runCli(fixture.dir, fixture.env, [], "--csv", await writeUsersCsv(fixture, upns));
  assertEquals(run.code, 0, run.stderr);
  const runId = /^Run ([0-9a-f]{12})/m.exec(run.stdout)?.[1];
  assert.ok(runId, run.stdout);
  assertEquals(passkeysByUser(fixture.sandbox).size, 16);

  // Slow deletions, so that Ctrl+C lands mid-revoke: sent once the first passkeys are gone.
  await setFaults(fixture, { latencyMs: 400 });
  const revoke = spawnCli(fixture, "revoke", "--run", runId!);
  for (let i = 0; i < 600 && passkeysByUser(fixture.sandbox).size === 16; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.ok(passkeysByUser(fixture.sandbox).size < 16, "no passkey was deleted");
  revoke.kill("SIGINT");
  const stopped = await revoke.output();
  const stdout = new TextDecoder().decode(stopped.stdout);
  const stderr = new TextDecoder().decode(stopped.stderr);
  assertEquals(stopped.code, 130, stderr);
  const told = /Stopped by Ctrl\+C: revoked (\d+) of 16 passkeys; (\d+) passkeys? left/.exec(stdout);
  assert.ok(told, stdout);
  const left = passkeysByUser(fixture.sandbox).size;
  assertEquals(Number(told![2]), left, stdout);
  assertEquals(Number(told![1]), 16 - left, stdout);
  assert.ok(left > 0, "the revoke finished before Ctrl+C: nothing was left to prove");
  assert.ok(!/Revoked 16 of 16/.test(stdout), stdout);

  await setFaults(fixture, { latencyMs: 0 });
  const again = await runCli(fixture.dir, fixture.env, [], "revoke", "--run", runId!);
  assertEquals(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`Revoked ${left} of ${left} passkeys`));
  assertEquals(passkeysByUser(fixture.sandbox).size, 0);
});

async function setFaults(fixture: BulkFixture, patch: Record<string, unknown>): Promise<void> {
  const response = await fetch(`${fixture.sandbox.url}/_sandbox/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(patch),
  });
  await response.body?.cancel();
  assert.ok(response.ok, `the sandbox refused the faults: ${response.status}`);
}

/** The journal a run stopped by kill -9 left: its header, one attempt, and one user's record. */
async function writeStoppedRun(
  fixture: BulkFixture,
  runId: string,
  at: string,
  user: Record<string, unknown>,
): Promise<void> {
  await Deno.mkdir(`${fixture.dir}/.provisioning/runs`, { recursive: true });
  await Deno.writeTextFile(
    `${fixture.dir}/.provisioning/runs/${runId}.jsonl`,
    [
      { t: "run", v: 1, runId, fingerprint: "sha256:test", createdAt: at },
      { t: "attempt", at },
      { t: "user", ...user },
    ].map((line) => JSON.stringify(line)).join("\n") + "\n",
  );
}
