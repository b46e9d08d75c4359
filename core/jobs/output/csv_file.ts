/**
 * An append-only CSV file for the run's outputs (results.csv, failures.csv): created 0600 with a
 * UTF-8 BOM (so Excel reads names right) and a header, or reopened for appending after a resumed
 * run (its header checked, a line cut short by a crash removed); every row is one write of whole
 * bytes, formula cells neutralised (see `formula.ts`), every non-empty cell quoted; `close()`
 * fsyncs.
 *
 * Why 0600 although these files hold no secrets: they list every user of the run with object ids
 * and credential ids, which is directory data nobody else on the machine needs; the journal and the
 * vault are 0600 too, so every file a run writes is.
 *
 * @module
 */
import { stringify } from "csv-stringify/sync";
import { ProvisioningError } from "../../errors.ts";
import { describeIoError, isNoSpace } from "../disk_errors.ts";
import { neutraliseCell } from "./formula.ts";

const bom = "\uFEFF";
const encoder = new TextEncoder();

/**
 * Renders one row: neutralised, NUL replaced (a reader refuses it as binary), CRLF, every non-empty
 * cell quoted with its quotes doubled (RFC 4180; what csv-stringify's `quoted: true` writes, at a
 * tenth of its cost per row: the property test in output_test.ts holds them equal).
 */
export function formatCsvRow(cells: readonly string[]): string {
  let line = "";
  for (let i = 0; i < cells.length; i++) {
    const cell = neutraliseCell(cells[i]!.replaceAll("\0", "\uFFFD"));
    if (i > 0) line += ",";
    if (cell !== "") line += `"${cell.replaceAll('"', '""')}"`;
  }
  return `${line}\r\n`;
}

/** {@link formatCsvRow} by csv-stringify, for the test that holds the two equal. */
export function formatCsvRowByLibrary(cells: readonly string[]): string {
  return stringify([cells.map((cell) => neutraliseCell(cell.replaceAll("\0", "\uFFFD")))], {
    quoted: true,
    record_delimiter: "\r\n",
  });
}

/** An open output file; rows are written in call order even when calls overlap. */
export class CsvAppender implements AsyncDisposable {
  #file: Deno.FsFile;
  #pending: { line: string; resolve: () => void; reject: (error: unknown) => void }[] = [];
  #writing: Promise<void> | undefined;
  #closed = false;
  #failed: ProvisioningError | undefined;

  /** Bytes of whole rows in the file: a failed write is cut back to this. */
  #size: number;

  private constructor(file: Deno.FsFile, readonly path: string, size: number) {
    this.#file = file;
    this.#size = size;
  }

  /**
   * Opens `path` for appending rows under `header`, creating it when missing; with `fresh`, an
   * existing file is emptied first (a run that rewrites its outputs from its journal).
   */
  static async open(
    path: string,
    header: readonly string[],
    options: { fresh?: boolean } = {},
  ): Promise<CsvAppender> {
    const headerLine = formatCsvRow(header);
    const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    let size: number;
    try {
      if (Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
      if (options.fresh) await file.truncate(0);
      const existing = (await file.stat()).size;
      if (existing === 0) {
        await writeAll(file, encoder.encode(bom + headerLine));
      } else {
        await checkExisting(file, path, existing, headerLine);
      }
      size = await file.seek(0, Deno.SeekMode.End);
    } catch (error) {
      file.close();
      if (error instanceof ProvisioningError) throw error;
      throw outputWriteError(path, error);
    }
    return new CsvAppender(file, path, size);
  }

  /**
   * Appends one row. Rows appended while a write is in progress go out together in the next one
   * (whole rows, in call order): a million rows rewritten from a journal are not a million system
   * calls. Resolves once the row is written (not yet fsynced).
   */
  append(cells: readonly string[]): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closed) return Promise.reject(new Error(`Cannot write to "${this.path}": it is closed`));
    const line = formatCsvRow(cells);
    return new Promise((resolve, reject) => {
      this.#pending.push({ line, resolve, reject });
      this.#writing ??= this.#drain();
    });
  }

  /** Writes what is pending, batch after batch; never settles synchronously. */
  async #drain(): Promise<void> {
    await Promise.resolve();
    while (this.#pending.length > 0) {
      const batch = this.#pending;
      this.#pending = [];
      try {
        await this.#appendRows(encoder.encode(batch.map((p) => p.line).join("")));
        for (const p of batch) p.resolve();
      } catch (error) {
        for (const p of batch) p.reject(error);
      }
    }
    this.#writing = undefined;
  }

  /** Writes whole rows, or cuts back what a failed write left, so the file holds whole rows. */
  async #appendRows(bytes: Uint8Array): Promise<void> {
    if (this.#failed) throw this.#failed;
    try {
      await writeAll(this.#file, bytes);
      this.#size += bytes.length;
    } catch (error) {
      this.#failed ??= outputWriteError(this.path, error);
      // Cutting frees space, so it works on a full disk too; a reader then sees whole rows only.
      await this.#file.truncate(this.#size).catch(() => {});
      await this.#file.seek(this.#size, Deno.SeekMode.Start).catch(() => {});
      throw this.#failed;
    }
  }

  /** Waits until every row appended so far is written (or failed). */
  async #written(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  /** Waits for the rows written so far and makes them durable (fsync). */
  async sync(): Promise<void> {
    await this.#written();
    if (this.#failed) throw this.#failed;
    await this.#guard(this.#file.sync());
  }

  /**
   * A write that failed (a full disk) may have left part of a row: later rows are refused with the
   * same error, which names the file and the cause.
   */
  async #guard(operation: Promise<void>): Promise<void> {
    try {
      await operation;
    } catch (error) {
      this.#failed ??= outputWriteError(this.path, error);
      throw this.#failed;
    }
  }

  /**
   * Syncs and closes; a second call does nothing. A file whose write already failed is closed
   * quietly: that error went to the writer (a disposal must not hide it behind a second one).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#written();
      if (!this.#failed) await this.#guard(this.#file.sync());
    } finally {
      this.#file.close();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The reason code of an output file that cannot be written: the run stops; nobody's result is lost. */
export const outputWriteFailedCode = "output-write-failed";

/** A failed write to an output file, naming it, its cause and what to do. */
export function outputWriteError(path: string, error: unknown): ProvisioningError {
  return new ProvisioningError(
    outputWriteFailedCode,
    `Cannot write "${path}": ${describeIoError(error)}`,
    {
      cause: error,
      hint: `${
        isNoSpace(error)
          ? "Free space on the disk that holds it (or give --results/--failures elsewhere)"
          : "Check the file and its folder"
      }, then run the same command again: the results already journaled are written again, none is lost`,
    },
  );
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

/** Checks the header of a file being appended to and cuts a last line that a crash left short. */
async function checkExisting(
  file: Deno.FsFile,
  path: string,
  size: number,
  headerLine: string,
): Promise<void> {
  const expected = encoder.encode(bom + headerLine);
  const head = new Uint8Array(Math.min(size, expected.length));
  await file.seek(0, Deno.SeekMode.Start);
  let read = 0;
  while (read < head.length) {
    const n = await file.read(head.subarray(read));
    if (n === null) break;
    read += n;
  }
  if (read !== expected.length || !head.every((byte, i) => byte === expected[i])) {
    throw new ProvisioningError(
      "output-header-mismatch",
      `Cannot append to "${path}": it is not a file this version wrote (its first line differs)`,
      { hint: "Move it away or choose another output folder, then run again", exitCode: 2 },
    );
  }
  // Find the last line feed; anything after it is a row cut short by a crash.
  const window = 64 * 1024;
  let end = size;
  while (end > expected.length) {
    const start = Math.max(expected.length, end - window);
    const buffer = new Uint8Array(end - start);
    await file.seek(start, Deno.SeekMode.Start);
    let got = 0;
    while (got < buffer.length) {
      const n = await file.read(buffer.subarray(got));
      if (n === null) break;
      got += n;
    }
    const lf = buffer.lastIndexOf(10);
    if (lf >= 0) {
      const keep = start + lf + 1;
      if (keep < size) await file.truncate(keep);
      return;
    }
    end = start;
  }
  if (size > expected.length) await file.truncate(expected.length);
}
