/**
 * A sandbox Okta org on loopback: the Management API endpoints the Okta provider calls, as Okta
 * documents them, with its SSWS API-token auth, its rate-limit headers and 429 answers, its error
 * shape, and every WebAuthn activation verified by an independent verifier
 * (`@simplewebauthn/server`).
 *
 * Routes (all under the org URL):
 * - `GET /api/v1/users/{id|login}`: Users API, Get User
 *   (https://developer.okta.com/docs/reference/api/users/#get-user).
 * - `GET /api/v1/groups?q=`, `GET /api/v1/groups/{id}`, `GET /api/v1/groups/{id}/users?limit=&after=`
 *   with `Link: <…>; rel="next"` paging: Groups API
 *   (https://developer.okta.com/docs/reference/api/groups/#list-group-members,
 *   paging: https://developer.okta.com/docs/api/#pagination).
 * - `GET|POST /api/v1/users/{userId}/factors`,
 *   `POST /api/v1/users/{userId}/factors/{factorId}/lifecycle/activate`,
 *   `DELETE /api/v1/users/{userId}/factors/{factorId}`: Factors API, WebAuthn
 *   (https://developer.okta.com/docs/reference/api/factors/#enroll-webauthn-factor,
 *   https://developer.okta.com/docs/reference/api/factors/#activate-webauthn-factor).
 *
 * @module
 */
import { verifyRegistrationResponse } from "@simplewebauthn/server";
import { decode as decodeCbor } from "cborg";
import { calculateJwkThumbprint, decodeProtectedHeader, importJWK, type JWK, jwtVerify } from "jose";
import { sleep } from "../../../core/sleep.ts";
import { oktaId, type OrgFactor, type OrgUser, SandboxOrg } from "./org.ts";

/** What {@link startOktaSandbox} accepts. */
export interface OktaSandboxOptions {
  /** The API token (`Authorization: SSWS <token>`) the sandbox accepts. @default a random one */
  readonly token?: string;
  /** Users `user1@example.com` … created at start. @default 0 */
  readonly users?: number;
  /**
   * Requests per window per endpoint family (users, groups, factor reads, factor writes) before a
   * 429. Okta's limits are per endpoint per minute
   * (https://developer.okta.com/docs/reference/rl-global-mgmt/). @default 600
   */
  readonly rateLimit?: number;
  /** The window of {@link rateLimit}, ms. Okta's is one minute. @default 60000 */
  readonly rateWindowMs?: number;
  /** The name the sandbox gives an activated factor's `profile.authenticatorName`. @default "Security Key" */
  readonly authenticatorName?: string;
  /**
   * An OAuth 2.0 service app registered in the org: client credentials with `private_key_jwt`
   * (its public key), DPoP required or not (the app's "Require DPoP header in token requests").
   */
  readonly serviceApp?: { readonly clientId: string; readonly publicKey: JWK; readonly requireDpop: boolean };
}

/** A running sandbox org. */
export interface OktaSandbox extends AsyncDisposable {
  /** The org URL (`http://127.0.0.1:PORT`): the origin of its WebAuthn ceremonies too. */
  readonly url: string;
  readonly token: string;
  readonly org: SandboxOrg;
  close(): Promise<void>;
}

/** Starts a sandbox org on 127.0.0.1 at a free port. */
export function startOktaSandbox(options: OktaSandboxOptions = {}): Promise<OktaSandbox> {
  const org = new SandboxOrg();
  for (let i = 1; i <= (options.users ?? 0); i++) org.addUser(`user${i}@example.com`);
  const token = options.token ?? crypto.randomUUID().replaceAll("-", "");
  const limiter = new WindowLimiter(options.rateLimit ?? 600, options.rateWindowMs ?? 60_000);
  const context: RouteContext = {
    org,
    token,
    limiter,
    authenticatorName: options.authenticatorName ?? "Security Key",
    url: "",
    serviceApp: options.serviceApp,
    accessTokens: new Map(),
    seenJti: new Set(),
    nonce: oktaId("non"),
    closing: new AbortController(),
  };
  const { promise, resolve } = Promise.withResolvers<OktaSandbox>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => {
      context.url = `http://127.0.0.1:${port}`;
      const close = () => {
        context.closing.abort();
        return server.shutdown();
      };
      resolve({ url: context.url, token, org, close, [Symbol.asyncDispose]: close });
    },
  }, (request) => handle(context, request));
  return promise;
}

interface RouteContext {
  readonly org: SandboxOrg;
  readonly token: string;
  readonly limiter: WindowLimiter;
  readonly authenticatorName: string;
  url: string;
  readonly serviceApp: OktaSandboxOptions["serviceApp"];
  /** Issued access tokens: expiry and, for DPoP-bound ones, the key's thumbprint. */
  readonly accessTokens: Map<string, { expiresAt: number; jkt: string | undefined }>;
  /** `jti`s of client assertions and DPoP proofs already used (replays are refused). */
  readonly seenJti: Set<string>;
  /** The DPoP nonce the token endpoint hands out. */
  readonly nonce: string;
  /** Aborted when the sandbox closes: ends answers held back by a fault. */
  readonly closing: AbortController;
}

/**
 * Okta's fixed-window rate limit per endpoint family: every answer carries `X-Rate-Limit-Limit`,
 * `X-Rate-Limit-Remaining` and `X-Rate-Limit-Reset` (UTC epoch seconds when the window resets), a
 * request over the limit gets 429 with error `E0000047`
 * (https://developer.okta.com/docs/reference/rl-best-practices/).
 */
class WindowLimiter {
  readonly #windows = new Map<string, { start: number; used: number }>();
  constructor(readonly limit: number, readonly windowMs: number) {}

  take(family: string): { ok: boolean; headers: Record<string, string> } {
    const now = Date.now();
    let window = this.#windows.get(family);
    if (!window || now >= window.start + this.windowMs) {
      window = { start: now, used: 0 };
      this.#windows.set(family, window);
    }
    const ok = window.used < this.limit;
    if (ok) window.used++;
    return {
      ok,
      headers: {
        "X-Rate-Limit-Limit": String(this.limit),
        "X-Rate-Limit-Remaining": String(Math.max(0, this.limit - window.used)),
        "X-Rate-Limit-Reset": String(Math.ceil((window.start + this.windowMs) / 1000)),
      },
    };
  }
}

/**
 * Okta's error object: `errorCode`, `errorSummary`, `errorLink`, `errorId`, `errorCauses`
 * (https://developer.okta.com/docs/reference/error-codes/). `errorLink` repeats the code, as in
 * the examples there.
 */
function oktaError(
  status: number,
  errorCode: string,
  errorSummary: string,
  headers: Record<string, string> = {},
  causes: string[] = [],
): Response {
  return Response.json({
    errorCode,
    errorSummary,
    errorLink: errorCode,
    errorId: oktaId("oae"),
    errorCauses: causes.map((errorSummary) => ({ errorSummary })),
  }, { status, headers });
}

/** Which rate-limit bucket a request counts against. */
function familyOf(method: string, path: string): string {
  if (path.includes("/factors")) return method === "GET" ? "factors-read" : "factors-write";
  if (path.startsWith("/api/v1/groups")) return "groups";
  return "users";
}

async function handle(context: RouteContext, request: Request): Promise<Response> {
  const url = new URL(request.url);
  const path = url.pathname;
  if (path === "/oauth2/v1/token" && request.method === "POST") return await tokenEndpoint(context, request);
  if (!(await authenticated(context, request, url))) {
    await request.body?.cancel();
    return oktaError(401, "E0000011", "Invalid token provided");
  }
  const rate = context.limiter.take(familyOf(request.method, path));
  if (!rate.ok) {
    await request.body?.cancel();
    context.org.throttled++;
    return oktaError(429, "E0000047", "API call exceeded rate limit due to too many requests.", rate.headers);
  }
  const json = (body: unknown, status = 200, extra: Record<string, string> = {}) =>
    Response.json(body, { status, headers: { ...rate.headers, ...extra } });
  const notFound = (what: string) =>
    oktaError(404, "E0000007", `Not found: Resource not found: ${what}`, rate.headers);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  // parts: ["api","v1", …]
  if (parts[0] !== "api" || parts[1] !== "v1") {
    return oktaError(404, "E0000022", "The endpoint does not support the provided HTTP method", rate.headers);
  }
  const [, , collection, id, sub, factorId, lifecycle, action] = parts;

  if (collection === "users" && id !== undefined && sub === undefined && request.method === "GET") {
    const user = context.org.findUser(id);
    return user ? json(userJson(context, user)) : notFound(`${id} (User)`);
  }
  if (collection === "groups") return groupsRoute(context, request, url, id, sub, json, notFound);
  if (collection === "users" && id !== undefined && sub === "factors") {
    const user = context.org.users.get(id);
    if (!user) return notFound(`${id} (User)`);
    if (factorId === undefined && request.method === "GET") {
      return json(context.org.factorsOf(user.id).map((f) => factorJson(context, f)));
    }
    if (factorId === undefined && request.method === "POST") {
      return await enroll(context, request, user, json, rate.headers);
    }
    const factor = factorId === undefined ? undefined : context.org.factors.get(factorId);
    if (!factor || factor.userId !== user.id) return notFound(`${factorId} (UserFactor)`);
    if (lifecycle === "lifecycle" && action === "activate" && request.method === "POST") {
      return await activate(context, request, factor, json, rate.headers);
    }
    if (lifecycle === undefined && request.method === "DELETE") {
      context.org.factors.delete(factor.id);
      return new Response(null, { status: 204, headers: rate.headers });
    }
    if (lifecycle === undefined && request.method === "GET") return json(factorJson(context, factor));
  }
  await request.body?.cancel();
  return oktaError(405, "E0000022", "The endpoint does not support the provided HTTP method", rate.headers);
}

/**
 * A request is authenticated by the SSWS API token (`Authorization: SSWS {token}`,
 * https://developer.okta.com/docs/guides/create-an-api-token/main/), or by an access token of the
 * service app: `Bearer`, or `DPoP` with a proof for this method and URL whose key is the one the
 * token is bound to and whose `ath` is the token's hash (RFC 9449 §7.1). Otherwise 401 E0000011
 * "Invalid token provided" (https://developer.okta.com/docs/reference/error-codes/).
 */
async function authenticated(context: RouteContext, request: Request, url: URL): Promise<boolean> {
  const header = request.headers.get("authorization") ?? "";
  if (header === `SSWS ${context.token}`) return true;
  const [scheme, value] = header.split(" ", 2);
  const issued = value === undefined ? undefined : context.accessTokens.get(value);
  if (!issued || issued.expiresAt < Date.now()) return false;
  if (scheme === "Bearer") return issued.jkt === undefined;
  if (scheme !== "DPoP" || issued.jkt === undefined) return false;
  const proof = await verifyDpopProof(context, request, `${url.origin}${url.pathname}`);
  return proof !== undefined && proof.jkt === issued.jkt && proof.ath === await sha256Base64url(value!);
}

/** Checks a DPoP proof (RFC 9449 §4.3): typ, an embedded public key that verifies it, htm, htu, fresh iat, unused jti. */
async function verifyDpopProof(
  context: RouteContext,
  request: Request,
  htu: string,
): Promise<{ jkt: string; nonce: unknown; ath: unknown } | undefined> {
  const proof = request.headers.get("dpop");
  if (!proof) return undefined;
  try {
    const header = decodeProtectedHeader(proof);
    if (header.typ !== "dpop+jwt" || !header.jwk || !header.alg) return undefined;
    const { payload } = await jwtVerify(proof, await importJWK(header.jwk, header.alg), {
      maxTokenAge: "5m",
    });
    if (payload["htm"] !== request.method || payload["htu"] !== htu) return undefined;
    if (typeof payload.jti !== "string" || context.seenJti.has(payload.jti)) return undefined;
    context.seenJti.add(payload.jti);
    return { jkt: await calculateJwkThumbprint(header.jwk), nonce: payload["nonce"], ath: payload["ath"] };
  } catch {
    return undefined;
  }
}

/**
 * The org authorization server's token endpoint, client credentials with `private_key_jwt`
 * (https://developer.okta.com/docs/guides/implement-oauth-for-okta-serviceapp/main/): the client
 * assertion signed by the app's key, `aud` the token URL, `iss` = `sub` = the client id. With DPoP
 * required, a proof without the server's nonce gets 400 `use_dpop_nonce` and a `DPoP-Nonce`
 * header (https://developer.okta.com/docs/guides/dpop/oktaresourceserver/main/, RFC 9449 §8).
 */
async function tokenEndpoint(context: RouteContext, request: Request): Promise<Response> {
  const oauthError = (
    status: number,
    error: string,
    description: string,
    headers: Record<string, string> = {},
  ) => Response.json({ error, error_description: description }, { status, headers });
  const form = new URLSearchParams(await request.text());
  const app = context.serviceApp;
  const tokenUrl = `${context.url}/oauth2/v1/token`;
  if (form.get("grant_type") !== "client_credentials") {
    return oauthError(400, "unsupported_grant_type", "The grant type is not supported.");
  }
  if (
    !app || form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
  ) return oauthError(401, "invalid_client", "Client authentication failed.");
  try {
    const assertion = form.get("client_assertion") ?? "";
    const header = decodeProtectedHeader(assertion);
    const { payload } = await jwtVerify(assertion, await importJWK(app.publicKey, header.alg ?? "RS256"), {
      issuer: app.clientId,
      subject: app.clientId,
      audience: tokenUrl,
    });
    if (typeof payload.jti !== "string" || context.seenJti.has(payload.jti)) throw new Error("jti reused");
    context.seenJti.add(payload.jti);
  } catch {
    return oauthError(401, "invalid_client", "The client_assertion signature is invalid.");
  }
  const scopes = (form.get("scope") ?? "").split(" ").filter(Boolean);
  let jkt: string | undefined;
  if (app.requireDpop) {
    const proof = await verifyDpopProof(context, request, tokenUrl);
    if (!proof) return oauthError(400, "invalid_dpop_proof", "The DPoP proof JWT is invalid.");
    if (proof.nonce !== context.nonce) {
      context.org.dpopNonceChallenges++;
      return oauthError(400, "use_dpop_nonce", "Authorization server requires nonce in DPoP proof.", {
        "DPoP-Nonce": context.nonce,
      });
    }
    jkt = proof.jkt;
  }
  const accessToken = oktaId("eyJ") + oktaId("tok");
  context.accessTokens.set(accessToken, { expiresAt: Date.now() + 3_600_000, jkt });
  return Response.json({
    token_type: jkt ? "DPoP" : "Bearer",
    expires_in: 3600,
    access_token: accessToken,
    scope: scopes.join(" "),
  });
}

async function sha256Base64url(text: string): Promise<string> {
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))));
}

type Json = (body: unknown, status?: number, extra?: Record<string, string>) => Response;

function groupsRoute(
  context: RouteContext,
  request: Request,
  url: URL,
  id: string | undefined,
  sub: string | undefined,
  json: Json,
  notFound: (what: string) => Response,
): Response {
  if (request.method !== "GET") {
    return oktaError(405, "E0000022", "The endpoint does not support the provided HTTP method");
  }
  if (id === undefined) {
    // `q` searches group names by prefix (List Groups, "Find groups").
    const q = (url.searchParams.get("q") ?? "").toLowerCase();
    return json(
      [...context.org.groups.values()].filter((g) => g.profile.name.toLowerCase().startsWith(q)).map(
        groupJson,
      ),
    );
  }
  const group = context.org.groups.get(id);
  if (!group) return notFound(`${id} (UserGroup)`);
  if (sub === undefined) return json(groupJson(group));
  if (sub !== "users") return notFound(url.pathname);
  // Cursor paging: `limit` (default 1000 for group members), `after` an opaque cursor, the next
  // page named by `Link: <…>; rel="next"` (https://developer.okta.com/docs/api/#link-header).
  const limit = Math.max(1, Math.min(1000, Number(url.searchParams.get("limit") ?? 1000) || 1000));
  const after = url.searchParams.get("after");
  const start = after ? group.members.indexOf(after) + 1 : 0;
  const page = group.members.slice(start, start + limit);
  const users = page.map((userId) => context.org.users.get(userId)).filter((u): u is OrgUser =>
    u !== undefined
  );
  const self = `${context.url}${url.pathname}${url.search}`;
  const links = [`<${self}>; rel="self"`];
  if (start + limit < group.members.length) {
    links.push(
      `<${context.url}${url.pathname}?limit=${limit}&after=${encodeURIComponent(page.at(-1)!)}>; rel="next"`,
    );
  }
  return json(users.map((u) => userJson(context, u)), 200, { Link: links.join(", ") });
}

/**
 * Enroll WebAuthn Factor: `{"factorType":"webauthn","provider":"FIDO"}` → 200, the factor in
 * `PENDING_ACTIVATION` with `_embedded.activation` holding the PublicKeyCredentialCreationOptions
 * fields at its top level (no `publicKey` wrapper), `rp` with a `name` and no `id` (the rp id is
 * the org's host), `u2fParams.appid` the org URL, the user handle the Okta user id
 * (https://developer.okta.com/docs/reference/api/factors/#enroll-webauthn-factor).
 *
 * An enrollment the org's policy does not allow: the docs name no WebAuthn-specific code; the
 * sandbox answers as the Factors API answers other refused enrollments, 400 `E0000001` "Api
 * validation failed: factorEnrollRequest" with the reason in `errorCauses` (docs/okta.md notes it).
 */
async function enroll(
  context: RouteContext,
  request: Request,
  user: OrgUser,
  json: Json,
  headers: Record<string, string>,
): Promise<Response> {
  const body = await request.json().catch(() => undefined) as Record<string, unknown> | undefined;
  if (body?.["factorType"] !== "webauthn" || body?.["provider"] !== "FIDO") {
    return oktaError(400, "E0000001", "Api validation failed: factorEnrollRequest", headers, [
      "factorType: only webauthn/FIDO is modelled by this sandbox",
    ]);
  }
  if (!context.org.settings.webauthnAllowed || context.org.settings.refusedLogins.has(user.profile.login)) {
    return oktaError(400, "E0000001", "Api validation failed: factorEnrollRequest", headers, [
      "The factor is not allowed by the enrollment policy for this user",
    ]);
  }
  if (user.status !== "ACTIVE") {
    // E0000038: "This operation is not allowed in the user's current status" (error codes page).
    return oktaError(403, "E0000038", "This operation is not allowed in the user's current status.", headers);
  }
  const now = new Date().toISOString();
  const challenge = base64url(crypto.getRandomValues(new Uint8Array(24)));
  const factor: OrgFactor = {
    id: oktaId("fwf"),
    userId: user.id,
    status: "PENDING_ACTIVATION",
    created: now,
    lastUpdated: now,
    challenge,
    verified: false,
  };
  context.org.factors.set(factor.id, factor);
  const active = context.org.factorsOf(user.id).filter((f) => f.status === "ACTIVE" && f.profile);
  return json({
    ...factorJson(context, factor),
    _embedded: {
      activation: {
        attestation: "direct",
        authenticatorSelection: { userVerification: "preferred", requireResidentKey: false },
        challenge,
        excludeCredentials: active.map((f) => ({ type: "public-key", id: f.profile!.credentialId })),
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
        rp: { name: "Sandbox Org" },
        u2fParams: { appid: context.url },
        user: {
          displayName: `${user.profile.firstName} ${user.profile.lastName}`,
          name: user.profile.login,
          id: user.id,
        },
      },
    },
  });
}

/**
 * Activate WebAuthn Factor: `{"attestation": base64url attestationObject, "clientData":
 * base64url clientDataJSON}` → 200, the factor `ACTIVE` with `profile.credentialId` and
 * `profile.authenticatorName`
 * (https://developer.okta.com/docs/reference/api/factors/#activate-webauthn-factor). A response
 * that fails verification: 403 `E0000068` "Invalid Passcode/Answer", Okta's answer to a factor
 * activation that does not verify (error codes page).
 */
async function activate(
  context: RouteContext,
  request: Request,
  factor: OrgFactor,
  json: Json,
  headers: Record<string, string>,
): Promise<Response> {
  const body = await request.json().catch(() => undefined) as Record<string, unknown> | undefined;
  const attestation = body?.["attestation"];
  const clientData = body?.["clientData"];
  if (typeof attestation !== "string" || typeof clientData !== "string") {
    return oktaError(400, "E0000001", "Api validation failed: activateFactorRequest", headers, [
      "attestation and clientData are required",
    ]);
  }
  if (factor.status !== "PENDING_ACTIVATION" || factor.challenge === undefined) {
    return oktaError(400, "E0000001", "Api validation failed: activateFactorRequest", headers, [
      "The factor is not pending activation",
    ]);
  }
  const expectedChallenge = factor.challenge;
  const origin = context.url;
  try {
    const credentialId = credentialIdOf(attestation);
    const verification = await verifyRegistrationResponse({
      response: {
        id: credentialId,
        rawId: credentialId,
        type: "public-key",
        response: { attestationObject: attestation, clientDataJSON: clientData },
        clientExtensionResults: {},
      },
      expectedChallenge,
      expectedOrigin: origin,
      expectedRPID: new URL(origin).hostname,
      requireUserVerification: false,
    });
    if (!verification.verified) throw new Error("not verified");
    factor.challenge = undefined;
    factor.status = "ACTIVE";
    factor.verified = true;
    factor.aaguid = verification.registrationInfo.aaguid;
    factor.lastUpdated = new Date().toISOString();
    factor.profile = { credentialId, authenticatorName: context.authenticatorName };
    context.org.activations++;
    if (context.org.loseActivationAnswers > 0) {
      context.org.loseActivationAnswers--;
      // Done, but the answer is lost: hold it until the sandbox closes (the client gives up first).
      await sleep(30_000, context.closing.signal).catch(() => {});
      return new Response(null, { status: 504 });
    }
    return json(factorJson(context, factor));
  } catch (error) {
    return oktaError(403, "E0000068", "Invalid Passcode/Answer", headers, [
      `attestation: ${error instanceof Error ? error.message : String(error)}`,
    ]);
  }
}

/** The credential id inside an attestation object's authenticator data (WebAuthn §6.5.1). */
function credentialIdOf(attestationObject: string): string {
  const decoded = decodeCbor(fromBase64url(attestationObject), { useMaps: true }) as Map<string, unknown>;
  const authData = decoded.get("authData");
  if (!(authData instanceof Uint8Array) || authData.length < 55) {
    throw new Error("no attested credential data");
  }
  const length = (authData[53]! << 8) | authData[54]!;
  return base64url(authData.slice(55, 55 + length));
}

/** User object (https://developer.okta.com/docs/reference/api/users/#user-object), trimmed. */
function userJson(context: RouteContext, user: OrgUser) {
  return {
    id: user.id,
    status: user.status,
    created: user.created,
    profile: user.profile,
    _links: { self: { href: `${context.url}/api/v1/users/${user.id}` } },
  };
}

/** Group object (https://developer.okta.com/docs/reference/api/groups/#group-object), trimmed. */
function groupJson(group: { id: string; profile: { name: string; description: string } }) {
  return { id: group.id, type: "OKTA_GROUP", profile: group.profile };
}

/** Factor object (https://developer.okta.com/docs/reference/api/factors/#factor-object). */
function factorJson(context: RouteContext, factor: OrgFactor) {
  const self = `${context.url}/api/v1/users/${factor.userId}/factors/${factor.id}`;
  return {
    id: factor.id,
    factorType: "webauthn",
    provider: "FIDO",
    vendorName: "FIDO",
    status: factor.status,
    created: factor.created,
    lastUpdated: factor.lastUpdated,
    ...(factor.profile ? { profile: factor.profile } : {}),
    _links: {
      self: { href: self, hints: { allow: ["GET", "DELETE"] } },
      ...(factor.status === "PENDING_ACTIVATION"
        ? { activate: { href: `${self}/lifecycle/activate`, hints: { allow: ["POST"] } } }
        : {}),
      user: { href: `${context.url}/api/v1/users/${factor.userId}`, hints: { allow: ["GET"] } },
    },
  };
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array {
  const b64 = text.replaceAll("-", "+").replaceAll("_", "/");
  return Uint8Array.from(atob(b64 + "=".repeat((4 - b64.length % 4) % 4)), (c) => c.charCodeAt(0));
}
