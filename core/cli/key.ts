/**
 * `provisioning key`: look after an authenticator by hand — create a software key, read what a
 * key is (getInfo), list and delete its passkeys (credential management), set its PIN, and serve
 * it as a CTAPHID device on a Unix socket so any FIDO2 client can drive it.
 *
 * Every subcommand works on the authenticator plugin chosen with `--authenticator` (default
 * `software`) and takes that plugin's options (e.g. `--vault`), so nothing here knows a plugin.
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
import { ProvisioningError, UsageError } from "../errors.ts";
import type { Authenticator } from "../plugin.ts";
import type { CliContext } from "./context.ts";
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
      device: authenticator.device,
      signal: context.signal,
    });
    context.stderr.write(
      `Serving ${authenticator.label} on ${server.path} (CTAPHID, 64-byte reports). Ctrl+C stops.\n`,
    );
    await server.closed;
  });

  for (const command of [init, info, list, remove, setPin, serve]) key.addCommand(command);
  return key;
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
    ["PIN", pinRetries === undefined ? "not set" : `set, ${pinRetries} attempts left`],
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
