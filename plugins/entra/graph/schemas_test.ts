/**
 * The response schemas read Graph's documented shapes. The bodies follow the example responses
 * of the Microsoft Learn pages cited in schemas.ts (values changed, shapes kept), and one
 * creationOptions answer as a real tenant sent it (rp.id "login.microsoft.com", padded standard
 * base64 in excludeCredentials), as recorded in DSInternals.Passkeys' tests.
 */
import { assert, assertEquals } from "../../../test/assert.ts";
import { parseCreationOptions } from "../../../core/webauthn/json.ts";
import recordedResponse from "../../../test/fixtures/graph-creation-options-recorded.json" with {
  type: "json",
};
import {
  collectionSchema,
  creationOptionsResponseSchema,
  fido2MethodSchema,
  fido2PolicySchema,
  tapMethodSchema,
  tapPolicySchema,
  userSchema,
} from "./schemas.ts";

/** Shaped like the v1.0 creationOptions page's example response. */
const documentedCreationOptions = {
  "@odata.type": "#microsoft.graph.webauthnCredentialCreationOptions",
  challengeTimeoutDateTime: "2026-04-20T10:05:00Z",
  publicKey: {
    "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions",
    rp: {
      "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialRpEntity",
      id: "login.microsoftonline.com",
      name: "Microsoft",
    },
    user: {
      "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialUserEntity",
      id: "Y2Fyb2xAY29udG9zby5jb20",
      displayName: "Carol Jones",
      name: "carol@contoso.com",
    },
    challenge: "Q0hBTExFTkdFLTAwMDAtMTExMS0yMjIy",
    pubKeyCredParams: [{
      "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialParameters",
      type: "public-key",
      alg: -7,
    }],
    timeout: 60000,
    excludeCredentials: [],
    authenticatorSelection: {
      "@odata.type": "#microsoft.graph.webauthnAuthenticatorSelectionCriteria",
      authenticatorAttachment: "platform",
      requireResidentKey: true,
      userVerification: "required",
    },
    attestation: "direct",
    extensions: { "@odata.type": "#microsoft.graph.webauthnAuthenticationExtensionsClientInputs" },
  },
};

/** A tenant's answer with rp.id login.microsoft.com and padded standard base64 credential ids. */
const tenantCreationOptions = {
  "@odata.context":
    "https://graph.microsoft.com/beta/$metadata#microsoft.graph.webauthnCredentialCreationOptions",
  challengeTimeoutDateTime: "2024-06-13T11:26:35Z",
  publicKey: {
    rp: { id: "login.microsoft.com", name: "Microsoft" },
    user: { id: "dXNlci1oYW5kbGUtMDE", name: "dan@contoso.com", displayName: "Dan Park" },
    challenge: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
    pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
    timeout: 60000,
    excludeCredentials: [
      { type: "public-key", id: "+/7+/f8AAQ==", transports: [] },
      { type: "public-key", id: "-_7-_f8AAQ", transports: ["usb", "nfc"] },
    ],
    authenticatorSelection: {
      authenticatorAttachment: "cross-platform",
      requireResidentKey: true,
      userVerification: "required",
    },
    attestation: "direct",
    extensions: {
      hmacCreateSecret: true,
      enforceCredentialProtectionPolicy: true,
      credentialProtectionPolicy: "userVerificationOptional",
    },
  },
};

Deno.test("creationOptions as documented parses and keeps the whole publicKey for the WebAuthn client", () => {
  const parsed = creationOptionsResponseSchema.parse(documentedCreationOptions);
  assertEquals(parsed.publicKey.rp.id, "login.microsoftonline.com");
  assertEquals(parsed.challengeTimeoutDateTime, "2026-04-20T10:05:00Z");
  // looseObject keeps what the client reads later.
  assertEquals((parsed.publicKey as Record<string, unknown>)["attestation"], "direct");
  const options = parseCreationOptions(parsed);
  assertEquals(options.rp.id, "login.microsoftonline.com");
  assertEquals(options.authenticatorSelection?.requireResidentKey, true);
});

Deno.test("excludeCredentials ids in padded base64 and in base64url decode to the same bytes", () => {
  const parsed = creationOptionsResponseSchema.parse(tenantCreationOptions);
  assertEquals(parsed.publicKey.rp.id, "login.microsoft.com");
  const options = parseCreationOptions(parsed);
  const [padded, url] = options.excludeCredentials ?? [];
  assert.ok(padded && url);
  assert.deepStrictEqual([...padded.id], [0xfb, 0xfe, 0xfe, 0xfd, 0xff, 0x00, 0x01]);
  assert.deepStrictEqual([...url.id], [...padded.id]);
  assertEquals(options.extensions?.credentialProtectionPolicy, "userVerificationOptional");
});

Deno.test("the creationOptions response recorded from a real tenant (a 6,931-character challenge) parses end to end", () => {
  // Before issue 11 the WebAuthn client refused it (challenges were cut at 1,024 bytes), and the
  // schema would have cut any challenge past 8,192 characters; both now follow the 64 KiB cap.
  const parsed = creationOptionsResponseSchema.parse(recordedResponse);
  assertEquals(parsed.publicKey.challenge.length, 6931);
  const options = parseCreationOptions(parsed);
  assertEquals(options.challenge.length, 5198);
  assertEquals(options.excludeCredentials?.length, 4);
});

Deno.test("creationOptions without publicKey or challenge is refused, naming the field", () => {
  const result = creationOptionsResponseSchema.safeParse({
    challengeTimeoutDateTime: "2026-04-20T10:05:00Z",
  });
  assert.ok(!result.success);
  assertEquals(result.error.issues[0]?.path.join("."), "publicKey");
  const noChallenge = structuredClone(tenantCreationOptions) as { publicKey: Record<string, unknown> };
  delete noChallenge.publicKey["challenge"];
  const refused = creationOptionsResponseSchema.safeParse(noChallenge);
  assert.ok(!refused.success);
  assertEquals(refused.error.issues[0]?.path.join("."), "publicKey.challenge");
});

Deno.test("the 201 answer to POST fido2Methods parses, passkeyType included", () => {
  const method = fido2MethodSchema.parse({
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
    id: "73e4b2c6-8a2f-4d3e-9b1a-5c7d8e9f0a1b",
    displayName: "Front desk key",
    createdDateTime: "2026-04-20T10:15:30Z",
    aaGuid: "de1e552d-db1d-4423-a619-566b625cdc84",
    model: "Security Key NFC by Yubico",
    attestationCertificates: [],
    attestationLevel: "attested",
    passkeyType: "deviceBound",
  });
  assertEquals(method.aaGuid, "de1e552d-db1d-4423-a619-566b625cdc84");
  assertEquals(method.passkeyType, "deviceBound");
});

Deno.test("a fido2 method list page with null properties and a next link parses", () => {
  const page = collectionSchema(fido2MethodSchema).parse({
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/authentication/fido2Methods",
    value: [{
      id: "m1",
      displayName: null,
      createdDateTime: null,
      aaGuid: null,
      model: null,
      attestationCertificates: null,
    }],
    "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/x/authentication/fido2Methods?$skiptoken=abc",
  });
  assertEquals(page.value[0]?.id, "m1");
  assert.ok(page["@odata.nextLink"]?.includes("$skiptoken"));
});

Deno.test("a method without an id is refused", () => {
  assert.ok(!fido2MethodSchema.safeParse({ displayName: "x" }).success);
  assert.ok(!fido2MethodSchema.safeParse({ id: "" }).success);
});

Deno.test("the TAP create answer parses; the pass is there only on creation", () => {
  const created = tapMethodSchema.parse({
    "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
    id: "6f1967b7-15e8-4935-ac26-d50770ed07a7",
    temporaryAccessPass: "+drkzqAD",
    createdDateTime: "2022-06-02T16:21:09.765173Z",
    startDateTime: "2022-06-05T00:00:00Z",
    lifetimeInMinutes: 60,
    isUsableOnce: false,
    isUsable: false,
    methodUsabilityReason: "NotYetValid",
  });
  assertEquals(created.lifetimeInMinutes, 60);
  const listed = tapMethodSchema.parse({ id: "6f1967b7", temporaryAccessPass: null, isUsableOnce: true });
  assertEquals(listed.temporaryAccessPass, null);
});

Deno.test("the FIDO2 policy parses in its legacy form and with passkey profiles", () => {
  const legacy = fido2PolicySchema.parse({
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#authenticationMethodConfigurations/$entity",
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
    id: "Fido2",
    state: "disabled",
    isSelfServiceRegistrationAllowed: true,
    isAttestationEnforced: true,
    keyRestrictions: { isEnforced: false, enforcementType: "block", aaGuids: [] },
    includeTargets: [{ targetType: "group", id: "all_users", isRegistrationRequired: false }],
    excludeTargets: [],
  });
  assertEquals(legacy.isAttestationEnforced, true);
  const profiles = fido2PolicySchema.parse({
    id: "Fido2",
    state: "enabled",
    isSelfServiceRegistrationAllowed: true,
    defaultPasskeyProfile: "00000000-0000-0000-0000-000000000001",
    passkeyProfiles: [{
      id: "00000000-0000-0000-0000-000000000001",
      name: "Default passkey profile",
      passkeyTypes: "deviceBound,synced",
      attestationEnforcement: "disabled",
      keyRestrictions: { isEnforced: false, enforcementType: "allow", aaGuids: [] },
    }],
  });
  assertEquals(profiles.passkeyProfiles?.[0]?.passkeyTypes, "deviceBound,synced");
});

Deno.test("the TAP policy and a user parse", () => {
  const policy = tapPolicySchema.parse({
    "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
    id: "TemporaryAccessPass",
    state: "enabled",
    defaultLifetimeInMinutes: 60,
    defaultLength: 8,
    minimumLifetimeInMinutes: 60,
    maximumLifetimeInMinutes: 480,
    isUsableOnce: false,
    includeTargets: [{ id: "all_users", isRegistrationRequired: false, targetType: "group" }],
  });
  assertEquals(policy.maximumLifetimeInMinutes, 480);
  const user = userSchema.parse({
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,userPrincipalName)/$entity",
    id: "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
    userPrincipalName: "AdeleV@contoso.com",
    displayName: "Adele Vance",
    mail: null,
  });
  assertEquals(user.mail, null);
  assert.ok(!userSchema.safeParse({ displayName: "no id" }).success);
});
