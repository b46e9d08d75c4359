import assert from "node:assert/strict";
import { concatBytes } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { CtapCallOptions, CtapDevice, KeepaliveStatus } from "./device.ts";
import {
  CTAPHID_BROADCAST_CID,
  CtapHidCommand,
  decodeInitResponse,
  fragmentMessage,
  MessageAssembler,
} from "./hid.ts";
import { CtapHidAbortError, CtapHidClient } from "./hid_client.ts";
import { connectUnixPacketTransport, serveCtapHidOnUnixSocket } from "./unix_socket.ts";
import { CtapStatus } from "./status.ts";

const echoHandler: CtapDevice = {
  transceive: (request) => Promise.resolve(Uint8Array.of(CtapStatus.CTAP2_OK, ...request)),
};

/** A handler that asks for a touch and waits until released or aborted. */
class TouchHandler implements CtapDevice {
  readonly calls: { request: Uint8Array; options: CtapCallOptions }[] = [];
  readonly started = Promise.withResolvers<void>();
  #release: ((response: Uint8Array) => void) | undefined;

  transceive(request: Uint8Array, options: CtapCallOptions = {}): Promise<Uint8Array> {
    this.calls.push({ request, options });
    options.onKeepalive?.("user-presence-needed");
    this.started.resolve();
    return new Promise((resolve, reject) => {
      this.#release = resolve;
      options.signal?.addEventListener("abort", () => reject(options.signal?.reason), { once: true });
    });
  }
  release(response: Uint8Array): void {
    this.#release?.(response);
  }
}

async function withTempDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ctaphid-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Starts a server process on `path` and SIGKILLs it, which leaves its socket file behind. */
async function leaveStaleSocket(path: string): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `Deno.listen({ transport: "unix", path: ${
        JSON.stringify(path)
      } }); console.log("ready"); setTimeout(() => {}, 60_000);`,
    ],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  assert.match(new TextDecoder().decode(value), /ready/);
  reader.releaseLock();
  child.kill("SIGKILL");
  await child.status;
  await child.stdout.cancel();
}

async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const n = await conn.read(out.subarray(filled));
    if (n === null) throw new Error(`Cannot read ${length} bytes: the connection ended after ${filled}`);
    filled += n;
  }
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

Deno.test("client and device talk CTAPHID end to end over a real Unix socket", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    await using server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path));
    const request = Uint8Array.from({ length: 4000 }, (_, i) => (i * 13) & 0xff);
    assert.deepEqual(await client.transceive(request), Uint8Array.of(0, ...request));
    const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    assert.deepEqual(await client.ping(data), data);
    await client.wink();
    assert.equal(server.path, path);
  });
});

Deno.test("the socket file is created for its owner only and removed on close", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    assert.equal((await Deno.lstat(path)).mode! & 0o777, 0o600);
    await server.close();
    await server.closed;
    assert.equal(await exists(path), false);
  });
});

Deno.test("a stale socket file left by a dead server is replaced", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    await leaveStaleSocket(path);
    assert.equal(await exists(path), true);
    await using server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path));
    assert.deepEqual(await client.transceive(Uint8Array.of(4)), Uint8Array.of(0, 4));
    assert.ok(server);
  });
});

Deno.test("a path that is a regular file or a live socket is refused, not removed", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/not-a-socket`;
    await Deno.writeTextFile(file, "keep me");
    const taken = await rejection(serveCtapHidOnUnixSocket({ path: file, device: echoHandler }));
    assert.ok(taken instanceof ProvisioningError);
    assert.equal(taken.code, "socket-path-taken");
    assert.equal(await Deno.readTextFile(file), "keep me");

    const path = `${dir}/key.sock`;
    await using _server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    const inUse = await rejection(serveCtapHidOnUnixSocket({ path, device: echoHandler }));
    assert.ok(inUse instanceof ProvisioningError);
    assert.equal(inUse.code, "socket-in-use");
    assert.match(
      inUse.message,
      /^Cannot serve CTAPHID on ".*key\.sock": another process is listening on it$/,
    );
  });
});

Deno.test("the server reassembles reports that stream reads split or merge", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    await using _server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    const conn = await Deno.connect({ transport: "unix", path });
    try {
      const nonce = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
      const [init] = fragmentMessage(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, nonce);
      await conn.write(init!.subarray(0, 10));
      await new Promise((resolve) => setTimeout(resolve, 20));
      await conn.write(init!.subarray(10));
      const { cid } = decodeInitResponse((await readExactly(conn, 64)).subarray(7, 24));

      const ping = Uint8Array.from({ length: 150 }, (_, i) => i);
      const packets = fragmentMessage(cid, CtapHidCommand.PING, ping);
      const stream = concatBytes(...packets);
      await conn.write(stream.subarray(0, 70)); // one report and a bit
      await new Promise((resolve) => setTimeout(resolve, 20));
      await conn.write(stream.subarray(70)); // the rest, merged
      const assembler = new MessageAssembler();
      const events = [];
      for (let i = 0; i < packets.length; i++) events.push(...assembler.push(await readExactly(conn, 64)));
      assert.deepEqual(events, [{
        kind: "message",
        message: { cid, cmd: CtapHidCommand.PING, payload: ping },
      }]);
    } finally {
      conn.close();
    }
  });
});

Deno.test("over the socket, KEEPALIVE reports the touch request and abort cancels with KEEPALIVE_CANCEL", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const handler = new TouchHandler();
    await using _server = await serveCtapHidOnUnixSocket({
      path,
      device: handler,
      hid: { keepaliveIntervalMs: 5 },
    });
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path));
    const controller = new AbortController();
    const touched = Promise.withResolvers<void>();
    const seen: KeepaliveStatus[] = [];
    const response = client.transceive(Uint8Array.of(0x01), {
      signal: controller.signal,
      onKeepalive: (status) => {
        seen.push(status);
        touched.resolve();
      },
    });
    await touched.promise;
    controller.abort(new Error("admin gave up"));
    const error = await rejection(response);
    assert.ok(error instanceof CtapHidAbortError);
    assert.match(error.message, /^Cannot complete CTAPHID CBOR: the request was aborted \(admin gave up\)$/);
    assert.equal(seen[0], "user-presence-needed");
    assert.equal(handler.calls[0]!.options.signal!.aborted, true);
  });
});

Deno.test("an abort the key never confirms still rejects, and the channel is resynchronised before the next request", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    // A handler that ignores its signal: the device can only answer when it is released.
    let release: ((response: Uint8Array) => void) | undefined;
    const started = Promise.withResolvers<void>();
    const stubborn: CtapDevice = {
      transceive: () =>
        new Promise((resolve) => {
          release = resolve;
          started.resolve();
        }),
    };
    // No keep-alives, so the client's wait for the cancel confirmation times out.
    await using _server = await serveCtapHidOnUnixSocket({
      path,
      device: stubborn,
      hid: { keepaliveIntervalMs: 60_000 },
    });
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path), { timeoutMs: 50 });
    const controller = new AbortController();
    const response = client.transceive(Uint8Array.of(0x01), { signal: controller.signal });
    await started.promise;
    controller.abort();
    assert.ok(await rejection(response) instanceof CtapHidAbortError);
    release?.(Uint8Array.of(0)); // its late answer (KEEPALIVE_CANCEL) must not be taken for the next one's
    assert.deepEqual(await client.ping(Uint8Array.of(9, 9)), Uint8Array.of(9, 9));
  });
});

Deno.test("a client that disconnects mid-request aborts the handler's request on the server", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const handler = new TouchHandler();
    await using _server = await serveCtapHidOnUnixSocket({ path, device: handler });
    const client = await CtapHidClient.open(await connectUnixPacketTransport(path));
    const response = client.transceive(Uint8Array.of(0x01));
    await handler.started.promise;
    await client.close();
    await rejection(response);
    for (let i = 0; i < 50 && !handler.calls[0]!.options.signal!.aborted; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(handler.calls[0]!.options.signal!.aborted, true);
  });
});

Deno.test("every connection gets its own channel state while sharing the handler", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    await using _server = await serveCtapHidOnUnixSocket({ path, device: echoHandler });
    const clients = await Promise.all(
      [1, 2, 3].map(async () => CtapHidClient.open(await connectUnixPacketTransport(path))),
    );
    try {
      const answers = await Promise.all(clients.map((client, i) => client.transceive(Uint8Array.of(i + 1))));
      assert.deepEqual(answers, [Uint8Array.of(0, 1), Uint8Array.of(0, 2), Uint8Array.of(0, 3)]);
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });
});

Deno.test("aborting the server's signal closes it, ends its connections and removes the socket", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const controller = new AbortController();
    const handler = new TouchHandler();
    const server = await serveCtapHidOnUnixSocket({ path, device: handler, signal: controller.signal });
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path), {
      timeoutMs: 1000,
    });
    const response = client.transceive(Uint8Array.of(0x01));
    await handler.started.promise;
    controller.abort();
    await server.closed;
    assert.equal(await exists(path), false);
    assert.equal(handler.calls[0]!.options.signal!.aborted, true);
    const error = await rejection(response);
    assert.ok(error instanceof ProvisioningError);
    assert.equal(error.code, "ctaphid-closed");
  });
});

Deno.test("connecting to a socket nobody serves fails with socket-unreachable", async () => {
  await withTempDir(async (dir) => {
    const error = await rejection(connectUnixPacketTransport(`${dir}/missing.sock`));
    assert.ok(error instanceof ProvisioningError);
    assert.equal(error.code, "socket-unreachable");
    assert.match(error.message, /^Cannot connect to CTAPHID socket ".*missing\.sock": /);
  });
});

/** Resolves with `promise`'s value, or fails the test when it takes longer than `ms` (a hang, not a timing). */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw client: INIT on the broadcast channel, and the channel id the device allocated. */
async function rawChannel(path: string): Promise<{ conn: Deno.UnixConn; cid: number }> {
  const conn = await Deno.connect({ transport: "unix", path });
  const nonce = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  for (const packet of fragmentMessage(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, nonce)) {
    await conn.write(packet);
  }
  const assembler = new MessageAssembler();
  for (;;) {
    for (const event of assembler.push(await readExactly(conn, 64))) {
      if (event.kind === "message") return { conn, cid: decodeInitResponse(event.message.payload).cid };
    }
  }
}

/** Writes `count` one-packet PINGs on `cid` and never reads; resolves when the server ends the connection. */
async function floodPings(conn: Deno.Conn, cid: number, count: number): Promise<number> {
  const ping = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(57).fill(7))[0]!;
  const batch = concatBytes(...Array.from({ length: 100 }, () => ping));
  let sent = 0;
  try {
    while (sent < count) {
      let offset = 0;
      while (offset < batch.length) offset += await conn.write(batch.subarray(offset));
      sent += 100;
    }
  } catch {
    // The server dropped us.
  }
  return sent;
}

Deno.test("a client that sends 30,000 PINGs without reading is dropped, and the next client is served", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const dropped = Promise.withResolvers<string>();
    await using server = await serveCtapHidOnUnixSocket({
      path,
      device: echoHandler,
      limits: { maxQueuedPackets: 64, stallTimeoutMs: 300 },
      onClientDropped: (reason) => dropped.resolve(reason),
    });
    const { conn, cid } = await rawChannel(path);
    try {
      const flooding = floodPings(conn, cid, 30_000);
      const reason = await within(dropped.promise, 20_000, "dropping the client that does not read");
      assert.match(reason, /read nothing|unread/);
      const sent = await within(flooding, 20_000, "the end of the flood");
      assert.ok(
        sent < 30_000,
        `the server kept reading (${sent} PINGs accepted) although nobody read its answers`,
      );
    } finally {
      conn.close();
    }
    await within(
      (async () => {
        while (server.connections > 0) await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      10_000,
      "the dropped connection ending",
    );
    await using client = await CtapHidClient.open(await connectUnixPacketTransport(path));
    assert.deepEqual(await client.transceive(Uint8Array.of(4)), Uint8Array.of(0, 4));
  });
});

Deno.test("a client that floods and leaves ends its connection on the server and aborts its request", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/key.sock`;
    const handler = new TouchHandler();
    await using server = await serveCtapHidOnUnixSocket({ path, device: handler });
    const { conn, cid } = await rawChannel(path);
    for (const packet of fragmentMessage(cid, CtapHidCommand.CBOR, Uint8Array.of(1, 2, 3))) {
      await conn.write(packet);
    }
    await handler.started.promise;
    const ping = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(57))[0]!;
    for (let i = 0; i < 200; i++) await conn.write(ping);
    conn.close();
    await within(
      (async () => {
        while (server.connections > 0) await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      10_000,
      "the connection of a client that left ending",
    );
    assert.equal(
      handler.calls[0]!.options.signal?.aborted,
      true,
      "the request of a client that left is aborted",
    );
  });
});
