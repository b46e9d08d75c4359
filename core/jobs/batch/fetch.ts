/**
 * `batch fetch`: the admin's first step of a key station's batch. Every user of the source is
 * resolved, checked for a passkey with the batch's name (skipped unless `force`), and given
 * creation options with a challenge that lasts as long as the provider allows (Entra beta:
 * `--challenge-timeout`, up to 30 days), journaled in the batch file before the next user.
 *
 * Re-running adds new users and renews what needs it: a user with no challenge yet (an earlier
 * failure), or one whose challenge expires within `renewWithinMs` and whose key is not written. A
 * user whose key was written keeps their challenge (the key signed it) unless it has expired
 * unsent; then the key's credential can never be registered, so the user gets a new challenge and
 * the key is reported void (it must be reset and written again). A registration that was sent is
 * never renewed: `batch register` settles it first (it may have got through).
 *
 * PINs never go into a batch: a CSV `pin` column is left for `batch write --pins FILE`.
 *
 * @module
 */
import { ProvisioningError } from "../../errors.ts";
import type { DirectoryUser, ProviderSession } from "../../plugin.ts";
import { parseCreationOptions } from "../../webauthn/json.ts";
import { haltingReasons } from "../engine.ts";
import type { FailuresWriter } from "../output/failures.ts";
import type { SourceRow } from "../sources/csv.ts";
import { batchPhase, challengeExpires, type OpenBatch } from "./batch_file.ts";

/** What {@link fetchBatch} needs. */
export interface FetchBatchOptions {
  readonly batch: OpenBatch;
  readonly source: AsyncIterable<SourceRow>;
  readonly session: ProviderSession;
  /** Users who already hold a passkey with the batch's display name get one too. @default false */
  readonly force?: boolean;
  readonly failures: FailuresWriter;
  /** Users fetched at once. @default 4 */
  readonly concurrency?: number;
  /** Renew unwritten challenges that expire within this many ms. @default one hour */
  readonly renewWithinMs?: number;
  /** Says what happened to each user (for the progress display). */
  readonly onUser?: (event: BatchUserEvent) => void;
  /** Take no more users (Ctrl+C); in-flight ones finish. */
  readonly stop?: AbortSignal;
  /** @default Date.now */
  readonly now?: () => number;
}

/** One user's outcome in a batch step. */
export interface BatchUserEvent {
  readonly user: string;
  readonly row?: number | undefined;
  readonly outcome: string;
  readonly detail?: string | undefined;
}

/** What {@link fetchBatch} did. */
export interface FetchBatchCounts {
  /** Users given a new challenge. */
  fetched: number;
  /** Users the batch already had in a good state (a valid challenge, a written key, done). */
  kept: number;
  /** Users with a passkey of the batch's name already. */
  skipped: number;
  /** Rows and users that could not be fetched (in the failures file). */
  failed: number;
  /** Written keys whose challenge expired unsent: renewed, the key must be written again. */
  voided: number;
  /** The shortest validity of a challenge fetched now, in ms (a v1.0 challenge lasts 5 minutes). */
  shortestValidityMs?: number;
  /** True when rows carried PINs, which the batch does not keep. */
  pinsIgnored: boolean;
  /** Set when the step stopped early because every user would fail the same way. */
  halted?: { code: string; message: string };
}

/**
 * Fetches challenges for every user of the source into the batch.
 *
 * @throws whatever is not a per-user ProvisioningError (a bug, a journal that cannot be written).
 */
export async function fetchBatch(options: FetchBatchOptions): Promise<FetchBatchCounts> {
  const { batch, session } = options;
  const { journal, info } = batch;
  const now = options.now ?? Date.now;
  const renewWithinMs = options.renewWithinMs ?? 60 * 60_000;
  const counts: FetchBatchCounts = {
    fetched: 0,
    kept: 0,
    skipped: 0,
    failed: 0,
    voided: 0,
    pinsIgnored: false,
  };
  // Object id → the key (reference) that holds it: one person named twice gets one key.
  const claimed = new Map<string, string>();
  for (const record of journal.users()) {
    if (record.userId) claimed.set(record.userId, record.k);
  }
  const report = (event: BatchUserEvent) => options.onUser?.(event);
  const iterator = options.source[Symbol.asyncIterator]();
  let stopped = false;

  const fetchOne = async (row: number, ref: string): Promise<void> => {
    const key = ref.toLowerCase();
    const prior = journal.get(key);
    if (prior) {
      const phase = batchPhase(prior);
      const keep = phase === "done" ||
        (phase === "skipped" && !options.force) ||
        // Sent: it may have got through; `batch register` settles it before anything is renewed.
        (phase === "to-register" && (!!prior.sentAt || !challengeExpires(prior, now()))) ||
        (phase === "to-write" && !challengeExpires(prior, now(), renewWithinMs));
      if (keep) {
        counts.kept++;
        report({
          user: ref,
          row,
          outcome: "kept",
          detail: phase === "to-register" && prior.sentAt ? "sent: run batch register first" : phase,
        });
        return;
      }
    }
    let user: DirectoryUser;
    if (prior?.userId && prior.upn) {
      user = { id: prior.userId, userPrincipalName: prior.upn };
    } else {
      user = await session.resolveUser(ref);
      const other = claimed.get(user.id);
      if (other !== undefined && other !== key) {
        const first = journal.get(other);
        throw new ProvisioningError(
          "duplicate",
          `Cannot fetch a challenge for ${ref} (row ${row}): it is the same user (${user.userPrincipalName}) as ${
            first?.ref ?? other
          }${first?.row === undefined ? "" : ` (row ${first.row})`}, who already has one in this batch`,
          { hint: "Each user gets one key; remove one of the rows" },
        );
      }
      claimed.set(user.id, key);
    }
    const displayName = session.checkDisplayName?.(info.displayName, user) ?? info.displayName;
    const methods = await session.listPasskeys(user);
    const matching = options.force ? undefined : methods.find((m) => m.displayName === displayName);
    if (matching) {
      await journal.append({
        k: key,
        s: "skipped",
        row,
        ref,
        userId: user.id,
        upn: user.userPrincipalName,
        methodId: matching.id,
        displayName,
        code: "has-passkey",
        message:
          `${user.userPrincipalName} already has passkey "${displayName}"; give --force to add another`,
      });
      counts.skipped++;
      report({ user: ref, row, outcome: "skipped", detail: "has-passkey" });
      return;
    }
    const challenge = await session.creationOptions(user);
    // Read now, not at the station hours later: options the WebAuthn client cannot use fail here.
    parseCreationOptions(challenge.options);
    await journal.append({
      k: key,
      s: "fetched",
      row,
      ref,
      userId: user.id,
      upn: user.userPrincipalName,
      displayName,
      existing: methods.map((m) => m.id),
      challenge: {
        options: challenge.options,
        origin: challenge.origin,
        ...(challenge.expiresAt ? { expiresAt: challenge.expiresAt.toISOString() } : {}),
      },
      // A renewed challenge voids a key written for the old one (and a skip that --force
      // overrides); earlier failures are over.
      registration: null,
      credentialId: "",
      methodId: "",
      sentAt: "",
      code: "",
      message: "",
    });
    counts.fetched++;
    if (challenge.expiresAt) {
      const validity = challenge.expiresAt.getTime() - now();
      counts.shortestValidityMs = Math.min(counts.shortestValidityMs ?? validity, validity);
    }
    const voided = prior !== undefined && batchPhase(prior) === "to-register";
    if (voided) counts.voided++;
    report({
      user: ref,
      row,
      outcome: voided ? "renewed: the key written for the old challenge is void" : "fetched",
      detail: voided
        ? `reset ${prior.device ?? "that key"}${
          prior.serial ? ` (serial ${prior.serial})` : ""
        } and write it again`
        : challenge.expiresAt
        ? `valid until ${challenge.expiresAt.toISOString()}`
        : undefined,
    });
  };

  const worker = async (): Promise<void> => {
    while (!stopped && !options.stop?.aborted && !counts.halted) {
      const next = await iterator.next();
      if (next.done) return;
      const source = next.value;
      if (!source.ok) {
        counts.failed++;
        await options.failures.write({
          user: source.reference ?? "",
          row: source.row,
          code: source.code,
          message: source.message,
        });
        report({ user: source.reference ?? "", row: source.row, outcome: "failed", detail: source.code });
        continue;
      }
      if (source.user.pin !== undefined) counts.pinsIgnored = true;
      const ref = source.user.reference;
      try {
        await fetchOne(source.row, ref);
      } catch (error) {
        if (!(error instanceof ProvisioningError)) throw error;
        counts.failed++;
        const message = error.hint ? `${error.message}. ${error.hint}` : error.message;
        await journal.append({
          k: ref.toLowerCase(),
          s: "failed",
          row: source.row,
          ref,
          code: error.code,
          message,
        });
        await options.failures.write({ user: ref, row: source.row, code: error.code, message });
        report({ user: ref, row: source.row, outcome: "failed", detail: error.code });
        if (haltingReasons.has(error.code) && counts.fetched + counts.kept + counts.skipped === 0) {
          counts.halted = { code: error.code, message };
        }
      }
    }
  };
  // A worker that fails (a bug, a journal that cannot be written) stops the others' intake; they
  // finish the user in hand before the error is rethrown, so nothing is cut off mid-append.
  const guarded = () =>
    worker().catch((error) => {
      stopped = true;
      throw error;
    });
  try {
    const settled = await Promise.allSettled(
      Array.from({ length: Math.max(1, options.concurrency ?? 4) }, guarded),
    );
    const failed = settled.find((result): result is PromiseRejectedResult => result.status === "rejected");
    if (failed) throw failed.reason;
  } finally {
    await iterator.return?.();
  }
  return counts;
}
