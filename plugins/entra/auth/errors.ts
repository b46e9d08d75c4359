/**
 * Sign-in failures as errors an admin can act on.
 *
 * Microsoft's token and device-code endpoints answer failures with an OAuth 2.0 error body that
 * carries, besides `error` and `error_description`, the numeric `error_codes` of the Microsoft
 * Entra security token service (the "AADSTS" codes). The description starts with that code and
 * its sentence and ends with trace and correlation ids. We keep the code and the sentence, add
 * a hint for the codes an admin meets while setting the tool up (wrong secret, app not in the
 * tenant, consent missing, public client flows off, …), and never put a secret, a token or an
 * authorization code into the message.
 *
 * - Error body: https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#error-response-1
 * - AADSTS codes: https://learn.microsoft.com/entra/identity-platform/reference-error-codes
 * - Admin consent URL: https://learn.microsoft.com/entra/identity-platform/v2-admin-consent
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import { z } from "zod";
import { ProvisioningError } from "../../../core/errors.ts";

/**
 * Reason codes of {@link EntraAuthError}:
 * - `auth-failed`: the identity platform refused (wrong secret, unknown app, bad certificate, …)
 * - `auth-consent-required`: the permissions were never consented to in the tenant
 * - `auth-declined`: the person at the browser or device page said no
 * - `auth-expired`: the device code ran out, or the cached sign-in can no longer be refreshed
 * - `auth-timeout`: nobody finished the browser sign-in in time
 * - `auth-unreachable`: the sign-in endpoint could not be reached or answered garbage
 * - `not-signed-in`: there is no cached sign-in and the flow may not prompt
 * - `tenant-not-found`: no tenant has that id or domain
 * - `insecure-authority`: an `http://` authority that is not the loopback sandbox
 * - `unauthorized`: Graph refused a newly issued token too (the reason code Graph's own 401 has,
 *   so a run halts on it the same way)
 */
export type EntraAuthErrorCode =
  | "auth-failed"
  | "auth-consent-required"
  | "auth-declined"
  | "auth-expired"
  | "auth-timeout"
  | "auth-unreachable"
  | "not-signed-in"
  | "tenant-not-found"
  | "insecure-authority"
  | "unauthorized";

/**
 * A sign-in failure. Callers branch on `code`; `aadsts` keeps Microsoft's error code
 * (`AADSTS7000215`) for the log and for support tickets.
 */
export class EntraAuthError extends ProvisioningError {
  /** Microsoft's `AADSTS…` error code, when the identity platform sent one. */
  readonly aadsts: string | undefined;
  /** The OAuth 2.0 `error` value (`invalid_client`, `invalid_grant`, …), when there was one. */
  readonly oauthError: string | undefined;
  /** The endpoint that answered (no query string), when there was one. */
  readonly endpoint: string | undefined;

  constructor(
    code: EntraAuthErrorCode,
    message: string,
    options: {
      cause?: unknown;
      hint?: string;
      aadsts?: string;
      oauthError?: string;
      endpoint?: string;
      exitCode?: number;
    } = {},
  ) {
    super(code, message, options);
    this.aadsts = options.aadsts;
    this.oauthError = options.oauthError;
    this.endpoint = options.endpoint;
  }
}

/** The error body of Microsoft's token endpoints, as far as we read it. */
const microsoftErrorBody = z.object({
  error: z.string().optional(),
  error_description: z.string().optional(),
  error_codes: z.array(z.number()).optional(),
  suberror: z.string().optional(),
});

/** What {@link toAuthError} needs to write a useful message and hint. */
export interface AuthErrorContext {
  /** What was being done, for "Cannot <action>": e.g. `sign in with the device code flow`. */
  readonly action: string;
  /** The login host's base URL (`https://login.microsoftonline.com`), for the admin-consent URL. */
  readonly authority: string;
  /** The tenant as configured (id or domain). */
  readonly tenant: string;
  /** The application (client) id. */
  readonly clientId: string;
  /** Scopes that were asked for, for the admin-consent URL. */
  readonly scopes?: readonly string[];
  /** Where the client secret came from, named in the hint for a wrong secret. */
  readonly secretSource?: string;
  /** Where the certificate came from, named in the hint for a refused assertion. */
  readonly certificateSource?: string;
  /** Values that must never appear in a message (the client secret). */
  readonly secrets?: readonly string[];
}

/**
 * Turns whatever a sign-in step threw (an oauth4webapi error carrying Microsoft's error body, a
 * refused connection, a malformed answer) into an {@link EntraAuthError}. ProvisioningErrors
 * pass through unchanged; an abort is re-thrown as it is, so Ctrl+C stays Ctrl+C.
 */
export function toAuthError(error: unknown, context: AuthErrorContext): unknown {
  if (error instanceof ProvisioningError) return error;
  if (error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError")) {
    return error;
  }
  if (error instanceof oauth.ResponseBodyError) {
    const body = microsoftErrorBody.safeParse(error.cause);
    const description = body.success ? body.data.error_description : error.error_description;
    const codes = body.success ? body.data.error_codes : undefined;
    return fromOAuthError(
      {
        error: error.error,
        description,
        aadsts: codes?.[0] === undefined ? aadstsIn(description) : `AADSTS${codes[0]}`,
        endpoint: endpointOf(error.response.url),
        status: error.status,
      },
      context,
      error,
    );
  }
  if (error instanceof oauth.AuthorizationResponseError) {
    return fromOAuthError(
      {
        error: error.error,
        description: error.error_description,
        aadsts: aadstsIn(error.error_description),
      },
      context,
      error,
    );
  }
  if (error instanceof oauth.OperationProcessingError || error instanceof oauth.UnsupportedOperationError) {
    return new EntraAuthError(
      "auth-unreachable",
      `Cannot ${context.action}: the identity platform's answer was not understood (${
        redact(error.message, context.secrets)
      })`,
      {
        cause: error,
        hint: "Check that the authority URL points at a Microsoft identity platform (or the sandbox)",
      },
    );
  }
  if (error instanceof TypeError && !isArgumentError(error)) {
    return new EntraAuthError(
      "auth-unreachable",
      `Cannot ${context.action}: ${context.authority} is unreachable (${
        redact(error.message, context.secrets)
      })`,
      {
        cause: error,
        hint:
          "Check the network, the proxy and the cloud setting; with --sandbox, that the sandbox is running",
      },
    );
  }
  return error;
}

/** oauth4webapi's own argument checks throw TypeErrors with an `ERR_…` code: bugs, not outages. */
function isArgumentError(error: TypeError): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && code.startsWith("ERR_");
}

interface OAuthFailure {
  readonly error: string;
  readonly description: string | undefined;
  readonly aadsts: string | undefined;
  readonly endpoint?: string | undefined;
  readonly status?: number | undefined;
}

function fromOAuthError(failure: OAuthFailure, context: AuthErrorContext, cause: unknown): EntraAuthError {
  const summary = summarize(failure.description, context.secrets) ?? failure.error;
  const message = `Cannot ${context.action}: ${summary}`;
  const { code, hint } = classify(failure, context);
  const options: ConstructorParameters<typeof EntraAuthError>[2] = {
    cause: redactedCause(cause, context.secrets),
    oauthError: failure.error,
  };
  if (hint !== undefined) options.hint = hint;
  if (failure.aadsts !== undefined) options.aadsts = failure.aadsts;
  if (failure.endpoint !== undefined) options.endpoint = failure.endpoint;
  return new EntraAuthError(code, message, options);
}

/**
 * Picks the reason code and hint: from the AADSTS number when it is one the reference lists with
 * a cure an admin can apply, else from the OAuth `error`, which Microsoft says is the field to
 * react to (the reference's "Handling error codes in your application").
 *
 * Every number below is checked against the AADSTS table of "Microsoft Entra authentication and
 * authorization error codes" (https://learn.microsoft.com/entra/identity-platform/reference-error-codes,
 * source MicrosoftDocs/entra-docs docs/identity-platform/reference-error-codes.md); the name in
 * each comment is the one that table gives. The page warns that codes change and that clients
 * must not depend on them, so a code only chooses the hint and, where its row says so plainly, a
 * more precise reason; an unknown code falls back to the OAuth `error`. Nothing here reads the
 * English of `error_description`: it is shown to the admin as Microsoft wrote it.
 */
function classify(
  failure: OAuthFailure,
  context: AuthErrorContext,
): { code: EntraAuthErrorCode; hint?: string } {
  const secretSource = context.secretSource ?? "PROVISIONING_CLIENT_SECRET";
  const certificateSource = context.certificateSource ?? "PROVISIONING_CLIENT_CERTIFICATE";
  const scopeHint =
    "A requested scope is not valid: check the permissions setting (app-only sign-in asks for https://graph.microsoft.com/.default, delegated for Graph permissions such as https://graph.microsoft.com/User.Read.All)";
  switch (failure.aadsts) {
    // "Invalid client secret is provided."
    case "AADSTS7000215":
      return {
        code: "auth-failed",
        hint:
          `Check ${secretSource}: use the secret's Value, not its Secret ID, from the app registration's "Certificates & secrets"`,
      };
    // InvalidClientSecretExpiredKeysProvided
    case "AADSTS7000222":
      return {
        code: "auth-failed",
        hint:
          `The client secret has expired: create a new one in the app registration and update ${secretSource}`,
      };
    // UnauthorizedClient_DoesNotMatchRequest: the application wasn't found in the directory/tenant.
    case "AADSTS700016":
      return {
        code: "auth-failed",
        hint:
          `Check PROVISIONING_CLIENT_ID ("${context.clientId}") and the tenant ("${context.tenant}"): the app must be registered in that tenant or consented to by its admin`,
      };
    // UserDeclinedConsent
    case "AADSTS65004":
      return {
        code: "auth-declined",
        hint: "The consent prompt was declined: run the sign-in again and accept it",
      };
    // DelegationDoesNotExist: the user or administrator hasn't consented.
    case "AADSTS65001":
      return {
        code: "auth-consent-required",
        hint: `An admin of the tenant grants consent at ${adminConsentUrl(context)}`,
      };
    // InvalidTenantName: the tenant name wasn't found. (AADSTS90023 is InvalidRequest, a
    // malformed request, not an unknown tenant: it falls through to invalid_request.)
    case "AADSTS90002":
      return {
        code: "tenant-not-found",
        hint:
          `Check --tenant ("${context.tenant}"): give the tenant id (a GUID) or one of its verified domains, in the cloud it belongs to (--cloud)`,
      };
    // "The request body must contain ... 'client_assertion' or 'client_secret'": the app is not a
    // public client. Cure from https://learn.microsoft.com/troubleshoot/entra/entra-id/app-integration/confidential-client-application-authentication-error-aadsts7000218
    case "AADSTS7000218":
      return {
        code: "auth-failed",
        hint:
          `Turn on "Allow public client flows" in the app registration's Authentication page, or set ${secretSource} for an unattended run`,
      };
    // InvalidReplyTo: the reply address doesn't match the app's.
    case "AADSTS50011":
      return {
        code: "auth-failed",
        hint:
          `Add "http://localhost" as a redirect URI of the "Mobile and desktop applications" platform in the app registration`,
      };
    // "Client assertion failed signature validation."
    case "AADSTS700027":
      return {
        code: "auth-failed",
        hint:
          `Upload the certificate of ${certificateSource} to the app registration's "Certificates & secrets", and check that the private key belongs to it`,
      };
    // InvalidScope; InvalidMultipleResourcesScope (scopes of more than one resource);
    // InvalidResourcelessScope (a scope that names no resource): scope problems, not certificate
    // ones. (AADSTS700024, which a certificate sign-in with a wrong clock is reported to get, is
    // not in the reference: it gets the invalid_client hint, with Microsoft's own sentence.)
    case "AADSTS70011":
    case "AADSTS700022":
    case "AADSTS700023":
      return { code: "auth-failed", hint: scopeHint };
    // EntitlementGrantsNotFound: the user isn't assigned to a role for the app.
    case "AADSTS50105":
      return {
        code: "auth-declined",
        hint: "The app requires user assignment: assign this admin to the enterprise application",
      };
    // BlockedByConditionalAccess
    case "AADSTS53003":
      return {
        code: "auth-declined",
        hint: "A Conditional Access policy blocked the sign-in: ask the tenant's admins which policy applies",
      };
    // BadTokenDueToSignInFrequency; ExpiredOrRevokedGrant; ExpiredOrRevokedGrantInactiveToken;
    // FreshTokenNeeded (tokens revoked); a SPA's refresh token past its fixed lifetime.
    case "AADSTS70043":
    case "AADSTS70008":
    case "AADSTS700082":
    case "AADSTS50173":
    case "AADSTS700084":
      return { code: "auth-expired", hint: "Sign in again: provisioning login" };
    // InvalidGrant: the refresh token isn't valid.
    case "AADSTS70000":
      return { code: "auth-failed", hint: "The grant is invalid or was already used: sign in again" };
    // UnauthorizedClientApplicationDisabled
    case "AADSTS7000112":
      return {
        code: "auth-failed",
        hint: "The application is disabled in this tenant: an admin must enable it",
      };
  }
  // The OAuth 2.0 `error` values (RFC 6749 §5.2 and the reference's table of common ones).
  switch (failure.error) {
    case "access_denied":
    case "authorization_declined":
      return { code: "auth-declined", hint: "Run the sign-in again and accept the request" };
    case "expired_token":
      return { code: "auth-expired", hint: "The code expired before the sign-in was finished: run it again" };
    case "invalid_grant":
      return { code: "auth-expired", hint: "Sign in again: provisioning login" };
    case "consent_required":
      return {
        code: "auth-consent-required",
        hint: `An admin of the tenant grants consent at ${adminConsentUrl(context)}`,
      };
    case "invalid_client":
    case "unauthorized_client":
      return {
        code: "auth-failed",
        hint: `Check PROVISIONING_CLIENT_ID ("${context.clientId}") and the app's credentials`,
      };
    case "invalid_scope":
      return { code: "auth-failed", hint: scopeHint };
    case "invalid_request":
      return {
        code: "auth-failed",
        hint:
          "The identity platform found the request malformed: check the tenant, client id and cloud settings; if they are right, report it with the AADSTS code",
      };
  }
  return { code: "auth-failed" };
}

/**
 * The URL where a tenant admin grants the app's permissions for the whole tenant (the v2.0
 * admin-consent endpoint), with `.default` of the resource the scopes belong to.
 *
 * @example
 * ```ts
 * import { adminConsentUrl } from "./errors.ts";
 * const url = adminConsentUrl({
 *   authority: "https://login.microsoftonline.com",
 *   tenant: "contoso.com",
 *   clientId: "00001111-aaaa-2222-bbbb-3333cccc4444",
 * });
 * console.assert(url.startsWith("https://login.microsoftonline.com/contoso.com/v2.0/adminconsent?client_id="));
 * ```
 */
export function adminConsentUrl(
  context: Pick<AuthErrorContext, "authority" | "tenant" | "clientId" | "scopes">,
): string {
  const url = new URL(
    `${encodeURIComponent(context.tenant)}/v2.0/adminconsent`,
    context.authority.endsWith("/") ? context.authority : `${context.authority}/`,
  );
  url.searchParams.set("client_id", context.clientId);
  url.searchParams.set("scope", `${resourceOf(context.scopes)}/.default`);
  return url.href;
}

/** The resource (`https://graph.microsoft.com`) the scopes are for; Graph when they name none. */
function resourceOf(scopes: readonly string[] | undefined): string {
  for (const scope of scopes ?? []) {
    const match = /^(https?:\/\/[^/]+)\//.exec(scope);
    if (match?.[1] !== undefined) return match[1];
  }
  return "https://graph.microsoft.com";
}

/**
 * The first sentence of Microsoft's description ("AADSTS7000215: Invalid client secret
 * provided. …"), without the trace and correlation ids and timestamps that follow, and with any
 * secret replaced by `[redacted]`.
 */
function summarize(
  description: string | undefined,
  secrets: readonly string[] | undefined,
): string | undefined {
  if (description === undefined || description.trim() === "") return undefined;
  const firstLine = description.split(/\r?\n/)[0]!.replace(/\s*Trace ID:.*$/i, "").trim();
  const clipped = firstLine.length > 400 ? `${firstLine.slice(0, 400)}…` : firstLine;
  return redact(clipped, secrets).replace(/\.$/, "");
}

function aadstsIn(text: string | undefined): string | undefined {
  return text === undefined ? undefined : /\bAADSTS\d+\b/.exec(text)?.[0];
}

function endpointOf(url: string): string | undefined {
  if (url === "") return undefined;
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return undefined;
  }
}

/**
 * The cause kept on an error: its name, message and stack with the secrets redacted, and not the
 * error body oauth4webapi attaches (which `--verbose` would print, and which can echo the request).
 */
function redactedCause(cause: unknown, secrets: readonly string[] | undefined): Error {
  const original = cause instanceof Error ? cause : new Error(String(cause));
  const copy = new Error(redact(original.message, secrets));
  copy.name = original.name;
  copy.stack = redact(original.stack ?? "", secrets);
  return copy;
}

/** Replaces every occurrence of each secret (4 characters or more) with `[redacted]`. */
export function redact(text: string, secrets: readonly string[] | undefined): string {
  let out = text;
  for (const secret of secrets ?? []) {
    if (secret.length >= 4) out = out.split(secret).join("[redacted]");
  }
  return out;
}
