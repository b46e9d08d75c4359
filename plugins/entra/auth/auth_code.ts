/**
 * Sign-in in the system browser: the authorization code flow with PKCE and a loopback redirect
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow; RFC 8252 §7.3 for
 * native apps). This is what the seed-compatible `--login` does.
 *
 * A one-shot HTTP listener on 127.0.0.1 and a port the OS picks receives the redirect. The
 * redirect URI names `localhost` by default, because the Entra admin center accepts
 * `http://localhost` for "Mobile and desktop applications" and Microsoft ignores the port of
 * loopback redirect URIs when matching ("Localhost exceptions",
 * https://learn.microsoft.com/entra/identity-platform/reply-url); `http://127.0.0.1` is what
 * that page prefers but can only be registered by editing the app's manifest, so it is an option.
 * Either way the listener binds only the loopback interface.
 *
 * The response is accepted only with the `state` we sent (a redirect carrying another state
 * gets a 400 page and the flow keeps waiting), and the code is redeemed with the PKCE verifier,
 * so a code intercepted on the way is useless.
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { type Authority, requestOptions } from "./discovery.ts";
import { EntraAuthError, toAuthError } from "./errors.ts";
import { type TokenSet, toTokenSet } from "./tokens.ts";

/** Options of {@link signInWithBrowser}. */
export interface BrowserSignInOptions {
  readonly authority: Authority;
  readonly clientId: string;
  /** Scopes to ask for, resource-qualified (see `delegatedScopes` in tokens.ts). */
  readonly scopes: readonly string[];
  /**
   * Opens `url` in a browser. Tests pass a function that completes the sign-in programmatically.
   * @default openSystemBrowser
   */
  readonly openBrowser?: (url: string) => Promise<void>;
  /** Tells the admin what is happening and the URL to open by hand if no browser appears. */
  readonly notify?: (text: string) => void;
  /** Pre-fills the account on the sign-in page (`login_hint`). */
  readonly loginHint?: string;
  /**
   * `prompt` of the authorization request.
   * @default "select_account"
   */
  readonly prompt?: "select_account" | "login" | "consent" | "none";
  /**
   * Host named in the redirect URI; the listener is on 127.0.0.1 either way.
   * @default "localhost"
   */
  readonly redirectHost?: "localhost" | "127.0.0.1";
  /**
   * How long to wait for the browser to come back.
   * @default 300000 (five minutes)
   */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /**
   * Clock in epoch milliseconds (token expiry).
   * @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Runs the authorization code flow with PKCE through the browser and returns the tokens.
 *
 * @throws {EntraAuthError} `auth-timeout` when the browser did not come back in time,
 * `auth-declined` when the admin declined, `auth-failed`/`auth-consent-required` for what the
 * identity platform refused. An abort rejects with the signal's reason.
 */
export async function signInWithBrowser(options: BrowserSignInOptions): Promise<TokenSet> {
  const { authority, signal } = options;
  const now = options.now ?? Date.now;
  const openBrowser = options.openBrowser ?? openSystemBrowser;
  const timeoutMs = options.timeoutMs ?? 300_000;
  const client: oauth.Client = { client_id: options.clientId };
  const context = {
    action: `sign in to tenant "${authority.tenant}" in the browser`,
    authority: authority.cloud.loginBase,
    tenant: authority.tenant,
    clientId: options.clientId,
    scopes: options.scopes,
  };
  signal?.throwIfAborted();

  const state = oauth.generateRandomState();
  const verifier = oauth.generateRandomCodeVerifier();
  const challenge = await oauth.calculatePKCECodeChallenge(verifier);

  let settle!: { resolve: (params: URLSearchParams) => void; reject: (error: unknown) => void };
  const callback = new Promise<URLSearchParams>((resolve, reject) => (settle = { resolve, reject }));
  const stop = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: stop.signal, onListen: () => {} },
    (request) => {
      const url = new URL(request.url);
      if (request.method !== "GET" || url.pathname !== "/") return new Response("Not found", { status: 404 });
      if (url.searchParams.get("state") !== state) {
        return page(400, "This sign-in response is not for the sign-in in progress", "Close this tab.");
      }
      settle.resolve(url.searchParams);
      return url.searchParams.has("error")
        ? page(200, "Sign-in did not complete", "Return to the terminal to see why, then close this tab.")
        : page(200, "Signed in", "You can close this tab and return to the terminal.");
    },
  );
  const redirectUri = `http://${options.redirectHost ?? "localhost"}:${server.addr.port}/`;

  const timer = setTimeout(() => {
    settle.reject(
      new EntraAuthError(
        "auth-timeout",
        `Cannot ${context.action}: the browser did not return within ${timeoutMs / 1000} s`,
        {
          hint: "Run the sign-in again, or use the device code flow (it works without a local browser)",
        },
      ),
    );
  }, timeoutMs);
  const onAbort = () => settle.reject(signal!.reason);
  signal?.addEventListener("abort", onAbort, { once: true });

  try {
    const url = new URL(authority.server.authorization_endpoint!);
    url.searchParams.set("client_id", options.clientId);
    url.searchParams.set("response_type", "code");
    url.searchParams.set("redirect_uri", redirectUri);
    url.searchParams.set("response_mode", "query");
    url.searchParams.set("scope", options.scopes.join(" "));
    url.searchParams.set("state", state);
    url.searchParams.set("code_challenge", challenge);
    url.searchParams.set("code_challenge_method", "S256");
    url.searchParams.set("prompt", options.prompt ?? "select_account");
    if (options.loginHint !== undefined) url.searchParams.set("login_hint", options.loginHint);

    options.notify?.(`Opening the browser to sign in. If it does not open, visit:\n${url.href}`);
    openBrowser(url.href).catch((error) => {
      options.notify?.(
        `Could not open a browser (${
          error instanceof Error ? error.message : String(error)
        }); open the URL above by hand.`,
      );
    });

    const params = await callback;
    let validated: URLSearchParams;
    try {
      validated = oauth.validateAuthResponse(authority.server, client, params, state);
    } catch (error) {
      throw toAuthError(error, context);
    }
    try {
      const response = await oauth.authorizationCodeGrantRequest(
        authority.server,
        client,
        oauth.None(),
        validated,
        redirectUri,
        verifier,
        requestOptions(authority, signal),
      );
      return toTokenSet(
        await oauth.processAuthorizationCodeResponse(authority.server, client, response),
        now(),
      );
    } catch (error) {
      throw toAuthError(error, context);
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
    stop.abort();
    await server.finished;
  }
}

/**
 * The programs that open a URL in the default browser, per OS, by absolute path: a name looked up
 * on `PATH` would run whatever program of that name comes first there (issue 13, item 11).
 * `xdg-open` (Linux, BSD; xdg-utils, which FreeBSD and OpenBSD install under /usr/local), `open`
 * (macOS), and on Windows `%SystemRoot%\System32\rundll32.exe url.dll,FileProtocolHandler`
 * (unlike `cmd /c start` it does not parse `&`).
 */
export function systemBrowserPrograms(os: typeof Deno.build.os = Deno.build.os): readonly string[] {
  if (os === "linux") return ["/usr/bin/xdg-open"];
  if (os === "darwin") return ["/usr/bin/open"];
  if (os === "windows") return [`${systemRoot()}\\System32\\rundll32.exe`];
  return ["/usr/bin/xdg-open", "/usr/local/bin/xdg-open"];
}

/** Options of {@link openSystemBrowser}: seams for tests. */
export interface OpenSystemBrowserOptions {
  /** @default Deno.build.os */
  readonly os?: typeof Deno.build.os;
  /** Absolute paths to try in order, the first installed one wins. @default systemBrowserPrograms(os) */
  readonly programs?: readonly string[];
}

/**
 * Opens `url` in the system's default browser with the first of {@link systemBrowserPrograms}
 * that is installed. Needs Deno's run permission for that path (`--allow-run=/usr/bin/xdg-open`);
 * it needs no read permission (a missing program is known from the failed start).
 *
 * @throws {Error} when none of the programs is installed (naming the paths looked at), when
 * running it is not permitted, or when it fails.
 */
export async function openSystemBrowser(url: string, options: OpenSystemBrowserOptions = {}): Promise<void> {
  const os = options.os ?? Deno.build.os;
  const programs = options.programs ?? systemBrowserPrograms(os);
  const args = os === "windows" ? ["url.dll,FileProtocolHandler", url] : [url];
  for (const program of programs) {
    if (!isAbsolute(program)) {
      throw new TypeError(`Cannot open a browser with "${program}": only absolute paths are run`);
    }
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(program, { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    const status = await child.status;
    if (!status.success) throw new Error(`${program} exited with code ${status.code}`);
    return;
  }
  throw new Error(
    `no browser opener is installed (looked for ${programs.join(", ")}); ${
      os === "windows" || os === "darwin" ? "" : "install xdg-utils, or "
    }sign in with --sign-in device-code`,
  );
}

/** `%SystemRoot%` when it is readable and looks like a Windows folder, else `C:\Windows`. */
function systemRoot(): string {
  try {
    const root = Deno.env.get("SystemRoot");
    if (root !== undefined && /^[A-Za-z]:\\[^;"]*$/.test(root)) return root.replace(/\\+$/, "");
  } catch {
    // No env permission for SystemRoot: the default location.
  }
  return "C:\\Windows";
}

function isAbsolute(path: string): boolean {
  return path.startsWith("/") || /^[A-Za-z]:\\/.test(path);
}

function page(status: number, title: string, text: string): Response {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>` +
    `<body><h1>${title}</h1><p>${text}</p></body></html>`;
  return new Response(html, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
    },
  });
}
