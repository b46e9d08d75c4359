import fc from "fast-check";
import { assert, assertEquals, throws } from "../../../test/assert.ts";
import { maxRow, SeenUsers } from "./seen_users.ts";

/** What SeenUsers stands in for: a map of lowercased references to their first row. */
class MapModel {
  readonly #first = new Map<string, number>();
  admit(reference: string, row: number): number | undefined {
    const key = reference.toLowerCase();
    const first = this.#first.get(key);
    if (first === undefined) this.#first.set(key, row);
    return first;
  }
  get size(): number {
    return this.#first.size;
  }
}

// Few distinct names, so that sequences repeat users, in mixed case, with non-ASCII letters whose
// lowercase differs in length (İ), astral characters and empty strings.
const base = fc.constantFrom(
  "alice@contoso.com",
  "bob@contoso.com",
  "ÄRGER@例え.jp",
  "i̇stanbul@contoso.com",
  "İSTANBUL@contoso.com",
  "😀@emoji.example",
  "0b9e1e8c-3f4d-4c1a-9a57-6f0c2d1e0a11",
  "",
  "a",
  "ab",
);
const recase = (value: string, flips: boolean[]) =>
  [...value].map((char, i) => flips[i % Math.max(flips.length, 1)] ? char.toUpperCase() : char).join("");
const reference = fc.oneof(
  fc.tuple(base, fc.array(fc.boolean(), { maxLength: 8 })).map(([value, flips]) => recase(value, flips)),
  fc.string({ unit: "binary", maxLength: 12 }),
  fc.nat(5000).map((n) => `user${n}@contoso.com`),
);

Deno.test("property: SeenUsers answers as a Map of lowercased references, through every growth", () => {
  fc.assert(
    fc.property(
      fc.array(reference, { maxLength: 400 }),
      fc.tuple(fc.nat(), fc.nat()),
      fc.constantFrom(0, 1, 13, 64, 500),
      (references, seeds, expectedUsers) => {
        const seen = new SeenUsers({ seeds, expectedUsers });
        const model = new MapModel();
        references.forEach((value, i) => {
          const row = i + 2;
          assertEquals(
            seen.admit(value, row),
            model.admit(value, row),
            `row ${row}: ${JSON.stringify(value)}`,
          );
        });
        assertEquals(seen.size, model.size);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("a duplicate points at the first row, whatever the case, and is not recorded again", () => {
  const seen = new SeenUsers({ seeds: [1, 2] });
  assertEquals(seen.admit("Alice@Contoso.com", 2), undefined);
  assertEquals(seen.admit("alice@contoso.com", 7), 2);
  assertEquals(seen.admit("ALICE@CONTOSO.COM", 9), 2);
  assertEquals(seen.size, 1);
});

Deno.test("a million expected users fit in 15 MB, allocated once, with no false duplicate", () => {
  const seen = new SeenUsers({ expectedUsers: 1_000_000 });
  const allocated = seen.byteLength;
  assertEquals(allocated, 1_250_000 * 12);
  for (let i = 0; i < 1_000_000; i++) {
    if (seen.admit(`user${i}@contoso.com`, i + 2) !== undefined) {
      throw new Error(`user${i}@contoso.com was taken for a duplicate`);
    }
  }
  assertEquals(seen.size, 1_000_000);
  assertEquals(seen.byteLength, allocated);
  assertEquals(seen.admit("USER999999@contoso.com", 5), 1_000_001);
});

Deno.test("a table given no expectation, or too small a one, doubles as users come", () => {
  for (const expectedUsers of [undefined, 100]) {
    const seen = new SeenUsers({ expectedUsers });
    const start = seen.byteLength;
    for (let i = 0; i < 20_000; i++) assertEquals(seen.admit(`user${i}@contoso.com`, i + 2), undefined);
    assert.ok(seen.byteLength > start, `${expectedUsers}: ${seen.byteLength} bytes`);
    assert.ok(
      seen.byteLength <= 20_000 * 2 * 12 * 10 / 9 + 12 * 1_000,
      `${expectedUsers}: ${seen.byteLength}`,
    );
    for (let i = 0; i < 20_000; i++) assertEquals(seen.admit(`USER${i}@contoso.com`, 1), i + 2);
  }
});

Deno.test("rows outside 1 to 2^32-1 are refused", () => {
  const seen = new SeenUsers();
  for (const row of [0, -1, 1.5, maxRow + 1, Number.NaN]) {
    throws(() => seen.admit("alice@contoso.com", row), RangeError, String(row));
  }
  assertEquals(seen.admit("alice@contoso.com", maxRow), undefined);
  assertEquals(seen.admit("Alice@contoso.com", 3), maxRow);
  assert.ok(seen.size === 1);
});

Deno.test("SeenUsers put/get: a value replaced in place, case-insensitive, growing past its guess", () => {
  const table = new SeenUsers({ expectedUsers: 4, seeds: [1, 2] });
  for (let i = 1; i <= 1000; i++) table.put(`user${i}@contoso.com`, i);
  for (let i = 1; i <= 1000; i++) table.put(`USER${i}@contoso.com`, i + 5);
  assertEquals(table.size, 1000);
  assertEquals(table.get("user7@contoso.com"), 12);
  assertEquals(table.get("nobody@contoso.com"), undefined);
});
