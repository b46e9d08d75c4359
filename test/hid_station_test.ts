/**
 * The key station end to end against software keys served over their CTAPHID Unix sockets (in
 * place of USB keys): one prepared key per user, a passkey registered and verified by an
 * independent verifier, the forced PIN change applied afterwards, and keys coming back, without
 * PIN support, blocked, or set up before refused.
 */
import assert from "node:assert/strict";
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from "@simplewebauthn/server";
import { type ServedKey, serveKey, withoutPinSupport } from "../authenticators/hid/_test_support.ts";
import type { KeyLocation } from "../authenticators/hid/keys.ts";
import { SecretPin } from "../authenticators/hid/pin_policy.ts";
import { KeyStation, type StationKey } from "../authenticators/hid/station.ts";
import { PinUvAuthPermission } from "../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../core/ctap/status.ts";
import type { Authenticator, UserInteraction } from "../core/plugin.ts";
import { create } from "../core/webauthn/create.ts";
import { get } from "../core/webauthn/get.ts";
import { scriptedUser } from "./software_key.ts";

const rpID = "login.contoso.example";
const origin = `https://${rpID}`;

type RegistrationResponse = Parameters<typeof verifyRegistrationResponse>[0]["response"];
type AuthenticationResponse = Parameters<typeof verifyAuthenticationResponse>[0]["response"];

/** What a provider does with a prepared key: register a passkey, then verify it with an assertion. */
async function registerAndVerify(
  key: { authenticator: Authenticator; interaction: UserInteraction },
  user: string,
  credProtect?: "userVerificationOptionalWithCredentialIDList" | "userVerificationRequired",
) {
  const options = await generateRegistrationOptions({
    rpName: "Contoso",
    rpID,
    userName: user,
    attestationType: "direct",
    authenticatorSelection: { residentKey: "required", userVerification: "required" },
    ...(credProtect
      ? {
        extensions: {
          credentialProtectionPolicy: credProtect,
          enforceCredentialProtectionPolicy: true,
        } as never,
      }
      : {}),
  });
  const registration = await create({ options, origin, allowedRpIds: [rpID], ...key });
  const verified = await verifyRegistrationResponse({
    response: registration as RegistrationResponse,
    expectedChallenge: options.challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    requireUserVerification: true,
  });
  assert.ok(verified.verified);
  const request = await generateAuthenticationOptions({
    rpID,
    allowCredentials: [{ id: registration.id }],
    userVerification: "required",
  });
  const assertion = await get({ options: request, origin, allowedRpIds: [rpID], ...key });
  const info = verified.registrationInfo!;
  const check = await verifyAuthenticationResponse({
    response: assertion as AuthenticationResponse,
    expectedChallenge: request.challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    credential: {
      id: info.credential.id,
      publicKey: info.credential.publicKey,
      counter: info.credential.counter,
    },
    requireUserVerification: true,
  });
  assert.ok(check.verified);
  return registration;
}

/** A desk whose plugged-in keys change poll by poll as the script says. */
function desk(script: KeyLocation[][]) {
  let last: KeyLocation[] = [];
  return {
    polls: 0,
    discover() {
      this.polls++;
      last = script.shift() ?? last;
      return Promise.resolve({ keys: last, skipped: [] });
    },
  };
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-hid-station-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("the station prepares one key per user in parallel, registers and verifies, forces the PIN change after, and refuses a key that comes back", async () => {
  await withDir(async (dir) => {
    await using a = await serveKey(dir, "a");
    await using b = await serveKey(dir, "b");
    await using c = await serveKey(dir, "c");
    const notes: string[] = [];
    const plugged = desk([
      [a.location, b.location], // alice and bob: two keys already plugged in
      [a.location, b.location],
      [a.location, b.location], // carol: both used, "insert a key"
      [b.location], // key a is pulled out...
      [a.location, b.location], // ...and comes back: refused
      [a.location, b.location],
      [a.location, b.location, c.location], // a fresh key
    ]);
    const station = new KeyStation({
      discover: () => plugged.discover(),
      policy: { pin: { kind: "random", length: 8 }, minPinLength: 8, forcePinChange: true },
      rpId: rpID,
      notify: (text) => notes.push(text),
      interaction: scriptedUser(),
      pollIntervalMs: 1,
    });

    const [alice, bob] = await Promise.all([
      station.next({ reference: "alice@contoso.example" }),
      station.next({ reference: "bob@contoso.example" }),
    ]);
    assert.notEqual(alice.authenticator.label, bob.authenticator.label);
    const records = [];
    for (
      const [key, user, protect] of [
        [alice, "alice@contoso.example", "userVerificationOptionalWithCredentialIDList"],
        [bob, "bob@contoso.example", undefined],
      ] as const
    ) {
      await using held: StationKey = key;
      assert.equal(held.report.pinSet, true);
      // The forced PIN change waits: the key must still give PIN tokens for the registration.
      assert.deepEqual(held.report.outcomes.map((o) => [o.feature, o.status]), [
        ["pin", "done"],
        ["min-pin-length", "done"],
        ["force-pin-change", "deferred"],
      ]);
      const registration = await registerAndVerify(held, user, protect);
      records.push(
        await held.complete({
          credentialId: registration.id,
          attestationObject: registration.response.attestationObject,
        }),
      );
    }
    for (const record of records) {
      assert.equal(record.aaguid, "70726f76-6973-696f-6e69-6e67736b0001");
      assert.equal(record.pinSet, true);
      assert.equal(record.pinMustChange, true);
      assert.equal(record.outcomes.find((o) => o.feature === "force-pin-change")?.status, "done");
      assert.match(record.attestationCertificateSerial ?? "", /^[0-9a-f]+$/);
      assert.equal(record.serial, undefined); // no enterprise attestation on the software key
    }
    for (const served of [a, b]) {
      assert.equal((await served.key.client.getInfo({ refresh: true })).forcePINChange, true);
    }
    const aliceDevice = records[0]!.device;
    assert.equal(aliceDevice, a.device);

    const carol = await station.next({ reference: "carol@contoso.example" });
    await using _carol = carol;
    assert.equal(carol.authenticator.label, c.location.label);
    assert.ok(notes.includes("Next: carol@contoso.example. Insert a security key."));
    assert.deepEqual(station.refusals.map((r) => [r.device, r.code]), [[a.device, "key-already-used"]]);
    assert.match(
      station.refusals[0]!.message,
      /already holds the passkey for "login.contoso.example" made for alice@contoso.example in this run/,
    );
    assert.ok(
      notes.some((n) => n.startsWith(`Refused ${a.location.label}:`) && n.endsWith("insert another key.")),
    );
    assert.ok(!notes.join("\n").includes(carol.pin!.reveal()), "a PIN reached the operator's messages");
  });
});

Deno.test("the station refuses keys without PIN support, with a blocked PIN, or set up before, and takes the next good one", async () => {
  await withDir(async (dir) => {
    await using nopin = await serveKey(dir, "nopin", { wrap: withoutPinSupport });
    await using blocked = await serveKey(dir, "blocked", { pin: "83920174" });
    const state = blocked.key.store.read();
    await blocked.key.store.write({ ...state, pin: { ...state.pin!, retries: 0 } });
    await using used = await serveKey(dir, "used", { pin: "58203917" });
    await using good = await serveKey(dir, "good");
    const all: ServedKey[] = [nopin, blocked, used, good];
    const station = new KeyStation({
      discover: () => Promise.resolve({ keys: all.map((k) => k.location), skipped: [] }),
      policy: { pin: { kind: "random" } },
      rpId: rpID,
      notify: () => {},
      interaction: scriptedUser(),
      pollIntervalMs: 1,
    });
    await using erin = await station.next({ reference: "erin@contoso.example" });
    assert.equal(erin.authenticator.label, good.location.label);
    assert.deepEqual(station.refusals.map((r) => [r.device, r.code]), [
      [nopin.device, "pin-unsupported"],
      [blocked.device, "pin-blocked"],
      [used.device, "key-not-fresh"],
    ]);
    assert.match(station.refusals[0]!.message, /cannot hold a PIN/);
  });
});

Deno.test("with a pre-assigned PIN, credential management finds a passkey the silent check cannot see, and the key is refused", async () => {
  await withDir(async (dir) => {
    const pin = "58203917";
    await using dave = await serveKey(dir, "dave", { pin });
    // Provisioned earlier (another run), with a credential only user verification reveals.
    await registerAndVerify(
      { authenticator: dave.key, interaction: scriptedUser([pin]) },
      "dave@contoso.example",
      "userVerificationRequired",
    );
    await using fresh = await serveKey(dir, "fresh");
    const station = new KeyStation({
      discover: () => Promise.resolve({ keys: [dave.location, fresh.location], skipped: [] }),
      policy: { pin: { kind: "random" } },
      rpId: rpID,
      notify: () => {},
      interaction: scriptedUser(),
      pollIntervalMs: 1,
    });
    await using key = await station.next({ reference: "dave@contoso.example", pin });
    assert.equal(key.authenticator.label, fresh.location.label);
    assert.equal(station.refusals[0]?.code, "key-already-used");
    assert.match(
      station.refusals[0]!.message,
      /already holds 1 passkey\(s\) for "login.contoso.example" \(dave@contoso.example\)/,
    );
    // The fresh key got the pre-assigned PIN.
    assert.equal(key.pin?.reveal(), pin);
    const token = await fresh.key.client.getPinToken({
      pin,
      permissions: PinUvAuthPermission.credentialManagement,
    });
    assert.ok(token.token.length > 0);
  });
});

Deno.test("a key handed back unused keeps its PIN known, and the next user gets it with a new PIN", async () => {
  await withDir(async (dir) => {
    await using only = await serveKey(dir, "only");
    const station = new KeyStation({
      discover: () => Promise.resolve({ keys: [only.location], skipped: [] }),
      policy: { pin: { kind: "random" } },
      rpId: rpID,
      notify: () => {},
      interaction: scriptedUser(),
      pollIntervalMs: 1,
    });
    let first: SecretPin | undefined;
    {
      await using failed = await station.next({ reference: "frank@contoso.example" });
      first = failed.pin;
      // The registration failed at the provider: the key is released without complete().
    }
    await using retry = await station.next({ reference: "grace@contoso.example" });
    assert.equal(retry.report.outcomes[0]?.detail, "PIN changed (8 characters)");
    assert.notEqual(retry.pin?.reveal(), first?.reveal());
    await assert.rejects(
      only.key.client.getPinToken({
        pin: first!.reveal(),
        permissions: PinUvAuthPermission.credentialManagement,
      }),
      (error: unknown) => error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_INVALID,
    );
  });
});

Deno.test("Ctrl+C while the station waits for a key ends next() with the abort", async () => {
  const controller = new AbortController();
  const station = new KeyStation({
    discover: () => Promise.resolve({ keys: [], skipped: [] }),
    policy: {},
    rpId: rpID,
    notify: (text) => {
      if (text.includes("Insert a security key")) controller.abort(new Error("Ctrl+C"));
    },
    interaction: scriptedUser(),
    pollIntervalMs: 1,
  });
  await assert.rejects(station.next({ reference: "heidi@contoso.example" }, controller.signal), /Ctrl\+C/);
});
