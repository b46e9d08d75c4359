/**
 * Authenticator PINs for commands: from `PROVISIONING_KEY_PIN` for unattended runs, else asked
 * on the terminal without echo.
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";
import type { UserInteraction } from "../plugin.ts";
import type { CliContext } from "./context.ts";

/** The environment variable that supplies the authenticator PIN to unattended runs. */
export const keyPinEnv = "PROVISIONING_KEY_PIN";

/**
 * The context's interaction, answering PIN prompts from PROVISIONING_KEY_PIN when it is set. A
 * fixed PIN cannot get better by asking again: when the key refused it for this ceremony and asks
 * once more (`refused`), this fails with `pin-invalid` instead of spending the key's retries until
 * it locks. A lower `attemptsLeft` alone is not a refusal: another process sharing the key (two
 * runs on one vault) lowers it while it checks its own PIN.
 */
export function pinFromEnvironment(context: CliContext): UserInteraction {
  const pin = context.env(keyPinEnv);
  if (!pin) return context.interaction;
  return {
    requestPin: ({ label, attemptsLeft, refused }) => {
      if (refused === true) {
        return Promise.reject(
          new ProvisioningError("pin-invalid", `Cannot use the PIN in ${keyPinEnv}: ${label} refused it`, {
            hint: `Set the key's PIN in ${keyPinEnv}${
              attemptsLeft === undefined
                ? ""
                : `; ${attemptsLeft} attempt${attemptsLeft === 1 ? "" : "s"} left before the key locks`
            }`,
          }),
        );
      }
      return Promise.resolve(pin);
    },
    promptUserPresence: (label) => context.interaction.promptUserPresence(label),
  };
}

/** The environment variable that supplies the new PIN `key prepare --new-pin ask` sets, unattended. */
export const newKeyPinEnv = "PROVISIONING_NEW_KEY_PIN";
