/**
 * What a bulk run shows while it works and at its end: the glue between the engine's events, the
 * progress display (progress.ts), the log sink with its redaction (core/log.ts) and the summary
 * (summary.ts). Progress and logs go to stderr; the summary is the command's result, on stdout.
 *
 * @module
 */
import type { JobListener, RunSummary } from "../jobs/events.ts";
import { configureLogging, redactValue } from "../log.ts";
import type { CliContext } from "./context.ts";
import { createProgressReporter } from "./progress.ts";
import { renderSummary, renderSummaryJson } from "./summary.ts";

/** How progress and the summary are written. */
export interface RunOutputOptions {
  /** `json`: one JSON object per line, for machines. */
  readonly format: "text" | "json";
  /** One line per step of each user. */
  readonly verbose?: boolean;
}

/** A running progress display (and the log sink behind it). */
export interface RunProgress {
  readonly listener: JobListener;
  /** Clears the live line, stops its timers and the log configuration. */
  close(): void;
}

/**
 * Starts the progress display on `context.stderr`, routes the `provisioning` loggers through it
 * (so a log line never tears the bar), and registers the run's secrets for redaction at the sink.
 */
export function startProgress(
  context: CliContext,
  options: RunOutputOptions & { readonly secrets?: readonly (string | undefined)[] },
): RunProgress {
  const reporter = createProgressReporter({
    writer: context.stderr,
    format: options.format,
    verbose: options.verbose ?? false,
    tty: context.stderr.isTerminal === true,
  });
  const logging = configureLogging({
    writer: reporter.writer,
    format: options.format,
    verbose: options.verbose ?? false,
  });
  const redactions = (options.secrets ?? []).filter((s): s is string => !!s).map((secret) =>
    redactValue(secret)
  );
  return {
    listener: reporter.listener,
    close() {
      reporter.close();
      logging[Symbol.dispose]();
      for (const redaction of redactions) redaction[Symbol.dispose]();
    },
  };
}

/** Prints the end-of-run summary on stdout. */
export function printRunSummary(context: CliContext, summary: RunSummary, options: RunOutputOptions): void {
  context.stdout.write(options.format === "json" ? renderSummaryJson(summary) : renderSummary(summary));
}
