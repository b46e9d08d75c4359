/**
 * Checks the paths the admin named (core/cli/named_paths.ts) before a command runs: none may
 * lead out of what was named through a link (a `users.csv` that is a link to `/etc/passwd`, an
 * output folder in the working folder that is a link to elsewhere), and each must be granted to
 * this process. A refusal names the path, the option that needed it and why, and the exact way to
 * allow it (docs/permissions.md).
 *
 * Deno checks a permission against the path as written, not where its links lead, so the real
 * path is resolved here first.
 *
 * @module
 */
import { basename, dirname, relative } from "node:path";
import { ProvisioningError } from "../errors.ts";
import { LAUNCHED_ENV } from "./launch_env.ts";
import { type NamedPath, namedPaths } from "./named_paths.ts";

/** How the process was started, which decides how a missing grant is added. */
export type RunMode = "launched" | "compiled" | "deno-run";

/** What {@link checkNamedPaths} needs to know of this process. */
export interface GuardInput {
  readonly args: readonly string[];
  /** The working folder (the process's). */
  readonly cwd: string;
  readonly env: (name: string) => string | undefined;
  readonly mode: RunMode;
}

/**
 * Returns the first problem with a named path, or `undefined` when every one is fine.
 * Reading a real path needs the read permission of that path, which a refused one may lack: that
 * is then the problem reported.
 */
export function checkNamedPaths(input: GuardInput): ProvisioningError | undefined {
  for (const named of namedPaths(input.args, input.cwd, input.env)) {
    const problem = missingGrant(named, input.mode) ?? linkEscape(named, input.cwd);
    if (problem) return problem;
  }
  return undefined;
}

/** The permissions a named path needs, as `[kind, path]` pairs to query. */
function needs(named: NamedPath): Array<["read" | "write", string] | ["net", string] | ["ffi", string]> {
  switch (named.access) {
    case "read":
      return [["read", named.path]];
    case "output":
      return [["read", dirname(named.path)], ["write", dirname(named.path)]];
    case "folder":
      return [["read", named.path], ["write", named.path]];
    case "socket":
      return [["read", named.path], ["write", named.path], ["net", `unix:${named.path}`]];
    case "ffi":
      return [["ffi", named.path]];
    case "run":
      return [];
  }
}

function granted(kind: "read" | "write" | "net" | "ffi", path: string): boolean {
  const descriptor: Deno.PermissionDescriptor = kind === "net"
    ? { name: "net", host: path }
    : { name: kind, path };
  return Deno.permissions.querySync(descriptor).state === "granted";
}

function missingGrant(named: NamedPath, mode: RunMode): ProvisioningError | undefined {
  for (const [kind, path] of needs(named)) {
    if (granted(kind, path)) continue;
    const verb = { read: "read", write: "write", net: "connect to", ffi: "load" }[kind];
    return new ProvisioningError(
      "path-not-permitted",
      `Cannot ${verb} "${path}" (${named.name} ${named.given}: ${named.why}): this run is not allowed to`,
      { exitCode: 2, hint: howToAllow(kind, path, mode) },
    );
  }
  return undefined;
}

/** The exact way to allow `kind` of `path` in each way of running. */
export function howToAllow(kind: "read" | "write" | "net" | "ffi", path: string, mode: RunMode): string {
  const flag = `--allow-${kind}=${path}`;
  switch (mode) {
    case "launched":
      return `The launcher should have granted it: report this as a bug, and meanwhile run ` +
        `deno run -P=cli ${flag} main.ts … (docs/permissions.md)`;
    case "compiled":
      return `The compiled program's permissions were fixed when it was built: build it with ${flag} added ` +
        `in scripts/compile.ts, or run from a checkout with deno task start, which grants the paths you ` +
        `name (docs/permissions.md)`;
    case "deno-run":
      return `Run it with deno task start, which grants the paths you name, or add ${flag} to the ` +
        `deno run command (docs/permissions.md)`;
  }
}

/** A named path whose link (or a linked folder below the working folder) leads elsewhere. */
function linkEscape(named: NamedPath, cwd: string): ProvisioningError | undefined {
  if (named.access === "ffi" || named.access === "run") return undefined;
  const folder = named.access === "folder" ? named.path : dirname(named.path);
  let realFolder: string;
  try {
    realFolder = Deno.realPathSync(folder);
  } catch {
    return undefined; // Not there yet: the command creates it, or says it is missing.
  }
  // A folder link above the working folder (macOS's /tmp) is the system's; one below it is not.
  const realCwd = realOrSelf(cwd);
  const below = relative(cwd, folder);
  if (!below.startsWith("..") && below !== "" && !isInside(realFolder, realCwd)) {
    return escaped(named, realFolder, "a folder in it is a link");
  }
  if (named.access === "folder") return undefined;
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(named.path);
  } catch {
    return undefined;
  }
  if (!info.isSymlink) return undefined;
  let target: string;
  try {
    target = Deno.realPathSync(named.path);
  } catch {
    target = `${realFolder}/${basename(named.path)} (a broken link)`;
  }
  return escaped(named, target, "it is a link");
}

function escaped(named: NamedPath, target: string, what: string): ProvisioningError {
  return new ProvisioningError(
    "path-is-link",
    `Cannot use ${named.name} "${named.given}": ${what} to "${target}", and the program follows no link ` +
      `out of the paths named on the command line`,
    { exitCode: 2, hint: `Name the real path instead: ${named.name} ${target}` },
  );
}

function realOrSelf(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

function isInside(path: string, folder: string): boolean {
  const rel = relative(folder, path);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith("/"));
}

/** How this process was started, read from itself (for errors that reach the top). */
export function currentRunMode(): RunMode {
  if (Deno.build.standalone) return "compiled";
  try {
    return Deno.env.get(LAUNCHED_ENV) === "1" ? "launched" : "deno-run";
  } catch {
    return "deno-run";
  }
}

const deniedPattern = /Requires (read|write|net|ffi|run|env|sys) access to "?([^",]+)"?/;

/**
 * A permission Deno refused, as an error that names the path, why the program may not touch it,
 * and the exact way to allow it; `undefined` when `error` is no such refusal.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { permissionError } from "./path_guard.ts";
 * const denied = new Deno.errors.NotCapable('Requires read access to "/srv/users.csv", run again with the --allow-read flag');
 * const error = permissionError(denied, "deno-run")!;
 * assert.match(error.message, /may not read "\/srv\/users.csv"/);
 * assert.match(error.hint ?? "", /--allow-read=\/srv\/users.csv/);
 * ```
 */
export function permissionError(
  error: unknown,
  mode: RunMode = currentRunMode(),
): ProvisioningError | undefined {
  if (!(error instanceof Deno.errors.NotCapable)) return undefined;
  const match = deniedPattern.exec(error.message);
  if (!match) return undefined;
  const kind = match[1]!;
  const target = match[2]!;
  const verb: Record<string, string> = {
    read: "read",
    write: "write",
    net: "connect to",
    ffi: "load",
    run: "run",
    env: "read the environment variable",
    sys: "read the system information",
  };
  const why = kind === "read" || kind === "write"
    ? "it is outside the folder it runs in, its data folder .provisioning/ and the paths named on the command line"
    : kind === "net"
    ? "it is not a host of the plugins in use, loopback, or the --sandbox URL"
    : kind === "ffi"
    ? "native libraries load only for the commands that open a security key, from hidapi's documented places or --hidapi-library"
    : kind === "run"
    ? "the program runs only the browsers it knows, or the one named with --browser"
    : "the permission set does not list it";
  const hint = kind === "read" || kind === "write"
    ? `Name it on the command line with the option that uses it, or run in its folder. ${
      howToAllow(kind, target, mode)
    }`
    : kind === "net" || kind === "ffi"
    ? howToAllow(kind, target, mode)
    : `Add --allow-${kind}=${target} to the deno run command, or to the cli set in deno.json (docs/permissions.md)`;
  return new ProvisioningError(
    "not-permitted",
    `Cannot continue: this run may not ${verb[kind]} "${target}": ${why}`,
    { cause: error, hint, exitCode: 2 },
  );
}

/**
 * A "no browser found" whose search was refused by the permissions rather than by the disk
 * (core/browser/find_browser.ts treats an unreadable place as empty): the error says so, with the
 * places it may not read and how to allow them, instead of "not installed".
 */
export function browserSearchDenied(
  error: unknown,
  mode: RunMode = currentRunMode(),
): ProvisioningError | undefined {
  if (!(error instanceof ProvisioningError) || error.code !== "browser-not-found") return undefined;
  const tried = (error as ProvisioningError & { tried?: readonly string[] }).tried ?? [];
  const denied = tried.filter((path) =>
    path.includes("/") || path.includes("\\")
      ? Deno.permissions.querySync({ name: "read", path }).state !== "granted"
      : false
  );
  if (denied.length === 0) return undefined;
  return new ProvisioningError(
    "browser-not-permitted",
    `Cannot look for the browser: this run may not read ${denied.map((p) => `"${p}"`).join(", ")}, so ` +
      "whether a browser is installed there is unknown",
    {
      cause: error,
      exitCode: 2,
      hint: `Name the browser with --browser PATH (it is then granted), or ${
        howToAllow("read", denied[0]!, mode)
      }`,
    },
  );
}
