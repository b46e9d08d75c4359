/**
 * Credential key pairs of the software key: ES256 (P-256 ECDSA with SHA-256, DER signatures as
 * WebAuthn requires) and EdDSA (Ed25519). One place decides how each algorithm makes keys, signs
 * and renders its COSE public key.
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, fromBase64Any } from "../../core/bytes.ts";
import { CoseAlgorithm, encodeEc2PublicKey, encodeEd25519PublicKey } from "../../core/ctap/cose.ts";

/** The COSE algorithms the software key supports, in order of preference. */
export const supportedAlgorithms = [CoseAlgorithm.ES256, CoseAlgorithm.EdDSA] as const;

/** A supported COSE algorithm id. */
export type SupportedAlgorithm = (typeof supportedAlgorithms)[number];

/** Whether the software key can make credentials with this COSE algorithm. */
export function isSupportedAlgorithm(alg: number): alg is SupportedAlgorithm {
  return (supportedAlgorithms as readonly number[]).includes(alg);
}

/** Makes a new private key (32 bytes for both algorithms). */
export function generatePrivateKey(alg: SupportedAlgorithm): Uint8Array {
  return alg === CoseAlgorithm.ES256 ? p256.utils.randomSecretKey() : ed25519.utils.randomSecretKey();
}

/** A new credential key: its private key (32 bytes) and the COSE_Key of its public half. */
export interface CredentialKeyPair {
  privateKey: Uint8Array;
  publicKey: Map<number, unknown>;
}

/**
 * Makes a new credential key pair. P-256 pairs come from WebCrypto, whose native code computes the
 * public point (in pure JS that scalar multiplication was most of a registration's CPU).
 */
export async function generateKeyPair(alg: SupportedAlgorithm): Promise<CredentialKeyPair> {
  if (alg !== CoseAlgorithm.ES256) {
    const privateKey = ed25519.utils.randomSecretKey();
    return { privateKey, publicKey: encodeEd25519PublicKey(ed25519.getPublicKey(privateKey)) };
  }
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign"]);
  const jwk = await crypto.subtle.exportKey("jwk", pair.privateKey);
  if (jwk.d === undefined || jwk.x === undefined || jwk.y === undefined) {
    throw new TypeError("Cannot make a P-256 key: WebCrypto exported a JWK without d, x or y");
  }
  const point = concatBytes(Uint8Array.of(0x04), fromBase64Any(jwk.x), fromBase64Any(jwk.y));
  return { privateKey: fromBase64Any(jwk.d), publicKey: encodeEc2PublicKey(point, CoseAlgorithm.ES256) };
}

/** The COSE_Key of a private key's public half. */
export function cosePublicKey(alg: SupportedAlgorithm, privateKey: Uint8Array): Map<number, unknown> {
  return alg === CoseAlgorithm.ES256
    ? encodeEc2PublicKey(p256.getPublicKey(privateKey, false), CoseAlgorithm.ES256)
    : encodeEd25519PublicKey(ed25519.getPublicKey(privateKey));
}

/** Signs `data` (authenticatorData || clientDataHash) as the algorithm prescribes. */
export function sign(alg: SupportedAlgorithm, privateKey: Uint8Array, data: Uint8Array): Uint8Array {
  return alg === CoseAlgorithm.ES256
    ? p256.sign(sha256(data), privateKey, { prehash: false, format: "der" })
    : ed25519.sign(data, privateKey);
}
