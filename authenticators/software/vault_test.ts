import assert from "node:assert/strict";
import { z } from "zod";
import { fromBase64Any } from "../../core/bytes.ts";
import { rejects } from "../../test/assert.ts";
import { checkOf, writerChanges, writerState, writerStateSchema } from "./testdata/vault_writer.ts";
import { Vault, VaultError, type VaultOpenOptions } from "./vault.ts";
import { guardFile } from "./vault_guard.ts";

const passphrase = "correct horse battery staple";
const kdfIterations = 1000;
const isWindows = Deno.build.os === "windows";
/** Mounting a small tmpfs (a full disk on demand) needs root; `id` says, as `sys` is not granted. */
const isRoot = !isWindows &&
  new TextDecoder().decode(new Deno.Command("id", { args: ["-u"] }).outputSync().stdout).trim() === "0";

const stateSchema = z.object({
  name: z.string(),
  counter: z.number().int().min(0),
  items: z.array(z.number()),
});
type State = z.infer<typeof stateSchema>;
const changeSchema = z.object({ add: z.number().int() });
type Change = z.infer<typeof changeSchema>;

/** A temporary directory removed when the test ends (`await using`). */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "vault_test_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

function options(
  path: string,
  extra: Partial<VaultOpenOptions<State, Change>> = {},
): VaultOpenOptions<State, Change> {
  return {
    path,
    passphrase,
    schema: stateSchema,
    changes: {
      schema: changeSchema,
      apply: (state, change) => {
        state.counter += change.add;
        state.items.push(change.add);
      },
    },
    kdfIterations,
    initial: () => ({ name: "secret-name-ABC123", counter: 0, items: [] }),
    ...extra,
  };
}

async function lines(path: string): Promise<string[]> {
  return (await Deno.readTextFile(path)).split("\n").slice(0, -1);
}

async function writeLines(path: string, content: string[]): Promise<void> {
  await Deno.writeTextFile(path, content.map((line) => `${line}\n`).join(""));
}

/** A vault with `count` changes (add 1, 2, 3, …) and no compaction, closed. */
async function vaultWithChanges(
  path: string,
  count: number,
  extra: Partial<VaultOpenOptions<State, Change>> = {},
) {
  await using vault = await Vault.open(options(path, { create: true, compactAfterBytes: 1 << 30, ...extra }));
  for (let i = 1; i <= count; i++) await vault.change(() => ({ add: i }));
  return vault.read();
}

Deno.test("a created vault reopens with the same state and keeps no plaintext on disk", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/nested/key.vault`;
  {
    await using vault = await Vault.open(options(path, { create: true }));
    assert.equal(vault.path, path);
    assert.equal(vault.kdfIterations, kdfIterations);
    await vault.change(() => ({ add: 7 }));
    assert.deepEqual(vault.read(), { name: "secret-name-ABC123", counter: 7, items: [7] });
  }
  await using reopened = await Vault.open(options(path));
  assert.deepEqual(reopened.read(), { name: "secret-name-ABC123", counter: 7, items: [7] });

  const text = await Deno.readTextFile(path);
  assert.ok(!text.includes("secret-name"), "the state is not in the file in the clear");
  assert.ok(!text.includes(passphrase));
  const [headerLine, ...records] = await lines(path);
  const header = JSON.parse(headerLine!);
  assert.deepEqual(Object.keys(header), ["format", "version", "id", "generation", "kdf", "cipher", "check"]);
  assert.equal(header.format, "provisioning-vault");
  assert.equal(header.version, 2);
  assert.equal(header.kdf.iterations, kdfIterations);
  assert.equal(fromBase64Any(header.kdf.salt).length, 16);
  assert.equal(records.length, 2, "a snapshot and one change");
});

Deno.test("a change appends one small record whatever the size of the state, and compaction keeps the file small", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await using vault = await Vault.open(
    options(path, {
      create: true,
      compactAfterBytes: 16 * 1024,
      initial: () => ({ name: "x".repeat(20_000), counter: 0, items: [] }),
    }),
  );
  let appended = 0;
  let compactions = 0;
  let largestAppend = 0;
  for (let i = 1; i <= 1000; i++) {
    const before = vault.position;
    await vault.change(() => ({ add: i }));
    const after = vault.position;
    if (after.generation > before.generation) {
      compactions++;
    } else {
      appended += after.bytes - before.bytes;
      largestAppend = Math.max(largestAppend, after.bytes - before.bytes);
    }
  }
  assert.ok(largestAppend < 120, `a change appended ${largestAppend} bytes to a 27 kB state`);
  assert.ok(appended < 1000 * 120);
  assert.ok(compactions >= 1 && compactions <= 4, `${compactions} compactions`);
  const size = (await Deno.stat(path)).size;
  await vault.compact();
  const snapshot = (await Deno.stat(path)).size;
  assert.ok(
    size <= 2 * snapshot + 16 * 1024,
    `the log (${size} bytes) outgrew twice the snapshot (${snapshot})`,
  );
  assert.equal(vault.read().counter, 500_500);
  await using reopened = await Vault.open(options(path));
  assert.equal(reopened.read().counter, 500_500);
  assert.equal(reopened.read().items.length, 1000);
});

Deno.test("opening with create set opens an existing vault instead of replacing it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  await using again = await Vault.open(
    options(path, { create: true, initial: () => assert.fail("not called") }),
  );
  assert.equal(again.read().counter, 1);
});

Deno.test("a wrong passphrase is refused with an error naming the file, not the passphrase", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  const error = await rejects(Vault.open(options(path, { passphrase: "Tr0ub4dor&3" })), VaultError);
  assert.equal(error.code, "vault-passphrase-wrong");
  assert.ok(error.message.includes(path));
  assert.ok(!error.message.includes("Tr0ub4dor") && !error.hint?.includes("Tr0ub4dor"));
});

Deno.test("an empty passphrase and a missing vault are refused before anything is created", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const empty = await rejects(Vault.open(options(path, { passphrase: "", create: true })), VaultError);
  assert.equal(empty.code, "vault-passphrase-empty");
  const missing = await rejects(Vault.open(options(path)), VaultError);
  assert.equal(missing.code, "vault-missing");
  assert.match(missing.hint ?? "", /key init/);
  assert.equal(await Vault.exists(path), false);
});

Deno.test("a file that is not a vault, or a header with an invalid field, is vault-corrupt naming what is wrong", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  const [headerLine, ...records] = await lines(path);
  const header = JSON.parse(headerLine!);
  const cases: [string, string, RegExp][] = [
    ["not JSON", "hello\nworld\n", /not a vault/],
    ["empty", "", /neither a vault log nor JSON/],
    ["another format", `${JSON.stringify({ format: "other", version: 2 })}\n`, /not a vault/],
    ["a newer version", `${JSON.stringify({ ...header, version: 3 })}\n`, /format version 3/],
    [
      "a bad salt",
      `${JSON.stringify({ ...header, kdf: { ...header.kdf, salt: "AAAA" } })}\n${records.join("\n")}\n`,
      /"kdf.salt"/,
    ],
    ["no snapshot", `${headerLine}\n`, /no snapshot/],
  ];
  for (const [what, text, pattern] of cases) {
    await Deno.writeTextFile(path, text);
    const error = await rejects(Vault.open(options(path)), VaultError, what);
    assert.equal(error.code, "vault-corrupt", what);
    assert.match(error.message, pattern, what);
  }
});

Deno.test("a record dropped, reordered, altered or taken from another vault is refused; so is an edited header", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const other = `${dir.path}/other.vault`;
  await vaultWithChanges(path, 5);
  await vaultWithChanges(other, 5);
  const original = await lines(path);
  const foreign = await lines(other);
  const flip = (line: string) => `${line.slice(0, 20)}${line[20] === "A" ? "B" : "A"}${line.slice(21)}`;
  const header = JSON.parse(original[0]!);
  const tampered: [string, string[], string][] = [
    ["a change dropped", original.filter((_, i) => i !== 3), "vault-corrupt"],
    [
      "two changes swapped",
      [...original.slice(0, 3), original[4]!, original[3]!, ...original.slice(5)],
      "vault-corrupt",
    ],
    ["a change altered", original.map((line, i) => i === 3 ? flip(line) : line), "vault-corrupt"],
    ["a change from another vault", original.map((line, i) => i === 3 ? foreign[3]! : line), "vault-corrupt"],
    ["the snapshot dropped", original.filter((_, i) => i !== 1), "vault-corrupt"],
    [
      "fewer iterations in the header",
      [JSON.stringify({ ...header, kdf: { ...header.kdf, iterations: 999 } }), ...original.slice(1)],
      "vault-passphrase-wrong",
    ],
    [
      "another generation in the header",
      [JSON.stringify({ ...header, generation: 9 }), ...original.slice(1)],
      "vault-passphrase-wrong",
    ],
  ];
  for (const [what, content, code] of tampered) {
    await writeLines(path, content);
    const error = await rejects(Vault.open(options(path)), VaultError, what);
    assert.equal(error.code, code, `${what}: ${error.message}`);
  }
  await writeLines(path, original);
  await using untouched = await Vault.open(options(path));
  assert.equal(untouched.read().counter, 15, "the untouched file still opens");
});

Deno.test("a record torn at any byte opens to the state before it, and the next change cuts the torn tail", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 3);
  const whole = await Deno.readFile(path);
  const content = await lines(path);
  const lastStart = whole.length - content.at(-1)!.length - 1;
  for (let cut = lastStart + 1; cut < whole.length; cut += 7) {
    await Deno.writeFile(path, whole.subarray(0, cut));
    await using vault = await Vault.open(options(path));
    assert.equal(vault.read().counter, 1 + 2, `cut at byte ${cut}: the last whole record's state`);
    assert.equal((await Deno.stat(path)).size, lastStart, "the torn tail is cut at open");
    await vault.change(() => ({ add: 10 }));
    await using again = await Vault.open(options(path));
    assert.equal(again.read().counter, 13);
  }
  // A last line of garbage (a crash that left zeros) is cut the same way.
  await Deno.writeFile(path, new Uint8Array([...whole, ...new Uint8Array(40), 10]));
  await using zeros = await Vault.open(options(path));
  assert.equal(zeros.read().counter, 6);
});

Deno.test("a vault cut back to an older length, or an older copy put back, is refused as rolled back until the guard file is removed", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const guardDir = `${dir.path}/guard`;
  await vaultWithChanges(path, 2, { guardDir });
  const backup = await Deno.readFile(path);
  {
    await using vault = await Vault.open(options(path, { guardDir }));
    await vault.change(() => ({ add: 100 }));
  }
  await Deno.writeFile(path, backup);
  const error = await rejects(Vault.open(options(path, { guardDir })), VaultError);
  assert.equal(error.code, "vault-rolled-back");
  assert.match(error.message, /older copy/);
  assert.match(error.message, /change 4 of generation 1; this file ends at change 3/);
  const id = JSON.parse((await lines(path))[0]!).id;
  assert.ok(error.hint?.includes(guardFile(guardDir, id)), error.hint);

  // Written to after it was put back: as long as the one seen, but not the same.
  {
    await using copy = await Vault.open(options(path));
    await copy.change(() => ({ add: 5 }));
  }
  const diverged = await rejects(Vault.open(options(path, { guardDir })), VaultError);
  assert.equal(diverged.code, "vault-rolled-back");
  assert.match(diverged.message, /not the copy this machine last saw/);

  await Deno.remove(guardFile(guardDir, id));
  await using accepted = await Vault.open(options(path, { guardDir }));
  assert.equal(accepted.read().counter, 1 + 2 + 5, "accepted deliberately");
});

Deno.test("a version 1 vault opens, keeps its state and is rewritten as version 2", async () => {
  const { softwareKeyStateSchema, keyStateChangeSchema, applyKeyStateChange } = await import("./state.ts");
  await using dir = await tempDir();
  const path = `${dir.path}/old.vault`;
  await Deno.copyFile(new URL("./testdata/v1.vault", import.meta.url), path);
  assert.equal(JSON.parse(await Deno.readTextFile(path)).version, 1);
  const open = () =>
    Vault.open({
      path,
      passphrase: "old format fixture",
      schema: softwareKeyStateSchema,
      changes: { schema: keyStateChangeSchema, apply: applyKeyStateChange },
    });
  {
    await using vault = await open();
    const state = vault.read();
    assert.deepEqual(state.credentials.map((c) => c.user.name), ["alice@contoso.com", "bob@contoso.com"]);
    assert.equal(state.signCount, 2);
    assert.ok(state.pin !== undefined, "the PIN survives");
    assert.equal(state.maxDiscoverableCredentials, undefined, "an old key keeps its old limit (1,000)");
    assert.equal(vault.kdfIterations, 1000);
    await vault.change((current) => ({ set: { signCount: current.signCount + 1 } }));
  }
  const [headerLine] = await lines(path);
  assert.equal(JSON.parse(headerLine!).version, 2);
  await using again = await open();
  assert.equal(again.read().signCount, 3);
  assert.equal(again.read().credentials.length, 2);
});

Deno.test("two opens of one vault (as two processes) lose no change: each reads the other's first", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 0);
  await using a = await Vault.open(options(path, { compactAfterBytes: 2048 }));
  await using b = await Vault.open(options(path, { compactAfterBytes: 2048 }));
  const made: Promise<unknown>[] = [];
  for (let i = 1; i <= 100; i++) made.push((i % 2 ? a : b).change(() => ({ add: i })));
  await Promise.all(made);
  assert.ok(a.position.generation > 1, "compactions happened while both were open");
  const all = (await a.refresh()).items.toSorted((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: 100 }, (_, i) => i + 1));
  assert.equal((await b.refresh()).counter, 5050);
  await using c = await Vault.open(options(path));
  assert.equal(c.read().counter, 5050);
});

/** Runs testdata/vault_writer.ts; with a count it runs to the end, without one it returns once it is writing. */
function spawnWriter(
  path: string,
  name: string,
  count?: number,
  compactAfterBytes?: number,
): Deno.ChildProcess {
  const script = new URL("./testdata/vault_writer.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  const dir = path.slice(0, path.lastIndexOf("/"));
  return new Deno.Command(Deno.execPath(), {
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
      name,
      count === undefined ? "forever" : String(count),
      ...(compactAfterBytes === undefined ? [] : [String(compactAfterBytes)]),
    ],
    env: { DENO_NO_UPDATE_CHECK: "1", PROVISIONING_VAULT_PASSPHRASE: passphrase },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function createWriterVault(path: string): Promise<void> {
  await using _ = await Vault.open({
    path,
    passphrase,
    kdfIterations,
    schema: writerStateSchema,
    changes: writerChanges,
    create: true,
    initial: writerState,
    compactAfterBytes: 4096,
  });
}

Deno.test("three processes changing one vault at once lose no change", { ignore: isWindows }, async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await createWriterVault(path);
  const writers = ["a", "b", "c"].map((name) => spawnWriter(path, name, 60));
  const results = await Promise.all(writers.map((child) => child.output()));
  for (const result of results) assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
  await using vault = await Vault.open({
    path,
    passphrase,
    schema: writerStateSchema,
    changes: writerChanges,
  });
  assert.equal(vault.read().counter, 180);
  assert.deepEqual(vault.read().writers, { a: 60, b: 60, c: 60 });
});

/** Starts a looping writer, waits until it writes, and SIGKILLs it after `ms`. */
async function killWriterAfter(path: string, ms: number, compactAfterBytes?: number): Promise<void> {
  const child = spawnWriter(path, "killed", undefined, compactAfterBytes);
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
  "a writer SIGKILLed mid-write leaves a vault that opens with a whole state and no temporary file",
  { ignore: isWindows },
  async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/key.vault`;
    await createWriterVault(path);
    let last = 0;
    // Every other writer compacts as soon as its changes outgrow the 4 KiB snapshot (every few
    // dozen changes), so some kills land mid-compaction (a temporary copy, a rename).
    for (const [i, ms] of [150, 230, 310, 90, 400, 170].entries()) {
      await killWriterAfter(path, ms, i % 2 ? 64 : undefined);
      await using vault = await Vault.open({
        path,
        passphrase,
        schema: writerStateSchema,
        changes: writerChanges,
      });
      const state = vault.read();
      assert.equal(state.check, checkOf(state.counter), "the state is whole");
      assert.ok(state.counter >= last, `the counter went back from ${last} to ${state.counter}`);
      last = state.counter;
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      const names = [];
      for await (const entry of Deno.readDir(dir.path)) names.push(entry.name);
      assert.deepEqual(names, ["key.vault"], "a compaction's temporary file is removed at the next open");
    }
    assert.ok(last >= 6, `the writers made progress (${last} changes)`);
  },
);

Deno.test("temporary files a killed compaction left are removed at the next open, whatever their age", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  const leftover = `${dir.path}/.key.vault.0123456789ab.tmp`;
  const unrelated = `${dir.path}/.other.vault.0123456789ab.tmp`;
  await Deno.writeTextFile(leftover, "a whole encrypted copy");
  await Deno.writeTextFile(unrelated, "another vault's");
  await using _ = await Vault.open(options(path));
  assert.equal(await Vault.exists(leftover), false);
  assert.equal(await Vault.exists(unrelated), true, "another vault's files are not touched");
});

Deno.test("a lock held past the timeout is vault-locked, naming the file and what to do", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  await using vault = await Vault.open(options(path, { lockTimeoutMs: 200 }));
  // Another open file description holding the lock: what a process stopped mid-change looks like.
  const holder = await Deno.open(path, { read: true, write: true });
  try {
    assert.ok(await holder.tryLock(true));
    const error = await rejects(vault.change(() => ({ add: 1 })), VaultError);
    assert.equal(error.code, "vault-locked");
    assert.ok(error.message.includes(path));
    assert.match(error.hint ?? "", /fuser/);
    assert.equal(
      (await rejects(Vault.open(options(path, { lockTimeoutMs: 100 })), VaultError)).code,
      "vault-locked",
    );
  } finally {
    holder.close();
  }
  await vault.change(() => ({ add: 1 }));
  assert.equal(vault.read().counter, 2, "it works once the holder lets go");
});

/** A 256 KiB tmpfs (a full disk on demand), unmounted when disposed. Needs root. */
async function smallDisk(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "vault_full_" });
  const mount = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=256k", "tmpfs", path] })
    .output();
  assert.equal(mount.code, 0, new TextDecoder().decode(mount.stderr));
  return {
    path,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: [path] }).output();
      await Deno.remove(path, { recursive: true });
    },
  };
}

Deno.test("a full disk is vault-disk-full naming the folder, and the vault keeps every earlier change", {
  ignore: !isRoot,
}, async () => {
  await using disk = await smallDisk();
  const path = `${disk.path}/key.vault`;
  await vaultWithChanges(path, 1);
  const filler = `${disk.path}/filler`;
  {
    await using file = await Deno.open(filler, { write: true, create: true });
    try {
      for (;;) await file.write(new Uint8Array(4096));
    } catch {
      // full
    }
  }
  await using vault = await Vault.open(options(path));
  // Changes fit in the file's last page until it is full; then the disk has no room for the next.
  let failure: unknown;
  for (let i = 0; i < 1000 && failure === undefined; i++) {
    await vault.change(() => ({ add: 1 })).catch((error) => failure = error);
  }
  assert.ok(failure instanceof VaultError, `the disk never filled: ${failure}`);
  assert.equal(failure.code, "vault-disk-full");
  assert.match(failure.message, new RegExp(`no space left on ${disk.path}`));
  assert.match(failure.hint ?? "", /Free space/);
  const saved = vault.read().items.length;
  await Deno.remove(filler);
  await vault.change(() => ({ add: 2 }));
  await using again = await Vault.open(options(path));
  assert.equal(again.read().items.length, saved + 1, "every change before the failure is kept");
  assert.equal(again.read().items.at(-1), 2, "nothing of the failed change is left in the file");
});

Deno.test("the vault file is created 0600 and stays 0600 after changes and compactions", {
  ignore: isWindows,
}, async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  await using vault = await Vault.open(options(path));
  await vault.compact();
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
});

Deno.test("changes in one process apply one after another in call order; a refused one changes nothing", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 0);
  await using vault = await Vault.open(options(path));
  const results = await Promise.allSettled([
    vault.change(() => ({ add: 1 })),
    vault.change(() => ({ add: 1.5 })),
    vault.change(() => {
      throw new Error("no");
    }),
    vault.change(() => ({ add: 3 })),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "rejected", "fulfilled"]);
  assert.ok((results[1] as PromiseRejectedResult).reason instanceof TypeError);
  assert.deepEqual(vault.read().items, [1, 3]);
  await using again = await Vault.open(options(path));
  assert.deepEqual(again.read().items, [1, 3]);
});

Deno.test("update and write store whole states, and what is kept in memory is what a re-open reads", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 1);
  await using vault = await Vault.open(options(path));
  await vault.update((state) => {
    state.items.push(99);
    (state as Record<string, unknown>).unknown = "dropped";
  });
  assert.deepEqual(vault.read(), { name: "secret-name-ABC123", counter: 1, items: [1, 99] });
  await vault.change(() => ({ add: 2 }));
  await using again = await Vault.open(options(path));
  assert.deepEqual(again.read(), vault.read());
});

Deno.test("changePassphrase re-keys the vault: the old passphrase no longer opens it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 5);
  {
    await using vault = await Vault.open(options(path));
    await vault.changePassphrase("a new passphrase", { kdfIterations: 2000 });
    await vault.change(() => ({ add: 1 }));
  }
  assert.equal((await rejects(Vault.open(options(path)), VaultError)).code, "vault-passphrase-wrong");
  await using again = await Vault.open(options(path, { passphrase: "a new passphrase" }));
  assert.equal(again.read().counter, 16);
  assert.equal(again.kdfIterations, 2000);
});

Deno.test("the passphrase is compared after Unicode normalisation", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 0, { passphrase: "caf\u00e9" });
  await using _ = await Vault.open(options(path, { passphrase: "cafe\u0301" }));
});

Deno.test(
  "the software key on a full disk fails a registration with 'no space left on <folder>', not CTAP error 0x7f",
  {
    ignore: !isRoot,
  },
  async () => {
    const { openSoftwareKey } = await import("./plugin.ts");
    const { Ctap2Client } = await import("../../core/ctap/client.ts");
    await using disk = await smallDisk();
    const context = {
      interaction: { requestPin: () => Promise.reject(new Error("no PIN")), promptUserPresence: () => {} },
      env: (name: string) => name === "PROVISIONING_VAULT_PASSPHRASE" ? passphrase : undefined,
      readSecret: () => Promise.reject(new Error("not asked")),
    };
    await using key = await openSoftwareKey(context, {
      vault: `${disk.path}/key.vault`,
      kdfIterations: 100_000,
      vaultGuardDir: `${disk.path}/guard`,
    });
    {
      await using file = await Deno.open(`${disk.path}/filler`, { write: true, create: true });
      await file.write(new Uint8Array(1 << 20)).catch(() => undefined);
      for (;;) if (await file.write(new Uint8Array(4096)).catch(() => 0) === 0) break;
    }
    const client = new Ctap2Client(key.device);
    let failure: unknown;
    for (let i = 0; i < 200 && failure === undefined; i++) {
      await client.makeCredential({
        clientDataHash: new Uint8Array(32).fill(i),
        rp: { id: "login.microsoft.com" },
        user: { id: Uint8Array.of(i), name: `user${i}@contoso.com` },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        options: { rk: true },
      }).catch((error) => failure = error);
    }
    assert.ok(failure instanceof VaultError, `not a vault error: ${failure}`);
    assert.equal(failure.code, "vault-disk-full");
    assert.match(failure.message, new RegExp(`no space left on ${disk.path}`));
    await Deno.remove(`${disk.path}/filler`);
  },
);

Deno.test("two software keys on one vault (as two overlapping runs) keep every passkey, with counters that keep increasing", async () => {
  const { openSoftwareKey } = await import("./plugin.ts");
  const { Ctap2Client } = await import("../../core/ctap/client.ts");
  const { decodeAuthenticatorData } = await import("../../core/ctap/auth_data.ts");
  await using dir = await tempDir();
  const context = {
    interaction: { requestPin: () => Promise.reject(new Error("no PIN")), promptUserPresence: () => {} },
    env: (name: string) => name === "PROVISIONING_VAULT_PASSPHRASE" ? passphrase : undefined,
    readSecret: () => Promise.reject(new Error("not asked")),
  };
  const keyOptions = {
    vault: `${dir.path}/key.vault`,
    kdfIterations: 100_000,
    vaultGuardDir: `${dir.path}/guard`,
  };
  await using first = await openSoftwareKey(context, keyOptions);
  await using second = await openSoftwareKey(context, keyOptions);
  const clients = [new Ctap2Client(first.device), new Ctap2Client(second.device)];
  const counters: number[] = [];
  await Promise.all(clients.map(async (client, which) => {
    for (let i = 0; i < 40; i++) {
      const made = await client.makeCredential({
        clientDataHash: new Uint8Array(32).fill(i),
        rp: { id: "login.microsoft.com" },
        user: { id: Uint8Array.of(which, i), name: `user${which}-${i}@contoso.com` },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
        options: { rk: true },
      });
      counters.push(decodeAuthenticatorData(made.authData).signCount);
    }
  }));
  assert.equal(new Set(counters).size, 80, "no two registrations got the same signature counter");
  // The first key finds a passkey only the second made, without reopening.
  const found = await clients[0]!.getAssertion({
    rpId: "login.microsoft.com",
    clientDataHash: new Uint8Array(32),
  });
  assert.equal(found.numberOfCredentials, 80);
  await using reopened = await openSoftwareKey(context, keyOptions);
  assert.equal((reopened.vault.read()).credentials.length, 80);
});

Deno.test("a file whose snapshot is cut short is refused and left as it is, never cut further", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  await vaultWithChanges(path, 0);
  const [headerLine, snapshot] = await lines(path);
  const damaged = `${headerLine}\n${snapshot!.slice(0, 40)}`;
  await Deno.writeTextFile(path, damaged);
  const error = await rejects(Vault.open(options(path)), VaultError);
  assert.equal(error.code, "vault-corrupt");
  assert.equal(await Deno.readTextFile(path), damaged, "nothing was cut from a vault that did not open");
});

Deno.test("two openers creating the same vault at once end with one vault, both open on it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/key.vault`;
  const [a, b] = await Promise.all([
    Vault.open(options(path, { create: true, initial: () => ({ name: "a", counter: 0, items: [] }) })),
    Vault.open(options(path, { create: true, initial: () => ({ name: "b", counter: 0, items: [] }) })),
  ]);
  await using first = a;
  await using second = b;
  assert.equal(first.read().name, second.read().name, "both opened the one vault that was created");
  await first.change(() => ({ add: 1 }));
  await second.change(() => ({ add: 2 }));
  assert.deepEqual((await first.refresh()).items, [1, 2]);
});
