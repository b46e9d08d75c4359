/**
 * The few assertions the tests use, on top of `node:assert/strict` (JSR's @std/assert is not
 * reachable from here).
 *
 * @module
 */
import assert from "node:assert/strict";

/** Asserts `actual === expected`. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  assert.equal(actual, expected, message);
}

/** Asserts deep structural equality (Maps, Uint8Arrays and class instances included). */
export function deepStrictEqual(actual: unknown, expected: unknown, message?: string): void {
  assert.deepStrictEqual(actual, expected, message);
}

/** Asserts that `fn` throws an instance of `type` and returns the error. */
export function throws<E extends Error>(
  fn: () => unknown,
  type: abstract new (...args: never[]) => E,
  message?: string,
): E {
  try {
    fn();
  } catch (error) {
    if (error instanceof type) return error;
    throw new assert.AssertionError({
      message: `${message ?? ""} threw ${String(error)}, expected ${type.name}`,
    });
  }
  throw new assert.AssertionError({ message: `${message ?? ""} did not throw ${type.name}` });
}

/** Asserts that `promise` rejects with an instance of `type` and returns the error. */
export async function rejects<E extends Error>(
  promise: Promise<unknown> | (() => Promise<unknown>),
  type: abstract new (...args: never[]) => E,
  message?: string,
): Promise<E> {
  try {
    await (typeof promise === "function" ? promise() : promise);
  } catch (error) {
    if (error instanceof type) return error;
    throw new assert.AssertionError({
      message: `${message ?? ""} rejected with ${String(error)}, expected ${type.name}`,
    });
  }
  throw new assert.AssertionError({ message: `${message ?? ""} did not reject with ${type.name}` });
}

export { assert };
