/**
 * `provisioning panel` as an admin runs it: the real CLI in its own process under the `cli`
 * permission set, serving on 127.0.0.1 until Ctrl+C; and what the task form's launcher grants
 * for it (the named files, `--host`) or refuses (a PostgreSQL database).
 *
 * @module
 */
import { assert, assertEquals, deepStrictEqual, rejects } from "./assert.ts";
import { planLaunch } from "../core/cli/launch.ts";
import { ProvisioningError } from "../core/errors.ts";

const root = new URL("..", import.meta.url).pathname;

/** Reads the child's stdout line by line until `done` says it saw enough; returns every line read. */
async function readUntil(
  stream: ReadableStream<Uint8Array>,
  done: (lines: readonly string[]) => boolean,
): Promise<{ lines: string[]; rest: ReadableStream<string> }> {
  const lines: string[] = [];
  const text = stream.pipeThrough(new TextDecoderStream());
  const reader = text.getReader();
  let buffer = "";
  while (!done(lines)) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += value;
    const parts = buffer.split("\n");
    buffer = parts.pop()!;
    lines.push(...parts);
  }
  reader.releaseLock();
  return { lines, rest: text };
}

/** Starts `provisioning ...args` in `dir` under the `cli` set with `dir` granted, output piped. */
function spawnCli(dir: string, ...args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      `--config=${root}deno.json`,
      "-P=cli",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      `${root}main.ts`,
      ...args,
    ],
    cwd: dir,
    env: {},
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test("provisioning panel serves the API and the first-run link on 127.0.0.1 and stops on Ctrl+C with 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "panel-cli-" });
  try {
    const database = `${dir}/data/panel.sqlite`;
    await Deno.mkdir(`${dir}/data`);
    const child = spawnCli(dir, "panel", "--database", database, "--port", "0");
    const stderr = new Response(child.stderr).text();
    const { lines, rest } = await readUntil(
      child.stdout,
      (seen) => seen.some((l) => l.startsWith("Panel at ")),
    );
    const printed = lines.join("\n");
    const url = /^Panel at (http:\/\/127\.0\.0\.1:\d+\/)/m.exec(printed)?.[1];
    const link = /^\s+(http:\/\/127\.0\.0\.1:\d+\/bootstrap\?token=\S+)$/m.exec(printed)?.[1];
    if (url === undefined || link === undefined) {
      child.kill("SIGKILL");
      await child.status;
      throw new Error(`no address or link printed:\n${printed}\n${await stderr}`);
    }
    assert(link.startsWith(url), "the link points at the panel that printed it");
    assert(printed.includes(`database ${database}`), printed);

    const openapi = await fetch(new URL("/api/v1/openapi.json", url));
    assertEquals(openapi.status, 200);
    assertEquals((await openapi.json()).info.version, "1");

    // The bootstrap link: its page carries the token in a form; posting it makes an owner session.
    const shown = await fetch(link, { redirect: "manual" });
    assertEquals(shown.status, 200);
    const token = /name="token" value="([^"]+)"/.exec(await shown.text())?.[1];
    assert(token !== undefined, "the bootstrap page carries its token");
    const signedIn = await fetch(new URL("/bootstrap", url), {
      method: "POST",
      body: new URLSearchParams({ token, signInName: "owner@contoso.test" }),
      headers: { "content-type": "application/x-www-form-urlencoded" },
      redirect: "manual",
    });
    await signedIn.body?.cancel();
    assertEquals(signedIn.status, 303);
    const cookie = signedIn.headers.get("set-cookie")?.split(";")[0];
    assert(cookie !== undefined && cookie.startsWith("provisioning-panel="), "an owner session cookie");
    const session = await fetch(new URL("/api/v1/session", url), { headers: { cookie } });
    assertEquals(session.status, 200);
    assertEquals((await session.json()).admin.role, "owner");

    child.kill("SIGINT");
    const [status, errors] = await Promise.all([child.status, stderr]);
    await rest.cancel();
    assertEquals(status.code, 0, errors);
    await rejects(fetch(url), TypeError, "the panel stopped listening");
    assertEquals((await Deno.stat(database)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("provisioning panel without --database makes the data folder (0700) and its file (0600)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "panel-cli-" });
  try {
    const child = spawnCli(dir, "panel", "--port", "0");
    const stderr = new Response(child.stderr).text();
    const { lines, rest } = await readUntil(
      child.stdout,
      (seen) => seen.some((l) => l.startsWith("Panel at ")),
    );
    child.kill("SIGINT");
    const [status, errors] = await Promise.all([child.status, stderr]);
    await rest.cancel();
    assertEquals(status.code, 0, errors);
    assert(lines.some((l) => l.includes("database .provisioning/panel.sqlite")), lines.join("\n"));
    assertEquals((await Deno.stat(`${dir}/.provisioning`)).mode! & 0o777, 0o700);
    assertEquals((await Deno.stat(`${dir}/.provisioning/panel.sqlite`)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the task form grants panel's database folder, --cert and --key, and --host", () => {
  const plan = planLaunch({
    args: [
      "panel",
      "--database",
      "data/panel.sqlite",
      "--host",
      "0.0.0.0",
      "--cert",
      "/etc/tls/c.pem",
      "--key=k.pem",
    ],
    cwd: "/home/me",
    root: "/opt/provisioning",
    deno: "/usr/bin/deno",
    env: () => undefined,
    hidapiLibraries: [],
  });
  deepStrictEqual(plan.grants.write, ["/home/me", "/home/me/data"]);
  deepStrictEqual(plan.grants.read, ["/home/me", "/home/me/data", "/etc/tls/c.pem", "/home/me/k.pem"]);
  deepStrictEqual(plan.grants.hosts, ["0.0.0.0"]);
  assert(plan.args.some((arg) => arg.startsWith("--allow-net=") && arg.endsWith(",0.0.0.0")));
});

Deno.test("the task form refuses panel on PostgreSQL with where to read how, never echoing the URL", () => {
  const error = (() => {
    try {
      planLaunch({
        args: ["panel", "--database=postgres://provisioning:s3cret@db.example.com/provisioning"],
        cwd: "/home/me",
        root: "/opt/provisioning",
        deno: "/usr/bin/deno",
        env: () => undefined,
        hidapiLibraries: [],
      });
    } catch (error) {
      return error;
    }
    return undefined;
  })();
  assert(error instanceof ProvisioningError, "refused");
  assertEquals(error.exitCode, 2);
  assert(error.hint?.includes("docs/panel.md"), error.hint);
  assert(!`${error.message} ${error.hint}`.includes("s3cret"), "no password in the refusal");
});
