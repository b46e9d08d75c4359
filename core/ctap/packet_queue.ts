/**
 * The receiving side of a CTAPHID packet transport: packets that arrived before anyone asked for
 * them, and receivers waiting for the next one. Every transport (a Unix socket, hidraw, hidapi)
 * reads packets in a loop of its own and hands them here; `receive` takes them in order, and the
 * end of the transport (closed, unplugged) fails every waiting and later receive.
 *
 * Packets nobody asked for are kept up to a bound (1024, eight maximum-size CTAPHID messages); past
 * it the oldest are dropped, so a device or server that floods cannot grow the program's memory.
 * A client discards stale packets anyway (CTAP 2.1 §11.2.4: a reply is matched by channel and
 * command).
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

/** Options of {@link PacketQueue}. */
export interface PacketQueueOptions {
  /**
   * Packets kept for later receivers at most; the oldest go first.
   * @default 1024
   */
  maxPackets?: number;
}

/** Packets that arrived before anyone asked, and receivers waiting for packets. */
export class PacketQueue {
  #packets: Uint8Array[] = [];
  #head = 0;
  readonly #maxPackets: number;
  #dropped = 0;
  readonly #waiters = new Set<{ resolve: (packet: Uint8Array) => void; reject: (error: unknown) => void }>();
  #ended: Error | undefined;

  constructor(options: PacketQueueOptions = {}) {
    this.#maxPackets = options.maxPackets ?? 1024;
  }

  /** Packets waiting for a receiver. */
  get size(): number {
    return this.#packets.length - this.#head;
  }

  /** Packets dropped because too many were waiting. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Hands a packet to the first waiting receiver, or keeps it for the next one. */
  push(packet: Uint8Array): void {
    const waiter = this.#waiters.values().next().value;
    if (waiter) {
      this.#waiters.delete(waiter);
      waiter.resolve(packet);
    } else {
      this.#packets.push(packet);
      if (this.size > this.#maxPackets) {
        this.#head++;
        this.#dropped++;
      }
      this.#compact();
    }
  }

  /** Ends the queue: waiting and later receivers get `error` (the first end wins). */
  end(error: Error): void {
    if (this.#ended) return;
    this.#ended = error;
    for (const waiter of this.#waiters) waiter.reject(error);
    this.#waiters.clear();
  }

  /** Drops the array's consumed head now and then (shift() on a long array is O(n) each time). */
  #compact(): void {
    if (this.#head > 256 && this.#head * 2 > this.#packets.length) {
      this.#packets = this.#packets.slice(this.#head);
      this.#head = 0;
    }
  }

  /** The next packet; rejects with the end's error, or the signal's reason when it aborts. */
  take(signal: AbortSignal | undefined): Promise<Uint8Array> {
    if (this.size > 0) {
      const packet = this.#packets[this.#head++]!;
      this.#compact();
      return Promise.resolve(packet);
    }
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
