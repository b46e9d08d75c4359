/**
 * The panel store's typed interface: users imported from a directory, the work queue (one job
 * per user to provision, leased by agents), the audit log and the agents. Both databases implement
 * exactly this (core/panel/store/queue_store.ts over sqlite.ts or postgres.ts); the module
 * documentation of core/panel/store/mod.ts maps it onto the engine's JobStore.
 *
 * Times are epoch milliseconds from the store's clock. Expected refusals (a late answer, a retry of
 * a job still running) are values (`accepted: false` with a reason), not exceptions: the caller
 * (the panel's HTTP handlers) turns them into answers, and the audit log has recorded them.
 *
 * @module
 */
import type { jobStates } from "./schema.ts";

/** Where a job is: waiting, held by an agent, or finished one way or another. */
export type JobState = typeof jobStates[number];

/** Finished states: no agent works on such a job any more. */
export type FinishedJobState = Exclude<JobState, "queued" | "leased">;

/** Whether a user row still matches the directory object it was imported from. */
export type SyncState = "in-sync" | "not-in-sync";

/** What the provider said of the user's passkeys at the last import ("unknown": it was not asked). */
export type PasskeyStatus = "unknown" | "none" | "registered";

/** How a job is meant to run: the agent provisions, or the admin does it in the opened browser. */
export type JobMode = "automatic" | "manual";

/** One user as the provider's directory lists it, for {@linkcode PanelStore.importUsers}. */
export interface DirectoryUserImport {
  /** The directory's own id of the user (Entra: the object id). */
  readonly objectId: string;
  /** The name the user signs in with (Entra: the user principal name). */
  readonly signInName: string;
  readonly displayName?: string;
  /** Left "unknown" when the import did not ask; an earlier known status is then kept. */
  readonly passkeyStatus?: PasskeyStatus;
}

/** A user row of the panel. */
export interface PanelUser {
  /** The panel's id of the user (jobs point at it). */
  readonly id: number;
  /** The provider plugin the user was imported from. */
  readonly provider: string;
  readonly objectId: string;
  readonly signInName: string;
  readonly displayName: string;
  readonly syncState: SyncState;
  readonly passkeyStatus: PasskeyStatus;
  /** When the last import saw this user. */
  readonly syncedAt: number;
}

/** A user row with its newest job, as the users page lists them. */
export interface PanelUserWithJob extends PanelUser {
  readonly latestJob: { readonly id: number; readonly state: JobState } | null;
}

/** An error an agent reported for a job. */
export interface JobError {
  /** The reason code (the same codes as failures.csv). */
  readonly code: string;
  /** One line for the admin; never a secret. */
  readonly message: string;
}

/** A job of the queue. */
export interface QueueJob {
  readonly id: number;
  readonly userId: number;
  readonly state: JobState;
  readonly mode: JobMode;
  /** How many times an agent took it (a release gives its attempt back). */
  readonly attempts: number;
  /** Retryable failures put the job back until it has been taken this often. */
  readonly maxAttempts: number;
  /** The job is not leased before this time (a retry's backoff). */
  readonly availableAt: number;
  /** The agent holding it (leased), or the one that finished it. */
  readonly leaseHolder: string | null;
  readonly leaseExpiresAt: number | null;
  /** The agent's last reported step of the user (a job state of its journal: options, created …). */
  readonly step: string | null;
  readonly lastError: JobError | null;
  /** What the agent reported on completion (credential id, whether it was reconciled …), as JSON. */
  readonly result: unknown;
  /** Who queued it (an admin's sign-in name, or the importer). */
  readonly requestedBy: string;
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly finishedAt: number | null;
}

/** What identifies one lease: the agent must present all three to act on the job. */
export interface LeaseRef {
  readonly jobId: number;
  /** The agent's id (the lease holder). */
  readonly agent: string;
  /**
   * The lease's fence: a random token the store gave with the lease. A job re-leased after its lease
   * expired gets a new token, so the old holder's late answer no longer matches.
   */
  readonly token: string;
}

/** A job handed to an agent by {@linkcode PanelStore.lease}. */
export interface LeasedJob {
  readonly job: QueueJob;
  readonly user: PanelUser;
  readonly lease: LeaseRef & { readonly expiresAt: number };
  /**
   * The agent whose lease on this job expired before this lease took it over, or null. When set,
   * that agent may have got part of the way (even registered a passkey): the new holder reconciles
   * with the provider before creating anything.
   */
  readonly reclaimedFrom: string | null;
}

/** Why an agent's answer about a lease was refused. */
export type LeaseRefusal =
  /** No such job. */
  | "unknown-job"
  /** The lease is not this agent's (any more): it expired and another lease took the job, or it was released. */
  | "lease-lost"
  /** An admin cancelled the job. */
  | "cancelled"
  /** The job was already finished (by this lease's earlier answer or another's). */
  | "finished";

/** The store's answer to an agent's renew, complete, fail or release. */
export type LeaseAnswer =
  | { readonly accepted: true; readonly job: QueueJob }
  | { readonly accepted: false; readonly reason: LeaseRefusal; readonly job: QueueJob | null };

/** What became of one user of {@linkcode PanelStore.enqueue}. */
export type EnqueueOutcome =
  | { readonly userId: number; readonly outcome: "queued"; readonly jobId: number }
  /** The user already had a job waiting or in flight: that job, not a second one. */
  | { readonly userId: number; readonly outcome: "already-queued"; readonly jobId: number }
  /** The user's row no longer matches the directory: sync before provisioning. */
  | { readonly userId: number; readonly outcome: "not-in-sync" }
  | { readonly userId: number; readonly outcome: "unknown-user" };

/** The answer to an admin's cancel or retry. */
export type AdminAnswer =
  | { readonly done: true; readonly job: QueueJob }
  | {
    readonly done: false;
    /** unknown-job; finished (cancel of a finished job); not-retryable (retry of a job that did not fail or was not cancelled); already-queued (the user has another active job). */
    readonly reason: "unknown-job" | "finished" | "not-retryable" | "already-queued";
    readonly job: QueueJob | null;
  };

/** One row of the audit log. */
export interface AuditEntry {
  readonly id: number;
  readonly at: number;
  /** Who asked: an admin's sign-in name, an agent's id. */
  readonly actor: string;
  /** What was asked: `users.import`, `job.enqueue`, `job.lease`, `job.renew`, `job.complete`, `job.fail`, `job.release`, `job.cancel`, `job.retry`. */
  readonly action: string;
  readonly jobId: number | null;
  readonly userId: number | null;
  /** "refused" when the store said no (a late answer, a duplicate queueing, a user not in sync). */
  readonly outcome: "ok" | "refused";
  /** What else is worth knowing (the refusal's reason, the error code, the lease's expiry), as JSON. */
  readonly detail: Record<string, unknown> | null;
}

/** An agent that has taken work. */
export interface AgentRow {
  readonly id: string;
  readonly firstSeenAt: number;
  readonly lastSeenAt: number;
}

/** One page of a list, and the cursor of the next page (null on the last page). */
export interface Page<T> {
  readonly items: readonly T[];
  readonly next: string | null;
}

/** How many jobs are in each state. */
export type JobCounts = Readonly<Record<JobState, number>>;

/** The panel's store; see the module documentation. */
export interface PanelStore extends AsyncDisposable {
  /** Which database this is. */
  readonly dialect: "sqlite" | "postgres";
  /** Where it is (a file path, or a URL without its password). */
  readonly location: string;

  /**
   * Adds or updates users by (provider, object id) and marks them in sync. With `fullSync`, the
   * provider's users this import did not list become "not-in-sync" (their directory object is gone).
   */
  importUsers(options: {
    provider: string;
    users: readonly DirectoryUserImport[];
    actor: string;
    fullSync?: boolean;
  }): Promise<{ imported: number; notInSync: number }>;
  getUser(id: number): Promise<PanelUser | null>;
  /**
   * Users by sign-in name, keyset-paged (`cursor` from the previous page), each with its newest job;
   * with `prefix`, only those whose sign-in name starts with it (case-insensitive).
   */
  listUsers(
    options?: { cursor?: string | null; limit?: number; prefix?: string },
  ): Promise<Page<PanelUserWithJob>>;

  /** Queues one job per user; a user with a job waiting or in flight keeps that one. */
  enqueue(options: { userIds: readonly number[]; actor: string; mode?: JobMode }): Promise<EnqueueOutcome[]>;
  /**
   * Leases up to `limit` jobs to `agent` for `leaseMs`: expired leases first (their holder is gone),
   * then queued jobs in order. Never the same job to two live leases.
   */
  lease(options: { agent: string; limit: number; leaseMs: number }): Promise<LeasedJob[]>;
  /** Extends a lease by `leaseMs` from now; `step` is the agent's current step of the user, for live status. */
  renew(lease: LeaseRef, options: { leaseMs: number; step?: string }): Promise<LeaseAnswer>;
  /** Finishes a leased job as verified or skipped, only from its current lease. */
  complete(
    lease: LeaseRef,
    outcome: { state: "verified" | "skipped"; result?: unknown },
  ): Promise<LeaseAnswer>;
  /**
   * Reports a failure from the current lease: a retryable one puts the job back (after a backoff)
   * while attempts remain, otherwise the job is failed.
   */
  fail(lease: LeaseRef, error: JobError & { retryable: boolean }): Promise<LeaseAnswer>;
  /** Gives a leased job back untouched (Ctrl+C before the agent started the user): queued again, the attempt not counted. */
  release(lease: LeaseRef): Promise<LeaseAnswer>;
  /** An admin cancels a queued or leased job (the holder's next renew or answer is refused). */
  cancel(options: { jobId: number; actor: string }): Promise<AdminAnswer>;
  /** An admin queues a failed or cancelled job again. */
  retry(options: { jobId: number; actor: string }): Promise<AdminAnswer>;

  getJob(id: number): Promise<QueueJob | null>;
  /** Jobs, newest first, keyset-paged; optionally only one state or one user's. */
  listJobs(
    options?: { state?: JobState; userId?: number; cursor?: string | null; limit?: number },
  ): Promise<Page<QueueJob>>;
  counts(): Promise<JobCounts>;
  /** The audit log, newest first, keyset-paged; optionally one job's. */
  listAudit(options?: { jobId?: number; cursor?: string | null; limit?: number }): Promise<Page<AuditEntry>>;
  listAgents(): Promise<AgentRow[]>;

  close(): Promise<void>;
}
