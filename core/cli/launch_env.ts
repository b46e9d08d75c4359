/**
 * The environment variable the launcher (core/cli/launch.ts) sets for the program it starts, in a
 * module of its own so that the program can read it without importing the launcher.
 *
 * @module
 */

/** Set to `1` in the program's environment by the launcher: it was started with its grants. */
export const LAUNCHED_ENV = "PROVISIONING_LAUNCHED";
