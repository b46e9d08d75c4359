/**
 * Benchmark of the panel's store on both databases (not a test: it prints numbers).
 *
 * 1. Queue throughput: 1, 2 and 8 agents, each its own process and connection
 *    (test/support/queue_agent.ts), drain a queue of jobs (lease 10 at a time, complete each as
 *    verified, one audit row per change). Measured from the first lease to the last completion
 *    in the audit log, so process start-up is not counted.
 * 2. The users page: 100,000 users imported, then every page of 50 read by keyset (never OFFSET),
 *    each page with the user's newest job; time per page (mean, p50, p95, max) and of the import;
 *    then the same pages as the panel serves them: `GET /users` over HTTP on 127.0.0.1 with an
 *    owner's session, following each page's "Next page" link (store, HTML and HTTP together).
 *
 * SQLite runs with `synchronous = FULL` (each commit durable), and again with NORMAL for the queue;
 * PostgreSQL is a throwaway cluster with fsync on (the default), started and stopped by the script.
 *
 * Run: `deno run -P=bench scripts/queue_bench.ts [--jobs 2000] [--users 100000] [--pages-only]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { startPanel } from "../core/panel/server/mod.ts";
import { isPostgresUrl, type OpenedPanelStore, openPanelStore } from "../core/panel/store/mod.ts";
import { openPostgresDatabase } from "../core/panel/store/postgres.ts";
import { openSqliteDatabase } from "../core/panel/store/sqlite.ts";
import { startPostgres } from "../test/support/postgres.ts";
import { agentLines, seedUsers, spawnAgent } from "../test/support/panel_store.ts";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "2000" },
    users: { type: "string", default: "100000" },
    "pages-only": { type: "boolean", default: false },
  },
});
const jobCount = Number(values.jobs);
const userCount = Number(values.users);

interface Backend {
  readonly name: string;
  readonly synchronous?: "full" | "normal";
  fresh(label: string): Promise<string>;
}

async function throughput(backend: Backend, agents: number): Promise<number> {
  const database = await backend.fresh(`bench_${backend.synchronous ?? "full"}_${agents}`);
  {
    await using store = await openPanelStore({ database, synchronous: backend.synchronous ?? "full" });
    const users = await seedUsers(store, jobCount);
    await store.enqueue({ userIds: users, actor: "bench" });
  }
  const children = Array.from(
    { length: agents },
    (_, i) => spawnAgent(database, `agent-${i}`, { batch: 10, synchronous: backend.synchronous ?? "full" }),
  );
  await Promise.all(children.map((c, i) => agentLines(c, `agent-${i}`)));
  const db = isPostgresUrl(database)
    ? openPostgresDatabase(database, { maxConnections: 1 })
    : openSqliteDatabase(database);
  try {
    const [row] = await db.query(
      `SELECT min(CASE WHEN action = 'job.lease' THEN at END) AS first,
              max(CASE WHEN action = 'job.complete' THEN at END) AS last,
              sum(CASE WHEN action = 'job.complete' AND outcome = 'ok' THEN 1 ELSE 0 END) AS done
       FROM audit`,
    );
    const done = Number(row?.done);
    if (done !== jobCount) throw new Error(`Expected ${jobCount} completions, the audit log has ${done}`);
    return done / ((Number(row?.last) - Number(row?.first)) / 1000);
  } finally {
    await db.close();
  }
}

async function usersPage(backend: Backend): Promise<Record<string, string>> {
  const database = await backend.fresh("bench_users");
  await using store = await openPanelStore({ database });
  let started = performance.now();
  const ids = await seedUsers(store, userCount);
  const importMs = performance.now() - started;
  // Some users have jobs, as they would on a real panel.
  await store.enqueue({ userIds: ids.filter((_, i) => i % 10 === 0), actor: "bench" });
  const times: number[] = [];
  let cursor: string | null = null;
  let rows = 0;
  do {
    started = performance.now();
    const page: Awaited<ReturnType<typeof store.listUsers>> = await store.listUsers({ cursor, limit: 50 });
    times.push(performance.now() - started);
    rows += page.items.length;
    cursor = page.next;
  } while (cursor !== null);
  if (rows !== userCount) throw new Error(`Expected ${userCount} users across the pages, read ${rows}`);
  return {
    "import + read ids (s)": (importMs / 1000).toFixed(1),
    ...stats(times),
    ...Object.fromEntries(
      Object.entries(stats(await usersPageOverHttp(store))).map(([k, v]) => [`HTTP ${k}`, v]),
    ),
  };
}

/** Reads every users page as the panel serves it (GET /users, 50 a page, over HTTP) and times each. */
async function usersPageOverHttp(store: OpenedPanelStore): Promise<number[]> {
  const created = await store.auth.createAdmin({
    signInName: "bench",
    role: "owner",
    actor: "bench",
    at: Date.now(),
  });
  if (!created.created) throw new Error("Cannot create the bench's owner");
  const session = await store.auth.createSession({
    adminId: created.admin.id,
    at: Date.now(),
    ttlMs: 3600_000,
  });
  await using panel = await startPanel({ store, listen: { port: 0 }, print: () => {} });
  const headers = { cookie: `provisioning-panel=${session.token}` };
  const times: number[] = [];
  let rows = 0;
  let path: string | null = "/users?limit=50";
  while (path !== null) {
    const started = performance.now();
    const answer: Response = await fetch(new URL(path, panel.url), { headers, redirect: "manual" });
    const html: string = await answer.text();
    times.push(performance.now() - started);
    if (answer.status !== 200) throw new Error(`GET ${path} answered ${answer.status}`);
    rows += html.match(/data-sign-in=/g)?.length ?? 0;
    const next: string | undefined = /<a rel="next" href="([^"]+)"/.exec(html)?.[1];
    path = next === undefined ? null : next.replaceAll("&amp;", "&");
  }
  if (rows !== userCount) throw new Error(`Expected ${userCount} users across the HTTP pages, read ${rows}`);
  return times;
}

function stats(times: readonly number[]): Record<string, string> {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(2);
  return {
    pages: String(times.length),
    "mean ms/page": (times.reduce((a, b) => a + b, 0) / times.length).toFixed(2),
    "p50 ms": at(0.5),
    "p95 ms": at(0.95),
    "max ms": sorted.at(-1)!.toFixed(2),
    "last page ms": times.at(-1)!.toFixed(2),
  };
}

async function run(backend: Backend, options: { pages: boolean }): Promise<void> {
  if (values["pages-only"]) {
    if (options.pages) {
      console.log(`${backend.name}: users page, ${userCount} users, 50 a page, keyset`);
      console.table(await usersPage(backend));
    }
    return;
  }
  const rates: Record<string, string> = {};
  for (const agents of [1, 2, 8]) {
    rates[`${agents} agent(s), jobs/s`] = (await throughput(backend, agents)).toFixed(0);
  }
  console.log(`\n${backend.name}: queue throughput (${jobCount} jobs, lease 10 at a time)`);
  console.table(rates);
  if (!options.pages) return;
  console.log(`${backend.name}: users page, ${userCount} users, 50 a page, keyset`);
  console.table(await usersPage(backend));
}

const dir = await Deno.makeTempDir({ prefix: "provisioning-queue-bench-" });
try {
  const fresh = (l: string) => Promise.resolve(`${dir}/${l}.sqlite`);
  await run({ name: "SQLite (node:sqlite, WAL, synchronous=FULL)", fresh }, { pages: true });
  await run({ name: "SQLite (synchronous=NORMAL)", synchronous: "normal", fresh }, { pages: false });
} finally {
  await Deno.remove(dir, { recursive: true });
}
{
  await using cluster = await startPostgres({ fast: false });
  await run({ name: "PostgreSQL 15 (fsync on)", fresh: (l) => cluster.createDatabase(l) }, { pages: true });
}
console.log(
  `\n(${navigator.hardwareConcurrency} CPUs; load average ${await loadAverage()})`,
);

async function loadAverage(): Promise<string> {
  const out = await new Deno.Command("cat", { args: ["/proc/loadavg"], stdout: "piped", stderr: "null" })
    .output()
    .catch(() => null);
  return out?.success ? new TextDecoder().decode(out.stdout).split(" ").slice(0, 3).join(" ") : "unknown";
}
