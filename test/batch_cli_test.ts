/**
 * A key station's batch, end to end through the CLI: `batch fetch` gets long-lived challenges from
 * the Entra sandbox (Graph beta, `--challenge-timeout`), `batch write` prepares software keys served
 * over their CTAPHID sockets with every provider host denied to the process (so it provably needs
 * no admin session and no network), and `batch register` registers them in one pass, verified by
 * the sandbox with @simplewebauthn/server. Expired challenges are reported, renewed, and never
 * written to a key.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import {
  type BulkFixture,
  bulkFixture,
  passkeysByUser,
  readOutput,
  sandboxSession,
  writeUsersCsv,
} from "./bulk_support.ts";
import { runCli } from "./cli.ts";
import { type ServedKey, serveKey } from "../authenticators/hid/_test_support.ts";
import { batchPhase, openBatch, readBatch } from "../core/jobs/batch/batch_file.ts";

/** Every host the CLI may reach, denied: only the key's socket stays open. */
function offline(key: ServedKey): string[] {
  return [
    "--deny-net=127.0.0.1,localhost,login.microsoftonline.com,graph.microsoft.com",
    `--allow-net=unix:${key.location.address.path}`,
  ];
}

/** `batch fetch` of users.csv into keys.batch with ten-hour challenges (Graph beta). */
function fetchLongChallenges(fixture: BulkFixture) {
  return runCli(
    fixture.dir,
    fixture.env,
    [],
    "batch",
    "fetch",
    "--batch",
    "keys.batch",
    "--csv",
    "users.csv",
    "--graph-version",
    "beta",
    "--challenge-timeout",
    "600",
  );
}

/** `batch write` of one key for the next user, offline. */
function writeOneKey(dir: string, key: ServedKey) {
  return runCli(
    dir,
    {},
    offline(key),
    "batch",
    "write",
    "--batch",
    "keys.batch",
    "--device",
    key.device,
    "--new-pin",
    "random",
    "--force-pin-change",
    "--pin-output",
    "pins.jsonl",
    "--count",
    "1",
  );
}

Deno.test("batch: challenges fetched for 10 hours, keys written offline 20 minutes later, registered in one pass", async () => {
  const clock = { offset: 0 };
  await using fixture = await bulkFixture({ users: 5, now: () => Date.now() + clock.offset });
  const upns = fixture.upns(3);
  await writeUsersCsv(fixture, upns);

  const fetched = await fetchLongChallenges(fixture);
  assertEquals(fetched.code, 0, fetched.stderr);
  assert.match(fetched.stdout, /3 fetched, 0 kept, 0 skipped, 0 failed/);
  const { info, users } = await readBatch(`${fixture.dir}/keys.batch`);
  assertEquals(info.provider, "entra");
  for (const user of users) {
    assertEquals(batchPhase(user), "to-write");
    assert.ok(Date.parse(user.challenge!.expiresAt!) > Date.now() + 599 * 60_000, user.challenge!.expiresAt);
  }
  assertEquals((await Deno.stat(`${fixture.dir}/keys.batch`)).mode! & 0o777, 0o600);

  // Time at the station: the sandbox's clock moves past Graph v1.0's five minutes (not past the
  // admin's token, which a later sign-in would renew anyway).
  clock.offset = 20 * 60_000;
  const keys = [
    await serveKey(fixture.dir, "a"),
    await serveKey(fixture.dir, "b"),
    await serveKey(fixture.dir, "c"),
  ];
  try {
    for (const key of keys) {
      const written = await writeOneKey(fixture.dir, key);
      assertEquals(written.code, 0, written.stderr);
      assert.match(written.stdout, /1 key written, 0 failed/);
    }
    assertEquals(passkeysByUser(fixture.sandbox).size, 0, "nothing is registered while keys are written");
    // A fourth key finds nobody left to write.
    const none = await writeOneKey(fixture.dir, keys[0]!);
    assertEquals(none.code, 0, none.stderr);
    assert.match(none.stdout, /0 keys written/);

    const registered = await runCli(
      fixture.dir,
      fixture.env,
      [],
      "batch",
      "register",
      "--batch",
      "keys.batch",
    );
    assertEquals(registered.code, 0, registered.stderr);
    assert.match(registered.stdout, /3 registered, 0 found registered, 0 finished before, 0 failed/);
    const held = passkeysByUser(fixture.sandbox);
    for (const upn of upns) {
      deepStrictEqual(held.get(upn)?.map((p) => p.verified), [true], upn);
    }
    const results = await readOutput(`${fixture.dir}/results.csv`);
    deepStrictEqual(results.map((r) => r["user"]).sort(), [...upns].sort());
    for (const row of results) {
      assertEquals(row["status"], "provisioned");
      assertEquals(row["pin set"], "true");
      assertEquals(row["pin must change"], "true");
      assert.ok(row["credential id"] && row["method id"], JSON.stringify(row));
    }
    // Each key got its own user, and its forced PIN change.
    for (const key of keys) {
      assertEquals((await key.key.client.getInfo({ refresh: true })).forcePINChange, true);
    }
    const pins = (await Deno.readTextFile(`${fixture.dir}/pins.jsonl`)).trim().split("\n")
      .map((line) => JSON.parse(line) as { user: string; pin: string; stage: string; device: string });
    // Keys were given to users in the CSV's order: the first key to the first user, and so on.
    deepStrictEqual(
      pins.filter((p) => p.stage === "completed").map((
        p,
      ) => [p.user, p.device.includes(`/${"abc"[upns.indexOf(p.user)]}.sock`)]),
      upns.map((upn) => [upn, true]),
    );
    for (const { pin } of pins) {
      for (const file of ["results.csv", "failures.csv", "keys.batch"]) {
        assert.ok(
          !(await Deno.readTextFile(`${fixture.dir}/${file}`)).includes(pin),
          `a PIN leaked into ${file}`,
        );
      }
    }

    // Registering again changes nothing.
    const again = await runCli(fixture.dir, fixture.env, [], "batch", "register", "--batch", "keys.batch");
    assertEquals(again.code, 0, again.stderr);
    assert.match(again.stdout, /0 registered, 0 found registered, 3 finished before, 0 failed/);
    for (const upn of upns) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
    const status = await runCli(fixture.dir, {}, [], "batch", "status", "--batch", "keys.batch");
    assertEquals(status.code, 0, status.stderr);
    assert.match(status.stdout, /done\s+3/);
  } finally {
    for (const key of keys) await key[Symbol.asyncDispose]();
  }
});

Deno.test("batch: an expired challenge is never written to a key, is reported, and batch fetch renews it", async () => {
  const clock = { offset: 0 };
  await using fixture = await bulkFixture({ users: 4, now: () => Date.now() + clock.offset });
  const upns = fixture.upns(2);
  const fetch = (...extra: string[]) =>
    runCli(
      fixture.dir,
      fixture.env,
      [],
      "batch",
      "fetch",
      "--batch",
      "keys.batch",
      "--user",
      ...upns,
      ...extra,
    );

  // Graph v1.0's five-minute challenges, fetched (by the sandbox's clock) ten minutes ago.
  clock.offset = -10 * 60_000;
  const stale = await fetch();
  assertEquals(stale.code, 0, stale.stderr);
  clock.offset = 0;
  await using key = await serveKey(fixture.dir, "a");
  const refused = await writeOneKey(fixture.dir, key);
  assertEquals(refused.code, 1, refused.stderr);
  assert.match(refused.stdout, /0 keys written, 0 failed, 2 challenges expired/);
  assert.match(refused.stdout, /batch fetch --batch keys\.batch/);
  // The key was not touched: it still has no PIN.
  assertEquals((await key.key.client.getInfo({ refresh: true })).options?.["clientPin"], false);
  const unregistered = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "batch",
    "register",
    "--batch",
    "keys.batch",
  );
  assertEquals(unregistered.code, 1);
  deepStrictEqual(
    (await readOutput(`${fixture.dir}/failures.csv`)).map((r) => r["reason code"]),
    ["challenge-expired", "challenge-expired"],
  );

  // Renewed (with a long challenge this time): one key written, the other user still waiting.
  const renewed = await fetch("--graph-version", "beta", "--challenge-timeout", "60");
  assertEquals(renewed.code, 0, renewed.stderr);
  assert.match(renewed.stdout, /2 fetched, 0 kept/);
  const written = await writeOneKey(fixture.dir, key);
  assertEquals(written.code, 0, written.stderr);
  const partial = await runCli(fixture.dir, fixture.env, [], "batch", "register", "--batch", "keys.batch");
  assertEquals(partial.code, 1);
  assert.match(partial.stdout, /1 registered/);
  deepStrictEqual(
    (await readOutput(`${fixture.dir}/failures.csv`)).map((r) => [r["user"], r["reason code"]]),
    [
      [upns[1], "not-written"],
    ],
  );
  assertEquals(passkeysByUser(fixture.sandbox).get(upns[0]!)?.length, 1);

  // A timeout without beta is a usage error before any sign-in.
  const v1 = await fetch("--challenge-timeout", "60");
  assertEquals(v1.code, 2);
  assert.match(v1.stderr, /--graph-version beta/);
});

Deno.test("batch: a registration sent before a crash is found by listing, never sent twice; PINs from the CSV go to the keys, never to the batch", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const upns = fixture.upns(2);
  const csvPins = ["73915428", "62048173"];
  await Deno.writeTextFile(
    `${fixture.dir}/users.csv`,
    ["upn,pin", ...upns.map((upn, i) => `${upn},${csvPins[i]}`)].join("\n") + "\n",
  );
  const fetched = await fetchLongChallenges(fixture);
  assertEquals(fetched.code, 0, fetched.stderr);
  assert.match(fetched.stderr, /pin column is not kept/);
  for (const pin of csvPins) assert.ok(!(await Deno.readTextFile(`${fixture.dir}/keys.batch`)).includes(pin));

  await using a = await serveKey(fixture.dir, "a");
  await using b = await serveKey(fixture.dir, "b");
  for (const key of [a, b]) {
    const written = await runCli(
      fixture.dir,
      {},
      offline(key),
      "batch",
      "write",
      "--batch",
      "keys.batch",
      "--device",
      key.device,
      "--pins",
      "users.csv",
      "--count",
      "1",
    );
    assertEquals(written.code, 0, written.stderr);
    assertEquals((await key.key.client.getInfo({ refresh: true })).options?.["clientPin"], true);
  }

  // The first user's registration went through, but the process died before journaling more than
  // that it was sending it.
  {
    await using batch = await openBatch(`${fixture.dir}/keys.batch`);
    const record = batch.journal.get(upns[0]!.toLowerCase())!;
    await batch.journal.append({
      k: record.k,
      s: "created",
      methodId: "",
      sentAt: new Date().toISOString(),
      existing: [],
    });
    await using session = await sandboxSession(fixture.sandbox, fixture.dir);
    await session.registerPasskey(
      { id: record.userId!, userPrincipalName: record.upn! },
      { credential: record.registration, displayName: record.displayName! },
    );
  }
  const registered = await runCli(fixture.dir, fixture.env, [], "batch", "register", "--batch", "keys.batch");
  assertEquals(registered.code, 0, registered.stderr);
  assert.match(registered.stdout, /1 registered, 1 found registered, 0 finished before, 0 failed/);
  for (const upn of upns) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
  deepStrictEqual((await readOutput(`${fixture.dir}/results.csv`)).map((r) => r["status"]).sort(), [
    "provisioned",
    "reconciled",
  ]);
});

Deno.test("batch fetch: skips users with the batch's passkey unless --force, and reads failures.csv back without emptying it", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const [held, free] = fixture.upns(2);
  const provisioned = await runCli(fixture.dir, fixture.env, [], "provision", "--user", held!);
  assertEquals(provisioned.code, 0, provisioned.stderr);
  const fetch = (...args: string[]) =>
    runCli(fixture.dir, fixture.env, [], "batch", "fetch", "--batch", "keys.batch", ...args);

  const skipped = await fetch("--user", held!, free!, "nobody@contoso.sandbox");
  assertEquals(skipped.code, 1);
  assert.match(skipped.stdout, /1 fetched, 0 kept, 1 skipped, 1 failed/);
  deepStrictEqual(
    (await readOutput(`${fixture.dir}/failures.csv`)).map((r) => [r["user"], r["reason code"]]),
    [
      ["nobody@contoso.sandbox", "user-not-found"],
    ],
  );

  // The failures file as the next input: read whole, then replaced by this run's own.
  const retried = await fetch("--csv", "failures.csv");
  assertEquals(retried.code, 1);
  assert.match(retried.stdout, /0 fetched, 0 kept, 0 skipped, 1 failed/);
  deepStrictEqual((await readOutput(`${fixture.dir}/failures.csv`)).map((r) => r["user"]), [
    "nobody@contoso.sandbox",
  ]);

  // v1.0's five-minute challenges are short: said so, and renewed on every fetch (within the hour).
  assert.match(skipped.stderr, /these challenges last only 5 minutes/);
  const forced = await fetch("--user", held!, free!, "--force");
  assertEquals(forced.code, 0, forced.stderr);
  assert.match(forced.stdout, /2 fetched, 0 kept, 0 skipped, 0 failed/);
  const { users } = await readBatch(`${fixture.dir}/keys.batch`);
  deepStrictEqual(
    users.filter((u) => u.upn !== undefined).map((u) => [u.upn, batchPhase(u), u.methodId ?? ""]).sort(),
    [[held, "to-write", ""], [free, "to-write", ""]].sort(),
  );
});
