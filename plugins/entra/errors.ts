/**
 * Microsoft Graph failures as errors an admin can act on.
 *
 * Graph answers errors with a JSON envelope `{"error":{"code","message","innerError":{"date",
 * "request-id","client-request-id"}}}` and a standard HTTP status ("Microsoft Graph error
 * responses and resource types", https://learn.microsoft.com/graph/errors). {@link explainGraphFailure}
 * turns the status, the envelope and what we were doing (the {@link GraphOperation}) into a
 * {@link GraphError} whose `code` is a reason code for failures.csv, whose message names the user
 * and the endpoint, and whose hint says what to change.
 *
 * Which answer means what is decided from what Microsoft documents, never from the English of
 * Graph's messages: the HTTP status and Graph's `error.code` (404 for a user that does not exist,
 * https://learn.microsoft.com/graph/api/user-get; 403 for missing permissions or roles; 429 after
 * throttling, https://learn.microsoft.com/graph/throttling), and for the policy refusals
 * (self-service setup off, attestation enforced, AAGUID restricted, Passkey or TAP method off),
 * whose answers Microsoft does not document, the policy itself: the session reads the Passkey
 * (FIDO2) or TAP policy after such a refusal (as `doctor` does) and passes what it says as
 * {@link PolicyFacts}. Whatever the reason, the message keeps Graph's own message and request-id.
 * A 405 is not documented for this API at all: it is shown as Graph sent it.
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";

/** What the plugin was doing when Graph refused: decides what a status means. */
export type GraphOperation =
  | "resolve-user"
  | "creation-options"
  | "register-passkey"
  | "list-passkeys"
  | "delete-passkey"
  | "create-tap"
  | "list-taps"
  | "delete-tap"
  | "read-policy"
  | "other";

/** The reason codes of Graph failures (failures.csv, `--log-format json`). */
export type GraphReason =
  /** No user has this object id, UPN or mail. */
  | "user-not-found"
  /** The user resolved, yet the authentication-method endpoints do not know them (not synced yet). */
  | "user-not-synced"
  /** The app lacks the Graph permission, or the signed-in admin the Entra role. */
  | "insufficient-privileges"
  /** The documented known issue: the provisioning API needs "Allow self-service setup" on. */
  | "self-service-setup-off"
  /** Attestation enforcement rejected the key's (self or missing) attestation. */
  | "attestation-enforced"
  /** The key's AAGUID is outside the allowed list or inside the blocked list. */
  | "aaguid-not-allowed"
  /** The Passkey (FIDO2) method is disabled, or not enabled for this user. */
  | "fido2-disabled"
  /** The Temporary Access Pass policy is disabled for this user or forbids what was asked. */
  | "tap-disabled"
  /** The admin's own account, refused before any call where the docs say self-service is unsupported (beta). */
  | "self-provisioning"
  /** Still 429 (or 503/504) after every retry. */
  | "throttled"
  /** The passkey's display name is empty or longer than 30 characters. */
  | "display-name-invalid"
  /** The access token was refused (401). */
  | "unauthorized"
  /** A write whose response was lost: it may or may not have happened; reconcile before retrying. */
  | "outcome-unknown"
  /** Graph could not be reached (connection refused, reset, timeout) after every retry. */
  | "graph-unreachable"
  /** Graph answered something that does not match its documented shape. */
  | "graph-bad-response"
  /** Any other Graph error; the message keeps Graph's code and words. */
  | "graph-error";

/**
 * Graph's error envelope (https://learn.microsoft.com/graph/errors#json-representation). Lenient:
 * every field is optional, unknown fields are kept out, so that any Graph error parses.
 */
export const graphErrorEnvelopeSchema = z.object({
  error: z.object({
    code: z.string().max(200).optional(),
    message: z.string().max(4000).optional(),
    innerError: z.object({
      code: z.string().max(200).optional(),
      message: z.string().max(4000).optional(),
      date: z.string().max(100).optional(),
      "request-id": z.string().max(200).optional(),
      "client-request-id": z.string().max(200).optional(),
    }).optional(),
  }),
});
/** A parsed Graph error envelope. */
export type GraphErrorEnvelope = z.infer<typeof graphErrorEnvelopeSchema>;

/**
 * Reads a Graph error body, or returns `undefined` when it is not Graph's envelope (an HTML page
 * from a proxy, an empty body).
 *
 * @example
 * ```ts
 * import { parseGraphErrorBody } from "./errors.ts";
 * const envelope = parseGraphErrorBody('{"error":{"code":"Request_ResourceNotFound","message":"gone"}}');
 * console.assert(envelope?.error.code === "Request_ResourceNotFound");
 * console.assert(parseGraphErrorBody("<html>") === undefined);
 * ```
 */
export function parseGraphErrorBody(text: string): GraphErrorEnvelope | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const parsed = graphErrorEnvelopeSchema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** The Graph request that failed, as messages and logs show it. */
export interface GraphEndpoint {
  readonly method: string;
  /** Path after the version, e.g. `/users/42/authentication/fido2Methods` (no query). */
  readonly path: string;
  /** `v1.0` or `beta`. */
  readonly version: string;
}

/** Details a {@link GraphError} carries besides its message. */
export interface GraphErrorDetails {
  /** HTTP status, or undefined when no response arrived. */
  status?: number;
  /** Graph's `error.code` (e.g. `Authorization_RequestDenied`). */
  graphCode?: string;
  /** Graph's `error.message`, as sent. */
  graphMessage?: string;
  /** The `request-id` Microsoft support asks for. */
  requestId?: string;
  /** The `client-request-id` we sent. */
  clientRequestId?: string;
  endpoint: GraphEndpoint;
  /** The user the call was about (UPN or the reference the admin gave). */
  user?: string;
  /** How many attempts were made. */
  attempts?: number;
  /** The wait Graph asked for in its last Retry-After, in milliseconds. */
  retryAfterMs?: number;
  /** What the error was explained from (see {@link explainGraphFailure}). */
  failure?: GraphFailure;
  hint?: string;
  cause?: unknown;
}

/** A Microsoft Graph failure: a reason code, a message naming user and endpoint, and Graph's own ids. */
export class GraphError extends ProvisioningError {
  /** HTTP status, or undefined when no response arrived. */
  readonly status: number | undefined;
  /** Graph's `error.code`. */
  readonly graphCode: string | undefined;
  /** Graph's `error.message`. */
  readonly graphMessage: string | undefined;
  /** Graph's `request-id` (response header or innerError). */
  readonly requestId: string | undefined;
  /** The `client-request-id` we sent. */
  readonly clientRequestId: string | undefined;
  /** The request that failed. */
  readonly endpoint: GraphEndpoint;
  /** The user the call was about. */
  readonly user: string | undefined;
  /** Attempts made, retries included. */
  readonly attempts: number | undefined;
  /** Graph's last Retry-After, in milliseconds. */
  readonly retryAfterMs: number | undefined;
  /** What the failure was made from, so that it can be explained again with {@link PolicyFacts}. */
  readonly failure: GraphFailure | undefined;

  constructor(code: GraphReason, message: string, details: GraphErrorDetails) {
    super(code, message, {
      retryable: isRetryable(code, details.status),
      ...(details.cause === undefined ? {} : { cause: details.cause }),
      ...(details.hint === undefined ? {} : { hint: details.hint }),
    });
    this.status = details.status;
    this.graphCode = details.graphCode;
    this.graphMessage = details.graphMessage;
    this.requestId = details.requestId;
    this.clientRequestId = details.clientRequestId;
    this.endpoint = details.endpoint;
    this.user = details.user;
    this.attempts = details.attempts;
    this.retryAfterMs = details.retryAfterMs;
    this.failure = details.failure;
  }

  /** The reason code, typed. */
  get reason(): GraphReason {
    return this.code as GraphReason;
  }

  /**
   * True when a write may have happened although no success was seen (lost response, 504): the
   * caller must reconcile (list the user's methods) before trying again.
   */
  get outcomeUnknown(): boolean {
    return this.code === "outcome-unknown";
  }
}

/**
 * Failures that may pass on a later attempt: throttling, Graph unreachable or failing on its side
 * (5xx), and writes whose answer was lost (after reconciliation).
 */
function isRetryable(code: GraphReason, status: number | undefined): boolean {
  if (code === "throttled" || code === "graph-unreachable" || code === "outcome-unknown") return true;
  return code === "graph-error" && status !== undefined && status >= 500;
}

/** The permissions that let an app provision passkeys, least privileged first. */
export const passkeyPermissions = [
  "UserAuthMethod-Passkey.ReadWrite.All",
  "UserAuthenticationMethod.ReadWrite.All",
] as const;
/** The permissions that let an app create Temporary Access Passes, least privileged first. */
export const tapPermissions = [
  "UserAuthMethod-TAP.ReadWrite.All",
  "UserAuthenticationMethod.ReadWrite.All",
] as const;
/** The permission that lets an app read the authentication methods policy, least privileged first. */
export const policyReadPermissions = ["Policy.Read.AuthenticationMethod", "Policy.Read.All"] as const;

/**
 * What the authentication methods policy says, read after Graph refused (or by `doctor`'s
 * preflight): it decides which policy refused, where Graph's wording is undocumented.
 */
export interface PolicyFacts {
  /** The Passkey (FIDO2) policy, its passkey profile's settings applied (see graph/policies.ts). */
  fido2?: {
    state?: string | null | undefined;
    isSelfServiceRegistrationAllowed?: boolean | null | undefined;
    attestationEnforced?: boolean | undefined;
    keyRestrictions?: {
      isEnforced?: boolean | null | undefined;
      enforcementType?: string | null | undefined;
      aaGuids?: readonly string[] | null | undefined;
    } | undefined;
  };
  /** The Temporary Access Pass policy. */
  tap?: { state?: string | null | undefined };
  /** The AAGUID of the key whose registration was refused, lowercase with dashes. */
  keyAaguid?: string;
}

/** What {@link explainGraphFailure} needs to know. */
export interface GraphFailure {
  operation: GraphOperation;
  /** Verb phrase for "Cannot <action>": `register a passkey`, `create a Temporary Access Pass`. */
  action: string;
  /** The user concerned (UPN, or the reference given), when there is one. */
  user?: string;
  endpoint: GraphEndpoint;
  /** HTTP status, or undefined when no response arrived. */
  status?: number;
  envelope?: GraphErrorEnvelope;
  /** `request-id` response header. */
  requestId?: string;
  clientRequestId?: string;
  attempts?: number;
  retryAfterMs?: number;
  /** Set when the request was retried until the attempts ran out. */
  exhausted?: boolean;
  /** Set when a write was sent and no answer came back: it may have happened. */
  outcomeUnknown?: boolean;
  /** The policy, when read: explains 400/403 refusals of the provisioning API and TAP creation. */
  policy?: PolicyFacts;
  cause?: unknown;
}

/**
 * The actionable {@link GraphError} for a failed Graph call.
 *
 * @example
 * ```ts
 * import { explainGraphFailure } from "./errors.ts";
 * const error = explainGraphFailure({
 *   operation: "register-passkey",
 *   action: "register a passkey",
 *   user: "alice@contoso.com",
 *   endpoint: { method: "POST", path: "/users/42/authentication/fido2Methods", version: "v1.0" },
 *   status: 403,
 *   envelope: { error: { code: "accessDenied", message: "Request Authorization failed" } },
 * });
 * console.assert(error.code === "insufficient-privileges");
 * console.assert(error.message.startsWith("Cannot register a passkey for alice@contoso.com: "));
 * ```
 */
export function explainGraphFailure(failure: GraphFailure): GraphError {
  const { reason, why, hint } = classify(failure);
  const graph = failure.envelope?.error;
  const requestId = failure.requestId ?? graph?.innerError?.["request-id"];
  const clientRequestId = failure.clientRequestId ?? graph?.innerError?.["client-request-id"];
  const subject = failure.user === undefined
    ? ""
    : failure.operation === "resolve-user"
    ? ` "${failure.user}"`
    : ` for ${failure.user}`;
  const message = `Cannot ${failure.action}${subject}: ${why} (${describeEndpoint(failure)})`;
  return new GraphError(reason, message, {
    endpoint: failure.endpoint,
    ...(failure.status === undefined ? {} : { status: failure.status }),
    ...(graph?.code === undefined ? {} : { graphCode: graph.code }),
    ...(graph?.message === undefined ? {} : { graphMessage: graph.message }),
    ...(requestId === undefined ? {} : { requestId }),
    ...(clientRequestId === undefined ? {} : { clientRequestId }),
    ...(failure.user === undefined ? {} : { user: failure.user }),
    ...(failure.attempts === undefined ? {} : { attempts: failure.attempts }),
    ...(failure.retryAfterMs === undefined ? {} : { retryAfterMs: failure.retryAfterMs }),
    ...(hint === undefined ? {} : { hint }),
    ...(failure.cause === undefined ? {} : { cause: failure.cause }),
    failure,
  });
}

/**
 * The same failure explained again with what the policy says: a 400 or 403 of the provisioning
 * API or of TAP creation becomes the policy refusal that explains it, or stays as it was.
 */
export function explainWithPolicy(error: GraphError, policy: PolicyFacts): GraphError {
  if (error.failure === undefined) return error;
  const again = explainGraphFailure({ ...error.failure, policy });
  return again.code === error.code ? error : again;
}

/** `POST /v1.0/users/42/…, 403 Authorization_RequestDenied, request-id 1234` */
function describeEndpoint(failure: GraphFailure): string {
  const parts = [`${failure.endpoint.method} /${failure.endpoint.version}${failure.endpoint.path}`];
  const graphCode = failure.envelope?.error.code;
  if (failure.status !== undefined) {
    parts.push(graphCode ? `${failure.status} ${graphCode}` : `${failure.status}`);
  }
  const requestId = failure.requestId ?? failure.envelope?.error.innerError?.["request-id"];
  if (requestId) parts.push(`request-id ${requestId}`);
  if (failure.attempts !== undefined && failure.attempts > 1) parts.push(`${failure.attempts} attempts`);
  return parts.join(", ");
}

interface Classification {
  reason: GraphReason;
  why: string;
  hint?: string;
}

/** What to check when a user is not found, the not-yet-synced account included. */
export const notFoundHint =
  "Check the spelling and the tenant (and cloud); an account from on-premises Active Directory exists in Entra only after Entra Connect has synced it";

const rolesHint = "Authentication Administrator or Privileged Authentication Administrator";

function classify(failure: GraphFailure): Classification {
  const { status, operation } = failure;
  const graph = failure.envelope?.error;
  const graphCode = graph?.code ?? "";
  const said = graph?.message ? `; Graph said "${oneLine(graph.message)}"` : "";
  const tapOperation = operation === "create-tap" || operation === "list-taps" || operation === "delete-tap";

  if (status === undefined || failure.outcomeUnknown) {
    if (failure.outcomeUnknown) {
      return {
        reason: "outcome-unknown",
        why: `no answer came back after the request was sent${
          status === undefined ? "" : ` (HTTP ${status})`
        }, so Graph may or may not have done it`,
        hint: "List the user's methods before trying again; a re-run reconciles this automatically",
      };
    }
    return {
      reason: "graph-unreachable",
      why: `Microsoft Graph could not be reached${
        failure.cause instanceof Error ? ` (${failure.cause.message})` : ""
      }`,
      hint: "Check the network, proxy and TLS settings (--ca-file, --local-ssl-verify), then run again",
    };
  }

  if (status === 429 || ((status === 503 || status === 504) && failure.exhausted)) {
    const wait = failure.retryAfterMs === undefined
      ? ""
      : `; it last asked to wait ${formatMs(failure.retryAfterMs)}`;
    return {
      reason: "throttled",
      why: `Microsoft Graph is still throttling after ${
        failure.attempts ?? 1
      } attempts (HTTP ${status})${wait}`,
      hint: "Lower --concurrency or run again later; a re-run resumes where this one stopped",
    };
  }

  if (status === 401) {
    return {
      reason: "unauthorized",
      why: `Graph refused the access token${said}`,
      hint:
        "Sign in again (provisioning logout, then run again) and check the tenant, client id and cloud settings",
    };
  }

  if (status === 404) {
    if (operation === "resolve-user") {
      return {
        reason: "user-not-found",
        why: "no user has this object id, user principal name or mail",
        hint: notFoundHint,
      };
    }
    const addressesUser = operation === "creation-options" || operation === "register-passkey" ||
      operation === "list-passkeys" || operation === "create-tap" || operation === "list-taps";
    if (addressesUser) {
      return {
        reason: "user-not-synced",
        why: "the user exists in the directory but the authentication methods service does not know them yet",
        hint:
          "A user created or synced from on-premises moments ago takes a while to reach every service; wait for the next Entra Connect sync cycle and run again",
      };
    }
  }

  if ((status === 400 || status === 403) && failure.policy) {
    const refusal = policyRefusal(operation, failure.policy, said);
    if (refusal) return refusal;
  }

  if (status === 403) {
    const permissions = tapOperation
      ? tapPermissions
      : operation === "read-policy"
      ? policyReadPermissions
      : passkeyPermissions;
    return {
      reason: "insufficient-privileges",
      why: `Graph denied access: the app needs the permission ${permissions.join(" or ")}${
        operation === "read-policy" ? "" : `, and a signed-in admin also needs the ${rolesHint} role`
      }${said}`,
      hint: `Grant and admin-consent ${permissions[0]} to the app registration${
        operation === "read-policy" ? "" : `; for delegated sign-in, assign the ${rolesHint} role`
      } (Privileged Authentication Administrator is needed when the target user is an admin)`,
    };
  }

  if (graphCode === "" && status >= 500) {
    return {
      reason: "graph-error",
      why: `Microsoft Graph failed (HTTP ${status})`,
      hint: "This is on Microsoft's side; run again later (a re-run resumes)",
    };
  }

  return {
    reason: "graph-error",
    why: graph?.message ? `Graph answered "${oneLine(graph.message)}"` : `Graph answered HTTP ${status}`,
  };
}

/**
 * Which policy setting explains a refusal, from the policy read back (never from Graph's words):
 * the method off, self-service setup off (the documented known issue,
 * https://learn.microsoft.com/graph/known-issues#fido2-provisioning-api-requires-self-service-setup-to-be-enabled),
 * the key's AAGUID outside the key restrictions, attestation enforcement on.
 */
function policyRefusal(
  operation: GraphOperation,
  policy: PolicyFacts,
  said: string,
): Classification | undefined {
  const fido2 = policy.fido2;
  if ((operation === "creation-options" || operation === "register-passkey") && fido2) {
    if (fido2.state != null && fido2.state !== "enabled") {
      return {
        reason: "fido2-disabled",
        why: `the Passkey (FIDO2) method is ${fido2.state} in the authentication methods policy${said}`,
        hint:
          "Enable Passkey (FIDO2) in Entra ID > Authentication methods for a group the user is in (or All users)",
      };
    }
    if (fido2.isSelfServiceRegistrationAllowed === false) return selfServiceOff(said);
    const restrictions = fido2.keyRestrictions;
    if (operation === "register-passkey" && restrictions?.isEnforced === true && policy.keyAaguid) {
      const listed = (restrictions.aaGuids ?? []).some((g) => g.toLowerCase() === policy.keyAaguid);
      if (restrictions.enforcementType === "block" ? listed : !listed) {
        return {
          reason: "aaguid-not-allowed",
          why: `the Passkey (FIDO2) policy's key restrictions ${
            listed ? "block" : "do not allow"
          } this key's AAGUID ${policy.keyAaguid}${said}`,
          hint:
            "Add the key's AAGUID to the allowed list (or remove it from the blocked list) in the Passkey (FIDO2) policy, or use an allowed key model",
        };
      }
    }
    if (operation === "register-passkey" && fido2.attestationEnforced === true) {
      return {
        reason: "attestation-enforced",
        why:
          `Graph refused the registration, and attestation enforcement is on in the Passkey (FIDO2) policy: the key's attestation is probably not one Microsoft trusts${said}`,
        hint:
          'Turn off "Enforce attestation" in the Passkey (FIDO2) policy (or its passkey profile), or use a key whose attestation Microsoft trusts (a key listed in the FIDO Metadata Service)',
      };
    }
  }
  if (operation === "create-tap" && policy.tap?.state != null && policy.tap.state !== "enabled") {
    return {
      reason: "tap-disabled",
      why:
        `the Temporary Access Pass method is ${policy.tap.state} in the authentication methods policy${said}`,
      hint:
        "Enable the Temporary Access Pass method for this user's group in Entra ID > Authentication methods > Temporary Access Pass",
    };
  }
  return undefined;
}

function selfServiceOff(said: string): Classification {
  return {
    reason: "self-service-setup-off",
    why:
      `the Passkey (FIDO2) policy has "Allow self-service setup" turned off, which the provisioning API needs (a known issue of Microsoft Graph)${said}`,
    hint:
      'Turn on "Allow self-service setup" in Entra ID > Authentication methods > Passkey (FIDO2) > Configure; see https://learn.microsoft.com/graph/known-issues#fido2-provisioning-api-requires-self-service-setup-to-be-enabled',
  };
}

function oneLine(text: string): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}
