/**
 * verifyAssertion against the real software key and an independent registration verifier:
 * a genuine test assertion passes for ES256 and EdDSA; a tampered signature, another challenge,
 * another origin and another credential are each refused with a reason.
 */
import { generateAuthenticationOptions, generateRegistrationOptions } from "@simplewebauthn/server";
import { assert, rejects } from "./assert.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { toBase64Url } from "../core/bytes.ts";
import { ProvisioningError } from "../core/errors.ts";
import { create } from "../core/webauthn/create.ts";
import { get } from "../core/webauthn/get.ts";
import { verifyAssertion } from "../core/webauthn/verify_assertion.ts";

const rpId = "login.contoso.example";
const origin = `https://${rpId}`;

for (const [name, alg] of [["ES256", -7], ["EdDSA", -8]] as const) {
  Deno.test(`verifyAssertion: a genuine ${name} test assertion passes; tampered ones are refused`, async () => {
    await using key = await newTestKey();
    const interaction = scriptedUser([]);
    const registration = await create({
      options: await generateRegistrationOptions({
        rpName: "Contoso",
        rpID: rpId,
        userName: "alice@contoso.example",
        supportedAlgorithmIDs: [alg],
        authenticatorSelection: { residentKey: "required", userVerification: "discouraged" },
      }),
      origin,
      allowedRpIds: [rpId],
      authenticator: key,
      interaction,
    });
    const request = await generateAuthenticationOptions({
      rpID: rpId,
      allowCredentials: [{ id: registration.id }],
      userVerification: "discouraged",
    });
    const assertion = await get({
      options: request,
      origin,
      allowedRpIds: [rpId],
      authenticator: key,
      interaction,
    });
    const base = { assertion, registration, challenge: request.challenge, origin, rpId };
    await verifyAssertion(base);

    const signature = new Uint8Array(32).fill(7);
    const tampered = { ...assertion, response: { ...assertion.response, signature: toBase64Url(signature) } };
    for (
      const [what, bad] of [
        ["signature", { ...base, assertion: tampered }],
        ["challenge", { ...base, challenge: toBase64Url(new Uint8Array(32)) }],
        ["origin", { ...base, origin: "https://evil.example" }],
        ["rp id", { ...base, rpId: "contoso.example" }],
        ["credential", { ...base, registration: { ...registration, id: "AAAA", rawId: "AAAA" } }],
      ] as const
    ) {
      const error = await rejects(() => verifyAssertion(bad), ProvisioningError);
      assert.equal(error.code, "assertion-invalid", what);
    }
  });
}
