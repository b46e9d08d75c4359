/**
 * Runs a flow (flow.ts) on a page: look at the page, and answer whichever screen it shows, until
 * the goal shows. Each look is one small script in the page that reports the page's language,
 * the first failure marker that shows, whether the goal shows, and the first screen (in the
 * flow's order) that shows and may still be answered. Answering a screen means doing its actions
 * with real input events (clicks through puppeteer, text through one `Input.insertText`).
 *
 * Waits are polls with bounds, run inside the page (a look waits there up to a second for the
 * page to show something the flow knows, so a change is seen within tens of milliseconds at one
 * round trip): the whole flow has `timeoutMs`, a flow where no screen was
 * answered for `stallMs` (and no WebAuthn ceremony is running) stops with `page-changed`, and
 * each action's target has its own timeout. The WebAuthn bridge's failures end the flow at once
 * with the ceremony's own reason.
 *
 * @module
 */
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { toHex } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { WebAuthnBridge } from "./bridge.ts";
import type { BrowserFlow, FlowAction, FlowScreen, Target } from "./flow.ts";
import { sleep } from "../sleep.ts";

/** The values `fill` actions type. `tap` is a function so the pass is read only where it is typed. */
export interface StepValues {
  upn?: string;
  tap?: () => string;
  displayName?: string;
}

/** Options of {@link runFlow}. */
export interface RunFlowOptions {
  values: StepValues;
  /** Its failed ceremonies end the flow with the ceremony's own reason code. */
  bridge?: WebAuthnBridge;
  signal?: AbortSignal;
  /**
   * Called before a screen is answered (`nth` counts from 1): where the pass is issued for an
   * `issuesPass` screen, and where evidence is captured.
   */
  beforeScreen?: (screen: FlowScreen, nth: number) => Promise<void> | void;
  /** Milliseconds between two looks at the page. @default 100 */
  pollMs?: number;
  /**
   * `stop` (the default): a page in a language the flow has no texts for stops the flow with
   * `page-language-unsupported`. `continue`: go on with what does not depend on words (selectors);
   * for a person at the window who does the rest (manual mode).
   */
  unsupportedLanguage?: "stop" | "continue";
}

/** What a finished flow did: the screens answered, in order. */
export interface FlowOutcome {
  screens: string[];
}

/**
 * A flow stopped. `code` is the reason (`page-changed`, `page-language-unsupported`, a failure
 * marker's reason, or a WebAuthn reason such as `rp-id-not-allowed`); `step` is the screen being
 * answered or last answered; `pageText` is what the page said, when a marker matched.
 */
export class StepFailure extends ProvisioningError {
  readonly step: string;
  readonly pageText: string | undefined;
  constructor(
    code: string,
    step: string,
    message: string,
    options: { pageText?: string; cause?: unknown; hint?: string } = {},
  ) {
    super(code, message, {
      ...(options.cause === undefined ? {} : { cause: options.cause }),
      ...(options.hint === undefined ? {} : { hint: options.hint }),
    });
    this.step = step;
    this.pageText = options.pageText;
  }
}

/** What one look at the page found. */
export interface PageLook {
  lang: string;
  failure?: { index: number; text: string };
  goal: boolean;
  screen?: number;
}

interface ScreenRecord {
  fired: number;
  first: number;
  last: number;
}

/** Runs `flow` on `page` until its goal shows; see the module documentation. */
export async function runFlow(page: Page, flow: BrowserFlow, options: RunFlowOptions): Promise<FlowOutcome> {
  const started = Date.now();
  const pollMs = options.pollMs ?? 100;
  const waitMs = Math.max(pollMs, 1_000);
  const records = new Map<string, ScreenRecord>();
  const answered: string[] = [];
  const failuresSeen = new Map<number, number>();
  const failedBefore = failedCount(options.bridge);
  let progress = started;
  let lastError: unknown;
  const current = () => answered.at(-1) ?? "open-start-page";

  while (true) {
    options.signal?.throwIfAborted();
    throwOnBridgeFailure(current(), options.bridge, failedBefore);
    if (page.isClosed()) {
      throw new StepFailure(
        "browser-closed",
        current(),
        `Cannot go on after "${current()}": the page was closed`,
      );
    }
    const now = Date.now();
    const eligible = flow.screens.map((s) => mayAnswer(s, records.get(s.name), now));
    let look: PageLook | undefined;
    try {
      // The page waits in itself (up to a second) for something to answer: one round trip per
      // change of the page instead of one per poll.
      look = await page.evaluate(lookExpression(flow, eligible, options.values, waitMs)) as PageLook;
    } catch (error) {
      lastError = error; // A navigation replaced the document mid-look: look again.
    }
    if (look) {
      if (options.unsupportedLanguage !== "continue") checkLanguage(flow, look.lang, current());
      if (look.failure) {
        const failure = flow.failures[look.failure.index]!;
        const since = failuresSeen.get(look.failure.index) ?? now;
        failuresSeen.set(look.failure.index, since);
        const retry = failure.retryScreen
          ? flow.screens.find((s) => s.name === failure.retryScreen)
          : undefined;
        const retrying = retry !== undefined && mayRetry(retry, records.get(retry.name), now);
        if (!retrying && now - since >= failure.graceMs) {
          throw new StepFailure(
            failure.reason,
            current(),
            `Cannot go on after "${current()}": the page shows "${failure.reason}"`,
            { pageText: look.failure.text },
          );
        }
      } else {
        failuresSeen.clear();
      }
      if (look.goal) return { screens: answered };
      if (look.screen !== undefined) {
        const screen = flow.screens[look.screen]!;
        const record = records.get(screen.name) ?? { fired: 0, first: now, last: 0 };
        await options.beforeScreen?.(screen, record.fired + 1);
        try {
          await answer(page, screen, options);
          record.fired++;
          record.last = Date.now();
          records.set(screen.name, record);
          answered.push(screen.name);
          progress = Date.now();
          continue;
        } catch (error) {
          if (error instanceof StepFailure) throw error;
          lastError = error; // Detached or covered while we acted: look again.
        }
      }
    }
    if ((options.bridge?.pending ?? 0) > 0) progress = Date.now();
    if (Date.now() - started > flow.timeoutMs || Date.now() - progress > flow.stallMs) {
      throw new StepFailure(
        "page-changed",
        current(),
        `Cannot go on after "${current()}": no screen of the flow showed within ${
          Math.round(Math.min(flow.stallMs, flow.timeoutMs) / 1000)
        } s`,
        lastError === undefined ? {} : { cause: lastError },
      );
    }
    // After a failed look (a navigation in between) look again soon; else after a poll interval.
    await sleep(look ? pollMs : Math.min(pollMs, 25), options.signal);
  }
}

/** Whether a screen may be answered now. */
function mayAnswer(screen: FlowScreen, record: ScreenRecord | undefined, now: number): boolean {
  if (!record) return true;
  if (record.fired >= screen.repeat.max) return false;
  if (now - record.last < screen.repeat.pauseMs) return false;
  return screen.repeat.forMs === undefined || now - record.first <= screen.repeat.forMs;
}

/** Whether a screen answered before may still be answered again (now or after its pause). */
function mayRetry(screen: FlowScreen, record: ScreenRecord | undefined, now: number): boolean {
  if (!record) return true;
  if (record.fired >= screen.repeat.max) return false;
  return screen.repeat.forMs === undefined || now - record.first <= screen.repeat.forMs;
}

function checkLanguage(flow: BrowserFlow, lang: string, step: string): void {
  const primary = lang.toLowerCase().split("-")[0] ?? "";
  if (primary === "" || flow.languages.includes(primary)) return;
  throw new StepFailure(
    "page-language-unsupported",
    step,
    `Cannot go on after "${step}": the page is in "${lang}" and the flow "${flow.flow}" has texts for ${
      flow.languages.join(", ")
    } only`,
    {
      pageText: `the page's language is "${lang}"`,
      hint:
        "Run this user with --mode headful (the flow falls back to manual mode) or --manual, or switch the account's display language to English",
    },
  );
}

/** Does a screen's actions in order. */
async function answer(page: Page, screen: FlowScreen, options: RunFlowOptions): Promise<void> {
  for (const action of screen.actions) await act(page, screen, action, options);
}

async function act(
  page: Page,
  screen: FlowScreen,
  action: FlowAction,
  options: RunFlowOptions,
): Promise<void> {
  const deadline = Date.now() + action.timeoutMs;
  while (true) {
    options.signal?.throwIfAborted();
    const mark = toHex(crypto.getRandomValues(new Uint8Array(8)));
    const found = await page.evaluate(markExpression(action.target, options.values, mark)).catch(() => false);
    if (found) {
      const handle = await page.$(`[data-provisioning-target="${mark}"]`);
      if (handle) {
        try {
          if (action.action === "click") {
            await click(page, handle, mark);
          } else {
            const value = valueFor(screen, action, options.values);
            await page.evaluate(
              `(() => { const e = document.querySelector('[data-provisioning-target="${mark}"]'); if (e) { e.focus(); e.value = ""; } })()`,
            );
            await handle.focus();
            // One Input.insertText: the page gets beforeinput/input events as from an IME.
            await page.keyboard.sendCharacter(value);
          }
          return;
        } finally {
          await handle.dispose().catch(() => undefined);
        }
      }
    }
    if (Date.now() > deadline) {
      throw new StepFailure(
        "page-changed",
        screen.name,
        `Cannot finish "${screen.name}": the element to ${action.action} did not appear within ${action.timeoutMs} ms`,
      );
    }
    await sleep(options.pollMs ?? 100, options.signal);
  }
}

async function click(
  page: Page,
  handle: NonNullable<Awaited<ReturnType<Page["$"]>>>,
  mark: string,
): Promise<void> {
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
}

function valueFor(screen: FlowScreen, action: FlowAction, values: StepValues): string {
  const value = action.value === "tap" ? values.tap?.() : action.value ? values[action.value] : undefined;
  if (value === undefined) {
    throw new StepFailure(
      "flow-misconfigured",
      screen.name,
      `Cannot answer "${screen.name}": no ${action.value} to type`,
    );
  }
  return value;
}

function failedCount(bridge: WebAuthnBridge | undefined): number {
  return bridge?.events.filter((e) => e.type === "failed").length ?? 0;
}

function throwOnBridgeFailure(step: string, bridge: WebAuthnBridge | undefined, failedBefore: number): void {
  if (!bridge || failedCount(bridge) <= failedBefore) return;
  const failure = bridge.events.filter((e) => e.type === "failed").at(-1);
  if (failure?.type !== "failed") return;
  const code = failure.error instanceof ProvisioningError ? failure.error.code : "webauthn-failed";
  throw new StepFailure(code, step, failure.error.message, { cause: failure.error });
}

/** Replaces `{displayName}` in a target's texts. */
function resolve(target: Target | undefined, values: StepValues): Target | undefined {
  if (!target) return undefined;
  const sub = (m: Record<string, string[]>) =>
    Object.fromEntries(
      Object.entries(m).map(([k, v]) => [
        k,
        v.map((t) => t.replaceAll("{displayName}", values.displayName ?? "")),
      ]),
    );
  return { ...target, names: sub(target.names), texts: sub(target.texts), contains: sub(target.contains) };
}

/** The page-side look: language, failure, goal, first eligible screen. */
export function lookExpression(
  flow: BrowserFlow,
  eligible: readonly boolean[],
  values: StepValues,
  waitMs = 0,
): string {
  const spec = {
    failures: flow.failures.map((f) => ({
      target: resolve(f.target, values),
      unless: resolve(f.unless, values),
    })),
    goal: resolve(flow.goal, values),
    screens: flow.screens.map((s, i) =>
      eligible[i] ? { when: resolve(s.when, values), unless: resolve(s.unless, values) } : null
    ),
  };
  return `(() => { ${finderSource}
    const look = () => { cachedPageText = null; return (${lookSource})(${JSON.stringify(spec)}); };
    const deadline = performance.now() + ${waitMs};
    return new Promise((resolve) => {
      const tick = () => {
        const found = look();
        if (found.failure || found.goal || found.screen !== undefined || performance.now() >= deadline) resolve(found);
        else setTimeout(tick, 40);
      };
      tick();
    }); })()`;
}

function markExpression(target: Target, values: StepValues, mark: string): string {
  return `(() => { ${finderSource}
    for (const old of document.querySelectorAll("[data-provisioning-target]")) old.removeAttribute("data-provisioning-target");
    const found = find(${JSON.stringify(resolve(target, values))});
    if (!found) return false;
    found.element.setAttribute("data-provisioning-target", ${JSON.stringify(mark)});
    return true; })()`;
}

const lookSource = `(spec) => {
  const look = { lang: document.documentElement.getAttribute("lang") || "", goal: false };
  for (let index = 0; index < spec.failures.length; index++) {
    const failure = spec.failures[index];
    const found = find(failure.target);
    if (found && !(failure.unless && find(failure.unless))) {
      look.failure = { index, text: found.text.replace(/\\s+/g, " ").trim().slice(0, 500) };
      break;
    }
  }
  if (find(spec.goal)) look.goal = true;
  for (let index = 0; index < spec.screens.length; index++) {
    const screen = spec.screens[index];
    if (screen && find(screen.when) && !(screen.unless && find(screen.unless))) {
      look.screen = index;
      break;
    }
  }
  return look;
}`;

/**
 * The page-side finder, shared by looks and marks (and by the capture replay, which runs it on
 * saved snapshots): `find(target)` is `{ element, text }` for the first visible match, or null.
 */
export const finderSource = `
  const hiddenByCapture = (element) => element.closest("[data-capture-hidden]") !== null;
  const visible = (element) => {
    if (!element || !element.isConnected) return false;
    if (element.closest("[hidden]") || hiddenByCapture(element)) return false;
    const style = getComputedStyle(element);
    if (style.visibility === "hidden" || style.display === "none") return false;
    const rect = element.getBoundingClientRect();
    return rect.width > 0 && rect.height > 0;
  };
  const normal = (text) => String(text || "").replace(/\\s+/g, " ").trim().toLowerCase();
  const textOf = (node) => {
    if (node.nodeType === 3) return node.nodeValue;
    if (node.nodeType !== 1) return "";
    if (node.getAttribute("aria-hidden") === "true" || node.hidden) return "";
    const tag = node.tagName;
    if (tag === "SCRIPT" || tag === "STYLE") return "";
    if (tag === "INPUT" && ["submit", "button"].includes((node.getAttribute("type") || "").toLowerCase())) return node.value;
    let out = "";
    for (const child of node.childNodes) out += child.nodeType === 1 ? " " + textOf(child) + " " : textOf(child);
    return out;
  };
  const roleOf = (element) => {
    const explicit = element.getAttribute("role");
    if (explicit) return explicit.split(/\\s+/)[0].toLowerCase();
    const tag = element.tagName.toLowerCase();
    if (tag === "button") return "button";
    if (tag === "a" && element.hasAttribute("href")) return "link";
    if (tag === "input") {
      const type = (element.getAttribute("type") || "text").toLowerCase();
      if (["submit", "button", "reset", "image"].includes(type)) return "button";
      if (type === "checkbox" || type === "radio" || type === "hidden") return type;
      return "textbox";
    }
    if (tag === "textarea") return "textbox";
    if (/^h[1-6]$/.test(tag)) return "heading";
    if (tag === "select") return "combobox";
    if (tag === "option") return "option";
    if (tag === "dialog") return "dialog";
    if (tag === "li") return "listitem";
    return "";
  };
  const nameOf = (element) => {
    const labelledBy = element.getAttribute("aria-labelledby");
    if (labelledBy) {
      const text = labelledBy.split(/\\s+/).map((id) => document.getElementById(id)).filter(Boolean).map(textOf).join(" ");
      if (normal(text)) return text;
    }
    const label = element.getAttribute("aria-label");
    if (label && normal(label)) return label;
    const tag = element.tagName;
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") {
      const type = (element.getAttribute("type") || "").toLowerCase();
      if (type === "submit" || type === "button") return element.value;
      const labels = element.labels ? [...element.labels].map(textOf).join(" ") : "";
      if (normal(labels)) return labels;
      return element.getAttribute("placeholder") || element.getAttribute("title") || "";
    }
    return textOf(element);
  };
  const roleSelectors = {
    button: "button, input[type=submit], input[type=button], input[type=reset], input[type=image], [role=button]",
    link: "a[href], [role=link]",
    textbox: "input:not([type]), input[type=text], input[type=email], input[type=password], input[type=tel], input[type=search], input[type=url], input[type=number], textarea, [role=textbox]",
    heading: "h1, h2, h3, h4, h5, h6, [role=heading]",
    option: "option, [role=option]",
    combobox: "select, [role=combobox]",
    checkbox: "input[type=checkbox], [role=checkbox]",
    listitem: "li, [role=listitem]",
    dialog: "dialog, [role=dialog]",
  };
  let cachedPageText = null;
  const pageText = () => cachedPageText ??= normal(document.body ? document.body.innerText : "");
  const language = () => (document.documentElement.getAttribute("lang") || "en").toLowerCase().split("-")[0];
  const pick = (byLanguage) => (byLanguage && (byLanguage[language()] || [])) || [];
  const find = (target) => {
    if (!target) return null;
    const root = target.within ? [...document.querySelectorAll(target.within)] : [document];
    const all = (selector) => {
      const out = [];
      for (const scope of root) {
        try {
          if (scope !== document && scope.matches(selector)) out.push(scope);
          out.push(...scope.querySelectorAll(selector));
        } catch (_) { /* a bad selector in data */ }
      }
      return out;
    };
    for (const selector of target.selectors || []) {
      for (const element of all(selector)) if (visible(element)) return { element, text: textOf(element) };
    }
    const names = pick(target.names).map(normal);
    if (target.role && names.length > 0) {
      for (const element of all(roleSelectors[target.role] || "[role=" + target.role + "]")) {
        if (roleOf(element) !== target.role) continue;
        if (names.includes(normal(nameOf(element))) && visible(element)) return { element, text: textOf(element) };
      }
    }
    const texts = pick(target.texts).map(normal);
    const contains = pick(target.contains).map(normal).filter(Boolean);
    if (texts.length === 0 && contains.length === 0) return null;
    // One look at the whole visible text first: most of the time none of the texts is there.
    const page = pageText();
    if (!texts.some((t) => page.includes(t)) && !contains.some((c) => page.includes(c))) return null;
    let best = null;
    for (const element of all(target.scope)) {
      const text = normal(element.innerText);
      if (!text || !(texts.includes(text) || contains.some((c) => text.includes(c)))) continue;
      if (!visible(element)) continue;
      if (!text) continue;
      if (!best || text.length < best.length) best = { element, length: text.length };
    }
    return best ? { element: best.element, text: textOf(best.element) } : null;
  };
`;
