/**
 * Where a command's users come from: `--csv FILE` (with `--column` overrides), `--group NAME|ID`
 * or `--user UPN...` (`-` for stdin), exactly one of them. Shared by `provision` and `batch fetch`.
 *
 * @example
 * ```ts
 * import { chooseUserSource } from "./user_sources.ts";
 * const source = chooseUserSource("provision", { user: ["alice@contoso.com"] });
 * console.assert(source.kind === "user");
 * ```
 *
 * @module
 */
import { ProvisioningError, UsageError } from "../errors.ts";
import { readUsersFromCsv, readUsersFromList, type SourceRow } from "../jobs/sources/csv.ts";
import type { ProviderSession } from "../plugin.ts";
import type { TextWriter } from "./context.ts";
import { asUtf8, type CsvEncoding, encodingNotice, inspectCsvFile } from "./csv_file.ts";

/** The one source a command was given. */
export type UserSource =
  | {
    readonly kind: "csv";
    readonly path: string;
    readonly columns: Record<string, string>;
    /** Found by {@link prepareCsvSource} before the run. @default "utf-8" */
    readonly encoding?: CsvEncoding;
  }
  | { readonly kind: "group"; readonly group: string }
  | { readonly kind: "user"; readonly users: readonly string[] };

/** The source flags of a command. */
export interface UserSourceFlags {
  csv?: string | undefined;
  group?: string | undefined;
  user?: string[] | undefined;
  column?: string[] | undefined;
}

/**
 * The one source the flags name.
 *
 * @throws {UsageError} when none or several are given, or a `--column` is not FIELD=HEADER.
 */
export function chooseUserSource(verb: string, flags: UserSourceFlags): UserSource {
  const given = (["csv", "group", "user"] as const).filter((kind) => flags[kind] !== undefined);
  if (given.length === 0) {
    throw new UsageError(`Cannot ${verb}: no users given`, {
      hint: "Give --csv FILE, --group NAME or --user UPN",
    });
  }
  if (given.length > 1) {
    throw new UsageError(`Cannot ${verb}: --${given[0]} and --${given[1]} are given; give one source`);
  }
  const columns = parseColumns(flags.column ?? []);
  if (flags.csv !== undefined) return { kind: "csv", path: flags.csv, columns };
  if (flags.group !== undefined) return { kind: "group", group: flags.group };
  return { kind: "user", users: flags.user ?? [] };
}

/**
 * The rows of the chosen source. `expectedRows` (a CSV's {@link estimateRows}) sizes its
 * duplicate table once.
 */
export function sourceRows(
  source: UserSource,
  session: ProviderSession,
  expectedRows?: number | undefined,
): AsyncIterable<SourceRow> {
  if (source.kind === "user") return readUsersFromList(source.users);
  if (source.kind === "group") return groupRows(session, source.group);
  return csvRows(source.path, source.columns, expectedRows, source.encoding);
}

/**
 * Checks a CSV source before the run starts (a workbook or binary file is refused, leaving no
 * journal) and finds its encoding, saying once when it is Windows-1252. Other sources pass as they are.
 */
export async function prepareCsvSource(source: UserSource, stderr: TextWriter): Promise<UserSource> {
  if (source.kind !== "csv") return source;
  const encoding = await inspectCsvFile(source.path);
  if (encoding !== "utf-8") stderr.write(encodingNotice(source.path));
  return { ...source, encoding };
}

/** The rows of a CSV file, opened when the first row is asked for (a file that cannot be opened is a usage error). */
export async function* csvRows(
  path: string,
  columns: Record<string, string> = {},
  expectedRows?: number | undefined,
  encoding: CsvEncoding = "utf-8",
): AsyncGenerator<SourceRow, void, undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new ProvisioningError(
      "csv-unreadable",
      `Cannot read ${JSON.stringify(path)}: ${error instanceof Error ? error.message : String(error)}`,
      { hint: "Check the path and that the file is readable", exitCode: 2, cause: error },
    );
  }
  // The source closes the file when it is done.
  yield* readUsersFromCsv(asUtf8(file.readable, encoding), {
    column: columns,
    source: path,
    ...(expectedRows === undefined ? {} : { expectedRows }),
  });
}

/**
 * The users a command hints to the provider before signing in (the tenant may be found from a
 * domain): the `--user` list, or the first users of the CSV file.
 */
export async function connectHintsOf(source: UserSource): Promise<{ users: string[] }> {
  return {
    users: source.kind === "user"
      ? [...source.users]
      : source.kind === "csv"
      ? await firstUsers(source.path, source.columns, source.encoding)
      : [],
  };
}

/** A group's members as source rows, numbered in the order the provider lists them. */
async function* groupRows(session: ProviderSession, group: string): AsyncGenerator<SourceRow> {
  if (!session.listGroupMembers) {
    throw new UsageError("Cannot read a group: this provider does not list group members");
  }
  let row = 0;
  for await (const member of session.listGroupMembers(group)) {
    yield { row: ++row, ok: true, user: { reference: member.userPrincipalName } };
  }
}

/** The first few users of a CSV file (for the provider's tenant discovery); none when unreadable. */
export async function firstUsers(
  path: string,
  columns: Record<string, string>,
  encoding: CsvEncoding = "utf-8",
): Promise<string[]> {
  const found: string[] = [];
  try {
    // The source cancels the stream when it stops, which closes the file.
    const file = await Deno.open(path);
    for await (const row of readUsersFromCsv(asUtf8(file.readable, encoding), { column: columns })) {
      if (row.ok) found.push(row.user.reference);
      if (found.length >= 3 || row.row > 50) break;
    }
  } catch {
    // The run reports an unreadable file with its row; discovery just has no hint.
  }
  return found;
}

/** `--column upn=Email` pairs. */
export function parseColumns(pairs: readonly string[]): Record<string, string> {
  const columns: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf("=");
    if (at <= 0 || at === pair.length - 1) {
      throw new UsageError(`Cannot read --column ${JSON.stringify(pair)}: expected FIELD=HEADER`, {
        hint: 'For example --column upn=Email or --column objectId="Object ID"',
      });
    }
    columns[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return columns;
}

/**
 * Lines of a file less its header (a file is read twice, fast): the progress display's total, and
 * the size the duplicate tables are made for once (no doubling on a million rows).
 */
export async function estimateRows(path: string): Promise<number | undefined> {
  try {
    using file = await Deno.open(path);
    const buffer = new Uint8Array(1 << 20);
    let lines = 0;
    // Blank lines (a trailing one, as spreadsheets write) are no rows: the run's count skips them too.
    let content = false;
    while (true) {
      const n = await file.read(buffer);
      if (n === null) break;
      for (let i = 0; i < n; i++) {
        const byte = buffer[i]!;
        if (byte === 10) {
          if (content) lines++;
          content = false;
        } else if (byte !== 13 && byte !== 32 && byte !== 9 && byte !== 44 && byte !== 59) content = true;
      }
    }
    if (content) lines++;
    return Math.max(0, lines - 1);
  } catch {
    return undefined;
  }
}
