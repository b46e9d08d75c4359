/**
 * The check a security key passes before it leaves the desk: a fresh challenge signed with the new
 * credential on the key that made it, verified with the public key of the registration. It proves
 * the key holds the credential the provider got (or is about to get), with its PIN as set.
 *
 * Used by the bulk engine's station path (after registering) and by `batch write` (offline, before
 * the batch is registered).
 *
 * @module
 */
import { toBase64Url } from "../bytes.ts";
import type { Authenticator, UserInteraction } from "../plugin.ts";
import { get } from "../webauthn/get.ts";
import type { RegistrationResponseJSON } from "../webauthn/json.ts";
import { verifyAssertion } from "../webauthn/verify_assertion.ts";

/** What {@link checkWithTestAssertion} needs. */
export interface TestAssertionOptions {
  /** The registration the key made (its public key is what the signature is checked with). */
  readonly registration: RegistrationResponseJSON;
  /** The rp id and origin the registration ran for. */
  readonly rpId: string;
  readonly origin: string;
  /** rp ids the provider allows: the WebAuthn client refuses any other before the key is touched. */
  readonly allowedRpIds: readonly string[];
  readonly authenticator: Authenticator;
  /** Answers the key's PIN prompt. */
  readonly interaction: UserInteraction;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Signs a random challenge with the registration's credential and verifies the signature.
 *
 * @throws {ProvisioningError} from the WebAuthn client (PIN, no credential) or the verifier.
 */
export async function checkWithTestAssertion(options: TestAssertionOptions): Promise<void> {
  const challenge = toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
  const assertion = await get({
    options: {
      challenge,
      rpId: options.rpId,
      allowCredentials: [{ type: "public-key", id: options.registration.id }],
      userVerification: "preferred",
      timeout: 120_000,
    },
    origin: options.origin,
    allowedRpIds: options.allowedRpIds,
    authenticator: options.authenticator,
    interaction: options.interaction,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  await verifyAssertion({
    assertion,
    registration: options.registration,
    challenge,
    origin: options.origin,
    rpId: options.rpId,
  });
}
