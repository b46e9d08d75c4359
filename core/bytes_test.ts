/**
 * base64 through V8's native `Uint8Array` methods: the same text as `btoa` (the encoder this
 * module used before), round trips in both alphabets, and the same refusals.
 */
import fc from "fast-check";
import { assert, assertEquals, deepStrictEqual } from "../test/assert.ts";
import { fromBase64Any, toBase64, toBase64Url } from "./bytes.ts";

/** The reference: the runtime's `btoa` over a binary string. */
function btoaOf(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

Deno.test("base64 and base64url match btoa and round trip, padded or not, in either alphabet", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const standard = btoaOf(bytes);
      assertEquals(toBase64(bytes), standard);
      const url = standard.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
      assertEquals(toBase64Url(bytes), url);
      deepStrictEqual(fromBase64Any(url), bytes);
      deepStrictEqual(fromBase64Any(standard), bytes);
      deepStrictEqual(fromBase64Any(standard.replace(/=+$/, "")), bytes);
    }),
  );
  // A megabyte, as a vault snapshot's record can be.
  const large = new Uint8Array(1 << 20);
  for (let i = 0; i < large.length; i += 65536) crypto.getRandomValues(large.subarray(i, i + 65536));
  deepStrictEqual(fromBase64Any(toBase64Url(large)), large);
  assertEquals(toBase64(large), btoaOf(large));
});

Deno.test("fromBase64Any refuses what is not base64: other characters, whitespace, an impossible length", () => {
  for (const text of ["abc!", "ab cd", "abcde", "a"]) {
    let refused = false;
    try {
      fromBase64Any(text);
    } catch (error) {
      refused = error instanceof TypeError;
    }
    assert.ok(refused, text);
  }
});
