/**
 * The journal of a bulk run: one JSON line per state change of a user, written and fsync'd before
 * the next network call of that user, so that `kill -9` or a power cut at any instant loses
 * nothing. Re-running the same command reopens the journal, resumes, and never repeats a
 * registration whose outcome it cannot see: a user left in `created` or `registered` is
 * reconciled against the provider first (core/jobs/engine.ts).
 *
 * Format (`.provisioning/runs/<run id>.jsonl`, 0600): a header line
 * `{"t":"run","v":1,"runId":…,"fingerprint":…,"createdAt":…}`, then per attempt
 * `{"t":"attempt","at":…}`, then per transition `{"t":"user","k":<key>,"s":<state>,…}`. A torn
 * last line (the process died mid-write) is cut off on reopening; a bad line elsewhere is a clear
 * error naming the line, never silently skipped.
 *
 * Concurrent appends are committed together: one write and one fsync for everything that queued
 * up while the previous fsync ran (group commit), so many workers do not pay one fsync each.
 * Records a resume can do without are appended `durable: false` and ride the next fsync.
 *
 * No secret goes into a journal: users are keyed by reference, credentials by id.
 *
 * @example
 * ```ts
 * import { openJournal } from "./journal.ts";
 * const dir = await Deno.makeTempDir();
 * await using journal = await openJournal(`${dir}/run.jsonl`, { runId: "r1", fingerprint: "f" });
 * await journal.append({ k: "alice@contoso.com", s: "resolved", row: 2, userId: "5f0c", upn: "alice@contoso.com" });
 * await journal.close();
 * await using again = await openJournal(`${dir}/run.jsonl`, { runId: "r1", fingerprint: "f" });
 * console.assert(again.resumed && again.get("alice@contoso.com")?.s === "resolved");
 * await again.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { z } from "zod";
import { concatBytes } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import { describeIoError, isNoSpace } from "./disk_errors.ts";
import { maxRow, SeenUsers } from "./sources/seen_users.ts";

const userStateSchema = z.enum([
  "queued",
  "resolved",
  "options",
  "created",
  "registered",
  "verified",
  "skipped",
  "failed",
  "revoked",
  // A batch of prefetched challenges (core/jobs/batch/): the challenge is stored, a key is being
  // written, the key holds the credential (its registration stored) — then registered as above.
  "fetched",
  "writing",
  "written",
]);

/** One user's transition as journaled. Fields accumulate: the latest record carries what is known. */
export const userRecordSchema = z.object({
  /** The user's key: the source's reference, lowercased. */
  k: z.string().min(1),
  s: userStateSchema,
  /** The source row. */
  row: z.number().int().nonnegative().optional(),
  /** The reference as the source wrote it. */
  ref: z.string().optional(),
  userId: z.string().optional(),
  upn: z.string().optional(),
  /** The passkeys the user had before this run created one (ids): reconciliation ignores them. */
  existing: z.array(z.string()).optional(),
  credentialId: z.string().optional(),
  /** The provider's id of the passkey; "" once a new attempt starts (records merge field by field). */
  methodId: z.string().optional(),
  aaguid: z.string().optional(),
  displayName: z.string().optional(),
  /** When the credential was created (ISO), for providers that do not list ids. */
  createdAt: z.string().optional(),
  /** Reason code for `skipped` and `failed`. */
  code: z.string().optional(),
  message: z.string().optional(),
  /** True when the passkey was found by listing after a lost answer or an interrupted attempt. */
  reconciled: z.boolean().optional(),
  /** With --replace-existing: the older passkeys deleted once the new one was verified. */
  replaced: z.array(z.string()).optional(),
  /** Security keys: where the key was, its serial (when its attestation says), its PIN state. */
  device: z.string().optional(),
  serial: z.string().optional(),
  pinSet: z.boolean().optional(),
  pinMustChange: z.boolean().optional(),
  /**
   * Batches: the provider's creation options fetched ahead (public data: a challenge, the rp, the
   * user handle), the origin the ceremony runs for, and when the provider stops accepting it.
   */
  challenge: z.object({ options: z.unknown(), origin: z.string(), expiresAt: z.string().optional() })
    .optional(),
  /** Batches: the key's RegistrationResponseJSON (public key and attestation; no secret). */
  registration: z.unknown().optional(),
  /**
   * The browser path: the id of the one-time sign-in pass the flow created (never the pass
   * itself); "" once it is deleted. A pass left by a crash is deleted at the user's next attempt.
   */
  passId: z.string().optional(),
  /** Batches: when the registration was sent to the provider ("" once a new challenge voids it). */
  sentAt: z.string().optional(),
  /** ISO time of the transition. */
  at: z.string().optional(),
});

/** One user's journaled state. */
export type UserRecord = z.infer<typeof userRecordSchema>;

const headerSchema = z.object({
  t: z.literal("run"),
  v: z.literal(1),
  runId: z.string(),
  fingerprint: z.string(),
  createdAt: z.string(),
  /** What the run's later steps need to know of its start (a batch: provider, tenant, rp ids). */
  meta: z.record(z.string(), z.string()).optional(),
});

const lineSchema = z.discriminatedUnion("t", [
  headerSchema,
  z.object({ t: z.literal("attempt"), at: z.string() }),
  userRecordSchema.extend({ t: z.literal("user") }),
]);

/** What identifies a run: the same command gives the same id and fingerprint. */
export interface JournalIdentity {
  readonly runId: string;
  /** A digest of what the run is (source, provider, tenant, authenticator, options). */
  readonly fingerprint: string;
}

/** An open journal; see the module documentation. */
export interface Journal extends AsyncDisposable {
  readonly path: string;
  readonly runId: string;
  /** True when an earlier attempt of this run left this journal. */
  readonly resumed: boolean;
  /** Attempts so far, this one included. */
  readonly attempt: number;
  /** The header's `meta`, as the run's first attempt wrote it. */
  readonly meta: Readonly<Record<string, string>>;
  /**
   * The latest state of a user (by key), merged over all their records. With `keepFinished: false`,
   * only for users not finished (see {@link Journal.isFinished}).
   */
  get(key: string): UserRecord | undefined;
  /**
   * Every user's latest state, in the order they were first journaled. With `keepFinished: false`,
   * only the users not finished.
   */
  users(): IterableIterator<UserRecord>;
  /** True when the user's latest state is `verified` or `skipped`. */
  isFinished(key: string): boolean;
  /**
   * The latest record of each user that was finished when the journal was opened (the line that
   * finished them, once per user even when a user was revoked and finished again), in file order.
   * With `keepFinished: false` they are read again from the file, never all held at once.
   */
  finishedAtOpen(): AsyncIterable<UserRecord>;
  /**
   * Appends a transition; resolves once it is on disk (fsync'd). With `durable: false`, resolves at
   * once and the line goes to disk with the next durable append (or at close), in order: for a
   * record a resume can do without (it recomputes it, or a later record of the same user follows
   * before any call a crash could leave half done), so that it costs no fsync of its own.
   */
  append(record: UserRecord, options?: { durable?: boolean }): Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link openJournal}. */
export interface OpenJournalOptions extends JournalIdentity {
  /** @default () => new Date() */
  now?: () => Date;
  /** Written into the header of a new journal; a resumed one keeps its own. @default {} */
  meta?: Readonly<Record<string, string>>;
  /**
   * Hold finished users' records in memory. `false` (bulk runs): only unfinished users are held,
   * finished ones are a 12-byte fingerprint each (a line number; see sources/seen_users.ts for
   * the one-in-3·10⁷ chance at a million users that two keys share one), and their rows are
   * streamed from the file: a journal of a million users resumes in flat memory. @default true
   */
  keepFinished?: boolean;
}

/** The states that finish a user: the engine does not touch them again in this run. */
const finishedStates: ReadonlySet<string> = new Set(["verified", "skipped"]);

/** The value a finished-users table holds for a user finished once and then reopened (revoked). */
const reopened = maxRow;

/**
 * Opens (creating it, 0600, and its folder) or reopens the journal at `path`.
 *
 * @throws {ProvisioningError} `journal-mismatch` when the file belongs to another run,
 * `journal-corrupt` when a line other than a torn last one cannot be read.
 */
export async function openJournal(path: string, options: OpenJournalOptions): Promise<Journal> {
  const now = options.now ?? (() => new Date());
  const folder = path.replace(/[\\/][^\\/]*$/, "");
  if (folder !== path) await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
  const state = new Map<string, UserRecord>();
  let attempts = 0;
  let meta: Readonly<Record<string, string>> = options.meta ?? {};
  const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  // One process per run: a second one (a cron job overlapping, a second terminal) would pass the
  // skip checks alongside the first. The OS drops the lock when the process dies, kill -9 included.
  // Taken before reading, so nothing another process appended can be cut off below.
  if (!(await file.tryLock(true))) {
    file.close();
    throw new ProvisioningError(
      "run-in-progress",
      `Cannot start run ${options.runId}: another process has its journal ${path} open`,
      { hint: "Wait for that run to finish (or stop it), then run the same command again", exitCode: 2 },
    );
  }
  // Sized once from the file (a finished user's lines take 400 bytes or more): no doubling, which
  // would hold the old and the new table at once, and at most 4% of the file's size.
  const finished = options.keepFinished === false
    ? new SeenUsers({ expectedUsers: Math.ceil((await file.stat()).size / 400) })
    : undefined;
  try {
    const replayed = await replay(file, path, options, state, finished);
    attempts = replayed.attempts;
    if (replayed.header) meta = replayed.header.meta ?? {};
    const validLength = replayed.bytes;
    await file.truncate(validLength);
    await file.seek(validLength, Deno.SeekMode.Start);
    const writer = new GroupCommit(file, path, validLength);
    if (validLength === 0) {
      // A new file: its directory entry must survive a power cut too, or a re-run would not find
      // the journal and could repeat what it records.
      if (folder !== path) await syncFolder(folder);
      await writer.write(
        JSON.stringify({
          t: "run",
          v: 1,
          runId: options.runId,
          fingerprint: options.fingerprint,
          createdAt: now().toISOString(),
          ...(options.meta ? { meta: options.meta } : {}),
        }),
      );
    }
    await writer.write(JSON.stringify({ t: "attempt", at: now().toISOString() }));
    attempts++;
    // Line numbers of what this process appends (the header, when new, and the attempt so far).
    let lines = replayed.lines + (validLength === 0 ? 2 : 1);
    return {
      path,
      runId: options.runId,
      resumed: validLength > 0,
      attempt: attempts,
      meta,
      get: (key) => state.get(key),
      users: () => state.values(),
      isFinished: (key) => {
        if (!finished) return finishedStates.has(state.get(key)?.s ?? "");
        const line = finished.get(key);
        return line !== undefined && line !== reopened;
      },
      finishedAtOpen: () =>
        finished ? readFinished(path, validLength, finished) : (async function* () {
          for (const record of [...state.values()]) if (finishedStates.has(record.s)) yield record;
        })(),
      async append(record, appendOptions) {
        const stamped = { ...record, at: record.at ?? now().toISOString() };
        const line = ++lines;
        if (finished) {
          track(state, finished, record.k, stamped, line);
        } else {
          state.set(record.k, { ...state.get(record.k), ...stamped });
        }
        await writer.write(JSON.stringify({ t: "user", ...stamped }), appendOptions?.durable ?? true);
      },
      close: () => writer.close(),
      [Symbol.asyncDispose]: () => writer.close(),
    };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * Reads a journal without changing it: its identity and every user's latest state. For commands
 * that look back at a run (`revoke --run ID`) before reopening it with {@link openJournal}.
 *
 * @throws {ProvisioningError} `journal-not-found`, `journal-corrupt`.
 */
export async function readJournal(
  path: string,
): Promise<{ identity: JournalIdentity; meta: Record<string, string>; users: Map<string, UserRecord> }> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new ProvisioningError(
      "journal-not-found",
      `Cannot find the journal of that run: ${path} does not exist`,
      {
        hint: "Give the run id a provision run printed, and the same --journal-dir",
        exitCode: 2,
      },
    );
  }
  using _file = file;
  const users = new Map<string, UserRecord>();
  const { header } = await replay(file, path, undefined, users);
  if (!header) {
    throw new ProvisioningError("journal-corrupt", `Cannot read journal ${path}: it has no header`, {
      hint: "Give the journal of a provision run",
    });
  }
  return {
    identity: { runId: header.runId, fingerprint: header.fingerprint },
    meta: header.meta ?? {},
    users,
  };
}

/** What {@link replay} found in a journal. */
interface Replayed {
  /** Length in bytes of the valid part (a torn last line is not part of it). */
  readonly bytes: number;
  readonly attempts: number;
  readonly header: z.infer<typeof headerSchema> | undefined;
  /** Lines in the valid part. */
  readonly lines: number;
}

/**
 * Reads a journal line by line into `state`, streamed: a journal of a million users (hundreds of
 * MB) is never one string. The first line must be the header of the run `identity` names (any
 * run's when undefined). A torn last line (the process died while writing it) ends the valid part;
 * an unreadable line with anything after it is corruption.
 */
async function replay(
  file: Deno.FsFile,
  path: string,
  identity: JournalIdentity | undefined,
  state: Map<string, UserRecord>,
  finished?: SeenUsers,
): Promise<Replayed> {
  const decoder = new TextDecoder();
  let bytes = 0;
  let lineNumber = 0;
  let attempts = 0;
  let header: z.infer<typeof headerSchema> | undefined;
  let bad: { lineNumber: number; error: unknown } | undefined;
  let lines = 0;
  const corrupt = (at: { lineNumber: number; error: unknown }) =>
    new ProvisioningError(
      "journal-corrupt",
      `Cannot resume from journal ${path}: line ${at.lineNumber} cannot be read (${
        at.error instanceof Error ? at.error.message.split("\n")[0] : String(at.error)
      })`,
      { hint: "Move the file away to start this run over, or restore it from a backup", cause: at.error },
    );
  const handle = (lineBytes: Uint8Array) => {
    lineNumber++;
    if (bad) throw corrupt(bad); // the unreadable line was not the last one
    let parsed: z.infer<typeof lineSchema>;
    try {
      parsed = lineSchema.parse(JSON.parse(decoder.decode(lineBytes)));
    } catch (error) {
      bad = { lineNumber, error };
      return;
    }
    if (lineNumber === 1) {
      if (parsed.t !== "run") {
        throw new ProvisioningError(
          "journal-corrupt",
          `Cannot resume from journal ${path}: it has no header`,
          {
            hint: "Move the file away to start this run over",
          },
        );
      }
      if (identity && (parsed.runId !== identity.runId || parsed.fingerprint !== identity.fingerprint)) {
        throw new ProvisioningError(
          "journal-mismatch",
          `Cannot resume from journal ${path}: it belongs to run ${parsed.runId}, not to this one`,
          { hint: "Move the file away, or use another --journal-dir" },
        );
      }
      header = parsed;
    } else if (parsed.t === "attempt") {
      attempts++;
    } else if (parsed.t === "user") {
      const { t: _t, ...record } = parsed;
      if (finished) track(state, finished, record.k, record, lineNumber);
      else state.set(record.k, { ...state.get(record.k), ...record });
    }
    bytes += lineBytes.length + 1;
    lines = lineNumber;
  };

  for await (const line of linesOf(file, Infinity, () => bad && corrupt(bad))) handle(line);
  // A torn last line was never handed out, and `bad` is an unreadable last one: both cut off.
  return { bytes, attempts, header, lines };
}

/**
 * The complete lines of `file` from its start within its first `limit` bytes (the line feed not
 * included); a last line without its line feed is not one. `beforeMore` may throw to stop when
 * more bytes follow a line the caller found bad.
 */
async function* linesOf(
  file: Deno.FsFile,
  limit: number,
  beforeMore: () => Error | undefined = () => undefined,
): AsyncGenerator<Uint8Array> {
  await file.seek(0, Deno.SeekMode.Start);
  const buffer = new Uint8Array(1 << 16);
  let carry: Uint8Array[] = [];
  let offset = 0;
  while (offset < limit) {
    const n = await file.read(buffer);
    if (n === null) break;
    const end = Math.min(n, limit - offset);
    offset += n;
    let start = 0;
    for (let i = 0; i < end; i++) {
      if (buffer[i] !== 10) continue;
      const piece = buffer.subarray(start, i);
      yield carry.length === 0 ? piece : concatBytes(...carry, piece);
      carry = [];
      start = i + 1;
    }
    if (start < end) {
      const stop = beforeMore();
      if (stop) throw stop;
      carry.push(buffer.slice(start, end));
    }
  }
}

/**
 * Records a transition in the compact state: a finishing one leaves only the line number of the
 * user's latest outcome; any other one is merged into the user's record (started afresh when the
 * user had been finished and is now reopened, e.g. revoked).
 */
function track(
  state: Map<string, UserRecord>,
  finished: SeenUsers,
  key: string,
  record: UserRecord,
  line: number,
): void {
  if (finishedStates.has(record.s)) {
    finished.put(key, line);
    state.delete(key);
    return;
  }
  const was = finished.get(key);
  if (was !== undefined && was !== reopened) finished.put(key, reopened);
  state.set(key, { ...state.get(key), ...record });
}

/** The records of the users finished within the first `length` bytes, from the file. */
async function* readFinished(path: string, length: number, finished: SeenUsers): AsyncGenerator<UserRecord> {
  using file = await Deno.open(path, { read: true });
  const decoder = new TextDecoder();
  let lineNumber = 0;
  for await (const bytes of linesOf(file, length)) {
    lineNumber++;
    if (lineNumber === 1) continue;
    // Checked line by line when the journal was opened: the same bytes, read again.
    const parsed = JSON.parse(decoder.decode(bytes)) as z.infer<typeof lineSchema>;
    if (parsed.t !== "user" || !finishedStates.has(parsed.s)) continue;
    if (finished.get(parsed.k) !== lineNumber) continue; // finished again later, or reopened
    const { t: _t, ...record } = parsed;
    yield record;
  }
}

/** fsync of a folder (its entries), where the platform allows it; best effort elsewhere. */
async function syncFolder(folder: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  try {
    using dir = await Deno.open(folder, { read: true });
    await dir.sync();
  } catch {
    // Some file systems refuse fsync on a folder; the file itself is still synced.
  }
}

/**
 * Appends lines; concurrent writes share one write and one fsync. After a write or fsync fails (a
 * full disk), every pending and later write is refused at once with the same error: appending after
 * a partial line would corrupt the journal in its middle, and nothing may wait for a flush that will
 * never come.
 */
class GroupCommit {
  readonly #file: Deno.FsFile;
  readonly #path: string;
  #pending: { line: string; durable: boolean; resolve: () => void; reject: (error: unknown) => void }[] = [];
  #flushing: Promise<void> | undefined;
  #closed = false;
  #failed: ProvisioningError | undefined;

  /** Bytes of whole lines in the file: a failed write is cut back to this. */
  #length: number;

  constructor(file: Deno.FsFile, path: string, length: number) {
    this.#file = file;
    this.#path = path;
    this.#length = length;
  }

  /** Queues a line; durable: resolves once it is fsync'd, else at once (it rides the next flush). */
  write(line: string, durable = true): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closed) {
      return Promise.reject(new Error(`Cannot write to the journal ${this.#path}: it is closed`));
    }
    if (!durable) {
      // A failure of the flush that carries it is reported to that flush's durable writers.
      this.#pending.push({ line, durable, resolve: () => {}, reject: () => {} });
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.#pending.push({ line, durable, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  async #flush(final = false): Promise<void> {
    // Never settles synchronously (so `#flushing` is never left holding a settled flush), and
    // every append of this turn of the event loop joins the first batch. Lines that need no fsync
    // of their own wait for one that does (or for the last flush, at close).
    await Promise.resolve();
    while (this.#pending.length > 0 && (final || this.#pending.some((p) => p.durable))) {
      const batch = this.#pending;
      this.#pending = [];
      if (this.#failed) {
        for (const p of batch) p.reject(this.#failed);
        continue;
      }
      try {
        const data = new TextEncoder().encode(batch.map((p) => `${p.line}\n`).join(""));
        let written = 0;
        while (written < data.length) written += await this.#file.write(data.subarray(written));
        await this.#file.sync();
        this.#length += data.length;
        for (const p of batch) p.resolve();
      } catch (error) {
        this.#failed = journalWriteError(this.#path, error);
        // No torn line is left for the next attempt to cut (cutting frees space: it works when full).
        await this.#file.truncate(this.#length).catch(() => {});
        for (const p of batch) p.reject(this.#failed);
      }
    }
    this.#flushing = undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#flushing) await this.#flushing.catch(() => {});
    // Lines that waited for a durable append that never came.
    if (this.#pending.length > 0 && !this.#failed) await this.#flush(true).catch(() => {});
    this.#file.close();
  }
}

/** The reason code of a journal that cannot be written: the run stops at once (never a user's failure). */
export const journalWriteFailedCode = "journal-write-failed";

/** A failed journal write as the admin must read it: the path, the cause, what to do. */
function journalWriteError(path: string, error: unknown): ProvisioningError {
  const cause = describeIoError(error);
  return new ProvisioningError(
    journalWriteFailedCode,
    `Cannot write the run's journal ${path}: ${cause}`,
    {
      cause: error,
      hint: `${
        isNoSpace(error) ? "Free space on the disk that holds it" : "Fix the journal's folder"
      }, then run the same command again to resume: users in flight are reconciled, none is created twice`,
    },
  );
}
