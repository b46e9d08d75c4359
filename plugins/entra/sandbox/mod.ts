/**
 * The Microsoft Entra sandbox tenant: a local stand-in for `login.microsoftonline.com` and
 * `graph.microsoft.com` that the Entra plugin, its tests, `deno task demo` and
 * `provisioning sandbox` run against.
 *
 * @module
 */
export * from "./server.ts";
export * from "./tenant.ts";
export * from "./graph.ts";
export * from "./throttle.ts";
export * from "./oauth.ts";
export * from "./registration.ts";
export * from "./pages.ts";
