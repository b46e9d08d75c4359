/**
 * results.csv: one row per user the run finished, streamed as users finish.
 *
 * Columns: user, object id, status, method id, credential id, aaguid, display name, time. The
 * `user` column is one `readUsersFromCsv` recognises, so the file is valid input too (e.g. for
 * `provisioning revoke --csv results.csv`).
 *
 * @example
 * ```ts
 * import { openResultsFile } from "./results.ts";
 * const dir = await Deno.makeTempDir();
 * await using results = await openResultsFile(`${dir}/results.csv`);
 * await results.write({ user: "alice@contoso.com", status: "provisioned", methodId: "m1" });
 * await results.close();
 * console.assert((await Deno.readTextFile(`${dir}/results.csv`)).includes("\"alice@contoso.com\""));
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { CsvAppender } from "./csv_file.ts";

/**
 * Keys that would hold a secret. A row type with these as `never` cannot be given one (a literal
 * with `pin: "1234"` does not compile), and the writers copy only their declared columns anyway.
 */
export interface NoSecrets {
  readonly pin?: never;
  readonly tap?: never;
  readonly temporaryAccessPass?: never;
  readonly password?: never;
  readonly secret?: never;
  readonly token?: never;
  readonly privateKey?: never;
}

/** What happened to a user. */
export type ResultStatus = "provisioned" | "reconciled" | "skipped" | "dry-run";

/** One row of results.csv. */
export interface ResultRow extends NoSecrets {
  /** The user as the source named them (UPN, mail or object id). */
  readonly user: string;
  readonly objectId?: string;
  readonly status: ResultStatus;
  /** The provider's id of the passkey method. */
  readonly methodId?: string;
  /** The credential id, base64url. */
  readonly credentialId?: string;
  readonly aaguid?: string;
  /** The passkey's display name. */
  readonly displayName?: string;
  /** @default now */
  readonly time?: Date;
  /** Security keys: the key's serial number, when its attestation carries one. */
  readonly serial?: string;
  /** Security keys: whether the run set the key's PIN, and whether the user must change it. */
  readonly pinSet?: boolean;
  readonly pinMustChange?: boolean;
}

/** The header of results.csv. */
export const resultsHeader = [
  "user",
  "object id",
  "status",
  "method id",
  "credential id",
  "aaguid",
  "display name",
  "time",
  "serial",
  "pin set",
  "pin must change",
] as const;

/** Options of {@link openResultsFile}. */
export interface OutputFileOptions {
  /** The clock for rows without a time. @default () => new Date() */
  now?: () => Date;
  /** Empty an existing file instead of appending to it. @default false */
  fresh?: boolean;
}

/** An open results.csv. */
export interface ResultsWriter extends AsyncDisposable {
  readonly path: string;
  /** Appends one row; resolves once it is written (not yet fsynced). */
  write(row: ResultRow): Promise<void>;
  /** Makes the rows written so far durable. */
  sync(): Promise<void>;
  /** Syncs and closes. */
  close(): Promise<void>;
}

/** Creates (0600) or reopens for appending the results file at `path`. */
export async function openResultsFile(path: string, options: OutputFileOptions = {}): Promise<ResultsWriter> {
  const now = options.now ?? (() => new Date());
  const file = await CsvAppender.open(path, resultsHeader, options.fresh ? { fresh: true } : {});
  return {
    path,
    write: (row) =>
      file.append([
        row.user,
        row.objectId ?? "",
        row.status,
        row.methodId ?? "",
        row.credentialId ?? "",
        row.aaguid ?? "",
        row.displayName ?? "",
        (row.time ?? now()).toISOString(),
        row.serial ?? "",
        row.pinSet === undefined ? "" : String(row.pinSet),
        row.pinMustChange === undefined ? "" : String(row.pinMustChange),
      ]),
    sync: () => file.sync(),
    close: () => file.close(),
    [Symbol.asyncDispose]: () => file.close(),
  };
}
