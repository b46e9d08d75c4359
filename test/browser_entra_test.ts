/**
 * The Entra browser path end to end: a real headless Chromium signs sandbox users in with a
 * Temporary Access Pass, walks Security info, and the WebAuthn bridge creates the passkey on a
 * real software key; the sandbox verifies it with @simplewebauthn/server. Every failure state has
 * its reason, and the pass is deleted in every case.
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "./assert.ts";
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
import { parseFlow } from "../core/browser/flow.ts";
import automaticFlowJson from "../plugins/entra/browser/automatic_flow.json" with { type: "json" };

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
  await using sandbox = await startSandbox({ users: 19, now: () => Date.now() + clock.offset });
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

  const shortRetry = parseFlow({
    ...automaticFlowJson,
    screens: automaticFlowJson.screens.map((s) =>
      s.name === "enter-tap" ? { ...s, repeat: { max: 3, pauseMs: 500, forMs: 3000 } } : s
    ),
  }, "automatic_flow.json (short retry)");
  const passCreations = () =>
    Object.entries(sandbox.inspect().calls).filter(([name]) =>
      /temporaryAccessPass/i.test(name) && /POST/.test(name)
    )
      .reduce((n, [, count]) => n + count, 0);

  try {
    await t.step(
      "automatic, new picker: one verified passkey on login.microsoft.com, the pass deleted",
      async () => {
        const user = users[0]!;
        const steps: string[] = [];
        const result = await world.register(user, { onStep: (s) => steps.push(s) });
        const seen = inspectUser(user);
        assertEquals(seen.passkeys.length, 1);
        assertEquals(seen.passkeys[0]!.verified, true);
        assertEquals(seen.passkeys[0]!.displayName, "Browser key");
        assertEquals(seen.passkeys[0]!.id, result.method.id);
        assertEquals(seen.temporaryAccessPass, null);
        assertEquals(sandbox.tenant.fido2Methods(user.id)[0]!.credentialId, result.credentialId);
        assertEquals(browser.openContexts, 0);
        deepStrictEqual(steps, [
          "enter-upn",
          "enter-tap",
          "stay-signed-in",
          "open-add-method",
          "show-more-options",
          "choose-passkey",
          "start-ceremony",
          "name-passkey",
          "done",
        ]);
      },
    );

    await t.step("the old picker: Security key, Add, USB device, Next", async () => {
      const user = users[1]!;
      sandbox.pages.setVariant({ picker: "old", staySignedIn: false }, user.id);
      const steps: string[] = [];
      await world.register(user, { onStep: (s) => steps.push(s) });
      deepStrictEqual(steps, [
        "enter-upn",
        "enter-tap",
        "open-add-method",
        "open-method-options",
        "choose-security-key",
        "choose-usb-device",
        "start-ceremony",
        "name-passkey",
        "done",
      ]);
      assertEquals(inspectUser(user).passkeys[0]?.verified, true);
      assertEquals(inspectUser(user).temporaryAccessPass, null);
    });

    await t.step(
      "interrupts: More information required, Keep your account secure (skipped), Stay signed in?",
      async () => {
        const user = users[2]!;
        sandbox.pages.setVariant({ proofUp: "skippable" }, user.id);
        const steps: string[] = [];
        await world.register(user, { onStep: (s) => steps.push(s) });
        deepStrictEqual(steps.slice(0, 5), [
          "enter-upn",
          "enter-tap",
          "more-information-required",
          "keep-account-secure",
          "stay-signed-in",
        ]);
        assertEquals(inspectUser(user).passkeys[0]?.verified, true);
        assertEquals(inspectUser(user).temporaryAccessPass, null);
      },
    );

    await t.step(
      "a pass refused for its first seconds: the prompt is retried until it is accepted",
      async () => {
        const user = users[3]!;
        sandbox.pages.setVariant({ passDelaySeconds: 3 }, user.id);
        let tapScreens = 0;
        await world.register(user, {
          onStep: (s) => {
            if (s === "enter-tap") tapScreens++;
          },
        });
        assertEquals(tapScreens, 1, "told once, answered several times");
        assertEquals(inspectUser(user).passkeys[0]?.verified, true);
        assertEquals(inspectUser(user).temporaryAccessPass, null);
      },
    );

    await t.step("the ceremony page on the sandbox's own origin (loopback mode) works too", async () => {
      const user = users[18]!;
      sandbox.pages.ceremony = "loopback";
      try {
        await world.register(user);
      } finally {
        sandbox.pages.ceremony = "production";
      }
      assertEquals(inspectUser(user).passkeys[0]?.verified, true);
      assertEquals(inspectUser(user).temporaryAccessPass, null);
    });

    await t.step(
      "a required registration interrupt: stopped with its reason, a screenshot, pass deleted",
      async () => {
        const user = users[4]!;
        sandbox.pages.setVariant({ proofUp: "required" }, user.id);
        const error = await rejects(world.register(user), BrowserFlowError);
        assertEquals(error.code, "security-info-registration-required");
        assert(error.debugFiles.some((f) => f.endsWith(".png")), String(error.debugFiles));
        assertEquals(inspectUser(user).temporaryAccessPass, null);
        assertEquals(inspectUser(user).passkeys.length, 0);
      },
    );

    await t.step("a page in another language: said clearly, before any pass exists", async () => {
      const user = users[5]!;
      sandbox.pages.setVariant({ language: "de-DE" });
      const created = passCreations();
      try {
        const error = await rejects(world.register(user), BrowserFlowError);
        assertEquals(error.code, "page-language-unsupported");
        assert(error.message.includes("de-DE"), error.message);
        assert(error.hint?.includes("--manual"), error.hint);
      } finally {
        sandbox.pages.setVariant({ language: "en" });
      }
      assertEquals(passCreations(), created, "no pass was issued");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
    });

    await t.step(
      "a pass replaced meanwhile: refused, retried, then tap-refused; pass deleted, debug files without the pass",
      async () => {
        const user = users[6]!;
        let typed = "";
        const error = await rejects(
          world.register(user, {
            flow: shortRetry,
            onPassIssued: () => {
              // Another admin's run replaces the value the tool is about to type.
              const tap = sandbox.tenant.temporaryAccessPass(user.id)!;
              typed = tap.temporaryAccessPass;
              tap.temporaryAccessPass = `${typed}x`;
              return Promise.resolve();
            },
          }),
          BrowserFlowError,
        );
        assertEquals(error.code, "tap-refused");
        assert(error.message.includes(user.userPrincipalName), error.message);
        assertEquals(inspectUser(user).temporaryAccessPass, null);
        assertEquals(inspectUser(user).passkeys.length, 0);
        assert(error.debugFiles.some((f) => f.endsWith(".png")), String(error.debugFiles));
        for (const file of error.debugFiles.filter((f) => !f.endsWith(".png"))) {
          const text = await Deno.readTextFile(file);
          assert(!text.includes(typed), `${file} holds the pass`);
        }
        const info = JSON.parse(await Deno.readTextFile(error.debugFiles.find((f) => f.endsWith(".json"))!));
        assertEquals(info.reason, "tap-refused");
        assert(String(info.url).startsWith(sandbox.url));
        assert(!error.message.includes(typed));
      },
    );

    await t.step("an expired pass: tap-expired, pass deleted", async () => {
      const user = users[7]!;
      const error = await rejects(
        world.register(user, {
          onPassIssued: () => {
            clock.offset += 61 * 60_000; // the pass lives 60 minutes
            return Promise.resolve();
          },
        }),
        BrowserFlowError,
      );
      assertEquals(error.code, "tap-expired");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("a one-time pass used by someone else first: tap-already-used, pass deleted", async () => {
      const user = users[8]!;
      const error = await rejects(
        world.register(user, {
          onPassIssued: () => {
            const tap = sandbox.tenant.temporaryAccessPass(user.id)!;
            assert(sandbox.tenant.redeemTemporaryAccessPass(user.id, tap.temporaryAccessPass));
            return Promise.resolve();
          },
        }),
        BrowserFlowError,
      );
      assertEquals(error.code, "tap-already-used");
      assert(error.message.includes("User Credential Policy"), error.message);
      assertEquals(inspectUser(user).temporaryAccessPass, null);
    });

    await t.step("self-service setup off: refused from the policy before any pass exists", async () => {
      const user = users[9]!;
      const created = passCreations();
      sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: false });
      try {
        const error = await rejects(world.register(user), BrowserFlowError);
        assertEquals(error.code, "policy-forbids-security-keys");
        assertEquals(error.step, "check-policy");
        assert(error.hint?.includes("Allow self-service setup"), error.hint);
      } finally {
        sandbox.tenant.setFido2Policy({ isSelfServiceRegistrationAllowed: true });
      }
      assertEquals(passCreations(), created, "no pass was issued");
    });

    await t.step("a user the policy does not target: the picker has no Passkey, pass deleted", async () => {
      const user = users[10]!;
      const targets = sandbox.tenant.fido2Policy.includeTargets;
      // Targeted at a group the user is not in.
      sandbox.tenant.setFido2Policy({ includeTargets: [{ ...targets[0]!, id: crypto.randomUUID() }] });
      try {
        const error = await rejects(world.register(user), BrowserFlowError);
        assertEquals(error.code, "policy-forbids-security-keys");
        assertEquals(error.step, "show-more-options");
      } finally {
        sandbox.tenant.setFido2Policy({ includeTargets: targets });
      }
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("a key the policy blocks: registration-refused with the page's reason", async () => {
      const user = users[11]!;
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
      const user = users[12]!;
      // A key of its own: wrong PINs in a row block a key until it is unplugged.
      const other = await newTestKey({ pin });
      const error = await rejects(
        world.register(user, { authenticator: other, interaction: scriptedUser(["000000"]) }),
        BrowserFlowError,
      );
      assert(["pin-invalid", "pin-auth-blocked"].includes(error.code), error.code);
      assertEquals(error.step, "start-ceremony");
      assertEquals(inspectUser(user).temporaryAccessPass, null);
      assertEquals(inspectUser(user).passkeys.length, 0);
    });

    await t.step("each variant at once, in parallel contexts of one browser, one shared key", async () => {
      const batch = users.slice(13, 17);
      sandbox.pages.setVariant({ picker: "new" }, batch[0]!.id);
      sandbox.pages.setVariant({ picker: "old" }, batch[1]!.id);
      sandbox.pages.setVariant({ proofUp: "skippable", picker: "old" }, batch[2]!.id);
      sandbox.pages.setVariant({ passDelaySeconds: 2 }, batch[3]!.id);
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
        const user = users[17]!;
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

/** What an admin does in the window: Add sign-in method, Show more options, Passkey, Next, a name, Next. */
async function actAsAdmin(page: Page, name: string): Promise<void> {
  try {
    const click = async (selector: string) => {
      const element = await page.waitForSelector(selector, { visible: true, timeout: 60_000 });
      await element!.click();
      await element!.dispose();
    };
    await click("#addMethod");
    await click("[data-action=more]");
    await click("[role=option][data-method=passkey]");
    await click("[data-action=ceremony]");
    const input = await page.waitForSelector("#TextField77", { visible: true, timeout: 60_000 });
    await input!.click({ count: 3 });
    await input!.type(name);
    await input!.dispose();
    await click("[data-action=save-name]");
  } catch (error) {
    // The tool closes the window as soon as Graph lists the passkey; only earlier failures count.
    if (!page.isClosed()) throw error;
  }
}
