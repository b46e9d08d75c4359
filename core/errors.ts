/**
 * The one base error of the tool. Its `code` is machine-readable: it becomes the reason code in
 * failures.csv and in `--log-format json`. Subclasses per domain carry their own context.
 *
 * Messages follow "Cannot <action>: <state>", values quoted, and end with a hint where one helps.
 *
 * @example
 * ```ts
 * import { ProvisioningError } from "./errors.ts";
 * const error = new ProvisioningError("vault-locked", "Cannot open vault \"key.vault\": the passphrase is wrong");
 * console.assert(error.code === "vault-locked");
 * ```
 */
export class ProvisioningError extends Error {
  /** Stable, kebab-case reason code (e.g. `pin-blocked`, `rp-id-not-allowed`). */
  readonly code: string;
  /** What the admin can do about it, when there is something. */
  readonly hint: string | undefined;
  /** The process exit code this error should end the program with when it reaches the top. */
  readonly exitCode: number;
  /**
   * True when the same step may well succeed if tried again later (a server error, a lost
   * connection, throttling): the bulk engine retries such failures before reporting them.
   */
  readonly retryable: boolean;

  constructor(
    code: string,
    message: string,
    options: { cause?: unknown; hint?: string; exitCode?: number; retryable?: boolean } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
    this.retryable = options.retryable ?? false;
  }
}

/** A usage error (bad flag, bad argument): ends the program with exit code 2. */
export class UsageError extends ProvisioningError {
  constructor(message: string, options: { cause?: unknown; hint?: string } = {}) {
    super("usage", message, { ...options, exitCode: 2 });
  }
}

/** Renders an unknown thrown value as one line, for the top-level handler and logs. */
export function describeError(error: unknown): string {
  if (error instanceof ProvisioningError) {
    return error.hint ? `${error.message}. ${error.hint}` : error.message;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}
