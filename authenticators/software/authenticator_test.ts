/**
 * The software authenticator against CTAP 2.1, through the real client and codec: every test
 * sends real CTAP2 messages to a real {@link SoftwareAuthenticator}. The only fakes are the
 * sanctioned seams: the clock (`now`) and the user's touch (`userPresence`). Signatures are
 * checked with WebCrypto, independently of the @noble code that made them.
 */
import { defaultMaxDiscoverableCredentials } from "./state.ts";
import { x509 } from "../../core/x509.ts";
import fc from "fast-check";
import { sha256 } from "@noble/hashes/sha2.js";
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { newTestKey, type TestKey } from "../../test/software_key.ts";
import { concatBytes, equalBytes, randomBytes, toHex, utf8 } from "../../core/bytes.ts";
import { decodeCbor, encodeCbor } from "../../core/ctap/cbor.ts";
import { AuthDataFlag, type AuthenticatorData, decodeAuthenticatorData } from "../../core/ctap/auth_data.ts";
import { Ctap2Client, type PinToken } from "../../core/ctap/client.ts";
import {
  ClientPinRequest,
  ClientPinResponse,
  ClientPinSubcommand,
  ConfigRequest,
  ConfigSubcommand,
  type CredentialDescriptor,
  CredentialManagementRequest,
  CredentialManagementSubcommand,
  CtapCommand,
  decodeResponse,
  encodeRequest,
  type GetAssertionResponse,
  MakeCredentialRequest,
  type MakeCredentialResponse,
  type UserEntity,
} from "../../core/ctap/commands.ts";
import { CoseAlgorithm, cosePublicKeyToSpki, decodeCosePublicKey } from "../../core/ctap/cose.ts";
import type { CtapCallOptions, CtapDevice, KeepaliveStatus } from "../../core/ctap/device.ts";
import {
  padPin,
  pinHash,
  type PinProtocol,
  pinProtocol,
  PinUvAuthPermission,
} from "../../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus, ctapStatusName } from "../../core/ctap/status.ts";
import {
  SoftwareAuthenticator,
  type SoftwareAuthenticatorOptions,
  type UserPresenceCheck,
} from "./authenticator.ts";

// --- helpers ------------------------------------------------------------------------------------

const rpA = "a.example.com";
const rpB = "b.example.com";
const rpC = "c.example.com";
const pin = "482916";
const { makeCredential: mc, getAssertion: ga, credentialManagement: cm, authenticatorConfiguration: acfg } =
  PinUvAuthPermission;

/** A hand-moved clock for the `now` seam. */
function manualClock(start = Date.UTC(2030, 0, 1)) {
  const clock = { t: start, now: () => clock.t };
  return clock;
}

/** A user presence seam that answers from a script and records what it was asked. */
function touches(answers: boolean[] = []) {
  const asked: { command: string; rpId?: string }[] = [];
  const check: UserPresenceCheck = (request) => {
    asked.push({ command: request.command, ...(request.rpId === undefined ? {} : { rpId: request.rpId }) });
    return Promise.resolve(answers.length > 0 ? answers.shift()! : true);
  };
  return { asked, check };
}

function userNumber(n: number): UserEntity {
  return { id: utf8(`user-${n}`), name: `user${n}@example.com`, displayName: `User ${n}` };
}

/** Expects `promise` to fail with exactly this CTAP status; names are compared for readable failures. */
async function expectStatus(promise: Promise<unknown> | (() => Promise<unknown>), status: number) {
  const error = await rejects(promise, CtapError);
  assertEquals(ctapStatusName(error.status), ctapStatusName(status));
  assertEquals(error.status, status);
}

/** The pinUvAuthParam fields of a request authenticated with `token` over `message`. */
function authWith(token: PinToken | undefined, message: Uint8Array) {
  return token
    ? {
      pinUvAuthParam: token.protocol.authenticate(token.token, message),
      pinUvAuthProtocol: token.protocol.version,
    }
    : {};
}

interface RegisterOptions {
  rpId?: string;
  user?: UserEntity;
  alg?: number;
  rk?: boolean;
  token?: PinToken;
  excludeList?: CredentialDescriptor[];
  extensions?: Record<string, unknown>;
  call?: CtapCallOptions;
}

interface Registration {
  response: MakeCredentialResponse;
  authData: AuthenticatorData;
  clientDataHash: Uint8Array;
  id: Uint8Array;
  descriptor: CredentialDescriptor;
  publicKey: Map<number, unknown>;
}

async function register(client: Ctap2Client, options: RegisterOptions = {}): Promise<Registration> {
  const clientDataHash = randomBytes(32);
  const response = await client.makeCredential({
    clientDataHash,
    rp: { id: options.rpId ?? rpA, name: "Example" },
    user: options.user ?? userNumber(1),
    pubKeyCredParams: [{ type: "public-key", alg: options.alg ?? CoseAlgorithm.ES256 }],
    ...(options.excludeList ? { excludeList: options.excludeList } : {}),
    ...(options.extensions ? { extensions: options.extensions } : {}),
    ...(options.rk ? { options: { rk: true } } : {}),
    ...authWith(options.token, clientDataHash),
  }, options.call);
  const authData = decodeAuthenticatorData(response.authData);
  const attested = authData.attestedCredentialData;
  assert.ok(attested, "makeCredential returns attested credential data");
  return {
    response,
    authData,
    clientDataHash,
    id: attested.credentialId,
    descriptor: { type: "public-key", id: attested.credentialId },
    publicKey: attested.publicKey,
  };
}

interface AssertOptions {
  rpId?: string;
  allowList?: Uint8Array[];
  token?: PinToken;
  up?: boolean;
  call?: CtapCallOptions;
}

async function authenticate(client: Ctap2Client, options: AssertOptions = {}) {
  const clientDataHash = randomBytes(32);
  const response = await client.getAssertion({
    rpId: options.rpId ?? rpA,
    clientDataHash,
    ...(options.allowList ? { allowList: options.allowList.map((id) => ({ type: "public-key", id })) } : {}),
    ...(options.up === undefined ? {} : { options: { up: options.up } }),
    ...authWith(options.token, clientDataHash),
  }, options.call);
  return { response, clientDataHash, authData: decodeAuthenticatorData(response.authData) };
}

/** A P-256 DER signature as the IEEE P1363 r||s that WebCrypto verifies. */
function derToP1363(der: Uint8Array): Uint8Array<ArrayBuffer> {
  assertEquals(der[0], 0x30, "ECDSA signature is a DER SEQUENCE");
  assertEquals(der[1], der.length - 2, "DER SEQUENCE length covers the signature");
  const out = new Uint8Array(64);
  let offset = 2;
  for (let i = 0; i < 2; i++) {
    assertEquals(der[offset], 0x02, "DER INTEGER");
    const length = der[offset + 1]!;
    let value = der.subarray(offset + 2, offset + 2 + length);
    while (value.length > 32 && value[0] === 0) value = value.subarray(1);
    assert.ok(value.length <= 32, "integer fits P-256");
    out.set(value, 32 * (i + 1) - value.length);
    offset += 2 + length;
  }
  assertEquals(offset, der.length, "no bytes after s");
  return out;
}

/** Verifies `signature` over authData || clientDataHash with WebCrypto and the COSE key. */
async function verifiesWith(
  coseKey: Map<number, unknown>,
  authData: Uint8Array,
  clientDataHash: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  const key = decodeCosePublicKey(coseKey);
  const spki = cosePublicKeyToSpki(key);
  const data = concatBytes(authData, clientDataHash);
  if (key.kty === "EC2") {
    const cryptoKey = await crypto.subtle.importKey(
      "spki",
      spki,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    return await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      cryptoKey,
      derToP1363(signature),
      data,
    );
  }
  const cryptoKey = await crypto.subtle.importKey("spki", spki, { name: "Ed25519" }, false, ["verify"]);
  return await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, signature.slice(), data);
}

/** A token for `permissions` (and `rpId` when given) through the client. */
function tokenFor(client: Ctap2Client, permissions: number, rpId?: string, thePin = pin): Promise<PinToken> {
  return client.getPinToken({ pin: thePin, permissions, ...(rpId === undefined ? {} : { rpId }) });
}

/** The same key after a power cycle: a new authenticator instance over the same state. */
function powerCycle(key: TestKey, options: SoftwareAuthenticatorOptions = {}) {
  const device = new SoftwareAuthenticator(key.store, options);
  return { device, client: new Ctap2Client(device) };
}

/** Sends raw bytes; answers the status byte and the decoded body. */
async function sendRaw(device: CtapDevice, request: Uint8Array, options?: CtapCallOptions) {
  const response = await device.transceive(request, options);
  assert.ok(response.length >= 1, "a response has at least a status byte");
  return {
    status: response[0]!,
    body: response.length > 1 ? decodeCbor(response.subarray(1)) : undefined,
    response,
  };
}

/** A clientPIN request through the real codec, for driving a protocol by hand. */
async function clientPin(device: CtapDevice, fields: ClientPinRequest): Promise<ClientPinResponse> {
  const response = await device.transceive(encodeRequest(CtapCommand.clientPin, ClientPinRequest, fields));
  return decodeResponse(ClientPinResponse, response) ?? {};
}

async function sharedSecretWith(device: CtapDevice, protocol: PinProtocol) {
  const { keyAgreement } = await clientPin(device, {
    pinUvAuthProtocol: protocol.version,
    subCommand: ClientPinSubcommand.getKeyAgreement,
  });
  return protocol.encapsulate(keyAgreement);
}

function makeCredentialBytes(rpId = rpA, extra: Partial<MakeCredentialRequest> = {}) {
  return encodeRequest(CtapCommand.makeCredential, MakeCredentialRequest, {
    clientDataHash: randomBytes(32),
    rp: { id: rpId },
    user: userNumber(1),
    pubKeyCredParams: [{ type: "public-key", alg: CoseAlgorithm.ES256 }],
    ...extra,
  });
}

// --- authenticatorGetInfo (CTAP 2.1 §6.4) ---------------------------------------------------------

Deno.test("getInfo (CTAP 2.1 §6.4) reports FIDO_2_0 and FIDO_2_1, both PIN protocols and the options it implements", async () => {
  await using key = await newTestKey();
  const info = await key.client.getInfo();
  assert.deepEqual(info.versions, ["FIDO_2_0", "FIDO_2_1"]);
  assert.deepEqual(info.pinUvAuthProtocols, [2, 1]);
  assertEquals(info.aaguid.length, 16);
  assertEquals(toHex(info.aaguid), "70726f766973696f6e696e67736b0001");
  assertEquals(info.options?.["rk"], true);
  assertEquals(info.options?.["up"], true);
  assertEquals(info.options?.["plat"], false);
  assertEquals(info.options?.["clientPin"], false, "clientPin is present and false: supported, not set");
  assertEquals(info.options?.["uv"], undefined, "no built-in user verification is claimed");
  assertEquals(info.options?.["pinUvAuthToken"], true);
  assertEquals(info.options?.["credMgmt"], true);
  assertEquals(info.options?.["authnrCfg"], true);
  assertEquals(info.options?.["setMinPINLength"], true);
  assertEquals(info.options?.["makeCredUvNotRqd"], true);
  assertEquals(info.forcePINChange, false);
  assertEquals(info.minPINLength, 4);
  assert.ok(info.extensions?.includes("credProtect"));
});

Deno.test("getInfo algorithms are exactly ES256 and EdDSA, and each one makes a credential of that algorithm", async () => {
  await using key = await newTestKey();
  const info = await key.client.getInfo();
  assert.deepEqual(info.algorithms, [
    { type: "public-key", alg: CoseAlgorithm.ES256 },
    { type: "public-key", alg: CoseAlgorithm.EdDSA },
  ]);
  for (const { alg } of info.algorithms ?? []) {
    const { publicKey, authData } = await register(key.client, { alg });
    assertEquals(decodeCosePublicKey(publicKey).alg, alg);
    assert.ok(
      equalBytes(authData.attestedCredentialData!.aaguid, info.aaguid),
      "authData carries the AAGUID",
    );
  }
  await expectStatus(
    key.client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -257 }, { type: "public-key", alg: -35 }],
    }),
    CtapStatus.CTAP2_ERR_UNSUPPORTED_ALGORITHM,
  );
});

Deno.test("getInfo options.clientPin flips from false to true once a PIN is set (CTAP 2.1 §6.4, §6.5.5.5)", async () => {
  await using key = await newTestKey();
  assertEquals((await key.client.getInfo()).options?.["clientPin"], false);
  await key.client.setPin(pin);
  assertEquals((await key.client.getInfo({ refresh: true })).options?.["clientPin"], true);
});

Deno.test("getInfo remainingDiscoverableCredentials decreases with each discoverable credential, not with others", async () => {
  await using key = await newTestKey({ authenticator: { maxDiscoverableCredentials: 5 } });
  const remaining = async () =>
    (await key.client.getInfo({ refresh: true })).remainingDiscoverableCredentials;
  assertEquals(await remaining(), 5);
  await register(key.client, { rk: true, user: userNumber(1) });
  assertEquals(await remaining(), 4);
  await register(key.client, { rk: true, user: userNumber(2) });
  assertEquals(await remaining(), 3);
  await register(key.client, { rk: false, user: userNumber(3) });
  assertEquals(await remaining(), 3, "a non-discoverable credential takes no slot");
  await register(key.client, { rk: true, user: userNumber(1) });
  assertEquals(await remaining(), 3, "overwriting a user's credential takes no new slot");
});

Deno.test("getInfo forcePINChange and minPINLength follow authenticatorConfig setMinPINLength (CTAP 2.1 §6.11.4)", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, acfg);
  await key.client.setMinPinLength(token, { newMinPINLength: 6 });
  let info = await key.client.getInfo({ refresh: true });
  assertEquals(info.minPINLength, 6);
  assertEquals(info.forcePINChange, false, "the PIN is already 6 long");
  await key.client.setMinPinLength(token, { forceChangePin: true });
  info = await key.client.getInfo({ refresh: true });
  assertEquals(info.forcePINChange, true);
  assertEquals(info.minPINLength, 6);
});

// --- makeCredential / getAssertion (CTAP 2.1 §6.1, §6.2) -----------------------------------------

for (const [name, alg] of [["ES256", CoseAlgorithm.ES256], ["EdDSA", CoseAlgorithm.EdDSA]] as const) {
  Deno.test(`${name}: makeCredential's key verifies getAssertion signatures over authData || clientDataHash (WebCrypto)`, async () => {
    await using key = await newTestKey();
    const registration = await register(key.client, { alg });
    const cose = decodeCosePublicKey(registration.publicKey);
    assertEquals(cose.alg, alg);
    assert.ok(equalBytes(registration.authData.rpIdHash, sha256(utf8(rpA))));
    assert.ok(registration.authData.flags & AuthDataFlag.userPresent);
    assertEquals(registration.authData.flags & AuthDataFlag.userVerified, 0, "no UV without a token");

    const { response, clientDataHash, authData } = await authenticate(key.client, {
      allowList: [registration.id],
    });
    assert.ok(equalBytes(response.credential!.id, registration.id));
    assert.ok(equalBytes(authData.rpIdHash, sha256(utf8(rpA))));
    assertEquals(authData.attestedCredentialData, undefined, "assertions carry no attested credential data");
    assert.ok(
      await verifiesWith(registration.publicKey, response.authData, clientDataHash, response.signature),
    );
    // The signature is bound to the clientDataHash and the authData.
    assert.ok(
      !await verifiesWith(registration.publicKey, response.authData, randomBytes(32), response.signature),
    );
    const tampered = response.authData.slice();
    tampered[32]! ^= AuthDataFlag.userVerified;
    assert.ok(!await verifiesWith(registration.publicKey, tampered, clientDataHash, response.signature));
  });

  Deno.test(`${name}: the packed attestation signature verifies with the attestation certificate's key (WebAuthn §8.2)`, async () => {
    await using key = await newTestKey({ attestation: "packed" });
    const { response, clientDataHash } = await register(key.client, { alg });
    assertEquals(response.fmt, "packed");
    const attStmt = response.attStmt as { alg: number; sig: Uint8Array; x5c: Uint8Array[] };
    assertEquals(attStmt.alg, CoseAlgorithm.ES256);
    assertEquals(attStmt.x5c.length, 1);
    const certificate = new x509.X509Certificate(attStmt.x5c[0]!.slice());
    const publicKey = await crypto.subtle.importKey(
      "spki",
      certificate.publicKey.rawData,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    const data = concatBytes(response.authData, clientDataHash);
    assert.ok(
      await crypto.subtle.verify(
        { name: "ECDSA", hash: "SHA-256" },
        publicKey,
        derToP1363(attStmt.sig),
        data,
      ),
    );
  });
}

Deno.test("attestation none returns fmt none with an empty attStmt", async () => {
  await using key = await newTestKey({ attestation: "none" });
  const { response } = await register(key.client);
  assertEquals(response.fmt, "none");
  assert.deepEqual(response.attStmt, {});
});

Deno.test("a non-discoverable credential signs in only with an allowList and is never enumerated", async () => {
  await using key = await newTestKey({ pin });
  const registration = await register(key.client, { rk: false });
  const { response, clientDataHash } = await authenticate(key.client, { allowList: [registration.id] });
  assert.ok(
    await verifiesWith(registration.publicKey, response.authData, clientDataHash, response.signature),
  );
  assertEquals(response.user, undefined, "a non-discoverable credential has no stored user");
  await expectStatus(authenticate(key.client), CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
  await expectStatus(
    authenticate(key.client, { token: await tokenFor(key.client, ga, rpA) }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  const token = await tokenFor(key.client, cm);
  assert.deepEqual(await key.client.getCredentialsMetadata(token), {
    existing: 0,
    remaining: defaultMaxDiscoverableCredentials,
  });
  assert.deepEqual(await key.client.listCredentials(token), []);
});

Deno.test("a credential id presented for another rp is not found, neither in allowList nor in excludeList", async () => {
  await using key = await newTestKey();
  const onA = await register(key.client, { rpId: rpA, rk: true });
  await expectStatus(
    authenticate(key.client, { rpId: rpB, allowList: [onA.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  await expectStatus(authenticate(key.client, { rpId: rpB }), CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
  // Excluding A's credential on B does not stop a registration on B.
  await register(key.client, { rpId: rpB, excludeList: [onA.descriptor] });
  // A credential id this key never made is not found either.
  const forged = onA.id.slice();
  forged[forged.length - 1]! ^= 1;
  await expectStatus(
    authenticate(key.client, { rpId: rpA, allowList: [forged] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
});

Deno.test("a discoverable credential for the same rp and user id overwrites the older one (CTAP 2.1 §6.1.2 step 17)", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  const older = await register(key.client, { rk: true, token: await tokenFor(key.client, mc, rpA) });
  clock.t += 1000;
  const newer = await register(key.client, {
    rk: true,
    token: await tokenFor(key.client, mc, rpA),
    user: { ...userNumber(1), displayName: "User One, renamed" },
  });
  assert.ok(!equalBytes(older.id, newer.id));

  const listed = await key.client.listCredentials(await tokenFor(key.client, cm));
  assertEquals(listed.length, 1);
  assert.ok(equalBytes(listed[0]!.credentialId.id, newer.id));
  assertEquals(listed[0]!.user.displayName, "User One, renamed");

  const { response } = await authenticate(key.client);
  assert.ok(equalBytes(response.credential!.id, newer.id));
  assertEquals(response.numberOfCredentials, undefined);
  await expectStatus(
    authenticate(key.client, { allowList: [older.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
});

Deno.test("getNextAssertion (CTAP 2.1 §6.3) walks every discoverable credential, newest first, then answers NOT_ALLOWED", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ authenticator: { now: clock.now } });
  const registrations: Registration[] = [];
  for (const n of [1, 2, 3]) {
    registrations.push(await register(key.client, { rk: true, user: userNumber(n), alg: n === 2 ? -8 : -7 }));
    clock.t += 1000;
  }
  await register(key.client, { rpId: rpB, rk: true, user: userNumber(9) });
  const first = await authenticate(key.client);
  assertEquals(first.response.numberOfCredentials, 3);
  const answers: GetAssertionResponse[] = [first.response];
  answers.push(await key.client.getNextAssertion());
  answers.push(await key.client.getNextAssertion());
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);

  const expected = registrations.toReversed();
  for (const [i, answer] of answers.entries()) {
    assert.ok(equalBytes(answer.credential!.id, expected[i]!.id), `assertion ${i} is credential ${3 - i}`);
    assert.deepEqual(answer.user, { id: userNumber(3 - i).id }, "only the user id without UV");
    if (i > 0) assertEquals(answer.numberOfCredentials, undefined);
    assert.ok(
      await verifiesWith(expected[i]!.publicKey, answer.authData, first.clientDataHash, answer.signature),
      `assertion ${i} signs the same clientDataHash`,
    );
  }
});

Deno.test("discoverable credentials made in the same millisecond are still returned newest first", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ authenticator: { now: clock.now } });
  const ids: Uint8Array[] = [];
  for (const n of [1, 2, 3]) ids.push((await register(key.client, { rk: true, user: userNumber(n) })).id);
  const got = [(await authenticate(key.client)).response];
  got.push(await key.client.getNextAssertion(), await key.client.getNextAssertion());
  assert.deepEqual(got.map((r) => toHex(r.credential!.id)), ids.toReversed().map(toHex));
});

Deno.test("with a UV token, getAssertion returns the users' names and sets the UV flag on every assertion", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  for (const n of [1, 2]) {
    await register(key.client, { rk: true, user: userNumber(n), token: await tokenFor(key.client, mc, rpA) });
    clock.t += 1000;
  }
  const first = await authenticate(key.client, { token: await tokenFor(key.client, ga, rpA) });
  const second = await key.client.getNextAssertion();
  assert.deepEqual(first.response.user, userNumber(2));
  assert.deepEqual(second.user, userNumber(1));
  for (const response of [first.response, second]) {
    const flags = decodeAuthenticatorData(response.authData).flags;
    assertEquals(flags & (AuthDataFlag.userPresent | AuthDataFlag.userVerified), 0x05);
  }
});

Deno.test("getNextAssertion answers NOT_ALLOWED once 30 s have passed since the last assertion (injected clock)", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ authenticator: { now: clock.now } });
  for (const n of [1, 2, 3]) {
    await register(key.client, { rk: true, user: userNumber(n) });
    clock.t += 1;
  }
  await authenticate(key.client);
  clock.t += 30_001;
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
});

Deno.test("the getNextAssertion timer restarts with each getNextAssertion (CTAP 2.1 §6.3 step 7)", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ authenticator: { now: clock.now } });
  for (const n of [1, 2, 3]) {
    await register(key.client, { rk: true, user: userNumber(n) });
    clock.t += 1;
  }
  await authenticate(key.client);
  clock.t += 20_000;
  await key.client.getNextAssertion();
  clock.t += 20_000; // 40 s after getAssertion, 20 s after the last getNextAssertion
  await key.client.getNextAssertion();
});

Deno.test("getNextAssertion without a preceding multi-credential getAssertion, or after another command, is NOT_ALLOWED", async () => {
  await using key = await newTestKey();
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
  const one = await register(key.client, { rk: true, user: userNumber(1) });
  await register(key.client, { rk: true, user: userNumber(2) });
  await authenticate(key.client, { allowList: [one.id] });
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
  await authenticate(key.client);
  await key.client.getInfo({ refresh: true });
  await expectStatus(key.client.getNextAssertion(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
});

Deno.test("the signature counter strictly increases across makeCredential, getAssertion and getNextAssertion", async () => {
  await using key = await newTestKey();
  const counters: number[] = [];
  const a = await register(key.client, { rk: true, user: userNumber(1) });
  counters.push(a.authData.signCount);
  const b = await register(key.client, { rk: true, user: userNumber(2), alg: -8 });
  counters.push(b.authData.signCount);
  counters.push((await authenticate(key.client, { allowList: [a.id] })).authData.signCount);
  counters.push((await authenticate(key.client, { allowList: [b.id] })).authData.signCount);
  counters.push((await authenticate(key.client)).authData.signCount);
  counters.push(decodeAuthenticatorData((await key.client.getNextAssertion()).authData).signCount);
  counters.push((await authenticate(key.client, { allowList: [a.id], up: false })).authData.signCount);
  counters.push((await register(key.client, { rpId: rpB })).authData.signCount);
  assert.ok(counters[0]! > 0);
  for (let i = 1; i < counters.length; i++) {
    assert.ok(counters[i]! > counters[i - 1]!, `counter ${counters[i]} after ${counters[i - 1]}`);
  }
  // The counter survives a power cycle.
  const after = powerCycle(key);
  const next = await authenticate(after.client, { allowList: [a.id] });
  assert.ok(next.authData.signCount > counters.at(-1)!);
});

Deno.test("getAssertion with up=false asks for no touch and clears the UP flag (CTAP 2.1 §6.2.2)", async () => {
  const presence = touches();
  await using key = await newTestKey({ authenticator: { userPresence: presence.check } });
  const registration = await register(key.client);
  presence.asked.length = 0;
  const { response, authData, clientDataHash } = await authenticate(key.client, {
    allowList: [registration.id],
    up: false,
  });
  assertEquals(presence.asked.length, 0);
  assertEquals(authData.flags & AuthDataFlag.userPresent, 0);
  assert.ok(
    await verifiesWith(registration.publicKey, response.authData, clientDataHash, response.signature),
  );
});

Deno.test("getAssertion with the rk option is UNSUPPORTED_OPTION and with uv=true INVALID_OPTION (CTAP 2.1 §6.2.2 step 5)", async () => {
  await using key = await newTestKey();
  await register(key.client, { rk: true });
  await expectStatus(
    key.client.getAssertion({ rpId: rpA, clientDataHash: randomBytes(32), options: { rk: true } }),
    CtapStatus.CTAP2_ERR_UNSUPPORTED_OPTION,
  );
  await expectStatus(
    key.client.getAssertion({ rpId: rpA, clientDataHash: randomBytes(32), options: { uv: true } }),
    CtapStatus.CTAP2_ERR_INVALID_OPTION,
  );
});

Deno.test("excludeList naming a credential of this key for this rp is CREDENTIAL_EXCLUDED after a touch (CTAP 2.1 §6.1.2 step 11)", async () => {
  const presence = touches();
  await using key = await newTestKey({ authenticator: { userPresence: presence.check } });
  const first = await register(key.client, { rk: true });
  presence.asked.length = 0;
  const before = structuredClone(key.store.read());
  await expectStatus(
    register(key.client, {
      rk: true,
      user: userNumber(2),
      excludeList: [{ type: "public-key", id: randomBytes(60) }, first.descriptor],
    }),
    CtapStatus.CTAP2_ERR_CREDENTIAL_EXCLUDED,
  );
  assert.deepEqual(presence.asked, [{ command: "makeCredential", rpId: rpA }]);
  assert.deepEqual(key.store.read(), before, "nothing was created");
  // A non-discoverable credential is excluded just the same.
  const loose = await register(key.client, { rk: false, user: userNumber(3) });
  await expectStatus(
    register(key.client, { excludeList: [loose.descriptor] }),
    CtapStatus.CTAP2_ERR_CREDENTIAL_EXCLUDED,
  );
});

// --- credProtect (CTAP 2.1 §12.1) ---------------------------------------------------------------

Deno.test("credProtect userVerificationRequired (3): invisible without UV, with or without allowList; visible with UV", async () => {
  await using key = await newTestKey({ pin });
  const level3 = await register(key.client, {
    rk: true,
    extensions: { credProtect: 3 },
    token: await tokenFor(key.client, mc, rpA),
  });
  assert.deepEqual(level3.authData.extensions, { credProtect: 3 });
  await expectStatus(authenticate(key.client), CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
  await expectStatus(
    authenticate(key.client, { allowList: [level3.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  const withUv = await authenticate(key.client, { token: await tokenFor(key.client, ga, rpA) });
  assert.ok(equalBytes(withUv.response.credential!.id, level3.id));
  const listed = await authenticate(key.client, {
    allowList: [level3.id],
    token: await tokenFor(key.client, ga, rpA),
  });
  assert.ok(
    await verifiesWith(
      level3.publicKey,
      listed.response.authData,
      listed.clientDataHash,
      listed.response.signature,
    ),
  );
  // Without UV it does not even count for excludeList; with UV it does.
  await register(key.client, { user: userNumber(2), excludeList: [level3.descriptor] });
  await expectStatus(
    register(key.client, {
      user: userNumber(3),
      excludeList: [level3.descriptor],
      token: await tokenFor(key.client, mc, rpA),
    }),
    CtapStatus.CTAP2_ERR_CREDENTIAL_EXCLUDED,
  );
});

Deno.test("credProtect userVerificationOptionalWithCredentialIDList (2): needs an allowList unless UV", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  const level1 = await register(key.client, {
    rk: true,
    user: userNumber(1),
    token: await tokenFor(key.client, mc, rpA),
  });
  clock.t += 1000;
  const level2 = await register(key.client, {
    rk: true,
    user: userNumber(2),
    extensions: { credProtect: 2 },
    token: await tokenFor(key.client, mc, rpA),
  });
  assert.deepEqual(level2.authData.extensions, { credProtect: 2 });
  assertEquals(level1.authData.extensions, undefined, "no credProtect output unless asked");

  const withoutUv = await authenticate(key.client);
  assert.ok(
    equalBytes(withoutUv.response.credential!.id, level1.id),
    "only the level-1 credential is discovered",
  );
  assertEquals(withoutUv.response.numberOfCredentials, undefined);

  const byId = await authenticate(key.client, { allowList: [level2.id] });
  assert.ok(equalBytes(byId.response.credential!.id, level2.id));
  assertEquals(byId.authData.flags & AuthDataFlag.userVerified, 0);

  const withUv = await authenticate(key.client, { token: await tokenFor(key.client, ga, rpA) });
  assertEquals(withUv.response.numberOfCredentials, 2);
  assert.ok(equalBytes(withUv.response.credential!.id, level2.id));
  assert.ok(equalBytes((await key.client.getNextAssertion()).credential!.id, level1.id));
});

// --- PIN (CTAP 2.1 §6.5) ------------------------------------------------------------------------

Deno.test("setPIN on a key that has a PIN is NOT_ALLOWED (CTAP 2.1 §6.5.5.5)", async () => {
  await using key = await newTestKey({ pin });
  await expectStatus(key.client.setPin("13579"), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
  await tokenFor(key.client, mc, rpA); // the first PIN still works
});

Deno.test("a PIN shorter than minPINLength is PIN_POLICY_VIOLATION and sets nothing", async () => {
  await using key = await newTestKey();
  await expectStatus(key.client.setPin("123"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  assertEquals((await key.client.getInfo({ refresh: true })).options?.["clientPin"], false);
  await key.client.setPin("1234");
  assertEquals((await key.client.getInfo({ refresh: true })).options?.["clientPin"], true);
});

Deno.test("the PIN's length counts Unicode code points, not bytes (CTAP 2.1 §6.5.1)", async () => {
  await using key = await newTestKey();
  await expectStatus(key.client.setPin("😀😀😀"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION); // 12 bytes, 3 code points
  await key.client.setPin("éüßø"); // 8 bytes, 4 code points
  await tokenFor(key.client, mc, rpA, "éüßø");
});

Deno.test("a wrong PIN decrements the retries; a right one restores them to 8 (CTAP 2.1 §6.5.5.7)", async () => {
  await using key = await newTestKey({ pin });
  assert.deepEqual(await key.client.getPinRetries(), { retries: 8, powerCycleState: false });
  await expectStatus(tokenFor(key.client, mc, rpA, "000000"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  assert.deepEqual(await key.client.getPinRetries(), { retries: 7, powerCycleState: false });
  await expectStatus(tokenFor(key.client, mc, rpA, "111111"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  assert.deepEqual(await key.client.getPinRetries(), { retries: 6, powerCycleState: false });
  await tokenFor(key.client, mc, rpA);
  assert.deepEqual(await key.client.getPinRetries(), { retries: 8, powerCycleState: false });
});

Deno.test("a right PIN's restore is saved with the next change, not on its own; a power cut before it costs one retry, never gives one", async () => {
  await using key = await newTestKey({ pin });
  let saves = 0;
  const change = key.store.change.bind(key.store);
  key.store.change = (compute) => {
    saves++;
    return change(compute);
  };
  const token = await tokenFor(key.client, mc, rpA);
  assertEquals(saves, 1, "the PIN check saves the spent retry before comparing (CTAP 2.1 §6.5.5.7)");
  assertEquals(key.store.read().pin!.retries, 7, "the spent retry is durable");
  assert.deepEqual(await key.client.getPinRetries(), { retries: 8, powerCycleState: false });
  // A power cut here: the new power cycle sees the durable count, one retry fewer (the safe side).
  assertEquals((await powerCycle(key).client.getPinRetries()).retries, 7);
  await register(key.client, { rk: true, token });
  assertEquals(saves, 2, "the registration carries the restore: two saves per registration, not three");
  assertEquals(key.store.read().pin!.retries, 8);
  assertEquals(key.store.read().credentials.length, 1);

  // With no change after the PIN check, flush() saves the restore (the vault does it on close).
  await tokenFor(key.client, mc, rpA);
  assertEquals(key.store.read().pin!.retries, 7);
  await key.device.flush();
  assertEquals(key.store.read().pin!.retries, 8);
  assertEquals(saves, 4);
  await key.device.flush();
  assertEquals(saves, 4, "nothing owed, nothing saved");
});

Deno.test("a restore owed is a difference: a wrong guess made meanwhile through another instance is not erased", async () => {
  await using key = await newTestKey({ pin });
  const other = powerCycle(key);
  await tokenFor(key.client, mc, rpA);
  await expectStatus(tokenFor(other.client, mc, rpA, "000000"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  assertEquals(key.store.read().pin!.retries, 6);
  await key.device.flush();
  assertEquals(key.store.read().pin!.retries, 7, "8, less the other instance's wrong guess");
});

Deno.test("after 3 wrong PINs in one power cycle PIN entry is PIN_AUTH_BLOCKED until the key is power-cycled", async () => {
  await using key = await newTestKey({ pin });
  await expectStatus(tokenFor(key.client, mc, rpA, "000000"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  await expectStatus(tokenFor(key.client, mc, rpA, "000000"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  await expectStatus(tokenFor(key.client, mc, rpA, "000000"), CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED);
  assert.deepEqual(await key.client.getPinRetries(), { retries: 5, powerCycleState: true });
  // Even the right PIN is refused, and does not cost a retry.
  await expectStatus(tokenFor(key.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED);
  await expectStatus(key.client.changePin(pin, "13579"), CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED);
  assert.deepEqual(await key.client.getPinRetries(), { retries: 5, powerCycleState: true });

  const cycled = powerCycle(key);
  assert.deepEqual(await cycled.client.getPinRetries(), { retries: 5, powerCycleState: false });
  const token = await tokenFor(cycled.client, mc, rpA);
  await register(cycled.client, { rk: true, token });
  assert.deepEqual(await cycled.client.getPinRetries(), { retries: 8, powerCycleState: false });
});

Deno.test("8 wrong PINs in total make the PIN PIN_BLOCKED, across power cycles and for good", async () => {
  await using key = await newTestKey({ pin });
  let current = { client: key.client };
  const wrong = () => tokenFor(current.client, mc, rpA, "000000");
  for (let cycle = 0; cycle < 2; cycle++) {
    await expectStatus(wrong(), CtapStatus.CTAP2_ERR_PIN_INVALID);
    await expectStatus(wrong(), CtapStatus.CTAP2_ERR_PIN_INVALID);
    await expectStatus(wrong(), CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED);
    current = powerCycle(key);
  }
  assert.deepEqual(await current.client.getPinRetries(), { retries: 2, powerCycleState: false });
  await expectStatus(wrong(), CtapStatus.CTAP2_ERR_PIN_INVALID);
  await expectStatus(wrong(), CtapStatus.CTAP2_ERR_PIN_BLOCKED);
  assert.deepEqual(await current.client.getPinRetries(), { retries: 0, powerCycleState: false });
  await expectStatus(tokenFor(current.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_BLOCKED);
  await expectStatus(current.client.changePin(pin, "13579"), CtapStatus.CTAP2_ERR_PIN_BLOCKED);
  const later = powerCycle(key);
  await expectStatus(tokenFor(later.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_BLOCKED);
  assertEquals((await later.client.getPinRetries()).retries, 0);
  // A blocked PIN still protects discoverable credentials.
  await expectStatus(register(later.client, { rk: true }), CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
});

Deno.test("changePIN replaces the PIN: the new one gives tokens, the old one is PIN_INVALID (CTAP 2.1 §6.5.5.6)", async () => {
  await using key = await newTestKey({ pin });
  await key.client.changePin(pin, "13579");
  await tokenFor(key.client, mc, rpA, "13579");
  await expectStatus(tokenFor(key.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_INVALID);
  await expectStatus(key.client.changePin(pin, "24680"), CtapStatus.CTAP2_ERR_PIN_INVALID);
  await expectStatus(key.client.changePin("13579", "12"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await tokenFor(key.client, mc, rpA, "13579");
});

Deno.test("changePIN invalidates tokens issued under the old PIN", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, mc, rpA);
  await key.client.changePin(pin, "13579");
  await expectStatus(register(key.client, { rk: true, token }), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
});

Deno.test("changePIN or setPIN without a PIN set, or without their parameters, answer the spec's statuses", async () => {
  await using key = await newTestKey();
  await expectStatus(key.client.changePin("1234", "5678"), CtapStatus.CTAP2_ERR_PIN_NOT_SET);
  await expectStatus(tokenFor(key.client, mc, rpA, "1234"), CtapStatus.CTAP2_ERR_PIN_NOT_SET);
  await expectStatus(
    clientPin(key.device, { pinUvAuthProtocol: 2, subCommand: ClientPinSubcommand.setPin }),
    CtapStatus.CTAP2_ERR_MISSING_PARAMETER,
  );
  await expectStatus(
    clientPin(key.device, { pinUvAuthProtocol: 3, subCommand: ClientPinSubcommand.getKeyAgreement }),
    CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
  );
  await expectStatus(clientPin(key.device, { subCommand: 0x42 }), CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND);
});

Deno.test("setPIN with a pinUvAuthParam that does not match newPinEnc is PIN_AUTH_INVALID", async () => {
  await using key = await newTestKey();
  const protocol = pinProtocol(2);
  const { platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, protocol);
  const newPinEnc = protocol.encrypt(sharedSecret, padPin("1234"));
  await expectStatus(
    clientPin(key.device, {
      pinUvAuthProtocol: 2,
      subCommand: ClientPinSubcommand.setPin,
      keyAgreement: platformKeyAgreement,
      newPinEnc,
      pinUvAuthParam: protocol.authenticate(sharedSecret, randomBytes(80)),
    }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  assertEquals((await key.client.getInfo({ refresh: true })).options?.["clientPin"], false);
});

Deno.test("PIN/UV auth protocol one (CTAP 2.1 §6.5.6) works end to end, driven by hand", async () => {
  await using key = await newTestKey();
  const one = pinProtocol(1);
  assertEquals(one.paramLength, 16);

  // setPIN under protocol one.
  let { platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, one);
  const newPinEnc = one.encrypt(sharedSecret, padPin("1357"));
  assertEquals(newPinEnc.length, 64);
  await clientPin(key.device, {
    pinUvAuthProtocol: 1,
    subCommand: ClientPinSubcommand.setPin,
    keyAgreement: platformKeyAgreement,
    newPinEnc,
    pinUvAuthParam: one.authenticate(sharedSecret, newPinEnc),
  });

  // getPinUvAuthTokenUsingPinWithPermissions under protocol one.
  const getToken = async (thePin: string, permissions: number, rpId?: string): Promise<PinToken> => {
    ({ platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, one));
    const response = await clientPin(key.device, {
      pinUvAuthProtocol: 1,
      subCommand: ClientPinSubcommand.getPinUvAuthTokenUsingPinWithPermissions,
      keyAgreement: platformKeyAgreement,
      pinHashEnc: one.encrypt(sharedSecret, pinHash(thePin)),
      permissions,
      ...(rpId === undefined ? {} : { rpId }),
    });
    assertEquals(response.pinUvAuthToken?.length, 32, "protocol one encrypts the token with a zero IV");
    return { protocol: one, token: one.decrypt(sharedSecret, response.pinUvAuthToken!) };
  };

  const registration = await register(key.client, { rk: true, token: await getToken("1357", mc, rpA) });
  assertEquals(registration.authData.flags & AuthDataFlag.userVerified, AuthDataFlag.userVerified);
  const assertion = await authenticate(key.client, { token: await getToken("1357", ga, rpA) });
  assertEquals(assertion.authData.flags & AuthDataFlag.userVerified, AuthDataFlag.userVerified);
  assert.ok(
    await verifiesWith(
      registration.publicKey,
      assertion.response.authData,
      assertion.clientDataHash,
      assertion.response.signature,
    ),
  );

  // changePIN under protocol one.
  ({ platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, one));
  const changedPinEnc = one.encrypt(sharedSecret, padPin("97531"));
  const pinHashEnc = one.encrypt(sharedSecret, pinHash("1357"));
  await clientPin(key.device, {
    pinUvAuthProtocol: 1,
    subCommand: ClientPinSubcommand.changePin,
    keyAgreement: platformKeyAgreement,
    newPinEnc: changedPinEnc,
    pinHashEnc,
    pinUvAuthParam: one.authenticate(sharedSecret, concatBytes(changedPinEnc, pinHashEnc)),
  });
  await getToken("97531", cm);
  await expectStatus(getToken("1357", cm), CtapStatus.CTAP2_ERR_PIN_INVALID);
});

Deno.test("PIN/UV auth protocol two (CTAP 2.1 §6.5.7) is what the client prefers, and it works end to end", async () => {
  await using key = await newTestKey({ pin });
  assertEquals((await key.client.preferredPinProtocol()).version, 2);
  const token = await tokenFor(key.client, mc, rpA);
  assertEquals(token.protocol.version, 2);
  const registration = await register(key.client, { rk: true, token });
  assertEquals(registration.authData.flags & AuthDataFlag.userVerified, AuthDataFlag.userVerified);
});

Deno.test("a pinUvAuthParam of the wrong protocol length or for another message is PIN_AUTH_INVALID", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, mc, rpA);
  const clientDataHash = randomBytes(32);
  await expectStatus(
    key.client.makeCredential({
      clientDataHash,
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      pinUvAuthParam: token.protocol.authenticate(token.token, randomBytes(32)),
      pinUvAuthProtocol: 2,
    }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await expectStatus(
    key.client.makeCredential({
      clientDataHash,
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      pinUvAuthParam: token.protocol.authenticate(token.token, clientDataHash).subarray(0, 16),
      pinUvAuthProtocol: 2,
    }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await expectStatus(
    key.client.makeCredential({
      clientDataHash,
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      pinUvAuthParam: token.protocol.authenticate(token.token, clientDataHash),
    }),
    CtapStatus.CTAP2_ERR_MISSING_PARAMETER,
  );
});

// --- pinUvAuthToken permissions (CTAP 2.1 §6.5.5.7) ----------------------------------------------

Deno.test("a token with only the ga permission cannot makeCredential (PIN_AUTH_INVALID)", async () => {
  await using key = await newTestKey({ pin });
  await expectStatus(
    register(key.client, { rk: true, token: await tokenFor(key.client, ga, rpA) }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await expectStatus(
    register(key.client, { rk: true, token: await tokenFor(key.client, cm) }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await register(key.client, { rk: true, token: await tokenFor(key.client, mc | ga, rpA) });
});

Deno.test("a token bound to rp A cannot be used for rp B (PIN_AUTH_INVALID)", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, mc | ga, rpA);
  await expectStatus(
    register(key.client, { rpId: rpB, rk: true, token }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await register(key.client, { rpId: rpA, rk: true, token });
});

Deno.test("a token issued without an rpId binds to the rp of its first use (legacy getPinToken)", async () => {
  await using key = await newTestKey({ pin });
  const one = pinProtocol(2);
  const { platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, one);
  const response = await clientPin(key.device, {
    pinUvAuthProtocol: 2,
    subCommand: ClientPinSubcommand.getPinToken,
    keyAgreement: platformKeyAgreement,
    pinHashEnc: one.encrypt(sharedSecret, pinHash(pin)),
  });
  const token = { protocol: one, token: one.decrypt(sharedSecret, response.pinUvAuthToken!) };
  await register(key.client, { rpId: rpB, token });
  await expectStatus(authenticate(key.client, { rpId: rpA, token }), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
});

Deno.test("getPinUvAuthTokenUsingPinWithPermissions checks its permissions (CTAP 2.1 §6.5.5.7.2)", async () => {
  await using key = await newTestKey({ pin });
  await expectStatus(tokenFor(key.client, 0, rpA), CtapStatus.CTAP1_ERR_INVALID_PARAMETER);
  await expectStatus(tokenFor(key.client, mc), CtapStatus.CTAP2_ERR_MISSING_PARAMETER);
  await expectStatus(
    tokenFor(key.client, PinUvAuthPermission.bioEnrollment),
    CtapStatus.CTAP2_ERR_UNAUTHORIZED_PERMISSION,
  );
  await expectStatus(
    tokenFor(key.client, PinUvAuthPermission.largeBlobWrite),
    CtapStatus.CTAP2_ERR_UNAUTHORIZED_PERMISSION,
  );
  assertEquals((await key.client.getPinRetries()).retries, 8, "refused requests cost no PIN retry");
});

Deno.test("a token that was not used within 30 s expires (CTAP 2.1 §6.5.2.1, injected clock)", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  const token = await tokenFor(key.client, mc, rpA);
  clock.t += 30_001;
  await expectStatus(register(key.client, { rk: true, token }), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
});

Deno.test("a token is spent by the user-present operation it authorises (CTAP 2.1 §6.1.2 step 14, §6.2.2 step 9)", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, mc | ga, rpA);
  await register(key.client, { rk: true, token });
  await expectStatus(
    register(key.client, { rk: true, user: userNumber(2), token }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await expectStatus(authenticate(key.client, { token }), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  const forAssertion = await tokenFor(key.client, ga, rpA);
  await authenticate(key.client, { token: forAssertion });
  await expectStatus(
    authenticate(key.client, { token: forAssertion }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
});

Deno.test("a PIN-protected key refuses a discoverable credential without a token (PUAT_REQUIRED) but makes others (makeCredUvNotRqd)", async () => {
  await using key = await newTestKey({ pin });
  await expectStatus(register(key.client, { rk: true }), CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
  const loose = await register(key.client, { rk: false });
  assertEquals(loose.authData.flags & AuthDataFlag.userVerified, 0);
});

// --- authenticatorConfig (CTAP 2.1 §6.11) --------------------------------------------------------

Deno.test("setMinPINLength raises the minimum: shorter PINs are then PIN_POLICY_VIOLATION", async () => {
  await using key = await newTestKey({ pin: "12345678" });
  await key.client.setMinPinLength(await tokenFor(key.client, acfg, undefined, "12345678"), {
    newMinPINLength: 7,
  });
  await expectStatus(key.client.changePin("12345678", "123456"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await key.client.changePin("12345678", "1234567");
  await tokenFor(key.client, mc, rpA, "1234567");
});

Deno.test("setMinPINLength cannot lower the minimum (PIN_POLICY_VIOLATION)", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, acfg);
  await key.client.setMinPinLength(token, { newMinPINLength: 6 });
  await expectStatus(
    key.client.setMinPinLength(token, { newMinPINLength: 5 }),
    CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
  );
  await expectStatus(
    key.client.setMinPinLength(token, { newMinPINLength: 4 }),
    CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
  );
  await key.client.setMinPinLength(token, { newMinPINLength: 6 }); // the same value is fine
  assertEquals((await key.client.getInfo({ refresh: true })).minPINLength, 6);
});

Deno.test("forceChangePin makes getPinToken PIN_POLICY_VIOLATION until changePIN, which must pick a new PIN", async () => {
  await using key = await newTestKey({ pin });
  await key.client.setMinPinLength(await tokenFor(key.client, acfg), { forceChangePin: true });
  await expectStatus(tokenFor(key.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await expectStatus(tokenFor(key.client, acfg), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  assertEquals((await key.client.getPinRetries()).retries, 8, "the right PIN costs no retry");
  await expectStatus(key.client.changePin(pin, pin), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await key.client.changePin(pin, "13579");
  assertEquals((await key.client.getInfo({ refresh: true })).forcePINChange, false);
  await register(key.client, { rk: true, token: await tokenFor(key.client, mc, rpA, "13579") });
});

Deno.test("a minimum above the current PIN's length forces a PIN change", async () => {
  await using key = await newTestKey({ pin: "1234" });
  await key.client.setMinPinLength(await tokenFor(key.client, acfg, undefined, "1234"), {
    newMinPINLength: 6,
  });
  assertEquals((await key.client.getInfo({ refresh: true })).forcePINChange, true);
  await expectStatus(tokenFor(key.client, mc, rpA, "1234"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await expectStatus(key.client.changePin("1234", "12345"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  await key.client.changePin("1234", "123456");
  assertEquals((await key.client.getInfo({ refresh: true })).forcePINChange, false);
  await tokenFor(key.client, mc, rpA, "123456");
});

Deno.test("authenticatorConfig on a PIN-protected key needs a token with acfg (PUAT_REQUIRED, PIN_AUTH_INVALID)", async () => {
  await using key = await newTestKey({ pin });
  const unauthenticated = encodeRequest(CtapCommand.config, ConfigRequest, {
    subCommand: ConfigSubcommand.setMinPINLength,
    subCommandParams: { newMinPINLength: 8 },
  });
  assertEquals((await sendRaw(key.device, unauthenticated)).status, CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
  await expectStatus(
    key.client.setMinPinLength(await tokenFor(key.client, cm), { newMinPINLength: 8 }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  assertEquals((await key.client.getInfo({ refresh: true })).minPINLength, 4);
  // The MAC covers the parameters: a token's param for 6 does not authorise 8.
  const token = await tokenFor(key.client, acfg);
  const message = concatBytes(
    new Uint8Array(32).fill(0xff),
    Uint8Array.of(0x0d, 0x03),
    encodeCbor(new Map([[1, 6]])),
  );
  const forged = encodeRequest(CtapCommand.config, ConfigRequest, {
    subCommand: ConfigSubcommand.setMinPINLength,
    subCommandParams: { newMinPINLength: 8 },
    pinUvAuthProtocol: 2,
    pinUvAuthParam: token.protocol.authenticate(token.token, message),
  });
  assertEquals((await sendRaw(key.device, forged)).status, CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  assertEquals((await key.client.getInfo({ refresh: true })).minPINLength, 4);
});

Deno.test("authenticatorConfig without a PIN needs no token; forceChangePin then is PIN_NOT_SET; other subcommands are INVALID_SUBCOMMAND", async () => {
  await using key = await newTestKey();
  const config = (fields: ConfigRequest) =>
    sendRaw(key.device, encodeRequest(CtapCommand.config, ConfigRequest, fields));
  assertEquals(
    (await config({ subCommand: ConfigSubcommand.setMinPINLength, subCommandParams: { newMinPINLength: 6 } }))
      .status,
    CtapStatus.CTAP2_OK,
  );
  await expectStatus(key.client.setPin("12345"), CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);
  assertEquals(
    (await config({
      subCommand: ConfigSubcommand.setMinPINLength,
      subCommandParams: { forceChangePin: true },
    })).status,
    CtapStatus.CTAP2_ERR_PIN_NOT_SET,
  );
  assertEquals(
    (await config({ subCommand: ConfigSubcommand.toggleAlwaysUv })).status,
    CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND,
  );
  assertEquals(
    (await config({ subCommand: ConfigSubcommand.enableEnterpriseAttestation })).status,
    CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND,
  );
});

// --- authenticatorCredentialManagement (CTAP 2.1 §6.8) --------------------------------------------

Deno.test("credential management lists every rp and credential, counts them, and deletes one (CTAP 2.1 §6.8)", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  const made = new Map<string, Registration>();
  for (const [rpId, n, alg] of [[rpA, 1, -7], [rpA, 2, -8], [rpB, 3, -7], [rpC, 4, -8]] as const) {
    made.set(
      `${rpId}/${n}`,
      await register(key.client, {
        rpId,
        user: userNumber(n),
        alg,
        rk: true,
        ...(n === 4 ? { extensions: { credProtect: 2 } } : {}),
        token: await tokenFor(key.client, mc, rpId),
      }),
    );
    clock.t += 1000;
  }
  await register(key.client, { rpId: rpB, user: userNumber(5) }); // not discoverable: not managed

  const token = await tokenFor(key.client, cm);
  assert.deepEqual(await key.client.getCredentialsMetadata(token), {
    existing: 4,
    remaining: defaultMaxDiscoverableCredentials - 4,
  });
  const listed = await key.client.listCredentials(token);
  assertEquals(listed.length, 4);
  for (const credential of listed) {
    const n = new TextDecoder().decode(credential.user.id).replace("user-", "");
    const registration = made.get(`${credential.rpId}/${n}`);
    assert.ok(registration, `listed ${credential.rpId}/${n} was made`);
    assert.ok(equalBytes(credential.credentialId.id, registration.id));
    assert.deepEqual(credential.user, userNumber(Number(n)));
    assert.deepEqual(decodeCosePublicKey(credential.publicKey), decodeCosePublicKey(registration.publicKey));
    assertEquals(credential.credProtect, n === "4" ? 2 : 1);
  }
  assert.deepEqual([...new Set(listed.map((c) => c.rpId))].sort(), [rpA, rpB, rpC]);

  const victim = made.get(`${rpA}/1`)!;
  await key.client.deleteCredential(token, victim.descriptor);
  assert.deepEqual(await key.client.getCredentialsMetadata(token), {
    existing: 3,
    remaining: defaultMaxDiscoverableCredentials - 3,
  });
  assertEquals((await key.client.listCredentials(token)).length, 3);
  await expectStatus(
    authenticate(key.client, { allowList: [victim.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  const remaining = await authenticate(key.client);
  assert.ok(equalBytes(remaining.response.credential!.id, made.get(`${rpA}/2`)!.id));
  assertEquals(remaining.response.numberOfCredentials, undefined);
  await expectStatus(
    key.client.deleteCredential(token, victim.descriptor),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  assertEquals(
    (await key.client.getInfo({ refresh: true })).remainingDiscoverableCredentials,
    defaultMaxDiscoverableCredentials - 3,
  );
});

Deno.test("credential management needs a token with cm: PUAT_REQUIRED without one, PIN_AUTH_INVALID with another", async () => {
  await using key = await newTestKey({ pin });
  await register(key.client, { rk: true, token: await tokenFor(key.client, mc, rpA) });
  const bare = encodeRequest(CtapCommand.credentialManagement, CredentialManagementRequest, {
    subCommand: CredentialManagementSubcommand.getCredsMetadata,
  });
  assertEquals((await sendRaw(key.device, bare)).status, CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
  const enumerate = encodeRequest(CtapCommand.credentialManagement, CredentialManagementRequest, {
    subCommand: CredentialManagementSubcommand.enumerateRPsBegin,
  });
  assertEquals((await sendRaw(key.device, enumerate)).status, CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
  await expectStatus(
    key.client.getCredentialsMetadata(await tokenFor(key.client, mc | ga, rpA)),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await expectStatus(
    key.client.listCredentials(await tokenFor(key.client, acfg)),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  // Without a preceding Begin, GetNext has nothing to continue.
  const next = encodeRequest(CtapCommand.credentialManagement, CredentialManagementRequest, {
    subCommand: CredentialManagementSubcommand.enumerateRPsGetNextRP,
  });
  assertEquals((await sendRaw(key.device, next)).status, CtapStatus.CTAP2_ERR_NOT_ALLOWED);
});

Deno.test("a cm token bound to an rp manages only that rp's credentials (CTAP 2.1 §6.8)", async () => {
  await using key = await newTestKey({ pin });
  const onA = await register(key.client, { rpId: rpA, rk: true, token: await tokenFor(key.client, mc, rpA) });
  const onB = await register(key.client, { rpId: rpB, rk: true, token: await tokenFor(key.client, mc, rpB) });
  const bound = await tokenFor(key.client, cm, rpA);
  await expectStatus(key.client.getCredentialsMetadata(bound), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  await expectStatus(key.client.listCredentials(bound), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  await expectStatus(
    key.client.deleteCredential(bound, onB.descriptor),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
  await key.client.deleteCredential(bound, onA.descriptor);
  const all = await key.client.listCredentials(await tokenFor(key.client, cm));
  assert.deepEqual(all.map((c) => c.rpId), [rpB]);
});

// --- authenticatorReset and user presence (CTAP 2.1 §6.6, §6.9) -----------------------------------

Deno.test("reset within 10 s of power-up wipes credentials and PIN (CTAP 2.1 §6.6, injected clock)", async () => {
  const clock = manualClock();
  const presence = touches();
  const options = { now: clock.now, userPresence: presence.check };
  await using key = await newTestKey({ pin, authenticator: options });
  const registration = await register(key.client, { rk: true, token: await tokenFor(key.client, mc, rpA) });
  const loose = await register(key.client, { rk: false, user: userNumber(2) });
  await key.client.setMinPinLength(await tokenFor(key.client, acfg), { newMinPINLength: 6 });
  const signCount = key.store.read().signCount;
  clock.t += 9_000;
  presence.asked.length = 0;
  await key.client.reset();
  assert.deepEqual(presence.asked, [{ command: "reset" }]);

  const info = await key.client.getInfo({ refresh: true });
  assertEquals(info.options?.["clientPin"], false);
  assertEquals(info.minPINLength, 4);
  assertEquals(info.forcePINChange, false);
  assertEquals(info.remainingDiscoverableCredentials, defaultMaxDiscoverableCredentials);
  await expectStatus(
    authenticate(key.client, { allowList: [registration.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  await expectStatus(
    authenticate(key.client, { allowList: [loose.id] }),
    CtapStatus.CTAP2_ERR_NO_CREDENTIALS,
  );
  await expectStatus(authenticate(key.client), CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
  assert.ok(key.store.read().signCount >= signCount, "the counter never goes back");
  await key.client.setPin("1234");
});

Deno.test("reset more than 10 s after power-up is NOT_ALLOWED, and asks for no touch; a power cycle opens the window again", async () => {
  const clock = manualClock();
  const presence = touches();
  const options = { now: clock.now, userPresence: presence.check };
  await using key = await newTestKey({ pin, authenticator: options });
  clock.t += 10_001;
  presence.asked.length = 0;
  await expectStatus(key.client.reset(), CtapStatus.CTAP2_ERR_NOT_ALLOWED);
  assertEquals(presence.asked.length, 0);
  assertEquals((await key.client.getInfo({ refresh: true })).options?.["clientPin"], true);
  const cycled = powerCycle(key, options);
  await cycled.client.reset();
  assertEquals((await cycled.client.getInfo()).options?.["clientPin"], false);
});

Deno.test("reset recovers a PIN_BLOCKED key", async () => {
  const clock = manualClock();
  await using key = await newTestKey({ pin, authenticator: { now: clock.now } });
  let current = powerCycle(key, { now: clock.now });
  for (let wrong = 1; wrong <= 8; wrong++) {
    await rejects(tokenFor(current.client, mc, rpA, "000000"), CtapError);
    if (wrong % 3 === 0) current = powerCycle(key, { now: clock.now });
  }
  await expectStatus(tokenFor(current.client, mc, rpA), CtapStatus.CTAP2_ERR_PIN_BLOCKED);
  await current.client.reset();
  await current.client.setPin("1234");
  await tokenFor(current.client, mc, rpA, "1234");
});

Deno.test("a refused touch is OPERATION_DENIED for reset, makeCredential, getAssertion and selection, and changes nothing", async () => {
  const presence = touches([false, false]);
  await using key = await newTestKey({ pin, authenticator: { userPresence: presence.check } });
  const before = structuredClone(key.store.read());
  await expectStatus(key.client.reset(), CtapStatus.CTAP2_ERR_OPERATION_DENIED);
  await expectStatus(register(key.client, { rpId: rpB }), CtapStatus.CTAP2_ERR_OPERATION_DENIED);
  assert.deepEqual(key.store.read(), before, "neither the reset nor the credential happened");
  presence.asked.length = 0;
  const registration = await register(key.client, { rpId: rpB }); // touches allowed again
  assert.deepEqual(presence.asked, [{ command: "makeCredential", rpId: rpB }]);
  const refuse = touches([false, false]);
  const refusing = powerCycle(key, { userPresence: refuse.check });
  await expectStatus(
    authenticate(refusing.client, { rpId: rpB, allowList: [registration.id] }),
    CtapStatus.CTAP2_ERR_OPERATION_DENIED,
  );
  await expectStatus(refusing.client.selection(), CtapStatus.CTAP2_ERR_OPERATION_DENIED);
  assert.deepEqual(refuse.asked, [{ command: "getAssertion", rpId: rpB }, { command: "selection" }]);
  await refusing.client.selection(); // the script is spent: touched
});

Deno.test("makeCredential asks for the touch with its rp id; the credential is only made after it", async () => {
  let touched = false;
  await using key = await newTestKey({
    authenticator: {
      userPresence: ({ command, rpId }) => {
        assertEquals(command, "makeCredential");
        assertEquals(rpId, rpA);
        assertEquals(key.store.read().credentials.length, 0, "nothing stored before the touch");
        touched = true;
        return Promise.resolve(true);
      },
    },
  });
  const seen: KeepaliveStatus[] = [];
  await register(key.client, { rk: true, call: { onKeepalive: (status) => seen.push(status) } });
  assert.ok(touched);
  assert.deepEqual(seen, ["user-presence-needed"]);
  assertEquals(key.store.read().credentials.length, 1);
});

Deno.test("aborting while the key waits for a touch answers KEEPALIVE_CANCEL (0x2D); onKeepalive saw user-presence-needed", async () => {
  let presenceSignal: AbortSignal | undefined;
  await using key = await newTestKey({
    authenticator: {
      userPresence: ({ signal }) => {
        presenceSignal = signal;
        return new Promise<boolean>(() => {}); // the user never touches
      },
    },
  });
  const controller = new AbortController();
  const seen: KeepaliveStatus[] = [];
  const before = structuredClone(key.store.read());
  const { status } = await sendRaw(key.device, makeCredentialBytes(rpA, { options: { rk: true } }), {
    signal: controller.signal,
    onKeepalive: (keepalive) => {
      seen.push(keepalive);
      queueMicrotask(() => controller.abort());
    },
  });
  assertEquals(status, 0x2d);
  assertEquals(status, CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
  assert.deepEqual(seen, ["user-presence-needed"]);
  assert.ok(presenceSignal?.aborted, "the presence check was told to stop waiting");
  assert.deepEqual(key.store.read(), before);

  // Through the client it is a CtapError with that status; and the key works afterwards.
  const again = new AbortController();
  const pending = register(key.client, {
    call: { signal: again.signal, onKeepalive: () => setTimeout(() => again.abort(), 1) },
  });
  await expectStatus(pending, CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
  const working = powerCycle(key);
  await register(working.client);
});

Deno.test("an abort inside the onKeepalive callback itself still cancels the wait for a touch", async () => {
  await using key = await newTestKey({
    authenticator: {
      userPresence: ({ signal }) =>
        new Promise<boolean>((resolve) =>
          signal.addEventListener("abort", () => resolve(true), { once: true })
        ),
    },
  });
  const controller = new AbortController();
  const { status } = await sendRaw(key.device, makeCredentialBytes(), {
    signal: controller.signal,
    onKeepalive: () => controller.abort(),
  });
  assertEquals(status, CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
});

Deno.test("a request whose signal is already aborted is KEEPALIVE_CANCEL without asking for a touch", async () => {
  const presence = touches();
  await using key = await newTestKey({ authenticator: { userPresence: presence.check } });
  const { status } = await sendRaw(key.device, makeCredentialBytes(), { signal: AbortSignal.abort() });
  assertEquals(status, CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
  assertEquals(presence.asked.length, 0);
});

Deno.test("a zero-length pinUvAuthParam (the 'select this key' probe) answers PIN_NOT_SET or PIN_AUTH_INVALID after a touch (CTAP 2.1 §6.1.2 step 1)", async () => {
  const presence = touches();
  await using key = await newTestKey({ authenticator: { userPresence: presence.check } });
  const probe = () =>
    key.client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      pinUvAuthParam: new Uint8Array(0),
      pinUvAuthProtocol: 2,
    });
  const probeAssertion = () =>
    key.client.getAssertion({
      rpId: rpA,
      clientDataHash: randomBytes(32),
      pinUvAuthParam: new Uint8Array(0),
      pinUvAuthProtocol: 2,
    });
  await expectStatus(probe(), CtapStatus.CTAP2_ERR_PIN_NOT_SET);
  await expectStatus(probeAssertion(), CtapStatus.CTAP2_ERR_PIN_NOT_SET);
  assertEquals(presence.asked.map((a) => a.command).join(), "makeCredential,getAssertion");
  await key.client.setPin(pin);
  await expectStatus(probe(), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  await expectStatus(probeAssertion(), CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
  assertEquals(presence.asked.length, 4);
  assertEquals(key.store.read().credentials.length, 0);
  // A refused touch on the probe is OPERATION_DENIED.
  const refusing = powerCycle(key, { userPresence: touches([false]).check });
  await expectStatus(
    refusing.client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      pinUvAuthParam: new Uint8Array(0),
      pinUvAuthProtocol: 2,
    }),
    CtapStatus.CTAP2_ERR_OPERATION_DENIED,
  );
});

Deno.test("selection (CTAP 2.1 §6.9) asks for one touch and answers OK", async () => {
  const presence = touches();
  await using key = await newTestKey({ authenticator: { userPresence: presence.check } });
  await key.client.selection();
  assert.deepEqual(presence.asked, [{ command: "selection" }]);
});

// --- makeCredential option and parameter checks ------------------------------------------------------

Deno.test("makeCredential with options.up=false is INVALID_OPTION; with uv=true INVALID_OPTION (no built-in UV)", async () => {
  await using key = await newTestKey();
  const request = (options: Record<string, boolean>) =>
    key.client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpA },
      user: userNumber(1),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      options,
    });
  await expectStatus(request({ up: false }), CtapStatus.CTAP2_ERR_INVALID_OPTION);
  await expectStatus(request({ uv: true }), CtapStatus.CTAP2_ERR_INVALID_OPTION);
  await expectStatus(request({ rk: true, uv: true }), CtapStatus.CTAP2_ERR_INVALID_OPTION);
  await request({ up: true, uv: false, rk: false });
  assertEquals(key.store.read().credentials.length, 0);
});

Deno.test("makeCredential with enterpriseAttestation is INVALID_PARAMETER (not enterprise attestation capable)", async () => {
  await using key = await newTestKey();
  for (const enterpriseAttestation of [1, 2]) {
    await expectStatus(
      key.client.makeCredential({
        clientDataHash: randomBytes(32),
        rp: { id: rpA },
        user: userNumber(1),
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        enterpriseAttestation,
      }),
      CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
    );
  }
});

Deno.test("a full key store is KEY_STORE_FULL for a new discoverable credential, yet overwrites and non-discoverable work", async () => {
  await using key = await newTestKey({ authenticator: { maxDiscoverableCredentials: 2 } });
  await register(key.client, { rk: true, user: userNumber(1) });
  await register(key.client, { rk: true, user: userNumber(2), rpId: rpB });
  assertEquals((await key.client.getInfo({ refresh: true })).remainingDiscoverableCredentials, 0);
  await expectStatus(
    register(key.client, { rk: true, user: userNumber(3) }),
    CtapStatus.CTAP2_ERR_KEY_STORE_FULL,
  );
  await register(key.client, { rk: true, user: userNumber(1) }); // replaces user 1's credential
  await register(key.client, { rk: false, user: userNumber(3) });
  assertEquals(key.store.read().credentials.length, 2);
});

Deno.test("an unknown command is INVALID_COMMAND; an empty request INVALID_LENGTH; an oversized one REQUEST_TOO_LARGE", async () => {
  await using key = await newTestKey();
  for (const command of [0x00, 0x03, 0x05, 0x09, 0x0c, 0x40, 0x41, 0xbf, 0xff]) {
    assertEquals(
      (await sendRaw(key.device, Uint8Array.of(command))).status,
      CtapStatus.CTAP1_ERR_INVALID_COMMAND,
    );
  }
  const empty = await sendRaw(key.device, new Uint8Array(0));
  assertEquals(empty.status, CtapStatus.CTAP1_ERR_INVALID_LENGTH);
  assertEquals(empty.response.length, 1);
  const huge = await sendRaw(
    key.device,
    concatBytes(Uint8Array.of(CtapCommand.getInfo), new Uint8Array(8000)),
  );
  assertEquals(huge.status, CtapStatus.CTAP2_ERR_REQUEST_TOO_LARGE);
});

Deno.test("the key answers requests one at a time, in arrival order, even while one waits for a touch", async () => {
  await using key = await newTestKey({
    authenticator: {
      userPresence: () => new Promise((resolve) => setTimeout(() => resolve(true), 20)),
    },
  });
  const order: string[] = [];
  const send = (name: string, request: Uint8Array) =>
    key.device.transceive(request).then((response) => {
      assertEquals(response[0], CtapStatus.CTAP2_OK);
      order.push(name);
    });
  await Promise.all([
    send("makeCredential 1", makeCredentialBytes(rpA, { options: { rk: true } })),
    send("getInfo", Uint8Array.of(CtapCommand.getInfo)),
    send("makeCredential 2", makeCredentialBytes(rpB, { options: { rk: true } })),
    send("getPinRetries", encodeRequest(CtapCommand.clientPin, ClientPinRequest, { subCommand: 1 })),
  ]);
  assert.deepEqual(order, ["makeCredential 1", "getInfo", "makeCredential 2", "getPinRetries"]);
  assertEquals(key.store.read().credentials.length, 2);
});

// --- hostile input -----------------------------------------------------------------------------------

const knownCommands = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0a, 0x0b, 0x0d];

/** Checks one answer: a status byte the spec names, never OTHER (an unexpected exception), and a CBOR body only on success. */
function checkAnswer(request: Uint8Array, response: Uint8Array): void {
  const context = `request ${toHex(request.subarray(0, 64))}`;
  assert.ok(response.length >= 1, `${context}: empty response`);
  const status = response[0]!;
  assert.notEqual(
    ctapStatusName(status),
    "UNKNOWN",
    `${context}: status 0x${status.toString(16)} is not a CTAP status`,
  );
  assert.notEqual(
    status,
    CtapStatus.CTAP1_ERR_OTHER,
    `${context}: the key failed unexpectedly (CTAP1_ERR_OTHER)`,
  );
  if (status === CtapStatus.CTAP2_OK) {
    if (response.length > 1) decodeCbor(response.subarray(1));
  } else {
    assertEquals(response.length, 1, `${context}: an error carries no body`);
  }
}

/** A fuzzing key: a PIN and credentials to find, a clock that keeps reset out of its window. */
async function fuzzKey() {
  const clock = manualClock();
  const key = await newTestKey({ pin, authenticator: { now: clock.now, maxDiscoverableCredentials: 50 } });
  const token = await tokenFor(key.client, mc, rpA);
  const registration = await register(key.client, { rk: true, token });
  clock.t += 60_000; // past the reset window, so fuzzed resets cannot wipe the key
  return { key, registration };
}

/** The key still does its job: a normal makeCredential and getAssertion succeed and verify. */
async function stillWorks(key: TestKey, registration: Registration) {
  const fresh = await register(key.client, { rpId: rpB, alg: -8 });
  const { response, clientDataHash } = await authenticate(key.client, { allowList: [registration.id] });
  assert.ok(
    await verifiesWith(registration.publicKey, response.authData, clientDataHash, response.signature),
  );
  assert.ok(fresh.id.length > 0);
}

/** Any CBOR value cborg can encode, nested. */
const anyCbor: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
    fc.constantFrom(0, 1, -1, 23, 24, 255, 256, 65536, 2 ** 32, Number.MAX_SAFE_INTEGER, -7, -8, -25),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string({ maxLength: 40 }),
    fc.uint8Array({ maxLength: 80 }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 12 }), tie("value"), { maxKeys: 4 }),
    fc.array(fc.tuple(fc.integer({ min: -30, max: 30 }), tie("value")), { maxLength: 4 }).map((entries) =>
      new Map(entries)
    ),
  ),
})).value;

/** Structurally valid requests, one per command, as integer-keyed maps. */
function validRequests(
  registration: Registration,
  coseKey: Map<number, unknown>,
): Record<number, Map<number, unknown>> {
  return {
    [CtapCommand.makeCredential]: new Map<number, unknown>([
      [1, randomBytes(32)],
      [2, { id: rpC, name: "C" }],
      [3, { id: utf8("fuzz"), name: "fuzz", displayName: "Fuzz" }],
      [4, [{ type: "public-key", alg: -7 }]],
      [5, [{ type: "public-key", id: registration.id }]],
      [6, { credProtect: 2, "hmac-secret": true }],
      [7, { rk: false }],
      [8, randomBytes(32)],
      [9, 2],
    ]),
    [CtapCommand.getAssertion]: new Map<number, unknown>([
      [1, rpA],
      [2, randomBytes(32)],
      [3, [{ type: "public-key", id: registration.id }]],
      [4, {
        "hmac-secret": new Map<number, unknown>([[1, coseKey], [2, randomBytes(32)], [3, randomBytes(16)]]),
      }],
      [5, { up: true }],
      [6, randomBytes(32)],
      [7, 2],
    ]),
    [CtapCommand.getInfo]: new Map(),
    [CtapCommand.clientPin]: new Map<number, unknown>([
      [1, 2],
      [2, ClientPinSubcommand.getPinUvAuthTokenUsingPinWithPermissions],
      [3, coseKey],
      [4, randomBytes(32)],
      [5, randomBytes(80)],
      [6, randomBytes(32)],
      [9, 3],
      [10, rpA],
    ]),
    [CtapCommand.reset]: new Map(),
    [CtapCommand.getNextAssertion]: new Map(),
    [CtapCommand.credentialManagement]: new Map<number, unknown>([
      [1, CredentialManagementSubcommand.enumerateCredentialsBegin],
      [
        2,
        new Map<number, unknown>([[1, sha256(utf8(rpA))], [2, { type: "public-key", id: registration.id }]]),
      ],
      [3, 2],
      [4, randomBytes(32)],
    ]),
    [CtapCommand.selection]: new Map(),
    [CtapCommand.config]: new Map<number, unknown>([
      [1, ConfigSubcommand.setMinPINLength],
      [2, new Map<number, unknown>([[1, 8], [2, [rpA]], [3, true]])],
      [3, 2],
      [4, randomBytes(32)],
    ]),
  };
}

/** Stands for "leave the field out" among the replacement values. */
const deleted = Symbol("deleted");

/** Replaces the value at a path (a top-level key, then nested keys or indices) with `value`. */
function withReplaced(
  map: Map<number, unknown>,
  path: (number | string)[],
  value: unknown,
): Map<number, unknown> {
  const copy = structuredClone(map);
  let parent: unknown = copy;
  for (const [i, step] of path.entries()) {
    const last = i === path.length - 1;
    if (parent instanceof Map) {
      if (!last) parent = parent.get(step);
      else if (value === deleted) parent.delete(step);
      else parent.set(step, value);
    } else if (Array.isArray(parent) && typeof step === "number") {
      if (!last) parent = parent[step];
      else if (value === deleted) parent.splice(step, 1);
      else parent[step] = value;
    } else if (parent !== null && typeof parent === "object") {
      const record = parent as Record<string | number, unknown>;
      if (!last) parent = record[step];
      else if (value === deleted) delete record[step];
      else record[step] = value;
    } else {
      return copy;
    }
  }
  return copy;
}

/** Paths into the valid requests whose value is worth breaking: every top-level field and the nested ones. */
const fieldPaths: Record<number, (number | string)[][]> = {
  [CtapCommand.makeCredential]: [
    [1],
    [2],
    [2, "id"],
    [2, "name"],
    [3],
    [3, "id"],
    [3, "name"],
    [3, "displayName"],
    [4],
    [4, 0],
    [4, 0, "alg"],
    [4, 0, "type"],
    [5],
    [5, 0],
    [5, 0, "id"],
    [6],
    [6, "credProtect"],
    [6, "hmac-secret"],
    [7],
    [7, "rk"],
    [8],
    [9],
    [10],
    [99],
  ],
  [CtapCommand.getAssertion]: [
    [1],
    [2],
    [3],
    [3, 0],
    [3, 0, "id"],
    [3, 0, "type"],
    [4],
    [4, "hmac-secret"],
    [5],
    [5, "up"],
    [6],
    [7],
  ],
  [CtapCommand.getInfo]: [[1]],
  [CtapCommand.clientPin]: [[1], [2], [3], [3, 1], [3, -2], [3, -3], [4], [5], [6], [9], [10]],
  [CtapCommand.reset]: [[1]],
  [CtapCommand.getNextAssertion]: [[1]],
  [CtapCommand.credentialManagement]: [[1], [2], [2, 1], [2, 2], [2, 2, "id"], [2, 3], [3], [4]],
  [CtapCommand.selection]: [[1]],
  [CtapCommand.config]: [[1], [2], [2, 1], [2, 2], [2, 2, 0], [2, 3], [3], [4]],
};

Deno.test("hostile input: random bytes after each command byte always get a CTAP status, and the key keeps working", async () => {
  const { key, registration } = await fuzzKey();
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...knownCommands),
      fc.uint8Array({ maxLength: 300 }),
      async (command, body) => {
        const request = concatBytes(Uint8Array.of(command), body);
        const response = await key.device.transceive(request);
        checkAnswer(request, response);
      },
    ),
    { numRuns: 1500 },
  );
  await stillWorks(key, registration);
});

Deno.test("hostile input: valid CBOR maps with a wrong-typed field, for each command, always get a CTAP status, and the key keeps working", async () => {
  const { key, registration } = await fuzzKey();
  const coseKey = (await clientPin(key.device, { pinUvAuthProtocol: 2, subCommand: 2 })).keyAgreement!;
  const valid = validRequests(registration, coseKey as Map<number, unknown>);
  const statuses = new Set<number>();
  const cases = fc.constantFrom(...knownCommands).chain((command) =>
    fc.tuple(
      fc.constant(command),
      fc.constantFrom(...fieldPaths[command]!),
      fc.oneof({ weight: 1, arbitrary: fc.constant(deleted) }, { weight: 6, arbitrary: anyCbor }),
    )
  );
  await fc.assert(
    fc.asyncProperty(cases, async ([command, path, value]) => {
      const map = withReplaced(valid[command]!, path, value);
      const request = concatBytes(Uint8Array.of(command), encodeCbor(map));
      const response = await key.device.transceive(request);
      checkAnswer(request, response);
      statuses.add(response[0]!);
    }),
    { numRuns: 1500 },
  );
  // The broken fields were found at every layer: the schema, the presence checks, the PIN/UV auth.
  for (
    const expected of [
      CtapStatus.CTAP2_OK,
      CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
      CtapStatus.CTAP2_ERR_MISSING_PARAMETER,
      CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
    ]
  ) {
    assert.ok(statuses.has(expected), `some input reached ${ctapStatusName(expected)}`);
  }
  await stillWorks(key, registration);
  // And the PIN still works (after a power cycle: fuzzed pinHashEnc may have used this cycle's attempts).
  const cycled = powerCycle(key);
  assertEquals((await cycled.client.getInfo()).options?.["clientPin"], true);
  await tokenFor(cycled.client, mc, rpA);
});

Deno.test("hostile input: arbitrary integer-keyed maps for each command always get a CTAP status, and the key keeps working", async () => {
  const { key, registration } = await fuzzKey();
  const statuses = new Set<number>();
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...knownCommands),
      fc.array(fc.tuple(fc.integer({ min: 0, max: 12 }), anyCbor), { maxLength: 8 }),
      async (command, entries) => {
        const request = concatBytes(Uint8Array.of(command), encodeCbor(new Map(entries)));
        const response = await key.device.transceive(request);
        checkAnswer(request, response);
        statuses.add(response[0]!);
      },
    ),
    { numRuns: 1500 },
  );
  assert.ok(statuses.size >= 4, `the inputs reach several outcomes: ${[...statuses]}`);
  await stillWorks(key, registration);
});

Deno.test("hostile input: each command's valid request, whole, is answered without an unexpected failure", async () => {
  const { key, registration } = await fuzzKey();
  const coseKey = (await clientPin(key.device, { pinUvAuthProtocol: 2, subCommand: 2 })).keyAgreement!;
  const valid = validRequests(registration, coseKey as Map<number, unknown>);
  for (const command of knownCommands) {
    const request = concatBytes(Uint8Array.of(command), encodeCbor(valid[command]!));
    checkAnswer(request, await key.device.transceive(request));
  }
  await stillWorks(key, registration);
});

Deno.test("hostile input: a missing clientDataHash is MISSING_PARAMETER (0x14)", async () => {
  await using key = await newTestKey();
  const map = new Map<number, unknown>([
    [2, { id: rpA }],
    [3, { id: utf8("u") }],
    [4, [{ type: "public-key", alg: -7 }]],
  ]);
  const { status } = await sendRaw(key.device, concatBytes(Uint8Array.of(0x01), encodeCbor(map)));
  assertEquals(status, 0x14);
  const assertion = new Map<number, unknown>([[1, rpA]]);
  assertEquals(
    (await sendRaw(key.device, concatBytes(Uint8Array.of(0x02), encodeCbor(assertion)))).status,
    0x14,
  );
});

Deno.test("hostile input: rp as a string is CBOR_UNEXPECTED_TYPE (0x11); so is a body that is not a map", async () => {
  await using key = await newTestKey();
  const map = new Map<number, unknown>([
    [1, randomBytes(32)],
    [2, rpA],
    [3, { id: utf8("u") }],
    [4, [{ type: "public-key", alg: -7 }]],
  ]);
  assertEquals((await sendRaw(key.device, concatBytes(Uint8Array.of(0x01), encodeCbor(map)))).status, 0x11);
  for (const body of [[1, 2], "text", 7, randomBytes(4)]) {
    assertEquals(
      (await sendRaw(key.device, concatBytes(Uint8Array.of(0x02), encodeCbor(body)))).status,
      0x11,
    );
  }
});

Deno.test("hostile input: truncated CBOR is INVALID_CBOR (0x12), and so are trailing bytes and indefinite lengths", async () => {
  await using key = await newTestKey();
  const valid = makeCredentialBytes();
  for (const cut of [2, 10, valid.length - 1]) {
    assertEquals((await sendRaw(key.device, valid.subarray(0, cut))).status, 0x12, `cut at ${cut}`);
  }
  assertEquals((await sendRaw(key.device, concatBytes(valid, Uint8Array.of(0x00)))).status, 0x12);
  assertEquals((await sendRaw(key.device, Uint8Array.of(0x06, 0xbf, 0x01, 0x01, 0xff))).status, 0x12);
  assertEquals(
    (await sendRaw(key.device, Uint8Array.of(0x06, 0xa2, 0x02, 0x01, 0x02, 0x01))).status,
    0x12,
    "duplicate keys",
  );
  // A deeply nested value is refused or read, never a crash.
  const deep = concatBytes(
    Uint8Array.of(0x02, 0xa1, 0x04),
    new Uint8Array(7000).fill(0x81),
    Uint8Array.of(0x00),
  );
  checkAnswer(deep, await key.device.transceive(deep));
  await register(key.client);
});

Deno.test("hmac-secret (CTAP 2.1 §12.5): getAssertion returns HMAC(credRandom, salt), stable per salt, different with UV", async () => {
  await using key = await newTestKey({ pin });
  const token = await tokenFor(key.client, mc, rpA);
  const registration = await register(key.client, { rk: true, token, extensions: { "hmac-secret": true } });
  assert.deepEqual(registration.authData.extensions, { "hmac-secret": true });

  const salt = randomBytes(32);
  async function hmacOutput(withUv: boolean, salts: Uint8Array) {
    const protocol = pinProtocol(2);
    const { platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, protocol);
    const saltEnc = protocol.encrypt(sharedSecret, salts);
    const clientDataHash = randomBytes(32);
    const uvToken = withUv ? await tokenFor(key.client, ga, rpA) : undefined;
    const response = await key.client.getAssertion({
      rpId: rpA,
      clientDataHash,
      allowList: [registration.descriptor],
      extensions: {
        "hmac-secret": new Map<number, unknown>([
          [1, platformKeyAgreement],
          [2, saltEnc],
          [3, protocol.authenticate(sharedSecret, saltEnc)],
          [4, 2],
        ]),
      },
      ...authWith(uvToken, clientDataHash),
    });
    const output = decodeAuthenticatorData(response.authData).extensions?.["hmac-secret"];
    assert.ok(output instanceof Uint8Array, "the assertion carries an hmac-secret output");
    return protocol.decrypt(sharedSecret, output);
  }
  const first = await hmacOutput(false, salt);
  const again = await hmacOutput(false, salt);
  assertEquals(first.length, 32);
  assertEquals(toHex(first), toHex(again));
  assertEquals(toHex(await hmacOutput(true, salt)) === toHex(first), false);
  const two = await hmacOutput(false, concatBytes(salt, randomBytes(32)));
  assertEquals(two.length, 64);
  assertEquals(toHex(two.subarray(0, 32)), toHex(first));
});

Deno.test("hmac-secret with a forged saltAuth is refused with PIN_AUTH_INVALID before any touch", async () => {
  await using key = await newTestKey();
  const registration = await register(key.client, { extensions: { "hmac-secret": true } });
  const protocol = pinProtocol(2);
  const { platformKeyAgreement, sharedSecret } = await sharedSecretWith(key.device, protocol);
  const saltEnc = protocol.encrypt(sharedSecret, randomBytes(32));
  await expectStatus(
    key.client.getAssertion({
      rpId: rpA,
      clientDataHash: randomBytes(32),
      allowList: [registration.descriptor],
      extensions: {
        "hmac-secret": new Map<number, unknown>([[1, platformKeyAgreement], [2, saltEnc], [
          3,
          randomBytes(32),
        ], [4, 2]]),
      },
    }),
    CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID,
  );
});
