/**
 * The API provisioning path for one user, for every provider: creation options from the
 * provider, a WebAuthn registration on the chosen authenticator (core/webauthn/create.ts, with
 * the session's rp-id allow-list and origin), and the registration posted back
 * (`provisioning provision --user UPN`). Only the contracts of core/plugin.ts are used; the bulk
 * engine builds on the same steps.
 *
 * Every failure keeps the user's UPN in its message and its reason code in `code`. A registration
 * that failed in any way (its answer lost, `outcome-unknown`, or refused) is reconciled by listing
 * the user's passkeys before it is reported, so that a user holding the passkey is never reported
 * failed and a re-run never creates a second passkey for a first that did get through.
 *
 * @module
 */
import { formatAaguid } from "../aaguid.ts";
import { fromBase64Any } from "../bytes.ts";
import { decodeAuthenticatorData } from "../ctap/auth_data.ts";
import { decodeCbor } from "../ctap/cbor.ts";
import { ProvisioningError } from "../errors.ts";
import type {
  Authenticator,
  DirectoryUser,
  PasskeyMethod,
  ProviderSession,
  RegistrationChallenge,
  UserInteraction,
} from "../plugin.ts";
import { create } from "../webauthn/create.ts";
import { parseCreationOptions, type RegistrationResponseJSON } from "../webauthn/json.ts";
import { effectiveRpId } from "../webauthn/rp_id.ts";

/** The reason code a provider gives a registration whose answer was lost (sent, no reply). */
export const outcomeUnknownCode = "outcome-unknown";

/** What {@link provisionUser} needs. */
export interface ProvisionUserOptions {
  session: ProviderSession;
  /** A resolved user, or a reference (object id, UPN, mail) to resolve first. */
  user: DirectoryUser | string;
  authenticator: Authenticator;
  interaction: UserInteraction;
  /** The passkey's name in the user's security info: 1 to 30 characters. */
  displayName: string;
  signal?: AbortSignal;
  /**
   * The ids of the passkeys the user had before: a registration whose answer was lost is then
   * reconciled by looking for a new passkey among the listed ones, not by display name and time.
   */
  existingMethodIds?: readonly string[];
  /**
   * Called at each transition, before the next network call; the bulk engine journals (and
   * fsyncs) the transition here, so a crash at any instant leaves a state it can resume from.
   */
  onTransition?: (transition: ProvisionTransition) => Promise<void>;
  /**
   * Creation options already asked for (the bulk engine asks while it lists the user's passkeys);
   * without it they are asked for here. A rejection is reported as the creation-options step.
   */
  challenge?: Promise<RegistrationChallenge>;
  /**
   * Runs the WebAuthn ceremony with the authenticator to itself: a key does one ceremony at a time
   * (a new PIN token voids the one another ceremony holds), so concurrent users of one key must
   * take turns. The bulk engine passes a lock; one user at a time needs none.
   */
  exclusive?: <T>(run: () => Promise<T>) => Promise<T>;
}

/** A step of {@link provisionUser} completed; see {@link ProvisionUserOptions.onTransition}. */
export type ProvisionTransition =
  | { readonly state: "options" }
  | {
    /** The authenticator made the credential; the registration is about to be sent. */
    readonly state: "created";
    /** Empty on the browser path, where the page makes the credential after this point. */
    readonly credentialId: string;
    readonly createdAt: Date;
    readonly displayName: string;
  }
  | {
    readonly state: "registered";
    readonly methodId: string;
    readonly aaguid: string | undefined;
    readonly reconciled: boolean;
  };

/** What one provisioned user ends with. */
export interface ProvisionedPasskey {
  readonly user: DirectoryUser;
  /** The provider's id of the new passkey (fido2AuthenticationMethod id). */
  readonly methodId: string;
  /** The credential id, base64url. */
  readonly credentialId: string;
  /** The authenticator's AAGUID, lowercase UUID, as the provider reported it (else from the attestation). */
  readonly aaguid: string | undefined;
  /** True when the registration's answer was lost and the passkey was found by listing. */
  readonly reconciled: boolean;
  /** The registration as the authenticator made it (public key, attestation object). */
  readonly registration: RegistrationResponseJSON;
  /** The origin and rp id the ceremony ran for: a test assertion uses the same. */
  readonly origin: string;
  readonly rpId: string;
}

/** The step of {@link provisionUser} that failed. */
export type ProvisionStep = "resolve-user" | "creation-options" | "authenticator" | "register";

/** A provisioning failure for one user that did not already name them; `cause` is the original. */
export class UserProvisioningError extends ProvisioningError {
  /** The user (or the reference, if it never resolved). */
  readonly user: DirectoryUser | string;
  /** Where it failed: before, at or after the authenticator. */
  readonly step: ProvisionStep;

  constructor(user: DirectoryUser | string, step: ProvisionStep, error: ProvisioningError) {
    const name = typeof user === "string" ? user : user.userPrincipalName;
    super(error.code, `Cannot provision a passkey for ${name}: ${error.message}`, {
      cause: error,
      exitCode: error.exitCode,
      retryable: error.retryable,
      ...(error.hint === undefined ? {} : { hint: error.hint }),
    });
    this.user = user;
    this.step = step;
  }
}

/**
 * Runs the API path for one user: resolve (when given a reference) → creation options → WebAuthn
 * create → register. The display name is checked before the authenticator is touched.
 *
 * @throws {ProvisioningError} whose message names the user: the provider's error as is, or a {@link UserProvisioningError} wrapping the WebAuthn client's error
 * (`rp-id-not-allowed`, `pin-invalid` …).
 */
export async function provisionUser(options: ProvisionUserOptions): Promise<ProvisionedPasskey> {
  const { session, signal } = options;
  const user = typeof options.user === "string"
    ? await step(options.user, "resolve-user", () => session.resolveUser(options.user as string, signal))
    : options.user;
  const displayName = await step(
    user,
    "creation-options",
    () => Promise.resolve(session.checkDisplayName?.(options.displayName, user) ?? options.displayName),
  );
  const challenge = await step(
    user,
    "creation-options",
    () => options.challenge ?? session.creationOptions(user, signal),
  );
  await options.onTransition?.({ state: "options" });
  const exclusive = options.exclusive ?? ((run) => run());
  const credential: RegistrationResponseJSON = await step(
    user,
    "authenticator",
    () =>
      exclusive(() =>
        create({
          options: challenge.options,
          origin: challenge.origin,
          allowedRpIds: session.allowedRpIds,
          authenticator: options.authenticator,
          interaction: options.interaction,
          ...(signal ? { signal } : {}),
        })
      ),
  );

  const since = new Date();
  await options.onTransition?.({
    state: "created",
    credentialId: credential.id,
    createdAt: since,
    displayName,
  });
  let method: PasskeyMethod;
  let reconciled = false;
  try {
    method = await step(
      user,
      "register",
      () => session.registerPasskey(user, { credential, displayName }, signal),
    );
  } catch (error) {
    // No failure of the POST is final before a listing: its answer may have been lost, or a copy
    // the runtime sent again may have been refused ("challenge already used") after the first got
    // through. Only an abort skips the look. Without the ids the user had before, only a lost
    // answer is looked for (by name and time), so that an older passkey is not taken for the new one.
    if (!(error instanceof ProvisioningError)) throw error;
    if (error.code !== outcomeUnknownCode && options.existingMethodIds === undefined) throw error;
    const found = await reconcileRegistration({
      session,
      user,
      displayName,
      since,
      ...(options.existingMethodIds ? { existingMethodIds: options.existingMethodIds } : {}),
      ...(signal ? { signal } : {}),
    })
      .catch(() => undefined);
    if (found === undefined) throw error;
    method = found;
    reconciled = true;
  }
  const aaguid = method.aaguid ?? aaguidOfRegistration(credential);
  await options.onTransition?.({ state: "registered", methodId: method.id, aaguid, reconciled });
  return {
    user,
    methodId: method.id,
    credentialId: credential.id,
    aaguid,
    reconciled,
    registration: credential,
    origin: challenge.origin,
    rpId: effectiveRpId(parseCreationOptions(challenge.options).rp.id, challenge.origin),
  };
}

/**
 * After a registration whose answer was lost: the user's passkey with this display name created
 * since `since` (less five minutes of clock skew), if Graph has it. Graph does not show credential
 * ids, so the display name and the time are what identify it; when the ids the user had before
 * are known (`existingMethodIds`), any other passkey with the display name is the one, whatever
 * the clocks say.
 *
 * This is the hook the bulk engine uses before retrying a job that stopped in the `registering`
 * state: found means done, not found means the registration never happened and may be retried
 * with a new challenge.
 */
export async function reconcileRegistration(options: {
  session: ProviderSession;
  user: DirectoryUser;
  displayName: string;
  since: Date;
  existingMethodIds?: readonly string[];
  signal?: AbortSignal;
}): Promise<PasskeyMethod | undefined> {
  const skewMs = 5 * 60_000;
  const methods = await options.session.listPasskeys(options.user, options.signal);
  const existing = options.existingMethodIds ? new Set(options.existingMethodIds) : undefined;
  const candidates = methods.filter((m) =>
    m.displayName === options.displayName &&
    (existing
      ? !existing.has(m.id)
      : m.createdDateTime === undefined || Date.parse(m.createdDateTime) >= options.since.getTime() - skewMs)
  );
  candidates.sort((a, b) => Date.parse(b.createdDateTime ?? "") - Date.parse(a.createdDateTime ?? ""));
  return candidates[0];
}

/** The AAGUID in a registration's attestation object, when it can be read. */
export function aaguidOfRegistration(credential: RegistrationResponseJSON): string | undefined {
  try {
    const attestation = decodeCbor(fromBase64Any(credential.response.attestationObject));
    const authData = attestation instanceof Map
      ? attestation.get("authData")
      : (attestation as Record<string, unknown> | null)?.["authData"];
    if (!(authData instanceof Uint8Array)) return undefined;
    const aaguid = decodeAuthenticatorData(authData).attestedCredentialData?.aaguid;
    return aaguid ? formatAaguid(aaguid) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs one step; a ProvisioningError that does not name the user is wrapped so that it does. */
async function step<T>(user: DirectoryUser | string, name: ProvisionStep, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (!(error instanceof ProvisioningError)) throw error;
    const upn = typeof user === "string" ? user : user.userPrincipalName;
    if (error.message.includes(upn)) throw error;
    throw new UserProvisioningError(user, name, error);
  }
}
