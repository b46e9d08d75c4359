/**
 * The browser sign-in (authorization code + PKCE, loopback redirect) end to end against the
 * sandbox tenant: the injected `openBrowser` signs the admin in at the sandbox's authorize
 * endpoint and follows the redirect to the flow's listener, as a browser would.
 */
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { startSandbox } from "../sandbox/server.ts";
import { authorizeLocation, sandboxBrowser } from "./_testing.ts";
import { signInWithBrowser } from "./auth_code.ts";
import { openAuthority } from "./discovery.ts";
import { EntraAuthError } from "./errors.ts";
import { delegatedScopes, readAccessTokenClaims } from "./tokens.ts";

const scopes = delegatedScopes("https://graph.microsoft.com", [
  "UserAuthenticationMethod.ReadWrite.All",
  "User.Read.All",
]);

Deno.test("browser sign-in redeems the code from the loopback redirect with the PKCE verifier", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const browser = sandboxBrowser(sandbox, sandbox.seeded.privilegedAdmin);
  const notes: string[] = [];
  const tokens = await signInWithBrowser({
    authority,
    clientId: sandbox.app.clientId,
    scopes,
    openBrowser: browser.openBrowser,
    notify: (text) => notes.push(text),
    loginHint: sandbox.seeded.privilegedAdmin.userPrincipalName,
  });
  await browser.settled();
  assertEquals(
    readAccessTokenClaims(tokens.accessToken)?.upn,
    sandbox.seeded.privilegedAdmin.userPrincipalName,
  );
  assert(tokens.refreshToken !== undefined);

  const opened = new URL(browser.opened[0]!);
  assertEquals(opened.origin + opened.pathname, `${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/authorize`);
  assertEquals(opened.searchParams.get("code_challenge_method"), "S256");
  assertEquals(opened.searchParams.get("response_type"), "code");
  assertEquals(opened.searchParams.get("login_hint"), sandbox.seeded.privilegedAdmin.userPrincipalName);
  const redirect = new URL(opened.searchParams.get("redirect_uri")!);
  assertEquals(redirect.protocol + redirect.hostname, "http:localhost");
  assert(Number(redirect.port) > 0, "a port the OS picked");
  assert(!opened.searchParams.has("client_secret"));
  assertEquals(browser.landings[0]?.status, 200);
  assert(browser.landings[0]!.body.includes("Signed in"));
  assert(!browser.landings[0]!.body.includes(tokens.accessToken.slice(0, 20)), "the page shows no token");
  assert(notes[0]!.includes(opened.href), "the URL is shown for opening by hand");
});

Deno.test("browser sign-in ignores a redirect with another state and keeps waiting for its own", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  let forged: { status: number } | undefined;
  const tokens = await signInWithBrowser({
    authority,
    clientId: sandbox.app.clientId,
    scopes,
    redirectHost: "127.0.0.1",
    openBrowser: async (url) => {
      const location = new URL(await authorizeLocation(sandbox, url, sandbox.admin));
      assertEquals(location.hostname, "127.0.0.1");
      const replay = new URL(location);
      replay.searchParams.set("state", "someone-elses-state");
      const response = await fetch(replay);
      await response.body?.cancel();
      forged = { status: response.status };
      await (await fetch(location)).body?.cancel();
    },
  });
  assertEquals(forged?.status, 400);
  assertEquals(readAccessTokenClaims(tokens.accessToken)?.upn, sandbox.admin.userPrincipalName);
});

Deno.test("browser sign-in without consent for a scope says so and gives the admin-consent URL", async () => {
  await using sandbox = await startSandbox({ users: 1, oauth: { delegatedScopes: ["User.Read.All"] } });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const browser = sandboxBrowser(sandbox, sandbox.admin);
  const error = await rejects(
    signInWithBrowser({
      authority,
      clientId: sandbox.app.clientId,
      scopes,
      openBrowser: browser.openBrowser,
    }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-consent-required");
  assertEquals(error.aadsts, "AADSTS65001");
  assert(
    error.hint?.includes(
      `${sandbox.url}/${sandbox.domain}/v2.0/adminconsent?client_id=${sandbox.app.clientId}`,
    ),
    error.hint,
  );
  await browser.settled();
  assert(browser.landings[0]!.body.includes("did not complete"));
});

Deno.test("browser sign-in gives up with auth-timeout when the browser never comes back", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const error = await rejects(
    signInWithBrowser({
      authority,
      clientId: sandbox.app.clientId,
      scopes,
      openBrowser: () => Promise.resolve(),
      timeoutMs: 50,
    }),
    EntraAuthError,
  );
  assertEquals(error.code, "auth-timeout");
});

Deno.test("browser sign-in keeps waiting when no browser can be opened, and says to open the URL by hand", async () => {
  await using sandbox = await startSandbox({ users: 1 });
  const authority = await openAuthority(sandbox.domain, { cloud: cloudFromSandbox(sandbox.url) });
  const notes: string[] = [];
  const controller = new AbortController();
  const error = await rejects(
    signInWithBrowser({
      authority,
      clientId: sandbox.app.clientId,
      scopes,
      openBrowser: () => Promise.reject(new Error("xdg-open: not found")),
      notify: (text) => {
        notes.push(text);
        if (notes.length === 2) controller.abort(new DOMException("stopped", "AbortError"));
      },
      signal: controller.signal,
    }),
    DOMException,
  );
  assertEquals(error.name, "AbortError");
  assert(notes[1]!.includes("xdg-open: not found") && notes[1]!.includes("by hand"), notes[1]);
});
