/**
 * The panel's schema, as versioned migrations. One list for both databases: each migration's
 * statements are written once, with the column types that differ taken from the dialect
 * ({@linkcode DialectSql}). A migration, once released, is never edited: a change is a new
 * migration at the end (the runner refuses a database whose applied migration no longer matches
 * its text, see core/panel/store/migrate.ts).
 *
 * Tables (docs/panel.md draws them):
 * - `users`: people imported from the provider's directory: the directory object id, the sign-in
 *   name, the display name, whether the row is still in sync with the directory, passkey status.
 * - `jobs`: one per user to provision: state, attempts, lease holder and expiry, the agent's last
 *   reported step, last error, result. At most one active (queued or leased) job per user.
 * - `audit`: who asked what, when, and what came of it; every change of a job writes a row.
 * - `agents`: the agents that took work, first and last seen.
 * - `admins` (migration 2): who may use the panel, with a role (owner, admin, read-only).
 * - `sessions` (migration 2): browser sessions, by the SHA-256 of the cookie's token, each with its
 *   CSRF token.
 * - `agent_tokens` (migration 2): bearer tokens of agents, by SHA-256, bound to an admin, expiring.
 * - `one_time_tokens` (migration 2): single-use tokens by SHA-256 and purpose: the first-run
 *   bootstrap link, an admin's sign-in link (until the provider's sign-in); deep links later.
 *
 * @module
 */
import type { DialectSql } from "./sql.ts";

/** One step of the schema: applied once, in order, in a transaction. */
export interface Migration {
  /** 1, 2, 3 …: the order of application. */
  readonly version: number;
  /** What the step does, recorded beside its version. */
  readonly name: string;
  /** The statements, written for the given dialect's column types. */
  statements(sql: DialectSql): readonly string[];
}

/** The job states a row can hold; the queue moves jobs between them (core/panel/store/queue_store.ts). */
export const jobStates = ["queued", "leased", "verified", "skipped", "failed", "cancelled"] as const;

/** The migrations of the panel's database, in order. */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: "users, jobs, audit, agents",
    statements: (d) => [
      `CREATE TABLE agents (
        id ${d.sortedText} PRIMARY KEY,
        first_seen_at ${d.bigint} NOT NULL,
        last_seen_at ${d.bigint} NOT NULL
      )`,
      `CREATE TABLE users (
        id ${d.autoId},
        provider TEXT NOT NULL,
        object_id TEXT NOT NULL,
        sign_in_name TEXT NOT NULL,
        sign_in_key ${d.sortedText} NOT NULL,
        display_name TEXT NOT NULL DEFAULT '',
        sync_state TEXT NOT NULL DEFAULT 'in-sync' CHECK (sync_state IN ('in-sync', 'not-in-sync')),
        passkey_status TEXT NOT NULL DEFAULT 'unknown'
          CHECK (passkey_status IN ('unknown', 'none', 'registered')),
        synced_at ${d.bigint} NOT NULL,
        created_at ${d.bigint} NOT NULL,
        UNIQUE (provider, object_id)
      )`,
      `CREATE INDEX users_by_sign_in ON users (sign_in_key, id)`,
      `CREATE TABLE jobs (
        id ${d.autoId},
        user_id ${d.bigint} NOT NULL REFERENCES users (id),
        state TEXT NOT NULL CHECK (state IN (${jobStates.map((s) => `'${s}'`).join(", ")})),
        mode TEXT NOT NULL DEFAULT 'automatic' CHECK (mode IN ('automatic', 'manual')),
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        available_at ${d.bigint} NOT NULL,
        lease_holder TEXT,
        lease_token TEXT,
        lease_expires_at ${d.bigint},
        step TEXT,
        last_error_code TEXT,
        last_error_message TEXT,
        result TEXT,
        requested_by TEXT NOT NULL,
        created_at ${d.bigint} NOT NULL,
        updated_at ${d.bigint} NOT NULL,
        finished_at ${d.bigint}
      )`,
      // The queue's idempotence: a user has at most one job waiting or in flight.
      `CREATE UNIQUE INDEX jobs_one_active_per_user ON jobs (user_id) WHERE state IN ('queued', 'leased')`,
      `CREATE INDEX jobs_ready ON jobs (available_at, id) WHERE state = 'queued'`,
      `CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'leased'`,
      `CREATE INDEX jobs_by_user ON jobs (user_id, id)`,
      `CREATE INDEX jobs_by_state ON jobs (state, id)`,
      `CREATE TABLE audit (
        id ${d.autoId},
        at ${d.bigint} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        job_id ${d.bigint},
        user_id ${d.bigint},
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'refused')),
        detail TEXT
      )`,
      `CREATE INDEX audit_by_job ON audit (job_id, id)`,
    ],
  },
  {
    version: 2,
    name: "admins, sessions, agent tokens, one-time tokens",
    statements: (d) => [
      `CREATE TABLE admins (
        id ${d.autoId},
        sign_in_name TEXT NOT NULL,
        sign_in_key ${d.sortedText} NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'read-only')),
        created_by TEXT NOT NULL,
        created_at ${d.bigint} NOT NULL
      )`,
      `CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        admin_id ${d.bigint} NOT NULL REFERENCES admins (id),
        csrf_token TEXT NOT NULL,
        created_at ${d.bigint} NOT NULL,
        expires_at ${d.bigint} NOT NULL
      )`,
      `CREATE INDEX sessions_by_expiry ON sessions (expires_at)`,
      `CREATE TABLE agent_tokens (
        id ${d.autoId},
        token_hash TEXT NOT NULL UNIQUE,
        admin_id ${d.bigint} NOT NULL REFERENCES admins (id),
        label TEXT NOT NULL,
        created_at ${d.bigint} NOT NULL,
        expires_at ${d.bigint} NOT NULL,
        revoked_at ${d.bigint}
      )`,
      `CREATE TABLE one_time_tokens (
        token_hash TEXT PRIMARY KEY,
        purpose TEXT NOT NULL,
        admin_id ${d.bigint} REFERENCES admins (id),
        created_at ${d.bigint} NOT NULL,
        expires_at ${d.bigint} NOT NULL,
        used_at ${d.bigint}
      )`,
    ],
  },
];
