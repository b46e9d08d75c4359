/**
 * The log sink of the CLI: every module logs through `@logtape/logtape` loggers under the
 * `provisioning` category ({@link getLog}), and the CLI calls {@link configureLogging} once to send
 * those records to stderr as human lines (`--log-format text`) or one JSON object per line
 * (`--log-format json`).
 *
 * Secrets are removed **at the sink**, whatever the caller logged, in both formats:
 *
 * - values registered at run time with {@link redactValue} (a PIN, a TAP, a client secret) are
 *   replaced by `[redacted]` wherever they appear: message, fields, nested objects, errors;
 * - fields whose name says secret ({@link isSecretName}: `pin`, `tap`, `password`, `token`,
 *   `clientSecret`, `privateKey`, `authorization`, …, at any depth) are replaced;
 * - text that looks like a secret ({@link redactText}): JWTs, `Bearer …`, PEM private keys,
 *   `client_secret=…`-style pairs and `"access_token": "…"`-style JSON members.
 *
 * {@link formatLogLine} is the same formatter for callers that write log-shaped lines themselves
 * (the progress reporter in `--log-format json`), so they get the same redaction.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { configureLogging, getLog, redactValue } from "./log.ts";
 * import { memoryWriter } from "./cli/context.ts";
 * const writer = memoryWriter();
 * {
 *   using _logging = configureLogging({ format: "json", writer });
 *   using _tap = redactValue("T4P-s3cret-Value");
 *   getLog("jobs").info("Issued TAP {tap} for {user}", { tap: "T4P-s3cret-Value", user: "alice@contoso.com" });
 * }
 * const line = JSON.parse(writer.text());
 * assert.equal(line.message, "Issued TAP [redacted] for alice@contoso.com");
 * assert.equal(line.fields.tap, "[redacted]");
 * ```
 *
 * @module
 */
import {
  type Config,
  configureSync,
  getConfig,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  resetSync,
} from "@logtape/logtape";
import type { TextWriter } from "./cli/context.ts";
import { ProvisioningError } from "./errors.ts";

/** The levels of a log line, lowest first: trace, debug, info, warning, error, fatal (LogTape's). */
export type { LogLevel };

/** What replaces a secret in every log line. */
export const REDACTED = "[redacted]";

/** The category every logger of this tool lives under (`getLog("jobs")` is `provisioning.jobs`). */
export const LOG_CATEGORY = "provisioning";

/** The values `--log-format` accepts. */
export const LOG_FORMATS = ["text", "json"] as const;

/** How log lines are written: `text` for people, `json` (one object per line) for collectors. */
export type LogFormat = typeof LOG_FORMATS[number];

/**
 * The logger for one part of the tool, under {@link LOG_CATEGORY}. Modules call it freely; nothing
 * is written until the CLI calls {@link configureLogging}.
 *
 * @example
 * ```ts
 * import { getLog } from "./log.ts";
 * const log = getLog("entra", "graph");
 * console.assert(log.category.join(".") === "provisioning.entra.graph");
 * ```
 */
export function getLog(...category: string[]): Logger {
  return getLogger([LOG_CATEGORY, ...category]);
}

// ---------------------------------------------------------------------------------------------
// Secret values registered at run time

const registered = new Map<string, number>();
let variants: string[] | undefined;

/**
 * Registers a secret value (a PIN, a TAP, a client secret) so that the sink replaces it by
 * `[redacted]` wherever it shows up, including its URL-encoded and JSON-escaped forms. Returns a
 * handle that unregisters it: keep it for as long as the value could still be logged (a TAP until
 * it is deleted, the PIN for the whole run). Registering the same value twice needs two disposals.
 * An empty value is ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redactText, redactValue } from "./log.ts";
 * {
 *   using _pin = redactValue("482913");
 *   assert.equal(redactText("PIN 482913 rejected"), "PIN [redacted] rejected");
 * }
 * assert.equal(redactText("PIN 482913 rejected"), "PIN 482913 rejected");
 * ```
 */
export function redactValue(secret: string): Disposable {
  if (secret.length === 0) return { [Symbol.dispose]() {} };
  registered.set(secret, (registered.get(secret) ?? 0) + 1);
  variants = undefined;
  let disposed = false;
  return {
    [Symbol.dispose]() {
      if (disposed) return;
      disposed = true;
      const count = (registered.get(secret) ?? 1) - 1;
      if (count > 0) registered.set(secret, count);
      else registered.delete(secret);
      variants = undefined;
    },
  };
}

/** The registered values and the forms they take once encoded, longest first. */
function secretVariants(): string[] {
  if (variants !== undefined) return variants;
  const all = new Set<string>();
  for (const secret of registered.keys()) {
    all.add(secret);
    all.add(encodeURIComponent(secret));
    all.add(new URLSearchParams({ v: secret }).toString().slice(2));
    all.add(JSON.stringify(secret).slice(1, -1));
  }
  all.delete("");
  variants = [...all].sort((a, b) => b.length - a.length);
  return variants;
}

// ---------------------------------------------------------------------------------------------
// Names and text that say "secret"

/** Words that make a name secret wherever they appear in it (`clientSecret`, `passwordHash`). */
const SECRET_WORDS = new Set([
  "password",
  "passwd",
  "passphrase",
  "secret",
  "secrets",
  "cookie",
  "cookies",
  "authorization",
]);
/** Words that make a name secret when they end it (`pin`, `newPin`, `access_token`, `privateKey`). */
const SECRET_LAST_WORDS = new Set([
  "pin",
  "pins",
  "tap",
  "pass",
  "token",
  "tokens",
  "assertion",
  "key",
  "keys",
  "pem",
]);
/** The private members of a JWK (RFC 7518 §6.2.2, §6.3.2, §6.4.1). */
const JWK_PRIVATE_MEMBERS = new Set(["d", "p", "q", "dp", "dq", "qi", "oth", "k"]);

function words(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1 $2")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((word) => word.length > 0);
}

/**
 * True when a field or parameter name says its value is secret, case-insensitively and in any
 * spelling (camelCase, snake_case, kebab-case): `pin`, `tap`, `temporaryAccessPass`, `password`,
 * `client_secret`, `access_token`, `refresh_token`, `id_token`, `client_assertion`, `privateKey`,
 * `key`, `Authorization`, `Set-Cookie`, `passphrase`, `pinUvAuthToken`, …
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isSecretName } from "./log.ts";
 * assert.ok(isSecretName("temporaryAccessPass") && isSecretName("CLIENT_SECRET") && isSecretName("x-api-key"));
 * assert.ok(!isSecretName("keyId") && !isSecretName("skipping") && !isSecretName("pinRetries"));
 * ```
 */
export function isSecretName(name: string): boolean {
  const cached = secretNameCache.get(name);
  if (cached !== undefined) return cached;
  // The end of a name decides; a pathological megabyte-long name is judged by its last 128 characters.
  const parts = words(name.length > 128 ? name.slice(-128) : name);
  const last = parts.at(-1);
  const secret = last !== undefined &&
    (SECRET_LAST_WORDS.has(last) || parts.some((word) => SECRET_WORDS.has(word)));
  if (name.length <= 128) {
    if (secretNameCache.size >= 4096) secretNameCache.clear();
    secretNameCache.set(name, secret);
  }
  return secret;
}

/** Field names repeat on every line: their verdicts are kept (bounded). */
const secretNameCache = new Map<string, boolean>();

/** Text patterns that are secrets whatever surrounds them. */
const PEM_PRIVATE_KEY = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----[\s\S]*?(?:-----END \1PRIVATE KEY-----|$)/g;
/** A JWS (three parts) or JWE (five parts) in compact form: its header is base64url JSON, `eyJ`. */
const JWT =
  /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?/g;
const BEARER = /\b(Bearer|DPoP)(\s{1,8})[A-Za-z0-9._~+/=-]+/gi;
/** `Authorization: …`, `Cookie: …` header lines: the whole value. */
const HEADER_LINE = /\b((?:proxy-)?authorization|cookie|set-cookie)(\s{0,8}:\s{0,8})("?)[^\r\n"]+/gi;
/**
 * `name=value` pairs (query strings, form bodies, `key=value` log text). Names start where a name
 * can start and are bounded, so a megabyte of letters costs linear time, not quadratic.
 */
const PAIR = /(?<![A-Za-z0-9_])([A-Za-z][A-Za-z0-9_.-]{0,63})(\s{0,8}=\s{0,8})("?)([^\s"'&,;<>]+)/g;
/** `"name": "value"` members of JSON held in a string. */
const JSON_MEMBER = /"([A-Za-z][A-Za-z0-9_.-]{0,63})"(\s{0,8}:\s{0,8})"((?:[^"\\]|\\.){0,16384})"/g;

/**
 * Removes secrets from a piece of text: registered values ({@link redactValue}), JWTs, bearer
 * tokens, PEM private keys, `Authorization:`/`Cookie:` header values, and the values of
 * `name=value` pairs and `"name": "value"` JSON members whose name is secret ({@link isSecretName}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redactText } from "./log.ts";
 * assert.equal(
 *   redactText("POST /token client_id=app&client_secret=abc123 with Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."),
 *   "POST /token client_id=app&client_secret=[redacted] with Bearer [redacted]",
 * );
 * ```
 */
export function redactText(text: string): string {
  let out = text;
  for (const secret of secretVariants()) {
    if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  }
  // Each pattern runs only when its anchor is present: most strings (user names, row numbers)
  // have none, and pay for a few `includes` instead of six regular expressions.
  if (out.includes("PRIVATE KEY-----")) out = out.replace(PEM_PRIVATE_KEY, "[redacted private key]");
  if (out.includes("eyJ")) out = out.replace(JWT, REDACTED);
  const lower = out.toLowerCase();
  if (lower.includes("bearer") || lower.includes("dpop")) {
    out = out.replace(BEARER, (_match, scheme: string, space: string) => `${scheme}${space}${REDACTED}`);
  }
  if (out.includes(":") && (lower.includes("authorization") || lower.includes("cookie"))) {
    out = out.replace(
      HEADER_LINE,
      (_match, name: string, colon: string, quote: string) => `${name}${colon}${quote}${REDACTED}`,
    );
  }
  if (out.includes("=")) {
    out = out.replace(
      PAIR,
      (match, name: string, eq: string, quote: string) =>
        isSecretName(name) ? `${name}${eq}${quote}${REDACTED}` : match,
    );
  }
  if (out.includes('"')) {
    out = out.replace(
      JSON_MEMBER,
      (match, name: string, colon: string) => isSecretName(name) ? `"${name}"${colon}"${REDACTED}"` : match,
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Structured values

/** Options of {@link redactFields}. */
export interface RedactFieldsOptions {
  /** Keep the (redacted) stack of errors. @default false */
  stack?: boolean;
  /** Deeper objects are cut to `"[…]"`. @default 8 */
  maxDepth?: number;
}

/**
 * Returns a JSON-safe copy of `value` with every secret removed: strings go through
 * {@link redactText}, members with a secret name ({@link isSecretName}) and the private members of
 * JWKs become `[redacted]`, errors become `{ name, message, code?, hint?, cause?, errors? }` (with
 * their own fields, redacted alike), bytes become `"[N bytes]"`, cycles `"[circular]"`, values
 * whose getters throw `"[unreadable]"`. Booleans, `null` and
 * `undefined` under a secret name are kept: they say whether a secret exists, not what it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { redactFields } from "./log.ts";
 * assert.deepEqual(
 *   redactFields({ user: "alice", request: { headers: { Authorization: "Bearer x" }, body: { pin: 1234 } } }),
 *   { user: "alice", request: { headers: { Authorization: "[redacted]" }, body: { pin: "[redacted]" } } },
 * );
 * ```
 */
export function redactFields(value: unknown, options: RedactFieldsOptions = {}): unknown {
  return walk(value, { stack: options.stack ?? false, maxDepth: options.maxDepth ?? 8, seen: new Set() }, 0);
}

interface WalkState {
  readonly stack: boolean;
  readonly maxDepth: number;
  readonly seen: Set<object>;
}

function walk(value: unknown, state: WalkState, depth: number): unknown {
  switch (typeof value) {
    case "string":
      return redactText(value);
    case "number":
      return redactText(String(value)) === String(value) ? value : REDACTED;
    case "bigint":
      return redactText(String(value));
    case "boolean":
    case "undefined":
      return value;
    case "symbol":
      return redactText(String(value));
    case "function":
      return "[function]";
  }
  if (value === null) return null;
  const object = value as object;
  if (state.seen.has(object)) return "[circular]";
  if (depth >= state.maxDepth) return "[…]";
  if (ArrayBuffer.isView(object)) return `[${object.byteLength} bytes]`;
  if (object instanceof ArrayBuffer || object instanceof SharedArrayBuffer) {
    return `[${object.byteLength} bytes]`;
  }
  if (object instanceof Date) return Number.isNaN(object.getTime()) ? "Invalid Date" : object.toISOString();
  if (object instanceof URL) return redactText(object.href);
  if (object instanceof RegExp) return redactText(String(object));
  state.seen.add(object);
  try {
    if (object instanceof Error) return walkError(object, state, depth);
    if (Array.isArray(object)) return object.map((item) => walk(item, state, depth + 1));
    if (object instanceof Set) return [...object].map((item) => walk(item, state, depth + 1));
    if (object instanceof Map || object instanceof Headers) {
      const entries = [...object.entries()] as [unknown, unknown][];
      return walkEntries(entries.map(([key, item]) => [String(key), item]), state, depth);
    }
    if (object instanceof Request || object instanceof Response) {
      return redactText(
        object instanceof Request
          ? `[Request ${object.method} ${object.url}]`
          : `[Response ${object.status}]`,
      );
    }
    const jwk = "kty" in object;
    const entries = Object.entries(object).map(([key, item]): [string, unknown] =>
      jwk && JWK_PRIVATE_MEMBERS.has(key) ? [key, REDACTED_MARK] : [key, item]
    );
    return walkEntries(entries, state, depth);
  } catch {
    // A getter or proxy that throws: the value cannot be shown, and the line must still be written.
    return "[unreadable]";
  } finally {
    state.seen.delete(object);
  }
}

/** Stands in for a value that is redacted whatever it is. */
const REDACTED_MARK = Symbol("redacted");

function walkEntries(entries: [string, unknown][], state: WalkState, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, item] of entries) {
    const key = redactText(name);
    if (item === REDACTED_MARK) out[key] = REDACTED;
    else if (isSecretName(name) && item !== null && item !== undefined && typeof item !== "boolean") {
      out[key] = REDACTED;
    } else out[key] = walk(item, state, depth + 1);
  }
  return out;
}

function walkError(error: Error, state: WalkState, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { name: redactText(error.name), message: redactText(error.message) };
  if (error instanceof ProvisioningError) {
    out.code = error.code;
    if (error.hint !== undefined) out.hint = redactText(error.hint);
  }
  const own = Object.entries(error).filter(([key]) => !(key in out) && key !== "stack" && key !== "cause");
  Object.assign(out, walkEntries(own, state, depth));
  if (error.cause !== undefined) out.cause = walk(error.cause, state, depth + 1);
  if (error instanceof AggregateError) out.errors = walk(error.errors, state, depth + 1);
  if (state.stack && typeof error.stack === "string") out.stack = redactText(error.stack);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Lines

/** One line of log, before it is formatted: what {@link formatLogLine} takes. */
export interface LogEntry {
  /** Milliseconds since the Unix epoch. */
  readonly time: number;
  readonly level: LogLevel;
  /** E.g. `["provisioning", "jobs"]`. */
  readonly category: readonly string[];
  readonly message: string;
  /** Structured data; redacted on the way out. */
  readonly fields: Readonly<Record<string, unknown>>;
}

/** Options of {@link formatLogLine}. */
export interface FormatLogLineOptions {
  /** Field names the message already shows: text lines do not repeat them. @default none */
  readonly shown?: ReadonlySet<string> | "all";
  /** Include the redacted stack of errors. @default false */
  readonly stack?: boolean;
}

const LEVEL_LABEL: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO ",
  warning: "WARN ",
  error: "ERROR",
  fatal: "FATAL",
};

/**
 * Formats one entry as a line (ending with `\n`), with every secret removed from the message and
 * the fields.
 *
 * - `json`: `{"time":"2025-01-02T03:04:05.000Z","level":"info","category":"provisioning.jobs",
 *   "message":"…","fields":{…}}`.
 * - `text`: `2025-01-02T03:04:05.000Z INFO  jobs: message key=value …`; control characters in
 *   the message and fields are escaped, so a crafted user name cannot forge a line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatLogLine } from "./log.ts";
 * const entry = { time: 0, level: "info" as const, category: ["provisioning", "jobs"], message: "Signed in", fields: { token: "abc" } };
 * assert.equal(formatLogLine(entry, "text"), "1970-01-01T00:00:00.000Z INFO  jobs: Signed in token=[redacted]\n");
 * assert.equal(JSON.parse(formatLogLine(entry, "json")).fields.token, "[redacted]");
 * ```
 */
export function formatLogLine(
  entry: LogEntry,
  format: LogFormat,
  options: FormatLogLineOptions = {},
): string {
  const stack = options.stack ?? false;
  const message = redactText(entry.message);
  const fields = redactFields(entry.fields, { stack }) as Record<string, unknown>;
  const time = isoTime(entry.time);
  if (format === "json") {
    return `${
      JSON.stringify({
        time,
        level: entry.level,
        category: redactText(entry.category.join(".")),
        message,
        fields,
      })
    }\n`;
  }
  const category = redactText(
    entry.category[0] === LOG_CATEGORY && entry.category.length > 1
      ? entry.category.slice(1).join(".")
      : entry.category.join("."),
  );
  const shown = options.shown ?? new Set<string>();
  let line = `${time} ${LEVEL_LABEL[entry.level]} ${escapeControl(category)}: ${escapeControl(message)}`;
  const stacks: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (stack) collectStacks(value, stacks);
    if (value === undefined) continue;
    if (shown === "all" || shown.has(key)) {
      line += errorDetails(value);
      continue;
    }
    line += ` ${escapeControl(key)}=${textValue(value)}`;
  }
  for (const trace of stacks) line += `\n    ${trace.split(/\r?\n/).map(escapeControl).join("\n    ")}`;
  return `${line}\n`;
}

function isoTime(time: number): string {
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? String(time) : date.toISOString();
}

function collectStacks(value: unknown, out: string[]): void {
  if (value === null || typeof value !== "object") return;
  const record = value as Record<string, unknown>;
  if (typeof record.stack === "string" && typeof record.message === "string") out.push(record.stack);
  if (record.cause !== undefined) collectStacks(record.cause, out);
}

/** The code and hint of an error the message already shows (` code=tap-failed hint="…"`). */
function errorDetails(value: unknown): string {
  if (value === null || typeof value !== "object" || !("message" in value) || !("name" in value)) return "";
  const error = value as Record<string, unknown>;
  let out = "";
  if (typeof error.code === "string") out += ` code=${textValue(error.code)}`;
  if (typeof error.hint === "string") out += ` hint=${textValue(error.hint)}`;
  return out;
}

/** A field value that can stand unquoted after `key=`. */
// deno-lint-ignore no-control-regex
const PLAIN_VALUE = /^[^\s"\\=\x00-\x1f\x7f-\x9f\u2028\u2029]+$/;

function textValue(value: unknown): string {
  if (typeof value === "string") {
    return PLAIN_VALUE.test(value) ? value : JSON.stringify(value);
  }
  if (value !== null && typeof value === "object" && "message" in value && "name" in value) {
    const error = value as Record<string, unknown>;
    const code = typeof error.code === "string" ? ` [${error.code}]` : "";
    return JSON.stringify(`${String(error.message)}${code}`);
  }
  return JSON.stringify(value) ?? String(value);
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;

/**
 * Escapes control characters (`\n` → `\\n`, ESC → `\\u001b`, …) so that text from outside
 * (a user name from a CSV file) cannot start a new line or move the cursor when printed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeControl } from "./log.ts";
 * assert.equal(escapeControl("eve\n\x1b[2K"), "eve\\n\\u001b[2K");
 * ```
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL, (char) => {
    switch (char) {
      case "\n":
        return "\\n";
      case "\r":
        return "\\r";
      case "\t":
        return "\\t";
      default:
        return `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The logtape sink

/** Options of {@link configureLogging}. */
export interface LoggingOptions {
  /** Where lines go: the CLI's stderr (or the progress reporter's writer, which keeps the bar intact). */
  readonly writer: TextWriter;
  /** @default "text" */
  readonly format?: LogFormat;
  /** Debug lines and error stacks too (`--verbose`). @default false */
  readonly verbose?: boolean;
}

/** The configured sink; disposing it removes the configuration (tests, the end of the program). */
export interface Logging extends Disposable {
  readonly format: LogFormat;
  readonly verbose: boolean;
}

/**
 * Sends every record of the `provisioning` loggers (and LogTape's own warnings) to `writer`,
 * formatted by {@link formatLogLine} with all secrets removed. Levels from `info` up are written,
 * from `debug` up with `verbose`. Called once by the CLI; a second call replaces the first
 * configuration. Disposing the returned handle resets LogTape (only if the configuration is still
 * this one), so tests leave no global state behind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { configureLogging, getLog } from "./log.ts";
 * import { memoryWriter } from "./cli/context.ts";
 * const writer = memoryWriter();
 * {
 *   using _logging = configureLogging({ writer });
 *   getLog("jobs").debug("not shown without --verbose");
 *   getLog("jobs").warn("Graph answered {status}", { status: 503, authorization: "Bearer abc" });
 * }
 * assert.match(writer.text(), /^\S+ WARN {2}jobs: Graph answered 503 authorization=\[redacted\]\n$/);
 * ```
 */
export function configureLogging(options: LoggingOptions): Logging {
  const format = options.format ?? "text";
  const verbose = options.verbose ?? false;
  const writer = options.writer;
  const sink = (record: LogRecord) => writer.write(formatRecord(record, format, verbose));
  const config: Config<"main", never> = {
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: [LOG_CATEGORY], sinks: ["main"], lowestLevel: verbose ? "debug" : "info" },
      { category: ["logtape", "meta"], sinks: ["main"], lowestLevel: "warning" },
    ],
  };
  configureSync(config);
  return {
    format,
    verbose,
    [Symbol.dispose]() {
      if (getConfig() === config) resetSync();
    },
  };
}

function formatRecord(record: LogRecord, format: LogFormat, verbose: boolean): string {
  const keys = typeof record.rawMessage === "string" ? placeholderKeys(record.rawMessage) : [];
  const message = record.message
    .map((part, index) => index % 2 === 0 ? String(part) : messageValue(part, keys[(index - 1) / 2]))
    .join("");
  const shown = new Set<string>();
  for (const key of keys) {
    if (key === "*") shown.add("*");
    const top = /^[^.[]+/.exec(key)?.[0];
    if (top !== undefined) shown.add(top);
  }
  return formatLogLine(
    {
      time: record.timestamp,
      level: record.level,
      category: record.category,
      message,
      fields: record.properties,
    },
    format,
    { shown: shown.has("*") ? "all" : shown, stack: verbose },
  );
}

/** A value the message shows: redacted outright when its placeholder names a secret (`{tap}`, `{body.pin}`). */
function messageValue(value: unknown, key: string | undefined): string {
  const secretKey = key !== undefined && key !== "*" &&
    key.split(/[.[\]]+/).some((part) => isSecretName(part));
  if (secretKey && value !== null && value !== undefined && typeof value !== "boolean") return REDACTED;
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  return JSON.stringify(redactFields(value)) ?? String(value);
}

/**
 * The placeholder keys of a LogTape message template, in order (`{{` and `}}` are escapes), as
 * LogTape's own parser reads them, so the n-th key names the n-th value of `record.message`.
 */
function placeholderKeys(template: string): string[] {
  const keys: string[] = [];
  for (let i = 0; i < template.length; i++) {
    const char = template[i];
    if (char === "{") {
      if (template[i + 1] === "{") {
        i++;
        continue;
      }
      const close = template.indexOf("}", i + 1);
      if (close === -1) continue;
      keys.push(template.slice(i + 1, close).trim());
      i = close;
    } else if (char === "}" && template[i + 1] === "}") i++;
  }
  return keys;
}
