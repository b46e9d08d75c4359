/**
 * Credential ids as servers write them in `excludeCredentials` and `allowCredentials`. WebAuthn
 * says unpadded base64url (WebAuthn L3 §5.10.3, RFC 4648 §5); Microsoft Graph has sent three
 * encodings, and a client that reads only one either refuses the whole options object or, worse,
 * decodes a different id, so that the exclude list silently stops protecting the key:
 *
 * 1. **base64url, unpadded** — what the v1.0 `fido2AuthenticationMethod: creationOptions` page
 *    documents (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-1.0).
 * 2. **padded standard base64** (`+`, `/`, `=`) — the response recorded from a real tenant in
 *    MichaelGrafnetter/webauthn-interop,
 *    `Src/DSInternals.Win32.WebAuthn.Tests/MicrosoftGraphWebauthnCredentialCreationOptionsTester.cs`.
 * 3. **base64url with a padding number suffix** — the beta creationOptions page says ids are
 *    "formatted in Base64URL with a padding number suffix": the `=` are dropped and one digit
 *    `0`, `1` or `2` says how many there were (ASP.NET's `UrlTokenEncode` form). webauthn-interop's
 *    `Src/DSInternals.Win32.WebAuthn/Serialization/Base64UrlConverter.cs` (commits 3a4003a,
 *    d31b92b, "real world" samples in `PublicKeyCredentialCreationOptionsTester.cs`) reads it.
 *
 * How one text is read, unambiguously where the text allows it:
 *
 * - text with `=` is padded base64 (either alphabet, never mixed), length a multiple of 4;
 * - otherwise the text is read as unpadded base64(url) when its length mod 4 is 0, 2 or 3 and its
 *   last character carries no stray bits (canonical, RFC 4648 §3.5), and as the padding-digit
 *   form when it is url-safe, ends in the digit its length calls for (`0` when the rest is a
 *   multiple of 4, `1` when the rest is 3 mod 4, `2` when 2 mod 4) and the rest is canonical.
 *
 * Length decides in all but one case: a suffix `0` makes a length of 1 mod 4, which no plain
 * text has; a suffix `2` (length 3 mod 4) leaves a last character that would carry stray bits
 * if read plainly. Only a suffix `1` (length a multiple of 4) is also a valid plain text whose
 * two readings differ by one byte. Both readings are then returned: in an exclude list (or allow
 * list) an id the key does not hold is ignored by the key, while a dropped id would let a second
 * passkey be created. Nothing else in the options is ever read two ways.
 *
 * @module
 */

/** How a credential id text was written. */
export type CredentialIdEncoding = "base64url" | "base64" | "base64url-padding-digit";

/** One way to read a credential id text. */
export interface CredentialIdReading {
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly encoding: CredentialIdEncoding;
}

const urlAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const standardAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** The value of each base64 character in either alphabet, -1 for others. */
const values: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1);
  for (let i = 0; i < 64; i++) {
    table[urlAlphabet.charCodeAt(i)] = i;
    table[standardAlphabet.charCodeAt(i)] = i;
  }
  return table;
})();

/**
 * Every way `text` can be read as a credential id (one, or two for the single ambiguous case, the
 * plain reading first), or an empty list when it is none of the three encodings.
 *
 * @example
 * ```ts
 * import { readCredentialIdText } from "./credential_id_text.ts";
 * // From the recorded real tenant response (padded standard base64): 16 bytes.
 * console.assert(readCredentialIdText("GshyINLMaOOwqt1LNUi0gQ==")[0]?.bytes.length === 16);
 * // Padding-digit form with suffix 0 (webauthn-interop's real-world sample): 48 bytes.
 * const suffixed = readCredentialIdText("prXptqCfm_ohEAcE2Jw6CUtUb4uWpb2vaS-cFB82ruMhcIRAE17S0g1bkPjtsC6S0");
 * console.assert(suffixed.length === 1 && suffixed[0]?.encoding === "base64url-padding-digit");
 * console.assert(suffixed[0]?.bytes.length === 48);
 * ```
 */
export function readCredentialIdText(text: string): CredentialIdReading[] {
  // A credential id is never empty.
  if (text === "") return [];
  const hasUrl = /[-_]/.test(text);
  const hasStandard = /[+/]/.test(text);
  if (hasUrl && hasStandard) return [];
  if (text.includes("=")) {
    const bytes = decodePadded(text);
    return bytes ? [{ bytes, encoding: hasUrl ? "base64url" : "base64" }] : [];
  }
  const readings: CredentialIdReading[] = [];
  const plain = decodeUnpadded(text);
  if (plain) readings.push({ bytes: plain, encoding: hasStandard ? "base64" : "base64url" });
  if (!hasStandard) {
    const suffixed = decodePaddingDigit(text);
    if (suffixed) readings.push({ bytes: suffixed, encoding: "base64url-padding-digit" });
  }
  return readings;
}

/**
 * Encodes bytes in the padding-digit form (`=` dropped, a digit counting them appended), as Graph
 * beta writes excludeCredentials ids; the sandbox uses it to answer that way.
 *
 * @example
 * ```ts
 * import { toBase64UrlPaddingDigit } from "./credential_id_text.ts";
 * console.assert(toBase64UrlPaddingDigit(new Uint8Array([0xfb])) === "-w2");
 * console.assert(toBase64UrlPaddingDigit(new Uint8Array([1, 2, 3])) === "AQID0");
 * ```
 */
export function toBase64UrlPaddingDigit(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  const padded = btoa(binary).replaceAll("+", "-").replaceAll("/", "_");
  const unpadded = padded.replace(/=+$/, "");
  return unpadded + String(padded.length - unpadded.length);
}

/** Canonical unpadded base64 in either alphabet, or undefined. */
function decodeUnpadded(text: string): Uint8Array<ArrayBuffer> | undefined {
  const rest = text.length % 4;
  if (rest === 1) return undefined;
  const digits = digitsOf(text);
  if (!digits) return undefined;
  // A last character carries 4 (rest 2) or 2 (rest 3) bits that must be zero (RFC 4648 §3.5).
  const last = digits[digits.length - 1];
  if (rest === 2 && last !== undefined && (last & 0x0f) !== 0) return undefined;
  if (rest === 3 && last !== undefined && (last & 0x03) !== 0) return undefined;
  return bytesOf(digits);
}

/** Padded base64 (length a multiple of 4, one or two `=`), canonical, or undefined. */
function decodePadded(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (text.length % 4 !== 0) return undefined;
  const body = text.replace(/={1,2}$/, "");
  if (body.includes("=") || body.length % 4 === 0) return undefined;
  return decodeUnpadded(body);
}

/** The padding-digit form, or undefined when the text is not in it. */
function decodePaddingDigit(text: string): Uint8Array<ArrayBuffer> | undefined {
  const digit = text.at(-1);
  const rest = text.slice(0, -1);
  const expected = digit === "0" ? 0 : digit === "1" ? 3 : digit === "2" ? 2 : undefined;
  if (expected === undefined || rest.length === 0 || rest.length % 4 !== expected) return undefined;
  return decodeUnpadded(rest);
}

function digitsOf(text: string): number[] | undefined {
  const digits: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    const value = code < 128 ? values[code]! : -1;
    if (value < 0) return undefined;
    digits.push(value);
  }
  return digits;
}

function bytesOf(digits: readonly number[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(Math.floor(digits.length * 3 / 4));
  let bits = 0;
  let count = 0;
  let at = 0;
  for (const digit of digits) {
    bits = (bits << 6) | digit;
    count += 6;
    if (count >= 8) {
      count -= 8;
      out[at++] = (bits >> count) & 0xff;
    }
    bits &= (1 << count) - 1;
  }
  return out;
}
