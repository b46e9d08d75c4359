/**
 * Applies the panel's migrations when a store opens: a `schema_migrations` table records each
 * applied version with a digest of its statements; each pending migration runs once, in order, in
 * its own transaction together with its record, so a crash mid-migration leaves the database at
 * the previous version. Concurrent openers (two panels starting at once) wait for each other and
 * the second finds nothing left to do.
 *
 * Refused, with what to do: a database whose schema is newer than this program knows (an older
 * program must not write to it), and one whose applied migration's statements differ from this
 * program's (a migration was edited after release, or the database belongs to something else).
 *
 * @module
 */
import { ProvisioningError } from "../../errors.ts";
import { type Migration, migrations as panelMigrations } from "./schema.ts";
import type { SqlDatabase, SqlSession } from "./sql.ts";

/** What opening a store did to its schema. */
export interface MigrationReport {
  /** The versions this call applied (empty when the schema was already current). */
  readonly applied: readonly number[];
  /** The schema's version now. */
  readonly version: number;
}

interface AppliedRow {
  readonly version: number;
  readonly checksum: string;
}

/** Brings `db` to the newest schema; see the module documentation. */
export async function migrate(
  db: SqlDatabase,
  options: { migrations?: readonly Migration[]; now?: () => number } = {},
): Promise<MigrationReport> {
  const migrations = options.migrations ?? panelMigrations;
  const now = options.now ?? Date.now;
  const checksums = new Map<number, string>();
  for (const migration of migrations) checksums.set(migration.version, await checksum(db, migration));

  const applied = await db.transaction(async (tx) => {
    await lock(db, tx);
    await tx.execute(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        checksum TEXT NOT NULL,
        applied_at ${db.sql.bigint} NOT NULL
      )`,
    );
    return await appliedVersions(tx);
  });
  verify(db, applied, migrations, checksums);

  const done: number[] = [];
  for (const migration of migrations) {
    if (applied.some((row) => row.version === migration.version)) continue;
    const ran = await db.transaction(async (tx) => {
      await lock(db, tx);
      const again = await appliedVersions(tx);
      if (again.some((row) => row.version === migration.version)) return false;
      for (const statement of migration.statements(db.sql)) await tx.execute(statement);
      await tx.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
        [migration.version, migration.name, checksums.get(migration.version) ?? "", now()],
      );
      return true;
    });
    if (ran) done.push(migration.version);
  }
  return { applied: done, version: Math.max(0, ...migrations.map((m) => m.version)) };
}

async function lock(db: SqlDatabase, tx: SqlSession): Promise<void> {
  if (db.sql.migrationLock !== null) await tx.query(db.sql.migrationLock);
}

async function appliedVersions(tx: SqlSession): Promise<AppliedRow[]> {
  const rows = await tx.query("SELECT version, checksum FROM schema_migrations ORDER BY version");
  return rows.map((row) => ({ version: Number(row.version), checksum: String(row.checksum) }));
}

function verify(
  db: SqlDatabase,
  applied: readonly AppliedRow[],
  migrations: readonly Migration[],
  checksums: ReadonlyMap<number, string>,
): void {
  const known = Math.max(0, ...migrations.map((m) => m.version));
  for (const row of applied) {
    if (row.version > known) {
      throw new ProvisioningError(
        "panel-schema-newer",
        `Cannot open the panel's database "${db.location}": its schema is at version ${row.version}, newer than this program's ${known}`,
        { hint: "Run the newer provisioning release that upgraded it" },
      );
    }
    if (checksums.get(row.version) !== row.checksum) {
      throw new ProvisioningError(
        "panel-schema-mismatch",
        `Cannot open the panel's database "${db.location}": its migration ${row.version} does not match this program's`,
        { hint: "Point the panel at its own database; a released migration is never edited" },
      );
    }
  }
}

async function checksum(db: SqlDatabase, migration: Migration): Promise<string> {
  const text = migration.statements(db.sql).join(";\n");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
