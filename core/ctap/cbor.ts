/**
 * CTAP2 canonical CBOR (CTAP 2.1 §8 "Message Encoding"): definite lengths, minimal integers,
 * map keys sorted by major type then length then bytes. cborg's default map sorter produces
 * exactly this order, and its strict decoder refuses non-minimal encodings, indefinite lengths,
 * `undefined` and duplicate map keys.
 *
 * CTAP messages are maps with small integer keys; {@link toIntMap} and {@link fromIntMap} turn
 * them into objects with named fields, driven by one key table per message, so every command is
 * written once for both directions (client and authenticator).
 *
 * @module
 */
import { decode, decodeFirst, encode } from "cborg";

/** A CBOR value as this module decodes it: text-keyed maps become plain objects, others `Map`s. */
export type CborValue = unknown;

/** Thrown when bytes are not strict, well-formed CBOR. */
export class CborDecodeError extends TypeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CborDecodeError";
  }
}

const decodeOptions = {
  useMaps: true,
  strict: true,
  rejectDuplicateMapKeys: true,
  allowUndefined: false,
  allowIndefinite: false,
  allowInfinity: false,
  allowNaN: false,
  allowBigInt: false,
} as const;

/**
 * Encodes a value in CTAP2 canonical form. Use `Map` for integer-keyed maps, plain objects for
 * text-keyed ones, `Uint8Array` for byte strings. `undefined` fields must be left out by the
 * caller ({@link toIntMap} does).
 */
export function encodeCbor(value: CborValue): Uint8Array<ArrayBuffer> {
  const bytes = encode(value);
  return new Uint8Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/**
 * Decodes exactly one strict CBOR item that fills `bytes`. Maps whose keys are all text become
 * plain objects; maps with any other key stay `Map`s.
 *
 * @throws {CborDecodeError} on malformed, non-canonical-integer, indefinite or trailing input.
 */
export function decodeCbor(bytes: Uint8Array): CborValue {
  let value: unknown;
  try {
    value = decode(bytes, decodeOptions);
  } catch (cause) {
    throw new CborDecodeError(
      `Cannot decode CBOR: ${
        cause instanceof Error ? cause.message.replace(/^CBOR decode error: /, "") : String(cause)
      }`,
      { cause },
    );
  }
  return plain(value);
}

/**
 * Decodes the first strict CBOR item of `bytes` and returns it with the bytes that follow it,
 * for structures that concatenate CBOR items (authenticator data: public key, then extensions).
 *
 * @throws {CborDecodeError} on malformed input.
 */
export function decodeCborPrefix(bytes: Uint8Array): [value: CborValue, rest: Uint8Array] {
  try {
    const [value, rest] = decodeFirst(bytes, decodeOptions);
    return [plain(value), rest];
  } catch (cause) {
    throw new CborDecodeError(
      `Cannot decode CBOR: ${
        cause instanceof Error ? cause.message.replace(/^CBOR decode error: /, "") : String(cause)
      }`,
      { cause },
    );
  }
}

function plain(value: unknown): unknown {
  if (value instanceof Map) {
    const allText = [...value.keys()].every((key) => typeof key === "string");
    if (allText && value.size > 0) {
      return Object.fromEntries([...value].map(([key, item]) => [key, plain(item)]));
    }
    return new Map([...value].map(([key, item]) => [key, plain(item)]));
  }
  if (Array.isArray(value)) return value.map(plain);
  return value;
}

/** A message's key table: field name to CBOR integer key. */
export type KeyTable = Readonly<Record<string, number>>;

/**
 * Builds the integer-keyed map of a message from named fields, leaving out `undefined` ones.
 *
 * @example
 * ```ts
 * import { toIntMap } from "./cbor.ts";
 * const map = toIntMap({ rpId: "example.com", skipped: undefined }, { rpId: 1, skipped: 2 });
 * console.assert(map.size === 1 && map.get(1) === "example.com");
 * ```
 */
export function toIntMap(fields: Readonly<Record<string, unknown>>, keys: KeyTable): Map<number, unknown> {
  const map = new Map<number, unknown>();
  for (const [name, key] of Object.entries(keys)) {
    const value = fields[name];
    if (value !== undefined) map.set(key, value);
  }
  return map;
}

/**
 * Reads an integer-keyed map into named fields. Unknown keys are ignored, as CTAP requires for
 * forward compatibility; a value that is not a map yields `undefined` so the caller's schema
 * reports it.
 */
export function fromIntMap(value: unknown, keys: KeyTable): Record<string, unknown> | undefined {
  if (value instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [name, key] of Object.entries(keys)) {
      if (value.has(key)) out[name] = value.get(key);
    }
    return out;
  }
  // An empty map decodes as an empty Map, but a caller may hand over `{}`.
  if (
    value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype &&
    Object.keys(value).length === 0
  ) {
    return {};
  }
  return undefined;
}
