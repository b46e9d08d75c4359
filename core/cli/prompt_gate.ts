/**
 * Keeps the live display off a prompt: while a prompt waits for the operator (a PIN, a
 * passphrase), everything else written to the terminal (the progress bar redrawn every second,
 * log lines, "insert a key" notes) is held back, and written after the answer. Without it, the bar
 * redraws over the prompt within a second and the run looks hung.
 *
 * @module
 */
import type { TextWriter } from "./context.ts";

/** Erases the terminal's current line (where a progress bar may be) and returns to its start. */
const CLEAR_LINE = "\r\x1b[2K";
/** More held writes than this keep only the lines that end (bar frames are dropped). */
const MAX_HELD = 2000;

/** See the module documentation. */
export class PromptGate {
  readonly #terminal: TextWriter;
  #open = 0;
  #held: string[] = [];

  /** `terminal` is the real output the prompt and the held writes go to. */
  constructor(terminal: TextWriter) {
    this.#terminal = terminal;
  }

  /** True while a prompt is waiting. */
  get prompting(): boolean {
    return this.#open > 0;
  }

  /**
   * A writer for everything but prompts: it writes through at once, except while a prompt waits.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { PromptGate } from "./prompt_gate.ts";
   * import { memoryWriter } from "./context.ts";
   * const terminal = memoryWriter();
   * const gate = new PromptGate(terminal);
   * const stderr = gate.writer();
   * await gate.prompt(async (out) => {
   *   out.write("PIN: ");
   *   stderr.write("\r\x1b[2K[####    ] 4/8");
   *   out.write("\n");
   * });
   * assert.equal(terminal.text(), "PIN: \n\r\x1b[2K[####    ] 4/8");
   * ```
   */
  writer(): TextWriter {
    const terminal = this.#terminal;
    return {
      write: (text: string) => {
        if (this.#open === 0) return terminal.write(text);
        this.#held.push(text);
        if (this.#held.length > MAX_HELD) this.#held = this.#held.filter((held) => held.includes("\n"));
      },
      get isTerminal() {
        return terminal.isTerminal === true;
      },
      get columns() {
        return terminal.columns;
      },
    };
  }

  /**
   * Runs a prompt: clears the live line, holds every other write while `ask` runs, then writes
   * what was held. `ask` writes its prompt to the writer it is given.
   */
  async prompt<T>(ask: (terminal: TextWriter) => Promise<T>): Promise<T> {
    if (this.#open++ === 0 && this.#terminal.isTerminal) this.#terminal.write(CLEAR_LINE);
    try {
      return await ask(this.#terminal);
    } finally {
      if (--this.#open === 0) {
        const held = this.#held;
        this.#held = [];
        for (const text of held) this.#terminal.write(text);
      }
    }
  }
}
