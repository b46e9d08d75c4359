/**
 * `--capture-flow DIR` and its offline replay: a real run against the sandbox's pages (old picker,
 * "More information required", "Keep your account secure" skipped) saves the URL, a sanitized DOM
 * snapshot and a masked screenshot per step, 0600 files in 0700 folders, with no pass and no
 * token in them; the capture then replays against the flow engine offline, step for step. A
 * capture committed under test/fixtures/browser_capture/ replays as a regression test, and a flow
 * that lost a screen fails the replay at that step.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { launchBrowser } from "../core/browser/driver.ts";
import { parseFlow } from "../core/browser/flow.ts";
import { replayCapture } from "../core/browser/flow_replay.ts";
import { cloudFromSandbox } from "../plugins/entra/cloud.ts";
import { GraphClient } from "../plugins/entra/graph/client.ts";
import { EntraSession } from "../plugins/entra/session.ts";
import { startSandbox } from "../plugins/entra/sandbox/server.ts";
import { automaticFlow } from "../plugins/entra/browser/flows.ts";
import { registerInBrowser } from "../plugins/entra/browser/register.ts";
import automaticFlowJson from "../plugins/entra/browser/automatic_flow.json" with { type: "json" };

const pin = "314159";
const fixture = new URL("./fixtures/browser_capture/old-picker-with-interrupts", import.meta.url).pathname;

Deno.test("a captured run: per-step evidence without secrets, replayed offline", async () => {
  await using sandbox = await startSandbox({ users: 3 });
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
  await using browser = await launchBrowser();
  const key = await newTestKey({ pin });
  const user = sandbox.inspect().users.find((u) => /^user\d+@/.test(u.userPrincipalName))!;
  sandbox.pages.setVariant({ picker: "old", proofUp: "skippable" }, user.id);
  const dir = await Deno.makeTempDir({ prefix: "capture-flow-" });
  try {
    let pass = "";
    await registerInBrowser({
      session,
      browser,
      user: { id: user.id, userPrincipalName: user.userPrincipalName },
      authenticator: key,
      interaction: scriptedUser([pin]),
      displayName: "Captured key",
      mode: "automatic",
      debugDir: false,
      captureDir: `${dir}/capture`,
      onPassIssued: () => {
        pass = sandbox.tenant.temporaryAccessPass(user.id)!.temporaryAccessPass;
        return Promise.resolve();
      },
    });
    assert(pass.length >= 8);
    const folder = `${dir}/capture/${user.userPrincipalName}`;
    assertEquals((await Deno.stat(`${dir}/capture`)).mode! & 0o777, 0o700);
    assertEquals((await Deno.stat(folder)).mode! & 0o777, 0o700);
    const files = [...Deno.readDirSync(folder)].map((e) => e.name).sort();
    for (const file of files) assertEquals((await Deno.stat(`${folder}/${file}`)).mode! & 0o777, 0o600, file);
    const steps = files.filter((f) => f.endsWith(".json")).map((f) =>
      JSON.parse(Deno.readTextFileSync(`${folder}/${f}`))
    );
    deepStrictEqual(steps.map((s) => s.screen), [
      "enter-upn",
      "enter-tap",
      "more-information-required",
      "keep-account-secure",
      "stay-signed-in",
      "open-add-method",
      "open-method-options",
      "choose-security-key",
      "choose-usb-device",
      "start-ceremony",
      "name-passkey",
      "done",
      "goal",
    ]);
    assert(files.some((f) => f.endsWith(".png")));
    for (const step of steps) {
      assert(!String(step.url).includes("?") && !String(step.url).includes("#"), step.url);
    }
    for (const file of files.filter((f) => f.endsWith(".html") || f.endsWith(".json"))) {
      const text = await Deno.readTextFile(`${folder}/${file}`);
      assert(!text.includes(pass), `${file} holds the pass`);
      assert(!/[A-Za-z0-9_+/=.-]{40,}/.test(text), `${file} holds something token-like`);
      assert(!/<script[^>]*>[^<]/.test(text), `${file} holds a script body`);
    }

    const replayed = await replayCapture(browser, folder, automaticFlow);
    deepStrictEqual(replayed.filter((s) => !s.ok), []);
    assertEquals(replayed.length, steps.length);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a committed capture replays offline; a flow that lost a screen fails at that step", async () => {
  await using browser = await launchBrowser();
  const replayed = await replayCapture(browser, fixture, automaticFlow);
  deepStrictEqual(replayed.filter((s) => !s.ok), []);
  assert(replayed.length >= 10);

  const withoutUsb = parseFlow({
    ...automaticFlowJson,
    screens: automaticFlowJson.screens.filter((s) => s.name !== "choose-usb-device"),
  }, "without choose-usb-device");
  const broken = await replayCapture(browser, fixture, withoutUsb);
  const failed = broken.filter((s) => !s.ok);
  assertEquals(failed.length, 1);
  assertEquals(failed[0]!.expected, "choose-usb-device");
  assertEquals(failed[0]!.found, "nothing");
});
