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
import { describeError, ProvisioningError, UsageError } from "../errors.ts";
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
    // The IDmelon tool's usage first: the admins we replace know it.
    .usage(
      [
        "--csv users.csv [--mode headful] [--verbose]",
        "       provisioning --login | --automatic-provision | --register-deeplink",
        "       provisioning <command> [options]",
      ].join("\n"),
    )
    .version(`provisioning ${options.version ?? VERSION}`, "-V, --version", "print the version and exit")
    .option("--verbose", "print more detail, and the stack trace of an unexpected error")
    .addHelpText(
      "after",
      [
        "",
        "The IDmelon tool's flags, as they work today:",
        "  --csv users.csv        provision the users of the file (same as: provision --csv users.csv)",
        "  --mode headful         register in a visible browser window (the browser path)",
        "  --login                sign in as the admin (same as: login); with --csv, before the run",
        "  --automatic-provision  with --csv/--user/--group: the default already; alone: refused, the",
        "                         panel's automatic queue does not exist yet",
        "  --register-deeplink    refused: the panel's provisioning:// link does not exist yet",
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
    const commands = program.commands.map((c) => c.name());
    refuseSeedOnlyFlags(args, commands);
    suggestSeedOption(args, program);
    await program.parseAsync(seedCompatibleArgs(args, commands), { from: "user" });
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
  // A first word that is no command (`provison --user x`): commander says "unknown command".
  if (args[0] !== undefined && !args[0].startsWith("-")) return [...args];
  const has = (flag: string) => args.some((arg) => arg === flag || arg.startsWith(`${flag}=`));
  if (provisionFlags.some(has)) return ["provision", ...args];
  if (has("--login")) return ["login", ...args.filter((arg) => arg !== "--login")];
  return [...args];
}

/** Options of the root program, which stay when telling seed flags apart. */
const rootFlags = [
  "--verbose",
  "--local-ssl-verify",
  "--disable-ssl-verify",
  "--ca-file",
  "--hidapi-library",
];

/** The arguments without the root program's options (and their values). */
function withoutRootOptions(args: readonly string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") continue;
    if (arg === "--ca-file" || arg === "--hidapi-library") {
      i++;
      continue;
    }
    if (rootFlags.some((flag) => arg === flag || arg.startsWith(`${flag}=`))) continue;
    rest.push(arg);
  }
  return rest;
}

/**
 * The IDmelon tool's `--automatic-provision` and `--register-deeplink` alone belong to its panel,
 * which does not exist here yet: refused with what each would do and what to do instead, rather
 * than accepted and ignored.
 *
 * @throws {UsageError} when one of them (or both) is all the command line holds
 */
export function refuseSeedOnlyFlags(args: readonly string[], commands: readonly string[]): void {
  if (args.some((arg) => commands.includes(arg))) return;
  const rest = withoutRootOptions(args);
  const seedOnly = ["--automatic-provision", "--register-deeplink"];
  if (rest.length === 0 || !rest.every((arg) => seedOnly.includes(arg))) return;
  if (rest.includes("--register-deeplink")) {
    throw new UsageError(
      "Cannot register the provisioning:// link: it lets the provisioning panel open this tool, and this " +
        "tool has no panel yet; nothing was registered",
      { hint: "Start runs from the command line: provisioning --csv users.csv" },
    );
  }
  throw new UsageError(
    "Cannot provision automatically without users: alone, --automatic-provision takes users from the " +
      "provisioning panel's queue, and this tool has no panel yet",
    {
      hint: "Give the users with --csv FILE, --user UPN or --group NAME; they are provisioned automatically",
    },
  );
}

/**
 * A misspelt option with no command word (`provisioning --cvs users.csv`): commander would blame
 * the root program, which has none of the seed's options; this names the closest `provision` one.
 *
 * @throws {UsageError} `unknown option '--cvs' (did you mean --csv?)`
 */
function suggestSeedOption(args: readonly string[], program: CommandUnknownOpts): void {
  const commands = program.commands.map((c) => c.name());
  if (args.some((arg) => commands.includes(arg))) return;
  if (args[0] !== undefined && !args[0].startsWith("-")) return;
  const provision = program.commands.find((c) => c.name() === "provision");
  if (!provision) return;
  const known = new Set([
    ...program.options.map((o) => o.long),
    ...provision.options.map((o) => o.long),
    "--help",
    "--version",
    "--login",
    "--automatic-provision",
    "--register-deeplink",
    "-h",
    "-V",
  ]);
  for (const arg of args) {
    if (arg === "--") return;
    if (!arg.startsWith("--")) continue;
    const flag = arg.split("=")[0]!;
    if (known.has(flag)) continue;
    const closest = [...known].filter((name): name is string => name !== undefined && name.startsWith("--"))
      .map((name) => ({ name, distance: editDistance(flag, name) }))
      .sort((a, b) => a.distance - b.distance)[0];
    // The root's own options get commander's suggestion; the seed's (provision's) get this one.
    if (!closest || closest.distance > 2 || program.options.some((o) => o.long === closest.name)) return;
    if (["--help", "--version"].includes(closest.name)) return;
    throw new UsageError(`unknown option '${flag}' (Did you mean ${closest.name}?)`);
  }
}

/** Edit distance with transpositions (`--cvs` is one from `--csv`), for suggestions. */
function editDistance(a: string, b: string): number {
  const d = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => i + j),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i]!;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min(d[i - 1]![j]! + 1, row[j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        row[j] = Math.min(row[j]!, d[i - 2]![j - 2]! + 1);
      }
    }
  }
  return d[a.length]![b.length]!;
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
