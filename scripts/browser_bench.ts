/**
 * Speed and memory of the browser path: users per minute at concurrency 1, 2 and 4 through the
 * whole automatic flow (TAP, sign-in, Security info, bridge, Graph confirmation, TAP deletion)
 * against the sandbox, with one headless Chromium and one software key, and the browser's peak
 * memory: the sum of the resident set sizes of the Chromium process tree, sampled every 100 ms
 * with `ps` (which reads /proc).
 *
 * `deno run -P=bench scripts/browser_bench.ts [users per level, default 8] [--key-per-worker]`
 *
 * Needs: run the browser and `ps`, read the browser's path (finding it), read+write the temp
 * folder (the browser profile), net to 127.0.0.1 (sandbox and DevTools).
 *
 * @module
 */
import { parseAaguid } from "../core/aaguid.ts";
import { createAttestationChain } from "../authenticators/software/attestation.ts";
import { MemoryKeyStateStore, SoftwareAuthenticator } from "../authenticators/software/authenticator.ts";
import { defaultAaguid, newKeyState } from "../authenticators/software/state.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { launchBrowser } from "../core/browser/driver.ts";
import type { Authenticator, DirectoryUser, UserInteraction } from "../core/plugin.ts";
import { cloudFromSandbox } from "../plugins/entra/cloud.ts";
import { GraphClient } from "../plugins/entra/graph/client.ts";
import { EntraSession } from "../plugins/entra/session.ts";
import { startSandbox } from "../plugins/entra/sandbox/server.ts";
import { registerInBrowser } from "../plugins/entra/browser/register.ts";
import process from "node:process";

/**
 * Resident memory of a process and its descendants: `ps -eo pid=,ppid=,rss=` (procps reads
 * /proc; Deno itself may read /proc only with --allow-all). RSS counts pages shared between the
 * browser's processes once per process, so the sum is an upper bound.
 */
export async function processTreeMemory(rootPid: number): Promise<{ rss: number; processes: number }> {
  const output = await new Deno.Command("ps", {
    args: ["-eo", "pid=,ppid=,rss="],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  const rows = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) =>
    line.trim().split(/\s+/).map(Number)
  );
  const tree = new Set([rootPid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of rows) {
      if (pid !== undefined && ppid !== undefined && !tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  let rss = 0;
  for (const [pid, , kb] of rows) if (pid !== undefined && tree.has(pid)) rss += (kb ?? 0) * 1024;
  return { rss, processes: tree.size };
}

/**
 * CPU seconds used so far by a process tree, live processes only (`ps -o times=`, procps);
 * a helper that ended in between is missed, so the difference of two readings is a lower bound.
 */
export async function processTreeCpu(rootPid: number): Promise<number> {
  const output = await new Deno.Command("ps", {
    args: ["-eo", "pid=,ppid=,times="],
    stdout: "piped",
    stderr: "null",
  })
    .output();
  const rows = new TextDecoder().decode(output.stdout).trim().split("\n").map((line) =>
    line.trim().split(/\s+/).map(Number)
  );
  const tree = new Set([rootPid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of rows) {
      if (pid !== undefined && ppid !== undefined && !tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  let seconds = 0;
  for (const [pid, , cpu] of rows) if (pid !== undefined && tree.has(pid)) seconds += cpu ?? 0;
  return seconds;
}

async function softwareKey(pin: string): Promise<Authenticator> {
  const aaguid = parseAaguid(defaultAaguid);
  const state = newKeyState({
    aaguid,
    attestation: "packed",
    chain: await createAttestationChain({ aaguid }),
  });
  const device = new SoftwareAuthenticator(new MemoryKeyStateStore(state), {});
  await new Ctap2Client(device).setPin(pin);
  return { label: "bench key", device, [Symbol.asyncDispose]: () => Promise.resolve() };
}

function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MB`;
}

if (import.meta.main) {
  const perLevel = Number(Deno.args[0] ?? 8);
  // `--key-per-worker`: each concurrent worker has its own key, so ceremonies do not wait for one
  // another (one key does one ceremony at a time): what is left is the browser and the CPU.
  const keyPerWorker = Deno.args.includes("--key-per-worker");
  const levels = [1, 2, 4];
  const pin = "135790";
  await using sandbox = await startSandbox({ users: 1 + perLevel * levels.length, throttle: {} });
  const tokenResponse = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: sandbox.app.clientId,
      client_secret: sandbox.app.clientSecret,
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  const token = String((await tokenResponse.json()).access_token);
  await using session = new EntraSession({
    client: new GraphClient({ baseUrl: sandbox.url, token: () => Promise.resolve(token) }),
    cloud: cloudFromSandbox(sandbox.url),
  });
  const keys = await Promise.all([0, 1, 2, 3].map(() => softwareKey(pin)));
  const interaction: UserInteraction = {
    requestPin: () => Promise.resolve(pin),
    promptUserPresence() {},
  };
  const users: DirectoryUser[] = sandbox.inspect().users
    .filter((u) => /^user\d+@/.test(u.userPrincipalName))
    .map((u) => ({ id: u.id, userPrincipalName: u.userPrincipalName }));

  await using browser = await launchBrowser();
  let peak = { rss: 0, processes: 0 };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const now = await processTreeMemory(browser.pid);
      if (now.rss > peak.rss) peak = now;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();

  /** Per level: milliseconds spent from each step's start to the next step's (or the end). */
  let spans = new Map<string, number[]>();
  const register = async (user: DirectoryUser, key: Authenticator) => {
    const marks: [string, number][] = [["prepare", performance.now()]];
    await registerInBrowser({
      session,
      browser,
      user,
      authenticator: key,
      interaction,
      displayName: "Bench key",
      mode: "automatic",
      debugDir: false,
      onStep: (step) => marks.push([step, performance.now()]),
    });
    marks.push(["end", performance.now()]);
    for (let i = 0; i + 1 < marks.length; i++) {
      const [step, at] = marks[i]!;
      spans.set(step, [...(spans.get(step) ?? []), marks[i + 1]![1] - at]);
    }
  };

  const idle = await processTreeMemory(browser.pid);
  await register(users.shift()!, keys[0]!); // warm-up: first context, first page load
  console.log(`browser: ${browser.executablePath}, idle ${mb(idle.rss)} RSS (${idle.processes} processes)`);
  console.log("concurrency | users | seconds | users/minute | tool CPU ms/user | browser CPU ms/user");
  const stepTables: { concurrency: number; spans: Map<string, number[]> }[] = [];
  const rates: number[] = [];
  for (const concurrency of levels) {
    const batch = users.splice(0, perLevel);
    const queue = [...batch];
    spans = new Map();
    const cpu = process.cpuUsage();
    const browserCpu = await processTreeCpu(browser.pid);
    const start = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
      const key = keys[keyPerWorker ? worker : 0]!;
      for (let user = queue.shift(); user; user = queue.shift()) await register(user, key);
    }));
    const seconds = (performance.now() - start) / 1000;
    const used = process.cpuUsage(cpu);
    const browserUsed = await processTreeCpu(browser.pid) - browserCpu;
    rates.push(batch.length / seconds * 60);
    stepTables.push({ concurrency, spans });
    console.log(
      `${String(concurrency).padStart(11)} | ${String(batch.length).padStart(5)} | ${
        seconds.toFixed(1).padStart(7)
      } | ${(batch.length / seconds * 60).toFixed(1).padStart(12)} | ${
        ((used.user + used.system) / 1000 / batch.length).toFixed(0).padStart(16)
      } | ${(browserUsed * 1000 / batch.length).toFixed(0).padStart(19)}`,
    );
  }
  console.log(
    `concurrency ${levels.at(-1)} / concurrency 1: ${(rates.at(-1)! / rates[0]!).toFixed(2)}x (goal 3.5x)`,
  );
  // Where the seconds go: mean milliseconds per step (from its start to the next), per level.
  const steps = [...new Set(stepTables.flatMap((t) => [...t.spans.keys()]))];
  console.log(`step (mean ms) | ${stepTables.map((t) => `c=${t.concurrency}`.padStart(6)).join(" | ")}`);
  for (const step of steps) {
    const cells = stepTables.map((t) => {
      const values = t.spans.get(step) ?? [];
      return (values.length ? values.reduce((a, b) => a + b, 0) / values.length : 0).toFixed(0).padStart(6);
    });
    console.log(`${step.padEnd(14)} | ${cells.join(" | ")}`);
  }
  sampling = false;
  await sampler;
  const inspection = sandbox.inspect();
  const registered = inspection.users.filter((u) => u.passkeys.length === 1).length;
  console.log(
    `peak browser memory: ${
      mb(peak.rss)
    } RSS summed over its process tree (${peak.processes} processes; shared pages count once per process)`,
  );
  console.log(
    `registered ${registered} users, passes left: ${inspection.temporaryAccessPassesOutstanding}`,
  );
}
