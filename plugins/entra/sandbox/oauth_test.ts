/**
 * The sandbox's Microsoft identity platform endpoints over real HTTP on loopback: discovery,
 * JWKS, client credentials (secret, Basic, certificate), device code, authorization code with
 * PKCE, refresh, token verification, and the same flows driven by oauth4webapi, the plugin's
 * client library.
 */
import * as oauth from "oauth4webapi";
import { createLocalJWKSet, decodeJwt, exportJWK, importJWK, type JWK, jwtVerify, SignJWT } from "jose";
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { toBase64, toBase64Url } from "../../../core/bytes.ts";
import { x509 } from "../../../core/x509.ts";
import {
  createOAuthServer,
  directoryRoleTemplateIds,
  type OAuthServer,
  type OAuthServerOptions,
  type OAuthTenantConfig,
  OAuthTokenError,
} from "./oauth.ts";

const tenantId = "8d5b6b1e-3c7a-4f0e-9d52-0c2a7f1d4e90";
const domain = "contoso-sandbox.onmicrosoft.com";
const daemonId = "5f0b7a3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
const daemonSecret = "Sb8Q~not.a.real+secret/value";
const certAppId = "6a1c8b4f-2d3e-4f60-9b0c-1d2e3f4a5b6c";
const cliId = "7b2d9c5a-3e4f-4071-8c1d-2e3f4a5b6c7d";
const admin = { upn: `admin@${domain}`, password: "correct horse battery staple" };
const graphDefault = "https://graph.microsoft.com/.default";
const insecure = { [oauth.allowInsecureRequests]: true } as const;

/** An app's certificate credential: a self-signed X.509 certificate and its private key. */
interface Certificate {
  privateJwk: JWK;
  publicJwk: JsonWebKey;
  thumbprintS256: string;
}

async function newCertificate(): Promise<Certificate> {
  const algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]) };
  const keys = await crypto.subtle.generateKey({ ...algorithm, modulusLength: 2048 }, true, [
    "sign",
    "verify",
  ]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name: "CN=provisioning sandbox test app",
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 86400_000),
    signingAlgorithm: algorithm,
    keys,
  });
  const publicJwk: JsonWebKey = Object.assign(await crypto.subtle.exportKey("jwk", keys.publicKey), {
    x5c: [toBase64(new Uint8Array(certificate.rawData))],
  });
  return {
    privateJwk: await exportJWK(keys.privateKey),
    publicJwk,
    thumbprintS256: toBase64Url(new Uint8Array(await certificate.getThumbprint("SHA-256"))),
  };
}

/** A running sandbox: the OAuth server behind Deno.serve on an ephemeral loopback port. */
interface Sandbox extends AsyncDisposable {
  base: string;
  oauth: OAuthServer;
  tenant: OAuthTenantConfig;
  certificate: Certificate;
  /** Milliseconds added to the real clock: the server's injected clock. */
  clock: { offset: number };
  tokenEndpoint: string;
}

async function startSandbox(overrides: Partial<OAuthServerOptions> = {}): Promise<Sandbox> {
  const certificate = await newCertificate();
  const tenant: OAuthTenantConfig = {
    tenantId,
    domain,
    apps: [
      {
        clientId: daemonId,
        displayName: "Passkey provisioning (daemon)",
        secret: daemonSecret,
        redirectUris: [],
        applicationPermissions: ["UserAuthMethod-Passkey.ReadWrite.All", "User.Read.All"],
      },
      {
        clientId: certAppId,
        displayName: "Passkey provisioning (certificate)",
        certificateJwk: certificate.publicJwk,
        redirectUris: [],
        applicationPermissions: ["UserAuthMethod-Passkey.ReadWrite.All"],
      },
      {
        clientId: cliId,
        displayName: "Passkey provisioning (CLI)",
        redirectUris: ["http://localhost", "http://127.0.0.1/callback"],
        applicationPermissions: [],
      },
    ],
    accounts: [
      {
        objectId: "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        userPrincipalName: admin.upn,
        password: admin.password,
        directoryRoles: ["Authentication Administrator"],
      },
    ],
    delegatedScopes: ["UserAuthenticationMethod.ReadWrite.All", "User.Read.All"],
  };
  const clock = { offset: 0 };
  let base = "";
  const server = createOAuthServer({
    baseUrl: () => base,
    tenant,
    now: () => Date.now() + clock.offset,
    ...overrides,
  });
  const http = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    async (request) =>
      await server.handle(request, new URL(request.url)) ?? new Response("not found", { status: 404 }),
  );
  base = `http://127.0.0.1:${http.addr.port}`;
  return {
    base,
    oauth: server,
    tenant,
    certificate,
    clock,
    tokenEndpoint: `${base}/${tenantId}/oauth2/v2.0/token`,
    [Symbol.asyncDispose]: () => http.shutdown(),
  };
}

async function postForm(
  url: string,
  fields: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { method: "POST", body: new URLSearchParams(fields), headers });
  return { status: response.status, body: await response.json() };
}

async function postJson(
  url: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json" },
  });
  return { status: response.status, body: await response.json() };
}

/** Asserts Entra's token error shape and returns its AADSTS code. */
function assertStsError(
  result: { status: number; body: Record<string, unknown> },
  status: number,
  error: string,
  code: number,
): void {
  assertEquals(result.status, status, JSON.stringify(result.body));
  assertEquals(result.body.error, error, JSON.stringify(result.body));
  deepStrictEqual(result.body.error_codes, [code]);
  assert.match(String(result.body.error_description), new RegExp(`^AADSTS${code}: `));
  assert.match(String(result.body.error_description), /\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: /);
  assert.match(String(result.body.timestamp), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
  assert.match(String(result.body.trace_id), /^[0-9a-f-]{36}$/);
  assert.equal(typeof result.body.correlation_id, "string");
}

/** Signs a client assertion as Microsoft's certificate credentials page describes it. */
async function clientAssertion(
  sandbox: Sandbox,
  changes: { aud?: string; jti?: string; exp?: number; privateJwk?: JWK; header?: Record<string, string> } =
    {},
): Promise<string> {
  const now = Math.floor((Date.now() + sandbox.clock.offset) / 1000);
  const key = await importJWK(changes.privateJwk ?? sandbox.certificate.privateJwk, "PS256");
  return await new SignJWT({ jti: changes.jti ?? crypto.randomUUID() })
    .setProtectedHeader(
      changes.header
        ? { alg: "PS256", ...changes.header }
        : { alg: "PS256", typ: "JWT", "x5t#S256": sandbox.certificate.thumbprintS256 },
    )
    .setAudience(changes.aud ?? sandbox.tokenEndpoint)
    .setIssuer(certAppId)
    .setSubject(certAppId)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(changes.exp ?? now + 600)
    .sign(key);
}

async function pkcePair(): Promise<{ verifier: string; challenge: string }> {
  const verifier = oauth.generateRandomCodeVerifier();
  return { verifier, challenge: await oauth.calculatePKCECodeChallenge(verifier) };
}

// ---------------------------------------------------------------------------------------------
// Discovery and keys
// ---------------------------------------------------------------------------------------------

Deno.test("discovery answers for the tenant id and its domain with the tenant's issuer and endpoints", async () => {
  await using sandbox = await startSandbox();
  for (const alias of [tenantId, domain, domain.toUpperCase()]) {
    const response = await fetch(`${sandbox.base}/${alias}/v2.0/.well-known/openid-configuration`);
    assertEquals(response.status, 200);
    const document = await response.json();
    assertEquals(document.issuer, `${sandbox.base}/${tenantId}/v2.0`);
    assertEquals(document.token_endpoint, `${sandbox.base}/${tenantId}/oauth2/v2.0/token`);
    assertEquals(document.authorization_endpoint, `${sandbox.base}/${tenantId}/oauth2/v2.0/authorize`);
    assertEquals(
      document.device_authorization_endpoint,
      `${sandbox.base}/${tenantId}/oauth2/v2.0/devicecode`,
    );
    assertEquals(document.jwks_uri, `${sandbox.base}/${tenantId}/discovery/v2.0/keys`);
    assertEquals(document.tenant_region_scope, "WW");
    deepStrictEqual(document.token_endpoint_auth_methods_supported, [
      "client_secret_post",
      "private_key_jwt",
      "client_secret_basic",
    ]);
  }
});

Deno.test("discovery for common and organizations carries the {tenantid} placeholder issuer, an unknown tenant is AADSTS90002", async () => {
  await using sandbox = await startSandbox();
  for (const alias of ["common", "organizations"]) {
    const document = await (await fetch(`${sandbox.base}/${alias}/v2.0/.well-known/openid-configuration`))
      .json();
    assertEquals(document.issuer, `${sandbox.base}/{tenantid}/v2.0`);
    assertEquals(document.token_endpoint, `${sandbox.base}/${alias}/oauth2/v2.0/token`);
  }
  const response = await fetch(`${sandbox.base}/fabrikam.example/v2.0/.well-known/openid-configuration`);
  assertStsError({ status: response.status, body: await response.json() }, 400, "invalid_tenant", 90002);
  const other = await fetch(`${sandbox.base}/v1.0/users`);
  assertEquals(other.status, 404, "paths that are not the identity platform's are left to the caller");
  await other.body?.cancel();
});

Deno.test("the JWKS publishes the RS256 key that verifies the tokens the token endpoint issues", async () => {
  await using sandbox = await startSandbox();
  const keys = await (await fetch(`${sandbox.base}/${domain}/discovery/v2.0/keys`)).json();
  assertEquals(keys.keys.length, 1);
  assertEquals(keys.keys[0].kty, "RSA");
  assertEquals(keys.keys[0].use, "sig");
  assertEquals(typeof keys.keys[0].kid, "string");
  const issued = await postForm(sandbox.tokenEndpoint, {
    grant_type: "client_credentials",
    client_id: daemonId,
    client_secret: daemonSecret,
    scope: graphDefault,
  });
  assertEquals(issued.status, 200);
  const { payload, protectedHeader } = await jwtVerify(
    String(issued.body.access_token),
    createLocalJWKSet(keys),
    {
      issuer: `https://sts.windows.net/${tenantId}/`,
      audience: "https://graph.microsoft.com",
    },
  );
  assertEquals(protectedHeader.kid, keys.keys[0].kid);
  assertEquals(payload.tid, tenantId);
});

// ---------------------------------------------------------------------------------------------
// Client credentials
// ---------------------------------------------------------------------------------------------

Deno.test("client credentials with a secret in the body or in HTTP Basic answer an app token carrying the app's roles", async () => {
  await using sandbox = await startSandbox();
  const inBody = await postForm(sandbox.tokenEndpoint, {
    grant_type: "client_credentials",
    client_id: daemonId,
    client_secret: daemonSecret,
    scope: graphDefault,
  });
  const basic = `Basic ${btoa(`${encodeURIComponent(daemonId)}:${encodeURIComponent(daemonSecret)}`)}`;
  const inHeader = await postForm(
    `${sandbox.base}/${domain}/oauth2/v2.0/token`,
    { grant_type: "client_credentials", scope: graphDefault },
    { authorization: basic },
  );
  for (const result of [inBody, inHeader]) {
    assertEquals(result.status, 200, JSON.stringify(result.body));
    assertEquals(result.body.token_type, "Bearer");
    assertEquals(result.body.expires_in, 3599);
    assertEquals(result.body.refresh_token, undefined, "client credentials never answer a refresh token");
    const claims = decodeJwt(String(result.body.access_token));
    assertEquals(claims.aud, "https://graph.microsoft.com");
    assertEquals(claims.iss, `https://sts.windows.net/${tenantId}/`);
    assertEquals(claims.appid, daemonId);
    assertEquals(claims.appidacr, "1");
    assertEquals(claims.idtyp, "app");
    assertEquals(claims.ver, "1.0");
    deepStrictEqual(claims.roles, ["UserAuthMethod-Passkey.ReadWrite.All", "User.Read.All"]);
    const principal = await sandbox.oauth.verifyAccessToken(`Bearer ${result.body.access_token}`);
    assertEquals(principal.kind, "app");
    assertEquals(principal.clientId, daemonId);
    assertEquals(principal.tenantId, tenantId);
    deepStrictEqual(principal.roles, ["UserAuthMethod-Passkey.ReadWrite.All", "User.Read.All"]);
    deepStrictEqual(principal.scopes, []);
  }
});

Deno.test("client credentials refuse an unknown client (700016), a wrong secret (7000215), no credential (7000218) and a scope other than Graph's .default (70011)", async () => {
  await using sandbox = await startSandbox();
  const request = { grant_type: "client_credentials", client_id: daemonId, client_secret: daemonSecret };
  assertStsError(
    await postForm(sandbox.tokenEndpoint, {
      ...request,
      client_id: crypto.randomUUID(),
      scope: graphDefault,
    }),
    400,
    "unauthorized_client",
    700016,
  );
  assertStsError(
    await postForm(sandbox.tokenEndpoint, { ...request, client_secret: "wrong", scope: graphDefault }),
    401,
    "invalid_client",
    7000215,
  );
  assertStsError(
    await postForm(sandbox.tokenEndpoint, {
      grant_type: "client_credentials",
      client_id: daemonId,
      scope: graphDefault,
    }),
    401,
    "invalid_client",
    7000218,
  );
  for (
    const scope of ["https://graph.microsoft.com/User.Read.All", "https://management.azure.com/.default"]
  ) {
    assertStsError(await postForm(sandbox.tokenEndpoint, { ...request, scope }), 400, "invalid_scope", 70011);
  }
  assertStsError(await postForm(sandbox.tokenEndpoint, request), 400, "invalid_request", 900144);
  assertStsError(
    await postForm(`${sandbox.base}/common/oauth2/v2.0/token`, { ...request, scope: graphDefault }),
    400,
    "invalid_request",
    9001023,
  );
  const correlated = await fetch(sandbox.tokenEndpoint, {
    method: "POST",
    body: new URLSearchParams({ ...request, client_secret: "wrong", scope: graphDefault }),
    headers: { "client-request-id": "7f9c7a44-5b8e-4c43-9a55-1b2c3d4e5f60" },
  });
  assertEquals((await correlated.json()).correlation_id, "7f9c7a44-5b8e-4c43-9a55-1b2c3d4e5f60");
});

Deno.test("client credentials with a certificate: a good assertion is accepted once, a wrong key, a reused jti, a wrong audience and an expired one are refused", async () => {
  await using sandbox = await startSandbox();
  const request = (assertion: string) =>
    postForm(sandbox.tokenEndpoint, {
      grant_type: "client_credentials",
      client_id: certAppId,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
      scope: graphDefault,
    });

  const jti = crypto.randomUUID();
  const good = await request(await clientAssertion(sandbox, { jti }));
  assertEquals(good.status, 200, JSON.stringify(good.body));
  const claims = decodeJwt(String(good.body.access_token));
  assertEquals(claims.appid, certAppId);
  assertEquals(claims.appidacr, "2", "a certificate credential is appidacr 2");

  assertStsError(await request(await clientAssertion(sandbox, { jti })), 401, "invalid_client", 50013);

  const stranger = await newCertificate();
  assertStsError(
    await request(await clientAssertion(sandbox, { privateJwk: stranger.privateJwk })),
    401,
    "invalid_client",
    700027,
  );
  assertStsError(
    await request(
      await clientAssertion(sandbox, {
        privateJwk: stranger.privateJwk,
        header: { typ: "JWT", "x5t#S256": stranger.thumbprintS256 },
      }),
    ),
    401,
    "invalid_client",
    700027,
  );
  assertStsError(
    await request(await clientAssertion(sandbox, { header: { typ: "JWT" } })),
    401,
    "invalid_client",
    700027,
  );
  for (
    const aud of [
      `${sandbox.base}/${tenantId}/v2.0`,
      "https://login.microsoftonline.com/common/oauth2/v2.0/token",
    ]
  ) {
    assertStsError(await request(await clientAssertion(sandbox, { aud })), 401, "invalid_client", 50027);
  }
  const past = Math.floor(Date.now() / 1000) - 3600;
  assertStsError(await request(await clientAssertion(sandbox, { exp: past })), 401, "invalid_client", 700024);
  assertStsError(await request("not.a.jwt"), 401, "invalid_client", 50027);

  const byDomain = await postForm(`${sandbox.base}/${domain}/oauth2/v2.0/token`, {
    grant_type: "client_credentials",
    client_id: certAppId,
    client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    client_assertion: await clientAssertion(sandbox, { aud: `${sandbox.base}/${domain}/oauth2/v2.0/token` }),
    scope: graphDefault,
  });
  assertEquals(byDomain.status, 200, "the token endpoint under the tenant's domain is an accepted audience");
});

// ---------------------------------------------------------------------------------------------
// Device code
// ---------------------------------------------------------------------------------------------

Deno.test("device code end to end: pending, slow_down when polled too fast, wrong password refused, then tokens once approved", async () => {
  await using sandbox = await startSandbox();
  const scope =
    "https://graph.microsoft.com/UserAuthenticationMethod.ReadWrite.All openid profile offline_access";
  const started = await postForm(`${sandbox.base}/organizations/oauth2/v2.0/devicecode`, {
    client_id: cliId,
    scope,
  });
  assertEquals(started.status, 200, JSON.stringify(started.body));
  assertEquals(started.body.verification_uri, `${sandbox.base}/devicelogin`);
  assertEquals(started.body.expires_in, 900);
  assertEquals(started.body.interval, 5);
  assert.match(String(started.body.user_code), /^[A-Z0-9]{9}$/);
  assert.ok(String(started.body.message).includes(String(started.body.user_code)));
  const poll = () =>
    postForm(`${sandbox.base}/organizations/oauth2/v2.0/token`, {
      grant_type: "urn:ietf:params:oauth:grant-type:device_code",
      client_id: cliId,
      device_code: String(started.body.device_code),
    });

  assertStsError(await poll(), 400, "authorization_pending", 70016);
  assertStsError(await poll(), 400, "slow_down", 70016);
  sandbox.clock.offset += 6_000;
  assertStsError(await poll(), 400, "slow_down", 70016);
  sandbox.clock.offset += 16_000;
  assertStsError(await poll(), 400, "authorization_pending", 70016);

  const page = await fetch(`${sandbox.base}/devicelogin`);
  assert.match(await page.text(), /name="user_code"/);
  assertStsError(
    await postJson(`${sandbox.base}/_sandbox/device/approve`, {
      user_code: started.body.user_code,
      userPrincipalName: admin.upn,
      password: "wrong",
    }),
    400,
    "invalid_grant",
    50126,
  );
  const approved = await postJson(`${sandbox.base}/_sandbox/device/approve`, {
    user_code: String(started.body.user_code).toLowerCase(),
    userPrincipalName: admin.upn.toUpperCase(),
    password: admin.password,
  });
  assertEquals(approved.status, 200);
  sandbox.clock.offset += 16_000;
  const tokens = await poll();
  assertEquals(tokens.status, 200, JSON.stringify(tokens.body));
  assertEquals(
    tokens.body.scope,
    "https://graph.microsoft.com/UserAuthenticationMethod.ReadWrite.All openid profile offline_access",
  );
  assertEquals(typeof tokens.body.refresh_token, "string");
  const idToken = decodeJwt(String(tokens.body.id_token));
  assertEquals(idToken.aud, cliId);
  assertEquals(idToken.iss, `${sandbox.base}/${tenantId}/v2.0`);
  assertEquals(idToken.preferred_username, admin.upn);
  const access = decodeJwt(String(tokens.body.access_token));
  assertEquals(access.scp, "UserAuthenticationMethod.ReadWrite.All");
  assertEquals(access.upn, admin.upn);
  assertEquals(access.appidacr, "0");
  deepStrictEqual(access.wids, [directoryRoleTemplateIds["Authentication Administrator"]]);
  const principal = await sandbox.oauth.verifyAccessToken(`Bearer ${tokens.body.access_token}`);
  deepStrictEqual(principal, {
    kind: "user",
    clientId: cliId,
    tenantId,
    objectId: "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
    userPrincipalName: admin.upn,
    scopes: ["UserAuthenticationMethod.ReadWrite.All"],
    roles: [],
    directoryRoles: ["Authentication Administrator"],
  });
  assertStsError(await poll(), 400, "invalid_grant", 70000);
});

Deno.test("device code: a declined sign-in answers authorization_declined, an old code expired_token, an unknown one bad_verification_code", async () => {
  await using sandbox = await startSandbox();
  const start = () =>
    postForm(`${sandbox.base}/${tenantId}/oauth2/v2.0/devicecode`, { client_id: cliId, scope: graphDefault });
  const poll = (deviceCode: string) =>
    postForm(sandbox.tokenEndpoint, {
      grant_type: "urn:ietf:params:oauth:grant-type:device_code",
      client_id: cliId,
      device_code: deviceCode,
    });

  const declined = await start();
  const form = new URLSearchParams({
    user_code: String(declined.body.user_code),
    username: admin.upn,
    password: admin.password,
    action: "decline",
  });
  const page = await fetch(`${sandbox.base}/devicelogin`, { method: "POST", body: form });
  assertEquals(page.status, 200);
  assert.match(await page.text(), /declined/);
  assertStsError(await poll(String(declined.body.device_code)), 400, "authorization_declined", 65004);

  const expired = await start();
  sandbox.clock.offset += 901_000;
  assertStsError(await poll(String(expired.body.device_code)), 400, "expired_token", 70019);
  assertStsError(
    await postJson(`${sandbox.base}/_sandbox/device/approve`, {
      user_code: expired.body.user_code,
      userPrincipalName: admin.upn,
      password: admin.password,
    }),
    400,
    "expired_token",
    70019,
  );
  assertStsError(await poll("no-such-device-code"), 400, "bad_verification_code", 70018);
  assertStsError(
    await postForm(`${sandbox.base}/${tenantId}/oauth2/v2.0/devicecode`, {
      client_id: daemonId,
      client_secret: "wrong",
      scope: graphDefault,
    }),
    401,
    "invalid_client",
    7000215,
  );
  assertStsError(
    await postForm(`${sandbox.base}/${tenantId}/oauth2/v2.0/devicecode`, {
      client_id: cliId,
      scope: "https://graph.microsoft.com/Mail.Read",
    }),
    400,
    "consent_required",
    65001,
  );
});

// ---------------------------------------------------------------------------------------------
// Authorization code with PKCE, refresh
// ---------------------------------------------------------------------------------------------

Deno.test("authorization code with PKCE through the sign-in form: loopback redirect on any port, PKCE mismatch refused, a reused code refused and its refresh tokens revoked", async () => {
  await using sandbox = await startSandbox();
  const { verifier, challenge } = await pkcePair();
  const redirectUri = "http://localhost:53682";
  const authorizeUrl = new URL(`${sandbox.base}/${domain}/oauth2/v2.0/authorize`);
  authorizeUrl.search = new URLSearchParams({
    client_id: cliId,
    response_type: "code",
    redirect_uri: redirectUri,
    scope: "UserAuthenticationMethod.ReadWrite.All offline_access",
    state: "state-123",
    code_challenge: challenge,
    code_challenge_method: "S256",
    login_hint: admin.upn,
  }).toString();

  const page = await fetch(authorizeUrl);
  assertEquals(page.status, 200);
  const html = await page.text();
  const transaction = html.match(/name="transaction" value="([^"]+)"/)?.[1];
  assert.ok(transaction, "the sign-in form carries its transaction");
  assert.ok(html.includes(`value="${admin.upn}"`), "login_hint fills the user name");

  const signInUrl = `${sandbox.base}/${domain}/oauth2/v2.0/authorize`;
  const wrong = await fetch(signInUrl, {
    method: "POST",
    body: new URLSearchParams({ transaction, username: admin.upn, password: "wrong" }),
    redirect: "manual",
  });
  assertEquals(wrong.status, 400);
  assert.match(await wrong.text(), /AADSTS50126: /);

  const signedIn = await fetch(signInUrl, {
    method: "POST",
    body: new URLSearchParams({ transaction, username: admin.upn, password: admin.password }),
    redirect: "manual",
  });
  assertEquals(signedIn.status, 302);
  await signedIn.body?.cancel();
  const callback = new URL(signedIn.headers.get("location")!);
  assertEquals(callback.origin, "http://localhost:53682");
  assertEquals(callback.pathname, "/");
  assertEquals(callback.searchParams.get("state"), "state-123");
  const code = callback.searchParams.get("code")!;

  const redeem = (codeVerifier: string) =>
    postForm(sandbox.tokenEndpoint, {
      grant_type: "authorization_code",
      client_id: cliId,
      code,
      redirect_uri: redirectUri,
      code_verifier: codeVerifier,
    });
  assertStsError(await redeem(oauth.generateRandomCodeVerifier()), 400, "invalid_grant", 501481);
  const tokens = await redeem(verifier);
  assertEquals(tokens.status, 200, JSON.stringify(tokens.body));
  assertEquals(tokens.body.id_token, undefined, "no id_token without the openid scope");
  const refreshToken = String(tokens.body.refresh_token);
  assertStsError(await redeem(verifier), 400, "invalid_grant", 54005);
  assertStsError(
    await postForm(sandbox.tokenEndpoint, {
      grant_type: "refresh_token",
      client_id: cliId,
      refresh_token: refreshToken,
    }),
    400,
    "invalid_grant",
    70000,
  );
  assertStsError(
    await postForm(sandbox.tokenEndpoint, {
      grant_type: "authorization_code",
      client_id: cliId,
      code: "not-a-code",
      redirect_uri: redirectUri,
    }),
    400,
    "invalid_grant",
    9002313,
  );
});

Deno.test("authorize refuses an unregistered redirect URI on its own page and reports other errors to the redirect URI", async () => {
  await using sandbox = await startSandbox();
  const authorize = (params: Record<string, string>) =>
    fetch(`${sandbox.base}/${tenantId}/oauth2/v2.0/authorize?${new URLSearchParams(params)}`, {
      redirect: "manual",
    });
  const base = { client_id: cliId, response_type: "code", scope: graphDefault, state: "s" };

  for (
    const redirectUri of [
      "https://evil.example/callback",
      "http://localhost:8080/other",
      "http://127.0.0.2/callback",
    ]
  ) {
    const response = await authorize({ ...base, redirect_uri: redirectUri });
    assertEquals(response.status, 400, redirectUri);
    assert.match(await response.text(), /AADSTS50011/);
  }
  const viaApproval = new URL(`${sandbox.base}/${tenantId}/oauth2/v2.0/authorize`);
  viaApproval.search = new URLSearchParams({ ...base, redirect_uri: "https://evil.example/callback" })
    .toString();
  assertStsError(
    await postJson(`${sandbox.base}/_sandbox/authorize/approve`, {
      authorizeUrl: viaApproval.href,
      userPrincipalName: admin.upn,
      password: admin.password,
    }),
    400,
    "invalid_request",
    50011,
  );
  const unknownClient = await authorize({
    ...base,
    client_id: crypto.randomUUID(),
    redirect_uri: "http://localhost",
  });
  assertEquals(unknownClient.status, 400);
  assert.match(await unknownClient.text(), /AADSTS700016/);

  const token = await authorize({
    ...base,
    response_type: "token",
    redirect_uri: "http://127.0.0.1:4242/callback",
  });
  assertEquals(token.status, 302);
  await token.body?.cancel();
  const location = new URL(token.headers.get("location")!);
  assertEquals(location.origin + location.pathname, "http://127.0.0.1:4242/callback");
  assertEquals(location.searchParams.get("error"), "unsupported_response_type");
  assertEquals(location.searchParams.get("state"), "s");
  assert.match(location.searchParams.get("error_description")!, /^AADSTS700054: /);
});

Deno.test("refresh answers a new refresh token each time; the old one stays valid as Microsoft documents, unless revokeUsedRefreshTokens", async () => {
  for (const revokeUsedRefreshTokens of [false, true]) {
    await using sandbox = await startSandbox({ revokeUsedRefreshTokens });
    const { verifier, challenge } = await pkcePair();
    const authorizeUrl = new URL(`${sandbox.base}/${tenantId}/oauth2/v2.0/authorize`);
    authorizeUrl.search = new URLSearchParams({
      client_id: cliId,
      response_type: "code",
      redirect_uri: "http://127.0.0.1:61000/callback",
      scope: "https://graph.microsoft.com/.default openid offline_access",
      code_challenge: challenge,
      code_challenge_method: "S256",
    }).toString();
    // The authorize endpoint also accepts the credentials with the request's own parameters.
    const signedIn = await fetch(`${sandbox.base}/${tenantId}/oauth2/v2.0/authorize`, {
      method: "POST",
      body: new URLSearchParams({
        ...Object.fromEntries(authorizeUrl.searchParams),
        username: admin.upn,
        password: admin.password,
      }),
      redirect: "manual",
    });
    assertEquals(signedIn.status, 302);
    await signedIn.body?.cancel();
    const code = new URL(signedIn.headers.get("location")!).searchParams.get("code")!;
    const first = await postForm(sandbox.tokenEndpoint, {
      grant_type: "authorization_code",
      client_id: cliId,
      code,
      redirect_uri: "http://127.0.0.1:61000/callback",
      code_verifier: verifier,
    });
    assertEquals(first.status, 200, JSON.stringify(first.body));
    assertEquals(
      decodeJwt(String(first.body.access_token)).scp,
      "UserAuthenticationMethod.ReadWrite.All User.Read.All",
      ".default grants every consented delegated permission",
    );
    const refresh = (refreshToken: unknown) =>
      postForm(sandbox.tokenEndpoint, {
        grant_type: "refresh_token",
        client_id: cliId,
        refresh_token: String(refreshToken),
        scope: "https://graph.microsoft.com/User.Read.All offline_access",
      });
    const second = await refresh(first.body.refresh_token);
    assertEquals(second.status, 200, JSON.stringify(second.body));
    assert.notEqual(second.body.refresh_token, first.body.refresh_token, "a new refresh token is issued");
    assertEquals(
      decodeJwt(String(second.body.access_token)).scp,
      "User.Read.All",
      "a narrower scope is honoured",
    );
    assertEquals(second.body.id_token, undefined, "no id_token when the refresh asks no openid scope");
    const again = await refresh(first.body.refresh_token);
    if (revokeUsedRefreshTokens) assertStsError(again, 400, "invalid_grant", 70000);
    else assertEquals(again.status, 200);
    const unscoped = await postForm(sandbox.tokenEndpoint, {
      grant_type: "refresh_token",
      client_id: cliId,
      refresh_token: String(second.body.refresh_token),
    });
    assertEquals(unscoped.status, 200);
    assertEquals(
      typeof unscoped.body.id_token,
      "string",
      "without scope, the original grant (openid) applies",
    );
    assertStsError(
      await postForm(sandbox.tokenEndpoint, {
        grant_type: "refresh_token",
        client_id: daemonId,
        client_secret: daemonSecret,
        refresh_token: String(second.body.refresh_token),
      }),
      400,
      "invalid_grant",
      70000,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// verifyAccessToken
// ---------------------------------------------------------------------------------------------

Deno.test("verifyAccessToken accepts a fresh token and refuses expired, tampered, foreign, wrong-audience and missing ones", async () => {
  await using sandbox = await startSandbox({ accessTokenLifetimeSeconds: 600 });
  const issued = await postForm(sandbox.tokenEndpoint, {
    grant_type: "client_credentials",
    client_id: daemonId,
    client_secret: daemonSecret,
    scope: graphDefault,
  });
  assertEquals(issued.body.expires_in, 600);
  const accessToken = String(issued.body.access_token);
  assertEquals((await sandbox.oauth.verifyAccessToken(`bearer ${accessToken}`)).clientId, daemonId);

  const refusal = async (authorization: string | null, pattern: RegExp) => {
    const error = await rejects(sandbox.oauth.verifyAccessToken(authorization), OAuthTokenError);
    assertEquals(error.status, 401);
    assertEquals(error.code, "InvalidAuthenticationToken");
    assert.match(error.message, pattern);
  };
  await refusal(null, /empty/);
  await refusal("Basic abc", /empty/);
  await refusal("Bearer not-a-jwt", /not a well-formed JWT/);

  const [header, payload, signature] = accessToken.split(".") as [string, string, string];
  const claims = JSON.parse(
    new TextDecoder().decode(
      Uint8Array.from(atob(payload.replaceAll("-", "+").replaceAll("_", "/")), (c) => c.charCodeAt(0)),
    ),
  );
  claims.roles = ["Directory.ReadWrite.All"];
  const forged = toBase64Url(new TextEncoder().encode(JSON.stringify(claims)));
  await refusal(`Bearer ${header}.${forged}.${signature}`, /Invalid signature/);

  await using other = await startSandbox();
  const foreign = await postForm(other.tokenEndpoint, {
    grant_type: "client_credentials",
    client_id: daemonId,
    client_secret: daemonSecret,
    scope: graphDefault,
  });
  await refusal(`Bearer ${foreign.body.access_token}`, /Invalid signature/);

  const device = await postForm(`${sandbox.base}/${tenantId}/oauth2/v2.0/devicecode`, {
    client_id: cliId,
    scope: "openid User.Read.All",
  });
  await postJson(`${sandbox.base}/_sandbox/device/approve`, {
    user_code: device.body.user_code,
    userPrincipalName: admin.upn,
    password: admin.password,
  });
  const user = await postForm(sandbox.tokenEndpoint, {
    grant_type: "urn:ietf:params:oauth:grant-type:device_code",
    client_id: cliId,
    device_code: String(device.body.device_code),
  });
  await refusal(`Bearer ${user.body.id_token}`, /Invalid audience/);
  assertEquals((await sandbox.oauth.verifyAccessToken(`Bearer ${user.body.access_token}`)).kind, "user");

  sandbox.clock.offset += 600_000 + 301_000;
  await refusal(`Bearer ${accessToken}`, /expired/);
});

// ---------------------------------------------------------------------------------------------
// oauth4webapi, the plugin's client library
// ---------------------------------------------------------------------------------------------

async function discover(sandbox: Sandbox): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(`${sandbox.base}/${tenantId}/v2.0`);
  const response = await oauth.discoveryRequest(issuer, { algorithm: "oidc", ...insecure });
  return await oauth.processDiscoveryResponse(issuer, response);
}

Deno.test("oauth4webapi: discovery and client credentials with client_secret_post, client_secret_basic and private_key_jwt", async () => {
  await using sandbox = await startSandbox();
  const as = await discover(sandbox);
  const parameters = { scope: graphDefault };

  for (const auth of [oauth.ClientSecretPost(daemonSecret), oauth.ClientSecretBasic(daemonSecret)]) {
    const response = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: daemonId },
      auth,
      parameters,
      insecure,
    );
    const result = await oauth.processClientCredentialsResponse(as, { client_id: daemonId }, response);
    assertEquals(result.token_type, "bearer");
    assertEquals((await sandbox.oauth.verifyAccessToken(`Bearer ${result.access_token}`)).clientId, daemonId);
  }

  const key = await importJWK(sandbox.certificate.privateJwk, "PS256") as CryptoKey;
  const documented = oauth.PrivateKeyJwt(key, {
    [oauth.modifyAssertion](header, payload) {
      // Microsoft's certificate credentials page: aud is the token endpoint, x5t#S256 names the certificate.
      header["x5t#S256"] = sandbox.certificate.thumbprintS256;
      payload.aud = as.token_endpoint;
    },
  });
  const client = { client_id: certAppId };
  const response = await oauth.clientCredentialsGrantRequest(as, client, documented, parameters, insecure);
  const result = await oauth.processClientCredentialsResponse(as, client, response);
  assertEquals(decodeJwt(result.access_token).appidacr, "2");

  const issuerAudience = oauth.PrivateKeyJwt(key, {
    [oauth.modifyAssertion](header) {
      header["x5t#S256"] = sandbox.certificate.thumbprintS256;
    },
  });
  const refused = await oauth.clientCredentialsGrantRequest(as, client, issuerAudience, parameters, insecure);
  const error = await rejects(
    oauth.processClientCredentialsResponse(as, client, refused),
    oauth.ResponseBodyError,
  );
  assertEquals(error.error, "invalid_client");
  deepStrictEqual(
    error.cause.error_codes,
    [50027],
    "oauth4webapi's default aud (the issuer) is not accepted",
  );
});

Deno.test("oauth4webapi: the device authorization grant with authorization_pending, then tokens after approval", async () => {
  await using sandbox = await startSandbox();
  const as = await discover(sandbox);
  const client = { client_id: cliId };
  const started = await oauth.processDeviceAuthorizationResponse(
    as,
    client,
    await oauth.deviceAuthorizationRequest(as, client, oauth.None(), {
      scope: "UserAuthenticationMethod.ReadWrite.All openid offline_access",
    }, insecure),
  );
  const poll = async () =>
    await oauth.processDeviceCodeResponse(
      as,
      client,
      await oauth.deviceCodeGrantRequest(as, client, oauth.None(), started.device_code, insecure),
    );
  const pending = await rejects(poll(), oauth.ResponseBodyError);
  assertEquals(pending.error, "authorization_pending");
  const tooFast = await rejects(poll(), oauth.ResponseBodyError);
  assertEquals(tooFast.error, "slow_down");

  await postJson(`${sandbox.base}/_sandbox/device/approve`, {
    user_code: started.user_code,
    userPrincipalName: admin.upn,
    password: admin.password,
  });
  sandbox.clock.offset += 11_000;
  const tokens = await poll();
  assertEquals(tokens.token_type, "bearer");
  assertEquals(typeof tokens.refresh_token, "string");
  const claims = oauth.getValidatedIdTokenClaims(tokens);
  assertEquals(claims?.preferred_username, admin.upn);

  const refreshed = await oauth.processRefreshTokenResponse(
    as,
    client,
    await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token!, insecure),
  );
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  const principal = await sandbox.oauth.verifyAccessToken(`Bearer ${refreshed.access_token}`);
  deepStrictEqual(principal.directoryRoles, ["Authentication Administrator"]);
});

Deno.test("oauth4webapi: authorization code with PKCE and nonce, signed in through the sandbox approval endpoint", async () => {
  await using sandbox = await startSandbox();
  const as = await discover(sandbox);
  const client = { client_id: cliId };
  const { verifier, challenge } = await pkcePair();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const redirectUri = "http://127.0.0.1:49152/callback";
  const authorizeUrl = new URL(as.authorization_endpoint!);
  authorizeUrl.search = new URLSearchParams({
    client_id: cliId,
    response_type: "code",
    redirect_uri: redirectUri,
    scope: "openid profile offline_access https://graph.microsoft.com/UserAuthenticationMethod.ReadWrite.All",
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();

  const approved = await postJson(`${sandbox.base}/_sandbox/authorize/approve`, {
    authorizeUrl: authorizeUrl.href,
    userPrincipalName: admin.upn,
    password: admin.password,
  });
  assertEquals(approved.status, 200, JSON.stringify(approved.body));
  const callback = new URL(String(approved.body.location));
  const parameters = oauth.validateAuthResponse(as, client, callback, state);
  const response = await oauth.authorizationCodeGrantRequest(
    as,
    client,
    oauth.None(),
    parameters,
    redirectUri,
    verifier,
    insecure,
  );
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, response, {
    expectedNonce: nonce,
    requireIdToken: true,
  });
  assertEquals(oauth.getValidatedIdTokenClaims(tokens)?.tid, tenantId);
  const principal = await sandbox.oauth.verifyAccessToken(`Bearer ${tokens.access_token}`);
  deepStrictEqual(principal.scopes, ["UserAuthenticationMethod.ReadWrite.All"]);
  assertEquals(principal.userPrincipalName, admin.upn);
});
