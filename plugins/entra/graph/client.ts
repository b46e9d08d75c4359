/**
 * A small Microsoft Graph client: one HTTP request per call, every response parsed with zod,
 * throttling and transient failures retried the way Microsoft asks, and failures turned into
 * actionable {@link GraphError}s.
 *
 * - **Retries.** `429` is retried for every method, honouring `Retry-After` (seconds, fractions
 *   allowed, or an HTTP date) as "Microsoft Graph throttling guidance" asks
 *   (https://learn.microsoft.com/graph/throttling#best-practices-to-handle-throttling); without
 *   the header, capped exponential backoff with full jitter. `503` is retried the same way (Graph
 *   answers it when overloaded, https://learn.microsoft.com/graph/errors#http-status-codes).
 *   `504` and lost connections (reset, refused, timeout) are retried only for requests that are
 *   harmless to repeat (GET, PUT, DELETE, or a caller's `idempotent: true`), because the upstream
 *   may have carried the first one out.
 * - **Writes whose answer was lost** (`POST fido2Methods` after a reset or a 504) are never sent
 *   twice: they fail with reason `outcome-unknown`, and the caller reconciles by listing the
 *   user's methods (see `reconcileRegistration` in plugins/entra/provision.ts; the bulk engine
 *   does the same before it retries a job).
 * - **Observability.** Every request carries a fresh `client-request-id` (kept across its
 *   retries) and `User-Agent: provisioning/<version>`; a {@link GraphTrafficObserver} sees every
 *   response and every backoff, with Graph's `x-ms-resource-unit`, `x-ms-throttle-*` headers
 *   (https://learn.microsoft.com/graph/throttling-limits#identity-and-access-service-limits), so
 *   the bulk engine's rate controller can learn from 429s.
 * - **Seams for tests**: `fetch`, `sleep`, `random`, `now` and the id generator are injectable.
 *
 * @example
 * ```ts ignore
 * const client = new GraphClient({ baseUrl: cloud.graphBase, token: () => auth.accessToken() });
 * const me = await client.request("GET", "/users/alice@contoso.com", {
 *   schema: userSchema, operation: "resolve-user", action: "look up user", user: "alice@contoso.com",
 * });
 * ```
 *
 * @module
 */
import { fetchOnFreshConnection } from "../../../core/tls.ts";
import type { z } from "zod";
import denoConfig from "../../../deno.json" with { type: "json" };
import {
  explainGraphFailure,
  type GraphEndpoint,
  GraphError,
  type GraphFailure,
  type GraphOperation,
  parseGraphErrorBody,
} from "../errors.ts";
import { collectionSchema } from "./schemas.ts";
import { sleep } from "../../../core/sleep.ts";

/** `provisioning/<version in deno.json>`, sent as User-Agent. */
export const userAgent = `provisioning/${denoConfig.version}`;

/** The Graph versions the plugin speaks. */
export type GraphVersion = "v1.0" | "beta";

/** What a token source is asked for. */
export interface TokenRequest {
  signal?: AbortSignal;
  /** Set after Graph answered 401 to a token from the cache: get a new one. */
  forceRefresh?: boolean;
  /** With `forceRefresh`: the token Graph refused, so a source that already replaced it hands out the replacement. */
  refused?: string;
}

/**
 * Where access tokens come from; the auth helper (device code, client credentials …) plugs in
 * here. A plain `() => Promise<string>` fits.
 */
export type TokenSource = (request: TokenRequest) => Promise<string>;

/** How hard to retry. */
export interface RetryOptions {
  /** Attempts per request, the first included. @default 6 */
  maxAttempts?: number;
  /** First backoff step without Retry-After, in ms; doubles per attempt. @default 500 */
  baseDelayMs?: number;
  /** Cap of one backoff without Retry-After, in ms. @default 30000 */
  maxDelayMs?: number;
  /** Longest Retry-After honoured, in ms; a longer one is cut to this. @default 300000 */
  maxRetryAfterMs?: number;
}

/** Identifies one attempt of one request, for observers. */
export interface GraphAttemptEvent {
  readonly method: string;
  /** Path after the version, without query. */
  readonly path: string;
  readonly version: GraphVersion;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly clientRequestId: string;
  readonly operation: GraphOperation;
}

/** A response arrived. */
export interface GraphResponseEvent extends GraphAttemptEvent {
  readonly status: number;
  readonly durationMs: number;
  /** `x-ms-resource-unit`: what this request cost in the identity service's token bucket. */
  readonly resourceUnits?: number;
  /** `x-ms-throttle-limit-percentage`: sent above 0.8 of a limit (0.8 to 1.8). */
  readonly throttleLimitPercentage?: number;
}

/** A request failed in a way that is retried (or would be, had attempts remained). */
export interface GraphBackoffEvent extends GraphAttemptEvent {
  /** HTTP status, absent for a lost connection. */
  readonly status?: number;
  readonly kind: "throttled" | "unavailable" | "network";
  /** What `Retry-After` asked for, in ms. */
  readonly retryAfterMs?: number;
  /** How long the client waits before the next attempt (0 when it gives up). */
  readonly delayMs: number;
  /** False when this was the last attempt or the request may not be repeated. */
  readonly willRetry: boolean;
  /** `x-ms-throttle-scope`, e.g. `Tenant_Application/ReadWrite/<app>/<tenant>`. */
  readonly throttleScope?: string;
  /** `x-ms-throttle-information`, e.g. `WriteLimitExceeded`. */
  readonly throttleInformation?: string;
}

/**
 * Sees the traffic of one or more clients (share one across sessions for a tenant-wide view).
 * `beforeRequest` may delay an attempt (a token bucket) by returning a promise.
 */
export interface GraphTrafficObserver {
  beforeRequest?(event: GraphAttemptEvent, signal?: AbortSignal): void | Promise<void>;
  onResponse?(event: GraphResponseEvent): void;
  onBackoff?(event: GraphBackoffEvent): void;
}

/** What a {@link GraphClient} is built from. */
export interface GraphClientOptions {
  /** Graph's base without version, e.g. `https://graph.microsoft.com` (see cloud.ts). */
  baseUrl: string;
  /** @default "v1.0" */
  version?: GraphVersion;
  token: TokenSource;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
  /** Waits `ms` (rejecting when `signal` aborts). Tests inject one that records delays. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1), for jitter. @default Math.random */
  random?: () => number;
  /** Milliseconds since the epoch, for Retry-After dates and durations. @default Date.now */
  now?: () => number;
  /** @default crypto.randomUUID */
  newRequestId?: () => string;
  retry?: RetryOptions;
  observer?: GraphTrafficObserver;
  /** Per-attempt timeout in ms. @default 60000 */
  timeoutMs?: number;
  /** @default {@link userAgent} */
  userAgent?: string;
}

/** Describes one call, for retries and for the error message if it fails. */
export interface GraphCall {
  operation: GraphOperation;
  /** "Cannot <action> for <user>": e.g. `register a passkey`. */
  action: string;
  /** The user the call is about, for messages. */
  user?: string;
  /** Whether sending it twice is harmless. @default true for GET, HEAD, PUT, DELETE */
  idempotent?: boolean;
  signal?: AbortSignal;
}

/** Options of {@link GraphClient.request}. */
export interface RequestOptions<T> extends GraphCall {
  /** Parses the response body; without one, the body is ignored and `undefined` returned. */
  schema?: z.ZodType<T>;
  /** Sent as JSON. */
  body?: unknown;
  /** Query parameters, encoded here (`$select`, `$filter` …). */
  query?: Readonly<Record<string, string>>;
  /** Extra request headers. */
  headers?: Readonly<Record<string, string>>;
}

const retryDefaults: Required<RetryOptions> = {
  maxAttempts: 6,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  maxRetryAfterMs: 300_000,
};

/** Where a response came from, for bad-response errors. */
interface AttemptContext {
  endpoint: GraphEndpoint;
  requestId?: string | undefined;
  clientRequestId: string;
  attempt: number;
}

/** Largest response body read, in bytes. */
const maxBodyBytes = 16 * 1024 * 1024;

/** See the module documentation. */
export class GraphClient {
  /** The Graph version requests go to. */
  readonly version: GraphVersion;
  /** Graph's base URL without version. */
  readonly baseUrl: string;
  readonly #options: GraphClientOptions;
  readonly #retry: Required<RetryOptions>;
  readonly #fetch: typeof fetch;
  /** For requests that must not be sent twice: never on a reused connection (core/tls.ts). */
  readonly #freshFetch: typeof fetch;
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly #random: () => number;
  readonly #now: () => number;
  readonly #newRequestId: () => string;

  constructor(options: GraphClientOptions) {
    this.#options = options;
    this.version = options.version ?? "v1.0";
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    const base = new URL(this.baseUrl); // throws TypeError on garbage, a programming error
    if (base.protocol !== "https:" && base.protocol !== "http:") {
      throw new TypeError(`Cannot create a Graph client: base URL "${options.baseUrl}" is not http(s)`);
    }
    this.#retry = { ...retryDefaults, ...options.retry };
    if (!(this.#retry.maxAttempts >= 1)) {
      throw new RangeError("Cannot create a Graph client: maxAttempts must be >= 1");
    }
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#freshFetch = fetchOnFreshConnection(this.#fetch);
    this.#sleep = options.sleep ?? sleep;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#newRequestId = options.newRequestId ?? (() => crypto.randomUUID());
  }

  /** The same client speaking another Graph version (`beta` for features v1.0 lacks). */
  withVersion(version: GraphVersion): GraphClient {
    return version === this.version ? this : new GraphClient({ ...this.#options, version });
  }

  /**
   * Sends one request to `{baseUrl}/{version}{path}` and parses the answer with `options.schema`.
   *
   * @throws {GraphError} with an actionable reason code (see errors.ts); `DOMException`
   * `AbortError` when `options.signal` aborts.
   */
  request<T>(method: string, path: string, options: RequestOptions<T> & { schema: z.ZodType<T> }): Promise<T>;
  request(
    method: string,
    path: string,
    options: RequestOptions<unknown> & { schema?: undefined },
  ): Promise<void>;
  async request<T>(method: string, path: string, options: RequestOptions<T>): Promise<T | void> {
    if (!path.startsWith("/")) {
      throw new TypeError(`Cannot request Graph path "${path}": it must start with "/"`);
    }
    const url = new URL(`${this.baseUrl}/${this.version}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) url.searchParams.set(name, value);
    return await this.#send(method.toUpperCase(), url, options);
  }

  /**
   * DELETEs something that an earlier attempt (whose answer was lost) may already have deleted:
   * true when Graph deleted it now, false when Graph says it does not exist.
   */
  async deleteIfPresent(
    path: string,
    options: RequestOptions<unknown> & { schema?: undefined },
  ): Promise<boolean> {
    try {
      await this.request("DELETE", path, options);
      return true;
    } catch (error) {
      if (error instanceof GraphError && error.status === 404) return false;
      throw error;
    }
  }

  /**
   * GETs a collection and follows `@odata.nextLink` until the last page
   * (https://learn.microsoft.com/graph/paging). A next link to another host or version is
   * refused: it would receive our access token.
   */
  async requestAll<T>(
    path: string,
    item: z.ZodType<T>,
    options: Omit<RequestOptions<T>, "schema" | "body"> & { maxPages?: number },
  ): Promise<T[]> {
    const schema = collectionSchema(item);
    const url = new URL(`${this.baseUrl}/${this.version}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) url.searchParams.set(name, value);
    const items: T[] = [];
    const maxPages = options.maxPages ?? 1000;
    let next: URL | undefined = url;
    for (let page = 0; next !== undefined; page++) {
      if (page >= maxPages) {
        throw new GraphError(
          "graph-bad-response",
          `Cannot ${options.action}: Graph returned more than ${maxPages} pages`,
          {
            endpoint: this.#endpoint("GET", url),
            ...(options.user === undefined ? {} : { user: options.user }),
          },
        );
      }
      // With a schema, #send returns the parsed body, never void.
      const body = (await this.#send("GET", next, { ...options, schema })) as z.infer<typeof schema>;
      items.push(...(body.value as T[]));
      const link = body["@odata.nextLink"];
      next = link === undefined ? undefined : this.#checkNextLink(link, options);
    }
    return items;
  }

  #checkNextLink(link: string, call: GraphCall): URL {
    const url = new URL(link);
    const base = new URL(`${this.baseUrl}/${this.version}/`);
    if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) {
      throw new GraphError(
        "graph-bad-response",
        `Cannot ${call.action}${
          call.user ? ` for ${call.user}` : ""
        }: Graph's next-page link "${url.origin}${url.pathname}" leaves ${base.href}`,
        {
          endpoint: this.#endpoint("GET", url),
          hint:
            "The access token is only ever sent to the configured Graph endpoint; check proxies between here and Graph",
          ...(call.user === undefined ? {} : { user: call.user }),
        },
      );
    }
    return url;
  }

  #endpoint(method: string, url: URL): GraphEndpoint {
    const prefix = new URL(`${this.baseUrl}/${this.version}`).pathname;
    return { method, path: url.pathname.slice(prefix.length) || "/", version: this.version };
  }

  async #send<T>(method: string, url: URL, options: RequestOptions<T>): Promise<T | void> {
    const endpoint = this.#endpoint(method, url);
    const idempotent = options.idempotent ?? ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"].includes(method);
    const clientRequestId = this.#newRequestId();
    const signal = options.signal;
    const observer = this.#options.observer;
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    let forceRefresh = false;
    let refused: string | undefined;
    let lastRetryAfterMs: number | undefined;
    const fail = (extra: Partial<GraphFailure>) =>
      explainGraphFailure({
        operation: options.operation,
        action: options.action,
        endpoint,
        clientRequestId,
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(lastRetryAfterMs === undefined ? {} : { retryAfterMs: lastRetryAfterMs }),
        ...extra,
      });

    for (let attempt = 1;; attempt++) {
      signal?.throwIfAborted();
      const event: GraphAttemptEvent = {
        method,
        path: endpoint.path,
        version: this.version,
        attempt,
        clientRequestId,
        operation: options.operation,
      };
      await observer?.beforeRequest?.(event, signal);
      const token = await this.#options.token({
        ...(signal ? { signal } : {}),
        ...(forceRefresh ? { forceRefresh, ...(refused === undefined ? {} : { refused }) } : {}),
      });
      const headers = new Headers({
        Accept: "application/json",
        Authorization: `Bearer ${token}`,
        "client-request-id": clientRequestId,
        "User-Agent": this.#options.userAgent ?? userAgent,
        ...options.headers,
      });
      if (body !== undefined) headers.set("Content-Type", "application/json");

      const started = this.#now();
      let response: Response;
      const timeout = new AbortController();
      const timer = setTimeout(
        () => timeout.abort(new DOMException("Graph did not answer in time", "TimeoutError")),
        this.#options.timeoutMs ?? 60_000,
      );
      const attemptSignal = signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal;
      try {
        response = await (idempotent ? this.#fetch : this.#freshFetch)(url, {
          method,
          headers,
          ...(body === undefined ? {} : { body }),
          signal: attemptSignal,
        });
      } catch (cause) {
        clearTimeout(timer);
        if (signal?.aborted) throw signal.reason;
        // The request may have reached Graph: only repeat what is harmless to repeat.
        const willRetry = idempotent && attempt < this.#retry.maxAttempts;
        const delayMs = willRetry ? this.#backoff(attempt) : 0;
        observer?.onBackoff?.({ ...event, kind: "network", delayMs, willRetry });
        if (!idempotent) {
          throw fail({ attempts: attempt, outcomeUnknown: true, cause });
        }
        if (!willRetry) throw fail({ attempts: attempt, exhausted: true, cause });
        await this.#sleep(delayMs, signal);
        continue;
      }

      let text: string;
      try {
        text = await readBody(response);
      } catch (cause) {
        clearTimeout(timer);
        if (signal?.aborted) throw signal.reason;
        if (response.ok && !idempotent) throw fail({ attempts: attempt, outcomeUnknown: true, cause });
        if (idempotent && attempt < this.#retry.maxAttempts) {
          const delayMs = this.#backoff(attempt);
          observer?.onBackoff?.({ ...event, kind: "network", delayMs, willRetry: true });
          await this.#sleep(delayMs, signal);
          continue;
        }
        throw fail({ attempts: attempt, exhausted: true, cause });
      } finally {
        clearTimeout(timer);
      }

      const status = response.status;
      const requestId = response.headers.get("request-id") ?? undefined;
      observer?.onResponse?.({
        ...event,
        status,
        durationMs: this.#now() - started,
        ...numberHeader(response.headers, "x-ms-resource-unit", "resourceUnits"),
        ...numberHeader(response.headers, "x-ms-throttle-limit-percentage", "throttleLimitPercentage"),
      });

      if (response.ok) {
        if (options.schema === undefined) return;
        return this.#parse(text, status, options, { endpoint, requestId, clientRequestId, attempt });
      }

      if (status === 401 && !forceRefresh) {
        // A cached token may have been revoked or expired early: one more try with a fresh one.
        forceRefresh = true;
        refused = token;
        continue;
      }

      const retryable = status === 429 || status === 503 || (status === 504 && idempotent);
      if (retryable) {
        const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"), this.#now());
        if (retryAfterMs !== undefined) lastRetryAfterMs = retryAfterMs;
        const willRetry = attempt < this.#retry.maxAttempts;
        const delayMs = !willRetry
          ? 0
          : retryAfterMs !== undefined
          ? Math.min(retryAfterMs, this.#retry.maxRetryAfterMs)
          : this.#backoff(attempt);
        observer?.onBackoff?.({
          ...event,
          status,
          kind: status === 429 ? "throttled" : "unavailable",
          delayMs,
          willRetry,
          ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
          ...stringHeader(response.headers, "x-ms-throttle-scope", "throttleScope"),
          ...stringHeader(response.headers, "x-ms-throttle-information", "throttleInformation"),
        });
        if (willRetry) {
          await this.#sleep(delayMs, signal);
          continue;
        }
      }

      const envelope = parseGraphErrorBody(text);
      throw fail({
        status,
        attempts: attempt,
        ...(envelope === undefined ? {} : { envelope }),
        ...(requestId === undefined ? {} : { requestId }),
        ...(retryable ? { exhausted: true } : {}),
        // A 504 to a write: the upstream may have done it.
        ...(status === 504 && !idempotent ? { outcomeUnknown: true } : {}),
      });
    }
  }

  #parse<T>(
    text: string,
    status: number,
    options: RequestOptions<T>,
    context: AttemptContext,
  ): T {
    const schema = options.schema!;
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch (cause) {
      throw this.#badResponse(options, context, status, "the body is not JSON", cause);
    }
    const parsed = schema.safeParse(json);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0
      ? `field "${issue.path.join(".")}" ${issue.message}`
      : issue?.message ?? "";
    throw this.#badResponse(options, context, status, where, parsed.error);
  }

  #badResponse<T>(
    options: RequestOptions<T>,
    context: AttemptContext,
    status: number,
    why: string,
    cause: unknown,
  ): GraphError {
    const { endpoint } = context;
    return new GraphError(
      "graph-bad-response",
      `Cannot ${options.action}${
        options.user ? ` for ${options.user}` : ""
      }: Graph's answer does not have the documented shape: ${why} (${endpoint.method} /${endpoint.version}${endpoint.path}, ${status}${
        context.requestId ? `, request-id ${context.requestId}` : ""
      })`,
      {
        endpoint,
        status,
        clientRequestId: context.clientRequestId,
        attempts: context.attempt,
        cause,
        hint: "Graph may have changed; try --graph-version v1.0, or report it with the request-id",
        ...(context.requestId ? { requestId: context.requestId } : {}),
        ...(options.user === undefined ? {} : { user: options.user }),
      },
    );
  }

  /** Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))). */
  #backoff(attempt: number): number {
    const ceiling = Math.min(this.#retry.maxDelayMs, this.#retry.baseDelayMs * 2 ** (attempt - 1));
    return Math.floor(this.#random() * ceiling);
  }
}

/**
 * Reads `Retry-After` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date; Graph also sends fractions
 * such as "2.128", https://learn.microsoft.com/graph/throttling#sample-response) as milliseconds
 * from `now`, or `undefined` when absent or unreadable.
 *
 * @example
 * ```ts
 * import { parseRetryAfter } from "./client.ts";
 * console.assert(parseRetryAfter("2.128", 0) === 2128);
 * console.assert(parseRetryAfter("Wed, 21 Oct 2015 07:28:05 GMT", Date.UTC(2015, 9, 21, 7, 28, 0)) === 5000);
 * console.assert(parseRetryAfter("soon", 0) === undefined);
 * ```
 */
export function parseRetryAfter(value: string | null, now: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  if (!/[a-z]/i.test(trimmed)) return undefined;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

async function readBody(response: Response): Promise<string> {
  const length = Number(response.headers.get("content-length") ?? "0");
  if (length > maxBodyBytes) {
    await response.body?.cancel();
    throw new RangeError(`Graph's answer is ${length} bytes, more than ${maxBodyBytes}`);
  }
  return await response.text();
}

function numberHeader<K extends string>(headers: Headers, name: string, key: K): { [P in K]?: number } {
  const value = headers.get(name);
  const number = value === null ? NaN : Number(value);
  return Number.isFinite(number) ? { [key]: number } as { [P in K]?: number } : {};
}

function stringHeader<K extends string>(headers: Headers, name: string, key: K): { [P in K]?: string } {
  const value = headers.get(name);
  return value === null ? {} : { [key]: value.slice(0, 500) } as { [P in K]?: string };
}
