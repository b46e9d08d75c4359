/**
 * The sandbox's stand-in for the sign-in requests Security info makes without a person at the
 * pages, as nathanmcnulty/nathanmcnulty `Entra/passkeys/Register-PasskeyViaTAP.ps1` (February
 * 2026, "flow discovered via HAR analysis of mysignins.microsoft.com passkey registration")
 * records them for the My Sign-Ins single-page app (client id `19db86c3-b2b9-44cc-b339-36da233a3be2`,
 * redirect `https://mysignins.microsoft.com`). None of these endpoints is documented by Microsoft
 * (docs/fidelity.md, "Browser and TAP path", lists each):
 *
 * 1. `GET /{tenant}/oauth2/v2.0/authorize?client_id=…&response_mode=fragment&code_challenge=…`
 *    answers the ConvergedSignIn page whose `$Config={…};` holds `pgid`, `sFT` (flow token),
 *    `sCtx`, `canary`, `apiCanary`, `sessionId` and `urlPost`;
 * 2. `POST /common/login` (form: `login`, `loginfmt`, `accesspass`, `ps=56`, `ctx`, `flowToken`,
 *    `canary`, …) answers a redirect to the redirect URI with `#code=…&state=…`, or the
 *    ConvergedSignIn page again with `strServiceExceptionMessage` when the pass is refused; with
 *    the user's "Stay signed in?" variant, first a KmsiBroker page whose form posts itself
 *    (`POST /kmsi` in the sandbox) before that redirect;
 * 3. `POST /{tenant}/oauth2/v2.0/token` (authorization code with PKCE, or refresh token) for that
 *    client only, with `Origin: https://mysignins.microsoft.com` required, as for any SPA client
 *    (the script: "Origin header is required on ALL token endpoint calls");
 * 4. `POST /mysignins/api/session/authorize` with the bearer token answers
 *    `{isAuthorized, sessionCtxV2, hasMfaClaim, requireNgcMfaForSecurityInfo}`; with the user's
 *    `requireNgcMfa` variant, `true` until the token was refreshed with the `ngcmfa` claims.
 *
 * Requests for other clients are left to oauth.ts.
 *
 * @module
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { passRefusal } from "./login_pages.ts";
import { escapeHtml, html, json, redirect } from "./page_html.ts";
import type { PageState } from "./page_state.ts";

/** The My Sign-Ins single-page app's client id (Register-PasskeyViaTAP.ps1). */
export const mySignInsClientId = "19db86c3-b2b9-44cc-b339-36da233a3be2";
/** Its redirect URI and the Origin its token requests carry. */
export const mySignInsOrigin = "https://mysignins.microsoft.com";

interface LoginFlow {
  redirectUri: string;
  state: string;
  codeChallenge: string;
  canary: string;
  expiresAt: number;
}

/** The ESTS requests of the browserless path; `undefined` when a request is not theirs. */
export function createEsts(state: PageState): (request: Request, url: URL) => Promise<Response | undefined> {
  const { tenant } = state;
  const flows = new Map<string, LoginFlow>();
  const codes = new Map<string, { userId: string; codeChallenge: string; expiresAt: number }>();
  const tokens = new Map<string, { userId: string; expiresAt: number; ngcMfa: boolean }>();
  const refreshTokens = new Map<string, string>();
  const kmsi = new Map<string, { userId: string; flow: LoginFlow }>();
  const tenantPaths = new Set([tenant.tenantId, tenant.domain, "common", "organizations"]);

  function authorize(url: URL): Response {
    const params = url.searchParams;
    if (params.get("response_type") !== "code" || params.get("code_challenge_method") !== "S256") {
      return html(
        configPage({ pgid: "ConvergedError", strServiceExceptionMessage: "AADSTS900144: invalid request" }),
        400,
      );
    }
    const flowToken = toBase64Url(randomBytes(32));
    const flow: LoginFlow = {
      redirectUri: params.get("redirect_uri") ?? mySignInsOrigin,
      state: params.get("state") ?? "",
      codeChallenge: params.get("code_challenge") ?? "",
      canary: toBase64Url(randomBytes(32)),
      expiresAt: tenant.now() + 15 * 60_000,
    };
    flows.set(flowToken, flow);
    return html(configPage({
      pgid: "ConvergedSignIn",
      sFT: flowToken,
      sCtx: flowToken,
      canary: flow.canary,
      apiCanary: toBase64Url(randomBytes(16)),
      sessionId: crypto.randomUUID(),
      urlPost: "/common/login",
    }));
  }

  async function login(request: Request): Promise<Response> {
    const form = await request.formData().catch(() => new FormData());
    const field = (name: string) => String(form.get(name) ?? "");
    const flow = flows.get(field("ctx")) ?? flows.get(field("flowToken"));
    if (!flow || tenant.now() > flow.expiresAt || field("canary") !== flow.canary) {
      return html(
        configPage({ pgid: "ConvergedSignIn", strServiceExceptionMessage: "Your session has timed out." }),
      );
    }
    const user = tenant.user(field("loginfmt")) ?? tenant.userByMail(field("loginfmt"));
    if (!user || !user.accountEnabled) {
      return html(configPage({
        pgid: "ConvergedSignIn",
        strServiceExceptionMessage: "This username may be incorrect.",
      }));
    }
    const refusal = field("ps") === "56"
      ? passRefusal(state, user, field("accesspass"))
      : "Enter your Temporary Access Pass.";
    if (refusal) return html(configPage({ pgid: "ConvergedSignIn", strServiceExceptionMessage: refusal }));
    flows.delete(field("ctx"));
    if (state.variantFor(user.id).staySignedIn) {
      // "Stay signed in?" as ESTS answers a script: a KmsiBroker page whose form posts itself.
      const kmsiToken = toBase64Url(randomBytes(32));
      kmsi.set(kmsiToken, { userId: user.id, flow });
      return html(kmsiPage(kmsiToken));
    }
    return issueCode(user.id, flow);
  }

  function issueCode(userId: string, flow: LoginFlow): Response {
    const code = toBase64Url(randomBytes(32));
    codes.set(code, { userId, codeChallenge: flow.codeChallenge, expiresAt: tenant.now() + 60_000 });
    return redirect(`${flow.redirectUri}#code=${code}&state=${encodeURIComponent(flow.state)}`);
  }

  async function kmsiPost(request: Request): Promise<Response> {
    const form = await request.formData().catch(() => new FormData());
    const pending = kmsi.get(String(form.get("flowToken") ?? ""));
    kmsi.delete(String(form.get("flowToken") ?? ""));
    if (!pending) {
      return html(
        configPage({ pgid: "ConvergedSignIn", strServiceExceptionMessage: "Your session has timed out." }),
      );
    }
    return issueCode(pending.userId, pending.flow);
  }

  async function token(request: Request): Promise<Response | undefined> {
    const body = new URLSearchParams(await request.clone().text());
    if (body.get("client_id") !== mySignInsClientId) return undefined;
    await request.body?.cancel();
    if (request.headers.get("origin") !== mySignInsOrigin) {
      return json({
        error: "invalid_request",
        error_description:
          "AADSTS9002327: Tokens issued for the 'Single-Page Application' client-type may only be redeemed via cross-origin requests.",
      }, 400);
    }
    let userId: string | undefined;
    let ngcMfa = false;
    if (body.get("grant_type") === "authorization_code") {
      const code = codes.get(body.get("code") ?? "");
      codes.delete(body.get("code") ?? "");
      const verifier = body.get("code_verifier") ?? "";
      if (
        code && tenant.now() <= code.expiresAt &&
        toBase64Url(sha256(new TextEncoder().encode(verifier))) === code.codeChallenge
      ) userId = code.userId;
    } else if (body.get("grant_type") === "refresh_token") {
      userId = refreshTokens.get(body.get("refresh_token") ?? "");
      // A pass is a passwordless credential: it satisfies the NGC-MFA claims (Register-PasskeyViaTAP.ps1).
      ngcMfa = /"ngcmfa"/.test(body.get("claims") ?? "");
    }
    if (!userId) {
      return json({
        error: "invalid_grant",
        error_description:
          "AADSTS70008: The provided authorization code or refresh token has expired or is not valid.",
      }, 400);
    }
    const access = toBase64Url(randomBytes(32));
    const refresh = toBase64Url(randomBytes(32));
    tokens.set(access, { userId, expiresAt: tenant.now() + 3600_000, ngcMfa });
    refreshTokens.set(refresh, userId);
    return json({
      token_type: "Bearer",
      scope: `${mySignInsClientId}/.default`,
      expires_in: 3599,
      access_token: access,
      refresh_token: refresh,
    });
  }

  function sessionAuthorize(request: Request): Response {
    const bearer = /^Bearer (.+)$/.exec(request.headers.get("authorization") ?? "")?.[1];
    const grant = bearer ? tokens.get(bearer) : undefined;
    if (!grant || tenant.now() > grant.expiresAt) return json({ isAuthorized: false }, 401);
    const sessionCtxV2 = toBase64Url(randomBytes(48));
    const needsNgc = state.variantFor(grant.userId).requireNgcMfa && !grant.ngcMfa;
    // A session without the claims Security info needs cannot add methods.
    if (!needsNgc) state.apiSessions.set(sessionCtxV2, grant.userId);
    return json({
      isAuthorized: true,
      sessionCtxV2,
      hasMfaClaim: true,
      requireNgcMfaForSecurityInfo: needsNgc,
    });
  }

  return async (request, url) => {
    const parts = url.pathname.split("/").filter(Boolean);
    if (
      parts.length === 4 && tenantPaths.has(parts[0]!) && parts[1] === "oauth2" && parts[2] === "v2.0"
    ) {
      if (parts[3] === "authorize" && request.method === "GET") {
        return url.searchParams.get("client_id") === mySignInsClientId ? authorize(url) : undefined;
      }
      if (parts[3] === "token" && request.method === "POST") return await token(request);
      return undefined;
    }
    if (url.pathname === "/common/login" && request.method === "POST") return await login(request);
    if (url.pathname === "/kmsi" && request.method === "POST") return await kmsiPost(request);
    if (url.pathname === "/mysignins/api/session/authorize" && request.method === "POST") {
      await request.body?.cancel();
      return sessionAuthorize(request);
    }
    return undefined;
  };
}

/** "Stay signed in?" for a script: a KmsiBroker page whose form posts itself (Register-PasskeyViaTAP.ps1). */
function kmsiPage(flowToken: string): string {
  return `<!doctype html><html lang="en"><head><title>Working...</title></head><body>
<form name="hiddenform" action="/kmsi" method="POST">
<input type="hidden" name="LoginOptions" value="1">
<input type="hidden" name="type" value="28">
<input type="hidden" name="flowToken" value="${escapeHtml(flowToken)}">
</form>
<script type="text/javascript">//<![CDATA[
$Config=${JSON.stringify({ pgid: "KmsiBroker" })};
//]]></script></body></html>`;
}

/** A sign-in page as ESTS serves it: the page state in `$Config={…};`. */
function configPage(config: Record<string, unknown>): string {
  return `<!doctype html><html lang="en"><head><title>Sign in to your account</title></head><body>
<script type="text/javascript">//<![CDATA[
$Config=${JSON.stringify(config).replace(/</g, "\\u003c")};
//]]></script><noscript>${escapeHtml("JavaScript required to sign in.")}</noscript></body></html>`;
}
