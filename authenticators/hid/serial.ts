/**
 * A key's serial number from its attestation, for the results file: the FIDO enterprise
 * attestation extension (id-fido-ea-serial, OID 1.3.6.1.4.1.45724.1.1.2) of the attestation
 * certificate, which only enterprise attestation carries. Ordinary (batch) attestation
 * certificates are shared by 100,000 keys or more, so their own serial number does not identify
 * a key and is reported separately, as the certificate's.
 *
 * @example
 * ```ts ignore
 * const facts = attestationSerial(fromBase64Any(registration.response.attestationObject));
 * console.log(facts.serial ?? "no serial", facts.certificateSerial);
 * ```
 *
 * @module
 */
import { z } from "zod";
import { toHex } from "../../core/bytes.ts";
import { decodeCbor } from "../../core/ctap/cbor.ts";
import { x509 } from "../../core/x509.ts";

/** id-fido-ea-serial: the key's serial number in an enterprise attestation certificate. */
export const enterpriseSerialOid = "1.3.6.1.4.1.45724.1.1.2";

/** What the attestation says about which key made it. */
export interface AttestationSerial {
  /** The key's own serial number, when the attestation carries one (enterprise attestation). */
  readonly serial?: string;
  /** The attestation certificate's serial number (hex): a batch, not a key, for most vendors. */
  readonly certificateSerial?: string;
}

const attestationObjectSchema = z.object({
  fmt: z.string(),
  attStmt: z.object({ x5c: z.array(z.instanceof(Uint8Array)).min(1).optional() }).loose(),
}).loose();

/** Reads a DER TLV's value when it is one of the string or integer types a serial is written in. */
function derValue(bytes: Uint8Array): string | undefined {
  if (bytes.length < 2) return undefined;
  const tag = bytes[0]!;
  let length = bytes[1]!;
  let offset = 2;
  if (length & 0x80) {
    const n = length & 0x7f;
    if (n === 0 || n > 2 || bytes.length < 2 + n) return undefined;
    length = 0;
    for (let i = 0; i < n; i++) length = length * 256 + bytes[2 + i]!;
    offset = 2 + n;
  }
  if (offset + length !== bytes.length) return undefined;
  const value = bytes.subarray(offset);
  switch (tag) {
    case 0x02: // INTEGER
      return BigInt(`0x${toHex(value) || "0"}`).toString(10);
    case 0x0c: // UTF8String
    case 0x13: // PrintableString
    case 0x16: // IA5String
      return new TextDecoder().decode(value);
    case 0x04: { // OCTET STRING: printable text, else hex
      const nested = derValue(value);
      if (nested !== undefined) return nested;
      const text = new TextDecoder("utf-8", { fatal: false }).decode(value);
      return /^[\x20-\x7e]+$/.test(text) ? text : toHex(value);
    }
    default:
      return undefined;
  }
}

/** Reads the serial numbers from a CBOR attestationObject; an object without x5c gives none. */
export function attestationSerial(attestationObject: Uint8Array): AttestationSerial {
  let parsed;
  try {
    parsed = attestationObjectSchema.safeParse(decodeCbor(attestationObject));
  } catch {
    return {};
  }
  const leaf = parsed.success ? parsed.data.attStmt.x5c?.[0] : undefined;
  if (!leaf) return {};
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(leaf);
  } catch {
    return {};
  }
  const extension = certificate.getExtension(enterpriseSerialOid);
  const serial = extension ? derValue(new Uint8Array(extension.value)) : undefined;
  return {
    ...(serial ? { serial } : {}),
    certificateSerial: certificate.serialNumber.toLowerCase(),
  };
}
