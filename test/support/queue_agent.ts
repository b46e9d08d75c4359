/**
 * A stand-in agent for the queue tests and the benchmark, run as its own process
 * (`deno run … test/support/queue_agent.ts --database … --agent …`) so that each agent has its own
 * connection (SQLite: its own process and file handle). It drains the queue: lease a batch,
 * complete each job as verified, print one JSON line per answer, and exit when nothing is queued
 * or leased any more (a lease held by another agent may still come back, so it polls meanwhile).
 *
 * Modes for the tests:
 * - `--open-only`: open the store (applying migrations) and print the migration report.
 * - `--pause-ms`: wait this long after each answer (a slower agent, so a test can kill it mid-stream).
 * - `--wait-before-complete`: lease one batch, print `{"leased":[…]}`, then wait for a line on
 *   standard input before answering: a test makes this agent's answers late, deterministically.
 *
 * Lines printed: `{"leased":[ids],"token":…}`, `{"completed":id}`, `{"refused":id,"reason":…}`,
 * `{"migrations":{…}}`, `{"done":n}`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { openPanelStore } from "../../core/panel/store/mod.ts";

const { values } = parseArgs({
  options: {
    database: { type: "string" },
    agent: { type: "string" },
    batch: { type: "string", default: "10" },
    "lease-ms": { type: "string", default: "30000" },
    "pause-ms": { type: "string", default: "0" },
    synchronous: { type: "string", default: "full" },
    "open-only": { type: "boolean", default: false },
    "wait-before-complete": { type: "boolean", default: false },
  },
});
if (!values.database || !values.agent) {
  throw new TypeError("Cannot start the agent: --database and --agent are required");
}
const agent = values.agent;
const batch = Number(values.batch);
const leaseMs = Number(values["lease-ms"]);
const pauseMs = Number(values["pause-ms"]);
const print = (line: unknown) => console.log(JSON.stringify(line));

await using store = await openPanelStore({
  database: values.database,
  maxConnections: 1,
  synchronous: values.synchronous === "normal" ? "normal" : "full",
});
if (values["open-only"]) {
  print({ migrations: store.migrations });
} else if (values["wait-before-complete"]) {
  const leased = await store.lease({ agent, limit: batch, leaseMs });
  print({ leased: leased.map((l) => l.job.id), token: leased[0]?.lease.token ?? null });
  // A line on stdin (or its end) says "answer now".
  await Deno.stdin.readable.getReader().read();
  for (const { lease } of leased) {
    const answer = await store.complete(lease, { state: "verified", result: { agent } });
    print(answer.accepted ? { completed: lease.jobId } : { refused: lease.jobId, reason: answer.reason });
  }
} else {
  let done = 0;
  for (;;) {
    const leased = await store.lease({ agent, limit: batch, leaseMs });
    if (leased.length === 0) {
      const counts = await store.counts();
      if (counts.queued + counts.leased === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    for (const { lease } of leased) {
      const answer = await store.complete(lease, { state: "verified", result: { agent } });
      if (answer.accepted) done++;
      print(answer.accepted ? { completed: lease.jobId } : { refused: lease.jobId, reason: answer.reason });
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  }
  print({ done });
}
