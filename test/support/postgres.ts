/**
 * A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder, `pg_ctl start` on a
 * free loopback port (`listen_addresses=127.0.0.1`, Unix sockets off), databases created on
 * demand, and everything stopped and removed by `stop()` (use it with `await using` or in a
 * `finally`, so a failing test still stops its cluster).
 *
 * The server binaries come from Debian's `postgresql` package (`pg_config --bindir`, else the
 * newest /usr/lib/postgresql/N/bin). When they are missing the helper throws, it does not skip:
 * CI must install them. `initdb` refuses to run as root, so as root the binaries run as the
 * `postgres` user (`runuser -u postgres --`) in a folder given to that user.
 *
 * @module
 */
import postgres from "postgres";

/** A running throwaway cluster. */
export interface PostgresCluster extends AsyncDisposable {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** The URL of database `name` (default: the `postgres` database). */
  url(name?: string): string;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (immediately) and removes its folder; safe to call twice. */
  stop(): Promise<void>;
}

/** What CI must do when the binaries are missing; the failing test says it. */
export const installHint =
  "PostgreSQL server binaries (initdb, pg_ctl) are missing: .ci/run must install them, e.g. " +
  "`apt-get install -y --no-install-recommends postgresql`";

/** Options of {@linkcode startPostgres}. */
export interface StartPostgresOptions {
  /**
   * Turn off fsync (tests: faster, and the data of a throwaway cluster need not survive a power cut).
   * Benchmarks keep it on to measure what a real server does. @default true
   */
  fast?: boolean;
  /** Where initdb and pg_ctl are, instead of looking for them. */
  bindir?: string;
}

/** Starts a throwaway cluster; see the module documentation. */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresCluster> {
  const bindir = await findBindir(options.bindir);
  const dir = await Deno.makeTempDir({ prefix: "provisioning-pg-" });
  const asRoot = (await Deno.stat(dir)).uid === 0;
  const owner = asRoot ? await postgresUser() : null;
  if (owner) await Deno.chown(dir, owner.uid, owner.gid);
  const run = (program: string, args: string[]) =>
    command(
      asRoot ? "runuser" : `${bindir}/${program}`,
      asRoot ? ["-u", "postgres", "--", `${bindir}/${program}`, ...args] : args,
      dir,
    );

  let started = false;
  const stop = async () => {
    if (started) {
      started = false;
      await run("pg_ctl", ["-D", `${dir}/data`, "-m", "immediate", "-w", "stop"]).catch(() => {});
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await run("initdb", [
      "-D",
      `${dir}/data`,
      "-A",
      "trust",
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
    ]);
    const port = freePort();
    const settings = [
      "-c listen_addresses=127.0.0.1",
      `-p ${port}`,
      "-c unix_socket_directories=''",
      "-c max_connections=60",
      ...(options.fast ?? true
        ? ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        : []),
    ].join(" ");
    started = true;
    await run("pg_ctl", [
      "-D",
      `${dir}/data`,
      "-l",
      `${dir}/server.log`,
      "-o",
      settings,
      "-w",
      "-t",
      "60",
      "start",
    ]);
    const url = (name = "postgres") => `postgres://postgres@127.0.0.1:${port}/${name}`;
    return {
      port,
      url,
      async createDatabase(name) {
        if (!/^[a-z_][a-z0-9_]*$/.test(name)) {
          throw new TypeError(`Cannot create database "${name}": use [a-z0-9_]`);
        }
        const admin = postgres(url(), { max: 1, onnotice: () => {} });
        try {
          await admin.unsafe(`CREATE DATABASE ${name}`);
        } finally {
          await admin.end({ timeout: 5 });
        }
        return url(name);
      },
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (error) {
    const log = await Deno.readTextFile(`${dir}/server.log`).catch(() => "");
    await stop();
    if (log) throw new Error(`Cannot start the test PostgreSQL cluster; its log:\n${log}`, { cause: error });
    throw error;
  }
}

async function findBindir(given?: string): Promise<string> {
  const candidates = given === undefined ? await searchedBindirs() : [given];
  for (const dir of candidates) {
    try {
      const out = await new Deno.Command(`${dir}/initdb`, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      })
        .output();
      if (out.success) return dir;
    } catch { /* not here */ }
  }
  throw new Error(
    `${installHint} (no initdb in ${given ?? "`pg_config --bindir` nor /usr/lib/postgresql/{13..18}/bin"})`,
  );
}

/** `pg_config --bindir`, then Debian's folders, newest first (tried by running initdb, so the test's read permission stays narrow). */
async function searchedBindirs(): Promise<string[]> {
  const candidates: string[] = [];
  try {
    const out = await new Deno.Command("pg_config", { args: ["--bindir"], stdout: "piped", stderr: "null" })
      .output();
    if (out.success) candidates.push(new TextDecoder().decode(out.stdout).trim());
  } catch { /* pg_config is not installed: look in Debian's folders */ }
  for (let version = 18; version >= 13; version--) candidates.push(`/usr/lib/postgresql/${version}/bin`);
  return candidates;
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const out = await new Deno.Command("id", { args: ["postgres"], stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  const uid = /uid=(\d+)/.exec(text)?.[1];
  const gid = /gid=(\d+)/.exec(text)?.[1];
  if (!out.success || uid === undefined || gid === undefined) {
    throw new Error(`Cannot run PostgreSQL as root and there is no "postgres" user. ${installHint}`);
  }
  return { uid: Number(uid), gid: Number(gid) };
}

async function command(program: string, args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(program, { args, cwd, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr) || new TextDecoder().decode(out.stdout);
    throw new Error(`Cannot run ${program} ${args.join(" ")}: exit ${out.code}\n${text}`);
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
