/**
 * The Linux hidraw transport: a {@link PacketTransport} that only moves 64-byte CTAPHID reports
 * to and from `/dev/hidrawN`. Everything else (channels, keep-alives, cancel) is the
 * {@link CtapHidClient}'s.
 *
 * hidraw semantics (Documentation/hid/hidraw.rst): a write carries the report id in its first
 * byte, 0 for devices without numbered reports, so a CTAPHID packet goes out as 65 bytes; a read
 * returns one input report, with the report id first only when the device numbers its reports.
 *
 * Reads on a device node block a thread until the key sends something, and closing the file does
 * not end a read in flight. So {@link HidrawTransport.close} first asks the key for a CTAPHID_INIT
 * answer on the broadcast channel (harmless: a fresh nonce no client waits for), which ends the
 * pending read, then closes the file.
 *
 * @example
 * ```ts ignore
 * const transport = await openHidrawTransport({ path: "/dev/hidraw3" });
 * await using key = await CtapHidClient.open(transport);
 * ```
 *
 * @module
 */
import { randomBytes } from "../../core/bytes.ts";
import {
  CTAPHID_BROADCAST_CID,
  CTAPHID_PACKET_SIZE,
  CtapHidCommand,
  fragmentMessage,
  wrongPacketSize,
} from "../../core/ctap/hid.ts";
import type { PacketTransport } from "../../core/ctap/hid_client.ts";
import { PacketQueue } from "../../core/ctap/packet_queue.ts";
import { ProvisioningError } from "../../core/errors.ts";

/** The part of `Deno.FsFile` the transport uses; a test passes a stand-in for the device node. */
export interface HidrawFile {
  read(buffer: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<number>;
  close(): void;
}

/** Options of {@link openHidrawTransport}. */
export interface HidrawOptions {
  /** The device node, e.g. `/dev/hidraw3`. */
  path: string;
  /** The report id of the FIDO reports, from the report descriptor; undefined for none. */
  reportId?: number | undefined;
  /** Opens the node. @default Deno.open(path, { read: true, write: true }) */
  open?: (path: string) => Promise<HidrawFile>;
  /** How long close() waits for the pending read to end, in ms. @default 1000 */
  closeWaitMs?: number;
}

/** A hidraw {@link PacketTransport}. */
export interface HidrawTransport extends PacketTransport, AsyncDisposable {
  readonly path: string;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Opens `/dev/hidrawN` and returns it as a packet transport; explains permission problems. */
export async function openHidrawTransport(options: HidrawOptions): Promise<HidrawTransport> {
  const { path } = options;
  const open = options.open ?? ((p: string) => Deno.open(p, { read: true, write: true }));
  let file: HidrawFile;
  try {
    file = await open(path);
  } catch (error) {
    const denied = error instanceof Deno.errors.PermissionDenied;
    const notCapable = error instanceof Deno.errors.NotCapable;
    throw new ProvisioningError(
      denied ? "hidraw-permission-denied" : "hidraw-open-failed",
      `Cannot open security key "${path}": ${describe(error)}`,
      {
        cause: error,
        hint: notCapable
          ? `Run with read and write permission on ${path} (the hid plugin's manifest lists /dev/hidraw*)`
          : denied
          ? "Give your user access to FIDO keys: install the udev rule of your distribution " +
            "(libfido2's 70-u2f.rules) and plug the key in again"
          : "Check that the key is still plugged in",
      },
    );
  }

  const reportId = options.reportId;
  const inputSize = CTAPHID_PACKET_SIZE + (reportId === undefined ? 0 : 1);
  const inbox = new PacketQueue();
  let closed = false;
  const end = (error: Error) => inbox.end(error);

  let readingDone = false;
  const reading = (async () => {
    const buffer = new Uint8Array(inputSize + 1);
    for (;;) {
      let n: number | null;
      try {
        n = await file.read(buffer);
      } catch (error) {
        end(
          closed ? closedError(path) : new ProvisioningError(
            "key-unplugged",
            `Cannot receive from security key "${path}": ${describe(error)}`,
            { cause: error, hint: "The key was unplugged; plug it in again and retry" },
          ),
        );
        return;
      }
      if (closed) {
        end(closedError(path));
        return;
      }
      if (n === null || n === 0) {
        end(
          new ProvisioningError("key-unplugged", `Cannot receive from security key "${path}": it is gone`, {
            hint: "The key was unplugged; plug it in again and retry",
          }),
        );
        return;
      }
      const start = reportId === undefined ? 0 : 1;
      if (reportId !== undefined && buffer[0] !== reportId) continue;
      const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
      packet.set(buffer.subarray(start, Math.min(n, start + CTAPHID_PACKET_SIZE)));
      inbox.push(packet);
    }
  })().finally(() => readingDone = true);

  let writing: Promise<unknown> = Promise.resolve();
  const write = (packet: Uint8Array): Promise<void> => {
    const report = new Uint8Array(CTAPHID_PACKET_SIZE + 1);
    report[0] = reportId ?? 0;
    report.set(packet, 1);
    const next = writing.then(async () => {
      let offset = 0;
      while (offset < report.length) offset += await file.write(report.subarray(offset));
    });
    writing = next.catch(() => {});
    return next;
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      closed = true;
      end(closedError(path));
      if (!readingDone) {
        // Wake the blocked read with an answer the key sends anyway; then let it finish.
        try {
          await write(fragmentMessage(CTAPHID_BROADCAST_CID, CtapHidCommand.INIT, randomBytes(8))[0]!);
        } catch {
          // The key is gone: the read has ended (or will end) with an error.
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          reading,
          new Promise<void>((resolve) => timer = setTimeout(resolve, options.closeWaitMs ?? 1000)),
        ]);
        clearTimeout(timer);
      }
      await writing;
      try {
        file.close();
      } catch {
        // Already closed.
      }
    })();
    return closing;
  };

  return {
    path,
    send(packet) {
      const wrong = wrongPacketSize(packet);
      if (wrong) return Promise.reject(wrong);
      if (closed) return Promise.reject(closedError(path));
      return write(packet).catch((error: unknown) => {
        throw new ProvisioningError(
          "key-unplugged",
          `Cannot send to security key "${path}": ${describe(error)}`,
          { cause: error, hint: "The key was unplugged; plug it in again and retry" },
        );
      });
    },
    receive: (signal) => inbox.take(signal),
    close,
    [Symbol.asyncDispose]: close,
  };
}

function closedError(path: string): ProvisioningError {
  return new ProvisioningError("ctaphid-closed", `Cannot receive from security key "${path}": it is closed`);
}
