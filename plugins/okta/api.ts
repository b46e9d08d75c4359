/**
 * The Okta Management API client: every request carries the org's credential, goes through the
 * run's shared pacer, waits out Okta's rate limit as its headers say, and turns Okta's error
 * answers into reason-coded errors (errors.ts).
 *
 * Rate limits: every answer carries `X-Rate-Limit-Limit`, `X-Rate-Limit-Remaining` and
 * `X-Rate-Limit-Reset` (UTC epoch seconds at which the window resets); a 429 means wait until the
 * reset. Okta advises measuring the wait against the answer's `Date` header, not the local clock
 * (https://developer.okta.com/docs/reference/rl-best-practices/).
 *
 * @module
 */
import { ProvisioningError } from "../../core/errors.ts";
import type { RequestPacer } from "../../core/plugin.ts";
import { sleep } from "../../core/sleep.ts";
import { oktaFailure, oktaReasons, type OktaStep } from "./errors.ts";

/** How the client authenticates: an SSWS API token, or a service app's (DPoP-bound) access token. */
export interface OktaCredential {
  /** The headers that authenticate one request (`Authorization`, and `DPoP` when bound); never logged. */
  headers(method: string, url: string): Promise<Record<string, string>>;
}

/** An API token: `Authorization: SSWS {token}` (https://developer.okta.com/docs/guides/create-an-api-token/main/). */
export function apiToken(token: string): OktaCredential {
  const header = `SSWS ${token}`;
  return { headers: () => Promise.resolve({ Authorization: header }) };
}

/** What {@link OktaApi} needs. */
export interface OktaApiOptions {
  /** The org URL, serialized origin: `https://acme.okta.com`. */
  readonly orgUrl: string;
  readonly credential: OktaCredential;
  readonly fetch?: typeof fetch;
  readonly pacer?: RequestPacer;
  /** Waits on a 429 before giving up with `throttled`. @default 5 */
  readonly maxThrottleWaits?: number;
  /** How long one request may take before it counts as unanswered. @default 60000 */
  readonly requestTimeoutMs?: number;
}

/** One request of {@link OktaApi.request}. */
export interface OktaRequest {
  readonly method: "GET" | "POST" | "DELETE";
  /** Path and query under the org URL, or an absolute URL on the org (a `Link` header's next page). */
  readonly path: string;
  readonly body?: unknown;
  readonly step: OktaStep;
  /** For messages: what was being done, e.g. `enroll a WebAuthn factor for alice@acme.com`. */
  readonly what: string;
  readonly signal?: AbortSignal | undefined;
  /**
   * A POST that must not be sent twice: a lost answer is `outcome-unknown` (the engine reconciles
   * by listing), and the request goes on a fresh connection so Deno cannot resend it on its own.
   */
  readonly nonIdempotent?: boolean;
}

/** See the module documentation. */
export class OktaApi {
  readonly orgUrl: string;
  readonly #options: OktaApiOptions;

  constructor(options: OktaApiOptions) {
    this.orgUrl = options.orgUrl;
    this.#options = options;
  }

  /** Sends a request and returns the answer when it is 2xx; throws a reason-coded error otherwise. */
  async request(request: OktaRequest): Promise<Response> {
    const kind = request.method === "GET" ? "read" : "write";
    const pacer = this.#options.pacer;
    const url = request.path.startsWith("http") ? this.#onOrg(request.path) : `${this.orgUrl}${request.path}`;
    const maxWaits = this.#options.maxThrottleWaits ?? 5;
    for (let waits = 0;; waits++) {
      await pacer?.admit(kind, request.signal);
      const response = await this.#send(url, request);
      if (response.status === 429) {
        const waitMs = retryAfterMs(response.headers);
        await response.body?.cancel();
        pacer?.throttled(kind, waitMs);
        if (waits >= maxWaits) {
          throw new ProvisioningError(
            oktaReasons.throttled,
            `Cannot ${request.what}: Okta still answers 429 E0000047 after ${waits} waits`,
            {
              retryable: true,
              hint: "Lower --concurrency, or ask Okta for a higher rate limit on this endpoint",
            },
          );
        }
        if (!pacer) await sleep(waitMs, request.signal);
        continue;
      }
      pacer?.succeeded(kind);
      if (response.ok) return response;
      throw oktaFailure(request.step, request.what, response.status, await response.text());
    }
  }

  /** GET returning parsed JSON. */
  async getJson(path: string, step: OktaStep, what: string, signal?: AbortSignal): Promise<unknown> {
    return await (await this.request({ method: "GET", path, step, what, signal })).json();
  }

  async #send(url: string, request: OktaRequest): Promise<Response> {
    const headers = new Headers({
      Accept: "application/json",
      ...await this.#options.credential.headers(request.method, url),
    });
    if (request.body !== undefined) headers.set("Content-Type", "application/json");
    // Deno resends a POST by itself when a pooled connection closes unanswered (DESIGN.md): a
    // non-idempotent POST asks for a connection of its own.
    if (request.nonIdempotent) headers.set("Connection", "close");
    const doFetch = this.#options.fetch ?? fetch;
    const timeout = AbortSignal.timeout(this.#options.requestTimeoutMs ?? 60_000);
    try {
      const response = await doFetch(url, {
        method: request.method,
        headers,
        ...(request.body === undefined ? {} : { body: JSON.stringify(request.body) }),
        signal: request.signal ? AbortSignal.any([request.signal, timeout]) : timeout,
      });
      // The body is read here, under the same deadline: an answer cut off half-way is no answer.
      const body = await response.arrayBuffer();
      return new Response(response.status === 204 ? null : body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    } catch (error) {
      if (request.signal?.aborted) throw request.signal.reason;
      if (error instanceof ProvisioningError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new ProvisioningError(
        request.nonIdempotent ? "outcome-unknown" : oktaReasons.serverError,
        `Cannot ${request.what}: no answer from ${new URL(url).host} (${reason})`,
        { cause: error, retryable: true },
      );
    }
  }

  /** A `Link` URL must stay on the org: a tampered header cannot send the token elsewhere. */
  #onOrg(url: string): string {
    if (new URL(url).origin !== new URL(this.orgUrl).origin) {
      throw new ProvisioningError(
        oktaReasons.requestFailed,
        `Cannot follow a paging link to "${new URL(url).origin}": it is not the org ${this.orgUrl}`,
      );
    }
    return url;
  }
}

/**
 * How long a 429 asks to wait: `X-Rate-Limit-Reset` (epoch seconds) less the answer's `Date`
 * (second precision, so up to a second is added), else one second.
 */
export function retryAfterMs(headers: Headers, now = Date.now()): number {
  const reset = Number(headers.get("x-rate-limit-reset"));
  if (!Number.isFinite(reset) || reset <= 0) return 1000;
  const date = Date.parse(headers.get("date") ?? "");
  const serverNow = Number.isFinite(date) ? date : now;
  return Math.max(0, Math.min(60_000, reset * 1000 - serverNow));
}

/** The `rel="next"` URL of a `Link` header (https://developer.okta.com/docs/api/#link-header). */
export function nextLink(headers: Headers): string | undefined {
  for (const part of (headers.get("link") ?? "").split(",")) {
    const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(part.trim());
    if (match) return match[1];
  }
  return undefined;
}
