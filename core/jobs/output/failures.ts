/**
 * failures.csv (the seed tool's name): one row per user that did not end with a passkey.
 *
 * Columns: user, row, reason code, message, time. Its `user` column is one `readUsersFromCsv`
 * recognises, so `provisioning --csv failures.csv` retries exactly the failed users; the other
 * columns are ignored on input. Formula-looking cells are neutralised and restored on reading.
 *
 * @example
 * ```ts
 * import { openFailuresFile } from "./failures.ts";
 * const dir = await Deno.makeTempDir();
 * await using failures = await openFailuresFile(`${dir}/failures.csv`);
 * await failures.write({ user: "bob@", row: 3, code: "invalid-upn", message: "not a UPN" });
 * await failures.close();
 * console.assert((await Deno.readTextFile(`${dir}/failures.csv`)).includes("\"invalid-upn\""));
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { CsvAppender } from "./csv_file.ts";
import type { NoSecrets, OutputFileOptions } from "./results.ts";

/** One row of failures.csv. */
export interface FailureRow extends NoSecrets {
  /** The user as the source named them; empty when the row had none. */
  readonly user: string;
  /** The row of the source file (as a spreadsheet shows it), when the user came from one. */
  readonly row?: number;
  /** The machine-readable reason (a `ProvisioningError` code or a source failure code). */
  readonly code: string;
  /** The human-readable reason; must already be free of secrets. */
  readonly message: string;
  /** @default now */
  readonly time?: Date;
}

/** The header of failures.csv. */
export const failuresHeader = ["user", "row", "reason code", "message", "time"] as const;

/** Messages longer than this are cut (a server's whole HTML error page has no place here). */
export const maxMessageLength = 2000;

/** An open failures.csv. */
export interface FailuresWriter extends AsyncDisposable {
  readonly path: string;
  write(row: FailureRow): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Creates (0600) or reopens for appending the failures file at `path`. */
export async function openFailuresFile(
  path: string,
  options: OutputFileOptions = {},
): Promise<FailuresWriter> {
  const now = options.now ?? (() => new Date());
  const file = await CsvAppender.open(path, failuresHeader, options.fresh ? { fresh: true } : {});
  return {
    path,
    write: (row) =>
      file.append([
        row.user,
        row.row === undefined ? "" : String(row.row),
        row.code,
        row.message.length > maxMessageLength
          ? `${row.message.slice(0, maxMessageLength - 3)}...`
          : row.message,
        (row.time ?? now()).toISOString(),
      ]),
    sync: () => file.sync(),
    close: () => file.close(),
    [Symbol.asyncDispose]: () => file.close(),
  };
}
