/**
 * Signing in as an OAuth 2.0 service app: the client credentials grant at the org authorization
 * server's token endpoint (`{org}/oauth2/v1/token`), the client authenticated with a JWT signed by
 * its private key (`private_key_jwt`), the access token sender-constrained with DPoP when the app
 * requires it (https://developer.okta.com/docs/guides/implement-oauth-for-okta-serviceapp/main/,
 * https://developer.okta.com/docs/guides/dpop/oktaresourceserver/main/, RFC 9449).
 *
 * DPoP with Okta: the first token request with a proof and no nonce is answered 400
 * `{"error":"use_dpop_nonce"}` with a `DPoP-Nonce` header; the request is sent again with a proof
 * carrying that nonce, and the token comes back with `token_type` `DPoP`. Each API request then
 * carries `Authorization: DPoP {token}` and a fresh proof for its method and URL with `ath`, the
 * token's SHA-256 (RFC 9449 §4.2, §7.1).
 *
 * @module
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";
import type { OktaCredential } from "./api.ts";
import { oktaReasons } from "./errors.ts";

/** The scopes a provisioning run needs (granted to the service app in the Admin Console). */
export const oktaScopes = ["okta.users.manage", "okta.users.read", "okta.groups.read"] as const;

/** What {@link serviceAppCredential} needs. */
export interface ServiceAppOptions {
  readonly orgUrl: string;
  readonly clientId: string;
  /** The app's private key as a JWK (`kid` is sent when present), from the Admin Console's key pair. */
  readonly privateKey: JWK;
  readonly fetch?: typeof fetch;
  /** @default Date.now */
  readonly now?: () => number;
}

/** The token endpoint's answer (RFC 6749 §5.1). */
const tokenSchema = z.object({
  access_token: z.string().min(1),
  token_type: z.string(),
  expires_in: z.number().positive(),
  scope: z.string().optional(),
});
/** An OAuth error answer (RFC 6749 §5.2). */
const oauthErrorSchema = z.object({ error: z.string(), error_description: z.string().optional() });

/**
 * A credential that gets (and renews, a minute before expiry) an access token for the service app,
 * DPoP-bound when the org asks for it. Concurrent requests share one token request.
 */
export function serviceAppCredential(options: ServiceAppOptions): OktaCredential {
  const now = options.now ?? Date.now;
  const tokenUrl = `${options.orgUrl}/oauth2/v1/token`;
  const doFetch = options.fetch ?? fetch;
  let token: { value: string; type: string; expiresAt: number } | undefined;
  let pending: Promise<{ value: string; type: string; expiresAt: number }> | undefined;
  const dpopKey = generateKeyPair("ES256", { extractable: true });
  let dpopNonce: string | undefined;

  const proof = async (method: string, url: string, accessToken?: string) => {
    const { privateKey, publicKey } = await dpopKey;
    const target = new URL(url);
    return await new SignJWT({
      htm: method,
      htu: `${target.origin}${target.pathname}`,
      jti: crypto.randomUUID(),
      ...(dpopNonce ? { nonce: dpopNonce } : {}),
      ...(accessToken ? { ath: await sha256Base64url(accessToken) } : {}),
    })
      .setProtectedHeader({ typ: "dpop+jwt", alg: "ES256", jwk: await exportJWK(publicKey) })
      .setIssuedAt(Math.floor(now() / 1000))
      .sign(privateKey);
  };

  const requestToken = async () => {
    const key = await importJWK(options.privateKey, options.privateKey.alg ?? "RS256");
    for (let attempt = 0; attempt < 2; attempt++) {
      const assertion = await new SignJWT({})
        .setProtectedHeader({
          alg: options.privateKey.alg ?? "RS256",
          ...(options.privateKey.kid ? { kid: options.privateKey.kid } : {}),
        })
        .setIssuer(options.clientId)
        .setSubject(options.clientId)
        .setAudience(tokenUrl)
        .setIssuedAt(Math.floor(now() / 1000))
        .setExpirationTime(Math.floor(now() / 1000) + 300)
        .setJti(crypto.randomUUID())
        .sign(key);
      const response = await doFetch(tokenUrl, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", DPoP: await proof("POST", tokenUrl) },
        body: new URLSearchParams({
          grant_type: "client_credentials",
          scope: oktaScopes.join(" "),
          client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
          client_assertion: assertion,
        }),
      });
      const body = await response.json().catch(() => undefined);
      if (response.ok) {
        const parsed = tokenSchema.safeParse(body);
        if (!parsed.success) break;
        return {
          value: parsed.data.access_token,
          type: parsed.data.token_type,
          expiresAt: now() + parsed.data.expires_in * 1000,
        };
      }
      const error = oauthErrorSchema.safeParse(body);
      // RFC 9449 §8: the server asks for a nonce; send the request again with it, once.
      if (error.success && error.data.error === "use_dpop_nonce" && response.headers.get("dpop-nonce")) {
        dpopNonce = response.headers.get("dpop-nonce")!;
        continue;
      }
      throw new ProvisioningError(
        oktaReasons.unauthorized,
        `Cannot sign in to ${options.orgUrl} as service app "${options.clientId}": ${
          error.success
            ? `${error.data.error}${error.data.error_description ? ` (${error.data.error_description})` : ""}`
            : `HTTP ${response.status}`
        }`,
        {
          hint:
            `Check the client id, that the app's public key matches the private key, and that it is granted ${
              oktaScopes.join(", ")
            }`,
          exitCode: 1,
        },
      );
    }
    throw new ProvisioningError(
      oktaReasons.unauthorized,
      `Cannot sign in to ${options.orgUrl} as service app "${options.clientId}": the token endpoint's answer is not a token`,
    );
  };

  const currentToken = async () => {
    if (token && token.expiresAt - 60_000 > now()) return token;
    pending ??= requestToken().finally(() => pending = undefined);
    token = await pending;
    return token;
  };

  return {
    async headers(method: string, url: string): Promise<Record<string, string>> {
      const current = await currentToken();
      if (current.type.toLowerCase() === "dpop") {
        return { Authorization: `DPoP ${current.value}`, DPoP: await proof(method, url, current.value) };
      }
      return { Authorization: `Bearer ${current.value}` };
    },
  };
}

async function sha256Base64url(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  return btoa(String.fromCharCode(...digest)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
