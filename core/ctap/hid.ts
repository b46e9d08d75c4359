/**
 * CTAPHID framing, the USB HID transport of CTAP 2.1 §11.2
 * (https://fidoalliance.org/specs/fido-v2.1-ps-20210615/fido-client-to-authenticator-protocol-v2.1-ps-20210615.html#usb):
 * the constants of §11.2.4 (packets) and §11.2.9 (commands, errors, capabilities), splitting a
 * message into 64-byte packets and reassembling packets into messages.
 *
 * Everything here is a pure function of packets in, packets out; the device and client sides
 * (`hid_device.ts`, `hid_client.ts`) and the transports that move packets are built on it.
 *
 * @example
 * ```ts
 * import { CtapHidCommand, fragmentMessage, MessageAssembler } from "./hid.ts";
 * const packets = fragmentMessage(0x01020304, CtapHidCommand.PING, new Uint8Array(100));
 * const assembler = new MessageAssembler();
 * const events = packets.flatMap((packet) => assembler.push(packet));
 * console.assert(packets.length === 2 && events.length === 1 && events[0]?.kind === "message");
 * ```
 *
 * @module
 */

/** Size of every HID report a FIDO key exchanges (§11.2.4; full-speed USB maximum). */
export const CTAPHID_PACKET_SIZE = 64;

/** The error a transport's `send` rejects with when `packet` is not one 64-byte report; else undefined. */
export function wrongPacketSize(packet: Uint8Array): RangeError | undefined {
  return packet.length === CTAPHID_PACKET_SIZE ? undefined : new RangeError(
    `Cannot send CTAPHID packet: it is ${packet.length} bytes, expected ${CTAPHID_PACKET_SIZE}`,
  );
}
/** Bytes of message data in an initialization packet: 64 minus CID(4), CMD(1), BCNT(2). */
export const CTAPHID_INIT_DATA_SIZE = CTAPHID_PACKET_SIZE - 7;
/** Bytes of message data in a continuation packet: 64 minus CID(4), SEQ(1). */
export const CTAPHID_CONT_DATA_SIZE = CTAPHID_PACKET_SIZE - 5;
/** Largest message payload: one initialization packet and 128 continuation packets (7609). */
export const CTAPHID_MAX_MESSAGE_SIZE = CTAPHID_INIT_DATA_SIZE + 128 * CTAPHID_CONT_DATA_SIZE;
/** The channel every client uses to ask for a channel of its own with CTAPHID_INIT (§11.2.9.1.3). */
export const CTAPHID_BROADCAST_CID = 0xffffffff;
/** The CTAPHID protocol version a CTAP2 device reports in its INIT response. */
export const CTAPHID_PROTOCOL_VERSION = 2;
/** Bit 7 of the fifth byte: set in an initialization packet, clear in a continuation packet. */
export const CTAPHID_INIT_PACKET_BIT = 0x80;

/** CTAPHID command codes (§11.2.9), without the initialization-packet bit. */
export const CtapHidCommand = {
  PING: 0x01,
  MSG: 0x03,
  LOCK: 0x04,
  INIT: 0x06,
  WINK: 0x08,
  CBOR: 0x10,
  CANCEL: 0x11,
  KEEPALIVE: 0x3b,
  ERROR: 0x3f,
} as const;

/** Error codes carried by a CTAPHID_ERROR response (§11.2.9.1.6). */
export const CtapHidErrorCode = {
  INVALID_CMD: 0x01,
  INVALID_PAR: 0x02,
  INVALID_LEN: 0x03,
  INVALID_SEQ: 0x04,
  MSG_TIMEOUT: 0x05,
  CHANNEL_BUSY: 0x06,
  LOCK_REQUIRED: 0x0a,
  INVALID_CHANNEL: 0x0b,
  OTHER: 0x7f,
} as const;

/** Capability flags of the INIT response (§11.2.9.1.3). */
export const CtapHidCapability = {
  /** The device implements CTAPHID_WINK. */
  WINK: 0x01,
  /** The device implements CTAPHID_CBOR, i.e. it is a CTAP2 authenticator. */
  CBOR: 0x04,
  /** The device does NOT implement CTAPHID_MSG (no CTAP1/U2F). */
  NMSG: 0x08,
} as const;

/** Status byte of a CTAPHID_KEEPALIVE (§11.2.9.1.7). */
export const CtapHidKeepaliveStatus = {
  /** The authenticator is still processing the current request. */
  PROCESSING: 1,
  /** The authenticator is waiting for user presence (a touch). */
  UPNEEDED: 2,
} as const;

const commandNames = new Map<number, string>(
  Object.entries(CtapHidCommand).map(([name, code]) => [code, name]),
);
const errorNames = new Map<number, string>(
  Object.entries(CtapHidErrorCode).map(([name, code]) => [code, name]),
);

/** The spec name of a command (`"CBOR"`), or its hex value when the spec does not name it. */
export function ctapHidCommandName(cmd: number): string {
  return commandNames.get(cmd) ?? `0x${cmd.toString(16).padStart(2, "0")}`;
}

/** The spec name of a CTAPHID error code (`"CHANNEL_BUSY"`), or `UNKNOWN` for others. */
export function ctapHidErrorName(code: number): string {
  return errorNames.get(code) ?? "UNKNOWN";
}

/** Renders a channel id as the spec writes it, for messages: `0x0000002a`. */
export function formatCid(cid: number): string {
  return `0x${cid.toString(16).padStart(8, "0")}`;
}

/** A packet split into its header fields (§11.2.4), so callers never index raw bytes. */
export type HidPacket =
  | {
    readonly kind: "init";
    readonly cid: number;
    /** Command without the initialization-packet bit. */
    readonly cmd: number;
    /** Total payload length announced for the whole message (BCNT). */
    readonly length: number;
    /** The 57 data bytes, padding included. */
    readonly data: Uint8Array;
  }
  | {
    readonly kind: "cont";
    readonly cid: number;
    readonly seq: number;
    /** The 59 data bytes, padding included. */
    readonly data: Uint8Array;
  };

/**
 * Splits a 64-byte packet into its header fields.
 *
 * @throws {RangeError} when the packet is not exactly 64 bytes.
 */
export function parsePacket(packet: Uint8Array): HidPacket {
  if (packet.length !== CTAPHID_PACKET_SIZE) {
    throw new RangeError(
      `Cannot parse CTAPHID packet: it is ${packet.length} bytes, expected ${CTAPHID_PACKET_SIZE}`,
    );
  }
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const cid = view.getUint32(0);
  const type = packet[4]!;
  if (type & CTAPHID_INIT_PACKET_BIT) {
    return {
      kind: "init",
      cid,
      cmd: type & ~CTAPHID_INIT_PACKET_BIT,
      length: view.getUint16(5),
      data: packet.subarray(7),
    };
  }
  return { kind: "cont", cid, seq: type, data: packet.subarray(5) };
}

function checkCid(cid: number): void {
  if (!Number.isInteger(cid) || cid < 0 || cid > 0xffffffff) {
    throw new RangeError(`Cannot frame CTAPHID message: channel id ${cid} is not a 32-bit unsigned integer`);
  }
}

/**
 * Splits a message into one initialization packet and as many continuation packets as needed,
 * each exactly 64 bytes, zero padded (§11.2.4).
 *
 * @param cmd the command without the initialization-packet bit (0x00..0x7f).
 * @throws {RangeError} when the payload exceeds 7609 bytes, or cid/cmd are out of range.
 */
export function fragmentMessage(cid: number, cmd: number, payload: Uint8Array): Uint8Array<ArrayBuffer>[] {
  checkCid(cid);
  if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0x7f) {
    throw new RangeError(`Cannot frame CTAPHID message: command ${cmd} is not in 0x00..0x7f`);
  }
  if (payload.length > CTAPHID_MAX_MESSAGE_SIZE) {
    throw new RangeError(
      `Cannot frame CTAPHID ${ctapHidCommandName(cmd)} message: payload is ${payload.length} bytes, ` +
        `the maximum is ${CTAPHID_MAX_MESSAGE_SIZE}`,
    );
  }
  const packets: Uint8Array<ArrayBuffer>[] = [];
  const first = new Uint8Array(CTAPHID_PACKET_SIZE);
  const firstView = new DataView(first.buffer);
  firstView.setUint32(0, cid);
  first[4] = cmd | CTAPHID_INIT_PACKET_BIT;
  firstView.setUint16(5, payload.length);
  first.set(payload.subarray(0, CTAPHID_INIT_DATA_SIZE), 7);
  packets.push(first);
  let offset = CTAPHID_INIT_DATA_SIZE;
  for (let seq = 0; offset < payload.length; seq++) {
    const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
    new DataView(packet.buffer).setUint32(0, cid);
    packet[4] = seq;
    packet.set(payload.subarray(offset, offset + CTAPHID_CONT_DATA_SIZE), 5);
    packets.push(packet);
    offset += CTAPHID_CONT_DATA_SIZE;
  }
  return packets;
}

/** A complete CTAPHID message: what one side sends the other on one channel. */
export interface HidMessage {
  readonly cid: number;
  /** Command without the initialization-packet bit. */
  readonly cmd: number;
  readonly payload: Uint8Array;
}

/** Why a packet could not become (part of) a message. */
export type FramingErrorReason =
  /** A continuation packet with the wrong sequence number, or a new message started mid-message. */
  | "invalid-seq"
  /** The announced length exceeds {@link CTAPHID_MAX_MESSAGE_SIZE}. */
  | "invalid-length"
  /** A message started on another channel while one was being received. */
  | "channel-busy"
  /** The rest of a message did not arrive within the transaction timeout. */
  | "message-timeout"
  /** A continuation packet with no message in progress on its channel; the spec says to ignore it. */
  | "spurious-continuation";

/**
 * A packet that the assembler refused: an expected outcome of hostile or broken peers, reported
 * as a value rather than thrown.
 */
export interface FramingError {
  readonly kind: "error";
  /** The channel the offending packet (or the timed-out message) belongs to. */
  readonly cid: number;
  readonly reason: FramingErrorReason;
  /** The CTAPHID_ERROR code a device answers with, or `undefined` when it must stay silent. */
  readonly errorCode: number | undefined;
  /** What happened, for logs: "Cannot ...: ...". */
  readonly detail: string;
}

/** One outcome of {@link MessageAssembler.push}. */
export type AssemblyEvent = { readonly kind: "message"; readonly message: HidMessage } | FramingError;

/** A time source in milliseconds; injected so that timeouts can be tested without waiting. */
export interface Clock {
  now(): number;
}

/** The clock of the running process (monotonic). */
export const systemClock: Clock = { now: () => performance.now() };

/** Options of {@link MessageAssembler}. */
export interface MessageAssemblerOptions {
  /** @default systemClock */
  clock?: Clock;
  /** Longest gap allowed between two packets of one message, in ms. @default 3000 */
  timeoutMs?: number;
}

interface PartialMessage {
  readonly cid: number;
  readonly cmd: number;
  readonly payload: Uint8Array;
  filled: number;
  nextSeq: number;
  lastPacketAt: number;
}

const errorCodeByReason: Record<FramingErrorReason, number | undefined> = {
  "invalid-seq": CtapHidErrorCode.INVALID_SEQ,
  "invalid-length": CtapHidErrorCode.INVALID_LEN,
  "channel-busy": CtapHidErrorCode.CHANNEL_BUSY,
  "message-timeout": CtapHidErrorCode.MSG_TIMEOUT,
  "spurious-continuation": undefined,
};

function framingError(cid: number, reason: FramingErrorReason, detail: string): FramingError {
  return { kind: "error", cid, reason, errorCode: errorCodeByReason[reason], detail };
}

/**
 * Reassembles packets into messages, one message at a time as a CTAPHID device does (§11.2.5:
 * a transaction locks the device to its channel until the message is complete).
 *
 * Rules: an initialization packet on another channel while a message is in progress is refused
 * as `channel-busy`, except a single-packet CTAPHID_INIT, which is let through, and INIT on the
 * channel in progress, which abandons that message (resynchronisation, §11.2.9.1.3); a continuation packet must
 * carry the next sequence number; a continuation packet with nothing in progress on its channel is
 * `spurious-continuation` (to be ignored); a message whose packets stop arriving for longer than
 * the timeout is dropped with `message-timeout`.
 */
export class MessageAssembler {
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  #partial: PartialMessage | undefined;

  constructor(options: MessageAssemblerOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#timeoutMs = options.timeoutMs ?? 3000;
  }

  /** The channel of the message being received, if any. */
  get pendingCid(): number | undefined {
    return this.#partial?.cid;
  }

  /** When the message in progress times out (clock time), if one is in progress. */
  get deadline(): number | undefined {
    return this.#partial === undefined ? undefined : this.#partial.lastPacketAt + this.#timeoutMs;
  }

  /** Drops the message in progress (on its channel only, when `cid` is given). */
  reset(cid?: number): void {
    if (cid === undefined || this.#partial?.cid === cid) this.#partial = undefined;
  }

  /**
   * Drops the message in progress if its timeout has passed, and reports it; a device calls this
   * from a timer so that a stalled sender hears ERR_MSG_TIMEOUT without sending another packet.
   */
  expire(): FramingError | undefined {
    const partial = this.#partial;
    if (partial === undefined || this.#clock.now() - partial.lastPacketAt <= this.#timeoutMs) {
      return undefined;
    }
    this.#partial = undefined;
    return framingError(
      partial.cid,
      "message-timeout",
      `Cannot receive CTAPHID ${ctapHidCommandName(partial.cmd)} message on channel ${
        formatCid(partial.cid)
      }: ` +
        `no packet for more than ${this.#timeoutMs} ms (${partial.filled} of ${partial.payload.length} bytes received)`,
    );
  }

  /**
   * Takes one 64-byte packet. Returns the events it caused, in order: usually none (more packets
   * needed) or one; two when a timed-out message is reported before the packet's own outcome.
   *
   * @throws {RangeError} when the packet is not exactly 64 bytes.
   */
  push(packet: Uint8Array): AssemblyEvent[] {
    const parsed = parsePacket(packet);
    const events: AssemblyEvent[] = [];
    const expired = this.expire();
    if (expired) events.push(expired);
    const event = parsed.kind === "init" ? this.#pushInit(parsed) : this.#pushCont(parsed);
    if (event) events.push(event);
    return events;
  }

  #pushInit(packet: Extract<HidPacket, { kind: "init" }>): AssemblyEvent | undefined {
    const { cid, cmd, length } = packet;
    const partial = this.#partial;
    const name = ctapHidCommandName(cmd);
    if (length > CTAPHID_MAX_MESSAGE_SIZE) {
      if (partial?.cid === cid) this.#partial = undefined;
      return framingError(
        cid,
        "invalid-length",
        `Cannot receive CTAPHID ${name} message on channel ${formatCid(cid)}: ` +
          `announced length ${length} exceeds ${CTAPHID_MAX_MESSAGE_SIZE}`,
      );
    }
    if (partial !== undefined) {
      if (cmd === CtapHidCommand.INIT && (partial.cid === cid || length <= CTAPHID_INIT_DATA_SIZE)) {
        // Resynchronisation on the channel in progress abandons its message; a (single-packet)
        // INIT on another channel, typically broadcast, is answered without disturbing it.
        if (partial.cid === cid) this.#partial = undefined;
      } else if (partial.cid === cid) {
        this.#partial = undefined;
        return framingError(
          cid,
          "invalid-seq",
          `Cannot receive CTAPHID ${ctapHidCommandName(partial.cmd)} message on channel ${formatCid(cid)}: ` +
            `a new ${name} message started after ${partial.filled} of ${partial.payload.length} bytes`,
        );
      } else {
        return framingError(
          cid,
          "channel-busy",
          `Cannot receive CTAPHID ${name} message on channel ${formatCid(cid)}: ` +
            `channel ${formatCid(partial.cid)} is sending a message`,
        );
      }
    }
    if (length <= CTAPHID_INIT_DATA_SIZE) {
      return { kind: "message", message: { cid, cmd, payload: packet.data.slice(0, length) } };
    }
    const payload = new Uint8Array(length);
    payload.set(packet.data);
    this.#partial = {
      cid,
      cmd,
      payload,
      filled: CTAPHID_INIT_DATA_SIZE,
      nextSeq: 0,
      lastPacketAt: this.#clock.now(),
    };
    return undefined;
  }

  #pushCont(packet: Extract<HidPacket, { kind: "cont" }>): AssemblyEvent | undefined {
    const { cid, seq } = packet;
    const partial = this.#partial;
    if (partial === undefined || partial.cid !== cid) {
      return framingError(
        cid,
        "spurious-continuation",
        `Cannot use CTAPHID continuation packet ${seq} on channel ${
          formatCid(cid)
        }: no message is in progress on it`,
      );
    }
    if (seq !== partial.nextSeq) {
      this.#partial = undefined;
      return framingError(
        cid,
        "invalid-seq",
        `Cannot receive CTAPHID ${ctapHidCommandName(partial.cmd)} message on channel ${formatCid(cid)}: ` +
          `continuation packet ${seq} arrived, expected ${partial.nextSeq}`,
      );
    }
    const take = Math.min(CTAPHID_CONT_DATA_SIZE, partial.payload.length - partial.filled);
    partial.payload.set(packet.data.subarray(0, take), partial.filled);
    partial.filled += take;
    partial.nextSeq++;
    partial.lastPacketAt = this.#clock.now();
    if (partial.filled < partial.payload.length) return undefined;
    this.#partial = undefined;
    return { kind: "message", message: { cid, cmd: partial.cmd, payload: partial.payload } };
  }
}

/** What a device says about itself in its INIT response (§11.2.9.1.3). */
export interface InitResponse {
  /** The 8-byte nonce the client sent, echoed so it can recognise its own answer. */
  readonly nonce: Uint8Array;
  /** The channel allocated to the client (or confirmed, on resynchronisation). */
  readonly cid: number;
  /** CTAPHID protocol version; 2 for every CTAP2 device. */
  readonly protocolVersion: number;
  readonly version: DeviceVersion;
  /** {@link CtapHidCapability} flags. */
  readonly capabilities: number;
}

/** A device's firmware version, as its INIT response reports it. */
export interface DeviceVersion {
  readonly major: number;
  readonly minor: number;
  readonly build: number;
}

/** Length of an INIT response payload: nonce(8), CID(4), version(1), major, minor, build, capabilities. */
export const CTAPHID_INIT_RESPONSE_SIZE = 17;

/** Encodes an INIT response payload (device side). */
export function encodeInitResponse(response: InitResponse): Uint8Array<ArrayBuffer> {
  if (response.nonce.length !== 8) {
    throw new RangeError(
      `Cannot encode CTAPHID INIT response: nonce is ${response.nonce.length} bytes, expected 8`,
    );
  }
  checkCid(response.cid);
  const out = new Uint8Array(CTAPHID_INIT_RESPONSE_SIZE);
  out.set(response.nonce, 0);
  new DataView(out.buffer).setUint32(8, response.cid);
  out[12] = response.protocolVersion;
  out[13] = response.version.major;
  out[14] = response.version.minor;
  out[15] = response.version.build;
  out[16] = response.capabilities;
  return out;
}

/**
 * Decodes an INIT response payload (client side). Extra bytes are ignored, as the spec allows.
 *
 * @throws {RangeError} when the payload is shorter than 17 bytes.
 */
export function decodeInitResponse(payload: Uint8Array): InitResponse {
  if (payload.length < CTAPHID_INIT_RESPONSE_SIZE) {
    throw new RangeError(
      `Cannot decode CTAPHID INIT response: it is ${payload.length} bytes, expected at least ${CTAPHID_INIT_RESPONSE_SIZE}`,
    );
  }
  return {
    nonce: payload.slice(0, 8),
    cid: new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getUint32(8),
    protocolVersion: payload[12]!,
    version: { major: payload[13]!, minor: payload[14]!, build: payload[15]! },
    capabilities: payload[16]!,
  };
}
