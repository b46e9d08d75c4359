/**
 * TLS verification for everything the program fetches, with the IDmelon tool's three global
 * flags: verification is on by default; `--ca-file <pem>` adds a corporate CA; `--local-ssl-verify`
 * trusts the operating system's certificate store; `--disable-ssl-verify` skips verification for
 * the provider's hosts and says so on every run.
 *
 * Deno fixes two of these when the process starts (measured on 2.9.6): the certificate store is
 * chosen by `DENO_TLS_CA_STORE=system`, and skipping verification exists only as the runtime flag
 * `--unsafely-ignore-certificate-errors=HOST,…` (no environment form, no per-client option). So
 * the program decides first ({@link decideLaunch}, a pure function) whether it must restart
 * itself with that variable or flag ({@link relaunch}); a CA file needs no restart
 * ({@link tlsFetch} uses `Deno.createHttpClient({ caCerts })`).
 *
 * @module
 */
import { ProvisioningError, UsageError } from "./errors.ts";

/** The TLS choices of one run, read from the command line by {@link parseTlsFlags}. */
export interface TlsFlags {
  /** `--ca-file <pem>`: PEM certificates to trust in addition to the store. */
  readonly caFile?: string;
  /** `--local-ssl-verify`: verify against the operating system's certificate store. */
  readonly localStore: boolean;
  /** `--disable-ssl-verify`: do not verify the provider's hosts' certificates at all. */
  readonly disableVerify: boolean;
}

/**
 * The global options this module owns, as the root program declares them for `--help` and so that
 * commander accepts them anywhere on the line. Their values are read by {@link parseTlsFlags}.
 */
export const TLS_OPTIONS: readonly { readonly flags: string; readonly description: string }[] = [
  {
    flags: "--ca-file <pem>",
    description: "trust the CA certificates in this PEM file too (e.g. a corporate TLS proxy's)",
  },
  {
    flags: "--local-ssl-verify",
    description: "verify TLS certificates against the operating system's certificate store",
  },
  {
    flags: "--disable-ssl-verify",
    description: "DANGER: do not verify the TLS certificates of the provider's hosts (a warning is printed)",
  },
];

/**
 * Set in the environment of a restarted process to what the restart applied (`system-store`,
 * `no-verify`, comma-separated), so it does not restart again. Someone who starts the program
 * with Deno's flag or variable themselves (e.g. without permission to run Deno) sets it too.
 */
export const TLS_APPLIED_ENV = "PROVISIONING_TLS_APPLIED";

const flagNames = {
  caFile: "--ca-file",
  localStore: "--local-ssl-verify",
  disableVerify: "--disable-ssl-verify",
} as const;

/**
 * Reads the three TLS flags from the raw arguments, wherever they stand (they are global options),
 * before commander runs. Stops at a `--` that follows other arguments (what comes after it is not
 * an option); a leading `--` (as `deno task` passes it) is skipped.
 *
 * @throws {UsageError} `--ca-file` without a value, or `--disable-ssl-verify` with another one
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTlsFlags } from "./tls.ts";
 * assert.deepEqual(parseTlsFlags(["provision", "--ca-file=corp.pem", "--user", "a@b.c"]), {
 *   caFile: "corp.pem",
 *   localStore: false,
 *   disableVerify: false,
 * });
 * ```
 */
export function parseTlsFlags(args: readonly string[]): TlsFlags {
  let caFile: string | undefined;
  let localStore = false;
  let disableVerify = false;
  const rest = args[0] === "--" ? args.slice(1) : args;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--") break;
    if (arg === flagNames.localStore) localStore = true;
    else if (arg === flagNames.disableVerify) disableVerify = true;
    else if (arg.startsWith(`${flagNames.caFile}=`)) caFile = arg.slice(flagNames.caFile.length + 1);
    else if (arg === flagNames.caFile) {
      const value = rest[i + 1];
      if (value === undefined || value.startsWith("-")) {
        throw new UsageError("Cannot use --ca-file: it needs the path of a PEM file", {
          hint: "Write --ca-file corporate-ca.pem",
        });
      }
      caFile = value;
      i++;
    }
  }
  if (caFile === "") {
    throw new UsageError("Cannot use --ca-file: the path is empty", {
      hint: "Write --ca-file corporate-ca.pem",
    });
  }
  if (disableVerify && (localStore || caFile !== undefined)) {
    throw new UsageError(
      `Cannot combine --disable-ssl-verify with ${localStore ? "--local-ssl-verify" : "--ca-file"}: ` +
        "one skips the verification the other configures",
      { hint: "Keep --ca-file or --local-ssl-verify, which verify; drop --disable-ssl-verify" },
    );
  }
  return { ...(caFile === undefined ? {} : { caFile }), localStore, disableVerify };
}

/** What {@link decideLaunch} needs to know of this process. */
export interface LaunchInput {
  /** The program's arguments (`Deno.args`). */
  readonly args: readonly string[];
  /** The value of {@link TLS_APPLIED_ENV}, if set. */
  readonly applied: string | undefined;
  /** Hosts `--disable-ssl-verify` applies to: the providers' (login, Graph, a sandbox). */
  readonly hosts: readonly string[];
  /** `Deno.execPath()`: the Deno executable, or the compiled program itself. */
  readonly execPath: string;
  /** `Deno.mainModule`, e.g. `file:///…/main.ts`. */
  readonly mainModule: string;
  /** `Deno.build.standalone`: a `deno compile` binary, to which runtime flags cannot be added. */
  readonly compiled: boolean;
  /** Whether this process may run {@link execPath} (its `run` permission). */
  readonly canRun: boolean;
  /** The deno.json permission set to restart under. @default "cli" */
  readonly permissionSet?: string;
  /**
   * Paths this process may read and write beyond the permission set (the working folder, when
   * it was granted with `--allow-read`/`--allow-write`): granted again to the restarted process.
   */
  readonly grants?: { readonly read?: readonly string[]; readonly write?: readonly string[] };
}

/** What the program does before it parses its command line. */
export type LaunchDecision =
  | {
    /** Run here: the TLS settings are in effect (or need no restart). */
    readonly kind: "continue";
    readonly flags: TlsFlags;
    /** The line to print on stderr first (verification is off), without a newline. */
    readonly warning?: string;
  }
  | {
    /** Start `command args` with `env` added, wait for it and exit with its code. */
    readonly kind: "relaunch";
    readonly command: string;
    readonly args: readonly string[];
    readonly env: Readonly<Record<string, string>>;
  }
  | {
    /** The flags cannot take effect in this process: report the error and exit. */
    readonly kind: "refuse";
    readonly error: ProvisioningError;
  };

/**
 * Decides whether `--local-ssl-verify` or `--disable-ssl-verify` need the process to restart
 * itself (with `DENO_TLS_CA_STORE=system`, or `--unsafely-ignore-certificate-errors` scoped to
 * `hosts`), under the same permission set, with the same arguments. Pure: everything it needs
 * is in `input`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decideLaunch } from "./tls.ts";
 * const decision = decideLaunch({
 *   args: ["whoami"],
 *   applied: undefined,
 *   hosts: ["graph.microsoft.com"],
 *   execPath: "/usr/bin/deno",
 *   mainModule: "file:///opt/provisioning/main.ts",
 *   compiled: false,
 *   canRun: true,
 * });
 * assert.equal(decision.kind, "continue");
 * ```
 */
export function decideLaunch(input: LaunchInput): LaunchDecision {
  let flags: TlsFlags;
  try {
    flags = parseTlsFlags(input.args);
  } catch (error) {
    if (error instanceof ProvisioningError) return { kind: "refuse", error };
    throw error;
  }
  const applied = new Set((input.applied ?? "").split(",").map((s) => s.trim()).filter((s) => s !== ""));
  const hosts = [...new Set(input.hosts)];
  const needs: string[] = [];
  if (flags.localStore) needs.push("system-store");
  if (flags.disableVerify) needs.push("no-verify");
  const missing = needs.filter((need) => !applied.has(need));
  const warning = flags.disableVerify ? { warning: disabledVerificationWarning(hosts) } : {};
  if (missing.length === 0) return { kind: "continue", flags, ...warning };

  const env: Record<string, string> = { [TLS_APPLIED_ENV]: needs.join(",") };
  if (flags.localStore) env["DENO_TLS_CA_STORE"] = "system";
  const ignoreFlag = `--unsafely-ignore-certificate-errors=${hosts.join(",")}`;
  const flag = flags.disableVerify ? "--disable-ssl-verify" : "--local-ssl-verify";

  if (input.compiled && flags.disableVerify) {
    return {
      kind: "refuse",
      error: new UsageError(
        "Cannot use --disable-ssl-verify in the compiled program: skipping TLS verification is a " +
          "Deno runtime flag, which a compiled program cannot take",
        {
          hint: "Trust the server's CA instead with --ca-file <pem> (or --local-ssl-verify), or run " +
            "from a checkout with deno run",
        },
      ),
    };
  }
  const script = input.compiled ? undefined : scriptPath(input.mainModule);
  if (!input.compiled && script === undefined) {
    return {
      kind: "refuse",
      error: new UsageError(
        `Cannot use ${flag}: the program must restart itself, and it does not run from a local file ` +
          `(${input.mainModule})`,
        { hint: restartYourselfHint(flags, ignoreFlag, env, "<main.ts>", input) },
      ),
    };
  }
  if (!input.canRun) {
    return {
      kind: "refuse",
      error: new ProvisioningError(
        "tls-restart-not-permitted",
        `Cannot use ${flag}: the program must restart itself ` +
          `(${flags.disableVerify ? ignoreFlag : "DENO_TLS_CA_STORE=system"}), and its permissions ` +
          `do not allow running "${input.execPath}"`,
        {
          exitCode: 2,
          hint: `Grant it with --allow-run=${input.execPath}, or ${
            restartYourselfHint(flags, ignoreFlag, env, script ?? input.execPath, input)
          }`,
        },
      ),
    };
  }
  if (input.compiled) return { kind: "relaunch", command: input.execPath, args: [...input.args], env };

  const permissionSet = input.permissionSet ?? "cli";
  const config = new URL("./deno.json", input.mainModule);
  const args = [
    "run",
    "-q",
    `--config=${decodeURIComponent(config.pathname)}`,
    `-P=${permissionSet}`,
    ...grantFlags("read", input.grants?.read),
    ...grantFlags("write", input.grants?.write),
    ...(flags.disableVerify ? [ignoreFlag] : []),
    script!,
    ...input.args,
  ];
  return { kind: "relaunch", command: input.execPath, args, env };
}

function grantFlags(kind: "read" | "write", paths: readonly string[] | undefined): string[] {
  return paths && paths.length > 0 ? [`--allow-${kind}=${paths.join(",")}`] : [];
}

function scriptPath(mainModule: string): string | undefined {
  try {
    const url = new URL(mainModule);
    return url.protocol === "file:" ? decodeURIComponent(url.pathname) : undefined;
  } catch {
    return undefined;
  }
}

function restartYourselfHint(
  flags: TlsFlags,
  ignoreFlag: string,
  env: Record<string, string>,
  script: string,
  input: LaunchInput,
): string {
  const vars = Object.entries(env).map(([name, value]) => `${name}=${value}`).join(" ");
  if (input.compiled) return `start it as: ${vars} ${input.execPath} …`;
  return `start it as: ${vars} deno run -P=${input.permissionSet ?? "cli"} ${
    flags.disableVerify ? `${ignoreFlag} ` : ""
  }${script} …`;
}

/**
 * The line printed on stderr on every run with `--disable-ssl-verify`: what is not verified, for
 * which hosts, and what an attacker on the path gains.
 */
export function disabledVerificationWarning(hosts: readonly string[]): string {
  return `warning: --disable-ssl-verify: TLS certificates of ${hosts.join(", ")} are NOT verified; ` +
    "anyone on the network path can impersonate them and intercept admin tokens and Temporary Access Passes";
}

/**
 * Starts the process a {@link LaunchDecision} of kind `relaunch` describes, with this terminal's
 * stdin, stdout and stderr, and returns its exit code. Ctrl+C reaches the child from the terminal;
 * this process waits for it instead of ending first.
 */
export async function relaunch(
  decision: Extract<LaunchDecision, { kind: "relaunch" }>,
): Promise<number> {
  const ignore = () => {};
  Deno.addSignalListener("SIGINT", ignore);
  try {
    const child = new Deno.Command(decision.command, {
      args: [...decision.args],
      env: { ...decision.env },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    const status = await child.status;
    return status.signal === null ? status.code : 128 + signalNumber(status.signal);
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
  }
}

function signalNumber(signal: Deno.Signal): number {
  const numbers: Partial<Record<Deno.Signal, number>> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return numbers[signal] ?? 1;
}

/**
 * Where a {@link TlsFetch} keeps its fetch for requests that must not be sent twice; read it with
 * {@link fetchOnFreshConnection}.
 */
export const freshConnectionFetch: unique symbol = Symbol("freshConnectionFetch");

/** A fetch with this run's TLS settings; dispose of it to close its HTTP clients. */
export type TlsFetch = typeof fetch & Disposable & { readonly [freshConnectionFetch]: typeof fetch };

/** Options of {@link tlsFetch}. */
export interface TlsFetchOptions {
  /** A PEM file of CA certificates to trust in addition to the certificate store. */
  readonly caFile?: string;
  /** The fetch to wrap when there is no CA file. @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

/**
 * The fetch every plugin gets: with `caFile`, one bound to a `Deno.createHttpClient` that trusts
 * those certificates too; in every case a certificate the run does not trust becomes a
 * {@link ProvisioningError} (`tls-untrusted`) naming the host and the three TLS options.
 *
 * @throws {UsageError} the CA file cannot be read or holds no valid PEM certificate
 */
export async function tlsFetch(options: TlsFetchOptions = {}): Promise<TlsFetch> {
  let client: Deno.HttpClient | undefined;
  const pems = options.caFile === undefined ? undefined : await readCaFile(options.caFile);
  if (pems !== undefined) client = Deno.createHttpClient({ caCerts: pems });
  // Requests that must not be sent twice: no idle connection is kept, so none is ever reused.
  let fresh: Deno.HttpClient | undefined = Deno.createHttpClient({
    ...(pems === undefined ? {} : { caCerts: pems }),
    poolMaxIdlePerHost: 0,
  });
  const base = options.fetch ?? globalThis.fetch;
  const via = (chosen: () => Deno.HttpClient | undefined): typeof fetch => async (input, init) => {
    const httpClient = chosen();
    try {
      return await (httpClient ? base(input, { ...init, client: httpClient }) : base(input, init));
    } catch (error) {
      throw untrustedCertificate(error, input) ?? error;
    }
  };
  return Object.assign(via(() => client), {
    [freshConnectionFetch]: via(() => fresh),
    [Symbol.dispose]() {
      client?.close();
      client = undefined;
      fresh?.close();
      fresh = undefined;
    },
  });
}

/**
 * A fetch for requests that must reach the server at most once (`POST fido2Methods`, a Temporary
 * Access Pass): each is sent on a new connection. Deno's fetch (hyper underneath) silently sends a
 * request again when a pooled keep-alive connection turns out closed by the server without an
 * answer (measured on 2.9.6: two POSTs for one call; a new connection gets one); a connection that
 * was never used before is never retried that way, so a lost answer surfaces as an error the
 * caller can reconcile. Of a {@link TlsFetch}, its own such fetch (same CA, same TLS errors); of
 * any other fetch, one that passes a client without a pool per request and closes it once the
 * answer is read.
 */
export function fetchOnFreshConnection(base: typeof fetch): typeof fetch {
  const own = (base as Partial<TlsFetch>)[freshConnectionFetch];
  if (own) return own;
  return async (input, init) => {
    const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    try {
      const response = await base(input, { ...init, client });
      const body = await response.arrayBuffer();
      const empty = [101, 204, 205, 304].includes(response.status);
      return new Response(empty ? null : body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    } finally {
      client.close();
    }
  };
}

/** Reads and checks a PEM file of certificates; returns each certificate as PEM. */
async function readCaFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotCapable) throw cause;
    throw new UsageError(`Cannot read the CA file "${path}": ${(cause as Error).message}`, {
      cause,
      hint: "Give --ca-file the path of a PEM file of CA certificates",
    });
  }
  const blocks = [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
  if (blocks.length === 0) {
    throw new UsageError(`Cannot use the CA file "${path}": it holds no PEM certificate`, {
      hint: 'Export the CA certificate as PEM ("-----BEGIN CERTIFICATE-----"), not DER or a key',
    });
  }
  const { x509 } = await import("./x509.ts");
  return blocks.map((block, index) => {
    try {
      const der = Uint8Array.from(atob(block[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
      new x509.X509Certificate(der);
    } catch (cause) {
      throw new UsageError(
        `Cannot use the CA file "${path}": certificate ${index + 1} of ${blocks.length} does not parse`,
        { cause, hint: "Export the CA certificate again as PEM" },
      );
    }
    return block[0];
  });
}

const certificateProblem = /certificate|UnknownIssuer|NotValidForName|Expired|BadSignature/i;

function untrustedCertificate(error: unknown, input: RequestInfo | URL): ProvisioningError | undefined {
  if (!(error instanceof TypeError)) return undefined;
  const detail = [error.message, error.cause instanceof Error ? error.cause.message : ""].join(" ");
  if (!certificateProblem.test(detail)) return undefined;
  const url = new URL(input instanceof Request ? input.url : String(input));
  const reason = /invalid peer certificate: (\w+)/.exec(detail)?.[1] ?? "the certificate was rejected";
  return new ProvisioningError(
    "tls-untrusted",
    `Cannot connect to ${url.host}: its TLS certificate is not trusted (${reason})`,
    {
      cause: error,
      hint: "If a corporate proxy or private CA signed it, trust that CA with --ca-file <pem>, or the " +
        "operating system's certificate store with --local-ssl-verify; --disable-ssl-verify skips " +
        "verification (unsafe: tokens and TAPs could be intercepted)",
    },
  );
}
