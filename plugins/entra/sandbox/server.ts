/**
 * The sandbox server: one loopback HTTP (or HTTPS) endpoint that answers as both
 * `login.microsoftonline.com` (OAuth, from `oauth.ts`) and `graph.microsoft.com` (from `graph.ts`),
 * with throttling, fault injection and an inspection endpoint for tests.
 *
 * Paths:
 * - `/{tenant}/oauth2/v2.0/*`, `/{tenant}/v2.0/.well-known/openid-configuration`, … — `oauth.ts`.
 * - `/v1.0/*`, `/beta/*` — Microsoft Graph (`graph.ts`), after the bearer token is verified.
 * - `GET /_sandbox/inspect` — who has which passkeys and TAPs, call counts per route, 429s, faults.
 * - `POST /_sandbox/policy` — `{ fido2?, temporaryAccessPass?, trustAttestationRoots?,
 *   clearTrustedAttestationRoots? }`: changes the method policies at run time.
 * - `POST /_sandbox/throttle`, `POST /_sandbox/faults` — change limits and faults at run time.
 * - `/login`, `/{tenant}/fido/create`, `/mysignins/security-info`, `/mysignins/register`,
 *   `/mysignins/api/*` — the web pages of the browser path (`pages.ts`): sign-in with a Temporary
 *   Access Pass and the Security info wizard, the ceremony page on `login.microsoft.com`.
 *
 * The `_sandbox` paths have no Microsoft counterpart and no authentication: the sandbox listens
 * on loopback only.
 *
 * Every Graph answer carries `request-id`, `client-request-id` (the caller's, echoed, or a new
 * one) and `x-ms-ags-diagnostic`, as Graph's do (https://learn.microsoft.com/en-us/graph/errors).
 *
 * Connections pass through a small TCP (or TLS) front so that a "reset" fault really closes the
 * client's connection before any answer, which `Deno.serve` alone cannot do.
 *
 * @example
 * ```ts ignore
 * await using sandbox = await startSandbox({ users: 10 });
 * console.log(sandbox.url, sandbox.app.clientId, sandbox.admin.userPrincipalName);
 * ```
 *
 * @module
 */
import { z } from "zod";
import { x509 } from "../../../core/x509.ts";
import { createGraphApi, type GraphApi, graphContentType, graphError, type RequestIds } from "./graph.ts";
import { createSignInPages, type SignInPages } from "./pages.ts";
import {
  createOAuthServer,
  type OAuthServer,
  type OAuthServerOptions,
  OAuthTokenError,
  type SandboxAccount,
  type SandboxApp,
} from "./oauth.ts";
import {
  type Fido2Policy,
  fido2PolicyPatchSchema,
  type SeededTenant,
  seedTenant,
  type TapPolicy,
  tapPolicyPatchSchema,
  type TenantState,
  type WebAuthnSettings,
} from "./tenant.ts";
import {
  FaultInjector,
  type FaultPatch,
  faultPatchSchema,
  serverErrorResponse,
  Throttle,
  type ThrottlePatch,
  throttlePatchSchema,
  tooManyRequests,
} from "./throttle.ts";

/** Delegated Graph permissions the sandbox tenant has consented to for interactive sign-ins. */
export const defaultDelegatedScopes = [
  "User.Read",
  "User.Read.All",
  "GroupMember.Read.All",
  "Policy.Read.All",
  "UserAuthenticationMethod.ReadWrite.All",
  "UserAuthMethod-Passkey.ReadWrite.All",
];

/** Options of {@link startSandbox}. */
export interface SandboxOptions {
  /** TCP port; 0 picks a free one. @default 0 */
  port?: number;
  /** Address to listen on. @default "127.0.0.1" */
  hostname?: string;
  /**
   * Serve HTTPS: with the given PEM certificate and key, or `true` for a self-signed certificate
   * for `localhost` and `127.0.0.1` made at start (see {@link Sandbox.certificate}).
   */
  tls?: { cert: string; key: string } | true;
  /** Regular users to seed. @default 25 */
  users?: number;
  /** Seeds ids and names (and secrets when `secrets` is "seeded"). @default 1 */
  seed?: number;
  /** @default "random" */
  secrets?: "random" | "seeded";
  /** The tenant's domain. @default "contoso.sandbox" */
  domain?: string;
  /** Throttling limits (Microsoft's by default). */
  throttle?: ThrottlePatch;
  /** Fault injection (none by default). */
  faults?: FaultPatch;
  /**
   * rp id, origins and the variation of creationOptions (excludeCredentials encoding, timeouts,
   * challenge sizes). The defaults are production's: rp id `login.microsoft.com`, origin
   * `https://login.microsoft.com`, every variant in turn (see tenant.ts).
   */
  webauthn?: Partial<WebAuthnSettings>;
  /**
   * Whose relying party the sandbox plays.
   *
   * - `"entra"` (default): Entra's, exactly as production: rp id `login.microsoft.com`, and a
   *   registration's clientDataJSON must carry origin `https://login.microsoft.com`, which every
   *   real client sends for that rp id (WebAuthn L3 §5.1.3: the origin is the caller's; the rp id
   *   a registrable suffix of its host).
   * - `"loopback"`: the sandbox's own host as rp id and its own URL as the only origin. Only for a
   *   test whose ceremony runs in a browser on a page the sandbox itself serves, where the page's
   *   origin is the sandbox's; it overrides `webauthn.rpId` and `webauthn.origins`.
   *
   * @default "entra"
   */
  relyingParty?: "entra" | "loopback";
  /**
   * How the Passkey (FIDO2) policy is served: migrated to passkey profiles, or the legacy shape
   * (see tenant.ts). @default "passkeyProfiles"
   */
  fido2PolicyShape?: "passkeyProfiles" | "legacy";
  /** Extra apps and accounts, other delegated scopes, token lifetimes. */
  oauth?: {
    apps?: SandboxApp[];
    accounts?: SandboxAccount[];
    delegatedScopes?: string[];
  } & Omit<OAuthServerOptions, "baseUrl" | "tenant" | "now">;
  /** The clock of the tenant, OAuth and throttling (ms since the epoch). @default Date.now */
  now?: () => number;
}

/** What `GET /_sandbox/inspect` answers. */
export interface Inspection {
  tenantId: string;
  domain: string;
  users: Array<{
    id: string;
    userPrincipalName: string;
    passkeys: Array<{
      id: string;
      displayName: string;
      aaGuid: string;
      attestationLevel: string;
      verified: boolean;
      createdDateTime: string;
    }>;
    temporaryAccessPass: null | {
      id: string;
      isUsable: boolean;
      methodUsabilityReason: string;
      isUsableOnce: boolean;
      lifetimeInMinutes: number;
    };
  }>;
  temporaryAccessPassesOutstanding: number;
  pendingChallenges: number;
  /** Graph calls by route, e.g. `GET /v1.0/users/{id}`. */
  calls: Record<string, number>;
  callsTotal: number;
  throttled: { total: number; byScope: Record<string, number> };
  faults: { serverErrors: number; resets: number; lostResponses: number; slow: number };
  policies: { fido2: Fido2Policy; temporaryAccessPass: TapPolicy };
}

/** A running sandbox. */
export interface Sandbox extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:41234`: Graph at `${url}/v1.0`, OAuth at `${url}/${tenantId}/oauth2/v2.0`. */
  url: string;
  tenant: TenantState;
  tenantId: string;
  domain: string;
  /** The default app registration (client credentials). */
  app: { clientId: string; clientSecret: string };
  /** The Authentication Administrator account. */
  admin: { userPrincipalName: string; password: string };
  /** Everything seeded: other apps and accounts, group ids, the on-premises-only account. */
  seeded: SeededTenant;
  throttle: Throttle;
  faults: FaultInjector;
  oauth: OAuthServer;
  graph: GraphApi;
  /** The PEM certificate served when `tls: true` made one (trust it as a CA). */
  certificate?: string;
  /** The Security info page of the browser path (`${url}/mysignins/security-info`). */
  securityInfoUrl: string;
  /** The browser path's pages: their variant per user and where the ceremony page is (pages.ts). */
  pages: SignInPages;
  inspect(): Inspection;
  close(): Promise<void>;
}

/** Starts a sandbox; see the module documentation. */
export async function startSandbox(options: SandboxOptions = {}): Promise<Sandbox> {
  const now = options.now ?? Date.now;
  const seeded = seedTenant({
    users: options.users ?? 25,
    seed: options.seed ?? 1,
    secrets: options.secrets ?? "random",
    ...(options.domain ? { domain: options.domain } : {}),
    ...(options.webauthn ? { webauthn: options.webauthn } : {}),
    now,
  });
  const tenant = seeded.tenant;
  if (options.fido2PolicyShape) tenant.fido2PolicyShape = options.fido2PolicyShape;
  const hostname = options.hostname ?? "127.0.0.1";

  let tls: { cert: string; key: string } | undefined;
  let certificate: string | undefined;
  if (options.tls === true) {
    tls = await selfSignedCertificate();
    certificate = tls.cert;
  } else if (options.tls) {
    tls = options.tls;
  }

  const { apps: extraApps, accounts: extraAccounts, delegatedScopes, ...oauthOptions } = options.oauth ?? {};
  tenant.apps.push(...(extraApps ?? []));
  tenant.accounts.push(...(extraAccounts ?? []));
  let baseUrl = "";
  const oauth = createOAuthServer({
    ...oauthOptions,
    baseUrl: () => baseUrl,
    now,
    tenant: {
      tenantId: tenant.tenantId,
      domain: tenant.domain,
      apps: tenant.apps,
      accounts: tenant.accounts,
      delegatedScopes: delegatedScopes ?? defaultDelegatedScopes,
    },
  });
  const graph = createGraphApi({ tenant, baseUrl: () => baseUrl });
  const pages = createSignInPages({ tenant, baseUrl: () => baseUrl });
  const throttle = new Throttle({ settings: options.throttle ?? {}, now, userCount: () => tenant.userCount });
  const faults = new FaultInjector(options.faults ?? {});
  const calls = new Map<string, number>();
  const sleeper = new Sleeper();

  const front = new ConnectionFront(tls, hostname, options.port ?? 0);
  const inner = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request, info) => handle(request, info.remoteAddr.port),
  );
  front.upstreamPort = inner.addr.port;
  front.start();
  baseUrl = `${tls ? "https" : "http"}://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${front.port}`;
  if (options.relyingParty === "loopback") {
    const own = new URL(baseUrl);
    tenant.webauthn.rpId = own.hostname;
    tenant.webauthn.origins = [own.origin];
  }

  function inspect(): Inspection {
    const userStats = tenant.users().map((user) => {
      const tap = tenant.temporaryAccessPass(user.id);
      return {
        id: user.id,
        userPrincipalName: user.userPrincipalName,
        passkeys: tenant.fido2Methods(user.id).map((m) => ({
          id: m.id,
          displayName: m.displayName,
          aaGuid: m.aaGuid,
          attestationLevel: m.attestationLevel,
          verified: m.verified,
          createdDateTime: m.createdDateTime,
        })),
        temporaryAccessPass: tap
          ? {
            id: tap.id,
            ...tenant.tapUsability(tap),
            isUsableOnce: tap.isUsableOnce,
            lifetimeInMinutes: tap.lifetimeInMinutes,
          }
          : null,
      };
    });
    const throttleStats = throttle.stats;
    return {
      tenantId: tenant.tenantId,
      domain: tenant.domain,
      users: userStats,
      temporaryAccessPassesOutstanding: tenant.temporaryAccessPasses().length,
      pendingChallenges: tenant.pendingChallenges,
      calls: Object.fromEntries(calls),
      callsTotal: [...calls.values()].reduce((a, b) => a + b, 0),
      throttled: { total: throttleStats.throttled, byScope: throttleStats.byScope },
      faults: faults.stats,
      policies: { fido2: tenant.fido2Policy, temporaryAccessPass: tenant.tapPolicy },
    };
  }

  async function handle(request: Request, connectionPort: number): Promise<Response> {
    const url = new URL(request.url);
    const requestId = crypto.randomUUID();
    const ids: RequestIds = {
      requestId,
      clientRequestId: request.headers.get("client-request-id") ?? requestId,
    };
    if (url.pathname.startsWith("/_sandbox/")) {
      const answer = await sandboxControl(request, url);
      if (answer) return answer;
    }
    const fromPages = await pages.handle(request, url);
    if (fromPages) return fromPages;
    const fromOAuth = await oauth.handle(request, url);
    if (fromOAuth) return fromOAuth;
    if (!/^\/(v1\.0|beta)(\/|$)/.test(url.pathname)) {
      return new Response(
        JSON.stringify({
          error: {
            code: "NotFound",
            message: `Cannot serve "${url.pathname}": not a Graph, OAuth or sandbox path`,
          },
        }),
        { status: 404, headers: { "content-type": "application/json" } },
      );
    }
    return withGraphHeaders(await graphRequest(request, url, ids, connectionPort), ids);
  }

  async function graphRequest(
    request: Request,
    url: URL,
    ids: RequestIds,
    connectionPort: number,
  ): Promise<Response> {
    const route = graph.route(request.method, url);
    const name = route?.name ?? `${request.method.toUpperCase()} (unrouted)`;
    calls.set(name, (calls.get(name) ?? 0) + 1);

    const fault = faults.draw();
    if (fault.delayMs > 0) await sleeper.sleep(fault.delayMs);
    if (fault.action === "reset") {
      front.abort(connectionPort);
      return new Response(null, { status: 502 });
    }
    if (fault.action === "serverError") return serverErrorResponse(fault.status, ids, now());

    let principal;
    try {
      principal = await oauth.verifyAccessToken(request.headers.get("authorization"));
      if (principal.tenantId !== tenant.tenantId) {
        throw new OAuthTokenError(
          `Access token was issued for tenant '${principal.tenantId}', not this one.`,
        );
      }
    } catch (error) {
      if (!(error instanceof OAuthTokenError)) throw error;
      await request.body?.cancel();
      // Graph's 401 (https://learn.microsoft.com/en-us/graph/errors#http-status-codes).
      return graphError(error.status, error.code, error.message, ids, now(), {
        "www-authenticate":
          `Bearer realm="", authorization_uri="${baseUrl}/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"`,
      });
    }

    let throttleHeaders: Record<string, string> = {};
    if (route) {
      const decision = throttle.admit({
        appId: principal.clientId,
        tenantId: principal.tenantId,
        method: request.method,
        template: route.template,
        url,
        write: route.write,
      });
      if (!decision.ok) {
        await request.body?.cancel();
        return tooManyRequests(decision, ids, now());
      }
      throttleHeaders = decision.headers;
    }
    const response = await graph.handle(request, url, principal, ids);
    if (fault.action === "lostResponse") {
      await response.body?.cancel();
      front.abort(connectionPort);
      return new Response(null, { status: 502 });
    }
    for (const [key, value] of Object.entries(throttleHeaders)) response.headers.set(key, value);
    return response;
  }

  function withGraphHeaders(response: Response, ids: RequestIds): Response {
    response.headers.set("request-id", ids.requestId);
    response.headers.set("client-request-id", ids.clientRequestId);
    response.headers.set(
      "x-ms-ags-diagnostic",
      JSON.stringify({
        ServerInfo: {
          DataCenter: "Sandbox",
          Slice: "E",
          Ring: "0",
          ScaleUnit: "000",
          RoleInstance: "SANDBOX",
        },
      }),
    );
    return response;
  }

  async function sandboxControl(request: Request, url: URL): Promise<Response | undefined> {
    const path = url.pathname;
    const reply = (body: unknown, status = 200) =>
      new Response(JSON.stringify(body), { status, headers: { "content-type": graphContentType } });
    if (path === "/_sandbox/inspect" && request.method === "GET") return reply(inspect());
    const changes: Record<string, (body: unknown) => unknown> = {
      "/_sandbox/policy": (body) => {
        const parsed = policyChangeSchema.parse(body);
        if (parsed.clearTrustedAttestationRoots) tenant.clearTrustedAttestationRoots();
        for (const root of parsed.trustAttestationRoots ?? []) tenant.trustAttestationRoot(root);
        if (parsed.fido2) tenant.setFido2Policy(parsed.fido2);
        if (parsed.temporaryAccessPass) tenant.setTapPolicy(parsed.temporaryAccessPass);
        return {
          fido2: tenant.fido2Policy,
          temporaryAccessPass: tenant.tapPolicy,
          trustedAttestationRoots: tenant.trustedAttestationRoots.map((c) => c.subject),
        };
      },
      "/_sandbox/throttle": (body) => throttle.configure(throttlePatchSchema.parse(body)),
      "/_sandbox/faults": (body) => faults.configure(faultPatchSchema.parse(body)),
    };
    const change = changes[path];
    if (!change) return undefined;
    if (request.method !== "POST") {
      return reply({
        error: { code: "MethodNotAllowed", message: `Cannot ${request.method} ${path}: use POST` },
      }, 405);
    }
    let body: unknown;
    try {
      body = await request.json();
    } catch {
      return reply(
        { error: { code: "BadRequest", message: `Cannot change ${path}: the body is not JSON` } },
        400,
      );
    }
    try {
      return reply(change(body));
    } catch (error) {
      const message = error instanceof z.ZodError
        ? error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ")
        : error instanceof Error
        ? error.message
        : String(error);
      return reply({ error: { code: "BadRequest", message: `Cannot change ${path}: ${message}` } }, 400);
    }
  }

  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= (async () => {
      sleeper.wakeAll();
      await front.close();
      await inner.shutdown();
    })();
    return closed;
  };

  return {
    url: baseUrl,
    tenant,
    tenantId: tenant.tenantId,
    domain: tenant.domain,
    app: { clientId: seeded.app.clientId, clientSecret: seeded.app.secret },
    admin: { userPrincipalName: seeded.admin.userPrincipalName, password: seeded.admin.password },
    seeded,
    throttle,
    faults,
    oauth,
    graph,
    ...(certificate ? { certificate } : {}),
    securityInfoUrl: `${baseUrl}/mysignins/security-info`,
    pages,
    inspect,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The body of `POST /_sandbox/policy`. */
const policyChangeSchema = z.object({
  fido2: fido2PolicyPatchSchema.optional(),
  temporaryAccessPass: tapPolicyPatchSchema.optional(),
  /** PEM or base64 DER certificates to trust as attestation roots. */
  trustAttestationRoots: z.array(z.string().min(1)).optional(),
  clearTrustedAttestationRoots: z.boolean().optional(),
}).strict();

/** Timers that can all be cut short when the sandbox closes, so a slow fault never holds up close(). */
class Sleeper {
  #pending = new Map<ReturnType<typeof setTimeout>, () => void>();

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#pending.delete(timer);
        resolve();
      }, ms);
      this.#pending.set(timer, resolve);
    });
  }

  wakeAll(): void {
    for (const [timer, resolve] of this.#pending) {
      clearTimeout(timer);
      resolve();
    }
    this.#pending.clear();
  }
}

/**
 * The listening socket: accepts TCP (or TLS) connections and pipes each to the inner HTTP server
 * over loopback, remembering which inner connection belongs to which client so a fault can close
 * the client's connection without an answer.
 */
class ConnectionFront {
  upstreamPort = 0;
  #listener: Deno.Listener;
  #pairs = new Map<number, { client: Deno.Conn; upstream: Deno.Conn }>();
  #tasks = new Set<Promise<void>>();
  #loop: Promise<void> | undefined;
  #closing = false;

  constructor(tls: { cert: string; key: string } | undefined, hostname: string, port: number) {
    this.#listener = tls
      ? Deno.listenTls({ hostname, port, cert: tls.cert, key: tls.key })
      : Deno.listen({ hostname, port });
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  start(): void {
    this.#loop = (async () => {
      try {
        for await (const client of this.#listener) {
          const task = this.#serve(client);
          this.#tasks.add(task);
          task.finally(() => this.#tasks.delete(task));
        }
      } catch {
        // The listener was closed.
      }
    })();
  }

  async #serve(client: Deno.Conn): Promise<void> {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.upstreamPort });
    } catch {
      closeQuietly(client);
      return;
    }
    if (this.#closing) {
      closeQuietly(client);
      closeQuietly(upstream);
      return;
    }
    const key = (upstream.localAddr as Deno.NetAddr).port;
    this.#pairs.set(key, { client, upstream });
    await Promise.allSettled([
      client.readable.pipeTo(upstream.writable),
      upstream.readable.pipeTo(client.writable),
    ]);
    this.#pairs.delete(key);
    closeQuietly(client);
    closeQuietly(upstream);
  }

  /** Closes the client connection whose inner connection comes from `upstreamLocalPort`. */
  abort(upstreamLocalPort: number): void {
    const pair = this.#pairs.get(upstreamLocalPort);
    if (!pair) return;
    closeQuietly(pair.client);
    closeQuietly(pair.upstream);
  }

  async close(): Promise<void> {
    this.#closing = true;
    closeQuietly(this.#listener);
    for (const pair of this.#pairs.values()) {
      closeQuietly(pair.client);
      closeQuietly(pair.upstream);
    }
    await this.#loop;
    await Promise.allSettled([...this.#tasks]);
  }
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}

/**
 * A self-signed ECDSA P-256 certificate for `localhost` and `127.0.0.1`, valid for a day either
 * side of now plus 30 days, with its PKCS#8 key, both PEM.
 */
export async function selfSignedCertificate(): Promise<{ cert: string; key: string }> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256" } as const;
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]);
  const now = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Array.from(
      crypto.getRandomValues(new Uint8Array(8)),
      (b) => b.toString(16).padStart(2, "0"),
    )
      .join("").replace(/^[89a-f]/, "1"),
    name: "CN=provisioning sandbox",
    notBefore: new Date(now - 86_400_000),
    notAfter: new Date(now + 31 * 86_400_000),
    keys,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: "dns", value: "localhost" },
        { type: "ip", value: "127.0.0.1" },
      ]),
    ],
  });
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const body = btoa(String.fromCharCode(...pkcs8)).replace(/(.{64})/g, "$1\n").trimEnd();
  return {
    cert: certificate.toString("pem"),
    key: `-----BEGIN PRIVATE KEY-----\n${body}\n-----END PRIVATE KEY-----\n`,
  };
}
