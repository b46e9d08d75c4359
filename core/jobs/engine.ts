/**
 * The bulk engine: every user of a source through the API path, `concurrency` at a time, each
 * transition journaled before the next network call, so that a run can be stopped (Ctrl+C,
 * `kill -9`, a power cut) and re-run to provision every user exactly once.
 *
 * One user: `queued` → `resolved` (the provider knows them) → `options` (a challenge) →
 * `created` (the authenticator made the credential, journaled with the ids of the passkeys the
 * user had before) → `registered` (the provider accepted it) → `verified` (confirmed: the POST's
 * answer, or a listing after a lost answer, names the new method; journaled with the result). Users who already hold a passkey matching the run's policy (the authenticator's AAGUID,
 * or the run's display name) are `skipped` unless `force`. Transient failures (throttling, a
 * server error, a lost connection, a lost answer) are retried with backoff up to `maxAttempts`;
 * then, and for every other failure, the user is `failed` with the provider's reason code.
 *
 * Resuming: users an earlier attempt finished are not touched (their rows are written again from
 * the journal, so the output files list each user once); a user left in `created` or `registered`
 * is reconciled first by listing their passkeys (a new one with the run's display name, or the
 * journaled method id, means it got through), and only when none is found registered anew.
 *
 * Stopping: `stop` (the first Ctrl+C) lets in-flight users finish and takes no more; `abort`
 * cancels in-flight calls too, leaving their journal state for the next attempt.
 *
 * Across processes: with `userLocks`, a user is taken only under their lock (per tenant and object
 * id, held from before the skip check to the user's end), so two overlapping runs never both
 * register one user; the second waits and then skips. See docs/exactly-once.md.
 *
 * Failures of the run, not of a user: a journal, lock or output file that cannot be written stops
 * the run at once and is thrown (nobody whose outcome is journaled becomes a failure); a provider
 * that fails the same transient way for `haltAfterUnavailable` users in a row, with no success in
 * between, halts it like the other run-wide reasons.
 *
 * The engine formats no text: it reports {@link JobEvent}s and returns a {@link RunSummary}.
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";
import { redactText } from "../log.ts";
import type {
  Authenticator,
  AuthenticatorStation,
  BrowserRegistrationOptions,
  DirectoryUser,
  LentDeviceRecord,
  PasskeyMethod,
  ProviderSession,
  RegistrationChallenge,
  UserInteraction,
} from "../plugin.ts";
import type { JobListener, RunCounts, RunSummary, UserOutcome } from "./events.ts";
import { type Journal, journalWriteFailedCode, type UserRecord } from "./journal.ts";
import { outputWriteFailedCode } from "./output/csv_file.ts";
import { describeHolder, userLockFailedCode, type UserLocks } from "./user_locks.ts";
import type { FailuresWriter } from "./output/failures.ts";
import type { PinRecord } from "./output/pin_output.ts";
import type { ResultRow, ResultsWriter } from "./output/results.ts";
import { outcomeUnknownCode, type ProvisionTransition, provisionUser } from "./provision_user.ts";
import { checkWithTestAssertion } from "./test_assertion.ts";
import type { SourceRow, SourceUser } from "./sources/csv.ts";
import { SeenUsers } from "./sources/seen_users.ts";

/** What {@link runBulk} needs. */
export interface BulkRunOptions {
  readonly runId: string;
  /** The users, as rows of a source (CSV file, `--user` list, group). Pulled as workers free up. */
  readonly source: AsyncIterable<SourceRow>;
  readonly session: ProviderSession;
  /** The one authenticator every user's passkey is made on; unused with a `station`. */
  readonly authenticator?: Authenticator;
  /**
   * Security keys, one per user (`--authenticator hid`): each user gets a key the station lends,
   * prepared per policy; the passkey is checked with a test assertion before the key is finished.
   */
  readonly station?: AuthenticatorStation;
  /** Where the PINs a station set go (`--pin-output`); never anywhere else. */
  readonly pinOutput?: { write(record: PinRecord): Promise<void> };
  /** The authenticator's AAGUID (UUID), for the skip policy. */
  readonly authenticatorAaguid?: string;
  readonly interaction: UserInteraction;
  /** The passkeys' name in the directory. */
  readonly displayName: string;
  /** Users in flight at once. @default 4 */
  readonly concurrency?: number;
  /** Resolve and check every user, create nothing. No journal is needed. @default false */
  readonly dryRun?: boolean;
  /** Provision users who already hold a matching passkey too. @default false */
  readonly force?: boolean;
  /**
   * Delete each user's older passkeys once the new one is registered and verified (never before:
   * a failed registration must not leave a user with none). The CLI asks before it sets this.
   * @default false
   */
  readonly replaceExisting?: boolean;
  /**
   * Register through the provider's pages in this browser instead of its API (`--via browser`).
   * The session must offer `registerInBrowser`.
   */
  readonly browser?: Omit<
    BrowserRegistrationOptions,
    "authenticator" | "interaction" | "displayName" | "signal"
  >;
  /** Required unless `dryRun`. */
  readonly journal?: Journal;
  readonly results: ResultsWriter;
  readonly failures: FailuresWriter;
  /** Finish in-flight users and take no more (first Ctrl+C). */
  readonly stop?: AbortSignal;
  /** Cancel in-flight calls as well. */
  readonly abort?: AbortSignal;
  readonly onEvent?: JobListener;
  /** Users the source is expected to hold: for progress, and to size the table of claimed users. */
  readonly total?: number;
  /**
   * One process at a time per user and tenant on this machine (see user_locks.ts): taken before a
   * user's passkeys are listed, held until the user is finished. Without it only this run's own
   * journal keeps users from being started twice.
   */
  readonly userLocks?: UserLocks;
  /** Told (once per holder) when a user is held by another process and this run waits for it. */
  readonly onWaitForUser?: (text: string) => void;
  /**
   * Users in a row whose last attempt failed the same transient way (the provider unreachable, 5xx)
   * with no success in between before the run halts: a provider that is down stops the run instead
   * of failing every user one by one. @default 5
   */
  readonly haltAfterUnavailable?: number;
  /** Attempts per user for transient failures. @default 3 */
  readonly maxAttempts?: number;
  /** First backoff between attempts of one user, ms; doubles. @default 1000 */
  readonly retryDelayMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/** Clock skew allowed between us and the provider when matching a passkey to a registration. */
const reconcileSkewMs = 5 * 60_000;

/** Reason codes the engine itself gives. */
export const engineReasons = {
  /** The user already holds a passkey matching the run's policy. */
  hasPasskey: "has-passkey",
  /** Something that is not a ProvisioningError went wrong (a bug): the message says what. */
  unexpected: "unexpected-error",
} as const;

/**
 * Reasons that would fail every other user the same way (the key's PIN, the admin's rights, a
 * tenant-wide policy): the first one stops the run, like Ctrl+C, instead of filling failures.csv.
 */
export const haltingReasons: ReadonlySet<string> = new Set([
  "pin-not-set",
  "pin-blocked",
  "pin-auth-blocked",
  "pin-invalid",
  "pin-policy-violation",
  "key-store-full",
  "unauthorized",
  "insufficient-privileges",
  "self-service-setup-off",
  "fido2-disabled",
  "attestation-enforced",
  "aaguid-not-allowed",
  "rp-id-not-allowed",
]);

/**
 * Failures of the run, not of a user (its journal, a lock or an output file cannot be written): they stop
 * the run at once and are thrown by {@link runBulk}; what the journal holds is never lost.
 */
const runWideCodes: ReadonlySet<string> = new Set([
  journalWriteFailedCode,
  outputWriteFailedCode,
  userLockFailedCode,
]);

/** The halt code of a provider that failed the same transient way for several users in a row. */
export const providerUnavailableCode = "provider-unavailable";

/** A user left for the next attempt of the run (a Ctrl+C while waiting for another process). */
class LeftForNextAttempt extends Error {}

/** Reasons worth another attempt within the run, besides errors flagged `retryable`. */
const transientCodes = new Set([outcomeUnknownCode, "throttled"]);

/**
 * Runs the users of `options.source`; see the module documentation.
 *
 * @example
 * ```ts ignore
 * const summary = await runBulk({ runId, source: readUsersFromCsv(file), session, authenticator,
 *   interaction, displayName: "Security key", journal, results, failures, concurrency: 8 });
 * ```
 */
export async function runBulk(options: BulkRunOptions): Promise<RunSummary> {
  if (!options.dryRun && options.journal === undefined) {
    throw new TypeError("Cannot run a bulk job: a journal is required unless it is a dry run");
  }
  if (options.authenticator !== undefined && options.station !== undefined) {
    throw new TypeError("Cannot run a bulk job: give an authenticator or a station, not both");
  }
  if (!options.dryRun && options.authenticator === undefined && options.station === undefined) {
    throw new TypeError(
      "Cannot run a bulk job: an authenticator or a station is required unless it is a dry run",
    );
  }
  const now = options.now ?? Date.now;
  const started = now();
  // A listener that throws must not turn a provisioned user into a failed one.
  const emit: JobListener = (event) => {
    try {
      options.onEvent?.(event);
    } catch {
      // Progress output is best effort.
    }
  };
  const counts: RunCounts = { provisioned: 0, reconciled: 0, skipped: 0, dryRun: 0, failed: 0, byReason: {} };
  const journal = options.journal;
  let fromEarlierAttempts = 0;

  // Object ids claimed by a user of this run (seeded from the journal): one person reached by two
  // references (UPN and object id, a mail alias) is provisioned once.
  const claimed = new SeenUsers({ expectedUsers: options.total });
  // Users an earlier attempt finished: their rows again, so each output file lists each user once
  // (streamed from the journal's file: a million finished users are never held at once).
  let alreadyDone = 0;
  if (journal && !options.dryRun) {
    // A few hundred rows in flight at once: the file writes them together, memory stays bounded.
    let writing: Promise<void>[] = [];
    for await (const record of journal.finishedAtOpen()) {
      alreadyDone++;
      if (record.userId && record.row !== undefined) claimed.admit(record.userId, record.row);
      writing.push(options.results.write(resultRowOf(record)));
      if (writing.length >= 256) {
        await Promise.all(writing);
        writing = [];
      }
    }
    await Promise.all(writing);
  }
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? 4));
  emit({
    type: "run-started",
    runId: options.runId,
    resumed: journal?.resumed ?? false,
    alreadyDone,
    ...(options.total === undefined ? {} : { total: options.total }),
    concurrency,
    dryRun: options.dryRun ?? false,
  });

  // Users in a row whose final failure was the same transient one (see haltAfterUnavailable).
  let unavailable: { code: string; users: number } | undefined;
  const finish = (row: number, user: string, outcome: UserOutcome, code?: string, message?: string) => {
    if (outcome !== "failed") unavailable = undefined;
    if (outcome === "provisioned") counts.provisioned++;
    else if (outcome === "reconciled") counts.reconciled++;
    else if (outcome === "skipped") counts.skipped++;
    else if (outcome === "dry-run") counts.dryRun++;
    else {
      counts.failed++;
      if (code) counts.byReason[code] = (counts.byReason[code] ?? 0) + 1;
    }
    emit({
      type: "user-finished",
      row,
      user,
      outcome,
      ...(code === undefined ? {} : { code }),
      ...(message === undefined ? {} : { message }),
    });
  };

  let halted: { code: string; message: string } | undefined;
  const halt = (code: string, message: string) => {
    if (halted) return;
    halted = { code, message };
    emit({ type: "stopping", reason: "halt", code });
  };
  for (const record of journal?.users() ?? []) {
    if (record.userId && record.row !== undefined) claimed.admit(record.userId, record.row);
  }
  const context: UserContext = {
    options,
    journal,
    emit,
    finish,
    now,
    exclusive: mutex(),
    halt,
    successes: () => counts.provisioned + counts.reconciled + counts.skipped + counts.dryRun,
    noteFailure: (failure, message) => {
      const transient = failure !== undefined && failure.retryable && failure.code !== "throttled" &&
        failure.code !== outcomeUnknownCode;
      if (!transient) {
        unavailable = undefined;
        return;
      }
      unavailable = unavailable?.code === failure.code
        ? { code: failure.code, users: unavailable.users + 1 }
        : { code: failure.code, users: 1 };
      const limit = Math.max(1, options.haltAfterUnavailable ?? 5);
      if (unavailable.users >= limit) {
        halt(
          providerUnavailableCode,
          `${unavailable.users} users in a row failed the same way (${failure.code}) after every retry, ` +
            `with no success in between: the provider looks unreachable or down (last: ${message}). ` +
            "Check the network, a proxy, and the provider's service status",
        );
      }
    },
    claim: (userId, row) => {
      const first = claimed.admit(userId, row);
      return first === undefined || first === row ? undefined : first;
    },
  };
  const iterator = options.source[Symbol.asyncIterator]();
  let interrupted = false;
  const onStop = () => {
    interrupted = true;
    emit({ type: "stopping", reason: "interrupt" });
  };
  options.stop?.addEventListener("abort", onStop, { once: true });
  // A worker waiting for the source (stdin a person types into, a slow group listing) stops
  // waiting at Ctrl+C; the row it would have got is left for the next attempt.
  const stopSignals = [options.stop, options.abort].filter((signal): signal is AbortSignal => !!signal);
  const stopSignal = stopSignals.length === 0 ? undefined : AbortSignal.any(stopSignals);
  let abandoned = false;
  // One listener per wait, removed after it: a race against one long-lived "stopped" promise would
  // leave a reaction (holding the row) on it per row, 560 MB for a million rows.
  const nextRow = async (): Promise<IteratorResult<SourceRow> | undefined> => {
    const next = iterator.next();
    if (!stopSignal) return await next;
    let onStop = () => {};
    const stoppedNow = new Promise<undefined>((resolve) => {
      onStop = () => resolve(undefined);
      if (stopSignal.aborted) resolve(undefined);
      else stopSignal.addEventListener("abort", onStop, { once: true });
    });
    try {
      const first = await Promise.race([next, stoppedNow]);
      if (first === undefined) abandoned = true;
      return first;
    } finally {
      stopSignal.removeEventListener("abort", onStop);
    }
  };
  const worker = async () => {
    while (!options.stop?.aborted && !options.abort?.aborted && !halted) {
      const next = await nextRow();
      if (next === undefined || next.done) return;
      // A Ctrl+C (or a halt) while this worker waited for the source: take no more users.
      if (options.stop?.aborted || options.abort?.aborted || halted) return;
      const row = next.value;
      if (!row.ok) {
        await options.failures.write({
          user: row.reference ?? "",
          row: row.row,
          code: row.code,
          message: row.message,
        });
        finish(row.row, row.reference ?? "", "failed", row.code, row.message);
        continue;
      }
      const key = row.user.reference.toLowerCase();
      if (journal?.isFinished(key) && !options.dryRun) {
        fromEarlierAttempts++;
        continue;
      }
      await runUser(context, row.row, row.user);
    }
  };
  // An error that escapes a worker (the source, an output file) stops the others from taking
  // users, lets the ones in flight finish, and is rethrown once the files are synced.
  let escaped: { error: unknown } | undefined;
  const guarded = () =>
    worker().catch((error) => {
      escaped ??= { error };
      halted ??= { code: "run-error", message: error instanceof Error ? error.message : String(error) };
    });
  try {
    await Promise.all(Array.from({ length: concurrency }, guarded));
  } finally {
    options.stop?.removeEventListener("abort", onStop);
    // Ending the source waits for a read in progress: not for one abandoned at Ctrl+C (stdin).
    if (abandoned) iterator.return?.().catch(() => {});
    else await iterator.return?.();
    // An output file that cannot be synced is the run's error, unless an earlier one explains it.
    for (const file of [options.results, options.failures]) {
      try {
        await file.sync();
      } catch (error) {
        escaped ??= { error };
      }
    }
  }
  if (escaped) throw escaped.error;
  if (options.abort?.aborted) interrupted = true;
  const summary: RunSummary = {
    runId: options.runId,
    counts,
    fromEarlierAttempts,
    elapsedMs: now() - started,
    interrupted,
    ...(halted ? { halted } : {}),
    resultsPath: options.results.path,
    failuresPath: options.failures.path,
  };
  emit({ type: "run-finished", summary });
  return summary;
}

interface UserContext {
  readonly options: BulkRunOptions;
  readonly journal: Journal | undefined;
  readonly emit: JobListener;
  readonly finish: (row: number, user: string, outcome: UserOutcome, code?: string, message?: string) => void;
  readonly now: () => number;
  /** Serialises ceremonies on the one authenticator. */
  readonly exclusive: <T>(run: () => Promise<T>) => Promise<T>;
  /** Stops the run after a failure every user would hit. */
  readonly halt: (code: string, message: string) => void;
  /** Users that ended well so far in this attempt. */
  readonly successes: () => number;
  /** Claims an object id for a row; returns the row that claimed it first, if another did. */
  readonly claim: (userId: string, row: number) => number | undefined;
  /** Counts a user's final failure towards halting a run whose provider is down. */
  readonly noteFailure: (failure: ProvisioningError | undefined, message: string) => void;
}

/** One user, with retries of transient failures. */
async function runUser(context: UserContext, row: number, source: SourceUser): Promise<void> {
  const { options, journal, emit } = context;
  const key = source.reference.toLowerCase();
  const ref = source.reference;
  const maxAttempts = Math.max(1, options.maxAttempts ?? 3);
  emit({ type: "user-state", row, user: ref, state: "queued" });
  for (let attempt = 1;; attempt++) {
    try {
      await attemptUser(context, row, ref, key, source.pin);
      return;
    } catch (error) {
      if (options.abort?.aborted) return; // left as journaled, for the next attempt of the run
      if (error instanceof LeftForNextAttempt) return;
      // The journal or an output file cannot be written: the run's failure, never this user's.
      if (error instanceof ProvisioningError && runWideCodes.has(error.code)) throw error;
      const failure = error instanceof ProvisioningError ? error : undefined;
      const code = failure?.code ?? engineReasons.unexpected;
      const message = failure?.message ??
        redactText(
          `Cannot provision ${ref}: unexpected ${
            error instanceof Error ? `${error.name}: ${error.message}` : String(error)
          }`,
        );
      const transient = failure !== undefined && (failure.retryable || transientCodes.has(failure.code));
      if (transient && attempt < maxAttempts) {
        emit({
          type: "user-state",
          row,
          user: ref,
          state: "queued",
          detail: `attempt ${attempt + 1} of ${maxAttempts} after ${code}`,
        });
        await backoff(options, attempt);
        continue;
      }
      const hinted = failure?.hint ? `${message}. ${failure.hint}` : message;
      await journal?.append({ k: key, s: "failed", row, ref, code, message: hinted });
      await options.failures.write({ user: ref, row, code, message: hinted });
      emit({ type: "user-state", row, user: ref, state: "failed", detail: code });
      context.finish(row, ref, "failed", code, hinted);
      // Only while nobody succeeded: after a success, the reason may be this user's alone (a 403
      // for an admin account, a policy that targets some groups).
      if (haltingReasons.has(code) && context.successes() === 0) context.halt(code, hinted);
      context.noteFailure(failure, hinted);
      return;
    }
  }
}

/** One attempt of one user; throws what should fail or be retried. */
async function attemptUser(
  context: UserContext,
  row: number,
  ref: string,
  key: string,
  pin: string | undefined,
): Promise<void> {
  const { options, journal, emit } = context;
  const signal = options.abort;
  const prior = journal?.get(key);
  const record = (fields: Omit<UserRecord, "k" | "row" | "ref">, durable = true) =>
    journal ? journal.append({ k: key, row, ref, ...fields }, { durable }) : Promise.resolve();

  // 1. Who: from the journal when an earlier attempt resolved them; from the reference itself when
  // it is an object id and nothing before the POST needs the sign-in name (the API path: the
  // browser signs the user in by name, a station's PIN output names them); else from the provider.
  let user: DirectoryUser;
  const byId = options.browser || options.station ? undefined : options.session.userFromReference?.(ref);
  if (prior?.userId !== undefined && prior.upn !== undefined) {
    user = { id: prior.userId, userPrincipalName: prior.upn };
  } else if (byId) {
    user = byId;
    const first = context.claim(user.id, row);
    if (first !== undefined) {
      throw new ProvisioningError(
        "duplicate",
        `Cannot provision ${ref} (row ${row}): it is the same user as row ${first}`,
        { hint: "Each user is provisioned once; remove one of the rows" },
      );
    }
    // Nothing journaled: the id is the reference, found again by the next attempt.
  } else {
    user = await options.session.resolveUser(ref, signal);
    const first = context.claim(user.id, row);
    if (first !== undefined) {
      throw new ProvisioningError(
        "duplicate",
        `Cannot provision ${ref} (row ${row}): it is the same user as row ${first} (${user.userPrincipalName})`,
        { hint: "Each user is provisioned once; remove one of the rows" },
      );
    }
    // No fsync of its own: a resume that lost it looks the user up again (docs/exactly-once.md).
    await record({ s: "resolved", userId: user.id, upn: user.userPrincipalName }, false);
  }
  emit({ type: "user-state", row, user: ref, state: "resolved", detail: `id ${user.id}` });

  // No other process on this machine works on this user until this attempt ends.
  const lock = await lockUser(context, row, ref, user);
  try {
    await provisionResolved(context, row, ref, key, user, prior, pin, byId !== undefined && user === byId);
  } finally {
    await lock?.release();
  }
}

/** Takes the user's lock across processes (when the run has locks), saying whom it waits for. */
async function lockUser(context: UserContext, row: number, ref: string, user: DirectoryUser) {
  const { options, emit } = context;
  if (!options.userLocks) return undefined;
  const signals = [options.stop, options.abort].filter((x): x is AbortSignal => !!x);
  const lock = await options.userLocks.acquire({ userId: user.id, user: ref }, {
    ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
    onWait: (holder) => {
      const detail = `waiting: ${describeHolder(holder)} is provisioning this user`;
      emit({ type: "user-state", row, user: ref, state: "resolved", detail });
      options.onWaitForUser?.(`${ref} (row ${row}): ${detail}`);
    },
  });
  // Ctrl+C while waiting: nothing was done for this user; the next attempt takes them.
  if (lock === undefined) throw new LeftForNextAttempt();
  return lock;
}

/** The steps after the user is resolved and locked: reconcile or skip, register, verify. */
async function provisionResolved(
  context: UserContext,
  row: number,
  ref: string,
  key: string,
  user: DirectoryUser,
  prior: UserRecord | undefined,
  pin: string | undefined,
  unresolved: boolean,
): Promise<void> {
  const { options } = context;
  // The API path asks for creation options while the passkeys are listed: one round trip instead
  // of two before the key. The listing still decides (skip, reconcile); only a provider whose
  // creation options create nothing (a challenge that expires unused) is asked early. A dry run
  // asks for none.
  const challenge = options.dryRun || options.browser || options.station ||
      options.session.creationOptionsHaveNoEffect !== true
    ? undefined
    : options.session.creationOptions(user, options.abort);
  // Not left to be an unhandled rejection when unused; provisionUser still sees the failure.
  const settled = challenge?.then(() => undefined, () => undefined);
  try {
    await provisionListed(context, row, ref, key, user, prior, pin, unresolved, challenge);
  } finally {
    // A challenge not used (a skip, a failed listing) is waited for: no request outlives its user.
    await settled;
  }
}

/**
 * The user's sign-in name from creation options (WebAuthn's `user.name`, which Graph documents as
 * "a human-readable identifier for the user account, such as a username or email address":
 * https://learn.microsoft.com/en-us/graph/api/resources/webauthnpublickeycredentialuserentity),
 * for a user addressed by object id without a lookup. Only the journal's `upn` takes it.
 */
function signInNameOf(options: unknown): string | undefined {
  const publicKey = (options as { publicKey?: unknown } | null)?.publicKey ?? options;
  const name = (publicKey as { user?: { name?: unknown } } | null)?.user?.name;
  return typeof name === "string" && name !== "" ? name : undefined;
}

/** {@link provisionResolved} once creation options are on their way. */
async function provisionListed(
  context: UserContext,
  row: number,
  ref: string,
  key: string,
  user: DirectoryUser,
  prior: UserRecord | undefined,
  pin: string | undefined,
  unresolved: boolean,
  challenge: Promise<RegistrationChallenge> | undefined,
): Promise<void> {
  const { options, emit } = context;
  const signal = options.abort;
  const record = (fields: Omit<UserRecord, "k" | "row" | "ref">, durable = true) =>
    context.journal
      ? context.journal.append({ k: key, row, ref, ...fields }, { durable })
      : Promise.resolve();
  // A one-time sign-in pass an interrupted browser attempt left: deleted before anything else.
  if (prior?.passId && options.session.deleteSignInPass) {
    await options.session.deleteSignInPass(user, prior.passId, signal);
    await record({ s: prior.s, passId: "" });
    emit({
      type: "user-state",
      row,
      user: ref,
      state: "resolved",
      detail: "deleted the sign-in pass an interrupted attempt left",
    });
  }

  // 2. What they have: reconcile an interrupted registration, or apply the skip policy.
  const methods = await listPasskeysOf(context, ref, user, unresolved);
  let existing = methods.map((m) => m.id);
  // An earlier attempt got as far as creating a credential (whatever happened next, a failure
  // included): the provider is asked before anything is created again.
  if (
    prior && prior.existing !== undefined && prior.s !== "verified" && prior.s !== "skipped" &&
    prior.s !== "revoked"
  ) {
    existing = prior.existing;
    const known = new Set(existing);
    const since = prior.createdAt ? Date.parse(prior.createdAt) - reconcileSkewMs : -Infinity;
    const found = methods.find((m) => m.id === prior.methodId) ??
      methods.find((m) =>
        !known.has(m.id) && m.displayName === (prior.displayName ?? options.displayName) &&
        (m.createdDateTime === undefined || Date.parse(m.createdDateTime) >= since) &&
        (!options.authenticatorAaguid || !m.aaguid ||
          m.aaguid.toLowerCase() === options.authenticatorAaguid.toLowerCase())
      ) ??
      // The provider confirmed this method id: a listing that lags behind does not undo that.
      (prior.methodId ? { id: prior.methodId } : undefined);
    if (found) {
      await done(context, row, ref, key, user, found, {
        credentialId: prior.credentialId,
        aaguid: found.aaguid ?? prior.aaguid,
        reconciled: true,
        older: existing,
      });
      return;
    }
    emit({
      type: "user-state",
      row,
      user: ref,
      state: "resolved",
      detail: "an earlier attempt's registration did not get through; registering anew",
    });
  }
  const known = new Set(existing);
  const matching = options.force || options.replaceExisting
    ? undefined
    : methods.find((m) => known.has(m.id) && matchesPolicy(options, m));
  if (matching) {
    const message = `${user.userPrincipalName} already has passkey "${matching.displayName ?? matching.id}"${
      matching.aaguid ? ` (AAGUID ${matching.aaguid})` : ""
    }; give --force to add another`;
    if (!options.dryRun) {
      await record({
        s: "skipped",
        userId: user.id,
        upn: user.userPrincipalName,
        code: engineReasons.hasPasskey,
        message,
        methodId: matching.id,
        ...(matching.aaguid ? { aaguid: matching.aaguid } : {}),
        ...(matching.displayName ? { displayName: matching.displayName } : {}),
      });
    }
    await options.results.write({
      user: ref,
      objectId: user.id,
      status: "skipped",
      methodId: matching.id,
      ...(matching.aaguid ? { aaguid: matching.aaguid } : {}),
      ...(matching.displayName ? { displayName: matching.displayName } : {}),
    });
    emit({ type: "user-state", row, user: ref, state: "skipped", detail: engineReasons.hasPasskey });
    context.finish(row, ref, "skipped", engineReasons.hasPasskey, message);
    return;
  }
  if (options.dryRun) {
    await options.results.write({
      user: ref,
      objectId: user.id,
      status: "dry-run",
      displayName: options.displayName,
    });
    context.finish(row, ref, "dry-run");
    return;
  }

  // 3. Register, journaling each transition before the next call. A user addressed by object id
  // gets their sign-in name from the creation options' answer, for the journal (results.csv names
  // users by the source's reference and object id, so nothing before the POST needs it).
  let named = user;
  const namedChallenge = challenge?.then((answer) => {
    const name = unresolved ? signInNameOf(answer.options) : undefined;
    if (name !== undefined) named = { ...user, userPrincipalName: name };
    return answer;
  });
  const onTransition = async (transition: ProvisionTransition) => {
    if (transition.state === "options") {
      // Recomputable (nothing exists yet at the provider or on the key): it rides the `created` fsync.
      await record({ s: "options" }, false);
    } else if (transition.state === "created") {
      await record({
        s: "created",
        ...(named === user ? {} : { userId: named.id, upn: named.userPrincipalName }),
        // Records merge: an empty method id clears one an earlier, revoked attempt left behind.
        methodId: "",
        credentialId: transition.credentialId,
        createdAt: transition.createdAt.toISOString(),
        displayName: transition.displayName,
        existing,
      });
    } else {
      // On the API path `verified` follows with no call in between (unless older passkeys are
      // to be deleted first): the two share one fsync. A crash before it leaves `created`, which
      // a resume reconciles by listing, finding this passkey.
      const verifiedNext = !options.browser && !options.station && !options.replaceExisting;
      await record({
        s: "registered",
        methodId: transition.methodId,
        ...(transition.aaguid ? { aaguid: transition.aaguid } : {}),
        ...(transition.reconciled ? { reconciled: true } : {}),
      }, !verifiedNext);
    }
    emit({ type: "user-state", row, user: ref, state: transition.state });
  };
  let device: LentDeviceRecord | undefined;
  let result: { methodId: string; credentialId: string; aaguid: string | undefined; reconciled: boolean };
  if (options.browser) {
    result = await registerInBrowser(
      context,
      user,
      onTransition,
      (passId) => record({ s: "created", passId }),
    );
  } else if (options.station) {
    emit({ type: "user-state", row, user: ref, state: "options", detail: "waiting for a security key" });
    // Waiting for a key ends at the first Ctrl+C too: no key is in use yet.
    const waitSignal = AbortSignal.any([options.stop, options.abort].filter((x): x is AbortSignal => !!x));
    await using lent = await options.station.next({ reference: ref, ...(pin ? { pin } : {}) }, waitSignal);
    if (lent.pin && lent.pinSet) {
      // Before the passkey exists: a crash from here on never loses the PIN the key now has.
      await options.pinOutput?.write({
        user: user.userPrincipalName,
        pin: lent.pin.reveal(),
        device: lent.authenticator.label,
        pinMustChange: false,
        stage: "prepared",
      });
    }
    const registered = await provisionUser({
      session: options.session,
      user,
      authenticator: lent.authenticator,
      interaction: lent.interaction,
      displayName: options.displayName,
      existingMethodIds: existing,
      onTransition,
      ...(signal ? { signal } : {}),
    });
    await checkWithTestAssertion({
      registration: registered.registration,
      rpId: registered.rpId,
      origin: registered.origin,
      allowedRpIds: options.session.allowedRpIds,
      authenticator: lent.authenticator,
      interaction: lent.interaction,
      signal,
    });
    device = await lent.complete({
      credentialId: registered.credentialId,
      attestationObject: registered.registration.response.attestationObject,
    });
    if (lent.pin && device.pinSet) {
      await options.pinOutput?.write({
        user: user.userPrincipalName,
        pin: lent.pin.reveal(),
        device: device.device,
        aaguid: device.aaguid,
        ...(device.serial ? { serial: device.serial } : {}),
        pinMustChange: device.pinMustChange,
      });
    }
    result = registered;
  } else {
    result = await provisionUser({
      session: options.session,
      user,
      authenticator: options.authenticator!,
      interaction: options.interaction,
      displayName: options.displayName,
      existingMethodIds: existing,
      onTransition,
      exclusive: context.exclusive,
      ...(namedChallenge ? { challenge: namedChallenge } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  // 4. Verified: the provider's answer to the POST (201 with the new method), or the listing that
  // found it after a lost answer, is its confirmation. No second listing: one request fewer per
  // user (4, against 5 before: resolve, list, creation options, POST), and nothing a listing would
  // add (it may even lag behind the POST's answer).
  await done(context, row, ref, key, named, { id: result.methodId }, {
    credentialId: result.credentialId,
    aaguid: result.aaguid,
    reconciled: result.reconciled,
    older: existing,
    ...(device ? { device } : {}),
  });
}

/**
 * The browser path for one user. The page creates the credential and posts it itself, so the
 * journal says `created` before the flow starts: after a crash anywhere in it, the next attempt
 * reconciles by listing (a new passkey with the run's name means it got through).
 */
async function registerInBrowser(
  context: UserContext,
  user: DirectoryUser,
  onTransition: (transition: ProvisionTransition) => Promise<void>,
  journalPass: (passId: string) => Promise<void>,
): Promise<{ methodId: string; credentialId: string; aaguid: string | undefined; reconciled: boolean }> {
  const { options } = context;
  if (!options.session.registerInBrowser || !options.browser) {
    throw new ProvisioningError(
      "browser-path-unavailable",
      "Cannot register through the browser: this provider has no browser flow",
      {
        hint: "Leave out --via browser to use the provider's API",
        exitCode: 2,
      },
    );
  }
  // No credential id yet: the page has not asked for one.
  await onTransition({
    state: "created",
    credentialId: "",
    createdAt: new Date(),
    displayName: options.displayName,
  });
  // The pass's id is journaled before the pass is used; once the flow has deleted it, the id is
  // cleared. A crash in between leaves the id for the user's next attempt to delete the pass.
  let issued = false;
  let registration: { method: PasskeyMethod; credentialId: string };
  try {
    registration = await options.session.registerInBrowser(user, {
      ...options.browser,
      authenticator: options.authenticator!,
      interaction: options.interaction,
      displayName: options.displayName,
      ...(options.abort ? { signal: options.abort } : {}),
      onPassIssued: async (passId) => {
        await journalPass(passId);
        issued = true;
      },
    });
  } catch (error) {
    // The flow deletes its pass whatever happened, and says so when it could not.
    if (issued && !(error instanceof ProvisioningError && error.code === "tap-delete-failed")) {
      await journalPass("");
    }
    throw error;
  }
  if (issued) await journalPass("");
  const { method, credentialId } = registration;
  await onTransition({ state: "registered", methodId: method.id, aaguid: method.aaguid, reconciled: false });
  return { methodId: method.id, credentialId, aaguid: method.aaguid, reconciled: false };
}

/** Journals `verified` and writes the result row. */
async function done(
  context: UserContext,
  row: number,
  ref: string,
  key: string,
  user: DirectoryUser,
  method: PasskeyMethod,
  facts: {
    credentialId: string | undefined;
    aaguid: string | undefined;
    reconciled: boolean;
    device?: LentDeviceRecord;
    note?: string;
    /** The passkeys the user had before this run: deleted first with `replaceExisting`. */
    older?: readonly string[];
  },
): Promise<void> {
  const { options, journal, emit } = context;
  const displayName = method.displayName ?? options.displayName;
  const replaced = options.replaceExisting ? (facts.older ?? []).filter((id) => id !== method.id) : [];
  for (const id of replaced) {
    // Already gone counts as deleted; a resume after a crash here deletes the rest.
    await options.session.deletePasskey(user, id, options.abort);
  }
  const verified: UserRecord = {
    k: key,
    s: "verified",
    row,
    ref,
    userId: user.id,
    upn: user.userPrincipalName,
    methodId: method.id,
    displayName,
    ...(facts.credentialId ? { credentialId: facts.credentialId } : {}),
    ...(facts.aaguid ? { aaguid: facts.aaguid } : {}),
    ...(facts.reconciled ? { reconciled: true } : {}),
    ...(replaced.length > 0 ? { replaced } : {}),
    ...(facts.device
      ? {
        device: facts.device.device,
        ...(facts.device.serial ? { serial: facts.device.serial } : {}),
        pinSet: facts.device.pinSet,
        pinMustChange: facts.device.pinMustChange,
      }
      : {}),
  };
  // Merged before the append: a journal that keeps no finished users forgets the record then.
  const resultRow = resultRowOf({ ...journal?.get(key), ...verified });
  await journal?.append(verified);
  await options.results.write(resultRow);
  emit({
    type: "user-state",
    row,
    user: ref,
    state: "verified",
    ...(facts.note ? { detail: facts.note } : {}),
  });
  context.finish(row, ref, facts.reconciled ? "reconciled" : "provisioned");
}

/** The results.csv row of a finished user, from their journal record (batches use it too). */
export function resultRowOf(record: UserRecord): ResultRow {
  return {
    user: record.ref ?? record.k,
    ...(record.userId ? { objectId: record.userId } : {}),
    status: record.s === "skipped"
      ? "skipped" as const
      : record.reconciled
      ? "reconciled" as const
      : "provisioned" as const,
    ...(record.methodId ? { methodId: record.methodId } : {}),
    ...(record.credentialId && record.s !== "skipped" ? { credentialId: record.credentialId } : {}),
    ...(record.aaguid ? { aaguid: record.aaguid } : {}),
    ...(record.displayName ? { displayName: record.displayName } : {}),
    ...(record.at ? { time: new Date(record.at) } : {}),
    ...(record.serial ? { serial: record.serial } : {}),
    ...(record.pinSet === undefined ? {} : { pinSet: record.pinSet }),
    ...(record.pinMustChange === undefined ? {} : { pinMustChange: record.pinMustChange }),
  };
}

/** A passkey the run would not add another to: the same authenticator model, or the run's name. */
function matchesPolicy(options: BulkRunOptions, method: PasskeyMethod): boolean {
  if (
    options.authenticatorAaguid && method.aaguid?.toLowerCase() === options.authenticatorAaguid.toLowerCase()
  ) {
    return true;
  }
  return method.displayName === options.displayName;
}

/** A lock: runs each function after the previous one settled. */
function mutex(): <T>(run: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(run: () => Promise<T>) => {
    const result = tail.then(run);
    tail = result.catch(() => undefined);
    return result;
  };
}

/** Waits before another attempt of one user: exponential with full jitter; an abort ends it. */
function backoff(options: BulkRunOptions, attempt: number): Promise<void> {
  const base = options.retryDelayMs ?? 1000;
  const ms = Math.random() * base * 2 ** (attempt - 1);
  return new Promise((resolve) => {
    const signal = options.abort;
    if (signal?.aborted) return resolve();
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The user's passkeys. For a user addressed by object id without a lookup, a "not found" from the
 * listing may mean no such user: the lookup is made then, so that the failure says which
 * (`user-not-found`, or the listing's own reason when the user does exist).
 */
async function listPasskeysOf(
  context: UserContext,
  ref: string,
  user: DirectoryUser,
  unresolved: boolean,
): Promise<PasskeyMethod[]> {
  const { session, abort } = context.options;
  try {
    return await session.listPasskeys(user, abort);
  } catch (error) {
    if (!unresolved || !(error instanceof ProvisioningError) || error.code !== "user-not-synced") throw error;
    await session.resolveUser(ref, abort);
    throw error;
  }
}
