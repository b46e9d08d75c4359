/**
 * The one abortable wait of the tool: resolves after `ms`, or rejects with the signal's reason as
 * soon as `signal` aborts (at once when it already has), clearing its timer either way so no test
 * leaks one. Backoffs, polling loops and pacing all wait through it.
 *
 * @example
 * ```ts
 * import { sleep } from "./sleep.ts";
 * const controller = new AbortController();
 * const waiting = sleep(60_000, controller.signal);
 * controller.abort(new Error("stop"));
 * await waiting.catch((error) => console.assert(error.message === "stop"));
 * ```
 *
 * @module
 */

/** Waits `ms` milliseconds; an abort of `signal` ends the wait with its reason. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * `promise`, or a rejection `timed out after <ms> ms` if it has not settled by then; the timer is
 * cleared either way. For steps that must not hang a run (closing a browser, a screenshot).
 */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
