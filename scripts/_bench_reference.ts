/**
 * The reference side of `scripts/cli_bench.ts`: a sequential client written from Microsoft's
 * documentation (`test/reference/graph_reference_client.ts`, another part of the project), run in
 * this process over the same number of users on a fresh sandbox, on a software key vault of its
 * own (the same authenticator code and vault format as the CLI's), so that the bench can print
 * ours / reference.
 *
 * The module is imported dynamically: until it exists, the bench prints "reference client not
 * present". It must export one function (`registerUser`, the default export, or its only exported
 * function) that registers one user given a {@link ReferenceRegistration}; the harness awaits it
 * once per user, in order, and times the whole loop (wall clock and this process's CPU, the key's
 * included, as the CLI's CPU includes its key).
 *
 * @module
 */
import process from "node:process";
import { openSoftwareKey } from "../authenticators/software/plugin.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import type { CtapDevice } from "../core/ctap/device.ts";
import type { Authenticator } from "../core/plugin.ts";
import type { BenchSandboxCounts, BenchSandboxInfo } from "./_bench_sandbox.ts";

/** Where the reference client lives. */
export const referenceModule = new URL("../test/reference/graph_reference_client.ts", import.meta.url);

/**
 * What the harness passes the reference client for one user: everything Microsoft's published
 * scripts take (tenant, app credentials, the user) plus the sandbox's endpoints and the key.
 */
export interface ReferenceRegistration {
  /** The sandbox's base URL, standing in for both login.microsoftonline.com and graph.microsoft.com. */
  baseUrl: string;
  /** `${baseUrl}/${tenantId}/oauth2/v2.0/token` (client credentials). */
  tokenUrl: string;
  /** `${baseUrl}/v1.0`. */
  graphUrl: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
  /** The user's object id and sign-in name. */
  userId: string;
  userPrincipalName: string;
  /** The passkey's display name in the directory. */
  displayName: string;
  /** The origin a WebAuthn client would run at: the sandbox's rp id is its host, 127.0.0.1. */
  origin: string;
  /** The key, as a CTAP2 device, and the authenticator around it. */
  device: CtapDevice;
  authenticator: Authenticator;
  /** The key's PIN. */
  pin: string;
  fetch: typeof fetch;
}

/** A timed reference run. */
export interface ReferenceResult {
  users: number;
  latencyMs: number;
  seconds: number;
  /** This process's user + system CPU over the loop, the key's work included. */
  cpuSeconds: number;
  requests: number;
  verified: number;
}

type RegisterOne = (options: ReferenceRegistration) => Promise<unknown>;

/** The reference's registration function, or a sentence saying why there is none. */
export async function loadReferenceClient(): Promise<RegisterOne | string> {
  try {
    await Deno.stat(referenceModule);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return `reference client not present (${referenceModule.pathname.replace(/^.*\/test\//, "test/")})`;
    }
    throw error;
  }
  const module = await import(referenceModule.href) as Record<string, unknown>;
  const functions = Object.entries(module).filter(([, v]) => typeof v === "function");
  const chosen = module["registerUser"] ?? module["default"] ??
    (functions.length === 1 ? functions[0]![1] : undefined);
  if (typeof chosen !== "function") {
    return `reference client present but it exports no single registration function (found: ${
      functions.map(([k]) => k).join(", ") || "none"
    }); export registerUser(options) to bench it`;
  }
  return chosen as RegisterOne;
}

/**
 * Registers `users` users one after another with the reference client on a fresh sandbox with
 * `latencyMs` added to each Graph request; answers a sentence instead when there is no client.
 */
export async function measureReference(options: {
  users: number;
  latencyMs: number;
  pin: string;
  startSandbox: (users: number, latencyMs: number) => Promise<
    AsyncDisposable & { info: BenchSandboxInfo; counts(): Promise<BenchSandboxCounts> }
  >;
}): Promise<ReferenceResult | string> {
  const register = await loadReferenceClient();
  if (typeof register === "string") return register;
  await using sandbox = await options.startSandbox(options.users, options.latencyMs);
  const dir = await Deno.makeTempDir({ prefix: "cli-bench-reference-" });
  try {
    const passphrase = "reference bench passphrase";
    await using key = await openSoftwareKey({
      interaction: { requestPin: () => Promise.resolve(options.pin), promptUserPresence: () => {} },
      env: () => undefined,
      readSecret: () => Promise.resolve(passphrase),
    }, { vault: `${dir}/reference.vault` });
    await new Ctap2Client(key.device).setPin(options.pin);
    const { info } = sandbox;
    const before = await sandbox.counts();
    const started = performance.now();
    const cpu = process.cpuUsage();
    for (const user of info.users.slice(0, options.users)) {
      await registerOne(register, user.upn, {
        baseUrl: info.url,
        tokenUrl: `${info.url}/${info.tenantId}/oauth2/v2.0/token`,
        graphUrl: `${info.url}/v1.0`,
        tenantId: info.tenantId,
        clientId: info.clientId,
        clientSecret: info.clientSecret,
        userId: user.id,
        userPrincipalName: user.upn,
        displayName: "Reference key",
        origin: new URL(info.url).origin,
        device: key.device,
        authenticator: key,
        pin: options.pin,
        fetch: globalThis.fetch,
      });
    }
    const used = process.cpuUsage(cpu);
    const seconds = (performance.now() - started) / 1000;
    const after = await sandbox.counts();
    return {
      users: options.users,
      latencyMs: options.latencyMs,
      seconds,
      cpuSeconds: (used.user + used.system) / 1e6,
      requests: after.requests - before.requests,
      verified: after.usersWithOnePasskey,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs the reference for one user; its error names the user and the module. */
async function registerOne(
  register: RegisterOne,
  upn: string,
  options: ReferenceRegistration,
): Promise<void> {
  try {
    await register(options);
  } catch (error) {
    throw new Error(
      `The reference client (${referenceModule.pathname}) failed to register ${upn}: ${
        error instanceof Error ? error.message : String(error)
      }`,
      { cause: error },
    );
  }
}
