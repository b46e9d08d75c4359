/**
 * The panel's store written once over {@linkcode SqlDatabase}: users, the work queue, the audit
 * log and agents (the operations of {@linkcode PanelStore}). Every change runs in one writer
 * transaction together with its audit row(s), so the log never disagrees with the tables.
 *
 * How a job cannot be done twice by the queue:
 * - A lease picks its jobs and marks them in one transaction. PostgreSQL: the SELECT takes row
 *   locks with `FOR UPDATE SKIP LOCKED` (a job another agent is taking is skipped, not waited for);
 *   SQLite: the transaction is `BEGIN IMMEDIATE`, the one writer of the database.
 * - A lease carries a fresh random token. Renew, complete, fail and release lock the job's row and
 *   act only when state is `leased`, holder and token match; anything else is refused, with the
 *   reason, and the refusal is audited. A lease past its expiry that nobody took over yet is still
 *   its holder's (its answer is accepted); once another lease took the job, the old token is dead.
 * - At most one active job per user is a unique index, so a second queueing cannot slip in.
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../errors.ts";
import { placeholders, type SqlDatabase, type SqlRow, type SqlSession, type SqlValue } from "./sql.ts";
import { jobStates } from "./schema.ts";
import type {
  AdminAnswer,
  AgentRow,
  AuditEntry,
  DirectoryUserImport,
  EnqueueOutcome,
  JobCounts,
  JobError,
  JobMode,
  JobState,
  LeaseAnswer,
  LeasedJob,
  LeaseRef,
  LeaseRefusal,
  PanelStore,
  PanelUser,
  PanelUserWithJob,
  QueueJob,
} from "./types.ts";

/** Settings of the queue; every one has a default. */
export interface QueueOptions {
  /** The store's clock (epoch ms). @default Date.now */
  now?: () => number;
  /** How often a job may be taken before a retryable failure fails it for good. @default 3 */
  maxAttempts?: number;
  /** The wait before a job that failed retryably is leased again, by attempts so far. @default 1 min, doubling, at most 15 min */
  retryDelayMs?: (attempts: number) => number;
}

/** The defaults of {@linkcode QueueOptions}. */
export const queueDefaults = {
  now: Date.now,
  maxAttempts: 3,
  retryDelayMs: (attempts: number) => Math.min(60_000 * 2 ** Math.max(0, attempts - 1), 15 * 60_000),
} satisfies Required<QueueOptions>;

/** The actor of what the store does on its own (failing a job whose leases kept expiring). */
export const panelActor = "panel";
const leaseExpiredMessage =
  "Every agent that took this user stopped answering before its lease expired; the user may be partly provisioned: check the user's passkeys at the provider, then retry";

/** The longest error message kept per job; longer ones are cut (a message is one line for the admin). */
const maxMessageLength = 2000;
/** Rows per multi-row INSERT (PostgreSQL takes at most 65,535 parameters in one statement). */
const insertChunk = 500;
/** Page sizes of the list operations. */
const defaultPageSize = 50;
const maxPageSize = 500;
/** The longest lease an agent may ask for: a crashed agent's work must come back within this. */
export const maxLeaseMs = 60 * 60_000;

const jobColumns =
  "id, user_id, state, mode, attempts, max_attempts, available_at, lease_holder, lease_token, lease_expires_at, step, last_error_code, last_error_message, result, requested_by, created_at, updated_at, finished_at";
const userColumns =
  "id, provider, object_id, sign_in_name, display_name, sync_state, passkey_status, synced_at";

const int = z.coerce.number().int();
const nullableInt = int.nullable();
const nullableText = z.string().nullable();

const jobRowSchema = z.object({
  id: int,
  user_id: int,
  state: z.enum(jobStates),
  mode: z.enum(["automatic", "manual"]),
  attempts: int,
  max_attempts: int,
  available_at: int,
  lease_holder: nullableText,
  lease_token: nullableText,
  lease_expires_at: nullableInt,
  step: nullableText,
  last_error_code: nullableText,
  last_error_message: nullableText,
  result: nullableText,
  requested_by: z.string(),
  created_at: int,
  updated_at: int,
  finished_at: nullableInt,
});
type JobRow = z.infer<typeof jobRowSchema>;

const userRowSchema = z.object({
  id: int,
  provider: z.string(),
  object_id: z.string(),
  sign_in_name: z.string(),
  display_name: z.string(),
  sync_state: z.enum(["in-sync", "not-in-sync"]),
  passkey_status: z.enum(["unknown", "none", "registered"]),
  synced_at: int,
});

const auditRowSchema = z.object({
  id: int,
  at: int,
  actor: z.string(),
  action: z.string(),
  job_id: nullableInt,
  user_id: nullableInt,
  outcome: z.enum(["ok", "refused"]),
  detail: nullableText,
});

// Built once: a zod schema compiles on its first parse, so one made per row costs a page 20x.
const latestJobSchema = z.object({ job_id: nullableInt, job_state: z.enum(jobStates).nullable() });
const pickedRowSchema = z.object({ id: int, lease_holder: nullableText });
const expiredRowSchema = pickedRowSchema.extend({ attempts: int, max_attempts: int });
const countRowSchema = z.object({ state: z.enum(jobStates), n: int });
const agentRowSchema = z.object({ id: z.string(), first_seen_at: int, last_seen_at: int });
const detailSchema = z.record(z.string(), z.unknown());
const userCursorSchema = z.tuple([z.string(), int]);
const idCursorSchema = z.tuple([int]);

/** One audit row to write. */
export interface AuditWrite {
  readonly actor: string;
  readonly action: string;
  readonly jobId?: number | null;
  readonly userId?: number | null;
  readonly outcome?: "ok" | "refused";
  readonly detail?: Record<string, unknown>;
}

/** Opens the store's operations on `db` (already migrated); see the module documentation. */
export function createQueueStore(db: SqlDatabase, options: QueueOptions = {}): PanelStore {
  const settings = { ...queueDefaults, ...options } satisfies Required<QueueOptions>;
  const { now } = settings;
  const lockRow = db.sql.lockRows();

  async function lockedJob(tx: SqlSession, jobId: number): Promise<JobRow | null> {
    const rows = await tx.query(`SELECT ${jobColumns} FROM jobs WHERE id = ? ${lockRow}`, [jobId]);
    return rows[0] === undefined ? null : parseRow(jobRowSchema, rows[0], db, "jobs");
  }

  /** Audits an agent's refused answer and returns the refusal. */
  async function refuse(
    tx: SqlSession,
    action: string,
    lease: LeaseRef,
    row: JobRow | null,
    at: number,
  ): Promise<LeaseAnswer> {
    const reason = row === null ? "unknown-job" : leaseRefusal(row, lease) ?? "lease-lost";
    await writeAudit(tx, at, [{
      actor: lease.agent,
      action,
      jobId: lease.jobId,
      userId: row?.user_id ?? null,
      outcome: "refused",
      detail: { reason, ...(row === null ? {} : { state: row.state, holder: row.lease_holder }) },
    }]);
    return { accepted: false, reason, job: row === null ? null : toJob(row) };
  }

  /** Audits an agent's accepted answer and returns the job as it is now. */
  async function accept(
    tx: SqlSession,
    action: string,
    lease: LeaseRef,
    updated: SqlRow,
    at: number,
    detail: Record<string, unknown>,
  ): Promise<LeaseAnswer> {
    const job = toJob(parseRow(jobRowSchema, updated, db, "jobs"));
    await writeAudit(tx, at, [{
      actor: lease.agent,
      action,
      jobId: lease.jobId,
      userId: job.userId,
      detail,
    }]);
    return { accepted: true, job };
  }

  /**
   * Renew, complete and release: one UPDATE whose WHERE is the fence (leased, this holder, this
   * token), so the check and the change are one statement; when it changes nothing, the job is
   * read to say why.
   */
  function fencedUpdate(
    action: string,
    lease: LeaseRef,
    change: (at: number) => { set: string; params: SqlValue[]; detail: Record<string, unknown> },
  ): Promise<LeaseAnswer> {
    return db.transaction(async (tx) => {
      const at = now();
      const { set, params, detail } = change(at);
      const [updated] = await tx.query(
        `UPDATE jobs SET ${set}, updated_at = ?
         WHERE id = ? AND state = 'leased' AND lease_holder = ? AND lease_token = ?
         RETURNING ${jobColumns}`,
        [...params, at, lease.jobId, lease.agent, lease.token],
      );
      if (updated === undefined) return await refuse(tx, action, lease, await lockedJob(tx, lease.jobId), at);
      return await accept(tx, action, lease, updated, at, detail);
    });
  }

  const store: PanelStore = {
    dialect: db.dialect,
    location: db.location,

    importUsers: ({ provider, users, actor, fullSync = false }) =>
      db.transaction(async (tx) => {
        const at = now();
        const byObjectId = new Map<string, DirectoryUserImport>();
        users.forEach((user, index) => byObjectId.set(checkImport(user, index).objectId, user));
        // In object id order: two imports running at once lock their rows in the same order.
        const unique = [...byObjectId.values()].sort((a, b) =>
          a.objectId < b.objectId ? -1 : a.objectId > b.objectId ? 1 : 0
        );
        for (let start = 0; start < unique.length; start += insertChunk) {
          const chunk = unique.slice(start, start + insertChunk);
          const params: SqlValue[] = [];
          for (const user of chunk) {
            params.push(
              provider,
              user.objectId,
              user.signInName,
              user.signInName.toLowerCase(),
              user.displayName ?? "",
              user.passkeyStatus ?? "unknown",
              at,
              at,
            );
          }
          await tx.execute(
            `INSERT INTO users (provider, object_id, sign_in_name, sign_in_key, display_name, passkey_status, synced_at, created_at)
             VALUES ${chunk.map(() => `(${placeholders(8)})`).join(", ")}
             ON CONFLICT (provider, object_id) DO UPDATE SET
               sign_in_name = excluded.sign_in_name,
               sign_in_key = excluded.sign_in_key,
               display_name = excluded.display_name,
               sync_state = 'in-sync',
               passkey_status = CASE WHEN excluded.passkey_status = 'unknown'
                 THEN users.passkey_status ELSE excluded.passkey_status END,
               synced_at = excluded.synced_at`,
            params,
          );
        }
        const notInSync = fullSync
          ? await tx.execute(
            "UPDATE users SET sync_state = 'not-in-sync' WHERE provider = ? AND synced_at < ? AND sync_state = 'in-sync'",
            [provider, at],
          )
          : 0;
        await writeAudit(tx, at, [{
          actor,
          action: "users.import",
          detail: { provider, imported: unique.length, notInSync, fullSync },
        }]);
        return { imported: unique.length, notInSync };
      }),

    async getUser(id) {
      const rows = await db.query(`SELECT ${userColumns} FROM users WHERE id = ?`, [id]);
      return rows[0] === undefined ? null : toUser(parseRow(userRowSchema, rows[0], db, "users"));
    },

    async listUsers({ cursor = null, limit = defaultPageSize, prefix = "" } = {}) {
      const size = pageSize(limit);
      const after = cursor === null ? null : decodeCursor(cursor, userCursorSchema);
      const where: string[] = [];
      const params: SqlValue[] = [];
      if (prefix !== "") {
        // A range on the sorted key, so the same index serves the search: [prefix, prefix's successor).
        where.push("u.sign_in_key >= ? AND u.sign_in_key < ?");
        params.push(prefix.toLowerCase(), successor(prefix.toLowerCase()));
      }
      if (after !== null) where.push("(u.sign_in_key, u.id) > (?, ?)"), params.push(after[0], after[1]);
      // Keyset paging on (sign_in_key, id): the index users_by_sign_in reads one page, however deep.
      // A row-value comparison, not `a > ? OR (a = ? AND id > ?)`: SQLite scans the whole index for the OR.
      const rows = await db.query(
        `SELECT ${
          userColumns.split(", ").map((c) => `u.${c}`).join(", ")
        }, j.id AS job_id, j.state AS job_state
         FROM users u
         LEFT JOIN jobs j ON j.id = (SELECT max(id) FROM jobs WHERE user_id = u.id)
         ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         ORDER BY u.sign_in_key, u.id
         LIMIT ?`,
        [...params, size + 1],
      );
      const items = rows.slice(0, size).map((row): PanelUserWithJob => {
        const user = toUser(parseRow(userRowSchema, row, db, "users"));
        const job = latestJobSchema.parse(row);
        return {
          ...user,
          latestJob: job.job_id === null || job.job_state === null
            ? null
            : { id: job.job_id, state: job.job_state },
        };
      });
      const last = items.at(-1);
      return {
        items,
        next: rows.length > size && last ? encodeCursor([last.signInName.toLowerCase(), last.id]) : null,
      };
    },

    enqueue: ({ userIds, actor, mode = "automatic" }) =>
      db.transaction(async (tx) => {
        const at = now();
        // Users are locked in ascending id order, so two concurrent enqueues of overlapping users
        // cannot deadlock; the answers come back in the caller's order, a repeated id answered
        // with the job its first occurrence got.
        const first = new Map<number, EnqueueOutcome>();
        for (const userId of [...new Set(userIds)].sort((a, b) => a - b)) {
          first.set(userId, await enqueueOne(tx, userId, actor, mode, at));
        }
        const answered = new Set<number>();
        const outcomes = userIds.map((userId): EnqueueOutcome => {
          const outcome = first.get(userId)!;
          if (answered.has(userId) && outcome.outcome === "queued") {
            return { userId, outcome: "already-queued", jobId: outcome.jobId };
          }
          answered.add(userId);
          return outcome;
        });
        await writeAudit(
          tx,
          at,
          outcomes.map((o) => ({
            actor,
            action: "job.enqueue",
            userId: o.userId,
            jobId: "jobId" in o ? o.jobId : null,
            outcome: o.outcome === "queued" ? "ok" : "refused",
            detail: o.outcome === "queued" ? { mode } : { reason: o.outcome },
          })),
        );
        return outcomes;
      }),

    async lease({ agent, limit, leaseMs }) {
      checkAgent(agent);
      if (!Number.isInteger(limit) || limit < 1 || limit > maxPageSize) {
        throw new RangeError(`Cannot lease ${limit} jobs: ask for 1 to ${maxPageSize} at a time`);
      }
      checkLeaseMs(leaseMs);
      return await db.transaction(async (tx) => {
        const at = now();
        const skipLocked = db.sql.lockRows({ skipLocked: true });
        // Expired leases first: their holder is gone (crashed, cut off) and they waited longest.
        const expiredRows = await tx.query(
          `SELECT id, lease_holder, attempts, max_attempts FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?
           ORDER BY lease_expires_at, id LIMIT ? ${skipLocked}`,
          [at, limit],
        );
        const expired = expiredRows.map((row) => expiredRowSchema.parse(row));
        // A job whose leases expired as often as it may be tried is not handed out again: whatever
        // stops its agents (a crash on this user) would stop the next one too.
        const exhausted = expired.filter((e) => e.attempts >= e.max_attempts);
        await failExhausted(tx, exhausted, at);
        const reclaimable = expired.filter((e) => e.attempts < e.max_attempts);
        const ready = reclaimable.length < limit
          ? await tx.query(
            `SELECT id, lease_holder FROM jobs WHERE state = 'queued' AND available_at <= ?
             ORDER BY available_at, id LIMIT ? ${skipLocked}`,
            [at, limit - reclaimable.length],
          )
          : [];
        const picked = [...reclaimable, ...ready.map((row) => pickedRowSchema.parse(row))];
        if (picked.length === 0) return [];
        const token = crypto.randomUUID();
        const expiresAt = at + leaseMs;
        const ids = picked.map((p) => p.id);
        const updated = await tx.query(
          `UPDATE jobs SET state = 'leased', lease_holder = ?, lease_token = ?, lease_expires_at = ?,
             attempts = attempts + 1, step = NULL, updated_at = ?
           WHERE id IN (${placeholders(ids.length)})
           RETURNING ${jobColumns}`,
          [agent, token, expiresAt, at, ...ids],
        );
        await tx.execute(touchAgentSql, [agent, at, at]);
        const jobs = updated.map((row) => toJob(parseRow(jobRowSchema, row, db, "jobs"))).sort((a, b) =>
          a.id - b.id
        );
        const users = await selectUsers(tx, [...new Set(jobs.map((j) => j.userId))]);
        const reclaimed = new Map(picked.map((p) => [p.id, p.lease_holder]));
        const leased = jobs.map((job): LeasedJob => ({
          job,
          user: users.get(job.userId)!,
          lease: { jobId: job.id, agent, token, expiresAt },
          reclaimedFrom: reclaimed.get(job.id) ?? null,
        }));
        await writeAudit(
          tx,
          at,
          leased.map((l) => ({
            actor: agent,
            action: "job.lease",
            jobId: l.job.id,
            userId: l.job.userId,
            detail: {
              expiresAt,
              attempt: l.job.attempts,
              ...(l.reclaimedFrom === null ? {} : { reclaimedFrom: l.reclaimedFrom }),
            },
          })),
        );
        return leased;
      });
    },

    async renew(lease, { leaseMs, step }) {
      checkLeaseMs(leaseMs);
      const answer = await fencedUpdate("job.renew", lease, (at) => ({
        set: "lease_expires_at = ?, step = COALESCE(?, step)",
        params: [at + leaseMs, step ?? null],
        detail: { expiresAt: at + leaseMs, ...(step === undefined ? {} : { step }) },
      }));
      if (answer.accepted) {
        const at = now();
        await db.execute(touchAgentSql, [lease.agent, at, at]);
      }
      return answer;
    },

    complete(lease, { state, result }) {
      return fencedUpdate("job.complete", lease, (at) => ({
        set: "state = ?, result = ?, lease_expires_at = NULL, step = NULL, finished_at = ?",
        params: [state, result === undefined ? null : JSON.stringify(result), at],
        detail: { state },
      }));
    },

    release(lease) {
      return fencedUpdate("job.release", lease, () => ({
        set:
          "state = 'queued', attempts = attempts - 1, lease_holder = NULL, lease_token = NULL, lease_expires_at = NULL, step = NULL",
        params: [],
        detail: {},
      }));
    },

    fail(lease, error) {
      // Whether the job goes back depends on its attempts, and its backoff is computed here: the
      // job is locked and read first.
      return db.transaction(async (tx) => {
        const at = now();
        const row = await lockedJob(tx, lease.jobId);
        if (row === null || leaseRefusal(row, lease) !== null) {
          return await refuse(tx, "job.fail", lease, row, at);
        }
        const again = error.retryable && row.attempts < row.max_attempts;
        const message = error.message.slice(0, maxMessageLength);
        const [updated] = again
          ? await tx.query(
            `UPDATE jobs SET state = 'queued', available_at = ?, lease_holder = NULL, lease_token = NULL,
               lease_expires_at = NULL, step = NULL, last_error_code = ?, last_error_message = ?, updated_at = ?
             WHERE id = ? RETURNING ${jobColumns}`,
            [at + settings.retryDelayMs(row.attempts), error.code, message, at, lease.jobId],
          )
          : await tx.query(
            `UPDATE jobs SET state = 'failed', lease_expires_at = NULL, step = NULL, last_error_code = ?,
               last_error_message = ?, finished_at = ?, updated_at = ?
             WHERE id = ? RETURNING ${jobColumns}`,
            [error.code, message, at, at, lease.jobId],
          );
        return await accept(tx, "job.fail", lease, updated!, at, {
          code: error.code,
          retryable: error.retryable,
          requeued: again,
        });
      });
    },

    cancel: ({ jobId, actor }) =>
      adminAction("job.cancel", jobId, actor, async (tx, row, at) => {
        if (row.state !== "queued" && row.state !== "leased") return "finished";
        await tx.execute(
          "UPDATE jobs SET state = 'cancelled', lease_expires_at = NULL, finished_at = ?, updated_at = ? WHERE id = ?",
          [at, at, jobId],
        );
        return null;
      }),

    retry: ({ jobId, actor }) =>
      adminAction("job.retry", jobId, actor, async (tx, row, at) => {
        if (row.state !== "failed" && row.state !== "cancelled") return "not-retryable";
        // The user's row lock orders this against a concurrent enqueue or retry of the same user.
        await tx.query(`SELECT id FROM users WHERE id = ? ${lockRow}`, [row.user_id]);
        const active = await tx.query(
          "SELECT id FROM jobs WHERE user_id = ? AND state IN ('queued', 'leased')",
          [row.user_id],
        );
        if (active.length > 0) return "already-queued";
        await tx.execute(
          `UPDATE jobs SET state = 'queued', available_at = ?, max_attempts = ?, lease_holder = NULL,
             lease_token = NULL, lease_expires_at = NULL, step = NULL, finished_at = NULL, updated_at = ?
           WHERE id = ?`,
          [at, row.attempts + settings.maxAttempts, at, jobId],
        );
        return null;
      }),

    async getJob(id) {
      const jobs = await selectJobs(db, [id]);
      return jobs[0] ?? null;
    },

    async listJobs({ state, userId, cursor = null, limit = defaultPageSize } = {}) {
      const size = pageSize(limit);
      const before = cursor === null ? null : decodeCursor(cursor, idCursorSchema)[0];
      const where: string[] = [];
      const params: SqlValue[] = [];
      if (state !== undefined) where.push("state = ?"), params.push(state);
      if (userId !== undefined) where.push("user_id = ?"), params.push(userId);
      if (before !== null) where.push("id < ?"), params.push(before);
      const rows = await db.query(
        `SELECT ${jobColumns} FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         ORDER BY id DESC LIMIT ?`,
        [...params, size + 1],
      );
      const items = rows.slice(0, size).map((row) => toJob(parseRow(jobRowSchema, row, db, "jobs")));
      const last = items.at(-1);
      return { items, next: rows.length > size && last ? encodeCursor([last.id]) : null };
    },

    async counts() {
      const rows = await db.query("SELECT state, count(*) AS n FROM jobs GROUP BY state");
      const counts = Object.fromEntries(jobStates.map((s) => [s, 0])) as Record<JobState, number>;
      for (const row of rows) {
        const { state, n } = countRowSchema.parse(row);
        counts[state] = n;
      }
      return counts satisfies JobCounts;
    },

    async listAudit({ jobId, cursor = null, limit = defaultPageSize } = {}) {
      const size = pageSize(limit);
      const before = cursor === null ? null : decodeCursor(cursor, idCursorSchema)[0];
      const where: string[] = [];
      const params: SqlValue[] = [];
      if (jobId !== undefined) where.push("job_id = ?"), params.push(jobId);
      if (before !== null) where.push("id < ?"), params.push(before);
      const rows = await db.query(
        `SELECT id, at, actor, action, job_id, user_id, outcome, detail FROM audit
         ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY id DESC LIMIT ?`,
        [...params, size + 1],
      );
      const items = rows.slice(0, size).map((row): AuditEntry => {
        const a = parseRow(auditRowSchema, row, db, "audit");
        return {
          id: a.id,
          at: a.at,
          actor: a.actor,
          action: a.action,
          jobId: a.job_id,
          userId: a.user_id,
          outcome: a.outcome,
          detail: a.detail === null ? null : detailSchema.parse(JSON.parse(a.detail)),
        };
      });
      const last = items.at(-1);
      return { items, next: rows.length > size && last ? encodeCursor([last.id]) : null };
    },

    async listAgents() {
      const rows = await db.query("SELECT id, first_seen_at, last_seen_at FROM agents ORDER BY id");
      return rows.map((row): AgentRow => {
        const a = agentRowSchema.parse(row);
        return { id: a.id, firstSeenAt: a.first_seen_at, lastSeenAt: a.last_seen_at };
      });
    },

    close: () => db.close(),
    [Symbol.asyncDispose]: () => db.close(),
  };
  return store;

  /** Fails the jobs whose leases expired on every attempt they had; audited as the panel's doing. */
  async function failExhausted(
    tx: SqlSession,
    exhausted: readonly { id: number; lease_holder: string | null; attempts: number }[],
    at: number,
  ): Promise<void> {
    if (exhausted.length === 0) return;
    const ids = exhausted.map((e) => e.id);
    const rows = await tx.query(
      `UPDATE jobs SET state = 'failed', last_error_code = 'lease-expired', last_error_message = ?,
         lease_expires_at = NULL, step = NULL, finished_at = ?, updated_at = ?
       WHERE id IN (${placeholders(ids.length)}) RETURNING id, user_id`,
      [leaseExpiredMessage, at, at, ...ids],
    );
    const users = new Map(rows.map((r) => [Number(r.id), Number(r.user_id)]));
    await writeAudit(
      tx,
      at,
      exhausted.map((e) => ({
        actor: panelActor,
        action: "job.fail",
        jobId: e.id,
        userId: users.get(e.id) ?? null,
        detail: { code: "lease-expired", holder: e.lease_holder, attempts: e.attempts },
      })),
    );
  }

  function adminAction(
    action: string,
    jobId: number,
    actor: string,
    act: (
      tx: SqlSession,
      row: JobRow,
      at: number,
    ) => Promise<Exclude<AdminAnswer, { done: true }>["reason"] | null>,
  ): Promise<AdminAnswer> {
    return db.transaction(async (tx) => {
      const at = now();
      const row = await lockedJob(tx, jobId);
      const refusal = row === null ? "unknown-job" : await act(tx, row, at);
      await writeAudit(tx, at, [{
        actor,
        action,
        jobId,
        userId: row?.user_id ?? null,
        outcome: refusal === null ? "ok" : "refused",
        detail: refusal === null ? { from: row!.state } : { reason: refusal, state: row?.state ?? null },
      }]);
      if (refusal !== null) return { done: false, reason: refusal, job: row === null ? null : toJob(row) };
      return { done: true, job: toJob((await lockedJob(tx, jobId))!) };
    });
  }

  async function enqueueOne(
    tx: SqlSession,
    userId: number,
    actor: string,
    mode: JobMode,
    at: number,
  ): Promise<EnqueueOutcome> {
    // The user's row lock orders concurrent queueings of one user (PostgreSQL; SQLite has one writer).
    const user = await tx.query(`SELECT sync_state FROM users WHERE id = ? ${lockRow}`, [userId]);
    if (user[0] === undefined) return { userId, outcome: "unknown-user" };
    if (user[0].sync_state !== "in-sync") return { userId, outcome: "not-in-sync" };
    const inserted = await tx.query(
      `INSERT INTO jobs (user_id, state, mode, max_attempts, available_at, requested_by, created_at, updated_at)
       VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)
       ON CONFLICT DO NOTHING RETURNING id`,
      [userId, mode, settings.maxAttempts, at, actor, at, at],
    );
    if (inserted[0] !== undefined) return { userId, outcome: "queued", jobId: Number(inserted[0].id) };
    const active = await tx.query(
      "SELECT id FROM jobs WHERE user_id = ? AND state IN ('queued', 'leased')",
      [userId],
    );
    if (active[0] === undefined) {
      throw new ProvisioningError(
        "panel-enqueue-conflict",
        `Cannot queue user ${userId} in "${db.location}": the insert conflicted but no active job was found`,
      );
    }
    return { userId, outcome: "already-queued", jobId: Number(active[0].id) };
  }

  async function selectJobs(session: SqlSession, ids: readonly number[]): Promise<QueueJob[]> {
    if (ids.length === 0) return [];
    const rows = await session.query(
      `SELECT ${jobColumns} FROM jobs WHERE id IN (${placeholders(ids.length)}) ORDER BY id`,
      ids,
    );
    return rows.map((row) => toJob(parseRow(jobRowSchema, row, db, "jobs")));
  }

  async function selectUsers(session: SqlSession, ids: readonly number[]): Promise<Map<number, PanelUser>> {
    const rows = ids.length === 0 ? [] : await session.query(
      `SELECT ${userColumns} FROM users WHERE id IN (${placeholders(ids.length)})`,
      ids,
    );
    return new Map(rows.map((row) => {
      const user = toUser(parseRow(userRowSchema, row, db, "users"));
      return [user.id, user];
    }));
  }
}

/** Why `lease` may not act on `row`, or null when it may. */
function leaseRefusal(row: JobRow, lease: LeaseRef): LeaseRefusal | null {
  if (row.state === "cancelled") return "cancelled";
  if (row.state !== "leased") {
    return row.state === "queued" ? "lease-lost" : "finished";
  }
  if (row.lease_holder !== lease.agent || row.lease_token !== lease.token) return "lease-lost";
  return null;
}

/** Records that an agent was seen (its first and latest time). */
const touchAgentSql = `INSERT INTO agents (id, first_seen_at, last_seen_at) VALUES (?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at`;

/** Writes audit rows inside the caller's transaction (the change and its record commit together). */
export async function writeAudit(tx: SqlSession, at: number, entries: readonly AuditWrite[]): Promise<void> {
  for (let start = 0; start < entries.length; start += insertChunk) {
    const chunk = entries.slice(start, start + insertChunk);
    const params: SqlValue[] = [];
    for (const e of chunk) {
      params.push(
        at,
        e.actor,
        e.action,
        e.jobId ?? null,
        e.userId ?? null,
        e.outcome ?? "ok",
        e.detail === undefined ? null : JSON.stringify(e.detail),
      );
    }
    await tx.execute(
      `INSERT INTO audit (at, actor, action, job_id, user_id, outcome, detail)
       VALUES ${chunk.map(() => `(${placeholders(7)})`).join(", ")}`,
      params,
    );
  }
}

function toJob(row: JobRow): QueueJob {
  return {
    id: row.id,
    userId: row.user_id,
    state: row.state,
    mode: row.mode,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    availableAt: row.available_at,
    leaseHolder: row.lease_holder,
    leaseExpiresAt: row.lease_expires_at,
    step: row.step,
    lastError: row.last_error_code === null
      ? null
      : { code: row.last_error_code, message: row.last_error_message ?? "" } satisfies JobError,
    result: row.result === null ? null : JSON.parse(row.result),
    requestedBy: row.requested_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
  };
}

function toUser(row: z.infer<typeof userRowSchema>): PanelUser {
  return {
    id: row.id,
    provider: row.provider,
    objectId: row.object_id,
    signInName: row.sign_in_name,
    displayName: row.display_name,
    syncState: row.sync_state,
    passkeyStatus: row.passkey_status,
    syncedAt: row.synced_at,
  };
}

/** Parses a row read from `table`; a row the panel did not write is an error saying so. */
export function parseRow<S extends z.ZodType>(
  schema: S,
  row: SqlRow,
  db: SqlDatabase,
  table: string,
): z.infer<S> {
  const parsed = schema.safeParse(row);
  if (parsed.success) return parsed.data;
  throw new ProvisioningError(
    "panel-row-invalid",
    `Cannot read a row of "${table}" in "${db.location}": ${z.prettifyError(parsed.error)}`,
    { hint: "The database was changed outside the panel; restore it from a backup", cause: parsed.error },
  );
}

function checkImport(user: DirectoryUserImport, index: number): DirectoryUserImport {
  if (user.objectId.length === 0 || user.signInName.length === 0) {
    throw new RangeError(
      `Cannot import user ${index + 1} ("${user.signInName}"): it has no ${
        user.objectId ? "sign-in name" : "object id"
      }`,
    );
  }
  return user;
}

function checkAgent(agent: string): void {
  if (agent.length === 0 || agent.length > 200) {
    throw new RangeError(
      `Cannot lease for agent "${agent.slice(0, 40)}": an agent id is 1 to 200 characters`,
    );
  }
}

function checkLeaseMs(leaseMs: number): void {
  if (!Number.isInteger(leaseMs) || leaseMs < 1 || leaseMs > maxLeaseMs) {
    throw new RangeError(
      `Cannot lease for ${leaseMs} ms: a lease lasts 1 ms to ${maxLeaseMs} ms (renew it while working)`,
    );
  }
}

function pageSize(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > maxPageSize) {
    throw new RangeError(`Cannot list ${limit} rows a page: ask for 1 to ${maxPageSize}`);
  }
  return limit;
}

/** The smallest string after every string that starts with `prefix` (its last character's successor). */
function successor(prefix: string): string {
  const points = [...prefix];
  const last = points.pop()!.codePointAt(0)! + 1;
  // Skip the surrogate range, which no well-formed string contains.
  return points.join("") + String.fromCodePoint(last === 0xd800 ? 0xe000 : Math.min(last, 0x10ffff));
}

function encodeCursor(key: readonly (string | number)[]): string {
  const bytes = new TextEncoder().encode(JSON.stringify(key));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function decodeCursor<S extends z.ZodType>(cursor: string, schema: S): z.infer<S> {
  try {
    const base64 = cursor.replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return schema.parse(JSON.parse(new TextDecoder().decode(bytes)));
  } catch (cause) {
    throw new ProvisioningError(
      "panel-cursor-invalid",
      `Cannot read the page cursor "${cursor.slice(0, 40)}"`,
      {
        hint: "Start again from the first page",
        cause,
      },
    );
  }
}
