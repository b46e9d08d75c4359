/**
 * The sandbox tenant's sign-in side: the Microsoft identity platform v2.0 endpoints (OpenID
 * discovery, JWKS, authorize, device code, token) as Microsoft documents them, issuing Graph
 * access tokens signed with a key generated when the server is created, and verifying them for
 * the sandbox's Graph side.
 *
 * Paths answered by {@link OAuthServer.handle} (`{tenant}` is the tenant id, its domain,
 * `organizations` or `common`):
 *
 * | path | page it reproduces |
 * |---|---|
 * | `GET /{tenant}/v2.0/.well-known/openid-configuration` | https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc |
 * | `GET /{tenant}/discovery/v2.0/keys` | same page (`jwks_uri`) |
 * | `GET, POST /{tenant}/oauth2/v2.0/authorize` | https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow |
 * | `POST /{tenant}/oauth2/v2.0/devicecode` | https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code |
 * | `POST /{tenant}/oauth2/v2.0/token` | the two pages above and https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow |
 *
 * Sandbox-only paths (no Microsoft counterpart; they stand in for a person at a browser):
 *
 * - `GET, POST /devicelogin`: the `verification_uri` page, a form (user code, user name, password).
 * - `POST /_sandbox/device/approve` with JSON `{ user_code, userPrincipalName, password, decline? }`:
 *   approves (or declines) a pending device code, for tests and unattended demos.
 * - `POST /_sandbox/authorize/approve` with JSON `{ authorizeUrl, userPrincipalName, password }`:
 *   signs the user in to the authorization request in `authorizeUrl` and answers
 *   `{ location }`, the redirect a browser would have followed (code and state, or an error).
 *   A `POST` to the authorize endpoint with the request's parameters plus `username` and
 *   `password` form fields does the same and answers the `302` itself.
 *
 * Error bodies follow https://learn.microsoft.com/entra/identity-platform/reference-error-codes
 * (`error`, `error_description` starting `AADSTSnnnnn:`, `error_codes`, `timestamp`, `trace_id`,
 * `correlation_id`, `error_uri`) with the AADSTS codes that page lists.
 *
 * Access tokens are shaped like the v1.0 tokens Microsoft Graph receives
 * (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference):
 * `iss` `https://sts.windows.net/{tid}/`, `aud` `https://graph.microsoft.com`, `ver` `1.0`, `appid`,
 * `roles` for app tokens, `scp`, `wids` and `upn` for delegated ones. Real Graph tokens are not
 * meant to be validated by clients; these are, by {@link OAuthServer.verifyAccessToken}.
 *
 * A client on oauth4webapi must pass its `allowInsecureRequests` option to talk to a sandbox
 * served over `http://` on loopback, and must set the client assertion's `aud` to the token
 * endpoint (its default is the issuer) with its `modifyAssertion` option, as Microsoft documents.
 *
 * @module
 */
import {
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";
import { z } from "zod";
import { equalBytes, fromBase64Any, randomBytes, toBase64Url, utf8 } from "../../../core/bytes.ts";

// ---------------------------------------------------------------------------------------------
// The contract the rest of the sandbox composes
// ---------------------------------------------------------------------------------------------

/** An app registration of the sandbox tenant: who may ask for tokens, and with what. */
export interface SandboxApp {
  /** Application (client) id. */
  clientId: string;
  displayName: string;
  /** Client secret; absent for an app without one. */
  secret?: string;
  /**
   * Public key of the app's certificate credential, for `private_key_jwt` client assertions.
   * Thumbprints are read from its `x5t`, `x5t#S256` or `x5c` members when present; a key with
   * none of them accepts any `x5t`/`x5t#S256` header (the signature still decides).
   */
  certificateJwk?: JsonWebKey;
  /** Registered redirect URIs; a loopback one (`localhost`, `127.0.0.1`) matches any port. */
  redirectUris: string[];
  /** Graph app roles granted by admin consent, e.g. `UserAuthMethod-Passkey.ReadWrite.All`. */
  applicationPermissions: string[];
  /**
   * "Allow public client flows": device code, authorization code and refresh without a client
   * credential. Credentials that are sent are verified either way.
   * @default true
   */
  allowPublicClient?: boolean;
}

/** A user who can sign in interactively (device code, authorization code). */
export interface SandboxAccount {
  objectId: string;
  userPrincipalName: string;
  password: string;
  /** Directory role names, e.g. `Authentication Administrator`; see {@link directoryRoleTemplateIds}. */
  directoryRoles: string[];
}

/** The part of the sandbox tenant the sign-in side reads (live, at every request). */
export interface OAuthTenantConfig {
  tenantId: string;
  /** The tenant's domain, e.g. `contoso.onmicrosoft.com`; discovery answers for it too. */
  domain: string;
  apps: SandboxApp[];
  accounts: SandboxAccount[];
  /** Delegated Graph permissions consented for the tenant, e.g. `UserAuthenticationMethod.ReadWrite.All`. */
  delegatedScopes: string[];
}

/** Who a verified access token speaks for: what the Graph side authorizes against. */
export interface Principal {
  kind: "app" | "user";
  /** `appid` of the token. */
  clientId: string;
  tenantId: string;
  /** `oid`: the user's object id, or the app's service principal id. */
  objectId?: string;
  userPrincipalName?: string;
  /** `scp`, delegated permissions (user tokens). */
  scopes: string[];
  /** `roles`, app roles (app tokens). */
  roles: string[];
  /** Directory role names mapped back from `wids`. */
  directoryRoles: string[];
}

/** The sign-in side as the sandbox server composes it. */
export interface OAuthServer {
  /** Answers a request on one of this module's paths, or `undefined` for any other path. */
  handle(request: Request, url: URL): Promise<Response | undefined>;
  /** Verifies an `Authorization` header's bearer token; rejects with {@link OAuthTokenError}. */
  verifyAccessToken(authorization: string | null): Promise<Principal>;
  /**
   * Fault for tests: replaces the token signing key at once, so every access token issued before
   * is refused by Graph with 401 while new ones work, as after a revocation. (Entra itself rolls
   * keys over with overlap, https://learn.microsoft.com/entra/identity-platform/signing-key-rollover;
   * this is the abrupt case a client must survive.)
   */
  rotateSigningKey(): Promise<void>;
}

/**
 * Why a bearer token was refused: the Graph side turns it into Graph's
 * `{"error":{"code":"InvalidAuthenticationToken","message":…}}` with status 401.
 */
export class OAuthTokenError extends Error {
  /** HTTP status Graph answers with. */
  readonly status: number = 401;
  /** Graph's error code. */
  readonly code: string = "InvalidAuthenticationToken";

  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OAuthTokenError";
  }
}

/** Options of {@link createOAuthServer}. */
export interface OAuthServerOptions {
  /** The sandbox's base URL (`http://127.0.0.1:PORT`), read per request: the port is known late. */
  baseUrl: () => string;
  tenant: OAuthTenantConfig;
  /** Clock in epoch milliseconds. @default Date.now */
  now?: () => number;
  /** Access token lifetime in seconds. @default 3599 */
  accessTokenLifetimeSeconds?: number;
  /** Device code lifetime (`expires_in`) in seconds; Microsoft's default is 15 minutes. @default 900 */
  deviceCodeLifetimeSeconds?: number;
  /** Polling interval (`interval`) in seconds. @default 5 */
  deviceCodeIntervalSeconds?: number;
  /**
   * Revoke a refresh token once it has been redeemed. Microsoft documents that it does not (the
   * client is expected to discard it); turn this on to prove a client keeps only the newest.
   * @default false
   */
  revokeUsedRefreshTokens?: boolean;
  /**
   * Refuse a client assertion whose `jti` was already accepted (RFC 7523 §3 allows it). Whether
   * Entra does is not documented.
   * @default true
   */
  rejectReusedAssertions?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Constants from Microsoft's pages
// ---------------------------------------------------------------------------------------------

/**
 * Template ids of the built-in directory roles that tokens carry in `wids`
 * (https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference).
 */
export const directoryRoleTemplateIds: Readonly<Record<string, string>> = Object.freeze({
  "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
  "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
  "Authentication Administrator": "c4e39bd9-1100-46d3-8c65-fb160da0071f",
  "Authentication Policy Administrator": "0526716b-113d-4c15-b2c8-68e3c22b9f80",
  "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
  "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
  "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
  "Security Administrator": "194ae4cb-b126-40b2-bd5b-6091b380977d",
  "Global Reader": "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
});

/** Microsoft Graph's resource URI and app id: the audiences this sandbox issues and accepts. */
const graphResource = "https://graph.microsoft.com";
const graphAppId = "00000003-0000-0000-c000-000000000000";
const graphAudiences = [graphResource, `${graphResource}/`, graphAppId];
/** Scopes of OpenID Connect itself, which name no resource. */
const oidcScopes = ["openid", "profile", "email", "offline_access"];
const jwtBearerAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const deviceCodeGrantType = "urn:ietf:params:oauth:grant-type:device_code";
/** Authorization codes live about ten minutes (auth code flow page). */
const authorizationCodeLifetimeMs = 10 * 60_000;
/** How long a signed-out sign-in form stays usable. */
const pendingSignInLifetimeMs = 30 * 60_000;
/** Refresh tokens expire after 90 days without use (configurable token lifetimes page). */
const refreshTokenIdleLifetimeMs = 90 * 24 * 3600_000;
/** Clock skew tolerated on assertions and on access tokens at Graph. */
const clockToleranceSeconds = 300;

// ---------------------------------------------------------------------------------------------
// Errors in the Entra token-error shape
// ---------------------------------------------------------------------------------------------

/** A refusal by the token service, rendered by {@link stsErrorResponse}. */
class StsError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly aadsts: number,
    description: string,
  ) {
    super(description);
  }
}

const invalidRequest = (code: number, description: string) =>
  new StsError(400, "invalid_request", code, description);
const invalidClient = (code: number, description: string) =>
  new StsError(401, "invalid_client", code, description);
const invalidGrant = (code: number, description: string) =>
  new StsError(400, "invalid_grant", code, description);
const missingParameter = (name: string) =>
  invalidRequest(900144, `The request body is missing the required parameter '${name}'.`);

// ---------------------------------------------------------------------------------------------
// Input schemas (every form and JSON body is parsed here)
// ---------------------------------------------------------------------------------------------

const authorizeParamsSchema = z.object({
  client_id: z.string().min(1),
  redirect_uri: z.string().min(1).optional(),
  response_type: z.string().min(1),
  scope: z.string().min(1),
  state: z.string().optional(),
  nonce: z.string().optional(),
  response_mode: z.enum(["query", "form_post", "fragment"]).optional(),
  code_challenge: z.string().optional(),
  code_challenge_method: z.enum(["S256", "plain"]).optional(),
  login_hint: z.string().optional(),
  prompt: z.string().optional(),
});
type AuthorizeParams = z.infer<typeof authorizeParamsSchema>;

const deviceApprovalSchema = z.object({
  user_code: z.string().min(1).max(64),
  userPrincipalName: z.string().min(1).max(256),
  password: z.string().max(256),
  decline: z.boolean().optional(),
});

const authorizeApprovalSchema = z.object({
  authorizeUrl: z.string().min(1).max(8192),
  userPrincipalName: z.string().min(1).max(256),
  password: z.string().max(256),
});

const assertionHeaderSchema = z.object({
  alg: z.string(),
  x5t: z.string().optional(),
  "x5t#S256": z.string().optional(),
});

const assertionClaimsSchema = z.object({
  aud: z.union([z.string(), z.array(z.string())]),
  iss: z.string(),
  sub: z.string(),
  jti: z.string().min(1),
  exp: z.number(),
  nbf: z.number().optional(),
  iat: z.number().optional(),
});

const registeredThumbprintsSchema = z.object({
  x5t: z.string().optional(),
  "x5t#S256": z.string().optional(),
  x5c: z.array(z.string()).optional(),
});

const accessTokenClaimsSchema = z.object({
  tid: z.string(),
  appid: z.string(),
  idtyp: z.enum(["app", "user"]),
  oid: z.string().optional(),
  upn: z.string().optional(),
  scp: z.string().optional(),
  roles: z.array(z.string()).optional(),
  wids: z.array(z.string()).optional(),
});

// ---------------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------------

/** What a user agreed to: the grant a code, device code or refresh token stands for. */
interface UserGrant {
  grantId: string;
  clientId: string;
  account: SandboxAccount;
  /** Requested scopes as sent (resource-qualified or not), for the response's `scope`. */
  scopes: ResolvedScopes;
  nonce?: string;
}

interface ResolvedScopes {
  /** Graph permission names granted (the `scp` claim). */
  graph: string[];
  /** OpenID Connect scopes requested (`openid`, `offline_access`, …). */
  oidc: string[];
}

interface DeviceGrant {
  clientId: string;
  userCode: string;
  scopes: ResolvedScopes;
  expiresAt: number;
  intervalMs: number;
  lastPollAt?: number;
  state: "pending" | "approved" | "declined" | "redeemed";
  account?: SandboxAccount;
}

interface CodeGrant extends UserGrant {
  redirectUri: string;
  codeChallenge?: string;
  codeChallengeMethod: "S256" | "plain";
  expiresAt: number;
  redeemed: boolean;
}

interface RefreshGrant extends UserGrant {
  lastUsedAt: number;
}

interface PendingSignIn {
  params: AuthorizeParams;
  redirectUri: string;
  expiresAt: number;
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

/** How the client proved itself: becomes `appidacr` (0 public, 1 secret, 2 certificate). */
type ClientAuthMethod = "none" | "secret" | "certificate";

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/**
 * Creates the sign-in side of a sandbox tenant. The RS256 signing key is generated in the
 * background at once; the first request waits for it.
 *
 * @example
 * ```ts
 * import { createOAuthServer } from "./oauth.ts";
 * const oauth = createOAuthServer({
 *   baseUrl: () => "http://127.0.0.1:8400",
 *   tenant: { tenantId: "00000000-0000-0000-0000-000000000001", domain: "contoso.example", apps: [], accounts: [], delegatedScopes: [] },
 * });
 * const url = new URL("http://127.0.0.1:8400/contoso.example/v2.0/.well-known/openid-configuration");
 * const response = await oauth.handle(new Request(url), url);
 * console.assert(response?.status === 200);
 * ```
 */
export function createOAuthServer(options: OAuthServerOptions): OAuthServer {
  const { tenant } = options;
  const now = options.now ?? Date.now;
  const accessTokenLifetime = options.accessTokenLifetimeSeconds ?? 3599;
  const deviceCodeLifetimeMs = (options.deviceCodeLifetimeSeconds ?? 900) * 1000;
  const deviceIntervalMs = (options.deviceCodeIntervalSeconds ?? 5) * 1000;
  const rejectReusedAssertions = options.rejectReusedAssertions ?? true;
  for (const account of tenant.accounts) roleTemplateIds(account);

  let signingKey: Promise<SigningKey> = createSigningKey();
  // Keep a failed key generation from surfacing as an unhandled rejection before first use.
  signingKey.catch(() => {});

  const deviceGrants = new Map<string, DeviceGrant>();
  const deviceCodesByUserCode = new Map<string, string>();
  const pendingSignIns = new Map<string, PendingSignIn>();
  const codes = new Map<string, CodeGrant>();
  const refreshTokens = new Map<string, RefreshGrant>();
  const acceptedJtis = new Map<string, number>();
  const servicePrincipalIds = new Map<string, string>();
  const pairwiseSubjects = new Map<string, string>();

  const base = () => options.baseUrl().replace(/\/+$/, "");
  const issuerV2 = () => `${base()}/${tenant.tenantId}/v2.0`;
  const issuerV1 = () => `https://sts.windows.net/${tenant.tenantId}/`;

  /** Maps the `{tenant}` path segment to how this tenant answers it, or undefined. */
  function resolveTenant(segment: string): "tenant" | "common" | "organizations" | undefined {
    const lower = segment.toLowerCase();
    if (lower === tenant.tenantId.toLowerCase() || lower === tenant.domain.toLowerCase()) return "tenant";
    if (lower === "common" || lower === "organizations") return lower;
    return undefined;
  }

  function findApp(clientId: string): SandboxApp {
    const app = tenant.apps.find((candidate) => candidate.clientId === clientId);
    if (!app) {
      throw new StsError(
        400,
        "unauthorized_client",
        700016,
        `No application with client id '${clientId}' is registered in the directory '${tenant.domain}'. ` +
          `Check the client id, and that the request goes to the tenant the app is registered in.`,
      );
    }
    return app;
  }

  function findAccount(userPrincipalName: string): SandboxAccount | undefined {
    const lower = userPrincipalName.toLowerCase();
    return tenant.accounts.find((account) => account.userPrincipalName.toLowerCase() === lower);
  }

  /** Checks a user's password; throws the sign-in error Entra answers. */
  function signIn(userPrincipalName: string, password: string): SandboxAccount {
    const account = findAccount(userPrincipalName);
    if (!account) {
      throw invalidGrant(
        50034,
        `The user account '${userPrincipalName}' does not exist in the '${tenant.domain}' directory.`,
      );
    }
    if (!equalBytes(utf8(password), utf8(account.password))) {
      throw invalidGrant(50126, `The user name or password is incorrect.`);
    }
    return account;
  }

  function servicePrincipalId(clientId: string): string {
    let id = servicePrincipalIds.get(clientId);
    if (!id) servicePrincipalIds.set(clientId, id = crypto.randomUUID());
    return id;
  }

  function pairwiseSubject(objectId: string, clientId: string): string {
    const key = `${objectId} ${clientId}`;
    let subject = pairwiseSubjects.get(key);
    if (!subject) pairwiseSubjects.set(key, subject = toBase64Url(randomBytes(32)));
    return subject;
  }

  function prune(): void {
    const t = now();
    for (const [code, grant] of deviceGrants) {
      if (grant.expiresAt + 3600_000 < t) {
        deviceGrants.delete(code);
        deviceCodesByUserCode.delete(grant.userCode);
      }
    }
    for (const [id, pending] of pendingSignIns) if (pending.expiresAt < t) pendingSignIns.delete(id);
    for (const [code, grant] of codes) if (grant.expiresAt + 3600_000 < t) codes.delete(code);
    for (const [jti, expiresAt] of acceptedJtis) if (expiresAt < t) acceptedJtis.delete(jti);
    for (const [token, grant] of refreshTokens) {
      if (grant.lastUsedAt + refreshTokenIdleLifetimeMs < t) refreshTokens.delete(token);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Scopes
  // -------------------------------------------------------------------------------------------

  /**
   * Resolves a delegated `scope` parameter: Graph permissions (bare or resource-qualified) must
   * be consented in the tenant; another resource is an invalid scope.
   */
  function resolveDelegatedScopes(scope: string): ResolvedScopes {
    const graph: string[] = [];
    const oidc: string[] = [];
    for (const requested of scope.split(/\s+/).filter(Boolean)) {
      const lower = requested.toLowerCase();
      if (oidcScopes.includes(lower)) {
        if (!oidc.includes(lower)) oidc.push(lower);
        continue;
      }
      const name = graphPermissionName(requested);
      if (name === undefined) {
        throw new StsError(
          400,
          "invalid_scope",
          70011,
          `The value '${requested}' of the input parameter 'scope' is not valid: this tenant only issues tokens for Microsoft Graph.`,
        );
      }
      if (name.toLowerCase() === ".default") {
        for (const granted of tenant.delegatedScopes) if (!graph.includes(granted)) graph.push(granted);
        continue;
      }
      const granted = tenant.delegatedScopes.find((candidate) =>
        candidate.toLowerCase() === name.toLowerCase()
      );
      if (!granted) {
        throw new StsError(
          400,
          "consent_required",
          65001,
          `No admin consent grants the delegated permission '${name}' of Microsoft Graph ` +
            `in '${tenant.domain}'. Grant admin consent for it first.`,
        );
      }
      if (!graph.includes(granted)) graph.push(granted);
    }
    return { graph, oidc };
  }

  function responseScope(scopes: ResolvedScopes): string {
    return [...scopes.graph.map((name) => `${graphResource}/${name}`), ...scopes.oidc].join(" ");
  }

  // -------------------------------------------------------------------------------------------
  // Token issuance
  // -------------------------------------------------------------------------------------------

  async function sign(claims: Record<string, unknown>): Promise<string> {
    const key = await signingKey;
    return await new SignJWT(claims)
      .setProtectedHeader({ typ: "JWT", alg: "RS256", kid: key.kid })
      .sign(key.privateKey);
  }

  async function issueAppToken(app: SandboxApp, method: ClientAuthMethod): Promise<Response> {
    const iat = Math.floor(now() / 1000);
    const objectId = servicePrincipalId(app.clientId);
    const claims: Record<string, unknown> = {
      aud: graphResource,
      iss: issuerV1(),
      iat,
      nbf: iat,
      exp: iat + accessTokenLifetime,
      app_displayname: app.displayName,
      appid: app.clientId,
      appidacr: appIdAcr(method),
      idp: issuerV1(),
      idtyp: "app",
      oid: objectId,
      sub: objectId,
      tid: tenant.tenantId,
      uti: toBase64Url(randomBytes(16)),
      ver: "1.0",
    };
    if (app.applicationPermissions.length > 0) claims.roles = [...app.applicationPermissions];
    return tokenResponse({
      token_type: "Bearer",
      expires_in: accessTokenLifetime,
      ext_expires_in: accessTokenLifetime,
      access_token: await sign(claims),
    });
  }

  /** Issues tokens for a user's grant; `scopes` narrows the access token (refresh with `scope`). */
  async function issueUserTokens(
    app: SandboxApp,
    grant: UserGrant,
    method: ClientAuthMethod,
    scopes: ResolvedScopes = grant.scopes,
  ): Promise<Response> {
    const iat = Math.floor(now() / 1000);
    const { account } = grant;
    const wids = roleTemplateIds(account);
    const scp = scopes.graph.length > 0
      ? scopes.graph.join(" ")
      : scopes.oidc.filter((scope) => scope !== "offline_access").join(" ");
    const claims: Record<string, unknown> = {
      aud: graphResource,
      iss: issuerV1(),
      iat,
      nbf: iat,
      exp: iat + accessTokenLifetime,
      acr: "1",
      amr: ["pwd"],
      app_displayname: app.displayName,
      appid: app.clientId,
      appidacr: appIdAcr(method),
      idtyp: "user",
      name: account.userPrincipalName,
      oid: account.objectId,
      scp,
      sub: pairwiseSubject(account.objectId, graphAppId),
      tid: tenant.tenantId,
      unique_name: account.userPrincipalName,
      upn: account.userPrincipalName,
      uti: toBase64Url(randomBytes(16)),
      ver: "1.0",
      wids,
    };
    const body: Record<string, unknown> = {
      token_type: "Bearer",
      scope: responseScope(scopes),
      expires_in: accessTokenLifetime,
      ext_expires_in: accessTokenLifetime,
      access_token: await sign(claims),
    };
    // The refresh token stands for the whole grant, whatever this request narrowed it to.
    if (grant.scopes.oidc.includes("offline_access")) {
      const refreshToken = toBase64Url(randomBytes(48));
      refreshTokens.set(refreshToken, { ...grant, lastUsedAt: now() });
      body.refresh_token = refreshToken;
    }
    if (scopes.oidc.includes("openid")) {
      // ID token claims: https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference
      const idClaims: Record<string, unknown> = {
        aud: app.clientId,
        iss: issuerV2(),
        iat,
        nbf: iat,
        exp: iat + 3600,
        name: account.userPrincipalName,
        oid: account.objectId,
        preferred_username: account.userPrincipalName,
        sub: pairwiseSubject(account.objectId, app.clientId),
        tid: tenant.tenantId,
        uti: toBase64Url(randomBytes(16)),
        ver: "2.0",
      };
      if (grant.nonce !== undefined) idClaims.nonce = grant.nonce;
      body.id_token = await sign(idClaims);
    }
    return tokenResponse(body);
  }

  // -------------------------------------------------------------------------------------------
  // Client authentication (client_secret_post, client_secret_basic, private_key_jwt)
  // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow
  // https://learn.microsoft.com/entra/identity-platform/certificate-credentials
  // -------------------------------------------------------------------------------------------

  async function authenticateClient(
    request: Request,
    form: URLSearchParams,
    tenantSegment: string,
    requireCredential: boolean,
  ): Promise<{ app: SandboxApp; method: ClientAuthMethod }> {
    const basic = parseBasicAuthorization(request.headers.get("authorization"));
    const bodyClientId = form.get("client_id") ?? undefined;
    const bodySecret = form.get("client_secret") ?? undefined;
    const assertion = form.get("client_assertion") ?? undefined;
    const assertionType = form.get("client_assertion_type") ?? undefined;

    if (basic && bodyClientId !== undefined && basic.clientId !== bodyClientId) {
      throw invalidRequest(90023, `The client_id in the Authorization header and in the body differ.`);
    }
    if ([basic, bodySecret, assertion].filter((item) => item !== undefined).length > 1) {
      throw invalidRequest(90023, `The client authenticated with more than one method; use exactly one.`);
    }
    let clientId = basic?.clientId ?? bodyClientId;
    if (clientId === undefined && assertion !== undefined) {
      clientId = safeDecodeJwt(assertion)?.iss;
    }
    if (clientId === undefined || clientId === "") throw missingParameter("client_id");
    const app = findApp(clientId);

    const secret = basic?.secret ?? bodySecret;
    if (secret !== undefined) {
      if (app.secret === undefined && app.certificateJwk === undefined) {
        throw invalidClient(
          700025,
          `The client '${app.clientId}' is public, so it must send no client_secret.`,
        );
      }
      if (app.secret === undefined || !equalBytes(utf8(secret), utf8(app.secret))) {
        throw invalidClient(
          7000215,
          `An invalid client secret was provided for the app '${app.clientId}'. Send the secret's value, not its id.`,
        );
      }
      return { app, method: "secret" };
    }
    if (assertion !== undefined || assertionType !== undefined) {
      if (assertionType !== jwtBearerAssertionType) {
        throw invalidRequest(
          90100,
          `The parameter 'client_assertion_type' must be '${jwtBearerAssertionType}'.`,
        );
      }
      if (assertion === undefined) throw missingParameter("client_assertion");
      await verifyClientAssertion(app, assertion, tenantSegment);
      return { app, method: "certificate" };
    }
    if (requireCredential || app.allowPublicClient === false) {
      throw invalidClient(
        7000218,
        `The request body must contain 'client_assertion' or 'client_secret' for the app '${app.clientId}'.`,
      );
    }
    return { app, method: "none" };
  }

  async function verifyClientAssertion(
    app: SandboxApp,
    assertion: string,
    tenantSegment: string,
  ): Promise<void> {
    let header: z.infer<typeof assertionHeaderSchema>;
    let claims: z.infer<typeof assertionClaimsSchema>;
    try {
      header = assertionHeaderSchema.parse(decodeProtectedHeader(assertion));
      claims = assertionClaimsSchema.parse(decodeJwt(assertion));
    } catch (cause) {
      throw invalidClient(50027, `The client assertion is not a well-formed JWT: ${describe(cause)}.`);
    }
    if (claims.iss !== app.clientId) {
      throw invalidClient(
        50027,
        `The client assertion's issuer '${claims.iss}' is not the client id '${app.clientId}'.`,
      );
    }
    if (claims.sub !== claims.iss) {
      throw invalidClient(50048, `The client assertion's subject '${claims.sub}' does not match its issuer.`);
    }
    const audiences = acceptedAssertionAudiences(tenantSegment);
    if (typeof claims.aud !== "string" || !audiences.includes(claims.aud)) {
      throw invalidClient(
        50027,
        `The client assertion's audience ${JSON.stringify(claims.aud)} is not this tenant's token endpoint ` +
          `'${audiences[0]}'.`,
      );
    }
    if (!app.certificateJwk) {
      throw invalidClient(
        700027,
        `The app '${app.clientId}' has no certificate credential to check the assertion with.`,
      );
    }
    if (header.alg !== "RS256" && header.alg !== "PS256") {
      throw invalidClient(700027, `The client assertion is signed with '${header.alg}'; use PS256 or RS256.`);
    }
    const presented = [header["x5t#S256"], header.x5t].filter((value) => value !== undefined);
    if (presented.length === 0) {
      throw invalidClient(
        700027,
        `The client assertion's header names no certificate: add 'x5t#S256' (or 'x5t') with its thumbprint.`,
      );
    }
    const registered = await registeredThumbprints(app.certificateJwk);
    if (registered.length > 0 && !presented.some((thumbprint) => registered.includes(thumbprint))) {
      throw invalidClient(
        700027,
        `The client assertion names a certificate the app does not have: no registered certificate ` +
          `has the thumbprint '${presented[0]}'.`,
      );
    }
    try {
      const key = await importJWK(toJoseJwk(app.certificateJwk), header.alg);
      await jwtVerify(assertion, key, {
        algorithms: [header.alg],
        currentDate: new Date(now()),
        clockTolerance: clockToleranceSeconds,
        requiredClaims: ["exp", "jti"],
      });
    } catch (cause) {
      if (cause instanceof joseErrors.JWTExpired || isTimeClaimFailure(cause)) {
        throw invalidClient(
          700024,
          `The client assertion has expired or is not valid yet (server time ${
            new Date(now()).toISOString()
          }).`,
        );
      }
      throw invalidClient(
        700027,
        `The client assertion's signature does not verify with the app's certificate: ${describe(cause)}.`,
      );
    }
    if (rejectReusedAssertions) {
      const key = `${app.clientId} ${claims.jti}`;
      if (acceptedJtis.has(key)) {
        throw invalidClient(
          50013,
          `The client assertion with jti '${claims.jti}' was already used; sign a new one.`,
        );
      }
      acceptedJtis.set(key, (claims.exp + clockToleranceSeconds) * 1000);
    }
  }

  function acceptedAssertionAudiences(tenantSegment: string): string[] {
    const aliases = [tenant.tenantId, tenant.domain, tenant.domain.toLowerCase(), tenantSegment];
    return [...new Set(aliases)].flatMap((alias) => [
      `${base()}/${alias}/oauth2/v2.0/token`,
      `${base()}/${alias}/oauth2/token`,
    ]);
  }

  // -------------------------------------------------------------------------------------------
  // Endpoints
  // -------------------------------------------------------------------------------------------

  function openIdConfiguration(kind: "tenant" | "common" | "organizations"): Response {
    // Shape of the real document: https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc
    // ("Fetch the OpenID configuration document"). Multi-tenant aliases answer with the
    // `{tenantid}` placeholder in the issuer and their own alias in the endpoints, as Entra does.
    const path = kind === "tenant" ? tenant.tenantId : kind;
    const root = `${base()}/${path}`;
    return Response.json({
      token_endpoint: `${root}/oauth2/v2.0/token`,
      token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
      jwks_uri: `${root}/discovery/v2.0/keys`,
      response_modes_supported: ["query", "fragment", "form_post"],
      subject_types_supported: ["pairwise"],
      id_token_signing_alg_values_supported: ["RS256"],
      response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
      scopes_supported: ["openid", "profile", "email", "offline_access"],
      issuer: kind === "tenant" ? issuerV2() : `${base()}/{tenantid}/v2.0`,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${base()}/oidc/userinfo`,
      authorization_endpoint: `${root}/oauth2/v2.0/authorize`,
      device_authorization_endpoint: `${root}/oauth2/v2.0/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${root}/oauth2/v2.0/logout`,
      claims_supported: [
        "sub",
        "iss",
        "cloud_instance_name",
        "cloud_instance_host_name",
        "cloud_graph_host_name",
        "msgraph_host",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "acr",
        "nonce",
        "preferred_username",
        "name",
        "tid",
        "ver",
        "at_hash",
        "c_hash",
        "email",
      ],
      kerberos_endpoint: `${root}/kerberos`,
      tenant_region_scope: kind === "tenant" ? "WW" : null,
      cloud_instance_name: "microsoftonline.com",
      cloud_graph_host_name: "graph.windows.net",
      // The sandbox serves Graph itself: point clients that read msgraph_host at it.
      msgraph_host: new URL(base()).host,
      rbac_url: "https://pas.windows.net",
    }, { headers: { "cache-control": "max-age=86400, private" } });
  }

  async function jwks(kind: "v1" | "v2"): Promise<Response> {
    const key = await signingKey;
    const entry: Record<string, unknown> = { ...key.publicJwk, use: "sig", kid: key.kid };
    if (kind === "v2") entry.issuer = issuerV2();
    return Response.json({ keys: [entry] }, { headers: { "cache-control": "max-age=86400, private" } });
  }

  async function deviceAuthorization(request: Request, tenantSegment: string): Promise<Response> {
    // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code ("Device authorization request")
    const form = await readForm(request);
    const clientId = form.get("client_id");
    if (!clientId) throw missingParameter("client_id");
    const scope = form.get("scope");
    if (!scope) throw missingParameter("scope");
    await authenticateClient(request, form, tenantSegment, false);
    const scopes = resolveDelegatedScopes(scope);
    const deviceCode = toBase64Url(randomBytes(48));
    let userCode: string;
    do userCode = newUserCode(); while (deviceCodesByUserCode.has(userCode));
    deviceGrants.set(deviceCode, {
      clientId,
      userCode,
      scopes,
      expiresAt: now() + deviceCodeLifetimeMs,
      intervalMs: deviceIntervalMs,
      state: "pending",
    });
    deviceCodesByUserCode.set(userCode, deviceCode);
    const verificationUri = `${base()}/devicelogin`;
    return Response.json({
      user_code: userCode,
      device_code: deviceCode,
      verification_uri: verificationUri,
      expires_in: Math.floor(deviceCodeLifetimeMs / 1000),
      interval: Math.floor(deviceIntervalMs / 1000),
      message:
        `To sign in, use a web browser to open the page ${verificationUri} and enter the code ${userCode} ` +
        `to authenticate (sandbox tenant ${tenant.domain}).`,
    }, { headers: noStore });
  }

  /** Approves or declines a pending device code as the signed-in user. */
  function approveDevice(
    userCode: string,
    userPrincipalName: string,
    password: string,
    decline: boolean,
  ): void {
    const deviceCode = deviceCodesByUserCode.get(userCode.trim().toUpperCase());
    const grant = deviceCode === undefined ? undefined : deviceGrants.get(deviceCode);
    if (!grant) throw invalidGrant(70018, `The code '${userCode}' is not a valid device sign-in code.`);
    if (grant.expiresAt <= now()) {
      throw new StsError(400, "expired_token", 70019, `The code '${userCode}' has expired.`);
    }
    if (grant.state !== "pending") {
      throw invalidGrant(
        90120,
        `The device sign-in for code '${userCode}' was already approved or declined.`,
      );
    }
    const account = signIn(userPrincipalName, password);
    grant.account = account;
    grant.state = decline ? "declined" : "approved";
  }

  async function authorize(request: Request, url: URL, tenantSegment: string): Promise<Response> {
    // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow ("Request an authorization code")
    if (request.method === "GET") {
      return beginAuthorization(Object.fromEntries(url.searchParams), tenantSegment);
    }
    if (request.method !== "POST") {
      return htmlError(405, 900561, `The endpoint only accepts GET and POST requests.`);
    }
    const form = await readForm(request);
    const username = form.get("username") ?? "";
    const password = form.get("password") ?? "";
    const transaction = form.get("transaction");
    if (transaction !== null) {
      const pending = pendingSignIns.get(transaction);
      if (!pending || pending.expiresAt <= now()) {
        return htmlError(
          400,
          50089,
          `The sign-in page has expired. Start the sign-in again from the application.`,
        );
      }
      const outcome = completeAuthorization(pending.params, pending.redirectUri, username, password);
      if (outcome instanceof StsError) {
        return signInPage(
          tenantSegment,
          transaction,
          pending.params,
          `AADSTS${outcome.aadsts}: ${outcome.message}`,
          400,
        );
      }
      pendingSignIns.delete(transaction);
      return outcome;
    }
    const fields = Object.fromEntries(form);
    delete fields.username;
    delete fields.password;
    const checked = checkAuthorizeRequest(fields);
    if (checked instanceof StsError) return htmlError(checked.status, checked.aadsts, checked.message);
    if (checked instanceof Response) return checked;
    const outcome = completeAuthorization(checked.params, checked.redirectUri, username, password);
    return outcome instanceof StsError ? htmlError(outcome.status, outcome.aadsts, outcome.message) : outcome;
  }

  /**
   * Validates an authorization request. A StsError is shown on the sign-in service's own page
   * (unknown client, unregistered redirect URI: nowhere safe to redirect to); a Response is an
   * error redirect to the app.
   */
  function checkAuthorizeRequest(
    raw: Record<string, string>,
  ): { params: AuthorizeParams; redirectUri: string } | Response | StsError {
    const clientId = raw.client_id;
    if (!clientId) {
      return invalidRequest(900144, `The request is missing the required parameter 'client_id'.`);
    }
    const app = tenant.apps.find((candidate) => candidate.clientId === clientId);
    if (!app) {
      return new StsError(
        400,
        "unauthorized_client",
        700016,
        `No application with client id '${clientId}' is registered in the directory '${tenant.domain}'.`,
      );
    }
    const redirectUri = matchRedirectUri(app, raw.redirect_uri);
    if (redirectUri === undefined) {
      return invalidRequest(
        50011,
        `The redirect URI '${
          raw.redirect_uri ?? ""
        }' does not match the redirect URIs configured for the app '${clientId}'.`,
      );
    }
    const parsed = authorizeParamsSchema.safeParse(raw);
    if (!parsed.success) {
      const field = String(parsed.error.issues[0]?.path[0] ?? "request");
      return redirectError(
        redirectUri,
        raw,
        "invalid_request",
        900144,
        `The parameter '${field}' is missing or not valid.`,
      );
    }
    const params = parsed.data;
    if (params.response_type !== "code") {
      return redirectError(
        redirectUri,
        raw,
        "unsupported_response_type",
        700054,
        `The response_type '${params.response_type}' is not enabled for the app; use 'code'.`,
      );
    }
    if (params.code_challenge !== undefined && !/^[A-Za-z0-9._~-]{43,128}$/.test(params.code_challenge)) {
      return redirectError(
        redirectUri,
        raw,
        "invalid_request",
        501491,
        `The code_challenge has an invalid size.`,
      );
    }
    try {
      resolveDelegatedScopes(params.scope);
    } catch (error) {
      if (error instanceof StsError) {
        return redirectError(redirectUri, raw, error.error, error.aadsts, error.message);
      }
      throw error;
    }
    return { params, redirectUri };
  }

  function beginAuthorization(raw: Record<string, string>, tenantSegment: string): Response {
    const checked = checkAuthorizeRequest(raw);
    if (checked instanceof StsError) return htmlError(checked.status, checked.aadsts, checked.message);
    if (checked instanceof Response) return checked;
    const transaction = toBase64Url(randomBytes(24));
    pendingSignIns.set(transaction, { ...checked, expiresAt: now() + pendingSignInLifetimeMs });
    return signInPage(tenantSegment, transaction, checked.params, undefined, 200);
  }

  /** Signs the user in and redirects with a code; a StsError is a failed sign-in. */
  function completeAuthorization(
    params: AuthorizeParams,
    redirectUri: string,
    userPrincipalName: string,
    password: string,
  ): Response | StsError {
    let account: SandboxAccount;
    try {
      account = signIn(userPrincipalName, password);
    } catch (error) {
      if (error instanceof StsError) return error;
      throw error;
    }
    const code = toBase64Url(randomBytes(48));
    const grant: CodeGrant = {
      grantId: crypto.randomUUID(),
      clientId: params.client_id,
      account,
      scopes: resolveDelegatedScopes(params.scope),
      redirectUri,
      codeChallengeMethod: params.code_challenge_method ?? "plain",
      expiresAt: now() + authorizationCodeLifetimeMs,
      redeemed: false,
    };
    if (params.code_challenge !== undefined) grant.codeChallenge = params.code_challenge;
    if (params.nonce !== undefined) grant.nonce = params.nonce;
    codes.set(code, grant);
    const result: Record<string, string> = { code };
    if (params.state !== undefined) result.state = params.state;
    return redirectTo(redirectUri, result, params.response_mode);
  }

  function redirectError(
    redirectUri: string,
    raw: Record<string, string>,
    error: string,
    aadsts: number,
    description: string,
  ): Response {
    const result: Record<string, string> = {
      error,
      error_description: `AADSTS${aadsts}: ${description}`,
      error_uri: `${base()}/error?code=${aadsts}`,
    };
    if (raw.state !== undefined) result.state = raw.state;
    const mode = raw.response_mode === "form_post" ? "form_post" : "query";
    return redirectTo(redirectUri, result, mode);
  }

  async function token(request: Request, tenantSegment: string, kind: "tenant" | "common" | "organizations") {
    // https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow ("Redeem a code", "Refresh the access token")
    const form = await readForm(request);
    const grantType = form.get("grant_type");
    if (!grantType) throw missingParameter("grant_type");
    prune();
    switch (grantType) {
      case "client_credentials": {
        if (kind !== "tenant") {
          throw invalidRequest(
            9001023,
            `The grant type 'client_credentials' is not supported over the /${kind} endpoint; use the tenant's own endpoint.`,
          );
        }
        const { app, method } = await authenticateClient(request, form, tenantSegment, true);
        const scope = form.get("scope");
        if (!scope) throw missingParameter("scope");
        if (!isGraphDefaultScope(scope)) {
          throw new StsError(
            400,
            "invalid_scope",
            70011,
            `The value '${scope}' of the input parameter 'scope' is not valid: the client credentials flow needs ` +
              `'${graphResource}/.default'.`,
          );
        }
        return await issueAppToken(app, method);
      }
      case deviceCodeGrantType: {
        const deviceCode = form.get("device_code");
        if (!deviceCode) throw missingParameter("device_code");
        const { app, method } = await authenticateClient(request, form, tenantSegment, false);
        return await redeemDeviceCode(app, method, deviceCode);
      }
      case "authorization_code": {
        const code = form.get("code");
        if (!code) throw missingParameter("code");
        const redirectUri = form.get("redirect_uri");
        if (!redirectUri) throw missingParameter("redirect_uri");
        const { app, method } = await authenticateClient(request, form, tenantSegment, false);
        return await redeemCode(app, method, code, redirectUri, form.get("code_verifier") ?? undefined);
      }
      case "refresh_token": {
        const refreshToken = form.get("refresh_token");
        if (!refreshToken) throw missingParameter("refresh_token");
        const { app, method } = await authenticateClient(request, form, tenantSegment, false);
        return await redeemRefreshToken(app, method, refreshToken, form.get("scope") ?? undefined);
      }
      default:
        throw new StsError(
          400,
          "unsupported_grant_type",
          70003,
          `The grant type '${grantType}' is not supported by this tenant.`,
        );
    }
  }

  async function redeemDeviceCode(
    app: SandboxApp,
    method: ClientAuthMethod,
    deviceCode: string,
  ): Promise<Response> {
    // RFC 8628 §3.4–3.5 and https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code ("Expected errors")
    const grant = deviceGrants.get(deviceCode);
    if (!grant || grant.clientId !== app.clientId) {
      throw new StsError(400, "bad_verification_code", 70018, `The device_code sent was not recognized.`);
    }
    const t = now();
    if (grant.state === "redeemed") throw invalidGrant(70000, `The device_code was already redeemed.`);
    if (grant.expiresAt <= t) {
      throw new StsError(400, "expired_token", 70019, `The device code expired; start the sign-in again.`);
    }
    if (grant.state === "declined") {
      throw new StsError(400, "authorization_declined", 65004, `The user declined the sign-in request.`);
    }
    if (grant.state === "pending") {
      const tooSoon = grant.lastPollAt !== undefined && t - grant.lastPollAt < grant.intervalMs;
      grant.lastPollAt = t;
      if (tooSoon) {
        // RFC 8628 §3.5: the client polls faster than `interval`; it must add 5 seconds.
        grant.intervalMs += 5000;
        throw new StsError(
          400,
          "slow_down",
          70016,
          `Polling too fast: wait at least ${grant.intervalMs / 1000} seconds between requests.`,
        );
      }
      throw new StsError(
        400,
        "authorization_pending",
        70016,
        `The user has not finished signing in yet; poll again after the interval.`,
      );
    }
    const account = grant.account!;
    grant.state = "redeemed";
    return await issueUserTokens(app, {
      grantId: crypto.randomUUID(),
      clientId: app.clientId,
      account,
      scopes: grant.scopes,
    }, method);
  }

  async function redeemCode(
    app: SandboxApp,
    method: ClientAuthMethod,
    code: string,
    redirectUri: string,
    codeVerifier: string | undefined,
  ): Promise<Response> {
    const grant = codes.get(code);
    if (!grant) throw invalidGrant(9002313, `The authorization code is malformed or not valid.`);
    if (grant.clientId !== app.clientId) {
      throw invalidGrant(70000, `The authorization code was issued to another application.`);
    }
    if (grant.redeemed) {
      // RFC 6749 §4.1.2: a code used twice revokes what it issued.
      for (const [token, refresh] of refreshTokens) {
        if (refresh.grantId === grant.grantId) refreshTokens.delete(token);
      }
      throw invalidGrant(54005, `The authorization code was already redeemed; request a new one.`);
    }
    if (grant.expiresAt <= now()) {
      throw invalidGrant(70008, `The authorization code has expired; request a new one.`);
    }
    if (!sameUri(redirectUri, grant.redirectUri)) {
      throw invalidGrant(
        50011,
        `The redirect_uri '${redirectUri}' differs from the one used to obtain the authorization code.`,
      );
    }
    if (grant.codeChallenge !== undefined) {
      if (codeVerifier === undefined) throw missingParameter("code_verifier");
      const computed = grant.codeChallengeMethod === "S256"
        ? toBase64Url(new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(codeVerifier))))
        : codeVerifier;
      if (!equalBytes(utf8(computed), utf8(grant.codeChallenge))) {
        throw invalidGrant(
          501481,
          `The code_verifier does not match the code_challenge of the authorization request.`,
        );
      }
    }
    grant.redeemed = true;
    return await issueUserTokens(app, grant, method);
  }

  async function redeemRefreshToken(
    app: SandboxApp,
    method: ClientAuthMethod,
    refreshToken: string,
    scope: string | undefined,
  ): Promise<Response> {
    const grant = refreshTokens.get(refreshToken);
    if (!grant) throw invalidGrant(70000, `The refresh token is not valid or was revoked; sign in again.`);
    if (grant.clientId !== app.clientId) {
      throw invalidGrant(70000, `The refresh token was issued to another application.`);
    }
    if (grant.lastUsedAt + refreshTokenIdleLifetimeMs <= now()) {
      refreshTokens.delete(refreshToken);
      throw invalidGrant(700082, `The refresh token has expired due to inactivity; sign in again.`);
    }
    let scopes = grant.scopes;
    if (scope !== undefined) {
      const requested = resolveDelegatedScopes(scope);
      scopes = {
        graph: requested.graph,
        oidc: requested.oidc.filter((item) => grant.scopes.oidc.includes(item)),
      };
      if (!scopes.oidc.includes("offline_access")) scopes.oidc.push("offline_access");
    }
    if (options.revokeUsedRefreshTokens) refreshTokens.delete(refreshToken);
    else grant.lastUsedAt = now();
    return await issueUserTokens(app, grant, method, scopes);
  }

  // -------------------------------------------------------------------------------------------
  // HTML pages (sandbox stand-ins for Entra's sign-in pages)
  // -------------------------------------------------------------------------------------------

  function signInPage(
    tenantSegment: string,
    transaction: string,
    params: AuthorizeParams,
    error: string | undefined,
    status: number,
  ): Response {
    const app = tenant.apps.find((candidate) => candidate.clientId === params.client_id);
    const body = `<h1>Sign in to ${escapeHtml(tenant.domain)}</h1>
<p>${escapeHtml(app?.displayName ?? params.client_id)} asks for: ${escapeHtml(params.scope)}</p>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ""}
<form method="post" action="${escapeHtml(`${base()}/${tenantSegment}/oauth2/v2.0/authorize`)}">
<input type="hidden" name="transaction" value="${escapeHtml(transaction)}">
<label>User name <input name="username" type="email" autocomplete="username" value="${
      escapeHtml(params.login_hint ?? "")
    }" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button>
</form>`;
    return htmlPage("Sign in", body, status);
  }

  function deviceLoginPage(message: string | undefined, status: number): Response {
    const body = `<h1>Enter code</h1>
${message ? `<p role="alert">${escapeHtml(message)}</p>` : ""}
<form method="post" action="${escapeHtml(`${base()}/devicelogin`)}">
<label>Code <input name="user_code" autocomplete="one-time-code" required></label>
<label>User name <input name="username" type="email" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit" name="action" value="approve">Sign in</button>
<button type="submit" name="action" value="decline">Decline</button>
</form>`;
    return htmlPage("Device sign-in", body, status);
  }

  async function deviceLogin(request: Request): Promise<Response> {
    if (request.method === "GET") return deviceLoginPage(undefined, 200);
    if (request.method !== "POST") {
      return htmlError(405, 900561, `The endpoint only accepts GET and POST requests.`);
    }
    const form = await readForm(request);
    const decline = form.get("action") === "decline";
    try {
      approveDevice(
        form.get("user_code") ?? "",
        form.get("username") ?? "",
        form.get("password") ?? "",
        decline,
      );
    } catch (error) {
      if (error instanceof StsError) return deviceLoginPage(`AADSTS${error.aadsts}: ${error.message}`, 400);
      throw error;
    }
    return htmlPage(
      "Device sign-in",
      decline
        ? `<h1>Sign-in declined</h1><p>You can close this window.</p>`
        : `<h1>You are signed in</h1><p>Return to the application on your device. You can close this window.</p>`,
      200,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Sandbox-only JSON endpoints
  // -------------------------------------------------------------------------------------------

  async function sandboxDeviceApprove(request: Request): Promise<Response> {
    const input = deviceApprovalSchema.parse(await readJson(request));
    approveDevice(input.user_code, input.userPrincipalName, input.password, input.decline ?? false);
    return Response.json({ status: input.decline ? "declined" : "approved" }, { headers: noStore });
  }

  async function sandboxAuthorizeApprove(request: Request): Promise<Response> {
    const input = authorizeApprovalSchema.parse(await readJson(request));
    let authorizeUrl: URL;
    try {
      authorizeUrl = new URL(input.authorizeUrl);
    } catch {
      throw invalidRequest(90102, `The authorizeUrl '${input.authorizeUrl}' is not an absolute URL.`);
    }
    const segments = authorizeUrl.pathname.split("/").filter(Boolean);
    if (
      segments.length !== 4 || segments[1] !== "oauth2" || segments[2] !== "v2.0" ||
      segments[3] !== "authorize" ||
      resolveTenant(segments[0]!) === undefined
    ) {
      throw invalidRequest(
        90102,
        `The authorizeUrl '${authorizeUrl.pathname}' is not this tenant's authorize endpoint.`,
      );
    }
    const checked = checkAuthorizeRequest(Object.fromEntries(authorizeUrl.searchParams));
    if (checked instanceof StsError) throw checked;
    const outcome = checked instanceof Response
      ? checked
      : completeAuthorization(checked.params, checked.redirectUri, input.userPrincipalName, input.password);
    if (outcome instanceof StsError) throw outcome;
    const location = outcome.headers.get("location");
    await outcome.body?.cancel();
    if (outcome.status !== 302 || location === null) {
      throw invalidRequest(
        90023,
        `The sandbox approval endpoint answers redirects only; use response_mode 'query' or 'fragment'.`,
      );
    }
    return Response.json({ location }, { headers: noStore });
  }

  // -------------------------------------------------------------------------------------------
  // Routing
  // -------------------------------------------------------------------------------------------

  async function route(request: Request, url: URL): Promise<Response | undefined> {
    const segments = url.pathname.split("/").filter(Boolean);
    const path = segments.join("/");
    if (path === "_sandbox/device/approve" && request.method === "POST") {
      return await sandboxDeviceApprove(request);
    }
    if (path === "_sandbox/authorize/approve" && request.method === "POST") {
      return await sandboxAuthorizeApprove(request);
    }
    if (path === "devicelogin") return await deviceLogin(request);

    const [tenantSegment, ...rest] = segments;
    if (tenantSegment === undefined) return undefined;
    const tail = rest.join("/");
    const known = [
      "v2.0/.well-known/openid-configuration",
      "discovery/v2.0/keys",
      "discovery/keys",
      "oauth2/v2.0/token",
      "oauth2/v2.0/devicecode",
      "oauth2/v2.0/authorize",
    ];
    if (!known.includes(tail)) return undefined;
    const kind = resolveTenant(tenantSegment);
    if (kind === undefined) {
      const description = `Tenant '${tenantSegment}' not found. Check the tenant id or domain ` +
        `(this sandbox serves '${tenant.domain}', '${tenant.tenantId}').`;
      if (tail === "oauth2/v2.0/authorize") return htmlError(400, 90002, description);
      throw new StsError(400, "invalid_tenant", 90002, description);
    }
    switch (tail) {
      case "v2.0/.well-known/openid-configuration":
        return request.method === "GET" ? openIdConfiguration(kind) : methodNotAllowed("GET");
      case "discovery/v2.0/keys":
        return request.method === "GET" ? await jwks("v2") : methodNotAllowed("GET");
      case "discovery/keys":
        return request.method === "GET" ? await jwks("v1") : methodNotAllowed("GET");
      case "oauth2/v2.0/authorize":
        return await authorize(request, url, tenantSegment);
      case "oauth2/v2.0/devicecode":
        return request.method === "POST"
          ? await deviceAuthorization(request, tenantSegment)
          : methodNotAllowed("POST");
      case "oauth2/v2.0/token":
        return request.method === "POST"
          ? await token(request, tenantSegment, kind)
          : methodNotAllowed("POST");
    }
    return undefined;
  }

  function stsErrorResponse(error: StsError, request: Request): Response {
    const t = new Date(now());
    const timestamp = t.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
    const traceId = crypto.randomUUID();
    const correlationId = request.headers.get("client-request-id") ?? crypto.randomUUID();
    return Response.json({
      error: error.error,
      error_description: `AADSTS${error.aadsts}: ${error.message}\r\nTrace ID: ${traceId}\r\n` +
        `Correlation ID: ${correlationId}\r\nTimestamp: ${timestamp}`,
      error_codes: [error.aadsts],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      error_uri: `${base()}/error?code=${error.aadsts}`,
    }, { status: error.status, headers: noStore });
  }

  return {
    async handle(request, url) {
      try {
        return await route(request, url);
      } catch (error) {
        if (error instanceof StsError) return stsErrorResponse(error, request);
        if (error instanceof z.ZodError) {
          const issue = error.issues[0];
          const field = issue?.path.join(".") || "body";
          return stsErrorResponse(
            invalidRequest(
              90100,
              `The field '${field}' is empty or not valid: ${issue?.message ?? "invalid"}.`,
            ),
            request,
          );
        }
        if (error instanceof BodyError) {
          return stsErrorResponse(invalidRequest(90004, error.message), request);
        }
        throw error;
      }
    },

    async rotateSigningKey() {
      const next = createSigningKey();
      await next;
      signingKey = next;
    },

    async verifyAccessToken(authorization) {
      // Graph takes the bare token as well as `Bearer <token>`: a Microsoft Graph SDK maintainer
      // confirmed both work (microsoftgraph/msgraph-sdk-php-core PR #194, review of README.md),
      // and YubicoLabs' provisioning script sends the bare token. The sandbox is as lenient.
      const match = authorization?.match(/^(?:Bearer[ ]+)?([^\s]+)\s*$/i);
      if (!authorization || !match) throw new OAuthTokenError("Access token is empty.");
      const accessToken = match[1]!;
      const key = await signingKey;
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(accessToken, key.publicKey, {
          algorithms: ["RS256"],
          currentDate: new Date(now()),
          clockTolerance: clockToleranceSeconds,
          requiredClaims: ["exp", "nbf"],
        }));
      } catch (cause) {
        throw new OAuthTokenError(accessTokenFailure(cause), { cause });
      }
      const audiences = typeof payload.aud === "string" ? [payload.aud] : payload.aud ?? [];
      if (!audiences.some((audience) => graphAudiences.includes(audience))) {
        throw new OAuthTokenError(
          `Access token validation failure. Invalid audience: the token is for ${
            JSON.stringify(payload.aud)
          }, ` +
            `not Microsoft Graph.`,
        );
      }
      if (payload.iss !== issuerV1()) {
        throw new OAuthTokenError(
          `Access token validation failure. Invalid issuer '${String(payload.iss)}'.`,
        );
      }
      const parsed = accessTokenClaimsSchema.safeParse(payload);
      if (!parsed.success) {
        throw new OAuthTokenError("Access token validation failure. The token lacks required claims.", {
          cause: parsed.error,
        });
      }
      const claims = parsed.data;
      if (claims.tid !== tenant.tenantId) {
        throw new OAuthTokenError(
          `Access token validation failure. The token is for tenant '${claims.tid}'.`,
        );
      }
      const roleNames = Object.fromEntries(
        Object.entries(directoryRoleTemplateIds).map(([name, id]) => [id, name]),
      );
      const principal: Principal = {
        kind: claims.idtyp,
        clientId: claims.appid,
        tenantId: claims.tid,
        scopes: claims.scp ? claims.scp.split(" ").filter(Boolean) : [],
        roles: claims.roles ?? [],
        directoryRoles: (claims.wids ?? []).flatMap((id) => roleNames[id] ?? []),
      };
      if (claims.oid !== undefined) principal.objectId = claims.oid;
      if (claims.upn !== undefined) principal.userPrincipalName = claims.upn;
      return principal;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const noStore = { "cache-control": "no-store, no-cache", pragma: "no-cache" };

function tokenResponse(body: Record<string, unknown>): Response {
  return Response.json(body, { headers: noStore });
}

/** A request body that cannot be read as the endpoint requires. */
class BodyError extends Error {}

async function createSigningKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair("RS256", {
    modulusLength: 2048,
    extractable: true,
  });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk, "sha256");
  return { kid, privateKey, publicKey, publicJwk };
}

async function readForm(request: Request): Promise<URLSearchParams> {
  const type = request.headers.get("content-type") ?? "";
  if (!type.toLowerCase().startsWith("application/x-www-form-urlencoded")) {
    await request.body?.cancel();
    throw new BodyError(`The request body must be application/x-www-form-urlencoded, not '${type}'.`);
  }
  return new URLSearchParams(await request.text());
}

async function readJson(request: Request): Promise<unknown> {
  try {
    return await request.json();
  } catch (cause) {
    throw new BodyError(`The request body is not JSON: ${describe(cause)}.`);
  }
}

/** Parses `Authorization: Basic` as RFC 6749 §2.3.1 encodes it (form-encoded id and secret). */
function parseBasicAuthorization(header: string | null): { clientId: string; secret: string } | undefined {
  const match = header?.match(/^Basic\s+([A-Za-z0-9+/=_-]+)\s*$/i);
  if (!match) return undefined;
  let decoded: string;
  try {
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(fromBase64Any(match[1]!));
  } catch {
    throw invalidRequest(90023, `The Authorization header's Basic credentials are not base64 of UTF-8 text.`);
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) {
    throw invalidRequest(90023, `The Authorization header's Basic credentials have no ':' separator.`);
  }
  const formDecode = (text: string) => decodeURIComponent(text.replaceAll("+", " "));
  try {
    return { clientId: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
  } catch {
    throw invalidRequest(90023, `The Authorization header's Basic credentials are not form-encoded.`);
  }
}

function safeDecodeJwt(jwt: string): { iss?: string } | undefined {
  try {
    const claims = decodeJwt(jwt);
    return typeof claims.iss === "string" ? { iss: claims.iss } : {};
  } catch {
    return undefined;
  }
}

/** The Graph permission name in a scope (`https://graph.microsoft.com/X`, `{graph app id}/X`, bare `X`). */
function graphPermissionName(scope: string): string | undefined {
  for (const prefix of [`${graphResource}/`, `${graphAppId}/`]) {
    if (scope.toLowerCase().startsWith(prefix)) return scope.slice(prefix.length);
  }
  return scope.includes("/") || scope.includes(":") ? undefined : scope;
}

function isGraphDefaultScope(scope: string): boolean {
  const scopes = scope.split(/\s+/).filter(Boolean);
  return scopes.length === 1 && graphPermissionName(scopes[0]!)?.toLowerCase() === ".default" &&
    scopes[0]!.includes("/");
}

function roleTemplateIds(account: SandboxAccount): string[] {
  return account.directoryRoles.map((name) => {
    const id = directoryRoleTemplateIds[name];
    if (id === undefined) {
      throw new TypeError(
        `Cannot give "${account.userPrincipalName}" the directory role "${name}": the sandbox does not know it. ` +
          `Known roles: ${Object.keys(directoryRoleTemplateIds).join(", ")}`,
      );
    }
    return id;
  });
}

function appIdAcr(method: ClientAuthMethod): string {
  return method === "certificate" ? "2" : method === "secret" ? "1" : "0";
}

/**
 * Finds the registered redirect URI a request's `redirect_uri` matches: exact match, except that
 * the port of a loopback URI is ignored (https://learn.microsoft.com/entra/identity-platform/reply-url,
 * "Localhost exceptions"). Returns the URI as sent (with its port) or undefined.
 */
function matchRedirectUri(app: SandboxApp, requested: string | undefined): string | undefined {
  if (requested === undefined) return app.redirectUris.length === 1 ? app.redirectUris[0] : undefined;
  let wanted: URL;
  try {
    wanted = new URL(requested);
  } catch {
    return undefined;
  }
  if (wanted.hash !== "") return undefined;
  for (const registered of app.redirectUris) {
    let candidate: URL;
    try {
      candidate = new URL(registered);
    } catch {
      continue;
    }
    const loopback = ["localhost", "127.0.0.1"].includes(candidate.hostname);
    if (
      candidate.protocol === wanted.protocol && candidate.hostname === wanted.hostname &&
      (loopback || candidate.port === wanted.port) && candidate.pathname === wanted.pathname &&
      candidate.search === wanted.search
    ) {
      return requested;
    }
  }
  return undefined;
}

function sameUri(a: string, b: string): boolean {
  try {
    return new URL(a).href === new URL(b).href;
  } catch {
    return a === b;
  }
}

function redirectTo(redirectUri: string, result: Record<string, string>, mode: string | undefined): Response {
  if (mode === "form_post") {
    const inputs = Object.entries(result)
      .map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`)
      .join("\n");
    return htmlPage(
      "Working…",
      `<form method="post" action="${
        escapeHtml(redirectUri)
      }">\n${inputs}\n<noscript><button>Continue</button></noscript></form>` +
        `<script>document.forms[0].submit()</script>`,
      200,
    );
  }
  const target = new URL(redirectUri);
  if (mode === "fragment") {
    target.hash = new URLSearchParams(result).toString();
  } else {
    for (const [name, value] of Object.entries(result)) target.searchParams.set(name, value);
  }
  return new Response(null, { status: 302, headers: { location: target.href, ...noStore } });
}

function htmlPage(title: string, body: string, status: number): Response {
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)} – sandbox tenant</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><p><strong>Sandbox tenant</strong>: not Microsoft; never enter a real password here.</p>
${body}
</body></html>`;
  return new Response(html, { status, headers: { "content-type": "text/html; charset=utf-8", ...noStore } });
}

function htmlError(status: number, aadsts: number, description: string): Response {
  return htmlPage(
    "Sign-in error",
    `<h1>Sign-in error</h1><p role="alert">AADSTS${aadsts}: ${escapeHtml(description)}</p>`,
    status,
  );
}

function methodNotAllowed(allowed: string): never {
  throw invalidRequest(900561, `The endpoint only accepts ${allowed} requests.`);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function newUserCode(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  return Array.from(randomBytes(9), (b) => alphabet[b % alphabet.length]).join("");
}

async function registeredThumbprints(jwk: JsonWebKey): Promise<string[]> {
  const parsed = registeredThumbprintsSchema.safeParse(jwk);
  if (!parsed.success) return [];
  const out: string[] = [];
  if (parsed.data.x5t) out.push(parsed.data.x5t);
  if (parsed.data["x5t#S256"]) out.push(parsed.data["x5t#S256"]);
  const leaf = parsed.data.x5c?.[0];
  if (leaf !== undefined) {
    const der = new Uint8Array(fromBase64Any(leaf));
    out.push(toBase64Url(new Uint8Array(await crypto.subtle.digest("SHA-1", der))));
    out.push(toBase64Url(new Uint8Array(await crypto.subtle.digest("SHA-256", der))));
  }
  return out;
}

function toJoseJwk(jwk: JsonWebKey): JWK {
  const { kty, n, e, crv, x, y, alg } = jwk;
  const out: JWK = {};
  if (kty !== undefined) out.kty = kty;
  if (n !== undefined) out.n = n;
  if (e !== undefined) out.e = e;
  if (crv !== undefined) out.crv = crv;
  if (x !== undefined) out.x = x;
  if (y !== undefined) out.y = y;
  if (alg !== undefined) out.alg = alg;
  return out;
}

function isTimeClaimFailure(error: unknown): boolean {
  return error instanceof joseErrors.JWTClaimValidationFailed &&
    (error.claim === "nbf" || error.claim === "iat");
}

function accessTokenFailure(error: unknown): string {
  if (error instanceof joseErrors.JWTExpired) return "Access token has expired or is not yet valid.";
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") return "Access token has expired or is not yet valid.";
    if (error.claim === "aud") return "Access token validation failure. Invalid audience.";
    if (error.claim === "iss") return "Access token validation failure. Invalid issuer.";
    return `Access token validation failure. The claim '${error.claim}' is not valid.`;
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return "Access token validation failure. Invalid signature.";
  }
  return "Access token validation failure. The token is not a well-formed JWT.";
}

function describe(error: unknown): string {
  if (error instanceof z.ZodError) return error.issues.map((issue) => issue.message).join("; ");
  return error instanceof Error ? error.message : String(error);
}
