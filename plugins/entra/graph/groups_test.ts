/**
 * Group lookup and transitive member listing against the sandbox tenant over real HTTP. The
 * seeded "Passkey pilot" group nests wave 2, which nests wave 3, which holds a direct member of
 * the pilot again and nests the pilot back. A fetch wrapper records the requests and, for the
 * hostile-answer tests, rewrites a response at the seam.
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { ProvisioningError } from "../../../core/errors.ts";
import type { DirectoryUser } from "../../../core/plugin.ts";
import { GraphError } from "../errors.ts";
import { type Sandbox, startSandbox } from "../sandbox/server.ts";
import { GraphClient } from "./client.ts";
import { listGroupUsers, listTransitiveUsers, resolveGroup } from "./groups.ts";

interface Options {
  users?: number;
  /** "group-reader": an app with GroupMember.Read.All only (it may read groups, not users). */
  as?: "app" | "unprivileged-app" | "group-reader";
  /** Rewrites a Graph answer (the JSON body) before the client sees it. */
  rewrite?: (url: URL, body: Record<string, unknown>) => Record<string, unknown>;
}

async function harness(options: Options = {}) {
  const groupReader = {
    clientId: crypto.randomUUID(),
    displayName: "group reader",
    secret: crypto.randomUUID(),
    redirectUris: [],
    applicationPermissions: ["GroupMember.Read.All"],
  };
  const sandbox: Sandbox = await startSandbox({ users: options.users ?? 6, oauth: { apps: [groupReader] } });
  const app = options.as === "unprivileged-app"
    ? sandbox.seeded.unprivilegedApp
    : options.as === "group-reader"
    ? groupReader
    : { clientId: sandbox.app.clientId, secret: sandbox.app.clientSecret };
  const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: app.clientId,
      client_secret: app.secret,
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  const token = (await response.json() as { access_token: string }).access_token;
  const requests: { url: URL; headers: Headers }[] = [];
  const recording: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    requests.push({ url, headers: new Headers(init?.headers) });
    const answer = await fetch(input, init);
    if (!options.rewrite || !answer.ok) return answer;
    const body = options.rewrite(url, await answer.json());
    return new Response(JSON.stringify(body), {
      status: answer.status,
      headers: { "content-type": "application/json" },
    });
  };
  const client = new GraphClient({
    baseUrl: sandbox.url,
    token: () => Promise.resolve(token),
    fetch: recording,
    sleep: () => Promise.resolve(),
  });
  const regular = sandbox.tenant.users().filter((u) => /^user\d+@/.test(u.userPrincipalName));
  const memberRequests = () => requests.filter((r) => r.url.pathname.includes("/transitiveMembers/"));
  return {
    sandbox,
    client,
    requests,
    memberRequests,
    regular,
    groups: sandbox.seeded.groups,
    async [Symbol.asyncDispose]() {
      await sandbox.close();
    },
  };
}

async function collect(users: AsyncIterable<DirectoryUser>): Promise<DirectoryUser[]> {
  const out: DirectoryUser[] = [];
  for await (const user of users) out.push(user);
  return out;
}

const sortedIds = (users: readonly { id: string }[]) => users.map((u) => u.id).sort();

Deno.test("lists a group by object id: its users and nested groups' users, each once, with their names", async () => {
  await using h = await harness();
  const users = await collect(listGroupUsers(h.client, h.groups.pilot));
  // The pilot holds users 1-2 and wave 2 (users 3-4, and wave 3: users 1, 5, 6 and the pilot again).
  deepStrictEqual(sortedIds(users), sortedIds(h.regular));
  assertEquals(new Set(users.map((u) => u.id)).size, users.length);
  const first = h.regular[0]!;
  deepStrictEqual(users.find((u) => u.id === first.id), {
    id: first.id,
    userPrincipalName: first.userPrincipalName,
    displayName: first.displayName,
    mail: first.mail,
  });
  const [lookup, list] = h.requests;
  assertEquals(lookup!.url.pathname, `/v1.0/groups/${h.groups.pilot}`);
  assertEquals(list!.url.pathname, `/v1.0/groups/${h.groups.pilot}/transitiveMembers/microsoft.graph.user`);
  assertEquals(list!.url.searchParams.get("$select"), "id,userPrincipalName,displayName,mail");
  assertEquals(list!.url.searchParams.get("$top"), "999");
  assertEquals(list!.url.searchParams.get("$count"), "true");
  assertEquals(list!.headers.get("ConsistencyLevel"), "eventual");
  assertEquals(h.requests.length, 2);
});

Deno.test("lists a group by display name, compared case-insensitively as Graph does", async () => {
  await using h = await harness();
  const group = await resolveGroup(h.client, "  passkey PILOT - wave 3 ");
  deepStrictEqual(group, { id: h.groups.pilotWave3, displayName: "Passkey pilot - wave 3" });
  assertEquals(h.requests[0]!.url.searchParams.get("$filter"), "displayName eq 'passkey PILOT - wave 3'");
  const users = await collect(listGroupUsers(h.client, "Passkey pilot"));
  deepStrictEqual(sortedIds(users), sortedIds(h.regular));
});

Deno.test("a display name with quotes is sent as an OData literal with doubled quotes", async () => {
  await using h = await harness();
  h.sandbox.tenant.group(h.groups.pilotWave2)!.displayName = "O'Brien's 'wave'";
  const group = await resolveGroup(h.client, "O'Brien's 'wave'");
  assertEquals(group.id, h.groups.pilotWave2);
  assertEquals(h.requests[0]!.url.searchParams.get("$filter"), "displayName eq 'O''Brien''s ''wave'''");
});

Deno.test("pages follow @odata.nextLink across several 999-user pages", async () => {
  await using h = await harness({ users: 2100 });
  const users = await collect(listGroupUsers(h.client, "All sandbox users"));
  assertEquals(users.length, 2100);
  deepStrictEqual(sortedIds(users), sortedIds(h.regular));
  const pages = h.memberRequests();
  assertEquals(pages.length, 3);
  assert.ok(pages.slice(1).every((page) => page.url.searchParams.has("$skiptoken")));
  assert.ok(pages.every((page) => page.headers.get("ConsistencyLevel") === "eventual"));
});

Deno.test("pages are fetched as the caller iterates, and nested users stay unique across small pages", async () => {
  await using h = await harness();
  const iterator = listTransitiveUsers(h.client, { id: h.groups.pilot }, { pageSize: 2 });
  const first = await iterator.next();
  assert.ok(!first.done);
  assertEquals(h.memberRequests().length, 1);
  const rest = [first.value];
  for await (const user of iterator) rest.push(user);
  deepStrictEqual(sortedIds(rest), sortedIds(h.regular));
  assertEquals(h.memberRequests().length, 3); // 6 users, 2 per page
  await rejects(listTransitiveUsers(h.client, { id: h.groups.pilot }, { pageSize: 1000 }).next(), RangeError);
});

Deno.test("a name or id no group has is group-not-found (exit code 2), naming it", async () => {
  await using h = await harness();
  const byName = await rejects(collect(listGroupUsers(h.client, "Pilot's friends")), ProvisioningError);
  assertEquals(byName.code, "group-not-found");
  assertEquals(byName.exitCode, 2);
  assertEquals(byName.message, `Cannot look up group "Pilot's friends": no group has this display name`);
  const missing = "0b9e1e8c-3f4d-4c1a-9a57-6f0c2d1e0a11";
  const byId = await rejects(resolveGroup(h.client, missing), ProvisioningError);
  assertEquals(byId.code, "group-not-found");
  assertEquals(
    byId.message,
    `Cannot look up group "${missing}": no group has this object id or display name`,
  );
  assert.ok(byId.hint);
});

Deno.test("a name several groups have is group-ambiguous, listing their ids", async () => {
  await using h = await harness();
  h.sandbox.tenant.group(h.groups.pilotWave2)!.displayName = "Pilot waves";
  h.sandbox.tenant.group(h.groups.pilotWave3)!.displayName = "pilot WAVES";
  const error = await rejects(collect(listGroupUsers(h.client, "Pilot waves")), ProvisioningError);
  assertEquals(error.code, "group-ambiguous");
  assertEquals(error.exitCode, 2);
  assert.match(error.message, /^Cannot look up group "Pilot waves": 2 groups have this display name \(/);
  assert.ok(error.message.includes(h.groups.pilotWave2) && error.message.includes(h.groups.pilotWave3));
  assert.match(error.hint ?? "", /object id/);
  assertEquals(h.memberRequests().length, 0);
});

Deno.test("an app without group permissions gets insufficient-privileges naming GroupMember.Read.All", async () => {
  await using h = await harness({ as: "unprivileged-app" });
  for (const reference of ["Passkey pilot", h.groups.pilot]) {
    const error = await rejects(collect(listGroupUsers(h.client, reference)), GraphError);
    assertEquals(error.code, "insufficient-privileges");
    assertEquals(error.status, 403);
    assert.match(
      error.message,
      new RegExp(`^Cannot look up group "${reference}": Graph denied access: .*GroupMember\\.Read\\.All`),
    );
    assert.match(error.hint ?? "", /GroupMember\.Read\.All/);
  }
  const listing = await rejects(
    collect(listTransitiveUsers(h.client, { id: h.groups.pilot, displayName: "Passkey pilot" })),
    GraphError,
  );
  assertEquals(listing.code, "insufficient-privileges");
  assert.match(listing.message, /^Cannot list the members of group "Passkey pilot": Graph denied access/);
});

Deno.test("users without a user principal name (limited information) are insufficient-privileges naming User.ReadBasic.All", async () => {
  // The sandbox answers an app that may read groups but not users as Graph documents: members
  // with @odata.type and id only, every other property null.
  await using h = await harness({ as: "group-reader" });
  const error = await rejects(collect(listGroupUsers(h.client, h.groups.pilot)), GraphError);
  assertEquals(error.code, "insufficient-privileges");
  assert.match(
    error.message,
    /^Cannot list the members of group "Passkey pilot": Graph returned user \S+ without a user principal name/,
  );
  assert.match(error.hint ?? "", /User\.ReadBasic\.All/);
});

Deno.test("a next-page link to another host is refused before the token is sent there", async () => {
  await using h = await harness({
    rewrite: (url, body) =>
      url.pathname.includes("/transitiveMembers/") && body["@odata.nextLink"]
        ? {
          ...body,
          "@odata.nextLink": String(body["@odata.nextLink"]).replace(
            /^http:\/\/127\.0\.0\.1:\d+/,
            "https://graph.evil.example",
          ),
        }
        : body,
  });
  const seen: DirectoryUser[] = [];
  const error = await rejects(async () => {
    for await (const user of listTransitiveUsers(h.client, { id: h.groups.pilot }, { pageSize: 2 })) {
      seen.push(user);
    }
  }, GraphError);
  assertEquals(error.code, "graph-bad-response");
  assert.match(
    error.message,
    /next-page link "https:\/\/graph\.evil\.example\/v1\.0\/groups\/.*" leaves http:\/\/127\.0\.0\.1/,
  );
  assertEquals(seen.length, 2); // the first page was handed on; no request left for the other host
  assert.ok(h.requests.every((r) => r.url.hostname === "127.0.0.1"));
});

Deno.test("a page that is not Graph's shape is graph-bad-response before any of its users is handed on", async () => {
  await using h = await harness({
    rewrite: (url, body) =>
      url.pathname.includes("/transitiveMembers/")
        ? {
          ...body,
          value: (body["value"] as Record<string, unknown>[]).map((u, i) => i === 1 ? { ...u, id: 42 } : u),
        }
        : body,
  });
  const seen: DirectoryUser[] = [];
  const error = await rejects(async () => {
    for await (const user of listGroupUsers(h.client, h.groups.pilot)) seen.push(user);
  }, GraphError);
  assertEquals(error.code, "graph-bad-response");
  assert.match(error.message, /value\.1\.id/);
  assertEquals(seen.length, 0);
});
