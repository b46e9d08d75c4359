/**
 * The terminal side of the CLI: writers for stdout and stderr, a secret prompt that does not
 * echo (PINs, vault passphrases), touch prompts on stderr, and Ctrl+C as an `AbortSignal`.
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";
import type { PluginRegistry, UserInteraction } from "../plugin.ts";
import type { CliContext, SecretRequest, TextWriter } from "./context.ts";
import { PromptGate } from "./prompt_gate.ts";

/** The part of `Deno.stdout` / `Deno.stderr` a {@link terminalWriter} uses. */
export interface TerminalOutput {
  writeSync(data: Uint8Array): number;
  isTerminal(): boolean;
}

/** The part of `Deno.stdin` {@link readSecret} uses; a test passes a scripted one. */
export interface TerminalInput {
  read(buffer: Uint8Array): Promise<number | null>;
  setRaw(mode: boolean, options?: { cbreak: boolean }): void;
  isTerminal(): boolean;
}

/** Exit code for a run stopped by Ctrl+C (128 + SIGINT), as shells report it. */
export const INTERRUPTED_EXIT_CODE = 130;

/** The error a prompt or a command ends with when the operator pressed Ctrl+C. */
export function interruptedError(action: string): ProvisioningError {
  return new ProvisioningError("interrupted", `Cannot ${action}: interrupted by Ctrl+C`, {
    exitCode: INTERRUPTED_EXIT_CODE,
  });
}

/**
 * A {@link TextWriter} over a Deno output stream. Writes synchronously and completely, so lines
 * from stdout and stderr stay in order; a closed pipe (`provisioning plugins | head -1`) is not an
 * error.
 */
export function terminalWriter(output: TerminalOutput): TextWriter {
  const encoder = new TextEncoder();
  return {
    write(text: string) {
      let bytes = encoder.encode(text);
      try {
        while (bytes.length > 0) bytes = bytes.subarray(output.writeSync(bytes));
      } catch (error) {
        if (!(error instanceof Deno.errors.BrokenPipe)) throw error;
      }
    },
    get isTerminal() {
      return output.isTerminal();
    },
    get columns() {
      if (!output.isTerminal()) return undefined;
      try {
        return Deno.consoleSize().columns;
      } catch {
        return undefined;
      }
    },
  };
}

/** Options of {@link readSecret}: where to read from and where to prompt. */
export interface ReadSecretOptions {
  /** @default Deno.stdin */
  readonly stdin?: TerminalInput;
  /** Where the prompt goes. @default stderr of the process */
  readonly stderr?: TextWriter;
}

/**
 * Asks for a secret on the terminal without echoing it. Enter finishes; Backspace and Ctrl+U
 * edit; Ctrl+C rejects with an `interrupted` error (exit code 130); Ctrl+D on an empty line
 * cancels. Arrow keys and other escape sequences are ignored.
 *
 * Without a terminal on stdin it throws at once (exit code 2) with the request's hint, rather
 * than waiting on a pipe that will never answer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readSecret } from "./terminal.ts";
 * import { memoryWriter } from "./context.ts";
 * const keys = new TextEncoder().encode("12x\x7f34\r");
 * const stdin = {
 *   isTerminal: () => true,
 *   setRaw: () => {},
 *   read: async (buffer: Uint8Array) => (buffer.set(keys), keys.length),
 * };
 * const pin = await readSecret({ label: "PIN" }, { stdin, stderr: memoryWriter() });
 * assert.equal(pin, "1234");
 * ```
 */
export async function readSecret(request: SecretRequest, options: ReadSecretOptions = {}): Promise<string> {
  const stdin = options.stdin ?? Deno.stdin;
  const stderr = options.stderr ?? terminalWriter(Deno.stderr);
  if (!stdin.isTerminal()) {
    throw new ProvisioningError(
      "no-terminal",
      `Cannot ask for ${request.label}: standard input is not a terminal`,
      {
        hint: request.hint ?? "Run the command in a terminal",
        exitCode: 2,
      },
    );
  }
  if (request.notice) stderr.write(request.notice);
  stderr.write(`${request.label}: `);
  stdin.setRaw(true);
  try {
    return await readUntilEnter(stdin, request.label);
  } finally {
    stdin.setRaw(false);
    stderr.write("\n");
  }
}

async function readUntilEnter(stdin: TerminalInput, label: string): Promise<string> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(256);
  let secret: string[] = [];
  // 0: plain input, 1: after ESC, 2: inside a CSI sequence (ESC [ ... final byte)
  let escape = 0;
  for (;;) {
    const count = await stdin.read(buffer);
    if (count === null) {
      if (secret.length > 0) return secret.join("");
      throw new ProvisioningError("cancelled", `Cannot read ${label}: input ended`);
    }
    for (const char of decoder.decode(buffer.subarray(0, count), { stream: true })) {
      if (escape === 1) {
        escape = char === "[" || char === "O" ? 2 : 0;
        continue;
      }
      if (escape === 2) {
        if (char >= "@" && char <= "~") escape = 0;
        continue;
      }
      switch (char) {
        case "\r":
        case "\n":
          return secret.join("");
        case "\x03":
          throw interruptedError(`read ${label}`);
        case "\x04":
          if (secret.length === 0) {
            throw new ProvisioningError("cancelled", `Cannot read ${label}: cancelled`);
          }
          break;
        case "\x7f":
        case "\b":
          secret = secret.slice(0, -1);
          break;
        case "\x15":
          secret = [];
          break;
        case "\x1b":
          escape = 1;
          break;
        default:
          if (char >= " ") secret.push(char);
      }
    }
  }
}

/**
 * {@link UserInteraction} on a terminal: PINs are read without echo, touch requests are printed to
 * stderr once per wait (keep-alives repeat every ~100 ms while the key waits; a gap of more than
 * two seconds starts a new wait).
 */
export class TerminalInteraction implements UserInteraction {
  readonly #stderr: TextWriter;
  readonly #readSecret: (request: SecretRequest) => Promise<string>;
  readonly #lastTouchPrompt = new Map<string, number>();
  readonly #lastAttemptsLeft = new Map<string, number>();

  constructor(options: { stderr: TextWriter; readSecret: (request: SecretRequest) => Promise<string> }) {
    this.#stderr = options.stderr;
    this.#readSecret = options.readSecret;
  }

  /** Reads the PIN for the named authenticator, saying how many attempts are left when known. */
  requestPin(request: { label: string; attemptsLeft?: number }): Promise<string> {
    const left = request.attemptsLeft;
    const attempts = left === undefined ? "" : ` (${left} attempt${left === 1 ? "" : "s"} left)`;
    // The key asks again with fewer retries left when it refused the PIN: say so, on a line of its own.
    const last = this.#lastAttemptsLeft.get(request.label);
    if (left !== undefined) this.#lastAttemptsLeft.set(request.label, left);
    const wrong = last !== undefined && left !== undefined && left < last
      ? `Wrong PIN for ${request.label}: ${left} attempt${left === 1 ? "" : "s"} left before it locks\n`
      : undefined;
    return this.#readSecret({
      label: `PIN for ${request.label}${attempts}`,
      hint: "Run the command in a terminal to enter the PIN",
      ...(wrong ? { notice: wrong } : {}),
    });
  }

  /** Tells the operator to touch the key, once per wait. */
  promptUserPresence(label: string): void {
    const now = Date.now();
    const last = this.#lastTouchPrompt.get(label);
    this.#lastTouchPrompt.set(label, now);
    if (last === undefined || now - last > 2000) this.#stderr.write(`Touch ${label} to continue\n`);
  }
}

/** A {@link CliContext} that also removes its Ctrl+C handler when disposed. */
export interface TerminalContext extends CliContext, Disposable {}

/**
 * The context `main.ts` runs the CLI with: the process's stdout, stderr, stdin and environment.
 *
 * The first Ctrl+C aborts `signal` (commands stop cleanly and the run ends with exit code 130);
 * a second Ctrl+C ends the process at once.
 */
export function createTerminalContext(options: { registry: PluginRegistry }): TerminalContext {
  const stdout = terminalWriter(Deno.stdout);
  // Prompts hold back everything else on stderr (the progress bar above all) until answered.
  const gate = new PromptGate(terminalWriter(Deno.stderr));
  const stderr = gate.writer();
  const secrets = (request: SecretRequest) =>
    gate.prompt((terminal) => readSecret(request, { stderr: terminal }));
  const controller = new AbortController();
  const onInterrupt = () => {
    if (controller.signal.aborted) Deno.exit(INTERRUPTED_EXIT_CODE);
    stderr.write("\nStopping (press Ctrl+C again to quit at once)\n");
    controller.abort(interruptedError("finish"));
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  return {
    registry: options.registry,
    interaction: new TerminalInteraction({ stderr, readSecret: secrets }),
    stdout,
    stderr,
    env: (name) => Deno.env.get(name),
    readSecret: secrets,
    signal: controller.signal,
    [Symbol.dispose]() {
      Deno.removeSignalListener("SIGINT", onInterrupt);
    },
  };
}
