/**
 * The typed CTAP2 client's own behaviours (caching, protocol choice, the legacy token path,
 * enumeration, error mapping), against the real software key. Where a behaviour needs a device
 * the software key is not (a CTAP 2.0 key, a broken transport), a tiny device wraps the real one
 * at the {@link CtapDevice} seam and rewrites or records the bytes that cross it.
 */
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { newTestKey } from "../../test/software_key.ts";
import { concatBytes, equalBytes, randomBytes, utf8 } from "../bytes.ts";
import { decodeCbor, encodeCbor } from "./cbor.ts";
import { Ctap2Client, type PinToken } from "./client.ts";
import {
  ClientPinSubcommand,
  CredentialManagementSubcommand,
  CtapCommand,
  type UserEntity,
} from "./commands.ts";
import type { CtapCallOptions, CtapDevice, KeepaliveStatus } from "./device.ts";
import { PinUvAuthPermission } from "./pin_protocol.ts";
import { CtapError, CtapStatus, ctapStatusName } from "./status.ts";

const pin = "482916";
const rpA = "a.example.com";
const rpB = "b.example.com";
const { makeCredential: mc, getAssertion: ga, credentialManagement: cm } = PinUvAuthPermission;

interface Recorded {
  command: number;
  body: unknown;
  options: CtapCallOptions | undefined;
}

/** Wraps a device: records every request, and can rewrite the getInfo answer. */
class SeamDevice implements CtapDevice {
  readonly requests: Recorded[] = [];
  readonly #inner: CtapDevice;
  readonly #rewriteInfo: ((info: Map<number, unknown>) => void) | undefined;

  constructor(inner: CtapDevice, rewriteInfo?: (info: Map<number, unknown>) => void) {
    this.#inner = inner;
    this.#rewriteInfo = rewriteInfo;
  }

  async transceive(request: Uint8Array, options?: CtapCallOptions): Promise<Uint8Array> {
    this.requests.push({
      command: request[0]!,
      body: request.length > 1 ? decodeCbor(request.subarray(1)) : undefined,
      options,
    });
    const response = await this.#inner.transceive(request, options);
    if (request[0] !== CtapCommand.getInfo || !this.#rewriteInfo || response[0] !== CtapStatus.CTAP2_OK) {
      return response;
    }
    const info = decodeCbor(response.subarray(1)) as Map<number, unknown>;
    this.#rewriteInfo(info);
    return concatBytes(Uint8Array.of(CtapStatus.CTAP2_OK), encodeCbor(info));
  }

  count(command: number): number {
    return this.requests.filter((r) => r.command === command).length;
  }

  /** The clientPIN requests sent, as integer-keyed maps. */
  clientPinRequests(): Map<number, unknown>[] {
    return this.requests.filter((r) => r.command === CtapCommand.clientPin).map((r) =>
      r.body as Map<number, unknown>
    );
  }
}

/** getInfo of a CTAP 2.0 key: no pinUvAuthToken option (and so no permissions). */
function asCtap20(info: Map<number, unknown>): void {
  info.set(0x01, ["FIDO_2_0"]);
  const options = info.get(0x04) as Record<string, boolean>;
  delete options["pinUvAuthToken"];
}

async function expectStatus(promise: Promise<unknown> | (() => Promise<unknown>), status: number) {
  const error = await rejects(promise, CtapError);
  assertEquals(ctapStatusName(error.status), ctapStatusName(status));
  return error;
}

function user(n: number): UserEntity {
  return { id: utf8(`user-${n}`), name: `user${n}@example.com`, displayName: `User ${n}` };
}

async function makeCredential(client: Ctap2Client, rpId: string, n: number, token?: PinToken, rk = true) {
  const clientDataHash = randomBytes(32);
  return await client.makeCredential({
    clientDataHash,
    rp: { id: rpId },
    user: user(n),
    pubKeyCredParams: [{ type: "public-key", alg: -7 }],
    ...(rk ? { options: { rk: true } } : {}),
    ...(token
      ? {
        pinUvAuthParam: token.protocol.authenticate(token.token, clientDataHash),
        pinUvAuthProtocol: token.protocol.version,
      }
      : {}),
  });
}

// --- getInfo --------------------------------------------------------------------------------------

Deno.test("getInfo is sent once and cached for the life of the client; refresh asks the key again", async () => {
  await using key = await newTestKey();
  const device = new SeamDevice(key.device);
  const client = new Ctap2Client(device);
  const first = await client.getInfo();
  const second = await client.getInfo();
  await client.preferredPinProtocol();
  assertEquals(device.count(CtapCommand.getInfo), 1);
  assert.ok(first === second, "the cached answer is returned");
  const refreshed = await client.getInfo({ refresh: true });
  assertEquals(device.count(CtapCommand.getInfo), 2);
  assert.deepEqual(refreshed, first);
});

Deno.test("a cached getInfo is stale after the key changes until it is refreshed, and the refresh is kept", async () => {
  await using key = await newTestKey({ authenticator: { maxDiscoverableCredentials: 10 } });
  const device = new SeamDevice(key.device);
  const client = new Ctap2Client(device);
  assertEquals((await client.getInfo()).options?.["clientPin"], false);
  await client.setPin(pin);
  await makeCredential(client, rpA, 1, await client.getPinToken({ pin, permissions: mc, rpId: rpA }));
  const stale = await client.getInfo();
  assertEquals(stale.options?.["clientPin"], false);
  assertEquals(stale.remainingDiscoverableCredentials, 10);
  const fresh = await client.getInfo({ refresh: true });
  assertEquals(fresh.options?.["clientPin"], true);
  assertEquals(fresh.remainingDiscoverableCredentials, 9);
  assert.ok((await client.getInfo()) === fresh, "later callers get the refreshed answer");
});

Deno.test("a failed getInfo is not cached: the next call asks again", async () => {
  await using key = await newTestKey();
  let fail = true;
  const flaky: CtapDevice = {
    transceive(request, options) {
      if (fail) {
        fail = false;
        return Promise.resolve(Uint8Array.of(CtapStatus.CTAP2_ERR_PROCESSING));
      }
      return key.device.transceive(request, options);
    },
  };
  const client = new Ctap2Client(flaky);
  await expectStatus(client.getInfo(), CtapStatus.CTAP2_ERR_PROCESSING);
  assert.deepEqual((await client.getInfo()).versions, ["FIDO_2_0", "FIDO_2_1"]);
});

// --- PIN protocol choice and the token paths ----------------------------------------------------------

Deno.test("getPinToken asks for a token with permissions and rpId (CTAP 2.1 §6.5.5.7.2) when getInfo has pinUvAuthToken", async () => {
  await using key = await newTestKey({ pin });
  const device = new SeamDevice(key.device);
  const client = new Ctap2Client(device);
  const token = await client.getPinToken({ pin, permissions: mc | ga, rpId: rpA });
  assertEquals(token.protocol.version, 2);
  assertEquals(token.token.length, 32);
  const request = device.clientPinRequests().at(-1)!;
  assertEquals(request.get(0x02), ClientPinSubcommand.getPinUvAuthTokenUsingPinWithPermissions);
  assertEquals(request.get(0x01), 2);
  assertEquals(request.get(0x09), mc | ga);
  assertEquals(request.get(0x0a), rpA);
  assert.ok(request.get(0x03) instanceof Map, "keyAgreement is a COSE key");
  await makeCredential(client, rpA, 1, token);
});

Deno.test("getPinToken falls back to the legacy getPinToken (0x05) when getInfo lacks pinUvAuthToken, sending no permissions or rpId", async () => {
  await using key = await newTestKey({ pin });
  const device = new SeamDevice(key.device, asCtap20);
  const client = new Ctap2Client(device);
  const token = await client.getPinToken({ pin, permissions: mc, rpId: rpA });
  const request = device.clientPinRequests().at(-1)!;
  assertEquals(request.get(0x02), ClientPinSubcommand.getPinToken);
  assertEquals(request.has(0x09), false, "no permissions");
  assertEquals(request.has(0x0a), false, "no rpId");
  assert.ok(request.get(0x06) instanceof Uint8Array, "pinHashEnc");
  // The legacy token carries the default mc and ga permissions on the real key.
  const response = await makeCredential(client, rpA, 1, token);
  assertEquals(response.authData[32]! & 0x04, 0x04, "UV flag set");
  const assertionToken = await client.getPinToken({ pin, permissions: ga, rpId: rpA });
  const clientDataHash = randomBytes(32);
  const assertion = await client.getAssertion({
    rpId: rpA,
    clientDataHash,
    pinUvAuthParam: assertionToken.protocol.authenticate(assertionToken.token, clientDataHash),
    pinUvAuthProtocol: assertionToken.protocol.version,
  });
  assertEquals(assertion.user?.name, "user1@example.com", "user details are returned with UV");
});

Deno.test("preferredPinProtocol is two when the key lists both, one when it lists only one or none", async () => {
  await using key = await newTestKey();
  assertEquals(await new Ctap2Client(key.device).preferredPinProtocol().then((p) => p.version), 2);
  const onlyOne = new Ctap2Client(new SeamDevice(key.device, (info) => info.set(0x06, [1])));
  assertEquals((await onlyOne.preferredPinProtocol()).version, 1);
  const none = new Ctap2Client(new SeamDevice(key.device, (info) => info.delete(0x06)));
  assertEquals((await none.preferredPinProtocol()).version, 1);
});

Deno.test("on a key that lists only PIN protocol one, setPin, getPinToken and changePin all speak protocol one", async () => {
  await using key = await newTestKey();
  const device = new SeamDevice(key.device, (info) => info.set(0x06, [1]));
  const client = new Ctap2Client(device);
  await client.setPin(pin);
  const token = await client.getPinToken({ pin, permissions: mc, rpId: rpA });
  assertEquals(token.protocol.version, 1);
  const response = await makeCredential(client, rpA, 1, token);
  assertEquals(response.authData[32]! & 0x04, 0x04);
  await client.changePin(pin, "13579");
  await client.getPinToken({ pin: "13579", permissions: cm });
  const versions = device.clientPinRequests()
    .filter((r) => r.get(0x02) !== ClientPinSubcommand.getPinRetries)
    .map((r) => r.get(0x01));
  assert.ok(versions.length >= 8);
  assert.ok(versions.every((v) => v === 1), `every clientPIN request names protocol one: ${versions}`);
  const mcRequest = device.requests.find((r) => r.command === CtapCommand.makeCredential)!.body as Map<
    number,
    unknown
  >;
  assertEquals(mcRequest.get(0x09), 1);
  assertEquals((mcRequest.get(0x08) as Uint8Array).length, 16, "protocol one's pinUvAuthParam is 16 bytes");
});

Deno.test("getPinRetries reports the retries left and whether the key needs a power cycle", async () => {
  await using key = await newTestKey({ pin });
  assert.deepEqual(await key.client.getPinRetries(), { retries: 8, powerCycleState: false });
  for (let i = 0; i < 3; i++) {
    await rejects(key.client.getPinToken({ pin: "000000", permissions: mc, rpId: rpA }), CtapError);
  }
  assert.deepEqual(await key.client.getPinRetries(), { retries: 5, powerCycleState: true });
});

// --- credential management ------------------------------------------------------------------------------

Deno.test("listCredentials on a key without discoverable credentials returns []", async () => {
  await using key = await newTestKey({ pin });
  const token = await key.client.getPinToken({ pin, permissions: cm });
  assert.deepEqual(await key.client.listCredentials(token), []);
  await makeCredential(key.client, rpA, 1, undefined, false); // non-discoverable: still nothing to list
  assert.deepEqual(await key.client.listCredentials(token), []);
  assert.deepEqual(await key.client.getCredentialsMetadata(token), { existing: 0, remaining: 100_000 });
});

Deno.test("listCredentials walks every rp and every credential with the GetNext subcommands (CTAP 2.1 §6.8.3, §6.8.4)", async () => {
  await using key = await newTestKey({ pin });
  const device = new SeamDevice(key.device);
  const client = new Ctap2Client(device);
  const plan: [string, number][] = [[rpA, 1], [rpA, 2], [rpA, 3], [rpB, 4], ["c.example.com", 5]];
  for (const [rpId, n] of plan) {
    await makeCredential(client, rpId, n, await client.getPinToken({ pin, permissions: mc, rpId }));
  }
  const before = device.requests.length;
  const listed = await client.listCredentials(await client.getPinToken({ pin, permissions: cm }));
  assert.deepEqual(
    listed.map((c) => `${c.rpId} ${c.user.name}`).sort(),
    plan.map(([rpId, n]) => `${rpId} user${n}@example.com`).sort(),
  );
  for (const credential of listed) {
    assertEquals(credential.credentialId.type, "public-key");
    assert.ok(credential.publicKey instanceof Map);
    assertEquals(credential.credProtect, 1);
  }
  const subcommands = device.requests.slice(before)
    .filter((r) => r.command === CtapCommand.credentialManagement)
    .map((r) => (r.body as Map<number, unknown>).get(0x01));
  const S = CredentialManagementSubcommand;
  assertEquals(subcommands.filter((s) => s === S.enumerateRPsBegin).length, 1);
  assertEquals(subcommands.filter((s) => s === S.enumerateRPsGetNextRP).length, 2);
  assertEquals(subcommands.filter((s) => s === S.enumerateCredentialsBegin).length, 3);
  assertEquals(subcommands.filter((s) => s === S.enumerateCredentialsGetNextCredential).length, 2);
  // GetNext requests carry no pinUvAuthParam (§6.8.3: they continue the authenticated Begin).
  for (const r of device.requests.slice(before)) {
    const body = r.body as Map<number, unknown> | undefined;
    const sub = body?.get(0x01);
    if (r.command === CtapCommand.credentialManagement && (sub === 3 || sub === 5)) {
      assertEquals(body!.has(0x04), false);
    }
  }
});

Deno.test("deleteCredential removes exactly the named credential", async () => {
  await using key = await newTestKey({ pin });
  const token = (permissions: number, rpId?: string) =>
    key.client.getPinToken({ pin, permissions, ...(rpId ? { rpId } : {}) });
  await makeCredential(key.client, rpA, 1, await token(mc, rpA));
  await makeCredential(key.client, rpA, 2, await token(mc, rpA));
  const manage = await token(cm);
  const [first, second] = await key.client.listCredentials(manage);
  await key.client.deleteCredential(manage, first!.credentialId);
  const left = await key.client.listCredentials(manage);
  assertEquals(left.length, 1);
  assert.ok(equalBytes(left[0]!.credentialId.id, second!.credentialId.id));
});

// --- errors and call options ------------------------------------------------------------------------------

Deno.test("a non-OK status becomes a CtapError carrying the status and its spec name", async () => {
  await using key = await newTestKey();
  const error = await expectStatus(
    key.client.getAssertion({ rpId: rpA, clientDataHash: randomBytes(32) }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  assertEquals(error.status, 0x2e);
  assertEquals(error.statusName, "CTAP2_ERR_NO_CREDENTIALS");
  assertEquals(error.message, "CTAP error: 0x2e - NO_CREDENTIALS");
  assertEquals(error.code, "ctap-no-credentials");
});

Deno.test("an OK answer without the body a command must return is a CtapError, and an empty answer is CTAP1_ERR_OTHER", async () => {
  const bare: CtapDevice = { transceive: () => Promise.resolve(Uint8Array.of(CtapStatus.CTAP2_OK)) };
  const client = new Ctap2Client(bare);
  await expectStatus(client.getInfo(), CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  const request = {
    clientDataHash: randomBytes(32),
    rp: { id: rpA },
    user: user(1),
    pubKeyCredParams: [{ type: "public-key", alg: -7 }],
  };
  await expectStatus(client.makeCredential(request), CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  await expectStatus(
    client.getAssertion({ rpId: rpA, clientDataHash: randomBytes(32) }),
    CtapStatus.CTAP2_ERR_MISSING_PARAMETER,
  );
  await expectStatus(client.getNextAssertion(), CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  await expectStatus(client.getPinRetries(), CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  await client.reset(); // no body is the whole answer
  await client.selection();

  const silent = new Ctap2Client({ transceive: () => Promise.resolve(new Uint8Array(0)) });
  await expectStatus(silent.getInfo(), CtapStatus.CTAP1_ERR_OTHER);
  const garbled = new Ctap2Client({ transceive: () => Promise.resolve(Uint8Array.of(0x00, 0xa1)) });
  await expectStatus(garbled.getInfo(), CtapStatus.CTAP2_ERR_INVALID_CBOR);
});

Deno.test("the call options (signal, onKeepalive) reach the device for the commands that wait for a touch", async () => {
  const touched: string[] = [];
  await using key = await newTestKey({
    authenticator: {
      userPresence: ({ command }) => {
        touched.push(command);
        return Promise.resolve(true);
      },
    },
  });
  const device = new SeamDevice(key.device);
  const client = new Ctap2Client(device);
  const controller = new AbortController();
  const seen: KeepaliveStatus[] = [];
  const options: CtapCallOptions = { signal: controller.signal, onKeepalive: (s) => seen.push(s) };
  for (const n of [1, 2]) {
    await client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpA },
      user: user(n),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      options: { rk: true },
    }, options);
  }
  await client.getAssertion({ rpId: rpA, clientDataHash: randomBytes(32) }, options);
  await client.getNextAssertion(options);
  await client.selection(options);
  await client.reset(options);
  for (const r of device.requests) {
    if (r.command === CtapCommand.getInfo) continue;
    assert.ok(r.options === options, `command 0x${r.command.toString(16)} got the caller's options`);
  }
  assert.deepEqual(touched, ["makeCredential", "makeCredential", "getAssertion", "selection", "reset"]);
  assertEquals(seen.length, 5);
  assert.ok(seen.every((s) => s === "user-presence-needed"));
});

Deno.test("aborting a call through the client rejects with KEEPALIVE_CANCEL", async () => {
  await using key = await newTestKey({
    authenticator: { userPresence: () => new Promise<boolean>(() => {}) },
  });
  const controller = new AbortController();
  await expectStatus(
    key.client.selection({
      signal: controller.signal,
      onKeepalive: () => queueMicrotask(() => controller.abort()),
    }),
    CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL,
  );
});
