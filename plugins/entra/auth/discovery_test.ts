/**
 * OpenID discovery against the sandbox tenant (tenant from a domain, unknown domains), and the
 * rule that plain HTTP is allowed only on a loopback IP address, including for endpoints a
 * loopback discovery document names.
 */
import { assert, assertEquals, rejects, throws } from "../../../test/assert.ts";
import { cloudFromSandbox, publicCloud } from "../cloud.ts";
import { startSandbox } from "../sandbox/server.ts";
import { recordingFetch } from "./_testing.ts";
import {
  checkAuthorityUrl,
  discoverTenant,
  domainOfUpn,
  isLoopbackAddress,
  openAuthority,
} from "./discovery.ts";
import { EntraAuthError } from "./errors.ts";

Deno.test("discoverTenant turns a UPN's domain into the tenant id from the OpenID configuration", async () => {
  await using sandbox = await startSandbox({ users: 1, domain: "fabrikam.sandbox" });
  const recorder = recordingFetch();
  const tenantId = await discoverTenant(domainOfUpn("Someone@Fabrikam.Sandbox"), {
    cloud: cloudFromSandbox(sandbox.url),
    fetch: recorder.fetch,
  });
  assertEquals(tenantId, sandbox.tenantId);
  assertEquals(
    recorder.requests[0]?.url,
    `${sandbox.url}/fabrikam.sandbox/v2.0/.well-known/openid-configuration`,
  );
});

Deno.test("discoverTenant of a domain no tenant has fails with tenant-not-found and AADSTS90002", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const error = await rejects(
    discoverTenant("nobody.example", { cloud: cloudFromSandbox(sandbox.url) }),
    EntraAuthError,
  );
  assertEquals(error.code, "tenant-not-found");
  assertEquals(error.aadsts, "AADSTS90002");
  assert(error.message.includes('"nobody.example"'), error.message);
});

Deno.test("openAuthority reads the endpoints and marks only the loopback sandbox as insecure", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  assertEquals(authority.tenantId, sandbox.tenantId);
  assertEquals(authority.server.token_endpoint, `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`);
  assertEquals(
    authority.server.device_authorization_endpoint,
    `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/devicecode`,
  );
  assertEquals(authority.insecure, true);
});

Deno.test("an http:// authority that is not a loopback address is refused before any request", async () => {
  const recorder = recordingFetch();
  for (const url of ["http://login.example.com", "http://localhost:8400", "http://10.0.0.1"]) {
    const error = await rejects(
      openAuthority("contoso.com", { cloud: cloudFromSandbox(url), fetch: recorder.fetch }),
      EntraAuthError,
      url,
    );
    assertEquals(error.code, "insecure-authority");
  }
  assertEquals(recorder.requests.length, 0);
  assertEquals(checkAuthorityUrl(publicCloud.loginBase), false);
  assertEquals(checkAuthorityUrl("http://127.0.0.1:1"), true);
  assertEquals(checkAuthorityUrl("http://[::1]:1"), true);
  throws(() => checkAuthorityUrl("http://127.0.0.1.example.com"), EntraAuthError);
  throws(() => checkAuthorityUrl("ftp://127.0.0.1"), EntraAuthError);
});

Deno.test("a loopback discovery document that names a plain-HTTP token endpoint elsewhere is refused", async () => {
  const tenantId = "0f0e0d0c-0b0a-4909-8807-060504030201";
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      Response.json({
        issuer: `https://login.microsoftonline.com/${tenantId}/v2.0`,
        authorization_endpoint: `https://login.microsoftonline.com/${tenantId}/oauth2/v2.0/authorize`,
        token_endpoint: "http://collector.example.net/token",
      }),
  );
  const error = await rejects(
    openAuthority(tenantId, { cloud: cloudFromSandbox(`http://127.0.0.1:${server.addr.port}`) }),
    EntraAuthError,
  );
  assertEquals(error.code, "insecure-authority");
  assert(error.message.includes("collector.example.net"), error.message);
});

Deno.test("isLoopbackAddress accepts 127.0.0.0/8 and ::1 literals only", () => {
  for (const host of ["127.0.0.1", "127.1.2.3", "[::1]", "::1"]) assert(isLoopbackAddress(host), host);
  for (const host of ["localhost", "128.0.0.1", "127.0.0.256", "0.0.0.0", "[::2]", "127.0.0.1.nip.io"]) {
    assert(!isLoopbackAddress(host), host);
  }
});

Deno.test("domainOfUpn refuses a name without a domain", () => {
  const error = throws(() => domainOfUpn("administrator"), EntraAuthError);
  assertEquals(error.code, "tenant-not-found");
});
