/**
 * The `provisioning` command line: the root program, its global options, how commander's errors
 * become one-line messages with exit code 2, and how errors from commands become exit codes.
 *
 * Command groups live in their own modules as {@link CommandFactory} functions (`plugins.ts`,
 * `key.ts`, …) and `main.ts` passes them to {@link runProgram}, so this module never imports a
 * command and core never imports a plugin.
 *
 * Exit codes: 0 success (also `--help`, `--version`), 1 failure, 2 usage error (unknown option
 * or command, missing argument, a secret asked for without a terminal), 130 Ctrl+C.
 *
 * @module
 */
import { Command, CommanderError, type CommandUnknownOpts } from "@commander-js/extra-typings";
import denoConfig from "../../deno.json" with { type: "json" };
import { describeError, ProvisioningError } from "../errors.ts";
import { TLS_OPTIONS } from "../tls.ts";
import type { CliContext, TextWriter } from "./context.ts";
import { permissionError } from "./path_guard.ts";

/** The version in deno.json, printed by `--version` and sent in user agents. */
export const VERSION: string = denoConfig.version;

/** Exit code for usage errors: unknown options and commands, missing or invalid arguments. */
export const USAGE_EXIT_CODE = 2;

/**
 * Builds one command group (e.g. `key`, `plugins`) from the context. The command it returns is
 * added to the root program, which then makes it and all its subcommands report errors the same
 * way (one line on stderr, exit code 2).
 */
export type CommandFactory = (context: CliContext) => CommandUnknownOpts;

/** What {@link buildProgram} and {@link runProgram} need. */
export interface ProgramOptions {
  /** Output, environment, prompts and plugins for every command. */
  readonly context: CliContext;
  /** Printed by `--version` as `provisioning <version>`. @default {@link VERSION} */
  readonly version?: string;
  /** Command groups, in the order `--help` lists them. */
  readonly commands?: readonly CommandFactory[];
}

/** The root program's global options, as commander parses them. */
export interface GlobalOptions {
  /** `--verbose`: more detail, and stack traces of unexpected errors. */
  readonly verbose?: true | undefined;
}

/**
 * Builds the root `provisioning` program with `--version`, `--help`, the global `--verbose`, and
 * the given command groups. Commander never exits the process: errors are thrown as
 * `CommanderError` (after one line was printed to `context.stderr`) for {@link runProgram} to map.
 *
 * The seed-compatible flags of the IDmelon tool (`provisioning --csv users.csv`, `--login`, …)
 * are rewritten to commands before parsing ({@link seedCompatibleArgs}), so the root keeps no
 * action and commander's "unknown command (Did you mean …?)" keeps working.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { buildProgram } from "./program.ts";
 * import { memoryWriter } from "./context.ts";
 * import { PluginRegistry } from "../plugin.ts";
 * const stdout = memoryWriter();
 * const context = {
 *   registry: new PluginRegistry(),
 *   interaction: { requestPin: () => Promise.resolve(""), promptUserPresence: () => {} },
 *   stdout,
 *   stderr: memoryWriter(),
 *   env: () => undefined,
 *   readSecret: () => Promise.resolve(""),
 *   signal: new AbortController().signal,
 * };
 * const program = buildProgram({ context, version: "1.2.3" });
 * assert.equal(program.name(), "provisioning");
 * ```
 */
export function buildProgram(options: ProgramOptions) {
  const { context } = options;
  const program = new Command()
    .name("provisioning")
    .description(
      "Give every user of an identity provider a passkey, created by an admin on the authenticator " +
        "the organisation chose.",
    )
    .version(`provisioning ${options.version ?? VERSION}`, "-V, --version", "print the version and exit")
    .option("--verbose", "print more detail, and the stack trace of an unexpected error")
    .addHelpText(
      "after",
      [
        "",
        "Environment:",
        "  PROVISIONING_DEBUG=1  same as --verbose for errors",
        "",
        "Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted (Ctrl+C).",
      ].join("\n"),
    );
  // Read before commander runs (core/tls.ts, some need a restart); declared here for --help.
  for (const option of TLS_OPTIONS) program.option(option.flags, option.description);
  // Read by the launcher and main.ts (FFI is granted for this file only, docs/permissions.md).
  program.option(
    "--hidapi-library <file>",
    "load hidapi (security keys on Windows and macOS) from this file instead of its usual places",
  );
  for (const factory of options.commands ?? []) {
    program.addCommand(factory(context));
  }
  configureTree(program, context);
  return program;
}

/** The type of the program {@link buildProgram} returns. */
export type Program = ReturnType<typeof buildProgram>;

/** Makes a command and all its descendants report errors as one line and throw, never exit. */
function configureTree(command: CommandUnknownOpts, context: CliContext): void {
  if (command.commands.length > 0) command.helpCommand("help [command]", "show help for a command");
  command
    .helpOption("-h, --help", "show help for this command")
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (text) => context.stdout.write(text),
      writeErr: (text) => context.stderr.write(text),
      // Commander puts "(Did you mean …?)" on a line of its own: one error, one line.
      outputError: (text, write) => write(`${oneLine(text)}\n`),
      getOutHelpWidth: () => helpWidth(context.stdout),
      getErrHelpWidth: () => helpWidth(context.stderr),
      // No colour, and no reading of NO_COLOR/FORCE_COLOR (which the permission set would refuse).
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    });
  for (const child of command.commands) configureTree(child, context);
}

function helpWidth(writer: TextWriter): number {
  return Math.max(40, Math.min(writer.columns ?? 100, 120));
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Builds the program, runs it on `args` (without the executable and script), and returns the
 * exit code. Nothing is thrown: every error ends as one line on stderr (more with `--verbose` or
 * `PROVISIONING_DEBUG=1`) and an exit code, see {@link exitCodeFor}.
 */
export async function runProgram(args: readonly string[], options: ProgramOptions): Promise<number> {
  const { context } = options;
  const program = buildProgram(options);
  try {
    await program.parseAsync(seedCompatibleArgs(args, program.commands.map((c) => c.name())), {
      from: "user",
    });
    return 0;
  } catch (error) {
    const verbose = program.opts().verbose === true || debugRequested(context);
    return reportError(error, { stderr: context.stderr, verbose });
  }
}

/** Flags that mean "provision" when no command is named: the seed tool's way of starting a run. */
const provisionFlags = ["--csv", "--user", "--group", "--automatic-provision", "--dry-run"];

/**
 * The seed tool's command lines as this tool's commands: with no command word,
 * `provisioning --csv users.csv …` (or `--user`, `--group`, `--automatic-provision`) runs
 * `provision`, and `provisioning --login` alone runs `login`. Anything else is left as it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { seedCompatibleArgs } from "./program.ts";
 * assert.deepEqual(seedCompatibleArgs(["--csv", "u.csv"], ["provision"]), ["provision", "--csv", "u.csv"]);
 * assert.deepEqual(seedCompatibleArgs(["--login"], ["login"]), ["login"]);
 * assert.deepEqual(seedCompatibleArgs(["key", "list"], ["key"]), ["key", "list"]);
 * ```
 */
export function seedCompatibleArgs(args: readonly string[], commands: readonly string[]): string[] {
  if (args.some((arg) => commands.includes(arg))) return [...args];
  const has = (flag: string) => args.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  if (provisionFlags.some(has)) return ["provision", ...args];
  if (has("--login")) return ["login", ...args.filter((arg) => arg !== "--login")];
  return [...args];
}

function debugRequested(context: CliContext): boolean {
  try {
    return context.env("PROVISIONING_DEBUG") === "1";
  } catch {
    return false;
  }
}

/**
 * The exit code an error ends the program with: commander's own outcomes are 0 for help and
 * version and 2 for every usage error (including a group called without its subcommand);
 * a {@link ProvisioningError} carries its own; anything else is 1.
 */
export function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : USAGE_EXIT_CODE;
  if (error instanceof ProvisioningError) return error.exitCode;
  return 1;
}

/**
 * Prints an error that reached the top as one line on `stderr` (commander has printed its own
 * already) and returns the exit code. With `verbose`, the stack and every `cause` follow.
 */
export function reportError(error: unknown, options: { stderr: TextWriter; verbose: boolean }): number {
  const { stderr, verbose } = options;
  if (error instanceof CommanderError) return exitCodeFor(error);
  const denied = permissionError(error);
  if (denied) {
    stderr.write(`error: ${oneLine(describeError(denied))}\n`);
  } else if (error instanceof Deno.errors.NotCapable) {
    stderr.write(
      `error: Cannot continue: ${oneLine(error.message)}. The deno.json permission set this program ` +
        `runs under does not grant it; grant it with the flag Deno names, or add it to the set\n`,
    );
  } else if (error instanceof ProvisioningError || verbose) {
    stderr.write(`error: ${oneLine(describeTop(error))}\n`);
  } else {
    stderr.write(`error: ${oneLine(describeTop(error))} (run with --verbose for details)\n`);
  }
  if (verbose) {
    for (let cause: unknown = error, depth = 0; cause !== undefined && depth < 8; depth++) {
      const text = cause instanceof Error
        ? cause.stack ?? `${cause.name}: ${cause.message}`
        : describeCause(cause);
      stderr.write(`${depth === 0 ? "" : "Caused by: "}${text}\n`);
      cause = cause instanceof Error ? cause.cause : undefined;
    }
  }
  return exitCodeFor(error);
}

/** A cause that is not an Error (a JSON error body, a CBOR map) as readable text, never `[object Object]`. */
export function describeCause(cause: unknown): string {
  if (typeof cause !== "object" || cause === null) return String(cause);
  try {
    const json = JSON.stringify(cause, (_key, value) => typeof value === "bigint" ? value.toString() : value);
    if (json !== undefined && json !== "{}") return json.length > 2000 ? `${json.slice(0, 2000)}…` : json;
  } catch {
    // A cycle: fall back to its constructor's name.
  }
  return `${cause.constructor?.name ?? "Object"} ${Deno.inspect(cause, { depth: 2 })}`;
}

function describeTop(error: unknown): string {
  return error instanceof Error ? describeError(error) : describeCause(error);
}
