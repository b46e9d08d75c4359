/**
 * What one user costs on the path admins run (issue 14): the CLI as a subprocess, exactly as
 * `deno task start` runs it, provisioning a CSV of users onto a software key vault on disk, against
 * the Entra sandbox in a process of its own (`scripts/_bench_sandbox.ts`).
 *
 * ```sh
 * deno run -P=bench scripts/cli_bench.ts [--sizes 200] [--concurrency 1,8] [--latency 0,150]
 *   [--latency-users 50] [--repeat 1] [--no-resume] [--no-reference] [--by-id] [--cpu-prof DIR]
 * ```
 *
 * `--by-id` names the users by object id in users.csv (an `objectId` column), as the reference
 * client addresses them; without it, by UPN.
 *
 * The defaults take about three minutes on a busy two-core machine. Issue 14's sizes are
 * `--sizes 1000,10000`: 1,000 users take about six minutes there today (the vault is rewritten
 * whole on every key operation), and 10,000 cannot run until the software key's limit of 1,000
 * discoverable credentials becomes a setting. `--cpu-prof DIR` hands the CLI `--cpu-prof` (read the
 * profiles with `scripts/profile_summary.ts`).
 *
 * Each run gets a fresh sandbox (no user has a passkey yet), a fresh working folder under /tmp
 * holding a vault made by `provisioning key init` (default KDF, as an admin's) and `users.csv`
 * (one UPN column, as an Entra export), then times:
 *
 * `deno run -q --v8-flags=… -P=cli main.ts provision --csv users.csv --vault key.vault --concurrency C`
 *
 * wrapped in GNU `/usr/bin/time`, whose numbers are the kernel's rusage of that one child: user +
 * system CPU, peak RSS (`ru_maxrss`, the same figure as VmHWM) and file-system output blocks
 * (`ru_oublock`, i.e. `/proc/<pid>/io` write_bytes / 512: pages dirtied, so a small append that is
 * fsynced counts a whole 4 KiB page). Deno refuses `/proc/<pid>` reads without `--allow-all`, and a
 * child's `/proc` entry is gone once it is reaped, so the rusage that `wait4` hands the parent is
 * the way to get the child's totals. Requests are counted inside the sandbox process; start-up is
 * the time from spawning the CLI to the sandbox's first request (both clocks are the machine's).
 *
 * Runs at latency 0 use every `--sizes` size; runs with added latency (the sandbox's `latencyMs`
 * fault: every Graph request is held that long, OAuth requests are not) use `--latency-users`
 * users, since round trips, not users, are what they measure. After the runs at latency 0 of each
 * size, the last one is run again in the same folder: a resume with every user done, whose RSS
 * and time are those of reopening that many finished users.
 *
 * When `test/reference/graph_reference_client.ts` exists, a sequential reference client (written
 * from Microsoft's documentation, `registerPasskeysSequentially`) registers the same number of
 * users on a fresh sandbox at each latency, in this process, on a software key vault of its own;
 * the table shows ours / reference in users per second. Otherwise it says "reference client not
 * present". Ours is measured end to end (process start, vault key derivation and sign-in
 * included), the reference's loop only; `after start-up` shows our rate without the start-up, which
 * matters at small sizes.
 *
 * The machine these numbers come from is shared (two cores, other work running): the `invol.`
 * column (involuntary context switches of the CLI) shows how much it had to wait for a core. Use
 * `--repeat 2` for the measurement that matters.
 *
 * @module
 */
import { CLI_V8_FLAGS } from "./compile.ts";
import type { BenchSandboxCounts, BenchSandboxInfo } from "./_bench_sandbox.ts";
import { measureReference, type ReferenceResult } from "./_bench_reference.ts";

const root = new URL("..", import.meta.url).pathname;
const pin = "482916";
const passphrase = "cli bench passphrase";

/** Issue 14's goals, printed beside the results. */
export const GOALS = {
  cpuMsPerUser: 2,
  bytesPerUser: 4096,
  rssMbAt10k: 100,
  resumeMbAt1M: 200,
  startupSeconds: 0.25,
} as const;

/** One timed CLI run. */
export interface CliRunResult {
  label: string;
  users: number;
  concurrency: number;
  latencyMs: number;
  exitCode: number;
  /** Users holding exactly one verified passkey at the sandbox after the run. */
  verified: number;
  seconds: number;
  cpuSeconds: number;
  outputBytes: number;
  peakRssMb: number;
  involuntarySwitches: number;
  requests: number;
  /** Seconds from spawning the CLI to the sandbox's first request. */
  startupSeconds: number | null;
  counts: BenchSandboxCounts;
  stderrTail: string;
}

interface Options {
  sizes: number[];
  concurrency: number[];
  latency: number[];
  latencyUsers: number;
  repeat: number;
  resume: boolean;
  reference: boolean;
  /** users.csv names users by object id (an `objectId` column) instead of UPN. */
  byId: boolean;
  cpuProfDir: string | undefined;
}

function parseOptions(args: string[]): Options {
  const options: Options = {
    sizes: [200],
    concurrency: [1, 8],
    latency: [0, 150],
    latencyUsers: 50,
    repeat: 1,
    resume: true,
    reference: true,
    byId: false,
    cpuProfDir: undefined,
  };
  const numbers = (flag: string, value: string | undefined) => {
    const list = (value ?? "").split(",").map(Number);
    if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 0)) {
      throw new Error(`${flag} needs a comma-separated list of whole numbers, not "${value}"`);
    }
    return list;
  };
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!;
    const value = () => args[++i];
    if (flag === "--sizes") options.sizes = numbers(flag, value());
    else if (flag === "--concurrency") options.concurrency = numbers(flag, value());
    else if (flag === "--latency") options.latency = numbers(flag, value());
    else if (flag === "--latency-users") options.latencyUsers = numbers(flag, value())[0]!;
    else if (flag === "--repeat") options.repeat = Math.max(1, numbers(flag, value())[0]!);
    else if (flag === "--no-resume") options.resume = false;
    else if (flag === "--no-reference") options.reference = false;
    else if (flag === "--by-id") options.byId = true;
    else if (flag === "--cpu-prof") options.cpuProfDir = value();
    else {
      throw new Error(
        `Unknown option "${flag}". Options: --sizes, --concurrency, --latency, --latency-users, --repeat, ` +
          "--no-resume, --no-reference, --by-id, --cpu-prof DIR",
      );
    }
  }
  return options;
}

/** A sandbox process of its own; closing its stdin stops it. */
export async function startBenchSandbox(users: number, latencyMs: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      `--config=${root}deno.json`,
      "-P=bench",
      `${root}scripts/_bench_sandbox.ts`,
      String(users),
      String(latencyMs),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`The bench sandbox (${users} users) ended before it listened`);
    text += value;
  }
  const info = JSON.parse(text.slice(0, text.indexOf("\n"))) as BenchSandboxInfo;
  const drain = (async () => {
    while (!(await reader.read()).done) { /* the sandbox prints nothing more */ }
  })();
  return {
    info,
    /** Forgets the first request's time: the next run's start-up is measured afresh. */
    async arm(): Promise<void> {
      await (await fetch(`${info.control}/arm`, { method: "POST" })).body?.cancel();
    },
    async counts(): Promise<BenchSandboxCounts> {
      return await (await fetch(`${info.control}/counts`)).json() as BenchSandboxCounts;
    },
    async [Symbol.asyncDispose]() {
      await child.stdin.close();
      await child.status;
      await drain.catch(() => {});
    },
  };
}

function cliEnvironment(info: BenchSandboxInfo): Record<string, string> {
  return {
    PROVISIONING_SANDBOX: info.url,
    PROVISIONING_TENANT: info.tenantId,
    PROVISIONING_CLIENT_ID: info.clientId,
    PROVISIONING_CLIENT_SECRET: info.clientSecret,
    PROVISIONING_VAULT_PASSPHRASE: passphrase,
    PROVISIONING_KEY_PIN: pin,
  };
}

/** The deno command line `deno task start` uses, for a working folder outside the checkout. */
function cliArgs(dir: string, extraDenoFlags: string[], args: string[]): string[] {
  return [
    "run",
    "-q",
    `--v8-flags=${CLI_V8_FLAGS}`,
    `--config=${root}deno.json`,
    "-P=cli",
    `--allow-read=${dir}`,
    `--allow-write=${dir}`,
    ...extraDenoFlags,
    `${root}main.ts`,
    ...args,
  ];
}

/** `provisioning key init` in `dir`: a fresh vault with the default KDF and the bench's PIN. */
async function initVault(dir: string, info: BenchSandboxInfo): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: cliArgs(dir, [], ["key", "init", "--vault", "key.vault", "--set-pin"]),
    cwd: dir,
    clearEnv: true,
    env: cliEnvironment(info),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (output.code !== 0) {
    throw new Error(`key init in ${dir} failed: ${new TextDecoder().decode(output.stderr).slice(-1000)}`);
  }
}

async function writeUsersCsv(
  path: string,
  info: BenchSandboxInfo,
  users: number,
  byId: boolean,
): Promise<void> {
  const refs = info.users.slice(0, users).map((u) => byId ? u.id : u.upn);
  if (refs.length < users) throw new Error(`The sandbox seeded ${refs.length} users, not ${users}`);
  await Deno.writeTextFile(path, [byId ? "objectId" : "upn", ...refs, ""].join("\n"));
}

/** GNU time's `-f` format: elapsed, user, system, max RSS KiB, output blocks, involuntary switches. */
const timeFormat = "%e %U %S %M %O %c";

/** Runs `provision` once in `dir` under /usr/bin/time and collects what the sandbox saw. */
async function timedProvision(
  dir: string,
  sandbox: Awaited<ReturnType<typeof startBenchSandbox>>,
  run: {
    label: string;
    users: number;
    concurrency: number;
    latencyMs: number;
    cpuProfDir?: string | undefined;
  },
): Promise<CliRunResult> {
  await sandbox.arm();
  const before = await sandbox.counts();
  const timeFile = `${dir}/time-${crypto.randomUUID()}.txt`;
  const profile = run.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${run.cpuProfDir}`] : [];
  const spawnedAt = performance.timeOrigin + performance.now();
  const output = await new Deno.Command("/usr/bin/time", {
    args: [
      "-f",
      timeFormat,
      "-o",
      timeFile,
      Deno.execPath(),
      ...cliArgs(dir, profile, [
        "provision",
        "--csv",
        "users.csv",
        "--vault",
        "key.vault",
        "--concurrency",
        String(run.concurrency),
      ]),
    ],
    cwd: dir,
    clearEnv: true,
    env: cliEnvironment(sandbox.info),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wall = (performance.timeOrigin + performance.now() - spawnedAt) / 1000;
  const after = await sandbox.counts();
  const timeLine = (await Deno.readTextFile(timeFile)).trim().split("\n").at(-1) ?? "";
  const [elapsed, user, system, maxRssKb, blocks, involuntary] = timeLine.split(" ").map(Number);
  if (involuntary === undefined || Number.isNaN(involuntary)) {
    throw new Error(
      `Cannot read /usr/bin/time's output "${timeLine}" (GNU time is needed: apt-get install time)`,
    );
  }
  const firstRequest = after.firstRequestAt;
  return {
    ...run,
    exitCode: output.code,
    verified: after.usersWithOnePasskey,
    seconds: elapsed || wall,
    cpuSeconds: user! + system!,
    outputBytes: blocks! * 512,
    peakRssMb: maxRssKb! / 1024,
    involuntarySwitches: involuntary,
    requests: after.requests - before.requests,
    startupSeconds: firstRequest === null ? null : (firstRequest - spawnedAt) / 1000,
    counts: subtractCounts(after, before),
    stderrTail: new TextDecoder().decode(output.stderr).slice(-1500),
  };
}

function subtractCounts(after: BenchSandboxCounts, before: BenchSandboxCounts): BenchSandboxCounts {
  const minus = (a: Record<string, number>, b: Record<string, number>) =>
    Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b[k] ?? 0)]).filter(([, v]) => v !== 0));
  return {
    ...after,
    requests: after.requests - before.requests,
    byPath: minus(after.byPath, before.byPath),
    graphCalls: minus(after.graphCalls, before.graphCalls),
  };
}

/** One provisioning run on a fresh sandbox and folder; then, if asked, the resume of it. */
async function provisionRun(
  users: number,
  concurrency: number,
  latencyMs: number,
  options: { resume: boolean; cpuProfDir: string | undefined; repetition: number; byId: boolean },
): Promise<CliRunResult[]> {
  await using sandbox = await startBenchSandbox(users, latencyMs);
  const dir = await Deno.makeTempDir({ prefix: "cli-bench-" });
  try {
    await initVault(dir, sandbox.info);
    await writeUsersCsv(`${dir}/users.csv`, sandbox.info, users, options.byId);
    const tag = options.repetition > 0 ? ` #${options.repetition + 1}` : "";
    const results = [
      await timedProvision(dir, sandbox, {
        label: `provision${tag}`,
        users,
        concurrency,
        latencyMs,
        cpuProfDir: options.cpuProfDir,
      }),
    ];
    if (options.resume) {
      results.push(
        await timedProvision(dir, sandbox, {
          label: `resume (all done)${tag}`,
          users,
          concurrency,
          latencyMs,
        }),
      );
    }
    return results;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const fixed = (n: number, digits: number) => Number.isFinite(n) ? n.toFixed(digits) : "-";

/** The table's columns, with the goal each is held against. */
const columns = [
  "run",
  "users",
  "conc",
  "lat ms",
  "users/s",
  "after start-up",
  "CPU ms/user",
  "KB written/user",
  "peak RSS MB",
  "req/user",
  "start-up s",
  "invol.",
  "verified",
  "ours/ref",
] as const;

function row(r: CliRunResult, reference: ReferenceResult | string | undefined): string[] {
  const usersPerSecond = r.users / r.seconds;
  const ratio = reference === undefined
    ? "-"
    : typeof reference === "string"
    ? "n/a"
    : r.label.startsWith("resume")
    ? "-"
    : fixed(usersPerSecond / (reference.users / reference.seconds), 2);
  return [
    r.exitCode === 0 ? r.label : `${r.label} (exit ${r.exitCode})`,
    String(r.users),
    String(r.concurrency),
    String(r.latencyMs),
    fixed(usersPerSecond, 1),
    r.startupSeconds === null ? "-" : fixed(r.users / (r.seconds - r.startupSeconds), 1),
    fixed((r.cpuSeconds * 1000) / r.users, 1),
    fixed(r.outputBytes / 1024 / r.users, 1),
    fixed(r.peakRssMb, 0),
    fixed(r.requests / r.users, 2),
    r.startupSeconds === null ? "-" : fixed(r.startupSeconds, 2),
    String(r.involuntarySwitches),
    `${r.verified}/${r.users}`,
    ratio,
  ];
}

function referenceRow(ref: ReferenceResult): string[] {
  return [
    "reference (sequential, in-process)",
    String(ref.users),
    "1",
    String(ref.latencyMs),
    fixed(ref.users / ref.seconds, 1),
    "-",
    fixed((ref.cpuSeconds * 1000) / ref.users, 1),
    "-",
    "-",
    fixed(ref.requests / ref.users, 2),
    "-",
    "-",
    `${ref.verified}/${ref.users}`,
    "1.00",
  ];
}

/** Renders rows as an aligned plain-text table. */
export function renderTable(headings: readonly string[], rows: string[][]): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(headings), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

function goalLines(results: CliRunResult[], references: ReferenceResult[]): string[] {
  const runs = results.filter((r) => r.label.startsWith("provision") && r.exitCode === 0);
  const worst = (pick: (r: CliRunResult) => number) => Math.max(...runs.map(pick));
  const lines: string[] = [];
  const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
  if (runs.length > 0) {
    const cpu = worst((r) => (r.cpuSeconds * 1000) / r.users);
    const bytes = worst((r) => r.outputBytes / r.users);
    const startup = Math.min(...runs.map((r) => r.startupSeconds ?? Infinity));
    lines.push(
      `CPU per user: worst ${fixed(cpu, 1)} ms; goal <= ${GOALS.cpuMsPerUser} ms: ${verdict(cpu <= 2)}`,
    );
    lines.push(
      `bytes written per user: worst ${fixed(bytes / 1024, 1)} KB; goal <= ${GOALS.bytesPerUser / 1024} KB: ${
        verdict(bytes <= GOALS.bytesPerUser)
      }`,
    );
    const big = runs.filter((r) => r.users >= 10_000);
    lines.push(
      big.length === 0
        ? `peak RSS at 10,000 users: not run (--sizes 10000); goal <= ${GOALS.rssMbAt10k} MB`
        : `peak RSS at 10,000 users: ${
          fixed(Math.max(...big.map((r) => r.peakRssMb)), 0)
        } MB; goal <= ${GOALS.rssMbAt10k} MB: ${
          verdict(Math.max(...big.map((r) => r.peakRssMb)) <= GOALS.rssMbAt10k)
        }`,
    );
    lines.push(
      `start-up to first request: best ${fixed(startup, 2)} s; goal <= ${GOALS.startupSeconds} s: ${
        verdict(startup <= GOALS.startupSeconds)
      }`,
    );
  }
  const resumes = results.filter((r) => r.label.startsWith("resume"));
  lines.push(
    `resume of 1,000,000 users: goal <= ${GOALS.resumeMbAt1M} MB; not run here (a million users take hours); ` +
      (resumes.length === 0
        ? "no resume measured"
        : `resume of ${resumes.map((r) => `${r.users} done users: ${fixed(r.peakRssMb, 0)} MB`).join(", ")}`),
  );
  for (const latency of new Set(runs.map((r) => r.latencyMs))) {
    const ref = references.find((x) => x.latencyMs === latency);
    if (!ref) continue;
    const refRate = ref.users / ref.seconds;
    for (const r of runs.filter((x) => x.latencyMs === latency)) {
      const goal = r.concurrency === 1 ? 1 : r.concurrency >= 8 ? 5 : undefined;
      if (goal === undefined) continue;
      const ratio = r.users / r.seconds / refRate;
      lines.push(
        `ours/reference at ${latency} ms, concurrency ${r.concurrency}, ${r.users} users: ${
          fixed(ratio, 2)
        }; ` +
          `goal >= ${goal}${latency === 150 ? "" : " (the issue sets it at 150 ms)"}: ${
            verdict(ratio >= goal)
          }`,
      );
    }
  }
  return lines;
}

function requestLines(results: CliRunResult[]): string[] {
  return results.map((r) => {
    const graph = Object.entries(r.counts.graphCalls).sort((a, b) => b[1] - a[1])
      .map(([route, n]) => `${route} ${n >= r.users ? fixed(n / r.users, 2) : `(${n} in all)`}`);
    const oauth = Object.entries(r.counts.byPath).filter(([path]) => !/ \/(v1\.0|beta)\//.test(path))
      .map(([path, n]) => `${path} ${n}`);
    return `${r.label} (${r.users} users, conc ${r.concurrency}, ${r.latencyMs} ms): per user ${
      graph.join("; ")
    }${oauth.length ? `; once per run: ${oauth.join("; ")}` : ""}`;
  });
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const results: CliRunResult[] = [];
  const references: ReferenceResult[] = [];
  let referenceAbsent: string | undefined;
  const rows: string[][] = [];
  const say = (text: string) => console.error(text);
  say(`CLI bench on ${navigator.hardwareConcurrency} cores; load average ${await loadAverage()}`);
  for (const latencyMs of options.latency) {
    const sizes = latencyMs === 0 ? options.sizes : [options.latencyUsers];
    let reference: ReferenceResult | string | undefined;
    if (options.reference) {
      say(`reference client, ${sizes[0]} users, ${latencyMs} ms …`);
      reference = await measureReference({
        users: sizes[0]!,
        latencyMs,
        pin,
        startSandbox: startBenchSandbox,
      });
      if (typeof reference === "string") referenceAbsent = reference;
      else {
        references.push(reference);
        rows.push(referenceRow(reference));
      }
    }
    for (const users of sizes) {
      for (const [index, concurrency] of options.concurrency.entries()) {
        for (let repetition = 0; repetition < options.repeat; repetition++) {
          say(`provision ${users} users, concurrency ${concurrency}, ${latencyMs} ms …`);
          const last = index === options.concurrency.length - 1;
          const runs = await provisionRun(users, concurrency, latencyMs, {
            resume: options.resume && latencyMs === 0 && last,
            cpuProfDir: options.cpuProfDir,
            repetition,
            byId: options.byId,
          });
          for (const r of runs) {
            results.push(r);
            const sameUsers = typeof reference === "object" && reference.users === users;
            rows.push(row(r, sameUsers ? reference : typeof reference === "string" ? reference : undefined));
            if (r.exitCode !== 0 || r.verified < users) say(`${r.label}: ${r.stderrTail}`);
          }
        }
      }
    }
  }
  console.log(renderTable(columns, rows));
  console.log(
    `\nGoals (issue 14): CPU <= ${GOALS.cpuMsPerUser} ms/user, bytes written <= ${
      GOALS.bytesPerUser / 1024
    } KB/user, RSS <= ${GOALS.rssMbAt10k} MB for 10,000 users, resume of 1,000,000 <= ${GOALS.resumeMbAt1M} MB, ` +
      `start-up <= ${GOALS.startupSeconds} s; ours/reference >= 1 at concurrency 1 and >= 5 at 8 (150 ms)`,
  );
  for (const line of goalLines(results, references)) console.log(`  ${line}`);
  if (referenceAbsent) console.log(`  ${referenceAbsent}`);
  console.log("\nRequests per user by route (Graph), and per run (OAuth):");
  for (const line of requestLines(results)) console.log(`  ${line}`);
  const failed = results.filter((r) => r.exitCode !== 0 || r.verified < r.users);
  if (failed.length > 0) {
    console.log(
      `\n${failed.length} run(s) did not end with exit 0 and every user verified: the figures above are not valid`,
    );
    Deno.exitCode = 1;
  }
  console.log(
    `\nMachine: ${navigator.hardwareConcurrency} cores, load average at the end ${await loadAverage()}; ` +
      "invol. = involuntary context switches of the CLI (time it waited for a core).",
  );
}

/** The 1, 5 and 15 minute load averages (`cat /proc/loadavg`: Deno.loadavg needs --allow-sys). */
export async function loadAverage(): Promise<string> {
  try {
    const output = await new Deno.Command("cat", { args: ["/proc/loadavg"], stdout: "piped" }).output();
    return new TextDecoder().decode(output.stdout).split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

if (import.meta.main) await main();
