/**
 * Neutralising spreadsheet formulas in CSV cells ("CSV injection"), reversibly.
 *
 * OWASP's guidance (https://owasp.org/www-community/attacks/CSV_Injection) is to make sure no
 * cell begins with `=`, `+`, `-`, `@`, tab (0x09) or carriage return (0x0D), by prefixing such a
 * cell with a single quote, and to quote every cell (our writers quote every non-empty cell).
 *
 * A UPN may legitimately begin with `-` (and a mail address with `+` or `=`), and failures.csv must
 * be valid input for a re-run, so the prefix must come off again when we read the file back. To
 * make that exact, the rule also covers cells that already begin with quotes before such a
 * character: {@link neutraliseCell} prefixes one `'` to any cell matching `^'*[=+\-@\t\r]`, and
 * {@link restoreCell} removes one `'` from any cell matching `^'+[=+\-@\t\r]`. The two are inverse
 * for every string, and no neutralised cell begins with a formula character. A hand-written input
 * cell such as `'-alice@contoso.com` therefore reads as `-alice@contoso.com`; Excel itself treats
 * that leading quote as "this is text", so it means the same.
 *
 * @example
 * ```ts
 * import { neutraliseCell, restoreCell } from "./formula.ts";
 * console.assert(neutraliseCell("=HYPERLINK(\"http://x\")") === "'=HYPERLINK(\"http://x\")");
 * console.assert(restoreCell(neutraliseCell("-bob@contoso.com")) === "-bob@contoso.com");
 * console.assert(neutraliseCell("alice@contoso.com") === "alice@contoso.com");
 * ```
 *
 * @module
 */

const needsPrefix = /^'*[=+\-@\t\r]/;
const hasPrefix = /^'+[=+\-@\t\r]/;

/** Returns the cell as written to a CSV file: a formula-looking cell gets a leading `'`. */
export function neutraliseCell(value: string): string {
  return needsPrefix.test(value) ? `'${value}` : value;
}

/** Undoes {@link neutraliseCell}: the value a neutralised cell stood for. */
export function restoreCell(value: string): string {
  return hasPrefix.test(value) ? value.slice(1) : value;
}
