/**
 * The reference client, written from Microsoft's docs alone, registers against the Entra sandbox
 * in its default (real-shapes) mode unchanged: bare token, origin https://<rp id>, the challenge
 * timeout in the query string. The sandbox verifies every registration with @simplewebauthn/server.
 */
import assert from "node:assert/strict";
import { startSandbox } from "../../plugins/entra/sandbox/server.ts";
import { newTestKey } from "../software_key.ts";
import { registerPasskeysSequentially } from "./graph_reference_client.ts";

Deno.test("the sequential reference client written from Microsoft's docs registers against the sandbox unchanged", async () => {
  await using sandbox = await startSandbox({ users: 5 });
  await using key = await newTestKey({ pin: "482916" });
  const users = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u))
    .slice(
      0,
      4,
    );
  const seen: { url: URL; authorization: string | null }[] = [];
  const recordingFetch: typeof fetch = (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    seen.push({ url, authorization: new Headers(init?.headers).get("authorization") });
    return fetch(input, init);
  };
  const started = sandbox.tenant.now();
  const results = await registerPasskeysSequentially({
    loginBase: sandbox.url,
    graphBase: sandbox.url,
    tenantId: sandbox.tenantId,
    clientId: sandbox.app.clientId,
    clientSecret: sandbox.app.clientSecret,
    users,
    device: key.device,
    pin: "482916",
    challengeTimeoutInMinutes: 10,
    fetch: recordingFetch,
  });
  assert.deepEqual(results.map((r) => [r.user, r.ok, r.error]), users.map((u) => [u, true, undefined]));

  // Each user holds one verified passkey, with the key's AAGUID.
  for (const upn of users) {
    const held = sandbox.inspect().users.find((u) => u.userPrincipalName === upn)!;
    assert.deepEqual(held.passkeys.map((p) => [p.verified, p.displayName]), [[true, "Reference key"]]);
  }
  assert.equal(key.store.read().credentials.length, users.length);

  // What it sent: the bare token (no scheme), the timeout in the query string, beta.
  const graphCalls = seen.filter((s) => s.url.pathname.startsWith("/beta/"));
  assert.equal(graphCalls.length, users.length * 2);
  for (const call of graphCalls) {
    assert.ok(call.authorization && !/^bearer /i.test(call.authorization), "a bare token");
  }
  const optionCalls = graphCalls.filter((c) => c.url.pathname.endsWith("/creationOptions"));
  assert.deepEqual(
    optionCalls.map((c) => c.url.searchParams.get("challengeTimeoutInMinutes")),
    users.map(() => "10"),
  );
  // Every challenge was used, and the query-string form sets the timeout as the function form does.
  assert.equal(sandbox.inspect().pendingChallenges, 0);
  const token = seen.find((s) => s.url.pathname.startsWith("/beta/"))!.authorization!;
  const probe = await fetch(
    `${sandbox.url}/beta/users/${
      users[0]
    }/authentication/fido2Methods/creationOptions?challengeTimeoutInMinutes=10`,
    { headers: { authorization: token } },
  );
  const expires = Date.parse((await probe.json()).challengeTimeoutDateTime) - started;
  assert.ok(expires > 9.9 * 60_000 && expires < 10.5 * 60_000, `challenge lasts ${expires} ms`);
});
