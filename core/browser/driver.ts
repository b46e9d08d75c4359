/**
 * One browser process for a whole run, and one private (incognito) browser context per user.
 *
 * The browser is started here with `Deno.Command` (never downloaded: see find_browser.ts), with a
 * fresh profile folder and the DevTools port chosen by the browser; puppeteer-core then connects
 * over a WebSocket of Deno's own. Launching ourselves rather than through puppeteer's launcher
 * keeps the permissions small: puppeteer's launcher and its `ws` dependency read environment
 * variables, and we own the process, so closing always ends it and removes the profile.
 *
 * @example
 * ```ts ignore
 * await using browser = await launchBrowser({ headless: true });
 * const answer = await browser.withContext(async (context) => {
 *   const page = await context.newPage();
 *   await page.goto("http://127.0.0.1:8080/");
 *   return await page.title();
 * }); // the context is closed here, also when the callback throws
 * ```
 *
 * @module
 */
import puppeteer from "puppeteer-core/internal/puppeteer-core-browser.js";
import type {
  Browser,
  BrowserContext,
  ConnectionTransport,
  Page,
} from "puppeteer-core/internal/puppeteer-core-browser.js";
import { ProvisioningError } from "../errors.ts";
import { findBrowser } from "./find_browser.ts";
import { sleep, withTimeout } from "../sleep.ts";

/** Flags every launch gets: no sandbox (containers), no GPU, nothing phoning home, no first-run UI. */
export const baseBrowserArgs: readonly string[] = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--no-default-browser-check",
  "--disable-default-apps",
  "--password-store=basic",
  "--use-mock-keychain",
  "--disable-breakpad",
  "--disable-crash-reporter",
];

/** Options of {@link launchBrowser}. */
export interface LaunchBrowserOptions {
  /** The executable; found with {@link findBrowser} when absent. */
  executablePath?: string;
  /** Without a window (`true`), or with one to watch (`--mode headful`). @default true */
  headless?: boolean;
  /** Flags added after {@link baseBrowserArgs}. */
  args?: readonly string[];
  /** Folder the throwaway profile folder is made in. @default the system temp folder */
  profileParent?: string;
  /** How long the browser may take to open its DevTools port. @default 30000 */
  launchTimeoutMs?: number;
  /** Environment variables for the browser besides the inherited ones (e.g. `DISPLAY` for a headful test). */
  env?: Record<string, string>;
}

/** The browser did not start. Code `browser-launch-failed`. */
export class BrowserLaunchError extends ProvisioningError {
  constructor(message: string, options: { cause?: unknown; hint?: string } = {}) {
    super("browser-launch-failed", message, options);
  }
}

/**
 * A running browser. `close()` (or `await using`) closes every context, ends the process and
 * removes its profile folder.
 */
export class BrowserHandle implements AsyncDisposable {
  /** The puppeteer Browser, for what this wrapper does not cover. */
  readonly browser: Browser;
  /** The browser's main process id (its children are found through /proc by the benchmark). */
  readonly pid: number;
  readonly headless: boolean;
  readonly executablePath: string;
  readonly #child: Deno.ChildProcess;
  readonly #lifeline: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #profile: string;
  readonly #contexts = new Set<UserContext>();
  readonly #exited: Promise<Deno.CommandStatus>;
  readonly #stderr: Promise<void>;
  readonly #socketClosed: Promise<void>;
  #closing: Promise<void> | undefined;

  /** Use {@link launchBrowser}. */
  constructor(parts: {
    browser: Browser;
    child: Deno.ChildProcess;
    lifeline?: WritableStreamDefaultWriter<Uint8Array>;
    exited: Promise<Deno.CommandStatus>;
    stderr: Promise<void>;
    socketClosed: Promise<void>;
    profile: string;
    headless: boolean;
    executablePath: string;
  }) {
    this.browser = parts.browser;
    this.#child = parts.child;
    this.#lifeline = parts.lifeline;
    this.pid = parts.child.pid;
    this.#exited = parts.exited;
    this.#stderr = parts.stderr;
    this.#socketClosed = parts.socketClosed;
    this.#profile = parts.profile;
    this.headless = parts.headless;
    this.executablePath = parts.executablePath;
  }

  /** Opens a fresh private context: no cookies, storage or cache shared with any other. */
  async newContext(): Promise<UserContext> {
    if (this.#closing) throw new TypeError("Cannot open a browser context: the browser is closed");
    const context = new UserContext(
      await this.browser.createBrowserContext(),
      (c) => this.#contexts.delete(c),
    );
    this.#contexts.add(context);
    return context;
  }

  /** Runs `use` in a fresh private context and closes the context afterwards, whatever happened. */
  async withContext<T>(use: (context: UserContext) => Promise<T>): Promise<T> {
    const context = await this.newContext();
    try {
      return await use(context);
    } finally {
      await context.close();
    }
  }

  /** Contexts open now. */
  get openContexts(): number {
    return this.#contexts.size;
  }

  /** Closes every context and the browser, waits for the process to end, removes the profile. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#contexts].map((c) => c.close()));
      try {
        await withTimeout(this.browser.close(), 5_000);
      } catch {
        // The browser is gone already, or hangs: the process is ended below.
      }
      const exited = await orUndefinedAfter(this.#exited, 5_000);
      // Closing the lifeline tells the watchdog to end the browser (it ended already, normally).
      await this.#lifeline?.close().catch(() => undefined);
      if (!exited) {
        try {
          if (!this.#lifeline) this.#child.kill("SIGKILL");
        } catch {
          // It ended in the meantime.
        }
        await this.#exited;
      }
      await this.#stderr;
      await this.#socketClosed;
      await removeQuietly(this.#profile);
    })();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** One user's private browser context. */
export class UserContext implements AsyncDisposable {
  /** The puppeteer BrowserContext. */
  readonly context: BrowserContext;
  readonly #onClose: (context: UserContext) => void;
  #closing: Promise<void> | undefined;

  constructor(context: BrowserContext, onClose: (context: UserContext) => void) {
    this.context = context;
    this.#onClose = onClose;
  }

  /** Opens a tab in this context. */
  async newPage(): Promise<Page> {
    return await this.context.newPage();
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** Closes the context and its pages; never throws (a crashed browser has closed it already). */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await withTimeout(this.context.close(), 10_000);
      } catch {
        // Gone with the browser.
      } finally {
        this.#onClose(this);
      }
    })();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Starts the browser and connects to it.
 *
 * @throws {BrowserNotFoundError} (find_browser.ts) when no browser is installed.
 * @throws {BrowserLaunchError} when it does not start or does not open its DevTools port in time.
 */
export async function launchBrowser(options: LaunchBrowserOptions = {}): Promise<BrowserHandle> {
  const executablePath = options.executablePath ?? findBrowser();
  const headless = options.headless ?? true;
  const profile = await Deno.makeTempDir({
    prefix: "provisioning-browser-",
    ...(options.profileParent ? { dir: options.profileParent } : {}),
  });
  const args = [
    ...baseBrowserArgs,
    ...(headless ? ["--headless", "--hide-scrollbars", "--mute-audio"] : []),
    "--remote-debugging-port=0",
    `--user-data-dir=${profile}`,
    ...(options.args ?? []),
    "about:blank",
  ];
  let watched = Deno.build.os !== "windows";
  if (watched) await cleanUpLeftovers(profile);
  let child: Deno.ChildProcess;
  try {
    try {
      // The watchdog (a POSIX shell) ends the browser when this process ends, even by kill -9.
      child = watched
        ? new Deno.Command(shell, {
          args: ["-c", watchdogScript, "provisioning-browser-watchdog", profile, executablePath, ...args],
          stdin: "piped",
          stdout: "null",
          stderr: "piped",
          ...(options.env ? { env: options.env } : {}),
        }).spawn()
        : new Deno.Command(executablePath, {
          args,
          stdin: "null",
          stdout: "null",
          stderr: "piped",
          ...(options.env ? { env: options.env } : {}),
        }).spawn();
    } catch (error) {
      // No shell, or no permission to run it (a narrower permission set): the browser alone.
      if (!watched) throw error;
      watched = false;
      child = new Deno.Command(executablePath, { args, stdin: "null", stdout: "null", stderr: "piped" })
        .spawn();
    }
  } catch (error) {
    await removeQuietly(profile);
    throw new BrowserLaunchError(`Cannot start browser "${executablePath}": ${describe(error)}`, {
      cause: error,
      hint: "Check that the file is a Chromium, Chrome or Edge executable and that --browser points at it",
    });
  }
  // Held open for the browser's whole life: its end (close, or this process dying) is the
  // watchdog's signal.
  const lifeline = watched ? child.stdin.getWriter() : undefined;
  const tail: string[] = [];
  const stderr = drain(child.stderr, tail);
  let exitedNow = false;
  const exited = child.status.finally(() => {
    exitedNow = true;
  });

  const fail = async (why: string, cause?: unknown): Promise<never> => {
    await lifeline?.close().catch(() => undefined);
    try {
      if (!watched) child.kill("SIGKILL");
    } catch {
      // Ended already.
    }
    await exited;
    await stderr;
    await removeQuietly(profile);
    const output = tail.join("").trim().split("\n").slice(-3).join(" | ");
    throw new BrowserLaunchError(
      `Cannot start browser "${executablePath}": ${why}${output ? ` (it said: ${output})` : ""}`,
      {
        ...(cause === undefined ? {} : { cause }),
        hint: "Run it once by hand to see why, or pass another --browser",
      },
    );
  };

  const deadline = Date.now() + (options.launchTimeoutMs ?? 30_000);
  let endpoint: string | undefined;
  while (endpoint === undefined) {
    if (exitedNow) return await fail("it exited before opening its DevTools port");
    if (Date.now() > deadline) return await fail("it did not open its DevTools port in time");
    endpoint = await readDevToolsEndpoint(profile);
    if (endpoint === undefined) await sleep(25);
  }

  let socket: { transport: ConnectionTransport; closed: Promise<void> };
  try {
    socket = await openTransport(endpoint);
  } catch (error) {
    return await fail(`cannot connect to ${endpoint}`, error);
  }
  let browser: Browser;
  try {
    browser = await puppeteer.connect({
      transport: socket.transport,
      defaultViewport: { width: 1280, height: 900 },
    });
  } catch (error) {
    socket.transport.close();
    await socket.closed;
    return await fail("the DevTools connection failed", error);
  }
  return new BrowserHandle({
    browser,
    child,
    ...(lifeline ? { lifeline } : {}),
    exited,
    stderr,
    socketClosed: socket.closed,
    profile,
    headless,
    executablePath,
  });
}

/** The POSIX shell that runs the watchdog (Linux and macOS). */
const shell = "/bin/sh";

/**
 * The watchdog: starts the browser (`$2…`) with the profile `$1`, records both pids in the
 * profile, and waits on two things: the browser's end (then it exits with the browser's status)
 * and the end of its stdin, which this process holds open for its whole life (then it ends the
 * browser: TERM, then KILL after 3 s, then removes the profile). A kill -9 of this process closes
 * the stdin too, so the browser never outlives the run. The browser's helper processes end with
 * it (they watch their IPC channel to the browser).
 */
const watchdogScript = `
profile="$1"; shift
exec 3<&0
"$@" </dev/null 3<&- &
browser=$!
echo "$$" > "$profile/watchdog.pid"
echo "$browser" > "$profile/browser.pid"
{
  while read -r _ <&3; do :; done
  : > "$profile/.ending"
  kill -TERM "$browser" 2>/dev/null
  i=0
  while kill -0 "$browser" 2>/dev/null && [ "$i" -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL "$browser" 2>/dev/null
  sleep 0.5
  rm -rf "$profile"
} &
guard=$!
wait "$browser"
status=$?
if [ -e "$profile/.ending" ]; then wait "$guard"; else kill "$guard" 2>/dev/null; fi
exit "$status"
`;

/**
 * Ends what an earlier run left when its watchdog was killed too (e.g. kill -9 of the whole
 * process group): every sibling profile folder whose watchdog is gone and that is older than a
 * minute (a younger one may be starting now) loses its browser, if that process still runs with
 * this profile on its command line (so a reused pid is never killed), and then the folder.
 */
const cleanUpScript = `
find "$1" -maxdepth 1 -type d -name 'provisioning-browser-*' -mmin +1 2>/dev/null | while IFS= read -r dir; do
  [ "$dir" = "$2" ] && continue
  w=$(cat "$dir/watchdog.pid" 2>/dev/null)
  if [ -n "$w" ] && kill -0 "$w" 2>/dev/null; then continue; fi
  b=$(cat "$dir/browser.pid" 2>/dev/null)
  if [ -n "$b" ] && ps -o args= -p "$b" 2>/dev/null | grep -qF -- "$dir"; then kill -KILL "$b" 2>/dev/null; fi
  rm -rf "$dir"
done
`;

/** Runs {@link cleanUpScript} in the new profile's parent folder; never throws. */
async function cleanUpLeftovers(profile: string): Promise<void> {
  const parent = profile.replace(/\/[^/]*$/, "") || "/";
  try {
    await new Deno.Command(shell, {
      args: ["-c", cleanUpScript, "provisioning-browser-cleanup", parent, profile],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
  } catch {
    // No shell, or not allowed to run it: leftovers stay until the system cleans its temp folder.
  }
}

/** `ws://127.0.0.1:PORT/devtools/browser/ID` from the profile's DevToolsActivePort file, once written. */
async function readDevToolsEndpoint(profile: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${profile}/DevToolsActivePort`);
  } catch {
    return undefined;
  }
  const [port, path] = text.split("\n").map((line) => line.trim());
  if (!port || !/^[0-9]+$/.test(port) || !path?.startsWith("/devtools/browser/")) return undefined;
  return `ws://127.0.0.1:${port}${path}`;
}

/** A puppeteer transport over Deno's WebSocket; `closed` settles when the socket is closed. */
async function openTransport(
  endpoint: string,
): Promise<{ transport: ConnectionTransport; closed: Promise<void> }> {
  const ws = new WebSocket(endpoint);
  const closed = new Promise<void>((resolve) =>
    ws.addEventListener("close", () => resolve(), { once: true })
  );
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error(`WebSocket to ${endpoint} failed`)), { once: true });
  }).catch(async (error) => {
    await closed;
    throw error;
  });
  const transport: ConnectionTransport = {
    send(message) {
      if (ws.readyState === WebSocket.OPEN) ws.send(message);
    },
    close() {
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close();
    },
  };
  ws.addEventListener("message", (event) => {
    if (typeof event.data === "string") transport.onmessage?.(event.data);
  });
  ws.addEventListener("close", () => transport.onclose?.(), { once: true });
  return { transport, closed };
}

/** Reads a stream to its end, keeping its last few KB for error messages. */
async function drain(stream: ReadableStream<Uint8Array>, tail: string[]): Promise<void> {
  const decoder = new TextDecoder();
  try {
    for await (const chunk of stream) {
      tail.push(decoder.decode(chunk, { stream: true }));
      while (tail.length > 16) tail.shift();
    }
  } catch {
    // The process ended.
  }
}

/** `promise`'s value, or undefined when it takes longer than `ms` (the timer is always cleared). */
async function orUndefinedAfter<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function removeQuietly(path: string): Promise<void> {
  // The browser's helper processes may still be writing into the profile for a moment.
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await Deno.remove(path, { recursive: true });
      return;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      await sleep(100 * Math.min(attempt + 1, 5));
    }
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
