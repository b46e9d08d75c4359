/**
 * The browser sign-in (authorization code + PKCE, loopback redirect) end to end against the
 * sandbox tenant: the injected `openBrowser` signs the admin in at the sandbox's authorize
 * endpoint and follows the redirect to the flow's listener, as a browser would.
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { startSandbox } from "../sandbox/server.ts";
import { join } from "node:path";
import { authorizeLocation, sandboxBrowser, tempDir } from "./_testing.ts";
import { openSystemBrowser, signInWithBrowser, systemBrowserPrograms } from "./auth_code.ts";
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

Deno.test("the system browser is opened by absolute path, never by a name looked up on PATH", async () => {
  for (const os of ["linux", "darwin", "windows", "freebsd"] as const) {
    for (const program of systemBrowserPrograms(os)) {
      assert(program.startsWith("/") || /^[A-Za-z]:\\/.test(program), `${os}: ${program}`);
    }
  }
  deepStrictEqual(systemBrowserPrograms("linux"), ["/usr/bin/xdg-open"]);
  assertEquals(systemBrowserPrograms("windows")[0]?.endsWith("\\System32\\rundll32.exe"), true);

  // A process whose PATH starts with a folder holding a planted xdg-open: the opener must run
  // the absolute path it is given (here a stand-in that records the URL), not the planted one.
  await using dir = await tempDir();
  const planted = join(dir.path, "planted");
  await Deno.mkdir(planted);
  const plantedRan = join(dir.path, "planted-ran");
  const opened = join(dir.path, "opened");
  await script(join(planted, "xdg-open"), `echo "$1" > '${plantedRan}'`);
  const standIn = join(dir.path, "stand-in-xdg-open");
  await script(standIn, `echo "$1" > '${opened}'`);
  const module = new URL("./auth_code.ts", import.meta.url).href;
  const child = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const { openSystemBrowser } = await import(${JSON.stringify(module)});
       await openSystemBrowser("http://127.0.0.1:1/?a=1&b=2", { os: "linux", programs: [${
        JSON.stringify(standIn)
      }] });`,
    ],
    env: { PATH: `${planted}:${Deno.env.get("PROVISIONING_TEST_PATH") ?? "/usr/bin:/bin"}` },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(child.success, new TextDecoder().decode(child.stderr));
  assertEquals((await Deno.readTextFile(opened)).trim(), "http://127.0.0.1:1/?a=1&b=2");
  await rejects(Deno.stat(plantedRan), Deno.errors.NotFound);
});

Deno.test("a missing browser opener is refused with the paths looked at and the device-code way out", async () => {
  const error = await rejects(
    openSystemBrowser("http://127.0.0.1:1/", { os: "linux", programs: ["/nonexistent/bin/xdg-open"] }),
    Error,
  );
  assert(error.message.includes("/nonexistent/bin/xdg-open"), error.message);
  assert(error.message.includes("--sign-in device-code"), error.message);
  await rejects(openSystemBrowser("http://127.0.0.1:1/", { programs: ["xdg-open"] }), TypeError);
});

async function script(path: string, body: string): Promise<void> {
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
}
