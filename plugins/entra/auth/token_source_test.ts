/**
 * The token source over real client-credential grants against the sandbox: a caller that gives
 * up does not cancel the renewal others wait for, `invalidate` makes the next call renew even
 * though the cached token has not expired, and a forced renewal always goes to the tenant.
 */
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { startSandbox } from "../sandbox/server.ts";
import { recordingFetch, tempDir, testClock } from "./_testing.ts";
import { acquireAppToken } from "./client_credentials.ts";
import { openAuthority } from "./discovery.ts";
import { TokenCache } from "./token_cache.ts";
import { createTokenSource, forGraphClient } from "./token_source.ts";

async function appSource(options: { cacheDir?: string } = {}) {
  const clock = testClock();
  const sandbox = await startSandbox({ users: 1, now: clock.now });
  const cloud = cloudFromSandbox(sandbox.url);
  const recorder = recordingFetch();
  const authority = await openAuthority(sandbox.domain, { cloud, fetch: recorder.fetch });
  let release: (() => void) | undefined;
  let gate: Promise<void> | undefined;
  const cache = options.cacheDir === undefined ? undefined : await TokenCache.open({ dir: options.cacheDir });
  const source = createTokenSource({
    cloud,
    tenant: sandbox.domain,
    clientId: sandbox.app.clientId,
    scopes: [cloud.graphDefaultScope],
    ...(cache ? { cache } : {}),
    now: clock.now,
    grants: {
      kind: "app",
      tenantId: () => Promise.resolve(authority.tenantId),
      acquire: async (signal) => {
        await gate;
        return await acquireAppToken({
          authority,
          clientId: sandbox.app.clientId,
          credential: { kind: "secret", secret: sandbox.app.clientSecret, source: "test" },
          now: clock.now,
          ...(signal ? { signal } : {}),
        });
      },
    },
  });
  const tokenRequests = () => recorder.requests.filter((r) => r.url.endsWith("/oauth2/v2.0/token")).length;
  const hold = () => {
    gate = new Promise((resolve) => (release = resolve));
  };
  return { sandbox, source, clock, tokenRequests, hold, release: () => release?.() };
}

Deno.test("a caller that gives up does not cancel the renewal other callers wait for", async () => {
  const { sandbox, source, tokenRequests, hold, release } = await appSource();
  await using _sandbox = sandbox;
  hold();
  const impatient = new AbortController();
  const first = source.getAccessToken(impatient.signal);
  const second = source.getAccessToken();
  impatient.abort(new Error("gave up"));
  const error = await rejects(first, Error);
  assertEquals(error.message, "gave up");
  release();
  assert((await second).length > 20);
  assertEquals(tokenRequests(), 1);
});

Deno.test("a 401 from Graph makes the next call renew although the token has not expired", async () => {
  const { sandbox, source, clock, tokenRequests } = await appSource();
  await using _sandbox = sandbox;
  const token = forGraphClient(source);
  const first = await token();
  assertEquals(await token({}), first);
  clock.advance(60_000);
  const second = await token({ forceRefresh: true });
  assert(second !== first);
  assertEquals(tokenRequests(), 2);
});

Deno.test("a burst of 401s for one token renews it once", async () => {
  const { sandbox, source, clock, tokenRequests } = await appSource();
  await using _sandbox = sandbox;
  const token = forGraphClient(source);
  const first = await token();
  clock.advance(60_000);
  const renewed = await Promise.all(Array.from({ length: 8 }, () => token({ forceRefresh: true })));
  // The ones that came after the renewal see a token younger than ten seconds and keep it.
  const later = await token({ forceRefresh: true });
  assertEquals(new Set([...renewed, later]).size, 1);
  assert(renewed[0] !== first);
  assertEquals(tokenRequests(), 2);
});

Deno.test("a forced renewal goes to the tenant even with a fresh token in the cache", async () => {
  await using dir = await tempDir();
  const { sandbox, source, tokenRequests } = await appSource({ cacheDir: dir.path });
  await using _sandbox = sandbox;
  const first = await source.getAccessToken();
  const forced = await source.renew({ force: true });
  assert(forced !== first);
  assertEquals(await source.getAccessToken(), forced);
  assertEquals(tokenRequests(), 2);
  assertEquals((await TokenCache.open({ dir: dir.path })).entries()[0]?.accessToken, forced);
});
