import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AssemblyEvent,
  CTAPHID_BROADCAST_CID,
  CTAPHID_CONT_DATA_SIZE,
  CTAPHID_INIT_DATA_SIZE,
  CTAPHID_MAX_MESSAGE_SIZE,
  CTAPHID_PACKET_SIZE,
  CtapHidCommand,
  CtapHidErrorCode,
  decodeInitResponse,
  encodeInitResponse,
  fragmentMessage,
  type HidMessage,
  MessageAssembler,
  parsePacket,
} from "./hid.ts";

function initPacket(
  cid: number,
  cmd: number,
  length: number,
  data: Uint8Array = new Uint8Array(),
): Uint8Array {
  const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
  const view = new DataView(packet.buffer);
  view.setUint32(0, cid);
  packet[4] = 0x80 | cmd;
  view.setUint16(5, length);
  packet.set(data.subarray(0, CTAPHID_INIT_DATA_SIZE), 7);
  return packet;
}

function contPacket(cid: number, seq: number, data: Uint8Array = new Uint8Array()): Uint8Array {
  const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
  new DataView(packet.buffer).setUint32(0, cid);
  packet[4] = seq;
  packet.set(data.subarray(0, CTAPHID_CONT_DATA_SIZE), 5);
  return packet;
}

class FakeClock {
  time = 0;
  now(): number {
    return this.time;
  }
}

function messages(events: readonly AssemblyEvent[]): HidMessage[] {
  return events.flatMap((event) => event.kind === "message" ? [event.message] : []);
}

const cid = 0x01020304;

Deno.test("the maximum CTAPHID message is 7609 bytes (57 + 128 * 59, CTAP 2.1 §11.2.4)", () => {
  assert.equal(CTAPHID_MAX_MESSAGE_SIZE, 7609);
});

Deno.test("fragmentMessage writes the header of §11.2.4 and zero-pads every packet to 64 bytes", () => {
  const payload = Uint8Array.from({ length: 60 }, (_, i) => i + 1);
  const packets = fragmentMessage(cid, CtapHidCommand.CBOR, payload);
  assert.equal(packets.length, 2);
  for (const packet of packets) assert.equal(packet.length, 64);
  assert.deepEqual([...packets[0]!.subarray(0, 7)], [0x01, 0x02, 0x03, 0x04, 0x90, 0x00, 60]);
  assert.deepEqual([...packets[0]!.subarray(7)], [...payload.subarray(0, 57)]);
  assert.deepEqual([...packets[1]!.subarray(0, 5)], [0x01, 0x02, 0x03, 0x04, 0x00]);
  assert.deepEqual([...packets[1]!.subarray(5, 8)], [58, 59, 60]);
  assert.ok(packets[1]!.subarray(8).every((b) => b === 0));
});

Deno.test("fragmentMessage uses one packet up to 57 bytes and 129 packets for 7609 bytes", () => {
  assert.equal(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array()).length, 1);
  assert.equal(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(57)).length, 1);
  assert.equal(fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(58)).length, 2);
  const largest = fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(7609));
  assert.equal(largest.length, 129);
  assert.equal(largest.at(-1)![4], 127);
});

Deno.test("fragmentMessage refuses a payload over 7609 bytes, a command with the init bit and a bad cid", () => {
  assert.throws(() => fragmentMessage(cid, CtapHidCommand.PING, new Uint8Array(7610)), RangeError);
  assert.throws(() => fragmentMessage(cid, 0x81, new Uint8Array()), RangeError);
  assert.throws(() => fragmentMessage(-1, CtapHidCommand.PING, new Uint8Array()), RangeError);
  assert.throws(() => fragmentMessage(2 ** 32, CtapHidCommand.PING, new Uint8Array()), RangeError);
});

Deno.test("parsePacket refuses anything but a 64-byte report", () => {
  assert.throws(
    () => parsePacket(new Uint8Array(63)),
    /Cannot parse CTAPHID packet: it is 63 bytes, expected 64/,
  );
  assert.throws(() => parsePacket(new Uint8Array(65)), RangeError);
});

Deno.test("property: any payload of 0..7609 bytes on any non-broadcast channel survives fragmentation and reassembly", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xfffffffe }),
      fc.integer({ min: 0, max: 0x7f }),
      fc.oneof(
        fc.uint8Array({ minLength: 0, maxLength: 200 }),
        fc.uint8Array({ minLength: 0, maxLength: CTAPHID_MAX_MESSAGE_SIZE }),
        fc.constant(new Uint8Array(CTAPHID_MAX_MESSAGE_SIZE).fill(0xa5)),
      ),
      (channel, cmd, payload) => {
        const packets = fragmentMessage(channel, cmd, payload);
        assert.ok(packets.every((packet) => packet.length === CTAPHID_PACKET_SIZE));
        const assembler = new MessageAssembler({ clock: new FakeClock() });
        const events = packets.flatMap((packet) => assembler.push(packet));
        assert.deepEqual(events, [{ kind: "message", message: { cid: channel, cmd, payload } }]);
        assert.equal(assembler.pendingCid, undefined);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("a continuation packet with the wrong sequence number is INVALID_SEQ and drops the message", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  assert.deepEqual(assembler.push(initPacket(cid, CtapHidCommand.CBOR, 200)), []);
  assert.deepEqual(assembler.push(contPacket(cid, 0)), []);
  const [event] = assembler.push(contPacket(cid, 2));
  assert.equal(event?.kind, "error");
  assert.equal(event.kind === "error" && event.reason, "invalid-seq");
  assert.equal(event.kind === "error" && event.errorCode, CtapHidErrorCode.INVALID_SEQ);
  assert.match(event.kind === "error" ? event.detail : "", /continuation packet 2 arrived, expected 1/);
  assert.equal(assembler.pendingCid, undefined);
});

Deno.test("a continuation packet without an initialization packet is reported as spurious, to be ignored", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  const [event] = assembler.push(contPacket(cid, 0));
  assert.equal(event?.kind === "error" && event.reason, "spurious-continuation");
  assert.equal(event?.kind === "error" && event.errorCode, undefined);
});

Deno.test("an announced length over 7609 bytes is INVALID_LEN", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  const [event] = assembler.push(initPacket(cid, CtapHidCommand.CBOR, 7610));
  assert.equal(event?.kind === "error" && event.reason, "invalid-length");
  assert.equal(event?.kind === "error" && event.errorCode, CtapHidErrorCode.INVALID_LEN);
  assert.equal(assembler.pendingCid, undefined);
});

Deno.test("a message started on another channel mid-message is CHANNEL_BUSY and the first message still completes", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  const payload = Uint8Array.from({ length: 100 }, (_, i) => i);
  const [first, second] = fragmentMessage(cid, CtapHidCommand.PING, payload);
  assert.deepEqual(assembler.push(first!), []);
  const [busy] = assembler.push(initPacket(0x0a0b0c0d, CtapHidCommand.CBOR, 1));
  assert.equal(busy?.kind === "error" && busy.reason, "channel-busy");
  assert.equal(busy?.kind === "error" && busy.cid, 0x0a0b0c0d);
  assert.equal(busy?.kind === "error" && busy.errorCode, CtapHidErrorCode.CHANNEL_BUSY);
  assert.deepEqual(messages(assembler.push(second!)), [{ cid, cmd: CtapHidCommand.PING, payload }]);
});

Deno.test("a multi-packet INIT on another channel mid-message is CHANNEL_BUSY, not a takeover", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  assembler.push(initPacket(cid, CtapHidCommand.PING, 100));
  const [event] = assembler.push(initPacket(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, 100));
  assert.equal(event?.kind === "error" && event.reason, "channel-busy");
  assert.equal(assembler.pendingCid, cid);
});

Deno.test("a new message on the same channel mid-message is INVALID_SEQ", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  assembler.push(initPacket(cid, CtapHidCommand.PING, 100));
  const [event] = assembler.push(initPacket(cid, CtapHidCommand.PING, 3));
  assert.equal(event?.kind === "error" && event.reason, "invalid-seq");
  assert.equal(assembler.pendingCid, undefined);
});

Deno.test("INIT on the channel in progress abandons its message (resynchronisation); INIT elsewhere passes through", () => {
  const assembler = new MessageAssembler({ clock: new FakeClock() });
  const nonce = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  assembler.push(initPacket(cid, CtapHidCommand.PING, 100));
  assert.deepEqual(
    messages(assembler.push(initPacket(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, 8, nonce))),
    [
      { cid: CTAPHID_BROADCAST_CID, cmd: CtapHidCommand.INIT, payload: nonce },
    ],
  );
  assert.equal(assembler.pendingCid, cid);
  assert.deepEqual(messages(assembler.push(initPacket(cid, CtapHidCommand.INIT, 8, nonce))), [
    { cid, cmd: CtapHidCommand.INIT, payload: nonce },
  ]);
  assert.equal(assembler.pendingCid, undefined);
});

Deno.test("a message whose packets stop for longer than the timeout is MSG_TIMEOUT (injected clock)", () => {
  const clock = new FakeClock();
  const assembler = new MessageAssembler({ clock, timeoutMs: 3000 });
  assembler.push(initPacket(cid, CtapHidCommand.CBOR, 200));
  clock.time = 3000;
  assert.equal(assembler.expire(), undefined);
  assert.deepEqual(assembler.push(contPacket(cid, 0)), []);
  assert.equal(assembler.deadline, 6000);
  clock.time = 6001;
  const expired = assembler.expire();
  assert.equal(expired?.reason, "message-timeout");
  assert.equal(expired?.errorCode, CtapHidErrorCode.MSG_TIMEOUT);
  assert.equal(expired?.cid, cid);
  assert.equal(assembler.pendingCid, undefined);
});

Deno.test("a packet arriving after the timeout first reports the stale message, then its own outcome", () => {
  const clock = new FakeClock();
  const assembler = new MessageAssembler({ clock, timeoutMs: 100 });
  assembler.push(initPacket(cid, CtapHidCommand.CBOR, 200));
  clock.time = 500;
  const events = assembler.push(initPacket(0x55, CtapHidCommand.PING, 1, Uint8Array.of(9)));
  assert.equal(events.length, 2);
  assert.equal(events[0]?.kind === "error" && events[0].reason, "message-timeout");
  assert.deepEqual(messages(events), [{ cid: 0x55, cmd: CtapHidCommand.PING, payload: Uint8Array.of(9) }]);
});

Deno.test("property: garbage from other channels interleaved in a message is refused and the message arrives intact", () => {
  const garbagePacket = fc.record({
    cid: fc.integer({ min: 0, max: 0xffffffff }).filter((c) => c !== cid),
    type: fc.oneof(fc.integer({ min: 0, max: 0xff }), fc.constant(0x80 | CtapHidCommand.INIT)),
    length: fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constant(8), fc.constant(58)),
    bytes: fc.uint8Array({ minLength: 57, maxLength: 57 }),
  }).map(({ cid: other, type, length, bytes }) => {
    const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
    const view = new DataView(packet.buffer);
    view.setUint32(0, other);
    packet[4] = type;
    view.setUint16(5, length);
    packet.set(bytes, 7);
    return packet;
  });
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: CTAPHID_INIT_DATA_SIZE + 1, maxLength: 2000 }),
      fc.array(fc.tuple(fc.nat(), garbagePacket), { maxLength: 30 }),
      (payload, garbage) => {
        const packets = fragmentMessage(cid, CtapHidCommand.CBOR, payload);
        const stream: Uint8Array[] = [packets[0]!];
        const rest = packets.slice(1);
        // Insert each garbage packet before one of the remaining packets of the message.
        const slots = rest.map((packet) => [packet] as Uint8Array[]);
        for (const [at, packet] of garbage) slots[at % slots.length]!.unshift(packet);
        for (const slot of slots) stream.push(...slot);

        const assembler = new MessageAssembler({ clock: new FakeClock() });
        const events = stream.flatMap((packet) => assembler.push(packet));
        const ours = messages(events).filter((message) => message.cid === cid);
        assert.deepEqual(ours, [{ cid, cmd: CtapHidCommand.CBOR, payload }]);
        for (const event of events) {
          if (event.kind === "error") {
            assert.notEqual(event.cid, cid);
            assert.ok(
              event.reason === "channel-busy" || event.reason === "spurious-continuation" ||
                event.reason === "invalid-length",
            );
          } else if (event.message.cid !== cid) {
            // Only INIT may pass a channel lock, and only as a single packet.
            assert.equal(event.message.cmd, CtapHidCommand.INIT);
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("property: any sequence of random packets never throws and only yields messages of their announced length", () => {
  const smallCid = fc.constantFrom(1, 2, 0, CTAPHID_BROADCAST_CID);
  const packet = fc.oneof(
    fc.uint8Array({ minLength: 64, maxLength: 64 }),
    fc.tuple(smallCid, fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0, max: 0xffff })).map(
      ([c, cmd, length]) => initPacket(c, cmd, length, new Uint8Array(57).fill(7)),
    ),
    fc.tuple(smallCid, fc.integer({ min: 0, max: 0x7f })).map(([c, seq]) => contPacket(c, seq)),
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(packet, fc.nat(5000)), { maxLength: 200 }), (steps) => {
      const clock = new FakeClock();
      const assembler = new MessageAssembler({ clock });
      for (const [bytes, advance] of steps) {
        clock.time += advance;
        for (const event of assembler.push(bytes)) {
          if (event.kind === "message") {
            assert.ok(event.message.payload.length <= CTAPHID_MAX_MESSAGE_SIZE);
            assert.ok(event.message.cmd <= 0x7f);
          } else {
            assert.match(event.detail, /^Cannot /);
          }
        }
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("the INIT response encodes nonce, channel, protocol version, device version and capabilities (§11.2.9.1.3)", () => {
  const response = {
    nonce: Uint8Array.of(8, 7, 6, 5, 4, 3, 2, 1),
    cid: 0xcafe0001,
    protocolVersion: 2,
    version: { major: 5, minor: 4, build: 3 },
    capabilities: 0x0d,
  };
  const bytes = encodeInitResponse(response);
  assert.deepEqual([...bytes], [8, 7, 6, 5, 4, 3, 2, 1, 0xca, 0xfe, 0x00, 0x01, 2, 5, 4, 3, 0x0d]);
  assert.deepEqual(decodeInitResponse(bytes), response);
  assert.throws(() => decodeInitResponse(bytes.subarray(0, 16)), RangeError);
});
