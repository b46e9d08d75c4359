/**
 * `provisioning key`: look after an authenticator by hand — create a software key, read what a
 * key is (getInfo), list and delete its passkeys (credential management), set its PIN, and serve
 * it as a CTAPHID device on a Unix socket so any FIDO2 client can drive it.
 *
 * Every subcommand works on the authenticator plugin chosen with `--authenticator` (default
 * `software`) and takes that plugin's options (e.g. `--vault`), so nothing here knows a plugin.
 * `key devices` and `key prepare` (default `hid`) use capabilities a plugin may offer beyond
 * `open` — `listDevices` and `prepare`, described by {@link DeviceListingPlugin} and
 * {@link PreparingPlugin} — found on the plugin object, never imported.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { formatAaguid } from "../aaguid.ts";
import { toBase64Url } from "../bytes.ts";
import { Ctap2Client, type PinToken } from "../ctap/client.ts";
import type { GetInfoResponse } from "../ctap/commands.ts";
import { PinUvAuthPermission } from "../ctap/pin_protocol.ts";
import { serveCtapHidOnUnixSocket } from "../ctap/unix_socket.ts";
import { describeError, ProvisioningError, UsageError } from "../errors.ts";
import type { Authenticator, AuthenticatorPlugin, KeyPreparationPolicy, PluginContext } from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { keyPolicyFrom, openPinOutputFrom, withKeyPolicyOptions } from "./key_policy.ts";
import { keyPinEnv, pinFromEnvironment } from "./pin.ts";
import { optionsFor, withPluginOptions } from "./plugin_options.ts";

const algorithmNames: Readonly<Record<number, string>> = { [-7]: "ES256", [-8]: "EdDSA", [-257]: "RS256" };

/** Options every `key` subcommand shares, plus whatever the plugins' manifests add. */
type KeyOptions = Record<string, unknown> & { authenticator?: string };

/** The `key` command group. */
export function keyCommand(context: CliContext): CommandUnknownOpts {
  const key = new Command("key").description("manage an authenticator: the software key, or a FIDO2 key");

  const init = withAuthenticatorOptions(
    new Command("init")
      .description("create a new software key (an encrypted vault file); fails if the file exists")
      .option("--set-pin", `also set the key's PIN (asked for, or ${keyPinEnv})`),
    context,
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { mustCreate: true });
    const client = new Ctap2Client(authenticator.device);
    if (options["setPin"]) await client.setPin(await newPin(context, authenticator.label));
    const info = await client.getInfo();
    context.stdout.write(`Created ${authenticator.label}\nAAGUID  ${formatAaguid(info.aaguid)}\n`);
  });

  const info = withAuthenticatorOptions(
    new Command("info").description("show what the authenticator is: versions, AAGUID, options, PIN state")
      .option("--json", "print getInfo as JSON"),
    context,
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { create: false });
    const client = new Ctap2Client(authenticator.device);
    const info = await client.getInfo();
    const retries = info.options?.["clientPin"] === true ? (await client.getPinRetries()).retries : undefined;
    if (options["json"]) {
      context.stdout.write(`${JSON.stringify(infoAsJson(info, retries), null, 2)}\n`);
      return;
    }
    context.stdout.write(formatInfo(authenticator.label, info, retries));
  });

  const list = withAuthenticatorOptions(
    new Command("list").description("list the passkeys (discoverable credentials) on the authenticator")
      .option("--json", "print as JSON"),
    context,
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { create: false });
    const client = new Ctap2Client(authenticator.device);
    const credentials = await client.listCredentials(await managementToken(client, context, authenticator));
    const rows = credentials.map((c) => ({
      rpId: c.rpId,
      user: c.user.name ?? "",
      displayName: c.user.displayName ?? "",
      credentialId: toBase64Url(c.credentialId.id),
      credProtect: c.credProtect ?? 1,
    }));
    if (options["json"]) {
      context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    } else if (rows.length === 0) {
      context.stdout.write(`No passkeys on ${authenticator.label}.\n`);
    } else {
      context.stdout.write(
        table(["RP", "USER", "CREDENTIAL ID"], rows.map((r) => [r.rpId, r.user, r.credentialId])),
      );
    }
  });

  const remove = withAuthenticatorOptions(
    new Command("delete").description("delete one passkey from the authenticator")
      .argument("<credential-id>", "the credential id as `key list` shows it (base64url)"),
    context,
  ).action(async (credentialId, parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { create: false });
    const client = new Ctap2Client(authenticator.device);
    const token = await managementToken(client, context, authenticator);
    const match = (await client.listCredentials(token)).find((c) =>
      toBase64Url(c.credentialId.id) === credentialId
    );
    if (!match) {
      throw new ProvisioningError(
        "credential-not-found",
        `Cannot delete passkey "${credentialId}": ${authenticator.label} has no such credential`,
        {
          hint: "Run `provisioning key list` to see the credential ids",
        },
      );
    }
    await client.deleteCredential(token, match.credentialId);
    context.stdout.write(`Deleted the passkey of "${match.user.name ?? ""}" for ${match.rpId}\n`);
  });

  const setPin = withAuthenticatorOptions(
    new Command("set-pin").description(
      `set the PIN of a key that has none (asked for twice, or ${keyPinEnv})`,
    ),
    context,
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { create: false });
    const client = new Ctap2Client(authenticator.device);
    if ((await client.getInfo()).options?.["clientPin"] === true) {
      throw new ProvisioningError(
        "pin-already-set",
        `Cannot set the PIN of ${authenticator.label}: it has one`,
        {
          hint: "Change it with the key vendor's tool, or reset the key",
        },
      );
    }
    await client.setPin(await newPin(context, authenticator.label));
    context.stdout.write(`PIN set on ${authenticator.label}\n`);
  });

  const serve = withAuthenticatorOptions(
    new Command("serve")
      .description("serve the authenticator as a CTAPHID device: 64-byte reports on a Unix socket")
      .requiredOption("--socket <path>", "the Unix socket to listen on (created 0600, removed on exit)"),
    context,
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    await using authenticator = await openAuthenticator(context, options, { create: true });
    const path = String(options["socket"]);
    await using server = await serveCtapHidOnUnixSocket({
      path,
      // A request that fails for a reason a status byte cannot carry (a full disk under the vault)
      // reaches the client as CTAP1_ERR_OTHER; the reason and what to do go to this log.
      device: {
        transceive: (request, callOptions) =>
          authenticator.device.transceive(request, callOptions).catch((error: unknown) => {
            context.stderr.write(`${describeError(error)}\n`);
            throw error;
          }),
      },
      signal: context.signal,
      onClientDropped: (reason) => context.stderr.write(`Dropped a client of ${path}: ${reason}\n`),
    });
    context.stderr.write(
      `Serving ${authenticator.label} on ${server.path} (CTAPHID, 64-byte reports). Ctrl+C stops.\n`,
    );
    await server.closed;
  });

  const devices = withPluginOptions(
    new Command("devices")
      .description("list the FIDO security keys plugged in, with what each one is (getInfo)")
      .option("--json", "print as JSON"),
    context,
    "authenticator",
    "hid",
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    const id = options.authenticator ?? "hid";
    const plugin = context.registry.authenticator(id);
    if (!isDeviceListing(plugin)) {
      throw new UsageError(`Cannot list devices of authenticator "${id}": it has no devices to list`, {
        hint: "Use --authenticator hid",
      });
    }
    const { devices, skipped } = await plugin.listDevices(
      context,
      optionsFor(context, "authenticator", options),
    );
    if (options["json"]) {
      const rows = devices.map((d) =>
        d.ok ? d.description : { device: d.device, label: d.label, error: errorText(d.error) }
      );
      context.stdout.write(`${JSON.stringify({ devices: rows, skipped }, null, 2)}\n`);
      return;
    }
    if (devices.length === 0) context.stdout.write("No security keys found.\n");
    else context.stdout.write(formatDevices(devices));
    for (const s of skipped) context.stderr.write(`Skipped ${s.path}: ${s.reason}\n`);
  });

  const prepare = withPluginOptions(
    withKeyPolicyOptions(new Command("prepare"), "random")
      .description(
        "prepare a security key per policy: optional factory reset, a PIN (random or given), minimum " +
          "PIN length, forced PIN change, enterprise attestation; PINs go only to --pin-output",
      )
      .option("--user <name>", "who the key is for, recorded with the PIN"),
    context,
    "authenticator",
    "hid",
  ).action(async (parsed) => {
    const options = parsed as KeyOptions;
    const id = options.authenticator ?? "hid";
    const plugin = context.registry.authenticator(id);
    if (!isPreparing(plugin)) {
      throw new UsageError(`Cannot prepare authenticator "${id}": it has no policy to apply`, {
        hint: "Use --authenticator hid",
      });
    }
    const policy = await keyPolicyFrom(context, options);
    const { file: pinOutput, recipient } = await openPinOutputFrom(options, policy);
    await using _pinOutput = pinOutput;
    const currentPin = context.env(keyPinEnv);
    const report = await plugin.prepare(context, optionsFor(context, "authenticator", options), {
      policy,
      ...(currentPin ? { currentPin } : {}),
      notify: (text) => context.stderr.write(`${text}\n`),
    });
    const width = Math.max(...report.outcomes.map((o) => o.feature.length), 7);
    context.stdout.write(`Prepared ${report.label} (AAGUID ${report.aaguid})\n`);
    for (const outcome of report.outcomes) {
      context.stdout.write(
        `  ${outcome.feature.padEnd(width)}  ${outcome.status.padEnd(11)}  ${outcome.detail}\n`,
      );
    }
    if (report.pin && report.pinSet && pinOutput) {
      await pinOutput.write({
        user: (options["user"] as string | undefined) ?? report.device,
        pin: report.pin.reveal(),
        device: report.device,
        aaguid: report.aaguid,
        pinMustChange: report.pinMustChange,
      });
      context.stdout.write(
        `PIN written to ${pinOutput.path}${recipient ? ` (encrypted to ${recipient})` : ""}` +
          `${report.pinMustChange ? "; the user must change it at first use" : ""}\n`,
      );
    }
  });

  for (const command of [init, info, list, remove, setPin, serve, devices, prepare]) key.addCommand(command);
  return key;
}

/** A device as `key devices` prints it: what the hid plugin's describeKey returns. */
export interface KeyDeviceSummary {
  readonly device: string;
  readonly label: string;
  readonly vendorId?: number;
  readonly productId?: number;
  readonly productName?: string;
  readonly deviceVersion?: string;
  readonly versions: readonly string[];
  readonly aaguid: string;
  readonly pinSupported: boolean;
  readonly pinSet: boolean;
  readonly pinRetries?: number;
  readonly minPinLength: number;
  readonly forcePinChange: boolean;
  readonly firmwareVersion?: number;
}

/** One row of a device listing: a description, or why that key could not be read. */
export type DeviceRow =
  | { readonly ok: true; readonly description: KeyDeviceSummary }
  | { readonly ok: false; readonly device: string; readonly label: string; readonly error: unknown };

/**
 * An authenticator plugin that finds devices (`key devices`). To move into core/plugin.ts as an
 * optional member of AuthenticatorPlugin.
 */
export interface DeviceListingPlugin {
  listDevices(context: PluginContext, options: Record<string, unknown>): Promise<{
    devices: DeviceRow[];
    skipped: readonly { readonly path: string; readonly reason: string }[];
  }>;
}

/**
 * An authenticator plugin that applies a key policy (`key prepare`). To move into core/plugin.ts
 * as an optional member of AuthenticatorPlugin.
 */
export interface PreparingPlugin {
  prepare(context: PluginContext, options: Record<string, unknown>, request: {
    policy: KeyPreparationPolicy;
    currentPin?: string;
    notify: (text: string) => void;
  }): Promise<{
    readonly device: string;
    readonly label: string;
    readonly aaguid: string;
    readonly pin: { reveal(): string } | undefined;
    readonly pinSet: boolean;
    readonly pinMustChange: boolean;
    readonly outcomes: readonly {
      readonly feature: string;
      readonly status: string;
      readonly detail: string;
    }[];
  }>;
}

function isDeviceListing(
  plugin: AuthenticatorPlugin<never>,
): plugin is AuthenticatorPlugin<never> & DeviceListingPlugin {
  return typeof (plugin as Partial<DeviceListingPlugin>).listDevices === "function";
}

function isPreparing(
  plugin: AuthenticatorPlugin<never>,
): plugin is AuthenticatorPlugin<never> & PreparingPlugin {
  return typeof (plugin as Partial<PreparingPlugin>).prepare === "function";
}

function errorText(error: unknown): string {
  return error instanceof ProvisioningError && error.hint
    ? `${error.message}. ${error.hint}`
    : error instanceof Error
    ? error.message
    : String(error);
}

function formatDevices(devices: readonly DeviceRow[]): string {
  const hex = (n: number | undefined) => n === undefined ? "----" : n.toString(16).padStart(4, "0");
  const rows = devices.map((d) => {
    if (!d.ok) return [d.device, "", d.label, "", "", `cannot read: ${errorText(d.error)}`, "", ""];
    const k = d.description;
    const pin = !k.pinSupported
      ? "not supported"
      : k.pinSet
      ? `set, ${k.pinRetries ?? "?"} left${k.forcePinChange ? ", must change" : ""}`
      : "not set";
    return [
      k.device,
      k.vendorId === undefined ? "" : `${hex(k.vendorId)}:${hex(k.productId)}`,
      k.productName ?? "",
      k.aaguid,
      k.versions.join(","),
      pin,
      String(k.minPinLength),
      k.firmwareVersion === undefined ? k.deviceVersion ?? "" : String(k.firmwareVersion),
    ];
  });
  return table(["DEVICE", "VID:PID", "PRODUCT", "AAGUID", "VERSIONS", "PIN", "MIN PIN", "FIRMWARE"], rows);
}

async function openAuthenticator(
  context: CliContext,
  options: KeyOptions,
  extra: { create?: boolean; mustCreate?: boolean },
): Promise<Authenticator> {
  const pluginOptions = { ...optionsFor(context, "authenticator", options), ...extra };
  return await context.registry.authenticator(options.authenticator ?? "software").open(
    context,
    pluginOptions as never,
  );
}

function withAuthenticatorOptions<C extends CommandUnknownOpts>(command: C, context: CliContext): C {
  return withPluginOptions(command, context, "authenticator", "software");
}

async function managementToken(
  client: Ctap2Client,
  context: CliContext,
  authenticator: Authenticator,
): Promise<PinToken> {
  const info = await client.getInfo();
  if (info.options?.["credMgmt"] !== true && info.options?.["credentialMgmtPreview"] !== true) {
    throw new ProvisioningError(
      "unsupported",
      `Cannot manage passkeys on ${authenticator.label}: it does not support credential management`,
    );
  }
  if (info.options?.["clientPin"] !== true) {
    throw new ProvisioningError(
      "pin-not-set",
      `Cannot manage passkeys on ${authenticator.label}: it has no PIN, and managing passkeys needs one`,
      {
        hint: "Set one with `provisioning key set-pin`",
      },
    );
  }
  const { retries } = await client.getPinRetries();
  const pin = await pinFromEnvironment(context).requestPin({
    label: authenticator.label,
    attemptsLeft: retries,
  });
  return await client.getPinToken({ pin, permissions: PinUvAuthPermission.credentialManagement });
}

async function newPin(context: CliContext, label: string): Promise<string> {
  const fromEnv = context.env(keyPinEnv);
  if (fromEnv) return fromEnv;
  const pin = await context.readSecret({ label: `New PIN for ${label}`, hint: `Set ${keyPinEnv}` });
  const again = await context.readSecret({
    label: `Repeat the new PIN for ${label}`,
    hint: `Set ${keyPinEnv}`,
  });
  if (pin !== again) throw new UsageError("Cannot set the PIN: the two entries differ");
  return pin;
}

function infoAsJson(info: GetInfoResponse, pinRetries: number | undefined) {
  return { ...info, aaguid: formatAaguid(info.aaguid), ...(pinRetries === undefined ? {} : { pinRetries }) };
}

function formatInfo(label: string, info: GetInfoResponse, pinRetries: number | undefined): string {
  const options = Object.entries(info.options ?? {}).filter(([, on]) => on).map(([name]) => name);
  const rows: [string, string][] = [
    ["Authenticator", label],
    ["AAGUID", formatAaguid(info.aaguid)],
    ["Versions", info.versions.join(", ")],
    [
      "Algorithms",
      (info.algorithms ?? []).map((a) => algorithmNames[a.alg] ?? String(a.alg)).join(", ") || "not reported",
    ],
    ["Extensions", (info.extensions ?? []).join(", ") || "none"],
    ["Options", options.join(", ")],
    [
      "PIN",
      !("clientPin" in (info.options ?? {}))
        ? "not supported"
        : pinRetries === undefined
        ? "not set"
        : `set, ${pinRetries} attempts left`,
    ],
    ["Min PIN length", String(info.minPINLength ?? 4)],
    ["Force PIN change", info.forcePINChange ? "yes" : "no"],
    [
      "Passkeys that fit",
      info.remainingDiscoverableCredentials === undefined
        ? "not reported"
        : String(info.remainingDiscoverableCredentials),
    ],
    ["Transports", (info.transports ?? []).join(", ") || "not reported"],
    ["Firmware", info.firmwareVersion === undefined ? "not reported" : String(info.firmwareVersion)],
    [
      "Enterprise attestation",
      info.options?.["ep"] === true
        ? "enabled"
        : "ep" in (info.options ?? {})
        ? "supported, off"
        : "not supported",
    ],
  ];
  const width = Math.max(...rows.map(([name]) => name.length));
  return rows.map(([name, value]) => `${name.padEnd(width)}  ${value}\n`).join("");
}

function table(headings: string[], rows: string[][]): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ") + "\n";
  return line(headings) + rows.map(line).join("");
}
