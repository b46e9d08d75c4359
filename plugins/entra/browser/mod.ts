/**
 * The Entra browser path: {@link registerInBrowser} for one user (automatic or manual), the
 * flows' data, and the reason codes.
 *
 * @module
 */
export * from "./register.ts";
export * from "./errors.ts";
export * from "./flows.ts";
