/**
 * `provisioning`: gives every user of an identity provider a passkey.
 *
 * The entry point: builds the CLI, registers the built-in plugins, runs, and ends the process
 * with the exit code the run earned (0 success, 1 failure, 2 usage error, 130 Ctrl+C).
 * Run it with `deno task start -- --help`, or compile it with `deno task compile`.
 *
 * @module
 */
import { hidAuthenticator } from "./authenticators/hid/plugin.ts";
import { softwareAuthenticator } from "./authenticators/software/plugin.ts";
import { keyCommand } from "./core/cli/key.ts";
import {
  doctorCommand,
  loginCommand,
  logoutCommand,
  sandboxCommand,
  whoamiCommand,
} from "./core/cli/provider.ts";
import { provisionCommand } from "./core/cli/provision.ts";
import { revokeCommand } from "./core/cli/revoke.ts";
import { batchCommand } from "./core/cli/batch.ts";
import { pluginsCommand } from "./core/cli/plugins.ts";
import { panelCommand } from "./core/cli/panel.ts";
import { type CommandFactory, reportError, runProgram } from "./core/cli/program.ts";
import type { CliContext } from "./core/cli/context.ts";
import { createTerminalContext, terminalWriter } from "./core/cli/terminal.ts";
import { PluginRegistry } from "./core/plugin.ts";
import {
  decideLaunch,
  parseTlsFlags,
  relaunch,
  TLS_APPLIED_ENV,
  type TlsFetch,
  tlsFetch,
} from "./core/tls.ts";
import { clouds } from "./plugins/entra/cloud.ts";
import { HIDAPI_LIBRARY_ENV, LAUNCHED_ENV } from "./core/cli/launch.ts";
import { absolute, namedPaths } from "./core/cli/named_paths.ts";
import { INVOKED_AS_ENV, invokedWriter, programName } from "./core/cli/invocation.ts";
import { checkNamedPaths, type RunMode } from "./core/cli/path_guard.ts";
import { entraProvider } from "./plugins/entra/plugin.ts";

/** The command groups of the CLI, in the order `--help` lists them. */
export const COMMANDS: readonly CommandFactory[] = [
  provisionCommand,
  revokeCommand,
  batchCommand,
  doctorCommand,
  loginCommand,
  logoutCommand,
  whoamiCommand,
  sandboxCommand,
  keyCommand,
  panelCommand,
  pluginsCommand,
];

/**
 * Registers the plugins that ship with the program. Core never imports a plugin: this is the one
 * place that does; third-party plugins will be loaded by path into a Worker.
 */
export function registerBuiltins(registry: PluginRegistry): PluginRegistry {
  return registry.register(softwareAuthenticator).register(hidAuthenticator).register(entraProvider);
}

/**
 * Runs the CLI on `args` in this terminal and returns the exit code. A leading `--` is dropped:
 * `deno task start -- --help` passes it on literally.
 */
export async function main(args: readonly string[]): Promise<number> {
  const registry = registerBuiltins(new PluginRegistry());
  using terminal = createTerminalContext({ registry });
  const rest = args[0] === "--" ? args.slice(1) : args;
  // With --ca-file, a client that trusts it too; always, untrusted certificates get a clear error.
  let fetch: TlsFetch;
  try {
    const { caFile } = parseTlsFlags(rest);
    fetch = await tlsFetch(caFile === undefined ? {} : { caFile });
  } catch (error) {
    return reportError(error, { stderr: terminal.stderr, verbose: false });
  }
  using _closeClient = fetch;
  // Plugins get it through the provider commands' plugin context (core/cli/provider.ts).
  // Hints name the command as the admin runs it (the task form, or the binary's name).
  const program = programName({
    invokedAs: terminal.env(INVOKED_AS_ENV),
    compiled: Deno.build.standalone,
    execPath: Deno.execPath(),
  });
  const context: CliContext & { readonly fetch: typeof fetch } = {
    ...terminal,
    stdout: invokedWriter(terminal.stdout, program),
    stderr: invokedWriter(terminal.stderr, program),
    fetch,
  };
  return await runProgram(rest, { context, commands: COMMANDS });
}

/**
 * The hosts `--disable-ssl-verify` applies to: every registered provider's, every Microsoft
 * cloud's login and Graph host, and the sandbox's (`--sandbox URL` or PROVISIONING_SANDBOX).
 */
export function tlsHosts(
  registry: PluginRegistry,
  args: readonly string[],
  env: (name: string) => string | undefined,
): string[] {
  const hosts = new Set<string>();
  for (const plugin of registry.list()) {
    if (plugin.kind === "provider") {
      for (const host of plugin.manifest.hosts) hosts.add(host.split(":")[0]!);
    }
  }
  for (const cloud of Object.values(clouds)) {
    hosts.add(new URL(cloud.loginBase).hostname).add(new URL(cloud.graphBase).hostname);
  }
  const index = args.findIndex((arg) => arg === "--sandbox" || arg.startsWith("--sandbox="));
  const sandbox = index < 0
    ? env("PROVISIONING_SANDBOX")
    : args[index]!.includes("=")
    ? args[index]!.slice("--sandbox=".length)
    : args[index + 1];
  if (sandbox) {
    try {
      hosts.add(new URL(sandbox).hostname.replace(/^\[|\]$/g, ""));
    } catch {
      // Not a URL: the Entra plugin reports it when it reads the option.
    }
  }
  return [...hosts];
}

/**
 * Runs the program as `provisioning ARGS` from the shell: first restarts it when
 * `--local-ssl-verify` or `--disable-ssl-verify` need Deno's start-up settings (core/tls.ts),
 * and prints the warning of `--disable-ssl-verify`; then {@link main}.
 */
async function start(args: readonly string[]): Promise<number> {
  const stderr = terminalWriter(Deno.stderr);
  const env = (name: string) => Deno.env.get(name);
  // The working folder, when granted beyond the permission set, is granted to a restart too.
  let cwd: string | undefined;
  try {
    cwd = Deno.cwd();
  } catch {
    cwd = undefined;
  }
  const granted = (name: "read" | "write") =>
    cwd !== undefined && Deno.permissions.querySync({ name, path: cwd }).state === "granted";
  const decision = decideLaunch({
    args,
    applied: env(TLS_APPLIED_ENV),
    hosts: tlsHosts(registerBuiltins(new PluginRegistry()), args, env),
    execPath: Deno.execPath(),
    mainModule: Deno.mainModule,
    compiled: Deno.build.standalone,
    canRun: Deno.permissions.querySync({ name: "run", command: Deno.execPath() }).state === "granted",
    grants: { read: granted("read") ? [cwd!] : [], write: granted("write") ? [cwd!] : [] },
  });
  if (decision.kind === "refuse") return reportError(decision.error, { stderr, verbose: false });
  if (decision.kind === "relaunch") return await relaunch(decision);
  if (decision.warning) stderr.write(`${decision.warning}\n`);
  const mode: RunMode = Deno.build.standalone
    ? "compiled"
    : env(LAUNCHED_ENV) === "1"
    ? "launched"
    : "deno-run";
  const problem = checkNamedPaths({ args, cwd: cwd ?? ".", env, mode });
  if (problem) return reportError(problem, { stderr, verbose: false });
  // The hidapi library named with --hidapi-library, for the hid plugin (which reads the variable).
  const library = namedPaths(args, cwd ?? ".").find((path) => path.access === "ffi");
  if (library) Deno.env.set(HIDAPI_LIBRARY_ENV, absolute(library.path, cwd ?? "."));
  return await main(args);
}

if (import.meta.main) {
  let code: number;
  try {
    code = await start(Deno.args);
  } catch (error) {
    // Only what happens before the program runs (e.g. a plugin that fails to register) gets here.
    code = reportError(error, {
      stderr: terminalWriter(Deno.stderr),
      verbose: Deno.args.includes("--verbose"),
    });
  }
  Deno.exit(code);
}
