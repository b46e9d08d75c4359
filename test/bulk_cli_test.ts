/**
 * The bulk run end to end, as an admin runs it: the CLI as a separate process against the Entra
 * sandbox, killed with SIGKILL at random moments and re-run; then with the sandbox injecting
 * server errors, connection resets, lost answers and throttling. What must hold: every user ends
 * with exactly one passkey, or in failures.csv with the right reason; none twice, none lost.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import {
  bulkFixture,
  passkeysByUser,
  readOutput,
  spawnCli,
  spawnCliWith,
  writeUsersCsv,
} from "./bulk_support.ts";
import { runCli } from "./cli.ts";

/** A seeded random source, so a failing run can be replayed (the seed is in the test's output). */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("bulk: 500 users at concurrency 8, killed with SIGKILL five times mid-run (on progress) and re-run, end with one passkey each", async () => {
  await using fixture = await bulkFixture({ users: 520, throttle: { enabled: false } });
  const upns = fixture.upns(500);
  assertEquals(upns.length, 500);
  const csv = await writeUsersCsv(fixture, upns);
  const seed = Date.now() % 100_000;
  const random = seeded(seed);
  // Each kill lands after the round made 10 to 60 new passkeys, whatever the machine's speed: a
  // kill never comes before any work (under load a fixed delay did), and never after the end.
  const progress: { before: number; atKill: number }[] = [];
  for (let round = 0; round < 5; round++) {
    const before = passkeysByUser(fixture.sandbox).size;
    const step = 10 + Math.floor(random() * 51);
    const child = spawnCli(fixture, "--csv", csv, "--concurrency", "8");
    const exited = child.output();
    let ended = false;
    void exited.then(() => ended = true);
    while (!ended && passkeysByUser(fixture.sandbox).size < before + step) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    if (!ended) {
      child.kill("SIGKILL");
      progress.push({ before, atKill: passkeysByUser(fixture.sandbox).size });
    }
    await exited;
  }
  assertEquals(progress.length, 5, `seed ${seed}: every kill landed mid-run`);
  for (const [i, { before, atKill }] of progress.entries()) {
    assert.ok(
      atKill >= before + 10 && atKill < upns.length,
      `seed ${seed}: kill ${i + 1} at ${atKill} (${before} before)`,
    );
    if (i > 0) assert.ok(before >= progress[i - 1]!.atKill, "no passkey disappears");
  }
  const kills = progress.length;
  const final = await runCli(fixture.dir, fixture.env, [], "--csv", csv, "--concurrency", "8");
  assertEquals(final.code, 0, `seed ${seed}, ${kills} kills: ${final.stderr}`);

  const held = passkeysByUser(fixture.sandbox);
  for (const upn of upns) {
    const passkeys = held.get(upn) ?? [];
    assertEquals(passkeys.length, 1, `seed ${seed}: ${upn} holds ${passkeys.length} passkeys`);
    assert.ok(passkeys[0]!.verified);
  }
  assertEquals(held.size, 500, "no user outside the CSV got one");

  const results = await readOutput(`${fixture.dir}/results.csv`);
  const listed = results.map((r) => r["user"]!);
  assertEquals(new Set(listed).size, listed.length, `seed ${seed}: a user is listed twice in results.csv`);
  deepStrictEqual(new Set(listed), new Set(upns));
  for (const row of results) {
    assert.ok(row["status"] === "provisioned" || row["status"] === "reconciled", row["status"]);
    assert.match(row["method id"]!, /\S/);
    assert.match(row["object id"]!, /^[0-9a-f-]{36}$/);
  }
  assertEquals((await readOutput(`${fixture.dir}/failures.csv`)).length, 0);
  assert.match(final.stdout, /provisioned\s+\d+/);
});

Deno.test("bulk: with 5% server errors, resets and lost answers and a tight write limit, every user ends provisioned or in failures.csv, once", async () => {
  await using fixture = await bulkFixture({
    users: 130,
    // 40 writes per 30 s per app and tenant, for 120 users: reached unless the run makes fewer
    // than 1.3 writes a second (a count the run must exceed, not a race against a short window).
    throttle: { writesPerAppTenant: { limit: 40, windowSeconds: 30 } },
    faults: { serverErrorRate: 0.02, resetRate: 0.02, lostResponseRate: 0.01, seed: 7 },
  });
  const upns = fixture.upns(120);
  const csv = await writeUsersCsv(fixture, [...upns, "nobody@contoso.sandbox", "not a upn"]);
  const run = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--concurrency",
    "8",
    "--no-preflight",
  );
  assert.ok(run.code === 0 || run.code === 1, run.stderr);

  const results = await readOutput(`${fixture.dir}/results.csv`);
  const failures = await readOutput(`${fixture.dir}/failures.csv`);
  const provisioned = results.map((r) => r["user"]!);
  const failed = failures.map((r) => r["user"]!);
  assertEquals(new Set(provisioned).size, provisioned.length, "a user is listed twice in results.csv");
  assertEquals(new Set(failed).size, failed.length, "a user is listed twice in failures.csv");
  deepStrictEqual(provisioned.filter((u) => failed.includes(u)), [], "a user is in both files");
  deepStrictEqual(
    new Set([...provisioned, ...failed]),
    new Set([...upns, "nobody@contoso.sandbox", "not a upn"]),
  );

  const reasons = new Map(failures.map((r) => [r["user"]!, r["reason code"]!]));
  assertEquals(reasons.get("nobody@contoso.sandbox"), "user-not-found");
  assertEquals(reasons.get("not a upn"), "invalid-upn");
  for (const [user, code] of reasons) {
    if (user === "nobody@contoso.sandbox" || user === "not a upn") continue;
    assert.ok(
      ["graph-error", "graph-unreachable", "throttled", "outcome-unknown"].includes(code),
      `${user}: ${code}`,
    );
  }

  const held = passkeysByUser(fixture.sandbox);
  for (const upn of upns) {
    const count = held.get(upn)?.length ?? 0;
    assert.ok(count <= 1, `${upn} holds ${count} passkeys`);
    if (provisioned.includes(upn)) assertEquals(count, 1, `${upn} is in results.csv without a passkey`);
  }
  const inspection = fixture.sandbox.inspect();
  assert.ok(inspection.throttled.total > 0, "the write limit was reached");
  assert.ok(inspection.faults.serverErrors + inspection.faults.resets + inspection.faults.lostResponses > 0);

  // A re-run of the same command retries what failed and finishes everyone.
  fixture.sandbox.faults.configure({ serverErrorRate: 0, resetRate: 0, lostResponseRate: 0 });
  const again = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--concurrency",
    "8",
    "--no-preflight",
  );
  assertEquals(again.code, 1, again.stderr);
  const finalFailures = await readOutput(`${fixture.dir}/failures.csv`);
  deepStrictEqual(finalFailures.map((r) => r["user"]).sort(), ["nobody@contoso.sandbox", "not a upn"]);
  const finalResults = await readOutput(`${fixture.dir}/results.csv`);
  deepStrictEqual(new Set(finalResults.map((r) => r["user"])), new Set(upns));
  assertEquals(finalResults.length, upns.length);
  for (const upn of upns) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
});

Deno.test("bulk --group: a dry run then a run over a group's members, nested groups included, each once", async () => {
  await using fixture = await bulkFixture({ users: 40 });
  const { pilot } = fixture.sandbox.seeded.groups;
  const members = new Set(
    fixture.sandbox.tenant.transitiveMembers(pilot).flatMap((m) =>
      m.kind === "user" ? [m.user.userPrincipalName] : []
    ),
  );
  assert.ok(members.size > 0);
  const dry = await runCli(fixture.dir, fixture.env, [], "--group", pilot, "--dry-run", "--no-preflight");
  assertEquals(dry.code, 0, dry.stderr);
  const planned = await readOutput(`${fixture.dir}/dry-run-results.csv`);
  deepStrictEqual(new Set(planned.map((r) => r["user"])), members);
  assertEquals(planned.length, members.size);
  assertEquals(passkeysByUser(fixture.sandbox).size, 0);

  const run = await runCli(fixture.dir, fixture.env, [], "provision", "--group", pilot, "--no-preflight");
  assertEquals(run.code, 0, run.stderr);
  deepStrictEqual(new Set(passkeysByUser(fixture.sandbox).keys()), members);
  const unknown = await runCli(fixture.dir, fixture.env, [], "--group", "No such group", "--no-preflight");
  assertEquals(unknown.code, 2, unknown.stderr);
  assert.match(unknown.stderr, /group-not-found|no group has this/);
});

Deno.test("bulk --user -: the first Ctrl+C stops a run waiting on stdin, after the users it has", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const [first] = fixture.upns(1);
  const child = spawnCliWith(fixture, { stdin: "piped" }, "provision", "--user", "-");
  const stdin = child.stdin.getWriter();
  await stdin.write(new TextEncoder().encode(`${first}\n`));
  // The run provisions what it was given (its row in results.csv, written as the user finishes),
  // then waits for the next line that never comes.
  while ((await readOutput(`${fixture.dir}/results.csv`)).length === 0) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill("SIGINT");
  // Guard against a hang (what this test is about): stdin is never closed.
  const guard = setTimeout(() => child.kill("SIGKILL"), 60_000);
  const output = await child.output();
  clearTimeout(guard);
  await stdin.close().catch(() => {});
  const stderr = new TextDecoder().decode(output.stderr);
  assertEquals(output.code, 130, stderr);
  assert.match(new TextDecoder().decode(output.stdout), /provisioned\s+1\n/);
  assert.match(stderr, /Ctrl\+C/);
  assertEquals(passkeysByUser(fixture.sandbox).get(first!)?.length, 1);
});
