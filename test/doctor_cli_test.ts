/**
 * `doctor` and the preflight as an admin meets them, the CLI as separate processes against the
 * Entra sandbox (issue 13, "Tests that prove less"): what doctor prints for a tenant that is ready
 * and for one whose Passkey (FIDO2) method is off; a run that the preflight stops before any user
 * is looked up, with nothing journaled or registered; and (issue 13, item 7) a token refused
 * moments after an earlier process cached it, which is replaced instead of making the preflight
 * blame a permission.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { runCli } from "./cli.ts";
import { type Sandbox, startSandbox } from "../plugins/entra/sandbox/server.ts";

/** A sandbox as `provisioning sandbox` serves it (Entra's real rp id), and the admin's environment. */
async function sandboxAndEnv(dir: string): Promise<{ sandbox: Sandbox; env: Record<string, string> }> {
  const sandbox = await startSandbox({ users: 5 });
  const env = {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_TENANT: sandbox.tenantId,
    PROVISIONING_CLIENT_ID: sandbox.app.clientId,
    PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
    PROVISIONING_VAULT: `${dir}/key.vault`,
    PROVISIONING_VAULT_PASSPHRASE: "doctor-Vault~passphrase",
    PROVISIONING_KEY_PIN: "doctor-Pin-4821",
  };
  const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
  assertEquals(init.code, 0, init.stderr);
  return { sandbox, env };
}

async function changePolicy(sandbox: Sandbox, fido2: Record<string, unknown>): Promise<void> {
  const response = await fetch(`${sandbox.url}/_sandbox/policy`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ fido2 }),
  });
  assertEquals(response.status, 200, await response.text());
}

/** Graph calls the sandbox counted, by route, except the token endpoint's. */
function graphCalls(sandbox: Sandbox): Record<string, number> {
  const calls = sandbox.inspect().calls as Record<string, number>;
  return Object.fromEntries(Object.entries(calls).filter(([route]) => !route.includes("oauth2")));
}

Deno.test("doctor says ok for a ready tenant and names the problem, with exit 1, when the Passkey method is off", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-doctor-cli-" });
  const { sandbox, env } = await sandboxAndEnv(dir);
  try {
    const ready = await runCli(dir, env, [], "doctor");
    assertEquals(ready.code, 0, ready.stderr);
    assert.match(ready.stdout, /^ok\s+nothing in the policies or permissions stands in the way$/m);
    assert.doesNotMatch(ready.stdout, /^error/m);

    await changePolicy(sandbox, { state: "disabled" });
    const off = await runCli(dir, env, [], "doctor");
    assertEquals(off.code, 1, off.stderr);
    assert.match(off.stdout, /^error\s+The Passkey \(FIDO2\) method is disabled in this tenant/m);
    assert.match(off.stdout, /Enable it in Entra ID > Authentication methods > Passkey \(FIDO2\)/);
    assert.doesNotMatch(off.stdout, /^ok/m);
    assert.match(off.stderr, /1 problem would make a run fail/);
  } finally {
    await sandbox.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the preflight stops a run before any user is looked up: nothing journaled, registered or written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-doctor-cli-" });
  const { sandbox, env } = await sandboxAndEnv(dir);
  try {
    await changePolicy(sandbox, { isSelfServiceRegistrationAllowed: false });
    await Deno.writeTextFile(
      `${dir}/users.csv`,
      "userPrincipalName\nuser0001@contoso.sandbox\nuser0002@contoso.sandbox\n",
    );
    const run = await runCli(dir, env, [], "provision", "--csv", "users.csv");
    assertEquals(run.code, 1, run.stderr);
    assert.match(
      run.stderr,
      /Cannot start the run: 1 problem would make every user fail \(self-service-setup-off\)/,
    );
    assert.match(run.stderr, /Allow self-service setup/);
    assert.doesNotMatch(run.stderr + run.stdout, /started/);

    const touched = Object.keys(graphCalls(sandbox)).filter((route) => /users/i.test(route));
    assertEquals(touched.length, 0, `user routes called: ${touched.join(", ")}`);
    for (const user of sandbox.inspect().users) assertEquals(user.passkeys.length, 0, user.userPrincipalName);
    const journals: string[] = [];
    try {
      for await (const entry of Deno.readDir(`${dir}/.provisioning/runs`)) journals.push(entry.name);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    deepStrictEqual(journals, [], "no journal");
    for (const file of ["results.csv", "failures.csv"]) {
      const exists = await Deno.stat(`${dir}/${file}`).then(() => true, () => false);
      assert(!exists, `${file} was written`);
    }
  } finally {
    await sandbox.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cached token refused moments after an earlier process got it is replaced; doctor blames no permission", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-doctor-cli-" });
  const { sandbox, env } = await sandboxAndEnv(dir);
  try {
    const earlier = await runCli(dir, env, [], "whoami");
    assertEquals(earlier.code, 0, earlier.stderr);
    // Graph stops accepting the cached token at once (the tenant's signing key is replaced).
    await sandbox.oauth.rotateSigningKey();
    const doctor = await runCli(dir, env, [], "doctor");
    assertEquals(doctor.code, 0, doctor.stdout + doctor.stderr);
    assert.doesNotMatch(doctor.stdout, /Cannot read the .* policy|Grant Policy\.Read/);
    assert.match(doctor.stdout, /^ok\s/m);
    const run = await runCli(dir, env, [], "provision", "--user", "user0001@contoso.sandbox");
    assertEquals(run.code, 0, run.stderr);
    assert.match(run.stdout, /provisioned\s+1\n/);
  } finally {
    await sandbox.close();
    await Deno.remove(dir, { recursive: true });
  }
});
