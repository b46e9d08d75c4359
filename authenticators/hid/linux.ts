/**
 * FIDO device discovery on Linux: every `/sys/class/hidraw/hidrawN` whose report descriptor
 * declares the FIDO usage page (0xF1D0, usage CTAPHID), with vendor, product, name and serial
 * read from the HID device's `uevent`. The device node to open is `/dev/hidrawN`.
 *
 * `root` prefixes every path, so tests run against fixture trees
 * (`test/fixtures/sysfs/<case>/sys/class/hidraw/...`) and the real system is `root: "/"`.
 *
 * Reading sysfs needs `--allow-read=/sys/class/hidraw,/sys/devices`; opening a key needs read and
 * write on `/dev/hidrawN` (and, on the machine, a udev rule that gives the operator access).
 *
 * @example
 * ```ts ignore
 * const { devices } = await discoverLinuxFidoDevices({ root: "/" });
 * for (const d of devices) console.log(d.path, d.productName);
 * ```
 *
 * @module
 */
import { z } from "zod";
import { fidoCollection, parseReportDescriptor, ReportDescriptorError } from "./report_descriptor.ts";

/** A FIDO HID device found on this machine. */
export interface HidDeviceDescriptor {
  /** What to open: `/dev/hidrawN` (prefixed by the discovery root). */
  readonly path: string;
  /** USB (or Bluetooth) vendor id. */
  readonly vendorId: number;
  /** USB (or Bluetooth) product id. */
  readonly productId: number;
  /** The product name the device reports, e.g. `Yubico YubiKey OTP+FIDO+CCID`. */
  readonly productName: string | undefined;
  /** The device's serial number string (USB iSerial), when it has one. */
  readonly serialNumber: string | undefined;
  /** The bus the device is on. */
  readonly bus: "usb" | "bluetooth" | "i2c" | "other";
  /** The report id of its FIDO reports; undefined when reports carry none (the usual case). */
  readonly reportId: number | undefined;
  /** Input report length in bytes (64 for every conforming key). */
  readonly inputReportBytes: number;
  /** Output report length in bytes (64 for every conforming key). */
  readonly outputReportBytes: number;
}

/** A hidraw node that might be a FIDO key but could not be read. */
export interface SkippedHidDevice {
  readonly path: string;
  /** Why it was left out, e.g. `Cannot parse HID report descriptor: ...`. */
  readonly reason: string;
}

/** What a discovery found. */
export interface HidDiscovery {
  /** FIDO devices, in hidraw order. */
  readonly devices: HidDeviceDescriptor[];
  /** Nodes whose descriptor or uevent could not be read or parsed. */
  readonly skipped: SkippedHidDevice[];
}

/** Options of {@link discoverLinuxFidoDevices}. */
export interface LinuxDiscoveryOptions {
  /** Prefix of `/sys` and `/dev`. @default "/" */
  root?: string;
}

const hexId = z.string().regex(/^[0-9A-Fa-f]{4,8}$/).transform((text) => Number.parseInt(text, 16));

/** The lines of a HID device's uevent this module reads (drivers/hid/hid-core.c, hid_uevent). */
const ueventSchema = z.object({
  HID_ID: z.string().transform((text, ctx) => {
    const parts = text.split(":");
    const parsed = z.tuple([hexId, hexId, hexId]).safeParse(parts);
    if (!parsed.success) {
      ctx.addIssue({ code: "custom", message: `HID_ID "${text}" is not BUS:VENDOR:PRODUCT in hex` });
      return z.NEVER;
    }
    const [bus, vendorId, productId] = parsed.data;
    return { bus, vendorId, productId };
  }),
  HID_NAME: z.string().optional(),
  HID_UNIQ: z.string().optional(),
});

/** Reads `KEY=value` lines. */
function parseUevent(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

/** Bus numbers of linux/input.h. */
function busName(bus: number): HidDeviceDescriptor["bus"] {
  return bus === 0x03 ? "usb" : bus === 0x05 ? "bluetooth" : bus === 0x18 ? "i2c" : "other";
}

function join(root: string, path: string): string {
  return root === "/" || root === "" ? path : `${root.replace(/\/+$/, "")}${path}`;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Lists the FIDO devices under `root`'s `/sys/class/hidraw`. A machine without hidraw (no such
 * folder) has none. Nodes that are not FIDO (keyboards, mice) are left out silently; nodes whose
 * descriptor or uevent cannot be read are listed in `skipped` with the reason.
 */
export async function discoverLinuxFidoDevices(options: LinuxDiscoveryOptions = {}): Promise<HidDiscovery> {
  const root = options.root ?? "/";
  const classDir = join(root, "/sys/class/hidraw");
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(classDir)) {
      if (/^hidraw\d+$/.test(entry.name)) names.push(entry.name);
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { devices: [], skipped: [] };
    throw error;
  }
  names.sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));

  const devices: HidDeviceDescriptor[] = [];
  const skipped: SkippedHidDevice[] = [];
  for (const name of names) {
    const path = join(root, `/dev/${name}`);
    const deviceDir = `${classDir}/${name}/device`;
    let descriptor: Uint8Array;
    try {
      descriptor = await Deno.readFile(`${deviceDir}/report_descriptor`);
    } catch (error) {
      skipped.push({ path, reason: `Cannot read the report descriptor of ${name}: ${message(error)}` });
      continue;
    }
    let fido;
    try {
      fido = fidoCollection(parseReportDescriptor(descriptor));
    } catch (error) {
      if (!(error instanceof ReportDescriptorError)) throw error;
      skipped.push({ path, reason: `${error.message} (${name})` });
      continue;
    }
    if (!fido) continue;
    let uevent;
    try {
      const parsed = ueventSchema.safeParse(parseUevent(await Deno.readTextFile(`${deviceDir}/uevent`)));
      if (!parsed.success) {
        skipped.push({
          path,
          reason: `Cannot read the uevent of ${name}: ${parsed.error.issues[0]?.message ?? "malformed"}`,
        });
        continue;
      }
      uevent = parsed.data;
    } catch (error) {
      skipped.push({ path, reason: `Cannot read the uevent of ${name}: ${message(error)}` });
      continue;
    }
    devices.push({
      path,
      vendorId: uevent.HID_ID.vendorId,
      productId: uevent.HID_ID.productId,
      productName: uevent.HID_NAME || undefined,
      serialNumber: uevent.HID_UNIQ || undefined,
      bus: busName(uevent.HID_ID.bus),
      reportId: fido.reportIds[0],
      inputReportBytes: fido.inputReportBytes,
      outputReportBytes: fido.outputReportBytes,
    });
  }
  return { devices, skipped };
}
