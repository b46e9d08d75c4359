/**
 * `--local-ssl-verify` and `--disable-ssl-verify` in the task form (`deno task start`), which must
 * restart Deno with its start-up TLS settings without the admin granting anything: the launcher
 * applies them. The operating system's store is pointed at the sandbox's CA with SSL_CERT_FILE,
 * which Deno's system store (rustls-native-certs, OpenSSL's conventions) reads.
 */
import { assert, assertEquals } from "./assert.ts";
import { startSandbox } from "../plugins/entra/sandbox/server.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

async function task(cwd: string, env: Record<string, string>, ...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "-q", `--config=${root}/deno.json`, "start", ...args],
    cwd,
    env: { ...env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: text(output.stdout), stderr: text(output.stderr) };
}

Deno.test("task form over HTTPS: --local-ssl-verify trusts the OS store, --disable-ssl-verify skips with a warning", async () => {
  await using sandbox = await startSandbox({
    tls: true,
    users: 3,
  });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-tls-task-" });
  try {
    await Deno.writeTextFile(`${dir}/store.pem`, sandbox.certificate!);
    const env: Record<string, string> = {
      PROVISIONING_SANDBOX: sandbox.url,
      PROVISIONING_TENANT: sandbox.tenantId,
      PROVISIONING_CLIENT_ID: sandbox.app.clientId,
      PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
      PROVISIONING_VAULT: "key.vault",
      PROVISIONING_VAULT_PASSPHRASE: "correct horse battery",
      PROVISIONING_KEY_PIN: "482916",
      SSL_CERT_FILE: `${dir}/store.pem`,
    };
    const init = await task(dir, env, "key", "init", "--kdf-iterations", "100000", "--set-pin");
    assertEquals(init.code, 0, init.stderr);

    const refused = await task(dir, env, "--user", "user0001@contoso.sandbox");
    assertEquals(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /TLS certificate is not trusted/);

    const store = await task(dir, env, "--user", "user0001@contoso.sandbox", "--local-ssl-verify");
    assertEquals(store.code, 0, store.stderr);
    assert.match(store.stdout, /provisioned\s+1\n/);

    const unverified = await task(dir, env, "--user", "user0002@contoso.sandbox", "--disable-ssl-verify");
    assertEquals(unverified.code, 0, unverified.stderr);
    assert.match(
      unverified.stderr,
      /^warning: --disable-ssl-verify: TLS certificates of .*127\.0\.0\.1.* are NOT verified/m,
    );
    const verified = sandbox.inspect().users.filter((u) => u.passkeys.some((p) => p.verified));
    assertEquals(verified.length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
