import fc from "fast-check";
import { ProvisioningError } from "../../errors.ts";
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { formatCsvRow, formatCsvRowByLibrary } from "./csv_file.ts";
import { failuresHeader, openFailuresFile } from "./failures.ts";
import { neutraliseCell, restoreCell } from "./formula.ts";
import { openResultsFile, type ResultRow } from "./results.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const time = new Date("2025-01-02T03:04:05.000Z");

Deno.test("neutralises every cell a spreadsheet would execute (OWASP CSV injection)", () => {
  for (const payload of ["=1+2", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "'=1", "''-x"]) {
    assertEquals(neutraliseCell(payload), `'${payload}`);
  }
  for (const safe of ["alice@contoso.com", "O'Brien", "a=b", ""]) assertEquals(neutraliseCell(safe), safe);
});

Deno.test("property: restoreCell undoes neutraliseCell for every string", () => {
  fc.assert(fc.property(fc.string(), (value) => {
    const cell = neutraliseCell(value);
    assert.ok(!/^[=+\-@\t\r]/.test(cell));
    assertEquals(restoreCell(cell), value);
  }));
});

Deno.test("results.csv: header, quoted cells, BOM, 0600, one row per write", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/results.csv`;
    const results = await openResultsFile(path, { now: () => time });
    await results.write({
      user: "alice@contoso.com",
      objectId: "0e7f3c5a-1b2c-4d3e-8f90-a1b2c3d4e5f6",
      status: "provisioned",
      methodId: "m-1",
      credentialId: "Y3JlZA",
      aaguid: "00000000-0000-0000-0000-000000000000",
      displayName: '=Key, "one"',
    });
    await results.close();
    await results.close();
    assertEquals(
      await Deno.readTextFile(path),
      '\uFEFF"user","object id","status","method id","credential id","aaguid","display name","time","serial","pin set","pin must change"\r\n' +
        '"alice@contoso.com","0e7f3c5a-1b2c-4d3e-8f90-a1b2c3d4e5f6","provisioned","m-1","Y3JlZA",' +
        '"00000000-0000-0000-0000-000000000000","\'=Key, ""one""","2025-01-02T03:04:05.000Z",,,\r\n',
    );
    if (Deno.build.os !== "windows") assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  });
});

Deno.test("row types cannot carry a secret, and nothing undeclared is written", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/results.csv`;
    const results = await openResultsFile(path);
    // @ts-expect-error a PIN has no place in a result row
    const literal: ResultRow = { user: "a@contoso.com", status: "provisioned", pin: "1234" };
    const sneaky = { user: "b@contoso.com", status: "provisioned", tap: "TAP-SECRET-5678" } as const;
    await results.write(literal);
    await results.write(sneaky as unknown as ResultRow);
    await results.close();
    const text = await Deno.readTextFile(path);
    assert.ok(!text.includes("1234") && !text.includes("TAP-SECRET"), text);
  });
});

Deno.test("reopening appends without a second header and drops a row cut short by a crash", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/failures.csv`;
    const first = await openFailuresFile(path, { now: () => time });
    await first.write({ user: "a@contoso.com", row: 2, code: "throttled", message: "429" });
    await first.close();
    await Deno.writeTextFile(path, '"b@contoso.com","3","thro', { append: true }); // killed mid-row
    const second = await openFailuresFile(path, { now: () => time });
    await second.write({ user: "c@contoso.com", code: "not-found", message: "no such user" });
    await second.close();
    const lines = (await Deno.readTextFile(path)).split("\r\n");
    assertEquals(lines.length, 4);
    assert.ok(lines[0]?.includes(failuresHeader.join('","')));
    assert.match(lines[1] ?? "", /^"a@contoso\.com","2","throttled","429"/);
    assert.match(lines[2] ?? "", /^"c@contoso\.com",,"not-found"/);
  });
});

Deno.test("refuses to append to a file with another header", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/failures.csv`;
    await Deno.writeTextFile(path, "upn\nalice@contoso.com\n");
    const error = await rejects(openFailuresFile(path), ProvisioningError);
    assertEquals(error.code, "output-header-mismatch");
  });
});

Deno.test("concurrent writes land as whole rows in call order", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/results.csv`;
    const results = await openResultsFile(path, { now: () => time });
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => results.write({ user: `u${i}@contoso.com`, status: "skipped" })),
    );
    await results.close();
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\r\n").slice(1);
    assertEquals(lines.length, 200);
    lines.forEach((line, i) => assert.ok(line.startsWith(`"u${i}@contoso.com",,"skipped"`), line));
  });
});

Deno.test("a NUL in a message is replaced so the file stays readable text", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/failures.csv`;
    const failures = await openFailuresFile(path);
    await failures.write({ user: "a@contoso.com", code: "x", message: "bad\0byte" });
    await failures.close();
    assert.ok(!(await Deno.readTextFile(path)).includes("\0"));
  });
});

Deno.test("property: the row formatter writes exactly what csv-stringify (quoted, CRLF) writes", () => {
  fc.assert(
    fc.property(fc.array(fc.string({ unit: "binary" }), { minLength: 1, maxLength: 12 }), (cells) => {
      assertEquals(formatCsvRow(cells), formatCsvRowByLibrary(cells));
    }),
    { numRuns: 2000 },
  );
  assertEquals(formatCsvRow(["a", "", 'b"c', "=1+2", "x\r\ny"]), '"a",,"b""c","\'=1+2","x\r\ny"\r\n');
});
