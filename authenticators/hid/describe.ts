/**
 * What a security key is, for `provisioning key devices` and `key info`: where it is, its HID
 * identity, and its getInfo (versions, AAGUID, options, PIN state and remaining retries, minimum
 * PIN length, firmware) with the provisioning-relevant features spelt out.
 *
 * @module
 */
import { formatAaguid } from "../../core/aaguid.ts";
import type { Ctap2Client } from "../../core/ctap/client.ts";
import type { DeviceVersion } from "../../core/ctap/hid.ts";
import { formatKeyAddress, type KeyLocation } from "./keys.ts";

/** Whether a key can do something the policy may ask for. */
export type FeatureSupport = "enabled" | "supported" | "unsupported";

/** One key, described. Every field is safe to print: no secrets. */
export interface KeyDescription {
  /** `--device` value that opens it again. */
  readonly device: string;
  readonly label: string;
  readonly vendorId?: number;
  readonly productId?: number;
  readonly productName?: string;
  /** The USB serial number string, when the device reports one. */
  readonly serialNumber?: string;
  /** The CTAPHID firmware version from INIT, `major.minor.build`. */
  readonly deviceVersion?: string;
  readonly versions: readonly string[];
  /** Lowercase UUID. */
  readonly aaguid: string;
  readonly options: Readonly<Record<string, boolean>>;
  /** The key supports a PIN (clientPin present in getInfo options). */
  readonly pinSupported: boolean;
  readonly pinSet: boolean;
  /** Attempts left before the PIN blocks; only when a PIN is set. */
  readonly pinRetries?: number;
  /** True when the key needs a power cycle before the next PIN attempt. */
  readonly pinPowerCycleRequired?: boolean;
  readonly minPinLength: number;
  readonly forcePinChange: boolean;
  readonly firmwareVersion?: number;
  readonly features: {
    readonly credentialManagement: FeatureSupport;
    readonly authenticatorConfig: FeatureSupport;
    readonly setMinPinLength: FeatureSupport;
    readonly enterpriseAttestation: FeatureSupport;
  };
}

function support(value: boolean | undefined, present: boolean): FeatureSupport {
  return value === true ? "enabled" : present ? "supported" : "unsupported";
}

/** Reads getInfo (and the PIN retries when a PIN is set) and describes the key. */
export async function describeKey(
  key: { location: KeyLocation; ctap: Ctap2Client; hid?: { version: DeviceVersion } },
): Promise<KeyDescription> {
  const info = await key.ctap.getInfo({ refresh: true });
  const options = info.options ?? {};
  const pinSet = options["clientPin"] === true;
  const retries = pinSet ? await key.ctap.getPinRetries() : undefined;
  const d = key.location.descriptor;
  const v = key.hid?.version;
  const on = (name: string) => options[name] === true;
  return {
    device: formatKeyAddress(key.location.address),
    label: key.location.label,
    ...(d ? { vendorId: d.vendorId, productId: d.productId } : {}),
    ...(d?.productName ? { productName: d.productName } : {}),
    ...(d?.serialNumber ? { serialNumber: d.serialNumber } : {}),
    ...(v ? { deviceVersion: `${v.major}.${v.minor}.${v.build}` } : {}),
    versions: info.versions,
    aaguid: formatAaguid(info.aaguid),
    options,
    pinSupported: "clientPin" in options,
    pinSet,
    ...(retries ? { pinRetries: retries.retries, pinPowerCycleRequired: retries.powerCycleState } : {}),
    minPinLength: info.minPINLength ?? 4,
    forcePinChange: info.forcePINChange ?? false,
    ...(info.firmwareVersion === undefined ? {} : { firmwareVersion: info.firmwareVersion }),
    features: {
      credentialManagement: on("credMgmt") || on("credentialMgmtPreview") ? "enabled" : "unsupported",
      authenticatorConfig: on("authnrCfg") ? "enabled" : "unsupported",
      setMinPinLength: on("setMinPINLength") ? "enabled" : "unsupported",
      enterpriseAttestation: support(options["ep"], "ep" in options),
    },
  };
}

/** Hex with four digits, as vendor and product ids are written (`1050:0407`). */
export function hex4(value: number | undefined): string {
  return value === undefined ? "----" : value.toString(16).padStart(4, "0");
}
