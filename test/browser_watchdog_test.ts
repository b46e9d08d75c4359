/**
 * Chromium never outlives the CLI (issue 13, "Smaller"): after kill -9 of the process that
 * launched it, the watchdog ends the browser and its helpers and removes the profile; and what a
 * run left when its watchdog died too is cleaned up at the next launch in the same folder.
 */
import { assert, assertEquals } from "./assert.ts";
import { launchBrowser } from "../core/browser/driver.ts";
import { sleep } from "../core/sleep.ts";

/** Process ids whose command line mentions `text` (from `ps`). */
async function processesWith(text: string): Promise<number[]> {
  const out = await new Deno.Command("ps", { args: ["-eo", "pid=,args="], stdout: "piped" }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter((line) => line.includes(text))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

async function until(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await sleep(100);
  }
  return await check();
}

Deno.test("kill -9 of the launching process: the browser and its helpers end, the profile goes", async () => {
  const parent = await Deno.makeTempDir({ prefix: "watchdog-" });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-q", "--allow-all", new URL("./browser_child.ts", import.meta.url).pathname, parent],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      line += value;
    }
    assert(line.includes("pid"), line);
    const [profile] = [...Deno.readDirSync(parent)].map((e) => `${parent}/${e.name}`);
    assert(profile, "a profile folder");
    assert((await processesWith(profile!)).length >= 1, "the browser runs");
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    assert(
      await until(async () => (await processesWith(profile!)).length === 0, 15_000),
      "the browser ended",
    );
    assert(
      await until(() => Promise.resolve([...Deno.readDirSync(parent)].length === 0), 10_000),
      "profile removed",
    );
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("a browser left by a run whose watchdog died too is ended at the next launch", async () => {
  const parent = await Deno.makeTempDir({ prefix: "leftover-" });
  const stale = `${parent}/provisioning-browser-stale`;
  await Deno.mkdir(stale);
  const orphan = new Deno.Command("/usr/bin/chromium", {
    args: ["--headless", "--no-sandbox", "--disable-gpu", `--user-data-dir=${stale}`, "about:blank"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    assert(await until(async () => (await processesWith(stale)).length >= 1, 15_000), "the orphan runs");
    await Deno.writeTextFile(`${stale}/browser.pid`, String(orphan.pid));
    await Deno.writeTextFile(`${stale}/watchdog.pid`, "999999999"); // gone
    const old = new Date(Date.now() - 5 * 60_000);
    await Deno.utime(stale, old, old);
    {
      await using _browser = await launchBrowser({ profileParent: parent });
      const status = await orphan.status;
      assertEquals(status.signal, "SIGKILL");
      assertEquals([...Deno.readDirSync(parent)].some((e) => e.name === "provisioning-browser-stale"), false);
    }
  } finally {
    try {
      orphan.kill("SIGKILL");
    } catch {
      // Ended.
    }
    await orphan.status;
    await Deno.remove(parent, { recursive: true });
  }
});
