import { assertEquals, deepStrictEqual, throws } from "../../test/assert.ts";
import fc from "fast-check";
import { fromHex, toHex } from "../bytes.ts";
import { CborDecodeError, decodeCbor, decodeCborPrefix, encodeCbor, fromIntMap, toIntMap } from "./cbor.ts";

/** CBOR values as CTAP uses them: no floats, no tags, int- or text-keyed maps. */
const ctapValue = fc.letrec((tie) => ({
  leaf: fc.oneof(
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
    fc.string(),
    fc.uint8Array({ maxLength: 64 }),
    fc.boolean(),
    fc.constant(null),
  ),
  value: fc.oneof(
    { depthSize: "small", maxDepth: 3 },
    tie("leaf"),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.uniqueArray(fc.tuple(fc.integer({ min: -24, max: 300 }), tie("value")), {
      selector: ([key]) => key,
      minLength: 1,
      maxLength: 5,
    }).map((entries) => new Map(entries)),
    fc.dictionary(fc.string({ minLength: 1 }), tie("value"), {
      minKeys: 1,
      maxKeys: 5,
      noNullPrototype: true,
    })
      .filter((record) => !Object.hasOwn(record, "__proto__")),
  ),
})).value;

Deno.test("CBOR round trip: any CTAP-shaped value decodes to itself and re-encodes to the same bytes", () => {
  fc.assert(fc.property(ctapValue, (value) => {
    const bytes = encodeCbor(value);
    const decoded = decodeCbor(bytes);
    deepStrictEqual(decoded, value);
    assertEquals(toHex(encodeCbor(decoded)), toHex(bytes));
  }));
});

Deno.test("CBOR encoding is CTAP2 canonical: integer keys ascending, negatives after positives, shorter text keys first (CTAP 2.1 §8)", () => {
  const bytes = encodeCbor(new Map<number, unknown>([[-1, 0], [3, 0], [1, { type: 0, alg: 0, x: 0 }]]));
  // a3 | 01 a3 61 78 00 63 616c67 00 64 74797065 00 | 03 00 | 20 00
  assertEquals(toHex(bytes), "a301a361780063616c670064747970650003002000");
});

Deno.test("CBOR decoding refuses non-minimal integers, indefinite lengths, duplicate keys, undefined and trailing bytes", () => {
  for (
    const hex of [
      "1801", // 1 encoded in two bytes
      "5f4101ff", // indefinite byte string
      "a20101", // map of two entries holding one
      "a201010102", // duplicate key 1
      "f7", // undefined
      "0101", // trailing byte
      "", // nothing
    ]
  ) {
    throws(() => decodeCbor(fromHex(hex)), CborDecodeError, hex);
  }
});

Deno.test("CBOR prefix decoding returns the bytes after the first item", () => {
  const [value, rest] = decodeCborPrefix(fromHex("a1010203"));
  deepStrictEqual(value, new Map([[1, 2]]));
  assertEquals(toHex(rest), "03");
});

Deno.test("arbitrary bytes either decode or raise CborDecodeError, never anything else", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 128 }), (bytes) => {
    try {
      decodeCbor(bytes);
    } catch (error) {
      if (!(error instanceof CborDecodeError)) throw error;
    }
  }));
});

Deno.test("integer-keyed maps read into named fields and back, leaving out undefined fields", () => {
  const keys = { rpId: 1, clientDataHash: 2, extensions: 4 };
  const map = toIntMap(
    { rpId: "example.com", clientDataHash: new Uint8Array([1]), extensions: undefined },
    keys,
  );
  deepStrictEqual([...map.keys()], [1, 2]);
  deepStrictEqual(fromIntMap(map, keys), { rpId: "example.com", clientDataHash: new Uint8Array([1]) });
  assertEquals(fromIntMap("not a map", keys), undefined);
  deepStrictEqual(fromIntMap(new Map(), keys), {});
});
