/**
 * COSE public keys as CTAP uses them (RFC 9053 §7 "Key Object Parameters", RFC 9052 §7 "COSE Key
 * Objects"): the credential public key inside attested credential data (CTAP 2.1 §6.1, WebAuthn
 * §6.5.1.1) and the key-agreement keys of the PIN/UV auth protocols (CTAP 2.1 §6.5.6).
 *
 * A COSE_Key is an integer-keyed CBOR map, so it is a `Map` here (see cbor.ts). This module builds
 * the two kinds the software key makes (P-256 and Ed25519), reads them back with every check an
 * authenticator or client must make on a key it receives (lengths, point on the curve), and turns
 * them into the DER SubjectPublicKeyInfo that WebAuthn's `response.publicKey` carries.
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { concatBytes, fromHex } from "../bytes.ts";
import { CtapError, CtapStatus } from "./status.ts";

/**
 * COSE algorithm identifiers used by CTAP and WebAuthn (IANA "COSE Algorithms" registry).
 * `ECDH_ES_HKDF_256` is the label CTAP 2.1 §6.5.6 puts on key-agreement keys, although the PIN
 * protocols' actual KDF differs from it.
 */
export const CoseAlgorithm = {
  /** ECDSA with SHA-256 (P-256 credentials). */
  ES256: -7,
  /** EdDSA (Ed25519 credentials). */
  EdDSA: -8,
  /** The alg label of PIN/UV auth protocol key-agreement keys. */
  ECDH_ES_HKDF_256: -25,
  /** RSASSA-PKCS1-v1_5 with SHA-256 (Windows Hello; not produced by this tool). */
  RS256: -257,
} as const;

/** COSE key types (RFC 9053 §7, IANA "COSE Key Types"). */
export const CoseKeyType = {
  /** Octet key pair: Ed25519, X25519. */
  OKP: 1,
  /** Elliptic curve with x and y coordinates: P-256. */
  EC2: 2,
  /** RSA (RFC 8230). */
  RSA: 3,
} as const;

/** COSE elliptic curves (RFC 9053 §7.1, IANA "COSE Elliptic Curves"). */
export const CoseCurve = {
  /** NIST P-256 (secp256r1), kty EC2. */
  P256: 1,
  /** Ed25519, kty OKP. */
  Ed25519: 6,
} as const;

/** COSE_Key map labels (RFC 9052 §7.1, RFC 9053 §7.1.1 and §7.2). */
export const CoseKeyLabel = {
  kty: 1,
  alg: 3,
  crv: -1,
  x: -2,
  y: -3,
  /** The private key; must never appear in a public key. */
  d: -4,
} as const;

/** A P-256 public key: `x` and `y` are the 32-byte big-endian coordinates of a point on the curve. */
export interface Ec2PublicKey {
  readonly kty: "EC2";
  /** `CoseAlgorithm.ES256` for credentials, `CoseAlgorithm.ECDH_ES_HKDF_256` for key agreement. */
  readonly alg: number;
  readonly crv: "P-256";
  readonly x: Uint8Array<ArrayBuffer>;
  readonly y: Uint8Array<ArrayBuffer>;
}

/** An Ed25519 public key: `x` is its 32-byte encoding (RFC 8032 §5.1.2). */
export interface OkpPublicKey {
  readonly kty: "OKP";
  readonly alg: -8;
  readonly crv: "Ed25519";
  readonly x: Uint8Array<ArrayBuffer>;
}

/** A validated COSE public key of a kind this tool handles; `kty` tells them apart. */
export type CosePublicKey = Ec2PublicKey | OkpPublicKey;

const coordinateLength = 32;

/**
 * The COSE_Key of a P-256 public key, for attested credential data and key agreement.
 *
 * @param publicKey the 65-byte uncompressed SEC 1 point `04 || x || y`
 * @param alg `CoseAlgorithm.ES256` for a credential, `CoseAlgorithm.ECDH_ES_HKDF_256` for key agreement
 * @throws {RangeError} when `publicKey` is not a 65-byte uncompressed point.
 * @example
 * ```ts
 * import { p256 } from "@noble/curves/nist.js";
 * import { CoseAlgorithm, encodeEc2PublicKey } from "./cose.ts";
 * const key = encodeEc2PublicKey(p256.getPublicKey(p256.utils.randomSecretKey(), false), CoseAlgorithm.ES256);
 * console.assert(key.get(1) === 2 && key.get(3) === -7 && key.get(-1) === 1);
 * ```
 */
export function encodeEc2PublicKey(publicKey: Uint8Array, alg: number): Map<number, unknown> {
  if (publicKey.length !== 1 + 2 * coordinateLength || publicKey[0] !== 0x04) {
    throw new RangeError(
      `Cannot encode EC2 COSE key: expected a 65-byte uncompressed point starting with 0x04, got ${publicKey.length} bytes`,
    );
  }
  return new Map<number, unknown>([
    [CoseKeyLabel.kty, CoseKeyType.EC2],
    [CoseKeyLabel.alg, alg],
    [CoseKeyLabel.crv, CoseCurve.P256],
    [CoseKeyLabel.x, publicKey.slice(1, 1 + coordinateLength)],
    [CoseKeyLabel.y, publicKey.slice(1 + coordinateLength)],
  ]);
}

/**
 * The COSE_Key of an Ed25519 public key, for attested credential data.
 *
 * @param raw the 32-byte Ed25519 public key
 * @throws {RangeError} when `raw` is not 32 bytes.
 */
export function encodeEd25519PublicKey(raw: Uint8Array): Map<number, unknown> {
  if (raw.length !== coordinateLength) {
    throw new RangeError(`Cannot encode Ed25519 COSE key: expected 32 bytes, got ${raw.length}`);
  }
  return new Map<number, unknown>([
    [CoseKeyLabel.kty, CoseKeyType.OKP],
    [CoseKeyLabel.alg, CoseAlgorithm.EdDSA],
    [CoseKeyLabel.crv, CoseCurve.Ed25519],
    [CoseKeyLabel.x, raw.slice()],
  ]);
}

/** The COSE_Key map of a decoded key: the inverse of {@link decodeCosePublicKey}. */
export function encodeCosePublicKey(key: CosePublicKey): Map<number, unknown> {
  return key.kty === "EC2"
    ? encodeEc2PublicKey(uncompressedPoint(key), key.alg)
    : encodeEd25519PublicKey(key.x);
}

function invalid(detail: string): CtapError {
  return new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, detail);
}

function wrongType(detail: string): CtapError {
  return new CtapError(CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE, detail);
}

function readInteger(map: Map<unknown, unknown>, label: number, name: string): number {
  const value = map.get(label);
  if (value === undefined) throw invalid(`COSE key has no ${name} (${label})`);
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw wrongType(`COSE key ${name} (${label}) is not an integer`);
  }
  return value;
}

function readBytes(map: Map<unknown, unknown>, label: number, name: string): Uint8Array<ArrayBuffer> {
  const value = map.get(label);
  if (value === undefined) throw invalid(`COSE key has no ${name} (${label})`);
  if (!(value instanceof Uint8Array)) throw wrongType(`COSE key ${name} (${label}) is not a byte string`);
  if (value.length !== coordinateLength) {
    throw invalid(`COSE key ${name} (${label}) is ${value.length} bytes, expected ${coordinateLength}`);
  }
  return Uint8Array.from(value);
}

/**
 * Reads and validates a COSE public key received from the other side: a credential public key
 * in an authenticator's response, or a key-agreement key (the authenticator's, or a platform's
 * when the software key receives one).
 *
 * Accepted: kty EC2 on P-256 with alg ES256 or ECDH-ES+HKDF-256, whose point is on the curve;
 * kty OKP on Ed25519 with alg EdDSA, whose encoding is a valid point. Unknown labels are ignored.
 *
 * @throws {CtapError} `CTAP2_ERR_CBOR_UNEXPECTED_TYPE` when the value or a field has the wrong
 * CBOR type; `CTAP1_ERR_INVALID_PARAMETER` when a field is missing, has the wrong length or
 * value, or the point is not on the curve.
 * @example
 * ```ts
 * import { ed25519 } from "@noble/curves/ed25519.js";
 * import { decodeCosePublicKey, encodeEd25519PublicKey } from "./cose.ts";
 * const raw = ed25519.getPublicKey(ed25519.utils.randomSecretKey());
 * const key = decodeCosePublicKey(encodeEd25519PublicKey(raw));
 * console.assert(key.kty === "OKP" && key.alg === -8);
 * ```
 */
export function decodeCosePublicKey(value: unknown): CosePublicKey {
  if (!(value instanceof Map)) throw wrongType("COSE key is not an integer-keyed CBOR map");
  const map = value as Map<unknown, unknown>;
  if (map.has(CoseKeyLabel.d)) throw invalid("COSE public key carries a private key (-4)");
  const kty = readInteger(map, CoseKeyLabel.kty, "kty");
  if (kty !== CoseKeyType.EC2 && kty !== CoseKeyType.OKP) {
    throw invalid(`COSE key has kty ${kty}, expected 2 (EC2) or 1 (OKP)`);
  }
  const alg = readInteger(map, CoseKeyLabel.alg, "alg");
  const crv = readInteger(map, CoseKeyLabel.crv, "crv");
  return kty === CoseKeyType.EC2 ? decodeEc2(map, alg, crv) : decodeOkp(map, alg, crv);
}

function decodeEc2(map: Map<unknown, unknown>, alg: number, crv: number): Ec2PublicKey {
  if (crv !== CoseCurve.P256) throw invalid(`COSE EC2 key has crv ${crv}, expected 1 (P-256)`);
  if (alg !== CoseAlgorithm.ES256 && alg !== CoseAlgorithm.ECDH_ES_HKDF_256) {
    throw invalid(`COSE EC2 key has alg ${alg}, expected -7 (ES256) or -25 (ECDH-ES+HKDF-256)`);
  }
  const x = readBytes(map, CoseKeyLabel.x, "x");
  const y = readBytes(map, CoseKeyLabel.y, "y");
  try {
    p256.Point.fromBytes(concatBytes(Uint8Array.of(0x04), x, y)).assertValidity();
  } catch (cause) {
    throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "COSE EC2 key is not a point on P-256", {
      cause,
    });
  }
  return { kty: "EC2", alg, crv: "P-256", x, y };
}

function decodeOkp(map: Map<unknown, unknown>, alg: number, crv: number): OkpPublicKey {
  if (crv !== CoseCurve.Ed25519) throw invalid(`COSE OKP key has crv ${crv}, expected 6 (Ed25519)`);
  if (alg !== CoseAlgorithm.EdDSA) throw invalid(`COSE OKP key has alg ${alg}, expected -8 (EdDSA)`);
  if (map.has(CoseKeyLabel.y)) throw invalid("COSE OKP key has a y coordinate (-3)");
  const x = readBytes(map, CoseKeyLabel.x, "x");
  try {
    ed25519.Point.fromBytes(x).assertValidity();
  } catch (cause) {
    throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "COSE OKP key is not an Ed25519 point", {
      cause,
    });
  }
  return { kty: "OKP", alg: CoseAlgorithm.EdDSA, crv: "Ed25519", x };
}

/**
 * The 65-byte uncompressed SEC 1 point `04 || x || y` of a P-256 key, the form ECDH and
 * WebCrypto's "raw" import take.
 */
export function uncompressedPoint(key: Ec2PublicKey): Uint8Array<ArrayBuffer> {
  return concatBytes(Uint8Array.of(0x04), key.x, key.y);
}

// SEQUENCE { SEQUENCE { OID id-ecPublicKey 1.2.840.10045.2.1, OID prime256v1 1.2.840.10045.3.1.7 },
//            BIT STRING (0 unused bits) { 65-byte point } }  (RFC 5480 §2)
const p256SpkiPrefix = fromHex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
// SEQUENCE { SEQUENCE { OID id-Ed25519 1.3.101.112 }, BIT STRING (0 unused bits) { 32 bytes } }
// (RFC 8410 §4)
const ed25519SpkiPrefix = fromHex("302a300506032b6570032100");

/**
 * The DER SubjectPublicKeyInfo of a public key, which WebAuthn L3 §5.2.1.1 asks clients to put in
 * `response.publicKey` (`getPublicKey()`), so relying parties need not parse COSE. Both
 * encodings have a fixed length, so a constant prefix is the whole DER structure.
 *
 * @example
 * ```ts
 * import { ed25519 } from "@noble/curves/ed25519.js";
 * import { cosePublicKeyToSpki, decodeCosePublicKey, encodeEd25519PublicKey } from "./cose.ts";
 * const raw = ed25519.getPublicKey(ed25519.utils.randomSecretKey());
 * const spki = cosePublicKeyToSpki(decodeCosePublicKey(encodeEd25519PublicKey(raw)));
 * await crypto.subtle.importKey("spki", spki, { name: "Ed25519" }, true, ["verify"]);
 * ```
 */
export function cosePublicKeyToSpki(key: CosePublicKey): Uint8Array<ArrayBuffer> {
  return key.kty === "EC2"
    ? concatBytes(p256SpkiPrefix, uncompressedPoint(key))
    : concatBytes(ed25519SpkiPrefix, key.x);
}
