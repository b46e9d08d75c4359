/**
 * Test support shared by the CTAPHID tests: a manual clock for timers, and small CTAP handlers
 * standing in for an authenticator behind the framing (the framing is what those tests test).
 *
 * @module
 */
import type { CtapCallOptions, CtapDevice } from "./device.ts";
import type { DeviceClock } from "./hid_device.ts";
import { CtapStatus } from "./status.ts";

/** A clock whose time moves only when the test says so, firing due timers in order. */
export class ManualClock implements DeviceClock {
  time = 0;
  readonly #timers = new Map<number, { at: number; callback: () => void }>();
  #nextId = 1;

  now(): number {
    return this.time;
  }
  setTimeout(callback: () => void, ms: number): number {
    const id = this.#nextId++;
    this.#timers.set(id, { at: this.time + ms, callback });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.#timers.delete(handle as number);
  }
  get pendingTimers(): number {
    return this.#timers.size;
  }
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      let due: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.#timers) {
        if (entry[1].at <= end && (!due || entry[1].at < due[1].at)) due = entry;
      }
      if (!due) break;
      this.#timers.delete(due[0]);
      this.time = due[1].at;
      due[1].callback();
    }
    this.time = end;
  }
}

/** Lets every pending promise callback run. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A handler that answers CTAP2_OK followed by the request, at once. */
export const echoHandler: CtapDevice = {
  transceive: (request) => Promise.resolve(Uint8Array.of(CtapStatus.CTAP2_OK, ...request)),
};

/** A handler that waits until released or aborted, like a key waiting for a touch. */
export class WaitingHandler implements CtapDevice {
  readonly calls: { request: Uint8Array; options: CtapCallOptions }[] = [];
  #release: ((response: Uint8Array) => void) | undefined;
  askForTouch = false;

  transceive(request: Uint8Array, options: CtapCallOptions = {}): Promise<Uint8Array> {
    this.calls.push({ request, options });
    if (this.askForTouch) options.onKeepalive?.("user-presence-needed");
    return new Promise((resolve, reject) => {
      this.#release = resolve;
      options.signal?.addEventListener("abort", () => reject(options.signal?.reason), { once: true });
    });
  }
  release(response: Uint8Array): void {
    this.#release?.(response);
  }
}
