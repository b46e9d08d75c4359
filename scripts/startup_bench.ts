/**
 * What the CLI's start-up is made of (issue 14: start-up ≤ 0.25 s to the first request): the
 * runtime's own start, the time to import each part of the program in a fresh process, and
 * `main.ts --help` end to end.
 *
 * `deno run -P=bench scripts/startup_bench.ts [--repeat 3]`
 *
 * Each figure is the median of `--repeat` fresh processes (module cache warm, as on an admin's
 * second run). An import's time includes everything it pulls in that is not loaded yet, so the
 * rows for parts are each measured alone: they overlap (zod is in most of them) and do not add up
 * to `main.ts`. Parts that only some commands need (the sandbox, the browser path, HID, batch)
 * are what a lazy `import()` would take off every other command's start-up.
 *
 * @module
 */
import { loadAverage, renderTable } from "./cli_bench.ts";

const root = new URL("..", import.meta.url).pathname;

/** The modules timed, with what needs them. */
const parts: [string, string][] = [
  ["main.ts", "the whole CLI as main.ts loads it"],
  ["core/cli/program.ts", "commander and the program shell"],
  ["core/cli/provision.ts", "the provision command (engine, journal, CSV, outputs)"],
  ["authenticators/software/plugin.ts", "software key (vault, CTAP2 authenticator)"],
  ["plugins/entra/plugin.ts", "Entra plugin (auth, Graph, sandbox, browser flow)"],
  ["plugins/entra/sandbox/mod.ts", "the sandbox (only `provisioning sandbox`)"],
  ["core/browser/driver.ts", "browser path (puppeteer-core)"],
  ["authenticators/hid/plugin.ts", "security keys over HID"],
  ["core/cli/batch.ts", "batch commands"],
  ["core/x509.ts", "@peculiar/x509 (+ reflect-metadata)"],
  ["core/log.ts", "logging (logtape)"],
  ["npm:zod@4.6.7", "zod"],
  ["npm:puppeteer-core@25.16.0/internal/puppeteer-core-browser.js", "puppeteer-core alone"],
  ["npm:@simplewebauthn/server@14.0.3", "@simplewebauthn/server alone (sandbox's verifier)"],
  ["npm:jose@6.2.17", "jose alone"],
  ["npm:oauth4webapi@3.8.8", "oauth4webapi alone"],
];

async function timeProcess(args: string[]): Promise<{ ms: number; stdout: string }> {
  const started = performance.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const ms = performance.now() - started;
  if (output.code !== 0) {
    throw new Error(`deno ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr).slice(-800)}`);
  }
  return { ms, stdout: new TextDecoder().decode(output.stdout) };
}

const median = (values: number[]) => values.toSorted((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function main(): Promise<void> {
  const at = Deno.args.indexOf("--repeat");
  const repeat = at < 0 ? 3 : Math.max(1, Number(Deno.args[at + 1]));
  const dir = await Deno.makeTempDir({ prefix: "startup-bench-" });
  try {
    const probe = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      probe,
      [
        "const target = Deno.args[0]!;",
        "const started = performance.now();",
        "await import(target);",
        "console.log(JSON.stringify({ importMs: performance.now() - started, sinceOriginMs: performance.now() }));",
      ].join("\n"),
    );
    const run = ["run", "-q", `--config=${root}deno.json`, "-P=bench", `--allow-read=${dir},${root}`];
    // Warm the module cache once for everything.
    await timeProcess([...run, probe, `file://${root}main.ts`]);
    const empty = [];
    for (let i = 0; i < repeat; i++) {
      empty.push((await timeProcess([...run, probe, "data:text/javascript,"])).ms);
    }
    const rows: string[][] = [[
      "(an empty module)",
      "the runtime's own start",
      "-",
      "-",
      fixed(median(empty)),
    ]];
    for (const [module, what] of parts) {
      const specifier = module.startsWith("npm:") ? module : `file://${root}${module}`;
      const imports: number[] = [];
      const totals: number[] = [];
      const walls: number[] = [];
      for (let i = 0; i < repeat; i++) {
        const { ms, stdout } = await timeProcess([...run, probe, specifier]);
        const parsed = JSON.parse(stdout.trim().split("\n").at(-1)!) as {
          importMs: number;
          sinceOriginMs: number;
        };
        imports.push(parsed.importMs);
        totals.push(parsed.sinceOriginMs);
        walls.push(ms);
      }
      rows.push([module, what, fixed(median(imports)), fixed(median(totals)), fixed(median(walls))]);
    }
    const help: number[] = [];
    for (let i = 0; i < repeat; i++) {
      help.push(
        (await timeProcess(["run", "-q", `--config=${root}deno.json`, "-P=cli", `${root}main.ts`, "--help"]))
          .ms,
      );
    }
    rows.push(["main.ts --help", "the CLI end to end, printing its help", "-", "-", fixed(median(help))]);
    console.log(
      renderTable(["module", "what", "import ms", "process start to loaded ms", "process wall ms"], rows),
    );
    console.log(
      `\nMedians of ${repeat} fresh processes each; goal: first request within 250 ms of start (issue 14). ` +
        `Load average: ${await loadAverage()}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function fixed(ms: number): string {
  return ms.toFixed(0);
}

if (import.meta.main) await main();
