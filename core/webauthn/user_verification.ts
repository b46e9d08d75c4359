/**
 * Deciding whether a ceremony verifies the user, and getting the PIN token when it does — the
 * part of a browser's WebAuthn client that asks "enter your security key PIN". Shared by
 * {@link create} and {@link get}.
 *
 * @module
 */
import type { Ctap2Client, PinToken } from "../ctap/client.ts";
import { CtapError, CtapStatus } from "../ctap/status.ts";
import type { UserInteraction } from "../plugin.ts";
import { WebAuthnError } from "./errors.ts";

/** WebAuthn's userVerification requirement; unknown values count as "preferred", as in browsers. */
export type UserVerificationRequirement = "required" | "preferred" | "discouraged";

/** Most PIN prompts per ceremony before giving up, so a wrong PIN from a file cannot burn retries. */
const maxPinPrompts = 3;

/**
 * Returns a pinUvAuthToken for `permission` on `rpId` when the ceremony should verify the user,
 * or `undefined` when it should not (or cannot and need not).
 *
 * - The key has a PIN: verify when the rp asks for `required` or `preferred`, or when the
 *   authenticator would refuse without it (`mustVerify`, e.g. a discoverable credential).
 * - The key has no PIN: `required` fails with `pin-not-set`; otherwise go on without.
 */
export async function obtainPinToken(request: {
  client: Ctap2Client;
  rpId: string;
  permission: number;
  userVerification: UserVerificationRequirement;
  mustVerify: boolean;
  interaction: UserInteraction;
  label: string;
}): Promise<PinToken | undefined> {
  const info = await request.client.getInfo();
  const pinSet = info.options?.["clientPin"] === true;
  if (!pinSet) {
    if (request.userVerification === "required") {
      throw new WebAuthnError(
        "pin-not-set",
        `Cannot verify the user for rp "${request.rpId}": ${request.label} has no PIN and no other user verification`,
        {
          rpId: request.rpId,
          hint: "Set a PIN on the key first (`provisioning key set-pin`, or the key vendor's tool)",
        },
      );
    }
    return undefined;
  }
  if (request.userVerification === "discouraged" && !request.mustVerify) return undefined;

  for (let prompt = 1;; prompt++) {
    const { retries } = await request.client.getPinRetries();
    const pin = await request.interaction.requestPin({
      label: request.label,
      attemptsLeft: retries,
      ...(prompt > 1 ? { refused: true } : {}),
    });
    try {
      return await request.client.getPinToken({ pin, permissions: request.permission, rpId: request.rpId });
    } catch (error) {
      const wrong = error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_INVALID;
      if (!wrong || prompt >= maxPinPrompts) throw error;
    }
  }
}

/** Reads a userVerification value the way browsers do: unknown values mean "preferred". */
export function userVerificationOf(value: string | undefined): UserVerificationRequirement {
  return value === "required" || value === "discouraged" ? value : "preferred";
}
