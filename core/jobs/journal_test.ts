import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { ProvisioningError } from "../errors.ts";
import { openJournal, readJournal } from "./journal.ts";

const identity = { runId: "0123456789ab", fingerprint: "sha256:test" };

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "journal-test-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("journal: records merge per user, survive a reopen, and count attempts", () =>
  withDir(async (dir) => {
    const path = `${dir}/runs/run.jsonl`;
    {
      await using journal = await openJournal(path, identity);
      assertEquals(journal.resumed, false);
      assertEquals(journal.attempt, 1);
      await journal.append({
        k: "alice@contoso.com",
        s: "resolved",
        row: 2,
        userId: "id-a",
        upn: "alice@contoso.com",
      });
      await journal.append({ k: "alice@contoso.com", s: "created", credentialId: "cred", existing: ["m0"] });
      await journal.append({ k: "bob@contoso.com", s: "failed", code: "user-not-found", message: "no" });
    }
    if (Deno.build.os !== "windows") assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    await using again = await openJournal(path, identity);
    assertEquals(again.resumed, true);
    assertEquals(again.attempt, 2);
    const alice = again.get("alice@contoso.com")!;
    assertEquals(alice.s, "created");
    assertEquals(alice.userId, "id-a");
    assertEquals(alice.credentialId, "cred");
    assertEquals(alice.existing?.join(), "m0");
    assertEquals([...again.users()].map((u) => u.k).join(), "alice@contoso.com,bob@contoso.com");
  }));

Deno.test("journal: a line torn by a crash is cut off, and appending goes on after it", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    {
      await using journal = await openJournal(path, identity);
      await journal.append({ k: "alice@contoso.com", s: "verified", methodId: "m1" });
    }
    await Deno.writeTextFile(path, '{"t":"user","k":"bob@contoso.com","s":"crea', { append: true });
    {
      await using journal = await openJournal(path, identity);
      assertEquals(journal.get("bob@contoso.com"), undefined);
      await journal.append({ k: "bob@contoso.com", s: "resolved" });
    }
    const { users } = await readJournal(path);
    assertEquals(users.get("bob@contoso.com")?.s, "resolved");
    assertEquals(users.get("alice@contoso.com")?.s, "verified");
    for (const line of (await Deno.readTextFile(path)).trimEnd().split("\n")) JSON.parse(line);
  }));

Deno.test("journal: a bad line in the middle and another run's journal are clear errors", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    {
      await using journal = await openJournal(path, identity);
      await journal.append({ k: "alice@contoso.com", s: "verified" });
    }
    const other = await rejects(
      () => openJournal(path, { ...identity, fingerprint: "sha256:other" }),
      ProvisioningError,
    );
    assertEquals(other.code, "journal-mismatch");
    const text = await Deno.readTextFile(path);
    await Deno.writeTextFile(
      path,
      text.replace('"s":"verified"', '"s":"bogus"') + '{"t":"attempt","at":"x"}\n',
    );
    const corrupt = await rejects(() => openJournal(path, identity), ProvisioningError);
    assertEquals(corrupt.code, "journal-corrupt");
    assert.match(corrupt.message, /line 3/);
    const missing = await rejects(() => readJournal(`${dir}/none.jsonl`), ProvisioningError);
    assertEquals(missing.code, "journal-not-found");
  }));

Deno.test("journal: concurrent appends are all durable and in one piece each", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    {
      await using journal = await openJournal(path, identity);
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          journal.append({ k: `user${i}@contoso.com`, s: "resolved", row: i })),
      );
    }
    const { users } = await readJournal(path);
    assertEquals(users.size, 200);
  }));

Deno.test("journal: a second process (or handle) cannot open a run that is open", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    await using first = await openJournal(path, identity);
    const second = await rejects(() => openJournal(path, identity), ProvisioningError);
    assertEquals(second.code, "run-in-progress");
    assertEquals(second.exitCode, 2);
    await first.close();
    await using again = await openJournal(path, identity);
    assertEquals(again.resumed, true);
  }));

Deno.test("journal: read back in pieces: lines longer than a read, characters split between reads, a bad last line cut", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    const long = "é€😀".repeat(30_000); // 270 KB of UTF-8: spans several reads, splitting characters
    {
      await using journal = await openJournal(path, identity);
      for (let i = 0; i < 3000; i++) {
        await journal.append({ k: `user${i}@contoso.com`, s: "resolved", row: i + 2 });
      }
      await journal.append({ k: "alice@contoso.com", s: "created", displayName: long });
    }
    // A crash after a whole line of garbage was written (and its newline): cut, like a torn line.
    await Deno.writeTextFile(path, '{"t":"user","k":"bob@contoso.com","s":"bogus"}\n', { append: true });
    {
      await using journal = await openJournal(path, identity);
      assertEquals(journal.get("alice@contoso.com")?.displayName, long);
      assertEquals(journal.get("user2999@contoso.com")?.row, 3001);
      assertEquals(journal.get("bob@contoso.com"), undefined);
      await journal.append({ k: "bob@contoso.com", s: "resolved" });
    }
    const { users } = await readJournal(path);
    assertEquals(users.size, 3002);
    assertEquals(users.get("bob@contoso.com")?.s, "resolved");
    for (const line of (await Deno.readTextFile(path)).trimEnd().split("\n")) JSON.parse(line);
  }));

Deno.test("journal without finished users in memory: finished ones are streamed once each (revoked and re-provisioned: the latest), the rest held", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    const compact = { ...identity, keepFinished: false };
    {
      await using journal = await openJournal(path, compact);
      await journal.append({ k: "alice", s: "resolved", row: 2, userId: "id-a", upn: "alice@c" });
      await journal.append({ k: "alice", s: "verified", row: 2, userId: "id-a", methodId: "m1" });
      // Revoked by `revoke --run`, then provisioned again under the same run id.
      await journal.append({ k: "alice", s: "revoked", methodId: "m1" });
      await journal.append({ k: "alice", s: "verified", row: 2, userId: "id-a", methodId: "m2" });
      await journal.append({ k: "bob", s: "skipped", row: 3, userId: "id-b", methodId: "m0" });
      await journal.append({ k: "carol", s: "verified", row: 4, userId: "id-c", methodId: "m3" });
      await journal.append({ k: "carol", s: "revoked", methodId: "m3" });
      await journal.append({
        k: "dave",
        s: "created",
        row: 5,
        userId: "id-d",
        credentialId: "c4",
        existing: [],
      });
      assert.ok(journal.isFinished("alice"));
      assertEquals(journal.get("alice"), undefined, "a finished user is not held");
      assertEquals(journal.get("dave")?.credentialId, "c4");
    }
    // Torn last line: cut off, as before.
    await Deno.writeTextFile(path, '{"t":"user","k":"eve","s":"veri', { append: true });
    await using again = await openJournal(path, compact);
    assert.ok(again.isFinished("alice"));
    assert.ok(again.isFinished("bob"));
    assert.ok(!again.isFinished("carol"), "revoked: to do again");
    assert.ok(!again.isFinished("dave"));
    assertEquals(again.get("carol")?.s, "revoked");
    assertEquals(again.get("dave")?.s, "created");
    assertEquals(again.get("alice"), undefined);
    assertEquals([...again.users()].map((u) => u.k).sort().join(), "carol,dave");
    const streamed = [];
    for await (const record of again.finishedAtOpen()) streamed.push(`${record.k}:${record.methodId}`);
    assertEquals(streamed.join(), "alice:m2,bob:m0");
    // Finishing in this process: no longer held, and not streamed (the engine wrote its row).
    await again.append({ k: "dave", s: "verified", row: 5, methodId: "m4" });
    assert.ok(again.isFinished("dave"));
    assertEquals(again.get("dave"), undefined);
    const after = [];
    for await (const record of again.finishedAtOpen()) after.push(record.k);
    assertEquals(after.join(), "alice,bob");
  }));

Deno.test("journal: a record appended durable: false waits for the next durable append (one write for both), or for close", () =>
  withDir(async (dir) => {
    const path = `${dir}/run.jsonl`;
    const size = async () => (await Deno.stat(path)).size;
    {
      await using journal = await openJournal(path, identity);
      const empty = await size();
      await journal.append({ k: "alice@contoso.com", s: "options" }, { durable: false });
      assertEquals(journal.get("alice@contoso.com")?.s, "options", "in memory at once");
      assertEquals(await size(), empty, "not written on its own");
      await journal.append({ k: "alice@contoso.com", s: "created", credentialId: "c", existing: [] });
      const both = await size();
      assert.ok(both > empty);
      const lines = (await Deno.readTextFile(path)).trim().split("\n").slice(-2).map((l) => JSON.parse(l).s);
      assertEquals(lines.join(","), "options,created", "in order");
      await journal.append({ k: "bob@contoso.com", s: "resolved", userId: "id-b", upn: "bob@contoso.com" }, {
        durable: false,
      });
      assertEquals(await size(), both);
    }
    // Closing wrote what was waiting.
    await using again = await openJournal(path, identity);
    assertEquals(again.get("bob@contoso.com")?.s, "resolved");
    assertEquals(again.get("alice@contoso.com")?.s, "created");
  }));
