/**
 * An encrypted JSON file that holds a state of type `T`: the software key keeps its credentials,
 * private keys, PIN hash and counters in one, so that they are never on disk in the clear.
 *
 * The file is a small JSON envelope whose header says how to read it:
 *
 * ```json
 * {
 *   "format": "provisioning-vault",
 *   "version": 1,
 *   "kdf": { "name": "PBKDF2-SHA256", "iterations": 600000, "salt": "<16 bytes, base64url>" },
 *   "cipher": { "name": "A256GCM", "iv": "<12 bytes, base64url>" },
 *   "ciphertext": "<AES-256-GCM of the state's JSON, tag appended, base64url>"
 * }
 * ```
 *
 * The key is derived once per open with PBKDF2-HMAC-SHA-256 from the passphrase (NFC-normalised)
 * and the salt; every write uses a fresh random IV and binds the header as additional
 * authenticated data, so a changed header or ciphertext reads as "wrong passphrase or altered".
 *
 * Writes are atomic (a temporary file in the same directory, fsync, rename over the target, fsync
 * of the directory) and serialised: concurrent {@link Vault.update} calls apply one after another
 * in call order, and a process killed at any moment leaves either the old or the new file.
 * One process at a time may hold a vault open for writing; nothing here locks it against another.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { z } from "zod";
import { fromBase64Any, randomBytes, toBase64Url, utf8 } from "../../core/bytes.ts";
import { writeFileAtomically } from "../../core/atomic_file.ts";
import { ProvisioningError } from "../../core/errors.ts";

/** PBKDF2 iterations for new vaults: OWASP's 2023 recommendation for PBKDF2-HMAC-SHA-256. */
export const defaultKdfIterations = 600_000;

/** The most iterations a vault file may ask for, so a crafted file cannot stall the program. */
export const maxKdfIterations = 10_000_000;

/** The environment variable the CLI reads the vault passphrase from; named in hints. */
export const vaultPassphraseEnv = "PROVISIONING_VAULT_PASSPHRASE";

const vaultFormat = "provisioning-vault";
const vaultVersion = 1;
const saltLength = 16;
const ivLength = 12;
const tagLength = 16;
/** Far beyond any real key (a thousand credentials is a few hundred KiB): refuse to load more. */
const maxFileSize = 64 * 1024 * 1024;
/** Leftover temporary files older than this are from a killed writer and are removed on open. */
const staleTempAgeMs = 60_000;

/**
 * The error every vault failure a caller may act on is thrown as. Codes: `vault-missing`,
 * `vault-passphrase-wrong`, `vault-passphrase-empty`, `vault-corrupt`, `vault-unreadable`,
 * `vault-exists`, `vault-write-failed`.
 */
export class VaultError extends ProvisioningError {
  /** The vault file concerned. */
  readonly path: string;

  constructor(code: string, path: string, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(code, message, options);
    this.path = path;
  }
}

/** Unpadded base64url that decodes: never a length of 4n + 1. */
const base64urlPattern = /^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$/;

const base64url = (length: { exactly?: number; atLeast?: number }) =>
  z.string().regex(base64urlPattern, { message: "must be base64url", abort: true }).refine(
    (text) => {
      const size = fromBase64Any(text).length;
      return (length.exactly === undefined || size === length.exactly) &&
        (length.atLeast === undefined || size >= length.atLeast);
    },
    length.exactly === undefined
      ? `must decode to at least ${length.atLeast} bytes`
      : `must decode to ${length.exactly} bytes`,
  );

const envelopeSchema = z.object({
  format: z.literal(vaultFormat),
  version: z.literal(vaultVersion),
  kdf: z.object({
    name: z.literal("PBKDF2-SHA256"),
    iterations: z.number().int().min(1).max(maxKdfIterations),
    salt: base64url({ exactly: saltLength }),
  }),
  cipher: z.object({
    name: z.literal("A256GCM"),
    iv: base64url({ exactly: ivLength }),
  }),
  ciphertext: base64url({ atLeast: tagLength }),
});
type Envelope = z.infer<typeof envelopeSchema>;

/** Options of {@link Vault.open}. */
export interface VaultOpenOptions<T> {
  /** The vault file. */
  path: string;
  /** The passphrase the key is derived from. It is not kept after the key is derived. */
  passphrase: string;
  /**
   * Parses the decrypted state and checks every state before it is written. It must accept its
   * own output (no transforms): the state is stored as its JSON.
   */
  schema: z.ZodType<T>;
  /** The first state, when the file does not exist and {@link VaultOpenOptions.create} is set. */
  initial?: () => T | Promise<T>;
  /**
   * Create the file from {@link VaultOpenOptions.initial} when it does not exist.
   * @default false
   */
  create?: boolean;
  /**
   * PBKDF2 iterations for a vault created now; an existing vault keeps the count in its file.
   * @default defaultKdfIterations
   */
  kdfIterations?: number;
}

/** The key of one open vault: derived once, with the salt and iteration count it came from. */
interface DerivedKey {
  key: CryptoKey;
  salt: Uint8Array<ArrayBuffer>;
  iterations: number;
}

/**
 * An open vault: the decrypted state in memory, and serialised, atomic writes of new states.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { Vault } from "./vault.ts";
 * const dir = await Deno.makeTempDir();
 * const options = {
 *   path: `${dir}/counter.vault`,
 *   passphrase: "correct horse battery staple",
 *   schema: z.object({ count: z.number() }),
 *   kdfIterations: 1000,
 * };
 * const vault = await Vault.open({ ...options, create: true, initial: () => ({ count: 0 }) });
 * await vault.update((state) => {
 *   state.count++;
 * });
 * assert.equal((await Vault.open(options)).read().count, 1);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Vault<T> implements AsyncDisposable {
  /** The vault file. */
  readonly path: string;
  readonly #schema: z.ZodType<T>;
  #key: DerivedKey;
  #state: T;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, schema: z.ZodType<T>, key: DerivedKey, state: T) {
    this.path = path;
    this.#schema = schema;
    this.#key = key;
    this.#state = state;
  }

  /**
   * Opens the vault at `options.path`, decrypting and parsing its state, or creates it when it
   * does not exist and `options.create` is set.
   *
   * @throws {VaultError} `vault-missing`, `vault-passphrase-wrong`, `vault-corrupt`, …
   */
  static async open<T>(options: VaultOpenOptions<T>): Promise<Vault<T>> {
    const path = options.path;
    if (options.passphrase.length === 0) {
      throw new VaultError(
        "vault-passphrase-empty",
        path,
        `Cannot open vault "${path}": the passphrase is empty`,
        {
          hint: `Enter the vault's passphrase, or set ${vaultPassphraseEnv}`,
        },
      );
    }
    await removeStaleTempFiles(path);
    const bytes = await readVaultFile(path);
    if (bytes === undefined) {
      if (!options.create) {
        throw new VaultError("vault-missing", path, `Cannot open vault "${path}": the file does not exist`, {
          hint: "Create the software key first with `provisioning key init`",
        });
      }
      return await Vault.#create(options);
    }
    const envelope = parseEnvelope(path, bytes);
    const salt = copy(fromBase64Any(envelope.kdf.salt));
    const key = await deriveKey(options.passphrase, salt, envelope.kdf.iterations);
    const plaintext = await decrypt(path, key, envelope);
    const state = parseState(path, options.schema, plaintext);
    return new Vault(path, options.schema, { key, salt, iterations: envelope.kdf.iterations }, state);
  }

  static async #create<T>(options: VaultOpenOptions<T>): Promise<Vault<T>> {
    const path = options.path;
    if (options.initial === undefined) {
      throw new TypeError(`Cannot create vault "${path}": no initial state was given`);
    }
    const iterations = checkIterations(options.kdfIterations ?? defaultKdfIterations);
    const salt = randomBytes(saltLength);
    const key = await deriveKey(options.passphrase, salt, iterations);
    const prepared = prepareState(path, options.schema, await options.initial());
    const derived = { key, salt, iterations };
    await writeAtomically(path, await seal(derived, prepared.json), { exclusive: true });
    return new Vault(path, options.schema, derived, prepared.state);
  }

  /**
   * Whether a file exists at `path` (it may still not be a vault), so a command can say "create
   * it first" before asking for a passphrase.
   */
  static async exists(path: string): Promise<boolean> {
    try {
      await Deno.lstat(path);
      return true;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return false;
      throw error;
    }
  }

  /** PBKDF2 iterations of the current key, for `key info` and for deciding to re-key. */
  get kdfIterations(): number {
    return this.#key.iterations;
  }

  /**
   * The current state: the last one written (or read at open). Treat it as read-only; change it
   * with {@link Vault.update} or {@link Vault.write}.
   */
  read(): T {
    return this.#state;
  }

  /**
   * Replaces the state with `state` and resolves once it is durable on disk. Queued behind the
   * writes already asked for.
   *
   * @throws {TypeError} when `state` does not satisfy the schema (nothing is written).
   * @throws {VaultError} `vault-write-failed` when the file cannot be written.
   */
  write(state: T): Promise<void> {
    return this.#enqueue(async () => {
      await this.#commit(state);
    });
  }

  /**
   * Applies `change` to a copy of the current state (mutate it, or return a new state), writes
   * the result, and resolves with it. Calls apply one after another in call order, each seeing the
   * result of the one before; one that throws changes nothing and does not stop the next.
   */
  update(change: (state: T) => T | void | Promise<T | void>): Promise<T> {
    return this.#enqueue(async () => {
      const draft = structuredClone(this.#state);
      const result = await change(draft);
      return await this.#commit(result === undefined ? draft : result);
    });
  }

  /**
   * Re-encrypts the vault under a new passphrase (a fresh salt; the iteration count kept unless
   * given). The old passphrase no longer opens it once this resolves.
   */
  changePassphrase(passphrase: string, options: { kdfIterations?: number } = {}): Promise<void> {
    return this.#enqueue(async () => {
      if (passphrase.length === 0) {
        throw new VaultError(
          "vault-passphrase-empty",
          this.path,
          `Cannot change the passphrase of vault "${this.path}": the new passphrase is empty`,
        );
      }
      const iterations = checkIterations(options.kdfIterations ?? this.#key.iterations);
      const salt = randomBytes(saltLength);
      const derived = { key: await deriveKey(passphrase, salt, iterations), salt, iterations };
      await writeAtomically(this.path, await seal(derived, JSON.stringify(this.#state)));
      this.#key = derived;
    });
  }

  /** Resolves once every write asked for so far has finished (successfully or not). */
  async flush(): Promise<void> {
    await this.#queue.catch(() => undefined);
  }

  /** Waits for pending writes, so `await using vault = await Vault.open(…)` never drops one. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.flush();
  }

  async #commit(state: T): Promise<T> {
    const prepared = prepareState(this.path, this.#schema, state);
    await writeAtomically(this.path, await seal(this.#key, prepared.json));
    this.#state = prepared.state;
    return prepared.state;
  }

  #enqueue<R>(task: () => Promise<R>): Promise<R> {
    const result = this.#queue.then(task, task);
    this.#queue = result.catch(() => undefined);
    return result;
  }
}

function checkIterations(iterations: number): number {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > maxKdfIterations) {
    throw new RangeError(
      `Cannot use ${iterations} PBKDF2 iterations: expected an integer from 1 to ${maxKdfIterations}`,
    );
  }
  return iterations;
}

/** The file's bytes, or `undefined` when there is no file. */
async function readVaultFile(path: string): Promise<Uint8Array | undefined> {
  try {
    const info = await Deno.stat(path);
    if (!info.isFile) {
      throw new VaultError("vault-unreadable", path, `Cannot open vault "${path}": it is not a file`, {
        hint: "Check the path",
      });
    }
    if (info.size > maxFileSize) {
      throw corrupt(path, `the file is ${info.size} bytes, too large for a vault`, "Check the path");
    }
    return await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    if (error instanceof VaultError) throw error;
    throw unreadable(path, error);
  }
}

function unreadable(path: string, error: unknown): Error {
  // A missing permission is reported by the top level, which names the permission set.
  if (error instanceof Deno.errors.NotCapable) return error;
  const reason = error instanceof Error ? error.name : "unknown error";
  return new VaultError(
    "vault-unreadable",
    path,
    `Cannot open vault "${path}": it cannot be read (${reason})`,
    {
      cause: error,
      hint: "Check that the path names a readable file",
    },
  );
}

function corrupt(path: string, state: string, hint = "Restore the vault file from a backup"): VaultError {
  return new VaultError("vault-corrupt", path, `Cannot open vault "${path}": ${state}`, { hint });
}

function parseEnvelope(path: string, bytes: Uint8Array): Envelope {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw corrupt(path, "the file is not JSON, so it is not a vault or it is damaged");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw corrupt(path, "the file is JSON but not an object, so it is not a vault");
  }
  const record = json as Record<string, unknown>;
  if (record.format !== vaultFormat) {
    throw corrupt(path, `the file is not a vault (its "format" is not "${vaultFormat}")`, "Check the path");
  }
  if (typeof record.version === "number" && record.version > vaultVersion) {
    throw corrupt(
      path,
      `the vault has format version ${record.version}, this program reads version ${vaultVersion}`,
      "Open it with a newer version of provisioning",
    );
  }
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success) throw corrupt(path, `field ${describeIssue(parsed.error)}`);
  return parsed.data;
}

/** `"kdf.salt" must decode to 16 bytes`: the first issue's path and message, never its input. */
function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return "(unknown) is invalid";
  const field = issue.path.map(String).join(".") || "(root)";
  return `"${field}" is invalid: ${issue.message}`;
}

function parseState<T>(path: string, schema: z.ZodType<T>, plaintext: Uint8Array): T {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext));
  } catch {
    throw corrupt(path, "the decrypted content is not JSON");
  }
  const hint =
    "It was written by an incompatible version of provisioning; restore it from a backup or open it with that version";
  let parsed: z.ZodSafeParseResult<T>;
  try {
    parsed = schema.safeParse(json);
  } catch {
    // A refinement that throws (rather than reporting an issue); its message may quote the value.
    throw corrupt(path, "the decrypted state does not have the expected shape", hint);
  }
  if (!parsed.success) {
    throw corrupt(
      path,
      `the decrypted state does not have the expected shape: field ${describeIssue(parsed.error)}`,
      hint,
    );
  }
  return parsed.data;
}

/** A state to be written, as a re-open would read it back, and the JSON it is stored as. */
interface PreparedState<T> {
  state: T;
  json: string;
}

function prepareState<T>(path: string, schema: z.ZodType<T>, state: T): PreparedState<T> {
  // Through JSON first, so the state kept in memory is exactly what a re-open would read.
  const parsed = schema.safeParse(JSON.parse(JSON.stringify(state)));
  if (!parsed.success) {
    throw new TypeError(
      `Cannot write vault "${path}": the new state is invalid: field ${describeIssue(parsed.error)}`,
    );
  }
  return { state: parsed.data, json: JSON.stringify(parsed.data) };
}

/** The header as bound into the ciphertext: fixed key order, the values as stored. */
function additionalData(header: Omit<Envelope, "ciphertext">): Uint8Array<ArrayBuffer> {
  return utf8(JSON.stringify({
    format: header.format,
    version: header.version,
    kdf: { name: header.kdf.name, iterations: header.kdf.iterations, salt: header.kdf.salt },
    cipher: { name: header.cipher.name, iv: header.cipher.iv },
  }));
}

async function deriveKey(
  passphrase: string,
  salt: Uint8Array<ArrayBuffer>,
  iterations: number,
): Promise<CryptoKey> {
  const material = await crypto.subtle.importKey("raw", utf8(passphrase.normalize("NFC")), "PBKDF2", false, [
    "deriveKey",
  ]);
  return await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

async function seal(key: DerivedKey, json: string): Promise<string> {
  const iv = randomBytes(ivLength);
  const header = {
    format: vaultFormat,
    version: vaultVersion,
    kdf: { name: "PBKDF2-SHA256", iterations: key.iterations, salt: toBase64Url(key.salt) },
    cipher: { name: "A256GCM", iv: toBase64Url(iv) },
  } as const;
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: additionalData(header), tagLength: tagLength * 8 },
    key.key,
    utf8(json),
  );
  return `${JSON.stringify({ ...header, ciphertext: toBase64Url(new Uint8Array(ciphertext)) }, null, 2)}\n`;
}

async function decrypt(path: string, key: CryptoKey, envelope: Envelope): Promise<Uint8Array> {
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: copy(fromBase64Any(envelope.cipher.iv)),
          additionalData: additionalData(envelope),
          tagLength: tagLength * 8,
        },
        key,
        copy(fromBase64Any(envelope.ciphertext)),
      ),
    );
  } catch {
    throw new VaultError(
      "vault-passphrase-wrong",
      path,
      `Cannot open vault "${path}": the passphrase is wrong or the file was altered`,
      {
        hint:
          `Check the passphrase (or ${vaultPassphraseEnv}, which is used instead of asking when it is set)`,
      },
    );
  }
}

function copy(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

function tempPrefix(path: string): string {
  return `.${basename(path)}.`;
}

/**
 * Writes the vault file atomically (core/atomic_file.ts). With `exclusive` (creating a vault) the
 * folder is made if needed and the file is hard-linked into place, so a vault that appeared
 * meanwhile is not replaced.
 */
async function writeAtomically(
  path: string,
  text: string,
  options: { exclusive?: boolean } = {},
): Promise<void> {
  try {
    if (options.exclusive) await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFileAtomically(path, text, {
      tempPrefix: tempPrefix(path),
      ...(options.exclusive ? { place: linkExclusive } : {}),
    });
  } catch (error) {
    if (error instanceof VaultError || error instanceof Deno.errors.NotCapable) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new VaultError("vault-write-failed", path, `Cannot write vault "${path}": ${reason}`, {
      cause: error,
      hint: "Check the free space and the permissions of its directory; the previous state is unchanged",
    });
  }
}

/** Puts `temp` at `path` unless a file is there already; falls back to rename without hard links. */
async function linkExclusive(temp: string, path: string): Promise<void> {
  try {
    await Deno.link(temp, path);
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new VaultError(
        "vault-exists",
        path,
        `Cannot create vault "${path}": a file appeared at that path meanwhile`,
        {
          hint: "Another process created it; open it instead",
        },
      );
    }
    if (error instanceof Deno.errors.NotCapable) throw error;
    // A file system without hard links (FAT on a USB stick): check, then rename.
    if (await Vault.exists(path)) throw error;
    await Deno.rename(temp, path);
  }
}

/** Removes temporary files a killed writer left beside the vault (best effort, old ones only). */
async function removeStaleTempFiles(path: string): Promise<void> {
  const directory = dirname(path);
  const prefix = tempPrefix(path);
  const now = Date.now();
  try {
    for await (const entry of Deno.readDir(directory)) {
      if (
        !entry.isFile || !entry.name.startsWith(prefix) ||
        !/^[0-9a-f]{12}\.tmp$/.test(entry.name.slice(prefix.length))
      ) {
        continue;
      }
      const temp = join(directory, entry.name);
      const info = await Deno.lstat(temp);
      if (info.mtime !== null && now - info.mtime.getTime() > staleTempAgeMs) await Deno.remove(temp);
    }
  } catch {
    // No directory yet, or not allowed to list it: nothing to clean.
  }
}
