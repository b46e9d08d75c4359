import assert from "node:assert/strict";
import { z } from "zod";
import { fromBase64Any, toBase64Url } from "../../core/bytes.ts";
import { rejects } from "../../test/assert.ts";
import { checkOf, writerState, writerStateSchema } from "./testdata/vault_writer.ts";
import { Vault, VaultError, type VaultOpenOptions } from "./vault.ts";

const passphrase = "correct horse battery staple";
const kdfIterations = 1000;
const isWindows = Deno.build.os === "windows";

const stateSchema = z.object({
  name: z.string(),
  counter: z.number().int().min(0),
  items: z.array(z.number()),
});
type State = z.infer<typeof stateSchema>;

/** A temporary directory removed when the test ends (`await using`). */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "vault_test_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

function options(path: string, extra: Partial<VaultOpenOptions<State>> = {}): VaultOpenOptions<State> {
  return {
    path,
    passphrase,
    schema: stateSchema,
    kdfIterations,
    initial: () => ({ name: "secret-name-ABC123", counter: 0, items: [] }),
    ...extra,
  };
}

async function readEnvelope(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(path));
}

async function writeEnvelope(path: string, envelope: unknown): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(envelope));
}

Deno.test("a created vault reopens with the same state and keeps no plaintext on disk", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/nested/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  assert.equal(vault.path, path);
  assert.equal(vault.kdfIterations, kdfIterations);
  await vault.update((state) => {
    state.counter = 7;
    state.items.push(1, 2, 3);
  });
  assert.deepEqual(vault.read(), { name: "secret-name-ABC123", counter: 7, items: [1, 2, 3] });

  const reopened = await Vault.open(options(path));
  assert.deepEqual(reopened.read(), vault.read());

  const text = await Deno.readTextFile(path);
  assert.ok(!text.includes("secret-name"), "the state is not in the file in the clear");
  assert.ok(!text.includes(passphrase));
  const envelope = await readEnvelope(path);
  assert.equal(envelope.format, "provisioning-vault");
  assert.equal(envelope.version, 1);
  assert.deepEqual(Object.keys(envelope), ["format", "version", "kdf", "cipher", "ciphertext"]);
  const kdf = envelope.kdf as { name: string; iterations: number; salt: string };
  assert.equal(kdf.name, "PBKDF2-SHA256");
  assert.equal(kdf.iterations, kdfIterations);
  assert.equal(fromBase64Any(kdf.salt).length, 16);
  const cipher = envelope.cipher as { name: string; iv: string };
  assert.equal(cipher.name, "A256GCM");
  assert.equal(fromBase64Any(cipher.iv).length, 12);
});

Deno.test("every write uses a fresh IV", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  const ivs = new Set<string>();
  for (let i = 0; i < 5; i++) {
    await vault.write({ ...vault.read() });
    ivs.add(((await readEnvelope(path)).cipher as { iv: string }).iv);
  }
  assert.equal(ivs.size, 5);
});

Deno.test("opening with create set opens an existing vault instead of replacing it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await (await Vault.open(options(path, { create: true }))).update((state) => ({ ...state, counter: 42 }));
  const again = await Vault.open(options(path, { create: true, initial: () => assert.fail("not called") }));
  assert.equal(again.read().counter, 42);
});

Deno.test("a wrong passphrase is refused with an error naming the file, not the passphrase", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await Vault.open(options(path, { create: true }));
  const error = await rejects(Vault.open(options(path, { passphrase: "Tr0ub4dor&3" })), VaultError);
  assert.equal(error.code, "vault-passphrase-wrong");
  assert.equal(error.path, path);
  assert.equal(error.message, `Cannot open vault "${path}": the passphrase is wrong or the file was altered`);
  assert.match(error.hint ?? "", /PROVISIONING_VAULT_PASSPHRASE/);
  assert.ok(!JSON.stringify({ m: error.message, h: error.hint }).includes("Tr0ub4dor"));
});

Deno.test("an empty passphrase is refused before anything is read or created", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const error = await rejects(Vault.open(options(path, { passphrase: "", create: true })), VaultError);
  assert.equal(error.code, "vault-passphrase-empty");
  assert.equal(await Vault.exists(path), false);
});

Deno.test("a missing vault is vault-missing with a hint to create it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/absent.vault`;
  assert.equal(await Vault.exists(path), false);
  const error = await rejects(Vault.open(options(path)), VaultError);
  assert.equal(error.code, "vault-missing");
  assert.equal(error.message, `Cannot open vault "${path}": the file does not exist`);
  assert.match(error.hint ?? "", /provisioning key init/);
  assert.equal(await Vault.exists(path), false, "nothing was created");
});

Deno.test("a file that is not a valid vault envelope is vault-corrupt, naming what is wrong", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await Vault.open(options(path, { create: true }));
  const good = await readEnvelope(path);
  const kdf = good.kdf as Record<string, unknown>;
  const cases: [string, string | unknown, RegExp][] = [
    ["not JSON", "{ this is not json", /the file is not JSON/],
    ["an array", [], /not an object/],
    [
      "another format",
      { ...good, format: "something-else" },
      /is not a vault \(its "format" is not "provisioning-vault"\)/,
    ],
    ["a newer version", { ...good, version: 2 }, /format version 2, this program reads version 1/],
    [
      "a short salt",
      { ...good, kdf: { ...kdf, salt: toBase64Url(new Uint8Array(8)) } },
      /"kdf\.salt" is invalid: must decode to 16 bytes/,
    ],
    ["zero iterations", { ...good, kdf: { ...kdf, iterations: 0 } }, /"kdf\.iterations" is invalid/],
    ["absurd iterations", { ...good, kdf: { ...kdf, iterations: 1e12 } }, /"kdf\.iterations" is invalid/],
    [
      "another cipher",
      { ...good, cipher: { ...good.cipher as object, name: "A128CBC" } },
      /"cipher\.name" is invalid/,
    ],
    ["no ciphertext", { ...good, ciphertext: undefined }, /"ciphertext" is invalid/],
    ["a non-base64 ciphertext", { ...good, ciphertext: "!!!" }, /"ciphertext" is invalid: must be base64url/],
  ];
  for (const [what, content, message] of cases) {
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await writeEnvelope(path, content);
    const error = await rejects(Vault.open(options(path)), VaultError, what);
    assert.equal(error.code, "vault-corrupt", what);
    assert.ok(error.message.startsWith(`Cannot open vault "${path}": `), what);
    assert.match(error.message, message, what);
    assert.ok(error.hint, `${what} has a hint`);
  }
});

Deno.test("a changed ciphertext or header is refused as altered", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await Vault.open(options(path, { create: true }));
  const good = await readEnvelope(path);
  const ciphertext = fromBase64Any(good.ciphertext as string);
  const flipped = ciphertext.slice();
  flipped[3]! ^= 0x01;
  const truncated = ciphertext.slice(0, -1);
  const otherIv = toBase64Url(new Uint8Array(12));
  const kdf = good.kdf as Record<string, unknown>;
  const cases: [string, unknown][] = [
    ["a flipped ciphertext bit", { ...good, ciphertext: toBase64Url(flipped) }],
    ["a truncated tag", { ...good, ciphertext: toBase64Url(truncated) }],
    ["another IV", { ...good, cipher: { name: "A256GCM", iv: otherIv } }],
    ["another iteration count", { ...good, kdf: { ...kdf, iterations: kdfIterations + 1 } }],
  ];
  for (const [what, envelope] of cases) {
    await writeEnvelope(path, envelope);
    const error = await rejects(Vault.open(options(path)), VaultError, what);
    assert.equal(error.code, "vault-passphrase-wrong", what);
  }
  await writeEnvelope(path, good);
  assert.equal((await Vault.open(options(path))).read().counter, 0, "the untouched envelope still opens");
});

Deno.test("a decrypted state that fails the schema is vault-corrupt naming the field, not its value", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const loose = z.object({ name: z.string(), counter: z.unknown(), items: z.array(z.number()) });
  await Vault.open({
    path,
    passphrase,
    kdfIterations,
    schema: loose,
    create: true,
    initial: () => ({ name: "n", counter: "seven-secret", items: [] }),
  });
  const error = await rejects(Vault.open(options(path)), VaultError);
  assert.equal(error.code, "vault-corrupt");
  assert.match(
    error.message,
    /the decrypted state does not have the expected shape: field "counter" is invalid/,
  );
  assert.ok(!error.message.includes("seven-secret"));
});

Deno.test("the vault file is created 0600 and stays 0600 after writes", { ignore: isWindows }, async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  await vault.update((state) => ({ ...state, counter: 1 }));
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  await vault.changePassphrase("another passphrase");
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
});

Deno.test("concurrent updates all apply, one after another, in call order", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      vault.update(async (state) => {
        // Yield mid-update: a later call must still see this one's result.
        await new Promise((resolve) => setTimeout(resolve, i % 3));
        state.counter++;
        state.items.push(i);
      })),
  );
  assert.deepEqual(results.map((state) => state.counter), Array.from({ length: 50 }, (_, i) => i + 1));
  const expected = Array.from({ length: 50 }, (_, i) => i);
  assert.deepEqual(vault.read().items, expected);
  assert.deepEqual((await Vault.open(options(path))).read().items, expected);
});

Deno.test("an update that throws changes nothing and does not stop the next", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  const failing = vault.update((state) => {
    state.counter = 99;
    throw new Error("changed my mind");
  });
  const next = vault.update((state) => ({ ...state, counter: state.counter + 1 }));
  await assert.rejects(failing, { message: "changed my mind" });
  assert.equal((await next).counter, 1);
  assert.equal((await Vault.open(options(path))).read().counter, 1);
});

Deno.test("a state that fails the schema is refused before anything is written", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  const before = await Deno.readTextFile(path);
  const invalid = { name: "x", counter: -1, items: [] };
  await assert.rejects(vault.write(invalid), {
    name: "TypeError",
    message:
      `Cannot write vault "${path}": the new state is invalid: field "counter" is invalid: Too small: expected number to be >=0`,
  });
  assert.equal(await Deno.readTextFile(path), before);
  assert.equal(vault.read().counter, 0);
});

Deno.test("the state kept in memory is what a re-open reads (unknown keys dropped)", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  await vault.write({ name: "x", counter: 1, items: [], extra: true } as State);
  assert.deepEqual(vault.read(), { name: "x", counter: 1, items: [] });
  assert.deepEqual((await Vault.open(options(path))).read(), vault.read());
});

Deno.test("changePassphrase re-keys the vault: the old passphrase no longer opens it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const vault = await Vault.open(options(path, { create: true }));
  const oldSalt = ((await readEnvelope(path)).kdf as { salt: string }).salt;
  await vault.changePassphrase("a new passphrase", { kdfIterations: 2000 });
  await vault.update((state) => ({ ...state, counter: 5 }));
  const envelope = await readEnvelope(path);
  assert.notEqual((envelope.kdf as { salt: string }).salt, oldSalt);
  assert.equal((envelope.kdf as { iterations: number }).iterations, 2000);
  assert.equal((await rejects(Vault.open(options(path)), VaultError)).code, "vault-passphrase-wrong");
  assert.equal((await Vault.open(options(path, { passphrase: "a new passphrase" }))).read().counter, 5);
});

Deno.test("the passphrase is compared after Unicode normalisation", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await Vault.open(options(path, { create: true, passphrase: "caf\u00e9" }));
  await Vault.open(options(path, { passphrase: "cafe\u0301" }));
});

Deno.test("leftover temporary files are ignored, and removed once stale", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await Vault.open(options(path, { create: true }));
  const fresh = `${dir.path}/.key.vault.00112233aabb.tmp`;
  const stale = `${dir.path}/.key.vault.445566778899.tmp`;
  const unrelated = `${dir.path}/.other.vault.445566778899.tmp`;
  for (const file of [fresh, stale, unrelated]) await Deno.writeTextFile(file, "half a vault");
  const old = new Date(Date.now() - 3600_000);
  await Deno.utime(stale, old, old);
  await Deno.utime(unrelated, old, old);
  assert.equal((await Vault.open(options(path))).read().counter, 0);
  assert.equal(await Vault.exists(fresh), true, "a fresh one may belong to a writer at work");
  assert.equal(await Vault.exists(stale), false);
  assert.equal(await Vault.exists(unrelated), true, "another vault's files are not touched");
});

/** Runs testdata/vault_writer.ts on the vault, waits until it writes, and SIGKILLs it after `ms`. */
async function killWriterAfter(path: string, ms: number): Promise<void> {
  const script = new URL("./testdata/vault_writer.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  const dir = path.slice(0, path.lastIndexOf("/"));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-lock",
      `--config=${config.pathname}`,
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      "--allow-env=PROVISIONING_VAULT_PASSPHRASE",
      script.pathname,
      path,
    ],
    env: { DENO_NO_UPDATE_CHECK: "1", PROVISIONING_VAULT_PASSPHRASE: passphrase },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("ready\n")) {
    const chunk = await stdout.read();
    if (chunk.done) break;
    seen += chunk.value;
  }
  if (seen.includes("ready\n")) await new Promise((resolve) => setTimeout(resolve, ms));
  child.kill("SIGKILL");
  const status = await child.status;
  await stdout.cancel();
  const errors = await stderr;
  assert.equal(status.signal, "SIGKILL", `the writer ended by itself: ${errors}`);
}

Deno.test(
  "a writer SIGKILLed mid-write leaves a vault that opens with a whole state",
  { ignore: isWindows },
  async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/key.vault`;
    await Vault.open({
      path,
      passphrase,
      kdfIterations,
      schema: writerStateSchema,
      create: true,
      initial: () => writerState(0),
    });
    let last = 0;
    for (const ms of [150, 230, 310, 90, 400, 170]) {
      await killWriterAfter(path, ms);
      const state = (await Vault.open({ path, passphrase, schema: writerStateSchema })).read();
      assert.equal(state.check, checkOf(state.counter), "the state is whole");
      assert.ok(state.counter >= last, `the counter went back from ${last} to ${state.counter}`);
      last = state.counter;
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      for await (const entry of Deno.readDir(dir.path)) {
        assert.ok(
          entry.name === "key.vault" || /^\.key\.vault\.[0-9a-f]{12}\.tmp$/.test(entry.name),
          entry.name,
        );
      }
    }
    assert.ok(last >= 6, `the writers made progress (${last} writes)`);
  },
);
