/**
 * Typed failures of the WebAuthn client. Each names what happened, for which rp, and what to do;
 * its `code` is the reason code a bulk run writes to failures.csv.
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";
import { CtapError, CtapStatus } from "../ctap/status.ts";

/** Base of the WebAuthn client's errors. */
export class WebAuthnError extends ProvisioningError {
  /** The rp id the ceremony was for. */
  readonly rpId: string | undefined;
  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; hint?: string; rpId?: string } = {},
  ) {
    super(code, message, options);
    this.rpId = options.rpId;
  }
}

/** What to say about a CTAP status in a WebAuthn ceremony: reason code, message, hint. */
const ctapMeanings: Readonly<Record<number, { code: string; message: string; hint?: string }>> = {
  [CtapStatus.CTAP2_ERR_CREDENTIAL_EXCLUDED]: {
    code: "credential-excluded",
    message: "the authenticator already holds a credential for this account (it is in excludeCredentials)",
    hint: "The user is already registered with this key; delete the old passkey first to replace it",
  },
  [CtapStatus.CTAP2_ERR_PIN_INVALID]: {
    code: "pin-invalid",
    message: "the PIN is wrong",
    hint: "Check the PIN; the key blocks itself after 8 wrong PINs",
  },
  [CtapStatus.CTAP2_ERR_PIN_BLOCKED]: {
    code: "pin-blocked",
    message: "the key's PIN is blocked",
    hint: "Only a factory reset (which erases every credential on it) makes the key usable again",
  },
  [CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED]: {
    code: "pin-auth-blocked",
    message: "three wrong PINs in a row: the key refuses PINs until it is unplugged",
    hint: "Unplug and re-insert the key, then try again with the right PIN",
  },
  [CtapStatus.CTAP2_ERR_PIN_NOT_SET]: {
    code: "pin-not-set",
    message: "user verification is required but the key has no PIN",
    hint: "Set a PIN on the key first (`provisioning key set-pin`, or the key vendor's tool)",
  },
  [CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION]: {
    code: "pin-policy-violation",
    message: "the key's PIN policy refused the request (a PIN change may be required)",
    hint: "Change the key's PIN to one that meets its minimum length, then try again",
  },
  [CtapStatus.CTAP2_ERR_UNSUPPORTED_ALGORITHM]: {
    code: "unsupported-algorithm",
    message: "the authenticator supports none of the requested algorithms",
    hint: "Use an authenticator that supports ES256 (every FIDO2 key does) or widen pubKeyCredParams",
  },
  [CtapStatus.CTAP2_ERR_KEY_STORE_FULL]: {
    code: "key-store-full",
    message: "the authenticator has no room for another discoverable credential",
    hint: "Delete unused passkeys from the key (`provisioning key delete`) or use another key",
  },
  [CtapStatus.CTAP2_ERR_OPERATION_DENIED]: {
    code: "user-denied",
    message: "the user did not confirm on the authenticator",
  },
  [CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL]: { code: "cancelled", message: "the operation was cancelled" },
  [CtapStatus.CTAP2_ERR_USER_ACTION_TIMEOUT]: {
    code: "timeout",
    message: "nobody touched the key in time",
    hint: "Touch the key when it blinks",
  },
  [CtapStatus.CTAP2_ERR_NO_CREDENTIALS]: {
    code: "no-credentials",
    message: "the authenticator holds no credential for this rp",
  },
};

/**
 * Turns an error from the authenticator into a {@link WebAuthnError} that says what it means for
 * this ceremony. Errors that are already ours pass through unchanged.
 */
export function explainCeremonyError(error: unknown, ceremony: "create" | "get", rpId: string): unknown {
  if (error instanceof WebAuthnError) return error;
  const action = ceremony === "create" ? "create a passkey" : "sign in with a passkey";
  if (error instanceof CtapError) {
    const meaning = ctapMeanings[error.status];
    if (meaning) {
      return new WebAuthnError(meaning.code, `Cannot ${action} for rp "${rpId}": ${meaning.message}`, {
        cause: error,
        rpId,
        ...(meaning.hint ? { hint: meaning.hint } : {}),
      });
    }
    return new WebAuthnError(error.code, `Cannot ${action} for rp "${rpId}": ${error.message}`, {
      cause: error,
      rpId,
    });
  }
  if (error instanceof DOMException && (error.name === "TimeoutError" || error.name === "AbortError")) {
    const timeout = error.name === "TimeoutError";
    return new WebAuthnError(
      timeout ? "timeout" : "cancelled",
      `Cannot ${action} for rp "${rpId}": ${
        timeout ? "the ceremony timed out" : "the ceremony was cancelled"
      }`,
      { cause: error, rpId, ...(timeout ? { hint: "Touch the key sooner, or raise the timeout" } : {}) },
    );
  }
  return error;
}
