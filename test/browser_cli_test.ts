/**
 * The browser path through the bulk run, as an admin starts it: `provisioning --csv users.csv
 * --via browser --concurrency 2` against the sandbox's sign-in and Security info pages, in one
 * headless Chromium with a private context per user. Each user ends with one verified passkey and
 * no Temporary Access Pass left behind.
 */
import { assert, assertEquals } from "./assert.ts";
import { bulkFixture, passkeysByUser, readOutput, writeUsersCsv } from "./bulk_support.ts";
import { runCli } from "./cli.ts";

Deno.test("bulk --via browser: three users through the sign-in pages, one passkey each, no pass left", async () => {
  await using fixture = await bulkFixture({ users: 5 });
  const upns = fixture.upns(3);
  const csv = await writeUsersCsv(fixture, upns);
  const run = await runCli(
    fixture.dir,
    fixture.env,
    // The test's --allow-read for its folder replaces the set's list: grant the browser again.
    ["--allow-read=/usr/bin/chromium"],
    "--csv",
    csv,
    "--via",
    "browser",
    "--concurrency",
    "2",
    "--no-preflight",
  );
  assertEquals(run.code, 0, run.stderr);
  assert.match(run.stdout, /provisioned\s+3\n/);
  const held = passkeysByUser(fixture.sandbox);
  for (const upn of upns) {
    assertEquals(held.get(upn)?.length, 1, upn);
    assert.ok(held.get(upn)![0]!.verified);
  }
  assertEquals(fixture.sandbox.inspect().temporaryAccessPassesOutstanding, 0);
  const results = await readOutput(`${fixture.dir}/results.csv`);
  assertEquals(results.length, 3);
  for (const row of results) assert.match(row["credential id"]!, /^[A-Za-z0-9_-]{16,}$/);
  // Each pass's id was journaled before the pass was used (never the pass), and cleared once the
  // flow deleted it.
  const [journal] = [...Deno.readDirSync(`${fixture.dir}/.provisioning/runs`)].filter((e) =>
    e.name.endsWith(".jsonl")
  );
  const lines = Deno.readTextFileSync(`${fixture.dir}/.provisioning/runs/${journal!.name}`).trim().split("\n")
    .map((line) => JSON.parse(line) as { k?: string; passId?: string });
  for (const upn of upns) {
    const ids = lines.filter((l) => l.k === upn.toLowerCase() && l.passId !== undefined).map((l) => l.passId);
    assertEquals(ids.length, 2, `${upn}: ${JSON.stringify(ids)}`);
    assert.match(ids[0]!, /^[0-9a-f-]{36}$/);
    assertEquals(ids[1], "");
  }
});

Deno.test("--capture-flow DIR: every step's evidence per user, 0600 files in 0700 folders; refused without the browser path", async () => {
  await using fixture = await bulkFixture({ users: 2 });
  const [upn] = fixture.upns(1);
  const csv = await writeUsersCsv(fixture, [upn!]);
  const refused = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--capture-flow",
    "captures",
    "--no-preflight",
  );
  assertEquals(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /--capture-flow/);
  const run = await runCli(
    fixture.dir,
    fixture.env,
    ["--allow-read=/usr/bin/chromium"],
    "--csv",
    csv,
    "--via",
    "browser",
    "--capture-flow",
    "captures",
    "--no-preflight",
  );
  assertEquals(run.code, 0, run.stderr);
  const folder = `${fixture.dir}/captures/${upn}`;
  assertEquals(Deno.statSync(`${fixture.dir}/captures`).mode! & 0o777, 0o700);
  assertEquals(Deno.statSync(folder).mode! & 0o777, 0o700);
  const files = [...Deno.readDirSync(folder)].map((e) => e.name).sort();
  assert.ok(files.includes("01-enter-upn.json"), String(files));
  assert.ok(files.some((f) => f.endsWith("-goal.html")), String(files));
  for (const file of files) assertEquals(Deno.statSync(`${folder}/${file}`).mode! & 0o777, 0o600, file);
});
