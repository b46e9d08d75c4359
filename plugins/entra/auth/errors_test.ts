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
