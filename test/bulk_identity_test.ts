/**
 * What makes two commands the same run, end to end with the CLI and the sandbox: the same command
 * against another tenant is a new run; `--csv failures.csv` after newer failures retries the newer
 * ones; one person named twice (UPN and object id) gets one passkey; a second process of a run
 * that is going is refused; an earlier run's results.csv is kept aside, never overwritten.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { bulkFixture, passkeysByUser, readOutput, spawnCli, writeUsersCsv } from "./bulk_support.ts";
import { runCli } from "./cli.ts";

Deno.test("bulk identity: another tenant is another run, even with the same command and file", async () => {
  await using first = await bulkFixture({ users: 5 });
  await using second = await bulkFixture({ users: 5 });
  const upns = first.upns(3);
  const csv = await writeUsersCsv(first, upns);
  const a = await runCli(first.dir, first.env, [], "--csv", csv, "--no-preflight");
  assertEquals(a.code, 0, a.stderr);
  // Same folder, same file, same key: only the tenant differs.
  const env = {
    ...first.env,
    PROVISIONING_SANDBOX: second.sandbox.url,
    PROVISIONING_TENANT: second.sandbox.tenantId,
    PROVISIONING_CLIENT_ID: second.sandbox.app.clientId,
    PROVISIONING_CLIENT_SECRET: second.sandbox.app.clientSecret,
  };
  const b = await runCli(first.dir, env, [], "--csv", csv, "--no-preflight");
  assertEquals(b.code, 0, b.stderr);
  assert.ok(!/resumed/.test(b.stderr), b.stderr);
  for (const upn of upns) assertEquals(passkeysByUser(second.sandbox).get(upn)?.length, 1, upn);
  // The first run's results were kept aside, not overwritten.
  const kept = [...Deno.readDirSync(first.dir)].map((e) => e.name).filter((n) =>
    /^results\..+\.csv$/.test(n)
  );
  assertEquals(kept.length, 1, kept.join());
});

Deno.test("bulk identity: --csv failures.csv retries the latest failures; one person named twice gets one passkey", async () => {
  await using fixture = await bulkFixture({ users: 6 });
  const [u1, u2] = fixture.upns(2);
  const run = (...args: string[]) => runCli(fixture.dir, fixture.env, [], ...args, "--no-preflight");
  await writeUsersCsv(fixture, [u1!, "nobody1@contoso.sandbox"], "day1.csv");
  assertEquals((await run("--csv", "day1.csv")).code, 1);
  assertEquals((await run("--csv", "failures.csv")).code, 1);
  await writeUsersCsv(fixture, [u2!, "nobody2@contoso.sandbox", "nobody3@contoso.sandbox"], "day30.csv");
  assertEquals((await run("--csv", "day30.csv")).code, 1);
  const retry = await run("--csv", "failures.csv");
  assertEquals(retry.code, 1, retry.stderr);
  deepStrictEqual(
    (await readOutput(`${fixture.dir}/failures.csv`)).map((r) => r["user"]).sort(),
    ["nobody2@contoso.sandbox", "nobody3@contoso.sandbox"],
  );

  const [, , u3] = fixture.upns(3);
  const objectId = fixture.sandbox.tenant.user(u3!)!.id;
  const twice = await run("--user", u3!, "--user", objectId);
  assertEquals(twice.code, 1, twice.stderr);
  assertEquals(passkeysByUser(fixture.sandbox).get(u3!)?.length, 1);
  const failures = await readOutput(`${fixture.dir}/failures.csv`);
  deepStrictEqual(failures.map((r) => r["reason code"]), ["duplicate"]);
});

Deno.test("bulk identity: a second process of a run that is going is refused, and the first finishes", async () => {
  await using fixture = await bulkFixture({ users: 60, faults: { latencyMs: 100 } });
  const csv = await writeUsersCsv(fixture, fixture.upns(50));
  const first = spawnCli(fixture, "--csv", csv, "--no-preflight", "--concurrency", "2");
  // Wait until the first holds its journal.
  for (let i = 0; i < 200; i++) {
    const runs = [...Deno.readDirSync(`${fixture.dir}`)].some((e) => e.name === ".provisioning") &&
      [...Deno.readDirSync(`${fixture.dir}/.provisioning`)].some((e) => e.name === "runs") &&
      [...Deno.readDirSync(`${fixture.dir}/.provisioning/runs`)].some((e) => e.name.endsWith(".jsonl"));
    if (runs) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const second = await runCli(fixture.dir, fixture.env, [], "--csv", csv, "--no-preflight");
  const done = await first.output();
  assertEquals(done.code, 0, new TextDecoder().decode(done.stderr));
  assertEquals(second.code, 2, second.stderr);
  assert.match(second.stderr, /another process has its journal/);
  for (const upn of fixture.upns(50)) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
});

Deno.test("--replace-existing is asked for: without a terminal and without --yes it stops before anything", async () => {
  await using fixture = await bulkFixture({ users: 3 });
  const [upn] = fixture.upns(1);
  const refused = await runCli(fixture.dir, fixture.env, [], "--user", upn!, "--replace-existing");
  assertEquals(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /--yes/);
  assertEquals(passkeysByUser(fixture.sandbox).size, 0);
  const confirmed = await runCli(fixture.dir, fixture.env, [], "--user", upn!, "--replace-existing", "--yes");
  assertEquals(confirmed.code, 0, confirmed.stderr);
  assertEquals(passkeysByUser(fixture.sandbox).get(upn!)?.length, 1);
});
