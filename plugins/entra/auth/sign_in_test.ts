/**
 * Sign-in as the CLI drives it, against the sandbox tenant over real HTTP: `login` with each
 * flow, the token source the Graph client gets (cache across restarts, refresh before expiry on
 * an injected clock, one renewal for many callers), `whoami`, and `logout`.
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { UsageError } from "../../../core/errors.ts";
import { startSandbox } from "../sandbox/server.ts";
import { type Sandbox } from "../sandbox/server.ts";
import { approveDeviceCode, recordingFetch, sandboxBrowser, tempDir, testClock } from "./_testing.ts";
import { EntraAuthError } from "./errors.ts";
import { type EntraFlagSettings, resolveEntraSettings } from "./settings.ts";
import { createEntraSignIn, login, logout, type SignInIo, whoami } from "./sign_in.ts";
import { GraphClient } from "../graph/client.ts";
import { resolveUser } from "../graph/users.ts";
import { TokenCache } from "./token_cache.ts";
import { forGraphClient } from "./token_source.ts";
import { readAccessTokenClaims } from "./tokens.ts";

async function settingsFor(
  sandbox: Sandbox,
  cwd: string,
  env: Record<string, string> = {},
  flags: EntraFlagSettings = {},
) {
  const variables: Record<string, string> = {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_CLIENT_ID: sandbox.app.clientId,
    ...env,
  };
  return await resolveEntraSettings({ flags, env: (name) => variables[name], cwd, configFile: null });
}

/** Device-code io whose first wait approves the code as `account`. */
function deviceIo(
  sandbox: Sandbox,
  account: { userPrincipalName: string; password: string },
  extra: Partial<SignInIo> = {},
) {
  let code = "";
  const notes: string[] = [];
  const io: SignInIo = {
    notify: (text) => {
      notes.push(text);
      code = /enter the code (\S+)/.exec(text)?.[1] ?? code;
    },
    sleep: async () => await approveDeviceCode(sandbox, code, account),
    ...extra,
  };
  return { io, notes };
}

const tokenPosts = (requests: { method: string; url: string; body: string }[], grant: string) =>
  requests.filter((r) =>
    r.method === "POST" && r.url.endsWith("/oauth2/v2.0/token") && r.body.includes(`grant_type=${grant}`)
  )
    .length;

Deno.test("login with the device code flow, then a restart answers from the cache and refreshes before expiry", async () => {
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  await using dir = await tempDir();
  // No tenant: discovered from the account's domain.
  const settings = await settingsFor(sandbox, dir.path, {}, { account: sandbox.admin.userPrincipalName });
  assertEquals(settings.tenant, undefined);

  const { io, notes } = deviceIo(sandbox, sandbox.admin, { now: clock.now });
  const report = await login(settings, io);
  assert(notes[0]!.includes("/devicelogin"), notes[0]);
  assertEquals(report.kind, "delegated");
  assertEquals(report.account?.userPrincipalName, sandbox.admin.userPrincipalName);
  assertEquals(report.tenantId, sandbox.tenantId);
  deepStrictEqual(report.findings.map((f) => f.code), ["limited-directory-role"]);

  // A new process: the cached token, no token request.
  const recorder = recordingFetch();
  const restarted = await createEntraSignIn(settings, {
    notify: () => {},
    now: clock.now,
    fetch: recorder.fetch,
  });
  const cached = await restarted.source.getAccessToken();
  assertEquals(readAccessTokenClaims(cached)?.upn, sandbox.admin.userPrincipalName);
  assertEquals(tokenPosts(recorder.requests, ""), 0);

  // Four minutes before expiry (inside the five-minute margin): one refresh for many callers.
  clock.advance(3599_000 - 4 * 60_000);
  const before = (await TokenCache.open({ dir: settings.tokenCacheDir })).entries()[0]!;
  const tokens = await Promise.all(Array.from({ length: 10 }, () => restarted.source.getAccessToken()));
  assertEquals(new Set(tokens).size, 1);
  assert(tokens[0] !== cached, "a new access token");
  assertEquals(tokenPosts(recorder.requests, "refresh_token"), 1);
  const after = (await TokenCache.open({ dir: settings.tokenCacheDir })).entries()[0]!;
  assertEquals(after.accessToken, tokens[0]);
  assert(after.refreshToken !== before.refreshToken, "the newest refresh token is kept");
  assertEquals(after.expiresAt, clock.now() + 3599_000);

  // Still fresh: no request at all.
  await restarted.source.getAccessToken();
  assertEquals(tokenPosts(recorder.requests, "refresh_token"), 1);

  const removed = await logout(settings);
  assertEquals(removed.removed.length, 2);
  const error = await rejects(whoami(settings, { notify: () => {}, now: clock.now }), EntraAuthError);
  assertEquals(error.code, "not-signed-in");
  assert(error.hint?.includes("provisioning login"), error.hint);
});

Deno.test("login with --login signs in through the browser and whoami reports the same account", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, { PROVISIONING_TENANT: sandbox.domain }, {
    signIn: "browser",
  });
  const browser = sandboxBrowser(sandbox, sandbox.seeded.privilegedAdmin);
  const report = await login(settings, { notify: () => {}, openBrowser: browser.openBrowser });
  await browser.settled();
  assertEquals(report.account?.userPrincipalName, sandbox.seeded.privilegedAdmin.userPrincipalName);
  deepStrictEqual(report.findings, []);
  const again = await whoami(settings, { notify: () => {} });
  assertEquals(again.account?.userPrincipalName, sandbox.seeded.privilegedAdmin.userPrincipalName);
  deepStrictEqual(again.directoryRoles.map((role) => role.name), ["Privileged Authentication Administrator"]);
});

Deno.test("a refresh token the tenant no longer honours means not-signed-in, never a prompt", async () => {
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, { PROVISIONING_TENANT: sandbox.tenantId });
  await login(settings, deviceIo(sandbox, sandbox.admin, { now: clock.now }).io);
  const cache = await TokenCache.open({ dir: settings.tokenCacheDir });
  await cache.put({ ...cache.entries()[0]!, refreshToken: "revoked-refresh-token" });

  clock.advance(3600_000);
  let prompted = false;
  const signIn = await createEntraSignIn(settings, { notify: () => (prompted = true), now: clock.now });
  const error = await rejects(signIn.source.getAccessToken(), EntraAuthError);
  assertEquals(error.code, "not-signed-in");
  assertEquals(prompted, false);
  assertEquals(
    (await TokenCache.open({ dir: settings.tokenCacheDir })).entries().length,
    0,
    "the dead entry is gone",
  );
});

Deno.test("client credentials from the environment: one token request for many callers, re-acquired before expiry", async () => {
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, {
    PROVISIONING_TENANT: sandbox.domain,
    PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
  });
  assertEquals(settings.signIn, "client-credentials");
  const recorder = recordingFetch();
  const signIn = await createEntraSignIn(settings, {
    notify: () => {},
    now: clock.now,
    fetch: recorder.fetch,
  });
  assertEquals(signIn.kind, "app");
  const tokens = await Promise.all(Array.from({ length: 25 }, () => signIn.source.getAccessToken()));
  assertEquals(new Set(tokens).size, 1);
  assertEquals(tokenPosts(recorder.requests, "client_credentials"), 1);

  clock.advance(3599_000 - 60_000);
  const renewed = await signIn.source.getAccessToken();
  assert(renewed !== tokens[0]);
  assertEquals(tokenPosts(recorder.requests, "client_credentials"), 2);
  assertEquals(tokenPosts(recorder.requests, "refresh_token"), 0);
  for (const request of recorder.requests) {
    if (request.url.endsWith("/token")) assert(!request.url.includes(sandbox.app.clientSecret));
  }

  const report = await whoami(settings, { notify: () => {}, now: clock.now });
  assertEquals(report.kind, "app");
  assertEquals(report.app.clientId, sandbox.app.clientId);
  deepStrictEqual(report.findings, []);
});

Deno.test("a sign-in without a tenant or a UPN to discover it from is a usage error", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path);
  const error = await rejects(createEntraSignIn(settings, { notify: () => {} }), UsageError);
  assert(error.hint?.includes("--tenant"), error.hint);
  const discovered = await createEntraSignIn(settings, {
    notify: () => {},
    tenantHint: `user0001@${sandbox.domain}`,
  });
  assertEquals(discovered.tenant, sandbox.tenantId);
});

Deno.test("an abort stops a device code login and leaves nothing cached", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, { PROVISIONING_TENANT: sandbox.domain });
  const controller = new AbortController();
  const reason = new DOMException("Ctrl+C", "AbortError");
  const error = await rejects(
    login(settings, { notify: () => controller.abort(reason), signal: controller.signal }),
    DOMException,
  );
  assertEquals(error, reason);
  assertEquals((await TokenCache.open({ dir: settings.tokenCacheDir })).entries().length, 0);
});

Deno.test("the Graph client calls the sandbox's Graph with the signed-in admin's token", async () => {
  await using sandbox = await startSandbox({ users: 2 });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, {}, { account: sandbox.admin.userPrincipalName });
  await login(settings, deviceIo(sandbox, sandbox.admin).io);
  const signIn = await createEntraSignIn(settings, { notify: () => {} });
  const client = new GraphClient({ baseUrl: settings.cloud.graphBase, token: forGraphClient(signIn.source) });
  const user = await resolveUser(client, `user0002@${sandbox.domain}`);
  assertEquals(user.userPrincipalName, `user0002@${sandbox.domain}`);
});

Deno.test("whoami after the client secret changed does not answer from the cache, and says what changed", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  await using dir = await tempDir();
  const tenant = { PROVISIONING_TENANT: sandbox.tenantId };
  const before = await settingsFor(sandbox, dir.path, {
    ...tenant,
    PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
  });
  await whoami(before, { notify: () => {} });
  const cached = JSON.stringify((await TokenCache.open({ dir: before.tokenCacheDir })).entries());
  assert(!cached.includes(sandbox.app.clientSecret), "the cache never holds the secret");

  // A wrong secret now: the cached token must not make whoami say "signed in".
  const wrong = "Wrong~Secret.Value_1234567890";
  const after = await settingsFor(sandbox, dir.path, { ...tenant, PROVISIONING_CLIENT_SECRET: wrong });
  const error = await rejects(whoami(after, { notify: () => {} }), EntraAuthError);
  assertEquals(error.aadsts, "AADSTS7000215");
  assert(error.message.includes("another client secret"), error.message);
  assert(!error.message.includes(wrong) && !error.message.includes(sandbox.app.clientSecret), error.message);

  // The secret rotated in the app registration as well: a new token, and a warning saying why.
  const rotated = "Rotated~Secret.Value_0987654321";
  sandbox.tenant.apps.find((app) => app.clientId === sandbox.app.clientId)!.secret = rotated;
  const recorder = recordingFetch();
  const now = await settingsFor(sandbox, dir.path, { ...tenant, PROVISIONING_CLIENT_SECRET: rotated });
  const report = await whoami(now, { notify: () => {}, fetch: recorder.fetch });
  assertEquals(tokenPosts(recorder.requests, "client_credentials"), 1);
  const changed = report.findings.find((finding) => finding.code === "settings-changed");
  assert(changed?.message.includes("another client secret"), JSON.stringify(report.findings));
});

Deno.test("whoami after the client id changed says which client id the cached sign-in was made with", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  await using dir = await tempDir();
  const settings = await settingsFor(sandbox, dir.path, { PROVISIONING_TENANT: sandbox.domain });
  await login(settings, deviceIo(sandbox, sandbox.seeded.privilegedAdmin).io);
  const other = sandbox.seeded.passkeyOnlyApp.clientId;
  const changed = await settingsFor(sandbox, dir.path, {
    PROVISIONING_TENANT: sandbox.domain,
    PROVISIONING_CLIENT_ID: other,
  });
  const error = await rejects(whoami(changed, { notify: () => {} }), EntraAuthError);
  assertEquals(error.code, "not-signed-in");
  assert(
    error.message.includes(`client id ${sandbox.app.clientId}`) && error.message.includes(other),
    error.message,
  );
  assert(error.hint?.includes("provisioning login"), error.hint);
  // Back to the settings the cache was made with: signed in, no warning.
  const again = await whoami(settings, { notify: () => {} });
  assert(!again.findings.some((finding) => finding.code === "settings-changed"));
});
