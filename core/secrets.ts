/**
 * Obtaining secrets (vault passphrases, PINs) from the environment or from the person at the
 * terminal, never echoed. An environment variable wins, so scripts and CI need no terminal; without
 * one, the terminal is asked; without a terminal either, the error names the variable to set.
 *
 * The no-echo terminal reader itself is `readSecret` in `cli/terminal.ts`; this module decides
 * where a secret comes from.
 *
 * @module
 */
import type { CliContext, SecretRequest } from "./cli/context.ts";
import { readSecret as readFromTerminal } from "./cli/terminal.ts";
import { ProvisioningError } from "./errors.ts";

/**
 * Where secrets come from: a {@link CliContext} is one (so commands pass their context and tests
 * pass a scripted one).
 */
export type SecretSource = Pick<CliContext, "env" | "readSecret">;

/** The process environment and the process's terminal. */
export const processSecretSource: SecretSource = {
  env: (name) => Deno.env.get(name),
  readSecret: (request: SecretRequest) => readFromTerminal(request),
};

/** Options of {@link readSecret}. */
export interface ReadSecretOptions {
  /** The environment variable that supplies the secret when set (e.g. `PROVISIONING_VAULT_PASSPHRASE`). */
  env?: string;
  /** @default processSecretSource */
  source?: SecretSource;
}

/**
 * Returns the secret named by `label` (shown as the prompt, e.g. `Passphrase for vault "a.vault"`):
 * the environment variable `options.env` when it is set and not empty, else what the person types
 * at the terminal, without echo (Enter ends; Ctrl+C rejects with code `interrupted`, Ctrl+D on an
 * empty line with `cancelled`).
 *
 * @throws {ProvisioningError} code `secret-unavailable` (exit code 2) when the variable is not
 * set and standard input is not a terminal; its hint names the variable.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readSecret } from "./secrets.ts";
 * const source = {
 *   env: (name: string) => (name === "PROVISIONING_VAULT_PASSPHRASE" ? "from the environment" : undefined),
 *   readSecret: () => Promise.resolve("typed"),
 * };
 * assert.equal(await readSecret("Passphrase", { env: "PROVISIONING_VAULT_PASSPHRASE", source }), "from the environment");
 * assert.equal(await readSecret("PIN", { source }), "typed");
 * ```
 */
export async function readSecret(label: string, options: ReadSecretOptions = {}): Promise<string> {
  const source = options.source ?? processSecretSource;
  const fromEnv = fromEnvironment(source, options.env);
  if (fromEnv !== undefined) return fromEnv;
  return await ask(source, label, options.env);
}

/** Options of {@link readNewSecret}. */
export interface ReadNewSecretOptions extends ReadSecretOptions {
  /**
   * The fewest characters (Unicode code points) accepted.
   * @default 1
   */
  minLength?: number;
}

/**
 * Obtains a new secret, such as the passphrase of a vault being created: from the environment
 * variable when set, else typed twice at the terminal (the two must match).
 *
 * @throws {ProvisioningError} `secret-mismatch` when the two entries differ, `secret-too-short`
 * when it is shorter than `minLength`, and what {@link readSecret} throws.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readNewSecret } from "./secrets.ts";
 * const typed = ["first", "second"];
 * const source = { env: () => undefined, readSecret: () => Promise.resolve(typed.shift()!) };
 * await assert.rejects(readNewSecret("New passphrase", { source }), { code: "secret-mismatch" });
 * ```
 */
export async function readNewSecret(label: string, options: ReadNewSecretOptions = {}): Promise<string> {
  const source = options.source ?? processSecretSource;
  const minLength = options.minLength ?? 1;
  const fromEnv = fromEnvironment(source, options.env);
  const secret = fromEnv ?? await ask(source, label, options.env);
  const length = [...secret].length;
  if (length < minLength) {
    const where = fromEnv === undefined ? "it" : `${options.env}`;
    throw new ProvisioningError(
      "secret-too-short",
      `Cannot use the ${lowerFirst(label)}: ${where} has ${length} character${
        length === 1 ? "" : "s"
      }, at least ${minLength} are needed`,
      { exitCode: 2, hint: `Choose one of at least ${minLength} characters` },
    );
  }
  if (fromEnv !== undefined) return secret;
  const again = await ask(source, `Repeat the ${lowerFirst(label)}`, options.env);
  if (again !== secret) {
    throw new ProvisioningError(
      "secret-mismatch",
      `Cannot use the ${lowerFirst(label)}: the two entries differ`,
      {
        exitCode: 2,
        hint: "Type the same one twice",
      },
    );
  }
  return secret;
}

function fromEnvironment(source: SecretSource, name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const value = source.env(name);
  // An empty variable is taken as unset: an empty passphrase or PIN is never meant.
  return value === undefined || value === "" ? undefined : value;
}

async function ask(source: SecretSource, label: string, env: string | undefined): Promise<string> {
  const hint = env === undefined
    ? "Run the command in a terminal"
    : `Set ${env}, or run the command in a terminal`;
  try {
    return await source.readSecret({ label, hint });
  } catch (error) {
    if (error instanceof ProvisioningError && error.code === "no-terminal") {
      const state = env === undefined
        ? "standard input is not a terminal"
        : `${env} is not set and standard input is not a terminal`;
      throw new ProvisioningError("secret-unavailable", `Cannot read ${lowerFirst(label)}: ${state}`, {
        cause: error,
        hint,
        exitCode: 2,
      });
    }
    throw error;
  }
}

function lowerFirst(text: string): string {
  return /^[A-Z][a-z]/.test(text) ? text[0]!.toLowerCase() + text.slice(1) : text;
}
