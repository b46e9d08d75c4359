/** The driver against the real Chromium: private contexts, cleanup on failure, launch errors. */
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { BrowserLaunchError, launchBrowser } from "./driver.ts";

Deno.test("one browser, private contexts that share nothing and are closed even when the work throws", async () => {
  await using browser = await launchBrowser();
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (request) =>
      new Response(`<p>${request.headers.get("cookie") ?? "none"}</p>`, {
        headers: { "content-type": "text/html", "set-cookie": "seen=yes; Path=/" },
      }),
  );
  const url = `http://127.0.0.1:${server.addr.port}/`;

  const first = await browser.withContext(async (context) => {
    const page = await context.newPage();
    await page.goto(url);
    await page.goto(url);
    return await page.evaluate(() =>
      (globalThis as unknown as { document: { body: { innerText: string } } }).document.body.innerText
    );
  });
  assertEquals(first, "seen=yes", "a context keeps its own cookies");

  const second = await browser.withContext(async (context) => {
    const page = await context.newPage();
    await page.goto(url);
    return await page.evaluate(() =>
      (globalThis as unknown as { document: { body: { innerText: string } } }).document.body.innerText
    );
  });
  assertEquals(second, "none", "a new context does not see another's cookies");

  await rejects(
    browser.withContext(async (context) => {
      await context.newPage();
      throw new RangeError("the flow failed");
    }),
    RangeError,
  );
  assertEquals(browser.openContexts, 0);
  assertEquals(browser.browser.browserContexts().length, 1, "only the default context is left");
});

Deno.test("closing the browser ends its process", async () => {
  const browser = await launchBrowser();
  const pid = browser.pid;
  await browser.newContext();
  await browser.close();
  assertEquals(browser.openContexts, 0);
  let alive = true;
  try {
    Deno.kill(pid, "SIGCONT");
  } catch {
    alive = false;
  }
  assert(!alive, `process ${pid} is still running`);
});

Deno.test("a program that is not a browser is a launch error that says so", async () => {
  const error = await rejects(
    launchBrowser({ executablePath: "/bin/false", launchTimeoutMs: 10_000 }),
    BrowserLaunchError,
  );
  assertEquals(error.code, "browser-launch-failed");
  assert(error.message.includes("/bin/false"), error.message);
});
