/**
 * `whoami` and the token cache as an admin meets them, the CLI as separate processes against the
 * Entra sandbox: after the client secret or the client id changed, whoami does not say "signed in"
 * from the cache but says what changed (issue 12); setting PROVISIONING_TOKEN_CACHE_PASSPHRASE
 * re-encrypts the existing cache at once and removes its key file, and says so (issue 13, item 12).
 */
import { decodeProtectedHeader } from "jose";
import { assert, assertEquals } from "./assert.ts";
import { runCli } from "./cli.ts";
import { cliSandbox, sandboxEnv } from "./bulk_support.ts";

Deno.test("whoami after the client secret or client id changed says what changed instead of 'signed in'", async () => {
  await using sandbox = await cliSandbox({ users: 1 });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-whoami-cli-" });
  try {
    const env = sandboxEnv(sandbox);
    const first = await runCli(dir, env, [], "whoami");
    assertEquals(first.code, 0, first.stderr);
    assert.match(first.stdout, /^Signed in as\s+application \(client credentials\)$/m);

    const wrongSecret = "Changed~Secret.Value_5566778899";
    const secretChanged = await runCli(
      dir,
      { ...env, PROVISIONING_CLIENT_SECRET: wrongSecret },
      [],
      "whoami",
    );
    assertEquals(secretChanged.code, 1, secretChanged.stdout);
    assert.doesNotMatch(secretChanged.stdout, /Signed in as/);
    assert.match(secretChanged.stderr, /another client secret/);
    assert.match(secretChanged.stderr, /AADSTS7000215/);
    assert(
      !secretChanged.stderr.includes(wrongSecret) &&
        !secretChanged.stderr.includes(env.PROVISIONING_CLIENT_SECRET!),
    );

    const otherApp = sandbox.seeded.passkeyOnlyApp;
    const idChanged = await runCli(
      dir,
      { ...env, PROVISIONING_CLIENT_ID: otherApp.clientId, PROVISIONING_CLIENT_SECRET: otherApp.secret },
      [],
      "whoami",
    );
    assertEquals(idChanged.code, 0, idChanged.stderr);
    assert.match(idChanged.stdout, new RegExp(`\\(${otherApp.clientId}\\)`));
    assert.match(
      idChanged.stderr,
      new RegExp(
        `warning: The settings changed since the last sign-in: .*client id ${env.PROVISIONING_CLIENT_ID}`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("setting the token cache passphrase re-encrypts the existing cache at once and removes its key file", async () => {
  await using sandbox = await cliSandbox({ users: 1 });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-whoami-cli-" });
  try {
    const env = sandboxEnv(sandbox);
    assertEquals((await runCli(dir, env, [], "whoami")).code, 0);
    await Deno.stat(`${dir}/.provisioning/tokens.key`);
    const header = async () =>
      decodeProtectedHeader((await Deno.readTextFile(`${dir}/.provisioning/tokens.jwe`)).trim());
    assertEquals((await header()).alg, "dir");

    const passphrase = "cache-Passphrase~for.whoami";
    const run = await runCli(dir, { ...env, PROVISIONING_TOKEN_CACHE_PASSPHRASE: passphrase }, [], "whoami");
    assertEquals(run.code, 0, run.stderr);
    assert.match(run.stderr, /now encrypted with PROVISIONING_TOKEN_CACHE_PASSPHRASE/);
    assert(!run.stderr.includes(passphrase));
    const removed = await Deno.stat(`${dir}/.provisioning/tokens.key`).then(() => false, () => true);
    assert(removed, "the key file is gone");
    assertEquals((await header()).alg, "PBES2-HS512+A256KW");

    // Without the passphrase the cache no longer opens.
    const locked = await runCli(dir, env, [], "whoami");
    assertEquals(locked.code, 1);
    assert.match(locked.stderr, /encrypted with a passphrase/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
