/**
 * Preflight reads the policies (legacy fields and passkey profiles) and the grants, and says what
 * will fail, errors first. The sandbox tests (../session_test.ts) run it against live policies.
 */
import { assert, assertEquals } from "../../../test/assert.ts";
import { GraphError } from "../errors.ts";
import { preflight, type PreflightInput } from "./policies.ts";
import type { Fido2PolicyJson } from "./schemas.ts";

const softwareKey = {
  label: "software key",
  aaguid: "70726f76-6973-696f-6e69-6e67736b0001",
  attestation: "self",
} as const;
const open: Fido2PolicyJson = {
  state: "enabled",
  isSelfServiceRegistrationAllowed: true,
  isAttestationEnforced: false,
  keyRestrictions: { isEnforced: false, enforcementType: "block", aaGuids: [] },
  includeTargets: [{ id: "all_users", targetType: "group" }],
};

function codes(input: PreflightInput): string[] {
  return preflight(input).map((f) => `${f.severity}:${f.code}`);
}

Deno.test("an open policy and full grants find nothing", () => {
  assert.deepStrictEqual(
    codes({
      path: "api",
      fido2Policy: open,
      authenticator: softwareKey,
      grants: { kind: "application", permissions: ["UserAuthMethod-Passkey.ReadWrite.All", "User.Read.All"] },
    }),
    [],
  );
});

Deno.test("self-service setup off, attestation enforced for a self-attesting key and an AAGUID outside the allow list are errors", () => {
  const found = codes({
    path: "api",
    fido2Policy: {
      ...open,
      isSelfServiceRegistrationAllowed: false,
      isAttestationEnforced: true,
      keyRestrictions: {
        isEnforced: true,
        enforcementType: "allow",
        aaGuids: ["CB69481E-8FF7-4039-93EC-0A2729A154A8"],
      },
    },
    authenticator: softwareKey,
  });
  assert.deepStrictEqual(found, [
    "error:self-service-setup-off",
    "error:attestation-enforced",
    "error:aaguid-not-allowed",
  ]);
});

Deno.test("a blocked AAGUID is an error; an unknown AAGUID or attestation is a warning", () => {
  const blocked = {
    ...open,
    keyRestrictions: { isEnforced: true, enforcementType: "block", aaGuids: [softwareKey.aaguid] },
  };
  assert.deepStrictEqual(codes({ path: "api", fido2Policy: blocked, authenticator: softwareKey }), [
    "error:aaguid-not-allowed",
  ]);
  assert.deepStrictEqual(
    codes({
      path: "api",
      fido2Policy: { ...blocked, isAttestationEnforced: true },
      authenticator: { label: "a key", attestation: "unknown" },
    }),
    ["warning:attestation-enforced", "warning:aaguid-not-allowed"],
  );
  assert.deepStrictEqual(
    codes({
      path: "api",
      fido2Policy: { ...open, isAttestationEnforced: true },
      authenticator: { ...softwareKey, attestation: "trusted" },
    }),
    [],
  );
});

Deno.test("with passkey profiles the default profile decides, not the deprecated policy-wide fields", () => {
  const profiles: Fido2PolicyJson = {
    ...open,
    isAttestationEnforced: false,
    defaultPasskeyProfile: "p-default",
    passkeyProfiles: [
      {
        id: "p-default",
        name: "Default passkey profile",
        passkeyTypes: "synced",
        attestationEnforcement: "registrationOnly",
        keyRestrictions: { isEnforced: true, enforcementType: "allow", aaGuids: [softwareKey.aaguid] },
      },
      { id: "p-pilot", name: "Pilot", passkeyTypes: "deviceBound", attestationEnforcement: "disabled" },
    ],
  };
  const findings = preflight({ path: "api", fido2Policy: profiles, authenticator: softwareKey });
  assert.deepStrictEqual(findings.map((f) => `${f.severity}:${f.code}`), [
    "error:passkey-type-not-allowed",
    "error:attestation-enforced",
    "info:passkey-profiles",
  ]);
  assert.match(findings[1]!.message, /passkey profile "Default passkey profile"/);
});

Deno.test("a disabled method or one without targets is found", () => {
  assert.deepStrictEqual(codes({ path: "api", fido2Policy: { ...open, state: "disabled" } }), [
    "error:fido2-disabled",
  ]);
  assert.deepStrictEqual(codes({ path: "api", fido2Policy: { ...open, includeTargets: [] } }), [
    "warning:fido2-no-targets",
  ]);
});

Deno.test("the browser path checks the TAP policy: disabled, one-time only, lifetime range", () => {
  const tap = {
    state: "enabled",
    isUsableOnce: true,
    minimumLifetimeInMinutes: 60,
    maximumLifetimeInMinutes: 480,
  };
  assert.deepStrictEqual(
    codes({ path: "browser", fido2Policy: open, tapPolicy: tap, tapLifetimeInMinutes: 60 }),
    [],
  );
  assert.deepStrictEqual(codes({ path: "browser", tapPolicy: { ...tap, state: "disabled" } }), [
    "error:tap-disabled",
  ]);
  assert.deepStrictEqual(codes({ path: "browser", tapPolicy: tap, tapIsUsableOnce: false }), [
    "error:tap-disabled",
  ]);
  assert.deepStrictEqual(
    codes({ path: "browser", tapPolicy: { ...tap, isUsableOnce: false }, tapIsUsableOnce: false }),
    [
      "warning:tap-not-one-time",
    ],
  );
  assert.deepStrictEqual(codes({ path: "browser", tapPolicy: tap, tapLifetimeInMinutes: 10 }), [
    "error:tap-disabled",
  ]);
  // The API path does not look at the TAP policy.
  assert.deepStrictEqual(codes({ path: "api", tapPolicy: { ...tap, state: "disabled" } }), []);
});

Deno.test("missing permissions and a missing admin role are errors naming what to grant", () => {
  const app = preflight({ path: "api", grants: { kind: "application", permissions: ["User.Read.All"] } });
  assertEquals(app.length, 1);
  assertEquals(app[0]?.code, "insufficient-privileges");
  assert.match(
    app[0]!.message,
    /UserAuthMethod-Passkey\.ReadWrite\.All or UserAuthenticationMethod\.ReadWrite\.All/,
  );
  const delegated = preflight({
    path: "api",
    grants: {
      kind: "delegated",
      permissions: ["UserAuthenticationMethod.ReadWrite.All"],
      roleTemplateIds: [],
    },
  });
  assert.deepStrictEqual(delegated.map((f) => f.code), ["insufficient-privileges"]);
  assert.match(delegated[0]!.message, /Authentication Administrator/);
  assert.deepStrictEqual(
    preflight({
      path: "api",
      grants: {
        kind: "delegated",
        permissions: ["UserAuthMethod-Passkey.ReadWrite.All"],
        roleTemplateIds: ["c4e39bd9-1100-46d3-8c65-fb160da0071f"],
      },
    }),
    [],
  );
  const browser = codes({
    path: "browser",
    grants: { kind: "application", permissions: ["UserAuthMethod-Passkey.ReadWrite.All"] },
  });
  assert.deepStrictEqual(browser, ["error:insufficient-privileges"]);
});

Deno.test("a policy that cannot be read is a warning, not a failure", () => {
  const denied = new GraphError("insufficient-privileges", "Cannot read the Passkey (FIDO2) policy: denied", {
    endpoint: {
      method: "GET",
      path: "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2",
      version: "v1.0",
    },
    status: 403,
  });
  const findings = preflight({ path: "api", fido2Policy: denied });
  assert.deepStrictEqual(findings.map((f) => `${f.severity}:${f.code}`), ["warning:policy-unreadable"]);
  assert.match(findings[0]!.hint ?? "", /Policy\.Read\.AuthenticationMethod/);
});

Deno.test("a key whose attestation format Graph does not take is an error before anything is created (packed and none only)", () => {
  for (const format of ["packed", "none"]) {
    assert.deepStrictEqual(
      codes({ path: "api", fido2Policy: open, authenticator: { ...softwareKey, attestationFormat: format } }),
      [],
    );
  }
  const findings = preflight({
    path: "api",
    fido2Policy: open,
    authenticator: { label: "security key", attestation: "unknown", attestationFormat: "tpm" },
  });
  assert.deepStrictEqual(findings.map((f) => `${f.severity}:${f.code}`), [
    "error:attestation-format-unsupported",
  ]);
  assert.match(findings[0]!.message, /makes 'tpm' attestation.*only 'packed' and 'none'/);
  // The browser path registers through the Security info page, which the statement does not cover.
  assert.deepStrictEqual(
    codes({
      path: "browser",
      fido2Policy: open,
      authenticator: { label: "k", attestation: "unknown", attestationFormat: "tpm" },
    })
      .filter((c) => c.includes("attestation-format")),
    [],
  );
});
