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
 * Which answer means what: the status and Graph's `code` decide where Microsoft documents them
 * (404 for a user that does not exist, https://learn.microsoft.com/graph/api/user-get; 405 for the
 * signed-in admin's own account, since "self-service operations aren't supported",
 * https://learn.microsoft.com/graph/api/authentication-post-fido2methods; 429 after throttling,
 * https://learn.microsoft.com/graph/throttling). Microsoft does not document the messages of the
 * policy refusals (self-service setup off, attestation enforced, AAGUID restricted, TAP disabled),
 * so those are recognised by words in Graph's message; an unrecognised refusal keeps Graph's own
 * words and the reason code `graph-error`.
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
  /** The admin called the API for their own account (405). */
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
 *   status: 405,
 *   envelope: { error: { code: "methodNotAllowed", message: "The method is not supported for this URL." } },
 * });
 * console.assert(error.code === "self-provisioning");
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
  });
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

const patterns = {
  selfService: /self[- ]?service|isSelfServiceRegistrationAllowed/i,
  /** "attestation … enforced", "enforce attestation", "attestation … not trusted / could not be verified". */
  attestation: /enforc\w*.{0,80}attest|attest\w*.{0,80}(enforc|not (be )?trusted|untrusted)/i,
  /** The FIDO2 method is off, or not enabled for this user. */
  fido2Off:
    /(passkey|fido2?)\b.{0,80}(disabled|not enabled)|(disabled|not enabled).{0,80}(passkey|fido2?)\b/i,
  aaguid: /aa?guid|key restriction|not allowed by (the )?(fido2? |passkey )?policy|blocked/i,
  tap: /temporary access pass|\bTAP\b/i,
  policyOff: /disabled|not enabled|not allowed|policy/i,
  /** A display name's length or characters, not a body that merely mentions displayName. */
  displayName: /display ?name.{0,80}(characters|length|long|too|invalid)/i,
};

function classify(failure: GraphFailure): Classification {
  const { status, operation } = failure;
  const graph = failure.envelope?.error;
  const graphCode = graph?.code ?? "";
  const text = `${graph?.code ?? ""} ${graph?.message ?? ""} ${graph?.innerError?.code ?? ""} ${
    graph?.innerError?.message ?? ""
  }`;
  const said = graph?.message ? `; Graph said "${oneLine(graph.message)}"` : "";
  const tapOperation = operation === "create-tap" || operation === "list-taps" || operation === "delete-tap";
  const fido2Operation = operation === "creation-options" || operation === "register-passkey" ||
    operation === "list-passkeys" || operation === "delete-passkey";

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

  if (status === 405 && (fido2Operation || tapOperation)) {
    return {
      reason: "self-provisioning",
      why: "Graph does not let an admin use this API on their own account (405 Method Not Allowed)",
      hint:
        "Have another admin provision this account, or register the passkey yourself at https://mysignins.microsoft.com",
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

  if (status === 400 && operation === "register-passkey" && patterns.displayName.test(text)) {
    return {
      reason: "display-name-invalid",
      why: `Graph refused the passkey's display name${said}`,
      hint: "Use a display name of 1 to 30 characters",
    };
  }

  if (
    (status === 400 || status === 403) &&
    (operation === "creation-options" || operation === "register-passkey")
  ) {
    if (patterns.selfService.test(text)) return selfServiceOff(said);
    if (patterns.attestation.test(text)) {
      return {
        reason: "attestation-enforced",
        why:
          `Graph rejected the key's attestation (attestation enforcement is on in the Passkey (FIDO2) policy)${said}`,
        hint:
          'Turn off "Enforce attestation" in the Passkey (FIDO2) policy, or use a key whose attestation Microsoft trusts (a key listed in the FIDO Metadata Service)',
      };
    }
    if (patterns.aaguid.test(text)) {
      return {
        reason: "aaguid-not-allowed",
        why: `the Passkey (FIDO2) policy's key restrictions do not allow this key's AAGUID${said}`,
        hint:
          "Add the key's AAGUID to the allowed list (or remove it from the blocked list) in the Passkey (FIDO2) policy, or use an allowed key model",
      };
    }
    if (patterns.fido2Off.test(text)) {
      return {
        reason: "fido2-disabled",
        why: `the Passkey (FIDO2) method is disabled, or not enabled for this user${said}`,
        hint:
          "Enable Passkey (FIDO2) in Entra ID > Authentication methods for a group the user is in (or All users)",
      };
    }
  }

  const privilegeRefusal = /privilege|Authorization_RequestDenied|accessDenied/i.test(text) &&
    !patterns.policyOff.test(graph?.message ?? "");
  if (
    operation === "create-tap" && (status === 400 || status === 403) && !privilegeRefusal &&
    (patterns.tap.test(text) || patterns.policyOff.test(text))
  ) {
    return {
      reason: "tap-disabled",
      why: `the Temporary Access Pass policy does not allow this pass for the user${said}`,
      hint:
        "Enable the Temporary Access Pass method for this user's group, and allow one-time passes and the lifetime asked for, in Entra ID > Authentication methods > Temporary Access Pass",
    };
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
