/**
 * A bulk run over security keys, end to end: the engine against the Entra sandbox with a key
 * station lending one key per user — software keys served over their CTAPHID sockets in place of
 * USB keys. Each key gets a random PIN (written only to the PIN file), its passkey is registered,
 * checked with a test assertion, and the forced PIN change is applied; the results record the PIN
 * state; no PIN reaches the results, the journal or the failures.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { bulkFixture, cliSandbox, passkeysByUser, readOutput, sandboxSession } from "./bulk_support.ts";
import { runCli } from "./cli.ts";
import { scriptedUser } from "./software_key.ts";
import { serveKey } from "../authenticators/hid/_test_support.ts";
import type { KeyLocation } from "../authenticators/hid/keys.ts";
import { KeyStation } from "../authenticators/hid/station.ts";
import { runBulk } from "../core/jobs/engine.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { PinOutputFile } from "../core/jobs/output/pin_output.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { readUsersFromList } from "../core/jobs/sources/csv.ts";

Deno.test("bulk over security keys: one prepared key per user, random PINs only in the PIN file, forced change flagged", async () => {
  await using sandbox = await cliSandbox({ users: 6 });
  const dir = await Deno.makeTempDir({ prefix: "hid-bulk-" });
  try {
    await using session = await sandboxSession(sandbox, dir);
    await using a = await serveKey(dir, "a");
    await using b = await serveKey(dir, "b");
    await using c = await serveKey(dir, "c");
    const plugged: KeyLocation[] = [a.location, b.location, c.location];
    const notes: string[] = [];
    const station = new KeyStation({
      discover: () => Promise.resolve({ keys: plugged, skipped: [] }),
      policy: { pin: { kind: "random", length: 8 }, forcePinChange: true },
      rpId: "login.microsoft.com",
      notify: (text) => notes.push(text),
      interaction: scriptedUser(),
      pollIntervalMs: 1,
    });
    const upns = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u))
      .slice(0, 3);
    {
      await using results = await openResultsFile(`${dir}/results.csv`, { fresh: true });
      await using failures = await openFailuresFile(`${dir}/failures.csv`, { fresh: true });
      await using journal = await openJournal(`${dir}/run.jsonl`, {
        runId: "0123456789ab",
        fingerprint: "f",
      });
      await using pins = await PinOutputFile.open(`${dir}/pins.jsonl`);
      const summary = await runBulk({
        runId: "0123456789ab",
        source: readUsersFromList(upns),
        session,
        station,
        pinOutput: pins,
        interaction: scriptedUser(),
        displayName: "Security key",
        concurrency: 2,
        journal,
        results,
        failures,
      });
      assertEquals(summary.counts.provisioned, 3, JSON.stringify(summary));
    }
    const held = passkeysByUser(sandbox);
    for (const upn of upns) assertEquals(held.get(upn)?.length, 1, upn);

    const results = await readOutput(`${dir}/results.csv`);
    deepStrictEqual(results.map((r) => [r["pin set"], r["pin must change"]]), [
      ["true", "true"],
      ["true", "true"],
      ["true", "true"],
    ]);
    const pinLines = (await Deno.readTextFile(`${dir}/pins.jsonl`)).trim().split("\n").map((line) =>
      JSON.parse(line) as { user: string; pin: string; pinMustChange: boolean }
    );
    deepStrictEqual(new Set(pinLines.map((p) => p.user)), new Set(upns));
    for (const { pin } of pinLines) {
      assert.match(pin, /^\d{8}$/);
      for (const file of ["results.csv", "failures.csv", "run.jsonl"]) {
        assert.ok(!(await Deno.readTextFile(`${dir}/${file}`)).includes(pin), `a PIN leaked into ${file}`);
      }
    }
    for (const served of [a, b, c]) {
      assertEquals((await served.key.client.getInfo({ refresh: true })).forcePINChange, true);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("provision --authenticator hid --device unix:PATH: the CLI prepares the key, writes the PIN file, records the PIN state", async () => {
  await using fixture = await bulkFixture({ users: 3 });
  await using key = await serveKey(fixture.dir, "desk");
  const [upn] = fixture.upns(1);
  const run = await runCli(
    fixture.dir,
    fixture.env,
    [`--allow-net=127.0.0.1,unix:${key.location.address.path}`],
    "provision",
    "--user",
    upn!,
    "--authenticator",
    "hid",
    "--device",
    key.device,
    "--new-pin",
    "random",
    "--force-pin-change",
    "--pin-output",
    "pins.jsonl",
  );
  assertEquals(run.code, 0, run.stderr);
  assertEquals(passkeysByUser(fixture.sandbox).get(upn!)?.length, 1);
  const [row] = await readOutput(`${fixture.dir}/results.csv`);
  assertEquals(row?.["pin must change"], "true");
  // One record when the key got its PIN (before the passkey existed), one when it was finished.
  const pins = (await Deno.readTextFile(`${fixture.dir}/pins.jsonl`)).trim().split("\n")
    .map((line) => JSON.parse(line) as { pin: string; stage: string; pinMustChange: boolean });
  deepStrictEqual(pins.map((p) => [p.stage, p.pinMustChange]), [["prepared", false], ["completed", true]]);
  assertEquals(pins[0]!.pin, pins[1]!.pin);
  const { pin } = pins[1]!;
  assert.ok(!run.stdout.includes(pin) && !run.stderr.includes(pin), "the PIN was printed");

  const refused = await runCli(
    fixture.dir,
    fixture.env,
    // The same grants as above: a missing grant is refused first (core/cli/path_guard.ts).
    [`--allow-net=127.0.0.1,unix:${key.location.address.path}`],
    "provision",
    "--user",
    upn!,
    "--authenticator",
    "hid",
    "--device",
    key.device,
    "--new-pin",
    "random",
  );
  assertEquals(refused.code, 2);
  assert.match(refused.stderr, /--pin-output/);
});
