/**
 * The offline replay tool for captures of the Entra browser flow (`--capture-flow DIR`): runs the
 * flow engine on every captured step and prints, per step, what the run did and what the engine
 * finds now. Exit code 0 when every step matches, 1 otherwise, 2 on a usage error.
 *
 * `deno run -P=test plugins/entra/browser/replay_capture.ts CAPTURE_DIR/<user> [--manual | --flow FILE]`
 *
 * @module
 */
import { launchBrowser } from "../../../core/browser/driver.ts";
import { type BrowserFlow, parseFlow } from "../../../core/browser/flow.ts";
import { replayCapture, type ReplayedStep } from "../../../core/browser/flow_replay.ts";
import { automaticFlow, manualFlow } from "./flows.ts";

/** Replays one user's capture with the Entra flow (automatic unless `manual`, or `flow` when given). */
export async function replayEntraCapture(
  folder: string,
  options: { manual?: boolean; flow?: BrowserFlow } = {},
): Promise<ReplayedStep[]> {
  await using browser = await launchBrowser();
  return await replayCapture(browser, folder, options.flow ?? (options.manual ? manualFlow : automaticFlow));
}

if (import.meta.main) {
  const [folder, ...rest] = Deno.args;
  if (!folder) {
    console.error("usage: replay_capture.ts CAPTURE_DIR/<user> [--manual | --flow FILE]");
    Deno.exit(2);
  }
  const flowFile = rest[0] === "--flow" ? rest[1] : undefined;
  const flow = flowFile ? parseFlow(JSON.parse(await Deno.readTextFile(flowFile)), flowFile) : undefined;
  const steps = await replayEntraCapture(folder, {
    manual: rest.includes("--manual"),
    ...(flow ? { flow } : {}),
  });
  for (const step of steps) {
    console.log(
      `${step.ok ? "ok  " : "FAIL"} ${step.file}: ran "${step.expected}", engine finds "${step.found}"`,
    );
  }
  Deno.exit(steps.every((s) => s.ok) ? 0 : 1);
}
