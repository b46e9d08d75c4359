/**
 * The token source over real client-credential grants against the sandbox: a caller that gives
 * up does not cancel the renewal others wait for, `invalidate` makes the next call renew even
 * though the cached token has not expired, and a forced renewal always goes to the tenant.
 */
import { assert, assertEquals, rejects } from "../../../test/assert.ts";
import { cloudFromSandbox } from "../cloud.ts";
import { type Sandbox, startSandbox } from "../sandbox/server.ts";
import { GraphClient } from "../graph/client.ts";
import { resolveUser } from "../graph/users.ts";
import { GraphError } from "../errors.ts";
import { EntraAuthError } from "./errors.ts";
import { recordingFetch, tempDir, type TestClock, testClock } from "./_testing.ts";
import { acquireAppToken } from "./client_credentials.ts";
import { openAuthority } from "./discovery.ts";
import { TokenCache } from "./token_cache.ts";
import { createTokenSource, forGraphClient } from "./token_source.ts";

async function appSource(options: { cacheDir?: string; clock?: TestClock; sandbox?: Sandbox } = {}) {
  const clock = options.clock ?? testClock();
  const sandbox = options.sandbox ?? await startSandbox({ users: 1, now: clock.now });
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
          credential: {
            kind: "secret",
            secret: sandbox.app.clientSecret,
            source: "PROVISIONING_CLIENT_SECRET",
          },
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

/** A Graph client over `source` against `sandbox`'s Graph, and the UPN of its first user. */
function graphOf(sandbox: Sandbox, source: Parameters<typeof forGraphClient>[0]) {
  const client = new GraphClient({
    baseUrl: cloudFromSandbox(sandbox.url).graphBase,
    token: forGraphClient(source),
    retry: { maxAttempts: 1 },
  });
  return { client, upn: sandbox.tenant.users()[0]!.userPrincipalName };
}

Deno.test("a cached token refused moments after an earlier process got it is replaced, and the call succeeds", async () => {
  await using dir = await tempDir();
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  // The earlier process: signs in and leaves a fresh token in the cache.
  const earlier = await appSource({ cacheDir: dir.path, clock, sandbox });
  const cached = await earlier.source.getAccessToken();
  // Graph stops accepting it (the signing key is replaced), without a second of the clock passing.
  await sandbox.oauth.rotateSigningKey();

  const later = await appSource({ cacheDir: dir.path, clock, sandbox });
  assertEquals(await later.source.getAccessToken(), cached, "the cached token is used first");
  const { client, upn } = graphOf(sandbox, later.source);
  const user = await resolveUser(client, upn);
  assertEquals(user.userPrincipalName.toLowerCase(), upn.toLowerCase());
  assertEquals(later.tokenRequests(), 1, "one renewal, for the refused token");
  assert((await later.source.getAccessToken()) !== cached);
  // Concurrent calls after the renewal keep the new token: no second renewal.
  await Promise.all(Array.from({ length: 6 }, () => resolveUser(client, upn)));
  assertEquals(later.tokenRequests(), 1);
});

Deno.test("a refused token whose renewal fails because the secret changed says to check the secret", async () => {
  await using dir = await tempDir();
  const clock = testClock();
  await using sandbox = await startSandbox({ users: 1, now: clock.now });
  const earlier = await appSource({ cacheDir: dir.path, clock, sandbox });
  await earlier.source.getAccessToken();
  await sandbox.oauth.rotateSigningKey();
  sandbox.tenant.apps.find((app) => app.clientId === sandbox.app.clientId)!.secret = "rotated~secret.value";

  const later = await appSource({ cacheDir: dir.path, clock, sandbox });
  const { client, upn } = graphOf(sandbox, later.source);
  const error = await rejects(resolveUser(client, upn), EntraAuthError);
  assertEquals(error.aadsts, "AADSTS7000215");
  assert(error.hint?.includes("PROVISIONING_CLIENT_SECRET"), error.hint);
});

Deno.test("when Graph refuses the renewed token too, the source stops renewing and says what to check", async () => {
  const clock = testClock();
  await using graph = await startSandbox({ users: 1, now: clock.now });
  // Tokens come from another tenant's login (as with a wrong --cloud): Graph refuses every one.
  await using elsewhere = await startSandbox({ users: 1, now: clock.now });
  const { source, tokenRequests } = await appSource({ clock, sandbox: elsewhere });
  const { client, upn } = graphOf(graph, source);

  const first = await rejects(resolveUser(client, upn), GraphError);
  assertEquals(first.status, 401);
  assertEquals(tokenRequests(), 2, "the refused token was renewed once");
  const second = await rejects(resolveUser(client, upn), EntraAuthError);
  assertEquals(second.code, "unauthorized");
  assert(second.hint?.includes("clock") && second.hint.includes("--cloud"), second.hint);
  await rejects(resolveUser(client, upn), EntraAuthError);
  assertEquals(tokenRequests(), 2, "no renewal storm");
});
