import fc from "fast-check";
import { assert, assertEquals, deepStrictEqual } from "../../test/assert.ts";
import type { JobEvent, RunCounts } from "../jobs/events.ts";
import { memoryWriter, type TextWriter } from "./context.ts";
import {
  createProgressReporter,
  formatProgress,
  type ProgressClock,
  type ProgressOptions,
  type ProgressSnapshot,
} from "./progress.ts";

const CLEAR = "\r\x1b[2K";

/** A clock whose time moves only when the test says so, firing due timers in order. */
class ManualClock implements ProgressClock {
  time = Date.UTC(2025, 0, 2, 3, 4, 5);
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

function started(partial: Partial<Extract<JobEvent, { type: "run-started" }>> = {}): JobEvent {
  return {
    type: "run-started",
    runId: "r1",
    resumed: false,
    alreadyDone: 0,
    concurrency: 8,
    dryRun: false,
    ...partial,
  };
}

function finished(row: number, outcome: "provisioned" | "skipped" | "failed" = "provisioned"): JobEvent {
  return outcome === "failed"
    ? {
      type: "user-finished",
      row,
      user: `u${row}@contoso.com`,
      outcome,
      code: "user-not-found",
      message: "gone",
    }
    : { type: "user-finished", row, user: `u${row}@contoso.com`, outcome };
}

function setup(options: Partial<ProgressOptions> & { columns?: number } = {}) {
  const clock = new ManualClock();
  const writer = memoryWriter(options.columns ?? 120);
  const progress = createProgressReporter({ writer, clock, tty: true, ...options });
  return { clock, writer, progress };
}

/** What the terminal shows on its last line: the text after the last clear-line. */
function lastBar(text: string): string {
  const at = text.lastIndexOf(CLEAR);
  return at === -1 ? "" : text.slice(at + CLEAR.length);
}

function draws(text: string): number {
  return text.split(CLEAR).length - 1;
}

Deno.test("on a terminal the bar is rewritten in place with counts, rate and ETA", () => {
  const { clock, writer, progress } = setup();
  progress.listener(started({ total: 100 }));
  for (let row = 1; row <= 30; row++) {
    clock.advance(1000);
    progress.listener(finished(row, row === 7 ? "failed" : row === 9 ? "skipped" : "provisioned"));
  }
  clock.advance(100);
  assertEquals(
    lastBar(writer.text()),
    "30/100 (30%) · [████░░░░░░░░░░░░] · 28 provisioned · 1 skipped · 1 failed · 60 users/min · ETA 1 min 10 s",
  );
  assert.ok(!writer.text().includes("\n30/100"), "the bar is never printed as a new line");
  deepStrictEqual(progress.snapshot().counts.byReason, { "user-not-found": 1 });
  progress.close();
  assertEquals(clock.pendingTimers, 0);
  assert.ok(writer.text().endsWith(CLEAR), "closing clears the bar");
});

Deno.test("the bar is redrawn at most every 100 ms, and the latest state is drawn when the interval ends", () => {
  const { clock, writer, progress } = setup();
  progress.listener(started({ total: 1000 }));
  clock.advance(500);
  const before = draws(writer.text());
  for (let row = 1; row <= 50; row++) progress.listener(finished(row));
  assertEquals(draws(writer.text()) - before, 1);
  clock.advance(99);
  assertEquals(draws(writer.text()) - before, 1);
  clock.advance(1);
  assertEquals(draws(writer.text()) - before, 2);
  assert.match(lastBar(writer.text()), /^50\/1,000 \(5%\)/);
  progress.close();
});

Deno.test("the throttling note counts down what the provider asked to wait, then goes", () => {
  const { clock, writer, progress } = setup();
  progress.listener(started({ total: 10 }));
  clock.advance(1000);
  progress.listener({ type: "throttled", retryAfterMs: 3000, ratePerSecond: 4 });
  clock.advance(100);
  assert.match(lastBar(writer.text()), / · throttled, waiting 2\.9 s$/);
  clock.advance(900);
  assert.match(lastBar(writer.text()), / · throttled, waiting 2\.0 s$/);
  clock.advance(2000);
  assert.match(lastBar(writer.text()), / · throttled, 4\.0 requests\/s$/);
  clock.advance(2000);
  assert.ok(!lastBar(writer.text()).includes("throttled"), lastBar(writer.text()));
  progress.close();
});

Deno.test("Ctrl+C shows in the bar; the run's end clears it and stops every timer", () => {
  const { clock, writer, progress } = setup();
  progress.listener(started({ total: 10 }));
  progress.listener({ type: "stopping", reason: "interrupt" });
  clock.advance(100);
  assert.match(lastBar(writer.text()), /^stopping · 0\/10 \(0%\)/);
  assert.ok(!writer.text().includes("Stopping"), "the Ctrl+C handler already printed the line");
  const summary = {
    runId: "r1",
    counts: { provisioned: 0, reconciled: 0, skipped: 0, dryRun: 0, failed: 0, byReason: {} },
    fromEarlierAttempts: 0,
    elapsedMs: 10,
    interrupted: true,
  };
  progress.listener({ type: "run-finished", summary });
  assertEquals(clock.pendingTimers, 0);
  assert.ok(writer.text().endsWith(CLEAR));
  clock.advance(60_000);
  assert.ok(writer.text().endsWith(CLEAR), "nothing is drawn after the end");
  progress.close();
});

Deno.test("the bar never wraps or throws, whatever the terminal says its width is", () => {
  for (const columns of [undefined, 0, 1, 2, 5, 12, 40, Number.NaN, -3, 10_000, Number.POSITIVE_INFINITY]) {
    const clock = new ManualClock();
    const writer: TextWriter & { lines: string[] } = {
      columns,
      lines: [],
      write(text: string) {
        this.lines.push(text);
      },
    };
    using progress = createProgressReporter({ writer, clock, tty: true });
    progress.listener(started({ total: 123_456, resumed: true, alreadyDone: 100_000 }));
    clock.advance(5000);
    progress.listener(finished(1));
    progress.listener({ type: "throttled", retryAfterMs: 30_000 });
    clock.advance(1000);
    const width = columns !== undefined && Number.isFinite(columns) && columns > 0
      ? Math.min(columns, 1000)
      : 80;
    const bars = writer.lines.filter((line) => line.startsWith(CLEAR)).map((line) =>
      line.slice(CLEAR.length)
    );
    assert.ok(bars.length > 0, String(columns));
    for (const bar of bars) assert.ok(bar.length <= width - 1 || bar.length === 0, `${columns}: ${bar}`);
  }
});

Deno.test("property: formatProgress fits any width and any snapshot without throwing", () => {
  const count = fc.nat({ max: 10_000_000 });
  const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined });
  const snapshot: fc.Arbitrary<ProgressSnapshot> = fc.record({
    runId: optional(fc.string()),
    total: optional(count),
    done: count,
    alreadyDone: count,
    counts: fc.record({
      provisioned: count,
      reconciled: count,
      skipped: count,
      dryRun: count,
      failed: count,
      byReason: fc.constant({}),
    }) as fc.Arbitrary<RunCounts>,
    dryRun: fc.boolean(),
    usersPerMinute: optional(fc.double({ min: 0, max: 1e7, noNaN: true })),
    etaMs: optional(fc.double({ min: 0, max: 1e12, noNaN: true })),
    throttle: optional(fc.record({
      waitMs: optional(fc.nat()),
      ratePerSecond: optional(fc.double({ min: 0, max: 1e4, noNaN: true })),
    })),
    stopping: fc.boolean(),
  });
  fc.assert(fc.property(snapshot, fc.integer({ min: -5, max: 300 }), fc.boolean(), (value, width, bar) => {
    const line = formatProgress(value, { width, bar });
    return line.length <= Math.max(0, width - 1) && !line.includes("\n");
  }));
  fc.assert(
    fc.property(snapshot, (value) => formatProgress(value, { width: Infinity }) === formatProgress(value)),
  );
});

Deno.test("without a terminal: a plain line every 10 s and every N users, with no escape codes", () => {
  const { clock, writer, progress } = setup({ tty: false, lineEveryUsers: 5 });
  progress.listener(started({ total: 20 }));
  for (let row = 1; row <= 5; row++) progress.listener(finished(row));
  clock.advance(10_000);
  const lines = writer.text().trimEnd().split("\n");
  assertEquals(lines.length, 3);
  assert.match(
    lines[0] ?? "",
    /^2025-01-02T03:04:05\.000Z INFO {2}progress: Run r1 started: 20 users, concurrency 8$/,
  );
  assert.match(lines[1] ?? "", /INFO {2}progress: 5\/20 \(25%\), 5 provisioned, 0 skipped, 0 failed$/);
  assert.match(
    lines[2] ?? "",
    /^2025-01-02T03:04:15\.000Z INFO {2}progress: 5\/20 \(25%\), .*, 30 users\/min, ETA 30 s$/,
  );
  assert.ok(!writer.text().includes("\r") && !writer.text().includes("\x1b"));
  progress.listener({ type: "stopping", reason: "abort" });
  assert.match(writer.text(), /WARN {2}progress: Stopping: finishing the users in flight\n$/);
  progress.close();
  assertEquals(clock.pendingTimers, 0);
});

Deno.test("a terminal is recognised by its columns unless told otherwise", () => {
  const clock = new ManualClock();
  const plain = memoryWriter();
  using a = createProgressReporter({ writer: plain, clock });
  a.listener(started());
  assert.ok(!plain.text().includes(CLEAR));
  const terminal = memoryWriter(80);
  using b = createProgressReporter({ writer: terminal, clock });
  b.listener(started());
  b.listener(finished(1));
  assert.ok(terminal.text().includes(CLEAR));
});

Deno.test("verbose: one line per step and per finished user, printed above the bar", () => {
  const { clock, writer, progress } = setup({ verbose: true });
  progress.listener(started({ total: 2 }));
  progress.listener({
    type: "user-state",
    row: 2,
    user: "alice@contoso.com",
    state: "resolved",
    detail: "object id 5f0c",
  });
  progress.listener({ type: "user-state", row: 2, user: "alice@contoso.com", state: "options" });
  progress.listener(finished(3, "failed"));
  clock.advance(100);
  const screen = writer.text().split("\n").map((line) => lastBarOrLine(line));
  deepStrictEqual(screen.slice(0, 4), [
    "Run r1 started: 2 users, concurrency 8",
    "alice@contoso.com (row 2): resolved, object id 5f0c",
    "alice@contoso.com (row 2): options",
    "u3@contoso.com (row 3): failed [user-not-found]: gone",
  ]);
  assert.match(lastBar(writer.text()), /^1\/2 \(50%\)/);
  progress.close();
});

/** A line as the terminal shows it once clear-line sequences have done their work. */
function lastBarOrLine(line: string): string {
  const at = line.lastIndexOf(CLEAR);
  return at === -1 ? line : line.slice(at + CLEAR.length);
}

Deno.test("without a terminal, verbose lines are timestamped log lines", () => {
  const { writer, progress } = setup({ tty: false, verbose: true });
  progress.listener({ type: "user-state", row: 4, user: "bob@contoso.com", state: "created" });
  progress.listener({ type: "throttled", retryAfterMs: 1500 });
  const lines = writer.text().trimEnd().split("\n");
  assert.match(lines[0] ?? "", /^\S+Z DEBUG progress: bob@contoso\.com \(row 4\): created$/);
  assert.match(lines[1] ?? "", /^\S+Z INFO {2}progress: Throttled by the provider: waiting 1\.5 s$/);
  progress.close();
});

Deno.test("a crafted user name cannot move the cursor or forge a line", () => {
  const { writer, progress } = setup({ verbose: true });
  progress.listener(started());
  progress.listener({ type: "user-state", row: 2, user: "eve\r\x1b[2Kadmin\n", state: "queued" });
  const text = writer.text();
  assert.ok(text.includes("eve\\r\\u001b[2Kadmin\\n (row 2): queued\n"), JSON.stringify(text));
  progress.close();
});

Deno.test("json: one line per event in the log sink's shape, per-step events only when verbose, no bar", () => {
  for (const verbose of [false, true]) {
    const { clock, writer, progress } = setup({ format: "json", verbose });
    progress.listener(started({ total: 3 }));
    progress.listener({ type: "user-state", row: 2, user: "alice@contoso.com", state: "options" });
    progress.listener(finished(2));
    progress.listener(finished(3, "failed"));
    progress.listener({ type: "throttled", ratePerSecond: 2 });
    clock.advance(10_000);
    assert.ok(!writer.text().includes(CLEAR));
    const lines = writer.text().trimEnd().split("\n").map((line) => JSON.parse(line));
    deepStrictEqual(
      lines.map((line) => `${line.level}:${line.fields.type}`),
      [
        "info:run-started",
        ...(verbose ? ["debug:user-state"] : []),
        "info:user-finished",
        "warning:user-finished",
        "info:throttled",
        "info:progress",
      ],
    );
    for (const line of lines) {
      deepStrictEqual(Object.keys(line), ["time", "level", "category", "message", "fields"]);
      assertEquals(line.category, "provisioning.progress");
    }
    const progressLine = lines.at(-1);
    assertEquals(progressLine.fields.done, 2);
    assertEquals(progressLine.fields.total, 3);
    assertEquals(progressLine.fields.counts.failed, 1);
    assertEquals(progressLine.fields.throttled, false);
    progress.close();
    assertEquals(clock.pendingTimers, 0);
  }
});

Deno.test("the writer keeps the bar intact around other output and pauses it while a prompt waits", () => {
  const { clock, writer, progress } = setup();
  progress.listener(started({ total: 4 }));
  progress.listener(finished(1));
  clock.advance(100);
  progress.writer.write("2025-01-02T03:04:05.000Z WARN  jobs: Graph answered 503\n");
  assertEquals(
    writer.text().slice(writer.text().indexOf("1/4")),
    `1/4 (25%) · [████░░░░░░░░░░░░] · 1 provisioned · 0 skipped · 0 failed${CLEAR}2025-01-02T03:04:05.000Z WARN  jobs: Graph answered 503\n`,
  );
  clock.advance(100);
  assert.match(lastBar(writer.text()), /^1\/4/);
  progress.writer.write("PIN for Security Key: ");
  const atPrompt = writer.text().length;
  progress.listener(finished(2));
  clock.advance(5000);
  assertEquals(writer.text().length, atPrompt, "nothing is drawn over a prompt");
  progress.writer.write("\n");
  clock.advance(100);
  assert.match(lastBar(writer.text()), /^2\/4/);
  assertEquals(progress.writer.columns, 120);
  progress.close();
  progress.writer.write("after\n");
  assert.ok(writer.text().endsWith("after\n"));
});

Deno.test("a resumed run counts earlier users as done but measures the rate on this attempt", () => {
  const { clock, progress } = setup();
  progress.listener(started({ total: 100, resumed: true, alreadyDone: 50 }));
  for (let row = 1; row <= 10; row++) {
    clock.advance(1000);
    progress.listener(finished(row));
  }
  const snapshot = progress.snapshot();
  assertEquals(snapshot.done, 60);
  assertEquals(snapshot.usersPerMinute, 60);
  assertEquals(snapshot.etaMs, 40_000);
  progress.close();
});

Deno.test("the rate covers the recent window only: a stall brings it to zero and hides the ETA", () => {
  const { clock, progress } = setup({ rateWindowMs: 10_000 });
  progress.listener(started({ total: 100 }));
  for (let row = 1; row <= 10; row++) {
    clock.advance(500);
    progress.listener(finished(row));
  }
  assertEquals(progress.snapshot().usersPerMinute, 120);
  clock.advance(20_000);
  assertEquals(progress.snapshot().usersPerMinute, 0);
  assertEquals(progress.snapshot().etaMs, undefined);
  progress.close();
});

Deno.test("the listener never throws into the engine, even when stderr does", () => {
  const clock = new ManualClock();
  const broken: TextWriter = {
    columns: 80,
    write() {
      throw new Error("EIO");
    },
  };
  for (const tty of [true, false]) {
    using progress = createProgressReporter({ writer: broken, clock, tty, verbose: true });
    progress.listener(started({ total: 2 }));
    progress.listener(finished(1));
    clock.advance(20_000);
  }
  assertEquals(clock.pendingTimers, 0);
});

Deno.test("with the real clock, closing leaves no timer behind", () => {
  const writer = memoryWriter(80);
  const progress = createProgressReporter({ writer });
  progress.listener(started({ total: 5 }));
  progress.listener(finished(1));
  progress.listener(finished(2));
  progress.close();
  progress.close();
});
