/**
 * `batch register`: the admin's last step. Every key the station wrote is registered with the
 * provider in one pass: `created` is journaled (with the user's passkeys listed just before) before
 * the registration is sent, so a crash or a lost answer is reconciled by listing on the next run,
 * never registered twice; then `registered`, then `verified` once the provider lists it.
 *
 * results.csv lists every user the batch has finished (registered now or earlier, skipped);
 * failures.csv every other one with the reason: not found at fetch, no key written yet
 * (`not-written`), a challenge that expired before registration (`challenge-expired`), or the
 * provider's refusal.
 *
 * @module
 */
import { ProvisioningError } from "../../errors.ts";
import type { DirectoryUser, PasskeyMethod, ProviderSession } from "../../plugin.ts";
import { haltingReasons, resultRowOf } from "../engine.ts";
import type { UserRecord } from "../journal.ts";
import type { FailuresWriter } from "../output/failures.ts";
import type { ResultsWriter } from "../output/results.ts";
import { outcomeUnknownCode, reconcileRegistration } from "../provision_user.ts";
import { batchPhase, challengeExpires, type OpenBatch } from "./batch_file.ts";
import type { BatchUserEvent } from "./fetch.ts";

/** What {@link registerBatch} needs. */
export interface RegisterBatchOptions {
  readonly batch: OpenBatch;
  readonly session: ProviderSession;
  readonly results: ResultsWriter;
  readonly failures: FailuresWriter;
  /** Users registered at once. @default 4 */
  readonly concurrency?: number;
  readonly onUser?: (event: BatchUserEvent) => void;
  /** Take no more users (Ctrl+C); in-flight ones finish. */
  readonly stop?: AbortSignal | undefined;
  /** @default Date.now */
  readonly now?: () => number;
}

/** What {@link registerBatch} did. */
export interface RegisterBatchCounts {
  registered: number;
  /** Found registered by listing (an earlier attempt's answer was lost). */
  reconciled: number;
  /** Finished before this run (registered earlier, or skipped at fetch). */
  unchanged: number;
  failed: number;
  halted?: { code: string; message: string };
}

/**
 * Clock skew allowed between us and the provider: when matching a listed passkey to a registration
 * sent earlier, and before a challenge is judged expired without asking the provider.
 */
const skewMs = 5 * 60_000;

/**
 * Registers every written key of the batch and writes the outputs.
 *
 * @throws whatever is not a per-user ProvisioningError.
 */
export async function registerBatch(options: RegisterBatchOptions): Promise<RegisterBatchCounts> {
  const { journal } = options.batch;
  const now = options.now ?? Date.now;
  const counts: RegisterBatchCounts = { registered: 0, reconciled: 0, unchanged: 0, failed: 0 };
  const queue: UserRecord[] = [];
  let stopped = false;

  const fail = async (
    record: UserRecord,
    code: string,
    message: string,
    journaled: boolean,
    extra: Partial<UserRecord> = {},
  ) => {
    counts.failed++;
    if (journaled) await journal.append({ k: record.k, s: "failed", code, message, ...extra });
    await options.failures.write({
      user: record.ref ?? record.k,
      ...(record.row === undefined ? {} : { row: record.row }),
      code,
      message,
    });
    options.onUser?.({ user: record.ref ?? record.k, row: record.row, outcome: "failed", detail: code });
  };

  const registerOne = async (record: UserRecord): Promise<void> => {
    const ref = record.ref ?? record.k;
    const phase = batchPhase(record);
    if (phase === "unresolved") {
      return await fail(
        record,
        record.code || "unresolved",
        record.message || `${ref} has no challenge`,
        false,
      );
    }
    const upn = record.upn ?? ref;
    if (phase === "to-write") {
      return challengeExpires(record, now())
        ? await fail(
          record,
          "challenge-expired",
          `Cannot register a passkey for ${upn}: its challenge expired at ${record.challenge?.expiresAt} before a key was written; run batch fetch again, then batch write`,
          false,
        )
        : await fail(
          record,
          "not-written",
          `Cannot register a passkey for ${upn}: no key was written for them${
            record.code ? ` (last try: ${record.code})` : ""
          }; run batch write, then batch register again`,
          false,
        );
    }
    const user: DirectoryUser = { id: record.userId!, userPrincipalName: upn };
    const displayName = record.displayName ?? options.batch.info.displayName;
    const methods = await options.session.listPasskeys(user);
    // An earlier attempt sent this registration: did it get through?
    if (record.sentAt) {
      const known = new Set(record.existing ?? []);
      const since = Date.parse(record.sentAt) - skewMs;
      const found = methods.find((m) => record.methodId && m.id === record.methodId) ??
        methods.find((m) =>
          !known.has(m.id) && m.displayName === displayName &&
          (m.createdDateTime === undefined || Date.parse(m.createdDateTime) >= since)
        ) ??
        // The provider confirmed this method id: a listing that lags behind does not undo that.
        (record.methodId ? { id: record.methodId } : undefined);
      if (found) return await verified(record, found, true);
    }
    // Clearly expired (beyond any clock skew): the provider would refuse it; say what to do.
    if (challengeExpires(record, now() - skewMs)) {
      return await fail(
        record,
        "challenge-expired",
        `Cannot register the key written for ${upn}: its challenge expired at ${record.challenge?.expiresAt}; run batch fetch again (it renews the challenge), reset ${
          record.device ?? "the key"
        } and write it again`,
        false,
      );
    }
    const existing = methods.map((m) => m.id);
    await journal.append({
      k: record.k,
      s: "created",
      methodId: "",
      sentAt: new Date(now()).toISOString(),
      existing,
    });
    let method: PasskeyMethod;
    let reconciled = false;
    try {
      method = await options.session.registerPasskey(user, { credential: record.registration, displayName });
    } catch (error) {
      if (!(error instanceof ProvisioningError && error.code === outcomeUnknownCode)) throw error;
      const found = await reconcileRegistration({
        session: options.session,
        user,
        displayName,
        since: new Date(now()),
        existingMethodIds: existing,
      });
      if (!found) throw error;
      method = found;
      reconciled = true;
    }
    await journal.append({
      k: record.k,
      s: "registered",
      methodId: method.id,
      ...(method.aaguid ? { aaguid: method.aaguid } : {}),
    });
    await verified(journal.get(record.k)!, method, reconciled);
  };

  const verified = async (record: UserRecord, method: PasskeyMethod, reconciled: boolean) => {
    const listed =
      (await options.session.listPasskeys({ id: record.userId!, userPrincipalName: record.upn! }))
        .find((m) => m.id === method.id);
    const done: UserRecord = {
      k: record.k,
      s: "verified",
      methodId: method.id,
      ...((listed ?? method).aaguid ? { aaguid: (listed ?? method).aaguid! } : {}),
      ...(reconciled ? { reconciled: true } : {}),
    };
    await journal.append(done);
    await options.results.write(resultRowOf({ ...record, ...done }));
    if (reconciled) counts.reconciled++;
    else counts.registered++;
    options.onUser?.({
      user: record.ref ?? record.k,
      row: record.row,
      outcome: reconciled ? "reconciled" : "registered",
      detail: listed ? undefined : "registered; the provider does not list it yet",
    });
  };

  // Users the batch finished before are written first: whatever stops this run, results.csv
  // lists them.
  for (const record of journal.users()) {
    const phase = batchPhase(record);
    if (phase === "done" || phase === "skipped") {
      counts.unchanged++;
      await options.results.write(resultRowOf(record));
    } else {
      queue.push(record);
    }
  }

  const worker = async (): Promise<void> => {
    while (!stopped && !options.stop?.aborted && !counts.halted) {
      const record = queue.shift();
      if (!record) return;
      try {
        await registerOne(record);
      } catch (error) {
        if (!(error instanceof ProvisioningError)) throw error;
        const message = error.hint ? `${error.message}. ${error.hint}` : error.message;
        // A refusal (a policy, the attestation, a used challenge) is final for this registration:
        // the user goes back to "to write" (a new challenge and key). A lost answer, throttling or
        // a server error keeps it for the next run, which reconciles before sending again.
        const final = !error.retryable && error.code !== outcomeUnknownCode &&
          !haltingReasons.has(error.code);
        await fail(
          record,
          error.code,
          final
            ? `${message}; the key's passkey cannot be registered: fetch a new challenge, reset the key and write it again`
            : message,
          true,
          final ? { registration: null, credentialId: "", sentAt: "" } : {},
        );
        if (haltingReasons.has(error.code) && counts.registered + counts.reconciled === 0) {
          counts.halted = { code: error.code, message };
        }
      }
    }
  };
  const guarded = () =>
    worker().catch((error) => {
      stopped = true;
      throw error;
    });
  const settled = await Promise.allSettled(
    Array.from({ length: Math.max(1, options.concurrency ?? 4) }, guarded),
  );
  const failed = settled.find((result): result is PromiseRejectedResult => result.status === "rejected");
  if (failed) throw failed.reason;
  return counts;
}
