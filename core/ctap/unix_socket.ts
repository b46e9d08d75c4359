/**
 * CTAPHID over a Unix stream socket: how the software authenticator is reached when it runs as
 * its own process. Each direction carries raw 64-byte HID reports back to back (CTAP 2.1
 * §11.2.4 packets), with no report-id byte and no length prefix, exactly what a UHID or hidraw
 * bridge would forward. Stream reads may split or merge reports, so both ends reassemble exactly
 * 64 bytes before acting.
 *
 * The client end is a {@link PacketTransport} for {@link CtapHidClient}; the server end runs one
 * {@link CtapHidDevice} per connection in front of a shared {@link CtapDevice} handler.
 *
 * Permissions: both ends need `--allow-read --allow-write` on the socket path (Deno's unix
 * socket permission); the server also removes a stale socket file and chmods the new one 0600.
 *
 * @example
 * ```ts ignore
 * await using server = await serveCtapHidOnUnixSocket({ path: "/tmp/key.sock", device: softwareKey });
 * await using client = await CtapHidClient.open(await connectUnixPacketTransport("/tmp/key.sock"));
 * ```
 *
 * @module
 */
import { PacketQueue } from "./packet_queue.ts";
import { ProvisioningError } from "../errors.ts";
import type { CtapDevice } from "./device.ts";
import { CTAPHID_PACKET_SIZE, wrongPacketSize } from "./hid.ts";
import type { PacketTransport } from "./hid_client.ts";
import { CtapHidDevice, type CtapHidDeviceOptions } from "./hid_device.ts";

/**
 * Reads `conn` until it ends, handing every complete 64-byte report to `onPacket`. `beforeRead`
 * runs before each read and may hold it back (backpressure); reading stops when it returns false.
 */
async function readPackets(
  conn: Deno.Conn,
  onPacket: (packet: Uint8Array) => void,
  beforeRead: () => Promise<boolean> | boolean = () => true,
): Promise<void> {
  const chunk = new Uint8Array(16 * CTAPHID_PACKET_SIZE);
  const partial = new Uint8Array(CTAPHID_PACKET_SIZE);
  let filled = 0;
  for (;;) {
    if (!(await beforeRead())) return;
    const n = await conn.read(chunk);
    if (n === null) return;
    let offset = 0;
    while (offset < n) {
      const take = Math.min(CTAPHID_PACKET_SIZE - filled, n - offset);
      partial.set(chunk.subarray(offset, offset + take), filled);
      filled += take;
      offset += take;
      if (filled === CTAPHID_PACKET_SIZE) {
        onPacket(partial.slice());
        filled = 0;
      }
    }
  }
}

/** True for the errors a read or write raises because the connection was closed (by either end). */
function isClosedError(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.NotConnected;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/**
 * Connects to a CTAPHID socket (such as one served by {@link serveCtapHidOnUnixSocket}) and
 * returns it as a {@link PacketTransport}.
 *
 * @throws {ProvisioningError} `socket-unreachable` when nothing listens at `path`.
 */
export async function connectUnixPacketTransport(path: string): Promise<PacketTransport & AsyncDisposable> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (error) {
    throw new ProvisioningError(
      "socket-unreachable",
      `Cannot connect to CTAPHID socket "${path}": ${error instanceof Error ? error.message : String(error)}`,
      { cause: error, hint: "Start the software authenticator that serves this socket, or check the path" },
    );
  }
  const queue = new PacketQueue();
  const closedError = () =>
    new ProvisioningError(
      "ctaphid-closed",
      `Cannot receive from CTAPHID socket "${path}": the connection is closed`,
    );
  const reading = readPackets(conn, (packet) => queue.push(packet)).then(
    () => queue.end(closedError()),
    (error) =>
      queue.end(
        isClosedError(error) ? closedError() : new ProvisioningError(
          "socket-read-failed",
          `Cannot receive from CTAPHID socket "${path}": ${
            error instanceof Error ? error.message : String(error)
          }`,
          { cause: error },
        ),
      ),
  );
  let writing: Promise<void> = Promise.resolve();
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      try {
        conn.close();
      } catch {
        // Already closed by the peer's end of stream.
      }
    }
    await reading;
    await writing.catch(() => {});
  };
  return {
    send(packet) {
      const wrong = wrongPacketSize(packet);
      if (wrong) return Promise.reject(wrong);
      if (closed) {
        return Promise.reject(
          new ProvisioningError(
            "ctaphid-closed",
            `Cannot send to CTAPHID socket "${path}": the connection is closed`,
          ),
        );
      }
      const write = writing.then(() => writeAll(conn, packet)).catch((error: unknown) => {
        throw new ProvisioningError(
          "socket-write-failed",
          `Cannot send to CTAPHID socket "${path}": ${
            error instanceof Error ? error.message : String(error)
          }`,
          { cause: error },
        );
      });
      writing = write.catch(() => {});
      return write;
    },
    receive: (signal) => queue.take(signal),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** How much one connection may make the server hold, and how long it may leave answers unread. */
export interface ConnectionLimits {
  /**
   * Answers (64-byte packets) queued for one client at most. Past half of it the server stops
   * reading that client's requests until it reads its answers; past all of it, the client is dropped.
   * @default 1024 (64 KiB)
   */
  maxQueuedPackets?: number;
  /**
   * How long one write to a client may wait for the client to read before the client is dropped.
   * @default 10000
   */
  stallTimeoutMs?: number;
}

const defaultLimits: Required<ConnectionLimits> = { maxQueuedPackets: 1024, stallTimeoutMs: 10_000 };

/**
 * The answers waiting for one client, written in batches by one loop, bounded: a client that
 * sends without reading fills it, is made to wait (its requests are not read), and is dropped when
 * it still does not read. Closing it discards what is queued: no work for a client that left.
 */
class ConnectionWriter {
  readonly #conn: Deno.Conn;
  readonly #limits: Required<ConnectionLimits>;
  readonly #onDrop: (reason: string) => void;
  #queue: Uint8Array[] = [];
  #writing: Promise<void> | undefined;
  #closed = false;
  #roomWaiters: (() => void)[] = [];

  constructor(conn: Deno.Conn, limits: Required<ConnectionLimits>, onDrop: (reason: string) => void) {
    this.#conn = conn;
    this.#limits = limits;
    this.#onDrop = onDrop;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Queues one packet; drops the client when its queue is full. */
  send(packet: Uint8Array): void {
    if (this.#closed) return;
    if (this.#queue.length >= this.#limits.maxQueuedPackets) {
      this.drop(`it left ${this.#queue.length} answers unread`);
      return;
    }
    this.#queue.push(packet);
    this.#writing ??= this.#run().finally(() => this.#writing = undefined);
  }

  /** Resolves when the queue is at most half full (true), or the connection is closed (false). */
  async room(): Promise<boolean> {
    while (!this.#closed && this.#queue.length > this.#limits.maxQueuedPackets / 2) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
    return !this.#closed;
  }

  /** Closes the connection (its pending read and write fail) and discards the queue. */
  drop(reason: string): void {
    if (this.#closed) return;
    this.close();
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    this.#onDrop(reason);
  }

  /** Discards the queue and stops writing (the client left, or the server closes). */
  close(): void {
    this.#closed = true;
    this.#queue = [];
    this.#wake();
  }

  /** Resolves once the write in progress, if any, has ended. */
  async settled(): Promise<void> {
    await this.#writing;
  }

  #wake(): void {
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const wake of waiters) wake();
  }

  async #run(): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      const batch = this.#queue.splice(0, 64);
      const bytes = new Uint8Array(batch.length * CTAPHID_PACKET_SIZE);
      batch.forEach((packet, i) => bytes.set(packet, i * CTAPHID_PACKET_SIZE));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<"stalled">((resolve) => {
        timer = setTimeout(() => resolve("stalled"), this.#limits.stallTimeoutMs);
      });
      const written = writeAll(this.#conn, bytes).then(() => "written" as const, () => "failed" as const);
      const outcome = await Promise.race([written, stalled]);
      clearTimeout(timer);
      if (outcome === "stalled") {
        this.drop(`it read nothing for ${this.#limits.stallTimeoutMs / 1000} s`);
        await written;
      } else if (outcome === "failed") {
        this.close();
      }
      if (this.#queue.length <= this.#limits.maxQueuedPackets / 2) this.#wake();
    }
    this.#wake();
  }
}

/** Options of {@link serveCtapHidOnUnixSocket}. */
export interface ServeCtapHidOptions {
  /** Where to create the socket. A stale socket there is replaced; anything else is refused. */
  path: string;
  /** The authenticator every connection talks to; it must serialise concurrent requests itself. */
  device: CtapDevice;
  /** Closes the server when aborted. */
  signal?: AbortSignal;
  /** Options for each connection's {@link CtapHidDevice} (clock, keep-alive interval, version). */
  hid?: CtapHidDeviceOptions;
  /** Bounds on what one client may make the server hold. */
  limits?: ConnectionLimits;
  /** Told when a client is dropped for not reading, and why (for the server's log). */
  onClientDropped?: (reason: string) => void;
}

/** A running CTAPHID socket server. */
export interface CtapHidSocketServer extends AsyncDisposable {
  /** The socket path clients connect to. */
  readonly path: string;
  /** Resolves once the server has stopped (by {@link close} or the signal) and its socket file is gone. */
  readonly closed: Promise<void>;
  /** Connections being served now. */
  readonly connections: number;
  /** Stops accepting, ends every connection (aborting its request) and removes the socket file. */
  close(): Promise<void>;
}

/** Removes a socket file nobody listens on any more; refuses to touch anything else. */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new ProvisioningError(
      "socket-path-taken",
      `Cannot serve CTAPHID on "${path}": the path exists and is not a socket`,
      { hint: "Choose another socket path, or remove the file if it is yours" },
    );
  }
  let live = false;
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    live = true;
  } catch {
    // Connection refused: the socket is stale.
  }
  if (live) {
    throw new ProvisioningError(
      "socket-in-use",
      `Cannot serve CTAPHID on "${path}": another process is listening on it`,
      { hint: "Stop the other authenticator, or choose another socket path" },
    );
  }
  await Deno.remove(path);
}

/**
 * Serves one connection until it ends, is dropped, or the server closes it. Whatever ends it, the
 * request in progress is aborted and unsent answers are discarded.
 */
async function serveConnection(
  conn: Deno.Conn,
  handler: CtapDevice,
  options: CtapHidDeviceOptions,
  limits: Required<ConnectionLimits>,
  onDrop: (reason: string) => void,
): Promise<void> {
  const writer = new ConnectionWriter(conn, limits, onDrop);
  const device = new CtapHidDevice(handler, (packet) => writer.send(packet), options);
  try {
    await readPackets(conn, (packet) => device.receive(packet), () => writer.room());
  } catch (error) {
    if (!isClosedError(error) && !writer.closed) throw error;
  } finally {
    writer.close();
    await device.close();
    await writer.settled();
    try {
      conn.close();
    } catch {
      // Already closed by the server shutting down, or dropped.
    }
  }
}

/**
 * Listens on a Unix socket and answers CTAPHID on every connection with `device`. Resolves once
 * the socket is listening.
 *
 * @throws {ProvisioningError} `socket-path-taken` / `socket-in-use` when `path` is not free.
 */
export async function serveCtapHidOnUnixSocket(options: ServeCtapHidOptions): Promise<CtapHidSocketServer> {
  const { path, device, signal } = options;
  signal?.throwIfAborted();
  await removeStaleSocket(path);
  const listener = Deno.listen({ transport: "unix", path });
  try {
    await Deno.chmod(path, 0o600);
  } catch {
    // chmod is not supported on every platform; the socket keeps the umask's permissions.
  }
  const connections = new Map<Deno.Conn, Promise<void>>();
  const limits = { ...defaultLimits, ...options.limits };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const serving = serveConnection(
          conn,
          device,
          options.hid ?? {},
          limits,
          options.onClientDropped ?? (() => {}),
        )
          .catch(() => {
            // A connection that fails ends alone; the server and the other connections go on.
          })
          .finally(() => connections.delete(conn));
        connections.set(conn, serving);
      }
    } catch (error) {
      if (!isClosedError(error)) throw error;
    }
  })().catch(() => {
    // The listener failed: the server stops; `closed` reports it by resolving.
  });

  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => resolveClosed = resolve);
  const close = (): Promise<void> => {
    closing ??= (async () => {
      signal?.removeEventListener("abort", onAbort);
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      await accepting;
      for (const conn of connections.keys()) {
        try {
          conn.close();
        } catch {
          // Already closed by its own end of stream.
        }
      }
      await Promise.all(connections.values());
      try {
        await Deno.remove(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) {
          throw new ProvisioningError(
            "socket-cleanup-failed",
            `Cannot remove CTAPHID socket "${path}": ${
              error instanceof Error ? error.message : String(error)
            }`,
            { cause: error },
          );
        }
      } finally {
        resolveClosed();
      }
    })();
    return closing;
  };
  const onAbort = () => void close().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  return {
    path,
    closed,
    close,
    get connections() {
      return connections.size;
    },
    [Symbol.asyncDispose]: close,
  };
}
