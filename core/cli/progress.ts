/**
 * What the admin sees while a bulk run works, built from the engine's {@link JobEvent}s only:
 *
 * - on a terminal, one live line rewritten in place (`\r` + clear line) with done/total, a bar,
 *   provisioned/skipped/failed counts, users per minute over the last minute, the ETA when the
 *   total is known, and a note while the provider throttles; redrawn at most every 100 ms;
 * - without a terminal, plain timestamped lines every 10 s (and, if asked, every N users) that a
 *   log collector can read;
 * - with `verbose`, one line per step of each user and per finished user; without, a line per
 *   failed user only;
 * - with `format: "json"`, one JSON line per event (the log sink's shape: time, level, category,
 *   message, fields), per-step events at `debug` level, and a `progress` line every 10 s.
 *
 * Everything goes to the writer given (stderr): results never go to stdout from here. Lines that
 * other code prints while the bar is shown (log lines, prompts) should go through
 * {@link ProgressReporter.writer}, which clears the bar first and redraws it after.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createProgressReporter } from "./progress.ts";
 * import { memoryWriter } from "./context.ts";
 * const stderr = memoryWriter();
 * using progress = createProgressReporter({ writer: stderr, tty: false });
 * progress.listener({ type: "run-started", runId: "r1", resumed: false, alreadyDone: 0, total: 2, concurrency: 8, dryRun: false });
 * progress.listener({ type: "user-finished", row: 2, user: "alice@contoso.com", outcome: "provisioned" });
 * assert.equal(progress.snapshot().done, 1);
 * assert.match(stderr.text(), /INFO {2}progress: Run r1 started: 2 users, concurrency 8\n/);
 * ```
 *
 * @module
 */
import type { JobEvent, JobListener, RunCounts, UserOutcome } from "../jobs/events.ts";
import {
  escapeControl,
  formatLogLine,
  LOG_CATEGORY,
  type LogFormat,
  type LogLevel,
  redactText,
} from "../log.ts";
import type { TextWriter } from "./context.ts";
import { formatCount, formatDuration, formatRate } from "./summary.ts";

/** Time and timers for the reporter; a test passes a manual one. Times are ms since the epoch. */
export interface ProgressClock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The process's clock and timers. */
export const systemProgressClock: ProgressClock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as number),
};

/** Options of {@link createProgressReporter}. */
export interface ProgressOptions {
  /** Where progress goes: the CLI's stderr. */
  readonly writer: TextWriter;
  /** `json` writes one JSON line per event and never a bar. @default "text" */
  readonly format?: LogFormat;
  /** One line per step of each user (`--verbose`). @default false */
  readonly verbose?: boolean;
  /**
   * Whether `writer` is a terminal (a live bar) or not (plain lines).
   * @default writer.columns !== undefined (terminalWriter gives columns only to terminals)
   */
  readonly tty?: boolean;
  /** @default systemProgressClock */
  readonly clock?: ProgressClock;
  /** Shortest time between two redraws of the bar. @default 100 */
  readonly redrawIntervalMs?: number;
  /** The bar is redrawn this often even without events (elapsed time, throttling). @default 1000 */
  readonly refreshIntervalMs?: number;
  /** Without a terminal (or in JSON), a progress line this often. @default 10000 */
  readonly lineIntervalMs?: number;
  /** Without a terminal, also a progress line every this many finished users; 0 for none. @default 0 */
  readonly lineEveryUsers?: number;
  /** The window users/minute is measured over. @default 60000 */
  readonly rateWindowMs?: number;
  /** How long the throttling note stays after a `throttled` event (longer if Retry-After is). @default 5000 */
  readonly throttleNoteMs?: number;
}

/** The state of a run as the reporter knows it, for the bar, the lines and tests. */
export interface ProgressSnapshot {
  readonly runId: string | undefined;
  /** Users the source is expected to hold, when known. */
  readonly total: number | undefined;
  /** Users finished, those of earlier attempts included. */
  readonly done: number;
  /** Users an earlier attempt of the run finished. */
  readonly alreadyDone: number;
  /** Outcomes of this attempt. */
  readonly counts: Readonly<RunCounts>;
  readonly dryRun: boolean;
  /** Users finished per minute over the recent window; undefined until a second has passed. */
  readonly usersPerMinute: number | undefined;
  /** Time left at the current rate, when the total is known and the rate is not zero. */
  readonly etaMs: number | undefined;
  /** Set while the provider throttles: what is left of its Retry-After, and the rate slowed to. */
  readonly throttle:
    | { readonly waitMs: number | undefined; readonly ratePerSecond: number | undefined }
    | undefined;
  /** Ctrl+C was pressed: the run finishes the users in flight. */
  readonly stopping: boolean;
}

/** Options of {@link formatProgress}. */
export interface FormatProgressOptions {
  /**
   * Columns available; the line is kept to `width - 1` so it never wraps (`NaN` or less than 2
   * gives an empty line). @default unlimited
   */
  readonly width?: number;
  /** Include the `[████░░░░]` bar. @default false */
  readonly bar?: boolean;
  /** @default " · " */
  readonly separator?: string;
}

interface Segment {
  readonly text: string;
  /** Higher is dropped first when the line is too long; 0 is never dropped. */
  readonly drop: number;
}

const BAR_CELLS = 16;

/**
 * One line of progress from a snapshot, fitted to `width`: the least useful parts (the bar, the
 * earlier-attempt count, the ETA, …) are dropped first, then the line is cut with `…`. Never
 * throws, whatever the width (undefined, 0, 1, NaN).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatProgress } from "./progress.ts";
 * const snapshot = {
 *   runId: "r1", total: 1000, done: 250, alreadyDone: 0, dryRun: false, stopping: false,
 *   counts: { provisioned: 240, reconciled: 0, skipped: 5, dryRun: 0, failed: 5, byReason: {} },
 *   usersPerMinute: 150, etaMs: 300_000, throttle: undefined,
 * };
 * assert.equal(
 *   formatProgress(snapshot),
 *   "250/1,000 (25%) · 240 provisioned · 5 skipped · 5 failed · 150 users/min · ETA 5 min 00 s",
 * );
 * assert.equal(formatProgress(snapshot, { width: 30 }), "250/1,000 (25%) · 5 failed");
 * ```
 */
export function formatProgress(snapshot: ProgressSnapshot, options: FormatProgressOptions = {}): string {
  const separator = options.separator ?? " · ";
  const segments: Segment[] = [];
  const { counts, total, done } = snapshot;
  if (snapshot.stopping) segments.push({ text: "stopping", drop: 0 });
  const knownTotal = total !== undefined && total >= done && total > 0 ? total : undefined;
  const fraction = knownTotal === undefined ? undefined : done / knownTotal;
  const percent = fraction === undefined ? "" : ` (${Math.floor(fraction * 100)}%)`;
  segments.push({
    text: knownTotal === undefined
      ? `${formatCount(done)} done`
      : `${formatCount(done)}/${formatCount(knownTotal)}${percent}`,
    drop: 0,
  });
  if (options.bar && fraction !== undefined) {
    const filled = Math.min(BAR_CELLS, Math.floor(fraction * BAR_CELLS));
    segments.push({ text: `[${"█".repeat(filled)}${"░".repeat(BAR_CELLS - filled)}]`, drop: 6 });
  }
  if (snapshot.dryRun || counts.dryRun > 0) {
    segments.push({ text: `${formatCount(counts.dryRun)} would be provisioned`, drop: 1 });
  }
  if (!snapshot.dryRun || counts.provisioned > 0) {
    segments.push({ text: `${formatCount(counts.provisioned)} provisioned`, drop: 2 });
  }
  if (counts.reconciled > 0) segments.push({ text: `${formatCount(counts.reconciled)} reconciled`, drop: 5 });
  // A zero "skipped" says least of all; otherwise the count outlives the rate.
  segments.push({ text: `${formatCount(counts.skipped)} skipped`, drop: counts.skipped === 0 ? 7 : 4 });
  segments.push({ text: `${formatCount(counts.failed)} failed`, drop: 1 });
  if (snapshot.alreadyDone > 0) {
    segments.push({ text: `${formatCount(snapshot.alreadyDone)} from earlier`, drop: 5 });
  }
  if (snapshot.usersPerMinute !== undefined) {
    segments.push({ text: `${formatRate(snapshot.usersPerMinute)} users/min`, drop: 3 });
  }
  if (snapshot.etaMs !== undefined) segments.push({ text: `ETA ${formatDuration(snapshot.etaMs)}`, drop: 2 });
  if (snapshot.throttle !== undefined) {
    const { waitMs, ratePerSecond } = snapshot.throttle;
    const text = waitMs !== undefined && waitMs > 0
      ? `throttled, waiting ${formatDuration(waitMs)}`
      : ratePerSecond !== undefined
      ? `throttled, ${formatRate(ratePerSecond)} requests/s`
      : "throttled";
    segments.push({ text, drop: 1 });
  }
  return fit(segments, separator, options.width);
}

function fit(segments: Segment[], separator: string, width: number | undefined): string {
  const join = () => segments.map((segment) => segment.text).join(separator);
  if (width === undefined || width === Number.POSITIVE_INFINITY) return join();
  // NaN and negative widths leave no room: an empty line rather than a wrapped one.
  const max = Number.isFinite(width) ? Math.max(0, Math.floor(width) - 1) : 0;
  let line = join();
  while (line.length > max) {
    let worst = -1;
    for (let i = segments.length - 1; i >= 0; i--) {
      const drop = segments[i]?.drop ?? 0;
      if (drop > 0 && (worst === -1 || drop > (segments[worst]?.drop ?? 0))) worst = i;
    }
    if (worst === -1) break;
    segments.splice(worst, 1);
    line = join();
  }
  if (line.length <= max) return line;
  return max === 0 ? "" : `${line.slice(0, max - 1)}…`;
}

/** A bulk run's progress display; feed it events through {@link ProgressReporter.listener}. */
export interface ProgressReporter extends Disposable {
  /** Give this to the engine. Never throws. */
  readonly listener: JobListener;
  /**
   * A writer over the same output for anything else printed during the run (log lines, prompts):
   * on a terminal it clears the bar, writes, and redraws the bar after a complete line.
   */
  readonly writer: TextWriter;
  /** The state of the run as seen so far. */
  snapshot(): ProgressSnapshot;
  /** Stops the timers and clears the bar; later events are ignored. Idempotent. */
  close(): void;
}

/**
 * Creates the progress display of a bulk run on `options.writer` (stderr). Close it (or `using`)
 * when the run ends, so no timer is left behind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createProgressReporter } from "./progress.ts";
 * import { memoryWriter } from "./context.ts";
 * const stderr = memoryWriter();
 * {
 *   using progress = createProgressReporter({ writer: stderr, format: "json" });
 *   progress.listener({ type: "throttled", retryAfterMs: 2000 });
 * }
 * const line = JSON.parse(stderr.text());
 * assert.equal(line.fields.type, "throttled");
 * assert.equal(line.message, "Throttled by the provider: waiting 2.0 s");
 * ```
 */
export function createProgressReporter(options: ProgressOptions): ProgressReporter {
  return new Reporter(options);
}

const CLEAR_LINE = "\r\x1b[2K";
const CATEGORY = [LOG_CATEGORY, "progress"] as const;

class Reporter implements ProgressReporter {
  readonly #out: TextWriter;
  readonly #format: LogFormat;
  readonly #verbose: boolean;
  readonly #tty: boolean;
  readonly #clock: ProgressClock;
  readonly #redrawMs: number;
  readonly #refreshMs: number;
  readonly #lineMs: number;
  readonly #lineEveryUsers: number;
  readonly #windowMs: number;
  readonly #throttleNoteMs: number;

  #runId: string | undefined;
  #total: number | undefined;
  #alreadyDone = 0;
  #dryRun = false;
  #counts: RunCounts = { provisioned: 0, reconciled: 0, skipped: 0, dryRun: 0, failed: 0, byReason: {} };
  #finished = 0;
  #startedAt: number | undefined;
  /** Finished users per second of the clock, oldest first. */
  #buckets: { second: number; count: number }[] = [];
  #throttledAt: number | undefined;
  #retryAfterMs: number | undefined;
  #ratePerSecond: number | undefined;
  #stopping = false;

  #running = false;
  #closed = false;
  #barShown = false;
  #lineOpen = false;
  #lastDraw = Number.NEGATIVE_INFINITY;
  #redrawTimer: unknown = undefined;
  #tickTimer: unknown = undefined;

  readonly listener: JobListener;
  readonly writer: TextWriter;

  constructor(options: ProgressOptions) {
    this.#out = options.writer;
    this.#format = options.format ?? "text";
    this.#verbose = options.verbose ?? false;
    this.#tty = this.#format === "text" && (options.tty ?? options.writer.columns !== undefined);
    this.#clock = options.clock ?? systemProgressClock;
    this.#redrawMs = positive(options.redrawIntervalMs, 100);
    this.#refreshMs = positive(options.refreshIntervalMs, 1000);
    this.#lineMs = positive(options.lineIntervalMs, 10_000);
    this.#lineEveryUsers = Math.max(0, Math.floor(options.lineEveryUsers ?? 0));
    this.#windowMs = positive(options.rateWindowMs, 60_000);
    this.#throttleNoteMs = Math.max(0, options.throttleNoteMs ?? 5000);
    this.listener = (event) => {
      try {
        this.#handle(event);
      } catch {
        // A listener must not throw into the engine; a broken stderr only loses progress output.
      }
    };
    const out = this.#out;
    this.writer = {
      write: (text) => this.#writeAbove(text),
      get columns() {
        return out.columns;
      },
    };
  }

  snapshot(): ProgressSnapshot {
    const now = this.#clock.now();
    const done = this.#alreadyDone + this.#finished;
    const rate = this.#rate(now);
    const remaining = this.#total === undefined ? undefined : this.#total - done;
    const etaMs = remaining !== undefined && remaining > 0 && rate !== undefined && rate > 0
      ? remaining / rate * 60_000
      : undefined;
    return {
      runId: this.#runId,
      total: this.#total,
      done,
      alreadyDone: this.#alreadyDone,
      counts: { ...this.#counts, byReason: { ...this.#counts.byReason } },
      dryRun: this.#dryRun,
      usersPerMinute: rate,
      etaMs,
      throttle: this.#throttle(now),
      stopping: this.#stopping,
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#stopTimers();
    this.#clearBar();
    this.#running = false;
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #handle(event: JobEvent): void {
    if (this.#closed) return;
    if (event.type !== "run-started" && !this.#running) this.#start();
    switch (event.type) {
      case "run-started":
        this.#runId = event.runId;
        this.#total = event.total;
        this.#alreadyDone = event.alreadyDone;
        this.#dryRun = event.dryRun;
        this.#start();
        this.#announce("info", event, describe(event));
        break;
      case "user-state":
        if (this.#verbose) this.#announce("debug", event, describe(event));
        break;
      case "user-finished":
        this.#count(event.outcome, event.code);
        // A failure is always worth a line (it also lands in failures.csv); successes only when verbose.
        if (this.#verbose || this.#format === "json" || event.outcome === "failed") {
          this.#announce(event.outcome === "failed" ? "warning" : "info", event, describe(event));
        }
        if (
          !this.#tty && this.#format === "text" && this.#lineEveryUsers > 0 &&
          this.#finished % this.#lineEveryUsers === 0
        ) this.#statusLine();
        this.#scheduleDraw();
        break;
      case "throttled":
        this.#throttledAt = this.#clock.now();
        this.#retryAfterMs = event.retryAfterMs;
        this.#ratePerSecond = event.ratePerSecond;
        if (this.#verbose || this.#format === "json") this.#announce("info", event, describe(event));
        this.#scheduleDraw();
        break;
      case "stopping":
        this.#stopping = true;
        // On a terminal the bar says it (the Ctrl+C handler already printed a line).
        if (!this.#tty) this.#announce("warning", event, describe(event));
        this.#scheduleDraw();
        break;
      case "run-finished":
        this.#stopTimers();
        this.#clearBar();
        this.#running = false;
        if (this.#format === "json") this.#announce("info", event, describe(event));
        break;
    }
  }

  #start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#startedAt ??= this.#clock.now();
    this.#scheduleTick();
  }

  #count(outcome: UserOutcome, code: string | undefined): void {
    this.#finished++;
    switch (outcome) {
      case "provisioned":
        this.#counts.provisioned++;
        break;
      case "reconciled":
        this.#counts.reconciled++;
        break;
      case "skipped":
        this.#counts.skipped++;
        break;
      case "dry-run":
        this.#counts.dryRun++;
        break;
      case "failed": {
        this.#counts.failed++;
        const reason = code ?? "unknown";
        this.#counts.byReason[reason] = (this.#counts.byReason[reason] ?? 0) + 1;
        break;
      }
    }
    const second = Math.floor(this.#clock.now() / 1000);
    const last = this.#buckets.at(-1);
    if (last !== undefined && last.second === second) last.count++;
    else this.#buckets.push({ second, count: 1 });
    this.#prune(this.#clock.now());
  }

  #prune(now: number): void {
    const oldest = Math.floor((now - this.#windowMs) / 1000);
    let drop = 0;
    while (drop < this.#buckets.length && (this.#buckets[drop]?.second ?? 0) < oldest) drop++;
    if (drop > 0) this.#buckets.splice(0, drop);
  }

  /** Users per minute over the window (or since the start, when that is shorter). */
  #rate(now: number): number | undefined {
    if (this.#startedAt === undefined) return undefined;
    const span = Math.min(this.#windowMs, now - this.#startedAt);
    if (!(span >= 1000)) return undefined;
    this.#prune(now);
    let finished = 0;
    for (const bucket of this.#buckets) finished += bucket.count;
    return finished / span * 60_000;
  }

  #throttle(now: number): ProgressSnapshot["throttle"] {
    if (this.#throttledAt === undefined) return undefined;
    const since = now - this.#throttledAt;
    if (since >= Math.max(this.#throttleNoteMs, this.#retryAfterMs ?? 0)) return undefined;
    const waitMs = this.#retryAfterMs === undefined ? undefined : Math.max(0, this.#retryAfterMs - since);
    return { waitMs, ratePerSecond: this.#ratePerSecond };
  }

  // -- output -----------------------------------------------------------------------------------

  /** A line about one event: plain on a terminal, a log-shaped line otherwise. */
  #announce(level: LogLevel, event: JobEvent, message: string): void {
    if (this.#format === "json") {
      this.#out.write(formatLogLine(
        { time: this.#clock.now(), level, category: CATEGORY, message, fields: { ...event } },
        "json",
      ));
    } else if (this.#tty) {
      this.#printAbove(`${escapeControl(redactText(message))}\n`);
    } else {
      this.#out.write(formatLogLine(
        { time: this.#clock.now(), level, category: CATEGORY, message, fields: {} },
        "text",
      ));
    }
  }

  /** The periodic progress line (no terminal, or JSON). */
  #statusLine(): void {
    const snapshot = this.snapshot();
    const message = formatProgress(snapshot, { separator: ", " });
    const fields = this.#format === "json"
      ? {
        type: "progress",
        runId: snapshot.runId,
        done: snapshot.done,
        total: snapshot.total,
        alreadyDone: snapshot.alreadyDone,
        counts: snapshot.counts,
        usersPerMinute: snapshot.usersPerMinute === undefined
          ? undefined
          : Math.round(snapshot.usersPerMinute * 10) / 10,
        etaMs: snapshot.etaMs === undefined ? undefined : Math.round(snapshot.etaMs),
        throttled: snapshot.throttle !== undefined,
        stopping: snapshot.stopping,
      }
      : {};
    this.#out.write(formatLogLine(
      { time: this.#clock.now(), level: "info", category: CATEGORY, message, fields },
      this.#format,
    ));
  }

  #writeAbove(text: string): void {
    if (!this.#tty || this.#closed) {
      this.#out.write(text);
      return;
    }
    this.#printAbove(text);
  }

  #printAbove(text: string): void {
    if (text.length === 0) return;
    if (!this.#lineOpen) this.#clearBar();
    this.#out.write(text);
    this.#lineOpen = !text.endsWith("\n");
    this.#scheduleDraw();
  }

  #clearBar(): void {
    if (!this.#barShown) return;
    this.#barShown = false;
    this.#out.write(CLEAR_LINE);
  }

  #scheduleDraw(): void {
    if (!this.#tty || !this.#running || this.#closed) return;
    const wait = this.#lastDraw + this.#redrawMs - this.#clock.now();
    if (wait <= 0) this.#draw();
    else if (this.#redrawTimer === undefined) {
      this.#redrawTimer = this.#clock.setTimeout(() => {
        this.#redrawTimer = undefined;
        this.#draw();
      }, wait);
    }
  }

  #draw(): void {
    if (this.#redrawTimer !== undefined) {
      this.#clock.clearTimeout(this.#redrawTimer);
      this.#redrawTimer = undefined;
    }
    if (!this.#running || this.#closed || this.#lineOpen) return;
    try {
      this.#lastDraw = this.#clock.now();
      const line = formatProgress(this.snapshot(), { width: terminalWidth(this.#out.columns), bar: true });
      this.#out.write(`${CLEAR_LINE}${line}`);
      this.#barShown = true;
    } catch {
      // Drawing runs from timers too: a failing writer must not become an uncaught error.
    }
  }

  /** The repeating timer: bar refresh on a terminal, progress lines otherwise. */
  #scheduleTick(): void {
    if (this.#closed || !this.#running) return;
    this.#tickTimer = this.#clock.setTimeout(() => {
      this.#tickTimer = undefined;
      if (!this.#running || this.#closed) return;
      try {
        if (this.#tty) this.#draw();
        else this.#statusLine();
      } catch {
        // As in #draw: a failing writer only loses progress output.
      }
      this.#scheduleTick();
    }, this.#tty ? this.#refreshMs : this.#lineMs);
  }

  #stopTimers(): void {
    if (this.#redrawTimer !== undefined) this.#clock.clearTimeout(this.#redrawTimer);
    if (this.#tickTimer !== undefined) this.#clock.clearTimeout(this.#tickTimer);
    this.#redrawTimer = undefined;
    this.#tickTimer = undefined;
  }
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** A usable width from whatever the writer says: 80 when it does not know, at most 1000. */
function terminalWidth(columns: number | undefined): number {
  return columns !== undefined && Number.isFinite(columns) && columns > 0
    ? Math.min(Math.floor(columns), 1000)
    : 80;
}

/** The one-line message for an event, as lines and JSON `message` show it. */
function describe(event: JobEvent): string {
  switch (event.type) {
    case "run-started": {
      const what = [
        event.total === undefined
          ? undefined
          : `${formatCount(event.total)} user${event.total === 1 ? "" : "s"}`,
        `concurrency ${event.concurrency}`,
        event.dryRun ? "dry run" : undefined,
      ].filter((part) => part !== undefined).join(", ");
      return event.resumed
        ? `Run ${event.runId} resumed: ${formatCount(event.alreadyDone)} users already done, ${what}`
        : `Run ${event.runId} started: ${what}`;
    }
    case "user-state":
      return `${event.user} (row ${event.row}): ${event.state}${event.detail ? `, ${event.detail}` : ""}`;
    case "user-finished": {
      const code = event.code === undefined ? "" : ` [${event.code}]`;
      const message = event.message === undefined ? "" : `: ${event.message}`;
      const outcome = event.outcome === "dry-run" ? "would be provisioned (dry run)" : event.outcome;
      return `${event.user} (row ${event.row}): ${outcome}${code}${message}`;
    }
    case "throttled": {
      const parts = ["Throttled by the provider"];
      if (event.retryAfterMs !== undefined) parts.push(`: waiting ${formatDuration(event.retryAfterMs)}`);
      if (event.ratePerSecond !== undefined) {
        parts.push(
          `${parts.length > 1 ? "," : ":"} slowing to ${formatRate(event.ratePerSecond)} requests/s`,
        );
      }
      return parts.join("");
    }
    case "stopping":
      return event.reason === "interrupt"
        ? "Stopping (Ctrl+C): finishing the users in flight, press Ctrl+C again to quit at once"
        : "Stopping: finishing the users in flight";
    case "run-finished":
      return `Run ${event.summary.runId} ${event.summary.interrupted ? "stopped" : "finished"}`;
  }
}
