import assert from "node:assert/strict";
import { ProvisioningError } from "../errors.ts";
import type { CtapDevice, KeepaliveStatus } from "./device.ts";
import {
  CTAPHID_BROADCAST_CID,
  CtapHidCapability,
  CtapHidCommand,
  CtapHidErrorCode,
  encodeInitResponse,
  fragmentMessage,
  MessageAssembler,
  parsePacket,
} from "./hid.ts";
import { CtapHidAbortError, CtapHidClient, CtapHidError, type PacketTransport } from "./hid_client.ts";
import { CtapHidDevice, type CtapHidDeviceOptions } from "./hid_device.ts";
import { echoHandler, ManualClock, settle, WaitingHandler } from "./_hid_test_support.ts";

/** An in-memory HID handle: what the client sends goes to `onSend`, what the key sends is `deliver`ed. */
class MemoryTransport implements PacketTransport {
  readonly sent: Uint8Array[] = [];
  closed = false;
  readonly #packets: Uint8Array[] = [];
  #waiter: { resolve: (packet: Uint8Array) => void; reject: (error: unknown) => void } | undefined;
  readonly #onSend: (packet: Uint8Array) => void;

  constructor(onSend: (packet: Uint8Array) => void) {
    this.#onSend = onSend;
  }

  deliver(packet: Uint8Array): void {
    if (this.closed) return;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter.resolve(packet);
    else this.#packets.push(packet);
  }

  send(packet: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new Error("Cannot send: transport closed"));
    this.sent.push(packet.slice());
    this.#onSend(packet);
    return Promise.resolve();
  }

  receive(signal?: AbortSignal): Promise<Uint8Array> {
    const packet = this.#packets.shift();
    if (packet) return Promise.resolve(packet);
    if (this.closed) return Promise.reject(new Error("Cannot receive: transport closed"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#waiter = undefined;
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiter = {
        resolve: (p) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(p);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
    });
  }

  close(): Promise<void> {
    this.closed = true;
    this.#waiter?.reject(new Error("Cannot receive: transport closed"));
    this.#waiter = undefined;
    return Promise.resolve();
  }

  /** The commands this transport sent, as (cid, command) of each initialization packet. */
  sentCommands(): [number, number][] {
    return this.sent.map(parsePacket).flatMap((p) =>
      p.kind === "init" ? [[p.cid, p.cmd] as [number, number]] : []
    );
  }
}

/** One CtapHidDevice reachable by several handles, as a USB key is by several programs. */
function memoryKey(handler: CtapDevice, options: CtapHidDeviceOptions = {}) {
  const handles = new Set<MemoryTransport>();
  const device = new CtapHidDevice(handler, (packet) => {
    for (const handle of handles) handle.deliver(packet);
  }, options);
  return {
    device,
    connect(): MemoryTransport {
      const handle = new MemoryTransport((packet) => device.receive(packet));
      handles.add(handle);
      return handle;
    },
  };
}

/** A key scripted packet by packet, for answers a well-behaved device never gives. */
function scriptedKey(answer: (message: { cid: number; cmd: number; payload: Uint8Array }) => Uint8Array[]) {
  const assembler = new MessageAssembler();
  const transport: MemoryTransport = new MemoryTransport((packet) => {
    for (const event of assembler.push(packet)) {
      if (event.kind === "message") { for (const reply of answer(event.message)) transport.deliver(reply); }
    }
  });
  return transport;
}

function initReply(nonce: Uint8Array, cid: number, capabilities: number): Uint8Array[] {
  return fragmentMessage(
    CTAPHID_BROADCAST_CID,
    CtapHidCommand.INIT,
    encodeInitResponse({
      nonce,
      cid,
      protocolVersion: 2,
      version: { major: 1, minor: 0, build: 0 },
      capabilities,
    }),
  );
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

Deno.test("open allocates a channel with INIT and reports the key's version and capabilities", async () => {
  const key = memoryKey(echoHandler, { version: { major: 5, minor: 7, build: 1 } });
  const transport = key.connect();
  const client = await CtapHidClient.open(transport);
  assert.notEqual(client.cid, CTAPHID_BROADCAST_CID);
  assert.equal(client.protocolVersion, 2);
  assert.deepEqual(client.version, { major: 5, minor: 7, build: 1 });
  assert.ok(client.capabilities & CtapHidCapability.CBOR);
  assert.deepEqual(transport.sentCommands(), [[CTAPHID_BROADCAST_CID, CtapHidCommand.INIT]]);
  await client.close();
  assert.equal(transport.closed, true);
  await key.device.close();
});

Deno.test("open skips INIT answers meant for other programs and packets on other channels", async () => {
  const transport = scriptedKey(({ cmd, payload }) => {
    assert.equal(cmd, CtapHidCommand.INIT);
    return [
      ...initReply(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0), 0x11, 0x05),
      ...fragmentMessage(0x22, CtapHidCommand.PING, Uint8Array.of(1)),
      ...initReply(payload, 0x33, CtapHidCapability.CBOR),
    ];
  });
  const client = await CtapHidClient.open(transport);
  assert.equal(client.cid, 0x33);
  await client.close();
});

Deno.test("a CTAP1/U2F-only key is refused: this tool needs a FIDO2 (CTAP2) key", async () => {
  const key = memoryKey(echoHandler, { capabilities: CtapHidCapability.WINK });
  const transport = key.connect();
  const error = await rejection(CtapHidClient.open(transport));
  assert.ok(error instanceof ProvisioningError);
  assert.equal(error.code, "ctap1-only-device");
  assert.match(error.message, /^Cannot use this security key: it speaks only CTAP1\/U2F/);
  assert.match(error.hint ?? "", /FIDO2 \(CTAP2\)/);
  assert.equal(transport.closed, true, "the refused key's transport is released");
  await key.device.close();
});

Deno.test("open fails with ctaphid-timeout when the key never answers, and releases the transport", async () => {
  const transport = scriptedKey(() => []);
  const error = await rejection(CtapHidClient.open(transport, { timeoutMs: 30 }));
  assert.ok(error instanceof ProvisioningError);
  assert.equal(error.code, "ctaphid-timeout");
  assert.equal(transport.closed, true);
});

Deno.test("aborting open rejects with an AbortError and releases the transport", async () => {
  const transport = scriptedKey(() => []);
  const controller = new AbortController();
  const opening = CtapHidClient.open(transport, { signal: controller.signal, timeoutMs: 5000 });
  controller.abort(new Error("no key after all"));
  const error = await rejection(opening);
  assert.ok(error instanceof CtapHidAbortError);
  assert.match(error.message, /^Cannot complete CTAPHID INIT: the request was aborted \(no key after all\)$/);
  assert.equal(transport.closed, true);
});

Deno.test("transceive carries a multi-packet CBOR request and response end to end in memory", async () => {
  const key = memoryKey(echoHandler);
  await using client = await CtapHidClient.open(key.connect());
  const request = Uint8Array.from({ length: 5000 }, (_, i) => (i * 7) & 0xff);
  assert.deepEqual(await client.transceive(request), Uint8Array.of(0, ...request));
  await key.device.close();
});

Deno.test("transceive forwards KEEPALIVE as processing, then user-presence-needed", async () => {
  const clock = new ManualClock();
  const handler = new WaitingHandler();
  const key = memoryKey(handler, { clock });
  await using client = await CtapHidClient.open(key.connect());
  const seen: KeepaliveStatus[] = [];
  const response = client.transceive(Uint8Array.of(0x01), { onKeepalive: (status) => seen.push(status) });
  await settle();
  clock.advance(100);
  handler.calls[0]!.options.onKeepalive?.("user-presence-needed");
  clock.advance(100);
  await settle();
  handler.release(Uint8Array.of(0, 0xa0));
  assert.deepEqual(await response, Uint8Array.of(0, 0xa0));
  assert.deepEqual(seen, ["processing", "user-presence-needed"]);
  await key.device.close();
});

Deno.test("a CTAPHID_ERROR answer rejects with a CtapHidError naming the error", async () => {
  const handler = new WaitingHandler();
  const key = memoryKey(handler);
  await using first = await CtapHidClient.open(key.connect());
  await using second = await CtapHidClient.open(key.connect());
  const running = first.transceive(Uint8Array.of(0x01));
  await settle();
  const error = await rejection(second.transceive(Uint8Array.of(0x04)));
  assert.ok(error instanceof CtapHidError);
  assert.equal(error.code, "ctaphid-channel-busy");
  assert.equal(error.errorCode, CtapHidErrorCode.CHANNEL_BUSY);
  assert.equal(error.errorName, "CHANNEL_BUSY");
  assert.match(
    error.message,
    /^Cannot complete CTAPHID CBOR on channel 0x[0-9a-f]{8}: .*0x06 - CHANNEL_BUSY$/,
  );
  handler.release(Uint8Array.of(0));
  assert.deepEqual(await running, Uint8Array.of(0));
  await key.device.close();
});

Deno.test("aborting sends CTAPHID_CANCEL, waits for KEEPALIVE_CANCEL and rejects with an AbortError carrying the reason", async () => {
  const handler = new WaitingHandler();
  const key = memoryKey(handler);
  const transport = key.connect();
  await using client = await CtapHidClient.open(transport);
  const controller = new AbortController();
  const response = client.transceive(Uint8Array.of(0x01), { signal: controller.signal });
  await settle();
  const reason = new Error("operator pressed Ctrl+C");
  controller.abort(reason);
  const error = await rejection(response);
  assert.ok(error instanceof CtapHidAbortError);
  assert.equal(error.name, "AbortError");
  assert.equal(error.reason, reason);
  assert.equal(error.cause, reason);
  assert.equal(handler.calls[0]!.options.signal!.aborted, true, "the key's handler saw the cancel");
  assert.deepEqual(transport.sentCommands().slice(1), [
    [client.cid, CtapHidCommand.CBOR],
    [client.cid, CtapHidCommand.CANCEL],
  ]);
  // The KEEPALIVE_CANCEL answer was consumed: the next request needs no resynchronisation.
  const next = client.transceive(Uint8Array.of(0x04));
  await settle();
  handler.release(Uint8Array.of(0, 1));
  assert.deepEqual(await next, Uint8Array.of(0, 1));
  assert.deepEqual(transport.sentCommands().slice(1), [
    [client.cid, CtapHidCommand.CBOR],
    [client.cid, CtapHidCommand.CANCEL],
    [client.cid, CtapHidCommand.CBOR],
  ]);
  await key.device.close();
});

Deno.test("an already aborted signal rejects without sending anything", async () => {
  const key = memoryKey(echoHandler);
  const transport = key.connect();
  await using client = await CtapHidClient.open(transport);
  const error = await rejection(client.transceive(Uint8Array.of(0x04), { signal: AbortSignal.abort() }));
  assert.ok(error instanceof CtapHidAbortError);
  assert.equal(transport.sent.length, 1, "only the INIT of open");
  await key.device.close();
});

Deno.test("a key that goes silent fails the request with ctaphid-timeout; the next request resynchronises first", async () => {
  let silent = true;
  let cid = 0;
  const transport = scriptedKey((message) => {
    if (message.cmd === CtapHidCommand.INIT) {
      cid = message.cid === CTAPHID_BROADCAST_CID ? 0x44 : message.cid;
      const reply = initReply(message.payload, 0x44, CtapHidCapability.CBOR);
      // Answer on the channel the INIT came on, as §11.2.9.1.3 asks.
      return reply.map((packet) => {
        new DataView(packet.buffer).setUint32(0, message.cid);
        return packet;
      });
    }
    if (silent) return [];
    return fragmentMessage(cid, CtapHidCommand.CBOR, Uint8Array.of(0, 2));
  });
  await using client = await CtapHidClient.open(transport, { timeoutMs: 30 });
  const error = await rejection(client.transceive(Uint8Array.of(0x04)));
  assert.ok(error instanceof ProvisioningError);
  assert.equal(error.code, "ctaphid-timeout");
  assert.match(error.message, /^Cannot complete CTAPHID CBOR: the key sent nothing for 30 ms$/);
  silent = false;
  assert.deepEqual(await client.transceive(Uint8Array.of(0x04)), Uint8Array.of(0, 2));
  assert.deepEqual(transport.sentCommands().slice(1), [
    [0x44, CtapHidCommand.CBOR],
    [0x44, CtapHidCommand.INIT],
    [0x44, CtapHidCommand.CBOR],
  ]);
});

Deno.test("an answer with the wrong command is a ctaphid-protocol error", async () => {
  const transport = scriptedKey((message) =>
    message.cmd === CtapHidCommand.INIT
      ? initReply(message.payload, 0x55, CtapHidCapability.CBOR)
      : fragmentMessage(0x55, CtapHidCommand.PING, Uint8Array.of(0))
  );
  await using client = await CtapHidClient.open(transport, { timeoutMs: 30 });
  const error = await rejection(client.transceive(Uint8Array.of(0x04)));
  assert.ok(error instanceof ProvisioningError);
  assert.equal(error.code, "ctaphid-protocol");
  assert.match(error.message, /the key answered PING on channel 0x00000055/);
});

Deno.test("concurrent requests on one client are serialised and each gets its own answer", async () => {
  let running = 0;
  let most = 0;
  const key = memoryKey({
    async transceive(request) {
      most = Math.max(most, ++running);
      await settle();
      running--;
      return Uint8Array.of(0, ...request);
    },
  });
  await using client = await CtapHidClient.open(key.connect());
  const answers = await Promise.all([1, 2, 3, 4, 5].map((n) => client.transceive(Uint8Array.of(n))));
  assert.deepEqual(answers, [1, 2, 3, 4, 5].map((n) => Uint8Array.of(0, n)));
  assert.equal(most, 1);
  await key.device.close();
});

Deno.test("ping echoes a multi-packet payload and wink is answered", async () => {
  let winks = 0;
  const key = memoryKey(echoHandler, { onWink: () => winks++ });
  await using client = await CtapHidClient.open(key.connect());
  const data = Uint8Array.from({ length: 700 }, (_, i) => i & 0xff);
  assert.deepEqual(await client.ping(data), data);
  await client.wink();
  assert.equal(winks, 1);
  await key.device.close();
});

Deno.test("close rejects the request in progress and every later one", async () => {
  const handler = new WaitingHandler();
  const key = memoryKey(handler);
  const transport = key.connect();
  const client = await CtapHidClient.open(transport);
  const pending = client.transceive(Uint8Array.of(0x01));
  await settle();
  await client.close();
  const error = await rejection(pending);
  assert.ok(error instanceof ProvisioningError);
  assert.equal(error.code, "ctaphid-closed");
  const later = await rejection(client.transceive(Uint8Array.of(0x04)));
  assert.ok(later instanceof ProvisioningError);
  assert.match(later.message, /^Cannot send CTAPHID CBOR: the client is closed$/);
  assert.equal(transport.closed, true);
  await key.device.close();
});
