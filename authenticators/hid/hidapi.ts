/**
 * FIDO keys through hidapi (github.com/libusb/hidapi), loaded with `Deno.dlopen`: discovery and
 * the 64-byte packet transport on Windows and macOS, where there is no hidraw. On Linux it is used
 * only when asked for (`--device hidapi:PATH`), which is how the tests run it against a stand-in
 * library built from `test/fixtures/hidapi/fake_hidapi.c`.
 *
 * The library is `hidapi.dll` on Windows, `libhidapi.dylib` on macOS (beside the executable, or
 * Homebrew's and MacPorts' folders) and `libhidapi-hidraw.so.0` on Linux; the environment
 * variable {@link hidapiLibraryEnv} names another file. Everything it hands back is checked before
 * use: strings are read with a length limit and decoded strictly, the device list is walked with a
 * limit, and every entry is parsed with zod.
 *
 * Enumeration, open, read, write and close run as `nonblocking` FFI calls on a thread of their
 * own, so a key that takes its time never stalls the event loop. Reads use `hid_read_timeout` with
 * a short timeout in a loop: closing the transport waits for at most one timeout, then calls
 * `hid_close` exactly once. One loaded copy of the library is shared by every user in the process
 * and unloaded (after `hid_exit`) when the last one is done.
 *
 * Permissions: `--allow-ffi` (scoped to the library's path where the path is known), and `env`
 * for {@link hidapiLibraryEnv}.
 *
 * @example
 * ```ts ignore
 * const { devices } = await enumerateHidapiFidoDevices();
 * await using transport = await openHidapiTransport({ path: devices[0]!.path });
 * await using key = await CtapHidClient.open(transport);
 * ```
 *
 * @module
 */
import { z } from "zod";
import { CTAPHID_PACKET_SIZE, wrongPacketSize } from "../../core/ctap/hid.ts";
import type { PacketTransport } from "../../core/ctap/hid_client.ts";
import { PacketQueue } from "../../core/ctap/packet_queue.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type { HidDeviceDescriptor, HidDiscovery, SkippedHidDevice } from "./linux.ts";
import { FIDO_USAGE_CTAPHID, FIDO_USAGE_PAGE } from "./report_descriptor.ts";

/** The environment variable that names the hidapi library file, overriding the search. */
export const hidapiLibraryEnv = "PROVISIONING_HIDAPI_LIBRARY";

/** The hidapi functions this module calls, with the signatures of hidapi.h. */
const hidapiSymbols = {
  /** int hid_init(void) */
  hid_init: { parameters: [], result: "i32" },
  /** int hid_exit(void) */
  hid_exit: { parameters: [], result: "i32" },
  /** const struct hid_api_version *hid_version(void), since 0.10 */
  hid_version: { parameters: [], result: "pointer", optional: true },
  /** struct hid_device_info *hid_enumerate(unsigned short vendor_id, unsigned short product_id) */
  hid_enumerate: { parameters: ["u16", "u16"], result: "pointer", nonblocking: true },
  /** void hid_free_enumeration(struct hid_device_info *devs) */
  hid_free_enumeration: { parameters: ["pointer"], result: "void" },
  /** hid_device *hid_open_path(const char *path) */
  hid_open_path: { parameters: ["buffer"], result: "pointer", nonblocking: true },
  /** int hid_write(hid_device *dev, const unsigned char *data, size_t length) */
  hid_write: { parameters: ["pointer", "buffer", "usize"], result: "i32", nonblocking: true },
  /** int hid_read_timeout(hid_device *dev, unsigned char *data, size_t length, int milliseconds) */
  hid_read_timeout: { parameters: ["pointer", "buffer", "usize", "i32"], result: "i32", nonblocking: true },
  /** void hid_close(hid_device *dev) */
  hid_close: { parameters: ["pointer"], result: "void", nonblocking: true },
  /** const wchar_t *hid_error(hid_device *dev) */
  hid_error: { parameters: ["pointer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type HidapiSymbols = Deno.DynamicLibrary<typeof hidapiSymbols>["symbols"];

/**
 * Byte offsets of `struct hid_device_info` (hidapi.h). Pointers are 8 bytes on every platform
 * Deno runs on, and `unsigned short`/`int`/enum are 2/4/4 bytes on both LP64 (Linux, macOS) and
 * LLP64 (Windows), so one layout serves all three. `busType` exists from hidapi 0.13 on.
 */
export const hidDeviceInfoLayout = {
  path: 0,
  vendorId: 8,
  productId: 10,
  serialNumber: 16,
  releaseNumber: 24,
  manufacturerString: 32,
  productString: 40,
  usagePage: 48,
  usage: 50,
  interfaceNumber: 52,
  next: 56,
  busType: 64,
} as const;

/** hidapi's `hid_bus_type` values (hidapi.h 0.13). */
const hidBusTypes: Readonly<Record<number, HidDeviceDescriptor["bus"]>> = {
  1: "usb",
  2: "bluetooth",
  3: "i2c",
};

/** More entries than any machine has HID interfaces: a longer list is a broken (cyclic) one. */
const MAX_ENTRIES = 4096;
/** Longest string read from the library, in characters (hidapi's own strings are far shorter). */
const MAX_STRING_UNITS = 4096;

/**
 * Where the library is searched when {@link hidapiLibraryEnv} does not name it: beside the
 * executable first (where the release archives put it; an absolute path, so that a scoped
 * `--allow-ffi` can grant it), then where the OS's package managers install it.
 */
export function hidapiLibraryCandidates(
  os: typeof Deno.build.os = Deno.build.os,
  arch: typeof Deno.build.arch = Deno.build.arch,
  executable: string = Deno.execPath(),
): string[] {
  const folder = executable.slice(0, Math.max(executable.lastIndexOf("/"), executable.lastIndexOf("\\")) + 1);
  return [...new Set(candidatesIn(os, arch, folder))];
}

function candidatesIn(os: typeof Deno.build.os, arch: typeof Deno.build.arch, folder: string): string[] {
  switch (os) {
    case "windows":
      // LoadLibrary also looks beside the executable, then in the system folders and PATH.
      return [`${folder}hidapi.dll`, "hidapi.dll"];
    case "darwin":
      return [
        `${folder}libhidapi.dylib`,
        "/opt/homebrew/lib/libhidapi.dylib",
        "/usr/local/lib/libhidapi.dylib",
        "/opt/local/lib/libhidapi.dylib",
        "libhidapi.dylib",
      ];
    case "linux":
      return [
        `/usr/lib/${arch}-linux-gnu/libhidapi-hidraw.so.0`,
        "/usr/lib64/libhidapi-hidraw.so.0",
        "/usr/lib/libhidapi-hidraw.so.0",
        "libhidapi-hidraw.so.0",
      ];
    default:
      return [];
  }
}

function installHint(os: typeof Deno.build.os): string {
  const env =
    `or name the library's full path with --hidapi-library (which sets ${hidapiLibraryEnv} for the program)`;
  switch (os) {
    case "windows":
      return `Put hidapi.dll (the x64 build from github.com/libusb/hidapi/releases) beside provisioning.exe, ${env}`;
    case "darwin":
      return `Install hidapi (\`brew install hidapi\` or \`port install hidapi\`), or put libhidapi.dylib ` +
        `beside the provisioning binary, ${env}`;
    case "linux":
      return `Install hidapi's hidraw library (\`apt-get install libhidapi-hidraw0\`, \`dnf install hidapi\`), ` +
        `${env}; keys at /dev/hidrawN need no hidapi`;
    default:
      return `Name the full path of hidapi's shared library with --hidapi-library (which sets ${hidapiLibraryEnv})`;
  }
}

/** Options every hidapi call takes. */
export interface HidapiOptions {
  /** The library file. @default $PROVISIONING_HIDAPI_LIBRARY, else {@link hidapiLibraryCandidates} */
  library?: string | undefined;
  /** Decides the search and the width of `wchar_t` (2 bytes on Windows, else 4). @default Deno.build.os */
  os?: typeof Deno.build.os;
}

interface LoadedHidapi {
  readonly file: string;
  readonly library: Deno.DynamicLibrary<typeof hidapiSymbols>;
  readonly wcharBytes: 2 | 4;
  /** hidapi ≥ 0.13: `struct hid_device_info` ends with `bus_type`. */
  readonly hasBusType: boolean;
  users: number;
  /** The tail of the library-wide calls (enumerate, open, close), which run one at a time. */
  serial: Promise<unknown>;
}

/** A use of the shared library; {@link release} once. */
interface HidapiLease {
  readonly file: string;
  readonly symbols: HidapiSymbols;
  readonly wcharBytes: 2 | 4;
  readonly hasBusType: boolean;
  /**
   * Runs `call` after every library-wide call queued before it has ended. hidapi is not
   * thread-safe beyond one reader and one writer per device, and each nonblocking FFI call may
   * run on another thread: enumerate, open and close never overlap.
   */
  exclusive<T>(call: () => Promise<T>): Promise<T>;
  release(): void;
}

/** One loaded copy per file and `wchar_t` width, shared by every enumeration and open device. */
const loaded = new Map<string, LoadedHidapi>();

const versionSchema = z.object({
  major: z.number().int().min(0).max(255),
  minor: z.number().int().min(0).max(65535),
  patch: z.number().int().min(0).max(255),
});

function configuredLibrary(options: HidapiOptions): string | undefined {
  if (options.library !== undefined) return options.library || undefined;
  // Read the variable only where it is allowed, without prompting.
  if (Deno.permissions.querySync({ name: "env", variable: hidapiLibraryEnv }).state !== "granted") return;
  return Deno.env.get(hidapiLibraryEnv) || undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function readVersion(symbols: HidapiSymbols): z.infer<typeof versionSchema> | undefined {
  const pointer = symbols.hid_version?.();
  if (!pointer) return undefined;
  const view = new Deno.UnsafePointerView(pointer);
  const parsed = versionSchema.safeParse({
    major: view.getInt32(0),
    minor: view.getInt32(4),
    patch: view.getInt32(8),
  });
  return parsed.success ? parsed.data : undefined;
}

function acquireHidapi(options: HidapiOptions): HidapiLease {
  const os = options.os ?? Deno.build.os;
  const wcharBytes = os === "windows" ? 2 : 4;
  const configured = configuredLibrary(options);
  const candidates = configured ? [configured] : hidapiLibraryCandidates(os);
  const failures: string[] = [];
  const denied: unknown[] = [];
  for (const file of candidates) {
    const key = `${wcharBytes}:${file}`;
    let entry = loaded.get(key);
    if (!entry) {
      let library: Deno.DynamicLibrary<typeof hidapiSymbols>;
      try {
        library = Deno.dlopen(file, hidapiSymbols);
      } catch (error) {
        if (error instanceof Deno.errors.NotCapable) denied.push(error);
        failures.push(`"${file}": ${describe(error)}`);
        continue;
      }
      if (library.symbols.hid_init() !== 0) {
        let reason = "no reason given";
        try {
          reason = readWideString(library.symbols.hid_error(null), wcharBytes) ?? reason;
        } catch {
          // An unreadable reason: keep the generic one.
        }
        library.close();
        throw new ProvisioningError("hidapi-init-failed", `Cannot start hidapi "${file}": ${reason}`, {
          hint: "Check that the library matches this machine (64-bit) and operating system",
        });
      }
      const version = readVersion(library.symbols);
      entry = {
        file,
        library,
        wcharBytes,
        hasBusType: version !== undefined && (version.major > 0 || version.minor >= 13),
        users: 0,
        serial: Promise.resolve(),
      };
      loaded.set(key, entry);
    }
    entry.users++;
    const lease = entry;
    let released = false;
    return {
      file,
      symbols: lease.library.symbols,
      wcharBytes,
      hasBusType: lease.hasBusType,
      exclusive<T>(call: () => Promise<T>): Promise<T> {
        const result = lease.serial.then(call);
        lease.serial = result.catch(() => {});
        return result;
      },
      release() {
        if (released) return;
        released = true;
        if (--lease.users > 0) return;
        loaded.delete(key);
        lease.library.symbols.hid_exit();
        lease.library.close();
      },
    };
  }
  if (denied.length > 0 && denied.length === failures.length) {
    throw new ProvisioningError(
      "hidapi-not-permitted",
      `Cannot load hidapi: loading native libraries is not permitted (${describe(denied[0])})`,
      {
        cause: denied[0],
        // FFI is granted only for the documented locations or a file named on the command line,
        // and only to the commands that open a security key (docs/permissions.md).
        hint: "Put hidapi in one of its documented places, or name the file with --hidapi-library, which " +
          `grants --allow-ffi of that file only, to the commands that open a key (${hidapiLibraryEnv} alone ` +
          "is not trusted)",
      },
    );
  }
  throw new ProvisioningError(
    "hidapi-missing",
    configured
      ? `Cannot load hidapi from ${hidapiLibraryEnv}: ${failures.join("; ")}`
      : candidates.length === 0
      ? `Cannot load hidapi: there is no default location on ${os}`
      : `Cannot load hidapi: none of its usual files could be opened (${failures.join("; ")})`,
    { hint: installHint(os) },
  );
}

/**
 * Reads a NUL-terminated `wchar_t` string the library handed back: UTF-16 when `wcharBytes` is 2
 * (Windows), UTF-32 when 4 (Linux, macOS). Unpaired surrogates and values beyond U+10FFFF become
 * U+FFFD. A null pointer is `undefined`.
 *
 * @throws {RangeError} when no terminator comes within `maxUnits` characters.
 * @example
 * ```ts ignore
 * const utf16 = new Uint16Array([0x43, 0xd83d, 0xdd11, 0]);
 * readWideString(Deno.UnsafePointer.of(utf16), 2); // "C🔑"
 * ```
 */
export function readWideString(
  pointer: Deno.PointerValue,
  wcharBytes: 2 | 4,
  maxUnits = MAX_STRING_UNITS,
): string | undefined {
  if (!pointer) return undefined;
  const view = new Deno.UnsafePointerView(pointer);
  const units: number[] = [];
  for (let i = 0;; i++) {
    if (i >= maxUnits) {
      throw new RangeError(`Cannot read a wide string: no terminator within ${maxUnits} characters`);
    }
    const unit = wcharBytes === 2 ? view.getUint16(i * 2) : view.getUint32(i * 4);
    if (unit === 0) break;
    units.push(unit);
  }
  let text = "";
  if (wcharBytes === 2) {
    for (let i = 0; i < units.length; i++) {
      const unit = units[i]!;
      const next = units[i + 1];
      if (unit >= 0xd800 && unit <= 0xdbff && next !== undefined && next >= 0xdc00 && next <= 0xdfff) {
        text += String.fromCharCode(unit, next);
        i++;
      } else {
        text += unit >= 0xd800 && unit <= 0xdfff ? "\ufffd" : String.fromCharCode(unit);
      }
    }
  } else {
    for (const unit of units) {
      text += unit > 0x10ffff || (unit >= 0xd800 && unit <= 0xdfff) ? "\ufffd" : String.fromCodePoint(unit);
    }
  }
  return text;
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** Reads a NUL-terminated UTF-8 `char` string, at most `maxBytes` long. */
function readCString(pointer: Deno.PointerValue, maxBytes = MAX_STRING_UNITS): string | undefined {
  if (!pointer) return undefined;
  const view = new Deno.UnsafePointerView(pointer);
  const bytes: number[] = [];
  for (let i = 0;; i++) {
    if (i >= maxBytes) throw new RangeError(`Cannot read a string: no terminator within ${maxBytes} bytes`);
    const byte = view.getUint8(i);
    if (byte === 0) break;
    bytes.push(byte);
  }
  return utf8Strict.decode(Uint8Array.from(bytes));
}

/** One `struct hid_device_info` as read, before it is trusted. */
const deviceInfoSchema = z.object({
  path: z.string().min(1),
  vendorId: z.number().int().min(0).max(0xffff),
  productId: z.number().int().min(0).max(0xffff),
  serialNumber: z.string().optional(),
  productString: z.string().optional(),
  usagePage: z.number().int().min(0).max(0xffff),
  usage: z.number().int().min(0).max(0xffff),
  busType: z.number().int().optional(),
});

/** Walks the list `hid_enumerate` returned; the caller frees it. */
function readDeviceInfoList(
  head: Deno.PointerObject,
  lease: HidapiLease,
): { devices: HidDeviceDescriptor[]; skipped: SkippedHidDevice[] } {
  const devices: HidDeviceDescriptor[] = [];
  const skipped: SkippedHidDevice[] = [];
  const at = hidDeviceInfoLayout;
  let pointer: Deno.PointerValue = head;
  for (let index = 0; pointer; index++) {
    if (index >= MAX_ENTRIES) {
      throw new ProvisioningError(
        "hidapi-bad-enumeration",
        `Cannot list security keys: hidapi "${lease.file}" returned more than ${MAX_ENTRIES} devices`,
        { hint: "The library does not behave like hidapi; check " + hidapiLibraryEnv },
      );
    }
    const view: Deno.UnsafePointerView = new Deno.UnsafePointerView(pointer);
    const usagePage = view.getUint16(at.usagePage);
    const usage = view.getUint16(at.usage);
    const next: Deno.PointerValue = view.getPointer(at.next);
    if (usagePage === FIDO_USAGE_PAGE && usage === FIDO_USAGE_CTAPHID) {
      let raw: unknown;
      try {
        raw = {
          path: readCString(view.getPointer(at.path)),
          vendorId: view.getUint16(at.vendorId),
          productId: view.getUint16(at.productId),
          serialNumber: readWideString(view.getPointer(at.serialNumber), lease.wcharBytes),
          productString: readWideString(view.getPointer(at.productString), lease.wcharBytes),
          usagePage,
          usage,
          busType: lease.hasBusType ? view.getInt32(at.busType) : undefined,
        };
      } catch (error) {
        skipped.push({
          path: `hidapi device #${index}`,
          reason: `Cannot read hidapi device #${index}: ${describe(error)}`,
        });
        pointer = next;
        continue;
      }
      const parsed = deviceInfoSchema.safeParse(raw);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        skipped.push({
          path: `hidapi device #${index}`,
          reason: `Cannot read hidapi device #${index}: ${issue?.path.join(".") ?? ""} ${
            issue?.message ?? "malformed"
          }`,
        });
      } else {
        const info = parsed.data;
        devices.push({
          path: info.path,
          vendorId: info.vendorId,
          productId: info.productId,
          productName: info.productString || undefined,
          serialNumber: info.serialNumber || undefined,
          bus: (info.busType === undefined ? undefined : hidBusTypes[info.busType]) ?? "other",
          reportId: undefined,
          inputReportBytes: CTAPHID_PACKET_SIZE,
          outputReportBytes: CTAPHID_PACKET_SIZE,
        });
      }
    }
    pointer = next;
  }
  return { devices, skipped };
}

/**
 * Lists the FIDO devices hidapi sees (usage page 0xF1D0, usage 1), in its order. Other HID devices
 * are left out; entries whose strings cannot be read are listed in `skipped`. The list hidapi
 * allocated is always freed.
 *
 * @throws {ProvisioningError} `hidapi-missing` when the library cannot be loaded.
 */
export async function enumerateHidapiFidoDevices(options: HidapiOptions = {}): Promise<HidDiscovery> {
  const lease = acquireHidapi(options);
  try {
    return await lease.exclusive(async () => {
      const head = await lease.symbols.hid_enumerate(0, 0);
      if (!head) return { devices: [], skipped: [] };
      try {
        return readDeviceInfoList(head, lease);
      } finally {
        lease.symbols.hid_free_enumeration(head);
      }
    });
  } finally {
    lease.release();
  }
}

/** Options of {@link openHidapiTransport}. */
export interface HidapiTransportOptions extends HidapiOptions {
  /** hidapi's path of the device, as {@link enumerateHidapiFidoDevices} returned it. */
  path: string;
  /** The timeout of each `hid_read_timeout`: the longest close() waits for a read. @default 50 */
  pollMs?: number;
}

/** A hidapi {@link PacketTransport}. */
export interface HidapiTransport extends PacketTransport, AsyncDisposable {
  /** hidapi's path of the device. */
  readonly path: string;
}

function unplugged(path: string, action: string, reason: string): ProvisioningError {
  return new ProvisioningError("key-unplugged", `Cannot ${action} security key "hidapi:${path}": ${reason}`, {
    hint: "The key was unplugged; plug it in again and retry",
  });
}

function closedError(path: string): ProvisioningError {
  return new ProvisioningError(
    "ctaphid-closed",
    `Cannot receive from security key "hidapi:${path}": it is closed`,
  );
}

function openHint(os: typeof Deno.build.os): string {
  switch (os) {
    case "windows":
      return "Windows lets only administrators open FIDO keys directly: run provisioning from an elevated " +
        "(Run as administrator) prompt, and close browsers that use the key";
    case "darwin":
      return "Close other programs that hold the key open (browsers, other FIDO tools) and plug it in again";
    default:
      return "Check that the key is still plugged in and that your user may open it";
  }
}

/**
 * Opens a FIDO device through hidapi as a packet transport: 65-byte `hid_write`s (report id 0,
 * then the 64-byte packet) and 64-byte `hid_read_timeout`s in a loop. Close it once done; that
 * ends the read loop, calls `hid_close` once and lets go of the library.
 *
 * @throws {ProvisioningError} `hidapi-missing` when the library cannot be loaded,
 * `hidapi-open-failed` when the device cannot be opened.
 */
export async function openHidapiTransport(options: HidapiTransportOptions): Promise<HidapiTransport> {
  const { path } = options;
  const os = options.os ?? Deno.build.os;
  const pollMs = options.pollMs ?? 50;
  const lease = acquireHidapi(options);
  let device: Deno.PointerObject;
  try {
    device = await lease.exclusive(async () => {
      const opened = await lease.symbols.hid_open_path(new TextEncoder().encode(`${path}\0`));
      if (opened) return opened;
      const reason = readWideString(lease.symbols.hid_error(null), lease.wcharBytes) ?? "no reason given";
      throw new ProvisioningError(
        "hidapi-open-failed",
        `Cannot open security key "hidapi:${path}": ${reason}`,
        { hint: openHint(os) },
      );
    });
  } catch (error) {
    lease.release();
    throw error;
  }
  const lastError = (): string => {
    try {
      return readWideString(lease.symbols.hid_error(device), lease.wcharBytes) ?? "no reason given";
    } catch {
      return "no reason given";
    }
  };

  const inbox = new PacketQueue();
  let closed = false;
  const end = (error: Error) => inbox.end(error);

  const reading = (async () => {
    const buffer = new Uint8Array(CTAPHID_PACKET_SIZE);
    while (!closed) {
      const n = await lease.symbols.hid_read_timeout(device, buffer, BigInt(buffer.length), pollMs);
      if (closed) break;
      if (n < 0) {
        end(unplugged(path, "receive from", lastError()));
        return;
      }
      if (n === 0) continue;
      // hidapi strips report id 0, so a read is the 64-byte packet (zero-padded if shorter).
      const packet = new Uint8Array(CTAPHID_PACKET_SIZE);
      packet.set(buffer.subarray(0, Math.min(n, CTAPHID_PACKET_SIZE)));
      inbox.push(packet);
    }
    end(closedError(path));
  })().catch((error: unknown) => end(unplugged(path, "receive from", describe(error))));

  let writing: Promise<unknown> = Promise.resolve();
  const write = (packet: Uint8Array): Promise<void> => {
    const report = new Uint8Array(CTAPHID_PACKET_SIZE + 1);
    report.set(packet, 1);
    const next = writing.then(async () => {
      const written = await lease.symbols.hid_write(device, report, BigInt(report.length));
      if (written < 0) throw unplugged(path, "send to", lastError());
    });
    writing = next.catch(() => {});
    return next;
  };

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      closed = true;
      end(closedError(path));
      // hid_close must not race a read or write on another thread: let both finish first.
      await reading;
      await writing;
      await lease.exclusive(() => lease.symbols.hid_close(device));
      lease.release();
    })();
    return closing;
  };

  return {
    path,
    send(packet) {
      const wrong = wrongPacketSize(packet);
      if (wrong) return Promise.reject(wrong);
      if (closed) return Promise.reject(closedError(path));
      return write(packet);
    },
    receive: (signal) => inbox.take(signal),
    close,
    [Symbol.asyncDispose]: close,
  };
}
