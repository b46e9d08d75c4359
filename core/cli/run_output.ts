/**
 * What a bulk run shows on stderr while it works and at its end: the glue between the engine's
 * events and the progress display and summary. Results never go to stdout from here, except the
 * summary, which is the command's result.
 *
 * @module
 */
import type { JobEvent, JobListener, RunSummary } from "../jobs/events.ts";
import type { CliContext } from "./context.ts";

/** How progress and the summary are written. */
export interface RunOutputOptions {
  /** `json`: one JSON object per line, for machines. */
  readonly format: "text" | "json";
  /** One line per step of each user. */
  readonly verbose?: boolean;
}

/** A running progress display. */
export interface RunProgress {
  readonly listener: JobListener;
  /** Stops redrawing (clears the live line). */
  close(): void;
}

/** Starts the progress display on `context.stderr`. */
export function startProgress(context: CliContext, options: RunOutputOptions): RunProgress {
  const write = (text: string) => context.stderr.write(text);
  let done = 0;
  let lastLine = 0;
  return {
    listener(event: JobEvent) {
      if (options.format === "json") {
        write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
        return;
      }
      if (event.type === "user-finished") {
        done++;
        if (options.verbose || event.outcome === "failed") {
          write(`${event.outcome.padEnd(11)} ${event.user}${event.code ? ` [${event.code}]` : ""}\n`);
        }
        if (Date.now() - lastLine > 10_000) {
          lastLine = Date.now();
          write(`${done} users done\n`);
        }
      } else if (event.type === "user-state" && options.verbose) {
        write(`  ${event.state.padEnd(10)} ${event.user}${event.detail ? ` (${event.detail})` : ""}\n`);
      } else if (event.type === "run-started") {
        write(
          `Run ${event.runId}${event.resumed ? ` resumed (${event.alreadyDone} users done before)` : ""}${
            event.total === undefined ? "" : `, about ${event.total} users`
          }, ${event.concurrency} at a time${event.dryRun ? ", dry run" : ""}\n`,
        );
      } else if (event.type === "stopping") {
        write("Stopping: finishing the users in flight\n");
      }
    },
    close() {},
  };
}

/** Prints the end-of-run summary on stdout. */
export function printRunSummary(
  context: CliContext,
  summary: RunSummary,
  options: RunOutputOptions & { readonly journalPath?: string; readonly dryRun?: boolean },
): void {
  if (options.format === "json") {
    context.stdout.write(`${JSON.stringify({ type: "summary", ...summary })}\n`);
    return;
  }
  const c = summary.counts;
  const minutes = summary.elapsedMs / 60_000;
  const finished = c.provisioned + c.reconciled + c.skipped + c.dryRun + c.failed;
  const lines = [
    `Run ${summary.runId}${summary.interrupted ? " (stopped)" : ""}`,
    `  provisioned  ${c.provisioned + c.reconciled}${
      c.reconciled ? ` (${c.reconciled} found after a lost answer)` : ""
    }`,
    `  skipped      ${c.skipped}`,
    ...(options.dryRun ? [`  would create ${c.dryRun}`] : []),
    `  failed       ${c.failed}`,
    ...Object.entries(c.byReason).sort((a, b) => b[1] - a[1]).map(([code, n]) => `    ${code}: ${n}`),
    ...(summary.fromEarlierAttempts ? [`  done before  ${summary.fromEarlierAttempts}`] : []),
    `  elapsed      ${(summary.elapsedMs / 1000).toFixed(1)} s, ${
      minutes > 0 ? Math.round(finished / minutes) : finished
    } users/minute`,
    `  results      ${summary.resultsPath}`,
    `  failures     ${summary.failuresPath}`,
  ];
  context.stdout.write(`${lines.join("\n")}\n`);
}
