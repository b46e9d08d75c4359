/**
 * App-only sign-in against the sandbox tenant over real HTTP: a client secret, and a certificate
 * generated here whose `private_key_jwt` assertion is checked for the shape Microsoft documents
 * (read off the wire through a recording fetch).
 */
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import type { SandboxApp } from "../sandbox/oauth.ts";
import { startSandbox } from "../sandbox/server.ts";
import { decodeJws, newTestCertificate, recordingFetch, tempDir } from "./_testing.ts";
import {
  acquireAppToken,
  type CertificateCredential,
  certificateCredentialFromPem,
  loadCertificateCredential,
} from "./client_credentials.ts";
import { openAuthority } from "./discovery.ts";
import { EntraAuthError } from "./errors.ts";
import { readAccessTokenClaims } from "./tokens.ts";

function certificateApp(clientId: string, publicJwk: JsonWebKey): SandboxApp {
  return {
    clientId,
    displayName: "certificate app (test)",
    certificateJwk: publicJwk,
    redirectUris: [],
    applicationPermissions: ["UserAuthMethod-Passkey.ReadWrite.All", "User.Read.All"],
    allowPublicClient: false,
  };
}

Deno.test("client credentials with a secret get an app-only Graph token with the app's roles", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const tokens = await acquireAppToken({
    authority,
    clientId: sandbox.app.clientId,
    credential: { kind: "secret", secret: sandbox.app.clientSecret, source: "PROVISIONING_CLIENT_SECRET" },
  });
  const claims = readAccessTokenClaims(tokens.accessToken);
  assertEquals(claims?.idtyp, "app");
  assertEquals(claims?.appid, sandbox.app.clientId);
  assert(claims?.roles?.includes("UserAuthenticationMethod.ReadWrite.All"));
  assertEquals(tokens.refreshToken, undefined);
});

Deno.test("a wrong client secret fails with AADSTS7000215, a hint naming the variable, and no secret in the text", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const wrong = "Wr0ng~secret-value-that-must-not-leak";
  const error = await rejects(
    acquireAppToken({
      authority,
      clientId: sandbox.app.clientId,
      credential: { kind: "secret", secret: wrong, source: "PROVISIONING_CLIENT_SECRET" },
    }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-failed");
  assertEquals(error.aadsts, "AADSTS7000215");
  assertEquals(error.oauthError, "invalid_client");
  assertEquals(error.endpoint, `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`);
  assert(error.hint?.includes("PROVISIONING_CLIENT_SECRET"), error.hint);
  for (const text of [error.message, error.hint ?? "", JSON.stringify(error)]) assert(!text.includes(wrong));
});

Deno.test("client credentials with a certificate send an RS256 assertion with x5t#S256, x5t, aud = token endpoint and a short life", async () => {
  const certificate = await newTestCertificate();
  const clientId = "4b0c2f6e-8a1d-4c3b-9e5f-7a6b5c4d3e2f";
  await using sandbox = await startSandbox({
    users: 1,
    oauth: { apps: [certificateApp(clientId, certificate.publicJwk)] },
  });
  await using dir = await tempDir();
  const pemPath = `${dir.path}/app.pem`;
  await Deno.writeTextFile(pemPath, certificate.pem);
  const recorder = recordingFetch();
  const authority = await openAuthority(sandbox.domain, {
    cloud: cloudFromSandbox(sandbox.url),
    fetch: recorder.fetch,
  });
  const credential = await loadCertificateCredential(pemPath);

  const first = await acquireAppToken({ authority, clientId, credential });
  const second = await acquireAppToken({ authority, clientId, credential });
  const claims = readAccessTokenClaims(first.accessToken);
  assertEquals(claims?.appid, clientId);
  assert(claims?.roles?.includes("UserAuthMethod-Passkey.ReadWrite.All"));
  assert(second.accessToken !== first.accessToken);

  const assertions = recorder.requests
    .filter((request) => request.url.endsWith("/oauth2/v2.0/token"))
    .map((request) => new URLSearchParams(request.body));
  assertEquals(assertions.length, 2);
  const [one, two] = assertions.map((form) => {
    assertEquals(form.get("grant_type"), "client_credentials");
    assertEquals(form.get("client_assertion_type"), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assertEquals(form.get("scope"), "https://graph.microsoft.com/.default");
    assertEquals(form.get("client_secret"), null);
    return decodeJws(form.get("client_assertion")!);
  });
  assertEquals(one!.header.alg, "RS256");
  assertEquals(one!.header.typ, "JWT");
  assertEquals(one!.header["x5t#S256"], credential.thumbprintSha256);
  assertEquals(one!.header.x5t, credential.thumbprintSha1);
  assertEquals(one!.payload.aud, `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`);
  assertEquals(one!.payload.iss, clientId);
  assertEquals(one!.payload.sub, clientId);
  const lifetime = (one!.payload.exp as number) - (one!.payload.iat as number);
  assert(lifetime > 0 && lifetime <= 600, `assertion lives ${lifetime} s`);
  assert(one!.payload.jti !== two!.payload.jti, "every assertion has its own jti");
});

Deno.test("a certificate the app registration does not have fails with AADSTS700027 and says to upload it", async () => {
  const registered = await newTestCertificate("CN=registered");
  const other = await newTestCertificate("CN=not registered");
  const clientId = "5c1d3a7f-9b2e-4d4c-8f60-8b7c6d5e4f30";
  await using sandbox = await startSandbox({
    users: 1,
    oauth: { apps: [certificateApp(clientId, registered.publicJwk)] },
  });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const credential = await certificateCredentialFromPem(other.pem, other.pem, { source: "other.pem" });
  const error = await rejects(acquireAppToken({ authority, clientId, credential }), EntraAuthError);
  assertEquals(error.code, "auth-failed");
  assertEquals(error.aadsts, "AADSTS700027");
  assert(error.hint?.includes("other.pem") && error.hint.includes("Certificates & secrets"), error.hint);
});

Deno.test("a certificate file is refused before any request when its key is missing, foreign or not PKCS#8", async () => {
  const certificate = await newTestCertificate();
  const stranger = await newTestCertificate("CN=stranger");
  const attempts: [string, string, string][] = [
    [certificate.certificatePem, certificate.certificatePem, "no private key"],
    [certificate.certificatePem, stranger.keyPem, "does not belong to the certificate"],
    [
      certificate.certificatePem,
      certificate.keyPem.replaceAll("PRIVATE KEY", "RSA PRIVATE KEY"),
      "openssl pkcs8",
    ],
    [certificate.keyPem, certificate.keyPem, "BEGIN CERTIFICATE"],
  ];
  for (const [certificatePem, keyPem, expected] of attempts) {
    const error = await rejects(
      certificateCredentialFromPem(certificatePem, keyPem, { source: "app.pem" }),
      EntraAuthError,
    );
    assert(`${error.message} ${error.hint ?? ""}`.includes(expected), `${error.message} / ${error.hint}`);
  }
});

Deno.test("an expired certificate is refused with its validity period", async () => {
  const certificate = await newTestCertificate();
  const error = await rejects(
    certificateCredentialFromPem(certificate.pem, certificate.pem, {
      source: "app.pem",
      now: () => Date.now() + 2 * 86400_000,
    }),
    EntraAuthError,
  );
  assert(error.message.includes("is valid from"), error.message);
});

Deno.test("a certificate credential can sign with PS256 as Microsoft's current page recommends", async () => {
  const certificate = await newTestCertificate();
  const clientId = "6d2e4b8a-0c3f-4e5d-9a71-9c8d7e6f5a41";
  await using sandbox = await startSandbox({
    users: 1,
    oauth: { apps: [certificateApp(clientId, certificate.publicJwk)] },
  });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const credential: CertificateCredential = await certificateCredentialFromPem(
    certificate.pem,
    certificate.pem,
    {
      source: "app.pem",
      algorithm: "PS256",
    },
  );
  const tokens = await acquireAppToken({ authority, clientId, credential });
  assertEquals(readAccessTokenClaims(tokens.accessToken)?.appid, clientId);
});
