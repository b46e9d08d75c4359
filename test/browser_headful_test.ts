/**
 * A page in a language the flow has no words for, in a window the admin sees (`--mode headful`):
 * the automatic flow says so and falls back to manual mode, as the vendor tool advises. The tool
 * still types what needs no words (the user name and the pass, by their attributes); the admin
 * does the rest; the bridge and Graph say when the passkey exists. Real Chromium with a window, on
 * a virtual X display (Xvfb).
 */
import { assert, assertEquals } from "./assert.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { launchBrowser } from "../core/browser/driver.ts";
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { cloudFromSandbox } from "../plugins/entra/cloud.ts";
import { GraphClient } from "../plugins/entra/graph/client.ts";
import { EntraSession } from "../plugins/entra/session.ts";
import { startSandbox } from "../plugins/entra/sandbox/server.ts";
import { registerInBrowser } from "../plugins/entra/browser/register.ts";
import { sleep } from "../core/sleep.ts";

const pin = "577215";

Deno.test("headful, page in German: falls back to manual mode, the admin finishes, no pass left", async () => {
  const display = `:${90 + Math.floor(Math.random() * 9)}`;
  const xvfb = new Deno.Command("/usr/bin/Xvfb", {
    args: [display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await sleep(1_000);
    await using sandbox = await startSandbox({ users: 2 });
    const token = await (await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: sandbox.app.clientId,
        client_secret: sandbox.app.clientSecret,
        scope: "https://graph.microsoft.com/.default",
      }),
    })).json();
    await using session = new EntraSession({
      client: new GraphClient({
        baseUrl: sandbox.url,
        token: () => Promise.resolve(String(token.access_token)),
      }),
      cloud: cloudFromSandbox(sandbox.url),
    });
    await using browser = await launchBrowser({ headless: false, env: { DISPLAY: display } });
    const user = sandbox.inspect().users.find((u) => /^user\d+@/.test(u.userPrincipalName))!;
    sandbox.pages.setVariant({ language: "de-DE" });
    const steps: string[] = [];
    let admin: Promise<void> | undefined;
    const result = await registerInBrowser({
      session,
      browser,
      user: { id: user.id, userPrincipalName: user.userPrincipalName },
      authenticator: await newTestKey({ pin }),
      interaction: scriptedUser([pin]),
      displayName: "Headful key",
      mode: "automatic",
      debugDir: false,
      onStep: (s) => steps.push(s),
      onPage: (page) => {
        admin = actAsAdmin(page, "Added by the admin");
      },
    });
    await admin;
    assertEquals(steps[0], "manual-fallback");
    assert(steps.includes("enter-upn") && steps.includes("enter-tap"), String(steps));
    const seen = sandbox.inspect().users.find((u) => u.id === user.id)!;
    assertEquals(seen.passkeys.length, 1);
    assertEquals(seen.passkeys[0]!.verified, true);
    assertEquals(seen.passkeys[0]!.id, result.method.id);
    assertEquals(sandbox.inspect().temporaryAccessPassesOutstanding, 0);
  } finally {
    xvfb.kill("SIGTERM");
    await xvfb.status;
  }
});

/** The admin's part in the window: "Stay signed in?", then the new picker, the name, Next. */
async function actAsAdmin(page: Page, name: string): Promise<void> {
  try {
    const click = async (selector: string) => {
      const element = await page.waitForSelector(selector, { visible: true, timeout: 60_000 });
      await element!.click();
      await element!.dispose();
    };
    await click("#idBtn_Back");
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
