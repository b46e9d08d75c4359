/**
 * The Entra browser flows, loaded from their data files: automatic_flow.json (the tool signs in
 * with a TAP and adds the security key) and manual_flow.json (the tool signs in, the admin adds
 * the key). Edit the JSON, not this file, when Microsoft's pages change.
 *
 * @example
 * ```ts
 * import { automaticFlow } from "./flows.ts";
 * console.assert(automaticFlow.screens.some((screen) => screen.name === "enter-tap"));
 * ```
 *
 * @module
 */
import { type BrowserFlow, parseFlow } from "../../../core/browser/flow.ts";
import automaticJson from "./automatic_flow.json" with { type: "json" };
import manualJson from "./manual_flow.json" with { type: "json" };

/** The automatic flow: the tool signs in with a TAP and adds the security key itself. */
export const automaticFlow: BrowserFlow = parseFlow(automaticJson, "automatic_flow.json");

/** The manual flow: the tool signs in (optionally), the admin adds the key, the tool watches. */
export const manualFlow: BrowserFlow = parseFlow(manualJson, "manual_flow.json");
