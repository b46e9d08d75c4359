/**
 * The reference side of `scripts/cli_bench.ts`: a sequential client written from Microsoft's
 * documentation (`test/reference/graph_reference_client.ts`, another part of the project), run in
 * this process over the same number of users on a fresh sandbox, on a software key vault of its
 * own (the same authenticator code and vault format as the CLI's), so that the bench can print
 * ours / reference.
 *
 * The module is imported dynamically (a checkout without it prints "reference client not
 * present"). Its `registerPasskeysSequentially` gets every user in one call, takes its own token
 * and registers them in order, as a published script does; the harness times that call (wall clock
 * and this process's CPU, the key's included, as the CLI's CPU includes its key).
 *
 * @module
 */
import process from "node:process";
import { openSoftwareKey } from "../authenticators/software/plugin.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import type { registerPasskeysSequentially } from "../test/reference/graph_reference_client.ts";
import type { BenchSandboxCounts, BenchSandboxInfo } from "./_bench_sandbox.ts";

/** Where the reference client lives. */
export const referenceModule = new URL("../test/reference/graph_reference_client.ts", import.meta.url);

/** The reference client's entry point: every user in one sequential call. */
type RegisterSequentially = typeof registerPasskeysSequentially;

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

/** The reference's sequential entry point, or a sentence saying why there is none. */
export async function loadReferenceClient(): Promise<RegisterSequentially | string> {
  try {
    await Deno.stat(referenceModule);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return `reference client not present (${referenceModule.pathname.replace(/^.*\/test\//, "test/")})`;
    }
    throw error;
  }
  const module = await import(referenceModule.href) as Record<string, unknown>;
  const chosen = module["registerPasskeysSequentially"];
  if (typeof chosen !== "function") {
    return "reference client present but it exports no registerPasskeysSequentially(options)";
  }
  return chosen as RegisterSequentially;
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
    }, { vault: `${dir}/reference.vault`, vaultGuardDir: `${dir}/guard` });
    await new Ctap2Client(key.device).setPin(options.pin);
    const { info } = sandbox;
    const before = await sandbox.counts();
    const started = performance.now();
    const cpu = process.cpuUsage();
    const upns = info.users.slice(0, options.users).map((user) => user.upn);
    const results = await register({
      loginBase: info.url,
      graphBase: info.url,
      tenantId: info.tenantId,
      clientId: info.clientId,
      clientSecret: info.clientSecret,
      users: upns,
      device: key.device,
      pin: options.pin,
      graphVersion: "v1.0",
      displayName: "Reference key",
    });
    const failed = results.find((result) => !result.ok);
    if (failed !== undefined) {
      throw new Error(
        `The reference client (${referenceModule.pathname}) failed to register ${failed.user}: ${failed.error}`,
      );
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
