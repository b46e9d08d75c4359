/**
 * The `hid` authenticator plugin: FIDO2 security keys over USB HID (Linux hidraw; hidapi over
 * Deno FFI on Windows and macOS), or any CTAPHID packet transport given as
 * `--device unix:/path/to.sock` (what `provisioning key serve` offers, and what the tests use in
 * place of a USB key).
 *
 * Beyond `open`, the plugin offers three capabilities the CLI and the bulk engine use without
 * importing this module (core never imports a plugin):
 * - `listDevices`: every key plugged in, with its getInfo (`provisioning key devices`);
 * - `prepare`: the policy applied to the chosen key (`provisioning key prepare`);
 * - `station`: a {@link KeyStation} for bulk runs (one prepared key per user).
 *
 * @example
 * ```ts ignore
 * await using key = await hidAuthenticator.open(context, { device: "/dev/hidraw3" });
 * ```
 *
 * @module
 */
import { z } from "zod";
import { UsageError } from "../../core/errors.ts";
import type { AuthenticatorPlugin, PluginContext } from "../../core/plugin.ts";
import { describeKey, type KeyDescription } from "./describe.ts";
import { hidapiLibraryEnv } from "./hidapi.ts";
import {
  chooseKey,
  discoverKeys,
  formatKeyAddress,
  type HidBackend,
  type HidKey,
  type KeyDiscovery,
  keyLabel,
  type KeyLocation,
  openKey,
  type OpenKeyOptions,
  parseKeyAddress,
} from "./keys.ts";
import type { SkippedHidDevice } from "./linux.ts";
import { SecretPin } from "./pin_policy.ts";
import { type KeyPolicy, type PreparedKeyReport, prepareKey } from "./prepare.ts";
import { KeyStation } from "./station.ts";

/** The environment variable that names the key when `--device` is not given. */
export const hidDeviceEnv = "PROVISIONING_HID_DEVICE";
/** Where `/sys` and `/dev` are (a fixture tree in tests, a container's mount). @default "/" */
export const hidSysfsRootEnv = "PROVISIONING_HID_SYSFS_ROOT";

/** The options of the hid plugin, as the CLI passes them (parsed here: they come from outside). */
export const hidOptionsSchema = z.object({
  /**
   * `/dev/hidrawN`, `hidapi:PATH` for a device hidapi lists, or `unix:/path` for a CTAPHID socket.
   * @default the only key plugged in
   */
  device: z.string().min(1).optional(),
  /** Longest silence from the key, in ms. @default 5000 */
  hidTimeout: z.coerce.number().int().min(100).optional(),
});

/** Parsed options of the hid plugin. */
export type HidOptions = z.input<typeof hidOptionsSchema>;

function parseOptions(raw: unknown): z.infer<typeof hidOptionsSchema> {
  const parsed = hidOptionsSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`Cannot open a security key: option "${issue.path.join(".")}" ${issue.message}`);
  }
  return parsed.data;
}

function discoverer(context: PluginContext): (backend?: HidBackend) => Promise<KeyDiscovery> {
  const root = context.env(hidSysfsRootEnv);
  const hidapiLibrary = context.env(hidapiLibraryEnv) || undefined;
  return (backend) => discoverKeys({ ...(root ? { root } : {}), backend, hidapiLibrary });
}

/** The options of {@link openKey} every call of this plugin passes. */
function openOptions(
  context: PluginContext,
  options: z.infer<typeof hidOptionsSchema>,
  signal: AbortSignal | undefined,
): OpenKeyOptions {
  return {
    interaction: context.interaction,
    ...(signal ? { signal } : {}),
    ...(options.hidTimeout === undefined ? {} : { timeoutMs: options.hidTimeout }),
    hidapiLibrary: context.env(hidapiLibraryEnv) || undefined,
  };
}

function deviceOf(context: PluginContext, options: z.infer<typeof hidOptionsSchema>): string | undefined {
  return options.device ?? (context.env(hidDeviceEnv) || undefined);
}

async function openChosen(context: PluginContext, raw: unknown): Promise<HidKey> {
  const options = parseOptions(raw);
  const location = await chooseKey({ device: deviceOf(context, options), discover: discoverer(context) });
  return await openKey(location, openOptions(context, options, context.signal));
}

/** One row of {@link HidAuthenticatorPlugin.listDevices}: a description, or why the key could not be read. */
export type DeviceListing =
  | { readonly ok: true; readonly description: KeyDescription }
  | { readonly ok: false; readonly device: string; readonly label: string; readonly error: unknown };

/**
 * A {@link KeyPolicy} as a caller outside this plugin writes it: a given PIN as a string (the
 * plugin wraps it in a {@link SecretPin} at once).
 */
export type PolicyRequest = Omit<KeyPolicy, "pin"> & {
  readonly pin?: { readonly kind: "random"; readonly length?: number } | {
    readonly kind: "given";
    readonly pin: string;
  };
};

/** Turns a {@link PolicyRequest} into a {@link KeyPolicy}. */
export function policyOf(request: PolicyRequest): KeyPolicy {
  const { pin, ...rest } = request;
  if (!pin) return rest;
  return { ...rest, pin: pin.kind === "given" ? { kind: "given", pin: new SecretPin(pin.pin) } : pin };
}

/** What `key prepare` asks of the plugin. */
export interface PrepareRequest {
  readonly policy: PolicyRequest;
  /** The key's current PIN, when it has one (PROVISIONING_KEY_PIN). */
  readonly currentPin?: string;
  /** Explanations for the operator. */
  readonly notify: (text: string) => void;
}

/** The hid plugin: an {@link AuthenticatorPlugin} with device listing, preparation and a key station. */
export interface HidAuthenticatorPlugin extends AuthenticatorPlugin<HidOptions> {
  /** Every FIDO key plugged in (or the `--device` one), described; and the nodes skipped. */
  listDevices(
    context: PluginContext,
    options: HidOptions,
  ): Promise<{ devices: DeviceListing[]; skipped: SkippedHidDevice[] }>;
  /** Applies `policy` to the chosen key. */
  prepare(
    context: PluginContext,
    options: HidOptions,
    request: PrepareRequest,
  ): Promise<PreparedKeyReport & { device: string }>;
  /** A key station for a bulk run. */
  station(
    context: PluginContext,
    options: HidOptions,
    request: {
      policy: PolicyRequest;
      rpId: string;
      otherRpIds?: readonly string[];
      notify: (text: string) => void;
      pollIntervalMs?: number;
    },
  ): KeyStation;
}

/** The plugin object `main.ts` registers. */
export const hidAuthenticator: HidAuthenticatorPlugin = {
  kind: "authenticator",
  manifest: {
    id: "hid",
    summary:
      "FIDO2 security keys over USB HID (Linux hidraw, hidapi on Windows and macOS), or a CTAPHID socket (--device unix:PATH)",
    hosts: [],
    files: ["/dev/hidraw*", "/sys/class/hidraw", "/sys/devices"],
    env: [hidDeviceEnv, hidSysfsRootEnv, hidapiLibraryEnv],
    options: [
      {
        flags: "--device <path>",
        description:
          "the security key: /dev/hidrawN, hidapi:PATH (Windows, macOS), or unix:PATH for a CTAPHID socket; " +
          "default: the only key plugged in",
        env: hidDeviceEnv,
      },
      {
        flags: "--hid-timeout <ms>",
        description: "longest silence from the key before a request fails",
        default: "5000",
      },
    ],
  },

  open: (context, options) => openChosen(context, options),

  async listDevices(context, raw) {
    const options = parseOptions(raw);
    const device = deviceOf(context, options);
    let locations: KeyLocation[];
    let skipped: SkippedHidDevice[] = [];
    if (device !== undefined) {
      locations = [await chooseKey({ device, discover: discoverer(context) })];
    } else {
      const found = await discoverer(context)();
      locations = found.keys;
      skipped = found.skipped;
    }
    const devices: DeviceListing[] = [];
    for (const location of locations) {
      try {
        await using key = await openKey(location, openOptions(context, options, context.signal));
        devices.push({ ok: true, description: await describeKey(key) });
      } catch (error) {
        if (context.signal?.aborted) throw error;
        devices.push({
          ok: false,
          device: formatKeyAddress(location.address),
          label: location.label,
          error,
        });
      }
    }
    return { devices, skipped };
  },

  async prepare(context, raw, request) {
    await using key = await openChosen(context, raw);
    const report = await prepareKey({
      key,
      policy: policyOf(request.policy),
      ...(request.currentPin ? { currentPin: new SecretPin(request.currentPin) } : {}),
      notify: request.notify,
      interaction: context.interaction,
      ...(context.signal ? { signal: context.signal } : {}),
    });
    return { ...report, device: formatKeyAddress(key.location.address) };
  },

  station(context, raw, request) {
    const options = parseOptions(raw);
    const device = deviceOf(context, options);
    let discover = discoverer(context);
    if (device !== undefined) {
      const address = parseKeyAddress(device);
      const all = discover;
      discover = async () => {
        if (address.kind !== "unix") {
          const found = await all(address.kind);
          return {
            keys: found.keys.filter((k) =>
              k.address.kind === address.kind && k.address.path === address.path
            ),
            skipped: found.skipped,
          };
        }
        try {
          if (!(await Deno.lstat(address.path)).isSocket) return { keys: [], skipped: [] };
        } catch {
          return { keys: [], skipped: [] };
        }
        return { keys: [{ address, label: keyLabel(address) }], skipped: [] };
      };
    }
    return new KeyStation({
      discover,
      policy: policyOf(request.policy),
      rpId: request.rpId,
      ...(request.otherRpIds ? { otherRpIds: request.otherRpIds } : {}),
      notify: request.notify,
      interaction: context.interaction,
      ...(request.pollIntervalMs === undefined ? {} : { pollIntervalMs: request.pollIntervalMs }),
      open: (location, signal) => openKey(location, openOptions(context, options, signal)),
    });
  },
};
