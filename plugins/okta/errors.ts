/**
 * Okta's error answers turned into ProvisioningErrors with reason codes an admin can act on.
 *
 * Okta's error object is `{errorCode, errorSummary, errorLink, errorId, errorCauses:
 * [{errorSummary}]}`; the codes and their HTTP statuses are listed at
 * https://developer.okta.com/docs/reference/error-codes/. The mapping keys on `errorCode` and the
 * step that got it, never on the summary's wording.
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";

/** Okta's error object (https://developer.okta.com/docs/reference/error-codes/). */
export const oktaErrorSchema = z.object({
  errorCode: z.string(),
  errorSummary: z.string(),
  errorLink: z.string().optional(),
  errorId: z.string().optional(),
  errorCauses: z.array(z.object({ errorSummary: z.string() })).optional(),
});
/** A parsed Okta error object. */
export type OktaErrorBody = z.infer<typeof oktaErrorSchema>;

/** Which call got the error: the same Okta code means different things at different steps. */
export type OktaStep =
  | "connect"
  | "resolve-user"
  | "group"
  | "enroll"
  | "activate"
  | "list-factors"
  | "delete-factor";

/** Reason codes of the Okta provider (failures.csv `reason`). */
export const oktaReasons = {
  /** E0000011 / E0000004 (401): the API token is wrong, expired or revoked. */
  unauthorized: "unauthorized",
  /** E0000006 (403): the token's admin lacks the right (e.g. not a Group/Org admin for the user). */
  insufficientPrivileges: "insufficient-privileges",
  /** E0000007 (404) on a user lookup. */
  userNotFound: "user-not-found",
  /** E0000007 (404) on a group. */
  groupNotFound: "group-not-found",
  /** E0000001 (400) at enrollment: the org's policy does not let this user enroll a WebAuthn factor. */
  factorNotAllowed: "factor-not-allowed",
  /** E0000038 (403): the user is suspended, deprovisioned or staged. */
  userNotActive: "user-not-active",
  /** E0000068 (403) at activation: Okta did not accept the attestation / client data. */
  registrationRejected: "registration-rejected",
  /** E0000047 (429), still throttled after waiting as told. */
  throttled: "throttled",
  /** 5xx / E0000009: Okta failed; worth another attempt. */
  serverError: "server-error",
  /** Anything else Okta refused; the message carries Okta's code and summary. */
  requestFailed: "okta-request-failed",
} as const;

/** What to do about each reason. */
const hints: Record<string, string> = {
  [oktaReasons.unauthorized]:
    "Check PROVISIONING_OKTA_TOKEN: create an API token in the Admin Console (Security > API > Tokens) as an admin who may manage users' factors",
  [oktaReasons.insufficientPrivileges]:
    "The token acts with its creator's admin role: a Super, Org or Group admin (for the users' groups) can manage factors",
  [oktaReasons.userNotFound]: "Check the login or id; Okta looks users up by id, login or login short name",
  [oktaReasons.factorNotAllowed]:
    "Allow FIDO2 (WebAuthn) in the authenticator enrollment policy that applies to this user (Security > Authenticators > Enrollment)",
  [oktaReasons.userNotActive]: "Activate or unsuspend the user in Okta first",
  [oktaReasons.registrationRejected]:
    "Okta refused the passkey: check the authenticator's attestation against the org's FIDO2 settings",
};

/** Turns an Okta error answer (status + body text) into a ProvisioningError naming the call and the user. */
export function oktaFailure(
  step: OktaStep,
  what: string,
  status: number,
  bodyText: string,
): ProvisioningError {
  const parsed = oktaErrorSchema.safeParse(safeJson(bodyText));
  const body = parsed.success ? parsed.data : undefined;
  const code = reasonOf(step, status, body?.errorCode);
  const causes = body?.errorCauses?.map((c) => c.errorSummary).filter(Boolean) ?? [];
  const detail = body
    ? `Okta ${body.errorCode} "${body.errorSummary}"${causes.length ? ` (${causes.join("; ")})` : ""}${
      body.errorId ? `, errorId ${body.errorId}` : ""
    }`
    : `HTTP ${status} without an Okta error object`;
  const hint = hints[code];
  return new ProvisioningError(code, `Cannot ${what}: ${detail}`, {
    ...(hint ? { hint } : {}),
    retryable: code === oktaReasons.serverError || code === oktaReasons.throttled,
  });
}

function reasonOf(step: OktaStep, status: number, errorCode: string | undefined): string {
  switch (errorCode) {
    case "E0000004":
    case "E0000011":
      return oktaReasons.unauthorized;
    case "E0000006":
      return oktaReasons.insufficientPrivileges;
    case "E0000007":
      return step === "group" ? oktaReasons.groupNotFound : oktaReasons.userNotFound;
    case "E0000038":
      return oktaReasons.userNotActive;
    case "E0000047":
      return oktaReasons.throttled;
    case "E0000068":
      return oktaReasons.registrationRejected;
    case "E0000001":
      if (step === "enroll") return oktaReasons.factorNotAllowed;
      if (step === "activate") return oktaReasons.registrationRejected;
      break;
    case "E0000009":
      return oktaReasons.serverError;
  }
  if (status === 401) return oktaReasons.unauthorized;
  if (status === 403) return oktaReasons.insufficientPrivileges;
  if (status === 429) return oktaReasons.throttled;
  if (status >= 500) return oktaReasons.serverError;
  return oktaReasons.requestFailed;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
