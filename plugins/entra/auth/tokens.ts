/**
 * What every sign-in flow hands back, and the scopes it asks for.
 *
 * Scopes (https://learn.microsoft.com/graph/permissions-reference):
 * - Passkeys: `UserAuthMethod-Passkey.ReadWrite.All` is the least privileged permission for
 *   creationOptions and `POST fido2Methods`; `UserAuthenticationMethod.ReadWrite.All` is the higher
 *   one (https://learn.microsoft.com/graph/api/authentication-post-fido2methods). The broad one is
 *   the default because the browser path also creates Temporary Access Passes, which the
 *   passkey-specific permission does not cover (`UserAuthMethod-TAP.ReadWrite.All` does,
 *   https://learn.microsoft.com/graph/api/authentication-post-temporaryaccesspassmethods).
 * - Users and groups: `User.Read.All`, `GroupMember.Read.All`; preflight: `Policy.Read.All`.
 * - `offline_access` for a refresh token
 *   (https://learn.microsoft.com/entra/identity-platform/scopes-oidc#offline_access).
 * - App-only: `{graph}/.default`, every application permission consented to the app
 *   (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
 *
 * @module
 */
import { decodeJwt } from "jose";
import type * as oauth from "oauth4webapi";
import { z } from "zod";

/** Graph permissions a delegated sign-in asks for by default (resource-qualified in requests). */
export const defaultDelegatedPermissions: readonly string[] = Object.freeze([
  "UserAuthenticationMethod.ReadWrite.All",
  "User.Read.All",
  "GroupMember.Read.All",
  "Policy.Read.All",
]);

/**
 * The `scope` of a delegated request: each Graph permission qualified with the cloud's Graph
 * base, plus `offline_access` for a refresh token.
 *
 * @example
 * ```ts
 * import { delegatedScopes } from "./tokens.ts";
 * const scopes = delegatedScopes("https://graph.microsoft.com", ["User.Read.All"]);
 * console.assert(scopes.join(" ") === "https://graph.microsoft.com/User.Read.All offline_access");
 * ```
 */
export function delegatedScopes(graphBase: string, permissions: readonly string[]): string[] {
  const base = graphBase.replace(/\/+$/, "");
  const qualified = permissions.map((name) => (/^https?:\/\//.test(name) ? name : `${base}/${name}`));
  return [...new Set([...qualified, "offline_access"])];
}

/** Tokens from one successful grant, with the absolute expiry the cache and refresh logic use. */
export interface TokenSet {
  /** The bearer token for Graph. Never logged, printed or put into an error. */
  readonly accessToken: string;
  /** Epoch milliseconds when the access token stops working. */
  readonly expiresAt: number;
  /** Present for delegated sign-ins that asked for `offline_access`. */
  readonly refreshToken?: string;
  /** What the token endpoint said it granted (`scope`), when it said. */
  readonly grantedScopes: readonly string[];
}

/**
 * Turns oauth4webapi's processed token response into a {@link TokenSet}. `expires_in` defaults
 * to an hour when absent (Microsoft always sends it; a sandbox might not).
 */
export function toTokenSet(response: oauth.TokenEndpointResponse, now: number): TokenSet {
  const lifetime = typeof response.expires_in === "number" && response.expires_in > 0
    ? response.expires_in
    : 3600;
  const set: { -readonly [K in keyof TokenSet]: TokenSet[K] } = {
    accessToken: response.access_token,
    expiresAt: now + lifetime * 1000,
    grantedScopes: typeof response.scope === "string" ? response.scope.split(/\s+/).filter(Boolean) : [],
  };
  if (typeof response.refresh_token === "string" && response.refresh_token !== "") {
    set.refreshToken = response.refresh_token;
  }
  return set;
}

/** Claims of a Microsoft access token the tool reads (never trusts: Graph decides). */
export const accessTokenClaimsSchema = z.object({
  tid: z.string().optional(),
  oid: z.string().optional(),
  upn: z.string().optional(),
  unique_name: z.string().optional(),
  preferred_username: z.string().optional(),
  name: z.string().optional(),
  appid: z.string().optional(),
  azp: z.string().optional(),
  app_displayname: z.string().optional(),
  idtyp: z.string().optional(),
  scp: z.string().optional(),
  roles: z.array(z.string()).optional(),
  wids: z.array(z.string()).optional(),
  aud: z.union([z.string(), z.array(z.string())]).optional(),
  iss: z.string().optional(),
  exp: z.number().optional(),
  iat: z.number().optional(),
});

/** The parsed claims of an access token. */
export type AccessTokenClaims = z.infer<typeof accessTokenClaimsSchema>;

/**
 * Reads an access token's claims without verifying it: Microsoft says clients must not validate
 * Graph tokens (https://learn.microsoft.com/entra/identity-platform/access-tokens), and we use
 * them only to say who signed in and what was granted. Undefined when the token is opaque.
 */
export function readAccessTokenClaims(accessToken: string): AccessTokenClaims | undefined {
  let payload: unknown;
  try {
    payload = decodeJwt(accessToken);
  } catch {
    return undefined;
  }
  const parsed = accessTokenClaimsSchema.safeParse(payload);
  return parsed.success ? parsed.data : undefined;
}

/** The signed-in account's name in a delegated token (`upn`, else `preferred_username`, `unique_name`). */
export function accountOf(claims: AccessTokenClaims | undefined): string | undefined {
  const name = claims?.upn ?? claims?.preferred_username ?? claims?.unique_name;
  return name === undefined ? undefined : name.toLowerCase();
}
