/**
 * AAGUIDs (the 16-byte model id of an authenticator) as people write them: UUID text. Entra's key
 * restrictions, getInfo, attestation certificates and results files all use this form.
 *
 * @example
 * ```ts
 * import { formatAaguid, parseAaguid } from "./aaguid.ts";
 * const text = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
 * console.assert(formatAaguid(parseAaguid(text)) === text);
 * ```
 *
 * @module
 */

/**
 * Parses an AAGUID written as a UUID (`xxxxxxxx-xxxx-…`) or as 32 hex digits.
 *
 * @throws {TypeError} naming the text when it is neither.
 */
export function parseAaguid(text: string): Uint8Array<ArrayBuffer> {
  const hex = text.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) {
    throw new TypeError(
      `Cannot use AAGUID "${text}": expected a UUID such as 01234567-89ab-cdef-0123-456789abcdef`,
    );
  }
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16));
}

/** Formats an AAGUID as a lowercase UUID. */
export function formatAaguid(aaguid: Uint8Array): string {
  const hex = Array.from(aaguid, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
