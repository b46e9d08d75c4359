/**
 * WebAuthn's relying-party id rules, the check that keeps a tampered server from making us create
 * a credential for another site (WebAuthn L3 §5.1.3 steps 7–8, §5.1.4.1 step 8; HTML's
 * "is a registrable domain suffix of or is equal to",
 * https://html.spec.whatwg.org/multipage/browsers.html#is-a-registrable-domain-suffix-of-or-is-equal-to).
 *
 * A browser lets a page at `origin` use an rp id that is the origin's host or a parent domain of
 * it that is not a public suffix. We do the same and then one thing more: the rp id must also be
 * on the caller's allow-list, because we are not a page; we act for any origin the admin names.
 *
 * Decisions, where browsers leave room:
 *
 * - Origins are `https:`. Plain `http:` is accepted only for loopback hosts (`localhost`,
 *   `*.localhost`, `127.0.0.0/8`, `[::1]`): the "potentially trustworthy" origins of Secure
 *   Contexts §3.1 on which browsers enable WebAuthn, and where the sandboxes run.
 * - An origin must be given in its serialized form (`https://host[:port]`, lowercase, no path or
 *   trailing slash), because the same string goes into clientDataJSON, which the server compares
 *   byte for byte. {@link normalizeOrigin} turns an admin's input into that form.
 * - Browsers refuse WebAuthn on IP-address hosts altogether. We accept an IP-address rp id when it
 *   is exactly the origin's host (a sandbox on `https://127.0.0.1:8443`), never as a suffix; the
 *   allow-list still has to name it.
 * - Hosts are compared after `new URL` normalisation: lowercase, IDNA (punycode). An rp id with a
 *   scheme, port, path, userinfo, percent-escape, whitespace or trailing dot is refused rather
 *   than repaired.
 * - Public suffixes come from the Public Suffix List's ICANN and private sections (`tldts`,
 *   `allowPrivateDomains: true`), as browsers use it: `github.io` is a public suffix.
 *
 * @module
 */
import { getPublicSuffix } from "tldts";
import { WebAuthnError } from "./errors.ts";

/** Why an rp id was refused. */
export type RpIdRefusal =
  /** The origin is not an https origin (or an http loopback origin) in serialized form. */
  | "invalid-origin"
  /** The rp id is not a bare domain or IP address. */
  | "invalid-rp-id"
  /** The rp id is neither the origin's host nor a registrable parent domain of it. */
  | "not-registrable-suffix"
  /** The rp id is valid for the origin but not on the caller's allow-list. */
  | "not-allowed";

/**
 * The rp id a server asked for is not one this origin may use, or not one the caller allows.
 * Nothing has been sent to the authenticator when it is thrown. Code `rp-id-not-allowed`.
 */
export class RpIdNotAllowedError extends WebAuthnError {
  /** The origin the ceremony was for, as given. */
  readonly origin: string;
  /** The caller's allow-list, as given. */
  readonly allowedRpIds: readonly string[];
  /** Which rule refused it. */
  readonly reason: RpIdRefusal;

  constructor(
    message: string,
    details: {
      rpId: string | undefined;
      origin: string;
      allowedRpIds: readonly string[];
      reason: RpIdRefusal;
      hint: string;
    },
  ) {
    super("rp-id-not-allowed", message, {
      hint: details.hint,
      ...(details.rpId === undefined ? {} : { rpId: details.rpId }),
    });
    this.origin = details.origin;
    this.allowedRpIds = details.allowedRpIds;
    this.reason = details.reason;
  }
}

/** What {@link checkRpId} checks. */
export interface CheckRpIdOptions {
  /** The rp id the ceremony would use (after {@link effectiveRpId}). */
  rpId: string;
  /** The origin the ceremony runs for, serialized: `https://login.microsoft.com`. */
  origin: string;
  /** The rp ids the caller (a provider plugin) accepts; compared after normalisation. */
  allowedRpIds: readonly string[];
  /** Only words the error message. @default "create" */
  ceremony?: "create" | "get";
}

/**
 * Refuses an rp id the origin may not use or the caller does not allow; returns nothing when the
 * ceremony may go on. Call it before the authenticator is touched.
 *
 * @throws {RpIdNotAllowedError} naming the rp id, the origin and, where it is the reason, the allow-list.
 * @throws {TypeError} when an entry of `allowedRpIds` is not a domain or IP address (a plugin bug).
 * @example
 * ```ts
 * import { checkRpId, RpIdNotAllowedError } from "./rp_id.ts";
 * const allowedRpIds = ["login.microsoft.com", "microsoft.com"];
 * checkRpId({ rpId: "microsoft.com", origin: "https://login.microsoft.com", allowedRpIds }); // parent domain: fine
 * try {
 *   checkRpId({ rpId: "evil.example", origin: "https://login.microsoft.com", allowedRpIds });
 * } catch (error) {
 *   console.assert(error instanceof RpIdNotAllowedError && error.reason === "not-registrable-suffix");
 * }
 * ```
 */
export function checkRpId(options: CheckRpIdOptions): void {
  const { rpId, origin, allowedRpIds } = options;
  const action = options.ceremony === "get"
    ? `Cannot sign in for rp ${quote(rpId)}`
    : `Cannot create a credential for rp ${quote(rpId)}`;
  const refusal = (reason: RpIdRefusal, why: string, hint: string) =>
    new RpIdNotAllowedError(`${action}: ${why}`, { rpId, origin, allowedRpIds, reason, hint });

  const parsed = parseOrigin(origin);
  if (typeof parsed === "string") throw refusal("invalid-origin", parsed, originHint);

  const rp = normalizeRpId(rpId);
  if (rp === undefined) {
    throw refusal(
      "invalid-rp-id",
      "an rp id is a bare domain (or IP address), without scheme, port, path, spaces or trailing dot",
      "The server sent a malformed rp.id; nothing was sent to the authenticator",
    );
  }
  const relation = suffixRelation(rp, parsed.host);
  if (relation !== "ok") {
    const why = relation === "public-suffix"
      ? `it is a public suffix (like "com", "co.uk" or "github.io"), which no origin may claim; the origin is ${
        quote(origin)
      }`
      : relation === "ip-mismatch"
      ? `origin ${quote(origin)} is on an IP address, and an IP-address rp id must be exactly that address`
      : `it is not a registrable suffix of origin ${quote(origin)}`;
    throw refusal(
      "not-registrable-suffix",
      why,
      "A site may only ask for credentials for its own host or a parent domain below a public suffix: " +
        "the server's options may have been tampered with, and nothing was sent to the authenticator",
    );
  }

  const allowed = allowedRpIds.map((entry) => {
    const normalized = normalizeRpId(entry);
    if (normalized === undefined) {
      throw new TypeError(
        `Cannot check rp ids: allowed rp id ${quote(entry)} is not a bare domain or IP address`,
      );
    }
    return normalized;
  });
  if (!allowed.includes(rp)) {
    const list = allowedRpIds.length === 0
      ? "the list of allowed rp ids is empty"
      : `it is not on the allowed rp ids (${listed(allowedRpIds)})`;
    throw refusal(
      "not-allowed",
      `${list}; origin ${quote(origin)}`,
      "If the provider really uses this rp id, add it to the provider's allowed rp ids; otherwise treat the " +
        "server's options as tampered with. Nothing was sent to the authenticator",
    );
  }
}

/**
 * The rp id a ceremony uses: the server's `rp.id` (creation) or `rpId` (request) when it sent one,
 * normalised (lowercase, punycode), else the origin's host, as browsers default it (WebAuthn L3
 * §5.1.3 step 8). A malformed rp id is returned as given, so that {@link checkRpId} refuses it
 * with the full story; always pass the result through {@link checkRpId}.
 *
 * @throws {RpIdNotAllowedError} reason `invalid-origin` when no rp id was sent and the origin is unusable.
 * @example
 * ```ts
 * import { effectiveRpId } from "./rp_id.ts";
 * console.assert(effectiveRpId(undefined, "https://login.microsoft.com") === "login.microsoft.com");
 * console.assert(effectiveRpId("Login.Microsoft.COM", "https://login.microsoft.com") === "login.microsoft.com");
 * console.assert(effectiveRpId("bücher.example", "https://bücher.example") === "xn--bcher-kva.example");
 * ```
 */
export function effectiveRpId(rpId: string | undefined, origin: string): string {
  if (rpId !== undefined) return normalizeRpId(rpId) ?? rpId;
  const parsed = parseOrigin(origin);
  if (typeof parsed === "string") {
    throw new RpIdNotAllowedError(`Cannot choose an rp id from origin ${quote(origin)}: ${parsed}`, {
      rpId: undefined,
      origin,
      allowedRpIds: [],
      reason: "invalid-origin",
      hint: originHint,
    });
  }
  return parsed.host;
}

/**
 * Turns an origin an admin typed (`https://Login.Microsoft.com/`) into the serialized form the
 * WebAuthn client needs (`https://login.microsoft.com`), refusing what is not an https origin or
 * an http loopback origin.
 *
 * @throws {RpIdNotAllowedError} reason `invalid-origin`.
 * @example
 * ```ts
 * import { normalizeOrigin } from "./rp_id.ts";
 * console.assert(normalizeOrigin("https://Login.Microsoft.com/") === "https://login.microsoft.com");
 * console.assert(normalizeOrigin("http://localhost:8080") === "http://localhost:8080");
 * ```
 */
export function normalizeOrigin(origin: string): string {
  let url: URL | undefined;
  try {
    url = new URL(origin);
  } catch {
    url = undefined;
  }
  const clean = url !== undefined && url.pathname === "/" && url.search === "" && url.hash === "" &&
    url.username === "" && url.password === "";
  const candidate = clean && url ? url.origin : origin;
  const parsed = parseOrigin(candidate);
  if (typeof parsed === "string") {
    throw new RpIdNotAllowedError(`Cannot use origin ${quote(origin)}: ${parsed}`, {
      rpId: undefined,
      origin,
      allowedRpIds: [],
      reason: "invalid-origin",
      hint: originHint,
    });
  }
  return parsed.origin;
}

/**
 * Normalises an rp id the way {@link checkRpId} compares them (lowercase, IDNA to punycode), or
 * returns `undefined` when it is not a bare domain or IP address: a scheme, port, path, userinfo,
 * percent-escape, whitespace, control character, empty label or trailing dot all refuse it, as do
 * IPv4 shorthands (`127.1`). Plugins can use it to validate their allow-lists up front.
 *
 * @example
 * ```ts
 * import { normalizeRpId } from "./rp_id.ts";
 * console.assert(normalizeRpId("LOGIN.microsoft.com") === "login.microsoft.com");
 * console.assert(normalizeRpId("login.microsoft.com:443") === undefined);
 * ```
 */
export function normalizeRpId(rpId: string): string | undefined {
  if (rpId.length === 0 || rpId.length > 253 || rpId.endsWith(".")) return undefined;
  const ipv6 = /^\[[0-9A-Fa-f:.]+\]$/.test(rpId);
  // Characters that would make `new URL` read a port, path, userinfo or escape, or that it strips.
  // deno-lint-ignore no-control-regex -- control characters are exactly what is refused here
  if (!ipv6 && /[\s\u0000-\u001f\u007f/\\?#@%:[\]]/.test(rpId)) return undefined;
  let host: string;
  try {
    const url = new URL(`https://${rpId}/`);
    if (url.port !== "" || url.username !== "" || url.password !== "" || url.pathname !== "/") {
      return undefined;
    }
    host = url.hostname;
  } catch {
    return undefined;
  }
  if (isIpAddress(host)) {
    // No shorthands or alternative spellings: `127.1`, `0x7f.0.0.1`, `[0:0::1]`.
    return host === rpId.toLowerCase() ? host : undefined;
  }
  if (host.length > 253) return undefined;
  const labels = host.split(".");
  if (!labels.every((label) => /^[a-z0-9_-]{1,63}$/.test(label))) return undefined;
  return host;
}

// ---------------------------------------------------------------------------------------------

const originHint = 'Use the origin of the provider\'s sign-in page, serialized as "https://host[:port]" ' +
  '(e.g. "https://login.microsoft.com"); plain http is accepted only for localhost and loopback addresses';

interface ParsedOrigin {
  /** The serialized origin. */
  origin: string;
  /** The host without port, normalised. */
  host: string;
}

/** The origin's parts, or why it is refused. */
function parseOrigin(origin: string): ParsedOrigin | string {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return `origin ${quote(origin)} is not a URL`;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return `origin ${quote(origin)} is not an https origin`;
  }
  const host = url.hostname;
  if (url.protocol === "http:" && !isLoopback(host)) {
    return `origin ${quote(origin)} is plain http on a host other than localhost or a loopback address`;
  }
  if (host === "" || host.endsWith(".")) return `origin ${quote(origin)} has no usable host`;
  if (url.origin !== origin) {
    return `origin ${quote(origin)} is not in serialized form; use ${quote(url.origin)}` +
      (url.pathname !== "/" || url.search !== "" || url.hash !== "" || url.username !== ""
        ? " (an origin has no path, query, fragment or credentials)"
        : "");
  }
  return { origin: url.origin, host };
}

function isIpAddress(host: string): boolean {
  return host.startsWith("[") || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host.endsWith(".localhost") || host === "[::1]" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * HTML's "is a registrable domain suffix of or is equal to", for a normalised rp id and host.
 * Returns why not when it is not.
 */
function suffixRelation(rpId: string, host: string): "ok" | "public-suffix" | "ip-mismatch" | "not-suffix" {
  if (rpId === host) return "ok";
  if (isIpAddress(rpId) || isIpAddress(host)) return "ip-mismatch";
  if (!host.endsWith(`.${rpId}`)) return "not-suffix";
  const options = { allowPrivateDomains: true };
  const rpSuffix = getPublicSuffix(rpId, options);
  const hostSuffix = getPublicSuffix(host, options);
  // Not a hostname tldts accepts: refuse rather than guess.
  if (rpSuffix === null || hostSuffix === null) return "not-suffix";
  // The rp id is itself a public suffix, or lies inside the host's public suffix
  // (`amazonaws.com` for `bucket.s3.amazonaws.com`, whose public suffix is `s3.amazonaws.com`).
  if (rpSuffix === rpId || `.${hostSuffix}`.endsWith(`.${rpId}`)) return "public-suffix";
  return "ok";
}

function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
}

function listed(values: readonly string[]): string {
  const shown = values.slice(0, 10).map(quote).join(", ");
  return values.length > 10 ? `${shown} and ${values.length - 10} more` : shown;
}
