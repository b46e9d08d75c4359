/**
 * Finds a Chromium-family browser already installed on the machine: an explicit path
 * (`--browser PATH`), else Chromium, Chrome or Edge in the places their installers put them on
 * Linux, macOS and Windows. Never downloads one: when none is found the error says how to
 * install one on this operating system.
 *
 * @module
 */
import { ProvisioningError } from "../errors.ts";

/** The operating systems the finder knows install locations for. */
export type BrowserOs = "linux" | "darwin" | "windows";

/** Options of {@link findBrowser}. */
export interface FindBrowserOptions {
  /** An explicit executable (`--browser PATH`); it must exist, nothing else is tried. */
  path?: string;
  /** @default Deno.build.os */
  os?: string;
  /** Reads an environment variable (Windows install roots). @default Deno.env.get, undefined when not permitted */
  env?: (name: string) => string | undefined;
  /** Whether a file exists and is a file. @default Deno.statSync */
  exists?: (path: string) => boolean;
}

/** The browser could not be found. Code `browser-not-found`. */
export class BrowserNotFoundError extends ProvisioningError {
  /** The paths that were tried, in order. */
  readonly tried: readonly string[];
  constructor(message: string, tried: readonly string[], hint: string) {
    super("browser-not-found", message, { hint });
    this.tried = tried;
  }
}

/** Install hints per operating system, for the error when no browser is found. */
export const installHints: Readonly<Record<BrowserOs, string>> = {
  linux:
    "Install Chromium or Google Chrome (Debian/Ubuntu: `sudo apt install chromium`; Fedora: `sudo dnf install chromium`), or pass --browser PATH",
  darwin:
    "Install Google Chrome, Microsoft Edge or Chromium into /Applications (e.g. `brew install --cask google-chrome`), or pass --browser PATH",
  windows:
    "Install Microsoft Edge or Google Chrome (e.g. `winget install Google.Chrome`), or pass --browser PATH to msedge.exe or chrome.exe",
};

/**
 * The places a Chromium-family browser is installed, in the order they are tried: Chromium and
 * Chrome before Edge on Linux and macOS, Edge first on Windows (it ships with the system).
 *
 * @example
 * ```ts
 * import { browserCandidates } from "./find_browser.ts";
 * console.assert(browserCandidates("linux").includes("/usr/bin/chromium"));
 * ```
 */
export function browserCandidates(
  os: BrowserOs,
  env: (name: string) => string | undefined = () => undefined,
): string[] {
  if (os === "linux") {
    return [
      "/usr/bin/chromium",
      "/usr/bin/chromium-browser",
      "/snap/bin/chromium",
      "/usr/bin/google-chrome",
      "/usr/bin/google-chrome-stable",
      "/opt/google/chrome/chrome",
      "/usr/bin/microsoft-edge",
      "/usr/bin/microsoft-edge-stable",
      "/opt/microsoft/msedge/msedge",
    ];
  }
  if (os === "darwin") {
    const apps = [
      "Google Chrome.app/Contents/MacOS/Google Chrome",
      "Chromium.app/Contents/MacOS/Chromium",
      "Microsoft Edge.app/Contents/MacOS/Microsoft Edge",
    ];
    const home = env("HOME");
    return [
      ...apps.map((app) => `/Applications/${app}`),
      ...(home ? apps.map((app) => `${home}/Applications/${app}`) : []),
    ];
  }
  const roots = [env("PROGRAMFILES(X86)"), env("PROGRAMFILES"), env("LOCALAPPDATA")]
    .filter((root): root is string => root !== undefined && root !== "");
  const defaults = roots.length > 0 ? roots : ["C:\\Program Files (x86)", "C:\\Program Files"];
  const tails = [
    "Microsoft\\Edge\\Application\\msedge.exe",
    "Google\\Chrome\\Application\\chrome.exe",
    "Chromium\\Application\\chrome.exe",
  ];
  return tails.flatMap((tail) => defaults.map((root) => `${root}\\${tail}`));
}

/**
 * The browser executable to launch.
 *
 * @throws {BrowserNotFoundError} naming the path (or the places tried) and how to install one.
 * @example
 * ```ts
 * import { BrowserNotFoundError, findBrowser } from "./find_browser.ts";
 * try {
 *   findBrowser({ os: "linux", exists: () => false });
 * } catch (error) {
 *   console.assert(error instanceof BrowserNotFoundError && error.tried.length > 0);
 * }
 * ```
 */
export function findBrowser(options: FindBrowserOptions = {}): string {
  const os = normalizeOs(options.os ?? Deno.build.os);
  const exists = options.exists ?? fileExists;
  if (options.path !== undefined) {
    if (exists(options.path)) return options.path;
    throw new BrowserNotFoundError(
      `Cannot use browser "${options.path}": no such file`,
      [options.path],
      `Pass --browser the path of a Chromium, Chrome or Edge executable. ${installHints[os]}`,
    );
  }
  const candidates = browserCandidates(os, options.env ?? readEnv);
  const found = candidates.find((path) => exists(path));
  if (found) return found;
  throw new BrowserNotFoundError(
    `Cannot find a browser: none of Chromium, Chrome or Edge is installed where expected (${candidates.length} places tried)`,
    candidates,
    installHints[os],
  );
}

function normalizeOs(os: string): BrowserOs {
  if (os === "darwin" || os === "windows") return os;
  return "linux";
}

function fileExists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
