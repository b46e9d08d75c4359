/**
 * What a failed write says to an admin: a full disk is "no space left on the device", whatever the
 * platform's wording, so that the journal, the output files and their callers can name the file,
 * the cause and what to do in one line.
 *
 * @example
 * ```ts
 * import { describeIoError, isNoSpace } from "./disk_errors.ts";
 * const full = Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
 * console.assert(isNoSpace(full));
 * console.assert(describeIoError(full) === "no space left on the device (ENOSPC)");
 * ```
 *
 * @module
 */

/** True for "no space left on device" (ENOSPC) and a quota exceeded (EDQUOT). */
export function isNoSpace(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return code === "ENOSPC" || code === "EDQUOT" || /no space left|quota exceeded/i.test(error.message);
}

/** An I/O error in a few words: "no space left on the device" for a full disk, else its message. */
export function describeIoError(error: unknown): string {
  if (isNoSpace(error)) return "no space left on the device (ENOSPC)";
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}
