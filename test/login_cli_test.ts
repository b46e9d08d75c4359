/**
 * The IDmelon tool's `--login`, end to end against the Entra sandbox (issue 13: it never ran end
 * to end): `provisioning --login` alone signs the admin in and caches the sign-in; `--login` with
 * `--csv` signs in before the run and then provisions. The app's client credentials stand in for
 * the admin's interactive sign-in, which the sandbox's device-code tests cover.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { runCli } from "./cli.ts";
import { bulkFixture, passkeysByUser, readOutput, writeUsersCsv } from "./bulk_support.ts";

Deno.test("--login alone signs in and says who; --login with --csv signs in, then provisions", async () => {
  await using fixture = await bulkFixture({ users: 2, throttle: { enabled: false } });
  const alone = await runCli(fixture.dir, fixture.env, [], "--login");
  assertEquals(alone.code, 0, alone.stderr);
  assert.match(alone.stdout, /Signed in as/, alone.stdout);
  // The sign-in is cached: whoami answers from it.
  const whoami = await runCli(fixture.dir, fixture.env, [], "whoami");
  assertEquals(whoami.code, 0, whoami.stderr);
  assert.match(whoami.stdout, /Signed in as/, whoami.stdout);

  const upns = fixture.upns(2);
  await writeUsersCsv(fixture, upns);
  const run = await runCli(fixture.dir, fixture.env, [], "--login", "--csv", "users.csv");
  assertEquals(run.code, 0, run.stderr);
  const results = await readOutput(`${fixture.dir}/results.csv`);
  deepStrictEqual(results.map((row) => row["user"]).sort(), [...upns].sort());
  const held = passkeysByUser(fixture.sandbox);
  for (const upn of upns) assertEquals(held.get(upn)?.length ?? 0, 1, upn);
});
