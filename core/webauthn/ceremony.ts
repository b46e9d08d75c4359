/**
 * What `create` and `get` share around the CTAP exchange: the ceremony's time limit joined with
 * the caller's Ctrl+C, failures explained for the admin, and touch prompts from keep-alives.
 *
 * @module
 */
import type { KeepaliveStatus } from "../ctap/device.ts";
import type { UserInteraction } from "../plugin.ts";
import { explainCeremonyError, WebAuthnError } from "./errors.ts";

/**
 * Runs one ceremony under `timeoutMs` and the caller's `signal`; whatever it throws comes out as
 * a {@link WebAuthnError} that says what it means for `rpId` (a timeout as `timeout`, Ctrl+C as
 * `cancelled`, CTAP statuses by name).
 */
export async function runCeremony<T>(
  kind: "create" | "get",
  rpId: string,
  limits: { timeoutMs: number; signal: AbortSignal | undefined },
  run: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(limits.timeoutMs),
    ...(limits.signal ? [limits.signal] : []),
  ]);
  try {
    return await run(signal);
  } catch (error) {
    const cause = signal.aborted && !(error instanceof WebAuthnError) ? signal.reason : error;
    throw explainCeremonyError(cause, kind, rpId);
  }
}

/** The keep-alive handler that asks the operator to touch the key when it waits for presence. */
export function promptOnKeepalive(
  interaction: UserInteraction,
  label: string,
): (status: KeepaliveStatus) => void {
  return (status) => {
    if (status === "user-presence-needed") interaction.promptUserPresence(label);
  };
}
