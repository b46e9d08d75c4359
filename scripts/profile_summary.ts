/**
 * Where a CPU profile's time goes, by area of the code: reads a V8 `.cpuprofile` (what
 * `deno run --cpu-prof` writes, e.g. from `scripts/cli_bench.ts --cpu-prof DIR`) and prints the
 * self time grouped by area (vault, journal, zod, CBOR, HTTP …), the top functions by self time,
 * and the inclusive time of the functions that matter for issue 14 — per user when told how many.
 *
 * `deno run -R scripts/profile_summary.ts FILE.cpuprofile [--users N] [--top 25] [--until-ms N | --until-first-fetch]`
 *
 * `--until-first-fetch` keeps only what ran before the first `fetch`: a CLI run's start-up.
 *
 * Self time is exact per sample (V8 attributes each tick to the function on top of the stack).
 * Inclusive time follows synchronous stacks only: an async function's time after an `await`
 * counts where V8 resumed it, not in its caller.
 *
 * @module
 */

/** The parts of a `.cpuprofile` this reads (V8's Profiler.Profile). */
interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Areas of the code, first match wins: [name, test on the script URL or function]. */
const areas: [string, (url: string, fn: string) => boolean][] = [
  ["idle", (_u, f) => f === "(idle)"],
  ["garbage collector", (_u, f) => f === "(garbage collector)"],
  ["V8/runtime native (program)", (_u, f) => f === "(program)"],
  ["vault (software key storage)", (u) => /authenticators\/software\/vault/.test(u)],
  ["software key (CTAP2 authenticator)", (u) => /authenticators\/software\//.test(u)],
  ["journal", (u) => /core\/jobs\/journal/.test(u)],
  ["results/failures files", (u) => /core\/jobs\/output\//.test(u)],
  ["engine (core/jobs)", (u) => /core\/jobs\//.test(u)],
  [
    "progress/terminal/summary (core/cli)",
    (u) => /core\/cli\/(progress|terminal|summary|run_output)/.test(u),
  ],
  ["CLI (core/cli, main.ts)", (u) => /core\/cli\/|\/main\.ts$/.test(u)],
  ["logging (core/log.ts, logtape)", (u) => /core\/log\.ts|@logtape/.test(u)],
  ["zod", (u) => /\/zod@/.test(u)],
  ["CBOR (cborg, core/ctap/cbor)", (u) => /cborg@|core\/ctap\/cbor/.test(u)],
  ["CTAP2 client/PIN protocol (core/ctap)", (u) => /core\/ctap\//.test(u)],
  ["WebAuthn client (core/webauthn)", (u) => /core\/webauthn\//.test(u)],
  ["noble crypto (@noble/*)", (u) => /@noble\//.test(u)],
  ["WebCrypto (ext:deno_crypto)", (u) => /ext:deno_crypto/.test(u)],
  ["Entra Graph client (plugins/entra)", (u) => /plugins\/entra\//.test(u)],
  ["bytes/errors/atomic file (core/*.ts)", (u) => /\/core\/[a-z_]+\.ts$/.test(u)],
  [
    "HTTP client (ext:deno_fetch, ext:deno_net, ext:deno_http)",
    (u) => /ext:deno_(fetch|net|http|tls)/.test(u),
  ],
  ["file system (ext:deno_fs, ext:deno_io)", (u) => /ext:deno_(fs|io)/.test(u)],
  ["streams/encoding/url (ext:deno_web, ext:deno_url)", (u) => /ext:deno_(web|url|webidl)/.test(u)],
  ["node compat (ext:deno_node, node:)", (u) => /ext:deno_node|node:/.test(u)],
  ["other npm packages", (u) => /\/npm\/|registry\.npmjs/.test(u)],
  ["other runtime (ext:)", (u) => u.startsWith("ext:")],
  ["no script (builtins: JSON, RegExp, …)", (u) => u === ""],
];

/** Functions whose inclusive time is printed when present (by name). */
const watched = [
  "update",
  "write",
  "writeFileAtomically",
  "encryptState",
  "append",
  "flush",
  "parse",
  "safeParse",
  "stringify",
  "makeCredential",
  "create",
  "attemptUser",
  "provisionUser",
  "encodeCbor",
  "decodeCbor",
  "render",
];

/** Self and inclusive time per area and function. */
export interface ProfileSummary {
  totalMs: number;
  areas: [string, number][];
  top: { name: string; where: string; selfMs: number }[];
  inclusive: { name: string; where: string; ms: number }[];
}

/**
 * Milliseconds from the profile's start to the first sample inside `fetch` (Deno's
 * ext:deno_fetch): where a CLI run's first request leaves. Undefined when it never fetched.
 */
export function firstFetchMs(profile: CpuProfile): number | undefined {
  const { byId, parent } = indexNodes(profile);
  let clock = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    clock += (profile.timeDeltas[i] ?? 0) / 1000;
    for (let at: number | undefined = profile.samples[i]; at !== undefined; at = parent.get(at)) {
      if (byId.get(at)!.callFrame.url.startsWith("ext:deno_fetch")) return clock;
    }
  }
  return undefined;
}

function indexNodes(profile: CpuProfile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  return { byId, parent };
}

/** Summarises a parsed profile; `untilMs` stops at that many ms after the profile's start. */
export function summarise(
  profile: CpuProfile,
  options: { top?: number; untilMs?: number } = {},
): ProfileSummary {
  const { byId, parent } = indexNodes(profile);
  const self = new Map<number, number>();
  const inclusive = new Map<string, number>();
  let clock = 0;
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = (profile.timeDeltas[i] ?? 0) / 1000;
    clock += delta;
    if (options.untilMs !== undefined && clock > options.untilMs) break;
    const id = profile.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + delta);
    total += delta;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)!.callFrame;
      const key = `${frame.functionName}\u0000${frame.url}`;
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + delta);
    }
  }
  const areaTotals = new Map<string, number>();
  const functionTotals = new Map<string, { name: string; where: string; selfMs: number }>();
  for (const [id, ms] of self) {
    const frame = byId.get(id)!.callFrame;
    const area = areas.find(([, test]) => test(frame.url, frame.functionName))?.[0] ?? "other";
    areaTotals.set(area, (areaTotals.get(area) ?? 0) + ms);
    const where = shortUrl(frame.url);
    const key = `${frame.functionName}@${where}:${frame.lineNumber + 1}`;
    const entry = functionTotals.get(key) ??
      { name: frame.functionName || "(anonymous)", where: `${where}:${frame.lineNumber + 1}`, selfMs: 0 };
    entry.selfMs += ms;
    functionTotals.set(key, entry);
  }
  return {
    totalMs: total,
    areas: [...areaTotals].sort((a, b) => b[1] - a[1]),
    top: [...functionTotals.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, options.top ?? 25),
    inclusive: [...inclusive].map(([key, ms]) => {
      const [name, url] = key.split("\u0000") as [string, string];
      return { name, where: shortUrl(url), ms };
    }).filter((x) => watched.includes(x.name) && /^(core|authenticators|plugins|npm:)/.test(x.where))
      .sort((a, b) => b.ms - a.ms),
  };
}

function shortUrl(url: string): string {
  const npm = url.match(/registry\.npmjs\.org\/(@?[^/]+(?:\/[^/]+)?)\/([^/]+)\/(.*)$/);
  if (npm) return `npm:${npm[1]}@${npm[2]}/${npm[3]}`;
  const local = url.match(/\/((?:core|authenticators|plugins|scripts|test)\/.*|main\.ts)$/);
  if (local) return local[1]!;
  return url || "(native)";
}

if (import.meta.main) {
  const file = Deno.args[0];
  if (!file) {
    console.error(
      "Usage: profile_summary.ts FILE.cpuprofile [--users N] [--top N] [--until-ms N | --until-first-fetch]",
    );
    Deno.exit(2);
  }
  const flag = (name: string) => {
    const at = Deno.args.indexOf(name);
    return at < 0 ? undefined : Number(Deno.args[at + 1]);
  };
  const users = flag("--users");
  const profile = JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
  const untilMs = Deno.args.includes("--until-first-fetch") ? firstFetchMs(profile) : flag("--until-ms");
  if (untilMs !== undefined) console.log(`Up to ${untilMs.toFixed(0)} ms after the profile's start`);
  const summary = summarise(profile, {
    top: flag("--top") ?? 25,
    ...(untilMs === undefined ? {} : { untilMs }),
  });
  const busy = summary.totalMs - (summary.areas.find(([a]) => a === "idle")?.[1] ?? 0);
  const per = (ms: number) => users ? `  ${(ms / users).toFixed(2)} ms/user` : "";
  const pct = (ms: number) => `${((100 * ms) / busy).toFixed(1).padStart(5)} %`;
  console.log(
    `${file}: ${(summary.totalMs / 1000).toFixed(2)} s sampled, ${(busy / 1000).toFixed(2)} s not idle${
      users ? `, ${users} users` : ""
    }`,
  );
  console.log("\nSelf time by area (share of non-idle time):");
  for (const [area, ms] of summary.areas) {
    console.log(`  ${area.padEnd(58)} ${(ms / 1000).toFixed(2).padStart(7)} s ${pct(ms)}${per(ms)}`);
  }
  console.log("\nTop functions by self time:");
  for (const f of summary.top) {
    console.log(
      `  ${f.name.slice(0, 40).padEnd(40)} ${f.where.slice(-60).padEnd(60)} ${
        f.selfMs.toFixed(0).padStart(7)
      } ms${per(f.selfMs)}`,
    );
  }
  console.log("\nInclusive time of watched functions (synchronous stacks):");
  for (const f of summary.inclusive.slice(0, 30)) {
    console.log(
      `  ${f.name.padEnd(24)} ${f.where.slice(-70).padEnd(70)} ${f.ms.toFixed(0).padStart(7)} ms${per(f.ms)}`,
    );
  }
}
