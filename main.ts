/**
 * `provisioning`: gives every user of an identity provider a passkey.
 *
 * The entry point: builds the CLI, registers the built-in plugins, runs, and ends the process
 * with the exit code the run earned (0 success, 1 failure, 2 usage error, 130 Ctrl+C).
 * Run it with `deno task start -- --help`, or compile it with `deno task compile`.
 *
 * @module
 */
import { softwareAuthenticator } from "./authenticators/software/plugin.ts";
import { keyCommand } from "./core/cli/key.ts";
import {
  doctorCommand,
  loginCommand,
  logoutCommand,
  provisionCommand,
  sandboxCommand,
  whoamiCommand,
} from "./core/cli/provider.ts";
import { pluginsCommand } from "./core/cli/plugins.ts";
import { type CommandFactory, reportError, runProgram } from "./core/cli/program.ts";
import { createTerminalContext, terminalWriter } from "./core/cli/terminal.ts";
import { PluginRegistry } from "./core/plugin.ts";
import { entraProvider } from "./plugins/entra/plugin.ts";

/** The command groups of the CLI, in the order `--help` lists them. */
export const COMMANDS: readonly CommandFactory[] = [
  provisionCommand,
  doctorCommand,
  loginCommand,
  logoutCommand,
  whoamiCommand,
  sandboxCommand,
  keyCommand,
  pluginsCommand,
];

/**
 * Registers the plugins that ship with the program. Core never imports a plugin: this is the one
 * place that does; third-party plugins will be loaded by path into a Worker.
 */
export function registerBuiltins(registry: PluginRegistry): PluginRegistry {
  return registry.register(softwareAuthenticator).register(entraProvider);
}

/**
 * Runs the CLI on `args` in this terminal and returns the exit code. A leading `--` is dropped:
 * `deno task start -- --help` passes it on literally.
 */
export async function main(args: readonly string[]): Promise<number> {
  const registry = registerBuiltins(new PluginRegistry());
  using context = createTerminalContext({ registry });
  const rest = args[0] === "--" ? args.slice(1) : args;
  return await runProgram(rest, { context, commands: COMMANDS });
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    // Only what happens before the program runs (e.g. a plugin that fails to register) gets here.
    code = reportError(error, {
      stderr: terminalWriter(Deno.stderr),
      verbose: Deno.args.includes("--verbose"),
    });
  }
  Deno.exit(code);
}
