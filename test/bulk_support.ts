/**
 * What the bulk end-to-end tests share: an Entra sandbox served the way `provisioning sandbox`
 * serves it (Entra's real shapes: rp id login.microsoft.com, JWE challenges, every id encoding,
 * timeouts 60000 and 0; pages for the browser path on its own loopback origin), a working folder with
 * a software key in it, the CLI as a child process that can be killed, and readers of the
 * sandbox's inspection and of results.csv / failures.csv.
 *
 * @module
 */
import { parse } from "csv-parse/sync";
import { type Sandbox, type SandboxOptions, startSandbox } from "../plugins/entra/sandbox/server.ts";
import type { PluginContext, ProviderSession } from "../core/plugin.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";
import { runCli } from "./cli.ts";
import { scriptedUser } from "./software_key.ts";

const root = new URL("..", import.meta.url).pathname;

/** A sandbox plus a folder with an initialised software key, and the environment the CLI needs. */
export interface BulkFixture extends AsyncDisposable {
  readonly sandbox: Sandbox;
  readonly dir: string;
  readonly env: Record<string, string>;
  /** `user0001@contoso.sandbox` … for the first `n` seeded users. */
  upns(n: number): string[];
}

/** Starts a sandbox with `users` users and makes a software key with a PIN in a fresh folder. */
export async function bulkFixture(options: Omit<SandboxOptions, "webauthn"> = {}): Promise<BulkFixture> {
  const sandbox = await cliSandbox(options);
  const dir = await Deno.makeTempDir({ prefix: "provisioning-bulk-" });
  const env: Record<string, string> = {
    ...sandboxEnv(sandbox),
    PROVISIONING_VAULT: `${dir}/key.vault`,
    PROVISIONING_VAULT_PASSPHRASE: "correct horse battery",
    PROVISIONING_KEY_PIN: "482916",
  };
  const init = await runCli(dir, env, [], "key", "init", "--kdf-iterations", "100000", "--set-pin");
  if (init.code !== 0) throw new Error(`key init failed: ${init.stderr}`);
  const users = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) => /^user\d+@/.test(u));
  return {
    sandbox,
    dir,
    env,
    upns: (n) => users.slice(0, n),
    async [Symbol.asyncDispose]() {
      await sandbox.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Writes `users.csv` (a `upn` column) in the fixture's folder and returns its name. */
export async function writeUsersCsv(fixture: BulkFixture, upns: readonly string[], name = "users.csv") {
  await Deno.writeTextFile(`${fixture.dir}/${name}`, ["upn", ...upns].join("\n") + "\n");
  return name;
}

/** The CLI as a child process in the fixture's folder, to kill at will. */
export function spawnCli(fixture: BulkFixture, ...args: string[]): Deno.ChildProcess {
  return spawnCliWith(fixture, {}, ...args);
}

/** {@link spawnCli} with a stdin to write to (`"piped"`), for `--user -`. */
export function spawnCliWith(
  fixture: BulkFixture,
  io: { stdin?: "piped" | "null" },
  ...args: string[]
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      `--config=${root}deno.json`,
      "-P=cli",
      `--allow-read=${fixture.dir}`,
      `--allow-write=${fixture.dir}`,
      `${root}main.ts`,
      ...args,
    ],
    cwd: fixture.dir,
    env: fixture.env,
    clearEnv: true,
    stdin: io.stdin ?? "inherit",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Passkeys per UPN, as the sandbox holds them (only users with at least one). */
export function passkeysByUser(sandbox: Sandbox): Map<string, { displayName: string; verified: boolean }[]> {
  const map = new Map<string, { displayName: string; verified: boolean }[]>();
  for (const user of sandbox.inspect().users) {
    if (user.passkeys.length > 0) map.set(user.userPrincipalName, user.passkeys);
  }
  return map;
}

/** The rows of a CSV file the tool wrote (BOM and formula neutralisation as written). */
export async function readOutput(path: string): Promise<Record<string, string>[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  return parse(text.replace(/^\uFEFF/, ""), { columns: true, skip_empty_lines: true }) as Record<
    string,
    string
  >[];
}

/**
 * A signed-in Entra session on `sandbox` (client credentials), for tests that run the engine in
 * process. The token cache goes to `dir` (the working folder while signing in).
 */
export async function sandboxSession(sandbox: Sandbox, dir: string): Promise<ProviderSession> {
  const settings = sandboxEnv(sandbox);
  const context: PluginContext = {
    interaction: scriptedUser([]),
    env: (name) => settings[name],
    readSecret: () => Promise.reject(new Error("no secret")),
    notify: () => {},
  };
  const cwd = Deno.cwd();
  Deno.chdir(dir);
  try {
    return await entraProvider.connect(context, {});
  } finally {
    Deno.chdir(cwd);
  }
}

/** A sandbox served as `provisioning sandbox` serves it: Entra's real shapes, production's rp id and origin. */
export async function cliSandbox(options: Omit<SandboxOptions, "webauthn"> = {}): Promise<Sandbox> {
  return await startSandbox(options);
}

/** The environment that points the Entra plugin at `sandbox` with its app's client credentials. */
export function sandboxEnv(sandbox: Sandbox): Record<string, string> {
  return {
    PROVISIONING_SANDBOX: sandbox.url,
    PROVISIONING_TENANT: sandbox.tenantId,
    PROVISIONING_CLIENT_ID: sandbox.app.clientId,
    PROVISIONING_CLIENT_SECRET: sandbox.app.clientSecret,
  };
}
