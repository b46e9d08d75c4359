/**
 * Peak memory and speed of {@link readUsersFromCsv} on a generated 1,000,000-row CSV, streamed
 * (never on disk): `deno run -P=bench scripts/csv_bench.ts [rows] [padding bytes per row]`.
 * Prints rows/s and peak RSS. The goal: flat, under 200 MB.
 *
 * @module
 */
import { readUsersFromCsv } from "../core/jobs/sources/csv.ts";

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
  let users = 0;
  let failed = 0;
  for await (const row of readUsersFromCsv(input, { source: "generated.csv" })) {
    if (row.ok) users++;
    else failed++;
    if ((users + failed) % 20_000 === 0) peak = Math.max(peak, Deno.memoryUsage().rss);
  }
  const seconds = (performance.now() - start) / 1000;
  const mb = (value: number) => (value / 1024 / 1024).toFixed(1);
  console.log(
    `${users} users, ${failed} failed rows, ${mb(bytes)} MB of CSV in ${seconds.toFixed(2)} s: ` +
      `${Math.round((users + failed) / seconds)} rows/s; RSS ${mb(before)} MB before, peak ${mb(peak)} MB`,
  );
}
