/**
 * What every command of the CLI gets from the program: the plugin registry, the person at the
 * keyboard, where output goes, the environment, and the Ctrl+C signal.
 *
 * Commands never touch `Deno.stdout`, `Deno.env` or `prompt()` directly: they go through a
 * {@link CliContext}, so a test can run a command in-process with {@link memoryWriter} and a
 * fixed environment, and a bulk run can answer prompts from policy instead of a terminal.
 * The terminal implementation is in `terminal.ts`.
 *
 * @module
 */
import type { PluginRegistry, UserInteraction } from "../plugin.ts";

/** Where a command writes text: the terminal's stdout or stderr, or a buffer in a test. */
export interface TextWriter {
  /** Writes `text` as it is (add the newline yourself). Synchronous so output order is kept. */
  write(text: string): void;
  /** Width of the terminal in columns, when the writer is one; wraps `--help`. */
  readonly columns?: number | undefined;
  /** True when the writer is a terminal (a live progress bar), false or absent otherwise. */
  readonly isTerminal?: boolean;
}

/** A secret to ask the operator for, e.g. the vault passphrase. */
export interface SecretRequest {
  /** What is asked for, shown as the prompt: `Passphrase for "demo.vault"`. */
  readonly label: string;
  /**
   * How to supply the secret without a terminal (e.g. `Set PROVISIONING_VAULT_PASSPHRASE`),
   * used in the error when there is no terminal to ask on.
   */
  readonly hint?: string;
  /** A line printed before the prompt (e.g. "Wrong PIN …: 2 attempts left"), ending with `\n`. */
  readonly notice?: string;
}

/** Everything a command needs from the outside world, passed to each command factory. */
export interface CliContext {
  /** The plugins `main.ts` registered. */
  readonly registry: PluginRegistry;
  /** PIN and touch prompts for authenticators (a terminal, or a policy in bulk runs). */
  readonly interaction: UserInteraction;
  /** Results: what a script would pipe on (tables, JSON). */
  readonly stdout: TextWriter;
  /** Diagnostics, prompts and progress: never mixed into results. */
  readonly stderr: TextWriter;
  /**
   * Reads an environment variable. The permission set decides which ones are readable: reading
   * one it does not list throws `Deno.errors.NotCapable`, which the top level reports clearly.
   */
  readonly env: (name: string) => string | undefined;
  /** Asks for a secret without echoing it; throws when there is no terminal to ask on. */
  readonly readSecret: (request: SecretRequest) => Promise<string>;
  /** Aborted on the first Ctrl+C: long-running commands stop cleanly when it fires. */
  readonly signal: AbortSignal;
}

/** A {@link TextWriter} that keeps what was written, for tests and for capturing output. */
export interface MemoryWriter extends TextWriter {
  /** Everything written so far. */
  text(): string;
}

/**
 * A writer that collects output in memory.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { memoryWriter } from "./context.ts";
 * const out = memoryWriter();
 * out.write("hello\n");
 * assert.equal(out.text(), "hello\n");
 * ```
 */
export function memoryWriter(columns?: number): MemoryWriter {
  const chunks: string[] = [];
  return {
    columns,
    write(text: string) {
      chunks.push(text);
    },
    text() {
      return chunks.join("");
    },
  };
}
