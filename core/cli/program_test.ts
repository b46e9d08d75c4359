import { Command } from "@commander-js/extra-typings";
import { assert, assertEquals, deepStrictEqual } from "../../test/assert.ts";
import { ProvisioningError } from "../errors.ts";
import { PluginRegistry } from "../plugin.ts";
import { type CliContext, memoryWriter } from "./context.ts";
import { type CommandFactory, runProgram, VERSION } from "./program.ts";
import { describePlugin, formatPlugins, pluginsCommand } from "./plugins.ts";

const root = new URL("../../", import.meta.url);

/** Runs the real CLI (`main.ts` under the `cli` permission set) and collects what it printed. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    // -q: Deno warns on stderr that permission sets are experimental; the CLI's stderr is the subject here.
    args: ["run", "-q", "-P=cli", "main.ts", ...args],
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

function lines(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

Deno.test("--version prints the name and deno.json's version and exits 0", async () => {
  const { code, stdout, stderr } = await cli("--version");
  assertEquals(code, 0);
  assertEquals(stdout, `provisioning ${VERSION}\n`);
  assertEquals(stderr, "");
});

Deno.test("--help exits 0 and lists the commands", async () => {
  const { code, stdout } = await cli("--help");
  assertEquals(code, 0);
  assert.match(stdout, /^Usage: provisioning /);
  assert.match(stdout, /^ {2}plugins\b/m);
  assert.match(stdout, /--verbose/);
});

Deno.test("a leading -- (as deno task passes it) is ignored", async () => {
  const { code, stdout } = await cli("--", "--version");
  assertEquals(code, 0);
  assertEquals(stdout, `provisioning ${VERSION}\n`);
});

Deno.test("an unknown option exits 2 with one stderr line naming it and the closest option", async () => {
  const { code, stdout, stderr } = await cli("--verison");
  assertEquals(code, 2);
  assertEquals(stdout, "");
  deepStrictEqual(lines(stderr), ["error: unknown option '--verison' (Did you mean --version?)"]);
});

Deno.test("an unknown command exits 2 with one stderr line suggesting the closest command", async () => {
  const { code, stderr } = await cli("pluginz");
  assertEquals(code, 2);
  deepStrictEqual(lines(stderr), ["error: unknown command 'pluginz' (Did you mean plugins?)"]);
});

Deno.test("an unknown option of a subcommand suggests that subcommand's option", async () => {
  const { code, stderr } = await cli("plugins", "--jsno");
  assertEquals(code, 2);
  deepStrictEqual(lines(stderr), ["error: unknown option '--jsno' (Did you mean --json?)"]);
});

Deno.test("an extra argument is a usage error (exit 2, one line)", async () => {
  const { code, stderr } = await cli("plugins", "extra");
  assertEquals(code, 2);
  assertEquals(lines(stderr).length, 1);
  assert.match(stderr, /^error: too many arguments for 'plugins'/);
});

Deno.test("no command prints help on stderr and exits 2", async () => {
  const { code, stdout, stderr } = await cli();
  assertEquals(code, 2);
  assertEquals(stdout, "");
  assert.match(stderr, /^Usage: provisioning /);
});

Deno.test("plugins --json prints every registered plugin's manifest with all lists present", async () => {
  const { code, stdout, stderr } = await cli("plugins", "--json");
  assertEquals(code, 0);
  assertEquals(stderr, "");
  const parsed: unknown = JSON.parse(stdout);
  assert.ok(typeof parsed === "object" && parsed !== null && "plugins" in parsed);
  const plugins = (parsed as { plugins: unknown }).plugins;
  assert.ok(Array.isArray(plugins));
  for (const plugin of plugins as Record<string, unknown>[]) {
    assert.ok(plugin.kind === "authenticator" || plugin.kind === "provider", `kind of ${plugin.id}`);
    assertEquals(typeof plugin.id, "string");
    assertEquals(typeof plugin.summary, "string");
    for (const list of ["hosts", "files", "env", "run", "options"]) {
      assert.ok(Array.isArray(plugin[list]), `${plugin.id}.${list} is an array`);
    }
  }
  const ids = (plugins as { id: string }[]).map((plugin) => plugin.id);
  assertEquals(new Set(ids).size, ids.length);
  if (await exists(new URL("authenticators/software/plugin.ts", root))) {
    assert.ok(ids.includes("software"), "the built-in software authenticator is registered");
  }
});

Deno.test("plugins lists each plugin as kind, id and summary, with its needs", async () => {
  const json = JSON.parse((await cli("plugins", "--json")).stdout) as {
    plugins: { kind: string; id: string }[];
  };
  const { code, stdout } = await cli("plugins");
  assertEquals(code, 0);
  if (json.plugins.length === 0) assertEquals(stdout, "No plugins registered.\n");
  for (const plugin of json.plugins) {
    assert.match(stdout, new RegExp(`^${plugin.kind}\\s+${plugin.id}\\s+\\S`, "m"));
  }
});

async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** A context for running the program in-process, with its output captured. */
function memoryContext(registry = new PluginRegistry()) {
  const stdout = memoryWriter();
  const stderr = memoryWriter();
  const context: CliContext = {
    registry,
    interaction: { requestPin: () => Promise.reject(new Error("no PIN here")), promptUserPresence: () => {} },
    stdout,
    stderr,
    env: () => undefined,
    readSecret: () => Promise.reject(new Error("no secrets here")),
    signal: new AbortController().signal,
  };
  return { context, stdout, stderr };
}

const failing = (error: unknown): CommandFactory => () =>
  new Command("fail").action(() => Promise.reject(error));

Deno.test("a missing argument of a command group is a usage error on one line", async () => {
  const { context, stderr } = memoryContext();
  const greet: CommandFactory = (ctx) =>
    new Command("greet").argument("<name>").action((name) => ctx.stdout.write(`hello ${name}\n`));
  assertEquals(await runProgram(["greet"], { context, commands: [greet] }), 2);
  assertEquals(stderr.text(), "error: missing required argument 'name'\n");
});

Deno.test("a ProvisioningError ends the run with its exit code and its message and hint on one line", async () => {
  const { context, stderr } = memoryContext();
  const error = new ProvisioningError(
    "vault-locked",
    'Cannot open vault "a.vault": the passphrase is wrong',
    {
      hint: "Check PROVISIONING_VAULT_PASSPHRASE",
      exitCode: 3,
    },
  );
  assertEquals(await runProgram(["fail"], { context, commands: [failing(error)] }), 3);
  assertEquals(
    stderr.text(),
    'error: Cannot open vault "a.vault": the passphrase is wrong. Check PROVISIONING_VAULT_PASSPHRASE\n',
  );
});

Deno.test("an unexpected error exits 1 with one line, and its stack and cause only with --verbose", async () => {
  const error = new TypeError("boom", { cause: new RangeError("underneath") });
  const quiet = memoryContext();
  assertEquals(await runProgram(["fail"], { context: quiet.context, commands: [failing(error)] }), 1);
  assertEquals(quiet.stderr.text(), "error: boom (run with --verbose for details)\n");

  const loud = memoryContext();
  assertEquals(
    await runProgram(["--verbose", "fail"], { context: loud.context, commands: [failing(error)] }),
    1,
  );
  const text = loud.stderr.text();
  assert.match(text, /^error: boom\nTypeError: boom\n\s+at /);
  assert.match(text, /\nCaused by: RangeError: underneath\n/);
});

Deno.test("PROVISIONING_DEBUG=1 shows the stack like --verbose", async () => {
  const { context, stderr } = memoryContext();
  const debug: CliContext = { ...context, env: (name) => (name === "PROVISIONING_DEBUG" ? "1" : undefined) };
  assertEquals(await runProgram(["fail"], { context: debug, commands: [failing(new Error("x"))] }), 1);
  assert.match(stderr.text(), /^error: x\nError: x\n\s+at /);
});

Deno.test("a missing permission is reported as one line naming the path, why, and the flag that allows it", async () => {
  const { context, stderr } = memoryContext();
  const error = new Deno.errors.NotCapable(
    'Requires read access to "/etc/x", run again with the --allow-read flag',
  );
  assertEquals(await runProgram(["fail"], { context, commands: [failing(error)] }), 1);
  assertEquals(lines(stderr.text()).length, 1);
  assert.match(stderr.text(), /^error: Cannot continue: this run may not read "\/etc\/x": it is outside/);
  assert.match(stderr.text(), /--allow-read=\/etc\/x/);
  assert.match(stderr.text(), /docs\/permissions\.md/);
});

Deno.test("formatPlugins shows options with their environment variable and default", () => {
  const text = formatPlugins([
    describePlugin({
      kind: "authenticator",
      manifest: {
        id: "software",
        summary: "A FIDO2 key in an encrypted file",
        hosts: [],
        files: ["key.vault"],
        env: ["PROVISIONING_VAULT_PASSPHRASE"],
        options: [{
          flags: "--vault <path>",
          description: "vault file",
          env: "PROVISIONING_VAULT",
          default: "key.vault",
        }],
      },
      open: () => Promise.reject(new Error("not opened in this test")),
    }),
  ]);
  assertEquals(
    text,
    [
      "authenticator  software  A FIDO2 key in an encrypted file",
      "  hosts    none",
      "  files    key.vault",
      "  env      PROVISIONING_VAULT_PASSPHRASE",
      "  run      none",
      "  options",
      '    --vault <path>  vault file (env PROVISIONING_VAULT, default "key.vault")',
      "",
    ].join("\n"),
  );
});

Deno.test("plugins --json in-process prints the registry's plugins", async () => {
  const registry = new PluginRegistry().register({
    kind: "provider",
    manifest: { id: "entra", summary: "Microsoft Entra ID", hosts: ["graph.microsoft.com"] },
    connect: () => Promise.reject(new Error("not used by this test")),
  });
  const { context, stdout } = memoryContext(registry);
  assertEquals(await runProgram(["plugins", "--json"], { context, commands: [pluginsCommand] }), 0);
  deepStrictEqual(JSON.parse(stdout.text()), {
    plugins: [{
      kind: "provider",
      id: "entra",
      summary: "Microsoft Entra ID",
      hosts: ["graph.microsoft.com"],
      files: [],
      env: [],
      run: [],
      options: [],
    }],
  });
});

Deno.test("the vendor's command lines: seed usage first, typos suggested, panel-only flags refused with a reason", async () => {
  const help = await cli("--help");
  assertEquals(help.code, 0);
  assert.match(help.stdout, /^Usage: provisioning --csv users\.csv \[--mode headful\] \[--verbose\]\n/);
  assert.match(help.stdout, /--login \| --automatic-provision \| --register-deeplink/);

  const typo = await cli("--cvs", "users.csv");
  assertEquals(typo.code, 2);
  assert.deepEqual(lines(typo.stderr), ["error: unknown option '--cvs' (Did you mean --csv?)"]);

  const command = await cli("provison", "--user", "x@contoso.com");
  assertEquals(command.code, 2);
  assert.match(command.stderr, /unknown command 'provison' \(Did you mean provision\?\)/);

  for (const flag of ["--register-deeplink", "--automatic-provision"]) {
    const alone = await cli(flag);
    assertEquals(alone.code, 2, flag);
    assertEquals(lines(alone.stderr).length, 1, alone.stderr);
    assert.match(alone.stderr, /no panel yet/, flag);
  }

  const long = await cli("--user", "x@contoso.com", "--display-name", "A name that is far too long for it");
  assertEquals(long.code, 2);
  assert.match(long.stderr, /--display-name .* has 34 characters; the directory takes 1 to 30/);
});

Deno.test("help per command lists only the options that apply", async () => {
  const sandbox = await cli("sandbox", "--help");
  assert.match(sandbox.stdout, /--port/);
  assert.doesNotMatch(sandbox.stdout, /--graph-version|--tenant/);
  const provision = await cli("provision", "--help");
  assert.match(provision.stdout, /--graph-version/);
  assert.doesNotMatch(provision.stdout, /--port|--users/);
});

Deno.test("--verbose shows a cause that is no Error (a JSON error body) as its content, never [object Object]", async () => {
  const { context, stderr } = memoryContext();
  const body = { error: { code: "Request_ResourceNotFound", message: "Resource 'x' does not exist" } };
  const error = new ProvisioningError("user-not-found", "Cannot find user x", { cause: body });
  assertEquals(await runProgram(["--verbose", "fail"], { context, commands: [failing(error)] }), 1);
  assert.doesNotMatch(stderr.text(), /\[object Object\]/);
  assert.match(stderr.text(), /Caused by: \{"error":\{"code":"Request_ResourceNotFound"/);
  // Thrown as it is, too.
  const bare = memoryContext();
  assertEquals(await runProgram(["fail"], { context: bare.context, commands: [failing(body)] }), 1);
  assert.match(bare.stderr.text(), /^error: \{"error":\{"code":"Request_ResourceNotFound"/);
});
