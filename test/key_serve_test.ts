/**
 * `provisioning key serve` as a separate process, driven through its Unix socket by the
 * CTAPHID client in core/ctap: the same path a HID key takes, with the software key behind it.
 */
import { generateRegistrationOptions, verifyRegistrationResponse } from "@simplewebauthn/server";
import { assert, assertEquals } from "./assert.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { CtapHidClient } from "../core/ctap/hid_client.ts";
import { connectUnixPacketTransport } from "../core/ctap/unix_socket.ts";
import { create } from "../core/webauthn/create.ts";
import { scriptedUser } from "./software_key.ts";

const root = new URL("..", import.meta.url).pathname;

/** The `cli` permission set reads and writes the checkout; the admin's working folder is added per run. */
function workingFolder(dir: string): string[] {
  return [`--allow-read=${dir}`, `--allow-write=${dir}`];
}

async function waitForSocket(path: string, process: Deno.ChildProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await Deno.lstat(path)).isSocket) return;
    } catch {
      // not yet
    }
    const exited = await Promise.race([
      process.status.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 50)),
    ]);
    if (exited) throw new Error("key serve exited before its socket appeared");
  }
  throw new Error(`key serve did not create ${path} in 10 s`);
}

Deno.test("key serve exposes the software key as a CTAPHID device that a FIDO2 client can register a passkey with", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-serve-test-" });
  const socket = `${dir}/key.sock`;
  const vault = `${dir}/key.vault`;
  const env = { PROVISIONING_VAULT_PASSPHRASE: "correct horse battery", PROVISIONING_KEY_PIN: "482916" };
  try {
    const init = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-P=cli",
        ...workingFolder(dir),
        "main.ts",
        "key",
        "init",
        "--vault",
        vault,
        "--kdf-iterations",
        "10000",
        "--set-pin",
      ],
      cwd: root,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(init.code, 0, new TextDecoder().decode(init.stderr));
    assert.match(new TextDecoder().decode(init.stdout), /AAGUID {2}70726f76-6973-696f-6e69-6e67736b0001/);

    const server = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-P=cli",
        ...workingFolder(dir),
        `--allow-net=unix:${socket}`,
        "main.ts",
        "key",
        "serve",
        "--vault",
        vault,
        "--socket",
        socket,
      ],
      cwd: root,
      env,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      await waitForSocket(socket, server);
      await using hid = await CtapHidClient.open(await connectUnixPacketTransport(socket));
      const info = await new Ctap2Client(hid).getInfo();
      assertEquals(info.options?.["clientPin"], true);

      const options = await generateRegistrationOptions({
        rpName: "Example",
        rpID: "example.com",
        userName: "bob@example.com",
        attestationType: "direct",
        authenticatorSelection: { residentKey: "required", userVerification: "required" },
      });
      const user = scriptedUser(["482916"]);
      const response = await create({
        options,
        origin: "https://example.com",
        allowedRpIds: ["example.com"],
        authenticator: { label: "served key", device: hid, [Symbol.asyncDispose]: () => Promise.resolve() },
        interaction: user,
      });
      const verification = await verifyRegistrationResponse({
        response: response as Parameters<typeof verifyRegistrationResponse>[0]["response"],
        expectedChallenge: options.challenge,
        expectedOrigin: "https://example.com",
        expectedRPID: "example.com",
      });
      assert.ok(verification.verified);
    } finally {
      server.kill("SIGINT");
      const status = await server.status;
      await server.stderr.cancel().catch(() => {});
      assert.ok(status.code === 0 || status.code === 130, `key serve exited with ${status.code}`);
    }
    // The credential is in the vault: a fresh process lists it.
    const list = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-q",
        "-P=cli",
        ...workingFolder(dir),
        "main.ts",
        "key",
        "list",
        "--vault",
        vault,
        "--json",
      ],
      cwd: root,
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(list.code, 0, new TextDecoder().decode(list.stderr));
    const rows = JSON.parse(new TextDecoder().decode(list.stdout)) as { rpId: string; user: string }[];
    assert.deepEqual(rows.map((r) => [r.rpId, r.user]), [["example.com", "bob@example.com"]]);
    await Deno.lstat(socket).then(
      () => assert.fail("the socket file should be removed when key serve stops"),
      () => {},
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
