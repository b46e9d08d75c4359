/**
 * The CSV files admins actually have: one Excel saved as "CSV (Comma delimited)" (Windows-1252,
 * no byte order mark) is read, with one notice; an Excel workbook given as `--csv` is refused
 * before the run starts, leaving no journal and nothing of its content in any output.
 */
import { assert, assertEquals } from "./assert.ts";
import { bulkFixture, passkeysByUser, readOutput } from "./bulk_support.ts";
import { runCli } from "./cli.ts";

Deno.test("a Windows-1252 CSV from Excel is read as such, said once", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const [a, b] = fixture.upns(2);
  // "upn;Display name" with "Jürgen Müller" and "Zoë Ångström" in Windows-1252 (ü 0xFC, ë 0xEB, Å 0xC5, ö 0xF6).
  const text = `upn;Display name\r\n${a};J\u00fcrgen M\u00fcller\r\n${b};Zo\u00eb \u00c5ngstr\u00f6m\r\n`;
  const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
  await Deno.writeFile(`${fixture.dir}/excel.csv`, bytes);
  const run = await runCli(fixture.dir, fixture.env, [], "--csv", "excel.csv");
  assertEquals(run.code, 0, run.stderr);
  assertEquals(run.stderr.match(/read as Windows-1252/g)?.length, 1, run.stderr);
  assertEquals(passkeysByUser(fixture.sandbox).size, 2);
  const rows = await readOutput(`${fixture.dir}/results.csv`);
  assertEquals(rows.length, 2);
});

Deno.test("an Excel workbook given as --csv is refused before the run starts, leaving no journal", async () => {
  await using fixture = await bulkFixture({ users: 2 });
  // The start of a real .xlsx: a ZIP local file header, then the workbook's parts.
  const workbook = new Uint8Array([
    0x50,
    0x4b,
    0x03,
    0x04,
    0x14,
    0x00,
    0x06,
    0x00,
    ...new TextEncoder().encode("[Content_Types].xml secret-cell"),
  ]);
  await Deno.writeFile(`${fixture.dir}/users.xlsx`, workbook);
  const run = await runCli(fixture.dir, fixture.env, [], "--csv", "users.xlsx");
  assertEquals(run.code, 2, run.stderr);
  assert.match(run.stderr, /ZIP archive \(an Excel \.xlsx workbook\?\)/);
  assert.doesNotMatch(run.stderr, /started/);
  assert.ok(!run.stderr.includes("secret-cell") && !run.stdout.includes("secret-cell"));
  const journals = await Array.fromAsync(Deno.readDir(`${fixture.dir}/.provisioning/runs`)).catch(() => []);
  assertEquals(journals.length, 0);
  await Deno.stat(`${fixture.dir}/failures.csv`).then(
    () => assert.fail("a failures.csv was written"),
    () => {},
  );
});
