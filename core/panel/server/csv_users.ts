/**
 * The panel's users import from a CSV body (`POST /api/v1/users/import`): a directory export with
 * each user's object id and sign-in name. Headers are matched case- and punctuation-insensitively:
 * `objectId` / `id` / `Object ID`, `userPrincipalName` / `UPN` / `signInName`, and optionally
 * `displayName` / `Display name` (the names of Entra's "Download users" export and of Graph's user
 * properties, https://learn.microsoft.com/graph/api/resources/user). `,` or `;` separated, RFC 4180
 * quoting, UTF-8 with or without a BOM.
 *
 * A file with a bad row is refused whole (400 naming the row as a spreadsheet shows it, the header
 * being row 1): an import that silently skipped users would mark them "not in sync" on a full sync.
 *
 * @module
 */
import { parse } from "csv-parse/sync";
import { z } from "zod";
import type { DirectoryUserImport } from "../store/mod.ts";
import { PanelHttpError } from "./http.ts";

/** The most users one CSV import takes. */
export const maxCsvUsers = 200_000;

const headerNames: Readonly<Record<string, keyof DirectoryUserImport>> = {
  objectid: "objectId",
  id: "objectId",
  userprincipalname: "signInName",
  upn: "signInName",
  signinname: "signInName",
  displayname: "displayName",
};

const rowSchema = z.object({
  objectId: z.string().trim().min(1, "the object id is empty").max(200),
  signInName: z.string().trim().min(1, "the sign-in name is empty").max(320),
  displayName: z.string().trim().max(400).optional(),
});

/** Parses a CSV body into users to import; see the module documentation. */
export function parseUsersCsv(text: string): DirectoryUserImport[] {
  const body = text.replace(/^\uFEFF/, "");
  const firstLine = body.slice(0, body.search(/\r?\n|$/));
  const delimiter = firstLine.split(";").length > firstLine.split(",").length ? ";" : ",";
  let records: string[][];
  try {
    records = parse(body, { delimiter, skip_empty_lines: true, relax_column_count: false }) as string[][];
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new PanelHttpError(400, "invalid-csv", `Cannot read the CSV: ${reason}`);
  }
  const [header, ...rows] = records;
  if (header === undefined) throw new PanelHttpError(400, "invalid-csv", "Cannot read the CSV: it is empty");
  const columns = header.map((name) => headerNames[name.toLowerCase().replace(/[^a-z]/g, "")] ?? null);
  for (const required of ["objectId", "signInName"] as const) {
    if (!columns.includes(required)) {
      throw new PanelHttpError(
        400,
        "invalid-csv",
        `Cannot read the CSV: it has no ${required} column (headers: ${header.join(", ")})`,
      );
    }
  }
  if (rows.length > maxCsvUsers) {
    throw new PanelHttpError(
      400,
      "invalid-csv",
      `Cannot import ${rows.length} users at once: at most ${maxCsvUsers}`,
    );
  }
  return rows.map((cells, index) => {
    const record: Record<string, string> = {};
    cells.forEach((cell, i) => {
      const column = columns[i];
      if (column && cell.trim() !== "") record[column] = cell;
    });
    const parsed = rowSchema.safeParse(record);
    if (!parsed.success) {
      const reason = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
      throw new PanelHttpError(400, "invalid-csv", `Cannot import row ${index + 2} of the CSV: ${reason}`);
    }
    const { objectId, signInName, displayName } = parsed.data;
    return displayName === undefined ? { objectId, signInName } : { objectId, signInName, displayName };
  });
}
