/**
 * An encrypted file that holds a state of type `T`: the software key keeps its credentials,
 * private keys, PIN hash and counters in one, so that they are never on disk in the clear.
 *
 * The file is a log (format in vault_format.ts): a header line, a snapshot of the whole state,
 * then one encrypted, chained record per change. A change costs one appended line and one
 * `fdatasync`, whatever the size of the state; when the changes outgrow the snapshot, the file is
 * compacted (rewritten as one snapshot, atomically: temporary file, fsync, rename, fsync of the
 * folder). So:
 *
 * - **Atomic.** A process killed at any byte leaves a file that opens to the state after its last
 *   complete record; the torn line is cut off by the next writer.
 * - **Authenticated end to end.** A record that is dropped, reordered, altered or cut in the
 *   middle does not authenticate, and the vault refuses to open. Records cut off the end, or an
 *   older copy put back, are caught by the rollback guard (vault_guard.ts) when one is given.
 * - **Shared safely.** Processes (and several opens in one process) may use one vault at once:
 *   every change is made under an exclusive OS file lock (`flock`), after reading the records the
 *   others appended, so no change is lost; a lock held longer than `lockTimeoutMs` is reported
 *   as `vault-locked`.
 * - **One file.** Back it up like any file (while nothing writes it, or copy it under the lock:
 *   a copy taken mid-append opens to its last complete record).
 * - **Older vaults** (format version 1, one encrypted JSON envelope) are read and rewritten in
 *   this format at open (vault_legacy.ts).
 *
 * @module
 */
import { basename, dirname, join, resolve } from "node:path";
import { z } from "zod";
import { fromBase64Any, toBase64Url } from "../../core/bytes.ts";
import { writeFileAtomically } from "../../core/atomic_file.ts";
import { ProvisioningError } from "../../core/errors.ts";
import {
  chainNext,
  chainStart,
  defaultKdfIterations,
  deriveVaultKeys,
  encodeHeader,
  maxKdfIterations,
  newVaultIdentity,
  openRecord,
  parseHeader,
  sameChain,
  sealRecord,
  type VaultKeys,
  vaultVersion,
  verifyHeader,
} from "./vault_format.ts";
import { decryptLegacyEnvelope, parseLegacyEnvelope } from "./vault_legacy.ts";
import { guardFile, isBehind, readGuardMark, writeGuardMark } from "./vault_guard.ts";

export { defaultKdfIterations, maxKdfIterations } from "./vault_format.ts";

/** The environment variable the CLI reads the vault passphrase from; named in hints. */
export const vaultPassphraseEnv = "PROVISIONING_VAULT_PASSPHRASE";

/** Far beyond any real key (100,000 credentials are about 60 MiB): refuse to load more. */
const maxFileSize = 512 * 1024 * 1024;
/** The log is compacted once it is larger than this and larger than the snapshot. */
const defaultCompactAfterBytes = 64 * 1024;
/** How long a change waits for another process's change to finish, by default. */
const defaultLockTimeoutMs = 30_000;

/**
 * The error every vault failure a caller may act on is thrown as. Codes: `vault-missing`,
 * `vault-passphrase-wrong`, `vault-passphrase-empty`, `vault-corrupt`, `vault-unreadable`,
 * `vault-exists`, `vault-write-failed`, `vault-disk-full`, `vault-locked`, `vault-rolled-back`.
 */
export class VaultError extends ProvisioningError {
  /** The vault file concerned. */
  readonly path: string;

  constructor(code: string, path: string, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(code, message, options);
    this.path = path;
  }
}

/** How a vault stores changes smaller than the whole state (the software key's records). */
export interface VaultChanges<T, C> {
  /** Parses a change record; like the state schema, it must accept its own output. */
  schema: z.ZodType<C>;
  /** Applies a (parsed) change to the state in place. Must not throw for a change the schema accepts. */
  apply(state: T, change: C): void;
}

/** Options of {@link Vault.open}. */
export interface VaultOpenOptions<T, C = never> {
  /** The vault file. */
  path: string;
  /** The passphrase the key is derived from. It is not kept after the key is derived. */
  passphrase: string;
  /**
   * Parses the decrypted state and checks every state before it is written. It must accept its
   * own output (no transforms): the state is stored as its JSON.
   */
  schema: z.ZodType<T>;
  /** Change records, for {@link Vault.change}. */
  changes?: VaultChanges<T, C>;
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
  /**
   * How long to wait for another process that holds the vault's lock before giving up.
   * @default 30000
   */
  lockTimeoutMs?: number;
  /**
   * The folder of the rollback guard (vault_guard.ts). Without it, an older copy of the vault put
   * back in place opens without a word.
   */
  guardDir?: string;
  /**
   * Compact once the records after the snapshot exceed this many bytes (and the snapshot's size).
   * @default 65536
   */
  compactAfterBytes?: number;
}

/** An inode no file has: the next transaction reads the file afresh (after a rewrite). */
const rewritten = -1;

/** Where this process has read the file up to. */
interface Position {
  /** Inode of the file read; a different one means another process compacted it. */
  ino: number | null;
  id: string;
  generation: number;
  /** Records read in this generation (the snapshot is record 1). */
  records: number;
  chain: Uint8Array;
  /** Bytes read: header and whole records. */
  offset: number;
  /** Bytes of the header and the first snapshot. */
  snapshotBytes: number;
}

/** What this open vault has written: for benchmarks and `key info`. */
export interface VaultWriteStats {
  /** Bytes written to the vault file and its compactions (not the rollback guard). */
  bytesWritten: number;
  /** `fsync`/`fdatasync` calls on the vault file. */
  syncs: number;
  /** Records appended. */
  records: number;
  /** Rewrites of the whole file. */
  compactions: number;
}

/** A record as stored: a whole state or a change. */
type RecordJson<T, C> = { s: T } | { c: C };

/**
 * An open vault: the decrypted state in memory, and serialised, durable, O(1) changes to it.
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
 *   changes: { schema: z.object({ add: z.number() }), apply: (s: { count: number }, c: { add: number }) => void (s.count += c.add) },
 *   kdfIterations: 1000,
 * };
 * {
 *   await using vault = await Vault.open({ ...options, create: true, initial: () => ({ count: 0 }) });
 *   await vault.change(() => ({ add: 2 }));
 * }
 * await using again = await Vault.open(options);
 * assert.equal(again.read().count, 2);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Vault<T, C = never> implements AsyncDisposable {
  /** The vault file. */
  readonly path: string;
  readonly #schema: z.ZodType<T>;
  readonly #changes: VaultChanges<T, C> | undefined;
  readonly #lockTimeoutMs: number;
  readonly #guardDir: string | undefined;
  readonly #compactAfterBytes: number;
  #keys: VaultKeys;
  #state: T;
  #position: Position;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #stats: VaultWriteStats = { bytesWritten: 0, syncs: 0, records: 0, compactions: 0 };

  private constructor(
    options: VaultOpenOptions<T, C>,
    keys: VaultKeys,
    state: T,
    position: Position,
  ) {
    this.path = options.path;
    this.#schema = options.schema;
    this.#changes = options.changes;
    this.#lockTimeoutMs = options.lockTimeoutMs ?? defaultLockTimeoutMs;
    this.#guardDir = options.guardDir;
    this.#compactAfterBytes = options.compactAfterBytes ?? defaultCompactAfterBytes;
    this.#keys = keys;
    this.#state = state;
    this.#position = position;
  }

  /**
   * Opens the vault at `options.path`, decrypting and replaying its records, or creates it when it
   * does not exist and `options.create` is set. A version 1 vault is rewritten in version 2.
   *
   * @throws {VaultError} `vault-missing`, `vault-passphrase-wrong`, `vault-corrupt`,
   *   `vault-rolled-back`, `vault-locked`, …
   */
  static async open<T, C = never>(options: VaultOpenOptions<T, C>): Promise<Vault<T, C>> {
    const path = options.path;
    if (options.passphrase.length === 0) {
      throw new VaultError(
        "vault-passphrase-empty",
        path,
        `Cannot open vault "${path}": the passphrase is empty`,
        { hint: `Enter the vault's passphrase, or set ${vaultPassphraseEnv}` },
      );
    }
    if (!(await Vault.exists(path))) {
      if (!options.create) {
        throw new VaultError("vault-missing", path, `Cannot open vault "${path}": the file does not exist`, {
          hint: "Create the software key first with `provisioning key init`",
        });
      }
      try {
        await Vault.#create(options);
      } catch (error) {
        // Another process created it at the same moment (two runs starting together): open theirs.
        if (!(error instanceof VaultError && error.code === "vault-exists")) throw error;
      }
    }
    const timeout = options.lockTimeoutMs ?? defaultLockTimeoutMs;
    return await withLockedFile(path, timeout, async (file, ino) => {
      await removeTempFiles(path);
      const text = await readWhole(path, file);
      // Version 2 starts with a one-line JSON header; version 1 is one indented JSON document.
      const firstLine = text.slice(0, Math.max(0, text.indexOf("\n")));
      const opened = readVersion(firstLine) === undefined
        ? await Vault.#migrate(options, text, ino)
        : await Vault.#load(options, text, ino, file);
      await opened.#checkAndMarkGuard(opened.#watchedChain);
      return opened;
    });
  }

  /** The chain value at the guard mark's record, seen while replaying (for the fork check). */
  #watchedChain: Uint8Array | undefined;

  static async #create<T, C>(options: VaultOpenOptions<T, C>): Promise<void> {
    const path = options.path;
    if (options.initial === undefined) {
      throw new TypeError(`Cannot create vault "${path}": no initial state was given`);
    }
    const iterations = checkIterations(options.kdfIterations ?? defaultKdfIterations);
    const { id, salt } = newVaultIdentity();
    const keys = await deriveVaultKeys(options.passphrase, salt, iterations);
    const state = prepareState(path, options.schema, await options.initial());
    const file = await snapshotFile(keys, id, 1, state.json);
    await writeVaultFile(path, file.text, { exclusive: true });
  }

  /** Reads a version 2 file under the lock: header, snapshot, every change; cuts a torn tail. */
  static async #load<T, C>(
    options: VaultOpenOptions<T, C>,
    text: string,
    ino: number | null,
    file: Deno.FsFile,
  ): Promise<Vault<T, C>> {
    const path = options.path;
    const headerLine = text.slice(0, text.indexOf("\n"));
    const header = parseHeader(headerLine);
    if ("kind" in header) {
      const version = readVersion(headerLine);
      if (version !== undefined && version > vaultVersion) {
        throw corrupt(
          path,
          `the vault has format version ${version}, this program reads versions 1 and ${vaultVersion}`,
          "Open it with a newer version of provisioning",
        );
      }
      throw header.kind === "invalid"
        ? corrupt(path, `header field "${header.field}" is invalid: ${header.message}`)
        : corrupt(path, `the file is not a vault (its first line is not a vault header)`, "Check the path");
    }
    const keys = await deriveVaultKeys(
      options.passphrase,
      new Uint8Array(fromBase64Any(header.salt)),
      header.iterations,
    );
    if (!(await verifyHeader(keys, header))) throw wrongPassphrase(path);
    const position: Position = {
      ino,
      id: header.id,
      generation: header.generation,
      records: 0,
      chain: chainStart(headerLine),
      offset: headerLine.length + 1,
      snapshotBytes: 0,
    };
    const vault = new Vault<T, C>(options, keys, undefined as T, position);
    const mark = options.guardDir === undefined
      ? undefined
      : await readGuardMark(options.guardDir, header.id);
    const watch = mark?.generation === header.generation ? mark.records : undefined;
    await vault.#replay(text.slice(position.offset), file, watch);
    if (position.records === 0) throw corrupt(path, "the vault has a header but no snapshot record");
    return vault;
  }

  /** Reads a version 1 file and rewrites it as version 2 (same passphrase and iteration count). */
  static async #migrate<T, C>(
    options: VaultOpenOptions<T, C>,
    text: string,
    ino: number | null,
  ): Promise<Vault<T, C>> {
    const path = options.path;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw corrupt(path, "the file is neither a vault log nor JSON, so it is not a vault or it is damaged");
    }
    if (
      typeof json !== "object" || json === null ||
      (json as { format?: unknown }).format !== "provisioning-vault"
    ) {
      throw corrupt(
        path,
        `the file is not a vault (its "format" is not "provisioning-vault")`,
        "Check the path",
      );
    }
    const envelope = parseLegacyEnvelope(json);
    if ("field" in envelope) throw corrupt(path, `field "${envelope.field}" is invalid: ${envelope.message}`);
    const plain = await decryptLegacyEnvelope(envelope, options.passphrase);
    if (plain === undefined) throw wrongPassphrase(path);
    const state = parseState(path, options.schema, plain);
    const { id, salt } = newVaultIdentity();
    const keys = await deriveVaultKeys(options.passphrase, salt, envelope.kdf.iterations);
    const prepared = prepareState(path, options.schema, state);
    const file = await snapshotFile(keys, id, 1, prepared.json);
    await writeVaultFile(path, file.text);
    const position: Position = { ...file.position, ino: ino === null ? null : rewritten };
    return new Vault<T, C>(options, keys, prepared.state, position);
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
    return this.#keys.iterations;
  }

  /** Where the vault stands: its generation (compactions + 1) and the records in it. */
  get position(): { generation: number; records: number; bytes: number } {
    return {
      generation: this.#position.generation,
      records: this.#position.records,
      bytes: this.#position.offset,
    };
  }

  /** What this open vault has written so far. */
  get stats(): Readonly<VaultWriteStats> {
    return { ...this.#stats };
  }

  /**
   * The current state: as of this process's last change or {@link refresh}. Treat it as
   * read-only; change it with {@link change}, {@link update} or {@link write}.
   */
  read(): T {
    return this.#state;
  }

  /** Reads the records other processes appended since, and resolves with the current state. */
  refresh(): Promise<T> {
    return this.#enqueue(() => this.#transaction(() => Promise.resolve()).then(() => this.#state));
  }

  /**
   * Makes one change: under the vault's lock, with every other process's changes read first,
   * `compute` turns the current state (read-only) into a change, or `undefined` for none; the
   * change is appended, made durable, then applied. Resolves with the change applied.
   *
   * @throws {TypeError} when the change does not satisfy the schema (nothing is written).
   * @throws {VaultError} `vault-write-failed`, `vault-disk-full`, `vault-locked`.
   */
  change(compute: (state: T) => C | undefined): Promise<C | undefined> {
    const changes = this.#changes;
    if (changes === undefined) {
      return Promise.reject(
        new TypeError(`Cannot change vault "${this.path}": it was opened without change records`),
      );
    }
    return this.#enqueue(() =>
      this.#transaction(async (append) => {
        const wanted = compute(this.#state);
        if (wanted === undefined) return undefined;
        const change = prepareChange(this.path, changes.schema, wanted);
        await append({ c: change });
        changes.apply(this.#state, change);
        return change;
      })
    );
  }

  /**
   * Replaces the state with `state` (a snapshot record) and resolves once it is durable.
   *
   * @throws {TypeError} when `state` does not satisfy the schema (nothing is written).
   */
  write(state: T): Promise<void> {
    return this.#enqueue(() =>
      this.#transaction(async (append) => {
        const prepared = prepareState(this.path, this.#schema, state);
        await append({ s: prepared.state });
        this.#state = prepared.state;
      })
    );
  }

  /**
   * Applies `change` to a copy of the current state (mutate it, or return a new state) and writes
   * the result as a snapshot record. Calls apply one after another in call order; one that
   * throws changes nothing. Prefer {@link change} for small changes: this one writes the state.
   */
  update(change: (state: T) => T | void | Promise<T | void>): Promise<T> {
    return this.#enqueue(() =>
      this.#transaction(async (append) => {
        const draft = structuredClone(this.#state);
        const result = await change(draft);
        const prepared = prepareState(this.path, this.#schema, result === undefined ? draft : result);
        await append({ s: prepared.state });
        this.#state = prepared.state;
        return prepared.state;
      })
    );
  }

  /**
   * Re-encrypts the vault under a new passphrase (a fresh salt; the iteration count kept unless
   * given). The old passphrase no longer opens it once this resolves.
   */
  changePassphrase(passphrase: string, options: { kdfIterations?: number } = {}): Promise<void> {
    return this.#enqueue(() =>
      this.#transaction(async () => {
        if (passphrase.length === 0) {
          throw new VaultError(
            "vault-passphrase-empty",
            this.path,
            `Cannot change the passphrase of vault "${this.path}": the new passphrase is empty`,
          );
        }
        const iterations = checkIterations(options.kdfIterations ?? this.#keys.iterations);
        const { salt } = newVaultIdentity();
        const keys = await deriveVaultKeys(passphrase, salt, iterations);
        await this.#compact(keys);
      })
    );
  }

  /** Rewrites the file as one snapshot now (it happens by itself as the log grows). */
  compact(): Promise<void> {
    return this.#enqueue(() => this.#transaction(() => this.#compact(this.#keys)));
  }

  /** Resolves once every change asked for so far has finished (successfully or not). */
  async flush(): Promise<void> {
    await this.#queue.catch(() => undefined);
  }

  /** Waits for pending changes and records the vault's position in the rollback guard. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.flush();
    if (this.#guardDir === undefined) return;
    await this.#enqueue(() => this.#transaction(() => this.#markGuard())).catch(() => undefined);
  }

  // --- transactions ---------------------------------------------------------------------------

  /**
   * Runs `work` holding the file's lock, after reading what other processes appended; `work`
   * appends records with the function it is given. Compacts afterwards when the log is large.
   */
  #transaction<R>(work: (append: (record: RecordJson<T, C>) => Promise<void>) => Promise<R>): Promise<R> {
    return withLockedFile(this.path, this.#lockTimeoutMs, async (file, ino) => {
      await this.#catchUp(file, ino);
      const result = await work((record) => this.#append(file, record));
      if (
        this.#position.offset - this.#position.snapshotBytes >
          Math.max(this.#compactAfterBytes, this.#position.snapshotBytes)
      ) {
        // The change is durable already: a compaction that fails (full disk) leaves the log as it is.
        await this.#compact(this.#keys).catch(() => undefined);
      }
      return result;
    });
  }

  /** Brings the state up to the file: the records appended since, or all of it after a compaction. */
  async #catchUp(file: Deno.FsFile, ino: number | null): Promise<void> {
    const size = (await file.stat()).size;
    if (ino !== this.#position.ino) {
      const text = await readWhole(this.path, file);
      const headerLine = text.slice(0, text.indexOf("\n"));
      const header = parseHeader(headerLine);
      if ("kind" in header || !(await verifyHeader(this.#keys, header))) {
        throw new VaultError(
          "vault-passphrase-wrong",
          this.path,
          `Cannot use vault "${this.path}": another process re-encrypted or replaced it while it was open`,
          { hint: "Open it again (with its new passphrase, if it was changed)" },
        );
      }
      this.#position = {
        ino,
        id: header.id,
        generation: header.generation,
        records: 0,
        chain: chainStart(headerLine),
        offset: headerLine.length + 1,
        snapshotBytes: 0,
      };
      await this.#replay(text.slice(this.#position.offset), file, undefined);
      return;
    }
    if (size < this.#position.offset) {
      throw new VaultError(
        "vault-rolled-back",
        this.path,
        `Cannot use vault "${this.path}": it is shorter than when this process last read it (${size} bytes, ${this.#position.offset} read)`,
        { hint: "Something cut or replaced the file while it was open; restore it from a backup" },
      );
    }
    if (size === this.#position.offset) return;
    const tail = await readFrom(file, this.#position.offset, size - this.#position.offset);
    await this.#replay(tail, file, undefined);
  }

  /**
   * Reads records from `text` (which starts at the position's offset) into the state. A torn
   * last record (a crash mid-append) is cut off the file, which the caller holds locked.
   */
  async #replay(text: string, file: Deno.FsFile, watch: number | undefined): Promise<void> {
    const position = this.#position;
    let start = 0;
    for (;;) {
      const end = text.indexOf("\n", start);
      if (end === -1) break;
      const line = text.slice(start, end);
      const sequence = position.records + 1;
      const plain = await openRecord(this.#keys, position.chain, sequence, line);
      if (plain === undefined) {
        const last = text.indexOf("\n", end + 1) === -1;
        if (last && sequence > 1) break; // torn: cut off below
        throw corrupt(
          this.path,
          `record ${sequence} of generation ${position.generation} does not authenticate: ` +
            "a record was dropped, reordered, cut or altered",
        );
      }
      this.#applyRecord(sequence, plain);
      position.records = sequence;
      position.chain = chainNext(position.chain, line);
      position.offset += line.length + 1;
      if (sequence === 1) position.snapshotBytes = position.offset;
      if (sequence === watch) this.#watchedChain = position.chain;
      start = end + 1;
    }
    // Never before the snapshot: a file without a whole first record is refused, not cut.
    if (start < text.length && position.records > 0) await cutTornTail(this.path, file, position.offset);
  }

  #applyRecord(sequence: number, plain: string): void {
    const record = parseRecord(this.path, plain);
    if ("s" in record) {
      this.#state = parseState(this.path, this.#schema, record.s);
      return;
    }
    if (sequence === 1) throw corrupt(this.path, "the vault's first record is not a snapshot");
    const changes = this.#changes;
    if (changes === undefined) {
      throw corrupt(this.path, "the vault holds change records, but was opened without a way to apply them");
    }
    changes.apply(this.#state, parseChange(this.path, changes.schema, record.c));
  }

  /** Appends one record and makes it durable; on failure the file is cut back to where it was. */
  async #append(file: Deno.FsFile, record: RecordJson<T, C>): Promise<void> {
    const position = this.#position;
    const sequence = position.records + 1;
    const line = await sealRecord(this.#keys, position.chain, sequence, JSON.stringify(record));
    try {
      await file.seek(position.offset, Deno.SeekMode.Start);
      await writeAll(file, new TextEncoder().encode(`${line}\n`));
      await file.syncData();
      this.#stats.bytesWritten += line.length + 1;
      this.#stats.syncs++;
      this.#stats.records++;
    } catch (error) {
      await file.truncate(position.offset).catch(() => undefined);
      throw writeFailed(this.path, error);
    }
    position.records = sequence;
    position.chain = chainNext(position.chain, line);
    position.offset += line.length + 1;
  }

  /** Rewrites the file as its header and one snapshot, in the next generation (under the lock). */
  async #compact(keys: VaultKeys): Promise<void> {
    const prepared = prepareState(this.path, this.#schema, this.#state);
    const file = await snapshotFile(keys, this.#position.id, this.#position.generation + 1, prepared.json);
    await writeVaultFile(this.path, file.text);
    this.#stats.bytesWritten += file.text.length;
    this.#stats.syncs += 2; // the new file and its folder
    this.#stats.compactions++;
    this.#keys = keys;
    // Once renamed into place, the new file is no longer under our lock: another process may
    // append to it (or compact it again) before we could stat it. Read it afresh next time.
    this.#position = { ...file.position, ino: this.#position.ino === null ? null : rewritten };
    if (this.#guardDir !== undefined) await this.#markGuard().catch(() => undefined);
  }

  #enqueue<R>(task: () => Promise<R>): Promise<R> {
    const result = this.#queue.then(task, task);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  // --- rollback guard -------------------------------------------------------------------------

  /** At open: refuses a vault behind (or beside) its last mark, then moves the mark up. */
  async #checkAndMarkGuard(watched: Uint8Array | undefined): Promise<void> {
    const dir = this.#guardDir;
    if (dir === undefined) return;
    const position = this.#position;
    const mark = await readGuardMark(dir, position.id);
    if (mark !== undefined) {
      const file = guardFile(dir, position.id);
      const hint = `If you put an older copy back on purpose (restored a backup), delete "${file}" and ` +
        "open the vault again; otherwise find the newer copy: passkeys registered since are missing from this one";
      if (isBehind(position, mark)) {
        throw new VaultError(
          "vault-rolled-back",
          this.path,
          `Cannot open vault "${this.path}": it is an older copy than the one this machine last saw ` +
            `(change ${mark.records} of generation ${mark.generation}; this file ends at change ` +
            `${position.records} of generation ${position.generation})`,
          { hint },
        );
      }
      if (
        mark.generation === position.generation && watched !== undefined &&
        !sameChain(watched, fromBase64Any(mark.chain))
      ) {
        throw new VaultError(
          "vault-rolled-back",
          this.path,
          `Cannot open vault "${this.path}": it is not the copy this machine last saw (its changes differ ` +
            `from change ${mark.records} of generation ${mark.generation} on: an older copy was put back and written to)`,
          { hint },
        );
      }
      if (mark.generation === position.generation && mark.records === position.records) return;
    }
    await this.#markGuard();
  }

  async #markGuard(): Promise<void> {
    const dir = this.#guardDir;
    if (dir === undefined) return;
    const position = this.#position;
    const mark = await readGuardMark(dir, position.id).catch(() => undefined);
    if (mark !== undefined && !isBehind(mark, position)) return;
    try {
      await writeGuardMark(dir, position.id, this.path, {
        generation: position.generation,
        records: position.records,
        chain: toBase64Url(position.chain),
      });
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) throw error;
      throw new VaultError(
        "vault-guard-unwritable",
        this.path,
        `Cannot record the position of vault "${this.path}" in "${dir}": ${describe(error)}`,
        { cause: error, hint: "Make that folder writable, or choose another with --vault-guard-dir" },
      );
    }
  }
}

// --- file access ------------------------------------------------------------------------------

/**
 * Opens the vault file, takes its exclusive lock (waiting up to `timeoutMs` for another holder),
 * checks that the path still names the file locked (a compaction replaces it), runs `work`, and
 * closes the file, which releases the lock.
 */
async function withLockedFile<R>(
  path: string,
  timeoutMs: number,
  work: (file: Deno.FsFile, ino: number | null) => Promise<R>,
): Promise<R> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new VaultError("vault-missing", path, `Cannot open vault "${path}": the file does not exist`, {
          hint: "Create the software key first with `provisioning key init`, or check the path",
        });
      }
      throw unreadable(path, error);
    }
    try {
      await lockWithin(file, path, deadline, timeoutMs);
      const locked = (await file.stat()).ino;
      const current = await inodeOf(path).catch(() => undefined);
      if (current !== undefined && current !== locked) continue; // replaced meanwhile: lock the new one
      return await work(file, locked);
    } finally {
      file.close();
    }
  }
}

async function lockWithin(
  file: Deno.FsFile,
  path: string,
  deadline: number,
  timeoutMs: number,
): Promise<void> {
  let pause = 2;
  while (!(await file.tryLock(true))) {
    if (Date.now() >= deadline) {
      throw new VaultError(
        "vault-locked",
        path,
        `Cannot use vault "${path}": another process has held its lock for more than ${
          Math.round(timeoutMs / 1000)
        } s`,
        {
          hint: "Processes share a vault one change at a time, each in milliseconds; a lock held this long " +
            `means the holder is stuck (stopped with Ctrl+Z, or on a hung disk). Find it with \`fuser ${path}\`, ` +
            "end it, and run again",
        },
      );
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 50);
  }
}

async function inodeOf(path: string): Promise<number | null> {
  return (await Deno.stat(path)).ino;
}

async function readWhole(path: string, file: Deno.FsFile): Promise<string> {
  const size = (await file.stat()).size;
  if (size > maxFileSize) {
    throw corrupt(path, `the file is ${size} bytes, too large for a vault`, "Check the path");
  }
  return await readFrom(file, 0, size);
}

async function readFrom(file: Deno.FsFile, offset: number, length: number): Promise<string> {
  const bytes = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let filled = 0;
  while (filled < length) {
    const n = await file.read(bytes.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  // Records are ASCII; a torn tail may not be, and is cut by its offset, not by this text.
  return new TextDecoder().decode(bytes.subarray(0, filled));
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/** Cuts what a killed writer left after the last whole record. */
async function cutTornTail(path: string, file: Deno.FsFile, offset: number): Promise<void> {
  try {
    await file.truncate(offset);
    await file.syncData();
  } catch (error) {
    throw writeFailed(path, error);
  }
}

/** A new file's text: header and one snapshot record, and the position after it. */
async function snapshotFile(
  keys: VaultKeys,
  id: string,
  generation: number,
  stateJson: string,
): Promise<{ text: string; position: Omit<Position, "ino"> }> {
  const header = await encodeHeader(keys, {
    id,
    generation,
    iterations: keys.iterations,
    salt: toBase64Url(keys.salt),
  });
  const start = chainStart(header);
  const record = await sealRecord(keys, start, 1, `{"s":${stateJson}}`);
  const text = `${header}\n${record}\n`;
  return {
    text,
    position: {
      id,
      generation,
      records: 1,
      chain: chainNext(start, record),
      offset: text.length,
      snapshotBytes: text.length,
    },
  };
}

function tempPrefix(path: string): string {
  return `.${basename(path)}.`;
}

/**
 * Writes a whole vault file atomically (core/atomic_file.ts). With `exclusive` (creating a vault)
 * the folder is made if needed and the file is hard-linked into place, so a vault that appeared
 * meanwhile is not replaced.
 */
async function writeVaultFile(
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
    throw writeFailed(path, error);
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

/**
 * Removes the temporary files of a compaction a killed process left beside the vault. Called
 * holding the vault's lock, so none of them can belong to a compaction at work.
 */
async function removeTempFiles(path: string): Promise<void> {
  const directory = dirname(path);
  const prefix = tempPrefix(path);
  try {
    for await (const entry of Deno.readDir(directory)) {
      if (
        entry.isFile && entry.name.startsWith(prefix) &&
        /^[0-9a-f]{12}\.tmp$/.test(entry.name.slice(prefix.length))
      ) {
        await Deno.remove(join(directory, entry.name)).catch(() => undefined);
      }
    }
  } catch {
    // Not allowed to list the folder: nothing to clean.
  }
}

// --- errors -----------------------------------------------------------------------------------

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** True for the errors of a full disk or an exhausted quota. */
function isNoSpace(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT" || code === "EFBIG";
}

function writeFailed(path: string, error: unknown): Error {
  if (error instanceof VaultError || error instanceof Deno.errors.NotCapable) return error;
  if (isNoSpace(error)) {
    const folder = dirname(resolve(path));
    return new VaultError(
      "vault-disk-full",
      path,
      `Cannot write vault "${path}": no space left on ${folder} (${describe(error)})`,
      {
        cause: error,
        hint:
          `Free space on the disk that holds ${folder} (or move the vault to another disk and point --vault ` +
          "at it), then run again: the vault still holds every change made before this one",
      },
    );
  }
  return new VaultError("vault-write-failed", path, `Cannot write vault "${path}": ${describe(error)}`, {
    cause: error,
    hint:
      "Check the permissions of the file and its folder; the vault still holds every change made before this one",
  });
}

function unreadable(path: string, error: unknown): Error {
  // A missing permission is reported by the top level, which names the permission set.
  if (error instanceof Deno.errors.NotCapable || error instanceof VaultError) return error;
  const reason = error instanceof Error ? error.name : "unknown error";
  return new VaultError(
    "vault-unreadable",
    path,
    `Cannot open vault "${path}": it cannot be read (${reason})`,
    {
      cause: error,
      hint: "Check that the path names a file you may read and write (a vault takes a lock and appends)",
    },
  );
}

function corrupt(path: string, state: string, hint = "Restore the vault file from a backup"): VaultError {
  return new VaultError("vault-corrupt", path, `Cannot open vault "${path}": ${state}`, { hint });
}

function wrongPassphrase(path: string): VaultError {
  return new VaultError(
    "vault-passphrase-wrong",
    path,
    `Cannot open vault "${path}": the passphrase is wrong or the file was altered`,
    {
      hint: `Check the passphrase (or ${vaultPassphraseEnv}, which is used instead of asking when it is set)`,
    },
  );
}

function checkIterations(iterations: number): number {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > maxKdfIterations) {
    throw new RangeError(
      `Cannot use ${iterations} PBKDF2 iterations: expected an integer from 1 to ${maxKdfIterations}`,
    );
  }
  return iterations;
}

/** The `version` of a first line that is JSON, for "written by a newer program". */
function readVersion(line: string): number | undefined {
  try {
    const version = (JSON.parse(line) as { version?: unknown }).version;
    return typeof version === "number" ? version : undefined;
  } catch {
    return undefined;
  }
}

// --- states and changes -----------------------------------------------------------------------

/** `"kdf.salt" is invalid: …`: the first issue's path and message, never its input. */
function describeIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return "(unknown) is invalid";
  const field = issue.path.map(String).join(".") || "(root)";
  return `"${field}" is invalid: ${issue.message}`;
}

const incompatible =
  "It was written by an incompatible version of provisioning; restore it from a backup or open it with that version";

function parseRecord<T, C>(path: string, plain: string): RecordJson<T, C> {
  let json: unknown;
  try {
    json = JSON.parse(plain);
  } catch {
    throw corrupt(path, "a decrypted record is not JSON");
  }
  if (typeof json !== "object" || json === null || !("s" in json || "c" in json)) {
    throw corrupt(path, "a decrypted record is neither a state nor a change", incompatible);
  }
  return json as RecordJson<T, C>;
}

function parseState<T>(path: string, schema: z.ZodType<T>, input: unknown): T {
  let json = input;
  if (typeof input === "string") {
    try {
      json = JSON.parse(input);
    } catch {
      throw corrupt(path, "the decrypted content is not JSON");
    }
  }
  let parsed: z.ZodSafeParseResult<T>;
  try {
    parsed = schema.safeParse(json);
  } catch {
    // A refinement that throws (rather than reporting an issue); its message may quote the value.
    throw corrupt(path, "the decrypted state does not have the expected shape", incompatible);
  }
  if (!parsed.success) {
    throw corrupt(
      path,
      `the decrypted state does not have the expected shape: field ${describeIssue(parsed.error)}`,
      incompatible,
    );
  }
  return parsed.data;
}

function parseChange<C>(path: string, schema: z.ZodType<C>, input: unknown): C {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw corrupt(
      path,
      `a change record does not have the expected shape: field ${describeIssue(parsed.error)}`,
      incompatible,
    );
  }
  return parsed.data;
}

/** A state to be written, as a re-open would read it back, and the JSON it is stored as. */
function prepareState<T>(path: string, schema: z.ZodType<T>, state: T): { state: T; json: string } {
  // Through JSON first, so the state kept in memory is exactly what a re-open would read.
  const parsed = schema.safeParse(JSON.parse(JSON.stringify(state)));
  if (!parsed.success) {
    throw new TypeError(
      `Cannot write vault "${path}": the new state is invalid: field ${describeIssue(parsed.error)}`,
    );
  }
  return { state: parsed.data, json: JSON.stringify(parsed.data) };
}

function prepareChange<C>(path: string, schema: z.ZodType<C>, change: C): C {
  const parsed = schema.safeParse(JSON.parse(JSON.stringify(change)));
  if (!parsed.success) {
    throw new TypeError(
      `Cannot write vault "${path}": the change is invalid: field ${describeIssue(parsed.error)}`,
    );
  }
  return parsed.data;
}
