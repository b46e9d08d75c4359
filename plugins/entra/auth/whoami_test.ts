/**
 * `whoami` on tokens the sandbox tenant issued (delegated for admins with and without roles, with
 * too few consented scopes; app-only with full, passkey-only and no permissions), and on a
 * hand-made token for the role names.
 */
import { assert, assertEquals, deepStrictEqual } from "../../../test/assert.ts";
import { toBase64Url, utf8 } from "../../../core/bytes.ts";
import { startSandbox } from "../sandbox/server.ts";
import type { Sandbox } from "../sandbox/server.ts";
import { approveDeviceCode, tempDir } from "./_testing.ts";
import { resolveEntraSettings } from "./settings.ts";
import { login, whoami } from "./sign_in.ts";
import { toAccountSummary, whoAmI } from "./whoami.ts";

async function delegatedReport(
  sandbox: Sandbox,
  account: { userPrincipalName: string; password: string },
  permissions?: string[],
) {
  await using dir = await tempDir();
  if (permissions) {
    await Deno.writeTextFile(`${dir.path}/provisioning.json`, JSON.stringify({ entra: { permissions } }));
  }
  const env: Record<string, string> = {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_CLIENT_ID: sandbox.app.clientId,
    PROVISIONING_TENANT: sandbox.domain,
  };
  const settings = await resolveEntraSettings({ env: (name) => env[name], cwd: dir.path });
  let code = "";
  return await login(settings, {
    notify: (text) => (code = /enter the code (\S+)/.exec(text)?.[1] ?? code),
    sleep: async () => await approveDeviceCode(sandbox, code, account),
  });
}

async function appReport(sandbox: Sandbox, app: { clientId: string; secret: string }) {
  await using dir = await tempDir();
  const env: Record<string, string> = {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_CLIENT_ID: app.clientId,
    PROVISIONING_CLIENT_SECRET: app.secret,
    PROVISIONING_TENANT: sandbox.tenantId,
  };
  const settings = await resolveEntraSettings({ env: (name) => env[name], cwd: dir.path, configFile: null });
  return await whoami(settings, { notify: () => {} });
}

Deno.test("whoami of an admin without an authentication admin role reports the missing role as an error", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const report = await delegatedReport(sandbox, sandbox.seeded.reader);
  assertEquals(report.account?.userPrincipalName, sandbox.seeded.reader.userPrincipalName);
  deepStrictEqual(report.directoryRoles, []);
  const summary = toAccountSummary(report);
  assert(summary.rows.some(([label, value]) => label === "Directory roles" && value === "(none)"));
  assert(
    summary.warnings.some((line) => line.includes("neither Authentication Administrator")),
    summary.warnings.join("\n"),
  );
  const missing = report.findings.find((f) => f.code === "missing-directory-role");
  assertEquals(missing?.severity, "error");
  assert(missing!.hint.includes("Privileged Authentication Administrator"));
  assertEquals(report.findings[0]?.severity, "error", "errors come first");
});

Deno.test("whoami warns when neither passkey permission was granted to the sign-in", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const report = await delegatedReport(sandbox, sandbox.seeded.privilegedAdmin, ["User.Read.All"]);
  deepStrictEqual(report.scopes, ["User.Read.All"]);
  const codes = report.findings.map((f) => f.code);
  deepStrictEqual(codes, [
    "missing-passkey-permission",
    "missing-tap-permission",
    "missing-group-read",
    "missing-policy-read",
  ]);
  const passkey = report.findings[0]!;
  assert(
    passkey.message.includes(
      "UserAuthMethod-Passkey.ReadWrite.All nor UserAuthenticationMethod.ReadWrite.All",
    ),
  );
  assert(passkey.hint.includes("Delegated"), passkey.hint);
});

Deno.test("whoami of app-only tokens checks application permissions and ignores directory roles", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const full = await appReport(sandbox, sandbox.seeded.app);
  assertEquals(full.kind, "app");
  assertEquals(full.account, undefined);
  deepStrictEqual(full.findings, []);

  const passkeyOnly = await appReport(sandbox, sandbox.seeded.passkeyOnlyApp);
  deepStrictEqual(passkeyOnly.findings.map((f) => f.code), [
    "missing-tap-permission",
    "missing-group-read",
    "missing-policy-read",
  ]);

  const none = await appReport(sandbox, sandbox.seeded.unprivilegedApp);
  assertEquals(none.findings[0]?.code, "missing-passkey-permission");
  assert(none.findings[0]!.hint.includes("Application"), none.findings[0]!.hint);
});

Deno.test("whoami names the directory roles in wids and knows Global Administrator suffices", () => {
  const token = (claims: Record<string, unknown>) =>
    `${toBase64Url(utf8('{"alg":"none"}'))}.${toBase64Url(utf8(JSON.stringify(claims)))}.`;
  const base = {
    tid: "72f988bf-86f1-41af-91ab-2d7cd011db47",
    idtyp: "user",
    upn: "Admin@Contoso.com",
    scp:
      "UserAuthMethod-Passkey.ReadWrite.All UserAuthMethod-TAP.ReadWrite.All User.Read.All GroupMember.Read.All Policy.Read.All",
    exp: 1_900_000_000,
  };
  const privileged = whoAmI(
    token({
      ...base,
      wids: ["7be44c8a-adaf-4e2a-84d6-ab2649e08a13", "b79fbf4d-3ef9-4689-8143-76b194e85509"],
    }),
    {
      now: () => 1_800_000_000_000,
    },
  );
  deepStrictEqual(privileged.directoryRoles, [{
    id: "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    name: "Privileged Authentication Administrator",
  }]);
  deepStrictEqual(privileged.findings, []);
  assertEquals(privileged.expiresAt, "2030-03-17T17:46:40.000Z");

  const global = whoAmI(token({ ...base, wids: ["62e90394-69f5-4237-9190-012177145e10"] }), {
    now: () => 1_800_000_000_000,
  });
  deepStrictEqual(global.findings, []);

  const authAdmin = whoAmI(
    token({ ...base, wids: ["c4e39bd9-1100-46d3-8c65-fb160da0071f"], exp: 1_700_000_000 }),
    {
      now: () => 1_800_000_000_000,
    },
  );
  deepStrictEqual(authAdmin.findings.map((f) => [f.severity, f.code]), [["warning", "token-expired"], [
    "info",
    "limited-directory-role",
  ]]);

  const opaque = whoAmI("not-a-jwt");
  assertEquals(opaque.findings[0]?.code, "token-unreadable");
});
