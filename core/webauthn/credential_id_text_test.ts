import assert from "node:assert/strict";
import fc from "fast-check";
import { equalBytes, toBase64, toBase64Url } from "../bytes.ts";
import { readCredentialIdText, toBase64UrlPaddingDigit } from "./credential_id_text.ts";

const encoders = {
  "base64url": toBase64Url,
  "base64": toBase64,
  "base64url-padding-digit": toBase64UrlPaddingDigit,
} as const;

Deno.test("reads the ids of the response recorded from a real tenant (padded standard base64)", () => {
  // MichaelGrafnetter/webauthn-interop, MicrosoftGraphWebauthnCredentialCreationOptionsTester.cs.
  for (
    const [text, length] of [
      ["TZ2KrDEawbrIGQsnheGZ/BG9Nfnb7blSGwQYMGyJIhM=", 32],
      ["g/V3JMewxqZaKD8mRpB2pTTl3SBnOR6gZEw/URDlB4o=", 32],
      ["GshyINLMaOOwqt1LNUi0gQ==", 16],
      ["9ccVagkzE02vPo+qoonYDv8FoREd9QYOn8RFSsbLr8Y=", 32],
    ] as const
  ) {
    const readings = readCredentialIdText(text);
    assert.equal(readings.length, 1, text);
    assert.equal(readings[0]?.encoding, "base64");
    assert.equal(readings[0]?.bytes.length, length);
    assert.equal(toBase64(readings[0]!.bytes), text);
  }
});

Deno.test("reads webauthn-interop's real-world padding-digit samples", () => {
  // PublicKeyCredentialCreationOptionsTester.cs, added with commit 3a4003a ("Compensate for
  // corrupted base64 padding"): suffix 0 (65 characters), suffix 1 (44), suffix 2 (227).
  const suffix0 = "prXptqCfm_ohEAcE2Jw6CUtUb4uWpb2vaS-cFB82ruMhcIRAE17S0g1bkPjtsC6S0";
  const suffix1 = "MMeD8wrNCZ-0hbfdYvvAIzrsrTGd_uXdt2iXbYlGJSs1";
  const suffix2 =
    "owBYhYk51YPpOdLDJ-mcaIFdZVcCZ63YFogBU0VyJ42UkiptLxN5l7ZkRu4KtEo4XFJfJcahJ5C5uTj4YKxTmeISUiuO" +
    "SgtBHlUh_RndhweyQJ8UY3HWwqvN57T3cvqXy_nG2VsR-Gw2upzNUW4LHGFjfSXj3rEe3B6KltliX1c68aDqDh3dquwBTAK9roaQ" +
    "zq3XZBZT_AJQKX2qop1j1Fh2-xOdeFR7aQ2";
  const only0 = readCredentialIdText(suffix0);
  assert.deepEqual(only0.map((r) => [r.encoding, r.bytes.length]), [["base64url-padding-digit", 48]]);
  assert.equal(toBase64UrlPaddingDigit(only0[0]!.bytes), suffix0);

  const only2 = readCredentialIdText(suffix2);
  assert.deepEqual(only2.map((r) => [r.encoding, r.bytes.length]), [["base64url-padding-digit", 169]]);
  assert.equal(toBase64UrlPaddingDigit(only2[0]!.bytes), suffix2);

  // The one ambiguous shape: also valid plain base64url (33 bytes). Both readings are kept.
  const both = readCredentialIdText(suffix1);
  assert.deepEqual(both.map((r) => [r.encoding, r.bytes.length]), [["base64url", 33], [
    "base64url-padding-digit",
    32,
  ]]);
  assert.equal(toBase64UrlPaddingDigit(both[1]!.bytes), suffix1);
});

Deno.test("every encoding of any id reads back to that id, and only the suffix-1 shape has a second reading", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 1023 }),
      fc.constantFrom(...Object.keys(encoders) as (keyof typeof encoders)[]),
      (id, encoding) => {
        const text = encoders[encoding](id);
        const readings = readCredentialIdText(text);
        const match = readings.filter((r) => equalBytes(r.bytes, id));
        assert.equal(match.length, 1, `${encoding} ${text}: the id must be read exactly once`);
        // Ambiguity only where length cannot tell: unpadded, length a multiple of 4, ending in 1.
        if (readings.length > 1) {
          assert.equal(text.length % 4, 0);
          assert.ok(text.endsWith("1") && !text.includes("="));
          assert.deepEqual(readings.map((r) => r.encoding).sort(), ["base64url", "base64url-padding-digit"]);
        }
        // Never a reading of another length than the two candidates differ by.
        for (const reading of readings) assert.ok(Math.abs(reading.bytes.length - id.length) <= 1);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("the padding-digit form is never mistaken for base64url when its length tells (suffix 0 and 2)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (id) => {
      const text = toBase64UrlPaddingDigit(id);
      const readings = readCredentialIdText(text);
      if (id.length % 3 !== 2) {
        // Suffix 0 (length 1 mod 4) or suffix 2 (last character with stray bits): one reading.
        assert.equal(readings.length, 1);
        assert.equal(readings[0]?.encoding, "base64url-padding-digit");
      }
    }),
    { numRuns: 1000 },
  );
});

Deno.test("refuses text that is none of the three encodings", () => {
  for (
    const text of [
      "",
      "%%%",
      "A",
      "AB=",
      "A===",
      "AQ=x",
      "-w+/",
      "AB", // stray bits in the last character
      "AAB", // stray bits
      "AQID3", // 3 is never a padding count
      "AQ9", // the digit says 2 but the rest has stray bits
      "AQI\u00e9",
    ]
  ) {
    assert.deepEqual(readCredentialIdText(text), [], JSON.stringify(text));
  }
});

Deno.test("any text gives readings that spell it exactly in their encoding, or none; never an exception", () => {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=%é ";
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 64 }),
        fc.string({ unit: fc.constantFrom(...alphabet), maxLength: 64 }),
      ),
      (text) => {
        for (const reading of readCredentialIdText(text)) {
          const spelled = reading.encoding === "base64"
            ? toBase64(reading.bytes)
            : reading.encoding === "base64url-padding-digit"
            ? toBase64UrlPaddingDigit(reading.bytes)
            : toBase64Url(reading.bytes);
          // Padded text in the url alphabet reads as base64url; compare without padding there.
          const expected = reading.encoding === "base64url" ? text.replace(/=+$/, "") : text;
          const actual = reading.encoding === "base64" && !text.endsWith("=")
            ? spelled.replace(/=+$/, "")
            : spelled;
          assert.equal(actual, expected);
        }
      },
    ),
    { numRuns: 3000 },
  );
});
