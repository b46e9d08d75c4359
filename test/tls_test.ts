/**
 * TLS options over real HTTPS on loopback: the CA-file fetch against a server with a self-signed
 * certificate, and the real CLI (separate processes) against the Entra sandbox over HTTPS.
 */
import { assert, assertEquals } from "./assert.ts";
import { runCli } from "./cli.ts";
import { ProvisioningError } from "../core/errors.ts";
import { tlsFetch } from "../core/tls.ts";
import { selfSignedCertificate, startSandbox } from "../plugins/entra/sandbox/server.ts";

Deno.test("tlsFetch: an untrusted certificate is an error naming the host and the options; --ca-file trusts it", async () => {
  const tls = await selfSignedCertificate();
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", cert: tls.cert, key: tls.key, onListen() {} },
    () => new Response("hello"),
  );
  const url = `https://127.0.0.1:${server.addr.port}/`;
  const dir = await Deno.makeTempDir({ prefix: "provisioning-tls-" });
  try {
    {
      using plain = await tlsFetch();
      const error = await plain(url).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ProvisioningError, String(error));
      assertEquals(error.code, "tls-untrusted");
      assert.match(
        error.message,
        new RegExp(`Cannot connect to 127\\.0\\.0\\.1:${server.addr.port}: .*not trusted`),
      );
      assert.match(error.hint!, /--ca-file.*--local-ssl-verify.*--disable-ssl-verify/);
    }
    await Deno.writeTextFile(`${dir}/ca.pem`, tls.cert);
    {
      using trusting = await tlsFetch({ caFile: `${dir}/ca.pem` });
      const response = await trusting(url);
      assertEquals(await response.text(), "hello");
    }
    await Deno.writeTextFile(
      `${dir}/broken.pem`,
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    await assert.rejects(
      tlsFetch({ caFile: `${dir}/broken.pem` }),
      /CA file ".*broken\.pem": certificate 1 of 1/,
    );
    await assert.rejects(
      tlsFetch({ caFile: `${dir}/missing.pem` }),
      /Cannot read the CA file ".*missing\.pem"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CLI over HTTPS: refuses the sandbox's self-signed certificate by default; --ca-file and --disable-ssl-verify (with its warning) provision", async () => {
  await using sandbox = await startSandbox({ tls: true, users: 3 });
  const host = new URL(sandbox.url).host;
  const dir = await Deno.makeTempDir({ prefix: "provisioning-tls-cli-" });
  try {
    await Deno.writeTextFile(`${dir}/sandbox-ca.pem`, sandbox.certificate!);
    const env: Record<string, string> = {
      PROVISIONING_SANDBOX: sandbox.url,
      PROVISIONING_TENANT: sandbox.tenantId,
      PROVISIONING_CLIENT_ID: sandbox.app.clientId,
      PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: "correct horse battery",
      PROVISIONING_KEY_PIN: "482916",
    };
    const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
    assertEquals(init.code, 0, init.stderr);

    const refused = await runCli(dir, env, [], "provision", "--user", "user0001@contoso.sandbox");
    assertEquals(refused.code, 1, refused.stderr);
    assert.match(
      refused.stderr,
      new RegExp(`Cannot connect to ${host.replaceAll(".", "\\.")}: its TLS certificate`),
    );
    assert.match(refused.stderr, /--ca-file <pem>.*--local-ssl-verify.*--disable-ssl-verify/);

    const trusted = await runCli(
      dir,
      env,
      [],
      "provision",
      "--ca-file",
      "sandbox-ca.pem",
      "--user",
      "user0001@contoso.sandbox",
    );
    assertEquals(trusted.code, 0, trusted.stderr);
    assert.match(trusted.stdout, /provisioned\s+1\n/);
    assert.ok(!trusted.stderr.includes("NOT verified"));

    const unverified = await runCli(
      dir,
      env,
      [`--allow-run=${Deno.execPath()}`],
      "provision",
      "--user",
      "user0002@contoso.sandbox",
      "--disable-ssl-verify",
    );
    assertEquals(unverified.code, 0, unverified.stderr);
    assert.match(unverified.stdout, /provisioned\s+1\n/);
    const warnings = unverified.stderr.split("\n").filter((line) =>
      line.startsWith("warning: --disable-ssl-verify")
    );
    assertEquals(warnings.length, 1, unverified.stderr);
    assert.match(
      warnings[0]!,
      /127\.0\.0\.1.* are NOT verified; .*intercept admin tokens and Temporary Access Passes/,
    );

    const verified = sandbox.inspect().users.filter((u) => u.passkeys.some((p) => p.verified));
    assert.deepEqual(verified.map((u) => u.userPrincipalName).sort(), [
      "user0001@contoso.sandbox",
      "user0002@contoso.sandbox",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
