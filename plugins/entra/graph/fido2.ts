/**
 * A user's passkeys (fido2AuthenticationMethod) through Microsoft Graph:
 *
 * - creation options: `GET /users/{id}/authentication/fido2Methods/creationOptions`
 *   (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions); the beta
 *   version takes `creationOptions(challengeTimeoutInMinutes=N)`, 5 to 43200
 *   (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-beta),
 *   v1.0 has a fixed 5-minute challenge timeout and no parameter;
 * - register: `POST /users/{id}/authentication/fido2Methods` with `displayName` and
 *   `publicKeyCredential` (https://learn.microsoft.com/graph/api/authentication-post-fido2methods);
 * - list: `GET /users/{id}/authentication/fido2Methods`
 *   (https://learn.microsoft.com/graph/api/fido2authenticationmethod-list);
 * - delete: `DELETE /users/{id}/authentication/fido2Methods/{methodId}`
 *   (https://learn.microsoft.com/graph/api/fido2authenticationmethod-delete).
 *
 * Sharp edges kept here:
 *
 * - The POST body carries no `@odata.type`, although the documentation's example has one: Graph
 *   has answered such a body with "The request is missing a fido2AuthenticationMethod entity with
 *   a displayName and publicKeyCredential in the request body"
 *   (github.com/microsoftgraph/msgraph-beta-sdk-dotnet/issues/941). Only the documented members
 *   are sent: `publicKeyCredential` = `{ id, response: { clientDataJSON, attestationObject },
 *   clientExtensionResults }`, all binary values unpadded base64url.
 * - The display name is 1 to 30 characters (the length DSInternals.Passkeys validates before it
 *   calls Graph, github.com/MichaelGrafnetter/webauthn-interop); it is checked before any call.
 * - Graph is not asked to create a passkey twice for a lost answer: see client.ts.
 *
 * @module
 */
import { ProvisioningError } from "../../../core/errors.ts";
import type { DirectoryUser } from "../../../core/plugin.ts";
import {
  type RegistrationResponseJSON,
  registrationResponseJSONSchema,
} from "../../../core/webauthn/json.ts";
import type { GraphClient } from "./client.ts";
import {
  type CreationOptionsResponse,
  creationOptionsResponseSchema,
  type Fido2MethodJson,
  fido2MethodSchema,
} from "./schemas.ts";
import { userIdPath } from "./users.ts";

/** Longest passkey display name Graph takes. */
export const displayNameMaxLength = 30;

/** Challenge timeouts the beta creationOptions function takes, in minutes. */
export const challengeTimeoutRange = { min: 5, max: 43_200 } as const;

/** The user a call is about: its id addresses it, its UPN names it in messages. */
export type Fido2User = Pick<DirectoryUser, "id" | "userPrincipalName">;

/** What {@link getCreationOptions} returns. */
export interface Fido2CreationOptions {
  /** The whole webauthnCredentialCreationOptions response, as the WebAuthn client takes it. */
  readonly response: CreationOptionsResponse;
  /** `publicKey.rp.id`, when Graph sent one. */
  readonly rpId?: string;
  /** `challengeTimeoutDateTime`: after it, Graph refuses a registration for this challenge. */
  readonly expiresAt?: Date;
}

/**
 * Asks Graph for WebAuthn creation options for `user`.
 *
 * @throws {ProvisioningError} `challenge-timeout-unsupported` (exit code 2) for a timeout on v1.0
 * or outside 5–43200 minutes, before any call.
 * @throws {GraphError} see errors.ts (`insufficient-privileges`, `user-not-synced` …; policy refusals are named by the session, which reads the policy back).
 */
export async function getCreationOptions(
  client: GraphClient,
  user: Fido2User,
  options: { challengeTimeoutInMinutes?: number; signal?: AbortSignal } = {},
): Promise<Fido2CreationOptions> {
  const timeout = options.challengeTimeoutInMinutes;
  let path = `${userIdPath(user)}/authentication/fido2Methods/creationOptions`;
  if (timeout !== undefined) {
    if (
      !Number.isInteger(timeout) || timeout < challengeTimeoutRange.min || timeout > challengeTimeoutRange.max
    ) {
      throw new ProvisioningError(
        "challenge-timeout-unsupported",
        `Cannot ask for creation options for ${user.userPrincipalName}: a challenge timeout is a whole number of minutes from ${challengeTimeoutRange.min} to ${challengeTimeoutRange.max}, not ${timeout}`,
        { exitCode: 2 },
      );
    }
    if (client.version !== "beta") {
      throw new ProvisioningError(
        "challenge-timeout-unsupported",
        `Cannot ask for creation options for ${user.userPrincipalName} with a ${timeout}-minute challenge timeout: Graph ${client.version} has a fixed 5-minute timeout`,
        { exitCode: 2, hint: "Use --graph-version beta for a custom challenge timeout, or leave it out" },
      );
    }
    path += `(challengeTimeoutInMinutes=${timeout})`;
  }
  const response = await client.request("GET", path, {
    schema: creationOptionsResponseSchema,
    operation: "creation-options",
    action: "get passkey creation options",
    user: user.userPrincipalName,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const rpId = response.publicKey.rp.id ?? undefined;
  const expires = response.challengeTimeoutDateTime ? new Date(response.challengeTimeoutDateTime) : undefined;
  return {
    response,
    ...(rpId === undefined ? {} : { rpId }),
    ...(expires === undefined ? {} : { expiresAt: expires }),
  };
}

/**
 * Checks a passkey display name: 1 to 30 characters (UTF-16 code units, as .NET counts them),
 * not only spaces. Returns it trimmed.
 *
 * @throws {ProvisioningError} code `display-name-invalid` (exit code 2).
 * @example
 * ```ts
 * import { checkDisplayName } from "./fido2.ts";
 * console.assert(checkDisplayName(" YubiKey 5 ") === "YubiKey 5");
 * ```
 */
export function checkDisplayName(displayName: string, user?: string): string {
  const trimmed = displayName.trim();
  if (trimmed.length >= 1 && trimmed.length <= displayNameMaxLength) return trimmed;
  const why = trimmed.length === 0
    ? "the display name is empty"
    : `the display name "${trimmed.slice(0, 40)}${
      trimmed.length > 40 ? "…" : ""
    }" is ${trimmed.length} characters long, more than ${displayNameMaxLength}`;
  throw new ProvisioningError(
    "display-name-invalid",
    `Cannot register a passkey${user ? ` for ${user}` : ""}: ${why}`,
    { exitCode: 2, hint: `Use --display-name with 1 to ${displayNameMaxLength} characters` },
  );
}

/**
 * The JSON body of `POST fido2Methods`: the documented members only, no `@odata.type`.
 *
 * @example
 * ```ts
 * import { registrationBody } from "./fido2.ts";
 * const body = registrationBody("Key", {
 *   id: "AQID", rawId: "AQID", type: "public-key",
 *   response: { clientDataJSON: "e30", attestationObject: "oA", transports: ["usb"] },
 *   clientExtensionResults: {},
 * });
 * console.assert(JSON.stringify(body) ===
 *   '{"displayName":"Key","publicKeyCredential":{"id":"AQID","response":{"clientDataJSON":"e30","attestationObject":"oA"},"clientExtensionResults":{}}}');
 * ```
 */
export function registrationBody(displayName: string, credential: RegistrationResponseJSON): {
  displayName: string;
  publicKeyCredential: {
    id: string;
    response: { clientDataJSON: string; attestationObject: string };
    clientExtensionResults: Record<string, unknown>;
  };
} {
  return {
    displayName,
    publicKeyCredential: {
      id: credential.id,
      response: {
        clientDataJSON: credential.response.clientDataJSON,
        attestationObject: credential.response.attestationObject,
      },
      clientExtensionResults: { ...credential.clientExtensionResults },
    },
  };
}

/**
 * Registers the credential the authenticator created as the user's passkey.
 *
 * Not retried when the answer is lost: the error then has reason `outcome-unknown`, and the caller
 * reconciles with {@link listFido2Methods} before trying again.
 *
 * @throws {ProvisioningError} `display-name-invalid` or `invalid-credential` before any call.
 * @throws {GraphError} see errors.ts.
 */
export async function registerFido2Method(
  client: GraphClient,
  user: Fido2User,
  registration: { displayName: string; credential: unknown; signal?: AbortSignal },
): Promise<Fido2MethodJson> {
  const displayName = checkDisplayName(registration.displayName, user.userPrincipalName);
  const parsed = registrationResponseJSONSchema.safeParse(registration.credential);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ProvisioningError(
      "invalid-credential",
      `Cannot register a passkey for ${user.userPrincipalName}: the credential is not a RegistrationResponseJSON (${
        issue ? `${issue.path.join(".") || "value"} ${issue.message}` : "invalid"
      })`,
      { cause: parsed.error },
    );
  }
  return await client.request("POST", `${userIdPath(user)}/authentication/fido2Methods`, {
    schema: fido2MethodSchema,
    body: registrationBody(displayName, parsed.data),
    operation: "register-passkey",
    action: "register a passkey",
    user: user.userPrincipalName,
    idempotent: false,
    ...(registration.signal ? { signal: registration.signal } : {}),
  });
}

/** The user's passkeys, every page. */
export async function listFido2Methods(
  client: GraphClient,
  user: Fido2User,
  options: { signal?: AbortSignal } = {},
): Promise<Fido2MethodJson[]> {
  return await client.requestAll(`${userIdPath(user)}/authentication/fido2Methods`, fido2MethodSchema, {
    operation: "list-passkeys",
    action: "list passkeys",
    user: user.userPrincipalName,
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/**
 * Deletes one of the user's passkeys. Returns false when Graph says it does not exist (already
 * deleted, e.g. by an earlier attempt whose answer was lost), true when it was deleted.
 *
 * @throws {GraphError} see errors.ts.
 */
export async function deleteFido2Method(
  client: GraphClient,
  user: Fido2User,
  methodId: string,
  options: { signal?: AbortSignal } = {},
): Promise<boolean> {
  return await client.deleteIfPresent(
    `${userIdPath(user)}/authentication/fido2Methods/${encodeURIComponent(methodId)}`,
    {
      operation: "delete-passkey",
      action: `delete passkey "${methodId}"`,
      user: user.userPrincipalName,
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
}
