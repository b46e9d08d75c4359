/**
 * The CLI the way an admin runs it from a checkout: `deno task --config <checkout>/deno.json start`
 * from a folder of their own, with every input and output in yet another folder (CSV, vault,
 * results, failures, journal, PIN file, key server socket), some named relative to where they
 * ran it. Nothing may land in the checkout, and summaries print absolute paths.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { cliSandbox, passkeysByUser, readOutput, sandboxEnv } from "./bulk_support.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The environment of the run: the sandbox's settings (no PATH: the task finds `deno` itself). */
function shellEnv(extra: Record<string, string>): Record<string, string> {
  return { ...extra, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" };
}

function taskCommand(cwd: string, env: Record<string, string>, args: readonly string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", `--config=${root}/deno.json`, "start", ...args],
    cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    // A hung run fails the test with what it printed instead of hanging it.
    signal: AbortSignal.timeout(120_000),
  });
}

async function task(cwd: string, env: Record<string, string>, ...args: string[]) {
  const output = await taskCommand(cwd, env, args).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: text(output.stdout), stderr: text(output.stderr) };
}

async function waitForSocket(path: string, process: Deno.ChildProcess): Promise<void> {
  for (let i = 0; i < 400; i++) {
    try {
      if ((await Deno.lstat(path)).isSocket) return;
    } catch {
      // not yet
    }
    const exited = await Promise.race([
      process.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 50)),
    ]);
    if (exited) {
      const stderr = new TextDecoder().decode((await process.output()).stderr);
      throw new Error(`key serve exited before its socket appeared: ${stderr}`);
    }
  }
  throw new Error(`key serve did not create ${path} in 20 s`);
}

async function checkoutFiles(): Promise<Set<string>> {
  const names = new Set<string>();
  for await (const entry of Deno.readDir(root)) names.add(entry.name);
  return names;
}

Deno.test("deno task start from the admin's own folder: files anywhere, relative paths from where it ran", async () => {
  await using sandbox = await cliSandbox({ users: 4 });
  const base = await Deno.makeTempDir({ prefix: "provisioning-admin-" });
  const admin = `${base}/admin`; // where the admin types the commands
  const elsewhere = `${base}/elsewhere`; // where their files are
  for (
    const folder of [admin, `${elsewhere}/in`, `${elsewhere}/keys`, `${elsewhere}/out`, `${elsewhere}/sock`]
  ) {
    await Deno.mkdir(folder, { recursive: true });
  }
  const before = await checkoutFiles();
  const env = shellEnv({ ...sandboxEnv(sandbox), PROVISIONING_VAULT_PASSPHRASE: "correct horse battery" });
  const upns = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u));
  try {
    // 1. A software key in a folder elsewhere, named relative to the admin's folder.
    const withPin = { ...env, PROVISIONING_KEY_PIN: "482916" };
    const init = await task(
      admin,
      withPin,
      "key",
      "init",
      "--vault",
      "../elsewhere/keys/key.vault",
      "--kdf-iterations",
      "100000",
      "--set-pin",
    );
    assertEquals(init.code, 0, init.stderr);
    await Deno.stat(`${elsewhere}/keys/key.vault`);
    // And one without a PIN, to serve as a security key that the run gives a random PIN.
    const served = await task(
      admin,
      env,
      "key",
      "init",
      "--vault",
      `${elsewhere}/keys/served.vault`,
      "--kdf-iterations",
      "100000",
    );
    assertEquals(served.code, 0, served.stderr);

    // 2. A CSV run with every input and output elsewhere; the journal too.
    await Deno.writeTextFile(`${elsewhere}/in/users.csv`, ["upn", upns[0], upns[1]].join("\n") + "\n");
    const run = await task(
      admin,
      withPin,
      "--csv",
      `${elsewhere}/in/users.csv`,
      "--vault",
      `${elsewhere}/keys/key.vault`,
      "--results",
      `${elsewhere}/out/results.csv`,
      "--failures",
      `${elsewhere}/out/failures.csv`,
      "--journal-dir",
      `${elsewhere}/journal`,
    );
    assertEquals(run.code, 0, run.stderr);
    assertEquals((await readOutput(`${elsewhere}/out/results.csv`)).length, 2);
    assert.ok(run.stdout.includes(`${elsewhere}/out/results.csv`), run.stdout);
    // One run journal, beside the per-user locks folder (docs/exactly-once.md).
    const journals = [...Deno.readDirSync(`${elsewhere}/journal`)].map((e) => e.name)
      .filter((name) => name.endsWith(".jsonl"));
    assertEquals(journals.length, 1, journals.join());

    // 3. The same vault served as a security key on a socket elsewhere; a run through it writes
    //    its PIN file elsewhere and its results, by default, in the admin's folder.
    const socket = `${elsewhere}/sock/key.sock`;
    const server = taskCommand(admin, env, [
      "key",
      "serve",
      "--vault",
      `${elsewhere}/keys/served.vault`,
      "--socket",
      socket,
    ])
      .spawn();
    try {
      await waitForSocket(socket, server);
      const hid = await task(
        admin,
        env,
        "provision",
        "--user",
        upns[2]!,
        "--authenticator",
        "hid",
        "--device",
        `unix:${socket}`,
        "--new-pin",
        "random",
        "--pin-output",
        `${elsewhere}/pins.jsonl`,
      );
      assertEquals(hid.code, 0, hid.stderr);
      assert.ok(hid.stdout.includes(`${admin}/results.csv`), hid.stdout);
    } finally {
      try {
        server.kill("SIGTERM"); // deno task passes it on; the launcher passes it to the program
      } catch {
        // It ended already (its time limit).
      }
      await server.output();
    }
    const pins = (await Deno.readTextFile(`${elsewhere}/pins.jsonl`)).trim().split("\n");
    assert.ok(pins.length >= 1);
    assertEquals((await readOutput(`${admin}/results.csv`)).length, 1);
    assertEquals(passkeysByUser(sandbox).size, 3);

    // Nothing landed in the checkout; the data folder is the admin's.
    deepStrictEqual([...await checkoutFiles()].filter((name) => !before.has(name)), []);
    await Deno.stat(`${admin}/.provisioning`);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("deno task start: a path no option names is refused with the path, the reason and the way to allow it", async () => {
  const base = await Deno.makeTempDir({ prefix: "provisioning-admin-" });
  try {
    await Deno.mkdir(`${base}/admin`);
    await Deno.writeTextFile(`${base}/secret.txt`, "root:x:0:0:root:/root:/bin/bash\n");
    // A link in the admin's folder to a file outside it: named, it is refused, not read.
    // (Deno.symlink needs unscoped read and write, which the test permission set does not grant.)
    const link = await new Deno.Command("ln", {
      args: ["-s", `${base}/secret.txt`, `${base}/admin/users.csv`],
    })
      .output();
    assertEquals(link.code, 0);
    const run = await task(`${base}/admin`, shellEnv({}), "--csv", "users.csv", "--dry-run");
    assertEquals(run.code, 2, run.stderr);
    assert.match(run.stderr, /users\.csv/);
    assert.match(run.stderr, /link/);
    assert.ok(!run.stderr.includes("root:x:0:0"), run.stderr);
    assert.ok(!run.stdout.includes("root:x:0:0"), run.stdout);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
