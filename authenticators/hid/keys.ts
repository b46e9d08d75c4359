/**
 * Finding and opening security keys: the FIDO HID devices of this machine (Linux: hidraw;
 * Windows and macOS: hidapi over Deno FFI), or a CTAPHID Unix socket such as
 * `provisioning key serve` offers (`unix:/path/to.sock`), which is how tests and demos stand in
 * for a USB key. Whatever the transport, an opened key is the same {@link CtapHidClient} wrapped
 * as an {@link Authenticator}: keep-alives that ask for presence prompt the operator to touch the
 * key, and the operator's Ctrl+C sends CTAPHID_CANCEL.
 *
 * Addresses, as `--device` takes them: `/dev/hidrawN` (Linux), `hidapi:PATH` (hidapi's device
 * path, the default form on Windows and macOS and accepted on Linux too), `unix:PATH`.
 *
 * @example
 * ```ts ignore
 * const { keys } = await discoverKeys();
 * await using key = await openKey(keys[0]!, { interaction });
 * const info = await key.ctap.getInfo();
 * ```
 *
 * @module
 */
import { Ctap2Client } from "../../core/ctap/client.ts";
import type { CtapCallOptions, CtapDevice } from "../../core/ctap/device.ts";
import { CtapHidClient, type PacketTransport } from "../../core/ctap/hid_client.ts";
import { connectUnixPacketTransport } from "../../core/ctap/unix_socket.ts";
import { ProvisioningError, UsageError } from "../../core/errors.ts";
import type { Authenticator, UserInteraction } from "../../core/plugin.ts";
import { enumerateHidapiFidoDevices, openHidapiTransport } from "./hidapi.ts";
import { openHidrawTransport } from "./hidraw.ts";
import { discoverLinuxFidoDevices, type HidDeviceDescriptor, type SkippedHidDevice } from "./linux.ts";

/** Where a key is: a hidraw node, a device path of hidapi, or a CTAPHID Unix socket. */
export type KeyAddress =
  | { readonly kind: "hidraw"; readonly path: string }
  | { readonly kind: "hidapi"; readonly path: string }
  | { readonly kind: "unix"; readonly path: string };

/** How HID devices are found and opened: Linux hidraw, or the hidapi library. */
export type HidBackend = "hidraw" | "hidapi";

/** The backend of an operating system: hidraw on Linux, hidapi everywhere else. */
export function defaultHidBackend(os: typeof Deno.build.os = Deno.build.os): HidBackend {
  return os === "linux" ? "hidraw" : "hidapi";
}

/** A key that can be opened: its address, and what discovery learnt about it. */
export interface KeyLocation {
  readonly address: KeyAddress;
  /** The HID facts (vendor, product, name), for HID devices found by discovery. */
  readonly descriptor?: HidDeviceDescriptor;
  /** How messages name it: `security key "YubiKey 5" (/dev/hidraw3)`. */
  readonly label: string;
}

/**
 * `unix:/path` is a socket, `hidapi:PATH` a device path of hidapi (kept as is, colons and
 * backslashes included); anything else is a device node path.
 *
 * @example
 * ```ts
 * import { parseKeyAddress } from "./keys.ts";
 * console.assert(parseKeyAddress("hidapi:DevSrvsID:4294969283").path === "DevSrvsID:4294969283");
 * ```
 */
export function parseKeyAddress(text: string): KeyAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice("unix:".length);
    if (!path) throw new UsageError(`Cannot use --device "${text}": the socket path is empty`);
    return { kind: "unix", path };
  }
  if (text.startsWith("hidapi:")) {
    const path = text.slice("hidapi:".length);
    if (!path) throw new UsageError(`Cannot use --device "${text}": the hidapi device path is empty`);
    return { kind: "hidapi", path };
  }
  if (!text) throw new UsageError("Cannot use --device: the path is empty");
  return { kind: "hidraw", path: text };
}

/** The text form of an address, as `--device` takes it. */
export function formatKeyAddress(address: KeyAddress): string {
  return address.kind === "hidraw" ? address.path : `${address.kind}:${address.path}`;
}

/** How messages name a key. */
export function keyLabel(address: KeyAddress, descriptor?: HidDeviceDescriptor): string {
  if (address.kind === "unix") return `security key at "unix:${address.path}"`;
  const where = formatKeyAddress(address);
  return descriptor?.productName
    ? `security key "${descriptor.productName}" (${where})`
    : `security key "${where}"`;
}

/** Options of {@link discoverKeys}. */
export interface DiscoverOptions {
  /** Prefix of `/sys` and `/dev` on Linux (fixture trees in tests). @default "/" */
  root?: string;
  /** The operating system. @default Deno.build.os */
  os?: typeof Deno.build.os;
  /** How to find devices. @default {@link defaultHidBackend} of `os` */
  backend?: HidBackend | undefined;
  /** The hidapi library file. @default $PROVISIONING_HIDAPI_LIBRARY, else the usual places */
  hidapiLibrary?: string | undefined;
}

/** What discovery found: keys to open, and nodes it could not read (with the reason). */
export interface KeyDiscovery {
  readonly keys: KeyLocation[];
  readonly skipped: SkippedHidDevice[];
}

/**
 * Lists the FIDO keys plugged into this machine: through hidraw on Linux, through hidapi on
 * Windows, macOS and the rest (or wherever `backend` says).
 *
 * @throws {ProvisioningError} `hidapi-missing` when hidapi is needed and cannot be loaded.
 */
export async function discoverKeys(options: DiscoverOptions = {}): Promise<KeyDiscovery> {
  const os = options.os ?? Deno.build.os;
  const backend = options.backend ?? defaultHidBackend(os);
  const found = backend === "hidraw"
    ? await discoverLinuxFidoDevices({ root: options.root ?? "/" })
    : await enumerateHidapiFidoDevices({ os, library: options.hidapiLibrary });
  return {
    keys: found.devices.map((descriptor) => {
      const address: KeyAddress = { kind: backend, path: descriptor.path };
      return { address, descriptor, label: keyLabel(address, descriptor) };
    }),
    skipped: found.skipped,
  };
}

/** An opened security key. */
export interface HidKey extends Authenticator {
  readonly location: KeyLocation;
  /** The CTAPHID channel: firmware version from INIT, wink, ping. */
  readonly hid: CtapHidClient;
  /** The typed CTAP2 client over {@link device}. */
  readonly ctap: Ctap2Client;
}

/** Options of {@link openKey}. */
export interface OpenKeyOptions {
  /** Touch prompts go here when a caller gives no keep-alive handler of its own. */
  interaction?: UserInteraction;
  /** The operator's Ctrl+C: aborts every request (CTAPHID_CANCEL). */
  signal?: AbortSignal;
  /** Longest silence from the key, in ms. @default 5000 */
  timeoutMs?: number;
  /** The hidapi library file, for `hidapi:` addresses. @default as {@link DiscoverOptions.hidapiLibrary} */
  hidapiLibrary?: string | undefined;
  /**
   * Opens the transport (tests pass a stand-in). @default {@link openHidrawTransport},
   * {@link openHidapiTransport} or a Unix socket, by the address's kind
   */
  openTransport?: (location: KeyLocation) => Promise<PacketTransport>;
}

async function defaultTransport(
  location: KeyLocation,
  hidapiLibrary: string | undefined,
): Promise<PacketTransport> {
  const { address, descriptor } = location;
  switch (address.kind) {
    case "unix":
      return await connectUnixPacketTransport(address.path);
    case "hidapi":
      return await openHidapiTransport({ path: address.path, library: hidapiLibrary });
    case "hidraw":
      return await openHidrawTransport({ path: address.path, reportId: descriptor?.reportId });
  }
}

/**
 * Opens a key: connects its transport and allocates a CTAPHID channel (refusing CTAP1/U2F-only
 * keys). The returned authenticator owns the transport; dispose it to close.
 */
export async function openKey(location: KeyLocation, options: OpenKeyOptions = {}): Promise<HidKey> {
  const transport = options.openTransport
    ? await options.openTransport(location)
    : await defaultTransport(location, options.hidapiLibrary);
  let hid: CtapHidClient;
  try {
    hid = await CtapHidClient.open(transport, {
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (error instanceof ProvisioningError && error.code === "ctap1-only-device") {
      throw new ProvisioningError("ctap1-only-device", `Cannot use ${location.label}: ${error.message}`, {
        cause: error,
        ...(error.hint === undefined ? {} : { hint: error.hint }),
      });
    }
    throw error;
  }
  const { interaction, signal } = options;
  const device: CtapDevice = {
    transceive(request: Uint8Array, call: CtapCallOptions = {}) {
      const signals = [call.signal, signal].filter((s): s is AbortSignal => s !== undefined);
      const onKeepalive = call.onKeepalive ??
        (interaction
          ? (status) => {
            if (status === "user-presence-needed") interaction.promptUserPresence(location.label);
          }
          : undefined);
      return hid.transceive(request, {
        ...(signals.length > 0
          ? { signal: signals.length === 1 ? signals[0]! : AbortSignal.any(signals) }
          : {}),
        ...(onKeepalive ? { onKeepalive } : {}),
      });
    },
  };
  return {
    label: location.label,
    location,
    hid,
    device,
    ctap: new Ctap2Client(device),
    [Symbol.asyncDispose]: () => hid.close(),
  };
}

/**
 * Picks the one key to work on: the `--device` one, else the only one plugged in. Several keys
 * without `--device`, or none, is an error that lists what there is. A `--device` HID address
 * must be one that discovery (with that address's backend) lists as a FIDO key: a keyboard is
 * never opened.
 */
export async function chooseKey(request: {
  device?: string | undefined;
  /** Discovery; `backend` is given when `--device` names a hidraw or hidapi device. */
  discover: (backend?: HidBackend) => Promise<KeyDiscovery>;
}): Promise<KeyLocation> {
  if (request.device !== undefined) {
    const address = parseKeyAddress(request.device);
    if (address.kind === "unix") return { address, label: keyLabel(address) };
    const { keys } = await request.discover(address.kind);
    const known = keys.find((k) => k.address.kind === address.kind && k.address.path === address.path);
    if (!known) {
      throw new ProvisioningError(
        "not-a-security-key",
        `Cannot use "${formatKeyAddress(address)}": it is not a FIDO security key (no ${
          address.kind === "hidraw" ? "hidraw node" : "hidapi device"
        } of that name declares the FIDO usage page)`,
        { hint: listHint(keys) },
      );
    }
    return known;
  }
  const { keys, skipped } = await request.discover();
  if (keys.length === 1) return keys[0]!;
  if (keys.length === 0) {
    throw new ProvisioningError("no-security-key", "Cannot find a security key: none is plugged in", {
      hint: skipped.length > 0
        ? `Plug a FIDO2 key in. Unreadable HID devices: ${skipped.map((s) => s.reason).join("; ")}`
        : "Plug a FIDO2 key in, or give --device unix:PATH for a CTAPHID socket",
    });
  }
  throw new UsageError(`Cannot choose a security key: ${keys.length} are plugged in`, {
    hint: listHint(keys),
  });
}

function listHint(keys: readonly KeyLocation[]): string {
  if (keys.length === 0) return "No FIDO keys are plugged in";
  return `Choose one with --device: ${
    keys.map((k) => `${formatKeyAddress(k.address)} (${k.label})`).join(", ")
  }`;
}
