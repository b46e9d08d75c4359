/**
 * Credential ids of the software key, as hardware keys make them: the credential's private key
 * and settings, encrypted with the key's master secret (AES-256-GCM, the rp id hash bound as
 * additional data). So a non-discoverable credential needs no storage at all, an id presented
 * for another rp does not open, and a factory reset (new master secret) voids every id.
 *
 * Layout: version 0x01 | 12-byte IV | ciphertext and tag of the CBOR map
 * {1: alg, 2: private key, 3: credProtect, 4: discoverable, 5: credRandom with UV, 6: without UV}.
 *
 * @module
 */
import { gcm } from "@noble/ciphers/aes.js";
import { z } from "zod";
import { concatBytes, randomBytes } from "../../core/bytes.ts";
import { decodeCbor, encodeCbor, fromIntMap, toIntMap } from "../../core/ctap/cbor.ts";
import { isSupportedAlgorithm, type SupportedAlgorithm } from "./signing.ts";

const version = 0x01;
const keys = {
  alg: 1,
  privateKey: 2,
  credProtect: 3,
  discoverable: 4,
  credRandomWithUv: 5,
  credRandomWithoutUv: 6,
} as const;

const payloadSchema = z.object({
  alg: z.number().int().refine(isSupportedAlgorithm),
  privateKey: z.instanceof(Uint8Array),
  credProtect: z.number().int().min(1).max(3),
  discoverable: z.boolean(),
  credRandomWithUv: z.instanceof(Uint8Array).optional(),
  credRandomWithoutUv: z.instanceof(Uint8Array).optional(),
});

/** What a credential id carries. */
export interface CredentialSecrets {
  alg: SupportedAlgorithm;
  privateKey: Uint8Array;
  /** credProtect level 1–3 (CTAP 2.1 §12.1). */
  credProtect: number;
  discoverable: boolean;
  /** hmac-secret's per-credential secrets (CTAP 2.1 §12.5), when the extension was asked for. */
  credRandomWithUv?: Uint8Array;
  credRandomWithoutUv?: Uint8Array;
}

/** Seals a credential's secrets into its id. */
export function wrapCredentialId(
  masterKey: Uint8Array,
  rpIdHash: Uint8Array,
  secrets: CredentialSecrets,
): Uint8Array {
  const iv = randomBytes(12);
  const sealed = gcm(masterKey, iv, rpIdHash).encrypt(encodeCbor(toIntMap({ ...secrets }, keys)));
  return concatBytes(Uint8Array.of(version), iv, sealed);
}

/** Opens a credential id made by this key for this rp; `undefined` for anything else. */
export function unwrapCredentialId(
  masterKey: Uint8Array,
  rpIdHash: Uint8Array,
  credentialId: Uint8Array,
): CredentialSecrets | undefined {
  if (credentialId.length < 1 + 12 + 16 || credentialId[0] !== version) return undefined;
  try {
    const plain = gcm(masterKey, credentialId.subarray(1, 13), rpIdHash).decrypt(credentialId.subarray(13));
    const parsed = payloadSchema.safeParse(fromIntMap(decodeCbor(plain), keys));
    if (!parsed.success) return undefined;
    const { credRandomWithUv, credRandomWithoutUv, ...rest } = parsed.data;
    return {
      ...rest,
      alg: rest.alg as SupportedAlgorithm,
      ...(credRandomWithUv ? { credRandomWithUv } : {}),
      ...(credRandomWithoutUv ? { credRandomWithoutUv } : {}),
    };
  } catch {
    return undefined;
  }
}
