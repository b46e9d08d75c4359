/**
 * `deno task bench`: operations per second of the software key, in-process (state in memory and
 * in an encrypted vault on disk) and over its CTAPHID Unix socket, for makeCredential and
 * getAssertion; then what the vault an admin uses costs per registration (1,000 passkeys on a
 * vault on disk): bytes written, fsyncs, CPU and wall time, beside the goals of issue 14.
 * Prints tables; numbers belong here, never in tests.
 *
 * @module
 */
import { parseAaguid } from "../core/aaguid.ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { createAttestationChain } from "../authenticators/software/attestation.ts";
import { MemoryKeyStateStore, SoftwareAuthenticator } from "../authenticators/software/authenticator.ts";
import process from "node:process";
import {
  applyKeyStateChange,
  defaultAaguid,
  keyStateChangeSchema,
  newKeyState,
  type SoftwareKeyState,
  softwareKeyStateSchema,
} from "../authenticators/software/state.ts";
import { Vault } from "../authenticators/software/vault.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import type { CtapDevice } from "../core/ctap/device.ts";
import { CtapHidClient } from "../core/ctap/hid_client.ts";
import { connectUnixPacketTransport, serveCtapHidOnUnixSocket } from "../core/ctap/unix_socket.ts";

const rp = { id: "bench.provisioning.test", name: "Bench" };
const clientDataHash = sha256(new Uint8Array([1, 2, 3]));

interface Row {
  setup: string;
  operation: string;
  count: number;
  perSecond: number;
}

async function measure(setup: string, operation: string, count: number, op: (i: number) => Promise<unknown>) {
  for (let i = 0; i < Math.min(20, count); i++) await op(i); // warm up
  const start = performance.now();
  for (let i = 0; i < count; i++) await op(i);
  const seconds = (performance.now() - start) / 1000;
  return { setup, operation, count, perSecond: count / seconds } satisfies Row;
}

async function benchDevice(
  setup: string,
  device: CtapDevice,
  alg: -7 | -8,
  counts: { mc: number; ga: number },
) {
  const client = new Ctap2Client(device);
  const made = await client.makeCredential({
    clientDataHash,
    rp,
    user: { id: new Uint8Array([1]), name: "bench" },
    pubKeyCredParams: [{ type: "public-key", alg }],
  });
  const credentialId = made.authData.subarray(55, 55 + ((made.authData[53]! << 8) | made.authData[54]!));
  const algName = alg === -7 ? "ES256" : "EdDSA";
  return [
    await measure(setup, `makeCredential ${algName}`, counts.mc, (i) =>
      client.makeCredential({
        clientDataHash,
        rp,
        user: { id: Uint8Array.of(i & 0xff, i >> 8), name: `user${i}` },
        pubKeyCredParams: [{ type: "public-key", alg }],
      })),
    await measure(setup, `getAssertion ${algName}`, counts.ga, () =>
      client.getAssertion({
        rpId: rp.id,
        clientDataHash,
        allowList: [{ type: "public-key", id: credentialId }],
      })),
  ];
}

async function main() {
  const aaguid = parseAaguid(defaultAaguid);
  const state = newKeyState({ aaguid, chain: await createAttestationChain({ aaguid }) });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-bench-" });
  const rows: Row[] = [];
  let registrations: RegistrationCost | undefined;
  try {
    for (const alg of [-7, -8] as const) {
      rows.push(
        ...await benchDevice(
          "in-process, memory",
          new SoftwareAuthenticator(new MemoryKeyStateStore(state)),
          alg,
          {
            mc: 500,
            ga: 1000,
          },
        ),
      );
    }
    await using vault = await openBenchVault(`${dir}/bench.vault`, state);
    rows.push(
      ...await benchDevice("in-process, vault (fsync per op)", new SoftwareAuthenticator(vault), -7, {
        mc: 200,
        ga: 200,
      }),
    );

    const socket = `${dir}/key.sock`;
    await using _server = await serveCtapHidOnUnixSocket({
      path: socket,
      device: new SoftwareAuthenticator(new MemoryKeyStateStore(state)),
    });
    await using hid = await CtapHidClient.open(await connectUnixPacketTransport(socket));
    rows.push(...await benchDevice("CTAPHID over Unix socket, memory", hid, -7, { mc: 300, ga: 500 }));
    registrations = await benchRegistrations(`${dir}/registrations.vault`, state, 1000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  const setupWidth = Math.max(...rows.map((r) => r.setup.length), 5);
  const opWidth = Math.max(...rows.map((r) => r.operation.length), 9);
  console.log(`${"setup".padEnd(setupWidth)}  ${"operation".padEnd(opWidth)}  ${"ops".padStart(5)}  ops/s`);
  for (const row of rows) {
    console.log(
      `${row.setup.padEnd(setupWidth)}  ${row.operation.padEnd(opWidth)}  ${String(row.count).padStart(5)}  ${
        row.perSecond.toFixed(0).padStart(5)
      }`,
    );
  }
  if (registrations) printRegistrationCost(registrations);
}

function openBenchVault(path: string, state: SoftwareKeyState) {
  return Vault.open({
    path,
    passphrase: "bench passphrase",
    schema: softwareKeyStateSchema,
    changes: { schema: keyStateChangeSchema, apply: applyKeyStateChange },
    create: true,
    kdfIterations: 100_000,
    initial: () => state,
  });
}

/** What registrations cost on a vault on disk, per registration. */
interface RegistrationCost {
  count: number;
  bytesPerRegistration: number;
  /** From /proc/self/io when this process may read it (Linux, with --allow-read=/proc). */
  osBytesPerRegistration: number | undefined;
  syncsPerRegistration: number;
  compactions: number;
  cpuMsPerRegistration: number;
  wallMsPerRegistration: number;
  fileBytes: number;
  reopenMs: number;
}

function osWriteBytes(): number | undefined {
  try {
    return Number(/write_bytes: (\d+)/.exec(Deno.readTextFileSync("/proc/self/io"))?.[1]);
  } catch {
    return undefined;
  }
}

/** `count` discoverable registrations (what a bulk run makes) on a fresh vault in `path`. */
async function benchRegistrations(
  path: string,
  state: SoftwareKeyState,
  count: number,
): Promise<RegistrationCost> {
  let stats;
  {
    await using vault = await openBenchVault(path, state);
    const client = new Ctap2Client(new SoftwareAuthenticator(vault));
    const osBefore = osWriteBytes();
    const cpuBefore = process.cpuUsage();
    const start = performance.now();
    for (let i = 0; i < count; i++) {
      await client.makeCredential({
        clientDataHash: sha256(Uint8Array.of(i & 0xff, i >> 8)),
        rp: { id: "login.microsoft.com", name: "Microsoft" },
        user: {
          id: new TextEncoder().encode(`user-${i}-0123456789abcdef`),
          name: `user${i}@contoso.com`,
          displayName: `User ${i}`,
        },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        options: { rk: true },
      });
    }
    const wall = performance.now() - start;
    const cpu = process.cpuUsage(cpuBefore);
    const osAfter = osWriteBytes();
    stats = {
      ...vault.stats,
      wall,
      cpuMs: (cpu.user + cpu.system) / 1000,
      os: osBefore === undefined || osAfter === undefined ? undefined : osAfter - osBefore,
    };
  }
  const reopenStart = performance.now();
  await using reopened = await openBenchVault(path, state);
  const reopenMs = performance.now() - reopenStart;
  if (reopened.read().credentials.length !== count) throw new Error("the bench vault lost credentials");
  return {
    count,
    bytesPerRegistration: stats.bytesWritten / count,
    osBytesPerRegistration: stats.os === undefined ? undefined : stats.os / count,
    syncsPerRegistration: stats.syncs / count,
    compactions: stats.compactions,
    cpuMsPerRegistration: stats.cpuMs / count,
    wallMsPerRegistration: stats.wall / count,
    fileBytes: (await Deno.stat(path)).size,
    reopenMs,
  };
}

function printRegistrationCost(cost: RegistrationCost): void {
  const rows: [string, string, string][] = [
    ["bytes written / registration (vault file)", cost.bytesPerRegistration.toFixed(0), "≤ 4096"],
    [
      "bytes written / registration (/proc/self/io)",
      cost.osBytesPerRegistration === undefined ? "not readable" : cost.osBytesPerRegistration.toFixed(0),
      "≤ 4096",
    ],
    ["fsyncs / registration", cost.syncsPerRegistration.toFixed(2), ""],
    ["compactions", String(cost.compactions), ""],
    ["CPU ms / registration (key + vault)", cost.cpuMsPerRegistration.toFixed(2), "≤ 2 (whole CLI)"],
    ["wall ms / registration", cost.wallMsPerRegistration.toFixed(2), ""],
    ["vault file bytes", String(cost.fileBytes), ""],
    ["reopen ms", cost.reopenMs.toFixed(0), ""],
  ];
  console.log(`\nSoftware key vault on disk: ${cost.count} discoverable registrations`);
  const width = Math.max(...rows.map(([name]) => name.length));
  for (const [name, value, goal] of rows) {
    console.log(`${name.padEnd(width)}  ${value.padStart(12)}  ${goal}`);
  }
}

await main();
