/**
 * A run in a real terminal (a pseudo-terminal made by util-linux `script`): the PIN prompt stays
 * visible while the progress bar waits (the bar is drawn after it, never over it), and a wrong PIN
 * is said so with the attempts left before the prompt comes again.
 */
import { assert, assertEquals } from "./assert.ts";
import { bulkFixture, passkeysByUser, writeUsersCsv } from "./bulk_support.ts";

const root = new URL("..", import.meta.url).pathname;

/** Reads the terminal's output as it comes, and answers prompts. */
class TerminalSession {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #text = "";
  readonly #done: Promise<void>;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#done = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stdout) this.#text += decoder.decode(chunk, { stream: true });
    })();
  }

  get text(): string {
    return this.#text;
  }

  /** Waits until the output after `from` matches `pattern`; returns where the match ends. */
  async waitFor(pattern: RegExp, from = 0): Promise<number> {
    for (let i = 0; i < 1200; i++) {
      const match = pattern.exec(this.#text.slice(from));
      if (match) return from + match.index + match[0].length;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`the terminal never showed ${pattern}; it showed:\n${JSON.stringify(this.#text)}`);
  }

  async type(text: string): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(text));
  }

  async end(): Promise<Deno.CommandStatus> {
    await this.#writer.close().catch(() => {});
    const status = await this.#child.status;
    await this.#done;
    return status;
  }
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

Deno.test("in a terminal, the PIN prompt stays visible over the progress bar, and a wrong PIN says how many attempts are left", async () => {
  await using fixture = await bulkFixture({ users: 4 });
  const csv = await writeUsersCsv(fixture, fixture.upns(2));
  const env = { ...fixture.env, TERM: "xterm", NO_COLOR: "1" };
  delete (env as Record<string, string>)["PROVISIONING_KEY_PIN"]; // the run asks for it
  const command = [
    Deno.execPath(),
    "run",
    "-q",
    `--config=${root}deno.json`,
    "-P=cli",
    `--allow-read=${fixture.dir}`,
    `--allow-write=${fixture.dir}`,
    `${root}main.ts`,
    "--csv",
    csv,
    "--concurrency",
    "1",
  ].map(shellQuote).join(" ");
  // script: -q no banner, -e the child's exit code, -f flush at once, -c the command; no typescript file.
  const child = new Deno.Command("script", {
    args: ["-qefc", command, "/dev/null"],
    cwd: fixture.dir,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const terminal = new TerminalSession(child);
  try {
    const first = await terminal.waitFor(/PIN for [^\n]*\(\d+ attempts? left\): /);
    // The bar keeps its timer while the prompt waits: nothing may be drawn over the prompt.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    assertEquals(terminal.text.slice(first), "", "something was drawn over the PIN prompt");
    await terminal.type("000000\r");
    const wrong = await terminal.waitFor(
      /Wrong PIN for [^\n]*: (\d+) attempts? left before it locks\r?\n/,
      first,
    );
    const second = await terminal.waitFor(/PIN for [^\n]*\(\d+ attempts? left\): /, wrong);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assertEquals(terminal.text.slice(second), "", "something was drawn over the second PIN prompt");
    await terminal.type("482916\r");
    // After the answer the run goes on: the bar is drawn again, below the prompt.
    const bar = await terminal.waitFor(/\d\/2 \(\d+%\)/, second);
    // The software key asks for its PIN for each registration: the second user's prompt.
    await terminal.waitFor(/PIN for [^\n]*\(\d+ attempts? left\): /, bar);
    await terminal.type("482916\r");
    await terminal.waitFor(/finished in/, bar);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  } finally {
    const status = await terminal.end();
    await child.stderr.cancel().catch(() => {});
    assertEquals(status.code, 0, terminal.text);
  }
  assert.match(terminal.text, /Wrong PIN for [^\n]*: \d+ attempts? left before it locks/);
  assertEquals(passkeysByUser(fixture.sandbox).size, 2);
});
