/**
 * The browserless TAP path (`--via tap`, plugins/entra/tap/): sandbox users provisioned end to end
 * through the recorded Security info requests (authorize, /common/login with accesspass, token with
 * PKCE, session/authorize, authenticationmethods/new, fido/create, the ceremony on our WebAuthn
 * client for login.microsoft.com, newfido, verify with the name); every registration is verified
 * by the sandbox's @simplewebauthn/server verifier, no pass is left, a refused new pass is retried,
 * a spent pass is named, and an answer without the recorded shape stops the user with a clear error.
 */
import { assert, assertEquals, rejects } from "./assert.ts";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { bulkFixture, passkeysByUser, writeUsersCsv } from "./bulk_support.ts";
import { runCli } from "./cli.ts";
import { cloudFromSandbox } from "../plugins/entra/cloud.ts";
import { GraphClient } from "../plugins/entra/graph/client.ts";
import { EntraSession } from "../plugins/entra/session.ts";
import { type Sandbox, startSandbox } from "../plugins/entra/sandbox/server.ts";
import { registerWithPass, TapPathError } from "../plugins/entra/tap/register.ts";

const pin = "161803";

async function sessionFor(sandbox: Sandbox, base = sandbox.url): Promise<EntraSession> {
  const answer = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: sandbox.app.clientId,
      client_secret: sandbox.app.clientSecret,
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  const token = String((await answer.json()).access_token);
  return new EntraSession({
    client: new GraphClient({ baseUrl: base, token: () => Promise.resolve(token) }),
    cloud: cloudFromSandbox(base),
    tenantId: sandbox.tenantId,
  });
}

Deno.test("--via tap: users provisioned without a browser, verified, no pass left", async (t) => {
  await using sandbox = await startSandbox({ users: 6 });
  await using session = await sessionFor(sandbox);
  const key = await newTestKey({ pin });
  const users = sandbox.inspect().users.filter((u) => /^user\d+@/.test(u.userPrincipalName))
    .map((u) => ({ id: u.id, userPrincipalName: u.userPrincipalName }));
  const register = (
    user: (typeof users)[number],
    extra: Partial<Parameters<typeof registerWithPass>[0]> = {},
  ) =>
    registerWithPass({
      session,
      user,
      authenticator: key,
      interaction: scriptedUser([pin]),
      displayName: "TAP path key",
      ...extra,
    });

  await t.step(
    "three users end to end: Stay signed in?, the NGC-MFA claims refresh, a pass refused at first",
    async () => {
      // users[0]: "Stay signed in?" (a form that posts itself); users[1]: without it, and Security info
      // asking for the NGC-MFA claims refresh; users[2]: a pass refused for its first seconds.
      sandbox.pages.setVariant({ staySignedIn: false, requireNgcMfa: true }, users[1]!.id);
      sandbox.pages.setVariant({ passDelaySeconds: 2 }, users[2]!.id);
      for (const user of users.slice(0, 3)) {
        const result = await register(user, { passRetryPauseMs: 500 });
        const seen = sandbox.inspect().users.find((u) => u.id === user.id)!;
        assertEquals(seen.passkeys.length, 1);
        assertEquals(seen.passkeys[0]!.verified, true);
        assertEquals(seen.passkeys[0]!.displayName, "TAP path key");
        assertEquals(seen.passkeys[0]!.id, result.method.id);
        assertEquals(sandbox.tenant.fido2Methods(user.id)[0]!.credentialId, result.credentialId);
        assertEquals(seen.temporaryAccessPass, null);
      }
    },
  );

  await t.step("a pass spent by someone else first: tap-already-used, pass deleted", async () => {
    const user = users[3]!;
    const error = await rejects(
      register(user, {
        onPassIssued: () => {
          const tap = sandbox.tenant.temporaryAccessPass(user.id)!;
          assert(sandbox.tenant.redeemTemporaryAccessPass(user.id, tap.temporaryAccessPass));
          return Promise.resolve();
        },
      }),
      TapPathError,
    );
    assertEquals(error.code, "tap-already-used");
    assert(error.message.includes(user.userPrincipalName), error.message);
    assertEquals(sandbox.inspect().users.find((u) => u.id === user.id)!.temporaryAccessPass, null);
  });

  await t.step("no pass is left anywhere", () => {
    assertEquals(sandbox.inspect().temporaryAccessPassesOutstanding, 0);
  });
});

Deno.test("--via tap: an answer without the recorded shape stops the user and names the endpoint", async () => {
  await using sandbox = await startSandbox({ users: 2 });
  // A real server in between that changes one answer, as a Microsoft change would.
  await using proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/mysignins/api/authenticationmethods/new") {
      await request.body?.cancel();
      return Response.json({
        Type: 18,
        VerificationState: 1,
        ErrorCode: 0,
        Data: JSON.stringify({ url: "x" }),
      });
    }
    const target = `${sandbox.url}${url.pathname}${url.search}`;
    const body = request.method === "GET" || request.method === "HEAD"
      ? undefined
      : await request.arrayBuffer();
    const headers = new Headers(request.headers);
    headers.delete("host");
    const answer = await fetch(target, {
      method: request.method,
      headers,
      redirect: "manual",
      ...(body ? { body } : {}),
    });
    return new Response(answer.body, { status: answer.status, headers: answer.headers });
  });
  await using session = await sessionFor(sandbox, `http://127.0.0.1:${proxy.addr.port}`);
  const user = sandbox.inspect().users.find((u) => /^user\d+@/.test(u.userPrincipalName))!;
  const error = await rejects(
    registerWithPass({
      session,
      user: { id: user.id, userPrincipalName: user.userPrincipalName },
      authenticator: await newTestKey({ pin }),
      interaction: scriptedUser([pin]),
      displayName: "Never",
    }),
    TapPathError,
  );
  assertEquals(error.code, "unexpected-response");
  assert(error.message.includes("authenticationmethods/new"), error.message);
  assert(error.message.includes("recorded shape"), error.message);
  assertEquals(sandbox.inspect().temporaryAccessPassesOutstanding, 0);
  assertEquals(sandbox.tenant.fido2Methods(user.id).length, 0);
});

Deno.test("provision --via tap: three users through the CLI, one passkey each, no pass left", async () => {
  await using fixture = await bulkFixture({ users: 5 });
  const upns = fixture.upns(3);
  const csv = await writeUsersCsv(fixture, upns);
  const refused = await runCli(fixture.dir, fixture.env, [], "--csv", csv, "--via", "tap", "--manual");
  assertEquals(refused.code, 2, refused.stderr);
  const run = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--via",
    "tap",
    "--concurrency",
    "2",
    "--no-preflight",
  );
  assertEquals(run.code, 0, run.stderr);
  assert.match(run.stdout, /provisioned\s+3\n/);
  const held = passkeysByUser(fixture.sandbox);
  for (const upn of upns) {
    assertEquals(held.get(upn)?.length, 1, upn);
    assert.ok(held.get(upn)![0]!.verified);
  }
  assertEquals(fixture.sandbox.inspect().temporaryAccessPassesOutstanding, 0);
});
