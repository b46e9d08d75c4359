/**
 * `batch fetch`: the admin's first step of a key station's batch. Every user of the source is
 * resolved, checked for a passkey with the batch's name (skipped unless `force`), and given
 * creation options with a challenge that lasts as long as the provider allows (Entra beta:
 * `--challenge-timeout`, up to 30 days), journaled in the batch file before the next user.
 *
 * Re-running adds new users and renews what needs it: a user with no challenge yet (an earlier
 * failure), or one whose challenge expires within `renewWithinMs` and whose key is not written. A
 * user whose key was written keeps their challenge (the key signed it) unless it has expired;
 * then the key's credential can never be registered, so the user gets a new challenge and the
 * key must be written again (reset first: it holds a credential for the rp).
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
  const counts: FetchBatchCounts = { fetched: 0, kept: 0, skipped: 0, failed: 0 };
  const claimed = new Map<string, number>();
  for (const record of journal.users()) {
    if (record.userId && record.row !== undefined) claimed.set(record.userId, record.row);
  }
  const report = (event: BatchUserEvent) => options.onUser?.(event);
  const iterator = options.source[Symbol.asyncIterator]();
  let stopped = false;

  const fetchOne = async (row: number, ref: string): Promise<void> => {
    const key = ref.toLowerCase();
    const prior = journal.get(key);
    if (prior) {
      const phase = batchPhase(prior);
      const expired = challengeExpires(prior, now());
      const keep = phase === "done" || phase === "skipped" ||
        (phase === "to-register" && !expired) ||
        (phase === "to-write" && !challengeExpires(prior, now(), renewWithinMs));
      if (keep) {
        counts.kept++;
        report({ user: ref, row, outcome: "kept", detail: phase });
        return;
      }
    }
    let user: DirectoryUser;
    if (prior?.userId && prior.upn) {
      user = { id: prior.userId, userPrincipalName: prior.upn };
    } else {
      user = await session.resolveUser(ref);
      const first = claimed.get(user.id);
      if (first !== undefined && first !== row) {
        throw new ProvisioningError(
          "duplicate",
          `Cannot fetch a challenge for ${ref} (row ${row}): it is the same user as row ${first} (${user.userPrincipalName})`,
          { hint: "Each user gets one key; remove one of the rows" },
        );
      }
      claimed.set(user.id, row);
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
      // A renewed challenge voids a key written for the old one; earlier failures are over.
      registration: null,
      credentialId: "",
      code: "",
      message: "",
    });
    counts.fetched++;
    report({
      user: ref,
      row,
      outcome: prior && batchPhase(prior) === "to-register" ? "renewed (write the key again)" : "fetched",
      detail: challenge.expiresAt ? `valid until ${challenge.expiresAt.toISOString()}` : undefined,
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
      const ref = source.user.reference;
      try {
        await fetchOne(source.row, ref);
      } catch (error) {
        if (!(error instanceof ProvisioningError)) {
          stopped = true;
          throw error;
        }
        counts.failed++;
        await journal.append({
          k: ref.toLowerCase(),
          s: "failed",
          row: source.row,
          ref,
          code: error.code,
          message: error.message,
        });
        await options.failures.write({
          user: ref,
          row: source.row,
          code: error.code,
          message: error.message,
        });
        report({ user: ref, row: source.row, outcome: "failed", detail: error.code });
        if (haltingReasons.has(error.code) && counts.fetched + counts.kept + counts.skipped === 0) {
          counts.halted = { code: error.code, message: error.message };
        }
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  } finally {
    await iterator.return?.();
  }
  return counts;
}
