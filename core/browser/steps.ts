/**
 * Runs a flow's steps (flow.ts) on a page: for each step, wait until its target shows, then
 * fill, click or just accept it; meanwhile watch the flow's failure markers, the step's
 * "missing option" rule, and the WebAuthn bridge, so a failure is named as soon as the page
 * shows it instead of after a timeout.
 *
 * Elements are looked up in the page by one small script per poll: selectors first (stable
 * attributes), then localised texts; only visible elements count. The element found is marked
 * with a one-time attribute and acted on through puppeteer, so typing and clicking are real
 * input events.
 *
 * @module
 */
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { toHex } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { WebAuthnBridge } from "./bridge.ts";
import type { FailureMarker, FlowStep, Target } from "./flow.ts";
import { sleep } from "../sleep.ts";

/** The values `fill` steps type. `tap` is a function so the pass is read only where it is typed. */
export interface StepValues {
  upn?: string;
  tap?: () => string;
  displayName?: string;
}

/** Options of {@link runSteps}. */
export interface RunStepsOptions {
  values: StepValues;
  /** Failure markers watched during every step. */
  failures?: readonly FailureMarker[];
  /** Its failed ceremonies end the flow with the ceremony's own reason code. */
  bridge?: WebAuthnBridge;
  signal?: AbortSignal;
  /** Told when each step starts (progress for a UI). */
  onStep?: (step: FlowStep) => void;
  /** Milliseconds between two looks at the page. @default 100 */
  pollMs?: number;
}

/**
 * A step failed. `code` is the reason (`page-changed`, a failure marker's reason, or a WebAuthn
 * reason such as `rp-id-not-allowed`); `pageText` is what the page said, when a marker matched.
 */
export class StepFailure extends ProvisioningError {
  readonly step: string;
  readonly pageText: string | undefined;
  constructor(
    code: string,
    step: string,
    message: string,
    options: { pageText?: string; cause?: unknown } = {},
  ) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.step = step;
    this.pageText = options.pageText;
  }
}

type Probe =
  | { kind: "failure"; reason: string; text: string }
  | { kind: "target" | "next" | "container" | "none" };

/** Runs `steps` in order; resolves when the last one is done. */
export async function runSteps(
  page: Page,
  steps: readonly FlowStep[],
  options: RunStepsOptions,
): Promise<void> {
  const failedBefore = failedCount(options.bridge);
  for (let i = 0; i < steps.length; i++) {
    const step = steps[i]!;
    options.onStep?.(step);
    await runStep(page, step, steps[i + 1], options, failedBefore);
  }
}

async function runStep(
  page: Page,
  step: FlowStep,
  next: FlowStep | undefined,
  options: RunStepsOptions,
  failedBefore: number,
): Promise<void> {
  const started = Date.now();
  const pollMs = options.pollMs ?? 100;
  let containerSince: number | undefined;
  let lastError: unknown;
  const failures = [...step.failures, ...(options.failures ?? [])];
  while (true) {
    options.signal?.throwIfAborted();
    throwOnBridgeFailure(step, options.bridge, failedBefore);
    if (page.isClosed()) {
      throw new StepFailure(
        "browser-closed",
        step.name,
        `Cannot run step "${step.name}": the page was closed`,
      );
    }
    const mark = toHex(crypto.getRandomValues(new Uint8Array(8)));
    let probe: Probe = { kind: "none" };
    try {
      probe = await page.evaluate(probeExpression({
        failures,
        target: step.target,
        next: step.optional ? next?.target : undefined,
        container: step.whenMissing?.container,
        mark,
      })) as Probe;
    } catch (error) {
      lastError = error; // A navigation replaced the document mid-look: look again.
    }
    if (probe.kind === "failure") {
      throw new StepFailure(
        probe.reason,
        step.name,
        `Cannot finish step "${step.name}": the page shows "${probe.reason}"`,
        {
          pageText: probe.text,
        },
      );
    }
    if (probe.kind === "next") return;
    if (probe.kind === "target") {
      try {
        if (await act(page, step, mark, options.values)) return;
      } catch (error) {
        if (error instanceof StepFailure) throw error;
        lastError = error; // Detached or covered while we acted: look again.
      }
    }
    if (probe.kind === "container" && step.whenMissing) {
      containerSince ??= Date.now();
      if (Date.now() - containerSince >= step.whenMissing.graceMs) {
        throw new StepFailure(
          step.whenMissing.reason,
          step.name,
          `Cannot finish step "${step.name}": the page offers no such option`,
        );
      }
    } else {
      containerSince = undefined;
    }
    if (Date.now() - started > step.timeoutMs) {
      throw new StepFailure(
        step.reason,
        step.name,
        `Cannot finish step "${step.name}": its element did not appear within ${step.timeoutMs} ms`,
        lastError === undefined ? {} : { cause: lastError },
      );
    }
    await sleep(pollMs, options.signal);
  }
}

/** Acts on the marked element; false when it was gone by then. */
async function act(page: Page, step: FlowStep, mark: string, values: StepValues): Promise<boolean> {
  const handle = await page.$(`[data-provisioning-target="${mark}"]`);
  if (!handle) return false;
  try {
    if (step.action === "click") {
      try {
        await handle.click();
      } catch (error) {
        // A click that navigated can still reject; if the element is gone, it happened.
        const still = await page.$(`[data-provisioning-target="${mark}"]`).catch(() => null);
        if (still) {
          await still.dispose();
          throw error;
        }
      }
    } else if (step.action === "fill") {
      const value = valueFor(step, values);
      await page.evaluate(
        `(() => { const e = document.querySelector('[data-provisioning-target="${mark}"]'); if (e) { e.focus(); e.value = ""; } })()`,
      );
      await handle.focus();
      // One Input.insertText: the page gets beforeinput/input events as from an IME, in one round trip.
      await page.keyboard.sendCharacter(value);
    }
    return true;
  } finally {
    await handle.dispose().catch(() => undefined);
  }
}

function valueFor(step: FlowStep, values: StepValues): string {
  const value = step.value === "tap" ? values.tap?.() : step.value ? values[step.value] : undefined;
  if (value === undefined) {
    throw new StepFailure(
      "flow-misconfigured",
      step.name,
      `Cannot run step "${step.name}": no ${step.value} to type`,
    );
  }
  return value;
}

function failedCount(bridge: WebAuthnBridge | undefined): number {
  return bridge?.events.filter((e) => e.type === "failed").length ?? 0;
}

function throwOnBridgeFailure(
  step: FlowStep,
  bridge: WebAuthnBridge | undefined,
  failedBefore: number,
): void {
  if (!bridge || failedCount(bridge) <= failedBefore) return;
  const failure = bridge.events.filter((e) => e.type === "failed").at(-1);
  if (failure?.type !== "failed") return;
  const code = failure.error instanceof ProvisioningError ? failure.error.code : "webauthn-failed";
  throw new StepFailure(code, step.name, failure.error.message, { cause: failure.error });
}

/** The page-side look: failure markers first, then the target, the next step's target, the container. */
function probeExpression(spec: {
  failures: readonly FailureMarker[];
  target: Target;
  next: Target | undefined;
  container: Target | undefined;
  mark: string;
}): string {
  return `(${probeSource})(${JSON.stringify(spec)})`;
}

const probeSource = `(spec) => {
  const visible = (element) => {
    if (!element || !element.isConnected) return false;
    if (element.closest("[hidden]")) return false;
    const style = getComputedStyle(element);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const rect = element.getBoundingClientRect();
    return rect.width > 0 && rect.height > 0;
  };
  const normal = (text) => String(text || "").replace(/\\s+/g, " ").trim().toLowerCase();
  const find = (target) => {
    if (!target) return null;
    for (const selector of target.selectors || []) {
      let found = [];
      try { found = document.querySelectorAll(selector); } catch (_) { continue; }
      for (const element of found) if (visible(element)) return element;
    }
    const texts = Object.values(target.texts || {}).flat().map(normal);
    if (texts.length === 0) return null;
    let scope = [];
    try { scope = document.querySelectorAll(target.textScope); } catch (_) { return null; }
    for (const element of scope) {
      if (!visible(element)) continue;
      const names = [element.innerText, element.value, element.getAttribute("aria-label")].map(normal);
      if (names.some((name) => name && texts.includes(name))) return element;
    }
    return null;
  };
  for (const failure of spec.failures) {
    const element = find(failure.target);
    if (element) return { kind: "failure", reason: failure.reason, text: failure.includeText ? (element.innerText || "").slice(0, 500) : "" };
  }
  for (const old of document.querySelectorAll("[data-provisioning-target]")) old.removeAttribute("data-provisioning-target");
  const target = find(spec.target);
  if (target) {
    target.setAttribute("data-provisioning-target", spec.mark);
    return { kind: "target" };
  }
  if (spec.next && find(spec.next)) return { kind: "next" };
  if (spec.container && find(spec.container)) return { kind: "container" };
  return { kind: "none" };
}`;
