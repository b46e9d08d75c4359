/**
 * The embedded database: SQLite through `node:sqlite` (`DatabaseSync`, built into Deno 2.9), one
 * file in the data folder, nothing to install.
 *
 * - A new file is created 0600 (owner only): it holds the directory's names and the audit log.
 * - WAL mode: readers never block the writer; `synchronous = FULL` (the default) makes each
 *   commit durable before it returns (the queue is the truth for who does what).
 * - Writes are transactions opened with `BEGIN IMMEDIATE`: the transaction takes the database's
 *   one write lock at once, so two processes never both read then both try to write. Another
 *   process's writer is waited for (`busy_timeout`).
 * - Inside one process, transactions on the connection take turns (a promise chain): the store's
 *   code is async, so without that two callers' statements would interleave in one transaction.
 *
 * @module
 */
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { ProvisioningError } from "../../errors.ts";
import { type SqlDatabase, sqliteSql, type SqlRow, type SqlSession, type SqlValue } from "./sql.ts";

/** Settings of the embedded database. */
export interface SqliteOptions {
  /** How long a writer waits for another process's transaction before failing. @default 30_000 */
  busyTimeoutMs?: number;
  /**
   * "full": each commit is on disk before it returns (survives a power cut). "normal": a commit
   * survives the process being killed but the last ones may be lost to a power cut or OS crash
   * (then a lost completion comes back as an expired lease, and the next agent reconciles with the
   * provider before creating anything). @default "full"
   */
  synchronous?: "full" | "normal";
}

/** Opens (creating if needed) the database file at `path` as a {@linkcode SqlDatabase}. */
export function openSqliteDatabase(path: string, options: SqliteOptions = {}): SqlDatabase {
  let db: DatabaseSync;
  try {
    createPrivate(path);
    db = new DatabaseSync(path);
    db.exec(`PRAGMA busy_timeout = ${Math.trunc(options.busyTimeoutMs ?? 30_000)}`);
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(`PRAGMA synchronous = ${options.synchronous === "normal" ? "NORMAL" : "FULL"}`);
    db.exec("PRAGMA foreign_keys = ON");
  } catch (cause) {
    throw new ProvisioningError("panel-database-open", `Cannot open the panel's database "${path}"`, {
      cause,
      hint: "Check that its folder exists and is writable, and that the file is a SQLite database",
    });
  }
  const statements = new Map<string, StatementSync>();
  let turn: Promise<unknown> = Promise.resolve();
  let closed = false;

  function prepare(text: string): StatementSync {
    if (closed) {
      throw new ProvisioningError(
        "panel-database-closed",
        `Cannot use the panel's database "${path}": it is closed`,
      );
    }
    let statement = statements.get(text);
    if (statement === undefined) {
      statement = db.prepare(text);
      statements.set(text, statement);
    }
    return statement;
  }

  /** Runs one statement; a failure names the statement and the file. */
  function run<T>(text: string, step: (statement: StatementSync) => T): Promise<T> {
    try {
      return Promise.resolve(step(prepare(text)));
    } catch (cause) {
      return Promise.reject(failed(path, text, cause));
    }
  }

  const session: SqlSession = {
    query: (text, params = []) => run(text, (s) => s.all(...bind(params)) as SqlRow[]),
    execute: (text, params = []) => run(text, (s) => Number(s.run(...bind(params)).changes)),
  };

  /** Runs `work` after every earlier turn of this connection has ended. */
  function inTurn<T>(work: () => Promise<T>): Promise<T> {
    const result = turn.then(work);
    turn = result.catch(() => {});
    return result;
  }

  return {
    dialect: "sqlite",
    location: path,
    sql: sqliteSql,
    query: (text, params) => inTurn(() => session.query(text, params)),
    execute: (text, params) => inTurn(() => session.execute(text, params)),
    transaction: (work) =>
      inTurn(async () => {
        await session.execute("BEGIN IMMEDIATE");
        try {
          const result = await work(session);
          await session.execute("COMMIT");
          return result;
        } catch (error) {
          if (db.isTransaction) await session.execute("ROLLBACK");
          throw error;
        }
      }),
    close: () =>
      inTurn(() => {
        if (!closed) {
          closed = true;
          statements.clear();
          db.close();
        }
        return Promise.resolve();
      }),
  };
}

/**
 * Creates the database file readable by its owner only (0600) when it does not exist yet: it holds
 * the directory's names and the audit log. SQLite gives its -wal and -shm files the same mode.
 */
function createPrivate(path: string): void {
  try {
    Deno.writeFileSync(path, new Uint8Array(), { createNew: true, mode: 0o600 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
}

function failed(path: string, text: string, cause: unknown): ProvisioningError {
  if (cause instanceof ProvisioningError) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  const busy = /database is locked|SQLITE_BUSY/i.test(reason);
  return new ProvisioningError(
    busy ? "panel-database-busy" : "panel-database-statement",
    `Cannot run "${text.trim().split(/\s+/).slice(0, 4).join(" ")} …" on "${path}": ${reason}`,
    {
      cause,
      retryable: busy,
      ...(busy ? { hint: "Another process held the database's write lock too long; try again" } : {}),
    },
  );
}

function bind(params: readonly SqlValue[]): SQLInputValue[] {
  return params as SQLInputValue[];
}
