/**
 * The launcher of the task form (`deno task start`, docs/permissions.md): it starts the program
 * (main.ts) in the folder the admin ran the command in, under the `cli` permission set plus
 * exactly what this command line needs: the working folder (with its data folder
 * `.provisioning/`), every path the admin named ({@link namedPaths}), a `--sandbox` URL's host,
 * FFI of the hidapi library for the commands that open a security key, and the TLS settings of
 * `--local-ssl-verify` / `--disable-ssl-verify` that Deno fixes at start-up (core/tls.ts).
 *
 * Why a launcher: `deno task` runs in the checkout and passes the admin's arguments to the script,
 * never to Deno, so a path outside the checkout cannot be granted any other way, and a compiled
 * permission set cannot name it in advance. The launcher itself may only read a few environment
 * variables and run the Deno executable that runs it; it imports no npm package but zod (through
 * the hidapi library's documented locations), so that little code holds that grant.
 *
 * @module
 */
import denoConfig from "../../deno.json" with { type: "json" };
import { hidapiLibraryCandidates } from "../../authenticators/hid/hidapi.ts";
import { parseTlsFlags, TLS_APPLIED_ENV } from "../tls.ts";
import { ProvisioningError, UsageError } from "../errors.ts";
import { isAbsolute } from "node:path";
import { INVOKED_AS_ENV } from "./invocation.ts";
import { LAUNCHED_ENV } from "./launch_env.ts";
import { absolute, grantsFor, namedPaths, type PathGrants } from "./named_paths.ts";

/** The permission set the program runs under; the launcher adds to it. */
export const PERMISSION_SET = "cli";

/**
 * V8 flags the CLI runs with (here and in the compiled binary): an old-generation limit and a
 * small young generation make V8 collect garbage earlier, so a long bulk run stays flat at about
 * 130 MB instead of about 245 MB (scripts/provision_bench.ts, 15,000-row dry run).
 */
export const CLI_V8_FLAGS = "--max-old-space-size=1024,--max-semi-space-size=4";

export { LAUNCHED_ENV } from "./launch_env.ts";

/** The hidapi library named on the command line, passed on to the hid plugin. */
export const HIDAPI_LIBRARY_ENV = "PROVISIONING_HIDAPI_LIBRARY";

/** Commands that open a security key whatever `--authenticator` says (their default is hid). */
const KEY_COMMANDS = ["key", "batch"];

/** What {@link planLaunch} needs to know; everything from outside, so that it stays pure. */
export interface LaunchPlanInput {
  /** The admin's arguments, as the task passed them. */
  readonly args: readonly string[];
  /** The folder the admin ran the command in (`INIT_CWD`, else the current folder). */
  readonly cwd: string;
  /** The checkout: where deno.json and main.ts are. */
  readonly root: string;
  /** The Deno executable. */
  readonly deno: string;
  /** Reads the environment. */
  readonly env: (name: string) => string | undefined;
  /** Where hidapi may be loaded from when `--hidapi-library` is not given. */
  readonly hidapiLibraries: readonly string[];
}

/** The process {@link planLaunch} decided to start. */
export interface LaunchPlan {
  readonly command: string;
  readonly args: string[];
  readonly cwd: string;
  readonly env: Record<string, string>;
  /** What was granted beyond the permission set, for docs and tests. */
  readonly grants: PathGrants & { readonly hosts: string[] };
}

/**
 * Decides how to start the program for this command line: see the module documentation.
 *
 * @throws {ProvisioningError} a TLS flag is misused (core/tls.ts), or `panel --database` is a
 * PostgreSQL URL (its environment and host are not granted here)
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { planLaunch } from "./launch.ts";
 * const plan = planLaunch({
 *   args: ["--csv", "/home/me/users.csv", "--vault", "keys/a.vault"],
 *   cwd: "/home/me/run",
 *   root: "/opt/provisioning",
 *   deno: "/usr/bin/deno",
 *   env: () => undefined,
 *   hidapiLibraries: [],
 * });
 * assert.equal(plan.cwd, "/home/me/run");
 * assert.ok(plan.args.some((arg) => arg.startsWith("--allow-read=") && arg.endsWith(",/home/me/run,/home/me/users.csv,/home/me/run/keys")));
 * ```
 */
export function planLaunch(input: LaunchPlanInput): LaunchPlan {
  const args = input.args[0] === "--" ? input.args.slice(1) : [...input.args];
  const named = namedPaths(args, input.cwd, input.env);
  const grants = grantsFor(named);
  const read = unique([input.cwd, ...grants.read]);
  const write = unique([input.cwd, ...grants.write]);
  const env: Record<string, string> = {
    [LAUNCHED_ENV]: "1",
    [INVOKED_AS_ENV]: invokedAs(input.cwd, input.root),
  };

  // FFI only for the commands that open a security key, and only of hidapi's files.
  let ffi: string[] = [];
  if (opensSecurityKey(args)) {
    const library = named.find((p) => p.access === "ffi");
    ffi = library ? [library.path] : input.hidapiLibraries.filter((file) => isAbsolute(file));
    if (library) env[HIDAPI_LIBRARY_ENV] = library.path;
  }

  const sandbox = sandboxHosts(args, input.env);
  const hosts = [...sandbox, ...panelHosts(args)];
  const tls = parseTlsFlags(args);
  const applied: string[] = [];
  const runtimeFlags: string[] = [];
  if (tls.localStore) {
    env["DENO_TLS_CA_STORE"] = "system";
    applied.push("system-store");
  }
  if (tls.disableVerify) {
    runtimeFlags.push(`--unsafely-ignore-certificate-errors=${providerHosts(sandbox).join(",")}`);
    applied.push("no-verify");
  }
  if (applied.length > 0) env[TLS_APPLIED_ENV] = applied.join(",");

  // A flag replaces the set's list for that permission (Deno 2.9.6): each flag repeats the set's.
  const set = setLists(input.root);
  const denoArgs = [
    "run",
    "-q",
    `--config=${input.root}/deno.json`,
    `-P=${PERMISSION_SET}`,
    `--v8-flags=${CLI_V8_FLAGS}`,
    `--allow-read=${unique([...set.read, ...read]).join(",")}`,
    `--allow-write=${unique([...set.write, ...write]).join(",")}`,
    ...list("--allow-net", [...grants.net, ...hosts], set.net),
    ...list("--allow-ffi", ffi),
    ...list("--allow-run", grants.run, set.run),
    ...runtimeFlags,
    `${input.root}/main.ts`,
    ...args,
  ];
  return {
    command: input.deno,
    args: denoArgs,
    cwd: input.cwd,
    env,
    grants: { read, write, net: grants.net, ffi, run: grants.run, hosts },
  };
}

function list(flag: string, values: readonly string[], base: readonly string[] = []): string[] {
  return values.length > 0 ? [`${flag}=${unique([...base, ...values]).join(",")}`] : [];
}

/** The `cli` set's lists, its relative paths resolved against the checkout as Deno does. */
function setLists(root: string): Record<"read" | "write" | "net" | "run", string[]> {
  const set = denoConfig.permissions[PERMISSION_SET] as Partial<Record<string, unknown>>;
  const of = (name: string, paths: boolean) => {
    const value = set[name];
    if (!Array.isArray(value)) return [];
    return (value as string[]).map((entry) => paths && entry.startsWith(".") ? absolute(entry, root) : entry);
  };
  return { read: of("read", true), write: of("write", true), net: of("net", false), run: of("run", false) };
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}

/** True when the command line runs a command that may open a security key. */
export function opensSecurityKey(args: readonly string[]): boolean {
  const command = args.find((arg) => !arg.startsWith("-"));
  if (command !== undefined && KEY_COMMANDS.includes(command)) return true;
  return args.some((arg, i) =>
    arg === "--authenticator=hid" || (arg === "--authenticator" && args[i + 1] === "hid") ||
    arg.startsWith("--device=hidapi:") || (arg === "--device" && args[i + 1]?.startsWith("hidapi:") === true)
  );
}

/** The root program's options that take a value, skipped when looking for the command word. */
const ROOT_OPTIONS_WITH_VALUE = ["--ca-file", "--hidapi-library"];

/** The command word of the command line (`panel`, `key`, …), if any. */
function commandOf(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (ROOT_OPTIONS_WITH_VALUE.includes(arg)) i++;
    else if (!arg.startsWith("-")) return arg;
  }
  return undefined;
}

/** The value of `--name value` or `--name=value`, the last one given. */
function optionValue(args: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") break;
    if (arg === name) value = args[++i];
    else if (arg.startsWith(`${name}=`)) value = arg.slice(name.length + 1);
  }
  return value;
}

/**
 * What `panel` listens on beyond the set's loopback: the `--host` address (any port). A
 * PostgreSQL `--database` is refused here: the `postgres` client reads `PG*` variables and
 * connects to the database's host, neither of which the task form grants (docs/panel.md).
 *
 * @throws {UsageError} `panel --database postgres://…`
 */
function panelHosts(args: readonly string[]): string[] {
  if (commandOf(args) !== "panel") return [];
  const database = optionValue(args, "--database");
  if (database !== undefined && /^postgres(ql)?:\/\//i.test(database)) {
    throw new UsageError(
      "Cannot serve the panel on PostgreSQL from deno task start: the launcher grants neither the " +
        "database's host nor the PG* variables its client reads; nothing was started",
      {
        hint: "Run deno run -P=cli --allow-net=HOST:PORT --allow-env=PG* main.ts panel --database URL " +
          "(docs/panel.md, PostgreSQL), or leave --database out to use the SQLite file",
      },
    );
  }
  const host = optionValue(args, "--host");
  if (host === undefined || host === "" || ["127.0.0.1", "localhost"].includes(host)) return [];
  return [host.startsWith("[") || !host.includes(":") ? host : `[${host}]`];
}

/** The host (and port) of `--sandbox URL` or `PROVISIONING_SANDBOX`, when it is not loopback. */
function sandboxHosts(args: readonly string[], env: (name: string) => string | undefined): string[] {
  const index = args.findIndex((arg) => arg === "--sandbox" || arg.startsWith("--sandbox="));
  const value = index < 0
    ? env("PROVISIONING_SANDBOX")
    : args[index]!.includes("=")
    ? args[index]!.slice("--sandbox=".length)
    : args[index + 1];
  if (!value) return [];
  try {
    const url = new URL(value);
    return [url.host];
  } catch {
    return []; // Not a URL: the provider plugin reports it when it reads the option.
  }
}

/** The hosts `--disable-ssl-verify` applies to: the permission set's providers' and a sandbox. */
function providerHosts(sandbox: readonly string[]): string[] {
  const set = denoConfig.permissions[PERMISSION_SET] as { net?: readonly string[] };
  const hosts = (set.net ?? []).filter((host) => host !== "127.0.0.1" && host !== "localhost");
  return unique([...hosts, ...sandbox.map((host) => host.replace(/:\d+$/, "").replace(/^\[|\]$/g, ""))]);
}

/**
 * How the admin runs the program, for hints: `deno task start` in the checkout, and with
 * `--config` from anywhere else.
 */
export function invokedAs(cwd: string, root: string): string {
  return cwd === root ? "deno task start" : `deno task --config ${quote(`${root}/deno.json`)} start`;
}

function quote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/**
 * Starts the planned process with this terminal and returns its exit code. Ctrl+C reaches it
 * from the terminal (same process group); this process waits instead of ending first.
 */
export async function runPlan(plan: LaunchPlan): Promise<number> {
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  const forward: Array<[Deno.Signal, () => void]> = [];
  try {
    const child = new Deno.Command(plan.command, {
      args: plan.args,
      cwd: plan.cwd,
      env: plan.env,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    // A SIGTERM (a service manager stopping the run) is passed on so that the run stops cleanly.
    for (const signal of ["SIGTERM", "SIGHUP"] as const) {
      const handler = () => child.kill(signal);
      Deno.addSignalListener(signal, handler);
      forward.push([signal, handler]);
    }
    const status = await child.status;
    if (status.signal === null) return status.code;
    return 128 +
      ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15, SIGHUP: 1 } as Record<string, number>)[status.signal]!;
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
    for (const [signal, handler] of forward) Deno.removeSignalListener(signal, handler);
  }
}

function rootOfCheckout(): string {
  return decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
}

if (import.meta.main) {
  const env = (name: string) => Deno.env.get(name);
  const initCwd = env("INIT_CWD");
  const root = rootOfCheckout();
  let code: number;
  try {
    const plan = planLaunch({
      args: Deno.args,
      cwd: initCwd ? absolute(initCwd, Deno.cwd()) : Deno.cwd(),
      root,
      deno: Deno.execPath(),
      env,
      hidapiLibraries: hidapiLibraryCandidates(),
    });
    code = await runPlan(plan);
  } catch (error) {
    const hint = error instanceof ProvisioningError && error.hint ? `. ${error.hint}` : "";
    console.error(`error: ${error instanceof Error ? error.message : String(error)}${hint}`);
    code = error instanceof ProvisioningError ? error.exitCode : 1;
  }
  Deno.exit(code);
}
