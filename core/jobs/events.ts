/**
 * What a bulk run tells the world while it works: one {@link JobEvent} per step of each user, per
 * throttling answer and per phase of the run. The progress display, `--verbose` lines and
 * `--log-format json` (core/cli/progress.ts, core/log.ts) are all readers of this one stream, so
 * the engine never formats text and never decides where output goes.
 *
 * No event carries a secret: users are named by the reference the source gave, reasons by code
 * and a message that the engine took from a ProvisioningError (already free of PINs and TAPs).
 *
 * @example
 * ```ts
 * import type { JobEvent } from "./events.ts";
 * const events: JobEvent[] = [];
 * const listener = (event: JobEvent) => events.push(event);
 * listener({ type: "user-finished", row: 2, user: "alice@contoso.com", outcome: "provisioned" });
 * console.assert(events.length === 1);
 * ```
 *
 * @module
 */

/**
 * The states one user moves through. `queued` → `resolved` → `options` → `created` (the
 * authenticator made the credential; about to be sent) → `registered` (the provider accepted it)
 * → `verified` (confirmed by the POST's answer or a listing); or `skipped`, or `failed` with a reason code.
 */
export type UserState =
  | "queued"
  | "resolved"
  | "options"
  | "created"
  | "registered"
  | "verified"
  | "skipped"
  | "failed";

/** How a user's part of a run ended. */
export type UserOutcome = "provisioned" | "reconciled" | "skipped" | "dry-run" | "failed";

/** Counts of a run so far; `byReason` counts failures by reason code. */
export interface RunCounts {
  provisioned: number;
  /** Found registered after a lost answer or an interrupted earlier attempt. */
  reconciled: number;
  skipped: number;
  dryRun: number;
  failed: number;
  byReason: Record<string, number>;
}

/**
 * The end of a run, for the summary and the exit code. `counts` and `elapsedMs` are of this
 * attempt only; users an earlier attempt of the same run finished are `fromEarlierAttempts` (and
 * `alreadyDone` in `run-started`), never in `counts`.
 */
export interface RunSummary {
  readonly runId: string;
  readonly counts: RunCounts;
  /** Users finished by an earlier, interrupted attempt of this run and not redone. */
  readonly fromEarlierAttempts: number;
  readonly elapsedMs: number;
  /** True when Ctrl+C stopped the run before its source was exhausted. */
  readonly interrupted: boolean;
  /**
   * Set when a failure that every other user would hit too (the key has no PIN, the admin lacks a
   * permission, a tenant-wide policy) stopped the run early: the users not reached are in neither
   * output file, and a re-run after the fix resumes.
   */
  readonly halted?: { readonly code: string; readonly message: string };
  readonly resultsPath?: string;
  readonly failuresPath?: string;
}

/** One thing that happened in a bulk run. */
export type JobEvent =
  | {
    readonly type: "run-started";
    readonly runId: string;
    /** True when an earlier attempt of the same run left a journal to resume. */
    readonly resumed: boolean;
    /** Users that earlier attempt already finished. */
    readonly alreadyDone: number;
    /** Users the source is expected to hold (estimated from the file), when known. */
    readonly total?: number;
    readonly concurrency: number;
    readonly dryRun: boolean;
  }
  | {
    readonly type: "user-state";
    /** The source row (spreadsheet numbering for CSV files). */
    readonly row: number;
    readonly user: string;
    readonly state: UserState;
    /** A few words on the step, e.g. `object id 5f0c…`, `reconciling after a lost answer`. */
    readonly detail?: string;
  }
  | {
    readonly type: "user-finished";
    readonly row: number;
    readonly user: string;
    readonly outcome: UserOutcome;
    /** The reason code, for `skipped` and `failed`. */
    readonly code?: string;
    readonly message?: string;
  }
  | {
    readonly type: "throttled";
    /** What the provider asked to wait, when it said. */
    readonly retryAfterMs?: number;
    /** The request rate the run slows to, per second. */
    readonly ratePerSecond?: number;
  }
  | {
    readonly type: "stopping";
    /** `halt`: a failure every other user would hit too (see RunSummary.halted). */
    readonly reason: "interrupt" | "abort" | "halt";
    readonly code?: string;
  }
  | { readonly type: "run-finished"; readonly summary: RunSummary };

/** Receives a run's events; must not throw and must return quickly. */
export type JobListener = (event: JobEvent) => void;
