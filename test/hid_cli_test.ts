/**
 * `provisioning key devices|prepare|info --authenticator hid` in-process, with the hid plugin
 * registered as main.ts will register it, against a software key served over its CTAPHID socket.
 */
import assert from "node:assert/strict";
import { compactDecrypt, exportSPKI, generateKeyPair } from "jose";
import { serveKey } from "../authenticators/hid/_test_support.ts";
import { hidAuthenticator } from "../authenticators/hid/plugin.ts";
import { softwareAuthenticator } from "../authenticators/software/plugin.ts";
import { type CliContext, memoryWriter } from "../core/cli/context.ts";
import { keyCommand } from "../core/cli/key.ts";
import { runProgram } from "../core/cli/program.ts";
import { PluginRegistry } from "../core/plugin.ts";
import { scriptedUser } from "./software_key.ts";

async function run(env: Record<string, string>, ...args: string[]) {
  const stdout = memoryWriter();
  const stderr = memoryWriter();
  const context: CliContext = {
    registry: new PluginRegistry().register(softwareAuthenticator).register(hidAuthenticator),
    interaction: scriptedUser(),
    stdout,
    stderr,
    env: (name) => env[name],
    readSecret: () => Promise.reject(new Error("no terminal in this test")),
    signal: new AbortController().signal,
  };
  const code = await runProgram(args, { context, commands: [keyCommand] });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

Deno.test("key devices lists a key with its getInfo; key prepare sets a PIN it writes only to the encrypted PIN file; key info shows the result", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-hid-cli-" });
  try {
    await using served = await serveKey(dir, "key");
    const devices = await run({}, "key", "devices", "--device", served.device);
    assert.equal(devices.code, 0, devices.stderr);
    assert.match(devices.stdout, /^DEVICE +VID:PID +PRODUCT +AAGUID +VERSIONS +PIN +MIN PIN +FIRMWARE$/m);
    assert.match(
      devices.stdout,
      /unix:.*key\.sock .*70726f76-6973-696f-6e69-6e67736b0001 +FIDO_2_0,FIDO_2_1 +not set +4 +1/,
    );

    const pair = await generateKeyPair("RSA-OAEP-256", { extractable: true });
    await Deno.writeTextFile(`${dir}/helpdesk.pem`, await exportSPKI(pair.publicKey));
    const pins = `${dir}/pins.jwe`;
    const prepared = await run(
      {},
      "key",
      "prepare",
      "--device",
      served.device,
      "--pin-length",
      "6",
      "--min-pin-length",
      "8",
      "--force-pin-change",
      "--enterprise-attestation",
      "--pin-output",
      pins,
      "--pin-recipient",
      `${dir}/helpdesk.pem`,
      "--user",
      "alice@contoso.example",
    );
    assert.equal(prepared.code, 0, prepared.stderr);
    assert.match(prepared.stdout, /^ {2}pin +done +PIN set \(8 characters\)$/m);
    assert.match(prepared.stdout, /^ {2}min-pin-length +done +minimum PIN length raised from 4 to 8$/m);
    assert.match(prepared.stdout, /^ {2}force-pin-change +done/m);
    assert.match(prepared.stdout, /^ {2}enterprise-attestation +unsupported +the key lists no ep option$/m);
    assert.match(
      prepared.stdout,
      /PIN written to .*pins\.jwe \(encrypted to .*helpdesk\.pem\); the user must change it/,
    );

    const line = (await Deno.readTextFile(pins)).trim();
    const record = JSON.parse(
      new TextDecoder().decode((await compactDecrypt(line, pair.privateKey)).plaintext),
    );
    assert.equal(record.user, "alice@contoso.example");
    assert.match(record.pin, /^\d{8}$/);
    assert.equal(record.pinMustChange, true);
    for (const text of [prepared.stdout, prepared.stderr, line]) assert.ok(!text.includes(record.pin));

    const info = await run({}, "key", "info", "--authenticator", "hid", "--device", served.device);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /^PIN +set, 8 attempts left$/m);
    assert.match(info.stdout, /^Min PIN length +8$/m);
    assert.match(info.stdout, /^Force PIN change +yes$/m);
    assert.match(info.stdout, /^Enterprise attestation +not supported$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("key prepare refuses to set a random PIN it could not deliver, before touching the key", async () => {
  const result = await run({}, "key", "prepare", "--device", "unix:/nonexistent/key.sock");
  assert.equal(result.code, 2);
  assert.match(result.stderr, /Cannot set key PINs: the new PIN would be lost, as PINs are never printed/);
});

Deno.test("key devices on a desk whose keys cannot be opened says why per key, and what it skipped", async () => {
  const root = new URL("./fixtures/sysfs/desk", import.meta.url).pathname;
  const result = await run({ PROVISIONING_HID_SYSFS_ROOT: root }, "key", "devices");
  assert.equal(result.code, 0, result.stderr);
  // The fixture tree has no device nodes: the FIDO key is listed with the reason it cannot be read.
  assert.match(
    result.stdout,
    /desk\/dev\/hidraw1 .*Yubico YubiKey OTP\+FIDO\+CCID.*cannot read: Cannot open security key/,
  );
  assert.doesNotMatch(result.stdout, /hidraw0/);
  assert.match(result.stderr, /^Skipped .*hidraw2: Cannot parse HID report descriptor/m);
});
