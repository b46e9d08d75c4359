/**
 * The panel's HTTP server: `Deno.serve` on 127.0.0.1 by default, on any other address only with
 * TLS (a certificate and key given) or refused with a reason; every request routed to the API
 * (api.ts) or a page (pages.ts) after the checks each route declares: who may call it, the role it
 * needs, and for a session's state-changing request the CSRF token and the Origin.
 *
 * On a panel without an owner yet, the start issues a first-run bootstrap link (a one-time token)
 * and prints it once; following it makes its user the owner.
 *
 * @module
 */
import { ProvisioningError } from "../../errors.ts";
import type { OpenedPanelStore } from "../store/mod.ts";
import { apiRoutes } from "./api.ts";
import { authenticate, checkCsrf, requirePermission } from "./auth.ts";
import { errorJson, PanelHttpError, readForm } from "./http.ts";
import { errorPage, pageRoutes } from "./pages.ts";
import { type ProviderSignIn, providerSignInFlow } from "./provider_sign_in.ts";
import { type PanelContext, patternOf, type RequestContext, type Route } from "./routes.ts";

/** Where the panel listens. */
export interface PanelListen {
  /** @default "127.0.0.1" */
  hostname?: string;
  /** 0 picks a free port. @default 8443 with TLS, else 8080 */
  port?: number;
  /** PEM texts of the certificate (chain) and its private key: required off loopback. */
  tls?: { cert: string; key: string };
}

/** Options of {@linkcode startPanel}. */
export interface StartPanelOptions {
  /** The panel's store (core/panel/store/mod.ts `openPanelStore`); the caller closes it. */
  store: OpenedPanelStore;
  listen?: PanelListen;
  /** Signing in with the identity provider (OpenID Connect, code + PKCE); without it, one-time links only. */
  providerSignIn?: ProviderSignIn;
  /** The panel's clock (epoch ms) for sessions, tokens and links. @default Date.now */
  clock?: () => number;
  /** Where the first-run bootstrap link is printed (once). @default console.log */
  print?: (line: string) => void;
  /** @default 8 hours */
  sessionTtlMs?: number;
  /** How long an agent's token is valid. @default 12 hours */
  agentTokenTtlMs?: number;
  /** How long a new admin's sign-in link, and the bootstrap link, are valid. @default 24 hours */
  signInLinkTtlMs?: number;
}

/** The defaults of {@linkcode StartPanelOptions}. */
export const panelDefaults = {
  hostname: "127.0.0.1",
  sessionTtlMs: 8 * 3600_000,
  agentTokenTtlMs: 12 * 3600_000,
  signInLinkTtlMs: 24 * 3600_000,
} as const;

/** A running panel. */
export interface RunningPanel extends AsyncDisposable {
  /** The panel's base URL, e.g. `http://127.0.0.1:8080/`. */
  readonly url: string;
  /** The first-run link when the panel had no owner at start (also printed), else null. */
  readonly bootstrapLink: string | null;
  /** Stops accepting requests and waits for those in flight; does not close the store. */
  close(): Promise<void>;
}

/** True for an address only this machine reaches. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || hostname === "[::1]" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Starts the panel; see the module documentation. */
export async function startPanel(options: StartPanelOptions): Promise<RunningPanel> {
  const listen = options.listen ?? {};
  const hostname = listen.hostname ?? panelDefaults.hostname;
  const tls = listen.tls !== undefined;
  if (!tls && !isLoopback(hostname)) {
    throw new ProvisioningError(
      "panel-needs-tls",
      `Cannot serve the panel on "${hostname}" without TLS: sessions and agent tokens would cross the network in clear`,
      {
        hint: "Give a certificate and key (--cert, --key), or listen on 127.0.0.1 behind your own TLS proxy",
      },
    );
  }
  const clock = options.clock ?? Date.now;
  const panel: PanelContext = {
    store: options.store,
    clock,
    tls,
    sessionTtlMs: options.sessionTtlMs ?? panelDefaults.sessionTtlMs,
    agentTokenTtlMs: options.agentTokenTtlMs ?? panelDefaults.agentTokenTtlMs,
    signInLinkTtlMs: options.signInLinkTtlMs ?? panelDefaults.signInLinkTtlMs,
    providerSignIn: options.providerSignIn === undefined ? null : providerSignInFlow(options.providerSignIn),
  };
  const routes = [...apiRoutes, ...pageRoutes].map((route) => ({ route, pattern: patternOf(route.path) }));
  const handler = (request: Request) => dispatch(request, routes, panel);

  const { promise: listening, resolve } = Promise.withResolvers<Deno.NetAddr>();
  const port = listen.port ?? (tls ? 8443 : 8080);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = tls
      ? Deno.serve(
        { hostname, port, cert: listen.tls!.cert, key: listen.tls!.key, onListen: resolve },
        handler,
      )
      : Deno.serve({ hostname, port, onListen: resolve }, handler);
  } catch (cause) {
    throw new ProvisioningError("panel-listen", `Cannot listen on ${hostname}:${port}`, {
      cause,
      hint: cause instanceof Deno.errors.AddrInUse
        ? "Another program uses that port: choose another"
        : "Check the address, certificate and key",
    });
  }
  const addr = await listening;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = `${tls ? "https" : "http"}://${host}:${addr.port}/`;

  let bootstrapLink: string | null = null;
  const token = await options.store.auth.issueBootstrapToken({ at: clock(), ttlMs: panel.signInLinkTtlMs });
  if (token !== null) {
    bootstrapLink = `${url}bootstrap?token=${token}`;
    (options.print ?? console.log)(
      `This panel has no owner yet. Open this link once, within 24 hours, to become its owner:\n  ${bootstrapLink}`,
    );
  }
  const close = () => server.shutdown();
  return { url, bootstrapLink, close, [Symbol.asyncDispose]: close };
}

interface CompiledRoute {
  readonly route: Route;
  readonly pattern: URLPattern;
}

const stateChanging = new Set(["POST", "PUT", "PATCH", "DELETE"]);

async function dispatch(
  request: Request,
  routes: readonly CompiledRoute[],
  panel: PanelContext,
): Promise<Response> {
  const url = new URL(request.url);
  const api = url.pathname.startsWith("/api/");
  const matching = routes.flatMap(({ route, pattern }) => {
    const match = pattern.exec({ pathname: url.pathname });
    return match === null ? [] : [{ route, params: match.pathname.groups as Record<string, string> }];
  });
  const found = matching.find((m) =>
    m.route.method === request.method || (request.method === "HEAD" && m.route.method === "GET")
  );
  let context: RequestContext | null = null;
  try {
    if (found === undefined) {
      if (matching.length > 0) {
        throw new PanelHttpError(
          405,
          "method-not-allowed",
          `Cannot ${request.method} ${url.pathname}: use ${matching.map((m) => m.route.method).join(" or ")}`,
        );
      }
      throw new PanelHttpError(404, "not-found", `Cannot find ${url.pathname}`);
    }
    const { route, params } = found;
    const now = panel.clock();
    const principal = await authenticate(request, { store: panel.store, tls: panel.tls, now });
    context = { request, url, params, principal, form: null, panel, now };
    if (route.access !== "public") {
      if (principal === null) {
        if (route.kind === "page" && request.method === "GET") return seeOther("/");
        throw new PanelHttpError(
          401,
          "session-required",
          `Cannot ${request.method} ${url.pathname}: sign in first`,
        );
      }
      if (route.access === "session" && principal.kind !== "session") {
        throw new PanelHttpError(
          401,
          "session-required",
          `Cannot ${request.method} ${url.pathname} with an agent token: it needs an admin's session`,
        );
      }
      if (route.access === "agent" && principal.kind !== "agent") {
        throw new PanelHttpError(
          401,
          "agent-token-required",
          `Cannot ${request.method} ${url.pathname} without an agent token`,
        );
      }
      if (route.permission !== undefined) requirePermission(principal, route.permission);
    }
    const form = route.kind === "page" && stateChanging.has(request.method) ? await readForm(request) : null;
    if (route.access !== "public" && principal !== null && stateChanging.has(request.method)) {
      checkOrigin(request, url);
      checkCsrf(
        principal,
        route.kind === "page" ? form?.get("csrf") ?? null : request.headers.get("x-csrf-token"),
      );
    }
    context = { ...context, form };
    return await route.handle(context);
  } catch (error) {
    const refusal = asHttpError(error);
    if (api) return errorJson(refusal);
    return errorPage(refusal, context?.principal ?? null);
  }
}

function seeOther(location: string): Response {
  return new Response(null, { status: 303, headers: { location, "cache-control": "no-store" } });
}

/** A browser's cross-site request names another origin: refused even before the CSRF token is looked at. */
function checkOrigin(request: Request, url: URL): void {
  const origin = request.headers.get("origin");
  if (origin === null || origin === "null") return;
  const host = request.headers.get("host") ?? url.host;
  if (origin !== `${url.protocol}//${host}`) {
    throw new PanelHttpError(403, "origin-mismatch", `Cannot accept a change from the origin "${origin}"`);
  }
}

function asHttpError(error: unknown): PanelHttpError {
  if (error instanceof PanelHttpError) return error;
  if (error instanceof ProvisioningError && error.code === "panel-cursor-invalid") {
    return new PanelHttpError(400, error.code, `${error.message}. ${error.hint ?? ""}`.trim());
  }
  if (error instanceof RangeError) return new PanelHttpError(400, "invalid-request", error.message);
  console.error("panel: unexpected error:", error instanceof Error ? error.message : String(error));
  return new PanelHttpError(500, "internal", "The panel failed to answer; its log says why");
}
