/**
 * Signing in to the panel with the identity provider: OpenID Connect's authorization code flow with
 * PKCE (Microsoft Entra: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
 * and https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc), through oauth4webapi.
 *
 * 1. `GET /auth/sign-in`: a fresh `state`, `nonce` and PKCE verifier, kept in this process for 10
 *    minutes under the state; the state also goes into a short cookie (`SameSite=Lax`, so the
 *    provider's redirect back, a top-level navigation from another site, carries it); 303 to the
 *    provider's authorize endpoint.
 * 2. `GET /auth/callback`: the state must equal the cookie's (the flow was started by this browser:
 *    no login CSRF) and name a live flow (used once); the code is redeemed with the verifier (and
 *    the client secret when configured); the ID token's issuer, audience, expiry and nonce are
 *    checked by oauth4webapi. Its `preferred_username` must be an admin of the panel (the owner adds
 *    them); then a session starts as with a sign-in link.
 *
 * The flows live in this process: with several panel processes behind one address, the callback
 * must reach the process that started the flow (or sign in again).
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { ProvisioningError } from "../../errors.ts";
import { readCookie, sessionCookie } from "./auth.ts";
import { PanelHttpError, securityHeaders } from "./http.ts";
import type { RequestContext } from "./routes.ts";

/** The provider the panel's admins sign in with. */
export interface ProviderSignIn {
  /** Shown on the sign-in page, e.g. "entra" (Microsoft Entra ID). */
  readonly provider: string;
  /**
   * The OpenID issuer: Entra `https://login.microsoftonline.com/{tenant id}/v2.0` (the tenant's GUID:
   * the issuer in its discovery document must equal it). `http:` only on loopback (the sandbox).
   */
  readonly issuer: string;
  /** The app registration's client id; its redirect URI is the panel's `/auth/callback`. */
  readonly clientId: string;
  /** The app's client secret (a web app); without it the app must allow public client flows. */
  readonly clientSecret?: string;
}

/** How long a started sign-in may take. */
const flowTtlMs = 10 * 60_000;
/** The most sign-ins in flight at once (older ones are dropped). */
const maxFlows = 1000;
const flowCookie = "provisioning-panel-flow";

interface Flow {
  readonly verifier: string;
  readonly nonce: string;
  readonly startedAt: number;
}

/** The two steps of the provider's sign-in, bound to one provider configuration. */
export interface ProviderSignInFlow {
  readonly provider: string;
  start(context: RequestContext): Promise<Response>;
  callback(context: RequestContext): Promise<Response>;
}

/** Creates the sign-in flow of `config` (discovery happens at the first sign-in, then is kept). */
export function providerSignInFlow(config: ProviderSignIn): ProviderSignInFlow {
  const issuer = new URL(config.issuer);
  const insecure = issuer.protocol === "http:";
  if (insecure && !/^(127\.\d+\.\d+\.\d+|\[::1\]|localhost)$/.test(issuer.hostname)) {
    throw new ProvisioningError(
      "panel-provider-insecure",
      `Cannot sign in with "${config.issuer}": an issuer over plain HTTP is allowed on loopback only`,
      { hint: "Use the provider's https:// issuer" },
    );
  }
  const client: oauth.Client = { client_id: config.clientId };
  const clientAuth = config.clientSecret === undefined
    ? oauth.None()
    : oauth.ClientSecretPost(config.clientSecret);
  const flows = new Map<string, Flow>();
  let server: Promise<oauth.AuthorizationServer> | null = null;
  const options = insecure ? { [oauth.allowInsecureRequests]: true } : {};

  function discover(): Promise<oauth.AuthorizationServer> {
    server ??= (async () => {
      const response = await oauth.discoveryRequest(issuer, { algorithm: "oidc", ...options });
      return await oauth.processDiscoveryResponse(issuer, response);
    })();
    server.catch(() => (server = null));
    return server;
  }

  async function authorizationServer(): Promise<oauth.AuthorizationServer> {
    try {
      return await discover();
    } catch (cause) {
      throw new PanelHttpError(
        502,
        "provider-unreachable",
        `Cannot reach the provider's sign-in at "${config.issuer}": ${
          cause instanceof Error ? cause.message : String(cause)
        }`,
      );
    }
  }

  function prune(now: number): void {
    for (const [state, flow] of flows) {
      if (now - flow.startedAt > flowTtlMs || flows.size > maxFlows) flows.delete(state);
    }
  }

  return {
    provider: config.provider,

    async start(context) {
      const as = await authorizationServer();
      if (as.authorization_endpoint === undefined) {
        throw new PanelHttpError(
          502,
          "provider-unusable",
          `The provider "${config.issuer}" names no authorize endpoint`,
        );
      }
      prune(context.now);
      const state = oauth.generateRandomState();
      const verifier = oauth.generateRandomCodeVerifier();
      const nonce = oauth.generateRandomNonce();
      flows.set(state, { verifier, nonce, startedAt: context.now });
      const url = new URL(as.authorization_endpoint);
      url.search = new URLSearchParams({
        client_id: config.clientId,
        response_type: "code",
        response_mode: "query",
        redirect_uri: redirectUri(context),
        scope: "openid profile",
        state,
        nonce,
        code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
        code_challenge_method: "S256",
        prompt: "select_account",
      }).toString();
      const headers = new Headers({ ...securityHeaders, location: url.toString() });
      headers.append("set-cookie", flowCookieValue(state, context.panel.tls, flowTtlMs));
      return new Response(null, { status: 303, headers });
    },

    async callback(context) {
      const state = context.url.searchParams.get("state") ?? "";
      const bound = readCookie(context.request, flowCookie);
      const flow = flows.get(state);
      if (state === "" || bound !== state || flow === undefined || context.now - flow.startedAt > flowTtlMs) {
        throw new PanelHttpError(
          400,
          "sign-in-flow-unknown",
          "Cannot finish this sign-in: it was not started in this browser, expired or was used; start again",
        );
      }
      flows.delete(state);
      const as = await authorizationServer();
      let claims: oauth.IDToken;
      try {
        const params = oauth.validateAuthResponse(as, client, context.url.searchParams, state);
        const response = await oauth.authorizationCodeGrantRequest(
          as,
          client,
          clientAuth,
          params,
          redirectUri(context),
          flow.verifier,
          options,
        );
        const result = await oauth.processAuthorizationCodeResponse(as, client, response, {
          expectedNonce: flow.nonce,
          requireIdToken: true,
        });
        claims = oauth.getValidatedIdTokenClaims(result)!;
      } catch (cause) {
        const reason = cause instanceof oauth.AuthorizationResponseError
          ? `${cause.error}: ${cause.error_description ?? ""}`
          : cause instanceof Error
          ? cause.message
          : String(cause);
        throw new PanelHttpError(
          401,
          "provider-sign-in-failed",
          `Cannot sign in with ${config.provider}: ${reason}`,
        );
      }
      const name = typeof claims.preferred_username === "string" ? claims.preferred_username : "";
      const admin = name === "" ? null : await context.panel.store.auth.findAdmin(name);
      if (admin === null) {
        throw new PanelHttpError(
          403,
          "not-an-admin",
          `Cannot sign in "${name || claims.sub}": not an admin of this panel; ask its owner to add you`,
        );
      }
      const { sessionTtlMs, tls, store } = context.panel;
      const session = await store.auth.createSession({
        adminId: admin.id,
        at: context.now,
        ttlMs: sessionTtlMs,
      });
      const headers = new Headers({ ...securityHeaders, location: "/users" });
      headers.append("set-cookie", sessionCookie({ tls, token: session.token, maxAgeMs: sessionTtlMs }));
      headers.append("set-cookie", flowCookieValue("", tls, 0));
      return new Response(null, { status: 303, headers });
    },
  };
}

/** The panel's callback on the origin the browser uses (the provider must list it as a redirect URI). */
function redirectUri(context: RequestContext): string {
  return new URL("/auth/callback", context.url).toString();
}

function flowCookieValue(state: string, tls: boolean, maxAgeMs: number): string {
  return [
    `${flowCookie}=${state}`,
    "Path=/auth",
    "HttpOnly",
    "SameSite=Lax",
    `Max-Age=${Math.floor(maxAgeMs / 1000)}`,
    ...(tls ? ["Secure"] : []),
  ].join("; ");
}
