/**
 * PostgreSQL for a team: several panels or agents on one queue. Through the `postgres` npm
 * package (postgres.js): a small pool per store, statements prepared once per connection, each
 * transaction on one connection at READ COMMITTED; the queue's row locks
 * (`FOR UPDATE SKIP LOCKED`) come from the store's SQL.
 *
 * The connection URL is libpq's: `postgres://user:password@host:port/database?sslmode=require`.
 * The password may also come from `PGPASSWORD`; it never appears in `location` or an error.
 *
 * @module
 */
import postgres from "postgres";
import { ProvisioningError } from "../../errors.ts";
import { postgresSql, type SqlDatabase, type SqlRow, type SqlSession, type SqlValue } from "./sql.ts";

/** Settings of a PostgreSQL store. */
export interface PostgresOptions {
  /** Connections in the pool. @default 4 */
  maxConnections?: number;
  /** Seconds to wait for a connection to open. @default 10 */
  connectTimeoutSeconds?: number;
}

/** The PostgreSQL type id of int8 (bigint), counts and our times: read as numbers, not strings. */
const int8 = 20;

/** Connects to the database at `url` as a {@linkcode SqlDatabase}; the first statement opens the first connection. */
export function openPostgresDatabase(url: string, options: PostgresOptions = {}): SqlDatabase {
  const location = redact(url);
  const sql = postgres(url, {
    max: options.maxConnections ?? 4,
    connect_timeout: options.connectTimeoutSeconds ?? 10,
    onnotice: () => {},
    types: {
      bigint: {
        to: int8,
        from: [int8],
        serialize: (value: number) => String(value),
        parse: (value: string) => Number(value),
      },
    },
  });
  const converted = new Map<string, string>();

  function session(runner: postgres.Sql | postgres.TransactionSql): SqlSession {
    const run = async (text: string, params: readonly SqlValue[]) => {
      try {
        return await runner.unsafe(numbered(text), params as postgres.ParameterOrJSON<never>[], {
          prepare: true,
        });
      } catch (cause) {
        throw failed(location, text, cause);
      }
    };
    return {
      query: async (text, params = []) => [...await run(text, params)] as SqlRow[],
      execute: async (text, params = []) => (await run(text, params)).count,
    };
  }

  /** `?` placeholders to PostgreSQL's `$1, $2 …` (the store's SQL has no `?` inside literals). */
  function numbered(text: string): string {
    let result = converted.get(text);
    if (result === undefined) {
      let n = 0;
      result = text.replaceAll("?", () => `$${++n}`);
      converted.set(text, result);
    }
    return result;
  }

  const pool = session(sql);
  return {
    dialect: "postgres",
    location,
    sql: postgresSql,
    query: pool.query,
    execute: pool.execute,
    transaction: async <T>(work: (tx: SqlSession) => Promise<T>) => {
      try {
        return await sql.begin((tx) => work(session(tx))) as T;
      } catch (error) {
        // The statements' own failures are already ProvisioningErrors; this is BEGIN or COMMIT's.
        const code = (error as { code?: unknown })?.code;
        if (error instanceof ProvisioningError || typeof code !== "string") throw error;
        throw failed(location, "BEGIN", error);
      }
    },
    close: () => sql.end({ timeout: 5 }),
  };
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "postgres://(unparsable URL)";
  }
}

function failed(location: string, text: string, cause: unknown): ProvisioningError {
  const code = (cause as { code?: unknown })?.code;
  const reason = cause instanceof Error ? cause.message : String(cause);
  const connection = typeof code === "string" &&
    /^(ECONNREFUSED|ENOTFOUND|CONNECT_TIMEOUT|28P01|3D000)$/.test(code);
  return new ProvisioningError(
    connection ? "panel-database-unreachable" : "panel-database-statement",
    connection
      ? `Cannot connect to the panel's database "${location}": ${reason}`
      : `Cannot run "${text.trim().split(/\s+/).slice(0, 4).join(" ")} …" on "${location}": ${reason}`,
    {
      cause,
      retryable: connection,
      ...(connection
        ? { hint: "Check the --database URL, that PostgreSQL is running and accepts this user" }
        : {}),
    },
  );
}
