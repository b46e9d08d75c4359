/**
 * The receiving side of a CTAPHID packet transport: packets that arrived before anyone asked for
 * them, and receivers waiting for the next one. Every transport (a Unix socket, hidraw, hidapi)
 * reads packets in a loop of its own and hands them here; `receive` takes them in order, and the
 * end of the transport (closed, unplugged) fails every waiting and later receive.
 *
 * @example
 * ```ts
 * import { PacketQueue } from "./packet_queue.ts";
 * const queue = new PacketQueue();
 * const next = queue.take(undefined);
 * queue.push(new Uint8Array(64).fill(1));
 * console.assert((await next)[0] === 1);
 * queue.end(new Error("closed"));
 * await queue.take(undefined).catch((error) => console.assert(error.message === "closed"));
 * ```
 *
 * @module
 */

/** Packets that arrived before anyone asked, and receivers waiting for packets. */
export class PacketQueue {
  readonly #packets: Uint8Array[] = [];
  readonly #waiters = new Set<{ resolve: (packet: Uint8Array) => void; reject: (error: unknown) => void }>();
  #ended: Error | undefined;

  /** Hands a packet to the first waiting receiver, or keeps it for the next one. */
  push(packet: Uint8Array): void {
    const waiter = this.#waiters.values().next().value;
    if (waiter) {
      this.#waiters.delete(waiter);
      waiter.resolve(packet);
    } else {
      this.#packets.push(packet);
    }
  }

  /** Ends the queue: waiting and later receivers get `error` (the first end wins). */
  end(error: Error): void {
    if (this.#ended) return;
    this.#ended = error;
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters.clear();
  }

  /** The next packet; rejects with the end's error, or the signal's reason when it aborts. */
  take(signal: AbortSignal | undefined): Promise<Uint8Array> {
    const packet = this.#packets.shift();
    if (packet) return Promise.resolve(packet);
    if (this.#ended) return Promise.reject(this.#ended);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal?.reason);
      };
      const waiter = {
        resolve: (packet: Uint8Array) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(packet);
        },
        reject: (error: unknown) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.#waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}
