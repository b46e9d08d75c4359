/**
 * The panel's HTTP plumbing shared by the API and the pages: the error every refusal becomes
 * (`{error:{code,message}}` with its status), JSON answers, bodies read with a size limit and parsed
 * with zod, and the headers every answer carries (no caching, no sniffing, no referrer, a strict
 * content security policy).
 *
 * @module
 */
import { z } from "zod";

/** A refusal with its HTTP status: the API answers it as `{error:{code,message}}`, a page as an error page. */
export class PanelHttpError extends Error {
  /** The HTTP status (400, 401, 403, 404, 405, 409, 413). */
  readonly status: number;
  /** Stable, kebab-case reason (`csrf-missing`, `role-forbidden`, `lease-lost` …). */
  readonly code: string;
  /** Extra fields of the JSON answer beside `error` (e.g. the job a lease refusal is about). */
  readonly extra: Record<string, unknown> | undefined;

  constructor(status: number, code: string, message: string, extra?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

/** Headers on every answer of the panel. */
export const securityHeaders: Readonly<Record<string, string>> = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
};

/** A JSON answer with the panel's headers. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...securityHeaders, "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** The JSON answer of a refusal. */
export function errorJson(error: PanelHttpError): Response {
  return json({ error: { code: error.code, message: error.message }, ...error.extra }, error.status);
}

/** The largest JSON body the API reads. */
export const maxJsonBytes = 1 << 20;
/** The largest CSV body of a users import (about 200,000 rows of typical length). */
export const maxCsvBytes = 32 << 20;

/** Reads a body as text, refusing one larger than `limit` bytes with 413 (without reading it all). */
export async function readText(request: Request, limit: number): Promise<string> {
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > limit) throw tooLarge(limit);
  if (request.body === null) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(limit);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) all.set(chunk, offset), offset += chunk.byteLength;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    throw new PanelHttpError(400, "body-not-utf8", "Cannot read the request body: it is not UTF-8 text");
  }
}

function tooLarge(limit: number): PanelHttpError {
  return new PanelHttpError(
    413,
    "body-too-large",
    `Cannot read the request body: it is larger than ${limit} bytes`,
  );
}

/** Reads and parses a JSON body with `schema`; a bad body is a 400 naming the field. */
export async function parseJsonBody<S extends z.ZodType>(request: Request, schema: S): Promise<z.infer<S>> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) {
    throw new PanelHttpError(
      415,
      "unsupported-media-type",
      `Cannot read a "${type || "(none)"}" body: send application/json`,
    );
  }
  const text = await readText(request, maxJsonBytes);
  let value: unknown;
  try {
    value = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new PanelHttpError(400, "invalid-json", "Cannot read the request body: it is not valid JSON");
  }
  return parseInput(schema, value, "body");
}

/** Parses `value` (a body, a query, a form) with `schema`; a mismatch is a 400 naming the field. */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new PanelHttpError(
    400,
    `invalid-${what}`,
    `Cannot accept the request's ${what}: ${z.prettifyError(parsed.error).replaceAll("\n", " ")}`,
  );
}

/** A URL's query as a plain object (the last value of a repeated name). */
export function queryOf(url: URL): Record<string, string> {
  return Object.fromEntries(url.searchParams);
}

/** Reads an `application/x-www-form-urlencoded` body (the pages' forms). */
export async function readForm(request: Request): Promise<URLSearchParams> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/x-www-form-urlencoded\b/i.test(type)) {
    throw new PanelHttpError(
      415,
      "unsupported-media-type",
      `Cannot read a "${type || "(none)"}" form: send application/x-www-form-urlencoded`,
    );
  }
  return new URLSearchParams(await readText(request, maxJsonBytes));
}

/** Compares two secrets in time independent of where they differ. */
export function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
