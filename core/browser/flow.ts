/**
 * The shape of a browser flow's data file: where to start per cloud, the steps with their
 * targets, timeouts and failure reasons, and the failure markers watched during every step.
 * Flows are data so that a change in a provider's pages is a data fix: targets list CSS
 * selectors keyed on stable attributes (`id`, `name`, `data-testid`, `role`) first, and
 * localised visible texts as a fallback. The runner is steps.ts; the Entra flows live in
 * plugins/entra/browser/*_flow.json.
 *
 * @example
 * ```ts
 * import { parseFlow } from "./flow.ts";
 * const flow = parseFlow({
 *   flow: "demo",
 *   description: "one click",
 *   startUrls: { sandbox: "{loginBase}/" },
 *   steps: [{ name: "go", action: "click", target: { selectors: ["#go"] }, timeoutMs: 1000 }],
 * }, "demo.json");
 * console.assert(flow.steps[0]?.reason === "page-changed");
 * ```
 *
 * @module
 */
import { z } from "zod";

const reason = z.string().regex(/^[a-z][a-z0-9-]*$/, "must be a kebab-case reason code");

/** How an element is found: selectors in order, then localised texts. */
export const targetSchema = z.object({
  /** CSS selectors, tried in order; stable attributes first. */
  selectors: z.array(z.string().min(1)).default([]),
  /** Visible texts (or aria-labels, or button values) by language tag, matched whole and case-insensitively. */
  texts: z.record(z.string(), z.array(z.string().min(1))).default({}),
  /** The elements the texts are looked for in. */
  textScope: z.string().default(
    "button, a, [role=button], [role=option], [role=menuitem], [role=alert], input[type=submit], input[type=button], label, li",
  ),
}).refine(
  (t) => t.selectors.length > 0 || Object.keys(t.texts).length > 0,
  "a target needs selectors or texts",
);
/** How an element is found. */
export type Target = z.infer<typeof targetSchema>;

/** A page state that ends the flow with a reason, e.g. the "wrong pass" message. */
export const failureSchema = z.object({
  reason,
  target: targetSchema,
  /** Put the element's text (the page's explanation) into the error message. */
  includeText: z.boolean().default(false),
});
/** A page state that ends the flow with a reason. */
export type FailureMarker = z.infer<typeof failureSchema>;

/** One step: wait for its target, then act on it. */
export const stepSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]*$/),
  /** `fill` types a value into the target, `click` clicks it, `wait` only waits for it. */
  action: z.enum(["fill", "click", "wait"]),
  target: targetSchema,
  /** What `fill` types: the user's sign-in name, the Temporary Access Pass, the passkey's name. */
  value: z.enum(["upn", "tap", "displayName"]).optional(),
  /** Skipped when the next step's target shows up first (e.g. "Stay signed in?"). */
  optional: z.boolean().default(false),
  /** How long the target may take to show up. */
  timeoutMs: z.number().int().positive().max(3_600_000),
  /** The reason when it never shows up. */
  reason: reason.default("page-changed"),
  /** When `container` shows and the target does not within `graceMs`, fail with `reason` (an option the policy hides). */
  whenMissing: z.object({
    container: targetSchema,
    reason,
    graceMs: z.number().int().nonnegative().default(1500),
  }).optional(),
  /** Failure markers watched during this step only. */
  failures: z.array(failureSchema).default([]),
}).refine((s) => s.action !== "fill" || s.value !== undefined, "a fill step needs a value");
/** One step of a flow. */
export type FlowStep = z.infer<typeof stepSchema>;

/** A flow's data file. */
export const flowSchema = z.object({
  flow: z.string(),
  description: z.string(),
  /** The page to open, per cloud name (`public`, `sandbox`, …); `{loginBase}` is the cloud's sign-in base URL. */
  startUrls: z.record(z.string(), z.string().min(1)),
  /** Selectors of fields whose content is secret: covered in failure screenshots. */
  maskSelectors: z.array(z.string()).default([]),
  /** Failure markers watched during every step. */
  failures: z.array(failureSchema).default([]),
  steps: z.array(stepSchema).min(1),
  /** Manual mode: how long the admin has, and how often Graph is asked. */
  watch: z.object({
    timeoutMs: z.number().int().positive(),
    graphPollMs: z.number().int().positive(),
  }).optional(),
});
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
