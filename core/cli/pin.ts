/**
 * Authenticator PINs for commands: from `PROVISIONING_KEY_PIN` for unattended runs, else asked
 * on the terminal without echo.
 *
 * @module
 */
import type { UserInteraction } from "../plugin.ts";
import type { CliContext } from "./context.ts";

/** The environment variable that supplies the authenticator PIN to unattended runs. */
export const keyPinEnv = "PROVISIONING_KEY_PIN";

/** The context's interaction, answering PIN prompts from PROVISIONING_KEY_PIN when it is set. */
export function pinFromEnvironment(context: CliContext): UserInteraction {
  const pin = context.env(keyPinEnv);
  if (!pin) return context.interaction;
  return {
    requestPin: () => Promise.resolve(pin),
    promptUserPresence: (label) => context.interaction.promptUserPresence(label),
  };
}

/** The environment variable that supplies the new PIN `key prepare --new-pin ask` sets, unattended. */
export const newKeyPinEnv = "PROVISIONING_NEW_KEY_PIN";
