/**
 * The panel's server: a web UI (server-rendered pages that work without JavaScript) and a
 * versioned JSON API (`/api/v1/…`, described by the OpenAPI document at `/api/v1/openapi.json`)
 * over the panel's store (core/panel/store/mod.ts). docs/panel.md describes the API and the auth
 * model.
 *
 * `servePanel` is the whole `provisioning panel` run for the CLI to call (open the database, serve
 * until a signal); `startPanel` is the server itself: it serves on
 * 127.0.0.1 unless given a TLS certificate, prints the first-run bootstrap link of a panel without
 * an owner, and returns a handle to close.
 *
 * @example
 * ```ts
 * import { openPanelStore } from "../store/mod.ts";
 * import { startPanel } from "./mod.ts";
 * const dir = await Deno.makeTempDir();
 * await using store = await openPanelStore({ database: `${dir}/panel.sqlite` });
 * const lines: string[] = [];
 * await using panel = await startPanel({ store, listen: { port: 0 }, print: (line) => lines.push(line) });
 * const answer = await fetch(new URL("/api/v1/openapi.json", panel.url));
 * console.assert(answer.status === 200 && (await answer.json()).openapi === "3.1.0");
 * console.assert(panel.bootstrapLink !== null && lines.length === 1);
 * await panel.close();
 * await store.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
export {
  isLoopback,
  panelDefaults,
  type PanelListen,
  type RunningPanel,
  startPanel,
  type StartPanelOptions,
} from "./server.ts";
export { openApiDocument } from "./openapi.ts";
export type { ProviderSignIn } from "./provider_sign_in.ts";
export { servePanel, type ServePanelOptions } from "./serve.ts";
export { apiRoutes } from "./api.ts";
export { pageRoutes } from "./pages.ts";
export type { Route } from "./routes.ts";
