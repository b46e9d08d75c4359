/**
 * Looks at a `--csv` file before a run starts: a file that is no CSV at all (an Excel workbook,
 * a PDF, any binary) is refused before "Run … started", leaving no journal; a CSV saved by Excel
 * as "CSV (Comma delimited)" (Windows-1252, not UTF-8) is recognised and read as such, which the
 * admin is told once.
 *
 * Windows-1252 is recognised when the file has no UTF-8 byte order mark, is not valid UTF-8, and
 * holds none of the five bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D;
 * https://www.unicode.org/Public/MAPPINGS/VENDORS/MICSFT/WINDOWS/CP1252.TXT).
 *
 * @module
 */
import { UsageError } from "../errors.ts";

/** How a CSV file's bytes become text. */
export type CsvEncoding = "utf-8" | "windows-1252";

/** Signatures of files that are not CSV, by their first bytes. */
const notCsv: readonly { readonly magic: readonly number[]; readonly what: string }[] = [
  { magic: [0x50, 0x4b, 0x03, 0x04], what: "a ZIP archive (an Excel .xlsx workbook?)" },
  { magic: [0xd0, 0xcf, 0x11, 0xe0], what: "an old Office document (an Excel .xls workbook?)" },
  { magic: [0x25, 0x50, 0x44, 0x46], what: "a PDF document" },
];

const undefinedInCp1252 = new Set([0x81, 0x8d, 0x8f, 0x90, 0x9d]);

/**
 * Reads `path` once and says how to decode it.
 *
 * @throws {UsageError} the file is not a CSV (a workbook, a PDF, binary data), or is neither
 *   UTF-8 nor Windows-1252
 */
export async function inspectCsvFile(path: string): Promise<CsvEncoding> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch {
    return "utf-8"; // The run reports an unreadable file with its reason.
  }
  using _file = file;
  const buffer = new Uint8Array(1 << 16);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let first = true;
  let validUtf8 = true;
  let validCp1252 = true;
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    const chunk = buffer.subarray(0, n);
    if (first) {
      first = false;
      const kind = notCsv.find(({ magic }) => magic.every((byte, i) => chunk[i] === byte));
      if (kind) throw refused(path, `it is ${kind.what}`);
      if (chunk[0] === 0xef && chunk[1] === 0xbb && chunk[2] === 0xbf) return "utf-8";
    }
    if (chunk.includes(0)) throw refused(path, "it holds binary data (NUL bytes)");
    if (validUtf8) {
      try {
        utf8.decode(chunk, { stream: true });
      } catch {
        validUtf8 = false;
      }
    }
    if (validCp1252 && chunk.some((byte) => undefinedInCp1252.has(byte))) validCp1252 = false;
  }
  if (validUtf8) {
    try {
      utf8.decode();
      return "utf-8";
    } catch {
      // A sequence cut at the end of the file: not UTF-8.
    }
  }
  if (validCp1252) return "windows-1252";
  throw refused(path, "its text is neither UTF-8 nor Windows-1252");
}

function refused(path: string, why: string): UsageError {
  return new UsageError(`Cannot read ${JSON.stringify(path)} as a CSV file: ${why}`, {
    hint: 'Save it as CSV: in Excel, File > Save As > "CSV UTF-8 (Comma delimited)"',
  });
}

/**
 * The file's bytes as UTF-8, decoding Windows-1252 when that is its encoding.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { asUtf8 } from "./csv_file.ts";
 * const cp1252 = new Uint8Array([0x75, 0x70, 0x6e, 0x0a, 0x4a, 0xfc, 0x72, 0x67, 0x65, 0x6e]); // "upn\nJürgen"
 * const text = await new Response(asUtf8(new Blob([cp1252]).stream(), "windows-1252")).text();
 * assert.equal(text, "upn\nJürgen");
 * ```
 */
export function asUtf8(
  stream: ReadableStream<Uint8Array>,
  encoding: CsvEncoding,
): ReadableStream<Uint8Array> {
  if (encoding === "utf-8") return stream;
  return stream.pipeThrough(new TextDecoderStream("windows-1252")).pipeThrough(new TextEncoderStream());
}

/** The line said once when a file is read as Windows-1252. */
export function encodingNotice(path: string): string {
  return `note: ${path} is not UTF-8: read as Windows-1252, the encoding of Excel's "CSV (Comma delimited)"\n`;
}
