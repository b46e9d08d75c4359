/**
 * The shape of the panel's routes, shared by the API (api.ts) and the pages (pages.ts): each route
 * says its method, its path (OpenAPI style, `/api/v1/jobs/{id}`), who may call it and what role it
 * needs; the server (server.ts) authenticates, checks the role and the CSRF token before a handler
 * runs, so a handler cannot forget them.
 *
 * @module
 */
import type { OpenedPanelStore } from "../store/mod.ts";
import type { Permission, Principal } from "./auth.ts";
import type { ProviderSignInFlow } from "./provider_sign_in.ts";

/** What every handler of one panel shares. */
export interface PanelContext {
  readonly store: OpenedPanelStore;
  /** The panel's clock (epoch ms): sessions, tokens and links expire by it. */
  readonly clock: () => number;
  /** True when the panel serves HTTPS (cookies are then Secure). */
  readonly tls: boolean;
  /** How long a browser session lasts. */
  readonly sessionTtlMs: number;
  /** How long an agent token lasts (12 hours). */
  readonly agentTokenTtlMs: number;
  /** How long a sign-in link of a new admin lasts. */
  readonly signInLinkTtlMs: number;
  /** The provider's sign-in, when configured. */
  readonly providerSignIn: ProviderSignInFlow | null;
}

/** One request, as a handler sees it. */
export interface RequestContext {
  readonly request: Request;
  readonly url: URL;
  /** The path's `{name}` parts. */
  readonly params: Readonly<Record<string, string>>;
  /** The caller; null only on public routes. */
  readonly principal: Principal | null;
  /** A page's form body (already read for its CSRF field), or null. */
  readonly form: URLSearchParams | null;
  readonly panel: PanelContext;
  /** The panel clock's time when the request arrived. */
  readonly now: number;
}

/** Who may call a route: anyone, a browser session, an agent token, or either of the last two. */
export type Access = "public" | "session" | "agent" | "session-or-agent";

/** One route of the panel. */
export interface Route {
  readonly method: "GET" | "POST";
  /** OpenAPI-style path: `/api/v1/jobs/{id}`. */
  readonly path: string;
  /** JSON API (errors as JSON) or HTML page (errors as a page). */
  readonly kind: "api" | "page";
  readonly access: Access;
  /** The role's permission the caller needs (none on public routes). */
  readonly permission?: Permission;
  handle(context: RequestContext): Promise<Response>;
}

/** A URLPattern for an OpenAPI-style path (`{id}` becomes `:id`). */
export function patternOf(path: string): URLPattern {
  return new URLPattern({ pathname: path.replace(/\{(\w+)\}/g, ":$1") });
}

/** The principal of a route that is not public (the server guarantees one). */
export function principalOf(context: RequestContext): Principal {
  if (context.principal === null) throw new TypeError("A non-public route ran without a principal");
  return context.principal;
}

/** The actor name written to the audit log: the admin, or `admin/agent` for an agent. */
export function actorOf(principal: Principal, agent?: string): string {
  return principal.kind === "agent" && agent !== undefined
    ? `${principal.admin.signInName}/${agent}`
    : principal.admin.signInName;
}
