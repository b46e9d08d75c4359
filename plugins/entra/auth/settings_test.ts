/**
 * Settings resolution on a real working folder: flags over environment over `provisioning.json`
 * over defaults, clear usage errors naming the setting's source, and secrets refused in the file.
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { UsageError } from "../../../core/errors.ts";
import { tempDir } from "./_testing.ts";
import { describeSettings, resolveEntraSettings } from "./settings.ts";
import { defaultDelegatedPermissions } from "./tokens.ts";

const tenantId = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const fileClient = "00001111-aaaa-2222-bbbb-3333cccc4444";
const envClient = "55556666-eeee-7777-ffff-888899990000";
const flagClient = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

async function withConfig(config: unknown, run: (cwd: string) => Promise<void>): Promise<void> {
  await using dir = await tempDir();
  await Deno.writeTextFile(
    `${dir.path}/provisioning.json`,
    typeof config === "string" ? config : JSON.stringify(config),
  );
  await run(dir.path);
}

Deno.test("settings come from flags, then the environment, then provisioning.json, then defaults", async () => {
  await withConfig(
    {
      entra: {
        tenant: "contoso.com",
        clientId: fileClient,
        cloud: "usgov",
        permissions: ["User.Read.All"],
        tokenCache: "state",
      },
      csv: { delimiter: ";" },
    },
    async (cwd) => {
      const fileOnly = await resolveEntraSettings({ env: () => undefined, cwd });
      assertEquals(fileOnly.tenant, "contoso.com");
      assertEquals(fileOnly.clientId, fileClient);
      assertEquals(fileOnly.cloud.name, "usgov");
      deepStrictEqual(fileOnly.permissions, ["User.Read.All"]);
      assertEquals(fileOnly.tokenCacheDir, `${cwd}/state`);
      assertEquals(fileOnly.signIn, "device-code");
      deepStrictEqual(
        [fileOnly.sources.tenant, fileOnly.sources.clientId, fileOnly.sources.cloud, fileOnly.sources.signIn],
        ["file", "file", "file", "default"],
      );

      const env: Record<string, string> = {
        PROVISIONING_TENANT: tenantId,
        PROVISIONING_CLIENT_ID: envClient,
        PROVISIONING_CLOUD: "china",
      };
      const fromEnv = await resolveEntraSettings({ env: (name) => env[name], cwd });
      assertEquals(fromEnv.tenant, tenantId);
      assertEquals(fromEnv.clientId, envClient);
      assertEquals(fromEnv.cloud.name, "china");

      const fromFlags = await resolveEntraSettings({
        env: (name) => env[name],
        cwd,
        flags: {
          tenant: "fabrikam.com",
          clientId: flagClient,
          sandbox: "http://127.0.0.1:8400",
          signIn: "browser",
        },
      });
      assertEquals(fromFlags.tenant, "fabrikam.com");
      assertEquals(fromFlags.clientId, flagClient);
      assertEquals(fromFlags.cloud.name, "sandbox", "--sandbox overrides the cloud");
      assertEquals(fromFlags.cloud.loginBase, "http://127.0.0.1:8400");
      assertEquals(fromFlags.signIn, "browser");
      assertEquals(fromFlags.sources.tenant, "flag");
    },
  );
});

Deno.test("without a config file the defaults apply: public cloud, device code, the default permissions", async () => {
  await using dir = await tempDir();
  const settings = await resolveEntraSettings({ env: () => undefined, cwd: dir.path });
  assertEquals(settings.cloud.name, "public");
  assertEquals(settings.tenant, undefined);
  assertEquals(settings.clientId, undefined);
  assertEquals(settings.signIn, "device-code");
  deepStrictEqual(settings.permissions, defaultDelegatedPermissions);
  assertEquals(settings.tokenCacheDir, `${dir.path}/.provisioning`);
});

Deno.test("a client secret or certificate in the environment makes client credentials the default, and is never shown", async () => {
  await using dir = await tempDir();
  const env: Record<string, string> = {
    PROVISIONING_CLIENT_SECRET: "Very~Secret-Value",
    PROVISIONING_TOKEN_CACHE_PASSPHRASE: "pass phrase",
  };
  const settings = await resolveEntraSettings({ env: (name) => env[name], cwd: dir.path });
  assertEquals(settings.signIn, "client-credentials");
  assertEquals(settings.clientSecret, "Very~Secret-Value");
  const shown = JSON.stringify(describeSettings(settings));
  assert(!shown.includes("Very~Secret-Value") && !shown.includes("pass phrase"), shown);
  assert(shown.includes("(set)"));

  const certificate = await resolveEntraSettings({
    env: (name) => ({ PROVISIONING_CLIENT_CERTIFICATE: "app.pem" } as Record<string, string>)[name],
    cwd: dir.path,
  });
  assertEquals(certificate.signIn, "client-credentials");
  assertEquals(certificate.clientCertificate, `${dir.path}/app.pem`);

  const error = await rejects(
    resolveEntraSettings({ env: () => undefined, cwd: dir.path, flags: { signIn: "client-credentials" } }),
    UsageError,
  );
  assert(error.hint?.includes("PROVISIONING_CLIENT_SECRET"));
});

Deno.test("an invalid value is a usage error naming where it came from", async () => {
  await using dir = await tempDir();
  const env: Record<string, string> = { PROVISIONING_CLIENT_ID: "my-app" };
  const fromEnv = await rejects(
    resolveEntraSettings({ env: (name) => env[name], cwd: dir.path }),
    UsageError,
  );
  assertEquals(fromEnv.exitCode, 2);
  assert(fromEnv.message.startsWith('Cannot use PROVISIONING_CLIENT_ID "my-app":'), fromEnv.message);
  const fromFlag = await rejects(
    resolveEntraSettings({ env: () => undefined, cwd: dir.path, flags: { tenant: "not a tenant!" } }),
    UsageError,
  );
  assert(fromFlag.message.startsWith('Cannot use --tenant "not a tenant!":'), fromFlag.message);
  const cloud = await rejects(
    resolveEntraSettings({ env: () => undefined, cwd: dir.path, flags: { cloud: "mars" } }),
    UsageError,
  );
  assert(cloud.message.includes('"mars"'), cloud.message);
});

Deno.test("provisioning.json with a secret, an unknown key or broken JSON is refused with the file named", async () => {
  await withConfig({ entra: { clientSecret: "x" } }, async (cwd) => {
    const error = await rejects(resolveEntraSettings({ env: () => undefined, cwd }), UsageError);
    assert(error.message.includes('"entra.clientSecret" is a secret'), error.message);
    assert(error.hint?.includes("PROVISIONING_CLIENT_SECRET"));
  });
  await withConfig({ entra: { tennant: "contoso.com" } }, async (cwd) => {
    const error = await rejects(resolveEntraSettings({ env: () => undefined, cwd }), UsageError);
    assert(
      error.message.includes('unknown key "tennant"') && error.message.includes("provisioning.json"),
      error.message,
    );
  });
  await withConfig({ entra: { clientId: "nope" } }, async (cwd) => {
    const error = await rejects(resolveEntraSettings({ env: () => undefined, cwd }), UsageError);
    assert(error.message.includes('"entra.clientId" is not valid'), error.message);
  });
  await withConfig("{ entra: ", async (cwd) => {
    const error = await rejects(resolveEntraSettings({ env: () => undefined, cwd }), UsageError);
    assert(error.message.includes("is not JSON"), error.message);
  });
});
