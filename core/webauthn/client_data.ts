/**
 * clientDataJSON, the bytes whose hash the authenticator signs and the server re-reads: built in
 * exactly the order and form of WebAuthn L3 §5.8.1.1 "Serialization"
 * (https://www.w3.org/TR/webauthn-3/#clientdatajson-serialization), so that servers which use
 * the "limited verification algorithm" of §5.8.1.2 (byte prefix match, no JSON parser) accept it.
 *
 * It is written by hand rather than with `JSON.stringify`: the spec fixes the member order and the
 * string escaping (CCDToString escapes control characters as `\u00XX`, where `JSON.stringify`
 * writes `\n`), and neither should depend on an engine's object key order.
 *
 * @module
 */
import { toBase64Url, utf8 } from "../bytes.ts";

/** What {@link buildClientDataJSON} serializes (CollectedClientData, WebAuthn L3 §5.8.1). */
export interface ClientDataInput {
  /** `webauthn.create` for a registration, `webauthn.get` for an authentication. */
  type: "webauthn.create" | "webauthn.get";
  /** The challenge from the server's options, as bytes; written as unpadded base64url. */
  challenge: Uint8Array;
  /** The serialized origin the ceremony is for, e.g. `https://login.microsoft.com`. */
  origin: string;
  /** Whether the call came from a frame not same-origin with its ancestors. @default false */
  crossOrigin?: boolean;
  /** The top-level origin; only for a cross-origin call (`crossOrigin: true`). */
  topOrigin?: string;
}

/** A serialized clientDataJSON, with the hash that goes to the authenticator. */
export interface ClientData {
  /** The JSON text. */
  json: string;
  /** Its UTF-8 bytes: what `response.clientDataJSON` carries (base64url-encoded). */
  bytes: Uint8Array<ArrayBuffer>;
  /** SHA-256 of `bytes`: the CTAP2 `clientDataHash`. */
  hash: Uint8Array<ArrayBuffer>;
}

/**
 * Serializes CollectedClientData per WebAuthn L3 §5.8.1.1 and hashes it.
 *
 * @throws {TypeError} when `topOrigin` is given without `crossOrigin: true` (the spec sets it
 * only for cross-origin calls).
 * @example
 * ```ts
 * import { buildClientDataJSON } from "./client_data.ts";
 * const clientData = await buildClientDataJSON({
 *   type: "webauthn.create",
 *   challenge: new Uint8Array([1, 2, 3]),
 *   origin: "https://login.microsoft.com",
 * });
 * console.assert(
 *   clientData.json ===
 *     '{"type":"webauthn.create","challenge":"AQID","origin":"https://login.microsoft.com","crossOrigin":false}',
 * );
 * console.assert(clientData.hash.length === 32);
 * ```
 */
export async function buildClientDataJSON(input: ClientDataInput): Promise<ClientData> {
  const json = serializeClientData(input);
  const bytes = utf8(json);
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return { json, bytes, hash };
}

/**
 * The clientDataJSON text alone, without hashing (synchronous), for callers that only need the
 * string. Same rules as {@link buildClientDataJSON}.
 *
 * @throws {TypeError} when `topOrigin` is given without `crossOrigin: true`.
 */
export function serializeClientData(input: ClientDataInput): string {
  const crossOrigin = input.crossOrigin ?? false;
  if (input.topOrigin !== undefined && !crossOrigin) {
    throw new TypeError(
      `Cannot serialize clientDataJSON: topOrigin ${
        ccdToString(input.topOrigin)
      } is set only for a cross-origin call (crossOrigin: true)`,
    );
  }
  let out = `{"type":${ccdToString(input.type)}` +
    `,"challenge":${ccdToString(toBase64Url(input.challenge))}` +
    `,"origin":${ccdToString(input.origin)}` +
    `,"crossOrigin":${crossOrigin ? "true" : "false"}`;
  if (input.topOrigin !== undefined) out += `,"topOrigin":${ccdToString(input.topOrigin)}`;
  // §5.8.1.1 steps 11–13: no other members are collected here, so the object ends.
  return out + "}";
}

/**
 * CCDToString (WebAuthn L3 §5.8.1.1): a JSON string literal in which U+0020, U+0021,
 * U+0023–U+005B and U+005D–U+10FFFF stand for themselves, `"` and `\` are backslash-escaped and
 * every other code point (the C0 controls) is `\u` plus four lowercase hex digits.
 *
 * A lone surrogate cannot be UTF-8 encoded; it becomes U+FFFD, as WebIDL's USVString conversion
 * of the input would have made it (and as `TextEncoder` would), so the text and its bytes agree.
 *
 * @example
 * ```ts
 * import { ccdToString } from "./client_data.ts";
 * console.assert(ccdToString('a"b\\c\n') === '"a\\"b\\\\c\\u000a"');
 * ```
 */
export function ccdToString(value: string): string {
  let out = '"';
  for (const char of value) {
    const code = char.codePointAt(0)!;
    if (code === 0x22) out += '\\"';
    else if (code === 0x5c) out += "\\\\";
    else if (code < 0x20) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else if (code >= 0xd800 && code <= 0xdfff) out += "\ufffd";
    else out += char;
  }
  return out + '"';
}
