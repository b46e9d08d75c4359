/**
 * Sign-in as the CLI uses it: from resolved {@link EntraSettings} to a {@link TokenSource} for
 * the Graph client, and the `login`, `logout` and `whoami` commands' work.
 *
 * - Delegated (device code or browser): tokens come from the cache, renewed with the refresh
 *   token; a new interactive sign-in happens only in `login`, or when `interactive` is allowed.
 * - App-only (client credentials): tokens are acquired with the secret or certificate whenever
 *   the cached one is near expiry; nothing interactive ever happens.
 *
 * @module
 */
import { UsageError } from "../../../core/errors.ts";
import { signInWithBrowser } from "./auth_code.ts";
import {
  acquireAppToken,
  type ClientCredential,
  type CredentialFingerprint,
  credentialFingerprint,
  loadCertificateCredential,
} from "./client_credentials.ts";
import { signInWithDeviceCode } from "./device_code.ts";
import { type Authority, discoverTenant, domainOfUpn, openAuthority } from "./discovery.ts";
import { EntraAuthError, type EntraAuthErrorCode } from "./errors.ts";
import { refreshDelegatedToken } from "./refresh.ts";
import type { EntraSettings } from "./settings.ts";
import { logout as removeTokenCache, type LogoutResult, TokenCache } from "./token_cache.ts";
import { createTokenSource, type ManagedTokenSource, type TokenGrants } from "./token_source.ts";
import { delegatedScopes, type TokenSet } from "./tokens.ts";
import { type WhoAmI, whoAmI } from "./whoami.ts";

/** The outside world a sign-in needs: injected so tests drive it and the CLI owns the terminal. */
export interface SignInIo {
  /** Shows sign-in instructions (device code, browser URL) to the admin: stderr. */
  readonly notify: (text: string) => void;
  /** Opens a URL in the browser (browser flow). @default openSystemBrowser */
  readonly openBrowser?: (url: string) => Promise<void>;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** Clock in epoch milliseconds. @default Date.now */
  readonly now?: () => number;
  /** Waits between device-code polls (a clock seam for tests). */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
  /** Ctrl+C. */
  readonly signal?: AbortSignal;
  /**
   * Whether a delegated source may start an interactive sign-in when the cache has none.
   * @default false
   */
  readonly interactive?: boolean;
  /** A UPN whose domain names the tenant when no tenant is set (e.g. the `--user` being provisioned). */
  readonly tenantHint?: string;
  /** Renew this long before expiry. @default 300000 */
  readonly refreshMarginMs?: number;
  /** Browser flow: wait this long for the redirect. @default 300000 */
  readonly browserTimeoutMs?: number;
}

/** A ready sign-in: the token source plus what it is for. */
export interface EntraSignIn {
  /** Give `source.getAccessToken` to the Graph client. */
  readonly source: ManagedTokenSource;
  /** `delegated` or `app`. */
  readonly kind: "delegated" | "app";
  /** The tenant as configured or discovered. */
  readonly tenant: string;
  /** The cache the tokens live in. */
  readonly cache: TokenCache;
  /** Forces a new sign-in (interactive for delegated) and caches it; returns the access token. */
  signIn(signal?: AbortSignal): Promise<string>;
  /**
   * What differs between the newest cached sign-in of this kind and cloud and the current
   * settings (tenant, client id, the client credential's kind and fingerprint), one phrase per
   * difference; empty when a cached sign-in matches them or none is cached.
   */
  changedSince(): Promise<string[]>;
}

/**
 * The tenant to sign in to: the setting, else the tenant owning the domain of `io.tenantHint`
 * or of the `account` setting (OpenID discovery).
 *
 * @throws {UsageError} when there is neither a tenant nor a UPN to discover it from.
 */
export async function resolveTenant(
  settings: EntraSettings,
  io: Pick<SignInIo, "tenantHint" | "fetch" | "signal"> = {},
): Promise<string> {
  if (settings.tenant !== undefined) return settings.tenant;
  const upn = io.tenantHint ?? settings.account;
  if (upn === undefined) {
    throw new UsageError("Cannot sign in: no tenant is set", {
      hint:
        "Pass --tenant (or set PROVISIONING_TENANT) with the tenant id or domain, or --account with your UPN",
    });
  }
  const options = {
    cloud: settings.cloud,
    ...(io.fetch ? { fetch: io.fetch } : {}),
    ...(io.signal ? { signal: io.signal } : {}),
  };
  return await discoverTenant(domainOfUpn(upn), options);
}

/**
 * Builds the sign-in the settings describe: opens the token cache, and wires the flow that
 * obtains tokens (client credentials when a secret or certificate is set, otherwise the device
 * code or browser flow) and the refresh of delegated tokens.
 *
 * @throws {UsageError} when the client id or tenant is missing; the cache's errors when it
 * cannot be read.
 */
export async function createEntraSignIn(
  settings: EntraSettings,
  io: SignInIo,
  options: { discardUnreadableCache?: boolean } = {},
): Promise<EntraSignIn> {
  const clientId = settings.clientId;
  if (clientId === undefined) {
    throw new UsageError("Cannot sign in: no application (client) id is set", {
      hint:
        "Pass --client-id or set PROVISIONING_CLIENT_ID to the app registration's Application (client) ID",
    });
  }
  const tenant = await resolveTenant(settings, io);
  const cache = await TokenCache.open({
    dir: settings.tokenCacheDir,
    ...(settings.tokenCachePassphrase === undefined ? {} : { passphrase: settings.tokenCachePassphrase }),
    discardUnreadable: options.discardUnreadableCache ?? false,
    notify: io.notify,
  });
  const now = io.now ?? Date.now;

  let authorityPromise: Promise<Authority> | undefined;
  const authority = (signal: AbortSignal | undefined) => {
    authorityPromise ??= openAuthority(tenant, {
      cloud: settings.cloud,
      ...(io.fetch ? { fetch: io.fetch } : {}),
      ...(signal ? { signal } : {}),
    });
    authorityPromise.catch(() => (authorityPromise = undefined));
    return authorityPromise;
  };

  const kind = settings.signIn === "client-credentials" ? "app" : "delegated";
  const scopes = kind === "app"
    ? [settings.cloud.graphDefaultScope]
    : delegatedScopes(settings.cloud.graphDefaultScope.replace(/\/\.default$/, ""), settings.permissions);

  let credential: Promise<ClientCredential> | undefined;
  const loadCredential = () =>
    credential ??= settings.clientCertificate !== undefined
      ? loadCertificateCredential(settings.clientCertificate, {
        ...(settings.clientCertificateKey === undefined ? {} : { keyPath: settings.clientCertificateKey }),
        now,
      })
      : Promise.resolve({
        kind: "secret",
        secret: settings.clientSecret!,
        source: "PROVISIONING_CLIENT_SECRET",
      });

  const interactiveSignIn = async (signal: AbortSignal | undefined): Promise<TokenSet> => {
    const resolved = await authority(signal);
    const common = {
      authority: resolved,
      clientId,
      scopes,
      now,
      ...(signal ? { signal } : {}),
    };
    if (settings.signIn === "browser") {
      return await signInWithBrowser({
        ...common,
        notify: io.notify,
        ...(io.openBrowser ? { openBrowser: io.openBrowser } : {}),
        ...(settings.account === undefined ? {} : { loginHint: settings.account }),
        ...(io.browserTimeoutMs === undefined ? {} : { timeoutMs: io.browserTimeoutMs }),
      });
    }
    return await signInWithDeviceCode({
      ...common,
      notify: (text) => io.notify(text),
      ...(io.sleep ? { sleep: io.sleep } : {}),
    });
  };

  let forcing = false;
  const grants: TokenGrants = kind === "app"
    ? {
      kind,
      tenantId: async (signal) => (await authority(signal)).tenantId,
      credential: async () => await credentialFingerprint(await loadCredential()),
      acquire: async (signal) =>
        await acquireAppToken({
          authority: await authority(signal),
          clientId,
          credential: await loadCredential(),
          scope: scopes[0]!,
          now,
          ...(signal ? { signal } : {}),
        }),
    }
    : {
      kind,
      tenantId: async (signal) => (await authority(signal)).tenantId,
      acquire: async (signal) => {
        if (!forcing && !io.interactive) {
          throw new EntraAuthError(
            "not-signed-in",
            `Cannot call Microsoft Graph for tenant "${tenant}": nobody is signed in`,
            {
              hint:
                'Run "provisioning login" first, or set PROVISIONING_CLIENT_SECRET or PROVISIONING_CLIENT_CERTIFICATE for an unattended run',
            },
          );
        }
        return await interactiveSignIn(signal);
      },
      refresh: async (refreshToken, signal) =>
        await refreshDelegatedToken({
          authority: await authority(signal),
          clientId,
          refreshToken,
          scopes,
          now,
          ...(signal ? { signal } : {}),
        }),
    };

  const source = createTokenSource({
    cloud: settings.cloud,
    tenant,
    clientId,
    scopes,
    grants,
    cache,
    now,
    ...(settings.account === undefined ? {} : { account: settings.account }),
    ...(io.refreshMarginMs === undefined ? {} : { refreshMarginMs: io.refreshMarginMs }),
    ...(io.signal ? { signal: io.signal } : {}),
  });

  const changedSince = async (): Promise<string[]> => {
    const base = settings.cloud.loginBase.replace(/\/+$/, "").toLowerCase();
    const entries = cache.entries()
      .filter((entry) => entry.kind === kind && entry.authority.replace(/\/+$/, "").toLowerCase() === base)
      .toSorted((a, b) => b.obtainedAt - a.obtainedAt);
    const newest = entries[0];
    if (newest === undefined) return [];
    const configured = kind === "app" ? await credentialFingerprint(await loadCredential()) : undefined;
    const sameTenant = (entry: typeof newest) =>
      [entry.tenant, entry.tenantId].some((name) => name.toLowerCase() === tenant.toLowerCase());
    const sameClient = (entry: typeof newest) => entry.clientId.toLowerCase() === clientId.toLowerCase();
    const sameCredential = (entry: typeof newest) =>
      configured === undefined ||
      (entry.credential?.kind === configured.kind && entry.credential.fingerprint === configured.fingerprint);
    if (entries.some((entry) => sameTenant(entry) && sameClient(entry) && sameCredential(entry))) return [];
    return describeChanges(newest, { tenant, clientId, credential: configured });
  };

  return {
    source,
    kind,
    tenant,
    cache,
    changedSince,
    async signIn(signal?: AbortSignal): Promise<string> {
      forcing = true;
      try {
        return await source.renew({ force: true, ...(signal ? { signal } : {}) });
      } finally {
        forcing = false;
      }
    },
  };
}

/** The phrases of {@link EntraSignIn.changedSince} for one cached entry. */
function describeChanges(
  entry: {
    tenant: string;
    tenantId: string;
    clientId: string;
    credential?: CredentialFingerprint | undefined;
  },
  now: { tenant: string; clientId: string; credential: CredentialFingerprint | undefined },
): string[] {
  const changes: string[] = [];
  if (![entry.tenant, entry.tenantId].some((name) => name.toLowerCase() === now.tenant.toLowerCase())) {
    changes.push(`tenant "${entry.tenant}" (the settings now say "${now.tenant}")`);
  }
  if (entry.clientId.toLowerCase() !== now.clientId.toLowerCase()) {
    changes.push(`client id ${entry.clientId} (the settings now say ${now.clientId})`);
  }
  const credential = now.credential;
  if (credential !== undefined) {
    const named = (kind: string) => (kind === "secret" ? "a client secret" : "a certificate");
    if (entry.credential === undefined) {
      changes.push("a client credential this version of the tool did not record");
    } else if (entry.credential.kind !== credential.kind) {
      changes.push(`${named(entry.credential.kind)} (the settings now give ${named(credential.kind)})`);
    } else if (entry.credential.fingerprint !== credential.fingerprint) {
      changes.push(
        credential.kind === "secret"
          ? "another client secret (PROVISIONING_CLIENT_SECRET changed since)"
          : `another certificate (thumbprint ${entry.credential.fingerprint}; the settings now give ${credential.fingerprint})`,
      );
    }
  }
  return changes;
}

/**
 * `provisioning login`: signs in anew (device code, browser, or client credentials as the
 * settings say), caches the tokens, and reports who is signed in. A cache that cannot be
 * decrypted is replaced.
 */
export async function login(settings: EntraSettings, io: SignInIo): Promise<WhoAmI> {
  const signIn = await createEntraSignIn(settings, io, { discardUnreadableCache: true });
  const token = await signIn.signIn(io.signal);
  return whoAmI(token, { kind: signIn.kind, ...(io.now ? { now: io.now } : {}) });
}

/**
 * `provisioning whoami`: who the cached (or, for app-only, newly acquired) token speaks for and
 * what it lacks. Never starts an interactive sign-in.
 *
 * @throws {EntraAuthError} `not-signed-in` when a delegated sign-in is needed and none is cached.
 */
export async function whoami(settings: EntraSettings, io: SignInIo): Promise<WhoAmI> {
  const signIn = await createEntraSignIn(settings, { ...io, interactive: false });
  // A credential that cannot be loaded fails the sign-in below with its own message.
  const changes = await signIn.changedSince().catch(() => [] as string[]);
  const changed = changes.length === 0
    ? undefined
    : `the cached sign-in was made with ${changes.join(", ")}, so it is not used`;
  let token: string;
  try {
    token = await signIn.source.getAccessToken(io.signal);
  } catch (error) {
    if (changed === undefined || !(error instanceof EntraAuthError)) throw error;
    throw new EntraAuthError(error.code as EntraAuthErrorCode, `${error.message}; ${changed}`, {
      cause: error,
      hint: error.code === "not-signed-in"
        ? "Sign in with the current settings (provisioning login), or go back to the settings the cache was made with"
        : error.hint ?? "Check the settings named above",
      ...(error.aadsts === undefined ? {} : { aadsts: error.aadsts }),
      ...(error.oauthError === undefined ? {} : { oauthError: error.oauthError }),
      ...(error.endpoint === undefined ? {} : { endpoint: error.endpoint }),
    });
  }
  const report = whoAmI(token, { kind: signIn.kind, ...(io.now ? { now: io.now } : {}) });
  if (changed === undefined) return report;
  return {
    ...report,
    findings: [{
      severity: "warning",
      code: "settings-changed",
      message: `The settings changed since the last sign-in: ${changed}`,
      hint: "What is shown here comes from a token obtained with the current settings",
    }, ...report.findings],
  };
}

/** `provisioning logout`: removes the cached tokens and the cache key of the working folder. */
export async function logout(settings: Pick<EntraSettings, "tokenCacheDir">): Promise<LogoutResult> {
  return await removeTokenCache(settings.tokenCacheDir);
}
