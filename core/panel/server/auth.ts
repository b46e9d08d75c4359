/**
 * Who is asking, for every request of the panel: a browser session (a cookie) or an agent (a
 * bearer token), what their role allows, and the CSRF check of state-changing requests.
 *
 * - Session cookie: `HttpOnly; SameSite=Strict; Path=/`, plus `Secure` and the `__Host-` name prefix
 *   when the panel serves TLS (the browser then refuses it from any other origin or over plain
 *   HTTP). Its value is a 256-bit random token; the database keeps only its SHA-256
 *   (core/panel/store/auth_store.ts), so a cookie of another panel is unknown here.
 * - CSRF: every state-changing request made with a session carries the session's CSRF token, in the
 *   `x-csrf-token` header (API) or the `csrf` form field (pages); missing or wrong is 403. SameSite
 *   already keeps other sites' forms from sending the cookie; the token is the second wall
 *   (OWASP's synchronizer token pattern,
 *   https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html).
 *   A bearer token is never sent by a browser on its own, so agent requests need no CSRF token.
 * - Roles: owner (everything, creates admins), admin ("edit users": import, queue, cancel, retry,
 *   agent tokens), read-only (looks).
 *
 * @module
 */
import type { AdminRole, PanelAdmin } from "../store/mod.ts";
import type { OpenedPanelStore } from "../store/mod.ts";
import { PanelHttpError, sameSecret } from "./http.ts";

/** Who made a request. */
export type Principal =
  | {
    readonly kind: "session";
    readonly admin: PanelAdmin;
    readonly csrf: string;
    /** The cookie's token (to end the session at sign-out); never logged. */
    readonly token: string;
  }
  | { readonly kind: "agent"; readonly admin: PanelAdmin; readonly tokenId: number; readonly label: string };

/** The session cookie's name: `__Host-` prefixed (bound to this origin, Secure) under TLS. */
export function sessionCookieName(tls: boolean): string {
  return tls ? "__Host-provisioning-panel" : "provisioning-panel";
}

/** The `Set-Cookie` value that starts a session. */
export function sessionCookie(options: { tls: boolean; token: string; maxAgeMs: number }): string {
  const { tls, token, maxAgeMs } = options;
  return [
    `${sessionCookieName(tls)}=${token}`,
    "Path=/",
    "HttpOnly",
    "SameSite=Strict",
    `Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}`,
    ...(tls ? ["Secure"] : []),
  ].join("; ");
}

/** The `Set-Cookie` value that removes the session cookie. */
export function clearedSessionCookie(tls: boolean): string {
  return sessionCookie({ tls, token: "", maxAgeMs: 0 });
}

/** The value of cookie `name` in the request, or null. */
export function readCookie(request: Request, name: string): string | null {
  const header = request.headers.get("cookie");
  if (header === null) return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

/**
 * The request's principal: a bearer token when an `Authorization` header is present (refused with
 * 401 and the reason when it is not a live agent token), else the session cookie, else null.
 */
export async function authenticate(
  request: Request,
  options: { store: OpenedPanelStore; tls: boolean; now: number },
): Promise<Principal | null> {
  const authorization = request.headers.get("authorization");
  if (authorization !== null) {
    const match = /^Bearer\s+([A-Za-z0-9_-]{16,200})\s*$/i.exec(authorization);
    if (match === null) {
      throw new PanelHttpError(
        401,
        "agent-token-invalid",
        "Cannot accept the Authorization header: expected a bearer token",
      );
    }
    const check = await options.store.auth.checkAgentToken(match[1]!, options.now);
    if (!check.valid) {
      const hint = check.reason === "expired"
        ? "the agent's sign-in lasts 12 hours: sign in again with --login"
        : "sign in again with --login";
      throw new PanelHttpError(
        401,
        `agent-token-${check.reason}`,
        `Cannot accept the agent token: it is ${check.reason}; ${hint}`,
      );
    }
    return { kind: "agent", admin: check.admin, tokenId: check.id, label: check.label };
  }
  const token = readCookie(request, sessionCookieName(options.tls));
  if (token === null || token === "") return null;
  const session = await options.store.auth.findSession(token, options.now);
  return session === null ? null : { kind: "session", admin: session.admin, csrf: session.csrf, token };
}

const rank: Readonly<Record<AdminRole, number>> = { owner: 3, admin: 2, "read-only": 1 };

/** What a route asks of its caller's role. */
export type Permission = "read" | "edit-users" | "owner";

const needed: Readonly<Record<Permission, AdminRole>> = {
  read: "read-only",
  "edit-users": "admin",
  owner: "owner",
};

/** True when `role` grants `permission`. */
export function allows(role: AdminRole, permission: Permission): boolean {
  return rank[role] >= rank[needed[permission]];
}

/** Refuses (403) a principal whose role does not grant `permission`. */
export function requirePermission(principal: Principal, permission: Permission): void {
  if (!allows(principal.admin.role, permission)) {
    throw new PanelHttpError(
      403,
      "role-forbidden",
      `Cannot do this as "${principal.admin.signInName}": the role "${principal.admin.role}" does not allow "${permission}"`,
    );
  }
}

/** Refuses (403) a session's state-changing request whose CSRF token is missing or wrong. */
export function checkCsrf(principal: Principal, supplied: string | null): void {
  if (principal.kind !== "session") return;
  if (supplied === null || supplied === "") {
    throw new PanelHttpError(
      403,
      "csrf-missing",
      "Cannot accept a change without the session's CSRF token: reload the page",
    );
  }
  if (!sameSecret(supplied, principal.csrf)) {
    throw new PanelHttpError(
      403,
      "csrf-mismatch",
      "Cannot accept a change with a wrong CSRF token: reload the page",
    );
  }
}
