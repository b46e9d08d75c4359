import assert from "node:assert/strict";
import { compactDecrypt, exportJWK, exportSPKI, generateKeyPair } from "jose";
import { loadPinRecipient, parsePinRecipient, PinOutputFile } from "./pin_output.ts";

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "provisioning-pin-output-" });
}

const pin = "40718265";

Deno.test("a clear PIN file is created 0600 and holds one JSON record per line", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir}/pins.jsonl`;
    {
      await using out = await PinOutputFile.open(path);
      await out.write({
        user: "alice@contoso.com",
        pin,
        aaguid: "ee882879-721c-4913-9775-3dfcce97072a",
        pinMustChange: true,
      });
      await out.write({ user: "bob@contoso.com", pin: "93017542", pinMustChange: false });
    }
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.equal(lines[0].user, "alice@contoso.com");
    assert.equal(lines[0].pin, pin);
    assert.equal(lines[0].pinMustChange, true);
    assert.equal(lines[1].pin, "93017542");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an existing PIN file with loose permissions is made 0600 before a PIN is appended", async () => {
  if (Deno.build.os === "windows") return;
  const dir = await tempDir();
  try {
    const path = `${dir}/pins.jsonl`;
    await Deno.writeTextFile(path, "", { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    await using out = await PinOutputFile.open(path);
    await out.write({ user: "alice@contoso.com", pin, pinMustChange: false });
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (
  const kind of ["RSA-OAEP-256 (PEM)", "ECDH-ES+A256KW (JWK, P-256)", "ECDH-ES+A256KW (PEM, X25519)"] as const
) {
  Deno.test(`PINs encrypted to a ${kind} recipient decrypt with its private key and never appear in clear`, async () => {
    const dir = await tempDir();
    try {
      const path = `${dir}/pins.jwe`;
      const keyFile = `${dir}/helpdesk.pub`;
      const alg = kind.startsWith("RSA") ? "RSA-OAEP-256" : "ECDH-ES+A256KW";
      const pair = await generateKeyPair(alg, {
        extractable: true,
        ...(kind.includes("X25519") ? { crv: "X25519" } : {}),
      });
      if (kind.includes("JWK")) {
        await Deno.writeTextFile(
          keyFile,
          JSON.stringify({ ...(await exportJWK(pair.publicKey)), kid: "helpdesk-1" }),
        );
      } else {
        await Deno.writeTextFile(keyFile, await exportSPKI(pair.publicKey));
      }
      const recipient = await loadPinRecipient(keyFile);
      {
        await using out = await PinOutputFile.open(path, { recipient });
        await out.write({ user: "alice@contoso.com", pin, serial: "23894512", pinMustChange: true });
        await out.write({ user: "bob@contoso.com", pin: "93017542", pinMustChange: true });
      }
      if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      const text = await Deno.readTextFile(path);
      assert.ok(!text.includes(pin), "the PIN is in the file in clear");
      assert.ok(!text.includes("93017542"), "the PIN is in the file in clear");
      assert.ok(!text.includes("alice"), "the user is in the file in clear");
      const lines = text.trimEnd().split("\n");
      assert.equal(lines.length, 2);
      const { plaintext, protectedHeader } = await compactDecrypt(lines[0]!, pair.privateKey);
      assert.equal(protectedHeader.alg, alg);
      assert.equal(protectedHeader.enc, "A256GCM");
      if (kind.includes("JWK")) assert.equal(protectedHeader.kid, "helpdesk-1");
      const record = JSON.parse(new TextDecoder().decode(plaintext));
      assert.equal(record.user, "alice@contoso.com");
      assert.equal(record.pin, pin);
      assert.equal(record.serial, "23894512");
      assert.equal(record.pinMustChange, true);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a private key is refused as a PIN recipient, as JWK and as PEM", async () => {
  const pair = await generateKeyPair("ECDH-ES+A256KW", { extractable: true });
  await assert.rejects(
    parsePinRecipient(JSON.stringify(await exportJWK(pair.privateKey)), "private.jwk"),
    (error: Error & { code?: string }) =>
      error.code === "pin-recipient-invalid" && /private key/.test(error.message),
  );
  await assert.rejects(
    parsePinRecipient("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private.pem"),
    /private key/,
  );
  await assert.rejects(parsePinRecipient("not a key", "junk.txt"), /neither a JWK nor a PEM/);
});

Deno.test("a clear PIN file is not appended to with encrypted records, nor the other way round", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir}/pins.jsonl`;
    {
      await using out = await PinOutputFile.open(path);
      await out.write({ user: "alice@contoso.com", pin, pinMustChange: false });
    }
    const pair = await generateKeyPair("RSA-OAEP-256", { extractable: true });
    const recipient = await parsePinRecipient(await exportSPKI(pair.publicKey), "helpdesk.pem");
    await assert.rejects(
      PinOutputFile.open(path, { recipient }),
      (error: Error & { code?: string }) => error.code === "pin-output-mixed",
    );
    const encrypted = `${dir}/pins.jwe`;
    {
      await using out = await PinOutputFile.open(encrypted, { recipient });
      await out.write({ user: "alice@contoso.com", pin, pinMustChange: false });
    }
    await assert.rejects(
      PinOutputFile.open(encrypted),
      (error: Error & { code?: string }) => error.code === "pin-output-mixed" && !error.message.includes(pin),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
