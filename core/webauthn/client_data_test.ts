import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { verifyAuthenticationResponse } from "@simplewebauthn/server";
import { decodeClientDataJSON } from "@simplewebauthn/server/helpers";
import { concatBytes, toBase64Url, utf8 } from "../bytes.ts";
import { buildClientDataJSON, ccdToString, serializeClientData } from "./client_data.ts";

const challenge = new Uint8Array([
  0x0b,
  0x30,
  0x55,
  0x7a,
  0x9f,
  0xc4,
  0xe9,
  0x0e,
  0x33,
  0x58,
  0x7d,
  0xa2,
  0xc7,
  0xec,
  0x11,
  0x36,
]);
const origin = "https://login.microsoft.com";

Deno.test("WebAuthn L3 §5.8.1.1: serializes type, challenge, origin, crossOrigin in that order and form", async () => {
  const clientData = await buildClientDataJSON({ type: "webauthn.create", challenge, origin });
  assert.equal(
    clientData.json,
    '{"type":"webauthn.create","challenge":"CzBVep_E6Q4zWH2ix-wRNg","origin":"https://login.microsoft.com","crossOrigin":false}',
  );
  assert.deepStrictEqual(clientData.bytes, utf8(clientData.json));
  const parsed = JSON.parse(clientData.json) as Record<string, unknown>;
  assert.deepStrictEqual(Object.keys(parsed), ["type", "challenge", "origin", "crossOrigin"]);
  assert.deepStrictEqual(parsed, {
    type: "webauthn.create",
    challenge: toBase64Url(challenge),
    origin,
    crossOrigin: false,
  });
});

Deno.test("WebAuthn L3 §5.8.1.1: webauthn.get, and topOrigin only after crossOrigin true", () => {
  assert.equal(
    serializeClientData({ type: "webauthn.get", challenge: new Uint8Array([1, 2, 3]), origin }),
    '{"type":"webauthn.get","challenge":"AQID","origin":"https://login.microsoft.com","crossOrigin":false}',
  );
  assert.equal(
    serializeClientData({
      type: "webauthn.get",
      challenge: new Uint8Array([1, 2, 3]),
      origin,
      crossOrigin: true,
    }),
    '{"type":"webauthn.get","challenge":"AQID","origin":"https://login.microsoft.com","crossOrigin":true}',
  );
  assert.equal(
    serializeClientData({
      type: "webauthn.get",
      challenge: new Uint8Array([1, 2, 3]),
      origin,
      crossOrigin: true,
      topOrigin: "https://portal.contoso.com",
    }),
    '{"type":"webauthn.get","challenge":"AQID","origin":"https://login.microsoft.com","crossOrigin":true,"topOrigin":"https://portal.contoso.com"}',
  );
  assert.equal(
    serializeClientData({ type: "webauthn.create", challenge: new Uint8Array(0), origin }),
    '{"type":"webauthn.create","challenge":"","origin":"https://login.microsoft.com","crossOrigin":false}',
  );
});

Deno.test("refuses a topOrigin for a call that is not cross-origin", () => {
  for (const crossOrigin of [undefined, false]) {
    assert.throws(
      () =>
        serializeClientData({
          type: "webauthn.get",
          challenge,
          origin,
          ...(crossOrigin === undefined ? {} : { crossOrigin }),
          topOrigin: "https://portal.contoso.com",
        }),
      (error: unknown) =>
        error instanceof TypeError &&
        /topOrigin "https:\/\/portal.contoso.com" is set only for a cross-origin call/.test(error.message),
    );
  }
});

Deno.test("CCDToString: escapes quote, backslash and C0 controls as the spec says, not as JSON.stringify does", () => {
  assert.equal(ccdToString('a"b\\c'), '"a\\"b\\\\c"');
  assert.equal(ccdToString("\n\t\r\b\f"), '"\\u000a\\u0009\\u000d\\u0008\\u000c"');
  assert.notEqual(ccdToString("\n"), JSON.stringify("\n"), 'JSON.stringify writes "\\n"');
  assert.equal(ccdToString("\u0000\u001f"), '"\\u0000\\u001f"');
  // U+0020, U+0021, U+0023–U+005B, U+005D and above stand for themselves: DEL, non-ASCII, astral too.
  assert.equal(ccdToString(" !#[]~\u007f"), '" !#[]~\u007f"');
  assert.equal(ccdToString("bücher 😀 \u2028"), '"bücher 😀 \u2028"');
  // A lone surrogate cannot be UTF-8: it becomes U+FFFD, in the text as in the bytes.
  assert.equal(ccdToString("a\ud800b"), '"a\ufffdb"');
});

Deno.test("CCDToString: every code point below U+0080, byte for byte", () => {
  for (let code = 0; code < 0x80; code++) {
    const char = String.fromCharCode(code);
    const expected = code === 0x22
      ? '\\"'
      : code === 0x5c
      ? "\\\\"
      : code < 0x20
      ? `\\u00${code.toString(16).padStart(2, "0")}`
      : char;
    assert.equal(ccdToString(char), `"${expected}"`, `U+${code.toString(16).padStart(4, "0")}`);
  }
});

/** Any code points, lone surrogates included, with ASCII (where the escapes are) weighted up. */
const anyString = fc.array(
  fc.oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0, max: 0x10ffff })),
  {
    maxLength: 64,
  },
).map((codes) => String.fromCodePoint(...codes));

Deno.test("CCDToString output parses back with JSON.parse to the (well-formed) input, for any string", () => {
  fc.assert(
    fc.property(anyString, (value) => {
      const encoded = ccdToString(value);
      assert.equal(JSON.parse(encoded), value.toWellFormed());
      // deno-lint-ignore no-control-regex -- looking for raw control characters is the point
      assert.ok(!/[\u0000-\u001f]/.test(encoded), "no raw control characters");
      assert.ok(!/\\[^"\\u]/.test(encoded.replaceAll("\\\\", "")), "only the spec's escapes");
    }),
    { numRuns: 1000 },
  );
});

Deno.test("any origin and challenge give clientDataJSON that JSON.parse and SimpleWebAuthn read back", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ maxLength: 64 }),
      fc.string({ unit: "grapheme", maxLength: 40 }),
      fc.constantFrom("webauthn.create" as const, "webauthn.get" as const),
      async (bytes, anyOrigin, type) => {
        const clientData = await buildClientDataJSON({ type, challenge: bytes, origin: anyOrigin });
        const expected = { type, challenge: toBase64Url(bytes), origin: anyOrigin, crossOrigin: false };
        assert.deepStrictEqual(JSON.parse(new TextDecoder().decode(clientData.bytes)), expected);
        assert.deepStrictEqual(decodeClientDataJSON(toBase64Url(clientData.bytes)), expected);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("hash is SHA-256 of the UTF-8 bytes (checked against node:crypto)", async () => {
  const clientData = await buildClientDataJSON({
    type: "webauthn.create",
    challenge,
    origin: "https://bücher.example",
  });
  assert.equal(clientData.hash.length, 32);
  assert.deepStrictEqual(
    clientData.hash,
    new Uint8Array(createHash("sha256").update(clientData.bytes).digest()),
  );
  assert.ok(clientData.bytes.length > clientData.json.length, "non-ASCII is UTF-8 encoded");
});

Deno.test("SimpleWebAuthn's decodeClientDataJSON agrees with our serialization, cross-origin included", async () => {
  const clientData = await buildClientDataJSON({
    type: "webauthn.get",
    challenge,
    origin,
    crossOrigin: true,
    topOrigin: "https://portal.contoso.com",
  });
  assert.deepStrictEqual(decodeClientDataJSON(toBase64Url(clientData.bytes)), {
    type: "webauthn.get",
    challenge: toBase64Url(challenge),
    origin,
    crossOrigin: true,
    topOrigin: "https://portal.contoso.com",
  });
});

/** COSE_Key for an Ed25519 public key (RFC 9053 §7.2): {1: 1 (OKP), 3: -8 (EdDSA), -1: 6 (Ed25519), -2: x}. */
function coseEd25519(x: Uint8Array): Uint8Array<ArrayBuffer> {
  return concatBytes(new Uint8Array([0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 0x20]), x);
}

Deno.test("SimpleWebAuthn verifies an assertion signed over our clientDataJSON hash", async () => {
  const rpId = "login.microsoft.com";
  const keys = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
  const credentialId = toBase64Url(new Uint8Array(16).fill(7));

  for (const topOrigin of [undefined, "https://portal.contoso.com"]) {
    const clientData = await buildClientDataJSON({
      type: "webauthn.get",
      challenge,
      origin,
      ...(topOrigin ? { crossOrigin: true, topOrigin } : {}),
    });
    const rpIdHash = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(rpId)));
    // rpIdHash || flags (UP | UV) || signCount 1 (WebAuthn L3 §6.1).
    const authenticatorData = concatBytes(rpIdHash, new Uint8Array([0x05, 0, 0, 0, 1]));
    const signature = new Uint8Array(
      await crypto.subtle.sign("Ed25519", keys.privateKey, concatBytes(authenticatorData, clientData.hash)),
    );
    const result = await verifyAuthenticationResponse({
      response: {
        id: credentialId,
        rawId: credentialId,
        type: "public-key",
        response: {
          clientDataJSON: toBase64Url(clientData.bytes),
          authenticatorData: toBase64Url(authenticatorData),
          signature: toBase64Url(signature),
        },
        clientExtensionResults: {},
      },
      expectedChallenge: toBase64Url(challenge),
      expectedOrigin: origin,
      expectedRPID: rpId,
      ...(topOrigin ? { expectedTopOrigin: topOrigin } : {}),
      credential: { id: credentialId, publicKey: coseEd25519(publicKey), counter: 0 },
      requireUserVerification: true,
    });
    assert.equal(result.verified, true);
    assert.equal(result.authenticationInfo.origin, origin);
  }
});
