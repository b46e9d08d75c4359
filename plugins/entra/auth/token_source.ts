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
import type { CredentialFingerprint } from "./client_credentials.ts";

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
   * Graph answered 401 to `refused` (the token the caller sent; the current one when not given).
   * When that token is still the current one it is dropped whatever its age, so the next call
   * renews: a token from an earlier process can be refused however recently it was issued (the
   * old ten-second guard trusted the cached `obtainedAt`, and a refused token was never
   * replaced). When the current token is already another one, the refusal was for its
   * predecessor (a burst of 401s for one token) and the replacement stays. When the refused
   * token is the one a refusal already replaced, renewing again would not help: later calls fail
   * with `unauthorized`, saying what to check.
   */
  invalidate(refused?: string): void;
}

/** What the Graph client (graph/client.ts) asks its token function for. */
export interface GraphTokenRequest {
  signal?: AbortSignal;
  /** Graph answered 401 to the last token: get a new one. */
  forceRefresh?: boolean;
  /** With `forceRefresh`: the token Graph refused. */
  refused?: string;
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
    if (request.forceRefresh) source.invalidate(request.refused);
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
  /**
   * App grants: the fingerprint of the credential in the settings. A cached token obtained with
   * another credential (or with none recorded) is not used: the secret or certificate changed.
   */
  credential?(): Promise<CredentialFingerprint>;
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
  /** A refusal is waiting for the next renewal to replace the refused token. */
  let replacing = false;
  /** The token a renewal obtained to replace a refused one: if Graph refuses it too, stop. */
  let replacement: string | undefined;
  /** Set once a replacement was refused too: every later call fails with it. */
  let stopped: EntraAuthError | undefined;

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

  /** Whether a cached entry was obtained with the credential the settings name now. */
  async function sameCredential(entry: CachedToken): Promise<boolean> {
    if (!grants.credential) return true;
    const configured = await grants.credential();
    return entry.credential?.kind === configured.kind &&
      entry.credential.fingerprint === configured.fingerprint;
  }

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
    if (grants.credential) {
      const { kind, fingerprint } = await grants.credential();
      entry.credential = { kind, fingerprint };
    }
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
    let found = current ?? options.cache?.find(query());
    if (found !== undefined && current === undefined && !await sameCredential(found)) found = undefined;
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
      const forRefusal = replacing;
      const run = renew(force)
        .then((entry) => {
          current = entry;
          if (forRefusal) {
            replacement = entry.accessToken;
            replacing = false;
          }
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
      if (stopped) throw stopped;
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
    invalidate(refusedToken?: string): void {
      // Without the refused token, a replacement not yet refused is kept: the 401 is most likely
      // its predecessor's, answered to a request sent before the renewal.
      if (refusedToken === undefined && current !== undefined && current.accessToken === replacement) return;
      const token = refusedToken ?? current?.accessToken;
      if (token === undefined) {
        replacing = true;
        return;
      }
      if (token === refused) return; // Already dropped; its replacement is coming or here.
      if (token === replacement) {
        stopped = tokenRefusedTwice(options.tenant, options.clientId, options.cloud);
        return;
      }
      // A refusal of an older token, when a newer one is current, is its predecessor's.
      if (current !== undefined && current.accessToken !== token) return;
      refused = token;
      current = undefined;
      replacing = true;
    },
  };
}

/** The error once Graph refused a token that replaced a refused one: renewing again will not help. */
function tokenRefusedTwice(tenant: string, clientId: string, cloud: EntraCloud): EntraAuthError {
  return new EntraAuthError(
    "unauthorized",
    `Cannot call Microsoft Graph for tenant "${tenant}": it refused a newly issued access token as well as the one before it`,
    {
      hint:
        `Check that ${cloud.graphBase} is the tenant's cloud (--cloud, --sandbox), that this machine's clock is right, and that the app ${clientId} is enabled in the tenant; provisioning whoami shows what the token holds`,
    },
  );
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
