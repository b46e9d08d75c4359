/**
 * The bytes of a vault file, format version 2: one header line, then one encrypted record per
 * line, each record chained to everything before it.
 *
 * ```
 * {"format":"provisioning-vault","version":2,"id":"…","generation":3,"kdf":{…},"cipher":"A256GCM","check":"…"}
 * <base64url(iv ‖ AES-256-GCM(record JSON) ‖ tag)>
 * <base64url(…)>
 * ```
 *
 * - The passphrase and salt give 32 bytes with PBKDF2-HMAC-SHA-256; HKDF-SHA-256 splits them
 *   into a record key (AES-256-GCM) and a header key (HMAC-SHA-256), RFC 5869 with distinct info.
 * - `check` is the HMAC of the header's other fields: a wrong passphrase or an edited header
 *   (fewer iterations, another generation) is refused before any record is read.
 * - The chain starts as SHA-256 of the header line; record `n` is encrypted with the additional
 *   data `chain(n-1) ‖ n` (n as 4 bytes, big-endian), and `chain(n) = SHA-256(chain(n-1) ‖ line n)`.
 *   A record that is dropped, reordered, altered, or moved to another vault or generation no
 *   longer authenticates, and neither does any record after it.
 *
 * Cutting whole records off the end is the one change the chain cannot see; the rollback guard
 * (vault_guard.ts) keeps the count outside the file for that.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { z } from "zod";
import { concatBytes, equalBytes, fromBase64Any, randomBytes, toBase64Url, utf8 } from "../../core/bytes.ts";

/** The `format` of every vault file, old and new. */
export const vaultFormat = "provisioning-vault";
/** The format version this module writes. */
export const vaultVersion = 2;
/** PBKDF2 iterations for new vaults: OWASP's 2023 recommendation for PBKDF2-HMAC-SHA-256. */
export const defaultKdfIterations = 600_000;
/** The most iterations a vault file may ask for, so a crafted file cannot stall the program. */
export const maxKdfIterations = 10_000_000;

const saltLength = 16;
const ivLength = 12;
const tagLength = 16;
const idLength = 16;
const recordInfo = "provisioning-vault v2 records";
const headerInfo = "provisioning-vault v2 header";

/** The keys of one open vault, with the salt and iteration count they came from. */
export interface VaultKeys {
  readonly records: CryptoKey;
  readonly header: CryptoKey;
  readonly salt: Uint8Array<ArrayBuffer>;
  readonly iterations: number;
}

/** What a header says, besides the format and version. */
export interface VaultHeader {
  /** Random, fixed for the life of the vault: names it in the rollback guard. */
  readonly id: string;
  /** Raised by every compaction (a rewrite of the whole file). */
  readonly generation: number;
  readonly iterations: number;
  readonly salt: string;
}

const base64url = (bytes: number) =>
  z.string().regex(/^[A-Za-z0-9_-]+$/, "must be base64url").refine(
    (text) => fromBase64Any(text).length === bytes,
    `must decode to ${bytes} bytes`,
  );

const headerSchema = z.object({
  format: z.literal(vaultFormat),
  version: z.literal(vaultVersion),
  id: base64url(idLength),
  generation: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  kdf: z.object({
    name: z.literal("PBKDF2-SHA256"),
    iterations: z.number().int().min(1).max(maxKdfIterations),
    salt: base64url(saltLength),
  }),
  cipher: z.literal("A256GCM"),
  check: base64url(32),
});

/** A fresh random salt and vault id. */
export function newVaultIdentity(): { id: string; salt: Uint8Array<ArrayBuffer> } {
  return { id: toBase64Url(randomBytes(idLength)), salt: randomBytes(saltLength) };
}

/** Derives the record and header keys from the passphrase (NFC-normalised). */
export async function deriveVaultKeys(
  passphrase: string,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
): Promise<VaultKeys> {
  const material = await crypto.subtle.importKey("raw", utf8(passphrase.normalize("NFC")), "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    material,
    256,
  );
  const master = await crypto.subtle.importKey("raw", bits, "HKDF", false, ["deriveKey"]);
  const hkdf = (info: string) => ({
    name: "HKDF",
    hash: "SHA-256",
    salt: new Uint8Array(),
    info: utf8(info),
  });
  const records = await crypto.subtle.deriveKey(
    hkdf(recordInfo),
    master,
    { name: "AES-GCM", length: 256 },
    false,
    [
      "encrypt",
      "decrypt",
    ],
  );
  const header = await crypto.subtle.deriveKey(
    hkdf(headerInfo),
    master,
    { name: "HMAC", hash: "SHA-256", length: 256 },
    false,
    ["sign", "verify"],
  );
  return { records, header, salt, iterations };
}

function headerFields(header: VaultHeader) {
  return {
    format: vaultFormat,
    version: vaultVersion,
    id: header.id,
    generation: header.generation,
    kdf: { name: "PBKDF2-SHA256", iterations: header.iterations, salt: header.salt },
    cipher: "A256GCM",
  } as const;
}

/** The header line (no newline) for `header`, its check made with `keys`. */
export async function encodeHeader(keys: VaultKeys, header: VaultHeader): Promise<string> {
  const fields = headerFields(header);
  const check = await crypto.subtle.sign("HMAC", keys.header, utf8(JSON.stringify(fields)));
  return JSON.stringify({ ...fields, check: toBase64Url(new Uint8Array(check)) });
}

/** Why a header line was refused: not a v2 header, or one whose field is invalid. */
export type HeaderProblem = { kind: "not-v2" } | { kind: "invalid"; field: string; message: string };

/** Parses a header line; it is checked against the keys by {@link verifyHeader}. */
export function parseHeader(line: string): VaultHeader & { check: string } | HeaderProblem {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { kind: "not-v2" };
  }
  const fields = json as { format?: unknown; version?: unknown } | null;
  if (
    typeof json !== "object" || fields === null || fields.format !== vaultFormat ||
    fields.version !== vaultVersion
  ) {
    return { kind: "not-v2" };
  }
  const parsed = headerSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { kind: "invalid", field: issue.path.map(String).join(".") || "(root)", message: issue.message };
  }
  const { id, generation, kdf, check } = parsed.data;
  return { id, generation, iterations: kdf.iterations, salt: kdf.salt, check };
}

/** True when the header's check matches: the passphrase is right and the header is as written. */
export async function verifyHeader(
  keys: VaultKeys,
  header: VaultHeader & { check: string },
): Promise<boolean> {
  return await crypto.subtle.verify(
    "HMAC",
    keys.header,
    new Uint8Array(fromBase64Any(header.check)),
    utf8(JSON.stringify(headerFields(header))),
  );
}

/** The chain value before the first record: SHA-256 of the header line. */
export function chainStart(headerLine: string): Uint8Array {
  return sha256(utf8(headerLine));
}

/** The chain value after `line` (a record line without its newline). */
export function chainNext(chain: Uint8Array, line: string): Uint8Array {
  return sha256(concatBytes(chain, utf8(line)));
}

function additionalData(chain: Uint8Array, sequence: number): Uint8Array<ArrayBuffer> {
  const seq = new Uint8Array(4);
  new DataView(seq.buffer).setUint32(0, sequence);
  return new Uint8Array(concatBytes(chain, seq));
}

/** Encrypts record number `sequence` (from 1), chained after `chain`; the line has no newline. */
export async function sealRecord(
  keys: VaultKeys,
  chain: Uint8Array,
  sequence: number,
  plaintext: string,
): Promise<string> {
  const iv = randomBytes(ivLength);
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: additionalData(chain, sequence), tagLength: tagLength * 8 },
    keys.records,
    utf8(plaintext),
  );
  return toBase64Url(concatBytes(iv, new Uint8Array(sealed)));
}

/** Decrypts record `sequence` chained after `chain`; `undefined` when it does not authenticate. */
export async function openRecord(
  keys: VaultKeys,
  chain: Uint8Array,
  sequence: number,
  line: string,
): Promise<string | undefined> {
  if (!/^[A-Za-z0-9_-]+$/.test(line)) return undefined;
  const bytes = new Uint8Array(fromBase64Any(line));
  if (bytes.length < ivLength + tagLength) return undefined;
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: bytes.subarray(0, ivLength),
        additionalData: additionalData(chain, sequence),
        tagLength: tagLength * 8,
      },
      keys.records,
      bytes.subarray(ivLength),
    );
    return new TextDecoder("utf-8", { fatal: true }).decode(plain);
  } catch {
    return undefined;
  }
}

/** Whether two chain values are equal. */
export function sameChain(a: Uint8Array, b: Uint8Array): boolean {
  return equalBytes(a, b);
}
