/**
 * Throttling (token buckets with an injected clock) and fault injection, as units and over HTTP.
 */
import assert from "node:assert/strict";
import { startSandbox } from "./server.ts";
import { FaultInjector, resourceUnitCost, Throttle, type ThrottleRequest } from "./throttle.ts";

const url = (path: string) => new URL(`http://sandbox/v1.0/${path}`);

function request(overrides: Partial<ThrottleRequest> = {}): ThrottleRequest {
  return {
    appId: "11111111-1111-4111-8111-111111111111",
    tenantId: "22222222-2222-4222-8222-222222222222",
    method: "GET",
    template: "users/{id}",
    url: url("users/x"),
    write: false,
    ...overrides,
  };
}

Deno.test("request costs follow the identity and access table and its other factors", () => {
  assert.equal(resourceUnitCost("GET", "users", url("users")), 2);
  assert.equal(resourceUnitCost("GET", "users/{id}", url("users/x")), 1);
  assert.equal(resourceUnitCost("GET", "groups/{groupId}/members", url("groups/g/members")), 3);
  assert.equal(
    resourceUnitCost("GET", "groups/{groupId}/transitiveMembers", url("groups/g/transitiveMembers")),
    5,
  );
  assert.equal(
    resourceUnitCost(
      "GET",
      "groups/{groupId}/transitiveMembers/microsoft.graph.user",
      url("groups/g/transitiveMembers"),
    ),
    5,
  );
  assert.equal(resourceUnitCost("POST", "users/{id}/authentication/fido2Methods", url("users/x")), 1);
  assert.equal(resourceUnitCost("GET", "users", url("users?$select=id")), 1, "$select −1");
  assert.equal(resourceUnitCost("GET", "users", url("users?$expand=manager")), 3, "$expand +1");
  assert.equal(resourceUnitCost("GET", "groups/{groupId}/transitiveMembers", url("g?$top=10&$select=id")), 3);
  assert.equal(resourceUnitCost("GET", "users/{id}", url("users/x?$select=id&$top=5")), 1, "never below 1");
});

Deno.test("the resource-unit bucket empties, answers Retry-After, and refills over its window", () => {
  let now = 0;
  const throttle = new Throttle({
    now: () => now,
    userCount: () => 10,
    settings: { resourceUnits: { small: 10, windowSeconds: 10 } },
  });
  assert.equal(throttle.tenantSize(), "small");
  for (let i = 0; i < 5; i++) assert.ok(throttle.admit(request({ template: "users", url: url("users") })).ok);
  const refused = throttle.admit(request());
  assert.ok(!refused.ok);
  assert.equal(refused.information, "ResourceUnitLimitExceeded");
  assert.equal(
    refused.scope,
    "Tenant_Application/ReadWrite/11111111-1111-4111-8111-111111111111/22222222-2222-4222-8222-222222222222",
  );
  assert.equal(refused.retryAfterSeconds, 1, "one unit refills in 1 s");
  // A refused request is not charged: after 1 s exactly one unit is back.
  now += 1000;
  assert.ok(throttle.admit(request()).ok);
  assert.ok(!throttle.admit(request()).ok);
  // Another app has its own bucket.
  assert.ok(throttle.admit(request({ appId: "33333333-3333-4333-8333-333333333333" })).ok);
  now += 10_000;
  for (let i = 0; i < 10; i++) assert.ok(throttle.admit(request()).ok, `request ${i} after the window`);
  assert.equal(throttle.stats.throttled, 2);
  assert.equal(throttle.stats.byScope["Tenant_Application/ReadWrite"], 2);
});

Deno.test("the tenant's size picks the S, M or L resource-unit limit", () => {
  let users = 49;
  const throttle = new Throttle({ userCount: () => users, now: () => 0 });
  assert.equal(throttle.tenantSize(), "small");
  users = 50;
  assert.equal(throttle.tenantSize(), "medium");
  users = 500;
  assert.equal(throttle.tenantSize(), "medium");
  users = 501;
  assert.equal(throttle.tenantSize(), "large");
  const limits = throttle.settings;
  assert.deepEqual([limits.resourceUnits.small, limits.resourceUnits.medium, limits.resourceUnits.large], [
    3500,
    5000,
    8000,
  ]);
  assert.deepEqual(limits.writesPerAppTenant, { limit: 3000, windowSeconds: 150 });
  assert.deepEqual(limits.writesPerTenant, { limit: 18_000, windowSeconds: 300 });
});

Deno.test("write limits per app+tenant and per tenant refuse writes while reads go on", () => {
  let now = 0;
  const throttle = new Throttle({
    now: () => now,
    userCount: () => 1000,
    settings: {
      writesPerAppTenant: { limit: 3, windowSeconds: 150 },
      writesPerTenant: { limit: 4, windowSeconds: 300 },
    },
  });
  const write = (appId?: string) =>
    throttle.admit(
      request({
        method: "POST",
        write: true,
        template: "users/{id}/authentication/fido2Methods",
        ...(appId ? { appId } : {}),
      }),
    );
  for (let i = 0; i < 3; i++) assert.ok(write().ok);
  const perApp = write();
  assert.ok(!perApp.ok);
  assert.equal(perApp.information, "WriteLimitExceeded");
  assert.match(perApp.scope, /^Tenant_Application\/Write\//);
  assert.equal(perApp.retryAfterSeconds, 50, "one write refills in 150 s / 3");
  assert.ok(throttle.admit(request()).ok, "reads are not write-limited");
  const otherApp = "44444444-4444-4444-8444-444444444444";
  assert.ok(write(otherApp).ok);
  const perTenant = write(otherApp);
  assert.ok(!perTenant.ok);
  assert.match(perTenant.scope, /^Tenant\/Write\//);
  now += 75_000;
  assert.ok(write(otherApp).ok);
});

Deno.test("scale shrinks every window, and limit-percentage appears past 80%", () => {
  let now = 0;
  const throttle = new Throttle({
    now: () => now,
    userCount: () => 10,
    settings: { resourceUnits: { small: 10 }, scale: 0.001 },
  });
  const answers = Array.from({ length: 10 }, () => throttle.admit(request()));
  const percentages = answers.map((a) => a.ok ? a.headers["x-ms-throttle-limit-percentage"] : "refused");
  assert.deepEqual(percentages, [...Array(7).fill(undefined), "0.8", "0.9", "1.0"]);
  assert.ok(answers.every((a) => a.ok && a.headers["x-ms-resource-unit"] === "1"));
  assert.ok(!throttle.admit(request()).ok);
  now += 10; // 10 s × 0.001
  assert.ok(throttle.admit(request()).ok);
});

Deno.test("fault injection honours its rates with a seeded source, and the same seed repeats the run", () => {
  const settings = {
    serverErrorRate: 0.1,
    resetRate: 0.05,
    lostResponseRate: 0.05,
    slowRate: 0.2,
    slowMs: 5,
    seed: 42,
  };
  const draws = (injector: FaultInjector) => Array.from({ length: 10_000 }, () => injector.draw());
  const first = draws(new FaultInjector(settings));
  const count = (action: string) => first.filter((d) => d.action === action).length;
  const near = (actual: number, expected: number) =>
    assert.ok(Math.abs(actual - expected) < expected * 0.15, `${actual} is not near ${expected}`);
  near(count("serverError"), 1000);
  near(count("reset"), 500);
  near(count("lostResponse"), 500);
  near(first.filter((d) => d.slow).length, 2000);
  assert.ok(first.filter((d) => d.action === "serverError").every((d) => [500, 503, 504].includes(d.status)));
  assert.deepEqual(draws(new FaultInjector(settings)), first);
  const injector = new FaultInjector(settings);
  injector.draw();
  injector.configure({ seed: 42 });
  assert.deepEqual(injector.draw(), first[0]);
  assert.throws(() => injector.configure({ resetRate: 0.95 }), /must not exceed 1/);
});

async function appToken(sandbox: Awaited<ReturnType<typeof startSandbox>>): Promise<string> {
  const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: sandbox.app.clientId,
      client_secret: sandbox.app.clientSecret,
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  return (await response.json()).access_token;
}

Deno.test("over HTTP, an empty bucket answers 429 with Retry-After and x-ms-throttle headers, then recovers", async () => {
  let offset = 0;
  await using sandbox = await startSandbox({
    users: 5,
    now: () => Date.now() + offset,
    throttle: { resourceUnits: { small: 3, windowSeconds: 10 } },
  });
  const headers = {
    authorization: `Bearer ${await appToken(sandbox)}`,
    "client-request-id": "throttle-test",
  };
  const get = () => fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, { headers });
  for (let i = 0; i < 3; i++) {
    const ok = await get();
    await ok.body?.cancel();
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("x-ms-resource-unit"), "1");
  }
  const throttled = await get();
  const body = await throttled.json();
  assert.equal(throttled.status, 429);
  assert.equal(throttled.headers.get("retry-after"), "4");
  assert.match(
    throttled.headers.get("x-ms-throttle-scope") ?? "",
    new RegExp(`^Tenant_Application/ReadWrite/${sandbox.app.clientId}/${sandbox.tenantId}$`),
  );
  assert.equal(throttled.headers.get("x-ms-throttle-information"), "ResourceUnitLimitExceeded");
  assert.equal(throttled.headers.get("client-request-id"), "throttle-test");
  assert.equal(body.error.code, "TooManyRequests");
  assert.equal(body.error.innerError.code, "429");
  assert.equal(body.error.innerError.status, "429");
  assert.equal(body.error.innerError["client-request-id"], "throttle-test");

  offset += 4000;
  const recovered = await get();
  await recovered.body?.cancel();
  assert.equal(recovered.status, 200);
  const inspection = sandbox.inspect();
  assert.equal(inspection.throttled.total, 1);
  assert.equal(inspection.calls["GET /v1.0/users/{id}"], 5);
});

Deno.test("over HTTP, faults reset connections, answer 5xx, lose responses after the write, and delay", async () => {
  await using sandbox = await startSandbox({ users: 5, faults: { resetRate: 1 } });
  const token = await appToken(sandbox);
  // Deno's fetch silently resends a request whose pooled connection closes before an answer (a
  // POST too: a duplicate write). A client without pooling sends each request exactly once.
  using client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const fetch = (input: string, init: RequestInit = {}) => globalThis.fetch(input, { ...init, client });
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const users = `${sandbox.url}/v1.0/users/user0002@contoso.sandbox`;

  await assert.rejects(() => fetch(users, { headers }), TypeError);

  sandbox.faults.configure({ resetRate: 0, serverErrorRate: 1, serverErrorStatuses: [503] });
  const unavailable = await fetch(users, { headers });
  const body = await unavailable.json();
  assert.equal(unavailable.status, 503);
  assert.equal(unavailable.headers.get("retry-after"), "1");
  assert.equal(body.error.code, "serviceNotAvailable");
  assert.ok(unavailable.headers.get("request-id"));

  sandbox.faults.configure({ serverErrorRate: 0, lostResponseRate: 1 });
  await assert.rejects(
    () =>
      fetch(`${users}/authentication/temporaryAccessPassMethods`, { method: "POST", headers, body: "{}" }),
    TypeError,
  );
  const user = sandbox.inspect().users.find((u) => u.userPrincipalName === "user0002@contoso.sandbox")!;
  assert.ok(user.temporaryAccessPass, "the write happened though the answer was lost");

  // Added latency delays an answer but does not change it (how long it waits is a benchmark's business).
  sandbox.faults.configure({ lostResponseRate: 0, latencyMs: 150 });
  const slow = await fetch(users, { headers });
  await slow.body?.cancel();
  assert.equal(slow.status, 200);

  const faults = sandbox.inspect().faults;
  assert.deepEqual([faults.resets, faults.serverErrors, faults.lostResponses], [1, 1, 1]);
});

Deno.test("over HTTP, a seeded fault rate is roughly honoured and reproducible", async () => {
  const outcomes: string[][] = [];
  for (let run = 0; run < 2; run++) {
    await using sandbox = await startSandbox({
      users: 3,
      faults: { serverErrorRate: 0.3, serverErrorStatuses: [500], seed: 9 },
    });
    const headers = { authorization: `Bearer ${await appToken(sandbox)}` };
    const seen: string[] = [];
    for (let i = 0; i < 200; i++) {
      const response = await fetch(`${sandbox.url}/v1.0/users/user0001@contoso.sandbox`, { headers });
      await response.body?.cancel();
      seen.push(String(response.status));
    }
    outcomes.push(seen);
    const errors = seen.filter((s) => s === "500").length;
    assert.ok(errors > 40 && errors < 80, `${errors} of 200 answered 500 at a 30% rate`);
    assert.equal(sandbox.inspect().faults.serverErrors, errors);
  }
  assert.deepEqual(outcomes[0], outcomes[1]);
});
