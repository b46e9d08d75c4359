/**
 * Replays a captured flow (flow_capture.ts) against the flow engine, offline: every snapshot is
 * loaded into a page with scripts off and the network offline, and the engine's own look (the
 * same page-side finder steps.ts runs) must find there what the run found: the screen it
 * answered, the goal, or the failure it stopped with. A capture from a tenant thus becomes a
 * regression test of the flow data: if a flow edit stops recognising a screen that tenant
 * shows, the replay says which step and what the engine saw instead.
 *
 * @example
 * ```ts ignore
 * await using browser = await launchBrowser();
 * const steps = await replayCapture(browser, "captures/alice_contoso.com", automaticFlow);
 * console.log(steps.every((s) => s.ok));
 * ```
 *
 * @module
 */
import { z } from "zod";
import type { BrowserHandle } from "./driver.ts";
import type { BrowserFlow } from "./flow.ts";
import { lookExpression, type PageLook, type StepValues } from "./steps.ts";

/** One replayed step. */
export interface ReplayedStep {
  /** The step's `.json` file name. */
  file: string;
  /** What the run did there: a screen's name, `goal`, or `failed-<reason>`. */
  expected: string;
  /** What the engine finds in the snapshot now (same vocabulary; `nothing` when nothing matches). */
  found: string;
  ok: boolean;
}

const stepSchema = z.object({
  screen: z.string(),
  html: z.string().regex(/^[A-Za-z0-9._@-]+\.html$/),
  lang: z.string().default(""),
  displayName: z.string().optional(),
});

/** Replays every step in `folder` (one user's capture) in order; see the module documentation. */
export async function replayCapture(
  browser: BrowserHandle,
  folder: string,
  flow: BrowserFlow,
): Promise<ReplayedStep[]> {
  const files = [...Deno.readDirSync(folder)].map((e) => e.name).filter((n) => /^\d+-.*\.json$/.test(n))
    .sort();
  if (files.length === 0) {
    throw new TypeError(`Cannot replay "${folder}": it holds no captured steps (NN-name.json)`);
  }
  const fired = new Map<string, number>();
  const out: ReplayedStep[] = [];
  await browser.withContext(async (context) => {
    const page = await context.newPage();
    await page.setJavaScriptEnabled(false);
    await page.setOfflineMode(true);
    for (const file of files) {
      const step = stepSchema.parse(JSON.parse(await Deno.readTextFile(`${folder}/${file}`)));
      const html = await Deno.readTextFile(`${folder}/${step.html}`);
      await page.setContent(html, { waitUntil: "domcontentloaded", timeout: 30_000 });
      const values: StepValues = step.displayName === undefined ? {} : { displayName: step.displayName };
      const eligible = flow.screens.map((s) => (fired.get(s.name) ?? 0) < s.repeat.max);
      const look = await page.evaluate(lookExpression(flow, eligible, values)) as PageLook;
      const found = describe(flow, look);
      out.push({ file, expected: step.screen, found, ok: found === step.screen });
      if (flow.screens.some((s) => s.name === step.screen)) {
        fired.set(step.screen, (fired.get(step.screen) ?? 0) + 1);
      }
    }
  });
  return out;
}

/** What the engine would do on a look, in the capture's vocabulary. */
function describe(flow: BrowserFlow, look: PageLook): string {
  const primary = look.lang.toLowerCase().split("-")[0] ?? "";
  if (primary !== "" && !flow.languages.includes(primary)) return "failed-page-language-unsupported";
  if (look.failure) {
    const failure = flow.failures[look.failure.index]!;
    // A failure the flow would retry past is not where it stopped; the screen is.
    if (!failure.retryScreen || look.screen === undefined) return `failed-${failure.reason}`;
  }
  if (look.goal) return "goal";
  if (look.screen !== undefined) return flow.screens[look.screen]!.name;
  return "nothing";
}
