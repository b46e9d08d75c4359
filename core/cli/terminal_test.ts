import { assertEquals, deepStrictEqual, rejects } from "../../test/assert.ts";
import { ProvisioningError } from "../errors.ts";
import { memoryWriter } from "./context.ts";
import { readSecret, type TerminalInput, TerminalInteraction } from "./terminal.ts";

/** A terminal that delivers `chunks` one read at a time, then end of input, and records raw mode. */
function scriptedTerminal(chunks: string[], terminal = true): TerminalInput & { rawModes: boolean[] } {
  const encoder = new TextEncoder();
  const pending = chunks.map((chunk) => encoder.encode(chunk));
  const rawModes: boolean[] = [];
  return {
    rawModes,
    isTerminal: () => terminal,
    setRaw: (mode) => void rawModes.push(mode),
    read: (buffer) => {
      const next = pending.shift();
      if (next === undefined) return Promise.resolve(null);
      buffer.set(next);
      return Promise.resolve(next.length);
    },
  };
}

Deno.test("readSecret returns what was typed up to Enter, without echoing it", async () => {
  const stdin = scriptedTerminal(["s3cr", "et\r", "ignored"]);
  const stderr = memoryWriter();
  assertEquals(await readSecret({ label: "Passphrase" }, { stdin, stderr }), "s3cret");
  assertEquals(stderr.text(), "Passphrase: \n");
  deepStrictEqual(stdin.rawModes, [true, false]);
});

Deno.test("readSecret applies Backspace and Ctrl+U and ignores arrow keys", async () => {
  const stdin = scriptedTerminal(["wrong\x15ab\x7fc\x1b[D\x1bOAé\b1\n"]);
  assertEquals(await readSecret({ label: "PIN" }, { stdin, stderr: memoryWriter() }), "ac1");
});

Deno.test("readSecret keeps a multi-byte character split across reads", async () => {
  const bytes = new TextEncoder().encode("é");
  const stdin = scriptedTerminal([]);
  const chunks = [bytes.subarray(0, 1), bytes.subarray(1), new TextEncoder().encode("\r")];
  stdin.read = (buffer) => {
    const next = chunks.shift();
    if (next === undefined) return Promise.resolve(null);
    buffer.set(next);
    return Promise.resolve(next.length);
  };
  assertEquals(await readSecret({ label: "PIN" }, { stdin, stderr: memoryWriter() }), "é");
});

Deno.test("Ctrl+C at a secret prompt ends with exit code 130 and leaves raw mode", async () => {
  const stdin = scriptedTerminal(["12\x03"]);
  const error = await rejects(
    readSecret({ label: "PIN" }, { stdin, stderr: memoryWriter() }),
    ProvisioningError,
  );
  assertEquals(error.code, "interrupted");
  assertEquals(error.exitCode, 130);
  deepStrictEqual(stdin.rawModes, [true, false]);
});

Deno.test("end of input on an empty secret prompt cancels it", async () => {
  const error = await rejects(
    readSecret({ label: "PIN" }, { stdin: scriptedTerminal([]), stderr: memoryWriter() }),
    ProvisioningError,
  );
  assertEquals(error.code, "cancelled");
});

Deno.test("without a terminal a secret prompt fails at once with exit code 2 and the request's hint", async () => {
  const stdin = scriptedTerminal(["never read\r"], false);
  const stderr = memoryWriter();
  const error = await rejects(
    readSecret({ label: "the vault passphrase", hint: "Set PROVISIONING_VAULT_PASSPHRASE" }, {
      stdin,
      stderr,
    }),
    ProvisioningError,
  );
  assertEquals(error.message, "Cannot ask for the vault passphrase: standard input is not a terminal");
  assertEquals(error.hint, "Set PROVISIONING_VAULT_PASSPHRASE");
  assertEquals(error.exitCode, 2);
  assertEquals(stderr.text(), "");
  deepStrictEqual(stdin.rawModes, []);
});

Deno.test("requestPin names the key and the attempts left", async () => {
  const asked: string[] = [];
  const interaction = new TerminalInteraction({
    stderr: memoryWriter(),
    readSecret: (request) => (asked.push(request.label), Promise.resolve("1234")),
  });
  assertEquals(await interaction.requestPin({ label: 'software key "a.vault"', attemptsLeft: 1 }), "1234");
  assertEquals(await interaction.requestPin({ label: "key" }), "1234");
  deepStrictEqual(asked, ['PIN for software key "a.vault" (1 attempt left)', "PIN for key"]);
});

Deno.test("a stream of keep-alives asking for a touch prints one prompt", () => {
  const stderr = memoryWriter();
  const interaction = new TerminalInteraction({ stderr, readSecret: () => Promise.resolve("") });
  for (let i = 0; i < 5; i++) interaction.promptUserPresence("the key");
  interaction.promptUserPresence("another key");
  assertEquals(stderr.text(), "Touch the key to continue\nTouch another key to continue\n");
});
