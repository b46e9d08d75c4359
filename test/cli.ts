/**
 * Runs the real CLI as a separate process, the way an admin does: under the `cli` permission set,
 * in a working folder of its own (provisioning.json, the token cache and the vault live there),
 * which the process may read and write.
 *
 * @module
 */

const root = new URL("..", import.meta.url).pathname;

/** What a CLI run printed and how it ended. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `provisioning ...args` in `dir` with exactly `env`; `flags` are extra Deno flags. */
export async function runCli(
  dir: string,
  env: Record<string, string>,
  flags: readonly string[],
  ...args: string[]
): Promise<CliRun> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      `--config=${root}deno.json`,
      "-P=cli",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      ...flags,
      `${root}main.ts`,
      ...args,
    ],
    cwd: dir,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: text(output.stdout), stderr: text(output.stderr) };
}

/** The `export NAME=value` lines a sandbox's instructions print, as an environment. */
export function sandboxEnvironment(instructions: string): Record<string, string> {
  return Object.fromEntries([...instructions.matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
}
