/**
 * CTAP status codes and the error that carries one.
 *
 * The values are those of CTAP 2.1 §8.2 "Status codes"
 * (https://fidoalliance.org/specs/fido-v2.1-ps-20210615/fido-client-to-authenticator-protocol-v2.1-ps-20210615.html#error-responses).
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";

/** Every CTAP 2.1 status code, by its spec name. */
export const CtapStatus = {
  CTAP2_OK: 0x00,
  CTAP1_ERR_INVALID_COMMAND: 0x01,
  CTAP1_ERR_INVALID_PARAMETER: 0x02,
  CTAP1_ERR_INVALID_LENGTH: 0x03,
  CTAP1_ERR_INVALID_SEQ: 0x04,
  CTAP1_ERR_TIMEOUT: 0x05,
  CTAP1_ERR_CHANNEL_BUSY: 0x06,
  CTAP1_ERR_LOCK_REQUIRED: 0x0a,
  CTAP1_ERR_INVALID_CHANNEL: 0x0b,
  CTAP2_ERR_CBOR_UNEXPECTED_TYPE: 0x11,
  CTAP2_ERR_INVALID_CBOR: 0x12,
  CTAP2_ERR_MISSING_PARAMETER: 0x14,
  CTAP2_ERR_LIMIT_EXCEEDED: 0x15,
  CTAP2_ERR_FP_DATABASE_FULL: 0x17,
  CTAP2_ERR_LARGE_BLOB_STORAGE_FULL: 0x18,
  CTAP2_ERR_CREDENTIAL_EXCLUDED: 0x19,
  CTAP2_ERR_PROCESSING: 0x21,
  CTAP2_ERR_INVALID_CREDENTIAL: 0x22,
  CTAP2_ERR_USER_ACTION_PENDING: 0x23,
  CTAP2_ERR_OPERATION_PENDING: 0x24,
  CTAP2_ERR_NO_OPERATIONS: 0x25,
  CTAP2_ERR_UNSUPPORTED_ALGORITHM: 0x26,
  CTAP2_ERR_OPERATION_DENIED: 0x27,
  CTAP2_ERR_KEY_STORE_FULL: 0x28,
  CTAP2_ERR_UNSUPPORTED_OPTION: 0x2b,
  CTAP2_ERR_INVALID_OPTION: 0x2c,
  CTAP2_ERR_KEEPALIVE_CANCEL: 0x2d,
  CTAP2_ERR_NO_CREDENTIALS: 0x2e,
  CTAP2_ERR_USER_ACTION_TIMEOUT: 0x2f,
  CTAP2_ERR_NOT_ALLOWED: 0x30,
  CTAP2_ERR_PIN_INVALID: 0x31,
  CTAP2_ERR_PIN_BLOCKED: 0x32,
  CTAP2_ERR_PIN_AUTH_INVALID: 0x33,
  CTAP2_ERR_PIN_AUTH_BLOCKED: 0x34,
  CTAP2_ERR_PIN_NOT_SET: 0x35,
  CTAP2_ERR_PUAT_REQUIRED: 0x36,
  CTAP2_ERR_PIN_POLICY_VIOLATION: 0x37,
  CTAP2_ERR_REQUEST_TOO_LARGE: 0x39,
  CTAP2_ERR_ACTION_TIMEOUT: 0x3a,
  CTAP2_ERR_UP_REQUIRED: 0x3b,
  CTAP2_ERR_UV_BLOCKED: 0x3c,
  CTAP2_ERR_INTEGRITY_FAILURE: 0x3d,
  CTAP2_ERR_INVALID_SUBCOMMAND: 0x3e,
  CTAP2_ERR_UV_INVALID: 0x3f,
  CTAP2_ERR_UNAUTHORIZED_PERMISSION: 0x40,
  CTAP1_ERR_OTHER: 0x7f,
  CTAP2_ERR_SPEC_LAST: 0xdf,
  CTAP2_ERR_EXTENSION_FIRST: 0xe0,
  CTAP2_ERR_EXTENSION_LAST: 0xef,
  CTAP2_ERR_VENDOR_FIRST: 0xf0,
  CTAP2_ERR_VENDOR_LAST: 0xff,
} as const;

/** A status code name, e.g. `"CTAP2_ERR_PIN_INVALID"`. */
export type CtapStatusName = keyof typeof CtapStatus;

const namesByCode = new Map<number, CtapStatusName>(
  (Object.entries(CtapStatus) as [CtapStatusName, number][]).map(([name, code]) => [code, name]),
);

/** The spec name of a status code, or `UNKNOWN` for a code the spec does not name. */
export function ctapStatusName(code: number): CtapStatusName | "UNKNOWN" {
  return namesByCode.get(code) ?? "UNKNOWN";
}

/**
 * An authenticator answered with a status other than CTAP2_OK. Unknown codes are kept.
 * The authenticator side throws it too, to answer a command with that status.
 *
 * @example
 * ```ts
 * import { CtapError, CtapStatus } from "./status.ts";
 * const error = new CtapError(CtapStatus.CTAP2_ERR_PIN_INVALID);
 * console.assert(error.message === "CTAP error: 0x31 - PIN_INVALID");
 * ```
 */
export class CtapError extends ProvisioningError {
  /** The raw status byte. */
  readonly status: number;
  /** The spec name of the status, or `UNKNOWN`. */
  readonly statusName: CtapStatusName | "UNKNOWN";

  constructor(status: number, detail?: string, options: { cause?: unknown } = {}) {
    const name = ctapStatusName(status);
    const short = name.replace(/^CTAP[12]_(ERR_)?/, "");
    super(
      `ctap-${short.toLowerCase().replaceAll("_", "-")}`,
      `CTAP error: 0x${status.toString(16).padStart(2, "0")} - ${short}${detail ? ` (${detail})` : ""}`,
      options,
    );
    this.status = status;
    this.statusName = name;
  }
}
