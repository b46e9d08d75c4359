/**
 * Connects a bulk run's shared rate controller (core's `RequestPacer`) to a {@link GraphClient}:
 * every attempt waits for the pacer, every answer tells it how things went. Writes (POST, PATCH,
 * PUT, DELETE) are paced apart from reads, since Graph's identity service meters them with their
 * own quota (3,000 per 150 s per app and tenant) besides the resource units every request costs.
 *
 * @example
 * ```ts
 * import { pacerObserver } from "./pacer_observer.ts";
 * import { AdaptivePacer } from "../../../core/jobs/rate.ts";
 * const observer = pacerObserver(new AdaptivePacer());
 * console.assert(typeof observer.beforeRequest === "function");
 * ```
 *
 * @module
 */
import type { RequestPacer } from "../../../core/plugin.ts";
import type { GraphTrafficObserver } from "./client.ts";

/** The {@link GraphTrafficObserver} that feeds `pacer`. */
export function pacerObserver(pacer: RequestPacer): GraphTrafficObserver {
  return {
    beforeRequest: (event, signal) => pacer.admit(kindOf(event.method), signal),
    onResponse: (event) => {
      // Only answers Graph gave without strain raise the pace; 429 and 5xx never do.
      if (event.status < 500 && event.status !== 429) pacer.succeeded(kindOf(event.method));
    },
    onBackoff: (event) => {
      if (event.kind === "throttled") pacer.throttled(kindOf(event.method), event.retryAfterMs);
    },
  };
}

function kindOf(method: string): "read" | "write" {
  return method === "GET" || method === "HEAD" ? "read" : "write";
}
