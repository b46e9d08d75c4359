/**
 * Evidence of a real run (`--capture-flow DIR`): before each screen the flow answers, and at its
 * end, the page's URL (query and fragment dropped), a sanitized DOM snapshot and a masked
 * screenshot, so that an admin can send us what their tenant shows, and a capture becomes a
 * regression test (flow_replay.ts runs the flow engine on it offline).
 *
 * The snapshot is serialized from the live page without the values of inputs (a button's label
 * stays), without script
 * bodies (Microsoft's pages embed flow tokens and canaries there), with every attribute value
 * that looks like a token (40 or more base64/hex characters) and every known secret replaced, and
 * with elements the page did not show marked `data-capture-hidden` so a replay sees what the
 * person saw. Files are 0600 in a 0700 folder. Capturing never throws.
 *
 * Layout: `DIR/<user>/NN-<screen>.json|html|png`, `NN` counting from 01.
 *
 * @module
 */
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { withTimeout } from "../sleep.ts";
import { makePrivateDir, maskedScreenshot, scrubSecrets, writePrivate } from "./debug_capture.ts";

/** Options of {@link FlowCapture}. */
export interface FlowCaptureOptions {
  /** The capture folder (`--capture-flow DIR`); one sub-folder per user. */
  dir: string;
  /** Whom the capture is for, e.g. the UPN; the sub-folder's name. */
  label: string;
  /** Fields covered in screenshots besides every password field. */
  maskSelectors?: readonly string[];
  /** The passkey's name (not a secret), kept so a replay can look for it in the method list. */
  displayName?: string;
}

/** What one captured step's `.json` holds. */
export interface CapturedStep {
  /** The screen the flow was about to answer (`goal` at the end, `failed-<reason>` on failure). */
  screen: string;
  /** Origin and path of the page. */
  url: string;
  title: string;
  lang: string;
  time: string;
  /** The passkey's name the flow typed, when known. */
  displayName?: string;
  /** The snapshot and screenshot files, relative to the step's folder. */
  html: string;
  screenshot?: string;
}

/** Captures the steps of one user's flow; see the module documentation. */
export class FlowCapture {
  readonly folder: string;
  readonly #maskSelectors: readonly string[];
  readonly #displayName: string | undefined;
  #count = 0;

  constructor(options: FlowCaptureOptions) {
    this.folder = `${options.dir}/${safeName(options.label)}`;
    this.#maskSelectors = options.maskSelectors ?? [];
    this.#displayName = options.displayName;
  }

  /** Saves one step; never throws. */
  async step(page: Page, screen: string, secrets: readonly string[]): Promise<void> {
    try {
      await makePrivateDir(this.folder);
      const base = `${String(++this.#count).padStart(2, "0")}-${safeName(screen)}`;
      const snapshot = await withTimeout(
        page.evaluate(
          `(${sanitizedSnapshot})(${JSON.stringify(secrets.filter((s) => s !== ""))})`,
        ) as Promise<
          { html: string; lang: string; title: string }
        >,
        10_000,
      );
      await writePrivate(
        `${this.folder}/${base}.html`,
        new TextEncoder().encode(scrubSecrets(snapshot.html, secrets)),
      );
      const shot = await maskedScreenshot(page, this.#maskSelectors, secrets);
      if (shot) await writePrivate(`${this.folder}/${base}.png`, shot.png);
      const url = new URL(page.url());
      const info: CapturedStep = {
        screen,
        url: scrubSecrets(`${url.origin}${url.pathname}`, secrets),
        title: scrubSecrets(snapshot.title, secrets),
        lang: snapshot.lang,
        time: new Date().toISOString(),
        ...(this.#displayName === undefined ? {} : { displayName: this.#displayName }),
        html: `${base}.html`,
        ...(shot ? { screenshot: `${base}.png` } : {}),
      };
      await writePrivate(
        `${this.folder}/${base}.json`,
        new TextEncoder().encode(JSON.stringify(info, null, 2) + "\n"),
      );
    } catch {
      // Evidence is a help, never a reason for the run to fail.
    }
  }
}

/** Page-side: the document as HTML without values, script bodies, tokens or secrets; hidden elements marked. */
const sanitizedSnapshot = `(secrets) => {
  const tokenLike = /[A-Za-z0-9_+\\/=.-]{40,}/g;
  const scrub = (text) => {
    let out = String(text).replace(tokenLike, "[removed]");
    for (const secret of secrets) out = out.split(secret).join("[redacted]");
    return out;
  };
  const escapeText = (text) => text.replace(/[&<>]/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const escapeAttr = (text) => text.replace(/[&<>"]/g, (c) => "&#" + c.charCodeAt(0) + ";");
  const urlAttrs = new Set(["href", "src", "action", "formaction"]);
  const shown = (element) => {
    const style = getComputedStyle(element);
    if (style.display === "none" || style.visibility === "hidden") return false;
    if (element.hidden) return false;
    if (element.tagName === "INPUT" && (element.type || "").toLowerCase() === "hidden") return true;
    const rect = element.getBoundingClientRect();
    return rect.width > 0 || rect.height > 0 || element.children.length > 0;
  };
  const voids = new Set(["area","base","br","col","embed","hr","img","input","link","meta","source","track","wbr"]);
  const walk = (node, parentHidden) => {
    if (node.nodeType === 3) return escapeText(scrub(node.nodeValue));
    if (node.nodeType !== 1) return "";
    const tag = node.tagName.toLowerCase();
    const hidden = !parentHidden && !["html", "head", "body", "script", "style", "title", "meta", "link"].includes(tag) && !shown(node);
    let out = "<" + tag;
    for (const attr of node.attributes) {
      const name = attr.name.toLowerCase();
      const isLabel = tag === "input" && ["submit", "button", "reset"].includes((node.getAttribute("type") || "").toLowerCase());
      if ((name === "value" && !isLabel) || name.startsWith("on") || name === "data-provisioning-target") continue;
      let value = attr.value;
      if (urlAttrs.has(name)) value = value.split(/[?#]/)[0];
      out += " " + name + '="' + escapeAttr(scrub(value)) + '"';
    }
    if (hidden) out += ' data-capture-hidden=""';
    out += ">";
    if (voids.has(tag)) return out;
    if (tag !== "script") for (const child of node.childNodes) out += walk(child, parentHidden || hidden);
    return out + "</" + tag + ">";
  };
  return {
    html: "<!doctype html>" + walk(document.documentElement, false),
    lang: document.documentElement.getAttribute("lang") || "",
    title: document.title,
  };
}`;

function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9._@-]+/g, "_").slice(0, 80);
}
