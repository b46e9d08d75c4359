/**
 * Sign-in with the OAuth 2.0 device authorization grant (RFC 8628) as the Microsoft identity
 * platform implements it (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code):
 * the tool shows a code and a URL, the admin signs in on any browser (another machine too, so it
 * works over SSH), and the tool polls the token endpoint until the sign-in is done.
 *
 * Polling follows the page's "Expected errors": `authorization_pending` → wait `interval` and
 * poll again; `slow_down` → add five seconds to the interval (RFC 8628 §3.5);
 * `authorization_declined`, `expired_token`, `bad_verification_code` end the flow.
 *
 * The app registration needs "Allow public client flows" on (the device code flow is a public
 * client flow), or the token endpoint answers AADSTS7000218.
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { z } from "zod";
import { type Authority, requestOptions } from "./discovery.ts";
import { EntraAuthError, toAuthError } from "./errors.ts";
import { type TokenSet, toTokenSet } from "./tokens.ts";
import { sleep } from "../../../core/sleep.ts";

/** What the admin must do, passed to `notify` besides the ready-made text. */
export interface DeviceCodePrompt {
  /** The code to type in. */
  readonly userCode: string;
  /** Where to type it. */
  readonly verificationUri: string;
  /** When the code stops working (epoch milliseconds). */
  readonly expiresAt: number;
}

/** Options of {@link signInWithDeviceCode}. */
export interface DeviceCodeOptions {
  readonly authority: Authority;
  readonly clientId: string;
  /** Scopes to ask for, resource-qualified (see `delegatedScopes` in tokens.ts). */
  readonly scopes: readonly string[];
  /**
   * Shows the sign-in instructions to the admin (stderr of the CLI). `text` is Microsoft's
   * `message` when it sent one (localized, naming URL and code).
   */
  readonly notify: (text: string, prompt: DeviceCodePrompt) => void;
  readonly signal?: AbortSignal;
  /**
   * Clock in epoch milliseconds (expiry of the code and of the tokens).
   * @default Date.now
   */
  readonly now?: () => number;
  /**
   * Waits between polls: the clock seam, with {@link now}. Must reject when `signal` aborts.
   * @default a timer
   */
  readonly sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

/** The device authorization response fields we read besides oauth4webapi's (Microsoft's `message`). */
const deviceAuthorizationExtras = z.object({ message: z.string().max(2000).optional() });

/**
 * Runs the device code flow to the end and returns the tokens.
 *
 * @throws {EntraAuthError} `auth-declined` when the admin declined, `auth-expired` when the
 * code expired first, `auth-failed`/`auth-consent-required` for what the token endpoint refused,
 * `auth-unreachable` when it could not be reached. An abort rejects with the signal's reason.
 */
export async function signInWithDeviceCode(options: DeviceCodeOptions): Promise<TokenSet> {
  const { authority, signal } = options;
  const now = options.now ?? Date.now;
  const wait = options.sleep ?? sleep;
  const client: oauth.Client = { client_id: options.clientId };
  const clientAuth = oauth.None();
  const context = {
    action: `sign in to tenant "${authority.tenant}" with the device code flow`,
    authority: authority.cloud.loginBase,
    tenant: authority.tenant,
    clientId: options.clientId,
    scopes: options.scopes,
  };
  if (authority.server.device_authorization_endpoint === undefined) {
    throw new EntraAuthError(
      "auth-failed",
      `Cannot ${context.action}: the tenant's OpenID configuration names no device authorization endpoint`,
      { hint: "Use the browser sign-in (--login) instead" },
    );
  }

  let started: oauth.DeviceAuthorizationResponse;
  try {
    const response = await oauth.deviceAuthorizationRequest(
      authority.server,
      client,
      clientAuth,
      { scope: options.scopes.join(" ") },
      requestOptions(authority, signal),
    );
    started = await oauth.processDeviceAuthorizationResponse(authority.server, client, response);
  } catch (error) {
    throw toAuthError(error, context);
  }
  const expiresAt = now() + started.expires_in * 1000;
  const extras = deviceAuthorizationExtras.safeParse(started);
  const prompt: DeviceCodePrompt = {
    userCode: started.user_code,
    verificationUri: started.verification_uri,
    expiresAt,
  };
  options.notify(
    (extras.success ? extras.data.message : undefined) ??
      `To sign in, open ${started.verification_uri} in a browser and enter the code ${started.user_code}`,
    prompt,
  );

  let intervalMs = Math.max(1, started.interval ?? 5) * 1000;
  for (;;) {
    await wait(intervalMs, signal);
    if (now() >= expiresAt) {
      throw new EntraAuthError(
        "auth-expired",
        `Cannot ${context.action}: the code ${started.user_code} expired before the sign-in was finished`,
        { hint: "Run the sign-in again and finish it within the time shown" },
      );
    }
    try {
      const response = await oauth.deviceCodeGrantRequest(
        authority.server,
        client,
        clientAuth,
        started.device_code,
        requestOptions(authority, signal),
      );
      return toTokenSet(await oauth.processDeviceCodeResponse(authority.server, client, response), now());
    } catch (error) {
      if (error instanceof oauth.ResponseBodyError) {
        if (error.error === "authorization_pending") continue;
        if (error.error === "slow_down") {
          intervalMs += 5000;
          continue;
        }
      }
      throw toAuthError(error, context);
    }
  }
}
