/**
 * The real CLI, as separate processes, against the Entra sandbox on loopback: the admin's
 * `--sandbox` run from key to directory, and the refusals that keep it exactly-once.
 */
import { assert, assertEquals } from "./assert.ts";
import { runCli, sandboxEnvironment } from "./cli.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";
import type { PluginContext } from "../core/plugin.ts";

const quiet: PluginContext = {
  interaction: { requestPin: () => Promise.reject(new Error("no PIN here")), promptUserPresence: () => {} },
  env: () => undefined,
  readSecret: () => Promise.reject(new Error("no secret here")),
};

Deno.test("provision --sandbox: two users get one verified passkey each; a new run skips them, an unknown user fails alone", async () => {
  await using sandbox = await entraProvider.startSandbox!(quiet, { port: 0, users: 5 });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-entra-cli-" });
  try {
    const instructions = sandboxEnvironment(sandbox.instructions);
    const env: Record<string, string> = {
      ...instructions,
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: "correct horse battery",
      PROVISIONING_KEY_PIN: "482916",
    };
    const noKey = await runCli(dir, env, [], "provision", "--user", "user0001@contoso.sandbox");
    assertEquals(noKey.code, 1);
    assert.match(noKey.stderr, /vault ".*key\.vault" does not exist.*provisioning key init/);

    const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
    assertEquals(init.code, 0, init.stderr);

    const run = await runCli(
      dir,
      env,
      [],
      "provision",
      "--user",
      "user0001@contoso.sandbox",
      "--user",
      "user0002@contoso.sandbox",
      "--user",
      "nobody@contoso.sandbox",
      "--display-name",
      "Provisioned key",
    );
    assertEquals(run.code, 1, run.stderr);
    assert.match(run.stdout, /provisioned\s+2\n/);
    assert.match(run.stdout, /revoke --run [0-9a-f]{12}/);
    assert.match(run.stderr, /nobody@contoso\.sandbox \(row 3\): failed \[user-not-found\]/);
    // The final name (not failures.csv.partial), absolute (issue 12).
    assert.ok(run.stderr.includes(`1 user failed; see ${dir}/failures.csv.`), run.stderr);
    const results = await Deno.readTextFile(`${dir}/results.csv`);
    assert.match(results, /"user0001@contoso\.sandbox","[0-9a-f-]{36}","provisioned"/);
    assert.match(results, /"user0002@contoso\.sandbox","[0-9a-f-]{36}","provisioned"/);
    assert.match(
      await Deno.readTextFile(`${dir}/failures.csv`),
      /"nobody@contoso\.sandbox","3","user-not-found"/,
    );

    const inspection = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as {
      users: {
        userPrincipalName: string;
        passkeys: { displayName: string; verified: boolean; aaGuid: string }[];
      }[];
    };
    const withPasskeys = inspection.users.filter((u) => u.passkeys.length > 0);
    assert.deepEqual(withPasskeys.map((u) => u.userPrincipalName).sort(), [
      "user0001@contoso.sandbox",
      "user0002@contoso.sandbox",
    ]);
    for (const user of withPasskeys) {
      assertEquals(user.passkeys.length, 1);
      assertEquals(user.passkeys[0]!.verified, true);
      assertEquals(user.passkeys[0]!.displayName, "Provisioned key");
      assertEquals(user.passkeys[0]!.aaGuid, "70726f76-6973-696f-6e69-6e67736b0001");
    }

    // A new run for a user who holds a passkey from this key model skips them (exit 0).
    const again = await runCli(dir, env, [], "provision", "--user", "user0001@contoso.sandbox");
    assertEquals(again.code, 0, again.stderr);
    assert.match(again.stdout, /skipped\s+1\n/);
    const after = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as typeof inspection;
    assertEquals(
      after.users.find((u) => u.userPrincipalName === "user0001@contoso.sandbox")!.passkeys.length,
      1,
    );

    // No tenant configured: it is discovered from the domain of the user to provision.
    const { PROVISIONING_TENANT: _tenant, ...withoutTenant } = env;
    const discovered = await runCli(
      dir,
      withoutTenant,
      [],
      "provision",
      "--user",
      "user0003@contoso.sandbox",
    );
    assertEquals(discovered.code, 0, discovered.stderr);
    assert.match(discovered.stdout, /provisioned\s+1\n/);

    const whoami = await runCli(dir, env, [], "whoami");
    assertEquals(whoami.code, 0, whoami.stderr);
    assert.match(whoami.stdout, /UserAuthMethod-Passkey\.ReadWrite\.All/);
    assert.ok(!whoami.stdout.includes(env.PROVISIONING_CLIENT_SECRET!), "whoami never prints the secret");

    // The sandbox's default tenant is ready for this key: doctor says so (test/doctor_cli_test.ts
    // covers a tenant that is not).
    const doctor = await runCli(dir, env, [], "doctor");
    assertEquals(doctor.code, 0, doctor.stdout + doctor.stderr);
    assert.match(doctor.stdout, /^ok\s+nothing in the policies or permissions stands in the way$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
