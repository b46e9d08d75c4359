/**
 * `deno task compile [--target <triple>]`: builds `dist/provisioning` (`.exe` for Windows) with
 * `deno compile`, under the `cli` permission set plus {@link compiledGrants} (docs/permissions.md).
 *
 * Why not `deno compile -P=cli`: `deno compile` accepts a permission set, but it resolves the
 * set's relative paths against deno.json's folder at build time, so the binary would be allowed
 * `./` of the build machine's checkout instead of the folder the admin runs it in. Explicit
 * `--allow-*` flags keep their relative paths, which the binary resolves when it starts. So this
 * script turns deno.json's `cli` set into flags, as written.
 *
 * `deno compile` appends the program to a Deno runtime binary (`denort`). It reads the
 * `DENORT_BIN` environment variable for a local one; without it, it downloads the runtime from
 * dl.deno.land, which fails where that host is unreachable.
 *
 * @module
 */
import { hidapiLibraryCandidates } from "../authenticators/hid/hidapi.ts";
import { CLI_V8_FLAGS as LAUNCH_V8_FLAGS } from "../core/cli/launch.ts";

/** The permission set in deno.json the compiled binary runs under. */
export const PERMISSION_SET = "cli";

/**
 * What the binary gets beyond the set (docs/permissions.md): a compiled program's permissions are
 * fixed when it is built and it takes no runtime flags, so it cannot be given the paths an admin
 * names at run time the way the task form's launcher gives them. It may therefore read and write
 * files wherever its user may, and the program itself refuses a named path that leads elsewhere
 * through a link (core/cli/path_guard.ts); network, programs, environment and native libraries
 * stay limited as in the set: FFI only of hidapi's documented absolute locations.
 */
export function compiledGrants(target: string | undefined): string[] {
  const os = target === undefined
    ? Deno.build.os
    : target.includes("windows")
    ? "windows"
    : target.includes("darwin")
    ? "darwin"
    : "linux";
  const arch = target === undefined ? Deno.build.arch : target.startsWith("aarch64") ? "aarch64" : "x86_64";
  // Beside the executable is known only at run time: Windows, which looks there, gets FFI unscoped.
  const libraries = hidapiLibraryCandidates(os, arch, "").filter((file) => file.startsWith("/"));
  const ffi = os === "windows" ? ["--allow-ffi"] : [`--allow-ffi=${libraries.join(",")}`];
  return ["--allow-read", "--allow-write", ...ffi];
}

/** The V8 flags of `deno task start`, the same in the binary. */
export const CLI_V8_FLAGS = LAUNCH_V8_FLAGS;

/**
 * Files the binary loads that `deno compile` cannot see from literal imports: Worker entry
 * modules and computed `import()` targets. Each becomes one `--include`.
 * (None yet: add plugin Worker entries here when third-party plugins run in Workers.)
 */
export const INCLUDES: readonly string[] = [];

/** The Deno version whose runtime `deno compile` needs (the one running this script). */
const DENO_VERSION = Deno.version.deno;

type PermissionValue = boolean | readonly string[] | {
  readonly allow?: boolean | readonly string[];
  readonly deny?: boolean | readonly string[];
  readonly ignore?: boolean | readonly string[];
};

const PERMISSION_NAMES = ["read", "write", "net", "env", "run", "sys", "ffi", "import"] as const;

/**
 * Turns one permission set of deno.json into `--allow-*`, `--deny-*` and `--ignore-*` flags,
 * keeping paths as written. A set with `"all": true` is refused: the binary never gets `-A`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { permissionFlags } from "./compile.ts";
 * const flags = permissionFlags({ read: ["./"], env: ["HOME"], net: true });
 * assert.deepEqual(flags, ["--allow-read=./", "--allow-net", "--allow-env=HOME"]);
 * ```
 */
export function permissionFlags(set: Record<string, unknown>): string[] {
  if (set.all === true) {
    throw new Error(
      'Cannot derive permission flags: the set grants "all", and the binary never runs with -A',
    );
  }
  const flags: string[] = [];
  for (const name of PERMISSION_NAMES) {
    const value = set[name] as PermissionValue | undefined;
    if (value === undefined) continue;
    if (typeof value === "boolean" || Array.isArray(value)) {
      flags.push(...flag("allow", name, value as boolean | readonly string[]));
    } else {
      const rules = value as Exclude<PermissionValue, boolean | readonly string[]>;
      if (rules.allow !== undefined) flags.push(...flag("allow", name, rules.allow));
      if (rules.deny !== undefined) flags.push(...flag("deny", name, rules.deny));
      if (rules.ignore !== undefined) flags.push(...flag("ignore", name, rules.ignore));
    }
  }
  return flags;
}

function flag(kind: "allow" | "deny" | "ignore", name: string, value: boolean | readonly string[]): string[] {
  if (value === true) return [`--${kind}-${name}`];
  if (value === false || value.length === 0) return [];
  return [`--${kind}-${name}=${value.join(",")}`];
}

/** Reads `--target <triple>` (or `--target=<triple>`) from the task's arguments. */
export function parseTarget(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") continue;
    if (arg.startsWith("--target=")) return arg.slice("--target=".length);
    if (arg === "--target") {
      const value = args[i + 1];
      if (value === undefined || value.startsWith("-")) throw new UsageFailure("--target needs a value");
      return value;
    }
    throw new UsageFailure(`unknown argument "${arg}" (only --target <triple> is accepted)`);
  }
  return undefined;
}

class UsageFailure extends Error {}

/** `dist/provisioning`, with `.exe` when building for Windows. */
export function outputPath(target: string | undefined): string {
  const windows = target === undefined ? Deno.build.os === "windows" : target.includes("windows");
  return windows ? "dist/provisioning.exe" : "dist/provisioning";
}

function fail(message: string, hint?: string): never {
  console.error(`error: ${message}${hint ? `. ${hint}` : ""}`);
  Deno.exit(1);
}

/** Deno's error output without the empty "Stack backtrace" section it appends. */
function withoutBacktrace(text: string): string {
  const cut = text.indexOf("Stack backtrace:");
  return (cut === -1 ? text : text.slice(0, cut)).trimEnd();
}

async function main(args: readonly string[]): Promise<void> {
  let target: string | undefined;
  try {
    target = parseTarget(args);
  } catch (error) {
    if (!(error instanceof UsageFailure)) throw error;
    console.error(`error: Cannot compile: ${error.message}`);
    Deno.exit(2);
  }

  const config = JSON.parse(await Deno.readTextFile("deno.json")) as {
    permissions?: Record<string, unknown>;
  };
  const set = config.permissions?.[PERMISSION_SET];
  if (set === undefined || typeof set !== "object" || set === null) {
    fail(`Cannot compile: deno.json has no "${PERMISSION_SET}" permission set`);
  }
  // Unscoped file access replaces the set's scoped one (see compiledGrants).
  const permissions = [
    ...permissionFlags(set as Record<string, unknown>).filter((flag) => !/^--allow-(read|write)=/.test(flag)),
    ...compiledGrants(target),
  ];

  const denort = Deno.env.get("DENORT_BIN");
  if (denort === undefined || denort === "") {
    console.error(
      `Note: DENORT_BIN is not set, so deno compile will download the Deno ${DENO_VERSION} runtime ` +
        `(denort${target ? ` for ${target}` : ""}) from dl.deno.land. To build without that download, ` +
        `set DENORT_BIN to a denort ${DENO_VERSION} binary for the target (from the release's denort-*.zip).`,
    );
  }

  const output = outputPath(target);
  await Deno.mkdir("dist", { recursive: true });
  const compileArgs = [
    "compile",
    ...permissions,
    ...(target ? ["--target", target] : []),
    "--exclude-unused-npm",
    `--v8-flags=${CLI_V8_FLAGS}`,
    ...INCLUDES.flatMap((path) => ["--include", path]),
    "--output",
    output,
    "main.ts",
  ];
  console.error(`deno ${compileArgs.join(" ")}`);
  const result = await new Deno.Command(Deno.execPath(), {
    args: compileArgs,
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const errors = withoutBacktrace(new TextDecoder().decode(result.stderr));
  if (result.success) {
    if (errors) console.error(errors);
    console.error(`Built ${output}`);
    return;
  }
  if (errors) console.error(errors);
  if (/Could not find denort/.test(errors)) {
    fail(
      `Cannot compile ${output}: DENORT_BIN "${denort}" is not a file`,
      `Point it at a denort ${DENO_VERSION} binary`,
    );
  }
  if (/dl\.deno\.land|error sending request|dns error/i.test(errors)) {
    fail(
      `Cannot compile ${output}: the Deno runtime (denort ${DENO_VERSION}) could not be downloaded`,
      "Set DENORT_BIN to a local denort binary of that version for the target and run again",
    );
  }
  fail(`Cannot compile ${output}: deno compile exited with code ${result.code}`);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    fail(`Cannot compile: ${error instanceof Error ? error.message : String(error)}`);
  }
}
