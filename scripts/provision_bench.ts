/**
 * The bulk engine against the Entra sandbox's throttling, and its memory on a huge dry run:
 *
 * `deno run -P=bench scripts/provision_bench.ts [users] [write quota per 150 s] [dry-run rows]`
 *
 * 1. **Throughput under the limit.** A sandbox (in this process) seeded with `users` users
 *    (default 10,000) meters passkey registrations as Graph does: a token bucket of `quota` writes
 *    (default 3,000, Microsoft's per app and tenant) refilled over 150 s, i.e. 20 writes/s. The
 *    engine, as the CLI runs it (shared pacer, journal, output files, concurrency 8), provisions
 *    every user on a pile of in-memory software keys (one per user in flight, as with a station
 *    of security keys, each passkey checked with a test assertion). The theoretical minimum time is
 *    (users − quota) / (quota / 150 s): the bucket's initial tokens are free, the rest arrive at the
 *    refill rate. Printed: users/second, that as a fraction of the theoretical maximum (the goal is
 *    at least 0.9), and the throttling answers seen. About six minutes with the defaults.
 * 2. **Memory of a dry run.** The CLI dry-runs a CSV of `dry-run rows` users (default 1,000,000;
 *    a second sandbox holds them all, throttling off) and its peak resident set (VmHWM of the
 *    child process, sampled with `ps`) is printed at each quarter of the run and at its peak,
 *    against the goal: flat, under 200 MB.
 *
 * 3. **Memory of a resume.** A run of `resume users` (default 1,000,000) whose journal says every
 *    user is finished (a realistic `verified` line each, and for one in a thousand a revocation
 *    and a second `verified` line, as `revoke --run` and a re-run leave): the CLI, as a separate
 *    process, resumes it, writes every user's results.csv row again from the journal and skips
 *    them all. Printed: the time, the rows written, the peak RSS against the goal (under 200 MB).
 *    The journal is made the honest way: the CLI starts the run (so the run id and header are its
 *    own), is killed once its journal exists, and the bench appends the users' lines.
 *
 *    Measured on two cores shared with other work: 1,000,000 finished users (a 396 MB journal) in
 *    60 s, 1,000,000 rows written, RSS 154 / 153 / 173 / 180 MB at each quarter, peak 180 MB. Before
 *    (every user's record held, a row per write system call, a reaction left per source row on a
 *    long-lived promise): 315 s, flat at 176 MB until the source was read, then 736 MB.
 *
 * All parts take minutes with the defaults; pass smaller numbers to try it, `0` to skip one.
 *
 * Measured on two cores: 10,000 users in 351.5 s against a theoretical 350.0 s (fraction 1.00, 11
 * throttling answers in all); a 1,000,000-row dry run flat at 180–181 MB (RSS at each quarter),
 * peak 184 MB, 450 users/s with other work on the machine (547 users/s idle). Before the
 * duplicate tables were sized from the CSV's line count, the same run stepped 149 → 173 → 197 MB
 * with a 221 MB peak as the tables doubled. A 15,000-row dry run stays at 129–133 MB; without the
 * CLI's V8 flags (scripts/compile.ts) about 245 MB.
 *
 * @module
 */
import { runBulk } from "../core/jobs/engine.ts";
import { CLI_V8_FLAGS } from "./compile.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { AdaptivePacer } from "../core/jobs/rate.ts";
import { readUsersFromList } from "../core/jobs/sources/csv.ts";
import { formatAaguid } from "../core/aaguid.ts";
import type { AuthenticatorStation, PluginContext } from "../core/plugin.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";
import { type Sandbox, startSandbox } from "../plugins/entra/sandbox/server.ts";
import { newTestKey, scriptedUser, type TestKey } from "../test/software_key.ts";

const pin = "482916";

const root = new URL("..", import.meta.url).pathname;
const peakGoalMb = 200;

async function sandboxFor(users: number, throttle: Parameters<typeof startSandbox>[0]): Promise<Sandbox> {
  // Entra's real shapes (rp id login.microsoft.com, JWE challenges), as `provisioning sandbox` serves them.
  return await startSandbox({ users, ...throttle });
}

/** Runs the CLI in `dir`; resolves with its exit code, stderr tail and peak RSS in MB. */
async function cli(dir: string, sandbox: Sandbox, args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      // As `deno task start` and the compiled binary run it.
      `--v8-flags=${CLI_V8_FLAGS}`,
      `--config=${root}deno.json`,
      "-P=cli",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      `${root}main.ts`,
      ...args,
    ],
    cwd: dir,
    clearEnv: true,
    env: {
      PROVISIONING_SANDBOX: sandbox.url,
      PROVISIONING_TENANT: sandbox.tenantId,
      PROVISIONING_CLIENT_ID: sandbox.app.clientId,
      PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: "bench passphrase",
      PROVISIONING_KEY_PIN: "482916",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // RSS sampled with ps every 250 ms (Deno refuses /proc reads without --allow-all).
  const samples: number[] = [];
  let sampling = false;
  const sampler = setInterval(async () => {
    if (sampling) return;
    sampling = true;
    try {
      const ps = await new Deno.Command("ps", {
        args: ["-o", "rss=", "-p", String(child.pid)],
        stdout: "piped",
      })
        .output();
      const kb = Number(new TextDecoder().decode(ps.stdout).trim());
      if (kb > 0) samples.push(kb / 1024);
    } finally {
      sampling = false;
    }
  }, 250);
  const output = await child.output();
  clearInterval(sampler);
  const stderr = new TextDecoder().decode(output.stderr);
  return {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: stderr.slice(-2000),
    peakMb: Math.max(0, ...samples),
    /** RSS (MB) at a quarter, half and three quarters of the run, and at its end. */
    quartiles: [0.25, 0.5, 0.75, 1].map((q) => samples[Math.max(0, Math.ceil(q * samples.length) - 1)] ?? 0),
  };
}

/**
 * Part 1: the engine in this process, as the CLI runs it (shared pacer, journal, output files), on
 * an in-memory software key big enough for every user (a vault rewrites itself per credential).
 */
async function throughput(users: number, quota: number): Promise<void> {
  const windowSeconds = 150;
  const bucket = quota;
  const rate = quota / windowSeconds;
  await using sandbox = await sandboxFor(users, {
    throttle: { writesPerAppTenant: { limit: quota, windowSeconds } },
  });
  const dir = await Deno.makeTempDir({ prefix: "provision-bench-engine-" });
  const settings: Record<string, string> = {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_TENANT: sandbox.tenantId,
    PROVISIONING_CLIENT_ID: sandbox.app.clientId,
    PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
  };
  let throttledEpisodes = 0;
  const pacer = new AdaptivePacer({ onThrottled: () => throttledEpisodes++ });
  const cwd = Deno.cwd();
  Deno.chdir(dir); // the token cache lives in the working folder
  try {
    const context: PluginContext = {
      interaction: scriptedUser([pin]),
      env: (name) => settings[name],
      readSecret: () => Promise.reject(new Error("no secret")),
      notify: () => {},
      pacer,
    };
    await using session = await entraProvider.connect(context, {});
    // A pile of in-memory software keys, one per user in flight, each replaced after 250 users:
    // a key copies its whole state on every write, so one key holding 10,000 passkeys would make
    // this bench measure the key, not the engine against the limit.
    const station = softwareKeyPile(250);
    await using results = await openResultsFile(`${dir}/results.csv`, { fresh: true });
    await using failures = await openFailuresFile(`${dir}/failures.csv`, { fresh: true });
    await using journal = await openJournal(`${dir}/run.jsonl`, { runId: "bench", fingerprint: "bench" });
    const started = performance.now();
    const summary = await runBulk({
      runId: "bench",
      source: readUsersFromList(upnsOf(sandbox, users)),
      session,
      station,
      interaction: scriptedUser([pin]),
      displayName: "Bench key",
      concurrency: 8,
      journal,
      results,
      failures,
    });
    const seconds = (performance.now() - started) / 1000;
    const done = summary.counts.provisioned + summary.counts.reconciled;
    const ideal = Math.max(0, done - bucket) / rate;
    console.log(
      `bulk provisioning: ${done} of ${users} users in ${seconds.toFixed(1)} s = ${
        (done / seconds).toFixed(1)
      } users/s against a limit of ${rate} writes/s (bucket ${bucket}); theoretical minimum ${
        ideal.toFixed(1)
      } s; fraction of the maximum ${(ideal / seconds).toFixed(2)} (goal >= 0.9); ` +
        `throttling episodes ${throttledEpisodes}, 429 answers ${sandbox.inspect().throttled.total}; failed ${summary.counts.failed}`,
    );
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
}

/** Lends each user in flight a software key of its own (see the bench's throughput part). */
function softwareKeyPile(usersPerKey: number): AuthenticatorStation {
  const free: { key: TestKey; used: number }[] = [];
  return {
    async next() {
      const slot = free.pop() ?? { key: await newTestKey({ pin }), used: 0 };
      if (slot.used >= usersPerKey) {
        slot.key = await newTestKey({ pin });
        slot.used = 0;
      }
      slot.used++;
      const aaguid = formatAaguid((await slot.key.client.getInfo()).aaguid);
      return {
        authenticator: slot.key,
        interaction: scriptedUser([pin]),
        pin: undefined,
        pinSet: false,
        complete: () =>
          Promise.resolve({ device: slot.key.label, aaguid, pinSet: false, pinMustChange: false }),
        [Symbol.asyncDispose]: () => {
          free.push(slot);
          return Promise.resolve();
        },
      };
    },
  };
}

async function writeCsv(path: string, upns: Iterable<string>): Promise<void> {
  using file = await Deno.open(path, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  let chunk = "upn\n";
  for (const upn of upns) {
    chunk += `${upn}\n`;
    if (chunk.length > 1 << 20) {
      await file.write(encoder.encode(chunk));
      chunk = "";
    }
  }
  await file.write(encoder.encode(chunk));
}

function upnsOf(sandbox: Sandbox, n: number): string[] {
  return sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u)).slice(
    0,
    n,
  );
}

if (import.meta.main) {
  const users = Number(Deno.args[0] ?? 10_000);
  const quota = Number(Deno.args[1] ?? 3000);
  // 1,000,000 rows take about an hour against the sandbox on two cores (it answers ~950
  // requests/s, two per user); the RSS samples along the way show whether memory stays flat.
  const dryRows = Number(Deno.args[2] ?? 200_000);
  const dir = await Deno.makeTempDir({ prefix: "provision-bench-" });
  try {
    // Part 1: throughput against the write limit (engine in this process, the sandbox too).
    if (users > 0) await throughput(users, quota);
    // Part 2: memory of a dry run over a huge CSV.
    if (dryRows > 0) {
      await using sandbox = await sandboxFor(dryRows, { throttle: { enabled: false } });
      const init = await cli(dir, sandbox, ["key", "init", "--kdf-iterations", "100000", "--set-pin"]);
      if (init.code !== 0) throw new Error(`key init failed: ${init.stderr}`);
      await writeCsv(`${dir}/huge.csv`, upnsOf(sandbox, dryRows));
      const started = performance.now();
      const run = await cli(dir, sandbox, [
        "--csv",
        "huge.csv",
        "--dry-run",
        "--concurrency",
        "16",
        "--no-preflight",
      ]);
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `dry run: ${dryRows} rows in ${seconds.toFixed(0)} s (${(dryRows / seconds).toFixed(0)} users/s), ` +
          `CLI RSS at 1/4, 1/2, 3/4 and the end ${
            run.quartiles.map((mb) => mb.toFixed(0)).join(" / ")
          } MB, ` +
          `peak ${run.peakMb.toFixed(0)} MB (goal: flat, under ${peakGoalMb} MB) ${
            run.peakMb < peakGoalMb ? "met" : "NOT met"
          }; exit ${run.code}`,
      );
      if (run.code !== 0) console.log(run.stderr);
    }
    // Part 3: memory of resuming a huge finished run.
    const resumeUsers = Number(Deno.args[3] ?? 1_000_000);
    if (resumeUsers > 0) await resume(dir, resumeUsers);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Part 3; see the module documentation. */
async function resume(parent: string, users: number): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: parent, prefix: "resume-" });
  await using sandbox = await sandboxFor(25, { throttle: { enabled: false } });
  const init = await cli(dir, sandbox, ["key", "init", "--kdf-iterations", "100000", "--set-pin"]);
  if (init.code !== 0) throw new Error(`key init failed: ${init.stderr}`);
  const upn = (i: number) => `user${String(i).padStart(7, "0")}@contoso.sandbox`;
  await writeCsv(
    `${dir}/huge.csv`,
    (function* () {
      for (let i = 1; i <= users; i++) yield upn(i);
    })(),
  );
  // The CLI starts the run and is killed once its journal exists: the run id and header are its own.
  const starter = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      `--config=${root}deno.json`,
      "-P=cli",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      `${root}main.ts`,
      "--csv",
      "huge.csv",
      "--no-preflight",
    ],
    cwd: dir,
    clearEnv: true,
    env: {
      PROVISIONING_SANDBOX: sandbox.url,
      PROVISIONING_TENANT: sandbox.tenantId,
      PROVISIONING_CLIENT_ID: sandbox.app.clientId,
      PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
      PROVISIONING_VAULT: `${dir}/key.vault`,
      PROVISIONING_VAULT_PASSPHRASE: "bench passphrase",
      PROVISIONING_KEY_PIN: "482916",
    },
    stdout: "null",
    stderr: "null",
  }).spawn();
  let journal: string | undefined;
  while (journal === undefined) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    try {
      for (const entry of Deno.readDirSync(`${dir}/.provisioning/runs`)) {
        if (entry.name.endsWith(".jsonl")) journal = `${dir}/.provisioning/runs/${entry.name}`;
      }
    } catch {
      // Not yet.
    }
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  starter.kill("SIGKILL");
  await starter.status;
  // A line the kill cut short is cut off first (as the CLI would on reopening).
  {
    const text = await Deno.readTextFile(journal);
    await Deno.truncate(journal, new TextEncoder().encode(text.slice(0, text.lastIndexOf("\n") + 1)).length);
  }
  // Every user finished, as a run leaves them; one in a thousand revoked and provisioned again.
  {
    using file = await Deno.open(journal, { append: true });
    const encoder = new TextEncoder();
    let chunk = "";
    const at = new Date().toISOString();
    const verified = (i: number, method: string) =>
      JSON.stringify({
        t: "user",
        k: upn(i),
        s: "verified",
        row: i + 1,
        ref: upn(i),
        userId: crypto.randomUUID(),
        upn: upn(i),
        methodId: method,
        displayName: "Security key",
        credentialId: "x".repeat(43),
        aaguid: "6d44ba9b-f6ec-2e49-b930-0c8fe920cb73",
        at,
      }) + "\n";
    for (let i = 1; i <= users; i++) {
      chunk += verified(i, crypto.randomUUID());
      if (i % 1000 === 0) {
        chunk += JSON.stringify({ t: "user", k: upn(i), s: "revoked", at }) + "\n";
        chunk += verified(i, crypto.randomUUID());
      }
      if (chunk.length > 1 << 20) {
        await file.write(encoder.encode(chunk));
        chunk = "";
      }
    }
    await file.write(encoder.encode(chunk));
  }
  const size = (await Deno.stat(journal)).size;
  const started = performance.now();
  const run = await cli(dir, sandbox, ["--csv", "huge.csv", "--no-preflight"]);
  const seconds = (performance.now() - started) / 1000;
  let rows = -1; // the header
  for await (const chunk of (await Deno.open(`${dir}/results.csv`)).readable) {
    for (const byte of chunk) if (byte === 10) rows++;
  }
  console.log(
    `resume: ${users} finished users (journal ${(size / 2 ** 20).toFixed(0)} MB) in ${
      seconds.toFixed(0)
    } s, ` +
      `${rows} results rows, CLI RSS at 1/4, 1/2, 3/4 and the end ${
        run.quartiles.map((mb) => mb.toFixed(0)).join(" / ")
      } MB, peak ${run.peakMb.toFixed(0)} MB (goal: under ${peakGoalMb} MB) ${
        run.peakMb < peakGoalMb ? "met" : "NOT met"
      }; exit ${run.code}`,
  );
  if (run.code !== 0) console.log(run.stderr);
}
