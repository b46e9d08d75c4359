/**
 * The WebAuthn client and the software key end to end, judged by an independent verifier:
 * @simplewebauthn/server checks every registration and assertion we produce.
 */
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from "@simplewebauthn/server";
import { assert, assertEquals, rejects } from "./assert.ts";
import { fromBase64Any, toBase64, toBase64Url } from "../core/bytes.ts";
import { toBase64UrlPaddingDigit } from "../core/webauthn/credential_id_text.ts";
import recordedResponse from "./fixtures/graph-creation-options-recorded.json" with { type: "json" };
import { create } from "../core/webauthn/create.ts";
import { get } from "../core/webauthn/get.ts";
import { WebAuthnError } from "../core/webauthn/errors.ts";
import { newTestKey, scriptedUser, type TestKey } from "./software_key.ts";
import { decodeAuthenticatorData } from "../core/ctap/auth_data.ts";
import { decodeCbor } from "../core/ctap/cbor.ts";

type AuthenticationResponse = Parameters<typeof verifyAuthenticationResponse>[0]["response"];

const rpID = "login.example.com";
const origin = "https://login.example.com";
const allowedRpIds = [rpID];

async function registrationOptions(options: {
  alg: number;
  attestation: "none" | "direct";
  userVerification?: "required" | "preferred" | "discouraged";
  exclude?: string[];
  extensions?: Record<string, unknown>;
}) {
  const json = await generateRegistrationOptions({
    rpName: "Example",
    rpID,
    userName: "alice@example.com",
    userDisplayName: "Alice",
    attestationType: options.attestation,
    supportedAlgorithmIDs: [options.alg],
    authenticatorSelection: {
      residentKey: "required",
      userVerification: options.userVerification ?? "required",
    },
    excludeCredentials: (options.exclude ?? []).map((id) => ({ id })),
    ...(options.extensions ? { extensions: options.extensions } : {}),
  });
  return json;
}

async function register(key: TestKey, options: Parameters<typeof registrationOptions>[0], pin?: string) {
  const json = await registrationOptions(options);
  const response = await create({
    options: json,
    origin,
    allowedRpIds,
    authenticator: key,
    interaction: scriptedUser(pin ? [pin] : []),
  });
  const verification = await verifyRegistrationResponse({
    response: response as Parameters<typeof verifyRegistrationResponse>[0]["response"],
    expectedChallenge: json.challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    requireUserVerification: pin !== undefined,
    supportedAlgorithmIDs: [options.alg],
  });
  return { json, response, verification };
}

async function authenticate(
  key: TestKey,
  credential: { id: string; publicKey: Uint8Array; counter: number },
  pin?: string,
) {
  const json = await generateAuthenticationOptions({
    rpID,
    allowCredentials: [{ id: credential.id }],
    userVerification: pin ? "required" : "discouraged",
  });
  const response = await get({
    options: json,
    origin,
    allowedRpIds,
    authenticator: key,
    interaction: scriptedUser(pin ? [pin] : []),
  });
  return await verifyAuthenticationResponse({
    response: response as AuthenticationResponse,
    expectedChallenge: json.challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    credential: {
      id: credential.id,
      publicKey: credential.publicKey as Uint8Array<ArrayBuffer>,
      counter: credential.counter,
    },
    requireUserVerification: pin !== undefined,
  });
}

for (const attestation of ["none", "direct"] as const) {
  for (const [algName, alg] of [["ES256", -7], ["EdDSA", -8]] as const) {
    for (const pin of [undefined, "482916"]) {
      const name = `registration with ${
        attestation === "direct" ? "packed" : "none"
      } attestation, ${algName}, ${
        pin ? "with" : "without"
      } PIN, verifies; the passkey then signs in and its counter increases`;
      Deno.test(name, async () => {
        await using key = await newTestKey(pin ? { pin } : {});
        const { response, verification } = await register(
          key,
          { alg, attestation, userVerification: pin ? "required" : "discouraged" },
          pin,
        );
        assert.ok(verification.verified);
        const info = verification.registrationInfo!;
        assertEquals(info.fmt, attestation === "direct" ? "packed" : "none");
        assertEquals(info.userVerified, pin !== undefined);
        assertEquals(info.aaguid, "70726f76-6973-696f-6e69-6e67736b0001");
        assertEquals(response.response.publicKeyAlgorithm, alg);
        assert.deepEqual(response.clientExtensionResults.credProps, { rk: true });

        const first = await authenticate(key, info.credential, pin);
        assert.ok(first.verified);
        assert.ok(first.authenticationInfo.newCounter > info.credential.counter);
        const second = await authenticate(
          key,
          { ...info.credential, counter: first.authenticationInfo.newCounter },
          pin,
        );
        assert.ok(second.verified);
        assert.ok(second.authenticationInfo.newCounter > first.authenticationInfo.newCounter);
      });
    }
  }
}

Deno.test("excludeCredentials is honoured: the same key refuses a second passkey for the account", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const { verification } = await register(key, { alg: -7, attestation: "none" }, "482916");
  const error = await rejects(
    () =>
      register(
        key,
        { alg: -7, attestation: "none", exclude: [verification.registrationInfo!.credential.id] },
        "482916",
      ),
    WebAuthnError,
  );
  assertEquals(error.code, "credential-excluded");
});

Deno.test("a long excludeCredentials list is probed in batches and still finds the registered credential", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const { verification } = await register(key, { alg: -7, attestation: "none" }, "482916");
  const others = Array.from(
    { length: 40 },
    (_, i) => btoa(`other-credential-${i}`).replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_"),
  );
  const error = await rejects(
    () =>
      register(key, {
        alg: -7,
        attestation: "none",
        exclude: [...others, verification.registrationInfo!.credential.id],
      }, "482916"),
    WebAuthnError,
  );
  assertEquals(error.code, "credential-excluded");
});

Deno.test("extensions Entra asks for are honoured: credProtect, hmac-secret and credProps", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const { response, verification } = await register(key, {
    alg: -7,
    attestation: "direct",
    extensions: {
      credentialProtectionPolicy: "userVerificationRequired",
      enforceCredentialProtectionPolicy: true,
      hmacCreateSecret: true,
      credProps: true,
    },
  }, "482916");
  assert.ok(verification.verified);
  assert.deepEqual(response.clientExtensionResults, { credProps: { rk: true }, hmacCreateSecret: true });
  const attestationObject = decodeCbor(fromBase64Any(response.response.attestationObject)) as {
    authData: Uint8Array;
  };
  const authData = decodeAuthenticatorData(attestationObject.authData);
  assert.deepEqual(authData.extensions, { credProtect: 3, "hmac-secret": true });
});

Deno.test("a wrong PIN is asked for again, three times at most, then PIN entry is blocked until power-cycle", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const json = await registrationOptions({ alg: -7, attestation: "none" });
  const user = scriptedUser(["000000"]);
  const error = await rejects(
    () => create({ options: json, origin, allowedRpIds, authenticator: key, interaction: user }),
    WebAuthnError,
  );
  assertEquals(error.code, "pin-auth-blocked");
  assertEquals(user.pinPrompts, 3);
  assertEquals((await key.client.getPinRetries()).retries, 5);
});

Deno.test("a PIN-less key refuses userVerification=required with pin-not-set", async () => {
  await using key = await newTestKey();
  const json = await registrationOptions({ alg: -7, attestation: "none", userVerification: "required" });
  const error = await rejects(
    () => create({ options: json, origin, allowedRpIds, authenticator: key, interaction: scriptedUser() }),
    WebAuthnError,
  );
  assertEquals(error.code, "pin-not-set");
});

Deno.test("creation options for an rp id not on the allow-list are refused before the authenticator is touched", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const json = await registrationOptions({ alg: -7, attestation: "none" });
  const before = structuredClone(key.store.read());
  const user = scriptedUser(["482916"]);
  const error = await rejects(
    () =>
      create({
        options: json,
        origin,
        allowedRpIds: ["login.microsoft.com"],
        authenticator: key,
        interaction: user,
      }),
    WebAuthnError,
  );
  assertEquals(error.code, "rp-id-not-allowed");
  assertEquals(user.pinPrompts, 0);
  assert.deepEqual(key.store.read(), before);
});

Deno.test("an origin that the rp id is not a suffix of is refused", async () => {
  await using key = await newTestKey();
  const json = await registrationOptions({ alg: -7, attestation: "none", userVerification: "discouraged" });
  const error = await rejects(
    () =>
      create({
        options: json,
        origin: "https://evil.example.net",
        allowedRpIds,
        authenticator: key,
        interaction: scriptedUser(),
      }),
    WebAuthnError,
  );
  assertEquals(error.code, "rp-id-not-allowed");
});

Deno.test("a discoverable credential signs in without an allowList and returns its user handle", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const { json, verification } = await register(key, { alg: -8, attestation: "none" }, "482916");
  const options = await generateAuthenticationOptions({ rpID, userVerification: "required" });
  const response = await get({
    options,
    origin,
    allowedRpIds,
    authenticator: key,
    interaction: scriptedUser(["482916"]),
  });
  assertEquals(response.response.userHandle, json.user.id);
  const result = await verifyAuthenticationResponse({
    response: response as AuthenticationResponse,
    expectedChallenge: options.challenge,
    expectedOrigin: origin,
    expectedRPID: rpID,
    credential: verification.registrationInfo!.credential,
    requireUserVerification: true,
  });
  assert.ok(result.verified);
});

Deno.test("an unsupported algorithm gives unsupported-algorithm", async () => {
  await using key = await newTestKey();
  const json = await registrationOptions({ alg: -257, attestation: "none", userVerification: "discouraged" });
  const error = await rejects(
    () => create({ options: json, origin, allowedRpIds, authenticator: key, interaction: scriptedUser() }),
    WebAuthnError,
  );
  assertEquals(error.code, "unsupported-algorithm");
});

Deno.test("excludeCredentials still refuses a second passkey when the first was made with hmac-secret (the longest credential ids)", async () => {
  await using key = await newTestKey({ pin: "482916" });
  const { verification } = await register(key, {
    alg: -7,
    attestation: "direct",
    extensions: { hmacCreateSecret: true, credentialProtectionPolicy: "userVerificationOptional" },
  }, "482916");
  const error = await rejects(
    () =>
      register(key, {
        alg: -7,
        attestation: "direct",
        exclude: [verification.registrationInfo!.credential.id],
        extensions: { hmacCreateSecret: true },
      }, "482916"),
    WebAuthnError,
  );
  assertEquals(error.code, "credential-excluded");
});

Deno.test("an exclude list holding this key's credential in any of Graph's three id encodings is refused by the key, never duplicated", async () => {
  // Creation options shaped like the response recorded from a real tenant
  // (test/fixtures/graph-creation-options-recorded.json): rp login.microsoft.com, origin
  // https://login.microsoft.com, a 5 KB JWE challenge, ids in padded standard base64.
  const recorded = structuredClone(recordedResponse) as { publicKey: Record<string, unknown> };
  const graphOrigin = "https://login.microsoft.com";
  const graphRpIds = ["login.microsoft.com"];
  await using key = await newTestKey({ pin: "482916" });
  const first = await create({
    options: { ...recorded, publicKey: { ...recorded.publicKey, excludeCredentials: [] } },
    origin: graphOrigin,
    allowedRpIds: graphRpIds,
    authenticator: key,
    interaction: scriptedUser(["482916"]),
  });
  const credentialId = fromBase64Any(first.id);
  const encodings = {
    "base64url": toBase64Url(credentialId),
    "padded standard base64": toBase64(credentialId),
    "base64url with a padding digit": toBase64UrlPaddingDigit(credentialId),
  };
  for (const [name, id] of Object.entries(encodings)) {
    const error = await rejects(
      () =>
        create({
          options: {
            ...recorded,
            publicKey: {
              ...recorded.publicKey,
              // The recorded ids first (other keys' credentials), then this key's in `name`.
              excludeCredentials: [
                ...(recorded.publicKey["excludeCredentials"] as unknown[]),
                { type: "public-key", id, transports: ["usb"] },
              ],
            },
          },
          origin: graphOrigin,
          allowedRpIds: graphRpIds,
          authenticator: key,
          interaction: scriptedUser(["482916"]),
        }),
      WebAuthnError,
    );
    assertEquals(error.code, "credential-excluded", name);
    assertEquals(key.store.read().credentials.length, 1, `${name}: still one credential on the key`);
  }
});
