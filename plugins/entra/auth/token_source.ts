/**
 * The one thing the Graph client asks of sign-in: "give me a valid access token". A
 * {@link TokenSource} answers from memory, then from the encrypted cache, and otherwise renews:
 * with the refresh token (delegated sign-ins), else by acquiring anew (client credentials, or an
 * interactive flow when one is allowed). It renews before expiry (five minutes ahead by default,
 * so a token never expires in the middle of a Graph request) and renews once however many
 * callers ask at the same moment.
 *
 * Refresh: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token
 * (the response carries a new refresh token; the newest one is kept).
 *
 * @module
 */
import type { EntraCloud } from "../cloud.ts";
import { EntraAuthError } from "./errors.ts";
import type { CachedToken, CacheQuery, TokenCache } from "./token_cache.ts";
import { accountOf, readAccessTokenClaims, type TokenSet } from "./tokens.ts";

/**
 * Where Graph access tokens come from. The Graph client takes a function; {@link forGraphClient}
 * makes one.
 */
export interface TokenSource {
  /**
   * A Graph access token valid for at least the refresh margin. Aborting `signal` abandons this
   * caller's wait; a renewal other callers share goes on.
   */
  getAccessToken(signal?: AbortSignal): Promise<string>;
  /**
   * Refuses the current token, so the next call renews (Graph answered 401 to it). A token
   * obtained in the last {@link recentTokenMs} is kept: the 401 was for its predecessor, which
   * other requests in flight at the same time also got.
   */
  invalidate(): void;
}

/** A token younger than this is not refused by {@link TokenSource.invalidate}. */
export const recentTokenMs = 10_000;

/** What the Graph client (graph/client.ts) asks its token function for. */
export interface GraphTokenRequest {
  signal?: AbortSignal;
  /** Graph answered 401 to the last token: get a new one. */
  forceRefresh?: boolean;
}

/**
 * The function the Graph client takes: a token, or after a 401 (`forceRefresh`) a renewed one.
 *
 * @example
 * ```ts ignore
 * const client = new GraphClient({ baseUrl: cloud.graphBase, token: forGraphClient(signIn.source) });
 * ```
 */
export function forGraphClient(source: TokenSource): (request?: GraphTokenRequest) => Promise<string> {
  return async (request = {}) => {
    if (request.forceRefresh) source.invalidate();
    return await source.getAccessToken(request.signal);
  };
}

/** A {@link TokenSource} that can also be told to sign in anew (`provisioning login`). */
export interface ManagedTokenSource extends TokenSource {
  /**
   * Obtains new tokens now, ignoring memory and cache (`force`), or like `getAccessToken`
   * otherwise; stores them and returns the access token.
   */
  renew(options?: { force?: boolean; signal?: AbortSignal }): Promise<string>;
}

/** How a {@link createTokenSource} obtains tokens when the cache has none that will do. */
export interface TokenGrants {
  /** `delegated` (an admin signs in) or `app` (client credentials). */
  readonly kind: CachedToken["kind"];
  /**
   * Obtains new tokens without a refresh token: client credentials, or an interactive sign-in.
   * A non-interactive delegated source throws `not-signed-in` here.
   */
  acquire(signal: AbortSignal | undefined): Promise<TokenSet>;
  /** Redeems a refresh token (delegated sign-ins). */
  refresh?(refreshToken: string, signal: AbortSignal | undefined): Promise<TokenSet>;
  /** The tenant id the grants are for (resolved lazily: it may need a discovery request). */
  tenantId(signal: AbortSignal | undefined): Promise<string>;
}

/** Options of {@link createTokenSource}. */
export interface TokenSourceOptions {
  readonly cloud: EntraCloud;
  /** The tenant as configured (id or domain). */
  readonly tenant: string;
  readonly clientId: string;
  /** Scopes asked for; a cached entry must have been asked for all of them. */
  readonly scopes: readonly string[];
  readonly grants: TokenGrants;
  /** The account to use among several cached delegated sign-ins (a UPN). */
  readonly account?: string;
  /** Where tokens persist between runs; memory only without it. */
  readonly cache?: TokenCache;
  /**
   * Clock in epoch milliseconds.
   * @default Date.now
   */
  readonly now?: () => number;
  /**
   * Renew this long before the access token expires.
   * @default 300000 (five minutes)
   */
  readonly refreshMarginMs?: number;
  /** Cancels renewals (the program's Ctrl+C signal): shared work stops only when this aborts. */
  readonly signal?: AbortSignal;
  /**
   * Called when the renewed tokens could not be written to the cache; the token is still
   * returned. Without it, the write error is thrown.
   */
  readonly onCacheError?: (error: unknown) => void;
}

/** Default margin before expiry at which tokens are renewed. */
export const defaultRefreshMarginMs = 5 * 60_000;

/**
 * A {@link TokenSource} over a cache and a way to renew.
 *
 * @example
 * ```ts
 * import { createTokenSource } from "./token_source.ts";
 * import { cloudFromSandbox } from "../cloud.ts";
 * let calls = 0;
 * const source = createTokenSource({
 *   cloud: cloudFromSandbox("http://127.0.0.1:1"),
 *   tenant: "contoso.example",
 *   clientId: "00000000-0000-0000-0000-0000000000a1",
 *   scopes: ["https://graph.microsoft.com/.default"],
 *   grants: {
 *     kind: "app",
 *     tenantId: () => Promise.resolve("00000000-0000-0000-0000-000000000001"),
 *     acquire: () => Promise.resolve({ accessToken: `token-${++calls}`, expiresAt: Date.now() + 3600_000, grantedScopes: [] }),
 *   },
 * });
 * const [a, b] = await Promise.all([source.getAccessToken(), source.getAccessToken()]);
 * console.assert(a === "token-1" && b === "token-1" && calls === 1);
 * ```
 */
export function createTokenSource(options: TokenSourceOptions): ManagedTokenSource {
  const now = options.now ?? Date.now;
  const margin = options.refreshMarginMs ?? defaultRefreshMarginMs;
  const { grants } = options;
  const authority = options.cloud.loginBase;
  let current: CachedToken | undefined;
  let inflight: Promise<CachedToken> | undefined;
  /** The access token Graph refused (see invalidate): not reused even though it has not expired. */
  let refused: string | undefined;

  const usable = (entry: CachedToken | undefined): boolean =>
    entry !== undefined && entry.expiresAt - margin > now() && entry.accessToken !== refused;

  const query = (): CacheQuery => {
    const q: { -readonly [K in keyof CacheQuery]: CacheQuery[K] } = {
      kind: grants.kind,
      authority,
      tenant: options.tenant,
      clientId: options.clientId,
      scopes: options.scopes,
    };
    if (grants.kind === "app") q.account = "app";
    else if (options.account !== undefined) q.account = options.account;
    return q;
  };

  async function store(entry: CachedToken): Promise<void> {
    if (!options.cache) return;
    try {
      await options.cache.put(entry);
    } catch (error) {
      if (!options.onCacheError) throw error;
      options.onCacheError(error);
    }
  }

  async function toEntry(tokens: TokenSet, previous: CachedToken | undefined): Promise<CachedToken> {
    const claims = readAccessTokenClaims(tokens.accessToken);
    const account = grants.kind === "app"
      ? "app"
      : accountOf(claims) ?? previous?.account ?? options.account?.toLowerCase() ?? "unknown";
    const entry: CachedToken = {
      kind: grants.kind,
      cloud: options.cloud.name,
      authority,
      tenant: options.tenant,
      tenantId: (claims?.tid ?? await grants.tenantId(options.signal)).toLowerCase(),
      clientId: options.clientId,
      account,
      accessToken: tokens.accessToken,
      expiresAt: tokens.expiresAt,
      requestedScopes: [...options.scopes],
      grantedScopes: [...tokens.grantedScopes],
      obtainedAt: now(),
    };
    const refreshToken = tokens.refreshToken ?? previous?.refreshToken;
    if (refreshToken !== undefined && grants.kind === "delegated") entry.refreshToken = refreshToken;
    return entry;
  }

  async function renew(force: boolean): Promise<CachedToken> {
    const signal = options.signal;
    if (force) {
      const entry = await toEntry(await grants.acquire(signal), undefined);
      await store(entry);
      return entry;
    }
    const found = current ?? options.cache?.find(query());
    if (found !== undefined && usable(found)) return found;
    let tokens: TokenSet;
    let previous = found;
    if (found?.refreshToken !== undefined && grants.refresh) {
      try {
        tokens = await grants.refresh(found.refreshToken, signal);
      } catch (error) {
        // A refresh token that expired or was revoked: forget it and sign in anew (which, for a
        // non-interactive source, says "not signed in").
        if (!(error instanceof EntraAuthError && error.code === "auth-expired")) throw error;
        await options.cache?.remove((entry) => entry.refreshToken === found.refreshToken).catch(() => 0);
        previous = undefined;
        tokens = await grants.acquire(signal);
      }
    } else {
      tokens = await grants.acquire(signal);
    }
    const entry = await toEntry(tokens, previous);
    await store(entry);
    return entry;
  }

  /** Starts (or joins) the one renewal in flight. */
  function shared(force: boolean): Promise<CachedToken> {
    if (inflight === undefined) {
      const run = renew(force)
        .then((entry) => {
          current = entry;
          return entry;
        })
        .finally(() => {
          if (inflight === run) inflight = undefined;
        });
      inflight = run;
      // Waiters that gave up must not leave the shared promise's rejection unhandled.
      run.catch(() => undefined);
      return run;
    }
    if (!force) return inflight;
    // A forced sign-in waits for the renewal in flight, then does its own.
    return inflight.catch(() => undefined).then(() => shared(true));
  }

  return {
    async getAccessToken(signal?: AbortSignal): Promise<string> {
      signal?.throwIfAborted();
      if (current !== undefined && usable(current)) return current.accessToken;
      const entry = await abandonable(shared(false), signal);
      return entry.accessToken;
    },
    async renew(renewOptions: { force?: boolean; signal?: AbortSignal } = {}): Promise<string> {
      renewOptions.signal?.throwIfAborted();
      if (!renewOptions.force && current !== undefined && usable(current)) return current.accessToken;
      const entry = await abandonable(shared(renewOptions.force ?? false), renewOptions.signal);
      return entry.accessToken;
    },
    invalidate(): void {
      if (current === undefined || now() - current.obtainedAt < recentTokenMs) return;
      refused = current.accessToken;
      current = undefined;
    },
  };
}

/** Waits for `promise`, or rejects with the signal's reason when `signal` aborts first. */
function abandonable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
