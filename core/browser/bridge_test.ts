/**
 * The WebAuthn bridge in a real headless Chromium: pages on a loopback server call
 * navigator.credentials.create/get, the software key answers through our WebAuthn client, and
 * @simplewebauthn/server verifies what the page got.
 */
import { verifyAuthenticationResponse, verifyRegistrationResponse } from "@simplewebauthn/server";
import { assert, assertEquals, deepStrictEqual } from "../../test/assert.ts";
import { newTestKey, scriptedUser } from "../../test/software_key.ts";
import { toBase64Url } from "../bytes.ts";
import { type BridgeEvent, WebAuthnBridge } from "./bridge.ts";
import { launchBrowser } from "./driver.ts";

const pin = "314159";

/** A page whose head script records which `create` it saw before anything else ran. */
const page = `<!doctype html><html><head><title>bridge</title><script>
  window.createSeenAtLoad = String(navigator.credentials.create);
</script></head><body><h1>bridge test</h1></body></html>`;

function serve(): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } }),
  );
}

const creationScript = `async (rpId, user) => {
  const options = {
    publicKey: {
      rp: { id: rpId, name: "Bridge test" },
      user: { id: new TextEncoder().encode(user), name: user, displayName: "Bridge User" },
      challenge: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
      timeout: 60000,
      authenticatorSelection: { authenticatorAttachment: "cross-platform", requireResidentKey: true, userVerification: "required" },
      attestation: "direct",
      extensions: { credProps: true, hmacCreateSecret: true, credentialProtectionPolicy: "userVerificationOptional", enforceCredentialProtectionPolicy: true },
    },
  };
  try {
    const credential = await navigator.credentials.create(options);
    window.lastCredential = credential;
    const spki = credential.response.getPublicKey();
    const key = await crypto.subtle.importKey("spki", spki, { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]);
    const b64 = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
    return {
      ok: true,
      isPublicKeyCredential: credential instanceof PublicKeyCredential,
      isAttestationResponse: credential.response instanceof AuthenticatorAttestationResponse,
      tag: Object.prototype.toString.call(credential),
      id: credential.id,
      rawIdIsBuffer: credential.rawId instanceof ArrayBuffer,
      rawId: b64(credential.rawId),
      sameRawId: credential.rawId === credential.rawId,
      type: credential.type,
      attachment: credential.authenticatorAttachment,
      clientDataJSON: b64(credential.response.clientDataJSON),
      attestationObject: b64(credential.response.attestationObject),
      authenticatorData: b64(credential.response.getAuthenticatorData()),
      transports: credential.response.getTransports(),
      algorithm: credential.response.getPublicKeyAlgorithm(),
      keyType: key.type,
      extensions: credential.getClientExtensionResults(),
      json: JSON.parse(JSON.stringify(credential)),
      ownKeys: Object.keys(credential),
    };
  } catch (error) {
    return { ok: false, name: error.name, message: error.message };
  }
}`;

Deno.test("the WebAuthn bridge in headless Chromium", async (t) => {
  await using browser = await launchBrowser();
  await using server = serve();
  const origin = `http://127.0.0.1:${server.addr.port}`;
  const key = await newTestKey({ pin });
  const user = scriptedUser([pin]);

  await using context = await browser.newContext();
  const tab = await context.newPage();
  const events: BridgeEvent[] = [];
  await using bridge = await WebAuthnBridge.install(tab, {
    authenticator: key,
    interaction: user,
    allowedRpIds: ["127.0.0.1"],
    onEvent: (event) => events.push(event),
  });
  await tab.goto(`${origin}/`);

  await t.step("is in place before the page's first script runs", async () => {
    const seen = await tab.evaluate(() =>
      (globalThis as unknown as { createSeenAtLoad: string }).createSeenAtLoad
    );
    assert(!seen.includes("[native code]"), seen);
  });

  let credentialId = "";
  await t.step("create answers a PublicKeyCredential that a server verifies", async () => {
    const result = await tab.evaluate(`(${creationScript})("127.0.0.1", "alice@contoso.sandbox")`) as Record<
      string,
      unknown
    >;
    assert(result["ok"], JSON.stringify(result));
    assertEquals(result["isPublicKeyCredential"], true);
    assertEquals(result["isAttestationResponse"], true);
    assertEquals(result["tag"], "[object PublicKeyCredential]");
    assertEquals(result["rawIdIsBuffer"], true);
    assertEquals(result["rawId"], result["id"]);
    assertEquals(result["sameRawId"], true);
    assertEquals(result["type"], "public-key");
    assertEquals(result["attachment"], "cross-platform");
    assertEquals(result["algorithm"], -7);
    assertEquals(result["keyType"], "public");
    deepStrictEqual(result["ownKeys"], []);
    assert(Array.isArray(result["transports"]));
    deepStrictEqual(result["extensions"], { credProps: { rk: true }, hmacCreateSecret: true });
    const json = result["json"] as Record<string, unknown> & { response: Record<string, unknown> };
    assertEquals(json["id"], result["id"]);
    assertEquals(json.response["clientDataJSON"], result["clientDataJSON"]);
    assertEquals(json.response["attestationObject"], result["attestationObject"]);
    assertEquals(json.response["authenticatorData"], result["authenticatorData"]);

    const clientData = JSON.parse(new TextDecoder().decode(Uint8Array.from(
      atob(String(result["clientDataJSON"]).replace(/-/g, "+").replace(/_/g, "/")),
      (c) => c.charCodeAt(0),
    )));
    assertEquals(clientData.origin, origin, "the origin is the page's real origin");
    const verification = await verifyRegistrationResponse({
      response: {
        id: String(result["id"]),
        rawId: String(result["rawId"]),
        type: "public-key",
        response: {
          clientDataJSON: String(result["clientDataJSON"]),
          attestationObject: String(result["attestationObject"]),
        },
        clientExtensionResults: {},
      },
      expectedChallenge: toBase64Url(Uint8Array.from({ length: 16 }, (_, i) => i + 1)),
      expectedOrigin: origin,
      expectedRPID: "127.0.0.1",
      requireUserVerification: true,
    });
    assert(verification.verified);
    credentialId = String(result["id"]);
    const created = events.find((e) => e.type === "created");
    assertEquals(created?.type === "created" ? created.credential.id : "", credentialId);
    assertEquals(user.pinPrompts > 0, true);
  });

  await t.step("get answers an assertion a server verifies with the registered key", async () => {
    const registration = events.find((e) => e.type === "created");
    assert(registration?.type === "created");
    const result = await tab.evaluate(`(async (id) => {
      const raw = Uint8Array.from(atob(id.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
      const credential = await navigator.credentials.get({ publicKey: {
        challenge: Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]),
        rpId: "127.0.0.1",
        allowCredentials: [{ type: "public-key", id: raw }],
        userVerification: "discouraged",
      } });
      return {
        isAssertion: credential.response instanceof AuthenticatorAssertionResponse,
        signatureIsBuffer: credential.response.signature instanceof ArrayBuffer,
        json: credential.toJSON(),
      };
    })(${JSON.stringify(credentialId)})`) as {
      isAssertion: boolean;
      signatureIsBuffer: boolean;
      json: Parameters<typeof verifyAuthenticationResponse>[0]["response"];
    };
    assertEquals(result.isAssertion, true);
    assertEquals(result.signatureIsBuffer, true);
    const publicKey = registration.credential.response.attestationObject;
    assert(publicKey.length > 0);
    const registered = await verifyRegistrationResponse({
      response: registration.credential as Parameters<typeof verifyRegistrationResponse>[0]["response"],
      expectedChallenge: toBase64Url(Uint8Array.from({ length: 16 }, (_, i) => i + 1)),
      expectedOrigin: origin,
      expectedRPID: "127.0.0.1",
    });
    assert(registered.verified);
    const verification = await verifyAuthenticationResponse({
      response: result.json,
      expectedChallenge: toBase64Url(new Uint8Array(16).fill(9)),
      expectedOrigin: origin,
      expectedRPID: "127.0.0.1",
      credential: registered.registrationInfo.credential,
      requireUserVerification: false,
    });
    assert(verification.verified);
  });

  await t.step(
    "a page asking for a foreign rp id gets SecurityError and the key is not touched",
    async () => {
      const before = key.store.read().credentials.length;
      const result = await tab.evaluate(
        `(${creationScript})("login.microsoft.com", "mallory@contoso.sandbox")`,
      ) as {
        ok: boolean;
        name: string;
      };
      assertEquals(result.ok, false);
      assertEquals(result.name, "SecurityError");
      const failure = bridge.lastFailure;
      assertEquals((failure?.error as { code?: string } | undefined)?.code, "rp-id-not-allowed");
      assertEquals(key.store.read().credentials.length, before);
    },
  );

  await t.step("an rp id the origin may use but the provider does not allow is refused too", async () => {
    await using other = await WebAuthnBridge.install(await context.newPage(), {
      authenticator: key,
      interaction: user,
      allowedRpIds: ["login.microsoft.com"],
    });
    await other.page.goto(`${origin}/`);
    const result = await other.page.evaluate(`(${creationScript})("127.0.0.1", "bob@contoso.sandbox")`) as {
      ok: boolean;
      name: string;
    };
    assertEquals(result.name, "SecurityError");
    assertEquals((other.lastFailure?.error as { code?: string } | undefined)?.code, "rp-id-not-allowed");
  });

  await t.step("an aborted request rejects with the page's abort reason", async () => {
    const name = await tab.evaluate(`(async () => {
      const controller = new AbortController();
      controller.abort();
      try {
        await navigator.credentials.create({ publicKey: {}, signal: controller.signal });
        return "resolved";
      } catch (error) {
        return error.name;
      }
    })()`);
    assertEquals(name, "AbortError");
  });
});
