/**
 * The files and folders an admin names on the command line, and what the program does with each:
 * the one list the launcher (core/cli/launch.ts) grants from and the program checks against
 * before it runs (docs/permissions.md). Pure: reads no file, so the launcher can use it without
 * any file permission.
 *
 * @module
 */
import { dirname, isAbsolute, resolve } from "node:path";

/**
 * What the program does with a named path:
 * - `read`: reads the file;
 * - `output`: writes the file beside its final name first and renames it, keeping an earlier
 *   copy beside it: its folder is read and written;
 * - `folder`: reads and writes in the folder (run journals, debug captures);
 * - `socket`: a Unix socket (created by `key serve`, connected to by `--device unix:PATH`);
 * - `ffi`: a native library loaded with `Deno.dlopen`;
 * - `run`: a program started (the browser).
 */
export type PathAccess = "read" | "output" | "folder" | "socket" | "ffi" | "run";

/** An option (or environment variable) that names a path, and why the program needs it. */
export interface PathOption {
  /** `--csv`, or an environment variable such as `PROVISIONING_VAULT`. */
  readonly name: string;
  readonly access: PathAccess;
  /** Why it is needed, for error messages: "the users to provision". */
  readonly why: string;
  /** A prefix the value carries before the path (`unix:` of `--device unix:/path`); others are no path. */
  readonly prefix?: string;
  /** URL schemes the value may start with instead (`postgres://` of `--database`): such a value is no path. */
  readonly urlSchemes?: readonly string[];
}

/** Every option that names a path, in every command. */
export const PATH_OPTIONS: readonly PathOption[] = [
  { name: "--csv", access: "read", why: "the CSV of users (or a results.csv to revoke)" },
  { name: "--pins", access: "read", why: "the pre-assigned PINs of batch write" },
  { name: "--ca-file", access: "read", why: "the CA certificates to trust" },
  { name: "--client-certificate", access: "read", why: "the app's client certificate" },
  { name: "--pin-recipient", access: "read", why: "the public key PIN records are encrypted to" },
  { name: "--vault", access: "output", why: "the software key vault (written atomically beside it)" },
  { name: "--results", access: "output", why: "the results file" },
  { name: "--failures", access: "output", why: "the failures file" },
  { name: "--pin-output", access: "output", why: "the file new PINs are appended to" },
  { name: "--batch", access: "output", why: "the batch file" },
  { name: "--journal-dir", access: "folder", why: "the run journals" },
  { name: "--debug-dir", access: "folder", why: "the browser path's debug captures" },
  { name: "--socket", access: "socket", why: "the Unix socket key serve listens on" },
  { name: "--device", access: "socket", why: "the CTAPHID socket of the key", prefix: "unix:" },
  { name: "--hidapi-library", access: "ffi", why: "the hidapi library that opens security keys" },
  { name: "--browser", access: "run", why: "the browser of the browser path" },
  {
    name: "--database",
    access: "output",
    why: "the panel's SQLite database (its -wal and -shm files beside it)",
    urlSchemes: ["postgres:", "postgresql:"],
  },
  { name: "--cert", access: "read", why: "the panel's TLS certificate" },
  { name: "--key", access: "read", why: "the private key of the panel's TLS certificate" },
];

/** Environment variables that name a path the same way as an option. */
export const PATH_ENV: readonly PathOption[] = [
  {
    name: "PROVISIONING_VAULT",
    access: "output",
    why: "the software key vault (written atomically beside it)",
  },
  {
    name: "PROVISIONING_HID_DEVICE",
    access: "socket",
    why: "the CTAPHID socket of the key",
    prefix: "unix:",
  },
];

/** One path named on the command line (or in the environment), made absolute. */
export interface NamedPath {
  /** The option or variable that named it. */
  readonly name: string;
  /** As the admin wrote it. */
  readonly given: string;
  /** Absolute, against the folder the admin ran the command in; links not resolved. */
  readonly path: string;
  readonly access: PathAccess;
  readonly why: string;
}

/**
 * The paths `args` name, made absolute against `cwd`. Reads `--name value` and `--name=value`,
 * stops at a `--` after other arguments, skips `-` (standard input) and values that name no path
 * (`--device /dev/hidraw3` is a device, not a socket, and needs no grant beyond the set's).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { namedPaths } from "./named_paths.ts";
 * const named = namedPaths(["--csv", "users.csv", "--results=/srv/out.csv"], "/home/me");
 * assert.deepEqual(named.map((p) => [p.name, p.path]), [
 *   ["--csv", "/home/me/users.csv"],
 *   ["--results", "/srv/out.csv"],
 * ]);
 * ```
 */
export function namedPaths(
  args: readonly string[],
  cwd: string,
  env: (name: string) => string | undefined = () => undefined,
): NamedPath[] {
  const found: NamedPath[] = [];
  const add = (option: PathOption, value: string | undefined) => {
    if (value === undefined || value === "" || value === "-") return;
    if (option.urlSchemes?.some((scheme) => value!.toLowerCase().startsWith(scheme))) return;
    if (option.prefix !== undefined) {
      if (!value.startsWith(option.prefix)) return;
      value = value.slice(option.prefix.length);
    }
    found.push({
      name: option.name,
      given: value,
      path: absolute(value, cwd),
      access: option.access,
      why: option.why,
    });
  };
  const rest = args[0] === "--" ? args.slice(1) : args;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--") break;
    for (const option of PATH_OPTIONS) {
      if (arg === option.name) add(option, rest[++i]);
      else if (arg.startsWith(`${option.name}=`)) add(option, arg.slice(option.name.length + 1));
    }
  }
  for (const option of PATH_ENV) {
    if (!found.some((p) => p.access === option.access && p.why === option.why)) add(option, env(option.name));
  }
  return found;
}

/** `path` made absolute against `cwd` (the folder the admin ran the command in). */
export function absolute(path: string, cwd: string): string {
  return isAbsolute(path) ? resolve(path) : resolve(cwd, path);
}

/** The folders and files a set of named paths needs, by kind of permission. */
export interface PathGrants {
  readonly read: string[];
  readonly write: string[];
  /** `unix:/path` entries for `--allow-net`. */
  readonly net: string[];
  readonly ffi: string[];
  readonly run: string[];
}

/**
 * What each named path needs: a file read is the file; an output is its folder (written beside
 * it, renamed, an earlier copy kept beside it); a folder is the folder; a socket is the socket
 * file (read, write) and `unix:` network; a library is FFI of that file; a browser is run and
 * read of it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { grantsFor, namedPaths } from "./named_paths.ts";
 * const grants = grantsFor(namedPaths(["--vault", "/srv/keys/a.vault"], "/"));
 * assert.deepEqual(grants.write, ["/srv/keys"]);
 * ```
 */
export function grantsFor(paths: readonly NamedPath[]): PathGrants {
  const grants: PathGrants = { read: [], write: [], net: [], ffi: [], run: [] };
  const push = (list: string[], value: string) => {
    if (!list.includes(value)) list.push(value);
  };
  for (const named of paths) {
    switch (named.access) {
      case "read":
        push(grants.read, named.path);
        break;
      case "output":
        push(grants.read, dirname(named.path));
        push(grants.write, dirname(named.path));
        break;
      case "folder":
        push(grants.read, named.path);
        push(grants.write, named.path);
        break;
      case "socket":
        push(grants.read, named.path);
        push(grants.write, named.path);
        push(grants.net, `unix:${named.path}`);
        break;
      case "ffi":
        push(grants.ffi, named.path);
        break;
      case "run":
        push(grants.run, named.path);
        push(grants.read, named.path);
        break;
    }
  }
  return grants;
}
