/**
 * The device code flow end to end against the sandbox tenant over real HTTP: the admin approves
 * through the sandbox's programmatic approval while the flow polls; the clock and the waits
 * between polls are the seams (the sandbox and the flow share one test clock).
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { startSandbox } from "../sandbox/server.ts";
import { approveDeviceCode, testClock } from "./_testing.ts";
import { type DeviceCodePrompt, signInWithDeviceCode } from "./device_code.ts";
import { openAuthority } from "./discovery.ts";
import { EntraAuthError } from "./errors.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { delegatedScopes, readAccessTokenClaims } from "./tokens.ts";

const scopes = delegatedScopes("https://graph.microsoft.com", [
  "UserAuthenticationMethod.ReadWrite.All",
  "User.Read.All",
]);

Deno.test("device code sign-in polls through authorization_pending and slow_down until the admin approves", async () => {
  const clock = testClock();
  await using sandbox = await startSandbox({
    users: 1,
    now: clock.now,
    oauth: { deviceCodeIntervalSeconds: 5 },
  });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const prompts: { text: string; prompt: DeviceCodePrompt }[] = [];
  const waits: number[] = [];
  const tokens = await signInWithDeviceCode({
    authority,
    clientId: sandbox.app.clientId,
    scopes,
    notify: (text, prompt) => prompts.push({ text, prompt }),
    now: clock.now,
    sleep: async (ms) => {
      waits.push(ms);
      // 1st poll on time (pending); 2nd poll at once, too fast (slow_down); 3rd on time
      // (pending again); before the 4th the admin approves.
      if (waits.length === 2) return;
      if (waits.length === 4) await approveDeviceCode(sandbox, prompts[0]!.prompt.userCode, sandbox.admin);
      clock.advance(ms);
    },
  });
  assertEquals(prompts.length, 1);
  assert(prompts[0]!.text.includes(prompts[0]!.prompt.userCode), "the message names the code");
  assertEquals(prompts[0]!.prompt.verificationUri, `${sandbox.url}/devicelogin`);
  // interval 5 s; slow_down adds 5 s (RFC 8628 §3.5).
  deepStrictEqual(waits, [5000, 5000, 10000, 10000]);
  const claims = readAccessTokenClaims(tokens.accessToken);
  assertEquals(claims?.upn, sandbox.admin.userPrincipalName);
  assertEquals(claims?.tid, sandbox.tenantId);
  assert(tokens.refreshToken !== undefined, "offline_access gives a refresh token");
  assertEquals(tokens.expiresAt, clock.now() + 3599_000);
});

Deno.test("device code sign-in that the admin declines ends with auth-declined", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.tenantId, { cloud: cloudFromSandbox(sandbox.url) });
  let code = "";
  const error = await rejects(
    signInWithDeviceCode({
      authority,
      clientId: sandbox.app.clientId,
      scopes,
      notify: (_text, prompt) => (code = prompt.userCode),
      sleep: async () => await approveDeviceCode(sandbox, code, sandbox.admin, true),
    }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-declined");
  assertEquals(error.oauthError, "authorization_declined");
  assert(
    error.message.startsWith(`Cannot sign in to tenant "${sandbox.tenantId}" with the device code flow:`),
  );
});

Deno.test("device code sign-in stops with auth-expired once the code's lifetime has passed", async () => {
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  let polls = 0;
  const error = await rejects(
    signInWithDeviceCode({
      authority,
      clientId: sandbox.app.clientId,
      scopes,
      notify: () => {},
      now: clock.now,
      sleep: (ms) => {
        polls++;
        clock.advance(polls === 3 ? 900_000 : ms);
        return Promise.resolve();
      },
    }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-expired");
  assertEquals(polls, 3);
});

Deno.test("device code sign-in stops waiting when its signal aborts", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const controller = new AbortController();
  const reason = new Error("Ctrl+C");
  const started = signInWithDeviceCode({
    authority,
    clientId: sandbox.app.clientId,
    scopes,
    notify: () => controller.abort(reason),
    signal: controller.signal,
  });
  const error = await rejects(started, Error);
  assertEquals(error, reason);
});

Deno.test("device code sign-in for an app the tenant does not know names AADSTS700016 and the client id", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const clientId = "11111111-2222-4333-8444-555555555555";
  const error = await rejects(
    signInWithDeviceCode({ authority, clientId, scopes, notify: () => {} }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-failed");
  assertEquals(error.aadsts, "AADSTS700016");
  assert(error.hint?.includes(clientId), error.hint);
  assert(!error.message.includes("Trace ID"), "trace ids are cut from the message");
});
