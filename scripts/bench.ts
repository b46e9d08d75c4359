/**
 * `deno task bench`: operations per second of the software key, in-process (state in memory and
 * in an encrypted vault on disk) and over its CTAPHID Unix socket, for makeCredential and
 * getAssertion. Prints one table; numbers belong here, never in tests.
 *
 * @module
 */
import { parseAaguid } from "../core/aaguid.ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { createAttestationChain } from "../authenticators/software/attestation.ts";
import { MemoryKeyStateStore, SoftwareAuthenticator } from "../authenticators/software/authenticator.ts";
import { defaultAaguid, newKeyState, softwareKeyStateSchema } from "../authenticators/software/state.ts";
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
    await using vault = await Vault.open({
      path: `${dir}/bench.vault`,
      passphrase: "bench passphrase",
      schema: softwareKeyStateSchema,
      create: true,
      kdfIterations: 100_000,
      initial: () => state,
    });
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
}

await main();
