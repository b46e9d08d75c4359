/**
 * The Entra browser path end to end: a real headless Chromium signs sandbox users in with a
 * Temporary Access Pass, walks Security info, and the WebAuthn bridge creates the passkey on a
 * real software key; the sandbox verifies it with @simplewebauthn/server. Every failure state has
 * its reason, and the pass is deleted in every case.
 */
import { assert, assertEquals, rejects } from "./assert.ts";
import { newTestKey, scriptedUser, type TestKey } from "./software_key.ts";
import { type BrowserHandle, launchBrowser } from "../core/browser/driver.ts";
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import type { DirectoryUser } from "../core/plugin.ts";
import { cloudFromSandbox } from "../plugins/entra/cloud.ts";
import { GraphClient } from "../plugins/entra/graph/client.ts";
import { EntraSession } from "../plugins/entra/session.ts";
import { type Sandbox, startSandbox } from "../plugins/entra/sandbox/server.ts";
import { BrowserFlowError } from "../plugins/entra/browser/errors.ts";
import { registerInBrowser, type RegisterInBrowserOptions } from "../plugins/entra/browser/register.ts";

const pin = "271828";

/** A client-credentials token from the sandbox, fetched again whenever the sandbox clock moved. */
function tokens(sandbox: Sandbox, clock: { offset: number }): () => Promise<string> {
  let cached: { offset: number; token: string } | undefined;
  return async () => {
    if (cached?.offset === clock.offset) return cached.token;
    const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: sandbox.app.clientId,
        client_secret: sandbox.app.clientSecret,
        scope: "https://graph.microsoft.com/.default",
      }),
    });
    const body = await response.json();
    assertEquals(response.status, 200, JSON.stringify(body));
    cached = { offset: clock.offset, token: body.access_token };
    return cached.token;
  };
}

interface World {
  sandbox: Sandbox;
  session: EntraSession;
  browser: BrowserHandle;
  key: TestKey;
  clock: { offset: number };
  users: DirectoryUser[];
  debugDir: string;
  register(
    user: DirectoryUser,
    extra?: Partial<RegisterInBrowserOptions>,
  ): ReturnType<typeof registerInBrowser>;
}

Deno.test("the Entra browser path in headless Chromium", async (t) => {
  const clock = { offset: 0 };
  await using sandbox = await startSandbox({ users: 12, now: () => Date.now() + clock.offset });
  const client = new GraphClient({ baseUrl: sandbox.url, token: tokens(sandbox, clock) });
  await using session = new EntraSession({ client, cloud: cloudFromSandbox(sandbox.url) });
  await using browser = await launchBrowser();
  const key = await newTestKey({ pin });
  const debugDir = await Deno.makeTempDir({ prefix: "browser-debug-" });
  const users: DirectoryUser[] = sandbox.inspect().users
    .filter((u) => /^user\d+@/.test(u.userPrincipalName))
    .map((u) => ({ id: u.id, userPrincipalName: u.userPrincipalName }));
  const world: World = {
    sandbox,
    session,
    browser,
    key,
    clock,
    users,
    debugDir,
    register: (user, extra = {}) =>
      registerInBrowser({
        session,
        browser,
        user,
        authenticator: key,
        interaction: scriptedUser([pin]),
        displayName: "Browser key",
        mode: "automatic",
        debugDir,
        ...extra,
      }),
  };
  const inspectUser = (user: DirectoryUser) => sandbox.inspect().users.find((u) => u.id === user.id)!;

  try {
    await t.step("automatic: one verified passkey, the pass deleted", async () => {
      const user = users[0]!;
      const result = await world.register(user);
      const seen = inspectUser(user);
      assertEquals(seen.passkeys.length, 1);
      assertEquals(seen.passkeys[0]!.verified, true);
      assertEquals(seen.passkeys[0]!.displayName, "Browser key");
      assertEquals(seen.passkeys[0]!.id, result.method.id);
      assertEquals(seen.temporaryAccessPass, null);
      assertEquals(sandbox.tenant.fido2Methods(user.id)[0]!.credentialId, result.credentialId);
      assertEquals(browser.openContexts, 0);
    });

    await t.step(
      "a pass replaced meanwhile: wrong-tap, pass deleted, debug files without the pass",
      async () => {
        const user = users[1]!;
        let typed = "";
        const error = await rejects(
          world.register(user, {
            onPage: () => {
              // Another admin's run replaces the value the tool is about to type.
              const tap = sandbox.tenant.temporaryAccessPass(user.id)!;
              typed = tap.temporaryAccessPass;
              tap.temporaryAccessPass = `${typed}x`;
            },
          }),
          BrowserFlowError,
        );
        assertEquals(error.code, "wrong-tap");
        assert(error.message.includes(user.userPrincipalName), error.message);
        assertEquals(inspectUser(user).temporaryAccessPass, null);
        assertEquals(inspectUser(user).passkeys.length, 0);
        assert(error.debugFiles.some((f) => f.endsWith(".png")), String(error.debugFiles));
        for (const file of error.debugFiles.filter((f) => !f.endsWith(".png"))) {
          const text = await Deno.readTextFile(file);
          assert(!text.includes(typed), `${file} holds the pass`);
        }
        const info = JSON.parse(await Deno.readTextFile(error.debugFiles.find((f) => f.endsWith(".json"))!));
        assertEquals(info.reason, "wrong-tap");
        assert(String(info.url).startsWith(sandbox.url));
        assert(!error.message.includes(typed));
      },
    );

    await t.step("an expired pass: tap-expired, pass deleted", async () => {
      const user = users[2]!;
      const error = await rejects(
        world.register(user, {
          onPage: () => {
            clock.offset += 61 * 60_000; // the pass lives 60 minutes
          },
        }),
        BrowserFlowError,
      );
      assertEquals(error.code, "tap-expired");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("a one-time pass used by someone else first: tap-already-used, pass deleted", async () => {
      const user = users[3]!;
      const error = await rejects(
        world.register(user, {
          onPage: () => {
            const tap = sandbox.tenant.temporaryAccessPass(user.id)!;
            assert(sandbox.tenant.redeemTemporaryAccessPass(user.id, tap.temporaryAccessPass));
          },
        }),
        BrowserFlowError,
      );
      assertEquals(error.code, "tap-already-used");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
    });

    await t.step(
      "security keys disallowed by policy: policy-forbids-security-keys, pass deleted",
      async () => {
        const user = users[4]!;
        sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: false });
        try {
          const error = await rejects(world.register(user), BrowserFlowError);
          assertEquals(error.code, "policy-forbids-security-keys");
          assertEquals(error.step, "choose-security-key");
          assert(error.hint?.includes("Allow self-service setup"), error.hint);
        } finally {
          sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: true });
        }
        assertEquals(inspectUser(user).temporaryAccessPass, null);
        assertEquals(inspectUser(user).passkeys.length, 0);
      },
    );

    await t.step("a key the policy blocks: registration-refused with the page's reason", async () => {
      const user = users[5]!;
      const aaguid = sandbox.tenant.fido2Methods(users[0]!.id)[0]!.aaGuid;
      sandbox.tenant.setFido2Policy({
        keyRestrictions: { isEnforced: true, enforcementType: "block", aaGuids: [aaguid] },
      });
      try {
        const error = await rejects(world.register(user), BrowserFlowError);
        assertEquals(error.code, "registration-refused");
        assert(error.message.includes("blocked list"), error.message);
      } finally {
        sandbox.tenant.setFido2Policy({ keyRestrictions: { isEnforced: false } });
      }
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("a wrong PIN: the WebAuthn client's reason, pass deleted", async () => {
      const user = users[6]!;
      // A key of its own: wrong PINs in a row block a key until it is unplugged.
      const other = await newTestKey({ pin });
      const error = await rejects(
        world.register(user, { authenticator: other, interaction: scriptedUser(["000000"]) }),
        BrowserFlowError,
      );
      assert(["pin-invalid", "pin-auth-blocked"].includes(error.code), error.code);
      assertEquals(error.step, "name-key");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("four users in parallel contexts of one browser, one shared key", async () => {
      const batch = users.slice(7, 11);
      const results = await Promise.all(batch.map((user) => world.register(user)));
      assertEquals(new Set(results.map((r) => r.credentialId)).size, 4);
      for (const user of batch) {
        const seen = inspectUser(user);
        assertEquals(seen.passkeys.length, 1);
        assertEquals(seen.passkeys[0]!.verified, true);
        assertEquals(seen.temporaryAccessPass, null);
      }
      assertEquals(browser.openContexts, 0);
    });

    await t.step(
      "manual: the tool signs in, the admin clicks, the tool sees the passkey and closes",
      async () => {
        const user = users[11]!;
        let admin: Promise<void> | undefined;
        const result = await world.register(user, {
          mode: "manual",
          displayName: "unused in manual mode",
          onPage: (page) => {
            admin = actAsAdmin(page, "Added by the admin");
          },
        });
        await admin;
        const seen = inspectUser(user);
        assertEquals(seen.passkeys.length, 1);
        assertEquals(seen.passkeys[0]!.displayName, "Added by the admin");
        assertEquals(seen.passkeys[0]!.id, result.method.id);
        assertEquals(seen.temporaryAccessPass, null);
        assertEquals(browser.openContexts, 0);
      },
    );

    await t.step("no pass is left anywhere", () => {
      assertEquals(sandbox.inspect().temporaryAccessPassesOutstanding, 0);
    });
  } finally {
    await Deno.remove(debugDir, { recursive: true });
  }
});

/** What an admin does in the window: add sign-in method, security key, USB, Next, a name, Next. */
async function actAsAdmin(page: Page, name: string): Promise<void> {
  try {
    const click = async (selector: string) => {
      const element = await page.waitForSelector(selector, { visible: true, timeout: 60_000 });
      await element!.click();
      await element!.dispose();
    };
    await click("[data-testid=add-method-button]");
    await click("[data-method=fido2]");
    await click("[data-testid=security-key-usb]");
    await click("[data-testid=wizard-next]");
    const input = await page.waitForSelector("[data-testid=key-name-input]", {
      visible: true,
      timeout: 60_000,
    });
    await input!.type(name);
    await input!.dispose();
    await click("[data-testid=name-next]");
  } catch (error) {
    // The tool closes the window as soon as Graph lists the passkey; only earlier failures count.
    if (!page.isClosed()) throw error;
  }
}
