/**
 * What the panel store's tests share: the two databases as interchangeable backends (a fresh
 * SQLite file, or a fresh database in a throwaway PostgreSQL cluster), a few seeded users, and
 * the stand-in agent process (test/support/queue_agent.ts).
 *
 * @module
 */
import {
  type OpenedPanelStore,
  openPanelStore,
  type OpenPanelStoreOptions,
} from "../../core/panel/store/mod.ts";
import { startPostgres } from "./postgres.ts";

/** One of the two databases, handing out fresh, empty databases. */
export interface StoreBackend {
  readonly name: "sqlite" | "postgres";
  /** The location (`--database` value) of a new, empty database. */
  fresh(label: string): Promise<string>;
}

/** Runs `body` with the embedded backend; its temporary folder is removed afterwards. */
export async function withSqlite(body: (backend: StoreBackend) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-panel-" });
  try {
    await body({ name: "sqlite", fresh: (label) => Promise.resolve(`${dir}/${label}.sqlite`) });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs `body` with a throwaway PostgreSQL cluster, stopped afterwards whatever happened. */
export async function withPostgres(body: (backend: StoreBackend) => Promise<void>): Promise<void> {
  await using cluster = await startPostgres();
  let n = 0;
  await body({ name: "postgres", fresh: (label) => cluster.createDatabase(`${label}_${++n}`) });
}

/** A settable clock for lease expiry without waiting. */
export class TestClock {
  /** The current time (epoch ms). */
  time = Date.UTC(2026, 0, 1);
  /** The store's `now` option. */
  readonly now = (): number => this.time;
  /** Moves the clock forward. */
  advance(ms: number): void {
    this.time += ms;
  }
}

/** Opens a store on `database` (with the given options) for a test. */
export function openTestStore(
  database: string,
  options: OpenPanelStoreOptions = {},
): Promise<OpenedPanelStore> {
  return openPanelStore({ ...options, database });
}

/** Imports `count` users (`user0001@contoso.test` …) and returns their panel ids in sign-in order. */
export async function seedUsers(
  store: OpenedPanelStore,
  count: number,
  provider = "sandbox",
): Promise<number[]> {
  const users = Array.from({ length: count }, (_, i) => {
    const n = String(i + 1).padStart(6, "0");
    return { objectId: `object-${n}`, signInName: `user${n}@contoso.test`, displayName: `User ${n}` };
  });
  for (let start = 0; start < users.length; start += 5000) {
    await store.importUsers({ provider, users: users.slice(start, start + 5000), actor: "test" });
  }
  const ids: number[] = [];
  let cursor: string | null = null;
  do {
    const page = await store.listUsers({ cursor, limit: 500 });
    ids.push(...page.items.map((u) => u.id));
    cursor = page.next;
  } while (cursor !== null);
  return ids;
}

/** Starts one stand-in agent process on `database`; its stdout carries one JSON line per answer. */
export function spawnAgent(
  database: string,
  agent: string,
  options: {
    batch?: number;
    leaseMs?: number;
    pauseMs?: number;
    synchronous?: "full" | "normal";
    mode?: "drain" | "open-only" | "wait-before-complete";
  } = {},
): Deno.ChildProcess {
  const args = [
    "run",
    "-q",
    "--allow-read",
    "--allow-write=/tmp",
    "--allow-net=127.0.0.1",
    "--allow-env=PG*",
    new URL("./queue_agent.ts", import.meta.url).pathname,
    `--database=${database}`,
    `--agent=${agent}`,
    `--batch=${options.batch ?? 10}`,
    `--lease-ms=${options.leaseMs ?? 30_000}`,
    `--pause-ms=${options.pauseMs ?? 0}`,
    `--synchronous=${options.synchronous ?? "full"}`,
  ];
  if (options.mode === "open-only") args.push("--open-only");
  if (options.mode === "wait-before-complete") args.push("--wait-before-complete");
  return new Deno.Command(Deno.execPath(), {
    args,
    stdin: options.mode === "wait-before-complete" ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** One line an agent printed. */
export type AgentLine =
  | { leased: number[]; token: string | null }
  | { completed: number }
  | { refused: number; reason: string }
  | { migrations: { applied: number[]; version: number } }
  | { done: number };

/** Waits for `child` to end and returns its lines; throws with its stderr when it failed. */
export async function agentLines(child: Deno.ChildProcess, label: string): Promise<AgentLine[]> {
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`Agent ${label} exited with ${out.code}:\n${stderr}`);
  return parseLines(new TextDecoder().decode(out.stdout));
}

/** Parses an agent's output. */
export function parseLines(text: string): AgentLine[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as AgentLine);
}

/** Reads `child`'s stdout line by line until `until` accepts a line; returns the lines so far and the rest of the stream. */
export async function readUntil(
  child: Deno.ChildProcess,
  until: (line: AgentLine, seen: readonly AgentLine[]) => boolean,
): Promise<{ lines: AgentLine[]; reader: ReadableStreamDefaultReader<string>; rest: string }> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const lines: AgentLine[] = [];
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      throw new Error(`The agent's output ended before the expected line; got ${JSON.stringify(lines)}`);
    }
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffer.slice(0, newline)) as AgentLine;
      buffer = buffer.slice(newline + 1);
      lines.push(line);
      if (until(line, lines)) return { lines, reader, rest: buffer };
    }
  }
}
