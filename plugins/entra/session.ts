/**
 * A signed-in connection to one Entra tenant, as the provisioning paths use it: the
 * {@link ProviderSession} contract of core/plugin.ts over a {@link GraphClient}, plus the
 * Temporary Access Pass calls of the browser path and the preflight.
 *
 * The auth helper builds the client (its token source) and the cloud; this module only speaks
 * Graph. Everything a session throws is a ProvisioningError whose `code` is a reason code.
 *
 * @module
 */
import { formatAaguid } from "../../core/aaguid.ts";
import { decodeCbor } from "../../core/ctap/cbor.ts";
import { decodeAuthenticatorData } from "../../core/ctap/auth_data.ts";
import { fromBase64Any } from "../../core/bytes.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type {
  DirectoryUser,
  PasskeyMethod,
  ProviderSession,
  RegistrationChallenge,
} from "../../core/plugin.ts";
import type { EntraCloud } from "./cloud.ts";
import { explainWithPolicy, GraphError, type PolicyFacts } from "./errors.ts";
import type { GraphClient } from "./graph/client.ts";
import { listGroupUsers } from "./graph/groups.ts";
import {
  checkDisplayName,
  deleteFido2Method,
  getCreationOptions,
  listFido2Methods,
  registerFido2Method,
} from "./graph/fido2.ts";
import {
  type PreflightFinding,
  readPolicyFacts,
  runPreflight,
  type RunPreflightOptions,
} from "./graph/policies.ts";
import type { Fido2MethodJson } from "./graph/schemas.ts";
import {
  type CreateTapOptions,
  createTemporaryAccessPass,
  deleteTemporaryAccessPass,
  type TemporaryAccessPass,
} from "./graph/tap.ts";
import { type EntraUser, isObjectId, resolveUser } from "./graph/users.ts";

/** What an {@link EntraSession} is made of. */
export interface EntraSessionOptions {
  /** A Graph client for the tenant, its token source set. */
  client: GraphClient;
  /** Which cloud: decides the rp-id allow-list and the WebAuthn origin. */
  cloud: EntraCloud;
  /** The tenant's id (the token's `tid`), for {@link EntraSession.tenant}. */
  tenantId?: string;
  /**
   * Object id of the signed-in admin (delegated sign-in). On beta, whose pages say self-service
   * is not supported, provisioning that account is refused before Graph is called; v1.0 lists the
   * `/me` calls, so there Graph is asked and its answer shown.
   */
  signedInUserId?: string;
  /** Beta only: how long a challenge stays valid, 5 to 43200 minutes. */
  challengeTimeoutInMinutes?: number;
  /** Runs when the session is disposed (the auth helper's cleanup). */
  onClose?: () => void | Promise<void>;
}

/** See the module documentation. */
export class EntraSession implements ProviderSession {
  /** rp ids the tenant's creation options may carry (from the cloud). */
  readonly allowedRpIds: readonly string[];
  /** The cloud the session talks to. */
  readonly cloud: EntraCloud;
  /** `<Graph base URL>/<tenant id>`: the directory this session writes to (see ProviderSession.tenant). */
  readonly tenant: string | undefined;
  /** The Graph client underneath, for callers that need a call the session does not wrap. */
  readonly client: GraphClient;
  /**
   * Graph's creationOptions only hands out a challenge that expires unused (a GET: "Retrieve
   * creation options", https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions),
   * so a bulk run may ask for it while it lists the user's passkeys (ProviderSession).
   */
  readonly creationOptionsHaveNoEffect = true;
  readonly #options: EntraSessionOptions;
  readonly #policyCache = new Map<"fido2" | "tap", { readAt: number; facts: Promise<PolicyFacts> }>();

  constructor(options: EntraSessionOptions) {
    this.#options = options;
    this.client = options.client;
    this.cloud = options.cloud;
    this.tenant = options.tenantId === undefined
      ? undefined
      : `${options.cloud.graphBase}/${options.tenantId}`;
    this.allowedRpIds = options.cloud.allowedRpIds;
  }

  /** Finds a user by object id, UPN or mail (`user-not-found` when none). */
  async resolveUser(reference: string, signal?: AbortSignal): Promise<EntraUser> {
    return await resolveUser(this.client, reference, signal ? { signal } : {});
  }

  /**
   * An object id (GUID) is what every per-user Graph call addresses (`/users/{id}/…`), so a bulk
   * run needs no lookup for it (ProviderSession.userFromReference). Graph answers ids in lower
   * case; the id is lowered so that the same user named twice is recognised. A UPN or mail needs
   * {@link resolveUser}.
   */
  userFromReference(reference: string): DirectoryUser | undefined {
    const ref = reference.trim();
    return isObjectId(ref) ? { id: ref.toLowerCase(), userPrincipalName: ref } : undefined;
  }

  /**
   * The users of a group named by object id or display name, members of nested groups included,
   * page by page as the caller iterates (`--group NAME|ID`; see graph/groups.ts).
   * `group-not-found` / `group-ambiguous` (exit code 2) when the name matches no group or several.
   */
  listGroupMembers(group: string, signal?: AbortSignal): AsyncGenerator<DirectoryUser, void, undefined> {
    return listGroupUsers(this.client, group, signal ? { signal } : {});
  }

  /**
   * Gets creation options for the user. The origin is the one a browser on the rp's sign-in
   * page would report, `https://<rp id>` for the rp id Graph sent (see cloud.ts).
   */
  async creationOptions(user: DirectoryUser, signal?: AbortSignal): Promise<RegistrationChallenge> {
    if (this.client.version === "beta") this.#refuseSelf(user, "get passkey creation options");
    if (!this.cloud.provisioningApi) {
      throw new ProvisioningError(
        "provisioning-api-unavailable",
        `Cannot get passkey creation options for ${user.userPrincipalName}: Microsoft does not offer the passkey provisioning API in ${this.cloud.label}`,
        { hint: "Use the browser path (Temporary Access Pass), which works in every cloud" },
      );
    }
    const timeout = this.#options.challengeTimeoutInMinutes;
    const options = await this.#explainRefusal(
      () =>
        getCreationOptions(this.client, user, {
          ...(timeout === undefined ? {} : { challengeTimeoutInMinutes: timeout }),
          ...(signal ? { signal } : {}),
        }),
      "fido2",
      {},
      signal,
    );
    return {
      options: options.response,
      origin: this.cloud.originFor(options.rpId),
      ...(options.expiresAt ? { expiresAt: options.expiresAt } : {}),
    };
  }

  /** Registers the credential (RegistrationResponseJSON) as the user's passkey. */
  async registerPasskey(
    user: DirectoryUser,
    registration: { credential: unknown; displayName: string },
    signal?: AbortSignal,
  ): Promise<PasskeyMethod> {
    if (this.client.version === "beta") this.#refuseSelf(user, "register a passkey");
    const aaguid = aaguidOf(registration.credential);
    const method = await this.#explainRefusal(
      () =>
        registerFido2Method(this.client, user, {
          ...registration,
          ...(signal ? { signal } : {}),
        }),
      "fido2",
      aaguid === undefined ? {} : { keyAaguid: aaguid },
      signal,
    );
    return toPasskeyMethod(method);
  }

  /** Graph's display-name rule (1–30 characters), checked before the authenticator is touched. */
  checkDisplayName(displayName: string, user: DirectoryUser): string {
    return checkDisplayName(displayName, user.userPrincipalName);
  }

  /** The user's passkeys. */
  async listPasskeys(user: DirectoryUser, signal?: AbortSignal): Promise<PasskeyMethod[]> {
    const methods = await listFido2Methods(this.client, user, signal ? { signal } : {});
    return methods.map(toPasskeyMethod);
  }

  /** Deletes one of the user's passkeys; a passkey that is already gone is not an error. */
  async deletePasskey(user: DirectoryUser, methodId: string, signal?: AbortSignal): Promise<void> {
    await deleteFido2Method(this.client, user, methodId, signal ? { signal } : {});
  }

  /** Creates a (one-time, by default) Temporary Access Pass for the browser path. */
  async createTemporaryAccessPass(
    user: DirectoryUser,
    options: CreateTapOptions = {},
  ): Promise<TemporaryAccessPass> {
    this.#refuseSelf(user, "create a Temporary Access Pass");
    return await this.#explainRefusal(
      () => createTemporaryAccessPass(this.client, user, options),
      "tap",
      {},
      options.signal,
    );
  }

  /** Deletes a Temporary Access Pass; returns false when it was already gone. */
  async deleteTemporaryAccessPass(
    user: DirectoryUser,
    methodId: string,
    signal?: AbortSignal,
  ): Promise<boolean> {
    return await deleteTemporaryAccessPass(this.client, user, methodId, signal ? { signal } : {});
  }

  /** Deletes a Temporary Access Pass the browser path left (ProviderSession.deleteSignInPass). */
  async deleteSignInPass(user: DirectoryUser, passId: string, signal?: AbortSignal): Promise<void> {
    await this.deleteTemporaryAccessPass(user, passId, signal);
  }

  /** Reads the policies and says what will fail (`provisioning doctor`). */
  async preflight(options: RunPreflightOptions): Promise<PreflightFinding[]> {
    return await runPreflight(this.client, options);
  }

  /** Runs the `onClose` hook. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#options.onClose?.();
  }

  /**
   * Runs a call; when Graph refuses it with a 400 or 403, reads the policy back and explains the
   * refusal by the setting that causes it (errors.ts), Graph's message and request-id kept.
   */
  async #explainRefusal<T>(
    call: () => Promise<T>,
    policy: "fido2" | "tap",
    known: PolicyFacts,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (!(error instanceof GraphError) || (error.status !== 400 && error.status !== 403)) throw error;
      const facts = await this.#policyFacts(policy, signal);
      throw explainWithPolicy(error, { ...facts, ...known });
    }
  }

  /**
   * The policy as read at most a minute ago: a bulk run whose users are all refused reads it once
   * a minute, not once per user, and still sees an admin's fix soon.
   */
  async #policyFacts(policy: "fido2" | "tap", signal: AbortSignal | undefined): Promise<PolicyFacts> {
    const cached = this.#policyCache.get(policy);
    if (cached && Date.now() - cached.readAt < 60_000) return await cached.facts;
    const facts = readPolicyFacts(this.client, policy, signal ? { signal } : {});
    this.#policyCache.set(policy, { readAt: Date.now(), facts });
    try {
      return await facts;
    } catch (error) {
      this.#policyCache.delete(policy);
      throw error;
    }
  }

  #refuseSelf(user: DirectoryUser, action: string): void {
    const self = this.#options.signedInUserId;
    if (self !== undefined && self.toLowerCase() === user.id.toLowerCase()) {
      throw new ProvisioningError(
        "self-provisioning",
        `Cannot ${action} for ${user.userPrincipalName}: it is the signed-in admin's own account, and Graph's beta pages say self-service operations are not supported`,
        {
          hint:
            "Have another admin provision this account, or register the passkey yourself at https://mysignins.microsoft.com",
        },
      );
    }
  }
}

/** The AAGUID in a RegistrationResponseJSON's attestation object, or undefined when unreadable. */
function aaguidOf(credential: unknown): string | undefined {
  try {
    const text = (credential as { response?: { attestationObject?: unknown } })?.response?.attestationObject;
    if (typeof text !== "string") return undefined;
    const attestation = decodeCbor(fromBase64Any(text)) as { authData?: unknown };
    if (!(attestation.authData instanceof Uint8Array)) return undefined;
    const aaguid = decodeAuthenticatorData(attestation.authData).attestedCredentialData?.aaguid;
    return aaguid === undefined ? undefined : formatAaguid(aaguid);
  } catch {
    return undefined;
  }
}

function toPasskeyMethod(method: Fido2MethodJson): PasskeyMethod {
  return {
    id: method.id,
    ...(method.displayName == null ? {} : { displayName: method.displayName }),
    ...(method.aaGuid == null ? {} : { aaguid: method.aaGuid.toLowerCase() }),
    ...(method.createdDateTime == null ? {} : { createdDateTime: method.createdDateTime }),
    ...(method.model == null ? {} : { model: method.model }),
  };
}
