/**
 * Cloud endpoints and the sandbox override; rp-id allow-lists and the WebAuthn origin agree with
 * the WebAuthn client's own rp-id check.
 */
import { assert, assertEquals, throws } from "../../test/assert.ts";
import { UsageError } from "../../core/errors.ts";
import { checkRpId, normalizeRpId } from "../../core/webauthn/rp_id.ts";
import {
  chinaCloud,
  cloudByName,
  cloudFromSandbox,
  clouds,
  publicCloud,
  usGovCloud,
  usGovDodCloud,
} from "./cloud.ts";

Deno.test("each national cloud has its documented sign-in and Graph endpoints", () => {
  assertEquals(publicCloud.loginBase, "https://login.microsoftonline.com");
  assertEquals(publicCloud.graphBase, "https://graph.microsoft.com");
  assertEquals(usGovCloud.loginBase, "https://login.microsoftonline.us");
  assertEquals(usGovCloud.graphBase, "https://graph.microsoft.us");
  assertEquals(usGovDodCloud.graphBase, "https://dod-graph.microsoft.us");
  assertEquals(chinaCloud.loginBase, "https://login.chinacloudapi.cn");
  assertEquals(chinaCloud.graphBase, "https://microsoftgraph.chinacloudapi.cn");
  assertEquals(publicCloud.graphDefaultScope, "https://graph.microsoft.com/.default");
  // The provisioning API is documented for the global service only.
  assert.deepStrictEqual(Object.values(clouds).filter((c) => c.provisioningApi).map((c) => c.name), [
    "public",
  ]);
});

Deno.test("the public cloud accepts both rp ids Entra has answered, and the origin follows the rp id", () => {
  assert.deepStrictEqual([...publicCloud.allowedRpIds].sort(), [
    "login.microsoft.com",
    "login.microsoftonline.com",
  ]);
  for (const rpId of publicCloud.allowedRpIds) {
    const origin = publicCloud.originFor(rpId);
    assertEquals(origin, `https://${rpId}`);
    checkRpId({ rpId, origin, allowedRpIds: publicCloud.allowedRpIds });
  }
  assertEquals(publicCloud.originFor(undefined), "https://login.microsoftonline.com");
  for (const cloud of Object.values(clouds)) {
    for (const rpId of cloud.allowedRpIds) assertEquals(normalizeRpId(rpId), rpId);
  }
});

Deno.test("cloudByName refuses an unknown cloud with exit code 2 and lists the known ones", () => {
  assertEquals(cloudByName("usgov-dod"), usGovDodCloud);
  const error = throws(() => cloudByName("moon"), UsageError);
  assertEquals(error.exitCode, 2);
  assert.match(error.hint ?? "", /"public", "usgov", "usgov-dod", "china"/);
  throws(() => cloudByName("toString"), UsageError);
});

Deno.test("one sandbox URL sets every endpoint; WebAuthn follows the public cloud's rules, no special case", () => {
  const cloud = cloudFromSandbox("http://127.0.0.1:8443/");
  assertEquals(cloud.graphBase, "http://127.0.0.1:8443");
  assertEquals(cloud.loginBase, "http://127.0.0.1:8443");
  for (const rpId of publicCloud.allowedRpIds) {
    assert.ok(cloud.allowedRpIds.includes(rpId));
    assertEquals(cloud.originFor(rpId), publicCloud.originFor(rpId));
    checkRpId({ rpId, origin: cloud.originFor(rpId), allowedRpIds: cloud.allowedRpIds });
  }
  // The loopback host stays allowed for pages the sandbox serves itself; its origin is never
  // made up by the client: `https://<rp id>` as for every rp id.
  assert.ok(cloud.allowedRpIds.includes("127.0.0.1"));
  assertEquals(cloud.originFor("127.0.0.1"), "https://127.0.0.1");
  const configured = cloudFromSandbox("https://localhost:9000/tenant-a", { extraRpIds: ["contoso.example"] });
  assertEquals(configured.graphBase, "https://localhost:9000/tenant-a");
  assert.ok(configured.allowedRpIds.includes("contoso.example"));
  throws(() => cloudFromSandbox("ftp://127.0.0.1"), UsageError);
  throws(() => cloudFromSandbox("not a url"), UsageError);
  throws(() => cloudFromSandbox("http://127.0.0.1:1/?x=1"), UsageError);
});
