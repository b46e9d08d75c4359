import assert from "node:assert/strict";
import fc from "fast-check";
import type { CtapDevice } from "./device.ts";
import {
  CTAPHID_BROADCAST_CID,
  CTAPHID_PACKET_SIZE,
  CtapHidCapability,
  CtapHidCommand,
  CtapHidErrorCode,
  CtapHidKeepaliveStatus,
  decodeInitResponse,
  fragmentMessage,
  type HidMessage,
  MessageAssembler,
} from "./hid.ts";
import { CtapHidDevice, type CtapHidDeviceOptions } from "./hid_device.ts";
import { CtapError, CtapStatus } from "./status.ts";
import { echoHandler, ManualClock, settle, WaitingHandler } from "./_hid_test_support.ts";

function harness(handler: CtapDevice, options: CtapHidDeviceOptions = {}) {
  const clock = new ManualClock();
  const sent: Uint8Array[] = [];
  const device = new CtapHidDevice(handler, (packet) => sent.push(packet), { clock, ...options });
  const assembler = new MessageAssembler({ clock: { now: () => 0 } });
  return {
    clock,
    device,
    sent,
    send(cid: number, cmd: number, payload: Uint8Array = new Uint8Array()): void {
      for (const packet of fragmentMessage(cid, cmd, payload)) device.receive(packet);
    },
    /** Every reply since the last call, reassembled; fails on any malformed reply. */
    replies(): HidMessage[] {
      const out: HidMessage[] = [];
      for (const packet of sent.splice(0)) {
        assert.equal(packet.length, CTAPHID_PACKET_SIZE);
        for (const event of assembler.push(packet)) {
          assert.equal(event.kind, "message", event.kind === "error" ? event.detail : "");
          if (event.kind === "message") out.push(event.message);
        }
      }
      return out;
    },
    /** Allocates a channel and returns its id. */
    open(): number {
      this.send(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
      const [reply] = this.replies();
      return decodeInitResponse(reply!.payload).cid;
    },
  };
}

function error(cid: number, code: number): HidMessage {
  return { cid, cmd: CtapHidCommand.ERROR, payload: Uint8Array.of(code) };
}

Deno.test("INIT on the broadcast channel allocates a channel and echoes the nonce with version and capabilities", async () => {
  const { device, send, replies } = harness(echoHandler, { version: { major: 3, minor: 2, build: 1 } });
  const nonce = Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2);
  send(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, nonce);
  const [reply, ...rest] = replies();
  assert.deepEqual(rest, []);
  assert.equal(reply?.cid, CTAPHID_BROADCAST_CID);
  assert.equal(reply?.cmd, CtapHidCommand.INIT);
  const info = decodeInitResponse(reply!.payload);
  assert.deepEqual(info.nonce, nonce);
  assert.notEqual(info.cid, 0);
  assert.notEqual(info.cid, CTAPHID_BROADCAST_CID);
  assert.equal(info.protocolVersion, 2);
  assert.deepEqual(info.version, { major: 3, minor: 2, build: 1 });
  assert.equal(info.capabilities, CtapHidCapability.CBOR | CtapHidCapability.WINK | CtapHidCapability.NMSG);
  await device.close();
});

Deno.test("each INIT on the broadcast channel allocates a different channel", async () => {
  const h = harness(echoHandler);
  const first = h.open();
  const second = h.open();
  assert.notEqual(first, second);
  await h.device.close();
});

Deno.test("INIT with a nonce that is not 8 bytes is INVALID_LEN", async () => {
  const { device, send, replies } = harness(echoHandler);
  send(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, new Uint8Array(7));
  assert.deepEqual(replies(), [error(CTAPHID_BROADCAST_CID, CtapHidErrorCode.INVALID_LEN)]);
  await device.close();
});

Deno.test("PING echoes a multi-packet payload", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  const payload = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
  h.send(cid, CtapHidCommand.PING, payload);
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.PING, payload }]);
  await h.device.close();
});

Deno.test("WINK answers empty and tells the owner", async () => {
  let winks = 0;
  const h = harness(echoHandler, { onWink: () => winks++ });
  const cid = h.open();
  h.send(cid, CtapHidCommand.WINK);
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.WINK, payload: new Uint8Array() }]);
  assert.equal(winks, 1);
  await h.device.close();
});

Deno.test("MSG (CTAP1/U2F), LOCK and unknown commands are refused with INVALID_CMD", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  h.send(cid, CtapHidCommand.MSG, Uint8Array.of(0, 3, 0, 0, 0));
  h.send(cid, CtapHidCommand.LOCK, Uint8Array.of(1));
  h.send(cid, 0x55, new Uint8Array());
  assert.deepEqual(h.replies(), [
    error(cid, CtapHidErrorCode.INVALID_CMD),
    error(cid, CtapHidErrorCode.INVALID_CMD),
    error(cid, CtapHidErrorCode.INVALID_CMD),
  ]);
  await h.device.close();
});

Deno.test("CBOR runs the handler with the request and answers its response", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  const request = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
  h.send(cid, CtapHidCommand.CBOR, request);
  await settle();
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.CBOR, payload: Uint8Array.of(0, ...request) }]);
  await h.device.close();
});

Deno.test("an empty CBOR request is INVALID_LEN", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  h.send(cid, CtapHidCommand.CBOR, new Uint8Array());
  assert.deepEqual(h.replies(), [error(cid, CtapHidErrorCode.INVALID_LEN)]);
  await h.device.close();
});

Deno.test("a handler's CtapError becomes its status byte; any other failure becomes CTAP1_ERR_OTHER", async () => {
  const failures: (() => Promise<Uint8Array>)[] = [
    () => Promise.reject(new CtapError(CtapStatus.CTAP2_ERR_PIN_INVALID)),
    () => Promise.reject(new Error("boom")),
    () => {
      throw new TypeError("synchronous boom");
    },
    () => Promise.resolve(new Uint8Array()),
    () => Promise.resolve("not bytes" as unknown as Uint8Array),
  ];
  let next = 0;
  const h = harness({ transceive: () => failures[next++]!() });
  const cid = h.open();
  for (let i = 0; i < failures.length; i++) {
    h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x04));
    await settle();
  }
  assert.deepEqual(h.replies().map((reply) => [reply.cmd, ...reply.payload]), [
    [CtapHidCommand.CBOR, CtapStatus.CTAP2_ERR_PIN_INVALID],
    [CtapHidCommand.CBOR, CtapStatus.CTAP1_ERR_OTHER],
    [CtapHidCommand.CBOR, CtapStatus.CTAP1_ERR_OTHER],
    [CtapHidCommand.CBOR, CtapStatus.CTAP1_ERR_OTHER],
    [CtapHidCommand.CBOR, CtapStatus.CTAP1_ERR_OTHER],
  ]);
  await h.device.close();
});

Deno.test("an unallocated channel, channel 0 and a non-INIT command on broadcast are INVALID_CHANNEL", async () => {
  const h = harness(echoHandler);
  h.send(0x12345678, CtapHidCommand.PING, Uint8Array.of(1));
  h.send(0, CtapHidCommand.INIT, new Uint8Array(8));
  h.send(CTAPHID_BROADCAST_CID, CtapHidCommand.PING, Uint8Array.of(1));
  h.send(0x12345678, CtapHidCommand.INIT, new Uint8Array(8));
  assert.deepEqual(h.replies(), [
    error(0x12345678, CtapHidErrorCode.INVALID_CHANNEL),
    error(0, CtapHidErrorCode.INVALID_CHANNEL),
    error(CTAPHID_BROADCAST_CID, CtapHidErrorCode.INVALID_CHANNEL),
    error(0x12345678, CtapHidErrorCode.INVALID_CHANNEL),
  ]);
  await h.device.close();
});

Deno.test("while a CBOR request runs, other requests on any channel are CHANNEL_BUSY", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler);
  const busy = h.open();
  const other = h.open();
  h.send(busy, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  h.send(other, CtapHidCommand.PING, Uint8Array.of(1));
  h.send(other, CtapHidCommand.CBOR, Uint8Array.of(0x04));
  h.send(busy, CtapHidCommand.CBOR, Uint8Array.of(0x04));
  assert.deepEqual(h.replies(), [
    error(other, CtapHidErrorCode.CHANNEL_BUSY),
    error(other, CtapHidErrorCode.CHANNEL_BUSY),
    error(busy, CtapHidErrorCode.CHANNEL_BUSY),
  ]);
  assert.equal(handler.calls.length, 1);
  handler.release(Uint8Array.of(0));
  await settle();
  assert.deepEqual(h.replies(), [{ cid: busy, cmd: CtapHidCommand.CBOR, payload: Uint8Array.of(0) }]);
  h.send(other, CtapHidCommand.PING, Uint8Array.of(1));
  assert.deepEqual(h.replies(), [{ cid: other, cmd: CtapHidCommand.PING, payload: Uint8Array.of(1) }]);
  await h.device.close();
});

Deno.test("a message started on another channel while one is being received is CHANNEL_BUSY", async () => {
  const h = harness(echoHandler);
  const first = h.open();
  const second = h.open();
  const [init, cont] = fragmentMessage(first, CtapHidCommand.PING, new Uint8Array(100).fill(3));
  h.device.receive(init!);
  h.send(second, CtapHidCommand.PING, Uint8Array.of(1));
  h.device.receive(cont!);
  assert.deepEqual(h.replies(), [
    error(second, CtapHidErrorCode.CHANNEL_BUSY),
    { cid: first, cmd: CtapHidCommand.PING, payload: new Uint8Array(100).fill(3) },
  ]);
  await h.device.close();
});

Deno.test("a continuation packet out of sequence is INVALID_SEQ", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  const packets = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(200));
  h.device.receive(packets[0]!);
  h.device.receive(packets[2]!);
  assert.deepEqual(h.replies(), [error(cid, CtapHidErrorCode.INVALID_SEQ)]);
  await h.device.close();
});

Deno.test("a spurious continuation packet is ignored without a reply", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  h.device.receive(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(100))[1]!);
  assert.deepEqual(h.replies(), []);
  await h.device.close();
});

Deno.test("an announced length over 7609 bytes is INVALID_LEN", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  const packet = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array())[0]!;
  packet.set([0x1d, 0xba], 5); // 7610
  h.device.receive(packet);
  assert.deepEqual(h.replies(), [error(cid, CtapHidErrorCode.INVALID_LEN)]);
  await h.device.close();
});

Deno.test("a message not completed within the transaction timeout is answered MSG_TIMEOUT unprompted", async () => {
  const h = harness(echoHandler, { transactionTimeoutMs: 3000 });
  const cid = h.open();
  const packets = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(200));
  h.device.receive(packets[0]!);
  h.clock.advance(2000);
  h.device.receive(packets[1]!);
  h.clock.advance(2999);
  assert.deepEqual(h.replies(), []);
  h.clock.advance(2);
  assert.deepEqual(h.replies(), [error(cid, CtapHidErrorCode.MSG_TIMEOUT)]);
  assert.equal(h.clock.pendingTimers, 0);
  h.device.receive(packets[2]!);
  assert.deepEqual(h.replies(), [], "the rest of the timed-out message is ignored");
  h.send(cid, CtapHidCommand.PING, Uint8Array.of(5));
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.PING, payload: Uint8Array.of(5) }]);
  await h.device.close();
});

Deno.test("KEEPALIVE goes out every interval while the handler runs, UPNEEDED once it asks for a touch", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler, { keepaliveIntervalMs: 100 });
  const cid = h.open();
  h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  h.clock.advance(99);
  assert.deepEqual(h.replies(), []);
  h.clock.advance(1);
  assert.deepEqual(h.replies(), [
    { cid, cmd: CtapHidCommand.KEEPALIVE, payload: Uint8Array.of(CtapHidKeepaliveStatus.PROCESSING) },
  ]);
  handler.calls[0]!.options.onKeepalive?.("user-presence-needed");
  h.clock.advance(200);
  const upNeeded = {
    cid,
    cmd: CtapHidCommand.KEEPALIVE,
    payload: Uint8Array.of(CtapHidKeepaliveStatus.UPNEEDED),
  };
  assert.deepEqual(h.replies(), [upNeeded, upNeeded]);
  handler.release(Uint8Array.of(0));
  await settle();
  h.clock.advance(1000);
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.CBOR, payload: Uint8Array.of(0) }]);
  assert.equal(h.clock.pendingTimers, 0);
  await h.device.close();
});

Deno.test("CANCEL aborts the running request, which answers CTAP2_ERR_KEEPALIVE_CANCEL; CANCEL itself gets no reply", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler);
  const cid = h.open();
  h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  const signal = handler.calls[0]!.options.signal!;
  h.send(cid, CtapHidCommand.CANCEL);
  assert.equal(signal.aborted, true);
  assert.equal((signal.reason as DOMException).name, "AbortError");
  assert.deepEqual(h.replies(), []);
  await settle();
  assert.deepEqual(h.replies(), [
    { cid, cmd: CtapHidCommand.CBOR, payload: Uint8Array.of(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL) },
  ]);
  await h.device.close();
});

Deno.test("CANCEL with nothing running, or from another channel, is ignored", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler);
  const cid = h.open();
  const other = h.open();
  h.send(cid, CtapHidCommand.CANCEL);
  h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  h.send(other, CtapHidCommand.CANCEL);
  assert.equal(handler.calls[0]!.options.signal!.aborted, false);
  handler.release(Uint8Array.of(0));
  await settle();
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.CBOR, payload: Uint8Array.of(0) }]);
  await h.device.close();
});

Deno.test("CANCEL from another channel while a message is being received gets no reply, not even CHANNEL_BUSY", async () => {
  const h = harness(echoHandler);
  const first = h.open();
  const second = h.open();
  h.device.receive(fragmentMessage(first, CtapHidCommand.PING, new Uint8Array(100))[0]!);
  h.send(second, CtapHidCommand.CANCEL);
  assert.deepEqual(h.replies(), []);
  await h.device.close();
});

Deno.test("INIT on an allocated channel resynchronises it: the running request is aborted and never answered", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler);
  const cid = h.open();
  h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  const nonce = Uint8Array.of(1, 1, 2, 3, 5, 8, 13, 21);
  h.send(cid, CtapHidCommand.INIT, nonce);
  assert.equal(handler.calls[0]!.options.signal!.aborted, true);
  const [reply] = h.replies();
  assert.equal(reply?.cid, cid);
  assert.equal(reply?.cmd, CtapHidCommand.INIT);
  assert.deepEqual(decodeInitResponse(reply!.payload).nonce, nonce);
  assert.equal(decodeInitResponse(reply!.payload).cid, cid);
  await settle();
  h.clock.advance(1000);
  assert.deepEqual(h.replies(), [], "no answer and no keep-alive for the abandoned request");
  h.send(cid, CtapHidCommand.PING, Uint8Array.of(7));
  assert.deepEqual(h.replies(), [{ cid, cmd: CtapHidCommand.PING, payload: Uint8Array.of(7) }]);
  await h.device.close();
});

Deno.test("INIT on the channel whose message is being received abandons that message", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  h.device.receive(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(100))[0]!);
  h.send(cid, CtapHidCommand.INIT, new Uint8Array(8));
  assert.equal(h.replies()[0]?.cmd, CtapHidCommand.INIT);
  h.clock.advance(10_000);
  assert.deepEqual(h.replies(), [], "no MSG_TIMEOUT for the abandoned message");
  await h.device.close();
});

Deno.test("close aborts the running request, stops every timer and ignores later packets", async () => {
  const handler = new WaitingHandler();
  const h = harness(handler);
  const cid = h.open();
  h.send(cid, CtapHidCommand.CBOR, Uint8Array.of(0x01));
  assert.equal(h.clock.pendingTimers, 1, "the keep-alive timer is armed");
  await h.device.close();
  assert.equal(handler.calls[0]!.options.signal!.aborted, true);
  assert.equal(h.clock.pendingTimers, 0);
  h.send(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, new Uint8Array(8));
  assert.deepEqual(h.replies(), []);
});

Deno.test("close during a partially received message stops its timeout timer", async () => {
  const h = harness(echoHandler);
  const cid = h.open();
  h.device.receive(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(100))[0]!);
  assert.equal(h.clock.pendingTimers, 1);
  await h.device.close();
  assert.equal(h.clock.pendingTimers, 0);
  h.clock.advance(10_000);
  assert.deepEqual(h.replies(), []);
});

Deno.test("a sink that throws closes the device instead of crashing it", async () => {
  const clock = new ManualClock();
  const device = new CtapHidDevice(echoHandler, () => {
    throw new Error("connection gone");
  }, { clock });
  device.receive(fragmentMessage(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, new Uint8Array(8))[0]!);
  await device.close();
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("property: random packets never make the device throw and every reply is a well-formed message", async () => {
  const cidOf = fc.oneof(
    fc.constantFrom(1, 2, CTAPHID_BROADCAST_CID, 0),
    fc.integer({ min: 0, max: 0xffffffff }),
  );
  const packet = fc.oneof(
    fc.uint8Array({ minLength: 64, maxLength: 64 }),
    fc.record({
      cid: cidOf,
      type: fc.oneof(
        fc.constantFrom(...Object.values(CtapHidCommand).map((cmd) => 0x80 | cmd)),
        fc.integer({ min: 0, max: 0xff }),
      ),
      length: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 0xffff })),
      data: fc.uint8Array({ minLength: 57, maxLength: 57 }),
    }).map(({ cid, type, length, data }) => {
      const bytes = new Uint8Array(64);
      const view = new DataView(bytes.buffer);
      view.setUint32(0, cid);
      bytes[4] = type;
      view.setUint16(5, length);
      bytes.set(data, 7);
      return bytes;
    }),
  );
  const knownReplies = new Set<number>([
    CtapHidCommand.INIT,
    CtapHidCommand.PING,
    CtapHidCommand.WINK,
    CtapHidCommand.CBOR,
    CtapHidCommand.ERROR,
    CtapHidCommand.KEEPALIVE,
  ]);
  const knownErrors = new Set<number>(Object.values(CtapHidErrorCode));
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(packet, fc.nat(200)), { maxLength: 60 }), async (steps) => {
      const h = harness(echoHandler);
      h.open();
      h.open();
      for (const [bytes, advance] of steps) {
        h.device.receive(bytes);
        h.clock.advance(advance);
        if (advance % 7 === 0) await Promise.resolve();
      }
      await settle();
      await h.device.close();
      for (const reply of h.replies()) {
        assert.ok(knownReplies.has(reply.cmd), `unexpected reply command ${reply.cmd}`);
        if (reply.cmd === CtapHidCommand.ERROR) {
          assert.equal(reply.payload.length, 1);
          assert.ok(knownErrors.has(reply.payload[0]!));
        }
        if (reply.cmd === CtapHidCommand.INIT) assert.equal(reply.payload.length, 17);
        if (reply.cmd === CtapHidCommand.KEEPALIVE) assert.equal(reply.payload.length, 1);
        if (reply.cmd === CtapHidCommand.CBOR) assert.ok(reply.payload.length >= 1);
      }
      assert.equal(h.clock.pendingTimers, 0);
    }),
    { numRuns: 150 },
  );
});
