/**
 * Every Graph route of the sandbox over real HTTP, with access tokens from its own token endpoint
 * (client credentials for apps, the device code flow for the admin accounts).
 */
import assert from "node:assert/strict";
import { decode as decodeCbor, encode as encodeCbor } from "cborg";
import { fromBase64Any, toBase64, toBase64Url } from "../../../core/bytes.ts";
import { toBase64UrlPaddingDigit } from "../../../core/webauthn/credential_id_text.ts";
import { create } from "../../../core/webauthn/create.ts";
import { newTestKey, scriptedUser, type TestKey } from "../../../test/software_key.ts";
import { missingFido2EntityMessage } from "./graph.ts";
import { type Sandbox, type SandboxOptions, startSandbox } from "./server.ts";
import type { SandboxAppRegistration, SandboxSignInAccount } from "./tenant.ts";

const origin = "https://login.microsoft.com";
const pin = "4321";

async function appToken(sandbox: Sandbox, app: SandboxAppRegistration = sandbox.seeded.app): Promise<string> {
  const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: app.clientId,
      client_secret: app.secret ?? "",
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token;
}

/** A delegated token through the device code flow, approved through the sandbox's approval endpoint. */
async function userToken(
  sandbox: Sandbox,
  account: SandboxSignInAccount,
  scope = "https://graph.microsoft.com/.default",
): Promise<string> {
  const base = `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0`;
  const clientId = sandbox.app.clientId;
  const started = await fetch(`${base}/devicecode`, {
    method: "POST",
    body: new URLSearchParams({ client_id: clientId, scope }),
  });
  const device = await started.json();
  assert.equal(started.status, 200, JSON.stringify(device));
  const approved = await fetch(`${sandbox.url}/_sandbox/device/approve`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      user_code: device.user_code,
      userPrincipalName: account.userPrincipalName,
      password: account.password,
    }),
  });
  assert.ok(approved.ok, await approved.text());
  const response = await fetch(`${base}/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "urn:ietf:params:oauth:grant-type:device_code",
      client_id: clientId,
      device_code: device.device_code,
    }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token;
}

interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
  headers: Headers;
}

function graphClient(sandbox: Sandbox, token: string) {
  return async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Answer> => {
    const response = await fetch(path.startsWith("http") ? path : `${sandbox.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? undefined : JSON.parse(text),
      headers: response.headers,
    };
  };
}

type Client = ReturnType<typeof graphClient>;

/** Starts a sandbox with an app client, and a clock the test can move. */
async function setup(options: SandboxOptions = {}) {
  let offset = 0;
  const sandbox = await startSandbox({ users: 12, seed: 3, now: () => Date.now() + offset, ...options });
  const graph = graphClient(sandbox, await appToken(sandbox));
  return { sandbox, graph, advance: (ms: number) => (offset += ms) };
}

function assertGraphError(answer: Answer, status: number, code: string, message?: RegExp | string): void {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.equal(answer.body.error.code, code);
  if (typeof message === "string") assert.equal(answer.body.error.message, message);
  else if (message) assert.match(answer.body.error.message, message);
  const inner = answer.body.error.innerError;
  assert.match(inner.date, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
  assert.equal(inner["request-id"], answer.headers.get("request-id"));
  assert.equal(inner["client-request-id"], answer.headers.get("client-request-id"));
}

/** creationOptions → WebAuthn create() on the key → the POST body Graph takes. */
async function makeCredential(graph: Client, user: string, key: TestKey, options?: Answer) {
  const answer = options ??
    await graph("GET", `/v1.0/users/${user}/authentication/fido2Methods/creationOptions`);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  const response = await create({
    options: answer.body,
    origin,
    allowedRpIds: ["login.microsoft.com"],
    authenticator: key,
    interaction: scriptedUser([pin]),
  });
  return {
    displayName: "Sandbox key",
    publicKeyCredential: {
      id: response.id,
      response: {
        clientDataJSON: response.response.clientDataJSON,
        attestationObject: response.response.attestationObject,
      },
      clientExtensionResults: response.clientExtensionResults,
    },
  };
}

async function register(
  graph: Client,
  user: string,
  key: TestKey,
  displayName = "Sandbox key",
): Promise<Answer> {
  const body = await makeCredential(graph, user, key);
  return await graph("POST", `/v1.0/users/${user}/authentication/fido2Methods`, { ...body, displayName });
}

function rootOf(key: TestKey): string {
  return key.store.read().attestation.rootCertificate;
}

// ---------------------------------------------------------------------------------------------
// Users, groups, /me
// ---------------------------------------------------------------------------------------------

Deno.test("GET /users/{upn} answers the user's default properties, and $select narrows them", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const user = sandbox.tenant.user("user0003@contoso.sandbox")!;
  const full = await graph("GET", "/v1.0/users/user0003@contoso.sandbox");
  assert.equal(full.status, 200);
  assert.equal(full.body["@odata.context"], `${sandbox.url}/v1.0/$metadata#users/$entity`);
  assert.deepEqual(Object.keys(full.body).sort(), [
    "@odata.context",
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
  ]);
  assert.equal(full.body.id, user.id);
  const byId = await graph("GET", `/beta/users/${user.id}?$select=id,mail,accountEnabled`);
  assert.deepEqual(byId.body, {
    "@odata.context": `${sandbox.url}/beta/$metadata#users(id,mail,accountEnabled)/$entity`,
    id: user.id,
    mail: user.mail,
    accountEnabled: true,
  });
  const bad = await graph("GET", `/v1.0/users/${user.id}?$select=favouriteColour`);
  assertGraphError(
    bad,
    400,
    "BadRequest",
    "Could not find a property named 'favouriteColour' on type 'microsoft.graph.user'.",
  );
});

Deno.test("unknown and on-premises-only users answer 404 Request_ResourceNotFound on every path", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const onPrem = sandbox.seeded.onPremisesOnly.userPrincipalName;
  for (
    const path of [
      "/v1.0/users/nobody@contoso.sandbox",
      `/v1.0/users/${crypto.randomUUID()}`,
      `/v1.0/users/${onPrem}`,
      `/v1.0/users/${onPrem}/authentication/temporaryAccessPassMethods`,
      `/v1.0/users/${onPrem}/authentication/fido2Methods/creationOptions`,
    ]
  ) {
    const answer = await graph("GET", path, undefined, { "client-request-id": "my-correlation-id" });
    assertGraphError(answer, 404, "Request_ResourceNotFound", /^Resource '.+' does not exist/);
    assert.equal(answer.headers.get("client-request-id"), "my-correlation-id");
  }
  const tap = await graph("POST", `/v1.0/users/${onPrem}/authentication/temporaryAccessPassMethods`, {});
  assertGraphError(tap, 404, "Request_ResourceNotFound");
});

Deno.test("GET /users?$filter finds users by mail or userPrincipalName, and refuses other filters", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const user = sandbox.tenant.user("user0007@contoso.sandbox")!;
  const byMail = await graph(
    "GET",
    `/v1.0/users?$filter=${encodeURIComponent(`mail eq '${user.mail.toUpperCase()}'`)}`,
  );
  assert.equal(byMail.status, 200);
  assert.equal(byMail.body["@odata.context"], `${sandbox.url}/v1.0/$metadata#users`);
  assert.deepEqual(byMail.body.value.map((u: { id: string }) => u.id), [user.id]);
  const byUpn = await graph(
    "GET",
    `/v1.0/users?$select=id&$filter=${
      encodeURIComponent("userPrincipalName in ('user0007@contoso.sandbox','user0001@contoso.sandbox')")
    }`,
  );
  assert.equal(byUpn.body.value.length, 2);
  const none = await graph(
    "GET",
    `/v1.0/users?$filter=${encodeURIComponent("mail eq 'o''brien@contoso.sandbox'")}`,
  );
  assert.deepEqual(none.body.value, []);
  const unsupported = await graph("GET", `/v1.0/users?$filter=${encodeURIComponent("city eq 'Oslo'")}`);
  assertGraphError(
    unsupported,
    400,
    "Request_UnsupportedQuery",
    "Unsupported or invalid query filter clause specified for property 'city' of resource 'User'.",
  );
  const malformed = await graph("GET", `/v1.0/users?$filter=${encodeURIComponent("mail eq")}`);
  assertGraphError(malformed, 400, "BadRequest", /Invalid filter clause/);
});

Deno.test("GET /me answers the signed-in admin, and an app token gets Graph's 400", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const me = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.admin));
  const answer = await me("GET", "/v1.0/me");
  assert.equal(answer.status, 200);
  assert.equal(answer.body.userPrincipalName, sandbox.admin.userPrincipalName);
  const asApp = await graph("GET", "/v1.0/me");
  assertGraphError(asApp, 400, "BadRequest", "/me request is only valid with delegated authentication flow.");
});

Deno.test("transitiveMembers lists nested members once, groups included, in pages of $top", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const pilot = sandbox.seeded.groups.pilot;
  const expected = sandbox.tenant.transitiveMembers(pilot).map((m) =>
    m.kind === "user" ? m.user.id : m.group.id
  );
  assert.ok(expected.length > 4);
  const seen: string[] = [];
  let next: string | undefined =
    `/v1.0/groups/${pilot}/transitiveMembers?$top=2&$select=id,userPrincipalName`;
  let pages = 0;
  while (next) {
    const page: Answer = await graph("GET", next);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assert.ok(page.body.value.length <= 2);
    for (const item of page.body.value) {
      assert.match(item["@odata.type"], /^#microsoft\.graph\.(user|group)$/);
      seen.push(item.id);
    }
    next = page.body["@odata.nextLink"];
    pages++;
  }
  assert.deepEqual(seen, expected);
  assert.equal(new Set(seen).size, seen.length, "each member once");
  assert.equal(pages, Math.ceil(expected.length / 2));
  const usersOnly = await graph(
    "GET",
    `/v1.0/groups/${pilot}/transitiveMembers/microsoft.graph.user?$top=999`,
  );
  assert.ok(
    usersOnly.body.value.every((m: Record<string, string>) => m["@odata.type"] === "#microsoft.graph.user"),
  );
  assert.equal(usersOnly.body.value.length, expected.filter((id) => sandbox.tenant.user(id)).length);
  const badTop = await graph("GET", `/v1.0/groups/${pilot}/transitiveMembers?$top=1000`);
  assertGraphError(badTop, 400, "Request_BadRequest", /Invalid page size/);
  const missing = await graph("GET", `/v1.0/groups/${crypto.randomUUID()}/transitiveMembers`);
  assertGraphError(missing, 404, "Request_ResourceNotFound");
  const byName = await graph(
    "GET",
    `/v1.0/groups?$filter=${encodeURIComponent("displayName eq 'Passkey pilot'")}`,
  );
  assert.deepEqual(byName.body.value.map((g: { id: string }) => g.id), [pilot]);
});

// ---------------------------------------------------------------------------------------------
// Passkeys
// ---------------------------------------------------------------------------------------------

Deno.test("a passkey made from creationOptions with a software key is verified, listed, excluded and deleted", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0002@contoso.sandbox";
  const user = sandbox.tenant.user(upn)!;
  const key = await newTestKey({ pin });

  const options = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`);
  assert.equal(options.status, 200);
  assert.equal(options.body["@odata.type"], "#microsoft.graph.webauthnCredentialCreationOptions");
  const publicKey = options.body.publicKey;
  assert.equal(publicKey.rp.id, "login.microsoft.com");
  assert.equal(publicKey.rp.name, "Microsoft");
  assert.equal(publicKey.user.name, upn);
  assert.equal(publicKey.user.displayName, user.displayName);
  // An opaque 51-byte handle beginning "OF:", as in the recorded real response; never the UPN.
  const handle = fromBase64Any(publicKey.user.id);
  assert.equal(handle.length, 51);
  assert.equal(new TextDecoder().decode(handle.slice(0, 3)), "OF:");
  // The challenge is the base64url of a compact JWE (RSA-OAEP-256, A256GCM, x5c), about the
  // recorded response's 5 KB on the first call.
  assert.match(publicKey.challenge, /^[A-Za-z0-9_-]+$/);
  const jwe = new TextDecoder().decode(fromBase64Any(publicKey.challenge));
  const [header, ...rest] = jwe.split(".");
  assert.equal(rest.length, 4);
  const protectedHeader = JSON.parse(new TextDecoder().decode(fromBase64Any(header!)));
  assert.deepEqual([protectedHeader.alg, protectedHeader.enc, protectedHeader.x5c.length], [
    "RSA-OAEP-256",
    "A256GCM",
    1,
  ]);
  const size = fromBase64Any(publicKey.challenge).length;
  assert.ok(size > 4000 && size < 7000, `challenge of ${size} bytes`);
  assert.equal(publicKey.timeout, 60000);
  assert.deepEqual(publicKey.pubKeyCredParams.map((p: { alg: number }) => p.alg), [-7, -257]);
  assert.deepEqual(publicKey.excludeCredentials, []);
  assert.equal(publicKey.authenticatorSelection.authenticatorAttachment, "cross-platform");
  assert.equal(publicKey.authenticatorSelection.requireResidentKey, true);
  assert.equal(publicKey.authenticatorSelection.userVerification, "required");
  assert.equal(publicKey.attestation, "direct");
  assert.equal(publicKey.extensions.credentialProtectionPolicy, "userVerificationOptional");
  assert.equal(publicKey.extensions.enforceCredentialProtectionPolicy, true);
  assert.equal(publicKey.extensions.hmacCreateSecret, true);
  const timeout = Date.parse(options.body.challengeTimeoutDateTime) - sandbox.tenant.now();
  assert.ok(
    timeout > 4.9 * 60_000 && timeout <= 5 * 60_000,
    `v1.0 challenge lasts 5 minutes, got ${timeout} ms`,
  );

  const body = await makeCredential(graph, upn, key, options);
  const created = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, body);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal(created.body["@odata.type"], "#microsoft.graph.fido2AuthenticationMethod");
  assert.equal(created.body.displayName, "Sandbox key");
  assert.equal(created.body.aaGuid, "70726f76-6973-696f-6e69-6e67736b0001");
  assert.equal(created.body.model, "Provisioning software key");
  assert.equal(created.body.attestationLevel, "notAttested");
  assert.equal(created.body.attestationCertificates.length, 1);
  assert.match(created.body.attestationCertificates[0], /^[0-9a-f]{40}$/);
  assert.ok(!("publicKeyCredential" in created.body));
  assert.ok(Math.abs(Date.parse(created.body.createdDateTime) - sandbox.tenant.now()) < 5000);

  const list = await graph("GET", `/v1.0/users/${user.id}/authentication/fido2Methods`);
  assert.equal(
    list.body["@odata.context"],
    `${sandbox.url}/v1.0/$metadata#users('${user.id}')/authentication/fido2Methods`,
  );
  assert.deepEqual(list.body.value.map((m: { id: string }) => m.id), [created.body.id]);
  const one = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/${created.body.id}`);
  assert.equal(one.body.id, created.body.id);

  // The next answers rotate through the other id encodings, timeouts and challenge sizes.
  const again = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`);
  const registeredId = fromBase64Any(body.publicKeyCredential.id);
  const paddedBase64 = again.body.publicKey.excludeCredentials[0].id;
  assert.deepEqual(again.body.publicKey.excludeCredentials.length, 1);
  assert.match(paddedBase64, /^[A-Za-z0-9+/]+={0,2}$/);
  assert.equal(paddedBase64.length % 4, 0);
  assert.deepEqual(fromBase64Any(paddedBase64), registeredId);
  assert.equal(again.body.publicKey.timeout, 0);
  assert.ok(fromBase64Any(again.body.publicKey.challenge).length < 4000);
  const third = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`);
  const suffixed: string = third.body.publicKey.excludeCredentials[0].id;
  assert.match(suffixed, /^[A-Za-z0-9_-]+[012]$/);
  assert.equal(toBase64UrlPaddingDigit(registeredId), suffixed);
  assert.ok(fromBase64Any(third.body.publicKey.challenge).length > 20_000);

  const inspection = sandbox.inspect().users.find((u) => u.id === user.id)!;
  assert.deepEqual(inspection.passkeys.map((p) => [p.id, p.verified]), [[created.body.id, true]]);

  const deleted = await graph("DELETE", `/v1.0/users/${upn}/authentication/fido2Methods/${created.body.id}`);
  assert.equal(deleted.status, 204);
  assert.deepEqual((await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods`)).body.value, []);
  const gone = await graph("DELETE", `/v1.0/users/${upn}/authentication/fido2Methods/${created.body.id}`);
  assertGraphError(gone, 404, "itemNotFound");
});

Deno.test("a POST body carrying @odata.type is refused with Graph's missing-entity message", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0004@contoso.sandbox";
  const body = await makeCredential(graph, upn, await newTestKey({ pin }));
  const withType = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, {
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
    ...body,
  });
  assertGraphError(withType, 400, "badRequest", missingFido2EntityMessage);
  const withoutCredential = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, {
    displayName: "x",
  });
  assertGraphError(withoutCredential, 400, "badRequest", missingFido2EntityMessage);
  const notJson = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, "{not json");
  assertGraphError(notJson, 400, "BadRequest", /Unable to read JSON request payload/);
});

Deno.test("displayName must be 1 to 30 characters", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0005@contoso.sandbox";
  const key = await newTestKey({ pin });
  for (const displayName of ["", "x".repeat(31)]) {
    const body = await makeCredential(graph, upn, key);
    const answer = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, {
      ...body,
      displayName,
    });
    assertGraphError(answer, 400, "badRequest", /displayName must be between 1 and 30 characters/);
  }
  const ok = await register(graph, upn, key, "é".repeat(30));
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
});

Deno.test("a challenge is refused once expired, and is good for one registration only", async () => {
  const { sandbox, graph, advance } = await setup();
  await using _ = sandbox;
  const upn = "user0006@contoso.sandbox";
  const key = await newTestKey({ pin });
  const late = await makeCredential(graph, upn, key);
  advance(5 * 60_000 + 1000);
  const expired = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, late);
  assertGraphError(expired, 400, "badRequest", /challenge expired/);

  const body = await makeCredential(graph, upn, await newTestKey({ pin }));
  assert.equal((await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, body)).status, 201);
  const replay = await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, body);
  assertGraphError(replay, 400, "badRequest", /already been used/);

  // A challenge issued for one user does not register a key for another.
  const other = await makeCredential(graph, upn, await newTestKey({ pin }));
  const crossUser = await graph(
    "POST",
    "/v1.0/users/user0008@contoso.sandbox/authentication/fido2Methods",
    other,
  );
  assertGraphError(crossUser, 400, "badRequest", /not issued for this user/);
});

Deno.test("attestation enforcement refuses the software key until its root is trusted, and refuses 'none' always", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  sandbox.tenant.setFido2Policy({ isAttestationEnforced: true });
  const upn = "user0009@contoso.sandbox";
  const key = await newTestKey({ pin });
  const refused = await register(graph, upn, key);
  assertGraphError(refused, 400, "badRequest", /Attestation is enforced.*does not chain to a trusted root/);

  sandbox.tenant.trustAttestationRoot(rootOf(key));
  const accepted = await register(graph, upn, key);
  assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
  assert.equal(accepted.body.attestationLevel, "attested");

  const silent = await newTestKey({ pin, attestation: "none" });
  sandbox.tenant.trustAttestationRoot(rootOf(silent));
  const none = await register(graph, upn, silent);
  assertGraphError(none, 400, "badRequest", /format 'none'/);
});

Deno.test("key restrictions refuse an AAGUID missing from the allow list or on the block list", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0010@contoso.sandbox";
  const aaguid = "70726f76-6973-696f-6e69-6e67736b0001";
  const other = "cb69481e-8ff7-4039-93ec-0a2729a154a8";
  const key = await newTestKey({ pin });

  sandbox.tenant.setFido2Policy({
    keyRestrictions: { isEnforced: true, enforcementType: "allow", aaGuids: [other] },
  });
  assertGraphError(await register(graph, upn, key), 400, "badRequest", /not in the allowed list/);

  sandbox.tenant.setFido2Policy({
    keyRestrictions: { enforcementType: "block", aaGuids: [aaguid.toUpperCase()] },
  });
  assertGraphError(await register(graph, upn, key), 400, "badRequest", /in the blocked list/);

  sandbox.tenant.setFido2Policy({ keyRestrictions: { enforcementType: "allow", aaGuids: [other, aaguid] } });
  assert.equal((await register(graph, upn, key)).status, 201);

  sandbox.tenant.setFido2Policy({
    keyRestrictions: { isEnforced: false, enforcementType: "allow", aaGuids: [] },
  });
  assert.equal((await register(graph, upn, await newTestKey({ pin, aaguid: other }))).status, 201);
});

Deno.test("self-service: v1.0 lets an admin act on their own account (the v1.0 docs list /me), beta answers 405", async () => {
  const { sandbox } = await setup();
  await using _ = sandbox;
  const admin = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.admin));
  const own = sandbox.seeded.admin.objectId;
  for (const path of [`/v1.0/users/${own}`, "/v1.0/me"]) {
    const options = await admin("GET", `${path}/authentication/fido2Methods/creationOptions`);
    assert.equal(options.status, 200, JSON.stringify(options.body));
  }
  // Beta still says self-service is unsupported, without documenting the answer: the sandbox's
  // own 405, which no client may match on.
  const beta = await admin("GET", "/beta/me/authentication/fido2Methods/creationOptions");
  assertGraphError(beta, 405, "methodNotAllowed");
  const post = await admin("POST", "/beta/me/authentication/fido2Methods", {
    displayName: "x",
    publicKeyCredential: {},
  });
  assertGraphError(post, 405, "methodNotAllowed");
  // The same admin may provision someone else.
  const other = await admin(
    "GET",
    "/v1.0/users/user0001@contoso.sandbox/authentication/fido2Methods/creationOptions",
  );
  assert.equal(other.status, 200);
});

Deno.test("the FIDO2 policy's state, targets and self-service setting refuse the provisioning API", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const path = "/v1.0/users/user0011@contoso.sandbox/authentication/fido2Methods/creationOptions";
  sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: false });
  assertGraphError(await graph("GET", path), 400, "badRequest", /Allow self-service setup/);
  sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: true, state: "disabled" });
  assertGraphError(await graph("GET", path), 400, "badRequest", /disabled/);
  sandbox.tenant.setFido2Policy({
    state: "enabled",
    includeTargets: [{ targetType: "group", id: sandbox.seeded.groups.pilot, isRegistrationRequired: false }],
  });
  assertGraphError(await graph("GET", path), 400, "badRequest", /not enabled for the Passkey/);
  // user0001 is a pilot member (directly and through wave 3).
  assert.equal(
    (await graph("GET", "/v1.0/users/user0001@contoso.sandbox/authentication/fido2Methods/creationOptions"))
      .status,
    200,
  );
});

Deno.test("v1.0 fixes the challenge timeout at 5 minutes; beta takes challengeTimeoutInMinutes from 5 to 43200", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const base = "/users/user0003@contoso.sandbox/authentication/fido2Methods";
  const v1 = await graph("GET", `/v1.0${base}/creationOptions(challengeTimeoutInMinutes=10)`);
  assertGraphError(v1, 400, "badRequest", /not supported in v1\.0/);
  for (const minutes of [5, 60, 43200]) {
    const beta = await graph("GET", `/beta${base}/creationOptions(challengeTimeoutInMinutes=${minutes})`);
    assert.equal(beta.status, 200, JSON.stringify(beta.body));
    const lasts = Date.parse(beta.body.challengeTimeoutDateTime) - sandbox.tenant.now();
    assert.ok(Math.abs(lasts - minutes * 60_000) < 5000, `${minutes} minutes, got ${lasts} ms`);
  }
  const query = await graph("GET", `/beta${base}/creationOptions?challengeTimeoutInMinutes=30`);
  assert.equal(query.status, 200);
  for (const minutes of [4, 43201]) {
    const bad = await graph("GET", `/beta${base}/creationOptions(challengeTimeoutInMinutes=${minutes})`);
    assertGraphError(bad, 400, "badRequest", /between 5 and 43200/);
  }
});

Deno.test("excludeCredentials can be sent as padded standard base64, as Graph has been seen doing", async () => {
  const { sandbox, graph } = await setup({ webauthn: { excludeCredentialsEncoding: "base64" } });
  await using _ = sandbox;
  const upn = "user0012@contoso.sandbox";
  const key = await newTestKey({ pin });
  const body = await makeCredential(graph, upn, key);
  assert.equal((await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, body)).status, 201);
  const options = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`);
  const id: string = options.body.publicKey.excludeCredentials[0].id;
  assert.match(id, /^[A-Za-z0-9+/]+=*$/);
  assert.equal(id.length % 4, 0);
  assert.deepEqual(fromBase64Any(id), fromBase64Any(body.publicKeyCredential.id));
});

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

Deno.test("missing permissions and roles answer Graph's 403s", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const target = "/v1.0/users/user0001@contoso.sandbox";
  const options = `${target}/authentication/fido2Methods/creationOptions`;

  const noPermissions = graphClient(sandbox, await appToken(sandbox, sandbox.seeded.unprivilegedApp));
  assertGraphError(
    await noPermissions("GET", target),
    403,
    "Authorization_RequestDenied",
    "Insufficient privileges to complete the operation.",
  );
  assertGraphError(await noPermissions("GET", options), 403, "accessDenied", "Request Authorization failed");

  const passkeyOnly = graphClient(sandbox, await appToken(sandbox, sandbox.seeded.passkeyOnlyApp));
  assert.equal((await passkeyOnly("GET", options)).status, 200);
  assertGraphError(
    await passkeyOnly("POST", `${target}/authentication/temporaryAccessPassMethods`, {}),
    403,
    "accessDenied",
  );

  const reader = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.reader));
  assertGraphError(await reader("GET", options), 403, "accessDenied");
  assert.equal((await reader("GET", target)).status, 200, "reading a profile needs no role");

  const admin = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.admin));
  assert.equal((await admin("GET", options)).status, 200);
  const privileged =
    `/v1.0/users/${sandbox.seeded.privilegedAdmin.userPrincipalName}/authentication/fido2Methods/creationOptions`;
  assertGraphError(await admin("GET", privileged), 403, "accessDenied", "Request Authorization failed");
  const privilegedAdmin = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.privilegedAdmin));
  assert.equal(
    (await privilegedAdmin(
      "GET",
      `/v1.0/users/${sandbox.admin.userPrincipalName}/authentication/fido2Methods/creationOptions`,
    )).status,
    200,
  );

  const scoped = graphClient(sandbox, await userToken(sandbox, sandbox.seeded.admin, "User.Read"));
  assertGraphError(await scoped("GET", options), 403, "accessDenied");
  assert.equal((await graph("GET", options)).status, 200);
});

Deno.test("a request without a valid bearer token answers 401 InvalidAuthenticationToken", async () => {
  const { sandbox } = await setup();
  await using _ = sandbox;
  for (const authorization of [undefined, "Bearer not-a-token"]) {
    const response = await fetch(`${sandbox.url}/v1.0/users`, {
      headers: authorization ? { authorization } : {},
    });
    const body = await response.json();
    assert.equal(response.status, 401);
    assert.equal(body.error.code, "InvalidAuthenticationToken");
    assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer /);
  }
});

// ---------------------------------------------------------------------------------------------
// Temporary Access Pass
// ---------------------------------------------------------------------------------------------

Deno.test("a TAP is revealed only when created, a new one replaces the old, and deleting it answers 204", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0004@contoso.sandbox";
  const path = `/v1.0/users/${upn}/authentication/temporaryAccessPassMethods`;
  const first = await graph("POST", path, { lifetimeInMinutes: 60, isUsableOnce: true });
  assert.equal(first.status, 201, JSON.stringify(first.body));
  assert.equal(first.body["@odata.type"], "#microsoft.graph.temporaryAccessPassAuthenticationMethod");
  assert.equal(first.body.temporaryAccessPass.length, 8);
  assert.equal(first.body.lifetimeInMinutes, 60);
  assert.equal(first.body.isUsableOnce, true);
  assert.equal(first.body.isUsable, true);
  assert.equal(first.body.methodUsabilityReason, "EnabledByPolicy");

  const listed = await graph("GET", path);
  assert.equal(listed.body.value.length, 1);
  assert.equal(listed.body.value[0].temporaryAccessPass, null);
  assert.equal((await graph("GET", `${path}/${first.body.id}`)).body.temporaryAccessPass, null);

  const second = await graph("POST", path, {});
  assert.equal(second.status, 201);
  assert.equal(second.body.lifetimeInMinutes, 60, "the policy's default lifetime");
  assert.notEqual(second.body.id, first.body.id);
  assert.deepEqual((await graph("GET", path)).body.value.map((t: { id: string }) => t.id), [second.body.id]);
  assertGraphError(await graph("DELETE", `${path}/${first.body.id}`), 404, "itemNotFound");

  assert.ok(sandbox.tenant.redeemTemporaryAccessPass(upn, second.body.temporaryAccessPass));
  assert.equal(sandbox.inspect().temporaryAccessPassesOutstanding, 1);
  assert.equal((await graph("DELETE", `${path}/${second.body.id}`)).status, 204);
  assert.deepEqual((await graph("GET", path)).body.value, []);
  assert.equal(sandbox.inspect().temporaryAccessPassesOutstanding, 0);

  const future = await graph("POST", path, {
    startDateTime: new Date(sandbox.tenant.now() + 3_600_000).toISOString(),
  });
  assert.equal(future.body.isUsable, false);
  assert.equal(future.body.methodUsabilityReason, "NotYetValid");
});

Deno.test("the TAP policy's state, lifetime bounds and one-time rule refuse a TAP", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const path = "/v1.0/users/user0005@contoso.sandbox/authentication/temporaryAccessPassMethods";
  for (const lifetimeInMinutes of [10, 59, 481, 43201]) {
    assertGraphError(
      await graph("POST", path, { lifetimeInMinutes }),
      400,
      "badRequest",
      /between 60 and 480/,
    );
  }
  sandbox.tenant.setTapPolicy({ minimumLifetimeInMinutes: 10, maximumLifetimeInMinutes: 43200 });
  assert.equal((await graph("POST", path, { lifetimeInMinutes: 10 })).status, 201);
  assert.equal((await graph("POST", path, { lifetimeInMinutes: 43200 })).status, 201);

  sandbox.tenant.setTapPolicy({ isUsableOnce: true, defaultLength: 12 });
  assertGraphError(
    await graph("POST", path, { isUsableOnce: false }),
    400,
    "badRequest",
    /one-time passes only/,
  );
  const once = await graph("POST", path, {});
  assert.equal(once.body.isUsableOnce, true);
  assert.equal(once.body.temporaryAccessPass.length, 12);

  sandbox.tenant.setTapPolicy({ state: "disabled" });
  assertGraphError(
    await graph("POST", path, {}),
    400,
    "badRequest",
    /Temporary Access Pass authentication method is disabled/,
  );
  assert.equal((await graph("GET", path)).body.value[0].methodUsabilityReason, "DisabledByPolicy");
  assertGraphError(await graph("POST", path, { lifetimeInMinutes: "sixty" }), 400, "badRequest");
});

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

Deno.test("the FIDO2 and TAP method configurations read back what the setters changed", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const base = "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations";
  sandbox.tenant.setFido2Policy({
    isAttestationEnforced: true,
    keyRestrictions: {
      isEnforced: true,
      enforcementType: "allow",
      aaGuids: ["cb69481e-8ff7-4039-93ec-0a2729a154a8"],
    },
  });
  const fido2 = await graph("GET", `${base}/fido2`);
  assert.equal(fido2.status, 200);
  assert.deepEqual(fido2.body, {
    "@odata.context": `${sandbox.url}/v1.0/$metadata#authenticationMethodConfigurations/$entity`,
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
    id: "Fido2",
    state: "enabled",
    isSelfServiceRegistrationAllowed: true,
    isAttestationEnforced: true,
    keyRestrictions: {
      isEnforced: true,
      enforcementType: "allow",
      aaGuids: ["cb69481e-8ff7-4039-93ec-0a2729a154a8"],
    },
    includeTargets: [{
      targetType: "group",
      id: "all_users",
      isRegistrationRequired: false,
      allowedPasskeyProfiles: ["00000000-0000-0000-0000-000000000001"],
    }],
    excludeTargets: [],
    // Migrated to passkey profiles by default: the default profile mirrors the legacy settings.
    defaultPasskeyProfile: "00000000-0000-0000-0000-000000000001",
    passkeyProfiles: [{
      id: "00000000-0000-0000-0000-000000000001",
      name: "Default passkey profile",
      passkeyTypes: "deviceBound,synced",
      attestationEnforcement: "registrationOnly",
      keyRestrictions: {
        isEnforced: true,
        enforcementType: "allow",
        aaGuids: ["cb69481e-8ff7-4039-93ec-0a2729a154a8"],
      },
    }],
  });
  // The legacy shape, selectable: no profiles.
  sandbox.tenant.fido2PolicyShape = "legacy";
  const legacy = (await graph("GET", `${base}/fido2`)).body;
  assert.equal(legacy.isAttestationEnforced, true);
  assert.ok(!("passkeyProfiles" in legacy) && !("defaultPasskeyProfile" in legacy));
  assert.deepEqual(legacy.includeTargets, [{
    targetType: "group",
    id: "all_users",
    isRegistrationRequired: false,
  }]);
  sandbox.tenant.setTapPolicy({ isUsableOnce: true });
  const tap = await graph("GET", `${base}/TemporaryAccessPass`);
  assert.equal(
    tap.body["@odata.type"],
    "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
  );
  assert.equal(tap.body.id, "TemporaryAccessPass");
  assert.equal(tap.body.isUsableOnce, true);
  assert.equal(tap.body.defaultLifetimeInMinutes, 60);
  assert.equal(tap.body.minimumLifetimeInMinutes, 60);
  assert.equal(tap.body.maximumLifetimeInMinutes, 480);
  assert.equal(tap.body.defaultLength, 8);

  const noPolicy = graphClient(sandbox, await appToken(sandbox, sandbox.seeded.passkeyOnlyApp));
  assertGraphError(await noPolicy("GET", `${base}/fido2`), 403, "Authorization_RequestDenied");
});

Deno.test("unknown segments and methods answer Graph's 400 and 405", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  assertGraphError(
    await graph("GET", "/v1.0/usres"),
    400,
    "BadRequest",
    "Resource not found for the segment 'usres'.",
  );
  assertGraphError(
    await graph("PUT", "/v1.0/users/user0001@contoso.sandbox", {}),
    405,
    "Request_BadRequest",
    "Specified HTTP method is not allowed for the request target.",
  );
});

// ---------------------------------------------------------------------------------------------
// Fidelity to real tenants (issue 11)
// ---------------------------------------------------------------------------------------------

Deno.test("an exclude list holding the key's credential in each of Graph's three encodings is refused by the key: never a second passkey", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0003@contoso.sandbox";
  const key = await newTestKey({ pin });
  assert.equal((await register(graph, upn, key)).status, 201);
  const seen = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const options = await graph("GET", `/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`);
    const id: string = options.body.publicKey.excludeCredentials[0].id;
    seen.add(id);
    await assert.rejects(
      () =>
        create({
          options: options.body,
          origin,
          allowedRpIds: ["login.microsoft.com"],
          authenticator: key,
          interaction: scriptedUser([pin]),
        }),
      (error: unknown) => (error as { code?: string }).code === "credential-excluded",
      `exclude id ${id}`,
    );
  }
  // Three answers, the same id in each of the three encodings, in turn.
  const registered = fromBase64Any(key.store.read().credentials[0]!.id);
  assert.deepEqual(
    seen,
    new Set([toBase64Url(registered), toBase64(registered), toBase64UrlPaddingDigit(registered)]),
  );
  assert.equal(key.store.read().credentials.length, 1);
  assert.equal(sandbox.inspect().users.find((u) => u.userPrincipalName === upn)?.passkeys.length, 1);
});

Deno.test("Graph takes the bare token in Authorization as well as 'Bearer <token>' (msgraph-sdk-php-core PR #194)", async () => {
  const { sandbox } = await setup();
  await using _ = sandbox;
  const token = await appToken(sandbox);
  for (const authorization of [token, `Bearer ${token}`, `bearer ${token}`]) {
    const response = await fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, {
      headers: { authorization },
    });
    assert.equal(response.status, 200, await response.text());
  }
});

Deno.test("/users('{upn}') addresses a user as /users/{upn} does", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const byKey = await graph("GET", "/v1.0/users('user0001@contoso.sandbox')");
  assert.equal(byKey.status, 200, JSON.stringify(byKey.body));
  assert.equal(byKey.body.userPrincipalName, "user0001@contoso.sandbox");
  const options = await graph(
    "GET",
    "/v1.0/users('user0001@contoso.sandbox')/authentication/fido2Methods/creationOptions",
  );
  assert.equal(options.status, 200);
});

Deno.test("the least privileged permissions the docs list are accepted: UserAuthMethod-TAP.ReadWrite.All and Policy.Read.AuthenticationMethod", async () => {
  const apps = [
    { displayName: "tap only", permissions: ["UserAuthMethod-TAP.ReadWrite.All"] },
    { displayName: "policy reader", permissions: ["Policy.Read.AuthenticationMethod"] },
  ].map((a) => ({
    clientId: crypto.randomUUID(),
    displayName: a.displayName,
    secret: crypto.randomUUID(),
    redirectUris: [],
    applicationPermissions: a.permissions,
  }));
  const { sandbox } = await setup({ oauth: { apps } });
  await using _ = sandbox;
  const tapApp = graphClient(sandbox, await appToken(sandbox, apps[0]!));
  const target = "/v1.0/users/user0001@contoso.sandbox/authentication/temporaryAccessPassMethods";
  const created = await tapApp("POST", target, { lifetimeInMinutes: 60 });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.equal((await tapApp("GET", target)).status, 200);
  const policyApp = graphClient(sandbox, await appToken(sandbox, apps[1]!));
  const fido2 = await policyApp(
    "GET",
    "/v1.0/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2",
  );
  assert.equal(fido2.status, 200, JSON.stringify(fido2.body));
});

Deno.test("POST fido2Methods refuses attestation formats other than packed and none, and names an undecodable attestation object", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0006@contoso.sandbox";
  const key = await newTestKey({ pin });
  const body = await makeCredential(graph, upn, key);
  const attestation = decodeCbor(
    fromBase64Any(body.publicKeyCredential.response.attestationObject),
  ) as Record<
    string,
    unknown
  >;
  assert.equal(attestation["fmt"], "packed");
  const asTpm = structuredClone(body);
  asTpm.publicKeyCredential.response.attestationObject = toBase64Url(
    encodeCbor({ ...attestation, fmt: "tpm" }),
  );
  assertGraphError(
    await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, asTpm),
    400,
    "badRequest",
    /attestation format 'tpm' is not supported.*'packed', 'none'/,
  );
  const garbled = structuredClone(body);
  garbled.publicKeyCredential.response.attestationObject = "AAAA";
  assertGraphError(
    await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, garbled),
    400,
    "badRequest",
    /attestationObject could not be decoded/,
  );
  // The untouched registration still goes through (its challenge was not used up by the refusals).
  assert.equal((await graph("POST", `/v1.0/users/${upn}/authentication/fido2Methods`, body)).status, 201);
});

Deno.test("an app that may read groups but not users gets limited member objects: @odata.type and id, the rest null", async () => {
  const groupOnly = {
    clientId: crypto.randomUUID(),
    displayName: "group reader",
    secret: crypto.randomUUID(),
    redirectUris: [],
    applicationPermissions: ["GroupMember.Read.All"],
  };
  const { sandbox, graph } = await setup({ oauth: { apps: [groupOnly] } });
  await using _ = sandbox;
  const pilot = sandbox.seeded.groups.pilot;
  const path =
    `/v1.0/groups/${pilot}/transitiveMembers/microsoft.graph.user?$select=id,userPrincipalName,mail`;
  const full = await graph("GET", path);
  const limitedClient = graphClient(sandbox, await appToken(sandbox, groupOnly));
  const limited = await limitedClient("GET", path);
  assert.equal(limited.status, 200);
  assert.equal(limited.body.value.length, full.body.value.length);
  for (const [i, member] of limited.body.value.entries()) {
    assert.deepEqual(member, {
      "@odata.type": "#microsoft.graph.user",
      id: full.body.value[i].id,
      userPrincipalName: null,
      mail: null,
    });
  }
});
