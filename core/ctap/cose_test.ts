import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import fc from "fast-check";
import { utf8 } from "../bytes.ts";
import { decodeCbor, encodeCbor } from "./cbor.ts";
import {
  CoseAlgorithm,
  cosePublicKeyToSpki,
  decodeCosePublicKey,
  encodeCosePublicKey,
  encodeEc2PublicKey,
  encodeEd25519PublicKey,
  uncompressedPoint,
} from "./cose.ts";
import { CtapError, CtapStatus } from "./status.ts";

/** The status of the CtapError `fn` throws; fails when it throws anything else or nothing. */
function ctapStatusOf(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CtapError, `expected a CtapError, got ${String(error)}`);
    return error.status;
  }
  assert.fail("expected a CtapError, nothing was thrown");
}

function p256Cose(alg: number = CoseAlgorithm.ES256): Map<number, unknown> {
  return encodeEc2PublicKey(p256.getPublicKey(p256.utils.randomSecretKey(), false), alg);
}

function withEntry(map: Map<number, unknown>, label: number, value: unknown): Map<number, unknown> {
  const copy = new Map(map);
  if (value === undefined) copy.delete(label);
  else copy.set(label, value);
  return copy;
}

Deno.test("an EC2 P-256 key has the RFC 9053 labels and survives CBOR both ways", () => {
  const point = p256.getPublicKey(p256.utils.randomSecretKey(), false);
  const map = encodeEc2PublicKey(point, CoseAlgorithm.ES256);
  assert.deepEqual([...map.keys()].sort((a, b) => a - b), [-3, -2, -1, 1, 3]);
  assert.equal(map.get(1), 2);
  assert.equal(map.get(3), -7);
  assert.equal(map.get(-1), 1);
  assert.deepEqual(map.get(-2), point.slice(1, 33));
  assert.deepEqual(map.get(-3), point.slice(33));
  const key = decodeCosePublicKey(decodeCbor(encodeCbor(map)));
  assert.equal(key.kty, "EC2");
  assert.equal(key.alg, CoseAlgorithm.ES256);
  assert.ok(key.kty === "EC2");
  assert.deepEqual(uncompressedPoint(key), point);
  assert.deepEqual(encodeCosePublicKey(key), map);
});

Deno.test("a key-agreement key (alg -25) is accepted as EC2", () => {
  const key = decodeCosePublicKey(p256Cose(CoseAlgorithm.ECDH_ES_HKDF_256));
  assert.equal(key.kty, "EC2");
  assert.equal(key.alg, -25);
});

Deno.test("an Ed25519 key has kty OKP, alg -8, crv 6 and survives CBOR both ways", () => {
  const raw = ed25519.getPublicKey(ed25519.utils.randomSecretKey());
  const map = encodeEd25519PublicKey(raw);
  assert.deepEqual(map, new Map<number, unknown>([[1, 1], [3, -8], [-1, 6], [-2, raw]]));
  const key = decodeCosePublicKey(decodeCbor(encodeCbor(map)));
  assert.deepEqual(key, { kty: "OKP", alg: -8, crv: "Ed25519", x: raw });
  assert.deepEqual(encodeCosePublicKey(key), map);
});

Deno.test("encoders refuse keys of the wrong length or form", () => {
  const point = p256.getPublicKey(p256.utils.randomSecretKey(), false);
  assert.throws(() => encodeEc2PublicKey(point.slice(0, 64), -7), RangeError);
  assert.throws(
    () => encodeEc2PublicKey(p256.getPublicKey(p256.utils.randomSecretKey(), true), -7),
    RangeError,
  );
  assert.throws(() => encodeEc2PublicKey(Uint8Array.of(0x02, ...point.slice(1)), -7), RangeError);
  assert.throws(() => encodeEd25519PublicKey(new Uint8Array(31)), RangeError);
});

Deno.test("decodeCosePublicKey refuses values of the wrong CBOR type with CBOR_UNEXPECTED_TYPE", () => {
  const good = p256Cose();
  for (
    const value of [
      undefined,
      null,
      42,
      "key",
      new Uint8Array(65),
      [1, 2],
      { 1: 2, 3: -7 },
      withEntry(good, 1, "EC2"),
      withEntry(good, 3, "ES256"),
      withEntry(good, -1, 1.5),
      withEntry(good, -2, Array.from(good.get(-2) as Uint8Array)),
      withEntry(good, -3, "y"),
    ]
  ) {
    assert.equal(ctapStatusOf(() => decodeCosePublicKey(value)), CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE);
  }
});

Deno.test("decodeCosePublicKey refuses missing fields, wrong lengths, kty, crv and alg with INVALID_PARAMETER", () => {
  const good = p256Cose();
  const x = good.get(-2) as Uint8Array;
  const okp = encodeEd25519PublicKey(ed25519.getPublicKey(ed25519.utils.randomSecretKey()));
  const cases: [string, Map<number, unknown>][] = [
    ["empty map", new Map()],
    ["no kty", withEntry(good, 1, undefined)],
    ["no alg", withEntry(good, 3, undefined)],
    ["no crv", withEntry(good, -1, undefined)],
    ["no x", withEntry(good, -2, undefined)],
    ["no y", withEntry(good, -3, undefined)],
    ["x of 31 bytes", withEntry(good, -2, x.slice(1))],
    ["x of 33 bytes", withEntry(good, -2, Uint8Array.of(0, ...x))],
    ["y of 0 bytes", withEntry(good, -3, new Uint8Array())],
    ["kty RSA", withEntry(good, 1, 3)],
    ["kty symmetric", withEntry(good, 1, 4)],
    ["crv P-384", withEntry(good, -1, 2)],
    ["alg RS256", withEntry(good, 3, CoseAlgorithm.RS256)],
    ["alg EdDSA on EC2", withEntry(good, 3, CoseAlgorithm.EdDSA)],
    ["a private key", withEntry(good, -4, new Uint8Array(32))],
    ["OKP with crv X25519", withEntry(okp, -1, 4)],
    ["OKP with alg ES256", withEntry(okp, 3, -7)],
    ["OKP with a y", withEntry(okp, -3, new Uint8Array(32))],
    ["OKP x of 33 bytes", withEntry(okp, -2, new Uint8Array(33))],
  ];
  for (const [name, value] of cases) {
    assert.equal(
      ctapStatusOf(() => decodeCosePublicKey(value)),
      CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
      name,
    );
  }
});

Deno.test("decodeCosePublicKey refuses a P-256 point that is not on the curve", () => {
  const good = p256Cose();
  const y = (good.get(-3) as Uint8Array).slice();
  y[31]! ^= 0x01;
  const error = (() => {
    try {
      decodeCosePublicKey(withEntry(good, -3, y));
    } catch (error) {
      return error;
    }
  })();
  assert.ok(error instanceof CtapError);
  assert.equal(error.status, CtapStatus.CTAP1_ERR_INVALID_PARAMETER);
  assert.match(error.message, /not a point on P-256/);
  // The point at infinity has no affine encoding; (0, 0) is not on the curve either.
  assert.equal(
    ctapStatusOf(() =>
      decodeCosePublicKey(withEntry(withEntry(good, -2, new Uint8Array(32)), -3, new Uint8Array(32)))
    ),
    CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
  );
});

Deno.test("decodeCosePublicKey refuses 32 bytes that are not an Ed25519 point", () => {
  // Find an encoding whose y gives no x: about half of all 32-byte strings.
  let notAPoint: Uint8Array | undefined;
  for (let i = 0; notAPoint === undefined; i++) {
    const candidate = new Uint8Array(32);
    candidate[0] = i;
    try {
      ed25519.Point.fromBytes(candidate);
    } catch {
      notAPoint = candidate;
    }
  }
  const map = new Map<number, unknown>([[1, 1], [3, -8], [-1, 6], [-2, notAPoint]]);
  assert.equal(ctapStatusOf(() => decodeCosePublicKey(map)), CtapStatus.CTAP1_ERR_INVALID_PARAMETER);
});

Deno.test("decodeCosePublicKey answers any hostile value with a key or a CtapError, nothing else", () => {
  const label = fc.constantFrom(1, 3, -1, -2, -3, -4, 2, 4);
  const field = fc.oneof(
    fc.constantFrom(1, 2, 3, 6, -7, -8, -25, 0),
    fc.integer(),
    fc.uint8Array({ minLength: 30, maxLength: 34 }),
    fc.string(),
    fc.constant(null),
  );
  fc.assert(fc.property(fc.array(fc.tuple(label, field), { maxLength: 7 }), (entries) => {
    try {
      decodeCosePublicKey(new Map(entries));
    } catch (error) {
      assert.ok(error instanceof CtapError, String(error));
    }
  }));
});

Deno.test("P-256 SPKI is byte-identical to WebCrypto's export and verifies a signature made with @noble/curves", async () => {
  const generated = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", generated.publicKey));
  const exported = new Uint8Array(await crypto.subtle.exportKey("spki", generated.publicKey));
  assert.deepEqual(cosePublicKeyToSpki(decodeCosePublicKey(encodeEc2PublicKey(raw, -7))), exported);

  const secretKey = p256.utils.randomSecretKey();
  const key = decodeCosePublicKey(encodeEc2PublicKey(p256.getPublicKey(secretKey, false), -7));
  const imported = await crypto.subtle.importKey(
    "spki",
    cosePublicKeyToSpki(key),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["verify"],
  );
  const message = utf8("authenticatorData || clientDataHash");
  // noble hashes with SHA-256 and returns r || s, the form WebCrypto verifies.
  const signature = p256.sign(message, secretKey);
  assert.ok(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, imported, signature, message));
  assert.ok(
    !await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, imported, signature, utf8("other")),
  );
});

Deno.test("Ed25519 SPKI is byte-identical to WebCrypto's export and verifies a signature made with @noble/curves", async () => {
  const generated = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", generated.publicKey));
  const exported = new Uint8Array(await crypto.subtle.exportKey("spki", generated.publicKey));
  assert.deepEqual(cosePublicKeyToSpki(decodeCosePublicKey(encodeEd25519PublicKey(raw))), exported);

  const secretKey = ed25519.utils.randomSecretKey();
  const key = decodeCosePublicKey(encodeEd25519PublicKey(ed25519.getPublicKey(secretKey)));
  const imported = await crypto.subtle.importKey(
    "spki",
    cosePublicKeyToSpki(key),
    { name: "Ed25519" },
    false,
    [
      "verify",
    ],
  );
  const message = utf8("authenticatorData || clientDataHash");
  const signature = ed25519.sign(message, secretKey);
  assert.ok(await crypto.subtle.verify({ name: "Ed25519" }, imported, signature, message));
  assert.ok(!await crypto.subtle.verify({ name: "Ed25519" }, imported, signature, utf8("other")));
});
