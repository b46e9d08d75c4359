/**
 * The one rate controller all workers of a bulk run share ({@link AdaptivePacer}), so that a run
 * sustains the provider's limit without a storm of "429 Too Many Requests".
 *
 * Providers meter requests with token buckets (Microsoft Graph: resource units per 10 s, and
 * 3,000 writes per 150 s per app and tenant). A bucket starts full, so a run first goes as fast as
 * it can; the first throttling answer then
 *
 * - closes a gate for every worker until the `Retry-After` the provider asked for (tokens keep
 *   accumulating meanwhile, so the wait costs no throughput), and
 * - switches the kind of request it hit (reads or writes, which have separate quotas) to paced
 *   sending: evenly spaced slots at a rate estimated from what got through in the last seconds,
 *   cut by a factor on each later throttling episode and raised a little with every success.
 *
 * The rate thus oscillates closely around the bucket's refill rate, with one short throttling
 * episode per cycle (a few requests that were already in flight) instead of one per worker per
 * second.
 *
 * @example
 * ```ts
 * import { AdaptivePacer } from "./rate.ts";
 * const pacer = new AdaptivePacer();
 * await pacer.admit("write"); // unpaced until the first throttling answer
 * pacer.throttled("write", 10);
 * console.assert(pacer.rate("write") > 0);
 * ```
 *
 * @module
 */
import type { RequestPacer } from "../plugin.ts";
import { sleep } from "../sleep.ts";

/** Options of {@link AdaptivePacer}. */
export interface AdaptivePacerOptions {
  /** Multiplies the rate on each throttling episode after the first. @default 0.85 */
  decrease?: number;
  /** Fraction by which the rate grows over `increaseSeconds` of successful paced sending. @default 0.05 */
  increase?: number;
  /** @default 2 */
  increaseSeconds?: number;
  /** Never pace below this many requests per second. @default 0.2 */
  minRate?: number;
  /** The wait when a throttling answer names none, in ms. @default 1000 */
  defaultRetryAfterMs?: number;
  /** Seconds of successes the first estimate is taken from. @default 5 */
  estimateSeconds?: number;
  /** Told of each throttling episode (first answer of a gate), for progress output. */
  onThrottled?: (info: { kind: RequestKind; retryAfterMs: number; ratePerSecond: number }) => void;
  /** @default Date.now */
  now?: () => number;
  /** Waits `ms`, rejecting when `signal` aborts. @default a timer */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

/** Reads and writes have separate quotas. */
export type RequestKind = "read" | "write";

interface Lane {
  /** Requests per second; Infinity until the first throttling answer. */
  rate: number;
  /** Time of the next free slot when paced. */
  nextSlot: number;
  /** No request of this kind before this time. */
  gateUntil: number;
  /** Times of recent successes (ms), for the first estimate. */
  recent: number[];
}

/** See the module documentation. */
export class AdaptivePacer implements RequestPacer {
  readonly #options: Required<Omit<AdaptivePacerOptions, "onThrottled">> & {
    onThrottled?: AdaptivePacerOptions["onThrottled"];
  };
  readonly #lanes: Record<RequestKind, Lane> = { read: newLane(), write: newLane() };
  #throttledTotal = 0;

  constructor(options: AdaptivePacerOptions = {}) {
    this.#options = {
      decrease: options.decrease ?? 0.85,
      increase: options.increase ?? 0.05,
      increaseSeconds: options.increaseSeconds ?? 2,
      minRate: options.minRate ?? 0.2,
      defaultRetryAfterMs: options.defaultRetryAfterMs ?? 1000,
      estimateSeconds: options.estimateSeconds ?? 5,
      now: options.now ?? Date.now,
      sleep: options.sleep ?? sleep,
      ...(options.onThrottled ? { onThrottled: options.onThrottled } : {}),
    };
  }

  /** The current paced rate of a kind, requests per second (Infinity while unpaced). */
  rate(kind: RequestKind): number {
    return this.#lanes[kind].rate;
  }

  /** Throttling answers reported so far. */
  get throttledTotal(): number {
    return this.#throttledTotal;
  }

  /** Waits for the gate and, once paced, for the next free slot of this kind. */
  async admit(kind: RequestKind, signal?: AbortSignal): Promise<void> {
    const lane = this.#lanes[kind];
    while (true) {
      signal?.throwIfAborted();
      const now = this.#options.now();
      const wait = lane.gateUntil - now;
      if (wait > 0) {
        await this.#options.sleep(wait, signal);
        continue;
      }
      if (!Number.isFinite(lane.rate)) return;
      const slot = Math.max(now, lane.nextSlot);
      lane.nextSlot = slot + 1000 / lane.rate;
      if (slot > now) await this.#options.sleep(slot - now, signal);
      // A throttling answer may have closed the gate while this request waited for its slot.
      if (lane.gateUntil > this.#options.now()) continue;
      return;
    }
  }

  /** Closes the gate for `retryAfterMs` and lowers (or first sets) the paced rate. */
  throttled(kind: RequestKind, retryAfterMs: number | undefined): void {
    this.#throttledTotal++;
    const lane = this.#lanes[kind];
    const now = this.#options.now();
    const wait = Math.max(0, retryAfterMs ?? this.#options.defaultRetryAfterMs);
    // Answers to requests that were in flight when the gate closed belong to the same episode.
    const newEpisode = now >= lane.gateUntil;
    lane.gateUntil = Math.max(lane.gateUntil, now + wait);
    if (!newEpisode) return;
    if (Number.isFinite(lane.rate)) {
      lane.rate = Math.max(this.#options.minRate, lane.rate * this.#options.decrease);
    } else {
      const since = now - this.#options.estimateSeconds * 1000;
      const recent = lane.recent.filter((t) => t >= since);
      const span = recent.length > 1
        ? Math.max(1000, now - recent[0]!)
        : this.#options.estimateSeconds * 1000;
      lane.rate = Math.max(this.#options.minRate, (recent.length / (span / 1000)) * this.#options.decrease);
      lane.recent = [];
    }
    lane.nextSlot = lane.gateUntil;
    this.#options.onThrottled?.({ kind, retryAfterMs: wait, ratePerSecond: lane.rate });
  }

  /** Records a success: feeds the first estimate, and once paced raises the rate a little. */
  succeeded(kind: RequestKind): void {
    const lane = this.#lanes[kind];
    if (!Number.isFinite(lane.rate)) {
      const now = this.#options.now();
      lane.recent.push(now);
      // Keep only what the estimate can use.
      if (lane.recent.length > 4096) lane.recent.splice(0, lane.recent.length - 4096);
      return;
    }
    // Over increaseSeconds at rate r there are r·increaseSeconds successes; together they add `increase`.
    const { increase, increaseSeconds } = this.#options;
    lane.rate += lane.rate * increase / Math.max(1, lane.rate * increaseSeconds);
  }
}

function newLane(): Lane {
  return { rate: Infinity, nextSlot: 0, gateUntil: 0, recent: [] };
}
