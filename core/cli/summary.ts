/**
 * The end of a bulk run as the admin sees it: what happened to how many users, failures by reason,
 * how long it took and how fast, where the result files are, and the next command to type
 * (re-run the failures, revoke the run). Also the exit code the run ends with.
 *
 * The text goes wherever the command prints results; `--log-format json` gets
 * {@link renderSummaryJson} instead. Both are built from the engine's {@link RunSummary} only.
 *
 * Counting convention: `summary.counts` covers the whole run, users finished by earlier attempts
 * included, and `fromEarlierAttempts` says how many of them were; `elapsedMs` is this attempt's.
 * The rate is therefore this attempt's users over this attempt's time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exitCodeForSummary, renderSummary } from "./summary.ts";
 * const summary = {
 *   runId: "r-2025",
 *   counts: { provisioned: 98, reconciled: 0, skipped: 0, dryRun: 0, failed: 2, byReason: { "user-not-found": 2 } },
 *   fromEarlierAttempts: 0,
 *   elapsedMs: 60_000,
 *   interrupted: false,
 *   failuresPath: "failures.csv",
 * };
 * assert.match(renderSummary(summary), /Re-run the failures: provisioning --csv failures.csv/);
 * assert.equal(exitCodeForSummary(summary), 1);
 * ```
 *
 * @module
 */
import type { RunCounts, RunSummary } from "../jobs/events.ts";
import { isSecretName, REDACTED, redactText } from "../log.ts";
import { INTERRUPTED_EXIT_CODE } from "./terminal.ts";

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1, minimumFractionDigits: 1 });

/** Formats a count with thousands separators: `12,345`. */
export function formatCount(value: number): string {
  return Number.isFinite(value) ? integer.format(value) : String(value);
}

/**
 * A duration as a person reads it, rounded to what matters at its size: `0.4 s`, `3.4 s`, `42 s`,
 * `12 min 05 s`, `1 h 02 min`, `2 d 03 h`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "./summary.ts";
 * assert.equal(formatDuration(3_400), "3.4 s");
 * assert.equal(formatDuration(3_720_000), "1 h 02 min");
 * ```
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "–";
  const tenths = Math.round(ms / 100);
  if (tenths < 100) return `${oneDecimal.format(tenths / 10)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${pad2(seconds % 60)} s`;
  const minutes = Math.round(ms / 60_000);
  if (minutes < 24 * 60) return `${Math.floor(minutes / 60)} h ${pad2(minutes % 60)} min`;
  const hours = Math.round(ms / 3_600_000);
  return `${formatCount(Math.floor(hours / 24))} d ${pad2(hours % 24)} h`;
}

function pad2(value: number): string {
  return String(value).padStart(2, "0");
}

/**
 * Formats a rate of users per minute: one decimal below 10 (`2.5`), whole numbers above
 * (`1,234`).
 */
export function formatRate(usersPerMinute: number): string {
  return usersPerMinute < 10 ? oneDecimal.format(usersPerMinute) : formatCount(usersPerMinute);
}

/** Users whose part of the run ended, whatever the outcome. */
export function finishedUsers(counts: RunCounts): number {
  return counts.provisioned + counts.reconciled + counts.skipped + counts.dryRun + counts.failed;
}

/**
 * Users per minute of this attempt (users finished by earlier attempts left out), or `undefined`
 * when no time passed.
 */
export function usersPerMinute(summary: RunSummary): number | undefined {
  if (!(summary.elapsedMs > 0)) return undefined;
  return finishedUsers(summary.counts) / (summary.elapsedMs / 60_000);
}

/** Failure reasons, most frequent first (ties by code), for the summary and JSON. */
export function failuresByReason(counts: RunCounts): { code: string; count: number }[] {
  return Object.entries(counts.byReason)
    .filter(([, count]) => count > 0)
    .map(([code, count]) => ({ code, count }))
    .sort((a, b) => b.count - a.count || (a.code < b.code ? -1 : a.code > b.code ? 1 : 0));
}

/**
 * The exit code a run ends with: 130 when Ctrl+C stopped it (whatever else happened), 1 when some
 * users failed, 0 otherwise (skipped users are fine: they already had what the run would give).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exitCodeForSummary } from "./summary.ts";
 * const counts = { provisioned: 3, reconciled: 0, skipped: 5, dryRun: 0, failed: 0, byReason: {} };
 * const summary = { runId: "r", counts, fromEarlierAttempts: 0, elapsedMs: 1, interrupted: false };
 * assert.equal(exitCodeForSummary(summary), 0);
 * assert.equal(exitCodeForSummary({ ...summary, interrupted: true }), 130);
 * ```
 */
export function exitCodeForSummary(summary: RunSummary): 0 | 1 | 130 {
  if (summary.interrupted) return INTERRUPTED_EXIT_CODE as 130;
  return summary.counts.failed > 0 ? 1 : 0;
}

/** Options of {@link renderSummary}. */
export interface SummaryOptions {
  /** How the admin starts the tool, for the hints. @default "provisioning" */
  readonly program?: string;
  /**
   * Arguments to repeat in the re-run hint before `--csv <failures>` (provider and authenticator
   * choices, e.g. `["--tenant", "contoso"]`); never secrets (they would be redacted anyway).
   * @default []
   */
  readonly rerunArgs?: readonly string[];
}

/**
 * The summary as lines of text (ending with `\n`): the outcome line, an aligned table of counts
 * (failures broken down by reason, most frequent first), elapsed time and users/minute, the result
 * files, and hints for re-running the failures and revoking the run. A secret among `rerunArgs`
 * (the value of a `--client-secret`-like flag, a registered value) is shown as `[redacted]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderSummary } from "./summary.ts";
 * const text = renderSummary({
 *   runId: "r-1",
 *   counts: { provisioned: 1200, reconciled: 0, skipped: 3, dryRun: 0, failed: 0, byReason: {} },
 *   fromEarlierAttempts: 0,
 *   elapsedMs: 90_000,
 *   interrupted: false,
 *   resultsPath: "results.csv",
 * });
 * assert.match(text, /^Run r-1 finished in 1 min 30 s: 1,203 users\n/);
 * assert.match(text, /provisioned +1,200\n/);
 * assert.match(text, /Revoke the passkeys this run created: provisioning revoke --run r-1\n$/);
 * ```
 */
export function renderSummary(summary: RunSummary, options: SummaryOptions = {}): string {
  const program = options.program ?? "provisioning";
  const { counts } = summary;
  const lines: string[] = [];
  // The same users "started" counted: those finished by earlier attempts of a resumed run too.
  const total = finishedUsers(counts) + summary.fromEarlierAttempts;
  const users = `${formatCount(total)} user${total === 1 ? "" : "s"}`;
  lines.push(
    summary.interrupted
      ? `Run ${summary.runId} stopped by Ctrl+C after ${formatDuration(summary.elapsedMs)}: ${users} done`
      : summary.halted
      ? `Run ${summary.runId} stopped after ${
        formatDuration(summary.elapsedMs)
      }: ${users} done; every other user would fail with ${summary.halted.code}`
      : `Run ${summary.runId} finished in ${formatDuration(summary.elapsedMs)}: ${users}`,
  );

  const rows: [label: string, value: string, indent?: boolean][] = [];
  if (counts.dryRun > 0) rows.push(["would be provisioned (dry run)", formatCount(counts.dryRun)]);
  if (counts.dryRun === 0 || counts.provisioned > 0) {
    rows.push(["provisioned", formatCount(counts.provisioned)]);
  }
  if (counts.reconciled > 0) rows.push(["reconciled", formatCount(counts.reconciled)]);
  rows.push(["skipped", formatCount(counts.skipped)]);
  rows.push(["failed", formatCount(counts.failed)]);
  for (const { code, count } of failuresByReason(counts)) rows.push([code, formatCount(count), true]);
  if (summary.fromEarlierAttempts > 0) {
    rows.push(["from earlier attempts", formatCount(summary.fromEarlierAttempts)]);
  }
  const rate = usersPerMinute(summary);
  if (rate !== undefined) rows.push(["rate", `${formatRate(rate)} users/min`]);
  if (summary.resultsPath !== undefined) rows.push(["results", summary.resultsPath]);
  if (summary.failuresPath !== undefined) rows.push(["failures", summary.failuresPath]);

  const labelWidth = Math.max(...rows.map(([label, , indent]) => label.length + (indent ? 2 : 0)));
  const numberWidth = Math.max(
    ...rows.filter(([, value]) => /^[\d,]+$/.test(value)).map(([, value]) => value.length),
  );
  for (const [label, value, indent] of rows) {
    const name = (indent ? `  ${label}` : label).padEnd(labelWidth);
    const shown = /^[\d,]+$/.test(value) ? value.padStart(numberWidth) : value;
    lines.push(`  ${name}  ${shown}`);
  }

  if (summary.interrupted || summary.halted) {
    lines.push(`Resume: run the same command again; run ${summary.runId} continues where it stopped`);
  }
  const dryRun = counts.dryRun > 0 && counts.provisioned + counts.reconciled === 0;
  if (dryRun && counts.failed > 0 && summary.failuresPath !== undefined) {
    // A dry run created nothing: its failures are what a real run would hit, not a list to re-run.
    lines.push(
      `Would fail: see ${summary.failuresPath}; fix what the reasons say, then dry-run again or run for real`,
    );
  } else if (counts.failed > 0 && summary.failuresPath !== undefined) {
    const args = [...redactArgs(options.rerunArgs ?? []), "--csv", summary.failuresPath];
    lines.push(`Re-run the failures: ${program} ${args.map(shellQuote).join(" ")}`);
  }
  if (counts.provisioned + counts.reconciled > 0) {
    lines.push(`Revoke the passkeys this run created: ${program} revoke --run ${shellQuote(summary.runId)}`);
  }
  return `${lines.join("\n")}\n`;
}

/** The summary as `--log-format json` prints it (see {@link summaryJson}). */
export interface SummaryJson {
  readonly type: "summary";
  readonly runId: string;
  readonly interrupted: boolean;
  readonly exitCode: 0 | 1 | 130;
  readonly counts: Omit<RunCounts, "byReason">;
  readonly failedByReason: { code: string; count: number }[];
  readonly fromEarlierAttempts: number;
  readonly elapsedMs: number;
  readonly usersPerMinute: number | null;
  readonly resultsPath: string | null;
  readonly failuresPath: string | null;
}

/**
 * The summary as one object for machines: the same facts as {@link renderSummary}, with the exit
 * code, and failures by reason as a sorted list.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { summaryJson } from "./summary.ts";
 * const counts = { provisioned: 1, reconciled: 0, skipped: 0, dryRun: 0, failed: 1, byReason: { throttled: 1 } };
 * const json = summaryJson({ runId: "r", counts, fromEarlierAttempts: 0, elapsedMs: 30_000, interrupted: false });
 * assert.deepEqual(json.failedByReason, [{ code: "throttled", count: 1 }]);
 * assert.equal(json.usersPerMinute, 4);
 * ```
 */
export function summaryJson(summary: RunSummary): SummaryJson {
  const { byReason: _byReason, ...counts } = summary.counts;
  const rate = usersPerMinute(summary);
  return {
    type: "summary",
    runId: summary.runId,
    interrupted: summary.interrupted,
    exitCode: exitCodeForSummary(summary),
    counts: {
      provisioned: counts.provisioned,
      reconciled: counts.reconciled,
      skipped: counts.skipped,
      dryRun: counts.dryRun,
      failed: counts.failed,
    },
    failedByReason: failuresByReason(summary.counts),
    fromEarlierAttempts: summary.fromEarlierAttempts,
    elapsedMs: summary.elapsedMs,
    usersPerMinute: rate === undefined ? null : Math.round(rate * 10) / 10,
    resultsPath: summary.resultsPath ?? null,
    failuresPath: summary.failuresPath ?? null,
  };
}

/** {@link summaryJson} as one line of JSON ending with `\n`. */
export function renderSummaryJson(summary: RunSummary): string {
  return `${JSON.stringify(summaryJson(summary))}\n`;
}

/** Arguments as the hint may show them: values of secret-named flags and secret-looking text redacted. */
function redactArgs(args: readonly string[]): string[] {
  return args.map((arg, index) => {
    const flag = /^--?([A-Za-z][\w-]*)$/.exec(args[index - 1] ?? "")?.[1];
    return flag !== undefined && isSecretName(flag) ? REDACTED : redactText(arg);
  });
}

/** Quotes an argument for a POSIX shell when it needs it. */
function shellQuote(arg: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replaceAll("'", `'\\''`)}'`;
}
