import { assert, assertEquals, deepStrictEqual, throws } from "../../test/assert.ts";
import { browserCandidates, BrowserNotFoundError, findBrowser, installHints } from "./find_browser.ts";

Deno.test("an explicit browser path is used when it exists, and only it", () => {
  const tried: string[] = [];
  const path = findBrowser({
    path: "/opt/custom/chrome",
    os: "linux",
    exists: (p) => {
      tried.push(p);
      return true;
    },
  });
  assertEquals(path, "/opt/custom/chrome");
  deepStrictEqual(tried, ["/opt/custom/chrome"]);
});

Deno.test("a missing explicit path is an error naming it, with the OS's install hint", () => {
  const error = throws(
    () => findBrowser({ path: "C:\\nope\\chrome.exe", os: "windows", exists: () => false }),
    BrowserNotFoundError,
  );
  assertEquals(error.code, "browser-not-found");
  assert(error.message.includes("C:\\nope\\chrome.exe"));
  assert(error.hint?.includes(installHints.windows));
});

Deno.test("the first installed candidate wins: Chromium before Chrome before Edge on Linux", () => {
  const installed = new Set(["/usr/bin/google-chrome", "/usr/bin/microsoft-edge"]);
  assertEquals(findBrowser({ os: "linux", exists: (p) => installed.has(p) }), "/usr/bin/google-chrome");
});

Deno.test("Windows looks under the Program Files roots from the environment, Edge first", () => {
  const env = (name: string) => ({ "PROGRAMFILES(X86)": "D:\\x86", PROGRAMFILES: "D:\\pf" })[name];
  const candidates = browserCandidates("windows", env);
  assertEquals(candidates[0], "D:\\x86\\Microsoft\\Edge\\Application\\msedge.exe");
  assert(candidates.includes("D:\\pf\\Google\\Chrome\\Application\\chrome.exe"));
});

Deno.test("macOS looks in /Applications and the user's ~/Applications", () => {
  const candidates = browserCandidates("darwin", (name) => name === "HOME" ? "/Users/ada" : undefined);
  assert(candidates.includes("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"));
  assert(candidates.includes("/Users/ada/Applications/Microsoft Edge.app/Contents/MacOS/Microsoft Edge"));
});

Deno.test("no browser anywhere: the error lists what was tried and how to install one", () => {
  const error = throws(() => findBrowser({ os: "darwin", exists: () => false }), BrowserNotFoundError);
  assert(error.tried.length >= 3);
  assertEquals(error.hint, installHints.darwin);
  assert(error.message.startsWith("Cannot find a browser"));
});
