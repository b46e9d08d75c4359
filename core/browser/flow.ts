/**
 * The shape of a browser flow's data file. A flow is a set of **screens** the provider's pages
 * may show (each recognised by a target, and answered by a few actions), a **goal** that ends the
 * flow, and **failures** that stop it with a reason. The runner (steps.ts) looks at the page,
 * answers whichever screen shows, and repeats until the goal shows, a failure shows, or nothing
 * moves for too long. Screens may come in any order and any may be skipped, so variants of a
 * provider's pages (an extra interrupt, another method picker) are more screens, not more code.
 *
 * Targets find elements the way a person does: by **role** and **accessible name**, by stable
 * attributes (CSS `selectors` on `id`, `name`, `type`), or by visible text; the texts are data per
 * language (`en` first). A page whose `<html lang>` is not among the flow's `languages` stops the
 * flow with `page-language-unsupported` before anything is typed.
 *
 * @example
 * ```ts
 * import { parseFlow } from "./flow.ts";
 * const flow = parseFlow({
 *   flow: "demo",
 *   description: "one click",
 *   languages: ["en"],
 *   startUrls: { sandbox: "{loginBase}/" },
 *   screens: [{ name: "go", when: { role: "button", names: { en: ["Go"] } }, actions: [{ action: "click", target: { role: "button", names: { en: ["Go"] } } }] }],
 *   goal: { selectors: ["#done"] },
 * }, "demo.json");
 * console.assert(flow.screens[0]?.repeat.max === 1);
 * ```
 *
 * @module
 */
import { z } from "zod";

const reason = z.string().regex(/^[a-z][a-z0-9-]*$/, "must be a kebab-case reason code");
const byLanguage = z.record(z.string().regex(/^[a-z]{2,3}$/), z.array(z.string().min(1)));

/**
 * How an element is found. An element matches when it is visible and any of: a CSS selector
 * matches it; it has `role` (explicit or implied by its tag) and an accessible name among
 * `names` of the page's language; its visible text equals one of `texts` or contains one of
 * `contains`. `within` limits every way to descendants of a CSS selector. `{displayName}` in a
 * text stands for the passkey's name.
 */
export const targetSchema = z.object({
  selectors: z.array(z.string().min(1)).default([]),
  /** An ARIA role: button, link, textbox, heading, option, combobox, listbox, dialog, alert, checkbox. */
  role: z.string().optional(),
  /** Accessible names by language, matched whole and case-insensitively (needs `role`). */
  names: byLanguage.default({}),
  /** Visible texts by language, matched whole and case-insensitively within `scope`. */
  texts: byLanguage.default({}),
  /** Visible texts by language, matched as substrings (case-insensitive) within `scope`. */
  contains: byLanguage.default({}),
  /** Elements the `texts`/`contains` are looked for in. */
  scope: z.string().default(
    "button, a, [role=button], [role=option], [role=alert], [role=heading], input[type=submit], input[type=button], label, li, [role=listitem], p, div",
  ),
  /** Only elements inside this CSS selector count. */
  within: z.string().optional(),
}).refine(
  (t) =>
    t.selectors.length > 0 || Object.keys(t.names).length > 0 || Object.keys(t.texts).length > 0 ||
    Object.keys(t.contains).length > 0,
  "a target needs selectors, names, texts or contains",
).refine((t) => Object.keys(t.names).length === 0 || t.role !== undefined, "names need a role");
/** How an element is found. */
export type Target = z.infer<typeof targetSchema>;

/** One thing done on a screen. */
export const actionSchema = z.object({
  /** `fill` types a value into the target (replacing what is there), `click` clicks it. */
  action: z.enum(["fill", "click"]),
  target: targetSchema,
  /** What `fill` types: the user's sign-in name, the Temporary Access Pass, the passkey's name. */
  value: z.enum(["upn", "tap", "displayName"]).optional(),
  /** How long the target may take to show once the screen is recognised. */
  timeoutMs: z.number().int().positive().max(600_000).default(10_000),
}).refine((a) => a.action !== "fill" || a.value !== undefined, "a fill action needs a value");
/** One thing done on a screen. */
export type FlowAction = z.infer<typeof actionSchema>;

/** A screen the pages may show, and what to do there. */
export const screenSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]*$/),
  /** The screen shows when this target does. */
  when: targetSchema,
  /** …and this one does not (e.g. a button behind an open dialog). */
  unless: targetSchema.optional(),
  actions: z.array(actionSchema).min(1),
  /**
   * How often the screen may be answered: `max` times, at least `pauseMs` apart, for `forMs` after
   * the first time (e.g. a pass prompt that refuses a new pass for a while).
   */
  repeat: z.object({
    max: z.number().int().positive().max(1000),
    pauseMs: z.number().int().nonnegative().default(0),
    forMs: z.number().int().positive().optional(),
  }).default({ max: 1, pauseMs: 0 }),
  /** The one-time pass is issued just before this screen is first answered (never earlier). */
  issuesPass: z.boolean().default(false),
});
/** A screen of a flow. */
export type FlowScreen = z.infer<typeof screenSchema>;

/** A page state that ends the flow with a reason, e.g. a refused pass. */
export const failureSchema = z.object({
  reason,
  target: targetSchema,
  /** The failure holds only while this target does not show (e.g. a list without "Passkey"). */
  unless: targetSchema.optional(),
  /** How long the target must show (with `unless` absent) before it counts. */
  graceMs: z.number().int().nonnegative().default(0),
  /** Put the element's text (the page's explanation) into the error message. */
  includeText: z.boolean().default(false),
  /** Not a failure while this screen may still be answered again (its `repeat` allows it). */
  retryScreen: z.string().optional(),
});
/** A page state that ends the flow with a reason. */
export type FailureMarker = z.infer<typeof failureSchema>;

/** A flow's data file. */
export const flowSchema = z.object({
  flow: z.string(),
  description: z.string(),
  /** Where the selectors and texts come from: the public evidence they were checked against. */
  sources: z.array(z.string()).default([]),
  /** Page languages (`<html lang>` primary subtags) whose texts the flow has. */
  languages: z.array(z.string().regex(/^[a-z]{2,3}$/)).min(1),
  /** The page to open, per cloud name (`public`, `sandbox`, …); `{loginBase}` is the cloud's sign-in base URL. */
  startUrls: z.record(z.string(), z.string().min(1)),
  /** Selectors of fields whose content is secret: covered in screenshots. */
  maskSelectors: z.array(z.string()).default([]),
  failures: z.array(failureSchema).default([]),
  screens: z.array(screenSchema).min(1),
  /** The flow is done when this shows. */
  goal: targetSchema,
  /** The whole flow's bound. */
  timeoutMs: z.number().int().positive().max(3_600_000).default(300_000),
  /** The flow stops with `page-changed` when no screen was answered for this long. */
  stallMs: z.number().int().positive().max(3_600_000).default(60_000),
  /** Manual mode: how long the admin has, and how often Graph is asked. */
  watch: z.object({
    timeoutMs: z.number().int().positive(),
    graphPollMs: z.number().int().positive(),
  }).optional(),
}).refine(
  (f) => f.failures.every((x) => !x.retryScreen || f.screens.some((s) => s.name === x.retryScreen)),
  "a failure's retryScreen must name a screen",
);
/** A browser flow, parsed. */
export type BrowserFlow = z.infer<typeof flowSchema>;

/** Parses a flow data file; a bad file is a TypeError naming the field (a packaging bug). */
export function parseFlow(json: unknown, name: string): BrowserFlow {
  const parsed = flowSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new TypeError(
      `Cannot load browser flow "${name}": ${issue?.path.join(".") || "(file)"} ${
        issue?.message ?? "is invalid"
      }`,
    );
  }
  return parsed.data;
}
