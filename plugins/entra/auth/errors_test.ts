/**
 * Sign-in errors: what a token endpoint says becomes a message with Microsoft's AADSTS code and a
 * hint, and nothing secret survives even when an endpoint echoes it back.
 */
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { acquireAppToken } from "./client_credentials.ts";
import { openAuthority } from "./discovery.ts";
import { adminConsentUrl, EntraAuthError, redact } from "./errors.ts";

const tenantId = "0f0e0d0c-0b0a-4909-8807-060504030201";

/** A token service that refuses every grant, quoting the request body in its description. */
function echoingTokenService() {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const url = new URL(request.url);
    const root = `${url.origin}/${tenantId}`;
    if (request.method === "GET") {
      return Response.json({
        issuer: `${root}/v2.0`,
        authorization_endpoint: `${root}/oauth2/v2.0/authorize`,
        token_endpoint: `${root}/oauth2/v2.0/token`,
      });
    }
    const body = await request.text();
    return Response.json({
      error: "invalid_client",
      error_description:
        `AADSTS7000215: Invalid client secret provided, request was ${decodeURIComponent(body)}.\r\n` +
        "Trace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 2026-01-01 00:00:00Z",
      error_codes: [7000215],
    }, { status: 401 });
  });
}

Deno.test("a secret an endpoint echoes back is redacted from the error", async () => {
  await using server = echoingTokenService();
  const authority = await openAuthority(tenantId, {
    cloud: cloudFromSandbox(`http://127.0.0.1:${server.addr.port}`),
  });
  const secret = "Echoed~Secret_Value.123";
  const error = await rejects(
    acquireAppToken({
      authority,
      clientId: "00001111-aaaa-2222-bbbb-3333cccc4444",
      credential: { kind: "secret", secret, source: "PROVISIONING_CLIENT_SECRET" },
    }),
    EntraAuthError,
  );
  assertEquals(error.aadsts, "AADSTS7000215");
  assert(error.message.includes("[redacted]"), error.message);
  assert(!error.message.includes(secret), error.message);
  assert(!error.message.includes("Trace ID"), error.message);
  // Nor anywhere in the cause chain that --verbose prints.
  const printed = Deno.inspect(error, { depth: 10 });
  assert(!printed.includes(secret), printed);
});

Deno.test("an unreachable login host is auth-unreachable with a hint", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const error = await rejects(
    openAuthority("contoso.com", { cloud: cloudFromSandbox(`http://127.0.0.1:${port}`) }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-unreachable");
  assert(error.hint?.includes("sandbox"), error.hint);
});

Deno.test("adminConsentUrl asks for the resource's .default on the tenant's v2.0 admin-consent endpoint", () => {
  const url = new URL(adminConsentUrl({
    authority: "https://login.microsoftonline.us/",
    tenant: "contoso.us",
    clientId: "00001111-aaaa-2222-bbbb-3333cccc4444",
    scopes: ["https://graph.microsoft.us/User.Read.All", "offline_access"],
  }));
  assertEquals(url.origin + url.pathname, "https://login.microsoftonline.us/contoso.us/v2.0/adminconsent");
  assertEquals(url.searchParams.get("scope"), "https://graph.microsoft.us/.default");
  assertEquals(redact("a secret b secret", ["secret"]), "a [redacted] b [redacted]");
  assertEquals(redact("abc", ["ab"]), "abc", "too short to redact safely");
});

/**
 * A token service that refuses every grant with the given OAuth error and AADSTS number; its
 * description is deliberately not Microsoft's English, so a client reading wording would miss.
 */
function refusingTokenService(error: string, aadsts: number) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    const root = `${url.origin}/${tenantId}`;
    if (request.method === "GET") {
      return Response.json({
        issuer: `${root}/v2.0`,
        authorization_endpoint: `${root}/oauth2/v2.0/authorize`,
        token_endpoint: `${root}/oauth2/v2.0/token`,
      });
    }
    return Response.json({
      error,
      error_description: `AADSTS${aadsts}: Anfrage abgelehnt.\r\nTrace ID: 1\r\nCorrelation ID: 2`,
      error_codes: [aadsts],
    }, { status: error === "invalid_client" ? 401 : 400 });
  });
}

async function refusal(error: string, aadsts: number): Promise<EntraAuthError> {
  await using server = refusingTokenService(error, aadsts);
  const authority = await openAuthority(tenantId, {
    cloud: cloudFromSandbox(`http://127.0.0.1:${server.addr.port}`),
  });
  return await rejects(
    acquireAppToken({
      authority,
      clientId: "00001111-aaaa-2222-bbbb-3333cccc4444",
      credential: { kind: "secret", secret: "s3cret-value", source: "PROVISIONING_CLIENT_SECRET" },
    }),
    EntraAuthError,
  );
}

// Names and meanings from the AADSTS table of
// https://learn.microsoft.com/entra/identity-platform/reference-error-codes
Deno.test("AADSTS90023 (InvalidRequest) is a malformed request, not an unknown tenant", async () => {
  const error = await refusal("invalid_request", 90023);
  assertEquals(error.aadsts, "AADSTS90023");
  assertEquals(error.code, "auth-failed");
  assert(!error.hint?.includes("--tenant"), error.hint);
  assert(error.message.includes("Anfrage abgelehnt"), "Microsoft's own sentence is shown");
});

Deno.test("AADSTS90002 (InvalidTenantName) is tenant-not-found", async () => {
  const error = await refusal("invalid_request", 90002);
  assertEquals(error.code, "tenant-not-found");
  assert(error.hint?.includes("--tenant"), error.hint);
});

Deno.test("AADSTS700023 (InvalidResourcelessScope) points at the scope, not at a certificate", async () => {
  const error = await refusal("invalid_request", 700023);
  assertEquals(error.code, "auth-failed");
  assert(error.hint?.includes("scope"), error.hint);
  assert(!/certificate/i.test(error.hint ?? ""), error.hint);
});

Deno.test("a code the reference does not list falls back to the OAuth error", async () => {
  const unlisted = await refusal("invalid_client", 700024);
  assertEquals(unlisted.code, "auth-failed");
  assert(unlisted.hint?.includes("PROVISIONING_CLIENT_ID"), unlisted.hint);
  const expired = await refusal("invalid_grant", 999999);
  assertEquals(expired.code, "auth-expired");
});
