/**
 * Authenticator data (WebAuthn L3 §6.1 "Authenticator Data"): what an authenticator signs and a
 * relying party checks. Built by the software key, parsed by the WebAuthn client (to fill
 * `publicKey`, `publicKeyAlgorithm` and credProps in the JSON response) and by tests.
 *
 * Layout: rpIdHash (32) | flags (1) | signCount (4, big-endian)
 *   | attestedCredentialData? (aaguid 16 | credentialIdLength 2 | credentialId | COSE public key)
 *   | extensions? (CBOR map)
 *
 * @module
 */
import { concatBytes } from "../bytes.ts";
import { decodeCborPrefix, encodeCbor } from "./cbor.ts";

/** The flag bits of authenticator data. */
export const AuthDataFlag = {
  userPresent: 0x01,
  userVerified: 0x04,
  backupEligible: 0x08,
  backedUp: 0x10,
  attestedCredentialData: 0x40,
  extensionData: 0x80,
} as const;

/** The attested credential data of a registration. */
export interface AttestedCredentialData {
  aaguid: Uint8Array;
  credentialId: Uint8Array;
  /** The COSE_Key, as an integer-keyed Map. */
  publicKey: Map<number, unknown>;
  /** The COSE_Key's exact bytes, as the authenticator encoded them. */
  publicKeyBytes: Uint8Array;
}

/** Authenticator data, field by field. */
export interface AuthenticatorData {
  rpIdHash: Uint8Array;
  flags: number;
  signCount: number;
  attestedCredentialData?: AttestedCredentialData;
  /** Authenticator extension outputs, e.g. `{ credProtect: 2, "hmac-secret": true }`. */
  extensions?: Record<string, unknown>;
}

/** Serialises authenticator data. Sets the AT and ED flags from the fields present. */
export function encodeAuthenticatorData(data: AuthenticatorData): Uint8Array<ArrayBuffer> {
  let flags = data.flags & ~(AuthDataFlag.attestedCredentialData | AuthDataFlag.extensionData);
  const parts: Uint8Array[] = [data.rpIdHash, new Uint8Array(1), new Uint8Array(4)];
  new DataView(parts[2]!.buffer).setUint32(0, data.signCount >>> 0);
  if (data.attestedCredentialData) {
    flags |= AuthDataFlag.attestedCredentialData;
    const { aaguid, credentialId, publicKey } = data.attestedCredentialData;
    const length = new Uint8Array(2);
    new DataView(length.buffer).setUint16(0, credentialId.length);
    parts.push(aaguid, length, credentialId, encodeCbor(publicKey));
  }
  if (data.extensions && Object.keys(data.extensions).length > 0) {
    flags |= AuthDataFlag.extensionData;
    parts.push(encodeCbor(data.extensions));
  }
  parts[1]![0] = flags;
  return concatBytes(...parts);
}

/**
 * Parses authenticator data.
 *
 * @throws {RangeError} when the bytes are shorter than their flags promise or carry trailing bytes.
 */
export function decodeAuthenticatorData(bytes: Uint8Array): AuthenticatorData {
  if (bytes.length < 37) {
    throw new RangeError(`Cannot parse authenticator data: ${bytes.length} bytes, at least 37 expected`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flags = bytes[32]!;
  const result: AuthenticatorData = {
    rpIdHash: bytes.slice(0, 32),
    flags,
    signCount: view.getUint32(33),
  };
  let rest = bytes.subarray(37);
  if (flags & AuthDataFlag.attestedCredentialData) {
    if (rest.length < 18) {
      throw new RangeError("Cannot parse authenticator data: attested credential data truncated");
    }
    const idLength = (rest[16]! << 8) | rest[17]!;
    if (rest.length < 18 + idLength) {
      throw new RangeError("Cannot parse authenticator data: credential id truncated");
    }
    const aaguid = rest.slice(0, 16);
    const credentialId = rest.slice(18, 18 + idLength);
    const keyStart = rest.subarray(18 + idLength);
    const [publicKey, after] = decodeCborPrefix(keyStart);
    if (!(publicKey instanceof Map)) {
      throw new RangeError("Cannot parse authenticator data: credential public key is not a COSE_Key map");
    }
    result.attestedCredentialData = {
      aaguid,
      credentialId,
      publicKey,
      publicKeyBytes: keyStart.slice(0, keyStart.length - after.length),
    };
    rest = after;
  }
  if (flags & AuthDataFlag.extensionData) {
    const [extensions, after] = decodeCborPrefix(rest);
    if (extensions === null || typeof extensions !== "object" || Array.isArray(extensions)) {
      throw new RangeError("Cannot parse authenticator data: extensions are not a text-keyed map");
    }
    result.extensions = extensions instanceof Map ? {} : extensions as Record<string, unknown>;
    rest = after;
  }
  if (rest.length > 0) {
    throw new RangeError(`Cannot parse authenticator data: ${rest.length} trailing bytes`);
  }
  return result;
}
