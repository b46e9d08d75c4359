/**
 * The device side of CTAPHID (CTAP 2.1 §11.2): turns the 64-byte packets a client sends into
 * calls of a {@link CtapDevice} handler (the authenticator) and its answers back into packets.
 *
 * It allocates channels (§11.2.9.1.3 CTAPHID_INIT), echoes PING (§11.2.9.1.4), answers WINK
 * (§11.2.9.2.1), runs CBOR requests (§11.2.9.1.2) one at a time while sending KEEPALIVE
 * (§11.2.9.1.7), honours CANCEL (§11.2.9.1.5) and answers every protocol violation with the
 * CTAPHID_ERROR the spec names (§11.2.9.1.6). It does not implement CTAPHID_MSG (CTAP1/U2F) or
 * CTAPHID_LOCK; both are answered with ERR_INVALID_CMD, and INIT says so with the NMSG flag.
 *
 * It moves no bytes itself: packets come in through {@link CtapHidDevice.receive} and go out
 * through the sink it was given, so the same code serves a Unix socket, a UHID device or a test.
 *
 * @example
 * ```ts
 * import { CtapHidDevice } from "./hid_device.ts";
 * import { CTAPHID_BROADCAST_CID, CtapHidCommand, fragmentMessage } from "./hid.ts";
 * const sent: Uint8Array[] = [];
 * const device = new CtapHidDevice({ transceive: () => Promise.resolve(new Uint8Array([0])) }, (p) => sent.push(p));
 * device.receive(fragmentMessage(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, new Uint8Array(8))[0]!);
 * console.assert(sent.length === 1);
 * await device.close();
 * ```
 *
 * @module
 */
import {
  type Clock,
  CTAPHID_BROADCAST_CID,
  CTAPHID_MAX_MESSAGE_SIZE,
  CTAPHID_PACKET_SIZE,
  CTAPHID_PROTOCOL_VERSION,
  CtapHidCapability,
  CtapHidCommand,
  CtapHidErrorCode,
  CtapHidKeepaliveStatus,
  type DeviceVersion,
  encodeInitResponse,
  fragmentMessage,
  type FramingError,
  type HidMessage,
  MessageAssembler,
  parsePacket,
} from "./hid.ts";
import type { CtapDevice, KeepaliveStatus } from "./device.ts";
import { CtapError, CtapStatus } from "./status.ts";

/** A clock that can also schedule, so that keep-alives and timeouts can be driven by a test. */
export interface DeviceClock extends Clock {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** The process's own timers and monotonic clock. */
export const systemDeviceClock: DeviceClock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as number),
};

/**
 * Where the device's outgoing packets go (a socket writer, a test array). It is called
 * synchronously and must not throw; if it does, the device closes itself.
 */
export type PacketSink = (packet: Uint8Array<ArrayBuffer>) => void;

/** Options of {@link CtapHidDevice}. */
export interface CtapHidDeviceOptions {
  /** @default systemDeviceClock */
  clock?: DeviceClock;
  /** Longest gap between two packets of one message before ERR_MSG_TIMEOUT, in ms. @default 3000 */
  transactionTimeoutMs?: number;
  /** Interval between KEEPALIVE packets while a CBOR request runs, in ms. @default 100 */
  keepaliveIntervalMs?: number;
  /** Firmware version reported by INIT. @default { major: 1, minor: 0, build: 0 } */
  version?: DeviceVersion;
  /**
   * Capability flags reported by INIT. NMSG is set because CTAPHID_MSG is not implemented: the
   * flag means "no MSG" (§11.2.9.1.3), so a client never tries CTAP1/U2F on this device.
   * @default CtapHidCapability.CBOR | CtapHidCapability.WINK | CtapHidCapability.NMSG
   */
  capabilities?: number;
  /** Called on CTAPHID_WINK, e.g. to log "the key winks". */
  onWink?: () => void;
}

/** Defaults of {@link CtapHidDeviceOptions}. */
export const ctapHidDeviceDefaults = {
  transactionTimeoutMs: 3000,
  keepaliveIntervalMs: 100,
  version: { major: 1, minor: 0, build: 0 },
  capabilities: CtapHidCapability.CBOR | CtapHidCapability.WINK | CtapHidCapability.NMSG,
} as const satisfies CtapHidDeviceOptions;

/** Channels remembered at most; the oldest idle one is forgotten beyond this. */
const MAX_CHANNELS = 1024;

interface Transaction {
  readonly cid: number;
  readonly controller: AbortController;
  upNeeded: boolean;
  /** The client sent CANCEL: answer CTAP2_ERR_KEEPALIVE_CANCEL whatever the handler returns. */
  cancelled: boolean;
  /** INIT resynchronised the channel or the device closed: send nothing for it. */
  abandoned: boolean;
  keepaliveTimer: unknown;
}

/** See the module documentation. */
export class CtapHidDevice implements AsyncDisposable {
  readonly #handler: CtapDevice;
  readonly #sink: PacketSink;
  readonly #clock: DeviceClock;
  readonly #keepaliveIntervalMs: number;
  readonly #version: DeviceVersion;
  readonly #capabilities: number;
  readonly #onWink: (() => void) | undefined;
  readonly #assembler: MessageAssembler;
  readonly #channels = new Set<number>();
  readonly #running = new Set<Promise<void>>();
  #nextCid = 1;
  #transaction: Transaction | undefined;
  #timeoutTimer: unknown;
  #closed = false;

  constructor(handler: CtapDevice, sink: PacketSink, options: CtapHidDeviceOptions = {}) {
    this.#handler = handler;
    this.#sink = sink;
    this.#clock = options.clock ?? systemDeviceClock;
    this.#keepaliveIntervalMs = options.keepaliveIntervalMs ?? ctapHidDeviceDefaults.keepaliveIntervalMs;
    this.#version = options.version ?? ctapHidDeviceDefaults.version;
    this.#capabilities = options.capabilities ?? ctapHidDeviceDefaults.capabilities;
    this.#onWink = options.onWink;
    this.#assembler = new MessageAssembler({
      clock: this.#clock,
      timeoutMs: options.transactionTimeoutMs ?? ctapHidDeviceDefaults.transactionTimeoutMs,
    });
  }

  /** The channel whose CBOR request is running, if any. */
  get busyCid(): number | undefined {
    return this.#transaction?.cid;
  }

  /**
   * Takes one packet from the client. Replies go to the sink, synchronously for everything but
   * CBOR, whose answer follows when the handler settles. Never throws; a packet that is not 64
   * bytes (not a HID report) is ignored.
   */
  receive(packet: Uint8Array): void {
    if (this.#closed || packet.length !== CTAPHID_PACKET_SIZE) return;
    const header = parsePacket(packet);
    if (header.kind === "init") {
      // CANCEL is never answered (§11.2.9.1.5), not even with CHANNEL_BUSY.
      const pending = this.#assembler.pendingCid;
      if (header.cmd === CtapHidCommand.CANCEL && pending !== undefined && pending !== header.cid) return;
      const refusal = this.#screen(header.cid, header.cmd);
      if (refusal !== undefined) {
        this.#sendError(header.cid, refusal);
        return;
      }
    }
    for (const event of this.#assembler.push(packet)) {
      if (event.kind === "message") this.#dispatch(event.message);
      else this.#onFramingError(event);
    }
    this.#armMessageTimeout();
  }

  /** Aborts the running request, stops every timer and waits for the handler to settle. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#clearMessageTimeout();
      const transaction = this.#transaction;
      if (transaction) this.#abandon(transaction, "the device is closing");
    }
    await Promise.all([...this.#running]);
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The CTAPHID error an initialization packet earns before it is even assembled, if any. */
  #screen(cid: number, cmd: number): number | undefined {
    if (cid === 0) return CtapHidErrorCode.INVALID_CHANNEL;
    if (cid === CTAPHID_BROADCAST_CID) {
      return cmd === CtapHidCommand.INIT ? undefined : CtapHidErrorCode.INVALID_CHANNEL;
    }
    if (!this.#channels.has(cid)) return CtapHidErrorCode.INVALID_CHANNEL;
    if (this.#transaction && cmd !== CtapHidCommand.INIT && cmd !== CtapHidCommand.CANCEL) {
      return CtapHidErrorCode.CHANNEL_BUSY;
    }
    return undefined;
  }

  #onFramingError(error: FramingError): void {
    if (error.errorCode !== undefined) this.#sendError(error.cid, error.errorCode);
  }

  #dispatch({ cid, cmd, payload }: HidMessage): void {
    switch (cmd) {
      case CtapHidCommand.INIT:
        return this.#init(cid, payload);
      case CtapHidCommand.PING:
        return this.#send(cid, CtapHidCommand.PING, payload);
      case CtapHidCommand.WINK:
        try {
          this.#onWink?.();
        } catch {
          // A failing observer must not stop the answer.
        }
        return this.#send(cid, CtapHidCommand.WINK, new Uint8Array());
      case CtapHidCommand.CBOR:
        return this.#cbor(cid, payload);
      case CtapHidCommand.CANCEL: {
        // §11.2.9.1.5: no reply to CANCEL itself; the cancelled request answers KEEPALIVE_CANCEL.
        const transaction = this.#transaction;
        if (transaction?.cid === cid && !transaction.cancelled) {
          transaction.cancelled = true;
          transaction.controller.abort(
            new DOMException("Cannot continue CTAP request: the client sent CTAPHID_CANCEL", "AbortError"),
          );
        }
        return;
      }
      default:
        // MSG (CTAP1/U2F: not implemented, which INIT announces with NMSG), LOCK, unknown commands.
        return this.#sendError(cid, CtapHidErrorCode.INVALID_CMD);
    }
  }

  #init(cid: number, nonce: Uint8Array): void {
    if (nonce.length !== 8) return this.#sendError(cid, CtapHidErrorCode.INVALID_LEN);
    let allocated = cid;
    if (cid === CTAPHID_BROADCAST_CID) {
      allocated = this.#allocateChannel();
    } else {
      // Resynchronisation: abort whatever this channel was doing, keep the channel.
      const transaction = this.#transaction;
      if (transaction?.cid === cid) this.#abandon(transaction, "the client resynchronised the channel");
    }
    this.#send(
      cid,
      CtapHidCommand.INIT,
      encodeInitResponse({
        nonce,
        cid: allocated,
        protocolVersion: CTAPHID_PROTOCOL_VERSION,
        version: this.#version,
        capabilities: this.#capabilities,
      }),
    );
  }

  #allocateChannel(): number {
    let cid = this.#nextCid;
    while (cid === 0 || cid === CTAPHID_BROADCAST_CID || this.#channels.has(cid)) cid = (cid + 1) >>> 0;
    this.#nextCid = (cid + 1) >>> 0;
    this.#channels.add(cid);
    if (this.#channels.size > MAX_CHANNELS) {
      for (const old of this.#channels) {
        if (old !== this.#transaction?.cid && old !== this.#assembler.pendingCid && old !== cid) {
          this.#channels.delete(old);
          break;
        }
      }
    }
    return cid;
  }

  #cbor(cid: number, request: Uint8Array): void {
    if (request.length === 0) return this.#sendError(cid, CtapHidErrorCode.INVALID_LEN);
    if (this.#transaction) return this.#sendError(cid, CtapHidErrorCode.CHANNEL_BUSY);
    const transaction: Transaction = {
      cid,
      controller: new AbortController(),
      upNeeded: false,
      cancelled: false,
      abandoned: false,
      keepaliveTimer: undefined,
    };
    this.#transaction = transaction;
    this.#scheduleKeepalive(transaction);
    const running = this.#run(transaction, request);
    this.#running.add(running);
    void running.finally(() => this.#running.delete(running));
  }

  /** Runs the handler; never rejects. */
  async #run(transaction: Transaction, request: Uint8Array): Promise<void> {
    let response: Uint8Array;
    try {
      const result = await this.#handler.transceive(request, {
        signal: transaction.controller.signal,
        onKeepalive: (status: KeepaliveStatus) => {
          transaction.upNeeded = status === "user-presence-needed";
        },
      });
      response =
        result instanceof Uint8Array && result.length >= 1 && result.length <= CTAPHID_MAX_MESSAGE_SIZE
          ? result
          : Uint8Array.of(CtapStatus.CTAP1_ERR_OTHER);
    } catch (error) {
      response = Uint8Array.of(error instanceof CtapError ? error.status & 0xff : CtapStatus.CTAP1_ERR_OTHER);
    }
    this.#clock.clearTimeout(transaction.keepaliveTimer);
    if (this.#transaction === transaction) this.#transaction = undefined;
    if (transaction.abandoned || this.#closed) return;
    if (transaction.cancelled) response = Uint8Array.of(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
    this.#send(transaction.cid, CtapHidCommand.CBOR, response);
  }

  #scheduleKeepalive(transaction: Transaction): void {
    transaction.keepaliveTimer = this.#clock.setTimeout(() => {
      if (this.#transaction !== transaction || this.#closed) return;
      const status = transaction.upNeeded
        ? CtapHidKeepaliveStatus.UPNEEDED
        : CtapHidKeepaliveStatus.PROCESSING;
      this.#send(transaction.cid, CtapHidCommand.KEEPALIVE, Uint8Array.of(status));
      if (this.#transaction === transaction && !this.#closed) this.#scheduleKeepalive(transaction);
    }, this.#keepaliveIntervalMs);
  }

  #abandon(transaction: Transaction, why: string): void {
    transaction.abandoned = true;
    this.#clock.clearTimeout(transaction.keepaliveTimer);
    transaction.controller.abort(new DOMException(`Cannot continue CTAP request: ${why}`, "AbortError"));
    if (this.#transaction === transaction) this.#transaction = undefined;
  }

  #armMessageTimeout(): void {
    this.#clearMessageTimeout();
    const deadline = this.#assembler.deadline;
    if (deadline === undefined || this.#closed) return;
    this.#timeoutTimer = this.#clock.setTimeout(() => {
      this.#timeoutTimer = undefined;
      if (this.#closed) return;
      const expired = this.#assembler.expire();
      if (expired) this.#onFramingError(expired);
      this.#armMessageTimeout();
    }, Math.max(0, deadline - this.#clock.now()) + 1);
  }

  #clearMessageTimeout(): void {
    if (this.#timeoutTimer !== undefined) this.#clock.clearTimeout(this.#timeoutTimer);
    this.#timeoutTimer = undefined;
  }

  #sendError(cid: number, code: number): void {
    this.#send(cid, CtapHidCommand.ERROR, Uint8Array.of(code));
  }

  #send(cid: number, cmd: number, payload: Uint8Array): void {
    if (this.#closed) return;
    try {
      for (const packet of fragmentMessage(cid, cmd, payload)) this.#sink(packet);
    } catch {
      // A sink that throws means the connection is gone: nothing can be answered any more.
      void this.close();
    }
  }
}
