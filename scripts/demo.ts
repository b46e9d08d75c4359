/**
 * `deno task demo`: the main job end to end on what exists so far. A fresh software key (a real
 * encrypted vault in a temporary folder) gets a PIN, a relying party asks for a passkey, the
 * WebAuthn client creates it on the key, and an independent verifier (@simplewebauthn/server)
 * checks the registration and then a sign-in with it.
 *
 * When the Entra provider lands, this becomes a bulk run against its sandbox on 127.0.0.1.
 *
 * @module
 */
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from "@simplewebauthn/server";
import { openSoftwareKey } from "../authenticators/software/plugin.ts";
import { toBase64Url } from "../core/bytes.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { describeError } from "../core/errors.ts";
import type { PluginContext } from "../core/plugin.ts";
import { create } from "../core/webauthn/create.ts";
import { get } from "../core/webauthn/get.ts";

const rpID = "demo.provisioning.test";
const origin = `https://${rpID}`;
const say = (text: string) => console.log(text);

async function demo(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-demo-" });
  try {
    const pin = String(100000 + crypto.getRandomValues(new Uint32Array(1))[0]! % 900000);
    const passphrase = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
    const context: PluginContext = {
      interaction: { requestPin: () => Promise.resolve(pin), promptUserPresence: () => {} },
      env: () => undefined,
      readSecret: () => Promise.resolve(passphrase),
    };
    const vault = `${dir}/demo-key.vault`;
    say(`1. Creating a software FIDO2 key in ${vault} (encrypted at rest)`);
    await using key = await openSoftwareKey(context, { vault, kdfIterations: 100_000 });
    const client = new Ctap2Client(key.device);
    await client.setPin(pin);
    const info = await client.getInfo();
    say(`   ${info.versions.join(", ")}; PIN set; ${info.remainingDiscoverableCredentials} passkeys fit`);

    say(`2. The relying party "${rpID}" asks for a passkey for alice@contoso.com`);
    const registrationOptions = await generateRegistrationOptions({
      rpName: "Provisioning demo",
      rpID,
      userName: "alice@contoso.com",
      userDisplayName: "Alice Smith",
      attestationType: "direct",
      authenticatorSelection: { residentKey: "required", userVerification: "required" },
      extensions: { credProps: true },
    });

    say("3. The WebAuthn client creates it on the software key (PIN verified, packed attestation)");
    const registration = await create({
      options: registrationOptions,
      origin,
      allowedRpIds: [rpID],
      authenticator: key,
      interaction: context.interaction,
    });
    say(`   credential id ${registration.id}`);

    say("4. An independent verifier (@simplewebauthn/server) checks the registration");
    const verified = await verifyRegistrationResponse({
      response: registration as Parameters<typeof verifyRegistrationResponse>[0]["response"],
      expectedChallenge: registrationOptions.challenge,
      expectedOrigin: origin,
      expectedRPID: rpID,
      requireUserVerification: true,
    });
    if (!verified.verified) throw new Error("the verifier rejected the registration");
    const { credential, fmt, aaguid, userVerified } = verified.registrationInfo;
    say(`   verified: ${fmt} attestation, AAGUID ${aaguid}, user verified: ${userVerified}`);

    say("5. Signing in with the new passkey, checked by the same verifier");
    const authenticationOptions = await generateAuthenticationOptions({ rpID, userVerification: "required" });
    const assertion = await get({
      options: authenticationOptions,
      origin,
      allowedRpIds: [rpID],
      authenticator: key,
      interaction: context.interaction,
    });
    const signedIn = await verifyAuthenticationResponse({
      response: assertion as Parameters<typeof verifyAuthenticationResponse>[0]["response"],
      expectedChallenge: authenticationOptions.challenge,
      expectedOrigin: origin,
      expectedRPID: rpID,
      credential,
      requireUserVerification: true,
    });
    if (!signedIn.verified) throw new Error("the verifier rejected the sign-in");
    say(`   verified: signature counter ${credential.counter} -> ${signedIn.authenticationInfo.newCounter}`);
    say("Done: one passkey created, verified, and used.");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

try {
  await demo();
} catch (error) {
  console.error(`Demo failed: ${describeError(error)}`);
  Deno.exit(1);
}
