/** Failure captures from a real page: files written, the secret nowhere in them, its field covered. */
import { assert, assertEquals } from "../../test/assert.ts";
import { captureFailure, scrubSecrets } from "./debug_capture.ts";
import { launchBrowser } from "./driver.ts";

const secret = "Tap+Pa$$w0rd!";

Deno.test("scrubSecrets removes a secret in plain and URL-encoded form", () => {
  const text = `pass=${encodeURIComponent(secret)} and ${secret}`;
  assertEquals(scrubSecrets(text, [secret]), "pass=[redacted] and [redacted]");
});

Deno.test("a capture saves screenshot, URL and page, covers the pass field, and holds no secret", async () => {
  await using browser = await launchBrowser();
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () =>
    new Response(
      `<!doctype html><title>Sign in</title><form><input name="accesspass" type="text" id="tap">
       <input name="other" type="password" id="pw"></form>`,
      { headers: { "content-type": "text/html" } },
    ));
  const dir = await Deno.makeTempDir({ prefix: "capture-" });
  try {
    await using context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.addr.port}/signin?pass=${encodeURIComponent(secret)}`);
    await page.type("#tap", secret);
    await page.type("#pw", "other secret");
    const capture = await captureFailure(page, {
      dir,
      step: "enter-tap",
      reason: "wrong-tap",
      label: "alice@contoso.sandbox",
      message: `typed ${secret}`,
      secrets: [secret],
      maskSelectors: ["input[name=accesspass]"],
    });
    assertEquals(capture.masked, 2, "the pass field and the password field are covered");
    const png = await Deno.readFile(capture.screenshot!);
    assertEquals([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(""), "PNG");
    const info = JSON.parse(await Deno.readTextFile(capture.info!));
    assertEquals(info.step, "enter-tap");
    assertEquals(info.reason, "wrong-tap");
    assertEquals(info.title, "Sign in");
    assert(String(info.url).includes("pass=[redacted]"), info.url);
    for (const file of [capture.info!, capture.html!]) {
      assert(!(await Deno.readTextFile(file)).includes(secret), `${file} holds the secret`);
      assert(
        !(await Deno.readTextFile(file)).includes(encodeURIComponent(secret)),
        `${file} holds the secret`,
      );
    }
    assert(capture.screenshot!.includes("alice_contoso.sandbox-enter-tap"));
    // 0600 files in a 0700 folder, like every other output (issue 13).
    assertEquals((await Deno.stat(dir)).mode! & 0o777, 0o700);
    for (const file of [capture.info!, capture.html!, capture.screenshot!]) {
      assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600, file);
    }
    const boxesLeft = await page.evaluate(`document.querySelectorAll("[data-provisioning-mask]").length`);
    assertEquals(boxesLeft, 0, "the covers are removed after the screenshot");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
