import { assert, assertEquals } from "../../test/assert.ts";
import { type LockHolder, openUserLocks } from "./user_locks.ts";

const lockModule = new URL("./user_locks.ts", import.meta.url).href;

/** Another process that takes the lock of `userId` and says so on stdout, then holds it until killed. */
function holderProcess(folder: string, userId: string): Deno.ChildProcess {
  const script = `
    import { openUserLocks } from ${JSON.stringify(lockModule)};
    const locks = openUserLocks(${JSON.stringify(folder)}, { runId: "run-of-the-other", tenant: "contoso" });
    const held = await locks.acquire({ userId: ${JSON.stringify(userId)}, user: "alice@contoso.com" });
    console.log("held");
    setInterval(() => held, 1000);
  `;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "-q", "--no-check", `--allow-read`, `--allow-write=${folder}`, script],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  return text.trim();
}

Deno.test("user locks: a second process waits for a user another holds, learns who (pid, run, since), and gets it when that process dies", async () => {
  const dir = await Deno.makeTempDir({ prefix: "user-locks-" });
  const child = holderProcess(`${dir}/locks`, "5f0c-user");
  try {
    assertEquals(await firstLine(child.stdout), "held");
    const locks = openUserLocks(`${dir}/locks`, { runId: "this-run", tenant: "contoso", pollMs: 20 });
    const told: (LockHolder | undefined)[] = [];
    const acquiring = locks.acquire({ userId: "5f0c-user", user: "alice@contoso.com" }, {
      onWait: (holder) => {
        told.push(holder);
        // Told once: now the holder dies (kill -9), and the OS drops its lock.
        child.kill("SIGKILL");
      },
    });
    const held = await acquiring;
    assert.ok(held, "the lock was taken once its holder died");
    assertEquals(told.length, 1);
    assertEquals(told[0]?.pid, child.pid);
    assertEquals(told[0]?.runId, "run-of-the-other");
    assertEquals(told[0]?.user, "alice@contoso.com");
    assert.ok(!Number.isNaN(Date.parse(told[0]!.since)));
    await held.release();
    // Released: the folder keeps no file per user.
    assertEquals([...Deno.readDirSync(`${dir}/locks`)].length, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already dead.
    }
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("user locks: another user, or the same user of another tenant, is not held; an aborted wait gives up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "user-locks-" });
  try {
    const mine = openUserLocks(`${dir}/locks`, { runId: "a", tenant: "contoso", pollMs: 10 });
    const theirs = openUserLocks(`${dir}/locks`, { runId: "b", tenant: "contoso", pollMs: 10 });
    const otherTenant = openUserLocks(`${dir}/locks`, { runId: "c", tenant: "fabrikam", pollMs: 10 });
    const held = await mine.acquire({ userId: "u1", user: "u1@contoso.com" });
    assert.ok(held);
    const other = await theirs.acquire({ userId: "u2", user: "u2@contoso.com" });
    assert.ok(other, "another user is free");
    await other.release();
    const elsewhere = await otherTenant.acquire({ userId: "u1", user: "u1@fabrikam.com" });
    assert.ok(elsewhere, "the same object id in another tenant is free");
    await elsewhere.release();
    // The same user from another opener (another run in this process holds its own descriptor).
    const stop = new AbortController();
    let waits = 0;
    const waiting = theirs.acquire({ userId: "u1", user: "u1@contoso.com" }, {
      signal: stop.signal,
      onWait: (holder) => {
        waits++;
        assertEquals(holder?.runId, "a");
        stop.abort();
      },
    });
    assertEquals(await waiting, undefined);
    assertEquals(waits, 1);
    await held.release();
    const after = await theirs.acquire({ userId: "u1", user: "u1@contoso.com" });
    assert.ok(after);
    await after.release();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
