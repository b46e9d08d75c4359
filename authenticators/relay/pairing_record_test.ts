/** The key agent's pairing record on disk: round trip, owner-only mode, damaged files. */
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { RelayError } from "./errors.ts";
import { generateNoiseKeyPair } from "./noise.ts";
import { loadPairingRecord, savePairingRecord } from "./pairing_record.ts";

Deno.test("pairing record: round-trips the agent's key, owner-only", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-pairing-" });
  try {
    const path = `${dir}/agent.pairing.json`;
    const staticKey = generateNoiseKeyPair();
    const pairedAt = new Date("2026-12-06T06:00:00.000Z");
    await savePairingRecord(path, {
      relayUrl: "ws://127.0.0.1:1234",
      user: "alice@contoso.sandbox",
      staticKey,
      pairedAt,
    });
    const loaded = await loadPairingRecord(path);
    assertEquals(loaded.user, "alice@contoso.sandbox");
    assertEquals(loaded.staticKey.publicKey.join(), staticKey.publicKey.join());
    assertEquals(loaded.pairedAt.toISOString(), pairedAt.toISOString());
    if (Deno.build.os !== "windows") assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pairing record: a missing file is key-not-paired; a damaged one names the problem", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-pairing-" });
  try {
    const missing = await rejects(() => loadPairingRecord(`${dir}/none.json`), RelayError);
    assertEquals(missing.code, "key-not-paired");
    assert(missing.hint?.includes("pair"), missing.hint);

    const path = `${dir}/agent.pairing.json`;
    await savePairingRecord(path, {
      relayUrl: "ws://127.0.0.1:1234",
      user: "alice@contoso.sandbox",
      staticKey: generateNoiseKeyPair(),
      pairedAt: new Date(),
    });
    const record = JSON.parse(await Deno.readTextFile(path));
    record.publicKey = record.publicKey.slice(0, -1) + (record.publicKey.endsWith("A") ? "Q" : "A");
    await Deno.writeTextFile(path, JSON.stringify(record));
    const mismatch = await rejects(() => loadPairingRecord(path), RelayError);
    assertEquals(mismatch.code, "pairing-record-invalid");
    assert(mismatch.message.includes("does not match"), mismatch.message);

    await Deno.writeTextFile(path, JSON.stringify({ ...record, privateKey: "short" }));
    const invalid = await rejects(() => loadPairingRecord(path), RelayError);
    assert(invalid.message.includes("privateKey"), invalid.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
