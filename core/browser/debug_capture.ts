/**
 * What the admin needs to see why a browser step failed: a screenshot of the page, its URL and
 * title, the step and the reason, written to a debug folder, with every secret kept out.
 *
 * Secrets are kept out three ways: the fields that hold them (the Temporary Access Pass box,
 * every password box, whatever `maskSelectors` names) are covered with an opaque box for the
 * screenshot; every known secret value is replaced by `[redacted]` in the URL, the message and
 * the saved HTML; and typed values are never serialized (the HTML holds attributes, not what was
 * typed). Capturing never throws: a failure to capture must not hide the failure being captured.
 * The folder is 0700 and every file 0600 (issue 13): a page may show a user's details.
 *
 * @example
 * ```ts ignore
 * const saved = await captureFailure(page, {
 *   dir: "debug",
 *   step: "enter-tap",
 *   reason: "wrong-tap",
 *   label: "alice@contoso.com",
 *   secrets: [tap.reveal()],
 *   maskSelectors: ["input[name=accesspass]"],
 * });
 * console.log(saved.screenshot); // debug/2024-…-alice_contoso.com-enter-tap.png
 * ```
 *
 * @module
 */
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { withTimeout } from "../sleep.ts";

/** Options of {@link captureFailure}. */
export interface CaptureOptions {
  /** The folder to write into; made when missing. */
  dir: string;
  /** The step that failed, e.g. `enter-tap`. */
  step: string;
  /** The failure's reason code, e.g. `wrong-tap`. */
  reason: string;
  /** Whom it was for, e.g. the UPN; part of the file names. */
  label?: string;
  /** The error message, saved with the URL. */
  message?: string;
  /** Secret values that must not appear anywhere in what is saved. */
  secrets?: readonly string[];
  /** CSS selectors of fields to cover in the screenshot, besides every password field. */
  maskSelectors?: readonly string[];
}

/** The files written; a part that could not be captured is absent. */
export interface Capture {
  screenshot?: string;
  /** JSON: step, reason, label, URL, title, time, message. */
  info?: string;
  html?: string;
  /** How many fields were covered in the screenshot. */
  masked: number;
}

/** The attribute on the boxes that cover secret fields during the screenshot. */
export const maskAttribute = "data-provisioning-mask";

/** Replaces every secret value in `text` with `[redacted]` (also their URL-encoded forms). */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  const forms = secrets
    .filter((s) => s.length > 0)
    .flatMap((s) => [s, encodeURIComponent(s), new URLSearchParams({ s }).toString().slice(2)]);
  for (const form of [...new Set(forms)].sort((a, b) => b.length - a.length)) {
    out = out.split(form).join("[redacted]");
  }
  return out;
}

/** Saves a masked screenshot, the page's URL, title and HTML for a failed step; never throws. */
export async function captureFailure(page: Page, options: CaptureOptions): Promise<Capture> {
  const secrets = options.secrets ?? [];
  const capture: Capture = { masked: 0 };
  try {
    await makePrivateDir(options.dir);
  } catch {
    return capture;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const parts = [stamp, options.label, options.step].filter((p): p is string =>
    typeof p === "string" && p !== ""
  );
  const base = `${options.dir}/${parts.map(safeName).join("-")}`;

  let url = "";
  let title = "";
  try {
    url = scrubSecrets(page.url(), secrets);
    title = scrubSecrets(await withTimeout(page.title(), 5_000), secrets);
  } catch {
    // A closed or hung page: keep what we have.
  }

  const shot = await maskedScreenshot(page, options.maskSelectors ?? [], secrets);
  if (shot) {
    try {
      await writePrivate(`${base}.png`, shot.png);
      capture.screenshot = `${base}.png`;
      capture.masked = shot.masked;
    } catch {
      // No screenshot; the rest may still help.
    }
  }

  try {
    const html = scrubSecrets(await withTimeout(page.content(), 5_000), secrets);
    await writePrivate(`${base}.html`, new TextEncoder().encode(html));
    capture.html = `${base}.html`;
  } catch {
    // No HTML.
  }

  try {
    const info = {
      step: options.step,
      reason: options.reason,
      ...(options.label ? { label: options.label } : {}),
      url,
      title,
      time: new Date().toISOString(),
      ...(options.message ? { message: scrubSecrets(options.message, secrets) } : {}),
      ...(capture.screenshot ? { screenshot: capture.screenshot } : {}),
    };
    await writePrivate(`${base}.json`, new TextEncoder().encode(JSON.stringify(info, null, 2) + "\n"));
    capture.info = `${base}.json`;
  } catch {
    // Nothing written.
  }
  return capture;
}

/**
 * A screenshot with every password field, every `maskSelectors` field and every field holding one
 * of `secrets` covered by an opaque box (removed again afterwards); undefined when the page is
 * gone or hangs.
 */
export async function maskedScreenshot(
  page: Page,
  maskSelectors: readonly string[],
  secrets: readonly string[],
): Promise<{ png: Uint8Array; masked: number } | undefined> {
  try {
    const selectors = ["input[type=password]", ...maskSelectors];
    const masked = await withTimeout(
      callInPage<number>(page, coverFields, selectors, secrets, maskAttribute),
      5_000,
    );
    const png = await withTimeout(page.screenshot({ type: "png" }), 15_000);
    return { png, masked };
  } catch {
    return undefined;
  } finally {
    try {
      await withTimeout(callInPage(page, uncoverFields, maskAttribute), 5_000);
    } catch {
      // The page is gone.
    }
  }
}

/** Makes `dir` (and missing parents) readable by the owner only, 0700, like every other output. */
export async function makePrivateDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  if (Deno.build.os !== "windows") await Deno.chmod(dir, 0o700);
}

/** Writes a capture file readable by the owner only (0600), whatever the umask. */
export async function writePrivate(path: string, data: Uint8Array): Promise<void> {
  await Deno.writeFile(path, data, { mode: 0o600 });
  if (Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
}

/** Page-side source: covers every matching field, and every field holding a secret, with a box. */
const coverFields = `(selectors, secrets, attribute) => {
  const fields = new Set();
  for (const selector of selectors) {
    try {
      for (const element of document.querySelectorAll(selector)) fields.add(element);
    } catch (_) { /* an invalid selector in the data file */ }
  }
  for (const element of document.querySelectorAll("input, textarea")) {
    const value = element.value;
    if (value && secrets.some((secret) => secret && value.includes(secret))) fields.add(element);
  }
  let covered = 0;
  for (const element of fields) {
    const rect = element.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;
    const box = document.createElement("div");
    box.setAttribute(attribute, "");
    box.style.cssText = "position:fixed;left:" + (rect.left - 2) + "px;top:" + (rect.top - 2) + "px;width:" +
      (rect.width + 4) + "px;height:" + (rect.height + 4) + "px;background:#000;z-index:2147483647;pointer-events:none;";
    document.documentElement.appendChild(box);
    covered++;
  }
  return covered;
}`;

/** Page-side source: removes the boxes {@link coverFields} added. */
const uncoverFields = `(attribute) => {
  for (const box of document.querySelectorAll("[" + attribute + "]")) box.remove();
}`;

/** Evaluates page-side `source` (a function expression) with JSON arguments. */
function callInPage<T>(page: Page, source: string, ...args: unknown[]): Promise<T> {
  return page.evaluate(`(${source})(${args.map((a) => JSON.stringify(a)).join(", ")})`) as Promise<T>;
}

function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, "_").slice(0, 80);
}
