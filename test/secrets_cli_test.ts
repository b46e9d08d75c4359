/**
 * Secrets never leave the process (issue 13, "Tests that prove less"): real bulk runs of the CLI
 * against the Entra sandbox, with `--verbose` and with `--log-format json`, on a software key
 * vault with a passphrase and a PIN, plus failing runs that print errors (a wrong vault
 * passphrase, a wrong client secret). Everything they wrote is then searched: stdout, stderr,
 * results.csv, failures.csv, the journals and every other file in the working folder, for the
 * client secret, the vault passphrase, the PIN, the token cache passphrase and the access token
 * the runs used (read back from the encrypted cache), and for anything shaped like a JWT. The
 * browser path's runs are searched for the Temporary Access Passes the tenant issued them.
 */
import { join, relative } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { type CliRun, runCli, sandboxEnvironment } from "./cli.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";
import { TokenCache } from "../plugins/entra/auth/token_cache.ts";
import { cliSandbox, sandboxEnv } from "./bulk_support.ts";
import type { PluginContext } from "../core/plugin.ts";

const quiet: PluginContext = {
  interaction: { requestPin: () => Promise.reject(new Error("no PIN here")), promptUserPresence: () => {} },
  env: () => undefined,
  readSecret: () => Promise.reject(new Error("no secret here")),
};

/** Every file under `dir`, with its path relative to `dir`, read as text. */
async function filesUnder(dir: string): Promise<{ path: string; text: string }[]> {
  const found: { path: string; text: string }[] = [];
  const walk = async (folder: string) => {
    for await (const entry of Deno.readDir(folder)) {
      const path = join(folder, entry.name);
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile) {
        found.push({ path: relative(dir, path), text: new TextDecoder().decode(await Deno.readFile(path)) });
      }
    }
  };
  await walk(dir);
  return found;
}

/** Where each secret shows, as "name in place" lines; empty when none does. */
function leaks(places: { path: string; text: string }[], secrets: Record<string, string>): string[] {
  const found: string[] = [];
  for (const { path, text } of places) {
    for (const [name, value] of Object.entries(secrets)) {
      if (text.includes(value)) found.push(`${name} in ${path}`);
    }
    // A JWT (header.payload of base64url JSON objects), whatever token it is.
    if (/eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/.test(text)) found.push(`a JWT in ${path}`);
    if (/Bearer\s+[A-Za-z0-9._~+/-]{20,}/.test(text)) found.push(`a bearer token in ${path}`);
  }
  return found;
}

function outputs(name: string, run: CliRun) {
  return [{ path: `${name} stdout`, text: run.stdout }, { path: `${name} stderr`, text: run.stderr }];
}

Deno.test("bulk runs with --verbose and --log-format json leave no secret or token in output, CSVs, journals or logs", async () => {
  await using sandbox = await entraProvider.startSandbox!(quiet, { port: 0, users: 10 });
  const dir = await Deno.makeTempDir({ prefix: "provisioning-secrets-cli-" });
  try {
    const secrets = {
      "vault passphrase": "vault-Passphrase~7Qx_c0rrect",
      PIN: "pin-Kw83xZq",
      "token cache passphrase": "cache-Passphrase~9Lm_horse",
    };
    const env: Record<string, string> = {
      ...sandboxEnvironment(sandbox.instructions),
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: secrets["vault passphrase"],
      PROVISIONING_KEY_PIN: secrets.PIN,
      PROVISIONING_TOKEN_CACHE_PASSPHRASE: secrets["token cache passphrase"],
    };
    const clientSecret = env.PROVISIONING_CLIENT_SECRET!;
    assert(clientSecret.length >= 16, "the sandbox prints a client secret");

    const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
    assertEquals(init.code, 0, init.stderr);

    const csv = (users: string[]) => `userPrincipalName\n${users.join("\n")}\n`;
    await Deno.writeTextFile(
      `${dir}/first.csv`,
      csv(["user0001@contoso.sandbox", "user0002@contoso.sandbox", "nobody@contoso.sandbox"]),
    );
    await Deno.writeTextFile(
      `${dir}/second.csv`,
      csv(["user0003@contoso.sandbox", "user0004@contoso.sandbox", "missing@contoso.sandbox"]),
    );
    const verbose = await runCli(
      dir,
      env,
      [],
      "provision",
      "--csv",
      "first.csv",
      "--verbose",
      "--results",
      "first-results.csv",
    );
    assertEquals(verbose.code, 1, verbose.stderr);
    const json = await runCli(
      dir,
      env,
      [],
      "provision",
      "--csv",
      "second.csv",
      "--log-format",
      "json",
      "--results",
      "second-results.csv",
    );
    assertEquals(json.code, 1, json.stderr);
    // The runs did real work, and the JSON run wrote JSON.
    const results = await Deno.readTextFile(`${dir}/first-results.csv`) +
      await Deno.readTextFile(`${dir}/second-results.csv`);
    for (const n of [1, 2, 3, 4]) assert(results.includes(`user000${n}@contoso.sandbox`), results);
    assert(json.stderr.trim().split("\n").some((line) => line.startsWith("{")), json.stderr);

    // Failing runs print errors (with --verbose, their causes): a wrong vault passphrase, a wrong
    // client secret.
    const wrongPassphrase = "wrong-Vault~Passphrase_42";
    const badVault = await runCli(
      dir,
      { ...env, PROVISIONING_VAULT_PASSPHRASE: wrongPassphrase },
      [],
      "provision",
      "--user",
      "user0005@contoso.sandbox",
      "--verbose",
    );
    assertEquals(badVault.code, 1, badVault.stderr);
    const wrongSecret = "Wrong~Client.Secret_0123456789";
    await Deno.remove(`${dir}/.provisioning/tokens.jwe`);
    const badSecret = await runCli(
      dir,
      { ...env, PROVISIONING_CLIENT_SECRET: wrongSecret },
      [],
      "provision",
      "--user",
      "user0006@contoso.sandbox",
      "--verbose",
      "--log-format",
      "json",
    );
    assertEquals(badSecret.code, 1, badSecret.stderr);
    assert(badSecret.stderr.includes("AADSTS7000215"), badSecret.stderr);

    // The access token the runs used, from the (passphrase-encrypted) cache of a last good run.
    const whoami = await runCli(dir, env, [], "whoami", "--verbose");
    assertEquals(whoami.code, 0, whoami.stderr);
    const cache = await TokenCache.open({
      dir: `${dir}/.provisioning`,
      passphrase: secrets["token cache passphrase"],
    });
    const accessToken = cache.entries()[0]?.accessToken;
    assert(accessToken !== undefined && accessToken.length > 100, "a token is cached");

    const places = [
      ...outputs("key init", init),
      ...outputs("provision --verbose", verbose),
      ...outputs("provision --log-format json", json),
      ...outputs("provision with a wrong vault passphrase", badVault),
      ...outputs("provision with a wrong client secret", badSecret),
      ...outputs("whoami", whoami),
      ...await filesUnder(dir),
    ];
    assert(places.some((place) => place.path.startsWith(".provisioning/runs/")), "journals are searched");
    assert(places.some((place) => place.path.endsWith("failures.csv")), "failures.csv is searched");
    deepLeaks(leaks(places, {
      ...secrets,
      "client secret": clientSecret,
      "wrong vault passphrase": wrongPassphrase,
      "wrong client secret": wrongSecret,
      "access token": accessToken,
      "access token's signature": accessToken.split(".")[2]!,
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("browser-path runs with --verbose and --log-format json leave no Temporary Access Pass, PIN or secret behind", async () => {
  await using sandbox = await cliSandbox({ users: 6 });
  // Every pass the tenant issues, as Graph returned it to the tool (observed on the sandbox's side).
  const passes: string[] = [];
  const store = sandbox.tenant.setTemporaryAccessPass.bind(sandbox.tenant);
  sandbox.tenant.setTemporaryAccessPass = (userId, tap) => {
    passes.push(tap.temporaryAccessPass);
    store(userId, tap);
  };
  const dir = await Deno.makeTempDir({ prefix: "provisioning-secrets-cli-" });
  try {
    const secrets = { "vault passphrase": "browser-Vault~passphrase_31", PIN: "pin-Rt55wQ" };
    const env: Record<string, string> = {
      ...sandboxEnv(sandbox),
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: secrets["vault passphrase"],
      PROVISIONING_KEY_PIN: secrets.PIN,
    };
    const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
    assertEquals(init.code, 0, init.stderr);
    await Deno.writeTextFile(`${dir}/a.csv`, "upn\nuser0001@contoso.sandbox\nuser0002@contoso.sandbox\n");
    await Deno.writeTextFile(`${dir}/b.csv`, "upn\nuser0003@contoso.sandbox\nuser0004@contoso.sandbox\n");
    // The test's --allow-read for its folder replaces the set's list: grant the browser again.
    const browser = ["--allow-read=/usr/bin/chromium"];
    const common = ["--via", "browser", "--no-preflight", "--concurrency", "2"];
    const verbose = await runCli(
      dir,
      env,
      browser,
      "--csv",
      "a.csv",
      ...common,
      "--verbose",
      "--results",
      "a-results.csv",
    );
    assertEquals(verbose.code, 0, verbose.stderr);
    const json = await runCli(
      dir,
      env,
      browser,
      "--csv",
      "b.csv",
      ...common,
      "--log-format",
      "json",
      "--results",
      "b-results.csv",
    );
    assertEquals(json.code, 0, json.stderr);
    assertEquals(passes.length, 4, "one pass per user was issued");
    assertEquals(sandbox.inspect().temporaryAccessPassesOutstanding, 0);

    const places = [
      ...outputs("browser run --verbose", verbose),
      ...outputs("browser run --log-format json", json),
      ...await filesUnder(dir),
    ];
    deepLeaks(leaks(places, {
      ...secrets,
      "client secret": env.PROVISIONING_CLIENT_SECRET!,
      ...Object.fromEntries(passes.map((pass, i) => [`Temporary Access Pass ${i + 1}`, pass])),
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function deepLeaks(found: string[]): void {
  assertEquals(found.length, 0, `secrets leaked:\n${found.join("\n")}`);
}
