/**
 * How the admin runs the program, so that every printed hint names a command that exists: the
 * compiled binary's name, the task form (`deno task start`, or with `--config` from another
 * folder, set by the launcher in {@link INVOKED_AS_ENV}), or `provisioning` otherwise.
 *
 * @module
 */
import type { TextWriter } from "./context.ts";

/** Set by the launcher (core/cli/launch.ts) to the command the admin typed before the arguments. */
export const INVOKED_AS_ENV = "PROVISIONING_INVOKED_AS";

/** The command words after which `provisioning` in a printed hint is the program. */
const COMMAND_WORDS =
  "provision|revoke|batch|doctor|login|logout|whoami|sandbox|key|plugins|help|--csv|--user|--group|--login|--help";

const hintedCommand = new RegExp(`\\bprovisioning (?=(?:${COMMAND_WORDS})\\b|<command>)`, "g");

/**
 * The program as the admin starts it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { programName } from "./invocation.ts";
 * assert.equal(programName({ invokedAs: "deno task start", compiled: false, execPath: "/usr/bin/deno" }), "deno task start");
 * assert.equal(programName({ invokedAs: undefined, compiled: true, execPath: "/opt/bin/provisioning" }), "provisioning");
 * ```
 */
export function programName(input: {
  readonly invokedAs: string | undefined;
  readonly compiled: boolean;
  readonly execPath: string;
}): string {
  if (input.compiled) return input.execPath.split(/[\\/]/).pop()!.replace(/\.exe$/i, "") || "provisioning";
  return input.invokedAs || "provisioning";
}

/**
 * `text` with every `provisioning <command>` hint written the way the admin runs the program.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { asInvoked } from "./invocation.ts";
 * assert.equal(
 *   asInvoked("Revoke: provisioning revoke --run r-1; provisioning 0.1.0", "deno task start"),
 *   "Revoke: deno task start revoke --run r-1; provisioning 0.1.0",
 * );
 * ```
 */
export function asInvoked(text: string, program: string): string {
  return program === "provisioning" ? text : text.replace(hintedCommand, `${program} `);
}

/** A writer that prints hints the way the admin runs the program ({@link asInvoked}). */
export function invokedWriter<W extends TextWriter>(writer: W, program: string): W {
  if (program === "provisioning") return writer;
  return Object.assign(Object.create(writer) as W, {
    write: (text: string) => writer.write(asInvoked(text, program)),
  });
}
