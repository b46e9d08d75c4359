/**
 * Redeeming a refresh token for new tokens, as a public client
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#refresh-the-access-token).
 * The `scope` sent is the one first asked for; the answer carries a new refresh token, which
 * replaces the old one in the cache. An expired or revoked refresh token answers `invalid_grant`
 * (AADSTS70043, AADSTS700082, …), which becomes `auth-expired`: sign in again.
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { type Authority, requestOptions } from "./discovery.ts";
import { EntraAuthError, toAuthError } from "./errors.ts";
import { type TokenSet, toTokenSet } from "./tokens.ts";

/** Options of {@link refreshDelegatedToken}. */
export interface RefreshOptions {
  readonly authority: Authority;
  readonly clientId: string;
  /** The refresh token. Never printed. */
  readonly refreshToken: string;
  /** The scopes of the original sign-in. */
  readonly scopes: readonly string[];
  readonly signal?: AbortSignal;
  /**
   * Clock in epoch milliseconds.
   * @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Gets new tokens with the refresh token grant.
 *
 * @throws {EntraAuthError} `auth-expired` when the refresh token no longer works, the other
 * `auth-*` codes for what else the token endpoint refused.
 */
export async function refreshDelegatedToken(options: RefreshOptions): Promise<TokenSet> {
  const { authority } = options;
  const now = options.now ?? Date.now;
  const client: oauth.Client = { client_id: options.clientId };
  try {
    const response = await oauth.refreshTokenGrantRequest(
      authority.server,
      client,
      oauth.None(),
      options.refreshToken,
      {
        ...requestOptions(authority, options.signal),
        additionalParameters: { scope: options.scopes.join(" ") },
      },
    );
    return toTokenSet(await oauth.processRefreshTokenResponse(authority.server, client, response), now());
  } catch (error) {
    const mapped = toAuthError(error, {
      action: `renew the sign-in to tenant "${authority.tenant}"`,
      authority: authority.cloud.loginBase,
      tenant: authority.tenant,
      clientId: options.clientId,
      scopes: options.scopes,
      secrets: [options.refreshToken],
    });
    // Whatever Microsoft's reason (expired, revoked, already used, password changed), a refresh
    // token answered with invalid_grant is dead: the cure is a new sign-in.
    if (
      mapped instanceof EntraAuthError && mapped.oauthError === "invalid_grant" &&
      mapped.code === "auth-failed"
    ) {
      throw new EntraAuthError("auth-expired", mapped.message, {
        cause: mapped,
        hint: "Sign in again: provisioning login",
        oauthError: "invalid_grant",
        ...(mapped.aadsts === undefined ? {} : { aadsts: mapped.aadsts }),
        ...(mapped.endpoint === undefined ? {} : { endpoint: mapped.endpoint }),
      });
    }
    throw mapped;
  }
}
