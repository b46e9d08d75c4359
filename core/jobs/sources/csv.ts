/**
 * The CSV user source (`--csv FILE`): the admin panel's user export or any sensible CSV, streamed.
 *
 * - Header detection, case, spacing and punctuation insensitive: UPN / userPrincipalName, email /
 *   mail / E-mail, objectId / id, user (our own results.csv and failures.csv), display name, pin.
 *   A bracketed name wins (`User name [userPrincipalName] Required`, the Entra bulk template).
 *   `--column upn=Email` overrides (see {@link CsvSourceOptions.column}).
 * - UTF-8 with or without BOM; UTF-16 with a BOM (Excel's "Unicode text") is decoded too.
 *   Anything else (Windows-1252, binary, a workbook) is a clear {@link ProvisioningError}.
 * - `,` `;` or tab, sniffed from the header line; LF or CRLF; RFC 4180 quoting.
 * - Streamed: the text is cut into batches of whole records as it arrives and each batch is
 *   parsed by `csv-parse`; what is held at once is one read chunk (decoded 16 KiB at a time) plus
 *   one unfinished record (at most {@link csvLimits}.maxRowLength characters) plus a compact table
 *   of the users already seen, 16 to 32 bytes a user (for duplicates; see seen_users.ts).
 *
 * Every data row yields one {@link SourceRow}: a user, or a failure with the row number as a
 * spreadsheet shows it (the header is row 1) and a reason code; a bad row never stops the stream.
 * Blank rows are skipped silently. A problem with the file itself is thrown as a
 * `ProvisioningError` (exit code 2) naming the file, the row and what to do; rows before it have
 * been yielded by then.
 *
 * @example
 * ```ts
 * import { readUsersFromCsv } from "./csv.ts";
 * const csv = "Display Name;E-mail\r\nAlice;alice@contoso.com\r\nBob;bob@\r\n";
 * const rows = [];
 * for await (const row of readUsersFromCsv(new Blob([csv]).stream(), { source: "users.csv" })) rows.push(row);
 * console.assert(rows[0]?.ok === true && rows[0].user.reference === "alice@contoso.com");
 * console.assert(rows[1]?.ok === false && rows[1].row === 3 && rows[1].code === "invalid-mail");
 * ```
 *
 * @module
 */
import { parse } from "csv-parse/sync";
import { z } from "zod";
import { ProvisioningError } from "../../errors.ts";
import { restoreCell } from "../output/formula.ts";
import { SeenUsers } from "./seen_users.ts";

/** A user to provision, as a source gives it. No field is resolved against the provider yet. */
export interface SourceUser {
  /** What the provider resolves: a UPN, a mail address or an object id (GUID, lowercased). */
  readonly reference: string;
  /** The row's display name column, trimmed, when the file has one and the cell is not empty. */
  readonly displayName?: string;
  /** The row's PIN column (a secret: never put it in a message, a log or an output file). */
  readonly pin?: string;
}

/** Why a row was not turned into a user. */
export type SourceFailureCode =
  | "missing-user"
  | "invalid-upn"
  | "invalid-mail"
  | "invalid-object-id"
  | "invalid-user"
  | "invalid-display-name"
  | "invalid-pin"
  | "field-too-long"
  | "ragged-row"
  | "malformed-row"
  | "duplicate";

/** One row of a source: a user, or the reason there is none. */
export type SourceRow =
  | { readonly row: number; readonly ok: true; readonly user: SourceUser }
  | {
    readonly row: number;
    readonly ok: false;
    readonly code: SourceFailureCode;
    /** Names the row, the value and the problem; never a PIN. */
    readonly message: string;
    /** The row's reference cell as written (for failures.csv's user column), when there is one. */
    readonly reference?: string;
  };

/** Options of {@link readUsersFromCsv}. */
export interface CsvSourceOptions {
  /**
   * Columns chosen by the admin, `--column upn=Email`: key a field (`upn`, `mail`, `objectId`,
   * `user`, `displayName`, `pin`; spelled loosely like headers), value a header of the file
   * (exact, else case and spacing insensitive). Naming any reference column (upn, mail, objectId,
   * user) turns off the detection of the other reference columns. @default {}
   */
  column?: Record<string, string>;
  /** The file's name, for messages. @default "the CSV input" */
  source?: string;
  /**
   * Rows the file is expected to hold (e.g. its line count): the duplicate table is sized for them
   * once, rather than doubling as rows come (see seen_users.ts).
   */
  expectedRows?: number;
}

/** Limits beyond which a file is refused (file-level) or a row fails (row-level). */
export const csvLimits = {
  /** Characters of one record (row), quotes and delimiters included: beyond it the file is refused. */
  maxRowLength: 64 * 1024,
  /** Columns of the header: beyond it the file is refused. */
  maxColumns: 1024,
  /** Characters of a reference: beyond it the row fails with `field-too-long`. */
  maxReferenceLength: 256,
  /** Characters of a display name: beyond it the row fails with `field-too-long`. */
  maxDisplayNameLength: 256,
} as const;

/** The fields a column can feed. */
type Field = "upn" | "mail" | "objectId" | "user" | "displayName" | "pin";

/** Reference columns, in the order a row's first non-empty one is taken. */
const referenceFields = ["upn", "user", "mail", "objectId"] as const;
type ReferenceField = typeof referenceFields[number];

/** Header spellings, normalised by {@link normaliseName}. */
const aliases: Record<string, Field> = {
  upn: "upn",
  userprincipalname: "upn",
  principalname: "upn",
  email: "mail",
  mail: "mail",
  emailaddress: "mail",
  mailaddress: "mail",
  primarysmtpaddress: "mail",
  objectid: "objectId",
  id: "objectId",
  oid: "objectId",
  user: "user",
  displayname: "displayName",
  name: "displayName",
  fullname: "displayName",
  pin: "pin",
};

/** Lowercase letters and digits only: "User Principal Name" -> "userprincipalname", "E-mail" -> "email". */
function normaliseName(name: string): string {
  const bracketed = /\[([^\]]+)\]/.exec(name)?.[1];
  return (bracketed ?? name).normalize("NFKC").toLowerCase().replace(/[^\p{L}\p{N}]/gu, "");
}

// A UPN or mail address: RFC 5322 atext in the local part (Entra's UPN characters are a subset,
// guests' `#EXT#` included), dot-separated labels of letters, digits and hyphens after the `@`.
const addressPattern =
  /^(?!\.)(?!.*\.\.)[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(?<!\.)@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?\.)+[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?$/u;

const address = z.string().max(csvLimits.maxReferenceLength).regex(addressPattern);
const objectId = z.string().max(csvLimits.maxReferenceLength).pipe(z.guid());
const displayName = z.string().max(csvLimits.maxDisplayNameLength).regex(/^[^\p{Cc}]*$/u);
// CTAP2: a PIN is at least 4 code points and at most 63 bytes of UTF-8.
const pin = z.string().refine((value) => [...value].length >= 4, "too short").refine(
  (value) => new TextEncoder().encode(value).length <= 63,
  { params: { tooLong: true } },
).refine((value) => !/\p{Cc}/u.test(value));

/** What a validated row gives, before duplicate detection. */
type Checked =
  | { ok: true; user: SourceUser }
  | { ok: false; code: SourceFailureCode; message: string; reference?: string };

const describe: Record<ReferenceField, { code: SourceFailureCode; what: string }> = {
  upn: { code: "invalid-upn", what: "a user principal name like alice@contoso.com" },
  mail: { code: "invalid-mail", what: "a mail address like alice@contoso.com" },
  objectId: { code: "invalid-object-id", what: "an object id (GUID)" },
  user: { code: "invalid-user", what: "a UPN like alice@contoso.com or an object id (GUID)" },
};

/**
 * The row of `user` if it is the first of that user in the source, else its `duplicate` failure
 * pointing at the first: a later row naming the same user (case-insensitively) is not provisioned
 * twice. `seen` is the compact table of seen_users.ts, the only per-row memory of a source.
 */
function admit(seen: SeenUsers, user: SourceUser, row: number, repeats: string): SourceRow {
  const first = seen.admit(user.reference, row);
  if (first === undefined) return { row, ok: true, user };
  return {
    row,
    ok: false,
    code: "duplicate",
    message: `Cannot provision ${quote(user.reference)} twice: ${repeats} ${first}`,
    reference: user.reference,
  };
}

/** A value for a message: quoted, control characters escaped, long values cut. */
function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
}

function isTooBig(result: { success: boolean; error?: z.ZodError }): boolean {
  return result.error?.issues.some((issue) =>
    issue.code === "too_big" || (issue.code === "custom" && issue.params?.["tooLong"] === true)
  ) ?? false;
}

/** Validates one reference of a kind; the reference is trimmed and its formula prefix removed. */
function checkReference(
  raw: string,
  field: ReferenceField,
  where: string,
  column: string,
): Checked {
  const value = restoreCell(raw.trim());
  const schemas = field === "objectId" ? [objectId] : field === "user" ? [address, objectId] : [address];
  const results = schemas.map((schema) => schema.safeParse(value));
  const good = results.find((result) => result.success);
  if (good?.success) {
    const reference = addressPattern.test(good.data) ? good.data : good.data.toLowerCase();
    return { ok: true, user: { reference } };
  }
  if (results.every(isTooBig)) {
    return {
      ok: false,
      code: "field-too-long",
      message: `Cannot read ${where}: the ${column} column holds ${value.length} characters, ` +
        `at most ${csvLimits.maxReferenceLength} are allowed`,
      reference: value,
    };
  }
  const { code, what } = describe[field];
  return {
    ok: false,
    code,
    message: `Cannot read ${where}: ${quote(value)} in the ${column} column is not ${what}`,
    reference: value,
  };
}

/** Validates one row's cells: the first non-empty reference, then display name and PIN. */
function checkRow(cells: Cells, where: string): Checked {
  let found: Checked | undefined;
  for (const { field, name, get } of cells.references) {
    const raw = get();
    if (raw === undefined || raw.trim() === "") continue;
    found = checkReference(raw, field, where, JSON.stringify(name));
    break;
  }
  if (found === undefined) {
    const names = cells.references.map(({ name }) => JSON.stringify(name)).join(", ");
    return {
      ok: false,
      code: "missing-user",
      message: `Cannot read ${where}: no user in the ${names} column${
        cells.references.length > 1 ? "s" : ""
      }`,
    };
  }
  if (!found.ok) return found;
  const reference = found.user.reference;
  const user: { reference: string; displayName?: string; pin?: string } = { reference };
  const shownName = cells.displayName?.get();
  if (shownName !== undefined && shownName.trim() !== "") {
    const value = restoreCell(shownName.trim());
    const result = displayName.safeParse(value);
    if (!result.success) {
      const tooLong = isTooBig(result);
      return {
        ok: false,
        code: tooLong ? "field-too-long" : "invalid-display-name",
        message: tooLong
          ? `Cannot read ${where}: the display name holds ${value.length} characters, at most ` +
            `${csvLimits.maxDisplayNameLength} are allowed`
          : `Cannot read ${where}: the display name ${quote(value)} holds control characters`,
        reference,
      };
    }
    user.displayName = result.data;
  }
  const secret = cells.pin?.get();
  if (secret !== undefined && secret !== "") {
    const result = pin.safeParse(secret);
    if (!result.success) {
      // Never the PIN itself, nor its length.
      const tooLong = isTooBig(result);
      return {
        ok: false,
        code: tooLong ? "field-too-long" : "invalid-pin",
        message: `Cannot read ${where}: the PIN of ${quote(reference)} is not 4 characters to 63 bytes ` +
          `without control characters`,
        reference,
      };
    }
    user.pin = result.data;
  }
  return { ok: true, user };
}

/** How a header maps fields to cells of a record. */
interface Cells {
  references: { field: ReferenceField; name: string; get: () => string | undefined }[];
  displayName?: { get: () => string | undefined };
  pin?: { get: () => string | undefined };
}

interface Layout {
  width: number;
  references: { field: ReferenceField; name: string; index: number }[];
  displayName?: number;
  pin?: number;
}

function usage(code: string, message: string, hint: string, cause?: unknown): ProvisioningError {
  return new ProvisioningError(code, message, {
    hint,
    exitCode: 2,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** Resolves the header record into a layout, or throws what the admin should do. */
function resolveHeader(header: string[], options: CsvSourceOptions, file: string): Layout {
  if (header.length > csvLimits.maxColumns) {
    throw usage(
      "csv-too-many-columns",
      `Cannot read ${file}: its header has ${header.length} columns, at most ${csvLimits.maxColumns} are allowed`,
      "Check the delimiter, or keep only the user columns",
    );
  }
  const names = header.map((name) => name.trim());
  const normalised = names.map(normaliseName);
  const found = new Map<Field, number>();
  const overrides = Object.entries(options.column ?? {});
  for (const [key, wanted] of overrides) {
    const field = aliases[normaliseName(key)];
    if (field === undefined) {
      throw usage(
        "csv-column",
        `Cannot use --column ${key}=${wanted}: ${JSON.stringify(key)} is not a field`,
        "Use one of upn, mail, objectId, user, displayName, pin, e.g. --column upn=Email",
      );
    }
    let index = names.indexOf(wanted.trim());
    if (index < 0) index = normalised.indexOf(normaliseName(wanted));
    if (index < 0) {
      throw usage(
        "csv-column",
        `Cannot use --column ${key}=${wanted}: ${file} has no column ${JSON.stringify(wanted)}`,
        `Its columns are ${names.map((name) => JSON.stringify(name)).join(", ")}`,
      );
    }
    found.set(field, index);
  }
  const referenceChosen = [...found.keys()].some((field) =>
    (referenceFields as readonly string[]).includes(field)
  );
  normalised.forEach((name, index) => {
    const field = aliases[name];
    if (field === undefined || found.has(field)) return;
    if (referenceChosen && (referenceFields as readonly string[]).includes(field)) return;
    found.set(field, index);
  });
  const references = referenceFields.flatMap((field) => {
    const index = found.get(field);
    return index === undefined ? [] : [{ field, name: names[index] ?? field, index }];
  });
  if (references.length === 0) {
    const first = names[0] ?? "";
    const looksLikeData = addressPattern.test(restoreCell(first)) || z.guid().safeParse(first).success;
    throw usage(
      "csv-no-header",
      `Cannot read ${file}: row 1 is not a header with a user column (found ${
        names.slice(0, 8).map((name) => quote(name)).join(", ")
      }${names.length > 8 ? ", ..." : ""})`,
      looksLikeData
        ? 'The file seems to have no header line: add one, such as "upn", as its first line'
        : "Name the column with --column upn=<header>, or rename it to UPN, mail or objectId",
    );
  }
  const layout: Layout = { width: header.length, references };
  const shown = found.get("displayName");
  if (shown !== undefined) layout.displayName = shown;
  const secret = found.get("pin");
  if (secret !== undefined) layout.pin = secret;
  return layout;
}

// ---------------------------------------------------------------------------------------------
// Decoding: bytes -> text, refusing what is not text.

/** A file-level problem found while decoding, after `valid` (the text before it) was handed on. */
class DecodeStop {
  constructor(readonly valid: string, readonly error: (where: string) => ProvisioningError) {}
}

const saveAsUtf8 = 'Save it as UTF-8 (in Excel: Save As > "CSV UTF-8 (Comma delimited)") and run again';

/**
 * Most bytes decoded at once. A stream's chunks may be of any size; cut into pieces of 16 KiB,
 * every string a batch of rows is cut from stays well under V8's large-object size (128 KiB) and
 * dies young, instead of being promoted whole to the old generation, which is what made memory
 * peaks on huge files depend on how busy the machine was.
 */
const maxPieceBytes = 16 * 1024;

async function* decode(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  file: string,
): AsyncGenerator<string, void, undefined> {
  let rest: Uint8Array = new Uint8Array(0);
  const read = async (): Promise<ReadableStreamReadResult<Uint8Array>> => {
    if (rest.length === 0) {
      const next = await reader.read();
      if (next.done) return next;
      rest = next.value;
    }
    const piece = rest.subarray(0, maxPieceBytes);
    rest = rest.subarray(piece.length);
    return { done: false, value: piece };
  };
  // Sniff the first bytes: a BOM picks the encoding, a known container is refused by name.
  let head: Uint8Array = new Uint8Array(0);
  let done = false;
  while (head.length < 4 && !done) {
    const next = await read();
    if (next.done) done = true;
    else head = concat(head, next.value);
  }
  const starts = (...bytes: number[]) => bytes.every((byte, i) => head[i] === byte);
  if (starts(0x50, 0x4b, 0x03, 0x04) || starts(0xd0, 0xcf, 0x11, 0xe0)) {
    throw usage(
      "csv-not-csv",
      `Cannot read ${file}: it is a spreadsheet workbook (.xlsx or .xls), not a CSV file`,
      saveAsUtf8,
    );
  }
  const encoding = starts(0xff, 0xfe) ? "utf-16le" : starts(0xfe, 0xff) ? "utf-16be" : "utf-8";
  const decoder = new TextDecoder(encoding, { fatal: true });
  let offset = 0;
  // The end of the input so far that the streaming decoder holds back (an unfinished character).
  let carry: Uint8Array = new Uint8Array(0);
  let chunk: Uint8Array | undefined = head;
  while (chunk !== undefined) {
    let text: string;
    try {
      text = decoder.decode(chunk, { stream: !done });
    } catch (cause) {
      // Where it went wrong, counted from the first byte of the character held back, if any.
      const lenient = new TextDecoder(encoding, { ignoreBOM: true }).decode(concat(carry, chunk), {
        stream: true,
      });
      const bad = lenient.indexOf("\uFFFD");
      const prefix = bad < 0 ? "" : lenient.slice(0, bad);
      const at = offset - carry.length +
        (encoding === "utf-8" ? new TextEncoder().encode(prefix).length : prefix.length * 2);
      const valid = offset === 0 && prefix.startsWith("\uFEFF") ? prefix.slice(1) : prefix;
      throw new DecodeStop(valid, (where) =>
        usage(
          "csv-encoding",
          `Cannot read ${file}: ${where} is not valid ${encoding.toUpperCase()} (near byte ${at})`,
          saveAsUtf8,
          cause,
        ));
    }
    const nul = text.indexOf("\0");
    if (nul >= 0) {
      throw new DecodeStop(text.slice(0, nul), (where) =>
        usage(
          "csv-binary",
          `Cannot read ${file}: ${where} holds a NUL character, so this is binary data or UTF-16 without a BOM, ` +
            `not CSV text`,
          saveAsUtf8,
        ));
    }
    offset += chunk.length;
    carry = heldBack(carry.length === 0 ? chunk : concat(carry, chunk), encoding).slice();
    if (text !== "") yield text;
    if (done) break;
    const next = await read();
    if (next.done) {
      done = true;
      chunk = new Uint8Array(0);
    } else {
      chunk = next.value;
    }
  }
}

/**
 * The bytes at the end of valid `bytes` that a streaming decoder keeps for the next call: an
 * unfinished UTF-8 sequence, or an odd byte and a high surrogate in UTF-16.
 */
function heldBack(bytes: Uint8Array, encoding: string): Uint8Array {
  const length = bytes.length;
  if (encoding === "utf-8") {
    for (let back = 1; back <= Math.min(3, length); back++) {
      const byte = bytes[length - back]!;
      if ((byte & 0xc0) === 0x80) continue; // a continuation byte
      const needed = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
      return bytes.subarray(needed > back ? length - back : length);
    }
    return bytes.subarray(length);
  }
  const end = length - (length % 2);
  if (end >= 2) {
    const unit = encoding === "utf-16le"
      ? bytes[end - 2]! | (bytes[end - 1]! << 8)
      : (bytes[end - 2]! << 8) | bytes[end - 1]!;
    if (unit >= 0xd800 && unit <= 0xdbff) return bytes.subarray(end - 2);
  }
  return bytes.subarray(end);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Record boundaries: a small state machine that follows csv-parse's quoting rules (a quote opens a
// quoted field only at the start of a field; `""` inside is a quote), so text can be cut into
// batches of whole records without parsing them.

const FIELD_START = 0, UNQUOTED = 1, QUOTED = 2, QUOTE_SEEN = 3;

class Boundaries {
  state = FIELD_START;
  constructor(readonly delimiters: string) {}

  /** Scans `text` from `from`; returns the offsets just after each record's line feed. */
  scan(text: string, from: number, ends: number[] | undefined): number {
    let last = -1;
    let state = this.state;
    const delimiters = this.delimiters;
    for (let i = from; i < text.length; i++) {
      const c = text.charCodeAt(i);
      switch (state) {
        case QUOTED:
          if (c === 34) state = QUOTE_SEEN;
          break;
        case QUOTE_SEEN:
          if (c === 34) state = QUOTED;
          else if (c === 10) {
            state = FIELD_START;
            last = i + 1;
            ends?.push(last);
          } else if (delimiters.includes(text[i] as string)) state = FIELD_START;
          else if (c !== 13) state = UNQUOTED;
          break;
        default:
          if (c === 10) {
            state = FIELD_START;
            last = i + 1;
            ends?.push(last);
          } else if (c === 34 && state === FIELD_START) state = QUOTED;
          else if (delimiters.includes(text[i] as string)) state = FIELD_START;
          else state = UNQUOTED;
      }
    }
    this.state = state;
    return last;
  }

  get inQuotes(): boolean {
    return this.state === QUOTED;
  }
}

/** Picks the delimiter of the header line: the most frequent of `,` `;` tab outside quotes. */
function sniffDelimiter(line: string): string {
  const counts = new Map<string, number>([[",", 0], [";", 0], ["\t", 0]]);
  let quoted = false;
  for (const char of line) {
    if (char === '"') quoted = !quoted;
    else if (!quoted && counts.has(char)) counts.set(char, (counts.get(char) ?? 0) + 1);
  }
  let best = ",";
  for (const [delimiter, count] of counts) if (count > (counts.get(best) ?? 0)) best = delimiter;
  return best;
}

/** How csv-parse reads a batch or one record: ragged rows and stray quotes become row failures, not crashes. */
function parseOptions(delimiter: string) {
  return {
    delimiter,
    record_delimiter: ["\r\n", "\n"],
    relax_column_count: true,
    relax_quotes: true,
    bom: false,
  };
}

const csvErrorHelp: Record<string, string> = {
  CSV_INVALID_CLOSING_QUOTE:
    'a quoted field goes on after its closing quote (write a quote inside quotes as "")',
  CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE: "a quoted field goes on after its closing quote",
};

/**
 * Reads users from a CSV stream. See the module documentation for what is accepted.
 *
 * @throws {ProvisioningError} (exit code 2) for a problem with the file itself: codes
 * `csv-empty`, `csv-no-header`, `csv-column`, `csv-encoding`, `csv-binary`, `csv-not-csv`,
 * `csv-row-too-long`, `csv-unclosed-quote`, `csv-too-many-columns`.
 */
export async function* readUsersFromCsv(
  input: ReadableStream<Uint8Array>,
  options: CsvSourceOptions = {},
): AsyncGenerator<SourceRow, void, undefined> {
  const file = JSON.stringify(options.source ?? "the CSV input");
  const reader = input.getReader();
  let row = 0; // the last row handed on (the header is row 1)
  let layout: Layout | undefined;
  let cells: Cells | undefined;
  let record: string[] = [];
  const seen = new SeenUsers({ expectedUsers: options.expectedRows });
  let delimiter: string | undefined;
  let boundaries = new Boundaries(",;\t");
  let pending = "";
  let scanned = 0;

  const handle = (fields: string[], where: number): SourceRow | undefined => {
    if (layout === undefined) {
      layout = resolveHeader(fields, options, file);
      const at = (index: number) => () => record[index];
      cells = {
        references: layout.references.map(({ field, name, index }) => ({ field, name, get: at(index) })),
      };
      if (layout.displayName !== undefined) cells.displayName = { get: at(layout.displayName) };
      if (layout.pin !== undefined) cells.pin = { get: at(layout.pin) };
      return undefined;
    }
    if (fields.every((field) => field.trim() === "")) return undefined;
    const here = `row ${where} of ${file}`;
    if (fields.length !== layout.width) {
      const reference = layout.references.map(({ index }) => fields[index]?.trim() ?? "").find((value) =>
        value !== ""
      );
      return {
        row: where,
        ok: false,
        code: "ragged-row",
        message:
          `Cannot read ${here}: it has ${fields.length} field${
            fields.length === 1 ? "" : "s"
          }, the header has ${layout.width} ` +
          `(an unquoted delimiter in a value?)`,
        ...(reference === undefined ? {} : { reference: restoreCell(reference) }),
      };
    }
    record = fields;
    const checked = checkRow(cells as Cells, here);
    if (!checked.ok) return { row: where, ...checked };
    return admit(seen, checked.user, where, `${here} repeats row`);
  };

  /** Parses a batch of whole records and hands on their rows. */
  function* batch(text: string): Generator<SourceRow, void, undefined> {
    if (delimiter === undefined) {
      const firstLine = text.slice(0, new Boundaries(",;\t").scan(text, 0, undefined));
      delimiter = sniffDelimiter(firstLine || text);
      boundaries = new Boundaries(delimiter);
      boundaries.scan(pending, 0, undefined); // re-sync the state on what is still pending
    }
    let records: string[][] | undefined;
    try {
      records = parse(text, parseOptions(delimiter)) as string[][];
    } catch {
      records = undefined;
    }
    const ends: number[] = [];
    new Boundaries(delimiter).scan(text, 0, ends);
    if (text !== "" && !text.endsWith("\n")) ends.push(text.length);
    if (records !== undefined && records.length === ends.length) {
      for (const fields of records) {
        const result = handle(fields, ++row);
        if (result !== undefined) yield result;
      }
      return;
    }
    // Something in this batch did not parse: take it record by record to name the row.
    let start = 0;
    for (const end of ends) {
      const one = text.slice(start, end);
      start = end;
      const where = ++row;
      let fields: string[][];
      try {
        fields = parse(one, parseOptions(delimiter)) as string[][];
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (layout === undefined) {
          throw usage(
            "csv-no-header",
            `Cannot read ${file}: its header line is not valid CSV (${String(code)})`,
            "Check that the first line holds column names separated by commas, semicolons or tabs",
            error,
          );
        }
        yield {
          row: where,
          ok: false,
          code: "malformed-row",
          message: `Cannot read row ${where} of ${file}: ${
            (typeof code === "string" ? csvErrorHelp[code] : undefined) ?? "it is not valid CSV"
          } (${String(code)})`,
        };
        continue;
      }
      const result = handle(fields[0] ?? [""], where);
      if (result !== undefined) yield result;
    }
  }

  try {
    let stop: DecodeStop | undefined;
    const texts = decode(reader, file);
    let sawText = false;
    while (true) {
      let text: string;
      try {
        const next = await texts.next();
        if (next.done) break;
        text = next.value;
      } catch (error) {
        if (!(error instanceof DecodeStop)) throw error;
        stop = error;
        text = error.valid;
      }
      if (text !== "") sawText = true;
      pending += text;
      const end = boundaries.scan(pending, scanned, undefined);
      scanned = pending.length;
      if (end > 0) {
        const whole = pending.slice(0, end);
        pending = pending.slice(end);
        scanned = pending.length;
        yield* batch(whole);
      }
      if (pending.length > csvLimits.maxRowLength) {
        throw usage(
          "csv-row-too-long",
          `Cannot read ${file}: row ${row + 1} is longer than ${csvLimits.maxRowLength} characters` +
            (boundaries.inQuotes ? " (it opens a quote that is not closed)" : ""),
          "Check the quotes of that row, or shorten its values",
        );
      }
      if (stop !== undefined) throw stop.error(`row ${row + 1}`);
    }
    if (!sawText) {
      throw usage(
        "csv-empty",
        `Cannot read ${file}: it is empty`,
        'Give a CSV file with a header line such as "upn" and one user per row',
      );
    }
    if (boundaries.inQuotes) {
      throw usage(
        "csv-unclosed-quote",
        `Cannot read ${file}: row ${row + 1} opens a quote that is never closed`,
        'Close the quote (a quote inside a quoted value is written "")',
      );
    }
    if (pending !== "") yield* batch(pending);
    if (layout === undefined) {
      throw usage(
        "csv-empty",
        `Cannot read ${file}: it holds no header line`,
        'Give a CSV file with a header line such as "upn" and one user per row',
      );
    }
  } finally {
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

/** Options of {@link readUsersFromList}. */
export interface ListSourceOptions {
  /** Where `-` reads lines from. @default Deno.stdin.readable */
  stdin?: ReadableStream<Uint8Array>;
}

/**
 * Users given one by one: `--user UPN` (repeatable) and `-` for one reference per line of stdin
 * (blank lines and `#` comments skipped). Each is a UPN, mail address or object id; rows are
 * numbered by position, a line of stdin counting as one position.
 *
 * @example
 * ```ts
 * import { readUsersFromList } from "./csv.ts";
 * const stdin = new Blob(["carol@contoso.com\n\nALICE@contoso.com\n"]).stream();
 * const rows = [];
 * for await (const row of readUsersFromList(["alice@contoso.com", "-"], { stdin })) rows.push(row);
 * console.assert(rows.length === 3 && rows[2]?.ok === false && rows[2].code === "duplicate");
 * ```
 *
 * @throws {ProvisioningError} `usage` when `-` is given twice; `csv-encoding`, `csv-binary`,
 * `csv-row-too-long` for stdin that is not lines of text.
 */
export async function* readUsersFromList(
  references: readonly string[],
  options: ListSourceOptions = {},
): AsyncGenerator<SourceRow, void, undefined> {
  if (references.filter((reference) => reference === "-").length > 1) {
    throw usage("usage", 'Cannot read stdin twice: "-" is given more than once', 'Give "-" once');
  }
  const seen = new SeenUsers();
  let row = 0;
  const check = (value: string, where: string): SourceRow => {
    const at = ++row;
    const checked = checkReference(value, "user", where, "user");
    if (!checked.ok) return { row: at, ...checked };
    return admit(seen, checked.user, at, `${where} repeats user`);
  };
  for (const reference of references) {
    if (reference !== "-") {
      if (reference.trim() === "") {
        row++;
        yield {
          row,
          ok: false,
          code: "missing-user",
          message: `Cannot read user ${row}: it is empty`,
        };
      } else {
        yield check(reference, `user ${row + 1} (--user)`);
      }
      continue;
    }
    const input = options.stdin ?? Deno.stdin.readable;
    const reader = input.getReader();
    try {
      const texts = decode(reader, "stdin");
      let pending = "";
      let line = 0;
      const lines = function* (text: string, last: boolean) {
        pending += text;
        let start = 0;
        let end: number;
        while ((end = pending.indexOf("\n", start)) >= 0 || (last && start < pending.length)) {
          const stop = end < 0 ? pending.length : end;
          yield pending.slice(start, stop).replace(/\r$/, "").trim();
          start = stop + 1;
        }
        pending = pending.slice(start);
        if (pending.length > csvLimits.maxRowLength) {
          throw usage(
            "csv-row-too-long",
            `Cannot read stdin: line ${line + 1} is longer than ${csvLimits.maxRowLength} characters`,
            "Give one user per line",
          );
        }
      };
      while (true) {
        let text: string;
        let stop: DecodeStop | undefined;
        let last = false;
        try {
          const next = await texts.next();
          last = next.done === true;
          text = next.done ? "" : next.value;
        } catch (error) {
          if (!(error instanceof DecodeStop)) throw error;
          stop = error;
          text = error.valid;
        }
        for (const value of lines(text, last)) {
          line++;
          if (value === "" || value.startsWith("#")) {
            row++;
            continue;
          }
          yield check(value, `line ${line} of stdin`);
        }
        if (stop !== undefined) throw stop.error(`line ${line + 1}`);
        if (last) break;
      }
    } finally {
      await reader.cancel().catch(() => undefined);
      reader.releaseLock();
    }
  }
}
