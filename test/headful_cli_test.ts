/**
 * `--mode headful` as an admin runs it: with a display (a real X server, Xvfb) the browser path
 * runs in a visible Chromium window and the user gets a verified passkey; without one, the run
 * stops at once with one clear line instead of Chromium's log.
 */
import { assert, assertEquals } from "./assert.ts";
import { bulkFixture, passkeysByUser } from "./bulk_support.ts";
import { runCli } from "./cli.ts";

/** Starts Xvfb on a free display number; dispose of it to stop it. */
async function startXvfb(): Promise<{ display: string } & AsyncDisposable> {
  for (let number = 90 + Math.floor(Math.random() * 200); number < 400; number++) {
    try {
      await Deno.lstat(`/tmp/.X11-unix/X${number}`);
      continue; // taken
    } catch {
      // free
    }
    const server = new Deno.Command("Xvfb", {
      args: [`:${number}`, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    for (let i = 0; i < 100; i++) {
      try {
        await Deno.lstat(`/tmp/.X11-unix/X${number}`);
        return {
          display: `:${number}`,
          async [Symbol.asyncDispose]() {
            server.kill("SIGTERM");
            await server.status;
          },
        };
      } catch {
        const exited = await Promise.race([
          server.status.then(() => true),
          new Promise((resolve) => setTimeout(() => resolve(false), 50)),
        ]);
        if (exited) break;
      }
    }
    try {
      server.kill("SIGKILL");
    } catch {
      // It ended already (the display was taken): try the next number.
    }
    await server.status;
  }
  throw new Error("could not start Xvfb");
}

Deno.test("--mode headful under Xvfb: a visible browser window registers the user's passkey", async () => {
  await using fixture = await bulkFixture({ users: 2 });
  await using xvfb = await startXvfb();
  const [upn] = fixture.upns(1);
  const run = await runCli(
    fixture.dir,
    { ...fixture.env, DISPLAY: xvfb.display },
    ["--allow-read=/usr/bin/chromium"],
    "--user",
    upn!,
    "--mode",
    "headful",
    "--no-preflight",
  );
  assertEquals(run.code, 0, run.stderr);
  assert.match(run.stdout, /provisioned\s+1\n/);
  const held = passkeysByUser(fixture.sandbox).get(upn!);
  assertEquals(held?.length, 1);
  assert.ok(held![0]!.verified);
});

Deno.test("--mode headful without a display: one clear line, nothing started", async () => {
  await using fixture = await bulkFixture({ users: 2 });
  const [upn] = fixture.upns(1);
  const run = await runCli(fixture.dir, fixture.env, [], "--user", upn!, "--mode", "headful");
  assertEquals(run.code, 2, run.stderr);
  assertEquals(run.stderr.trim().split("\n").length, 1, run.stderr);
  assert.match(run.stderr, /no display.*Use --mode headless, or run where a desktop session is available/);
  assertEquals(passkeysByUser(fixture.sandbox).size, 0);
});

Deno.test("a browser search the permissions refused is said so, not reported as no browser installed", async () => {
  await using fixture = await bulkFixture({ users: 2 });
  const [upn] = fixture.upns(1);
  // Run directly with --allow-read of its folder only (which replaces the set's list): the places
  // the browser is looked for are not readable.
  const run = await runCli(fixture.dir, fixture.env, [], "--user", upn!, "--via", "browser");
  assertEquals(run.code, 2, run.stderr);
  assert.match(run.stderr, /Cannot look for the browser: this run may not read "\/usr\/bin\/chromium"/);
  assert.match(run.stderr, /Name the browser with --browser PATH/);
  assert.doesNotMatch(run.stderr, /not installed|no such file/);
});
