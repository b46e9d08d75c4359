/**
 * Peak memory and speed of {@link readUsersFromCsv} on a generated 1,000,000-row CSV, streamed
 * (never on disk): `deno run -P=bench scripts/csv_bench.ts [rows] [padding bytes per row]`.
 *
 * Prints rows/s, the resident set size (RSS) before, at half way and at its peak, and whether the
 * issue's goal is met: memory flat, peaking under 200 MB. RSS is sampled every 20,000 rows, so
 * the peak is a lower bound of the true one. Every row is a distinct user, the worst case for the
 * duplicate table (core/jobs/sources/seen_users.ts): the only memory that grows with the file. As
 * the CLI does (it counts the file's lines first), the table is sized for the rows once: 15 MB for
 * a million, allocated at the start, so the second half should not grow at all.
 *
 * @module
 */
import { readUsersFromCsv } from "../core/jobs/sources/csv.ts";

/** The goal for 1,000,000 rows: peak RSS under this. */
export const peakGoalBytes = 200 * 1024 * 1024;

if (import.meta.main) {
  const total = Number(Deno.args[0] ?? 1_000_000);
  const padding = "p".repeat(Number(Deno.args[1] ?? 40));
  const encoder = new TextEncoder();
  let next = 0;
  let bytes = 0;
  const input = new ReadableStream<Uint8Array>({
    pull(controller) {
      let text = next === 0 ? "User Principal Name,Display Name,Notes\r\n" : "";
      if (next >= total) return controller.close();
      for (let i = 0; i < 2000 && next < total; i++, next++) {
        text += `user${next}@contoso.com,"User ${next}, Contoso",${padding}\r\n`;
      }
      const chunk = encoder.encode(text);
      bytes += chunk.length;
      controller.enqueue(chunk);
    },
  });
  const start = performance.now();
  const before = Deno.memoryUsage().rss;
  let peak = before;
  let firstHalfPeak = before;
  let users = 0;
  let failed = 0;
  for await (const row of readUsersFromCsv(input, { source: "generated.csv", expectedRows: total })) {
    if (row.ok) users++;
    else failed++;
    const rows = users + failed;
    if (rows % 20_000 === 0) {
      peak = Math.max(peak, Deno.memoryUsage().rss);
      if (rows <= total / 2) firstHalfPeak = peak;
    }
  }
  peak = Math.max(peak, Deno.memoryUsage().rss);
  const seconds = (performance.now() - start) / 1000;
  const mb = (value: number) => (value / 1024 / 1024).toFixed(1);
  console.log(
    `${users} users, ${failed} failed rows, ${mb(bytes)} MB of CSV in ${seconds.toFixed(2)} s: ` +
      `${Math.round((users + failed) / seconds)} rows/s`,
  );
  const growth = peak - firstHalfPeak;
  const met = peak < peakGoalBytes;
  console.log(
    `RSS ${mb(before)} MB before, peak ${mb(firstHalfPeak)} MB over the first half, peak ${
      mb(peak)
    } MB overall (+${mb(growth)} MB in the second half): ` +
      (met
        ? `goal met (peak under ${mb(peakGoalBytes)} MB)`
        : `GOAL MISSED (peak of ${mb(peakGoalBytes)} MB exceeded)`),
  );
}
