/**
 * The client side of CTAPHID (CTAP 2.1 §11.2): a {@link CtapDevice} that speaks to a FIDO key
 * through any {@link PacketTransport} that moves 64-byte HID reports (hidraw, hidapi, a Unix
 * socket to the software key, a test double).
 *
 * Opening allocates a channel with CTAPHID_INIT on the broadcast channel (§11.2.9.1.3) and
 * refuses CTAP1/U2F-only keys. Each request is one CTAPHID_CBOR transaction (§11.2.9.1.2);
 * KEEPALIVE packets (§11.2.9.1.7) are forwarded to the caller, CTAPHID_ERROR (§11.2.9.1.6)
 * becomes a {@link CtapHidError}, and aborting the caller's signal sends CTAPHID_CANCEL
 * (§11.2.9.1.5) and waits for the key to confirm before rejecting.
 *
 * @example
 * ```ts ignore
 * import { connectUnixPacketTransport } from "./unix_socket.ts";
 * await using key = await CtapHidClient.open(await connectUnixPacketTransport("/run/user/1000/key.sock"));
 * const response = await key.transceive(Uint8Array.of(0x04), { onKeepalive: console.log }); // getInfo
 * ```
 *
 * @module
 */
import { equalBytes, randomBytes } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { CtapCallOptions, CtapDevice, KeepaliveStatus } from "./device.ts";
import {
  CTAPHID_BROADCAST_CID,
  CTAPHID_PACKET_SIZE,
  CtapHidCapability,
  CtapHidCommand,
  ctapHidCommandName,
  CtapHidErrorCode,
  ctapHidErrorName,
  CtapHidKeepaliveStatus,
  decodeInitResponse,
  type DeviceVersion,
  formatCid,
  fragmentMessage,
  type InitResponse,
  MessageAssembler,
  parsePacket,
} from "./hid.ts";

/**
 * What moves HID reports between this process and a key: the only part that differs between
 * hidraw, hidapi, a socket and a test.
 */
export interface PacketTransport {
  /** Sends one 64-byte report. */
  send(packet: Uint8Array): Promise<void>;
  /**
   * Resolves to the next 64-byte report from the key. Aborting `signal` rejects with its reason
   * and consumes no report; closing the transport rejects pending and later calls.
   */
  receive(signal?: AbortSignal): Promise<Uint8Array>;
  /** Releases the device or connection; pending receives reject. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link CtapHidClient.open}. */
export interface CtapHidClientOptions {
  /**
   * Longest silence from the key, in ms, before a request fails. A key sends KEEPALIVE every
   * 100 ms while it works or waits for a touch, so silence means it is gone.
   * @default 5000
   */
  timeoutMs?: number;
  /** Aborts opening (the INIT handshake); it then rejects with {@link CtapHidAbortError}. */
  signal?: AbortSignal;
}

/** The key answered a request with CTAPHID_ERROR: a transport-level refusal, not a CTAP status. */
export class CtapHidError extends ProvisioningError {
  /** The CTAPHID error code (see {@link CtapHidErrorCode}). */
  readonly errorCode: number;
  /** Its spec name, e.g. `CHANNEL_BUSY`, or `UNKNOWN`. */
  readonly errorName: string;

  constructor(command: number, errorCode: number, cid: number) {
    const errorName = ctapHidErrorName(errorCode);
    super(
      `ctaphid-${errorName.toLowerCase().replaceAll("_", "-")}`,
      `Cannot complete CTAPHID ${ctapHidCommandName(command)} on channel ${formatCid(cid)}: ` +
        `the key answered CTAPHID_ERROR 0x${errorCode.toString(16).padStart(2, "0")} - ${errorName}`,
      errorCode === CtapHidErrorCode.CHANNEL_BUSY
        ? {
          hint: "Another program is using the security key; close it (a browser tab, another tool) and retry",
        }
        : {},
    );
    this.errorCode = errorCode;
    this.errorName = errorName;
  }
}

/**
 * The caller aborted a request; the key confirmed the cancellation (or stopped answering). Its
 * `name` is `AbortError` so that code which checks for aborts recognises it; `reason` (and
 * `cause`) is the signal's reason.
 */
export class CtapHidAbortError extends ProvisioningError {
  /** The abort reason the caller's signal carried. */
  readonly reason: unknown;

  constructor(command: number, reason: unknown) {
    super(
      "ctap-request-aborted",
      `Cannot complete CTAPHID ${ctapHidCommandName(command)}: the request was aborted` +
        (reason instanceof Error && reason.message ? ` (${reason.message})` : ""),
      { cause: reason },
    );
    this.name = "AbortError";
    this.reason = reason;
  }
}

const keepaliveStatuses = new Map<number, KeepaliveStatus>([
  [CtapHidKeepaliveStatus.PROCESSING, "processing"],
  [CtapHidKeepaliveStatus.UPNEEDED, "user-presence-needed"],
]);

/** Marks a receive that ran out of time, to tell it apart from the caller's abort. */
class ReceiveTimeout extends Error {}

/**
 * Receives one packet, failing with a "ctaphid-timeout" ProvisioningError after `ms` and with
 * the reason of `signal` when it aborts.
 */
async function receiveWithin(
  transport: PacketTransport,
  command: number,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  const timer = new AbortController();
  const handle = setTimeout(() => timer.abort(new ReceiveTimeout()), ms);
  try {
    const packet = await transport.receive(signal ? AbortSignal.any([signal, timer.signal]) : timer.signal);
    if (packet.length !== CTAPHID_PACKET_SIZE) {
      throw new ProvisioningError(
        "ctaphid-protocol",
        `Cannot read CTAPHID ${ctapHidCommandName(command)} response: the transport delivered ` +
          `${packet.length} bytes, expected ${CTAPHID_PACKET_SIZE}`,
      );
    }
    return packet;
  } catch (error) {
    if (error instanceof ReceiveTimeout) {
      throw new ProvisioningError(
        "ctaphid-timeout",
        `Cannot complete CTAPHID ${ctapHidCommandName(command)}: the key sent nothing for ${ms} ms`,
        { hint: "Check that the security key is still plugged in" },
      );
    }
    throw error;
  } finally {
    clearTimeout(handle);
  }
}

/**
 * Runs a CTAPHID_INIT exchange on `cid`: sends the nonce and skips every packet until the INIT
 * response that echoes it (other programs may be doing the same on the broadcast channel).
 */
async function handshake(
  transport: PacketTransport,
  cid: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<InitResponse> {
  const nonce = randomBytes(8);
  for (const packet of fragmentMessage(cid, CtapHidCommand.INIT, nonce)) await transport.send(packet);
  const deadline = performance.now() + timeoutMs;
  const assembler = new MessageAssembler({ timeoutMs });
  for (;;) {
    const left = Math.max(1, Math.ceil(deadline - performance.now()));
    const packet = await receiveWithin(transport, CtapHidCommand.INIT, left, signal);
    if (parsePacket(packet).cid !== cid) continue;
    for (const event of assembler.push(packet)) {
      if (event.kind === "error") continue;
      const { cmd, payload } = event.message;
      if (cmd === CtapHidCommand.ERROR) {
        throw new CtapHidError(CtapHidCommand.INIT, payload[0] ?? CtapHidErrorCode.OTHER, cid);
      }
      if (cmd !== CtapHidCommand.INIT || payload.length < 8 || !equalBytes(payload.subarray(0, 8), nonce)) {
        continue;
      }
      try {
        return decodeInitResponse(payload);
      } catch (error) {
        throw new ProvisioningError(
          "ctaphid-protocol",
          `Cannot open security key: its CTAPHID INIT response is ${payload.length} bytes, expected 17`,
          { cause: error },
        );
      }
    }
  }
}

/** See the module documentation. */
export class CtapHidClient implements CtapDevice, AsyncDisposable {
  readonly #transport: PacketTransport;
  readonly #timeoutMs: number;
  readonly #info: InitResponse;
  readonly #closing = new AbortController();
  #tail: Promise<unknown> = Promise.resolve();
  #needsResync = false;

  private constructor(transport: PacketTransport, info: InitResponse, timeoutMs: number) {
    this.#transport = transport;
    this.#info = info;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Allocates a channel on the key behind `transport` and returns a client for it. The client
   * owns the transport from then on; if opening fails, the transport is closed.
   *
   * @throws {ProvisioningError} `ctap1-only-device` for a CTAP1/U2F-only key,
   * `ctaphid-timeout` when the key does not answer, `ctaphid-protocol` for a malformed answer.
   */
  static async open(transport: PacketTransport, options: CtapHidClientOptions = {}): Promise<CtapHidClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    try {
      options.signal?.throwIfAborted();
      const info = await handshake(transport, CTAPHID_BROADCAST_CID, timeoutMs, options.signal);
      if ((info.capabilities & CtapHidCapability.CBOR) === 0) {
        throw new ProvisioningError(
          "ctap1-only-device",
          `Cannot use this security key: it speaks only CTAP1/U2F (its CTAPHID capabilities ` +
            `0x${info.capabilities.toString(16).padStart(2, "0")} lack CBOR)`,
          { hint: "This tool needs a FIDO2 (CTAP2) security key; use a FIDO2-certified key" },
        );
      }
      if (info.cid === 0 || info.cid === CTAPHID_BROADCAST_CID) {
        throw new ProvisioningError(
          "ctaphid-protocol",
          `Cannot open security key: it allocated the reserved channel ${formatCid(info.cid)}`,
        );
      }
      return new CtapHidClient(transport, info, timeoutMs);
    } catch (error) {
      await transport.close();
      if (options.signal?.aborted) throw new CtapHidAbortError(CtapHidCommand.INIT, options.signal.reason);
      throw error;
    }
  }

  /** The channel the key allocated to this client. */
  get cid(): number {
    return this.#info.cid;
  }

  /** The CTAPHID protocol version the key reported (2 for CTAP2 keys). */
  get protocolVersion(): number {
    return this.#info.protocolVersion;
  }

  /** The key's firmware version, as reported by INIT. */
  get version(): DeviceVersion {
    return this.#info.version;
  }

  /** The key's {@link CtapHidCapability} flags. */
  get capabilities(): number {
    return this.#info.capabilities;
  }

  /** Sends one CTAP2 request as CTAPHID_CBOR and resolves to the response (status byte + CBOR). */
  transceive(request: Uint8Array, options: CtapCallOptions = {}): Promise<Uint8Array> {
    return this.#exclusive(() => this.#exchange(CtapHidCommand.CBOR, request, options));
  }

  /** Sends CTAPHID_PING and checks that the key echoes `data`; a transport health check. */
  ping(data: Uint8Array, options: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
    return this.#exclusive(async () => {
      const echo = await this.#exchange(CtapHidCommand.PING, data, options);
      if (!equalBytes(echo, data)) {
        this.#needsResync = true;
        throw new ProvisioningError(
          "ctaphid-protocol",
          `Cannot complete CTAPHID PING: the key echoed ${echo.length} bytes that differ from the ${data.length} sent`,
        );
      }
      return echo;
    });
  }

  /** Sends CTAPHID_WINK so the operator can tell which key is in use. */
  wink(options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#exclusive(async () => {
      await this.#exchange(CtapHidCommand.WINK, new Uint8Array(), options);
    });
  }

  /** Closes the transport; a request in progress rejects. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closing.signal.aborted) {
      this.#closing.abort(
        new ProvisioningError("ctaphid-closed", "Cannot complete CTAPHID request: the client was closed"),
      );
      await this.#transport.close();
    }
    await this.#tail;
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Runs transactions one at a time, in call order. */
  #exclusive<T>(run: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(run);
    this.#tail = result.catch(() => {});
    return result;
  }

  #assertOpen(command: number): void {
    if (this.#closing.signal.aborted) {
      throw new ProvisioningError(
        "ctaphid-closed",
        `Cannot send CTAPHID ${ctapHidCommandName(command)}: the client is closed`,
      );
    }
  }

  /** Receives one packet, or fails on timeout, on `signal`, or because the client closed. */
  #receive(command: number, signal: AbortSignal | undefined): Promise<Uint8Array> {
    const closing = this.#closing.signal;
    return receiveWithin(
      this.#transport,
      command,
      this.#timeoutMs,
      signal ? AbortSignal.any([signal, closing]) : closing,
    );
  }

  async #exchange(command: number, payload: Uint8Array, options: CtapCallOptions): Promise<Uint8Array> {
    const { signal, onKeepalive } = options;
    this.#assertOpen(command);
    if (signal?.aborted) throw new CtapHidAbortError(command, signal.reason);
    if (this.#needsResync) await this.#resync();
    const cid = this.cid;
    for (const packet of fragmentMessage(cid, command, payload)) await this.#transport.send(packet);

    const assembler = new MessageAssembler({ timeoutMs: this.#timeoutMs });
    let cancelled = false;
    for (;;) {
      let packet: Uint8Array;
      try {
        packet = await this.#receive(command, cancelled ? undefined : signal);
      } catch (error) {
        if (signal?.aborted && !this.#closing.signal.aborted) {
          if (cancelled || command !== CtapHidCommand.CBOR) {
            // No confirmation came (or none exists for this command): the channel may still
            // deliver a late answer, so resynchronise before the next request.
            this.#needsResync = true;
            throw new CtapHidAbortError(command, signal.reason);
          }
          cancelled = true;
          await this.#transport.send(fragmentMessage(cid, CtapHidCommand.CANCEL, new Uint8Array())[0]!);
          continue;
        }
        this.#needsResync = true;
        throw error;
      }
      const header = parsePacket(packet);
      if (header.cid !== cid) continue;
      if (header.kind === "init" && header.cmd === CtapHidCommand.KEEPALIVE) {
        const status = keepaliveStatuses.get(header.data[0]!);
        if (status !== undefined && !cancelled) onKeepalive?.(status);
        continue;
      }
      for (const event of assembler.push(packet)) {
        if (event.kind === "error") {
          if (event.reason === "spurious-continuation") continue;
          this.#needsResync = true;
          throw new ProvisioningError(
            "ctaphid-protocol",
            `Cannot read CTAPHID ${ctapHidCommandName(command)} response: ${event.detail}`,
          );
        }
        const message = event.message;
        if (cancelled) throw new CtapHidAbortError(command, signal?.reason);
        if (message.cmd === CtapHidCommand.ERROR) {
          throw new CtapHidError(command, message.payload[0] ?? CtapHidErrorCode.OTHER, cid);
        }
        if (message.cmd !== command) {
          this.#needsResync = true;
          throw new ProvisioningError(
            "ctaphid-protocol",
            `Cannot read CTAPHID ${ctapHidCommandName(command)} response: the key answered ` +
              `${ctapHidCommandName(message.cmd)} on channel ${formatCid(cid)}`,
          );
        }
        return message.payload;
      }
    }
  }

  /**
   * Re-runs INIT on our own channel after a transaction ended without its answer, so that a late
   * answer cannot be taken for the next request's (§11.2.9.1.3 resynchronisation).
   */
  async #resync(): Promise<void> {
    const info = await handshake(this.#transport, this.cid, this.#timeoutMs, this.#closing.signal);
    if (info.cid !== this.cid) {
      throw new ProvisioningError(
        "ctaphid-protocol",
        `Cannot resynchronise CTAPHID channel ${formatCid(this.cid)}: the key answered with channel ${
          formatCid(info.cid)
        }`,
      );
    }
    this.#needsResync = false;
  }
}
