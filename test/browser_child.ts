/**
 * A process that launches the browser and waits forever, for the watchdog test
 * (browser_watchdog_test.ts): prints the browser's profile folder, then sleeps until killed.
 *
 * @module
 */
import { launchBrowser } from "../core/browser/driver.ts";

const parent = Deno.args[0];
const browser = await launchBrowser(parent ? { profileParent: parent } : {});
console.log(JSON.stringify({ pid: browser.pid }));
await new Promise(() => {});
