/**
 * The in-memory tenant: seeding, group nesting, policy setters, TAP usability, challenges.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { fromBase64Any, toBase64 } from "../../../core/bytes.ts";
import { newTestKey } from "../../../test/software_key.ts";
import { guidFrom, isGuid, seededRandom, seedTenant } from "./tenant.ts";

const isZodError = (error: unknown) => error instanceof z.ZodError;

Deno.test("seeding with the same seed makes the same tenant; users are user0001@domain with GUID ids", () => {
  const a = seedTenant({ users: 30, seed: 5, secrets: "seeded" });
  const b = seedTenant({ users: 30, seed: 5, secrets: "seeded" });
  const c = seedTenant({ users: 30, seed: 6 });
  assert.deepEqual(a.tenant.users(), b.tenant.users());
  assert.equal(a.app.secret, b.app.secret);
  assert.equal(a.admin.password, b.admin.password);
  assert.notDeepEqual(a.tenant.users().map((u) => u.id), c.tenant.users().map((u) => u.id));
  const users = a.tenant.users();
  assert.equal(users.length, 33, "30 users and 3 admin accounts");
  assert.equal(users[0]!.userPrincipalName, "user0001@contoso.sandbox");
  assert.equal(users[29]!.userPrincipalName, "user0030@contoso.sandbox");
  assert.ok(
    users.every((u) => isGuid(u.id) && u.mail.endsWith("@contoso.sandbox") && u.displayName.includes(" ")),
  );
  assert.equal(new Set(users.map((u) => u.mail)).size, users.length);
  assert.equal(a.tenant.userByMail(users[3]!.mail.toUpperCase()), users[3]);
  assert.equal(a.tenant.user(users[3]!.id.toUpperCase()), users[3]);
  assert.equal(
    seedTenant({ users: 10_000, seed: 1 }).tenant.users()[9_999]!.userPrincipalName,
    "user10000@contoso.sandbox",
  );
  assert.throws(() => seedTenant({ users: -1 }), /Cannot seed sandbox tenant/);
});

Deno.test("the admin accounts, apps and on-premises-only account are seeded as documented", () => {
  const seeded = seedTenant({ users: 2, domain: "Fabrikam.Sandbox" });
  assert.equal(seeded.admin.userPrincipalName, "admin@fabrikam.sandbox");
  assert.deepEqual(seeded.admin.directoryRoles, ["Authentication Administrator"]);
  assert.deepEqual(seeded.privilegedAdmin.directoryRoles, ["Privileged Authentication Administrator"]);
  assert.deepEqual(seeded.reader.directoryRoles, []);
  assert.ok(seeded.tenant.isPrivileged(seeded.tenant.user(seeded.privilegedAdmin.objectId)!));
  assert.ok(!seeded.tenant.isPrivileged(seeded.tenant.user(seeded.admin.objectId)!));
  assert.ok(seeded.app.applicationPermissions.includes("UserAuthMethod-Passkey.ReadWrite.All"));
  assert.ok(seeded.app.secret.length >= 30);
  assert.deepEqual(seeded.unprivilegedApp.applicationPermissions, []);
  assert.equal(seeded.tenant.user(seeded.onPremisesOnly.userPrincipalName), undefined, "not in Entra");
  assert.equal(seeded.tenant.onPremisesOnly[0], seeded.onPremisesOnly);
});

Deno.test("transitive members list nested groups and users once, even through a cycle", () => {
  const { tenant, groups } = seedTenant({ users: 12, seed: 2 });
  const members = tenant.transitiveMembers(groups.pilot);
  const ids = members.map((m) => m.kind === "user" ? m.user.id : m.group.id);
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual(
    members.filter((m) => m.kind === "group").map((m) => m.kind === "group" && m.group.displayName),
    ["Passkey pilot - wave 2", "Passkey pilot - wave 3"],
  );
  const users = tenant.users();
  assert.ok(tenant.isMember(users[0]!.id, groups.pilotWave3));
  assert.ok(tenant.isMember(users[4]!.id, groups.pilot), "wave 2 is nested in the pilot");
  assert.ok(!tenant.isMember(users[11]!.id, groups.pilot));
  assert.ok(tenant.isMember(users[11]!.id, "all_users"));
  assert.equal(tenant.transitiveMembers(groups.allUsers).length, 12);
});

Deno.test("policy setters patch what they are given, and refuse what Graph would", () => {
  const { tenant } = seedTenant({ users: 1 });
  const before = tenant.fido2Policy;
  const after = tenant.setFido2Policy({ keyRestrictions: { isEnforced: true } });
  assert.deepEqual(after, { ...before, keyRestrictions: { ...before.keyRestrictions, isEnforced: true } });
  assert.throws(() => tenant.setFido2Policy({ state: "on" as "enabled" }), isZodError);
  assert.throws(() => tenant.setFido2Policy({ keyRestrictions: { aaGuids: ["not-a-guid"] } }), /AAGUID/);
  assert.deepEqual(tenant.fido2Policy, after, "a refused patch changes nothing");

  assert.throws(() => tenant.setTapPolicy({ defaultLifetimeInMinutes: 500 }), /outside 60–480/);
  assert.throws(() => tenant.setTapPolicy({ defaultLength: 7 }), isZodError);
  assert.throws(() => tenant.setTapPolicy({ minimumLifetimeInMinutes: 9 }), isZodError);
  const tap = tenant.setTapPolicy({ minimumLifetimeInMinutes: 10, defaultLifetimeInMinutes: 10 });
  assert.equal(tap.defaultLifetimeInMinutes, 10);
  assert.equal(tap.maximumLifetimeInMinutes, 480);
});

Deno.test("a TAP's usability follows its start, lifetime, one-time use and the policy", () => {
  let now = Date.parse("2026-01-01T00:00:00Z");
  const { tenant } = seedTenant({ users: 1, now: () => now });
  const user = tenant.users()[0]!;
  const tap = {
    id: guidFrom(new Uint8Array(16)),
    temporaryAccessPass: "Abc+2345",
    createdDateTime: new Date(now).toISOString(),
    startDateTime: new Date(now + 60_000).toISOString(),
    lifetimeInMinutes: 60,
    isUsableOnce: true,
    usedDateTime: null,
  };
  tenant.setTemporaryAccessPass(user.id, tap);
  assert.equal(tenant.tapUsability(tap).methodUsabilityReason, "NotYetValid");
  assert.ok(!tenant.redeemTemporaryAccessPass(user.userPrincipalName, tap.temporaryAccessPass));
  now += 120_000;
  assert.deepEqual(tenant.tapUsability(tap), { isUsable: true, methodUsabilityReason: "EnabledByPolicy" });
  assert.ok(!tenant.redeemTemporaryAccessPass(user.userPrincipalName, "wrong"));
  tenant.setTapPolicy({ state: "disabled" });
  assert.equal(tenant.tapUsability(tap).methodUsabilityReason, "DisabledByPolicy");
  tenant.setTapPolicy({ state: "enabled" });
  assert.ok(tenant.redeemTemporaryAccessPass(user.userPrincipalName, tap.temporaryAccessPass));
  assert.equal(tenant.tapUsability(tap).methodUsabilityReason, "OneTimeUsed");
  assert.ok(!tenant.redeemTemporaryAccessPass(user.id, tap.temporaryAccessPass));
  tap.usedDateTime = null;
  now += 60 * 60_000;
  assert.equal(tenant.tapUsability(tap).methodUsabilityReason, "Expired");
  assert.ok(!tenant.deleteTemporaryAccessPass(user.id, "other"));
  assert.ok(tenant.deleteTemporaryAccessPass(user.id, tap.id));
  assert.equal(tenant.temporaryAccessPass(user.id), undefined);
});

Deno.test("a challenge is issued with its expiry and can be taken once", () => {
  let now = 1_000_000;
  const { tenant } = seedTenant({ users: 1, now: () => now });
  const user = tenant.users()[0]!;
  const pending = tenant.issueChallenge(user.id, 5);
  assert.equal(pending.expiresAt - pending.issuedAt, 5 * 60_000);
  assert.match(pending.challenge, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(tenant.pendingChallenges, 1);
  assert.deepEqual(tenant.takeChallenge(pending.challenge), pending);
  assert.equal(tenant.takeChallenge(pending.challenge), undefined);
  // Expired challenges are kept for an hour past expiry (to answer "expired"), then pruned.
  tenant.issueChallenge(user.id, 5);
  now += 2 * 60 * 60_000;
  tenant.issueChallenge(user.id, 5);
  assert.equal(tenant.pendingChallenges, 1);
});

Deno.test("attestation roots are accepted as PEM, DER or base64 DER, and junk is refused", async () => {
  const { tenant } = seedTenant({ users: 1 });
  const key = await newTestKey();
  const root = key.store.read().attestation.rootCertificate;
  tenant.trustAttestationRoot(root);
  const der = fromBase64Any(root);
  tenant.trustAttestationRoot(der);
  tenant.trustAttestationRoot(`-----BEGIN CERTIFICATE-----\n${toBase64(der)}\n-----END CERTIFICATE-----`);
  assert.equal(tenant.trustedAttestationRoots.length, 1, "the same root is trusted once");
  assert.throws(() => tenant.trustAttestationRoot("not a certificate"), /Cannot trust attestation root/);
  tenant.clearTrustedAttestationRoots();
  assert.equal(tenant.trustedAttestationRoots.length, 0);
});

Deno.test("the seeded random source is deterministic and GUIDs carry version 4 bits", () => {
  const a = seededRandom(11);
  const b = seededRandom(11);
  const values = Array.from({ length: 5 }, () => a.next());
  assert.deepEqual(values, Array.from({ length: 5 }, () => b.next()));
  assert.ok(values.every((v) => v >= 0 && v < 1));
  const guid = guidFrom(new Uint8Array(16).fill(0xff));
  assert.equal(guid, "ffffffff-ffff-4fff-bfff-ffffffffffff");
  assert.ok(isGuid(guid));
  assert.ok(!isGuid("user0001@contoso.sandbox"));
});

Deno.test("creationOptions variants rotate through the three id encodings, timeouts 60000 and 0, and three challenge sizes", () => {
  const { tenant } = seedTenant({ users: 1 });
  const variants = Array.from({ length: 6 }, () => tenant.nextCreationOptionsVariant());
  assert.deepEqual(variants.map((v) => v.encoding), [
    "base64url",
    "base64",
    "base64url-padding-digit",
    "base64url",
    "base64",
    "base64url-padding-digit",
  ]);
  assert.deepEqual(variants.map((v) => v.timeout), [60000, 0, 60000, 0, 60000, 0]);
  assert.deepEqual(variants.map((v) => v.challengePaddingBytes), [1800, 0, 12000, 1800, 0, 12000]);
  const fixed = seedTenant({
    users: 1,
    webauthn: { excludeCredentialsEncoding: "base64", timeouts: [60000], challengePaddingBytes: [0] },
  }).tenant;
  assert.deepEqual(fixed.nextCreationOptionsVariant(), {
    encoding: "base64",
    timeout: 60000,
    challengePaddingBytes: 0,
  });
});

Deno.test("a user's handle is opaque, 51 bytes like the recorded one, stable, and different per user and tenant", () => {
  const { tenant } = seedTenant({ users: 2, seed: 1 });
  const [a, b] = tenant.users();
  const handle = tenant.userHandle(a!.id);
  assert.equal(handle.length, 51);
  assert.equal(new TextDecoder().decode(handle.slice(0, 3)), "OF:");
  assert.deepEqual(tenant.userHandle(a!.id), handle);
  assert.notDeepEqual(tenant.userHandle(b!.id), handle);
  assert.ok(!new TextDecoder().decode(handle).includes(a!.userPrincipalName));
  const other = seedTenant({ users: 2, seed: 2 }).tenant;
  assert.notDeepEqual(other.userHandle(a!.id), handle);
});

Deno.test("a sealed challenge is the base64url of a compact JWE, and is taken once like any other", async () => {
  const { tenant } = seedTenant({ users: 1 });
  const user = tenant.users()[0]!;
  const pending = await tenant.sealChallenge(user.id, 5, 1800);
  const jwe = new TextDecoder().decode(fromBase64Any(pending.challenge));
  assert.equal(jwe.split(".").length, 5);
  assert.ok(fromBase64Any(pending.challenge).length > 4000);
  assert.deepEqual(tenant.takeChallenge(pending.challenge), pending);
});
