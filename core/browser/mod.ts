/**
 * The browser path's provider-neutral parts: finding and launching a browser, one private
 * context per user, the WebAuthn bridge, and failure captures.
 *
 * @module
 */
export * from "./find_browser.ts";
export * from "./driver.ts";
export * from "./bridge.ts";
export * from "./debug_capture.ts";
export type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
