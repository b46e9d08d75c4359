/**
 * The sandbox server: its control and inspection endpoints, HTTPS, routing to the OAuth side, and
 * a clean close.
 */
import assert from "node:assert/strict";
import { create } from "../../../core/webauthn/create.ts";
import { newTestKey, scriptedUser } from "../../../test/software_key.ts";
import { type Sandbox, selfSignedCertificate, startSandbox } from "./server.ts";

async function appToken(sandbox: Sandbox, client?: Deno.HttpClient): Promise<string> {
  const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: sandbox.app.clientId,
      client_secret: sandbox.app.clientSecret,
      scope: "https://graph.microsoft.com/.default",
    }),
    ...(client ? { client } : {}),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token;
}

async function postJson(
  url: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

Deno.test("a started sandbox names its tenant, app and admin, and answers OpenID discovery for its tenant", async () => {
  await using sandbox = await startSandbox();
  assert.match(sandbox.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(sandbox.tenant.users().length, 28, "25 users and 3 admin accounts by default");
  assert.equal(sandbox.admin.userPrincipalName, "admin@contoso.sandbox");
  assert.ok(sandbox.app.clientSecret.length > 20);
  const discovery = await fetch(`${sandbox.url}/${sandbox.tenantId}/v2.0/.well-known/openid-configuration`);
  const config = await discovery.json();
  assert.equal(discovery.status, 200);
  assert.equal(config.token_endpoint, `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`);
  const unknown = await fetch(`${sandbox.url}/nowhere`);
  const body = await unknown.json();
  assert.equal(unknown.status, 404);
  assert.match(body.error.message, /^Cannot serve "\/nowhere"/);
});

Deno.test("GET /_sandbox/inspect shows verified passkeys, outstanding TAPs and calls per route", async () => {
  await using sandbox = await startSandbox({ users: 4 });
  const headers = { authorization: `Bearer ${await appToken(sandbox)}`, "content-type": "application/json" };
  const methods = `${sandbox.url}/v1.0/users/user0001@contoso.sandbox/authentication`;
  const options = await (await fetch(`${methods}/fido2Methods/creationOptions`, { headers })).json();
  const credential = await create({
    options,
    origin: "https://login.microsoft.com",
    allowedRpIds: ["login.microsoft.com"],
    authenticator: await newTestKey({ pin: "2468" }),
    interaction: scriptedUser(["2468"]),
  });
  const created = await fetch(`${methods}/fido2Methods`, {
    method: "POST",
    headers,
    body: JSON.stringify({
      displayName: "Inspected key",
      publicKeyCredential: {
        id: credential.id,
        response: credential.response,
        clientExtensionResults: credential.clientExtensionResults,
      },
    }),
  });
  const method = await created.json();
  assert.equal(created.status, 201, JSON.stringify(method));
  const tap = await fetch(
    `${sandbox.url}/v1.0/users/user0002@contoso.sandbox/authentication/temporaryAccessPassMethods`,
    {
      method: "POST",
      headers,
      body: "{}",
    },
  );
  await tap.body?.cancel();

  const response = await fetch(`${sandbox.url}/_sandbox/inspect`);
  const inspection = await response.json();
  assert.equal(response.status, 200);
  assert.deepEqual(inspection, JSON.parse(JSON.stringify(sandbox.inspect())));
  const first = inspection.users.find((u: { userPrincipalName: string }) =>
    u.userPrincipalName === "user0001@contoso.sandbox"
  );
  assert.deepEqual(
    first.passkeys.map((p: Record<string, unknown>) => [p.id, p.displayName, p.aaGuid, p.verified]),
    [
      [method.id, "Inspected key", "70726f76-6973-696f-6e69-6e67736b0001", true],
    ],
  );
  assert.equal(inspection.temporaryAccessPassesOutstanding, 1);
  assert.deepEqual(inspection.calls, {
    "GET /v1.0/users/{id}/authentication/fido2Methods/creationOptions": 1,
    "POST /v1.0/users/{id}/authentication/fido2Methods": 1,
    "POST /v1.0/users/{id}/authentication/temporaryAccessPassMethods": 1,
  });
  assert.equal(inspection.callsTotal, 3);
  assert.equal(inspection.throttled.total, 0);
  assert.equal(inspection.pendingChallenges, 0);
});

Deno.test("POST /_sandbox/policy changes the method policies and trusted roots at run time, and refuses bad input", async () => {
  await using sandbox = await startSandbox({ users: 2 });
  const key = await newTestKey();
  const changed = await postJson(`${sandbox.url}/_sandbox/policy`, {
    fido2: {
      isAttestationEnforced: true,
      keyRestrictions: {
        isEnforced: true,
        enforcementType: "allow",
        aaGuids: ["70726f76-6973-696f-6e69-6e67736b0001"],
      },
    },
    temporaryAccessPass: { isUsableOnce: true, defaultLength: 10 },
    trustAttestationRoots: [key.store.read().attestation.rootCertificate],
  });
  assert.equal(changed.status, 200, JSON.stringify(changed.body));
  assert.equal(sandbox.tenant.fido2Policy.isAttestationEnforced, true);
  assert.equal(sandbox.tenant.fido2Policy.keyRestrictions.enforcementType, "allow");
  assert.equal(sandbox.tenant.tapPolicy.defaultLength, 10);
  assert.equal(sandbox.tenant.trustedAttestationRoots.length, 1);

  const bad = await postJson(`${sandbox.url}/_sandbox/policy`, { fido2: { isAttestationEnforced: "yes" } });
  assert.equal(bad.status, 400);
  assert.match(
    String((bad.body.error as { message: string }).message),
    /^Cannot change \/_sandbox\/policy: fido2\.isAttestationEnforced:/,
  );
  const unknownField = await postJson(`${sandbox.url}/_sandbox/policy`, { email: {} });
  assert.equal(unknownField.status, 400);
  const inconsistent = await postJson(`${sandbox.url}/_sandbox/policy`, {
    temporaryAccessPass: { defaultLifetimeInMinutes: 10 },
  });
  assert.equal(inconsistent.status, 400);
  assert.equal(
    sandbox.tenant.tapPolicy.defaultLifetimeInMinutes,
    60,
    "a refused change leaves the policy as it was",
  );

  const cleared = await postJson(`${sandbox.url}/_sandbox/policy`, { clearTrustedAttestationRoots: true });
  assert.deepEqual(cleared.body.trustedAttestationRoots, []);
  const get = await fetch(`${sandbox.url}/_sandbox/policy`);
  await get.body?.cancel();
  assert.equal(get.status, 405);
});

Deno.test("POST /_sandbox/throttle and /_sandbox/faults change limits and faults at run time", async () => {
  await using sandbox = await startSandbox({ users: 2 });
  const throttled = await postJson(`${sandbox.url}/_sandbox/throttle`, {
    resourceUnits: { small: 1 },
    scale: 0.5,
  });
  assert.equal(throttled.status, 200);
  assert.equal(sandbox.throttle.settings.resourceUnits.small, 1);
  assert.equal(sandbox.throttle.settings.scale, 0.5);
  const headers = { authorization: `Bearer ${await appToken(sandbox)}` };
  const statuses = [];
  for (let i = 0; i < 2; i++) {
    const response = await fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, { headers });
    await response.body?.cancel();
    statuses.push(response.status);
  }
  assert.deepEqual(statuses, [200, 429]);

  const faults = await postJson(`${sandbox.url}/_sandbox/faults`, {
    serverErrorRate: 1,
    serverErrorStatuses: [504],
  });
  assert.equal(faults.status, 200);
  await postJson(`${sandbox.url}/_sandbox/throttle`, { enabled: false });
  const failing = await fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, { headers });
  await failing.body?.cancel();
  assert.equal(failing.status, 504);
  const bad = await postJson(`${sandbox.url}/_sandbox/faults`, { resetRate: 2 });
  assert.equal(bad.status, 400);
});

Deno.test("HTTPS: a self-signed certificate made at start, or one given, is served and trusted per client", async () => {
  await using generated = await startSandbox({ users: 1, tls: true });
  assert.match(generated.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(generated.certificate?.startsWith("-----BEGIN CERTIFICATE-----"));
  using trusting = Deno.createHttpClient({ caCerts: [generated.certificate!] });
  const token = await appToken(generated, trusting);
  const me = await fetch(`${generated.url}/v1.0/users/user0001@contoso.sandbox`, {
    headers: { authorization: `Bearer ${token}` },
    client: trusting,
  });
  const user = await me.json();
  assert.equal(me.status, 200);
  assert.equal(user["@odata.context"], `${generated.url}/v1.0/$metadata#users/$entity`);
  await assert.rejects(
    () => fetch(`${generated.url}/_sandbox/inspect`),
    TypeError,
    "an untrusted certificate is refused",
  );

  const pair = await selfSignedCertificate();
  await using given = await startSandbox({ users: 1, tls: pair });
  assert.equal(given.certificate, undefined);
  using trustingGiven = Deno.createHttpClient({ caCerts: [pair.cert] });
  const inspect = await fetch(`${given.url}/_sandbox/inspect`, { client: trustingGiven });
  await inspect.body?.cancel();
  assert.equal(inspect.status, 200);
});

Deno.test("close() ends connections and cuts a slow fault short", async () => {
  // Ten minutes of latency: were close() to wait for it, this test would hang until CI's limit.
  const sandbox = await startSandbox({ users: 1, faults: { slowRate: 1, slowMs: 600_000 } });
  const token = await appToken(sandbox);
  const pending = fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, {
    headers: { authorization: `Bearer ${token}` },
  }).then(async (response) => {
    await response.body?.cancel();
    return response.status;
  }, () => "connection closed");
  await new Promise((resolve) => setTimeout(resolve, 100));
  await sandbox.close();
  assert.ok(["connection closed", 200].includes(await pending));
  await sandbox.close();
  await assert.rejects(() => fetch(`${sandbox.url}/_sandbox/inspect`), TypeError);
});

Deno.test("the relying party is Entra's by default; the loopback one is an explicit option whose origin is the sandbox's own", async () => {
  const register = async (sandbox: Sandbox, origin: string, rpIds: string[]) => {
    const token = await appToken(sandbox);
    const upn = "user0001@contoso.sandbox";
    const options = await (await fetch(
      `${sandbox.url}/v1.0/users/${upn}/authentication/fido2Methods/creationOptions`,
      { headers: { authorization: `Bearer ${token}` } },
    )).json();
    const key = await newTestKey({ pin: "1234" });
    const credential = await create({
      options,
      origin,
      allowedRpIds: rpIds,
      authenticator: key,
      interaction: scriptedUser(["1234"]),
    });
    const posted = await fetch(`${sandbox.url}/v1.0/users/${upn}/authentication/fido2Methods`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        displayName: "Key",
        publicKeyCredential: { id: credential.id, response: credential.response },
      }),
    });
    const body = await posted.json();
    return { rpId: options.publicKey.rp.id as string, status: posted.status, body };
  };
  {
    await using sandbox = await startSandbox({ users: 2 });
    assert.deepEqual(sandbox.tenant.webauthn.origins, ["https://login.microsoft.com"]);
    // Production's origin rule: https://<rp id> is accepted, any other origin refused by the
    // verifier (a subdomain may use the rp id, but Entra expects its own origin).
    const accepted = await register(sandbox, "https://login.microsoft.com", ["login.microsoft.com"]);
    assert.equal(accepted.rpId, "login.microsoft.com");
    assert.equal(accepted.status, 201, JSON.stringify(accepted.body));
    const other = await register(sandbox, "https://evil.login.microsoft.com", ["login.microsoft.com"]);
    assert.equal(other.status, 400);
    assert.match(other.body.error.message, /origin/i);
  }
  {
    await using sandbox = await startSandbox({ users: 2, relyingParty: "loopback" });
    const own = new URL(sandbox.url).origin;
    assert.deepEqual([sandbox.tenant.webauthn.rpId, sandbox.tenant.webauthn.origins], ["127.0.0.1", [own]]);
    const loopback = await register(sandbox, own, ["127.0.0.1"]);
    assert.equal(loopback.rpId, "127.0.0.1");
    assert.equal(loopback.status, 201, JSON.stringify(loopback.body));
  }
});
