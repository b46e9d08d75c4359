import { assert, assertEquals } from "../../test/assert.ts";
import { AdaptivePacer } from "./rate.ts";

/** A clock that sleeping advances: the pacer's waits become readable numbers. */
function virtualClock() {
  let now = 1_000_000;
  const waits: number[] = [];
  return {
    now: () => now,
    sleep: (ms: number) => {
      waits.push(ms);
      now += ms;
      return Promise.resolve();
    },
    advance: (ms: number) => now += ms,
    waits,
  };
}

Deno.test("pacer: unpaced until throttled, then gated for Retry-After and paced near the observed rate", async () => {
  const clock = virtualClock();
  const events: number[] = [];
  const pacer = new AdaptivePacer({ ...clock, onThrottled: (e) => events.push(e.ratePerSecond) });
  for (let i = 0; i < 50; i++) {
    await pacer.admit("write");
    pacer.succeeded("write");
    clock.advance(100); // 10 writes per second got through
  }
  assertEquals(clock.waits.length, 0);
  assertEquals(pacer.rate("write"), Infinity);

  pacer.throttled("write", 2000);
  assertEquals(events.length, 1);
  const rate = pacer.rate("write");
  assert.ok(rate > 7 && rate < 10, `paced at ${rate}/s`);
  // Answers of requests already in flight belong to the same episode: no second cut.
  pacer.throttled("write", 2000);
  assertEquals(pacer.rate("write"), rate);
  assertEquals(events.length, 1);

  await pacer.admit("write");
  assertEquals(clock.waits[0], 2000, "the gate holds for Retry-After");
  await pacer.admit("write");
  assertEquals(Math.round(clock.waits.at(-1)!), Math.round(1000 / rate), "then evenly spaced slots");
  // Reads have their own quota: not gated.
  const before = clock.waits.length;
  await pacer.admit("read");
  assertEquals(clock.waits.length, before);
  assertEquals(pacer.throttledTotal, 2);
});

Deno.test("pacer: successes raise the rate a little; a later episode cuts it by the factor", () => {
  const clock = virtualClock();
  const pacer = new AdaptivePacer({ ...clock, decrease: 0.5 });
  pacer.throttled("read", 1000);
  const start = pacer.rate("read");
  assertEquals(start, 0.2, "no successes seen: the floor");
  clock.advance(2000);
  pacer.throttled("read", 1000);
  assertEquals(pacer.rate("read"), 0.2, "never below the floor");
  for (let i = 0; i < 100; i++) pacer.succeeded("read");
  const raised = pacer.rate("read");
  assert.ok(raised > 0.2);
  clock.advance(2000);
  pacer.throttled("read", 1000);
  assertEquals(pacer.rate("read"), Math.max(0.2, raised * 0.5));
});

Deno.test("pacer: an abort ends the wait", async () => {
  const pacer = new AdaptivePacer();
  pacer.throttled("write", 60_000);
  const controller = new AbortController();
  const waiting = pacer.admit("write", controller.signal);
  controller.abort(new Error("stop"));
  let error: unknown;
  try {
    await waiting;
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof Error && error.message === "stop");
});
