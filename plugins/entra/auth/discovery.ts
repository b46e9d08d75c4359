/**
 * Finding a tenant's sign-in endpoints: the OpenID Connect discovery document of the Microsoft
 * identity platform, `{login}/{tenant}/v2.0/.well-known/openid-configuration`
 * (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc, "Find your app's OpenID
 * configuration document URI"). `{tenant}` may be the tenant id or any of its verified domains;
 * the document's `issuer` always carries the tenant id, which is how {@link discoverTenant} turns
 * a UPN's domain into a tenant id.
 *
 * It is also where the one exception to "HTTPS only" is decided: oauth4webapi refuses `http://`
 * unless told otherwise, and we tell it otherwise only for an authority on a loopback IP address
 * (the local sandbox), checking every endpoint the document names, so a document served on
 * loopback cannot send a client secret to a plain-HTTP host elsewhere.
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { z } from "zod";
import type { EntraCloud } from "../cloud.ts";
import { EntraAuthError, toAuthError } from "./errors.ts";

/**
 * The fields of the OpenID configuration document the sign-in flows read
 * (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc, "Sample response").
 */
export const openIdConfigurationSchema = z.object({
  issuer: z.url(),
  authorization_endpoint: z.url(),
  token_endpoint: z.url(),
  device_authorization_endpoint: z.url().optional(),
  jwks_uri: z.url().optional(),
  end_session_endpoint: z.url().optional(),
  tenant_region_scope: z.string().nullable().optional(),
  cloud_instance_name: z.string().optional(),
  msgraph_host: z.string().optional(),
});

/** A parsed OpenID configuration document. */
export type OpenIdConfiguration = z.infer<typeof openIdConfigurationSchema>;

/** A tenant's sign-in endpoints, ready for oauth4webapi. */
export interface Authority {
  /** The cloud whose login host this is (or the sandbox). */
  readonly cloud: EntraCloud;
  /** The tenant as configured: an id or a domain. */
  readonly tenant: string;
  /** The tenant id (a GUID), read from the document's issuer. */
  readonly tenantId: string;
  /** The discovery document. */
  readonly metadata: OpenIdConfiguration;
  /** The same, as oauth4webapi's authorization server metadata. */
  readonly server: oauth.AuthorizationServer;
  /** True only for a sandbox on a loopback IP address over `http://`. */
  readonly insecure: boolean;
  /** The fetch every request goes through (a seam for custom TLS clients). */
  readonly fetch: typeof fetch;
}

/** Options of {@link openAuthority} and {@link discoverTenant}. */
export interface DiscoveryOptions {
  /** The cloud to look in: `cloud.loginBase` is the login host. */
  readonly cloud: EntraCloud;
  /**
   * The fetch to use (e.g. one bound to a `Deno.createHttpClient` with a corporate CA).
   * @default globalThis.fetch
   */
  readonly fetch?: typeof fetch;
  readonly signal?: AbortSignal;
}

/**
 * Fetches and checks the OpenID configuration of `tenant` (an id or a verified domain).
 *
 * @throws {EntraAuthError} `tenant-not-found` when the identity platform knows no such tenant,
 * `insecure-authority` for a plain-HTTP authority that is not on a loopback IP address,
 * `auth-unreachable` when the login host cannot be reached or answers something else.
 */
export async function openAuthority(tenant: string, options: DiscoveryOptions): Promise<Authority> {
  const insecure = checkAuthorityUrl(options.cloud.loginBase);
  const doFetch = options.fetch ?? globalThis.fetch;
  const url = openIdConfigurationUrl(options.cloud.loginBase, tenant);
  const action = `discover the sign-in endpoints of tenant "${tenant}"`;
  let response: Response;
  try {
    response = await doFetch(url, {
      headers: { accept: "application/json" },
      redirect: "error",
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  } catch (error) {
    throw toAuthError(error, { action, authority: options.cloud.loginBase, tenant, clientId: "" });
  }
  let body: unknown;
  try {
    body = await response.json();
  } catch (cause) {
    throw new EntraAuthError(
      "auth-unreachable",
      `Cannot ${action}: ${url} answered ${response.status} with a body that is not JSON`,
      { cause, endpoint: url, hint: "Check the cloud setting (or the --sandbox URL)" },
    );
  }
  if (!response.ok) throw discoveryFailure(action, url, response.status, body, tenant);
  const parsed = openIdConfigurationSchema.safeParse(body);
  if (!parsed.success) {
    throw new EntraAuthError(
      "auth-unreachable",
      `Cannot ${action}: the document at ${url} lacks "${parsed.error.issues[0]?.path.join(".") ?? "?"}"`,
      { cause: parsed.error, endpoint: url, hint: "Check the cloud setting (or the --sandbox URL)" },
    );
  }
  const metadata = parsed.data;
  for (
    const endpoint of [
      metadata.token_endpoint,
      metadata.authorization_endpoint,
      metadata.device_authorization_endpoint,
    ]
  ) {
    if (endpoint !== undefined && checkAuthorityUrl(endpoint) && !insecure) {
      throw insecureAuthority(endpoint);
    }
  }
  const tenantId = tenantIdOf(metadata);
  if (tenantId === undefined) {
    throw new EntraAuthError(
      "auth-unreachable",
      `Cannot ${action}: the issuer "${metadata.issuer}" names no tenant id`,
      { endpoint: url, hint: 'Name a single tenant, not "common" or "organizations"' },
    );
  }
  const server: oauth.AuthorizationServer = {
    issuer: metadata.issuer,
    authorization_endpoint: metadata.authorization_endpoint,
    token_endpoint: metadata.token_endpoint,
    ...(metadata.device_authorization_endpoint === undefined
      ? {}
      : { device_authorization_endpoint: metadata.device_authorization_endpoint }),
    ...(metadata.jwks_uri === undefined ? {} : { jwks_uri: metadata.jwks_uri }),
  };
  return { cloud: options.cloud, tenant, tenantId, metadata, server, insecure, fetch: doFetch };
}

/**
 * The tenant id (a GUID) of the tenant that has verified `domain`, e.g. the part of a UPN after
 * the `@`, read from the issuer of its OpenID configuration. Lets `--tenant` be omitted.
 *
 * @throws {EntraAuthError} `tenant-not-found` when no tenant has that domain, and what
 * {@link openAuthority} throws.
 */
export async function discoverTenant(domain: string, options: DiscoveryOptions): Promise<string> {
  const name = domain.trim().toLowerCase();
  if (!/^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/.test(name)) {
    throw new EntraAuthError(
      "tenant-not-found",
      `Cannot discover the tenant of "${domain}": it is not a domain name`,
      { hint: "Pass --tenant with the tenant id, or a UPN such as admin@contoso.com" },
    );
  }
  return (await openAuthority(name, options)).tenantId;
}

/**
 * The domain part of a user principal name (`alice@contoso.com` → `contoso.com`), for
 * {@link discoverTenant}.
 *
 * @throws {EntraAuthError} `tenant-not-found` when the name has no `@domain`.
 * @example
 * ```ts
 * import { domainOfUpn } from "./discovery.ts";
 * console.assert(domainOfUpn("Alice@Contoso.com") === "contoso.com");
 * ```
 */
export function domainOfUpn(userPrincipalName: string): string {
  const at = userPrincipalName.lastIndexOf("@");
  const domain = at < 0 ? "" : userPrincipalName.slice(at + 1).trim().toLowerCase();
  if (domain === "") {
    throw new EntraAuthError(
      "tenant-not-found",
      `Cannot discover the tenant of "${userPrincipalName}": it has no @domain`,
      { hint: "Pass --tenant with the tenant id or domain" },
    );
  }
  return domain;
}

/** `{loginBase}/{tenant}/v2.0/.well-known/openid-configuration`. */
export function openIdConfigurationUrl(loginBase: string, tenant: string): string {
  return `${loginBase.replace(/\/+$/, "")}/${
    encodeURIComponent(tenant)
  }/v2.0/.well-known/openid-configuration`;
}

/**
 * Whether `url` may be used, and whether that needs oauth4webapi's `allowInsecureRequests`:
 * `https:` → false; `http:` on a loopback IP address (127.0.0.0/8 or ::1) → true.
 *
 * @throws {EntraAuthError} `insecure-authority` for any other `http:` URL or another scheme.
 * @example
 * ```ts
 * import { checkAuthorityUrl } from "./discovery.ts";
 * console.assert(checkAuthorityUrl("https://login.microsoftonline.com") === false);
 * console.assert(checkAuthorityUrl("http://127.0.0.1:8400") === true);
 * ```
 */
export function checkAuthorityUrl(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new EntraAuthError(
      "insecure-authority",
      `Cannot use the sign-in authority "${url}": it is not a URL`,
      {
        cause,
      },
    );
  }
  if (parsed.protocol === "https:") return false;
  if (parsed.protocol === "http:" && isLoopbackAddress(parsed.hostname)) return true;
  throw insecureAuthority(url);
}

/** True for IP literals of the loopback interface: 127.0.0.0/8 and ::1 (not the name `localhost`). */
export function isLoopbackAddress(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  const octets = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return octets !== null && octets.slice(1).every((part) => Number(part) <= 255) && octets[1] === "127";
}

/**
 * The transport options every oauth4webapi call of a flow passes: the authority's fetch, the
 * caller's signal, and `allowInsecureRequests` only for a loopback sandbox.
 */
export function requestOptions(
  authority: Authority,
  signal?: AbortSignal,
): oauth.HttpRequestOptions<"POST", URLSearchParams> {
  const options: oauth.HttpRequestOptions<"POST", URLSearchParams> = {
    [oauth.customFetch]: (url, init) => authority.fetch(url, init as RequestInit),
  };
  if (signal !== undefined) options.signal = signal;
  // Deprecated in oauth4webapi to make it stand out; used only where checkAuthorityUrl allowed it.
  if (authority.insecure) options[oauth.allowInsecureRequests] = true;
  return options;
}

function insecureAuthority(url: string): EntraAuthError {
  return new EntraAuthError(
    "insecure-authority",
    `Cannot use the sign-in authority "${url}": only https:// is allowed, or http:// on a loopback address (127.0.0.1, ::1) for a local sandbox`,
    { hint: "Use the cloud's https:// login host; for a sandbox on another machine, serve it over HTTPS" },
  );
}

/** The tenant id in the issuer (`https://login.microsoftonline.com/{tid}/v2.0`) or the token endpoint. */
function tenantIdOf(metadata: OpenIdConfiguration): string | undefined {
  const guid = /\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\/|$)/i;
  return (guid.exec(new URL(metadata.issuer).pathname) ??
    guid.exec(new URL(metadata.token_endpoint).pathname))?.[1]
    ?.toLowerCase();
}

const discoveryErrorBody = z.object({
  error: z.string().optional(),
  error_description: z.string().optional(),
  error_codes: z.array(z.number()).optional(),
});

function discoveryFailure(
  action: string,
  url: string,
  status: number,
  body: unknown,
  tenant: string,
): EntraAuthError {
  const parsed = discoveryErrorBody.safeParse(body);
  const codes = parsed.success ? parsed.data.error_codes ?? [] : [];
  const description = parsed.success ? parsed.data.error_description?.split(/\r?\n/)[0] : undefined;
  if (codes.includes(90002) || parsed.success && parsed.data.error === "invalid_tenant") {
    return new EntraAuthError(
      "tenant-not-found",
      `Cannot ${action}: no Microsoft Entra tenant has the id or domain "${tenant}"`,
      {
        aadsts: "AADSTS90002",
        endpoint: url,
        hint:
          "Check --tenant (or PROVISIONING_TENANT, or the UPN's domain): give the tenant id or a verified domain",
      },
    );
  }
  return new EntraAuthError(
    "auth-unreachable",
    `Cannot ${action}: ${url} answered ${status}${description ? ` (${description})` : ""}`,
    { endpoint: url, hint: "Check the cloud setting (or the --sandbox URL)" },
  );
}
