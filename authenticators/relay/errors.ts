/**
 * The errors of on-behalf registration, each with a hint that says what to do. The codes are
 * reason codes for failures.csv and the same on the relay, the agent and the admin's side.
 *
 * @module
 */
import { ProvisioningError } from "../../core/errors.ts";

/** What each code means for the admin: the hint, and whether a later retry may work. */
const known: Readonly<Record<string, { hint: string; retryable?: boolean }>> = {
  "relay-unreachable": {
    hint: "Check the relay URL and that `provisioning relay` is running and reachable from this machine",
    retryable: true,
  },
  "admin-token-invalid": { hint: "Use a token the relay is configured with (PROVISIONING_RELAY_TOKEN)" },
  "obr-not-granted": {
    hint:
      "Turn OBR on for this user (the panel's OBR switch) before registering onto their key; it ends by itself",
  },
  "key-not-paired": {
    hint: "The user pairs their key agent first (`provisioning key agent pair` with a code from the relay)",
  },
  "pairing-record-invalid": {
    hint:
      "The key agent's pairing record is damaged: pair again (`provisioning key agent pair`) with a new code",
  },
  "agent-key-mismatch": {
    hint:
      "The relay named a key for this user that differs from the pinned one: re-pair the user's key agent, " +
      "or stop using this relay",
  },
  "agent-offline": {
    hint:
      "The user's key agent is not connected: ask the user to start `provisioning key agent`, then retry (or queue the user)",
    retryable: true,
  },
  "admin-not-trusted": {
    hint: "The user's key agent does not trust this admin's key: add it to the agent's admin list",
  },
  "user-denied": { hint: "The user refused the request on their key agent; ask them before trying again" },
  "approval-timeout": {
    hint: "The user did not answer on their key agent in time; retry when they are at their device",
    retryable: true,
  },
  "obr-refused-by-policy": { hint: "The organisation's OBR policy for this agent is `refuse`" },
  "rp-id-not-allowed": { hint: "The key agent only serves the rp ids on the organisation's list" },
  "command-not-allowed": { hint: "The key agent does not forward this CTAP command over OBR" },
  "relay-timeout": { hint: "The relay or the agent did not answer in time; retry later", retryable: true },
  "relay-tampering": {
    hint:
      "A sealed frame was altered, dropped, replayed or reordered on the way; nothing was accepted. Retry; " +
      "if it happens again, the relay is not trustworthy",
  },
  "relay-closed": { hint: "The relay closed the channel; retry", retryable: true },
  "admin-gone": { hint: "The admin's side disconnected" },
  "too-many-sessions": { hint: "Close other OBR channels of this admin first" },
  "malformed-request": { hint: "The agent could not read the CTAP request; this is a bug, report it" },
};

/** An OBR failure: `code` is one of the codes above (or one the relay or agent sent). */
export class RelayError extends ProvisioningError {
  /** The OBR user the channel was for. */
  readonly user: string | undefined;

  constructor(code: string, message: string, options: { user?: string; cause?: unknown } = {}) {
    const entry = known[code];
    super(code, message, {
      ...(entry ? { hint: entry.hint } : {}),
      retryable: entry?.retryable ?? false,
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.user = options.user;
  }
}
