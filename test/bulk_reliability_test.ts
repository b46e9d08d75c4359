/**
 * The bulk run where the machine and the network misbehave, end to end (the CLI as its own
 * process, the Entra sandbox, a software key vault on disk):
 * - two overlapping runs of two exports (a nightly job started while yesterday's still works, so
 *   two run ids) with 10% of answers lost: every user ends with exactly one passkey, every passkey
 *   in results.csv is in the one vault both share, and nobody holding a passkey is in failures.csv;
 * - a journal on a full disk, and results on a full disk (a small tmpfs mounted for the run in a
 *   mount namespace of its own): the run stops at once naming the file and the cause, nobody
 *   verified becomes a failure, and the same command afterwards finishes everyone once;
 * - the first and the second Ctrl+C during a CSV run.
 *
 * @module
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import {
  type BulkFixture,
  bulkFixture,
  passkeysByUser,
  readOutput,
  spawnCli,
  writeUsersCsv,
} from "./bulk_support.ts";
import { runCli } from "./cli.ts";

const root = new URL("..", import.meta.url).pathname;

/** Whether this machine lets a test mount a tmpfs in a mount namespace of its own (Linux). */
const canMountTmpfs = await (async () => {
  if (Deno.build.os !== "linux") return false;
  const dir = await Deno.makeTempDir({ prefix: "tmpfs-probe-" });
  try {
    const probe = await new Deno.Command("unshare", {
      args: ["-rm", "sh", "-c", 'mount -t tmpfs -o size=16k tmpfs "$1"', "sh", dir],
      stdout: "null",
      stderr: "null",
    }).output();
    return probe.code === 0;
  } catch {
    return false;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
})();

/**
 * Runs the CLI with a tmpfs of `size` mounted over `mountPoint` (inside the fixture), in a mount
 * namespace that ends with the process; what the tmpfs held is copied to `saveTo` before it goes.
 */
async function runOnSmallDisk(
  fixture: BulkFixture,
  disk: { mountPoint: string; size: string; saveTo: string },
  ...args: string[]
) {
  await Deno.mkdir(disk.mountPoint, { recursive: true });
  await Deno.mkdir(disk.saveTo, { recursive: true });
  const script =
    'mnt="$1"; size="$2"; save="$3"; shift 3; mount -t tmpfs -o "size=$size,mode=0700" tmpfs "$mnt" || exit 99; ' +
    '"$@"; rc=$?; cp -a "$mnt/." "$save/"; exit $rc';
  const child = new Deno.Command("unshare", {
    args: [
      "-rm",
      "sh",
      "-c",
      script,
      "sh",
      disk.mountPoint,
      disk.size,
      disk.saveTo,
      Deno.execPath(),
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
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // What this test is about includes a run that hangs: it must end on its own.
  let hung = false;
  const guard = setTimeout(() => {
    hung = true;
    child.kill("SIGKILL");
  }, 120_000);
  const output = await child.output();
  clearTimeout(guard);
  const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: text(output.stdout), stderr: text(output.stderr), hung };
}

Deno.test({
  name:
    "bulk: a journal on a full disk stops the run at once with the path, the cause and the resume command; resuming finishes everyone once",
  ignore: !canMountTmpfs,
  async fn() {
    await using fixture = await bulkFixture({ users: 50, throttle: { enabled: false } });
    const upns = fixture.upns(40);
    const csv = await writeUsersCsv(fixture, upns);
    const journalDir = `${fixture.dir}/journal`;
    const saved = `${fixture.dir}/journal-saved`;
    // 12 KiB: the header and a handful of users' transitions, then ENOSPC.
    const full = await runOnSmallDisk(
      fixture,
      { mountPoint: journalDir, size: "12k", saveTo: saved },
      "--csv",
      csv,
      "--concurrency",
      "4",
      "--journal-dir",
      "journal",
      "--no-preflight",
    );
    assert.ok(!full.hung, "the run ended on its own");
    assertEquals(full.code, 1, full.stderr);
    assert.match(
      full.stderr,
      /Cannot write the run's journal journal\/[0-9a-f]{12}\.jsonl: no space left on the device/,
    );
    assert.match(
      full.stderr,
      /Free space on the disk that holds it, then run the same command again to resume/,
    );
    // No user became a failure because the journal could not be written.
    const failed = await readOutput(`${fixture.dir}/failures.csv`);
    assertEquals(failed.length, 0, JSON.stringify(failed) + full.stderr);
    const before = passkeysByUser(fixture.sandbox).size;
    assert.ok(before < upns.length, "the run stopped early");

    // The same command with the journal as the full disk left it (space freed).
    const resumed = await runCli(
      fixture.dir,
      fixture.env,
      [],
      "--csv",
      csv,
      "--concurrency",
      "4",
      "--journal-dir",
      "journal-saved",
      "--no-preflight",
    );
    assertEquals(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stderr, /resumed/);
    const held = passkeysByUser(fixture.sandbox);
    for (const upn of upns) assertEquals(held.get(upn)?.length, 1, upn);
    const results = await readOutput(`${fixture.dir}/results.csv`);
    deepStrictEqual(new Set(results.map((r) => r["user"])), new Set(upns));
    assertEquals(results.length, upns.length);
  },
});

Deno.test({
  name:
    "bulk: results on a full disk stop the run naming the file; verified users never become failures, and the same command rewrites them",
  ignore: !canMountTmpfs,
  async fn() {
    await using fixture = await bulkFixture({ users: 50, throttle: { enabled: false } });
    const upns = fixture.upns(40);
    const csv = await writeUsersCsv(fixture, upns);
    const out = `${fixture.dir}/out`;
    const saved = `${fixture.dir}/out-saved`;
    const args = [
      "--csv",
      csv,
      "--concurrency",
      "4",
      "--results",
      "out/results.csv",
      "--failures",
      "out/failures.csv",
      "--no-preflight",
    ];
    // 8 KiB: the two headers and a few dozen rows at most.
    const full = await runOnSmallDisk(fixture, { mountPoint: out, size: "8k", saveTo: saved }, ...args);
    assert.ok(!full.hung, "the run ended on its own");
    assertEquals(full.code, 1, full.stderr);
    assert.match(full.stderr, /Cannot write "out\/results\.csv": no space left on the device/);
    assert.match(
      full.stderr,
      /then run the same command again: the results already journaled are written again/,
    );
    assert.doesNotMatch(full.stderr, /unexpected-error/);
    assertEquals((await readOutput(`${saved}/failures.csv`)).length, 0, "no verified user is a failure");
    const written = (await readOutput(`${saved}/results.csv`)).length;
    assert.ok(written > 0 && written < upns.length, `${written} rows fitted`);

    // Space again: the same command writes every user's row, from the journal for those done.
    const again = await runCli(fixture.dir, fixture.env, [], ...args);
    assertEquals(again.code, 0, again.stderr);
    const results = await readOutput(`${out}/results.csv`);
    deepStrictEqual(new Set(results.map((r) => r["user"])), new Set(upns));
    assertEquals(results.length, upns.length);
    assertEquals((await readOutput(`${out}/failures.csv`)).length, 0);
    const held = passkeysByUser(fixture.sandbox);
    for (const upn of upns) assertEquals(held.get(upn)?.length, 1, upn);
  },
});

/** Collects a child's stderr as it comes, so a test can wait for a line. */
function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = stream.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({
      write(chunk) {
        text += chunk;
      },
    }),
  );
  return { text: () => text, done };
}

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 6000; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`Gave up waiting for ${what}`);
}

Deno.test("bulk: results.csv lists users as they finish; the first Ctrl+C finishes the users in flight, takes no more, and the same command resumes", async () => {
  await using fixture = await bulkFixture({ users: 130, throttle: { enabled: false } });
  const upns = fixture.upns(120);
  const csv = await writeUsersCsv(fixture, upns);
  const child = spawnCli(fixture, "--csv", csv, "--concurrency", "4", "--no-preflight");
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  // Rows appear in results.csv while the run is still going.
  await until(async () => (await readOutput(`${fixture.dir}/results.csv`)).length >= 10, "10 result rows");
  child.kill("SIGINT");
  const status = await child.status;
  await Promise.all([stdout.done, stderr.done]);
  assertEquals(status.code, 130, stderr.text());
  assert.match(stderr.text(), /Stopping/);
  const held = passkeysByUser(fixture.sandbox);
  assert.ok(held.size < upns.length, "it stopped before the end");
  // Everyone in flight finished: each user holding a passkey is in results.csv, nobody failed.
  const results = await readOutput(`${fixture.dir}/results.csv`);
  deepStrictEqual(new Set(results.map((r) => r["user"])), new Set(held.keys()));
  assertEquals((await readOutput(`${fixture.dir}/failures.csv`)).length, 0);

  const resumed = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--concurrency",
    "4",
    "--no-preflight",
  );
  assertEquals(resumed.code, 0, resumed.stderr);
  for (const upn of upns) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
  assertEquals((await readOutput(`${fixture.dir}/results.csv`)).length, upns.length);
});

Deno.test("bulk: a second Ctrl+C quits at once, in the middle of users, and the same command resumes them exactly once", async () => {
  await using fixture = await bulkFixture({ users: 130, throttle: { enabled: false } });
  const upns = fixture.upns(120);
  const csv = await writeUsersCsv(fixture, upns);
  const child = spawnCli(fixture, "--csv", csv, "--concurrency", "8", "--no-preflight");
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  await until(() => passkeysByUser(fixture.sandbox).size >= 10, "10 passkeys");
  child.kill("SIGINT");
  await until(() => /press Ctrl\+C again/.test(stderr.text()), "the first Ctrl+C's message");
  child.kill("SIGINT");
  const status = await child.status;
  await Promise.all([stdout.done, stderr.done]);
  assertEquals(status.code, 130, stderr.text());
  assert.ok(passkeysByUser(fixture.sandbox).size < upns.length, "it quit before the end");

  const resumed = await runCli(
    fixture.dir,
    fixture.env,
    [],
    "--csv",
    csv,
    "--concurrency",
    "8",
    "--no-preflight",
  );
  assertEquals(resumed.code, 0, resumed.stderr);
  for (const upn of upns) assertEquals(passkeysByUser(fixture.sandbox).get(upn)?.length, 1, upn);
  const results = await readOutput(`${fixture.dir}/results.csv`);
  assertEquals(results.length, upns.length);
  deepStrictEqual(new Set(results.map((r) => r["user"])), new Set(upns));
});

Deno.test("bulk: two overlapping runs of two exports (two run ids) with 10% lost answers: one passkey per user, every one in the shared vault, nobody holding one in failures.csv", async () => {
  await using fixture = await bulkFixture({
    users: 100,
    throttle: { enabled: false },
    faults: { lostResponseRate: 0.1, seed: 11 },
  });
  const yesterday = fixture.upns(80);
  const today = fixture.upns(81);
  await writeUsersCsv(fixture, yesterday, "yesterday.csv");
  await writeUsersCsv(fixture, today, "today.csv");
  const args = (name: string) => [
    "--csv",
    `${name}.csv`,
    "--concurrency",
    "8",
    "--results",
    `${name}-results.csv`,
    "--failures",
    `${name}-failures.csv`,
    "--no-preflight",
  ];
  const [first, second] = await Promise.all([
    runCli(fixture.dir, fixture.env, [], ...args("yesterday")),
    runCli(fixture.dir, fixture.env, [], ...args("today")),
  ]);
  const inspection = fixture.sandbox.inspect();
  assert.ok(inspection.faults.lostResponses > 0, "answers were lost");

  const held = passkeysByUser(fixture.sandbox);
  for (const upn of today) {
    assertEquals(held.get(upn)?.length ?? 0, 1, `${upn}: ${first.stderr}\n${second.stderr}`);
  }
  for (const name of ["yesterday", "today"]) {
    for (const failure of await readOutput(`${fixture.dir}/${name}-failures.csv`)) {
      assert.ok(
        !held.has(failure["user"]!),
        `${failure["user"]} holds a passkey but is in ${name}-failures.csv: ${JSON.stringify(failure)}`,
      );
    }
  }
  // Both runs share one vault (its cross-process lock): every passkey either run reports is on
  // it, and no registration of one process was lost to the other's writes.
  const listed = await runCli(fixture.dir, fixture.env, [], "key", "list", "--json");
  assertEquals(listed.code, 0, listed.stderr);
  const onKey = new Set(
    (JSON.parse(listed.stdout) as { credentialId: string }[]).map((c) => c.credentialId),
  );
  for (const name of ["yesterday", "today"]) {
    for (const row of await readOutput(`${fixture.dir}/${name}-results.csv`)) {
      if (row["status"] === "skipped") continue;
      assert.ok(
        onKey.has(row["credential id"]!),
        `${row["user"]}'s passkey (${name}) is not in the shared vault`,
      );
    }
  }
  const passkeys = [...held.values()].reduce((sum, methods) => sum + methods.length, 0);
  assert.ok(
    onKey.size >= passkeys,
    `the vault lists ${onKey.size} credentials, the tenant holds ${passkeys} passkeys`,
  );
  // Between them, the two runs account for every user: provisioned by one, skipped by the other.
  const reported = new Set<string>();
  for (const name of ["yesterday", "today"]) {
    for (const row of await readOutput(`${fixture.dir}/${name}-results.csv`)) reported.add(row["user"]!);
  }
  deepStrictEqual(reported, new Set(today));
  assertEquals(first.code, 0, first.stderr);
  assertEquals(second.code, 0, second.stderr);
});
