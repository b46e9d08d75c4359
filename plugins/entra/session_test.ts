/**
 * The Entra session and the API provisioning path against the sandbox tenant over real HTTP:
 * the real plugin code, only the base URL differs. Each sharp edge of issue 3 and each reason
 * code has a test here. Requests are captured by a fetch wrapper that forwards to the sandbox.
 */
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { newTestKey, scriptedUser } from "../../test/software_key.ts";
import { fromBase64Any, toBase64Url } from "../../core/bytes.ts";
import { decodeAuthenticatorData } from "../../core/ctap/auth_data.ts";
import { decodeCbor } from "../../core/ctap/cbor.ts";
import { ProvisioningError } from "../../core/errors.ts";
import { parseCreationOptions } from "../../core/webauthn/json.ts";
import { cloudFromSandbox } from "./cloud.ts";
import { GraphError } from "./errors.ts";
import { GraphClient, type GraphClientOptions } from "./graph/client.ts";
import { provisionUser, UserProvisioningError } from "../../core/jobs/provision_user.ts";
import { EntraSession } from "./session.ts";
import { type Sandbox, type SandboxOptions, startSandbox } from "./sandbox/server.ts";

const pin = "246810";

interface Captured {
  method: string;
  url: URL;
  body: string | undefined;
}

interface HarnessOptions {
  sandbox?: SandboxOptions;
  /** Who signs in. @default "app" (client credentials) */
  as?: "app" | "unprivileged-app" | "admin";
  /** rp ids the session accepts besides the sandbox host. @default the sandbox's rp id */
  extraRpIds?: string[];
  client?: Partial<GraphClientOptions>;
  signedInUserId?: string;
  /** Called for every request before it is forwarded; may throw to simulate a lost answer. */
  intercept?: (captured: Captured, response: Response) => Response | Promise<Response>;
}

/** A sandbox, a clock it shares with the client's sleep, a session, and the requests it saw. */
async function harness(options: HarnessOptions = {}) {
  const clock = { offset: 0 };
  const sandbox: Sandbox = await startSandbox({
    users: 6,
    now: () => Date.now() + clock.offset,
    ...options.sandbox,
  });
  const requests: Captured[] = [];
  const delays: number[] = [];
  const token = await signIn(sandbox, options.as ?? "app");
  const capturing: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const captured = {
      method: init?.method ?? "GET",
      url,
      body: typeof init?.body === "string" ? init.body : undefined,
    };
    requests.push(captured);
    const response = await fetch(input, init);
    return options.intercept ? await options.intercept(captured, response) : response;
  };
  const client = new GraphClient({
    baseUrl: sandbox.url,
    token: () => Promise.resolve(token),
    fetch: capturing,
    sleep: (ms) => {
      delays.push(ms);
      clock.offset += ms; // the sandbox's windows refill as the client waits
      return Promise.resolve();
    },
    ...options.client,
  });
  const rpId = options.sandbox?.webauthn?.rpId ?? "login.microsoft.com";
  const cloud = cloudFromSandbox(sandbox.url, { extraRpIds: options.extraRpIds ?? [rpId] });
  const session = new EntraSession({
    client,
    cloud,
    ...(options.signedInUserId ? { signedInUserId: options.signedInUserId } : {}),
  });
  const users = sandbox.inspect().users.filter((u) => /^user\d+@/.test(u.userPrincipalName));
  return {
    sandbox,
    session,
    client,
    requests,
    delays,
    clock,
    users,
    async [Symbol.asyncDispose]() {
      await session[Symbol.asyncDispose]();
      await sandbox.close();
    },
  };
}

/** An access token from the sandbox's token endpoint: client credentials, or device code for the admin. */
async function signIn(sandbox: Sandbox, as: "app" | "unprivileged-app" | "admin"): Promise<string> {
  const tokenUrl = `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`;
  const post = async (url: string, form: Record<string, string>) => {
    const response = await fetch(url, { method: "POST", body: new URLSearchParams(form) });
    const body = await response.json();
    assertEquals(response.status, 200, JSON.stringify(body));
    return body as Record<string, string>;
  };
  const app = as === "unprivileged-app" ? sandbox.seeded.unprivilegedApp : sandbox.app;
  const secret = "secret" in app ? app.secret : sandbox.app.clientSecret;
  const clientId = app.clientId;
  if (as !== "admin") {
    const body = await post(tokenUrl, {
      grant_type: "client_credentials",
      client_id: clientId,
      client_secret: secret,
      scope: "https://graph.microsoft.com/.default",
    });
    return body["access_token"]!;
  }
  const started = await post(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/devicecode`, {
    client_id: clientId,
    scope: "https://graph.microsoft.com/.default",
  });
  const approved = await fetch(`${sandbox.url}/_sandbox/device/approve`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      user_code: started["user_code"],
      userPrincipalName: sandbox.admin.userPrincipalName,
      password: sandbox.admin.password,
    }),
  });
  await approved.body?.cancel();
  const body = await post(tokenUrl, {
    grant_type: "urn:ietf:params:oauth:grant-type:device_code",
    client_id: clientId,
    client_secret: secret,
    device_code: started["device_code"]!,
  });
  return body["access_token"]!;
}

/** Changes the sandbox's method policies over its HTTP control endpoint. */
async function setPolicy(sandbox: Sandbox, change: Record<string, unknown>): Promise<void> {
  const response = await fetch(`${sandbox.url}/_sandbox/policy`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(change),
  });
  assertEquals(response.status, 200, await response.text());
}

function posts(requests: Captured[]): Captured[] {
  return requests.filter((r) => r.method === "POST" && r.url.pathname.endsWith("/fido2Methods"));
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

Deno.test("resolves a user by UPN, by mail and by object id", async () => {
  await using h = await harness();
  const target = h.sandbox.tenant.users().find((u) => u.userPrincipalName === h.users[1]!.userPrincipalName)!;
  const byUpn = await h.session.resolveUser(target.userPrincipalName);
  assertEquals(byUpn.id, target.id);
  assertEquals(byUpn.displayName, target.displayName);
  const byMail = await h.session.resolveUser(target.mail);
  assertEquals(byMail.userPrincipalName, target.userPrincipalName);
  assert.ok(h.requests.some((r) => r.url.searchParams.get("$filter") === `mail eq '${target.mail}'`));
  const byId = await h.session.resolveUser(target.id);
  assertEquals(byId.userPrincipalName, target.userPrincipalName);
  assert.ok(h.requests.every((r) => (r.url.searchParams.get("$select") ?? "").includes("userPrincipalName")));
});

Deno.test("an object id names a user without a request (userFromReference); its creation options name the user in user.name (the sandbox: the UPN)", async () => {
  await using h = await harness();
  const target = h.sandbox.tenant.users().find((u) => u.userPrincipalName === h.users[1]!.userPrincipalName)!;
  const before = h.requests.length;
  const user = h.session.userFromReference(` ${target.id.toUpperCase()} `);
  assertEquals(user?.id, target.id.toLowerCase());
  assertEquals(h.session.userFromReference(target.userPrincipalName), undefined);
  assertEquals(h.session.userFromReference(target.mail), undefined);
  assertEquals(h.requests.length, before, "no request");
  // What the engine reads the UPN from (Graph's webauthnCreationOptions: publicKey.user.name).
  const challenge = await h.session.creationOptions(user!);
  assertEquals(parseCreationOptions(challenge.options).user.name, target.userPrincipalName);
});

Deno.test("an unknown user and an on-premises-only account are user-not-found, naming the reference", async () => {
  await using h = await harness();
  for (const reference of ["nobody@contoso.sandbox", h.sandbox.seeded.onPremisesOnly.userPrincipalName]) {
    const error = await rejects(h.session.resolveUser(reference), GraphError);
    assertEquals(error.code, "user-not-found");
    assert.match(
      error.message,
      new RegExp(`^Cannot look up user "${reference.replaceAll(".", "\\.")}": no user has`),
    );
  }
});

Deno.test("listGroupMembers gives a group's users by name or id, nested groups' users once; an unknown name is group-not-found", async () => {
  await using h = await harness();
  const byName = [];
  for await (const user of h.session.listGroupMembers("Passkey pilot")) byName.push(user);
  assertEquals(
    byName.map((u) => u.userPrincipalName).sort().join(),
    h.users.map((u) => u.userPrincipalName).sort().join(),
  );
  const byId = [];
  for await (const user of h.session.listGroupMembers(h.sandbox.seeded.groups.pilot)) byId.push(user.id);
  assertEquals(byId.join(), byName.map((u) => u.id).join());
  const missing = await rejects(async () => {
    for await (const _ of h.session.listGroupMembers("Nobody's group")) { /* nothing */ }
  }, ProvisioningError);
  assertEquals(missing.code, "group-not-found");
  assert.match(missing.message, /^Cannot look up group "Nobody's group": no group has this display name$/);
});

// ---------------------------------------------------------------------------------------------
// The API path end to end
// ---------------------------------------------------------------------------------------------

Deno.test("provisions a user end to end with a software key; the passkey is listed and verified", async () => {
  await using h = await harness();
  const key = await newTestKey({ pin });
  const interaction = scriptedUser([pin]);
  const upn = h.users[0]!.userPrincipalName;
  const result = await provisionUser({
    session: h.session,
    user: upn,
    authenticator: key,
    interaction,
    displayName: "Front desk key",
  });
  assertEquals(result.user.userPrincipalName, upn);
  assertEquals(result.aaguid, "70726f76-6973-696f-6e69-6e67736b0001");
  assertEquals(result.reconciled, false);
  assert.match(result.credentialId, /^[A-Za-z0-9_-]+$/);
  const listed = await h.session.listPasskeys(result.user);
  assert.deepStrictEqual(listed.map((m) => [m.id, m.displayName, m.aaguid]), [[
    result.methodId,
    "Front desk key",
    result.aaguid,
  ]]);
  const inspected = h.sandbox.inspect().users.find((u) => u.userPrincipalName === upn)!;
  assertEquals(inspected.passkeys.length, 1);
  assertEquals(inspected.passkeys[0]?.verified, true);
  assertEquals(interaction.pinPrompts, 1);
});

Deno.test("the registration POST carries no @odata.type, only the documented members", async () => {
  await using h = await harness();
  const key = await newTestKey({ pin });
  await provisionUser({
    session: h.session,
    user: h.users[0]!.userPrincipalName,
    authenticator: key,
    interaction: scriptedUser([pin]),
    displayName: "Key",
  });
  const [post] = posts(h.requests);
  assert.ok(post?.body);
  assert.ok(!post.body.includes("@odata"), post.body);
  const body = JSON.parse(post.body);
  assert.deepStrictEqual(Object.keys(body), ["displayName", "publicKeyCredential"]);
  assert.deepStrictEqual(Object.keys(body.publicKeyCredential), ["id", "response", "clientExtensionResults"]);
  assert.deepStrictEqual(Object.keys(body.publicKeyCredential.response), [
    "clientDataJSON",
    "attestationObject",
  ]);
  for (const value of [body.publicKeyCredential.id, ...Object.values(body.publicKeyCredential.response)]) {
    assert.match(String(value), /^[A-Za-z0-9_-]+$/, "unpadded base64url");
  }
});

Deno.test("display names of 0 or 31 characters are refused before Graph or the key is touched; 30 pass", async () => {
  await using h = await harness();
  const key = await newTestKey({ pin });
  const interaction = scriptedUser([pin]);
  const user = await h.session.resolveUser(h.users[0]!.userPrincipalName);
  const before = h.requests.length;
  for (const displayName of ["", "   ", "x".repeat(31)]) {
    const error = await rejects(
      provisionUser({ session: h.session, user, authenticator: key, interaction, displayName }),
      ProvisioningError,
    );
    assertEquals(error.code, "display-name-invalid");
    assert.ok(error.message.includes(user.userPrincipalName), error.message);
  }
  assertEquals(h.requests.length, before, "no Graph call");
  assertEquals(interaction.pinPrompts, 0, "the key was not asked");
  const ok = await provisionUser({
    session: h.session,
    user,
    authenticator: key,
    interaction,
    displayName: "y".repeat(30),
  });
  assert.ok(ok.methodId);
});

Deno.test("rp.id is read from the response: a tenant answering login.microsoftonline.com gets that rp id and origin", async () => {
  await using h = await harness({
    sandbox: { webauthn: { rpId: "login.microsoftonline.com" } },
    extraRpIds: ["login.microsoft.com", "login.microsoftonline.com"],
  });
  const key = await newTestKey({ pin });
  const result = await provisionUser({
    session: h.session,
    user: h.users[0]!.userPrincipalName,
    authenticator: key,
    interaction: scriptedUser([pin]),
    displayName: "Key",
  });
  assert.ok(result.methodId);
  const body = JSON.parse(posts(h.requests)[0]!.body!);
  const clientData = JSON.parse(
    new TextDecoder().decode(fromBase64Any(body.publicKeyCredential.response.clientDataJSON)),
  );
  assertEquals(clientData.origin, "https://login.microsoftonline.com");
  const attestation = decodeCbor(fromBase64Any(body.publicKeyCredential.response.attestationObject)) as {
    authData: Uint8Array;
  };
  const rpIdHash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode("login.microsoftonline.com")),
  );
  assert.deepStrictEqual([...decodeAuthenticatorData(attestation.authData).rpIdHash], [...rpIdHash]);
});

Deno.test("creation options with an rp.id off the allow-list are refused before the key is touched, naming the user", async () => {
  await using h = await harness({ sandbox: { webauthn: { rpId: "login.contoso.example" } }, extraRpIds: [] });
  const key = await newTestKey({ pin });
  const interaction = scriptedUser([pin]);
  const upn = h.users[0]!.userPrincipalName;
  const error = await rejects(
    provisionUser({ session: h.session, user: upn, authenticator: key, interaction, displayName: "Key" }),
    UserProvisioningError,
  );
  assertEquals(error.code, "rp-id-not-allowed");
  assertEquals(error.step, "authenticator");
  assert.match(
    error.message,
    new RegExp(
      `^Cannot provision a passkey for ${upn.replaceAll(".", "\\.")}: .*"login\\.contoso\\.example"`,
    ),
  );
  assertEquals(posts(h.requests).length, 0);
  assertEquals(interaction.pinPrompts + interaction.touchPrompts, 0);
  assertEquals(key.store.read().credentials.length, 0);
});

for (const encoding of ["base64", "base64url", "base64url-padding-digit"] as const) {
  Deno.test(`excludeCredentials ids Graph sends in ${encoding} decode to the registered credential id`, async () => {
    await using h = await harness({ sandbox: { webauthn: { excludeCredentialsEncoding: encoding } } });
    const key = await newTestKey({ pin });
    const first = await provisionUser({
      session: h.session,
      user: h.users[0]!.userPrincipalName,
      authenticator: key,
      interaction: scriptedUser([pin]),
      displayName: "Key",
    });
    const challenge = await h.session.creationOptions(first.user);
    const listed = (challenge.options as { publicKey: { excludeCredentials: { id: string }[] } }).publicKey
      .excludeCredentials;
    assertEquals(listed.length, 1);
    if (encoding === "base64") assert.match(listed[0]!.id, /[+/=]/, "sent as padded standard base64");
    else if (encoding === "base64url") assert.match(listed[0]!.id, /^[A-Za-z0-9_-]+$/);
    else assert.match(listed[0]!.id, /^[A-Za-z0-9_-]+[012]$/, "sent with a padding digit");
    // What the WebAuthn client hands the authenticator: the credential id's bytes, whatever the
    // encoding (among at most two readings, see core/webauthn/credential_id_text.ts).
    const decoded = parseCreationOptions(challenge.options).excludeCredentials?.map((c) => toBase64Url(c.id));
    assert.ok(decoded?.includes(first.credentialId));
    // Another key's registration goes through with the list present.
    const other = await newTestKey({ pin });
    await provisionUser({
      session: h.session,
      user: first.user,
      authenticator: other,
      interaction: scriptedUser([pin]),
      displayName: "Spare",
    });
    assertEquals((await h.session.listPasskeys(first.user)).length, 2);
  });
}

Deno.test("self-service: on v1.0 an admin's own account is asked of Graph (the docs list /me); on beta it is refused before any call", async () => {
  await using h = await harness({ as: "admin" });
  const admin = await h.session.resolveUser(h.sandbox.admin.userPrincipalName);
  // v1.0 lists GET /me/…/creationOptions: Graph is asked, and answers.
  await using known = await harness({ as: "admin", signedInUserId: admin.id });
  const own = await known.session.resolveUser(known.sandbox.admin.userPrincipalName);
  const challenge = await known.session.creationOptions(own);
  assert.ok(challenge.options);
  // Beta still says self-service is unsupported: refused before Graph is called.
  await using beta = await harness({ as: "admin", signedInUserId: admin.id, client: { version: "beta" } });
  const before = beta.requests.length;
  const early = await rejects(beta.session.creationOptions(admin), ProvisioningError);
  assertEquals(early.code, "self-provisioning");
  assertEquals(beta.requests.length, before);
});

Deno.test("a lost answer to the registration is reconciled by listing the user's passkeys", async () => {
  await using h = await harness({
    intercept: async (captured, response) => {
      if (captured.method === "POST" && captured.url.pathname.endsWith("/fido2Methods")) {
        await response.body?.cancel();
        throw new TypeError("connection reset by peer");
      }
      return response;
    },
  });
  const key = await newTestKey({ pin });
  const result = await provisionUser({
    session: h.session,
    user: h.users[2]!.userPrincipalName,
    authenticator: key,
    interaction: scriptedUser([pin]),
    displayName: "Lost answer",
  });
  assertEquals(result.reconciled, true);
  assertEquals(posts(h.requests).length, 1, "the POST was not repeated");
  const listed = await h.session.listPasskeys(result.user);
  assert.deepStrictEqual(listed.map((m) => m.id), [result.methodId]);
});

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

Deno.test("the sandbox's Retry-After is honoured and the request then succeeds", async () => {
  await using h = await harness({
    sandbox: { throttle: { writesPerAppTenant: { limit: 1, windowSeconds: 30 } } },
  });
  const [first, second] = await Promise.all(
    h.users.slice(0, 2).map((u) => h.session.resolveUser(u.userPrincipalName)),
  );
  await h.session.createTemporaryAccessPass(first!, { lifetimeInMinutes: 60 });
  const tap = await h.session.createTemporaryAccessPass(second!, { lifetimeInMinutes: 60 });
  assert.ok(tap.id);
  assertEquals(h.delays.length, 1);
  assert.ok(h.delays[0]! > 0 && h.delays[0]! <= 30_000, `waited ${h.delays[0]} ms`);
  assertEquals(h.delays[0]! % 1000, 0, "whole seconds, as the sandbox's Retry-After says");
  assert.ok(h.sandbox.inspect().throttled.total >= 1);
});

Deno.test("still throttled after every retry is throttled, naming the user", async () => {
  await using h = await harness({
    sandbox: { throttle: { writesPerAppTenant: { limit: 1, windowSeconds: 30 } } },
    client: { retry: { maxAttempts: 2 }, sleep: () => Promise.resolve() },
  });
  const [first, second] = await Promise.all(
    h.users.slice(0, 2).map((u) => h.session.resolveUser(u.userPrincipalName)),
  );
  await h.session.createTemporaryAccessPass(first!);
  const error = await rejects(h.session.createTemporaryAccessPass(second!), GraphError);
  assertEquals(error.code, "throttled");
  assertEquals(error.attempts, 2);
  assert.ok(
    error.message.startsWith(`Cannot create a Temporary Access Pass for ${second!.userPrincipalName}: `),
  );
});

// ---------------------------------------------------------------------------------------------
// Policy refusals and other reasons
// ---------------------------------------------------------------------------------------------

Deno.test("self-service setup off (the documented known issue) is self-service-setup-off, read from the policy, not Graph's words", async () => {
  // Graph's wording for this refusal is undocumented: replace the sandbox's with a neutral one.
  await using h = await harness({
    intercept: async (captured, response) => {
      if (response.status !== 400 || !captured.url.pathname.endsWith("/creationOptions")) return response;
      const body = await response.json();
      body.error.message = "Bad request.";
      return new Response(JSON.stringify(body), { status: 400, headers: response.headers });
    },
  });
  await setPolicy(h.sandbox, { fido2: { isSelfServiceRegistrationAllowed: false } });
  const user = await h.session.resolveUser(h.users[0]!.userPrincipalName);
  const error = await rejects(h.session.creationOptions(user), GraphError);
  assertEquals(error.code, "self-service-setup-off");
  assert.match(error.hint ?? "", /Allow self-service setup/);
  // Graph's own message and request-id are always shown.
  assert.match(error.message, /Graph said "Bad request\."/);
  assert.ok(error.requestId && error.message.includes(`request-id ${error.requestId}`));
  const findings = await h.session.preflight({ path: "api" });
  assert.ok(findings.some((f) => f.code === "self-service-setup-off" && f.severity === "error"));
});

Deno.test("attestation enforcement rejects the self-attested software key: attestation-enforced", async () => {
  await using h = await harness();
  await setPolicy(h.sandbox, { fido2: { isAttestationEnforced: true } });
  const key = await newTestKey({ pin });
  const upn = h.users[0]!.userPrincipalName;
  const error = await rejects(
    provisionUser({
      session: h.session,
      user: upn,
      authenticator: key,
      interaction: scriptedUser([pin]),
      displayName: "Key",
    }),
    GraphError,
  );
  assertEquals(error.code, "attestation-enforced");
  assert.ok(error.message.startsWith(`Cannot register a passkey for ${upn}: `));
  const findings = await h.session.preflight({
    path: "api",
    authenticator: {
      label: "software key",
      aaguid: "70726f76-6973-696f-6e69-6e67736b0001",
      attestation: "self",
    },
  });
  assert.ok(findings.some((f) => f.code === "attestation-enforced" && f.severity === "error"));
});

for (const shape of ["passkeyProfiles", "legacy"] as const) {
  Deno.test(`doctor reads attestation enforcement from the ${shape} policy shape`, async () => {
    await using h = await harness({ sandbox: { fido2PolicyShape: shape } });
    await setPolicy(h.sandbox, { fido2: { isAttestationEnforced: true } });
    const findings = await h.session.preflight({
      path: "api",
      authenticator: {
        label: "software key",
        aaguid: "70726f76-6973-696f-6e69-6e67736b0001",
        attestation: "self",
      },
    });
    const finding = findings.find((f) => f.code === "attestation-enforced");
    assertEquals(finding?.severity, "error");
    if (shape === "passkeyProfiles") {
      assert.match(finding?.message ?? "", /passkey profile "Default passkey profile"/);
    }
  });
}

for (const enforcementType of ["allow", "block"] as const) {
  Deno.test(`an AAGUID ${enforcementType === "allow" ? "outside the allowed" : "inside the blocked"} list is aaguid-not-allowed`, async () => {
    await using h = await harness();
    const aaguid = "70726f76-6973-696f-6e69-6e67736b0001";
    await setPolicy(h.sandbox, {
      fido2: {
        keyRestrictions: {
          isEnforced: true,
          enforcementType,
          aaGuids: [enforcementType === "allow" ? "cb69481e-8ff7-4039-93ec-0a2729a154a8" : aaguid],
        },
      },
    });
    const key = await newTestKey({ pin });
    const error = await rejects(
      provisionUser({
        session: h.session,
        user: h.users[0]!.userPrincipalName,
        authenticator: key,
        interaction: scriptedUser([pin]),
        displayName: "Key",
      }),
      GraphError,
    );
    assertEquals(error.code, "aaguid-not-allowed");
    const findings = await h.session.preflight({
      path: "api",
      authenticator: { label: "software key", aaguid, attestation: "self" },
    });
    assert.ok(findings.some((f) => f.code === "aaguid-not-allowed" && f.severity === "error"));
  });
}

Deno.test("a disabled Temporary Access Pass method is tap-disabled", async () => {
  await using h = await harness();
  await setPolicy(h.sandbox, { temporaryAccessPass: { state: "disabled" } });
  const user = await h.session.resolveUser(h.users[0]!.userPrincipalName);
  const error = await rejects(h.session.createTemporaryAccessPass(user), GraphError);
  assertEquals(error.code, "tap-disabled");
  assert.ok(
    error.message.startsWith(`Cannot create a Temporary Access Pass for ${user.userPrincipalName}: `),
  );
  const findings = await h.session.preflight({ path: "browser" });
  assert.ok(findings.some((f) => f.code === "tap-disabled" && f.severity === "error"));
});

Deno.test("an app without permissions gets insufficient-privileges naming the permissions", async () => {
  await using h = await harness({ as: "unprivileged-app" });
  const error = await rejects(h.session.resolveUser(h.users[0]!.userPrincipalName), GraphError);
  assertEquals(error.code, "insufficient-privileges");
  assertEquals(error.status, 403);
  const user = { id: h.users[0]!.id, userPrincipalName: h.users[0]!.userPrincipalName };
  const denied = await rejects(h.session.creationOptions(user), GraphError);
  assertEquals(denied.code, "insufficient-privileges");
  assert.match(
    denied.message,
    /UserAuthMethod-Passkey\.ReadWrite\.All or UserAuthenticationMethod\.ReadWrite\.All/,
  );
});

Deno.test("a user the methods endpoints do not know (not synced yet) is user-not-synced", async () => {
  await using h = await harness();
  const ghost = { id: crypto.randomUUID(), userPrincipalName: "fresh.hire@contoso.sandbox" };
  const error = await rejects(h.session.createTemporaryAccessPass(ghost), GraphError);
  assertEquals(error.code, "user-not-synced");
  assert.ok(
    error.message.startsWith("Cannot create a Temporary Access Pass for fresh.hire@contoso.sandbox: "),
  );
  const options = await rejects(h.session.creationOptions(ghost), GraphError);
  assertEquals(options.code, "user-not-synced");
});

// ---------------------------------------------------------------------------------------------
// Temporary Access Pass, deletion, challenge timeout
// ---------------------------------------------------------------------------------------------

Deno.test("a Temporary Access Pass is created one-time, never shown by JSON or inspect, and deleted", async () => {
  await using h = await harness();
  const user = await h.session.resolveUser(h.users[3]!.userPrincipalName);
  const tap = await h.session.createTemporaryAccessPass(user, { lifetimeInMinutes: 60 });
  assertEquals(tap.isUsableOnce, true);
  assertEquals(tap.lifetimeInMinutes, 60);
  const secret = tap.reveal();
  assert.ok(secret.length >= 8);
  for (const shown of [JSON.stringify(tap), String(tap), Deno.inspect(tap), `${tap}`]) {
    assert.ok(!shown.includes(secret), shown);
  }
  assertEquals(
    h.sandbox.inspect().users.find((u) => u.id === user.id)?.temporaryAccessPass?.isUsableOnce,
    true,
  );
  assertEquals(await h.session.deleteTemporaryAccessPass(user, tap.id), true);
  assertEquals(await h.session.deleteTemporaryAccessPass(user, tap.id), false, "already gone");
  const invalid = await rejects(
    h.session.createTemporaryAccessPass(user, { lifetimeInMinutes: 5 }),
    ProvisioningError,
  );
  assertEquals(invalid.code, "tap-lifetime-invalid");
});

Deno.test("a passkey is deleted, and deleting it again is not an error", async () => {
  await using h = await harness();
  const key = await newTestKey({ pin });
  const result = await provisionUser({
    session: h.session,
    user: h.users[4]!.userPrincipalName,
    authenticator: key,
    interaction: scriptedUser([pin]),
    displayName: "Old key",
  });
  await h.session.deletePasskey(result.user, result.methodId);
  assertEquals((await h.session.listPasskeys(result.user)).length, 0);
  await h.session.deletePasskey(result.user, result.methodId);
});

Deno.test("a challenge timeout is sent to beta as the function parameter and refused on v1.0 before any call", async () => {
  await using h = await harness();
  const user = await h.session.resolveUser(h.users[0]!.userPrincipalName);
  const beta = new EntraSession({
    client: h.client.withVersion("beta"),
    cloud: h.session.cloud,
    challengeTimeoutInMinutes: 60,
  });
  const challenge = await beta.creationOptions(user);
  const last = h.requests.at(-1)!;
  assert.ok(last.url.pathname.endsWith("/creationOptions(challengeTimeoutInMinutes=60)"), last.url.pathname);
  const minutes = (challenge.expiresAt!.getTime() - (Date.now() + h.clock.offset)) / 60_000;
  assert.ok(minutes > 59 && minutes <= 60, `expires in ${minutes} minutes`);
  const v1 = new EntraSession({ client: h.client, cloud: h.session.cloud, challengeTimeoutInMinutes: 60 });
  const before = h.requests.length;
  const error = await rejects(v1.creationOptions(user), ProvisioningError);
  assertEquals(error.code, "challenge-timeout-unsupported");
  assertEquals(h.requests.length, before);
  const v1Default = await h.session.creationOptions(user);
  const defaultMinutes = (v1Default.expiresAt!.getTime() - (Date.now() + h.clock.offset)) / 60_000;
  assert.ok(defaultMinutes > 4 && defaultMinutes <= 5, "v1.0's fixed 5 minutes");
});
