/**
 * `provisioning key serve` as a separate process, driven through its Unix socket by the
 * CTAPHID client in core/ctap: the same path a HID key takes, with the software key behind it.
 */
import { generateRegistrationOptions, verifyRegistrationResponse } from "@simplewebauthn/server";
import { assert, assertEquals } from "./assert.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { CtapHidClient } from "../core/ctap/hid_client.ts";
import { connectUnixPacketTransport } from "../core/ctap/unix_socket.ts";
import { CTAPHID_BROADCAST_CID, CtapHidCommand, fragmentMessage } from "../core/ctap/hid.ts";
import { create } from "../core/webauthn/create.ts";
import { scriptedUser } from "./software_key.ts";

const root = new URL("..", import.meta.url).pathname;

/** The `cli` permission set reads and writes the checkout; the admin's working folder is added per run. */
function workingFolder(dir: string): string[] {
  return [`--allow-read=${dir}`, `--allow-write=${dir}`];
}

/** Runs `provisioning key …` from the checkout, its vault and rollback guard in `dir`. */
async function keyCommand(dir: string, env: Record<string, string>, ...args: string[]) {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      "-P=cli",
      ...workingFolder(dir),
      "main.ts",
      "key",
      ...args,
      "--vault-guard-dir",
      `${dir}/guard`,
    ],
    cwd: root,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, stdout: decode(output.stdout), stderr: decode(output.stderr) };
}

/** Starts `key serve` on `socket` and waits for the socket. */
async function startServer(dir: string, env: Record<string, string>, vault: string, socket: string) {
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
      "--vault-guard-dir",
      `${dir}/guard`,
      "--socket",
      socket,
    ],
    cwd: root,
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  await waitForSocket(socket, server);
  return server;
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
        "100000",
        "--vault-guard-dir",
        `${dir}/guard`,
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
        "--vault-guard-dir",
        `${dir}/guard`,
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
        "--vault-guard-dir",
        `${dir}/guard`,
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

Deno.test("key init refuses --kdf-iterations below 100000 and creates nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-serve-test-" });
  try {
    const env = { PROVISIONING_VAULT_PASSPHRASE: "correct horse battery" };
    for (const iterations of ["1", "99999"]) {
      const init = await keyCommand(
        dir,
        env,
        "init",
        "--vault",
        `${dir}/key.vault`,
        "--kdf-iterations",
        iterations,
      );
      assertEquals(init.code, 2, init.stderr);
      assert.match(init.stderr, new RegExp(`--kdf-iterations ${iterations}.*from 100000`));
      assert.match(init.stderr, /600000/);
    }
    await Deno.lstat(`${dir}/key.vault`).then(() => assert.fail("no vault is created"), () => {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("key init --max-credentials sets how many passkeys the key holds, and key info reports it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-serve-test-" });
  try {
    const env = { PROVISIONING_VAULT_PASSPHRASE: "correct horse battery" };
    const vault = `${dir}/key.vault`;
    const init = await keyCommand(
      dir,
      env,
      "init",
      "--vault",
      vault,
      "--kdf-iterations",
      "100000",
      "--max-credentials",
      "2",
    );
    assertEquals(init.code, 0, init.stderr);
    const info = await keyCommand(dir, env, "info", "--vault", vault);
    assertEquals(info.code, 0, info.stderr);
    assert.match(info.stdout, /Passkeys that fit\s+2\n/);
    const raised = await keyCommand(dir, env, "info", "--vault", vault, "--max-credentials", "5000");
    assert.match(raised.stdout, /Passkeys that fit\s+5000\n/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("key serve drops a local client that floods it with 30,000 PINGs and reads nothing, and serves the next", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-serve-test-" });
  const socket = `${dir}/key.sock`;
  const vault = `${dir}/key.vault`;
  const env = { PROVISIONING_VAULT_PASSPHRASE: "correct horse battery" };
  try {
    const init = await keyCommand(dir, env, "init", "--vault", vault, "--kdf-iterations", "100000");
    assertEquals(init.code, 0, init.stderr);
    const server = await startServer(dir, env, vault, socket);
    const stderr = new Response(server.stderr).text();
    try {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      const ping = fragmentMessage(
        CTAPHID_BROADCAST_CID,
        CtapHidCommand.PING,
        new Uint8Array(57).fill(1),
      )[0]!;
      const batch = new Uint8Array(100 * 64);
      for (let i = 0; i < 100; i++) batch.set(ping, i * 64);
      let sent = 0;
      try {
        while (sent < 30_000) {
          let offset = 0;
          while (offset < batch.length) offset += await conn.write(batch.subarray(offset));
          sent += 100;
        }
        // All written (the server kept reading): wait for it to drop us anyway, or fail below.
        await conn.read(new Uint8Array(64 * 1024));
      } catch {
        // Dropped.
      } finally {
        conn.close();
      }
      assert.ok(sent < 30_000, `key serve read all ${sent} PINGs although nobody read its answers`);
      await using hid = await CtapHidClient.open(await connectUnixPacketTransport(socket));
      assertEquals((await new Ctap2Client(hid).getInfo()).versions.includes("FIDO_2_1"), true);
    } finally {
      server.kill("SIGINT");
      await server.status;
    }
    assert.match(await stderr, /Dropped a client of .*key\.sock: it read nothing for 10 s/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("two key serve processes on one vault keep every passkey both registered", async () => {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-serve-test-" });
  const vault = `${dir}/key.vault`;
  const env = { PROVISIONING_VAULT_PASSPHRASE: "correct horse battery" };
  try {
    const init = await keyCommand(dir, env, "init", "--vault", vault, "--kdf-iterations", "100000");
    assertEquals(init.code, 0, init.stderr);
    const servers = await Promise.all(
      ["a", "b"].map((name) => startServer(dir, env, vault, `${dir}/${name}.sock`)),
    );
    try {
      await Promise.all(["a", "b"].map(async (name) => {
        await using hid = await CtapHidClient.open(await connectUnixPacketTransport(`${dir}/${name}.sock`));
        const client = new Ctap2Client(hid);
        for (let i = 0; i < 20; i++) {
          await client.makeCredential({
            clientDataHash: new Uint8Array(32).fill(i),
            rp: { id: "login.microsoft.com" },
            user: { id: new TextEncoder().encode(`${name}-${i}`), name: `${name}${i}@contoso.com` },
            pubKeyCredParams: [{ type: "public-key", alg: -7 }],
            options: { rk: true },
          });
        }
      }));
    } finally {
      for (const server of servers) {
        server.kill("SIGINT");
        await server.status;
        await server.stderr.cancel().catch(() => {});
      }
    }
    const info = await keyCommand(dir, env, "info", "--vault", vault);
    assertEquals(info.code, 0, info.stderr);
    assert.match(info.stdout, /Passkeys that fit\s+99960\n/, "40 passkeys held of 100,000");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
