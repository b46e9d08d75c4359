/**
 * The panel's store: users imported from the provider's directory, a work queue of one job per
 * user to provision that several agents drain with leases, an audit log, and the agents. One
 * schema with versioned migrations applied at open (core/panel/store/schema.ts, migrate.ts), one
 * body of SQL (queue_store.ts) over two databases:
 *
 * - the embedded database (default): SQLite through `node:sqlite`, a file in the data folder
 *   ({@linkcode defaultPanelDatabasePath});
 * - PostgreSQL (`--database postgres://…`): for several panels or agents on one queue.
 *
 * docs/panel.md describes the schema, the queue's guarantees and how to use PostgreSQL.
 *
 * ## As the engine's second JobStore
 *
 * The engine's JobStore (issue 15: claim, get, append, list; the journal is the first) maps onto
 * this store so that `--automatic-provision` runs the same engine over the queue (through the
 * panel's HTTP API, which calls these operations):
 *
 * | JobStore | panel store | note |
 * |---|---|---|
 * | `claim()` | {@linkcode PanelStore.lease} | a claim is a lease: bounded in time, fenced by a token; `reclaimedFrom` set means "reconcile with the provider first" |
 * | `append(job)`, non-final state (resolved, options, created, registered) | {@linkcode PanelStore.renew} with `step` | the heartbeat that keeps the lease and shows live status; the agent's journal stays the truth for a user in flight |
 * | `append(job)`, verified / skipped | {@linkcode PanelStore.complete} | refused unless the lease is still this agent's |
 * | `append(job)`, failed | {@linkcode PanelStore.fail} | `retryable` puts it back while attempts remain |
 * | Ctrl+C on claimed, unstarted jobs | {@linkcode PanelStore.release} | the attempt is not counted |
 * | `get(key)` | {@linkcode PanelStore.getJob} | the key is the job id; the user comes with the lease |
 * | `list(page)` | {@linkcode PanelStore.listJobs} | keyset pages, newest first |
 *
 * The journal keeps the steps inside one user (options fetched, credential created, registration
 * sent) because only the agent can make them durable before its next network call; the panel keeps
 * who holds which user and each user's outcome. A lease that ends with a refused answer is the
 * one case where both disagree: docs/panel.md says what then.
 *
 * @example
 * ```ts
 * import { openPanelStore } from "./mod.ts";
 * const dir = await Deno.makeTempDir();
 * await using store = await openPanelStore({ database: `${dir}/panel.sqlite` });
 * await store.importUsers({ provider: "sandbox", actor: "admin", users: [{ objectId: "u1", signInName: "alice@contoso.com" }] });
 * const [user] = (await store.listUsers()).items;
 * await store.enqueue({ userIds: [user!.id], actor: "admin" });
 * const [job] = await store.lease({ agent: "agent-1", limit: 1, leaseMs: 60_000 });
 * const answer = await store.complete(job!.lease, { state: "verified" });
 * console.assert(answer.accepted && answer.job.state === "verified");
 * await store.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { createAuthStore, type PanelAuthStore } from "./auth_store.ts";
import { migrate, type MigrationReport } from "./migrate.ts";
import { openPostgresDatabase, type PostgresOptions } from "./postgres.ts";
import { createQueueStore, type QueueOptions } from "./queue_store.ts";
import { openSqliteDatabase, type SqliteOptions } from "./sqlite.ts";
import type { SqlDatabase } from "./sql.ts";
import type { PanelStore } from "./types.ts";

export type * from "./types.ts";
export { maxLeaseMs, queueDefaults, type QueueOptions } from "./queue_store.ts";
export type { MigrationReport } from "./migrate.ts";
export type * from "./auth_store.ts";
export { adminRoles } from "./auth_store.ts";

/** Where the embedded database lives unless `--database` says otherwise: the data folder, beside the journals. */
export const defaultPanelDatabasePath = ".provisioning/panel.sqlite";

/** Options of {@linkcode openPanelStore}. */
export interface OpenPanelStoreOptions extends QueueOptions, SqliteOptions, PostgresOptions {
  /** A `postgres://` or `postgresql://` URL, or the path of the embedded database file. @default defaultPanelDatabasePath */
  database?: string;
}

/** An open store, with what its opening did to the schema, and the panel's admins, sessions and tokens. */
export type OpenedPanelStore = PanelStore & {
  readonly migrations: MigrationReport;
  readonly auth: PanelAuthStore;
};

/** True when `database` names PostgreSQL rather than a file. */
export function isPostgresUrl(database: string): boolean {
  return /^postgres(ql)?:\/\//i.test(database);
}

/**
 * Opens the panel's store and brings its schema up to date (each pending migration once, in
 * order, in a transaction); closes the connection again when a migration fails.
 */
export async function openPanelStore(options: OpenPanelStoreOptions = {}): Promise<OpenedPanelStore> {
  const database = options.database ?? defaultPanelDatabasePath;
  const db: SqlDatabase = isPostgresUrl(database)
    ? openPostgresDatabase(database, options)
    : openSqliteDatabase(database, options);
  let report: MigrationReport;
  try {
    report = await migrate(db, options.now ? { now: options.now } : {});
  } catch (error) {
    await db.close();
    throw error;
  }
  return Object.assign(createQueueStore(db, options), { migrations: report, auth: createAuthStore(db) });
}
