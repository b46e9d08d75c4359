/**
 * The software key's own attestation: a root CA made once per key and an attestation certificate
 * signed by it that meets WebAuthn Level 3 §8.2.1 "Packed Attestation Statement Certificate
 * Requirements" (https://www.w3.org/TR/webauthn-3/#sctn-packed-attestation-cert-requirements), so
 * that relying parties that enforce attestation (Entra's "Enforce attestation") can be tested
 * against a key whose root they were given.
 *
 * @module
 */
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { x509 } from "../../core/x509.ts";
import { z } from "zod";
import { fromBase64Any, randomBytes, toBase64Url, toHex } from "../../core/bytes.ts";

/** id-fido-gen-ce-aaguid: the extension that carries the AAGUID in an attestation certificate. */
export const aaguidExtensionOid = "1.3.6.1.4.1.45724.1.1.4";

/** The Subject OU §8.2.1 requires, verbatim. */
export const attestationOrganizationalUnit = "Authenticator Attestation";

/** A software key's attestation chain, binary. */
export interface AttestationChain {
  /** The self-signed root CA (DER): what a relying party is given to trust. */
  rootCertificate: Uint8Array<ArrayBuffer>;
  /** The attestation certificate (DER), sent as the only `x5c` entry of `packed` statements. */
  attestationCertificate: Uint8Array<ArrayBuffer>;
  /** The attestation key: a raw 32-byte P-256 scalar, as {@link signPacked} takes it. */
  attestationPrivateKey: Uint8Array<ArrayBuffer>;
}

/** Options of {@link createAttestationChain}. */
export interface AttestationChainOptions {
  /** The AAGUID the attestation certificate vouches for (16 bytes). */
  aaguid: Uint8Array;
  /**
   * Subject O of both certificates.
   * @default "provisioning"
   */
  organisation?: string;
  /**
   * Subject C (ISO 3166 alpha-2, where the "vendor" is; §8.2.1 requires one).
   * @default "US"
   */
  country?: string;
  /**
   * How long both certificates are valid, from a day before now.
   * @default 20
   */
  validityYears?: number;
}

const ecdsa = { name: "ECDSA", namedCurve: "P-256" } as const;
const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const;

/**
 * Makes a new root CA and attestation certificate for a software key. The root's private key is
 * discarded: nothing can issue another certificate under it, so the root vouches for this one key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createAttestationChain } from "./attestation.ts";
 * const chain = await createAttestationChain({ aaguid: new Uint8Array(16) });
 * assert.equal(chain.attestationPrivateKey.length, 32);
 * ```
 */
export async function createAttestationChain(options: AttestationChainOptions): Promise<AttestationChain> {
  if (options.aaguid.length !== 16) {
    throw new RangeError(
      `Cannot create an attestation certificate: the AAGUID is ${options.aaguid.length} bytes, expected 16`,
    );
  }
  const country = options.country ?? "US";
  if (!/^[A-Z]{2}$/.test(country)) {
    throw new RangeError(
      `Cannot create an attestation certificate: country "${country}" is not an ISO 3166 alpha-2 code`,
    );
  }
  const organisation = options.organisation ?? "provisioning";
  if (organisation.trim() === "") {
    throw new RangeError("Cannot create an attestation certificate: the organisation is empty");
  }
  const years = options.validityYears ?? 20;
  if (!Number.isInteger(years) || years < 1 || years > 100) {
    throw new RangeError(
      `Cannot create an attestation certificate: ${years} validity years is not an integer from 1 to 100`,
    );
  }

  const notBefore = new Date(Date.now() - 24 * 60 * 60 * 1000);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + years);

  const rootKeys = await crypto.subtle.generateKey(ecdsa, false, ["sign", "verify"]);
  const rootName: x509.JsonName = [
    { C: [country] },
    { O: [organisation] },
    { CN: [`${organisation} software key attestation root`] },
  ];
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: rootName,
    notBefore,
    notAfter,
    signingAlgorithm,
    keys: rootKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey),
    ],
  });

  const leafKeys = await crypto.subtle.generateKey(ecdsa, true, ["sign", "verify"]);
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: [
      { C: [country] },
      { O: [organisation] },
      { OU: [attestationOrganizationalUnit] },
      { CN: [`${organisation} software key`] },
    ],
    issuer: root.subject,
    notBefore,
    notAfter,
    signingAlgorithm,
    publicKey: leafKeys.publicKey,
    signingKey: rootKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
      new x509.Extension(aaguidExtensionOid, false, aaguidExtensionValue(options.aaguid)),
    ],
  });

  const jwk = await crypto.subtle.exportKey("jwk", leafKeys.privateKey);
  if (jwk.d === undefined) {
    throw new TypeError("Cannot export the attestation key: the JWK has no private scalar");
  }
  return {
    rootCertificate: new Uint8Array(root.rawData),
    attestationCertificate: new Uint8Array(leaf.rawData),
    attestationPrivateKey: new Uint8Array(fromBase64Any(jwk.d)),
  };
}

/** The extension's value: a DER OCTET STRING holding the 16-byte AAGUID (§8.2.1). */
function aaguidExtensionValue(aaguid: Uint8Array): Uint8Array<ArrayBuffer> {
  const value = new Uint8Array(2 + aaguid.length);
  value.set([0x04, aaguid.length]);
  value.set(aaguid, 2);
  return value;
}

/** A random positive serial number of 16 bytes (RFC 5280 §4.1.2.2 allows up to 20). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return toHex(bytes);
}

/** Unpadded base64url that decodes: never a length of 4n + 1. */
const base64urlPattern = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$/;

const base64url = (length?: number) =>
  z.string().min(1).regex(base64urlPattern, { message: "must be base64url", abort: true }).refine(
    (text) => length === undefined || fromBase64Any(text).length === length,
    `must decode to ${length} bytes`,
  );

/**
 * An attestation chain as the vault stores it (base64url), with the field names of the software
 * key's state (`state.ts`), so its `attestation` entry can be this schema extended by `format`.
 */
export const attestationChainSchema = z.object({
  /** The attestation certificate, DER. */
  certificate: base64url(),
  /** The root CA certificate, DER. */
  rootCertificate: base64url(),
  /** The attestation key, a raw P-256 scalar. */
  privateKey: base64url(32),
});

/** An attestation chain as stored in the vault. */
export type StoredAttestationChain = z.infer<typeof attestationChainSchema>;

/** Encodes a chain for the vault. */
export function storeAttestationChain(chain: AttestationChain): StoredAttestationChain {
  return {
    certificate: toBase64Url(chain.attestationCertificate),
    rootCertificate: toBase64Url(chain.rootCertificate),
    privateKey: toBase64Url(chain.attestationPrivateKey),
  };
}

/** Decodes a chain read from the vault. */
export function loadAttestationChain(stored: StoredAttestationChain): AttestationChain {
  return {
    attestationCertificate: new Uint8Array(fromBase64Any(stored.certificate)),
    rootCertificate: new Uint8Array(fromBase64Any(stored.rootCertificate)),
    attestationPrivateKey: new Uint8Array(fromBase64Any(stored.privateKey)),
  };
}

/**
 * Signs `data` (authenticatorData || clientDataHash) with the attestation key for a `packed`
 * statement: ECDSA P-256 with SHA-256, DER-encoded, as `attStmt.sig` with `alg: -7` requires.
 */
export function signPacked(privateKey: Uint8Array, data: Uint8Array): Uint8Array {
  return p256.sign(sha256(data), privateKey, { prehash: false, format: "der" });
}
