/**
 * The panel's HTTP server over real HTTP on 127.0.0.1, the same suite on the embedded database and
 * on a throwaway PostgreSQL cluster: the first-run bootstrap link, sessions and roles, CSRF, a
 * cookie of another panel, agent tokens and their 12 hours (a settable clock), two agents draining
 * 200 jobs through the API exactly once, the OpenAPI document against the routes, and the users
 * page over 100,000 users paged by keyset. TLS and the refusal to serve off loopback without it
 * are database-independent and run once.
 */
import { ProvisioningError } from "../core/errors.ts";
import { startSandbox } from "../plugins/entra/sandbox/mod.ts";
import {
  apiRoutes,
  openApiDocument,
  type RunningPanel,
  servePanel,
  startPanel,
} from "../core/panel/server/mod.ts";
import type { LeasedJob, OpenedPanelStore, QueueJob } from "../core/panel/store/mod.ts";
import { tokenHash } from "../core/panel/store/auth_store.ts";
import { isPostgresUrl } from "../core/panel/store/mod.ts";
import { openPostgresDatabase } from "../core/panel/store/postgres.ts";
import type { SqlDatabase } from "../core/panel/store/sql.ts";
import { openSqliteDatabase } from "../core/panel/store/sqlite.ts";
import { assert, assertEquals, deepStrictEqual, rejects } from "./assert.ts";
import {
  openTestStore,
  seedUsers,
  type StoreBackend,
  TestClock,
  withPostgres,
  withSqlite,
} from "./support/panel_store.ts";

function rawDatabase(location: string): SqlDatabase {
  return isPostgresUrl(location)
    ? openPostgresDatabase(location, { maxConnections: 1 })
    : openSqliteDatabase(location);
}

/** A browser-like client of one panel: keeps the session cookie, never follows redirects. */
class PanelClient {
  cookie: string | null = null;
  csrf: string | null = null;
  constructor(readonly base: string, readonly client?: Deno.HttpClient) {}

  async request(path: string, init: RequestInit & { csrf?: boolean } = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookie !== null) headers.set("cookie", this.cookie);
    if (init.csrf && this.csrf !== null) headers.set("x-csrf-token", this.csrf);
    return await fetch(new URL(path, this.base), {
      ...init,
      headers,
      redirect: "manual",
      ...(this.client ? { client: this.client } : {}),
    });
  }

  async json(path: string, body?: unknown, options: { csrf?: boolean } = { csrf: true }): Promise<Response> {
    return await this.request(
      path,
      body === undefined ? {} : {
        method: "POST",
        body: JSON.stringify(body),
        headers: { "content-type": "application/json" },
        csrf: options.csrf ?? true,
      },
    );
  }

  async form(path: string, fields: Record<string, string>): Promise<Response> {
    return await this.request(path, {
      method: "POST",
      body: new URLSearchParams(fields),
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
  }

  /** Follows a one-time link: the form it shows, then its POST; keeps the session it starts. */
  async followLink(link: string, fields: Record<string, string> = {}): Promise<Response> {
    const shown = await this.request(link);
    assertEquals(shown.status, 200);
    const html = await shown.text();
    const token = /name="token" value="([^"]+)"/.exec(html)?.[1];
    assert(token !== undefined, "the link's page carries its token in the form");
    const action = new URL(link).pathname;
    const answer = await this.form(action, { token, ...fields });
    const setCookie = answer.headers.get("set-cookie");
    if (answer.status === 303 && setCookie !== null) {
      this.cookie = setCookie.split(";")[0]!;
      const session = await (await this.request("/api/v1/session")).json();
      this.csrf = session.csrf;
    }
    return answer;
  }
}

async function errorCode(response: Response): Promise<string> {
  const body = await response.json();
  return body.error?.code;
}

interface Panel {
  readonly store: OpenedPanelStore;
  readonly panel: RunningPanel;
  readonly clock: TestClock;
  readonly printed: string[];
  readonly owner: PanelClient;
}

/** Opens a store on a fresh database, starts a panel on it and signs its owner in through the bootstrap link. */
async function openPanel(backend: StoreBackend, label: string): Promise<Panel & AsyncDisposable> {
  const clock = new TestClock();
  const store = await openTestStore(await backend.fresh(label), { now: clock.now });
  const printed: string[] = [];
  const panel = await startPanel({
    store,
    listen: { port: 0 },
    clock: clock.now,
    print: (l) => printed.push(l),
  });
  const owner = new PanelClient(panel.url);
  assert(panel.bootstrapLink !== null);
  assertEquals(
    (await owner.followLink(panel.bootstrapLink, { signInName: "owner@contoso.test" })).status,
    303,
  );
  return {
    store,
    panel,
    clock,
    printed,
    owner,
    async [Symbol.asyncDispose]() {
      await panel.close();
      await store.close();
    },
  };
}

/** The owner adds an admin with `role`; the admin signs in through the link. */
async function addAdmin(panel: Panel, signInName: string, role: "admin" | "read-only"): Promise<PanelClient> {
  const created = await panel.owner.json("/api/v1/admins", { signInName, role });
  assertEquals(created.status, 201);
  const { signInLink } = await created.json();
  const admin = new PanelClient(panel.panel.url);
  assertEquals((await admin.followLink(signInLink)).status, 303);
  return admin;
}

/** Imports `count` users through the CSV API and queues them all; returns the job ids. */
async function importAndQueue(client: PanelClient, count: number): Promise<number[]> {
  const csv = ["objectId,userPrincipalName,displayName"];
  for (let i = 1; i <= count; i++) csv.push(`obj-${i},u${String(i).padStart(5, "0")}@contoso.test,User ${i}`);
  const imported = await client.request("/api/v1/users/import?provider=sandbox", {
    method: "POST",
    body: csv.join("\r\n"),
    headers: { "content-type": "text/csv" },
    csrf: true,
  });
  assertEquals(imported.status, 200);
  deepStrictEqual(await imported.json(), { imported: count, notInSync: 0 });
  const ids: number[] = [];
  let cursor: string | null = null;
  do {
    const page: { items: { id: number }[]; next: string | null } = await (await client.request(
      `/api/v1/users?limit=500${cursor ? `&cursor=${cursor}` : ""}`,
    )).json();
    ids.push(...page.items.map((u) => u.id));
    cursor = page.next;
  } while (cursor !== null);
  const queued = await client.json("/api/v1/jobs", { userIds: ids });
  assertEquals(queued.status, 200);
  const { outcomes } = await queued.json();
  return outcomes.map((o: { jobId: number }) => o.jobId);
}

async function suite(t: Deno.TestContext, backend: StoreBackend): Promise<void> {
  await t.step("the first-run link makes one owner once; a panel with an owner prints no link", async () => {
    await using p = await openPanel(backend, "bootstrap");
    assertEquals(p.printed.length, 1);
    assert(p.printed[0]!.includes(p.panel.bootstrapLink!));
    const session = await (await p.owner.request("/api/v1/session")).json();
    assertEquals(session.admin.role, "owner");
    assertEquals(session.admin.signInName, "owner@contoso.test");
    const again = new PanelClient(p.panel.url);
    const reused = await again.followLink(p.panel.bootstrapLink!, { signInName: "mallory@contoso.test" });
    assertEquals(reused.status, 410);
    assert((await reused.text()).includes('data-code="bootstrap-used"'));
    const printed: string[] = [];
    await using second = await startPanel({
      store: p.store,
      listen: { port: 0 },
      print: (l) => printed.push(l),
    });
    assertEquals(second.bootstrapLink, null);
    deepStrictEqual(printed, []);
    // A session lasts 8 hours by the panel's clock.
    p.clock.advance(8 * 3600_000 - 1);
    assertEquals((await p.owner.request("/api/v1/session")).status, 200);
    p.clock.advance(1);
    assertEquals((await p.owner.request("/api/v1/session")).status, 401);
  });

  await t.step(
    "the OpenAPI document lists exactly the API's routes, and each documented one answers",
    async () => {
      await using p = await openPanel(backend, "openapi");
      const served = await (await new PanelClient(p.panel.url).request("/api/v1/openapi.json")).json();
      deepStrictEqual(served, JSON.parse(JSON.stringify(openApiDocument)));
      const documented = Object.entries(served.paths as Record<string, Record<string, unknown>>)
        .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`)).sort();
      deepStrictEqual(documented, apiRoutes.map((r) => `${r.method} ${r.path}`).sort());
      const anonymous = new PanelClient(p.panel.url);
      for (const route of apiRoutes) {
        const path = route.path.replace("{id}", "1");
        const answer = await anonymous.request(path, {
          method: route.method,
          ...(route.method === "POST" ? { body: "{}", headers: { "content-type": "application/json" } } : {}),
        });
        const expected = route.access === "public" ? 200 : 401;
        assertEquals(answer.status, expected, `${route.method} ${path}`);
        if (expected === 401) {
          assert(
            ["session-required", "agent-token-required"].includes(await errorCode(answer)),
          );
        } else await answer.body?.cancel();
      }
    },
  );

  await t.step(
    "CSRF: a change without the session's token, with a wrong one, or from another origin is refused",
    async () => {
      await using p = await openPanel(backend, "csrf");
      await importAndQueue(p.owner, 3);
      const [job] = (await p.store.listJobs()).items;
      const missing = await p.owner.json(`/api/v1/jobs/${job!.id}/cancel`, {}, { csrf: false });
      assertEquals(missing.status, 403);
      assertEquals(await errorCode(missing), "csrf-missing");
      const wrong = await p.owner.request(`/api/v1/jobs/${job!.id}/cancel`, {
        method: "POST",
        headers: { "x-csrf-token": "forged-token-forged-token" },
      });
      assertEquals(wrong.status, 403);
      assertEquals(await errorCode(wrong), "csrf-mismatch");
      const foreign = await p.owner.request(`/api/v1/jobs/${job!.id}/cancel`, {
        method: "POST",
        headers: { origin: "https://evil.example" },
        csrf: true,
      });
      assertEquals(foreign.status, 403);
      assertEquals(await errorCode(foreign), "origin-mismatch");
      // The page's form without its hidden field, then with it.
      const user = (await p.store.listUsers()).items[0]!;
      const noField = await p.owner.form(`/jobs/${job!.id}/cancel`, {});
      assertEquals(noField.status, 403);
      assert((await noField.text()).includes('data-code="csrf-missing"'));
      assertEquals((await p.store.getJob(job!.id))!.state, "queued", "nothing changed");
      const withField = await p.owner.form(`/jobs/${job!.id}/cancel`, { csrf: p.owner.csrf! });
      assertEquals(withField.status, 303);
      assertEquals((await p.store.getJob(job!.id))!.state, "cancelled");
      const usersPage = await (await p.owner.request("/users")).text();
      assert(usersPage.includes(`action="/users/${user.id}/enqueue"`));
      assert(
        usersPage.includes(`name="csrf" value="${p.owner.csrf}"`),
        "the enqueue form carries the CSRF token",
      );
    },
  );

  await t.step("a session cookie of another panel is refused", async () => {
    await using a = await openPanel(backend, "panel_a");
    await using b = await openPanel(backend, "panel_b");
    const stranger = new PanelClient(b.panel.url);
    stranger.cookie = a.owner.cookie;
    const api = await stranger.request("/api/v1/session");
    assertEquals(api.status, 401);
    assertEquals(await errorCode(api), "session-required");
    const page = await stranger.request("/users");
    assertEquals(page.status, 303);
    assertEquals(page.headers.get("location"), "/");
    // Signing out ends the session on its own panel.
    assertEquals((await a.owner.form("/sign-out", { csrf: a.owner.csrf! })).status, 303);
    assertEquals((await a.owner.request("/api/v1/session")).status, 401);
  });

  await t.step("a read-only admin sees users and jobs but cannot queue; an admin can", async () => {
    await using p = await openPanel(backend, "roles");
    await importAndQueue(p.owner, 2);
    const reader = await addAdmin(p, "reader@contoso.test", "read-only");
    const editor = await addAdmin(p, "editor@contoso.test", "admin");
    const user = (await p.store.listUsers()).items[0]!;
    assertEquals((await reader.request("/api/v1/users")).status, 200);
    const page = await reader.request("/users");
    assertEquals(page.status, 200);
    assert(!(await page.text()).includes("Add passkey"), "no enqueue form for a read-only admin");
    const api = await reader.json("/api/v1/jobs", { userIds: [user.id] });
    assertEquals(api.status, 403);
    assertEquals(await errorCode(api), "role-forbidden");
    const form = await reader.form(`/users/${user.id}/enqueue`, { csrf: reader.csrf!, mode: "automatic" });
    assertEquals(form.status, 403);
    assertEquals((await reader.json("/api/v1/agent-tokens", {})).status, 403);
    assertEquals(
      (await editor.json("/api/v1/admins", { signInName: "x@contoso.test", role: "admin" })).status,
      403,
    );
    // The editor cancels the user's job and queues the user again through the page's form.
    const [job] = (await p.store.listJobs({ userId: user.id })).items;
    assertEquals((await editor.json(`/api/v1/jobs/${job!.id}/cancel`, {})).status, 200);
    const queued = await editor.form(`/users/${user.id}/enqueue`, { csrf: editor.csrf!, mode: "manual" });
    assertEquals(queued.status, 303);
    const [newest] = (await p.store.listJobs({ userId: user.id })).items;
    assertEquals(newest!.state, "queued");
    assertEquals(newest!.mode, "manual");
    assertEquals(newest!.requestedBy, "editor@contoso.test");
    // Bulk: select users on the page and queue them at once (the user with an active job keeps it).
    const others = (await p.store.listUsers()).items.map((u) => u.id);
    const [secondJob] = (await p.store.listJobs({ userId: others[1]! })).items;
    assertEquals((await editor.json(`/api/v1/jobs/${secondJob!.id}/cancel`, {})).status, 200);
    const usersHtml = await (await editor.request("/users")).text();
    assert(usersHtml.includes(`name="userId" value="${others[1]}" form="bulk"`), "each user has a checkbox");
    const selected = new URLSearchParams([
      ["csrf", editor.csrf!],
      ["mode", "automatic"],
      ...others.map((i) => ["userId", String(i)]),
    ]);
    const bulk = await editor.request("/users/enqueue", {
      method: "POST",
      body: selected,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    assertEquals(bulk.status, 303);
    assertEquals((await p.store.counts()).queued, 2);
    const [requeued] = (await p.store.listJobs({ userId: others[1]! })).items;
    deepStrictEqual([requeued!.state, requeued!.requestedBy], ["queued", "editor@contoso.test"]);
    assertEquals(
      (await editor.form("/users/enqueue", { csrf: editor.csrf! })).status,
      400,
      "nothing selected",
    );
    // A sign-in link works once.
    const created =
      await (await p.owner.json("/api/v1/admins", { signInName: "late@contoso.test", role: "admin" }))
        .json();
    assertEquals((await new PanelClient(p.panel.url).followLink(created.signInLink)).status, 303);
    assertEquals((await new PanelClient(p.panel.url).followLink(created.signInLink)).status, 410);
  });

  await t.step("an agent token works for 12 hours, then is refused; it cannot act as a session", async () => {
    await using p = await openPanel(backend, "agent_token");
    await importAndQueue(p.owner, 1);
    const issued = await p.owner.json("/api/v1/agent-tokens", { label: "laptop" });
    assertEquals(issued.status, 201);
    const { token, expiresAt } = await issued.json();
    assertEquals(expiresAt, p.clock.time + 12 * 3600_000);
    const audit = await p.store.listAudit({ limit: 5 });
    assert(!JSON.stringify(audit).includes(token), "the audit log holds no token");
    const db = rawDatabase(p.store.location);
    try {
      const stored = JSON.stringify([
        ...await db.query("SELECT * FROM agent_tokens"),
        ...await db.query("SELECT * FROM sessions"),
      ]);
      assert(!stored.includes(token), "the database keeps the agent token's hash only");
      assert(!stored.includes(p.owner.cookie!.split("=")[1]!), "and the session token's hash only");
      assert(stored.includes(await tokenHash(token)));
    } finally {
      await db.close();
    }
    const agent = new PanelClient(p.panel.url);
    const bearer = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    assertEquals(
      (await agent.request("/api/v1/jobs", { method: "POST", headers: bearer, body: "{}" })).status,
      401,
    );
    // A fresh token, revoked by the agent's logout; another revoked by its admin: both refused at once.
    const fresh = await Promise.all(
      [1, 2].map(async (n) =>
        await (await p.owner.json("/api/v1/agent-tokens", { label: `spare-${n}` })).json()
      ),
    );
    const freshHeaders = (n: number) => ({
      authorization: `Bearer ${fresh[n]!.token}`,
      "content-type": "application/json",
    });
    assertEquals(
      (await agent.request("/api/v1/agent/logout", { method: "POST", headers: freshHeaders(0) })).status,
      200,
    );
    const revoked = await p.owner.json(`/api/v1/agent-tokens/${fresh[1]!.id}/revoke`, {});
    assertEquals(revoked.status, 200);
    for (const n of [0, 1]) {
      const answer = await agent.request("/api/v1/jobs", { headers: freshHeaders(n) });
      assertEquals(await errorCode(answer), "agent-token-revoked");
    }
    const listed = await (await p.owner.request("/api/v1/agent-tokens")).json();
    deepStrictEqual(
      listed.items.map((t: { label: string; revokedAt: number | null }) => [t.label, t.revokedAt !== null]),
      [
        ["spare-2", true],
        ["spare-1", true],
        ["laptop", false],
      ],
    );
    assert(!JSON.stringify(listed).includes(token), "the listing holds no token");
    p.clock.advance(12 * 3600_000 - 1);
    const leased = await agent.request("/api/v1/agent/lease", {
      method: "POST",
      headers: bearer,
      body: JSON.stringify({ agent: "a1" }),
    });
    assertEquals(leased.status, 200);
    const { jobs } = await leased.json();
    assertEquals(jobs.length, 1);
    assertEquals(jobs[0].lease.agent, "owner@contoso.test/a1");
    p.clock.advance(1);
    const late = await agent.request(`/api/v1/agent/jobs/${jobs[0].job.id}/complete`, {
      method: "POST",
      headers: bearer,
      body: JSON.stringify({ agent: "a1", token: jobs[0].lease.token, state: "verified" }),
    });
    assertEquals(late.status, 401);
    const error = (await late.json()).error;
    assertEquals(error.code, "agent-token-expired");
    assert(error.message.includes("--login"), error.message);
  });

  await t.step("two agents leasing through the HTTP API drain 200 jobs exactly once", async () => {
    await using p = await openPanel(backend, "drain");
    const jobIds = await importAndQueue(p.owner, 200);
    const second = await addAdmin(p, "second@contoso.test", "admin");
    const tokens = await Promise.all(
      [p.owner, second].map(async (c) => (await (await c.json("/api/v1/agent-tokens", {})).json()).token),
    );
    const drain = async (token: string, name: string): Promise<number[]> => {
      const client = new PanelClient(p.panel.url);
      const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
      const post = async (path: string, body: unknown) =>
        await client.request(path, { method: "POST", headers, body: JSON.stringify(body) });
      const done: number[] = [];
      for (;;) {
        const { jobs } = await (await post("/api/v1/agent/lease", { agent: name, limit: 5, leaseMs: 60_000 }))
          .json() as {
            jobs: LeasedJob[];
          };
        if (jobs.length === 0) return done;
        for (const { job, lease } of jobs) {
          const renewed = await post(`/api/v1/agent/jobs/${job.id}/renew`, {
            agent: name,
            token: lease.token,
            step: "options",
          });
          assertEquals(renewed.status, 200);
          await renewed.body?.cancel();
          const completed = await post(`/api/v1/agent/jobs/${job.id}/complete`, {
            agent: name,
            token: lease.token,
            state: "verified",
            result: { credentialId: `c-${job.id}` },
          });
          assertEquals(completed.status, 200);
          const answer = await completed.json() as { job: QueueJob };
          assertEquals(answer.job.state, "verified");
          done.push(job.id);
        }
      }
    };
    const [a, b] = await Promise.all([drain(tokens[0], "agent-a"), drain(tokens[1], "agent-b")]);
    const all = [...a!, ...b!].sort((x, y) => x - y);
    deepStrictEqual(all, [...jobIds].sort((x, y) => x - y), "every job completed once, by one agent");
    assert(a!.length > 0 && b!.length > 0, `both agents worked (${a!.length} and ${b!.length})`);
    assertEquals((await p.store.counts()).verified, 200);
    // A late answer with a dead lease is refused with 409 and the job as it is now.
    const agent = new PanelClient(p.panel.url);
    const refused = await agent.request(`/api/v1/agent/jobs/${jobIds[0]}/complete`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokens[0]}`, "content-type": "application/json" },
      body: JSON.stringify({ agent: "agent-a", token: "not-the-lease-token", state: "verified" }),
    });
    assertEquals(refused.status, 409);
    const body = await refused.json();
    assertEquals(body.error.code, "finished");
    assertEquals(body.job.state, "verified");
    const jobsPage = await (await p.owner.request("/jobs?state=verified")).text();
    assertEquals(
      [...jobsPage.matchAll(/data-state="verified"/g)].length,
      50,
      "the jobs page shows a page of 50",
    );
  });

  await t.step(
    "agent answers map onto the store: fail (retryable, then final), release, retry; errors shown",
    async () => {
      await using p = await openPanel(backend, "answers");
      await importAndQueue(p.owner, 2);
      const { token } = await (await p.owner.json("/api/v1/agent-tokens", {})).json();
      const agent = new PanelClient(p.panel.url);
      const post = (path: string, body: unknown) =>
        agent.request(path, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      const lease = async () =>
        (await (await post("/api/v1/agent/lease", { agent: "a", limit: 2 })).json()).jobs as LeasedJob[];
      const [first, second] = await lease();
      const released = await (await post(`/api/v1/agent/jobs/${second!.job.id}/release`, {
        agent: "a",
        token: second!.lease.token,
      }))
        .json();
      deepStrictEqual([released.job.state, released.job.attempts], ["queued", 0]);
      const failed = await post(`/api/v1/agent/jobs/${first!.job.id}/fail`, {
        agent: "a",
        token: first!.lease.token,
        code: "tap-unavailable",
        message: "Failed to retrieve TAP: Sync user data by importing from Azure AD and try again",
        retryable: false,
      });
      assertEquals((await failed.json()).job.state, "failed");
      const bad = await post(`/api/v1/agent/jobs/${first!.job.id}/fail`, {
        agent: "a",
        token: "x",
        code: "Bad Code",
      });
      assertEquals(bad.status, 400);
      assertEquals(await errorCode(bad), "invalid-body");
      const page = await (await p.owner.request("/jobs")).text();
      assert(page.includes("tap-unavailable: Failed to retrieve TAP"), "the jobs page shows the last error");
      const retried = await p.owner.json(`/api/v1/jobs/${first!.job.id}/retry`, {});
      assertEquals((await retried.json()).job.state, "queued");
      const notRetryable = await p.owner.json(`/api/v1/jobs/${first!.job.id}/retry`, {});
      assertEquals(notRetryable.status, 409);
      assertEquals(await errorCode(notRetryable), "not-retryable");
      assertEquals((await p.owner.request("/api/v1/jobs/999999")).status, 404);
      const audit = await (await p.owner.request("/audit")).text();
      assert(
        audit.includes("job.retry") && audit.includes("owner@contoso.test/a"),
        "the audit page lists who did what",
      );
      const csv = await p.owner.request("/api/v1/users/import", {
        method: "POST",
        body: "objectId,userPrincipalName\r\nobj-9,\r\n",
        headers: { "content-type": "text/csv" },
        csrf: true,
      });
      assertEquals(csv.status, 400);
      assert((await csv.json()).error.message.includes("row 2"));
    },
  );

  await t.step("the users page over 100,000 users: every user once, in order, by keyset pages", async () => {
    await using p = await openPanel(backend, "users_100k");
    await seedUsers(p.store, 100_000);
    const seen: string[] = [];
    let path: string | null = "/users?limit=500";
    let pages = 0;
    while (path !== null) {
      const answer = await p.owner.request(path);
      assertEquals(answer.status, 200);
      const html = await answer.text();
      seen.push(...[...html.matchAll(/data-sign-in="([^"]+)"/g)].map((m) => m[1]!));
      const next = /<a rel="next" href="([^"]+)"/.exec(html)?.[1];
      path = next === undefined ? null : next.replaceAll("&amp;", "&");
      pages++;
    }
    assertEquals(pages, 200);
    assertEquals(seen.length, 100_000);
    assertEquals(new Set(seen).size, 100_000);
    deepStrictEqual(seen.slice(0, 2), ["user000001@contoso.test", "user000002@contoso.test"]);
    assertEquals(seen.at(-1), "user100000@contoso.test");
    assert(seen.every((name, i) => i === 0 || seen[i - 1]! < name), "pages are in sign-in order");
    const search = await (await p.owner.request("/users?prefix=USER09999")).text();
    deepStrictEqual(
      [...search.matchAll(/data-sign-in="([^"]+)"/g)].map((m) => m[1]),
      Array.from({ length: 10 }, (_, i) => `user09999${i}@contoso.test`),
    );
  });
}

Deno.test("panel server on the embedded database (SQLite)", async (t) => {
  await withSqlite((backend) => suite(t, backend));
});

Deno.test("panel server on PostgreSQL (a throwaway cluster on 127.0.0.1)", async (t) => {
  await withPostgres((backend) => suite(t, backend));
});

Deno.test("the panel refuses to serve off loopback without TLS, and serves TLS with Secure, __Host- cookies", async () => {
  await withSqlite(async (backend) => {
    await using store = await openTestStore(await backend.fresh("tls"));
    const refused = await rejects(
      startPanel({ store, listen: { hostname: "0.0.0.0", port: 0 } }),
      ProvisioningError,
    );
    assertEquals(refused.code, "panel-needs-tls");
    const insecure = await rejects(
      startPanel({
        store,
        listen: { port: 0 },
        providerSignIn: { provider: "entra", issuer: "http://login.example.com/t/v2.0", clientId: "c" },
      }),
      ProvisioningError,
    );
    assertEquals(insecure.code, "panel-provider-insecure");
    const dir = await Deno.makeTempDir({ prefix: "provisioning-panel-tls-" });
    try {
      const made = await new Deno.Command("openssl", {
        args: [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-days",
          "1",
          "-subj",
          "/CN=127.0.0.1",
          "-addext",
          "subjectAltName=IP:127.0.0.1",
          "-addext",
          "basicConstraints=critical,CA:FALSE",
          "-keyout",
          `${dir}/key.pem`,
          "-out",
          `${dir}/cert.pem`,
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert(made.success, new TextDecoder().decode(made.stderr));
      const cert = await Deno.readTextFile(`${dir}/cert.pem`);
      const key = await Deno.readTextFile(`${dir}/key.pem`);
      await using panel = await startPanel({
        store,
        listen: { port: 0, tls: { cert, key } },
        print: () => {},
      });
      assert(panel.url.startsWith("https://127.0.0.1:"));
      using client = Deno.createHttpClient({ caCerts: [cert] });
      const browser = new PanelClient(panel.url, client);
      const shown = await browser.request(panel.bootstrapLink!);
      const token = /name="token" value="([^"]+)"/.exec(await shown.text())![1]!;
      const signedIn = await browser.form("/bootstrap", { token, signInName: "owner@contoso.test" });
      assertEquals(signedIn.status, 303);
      const cookie = signedIn.headers.get("set-cookie")!;
      assert(cookie.startsWith("__Host-provisioning-panel="), cookie);
      for (const attribute of ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"]) {
        assert(cookie.split("; ").includes(attribute), `${attribute} in ${cookie.replace(/=[^;]+/, "=…")}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("servePanel (the CLI's entry) opens the database, serves until aborted, then closes", async () => {
  await withSqlite(async (backend) => {
    const database = await backend.fresh("serve");
    const lines: string[] = [];
    const stop = new AbortController();
    const { promise: listening, resolve } = Promise.withResolvers<string>();
    const print = (line: string) => {
      lines.push(line);
      const url = /^Panel at (\S+)/.exec(line)?.[1];
      if (url !== undefined) resolve(url);
    };
    const running = servePanel({ database, port: 0, signal: stop.signal, print });
    const url = await listening;
    assert(lines[0]!.includes("/bootstrap?token="), "the first-run link is printed before the address");
    assertEquals((await fetch(new URL("/api/v1/openapi.json", url)).then((r) => r.json())).info.version, "1");
    stop.abort();
    await running;
    await rejects(fetch(new URL("/", url)), TypeError, "the panel stopped listening");
    const halfTls = await rejects(
      servePanel({ database, port: 0, certFile: "/tmp/cert.pem", signal: stop.signal }),
      ProvisioningError,
    );
    assertEquals(halfTls.exitCode, 2);
  });
});

Deno.test("an admin signs in with the provider (the sandbox tenant): authorization code + PKCE, admins only", async () => {
  const app = {
    clientId: crypto.randomUUID(),
    displayName: "provisioning panel (test)",
    secret: "panel-test-secret-0123456789",
    redirectUris: ["http://127.0.0.1/auth/callback"],
    applicationPermissions: [],
    allowPublicClient: false,
  };
  await using sandbox = await startSandbox({ users: 2, oauth: { apps: [app] } });
  await withSqlite(async (backend) => {
    await using store = await openTestStore(await backend.fresh("provider"));
    await using panel = await startPanel({
      store,
      listen: { port: 0 },
      print: () => {},
      providerSignIn: {
        provider: "Microsoft Entra",
        issuer: `${sandbox.url}/${sandbox.tenantId}/v2.0`,
        clientId: app.clientId,
        clientSecret: app.secret,
      },
    });
    const browser = new PanelClient(panel.url);
    assert((await (await browser.request("/")).text()).includes('href="/auth/sign-in"'));
    /** The browser's round trip: the panel's redirect, the provider's sign-in, the callback. */
    const signIn = async (flowCookie?: string) => {
      const started = await browser.request("/auth/sign-in");
      assertEquals(started.status, 303);
      const flow = started.headers.get("set-cookie")!.split(";")[0]!;
      assert(started.headers.get("set-cookie")!.includes("SameSite=Lax"));
      const authorizeUrl = started.headers.get("location")!;
      const params = new URL(authorizeUrl).searchParams;
      deepStrictEqual([params.get("code_challenge_method"), params.get("client_id")], ["S256", app.clientId]);
      const approved = await fetch(`${sandbox.url}/_sandbox/authorize/approve`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ authorizeUrl, ...sandbox.admin }),
      });
      const { location } = await approved.json();
      assert(location.startsWith(`${panel.url}auth/callback?`), location);
      lastCallback = { location, flow };
      return await fetch(location, { headers: { cookie: flowCookie ?? flow }, redirect: "manual" });
    };
    let lastCallback = { location: "", flow: "" };
    // Not an admin of this panel yet: refused.
    const stranger = await signIn();
    assertEquals(stranger.status, 403);
    assert((await stranger.text()).includes('data-code="not-an-admin"'));
    // Without the browser's flow cookie (a callback link sent to someone else): refused.
    const unbound = await signIn("provisioning-panel-flow=someone-elses");
    assertEquals(unbound.status, 400);
    await unbound.body?.cancel();
    // The owner adds the account as an admin; the provider's sign-in now starts a session.
    await store.auth.createAdmin({
      signInName: sandbox.admin.userPrincipalName.toUpperCase(),
      role: "admin",
      actor: "owner",
      at: Date.now(),
    });
    const signedIn = await signIn();
    assertEquals(signedIn.status, 303);
    assertEquals(signedIn.headers.get("location"), "/users");
    browser.cookie = signedIn.headers.getSetCookie().find((c) => c.startsWith("provisioning-panel="))!.split(
      ";",
    )[0]!;
    const session = await (await browser.request("/api/v1/session")).json();
    deepStrictEqual([session.admin.role, session.kind], ["admin", "session"]);
    // The callback cannot be replayed, even with its flow cookie.
    const replay = await fetch(lastCallback.location, {
      headers: { cookie: lastCallback.flow },
      redirect: "manual",
    });
    assertEquals(replay.status, 400);
    await replay.body?.cancel();
  });
});
