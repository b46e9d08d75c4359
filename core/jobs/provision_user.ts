/**
 * One user's passkey through a provider's API path: creation options from the provider, the
 * WebAuthn ceremony on the chosen authenticator, the registration back to the provider. Only the
 * contracts of core/plugin.ts are used, so every provider gets it; the bulk engine (one journaled
 * state per step) builds on the same three steps.
 *
 * @example
 * ```ts ignore
 * const result = await provisionUser({ session, user, authenticator, interaction, displayName: "Security key" });
 * console.log(result.methodId, result.credentialId, result.aaguid);
 * ```
 *
 * @module
 */
import { formatAaguid } from "../aaguid.ts";
import { fromBase64Any } from "../bytes.ts";
import { decodeAuthenticatorData } from "../ctap/auth_data.ts";
import { ProvisioningError } from "../errors.ts";
import type { Authenticator, DirectoryUser, PasskeyMethod, ProviderSession, UserInteraction } from "../plugin.ts";
import { create } from "../webauthn/create.ts";

/** What {@link provisionUser} needs. */
export interface ProvisionUserRequest {
  session: ProviderSession;
  user: DirectoryUser;
  authenticator: Authenticator;
  interaction: UserInteraction;
  /** The passkey's name in the directory (Entra: 1–30 characters). */
  displayName: string;
  signal?: AbortSignal;
}

/** What one provisioning produced. */
export interface ProvisionedPasskey {
  user: DirectoryUser;
  method: PasskeyMethod;
  /** base64url credential id. */
  credentialId: string;
  /** The authenticator's AAGUID, as a UUID. */
  aaguid: string;
}

/** See the module documentation. Errors keep the user's sign-in name in their message. */
export async function provisionUser(request: ProvisionUserRequest): Promise<ProvisionedPasskey> {
  const { session, user, signal } = request;
  try {
    const challenge = await session.creationOptions(user, signal);
    const credential = await create({
      options: challenge.options,
      origin: challenge.origin,
      allowedRpIds: session.allowedRpIds,
      authenticator: request.authenticator,
      interaction: request.interaction,
      ...(signal ? { signal } : {}),
      ...(challenge.expiresAt ? { defaultTimeoutMs: Math.max(1, challenge.expiresAt.getTime() - Date.now()) } : {}),
    });
    const method = await session.registerPasskey(user, { credential, displayName: request.displayName }, signal);
    const authData = decodeAuthenticatorData(fromBase64Any(credential.response.authenticatorData ?? ""));
    const aaguid = authData.attestedCredentialData ? formatAaguid(authData.attestedCredentialData.aaguid) : "";
    return { user, method, credentialId: credential.id, aaguid };
  } catch (error) {
    if (error instanceof ProvisioningError && error.message.includes(user.userPrincipalName)) throw error;
    if (error instanceof ProvisioningError) {
      throw new ProvisioningError(error.code, `Cannot provision ${user.userPrincipalName}: ${error.message}`, {
        cause: error,
        exitCode: error.exitCode,
        ...(error.hint ? { hint: error.hint } : {}),
      });
    }
    throw error;
  }
}
