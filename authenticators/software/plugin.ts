/**
 * The `software` authenticator plugin: a FIDO2 security key in software whose state lives in an
 * encrypted vault file. For the demo, for tests, for plugin authors, and for organisations that
 * hold credentials in a managed vault rather than on hardware.
 *
 * @example
 * ```ts ignore
 * await using key = await softwareAuthenticator.open(context, { vault: "alice.vault" });
 * const info = await new Ctap2Client(key.device).getInfo();
 * ```
 *
 * @module
 */
import { parseAaguid } from "../../core/aaguid.ts";
import { z } from "zod";
import type { Authenticator, AuthenticatorPlugin, PluginContext } from "../../core/plugin.ts";
import { UsageError } from "../../core/errors.ts";
import { readNewSecret, readSecret } from "../../core/secrets.ts";
import { createAttestationChain } from "./attestation.ts";
import { SoftwareAuthenticator, type UserPresenceCheck } from "./authenticator.ts";
import {
  applyKeyStateChange,
  defaultAaguid,
  defaultMaxDiscoverableCredentials,
  type KeyStateChange,
  keyStateChangeSchema,
  maxMaxDiscoverableCredentials,
  newKeyState,
  type SoftwareKeyState,
  softwareKeyStateSchema,
} from "./state.ts";
import { defaultKdfIterations, maxKdfIterations, Vault, VaultError, vaultPassphraseEnv } from "./vault.ts";
import { defaultGuardDir } from "./vault_guard.ts";

/** The environment variable that names the vault when `--vault` is not given. */
export const vaultPathEnv = "PROVISIONING_VAULT";

/** Where the vault is when neither `--vault` nor PROVISIONING_VAULT says. */
export const defaultVaultPath = "software-key.vault";

/**
 * The fewest PBKDF2 iterations a vault may be given: the default's order of magnitude. Below it a
 * stolen vault's passphrase is cheap to guess (600,000 is OWASP's 2023 figure for PBKDF2-SHA256).
 */
export const minKdfIterations = 100_000;

/** The options of the software key, as the CLI passes them (parsed here: they come from outside). */
export const softwareKeyOptionsSchema = z.object({
  /** Vault file. @default PROVISIONING_VAULT, then "software-key.vault" */
  vault: z.string().min(1).optional(),
  /** AAGUID of a new key (an existing vault keeps its own). */
  aaguid: z.string().optional(),
  /** Attestation of a new key. @default "packed" */
  attestation: z.enum(["packed", "none"]).optional(),
  /** PBKDF2 iterations for a new vault; an existing one is re-encrypted with them. @default 600000 */
  kdfIterations: z.coerce.number().int().min(minKdfIterations).max(maxKdfIterations).optional(),
  /** Most passkeys the key holds: set on a new key, changed on an existing one. @default 100000 */
  maxCredentials: z.coerce.number().int().min(1).max(maxMaxDiscoverableCredentials).optional(),
  /** The rollback guard's folder (vault_guard.ts). @default ".provisioning/vaults" */
  vaultGuardDir: z.string().min(1).optional(),
  /** Create the vault when it does not exist. @default true */
  create: z.boolean().optional(),
  /** Refuse to open an existing vault (what `key init` wants). @default false */
  mustCreate: z.boolean().optional(),
});

/** Parsed options of the software key. */
export type SoftwareKeyOptions = z.input<typeof softwareKeyOptionsSchema>;

/** An opened software key: the authenticator plus its vault, for commands that need both. */
export interface OpenSoftwareKey extends Authenticator {
  readonly vault: Vault<SoftwareKeyState, KeyStateChange>;
  readonly created: boolean;
}

/** The vault path the options and environment choose. */
export function vaultPathFor(options: SoftwareKeyOptions, env: (name: string) => string | undefined): string {
  return options.vault ?? env(vaultPathEnv) ?? defaultVaultPath;
}

/**
 * Opens (or creates) the software key. `userPresence` is for tests and the socket server that
 * want touches to take time or be refused; by default every touch is given at once.
 */
export async function openSoftwareKey(
  context: PluginContext,
  rawOptions: unknown,
  extra: { userPresence?: UserPresenceCheck } = {},
): Promise<OpenSoftwareKey> {
  const parsed = softwareKeyOptionsSchema.safeParse(rawOptions ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0] ?? "");
    if (name === "kdfIterations") {
      throw new UsageError(
        `Cannot use --kdf-iterations ${String((rawOptions as Record<string, unknown>)[name])}: ` +
          `a vault needs from ${minKdfIterations} to ${maxKdfIterations} PBKDF2 iterations`,
        {
          hint: `Leave it out for the default (${defaultKdfIterations}, OWASP's 2023 figure); fewer makes ` +
            "a stolen vault's passphrase cheap to guess",
        },
      );
    }
    throw new UsageError(`Cannot open the software key: option "${issue.path.join(".")}" ${issue.message}`);
  }
  const options = parsed.data;
  const path = vaultPathFor(options, context.env);
  const exists = await Vault.exists(path);
  const label = `software key "${path}"`;
  if (exists && options.mustCreate) {
    throw new VaultError("vault-exists", path, `Cannot create vault "${path}": the file exists`, {
      hint: "Choose another --vault path, or delete the old file if its credentials are no longer needed",
    });
  }
  if (!exists && options.create === false) {
    throw new VaultError(
      "vault-missing",
      path,
      `Cannot open the software key: vault "${path}" does not exist`,
      {
        hint:
          "Create it with `provisioning key init` (or point --vault / PROVISIONING_VAULT at the right file)",
      },
    );
  }
  const passphrase = exists
    ? await readSecret(`Passphrase for vault "${path}"`, { env: vaultPassphraseEnv, source: context })
    : await readNewSecret(`New passphrase for vault "${path}"`, {
      env: vaultPassphraseEnv,
      source: context,
      minLength: 8,
    });
  const aaguid = options.aaguid === undefined ? undefined : parseAaguid(options.aaguid);
  const vault = await Vault.open({
    path,
    passphrase,
    schema: softwareKeyStateSchema,
    changes: { schema: keyStateChangeSchema, apply: applyKeyStateChange },
    create: options.create ?? true,
    kdfIterations: options.kdfIterations ?? defaultKdfIterations,
    guardDir: options.vaultGuardDir ?? defaultGuardDir,
    initial: async () =>
      newKeyState({
        ...(aaguid ? { aaguid } : {}),
        attestation: options.attestation ?? "packed",
        maxDiscoverableCredentials: options.maxCredentials ?? defaultMaxDiscoverableCredentials,
        chain: await createAttestationChain({ aaguid: aaguid ?? parseAaguid(defaultAaguid) }),
      }),
  });
  try {
    await applySettings(vault, options, passphrase);
  } catch (error) {
    await vault[Symbol.asyncDispose]();
    throw error;
  }
  const device = new SoftwareAuthenticator(
    vault,
    extra.userPresence ? { userPresence: extra.userPresence } : {},
  );
  return {
    label,
    device,
    vault,
    attestationFormat: vault.read().attestation.format,
    created: !exists,
    async [Symbol.asyncDispose]() {
      try {
        // A PIN retry restore still owed is saved before the vault closes (docs/keys.md).
        await device.flush();
      } finally {
        await vault[Symbol.asyncDispose]();
      }
    },
  };
}

/** Applies --max-credentials and --kdf-iterations to an existing vault that differs from them. */
async function applySettings(
  vault: Vault<SoftwareKeyState, KeyStateChange>,
  options: z.infer<typeof softwareKeyOptionsSchema>,
  passphrase: string,
): Promise<void> {
  const wanted = options.maxCredentials;
  if (wanted !== undefined && vault.read().maxDiscoverableCredentials !== wanted) {
    const held = vault.read().credentials.length;
    if (wanted < held) {
      throw new UsageError(
        `Cannot set --max-credentials ${wanted} on vault "${vault.path}": it holds ${held} passkeys already`,
        { hint: "Delete passkeys with `provisioning key delete` first, or choose a larger number" },
      );
    }
    await vault.change(() => ({ set: { maxDiscoverableCredentials: wanted } }));
  }
  if (options.kdfIterations !== undefined && vault.kdfIterations !== options.kdfIterations) {
    await vault.changePassphrase(passphrase, { kdfIterations: options.kdfIterations });
  }
}

/** The plugin object `main.ts` registers. */
export const softwareAuthenticator: AuthenticatorPlugin<SoftwareKeyOptions> = {
  kind: "authenticator",
  manifest: {
    id: "software",
    summary: "A FIDO2 (CTAP 2.1) security key in software, its state in an encrypted vault file",
    hosts: [],
    files: ["the vault file (--vault)"],
    env: [vaultPathEnv, vaultPassphraseEnv],
    options: [
      {
        flags: "--vault <path>",
        description: "the software key's vault file",
        env: vaultPathEnv,
        default: defaultVaultPath,
      },
      { flags: "--aaguid <uuid>", description: "AAGUID of a new software key" },
      {
        flags: "--kdf-iterations <n>",
        description:
          `PBKDF2 iterations of the vault's key (at least ${minKdfIterations}); an existing vault is re-encrypted`,
        default: String(defaultKdfIterations),
      },
      {
        flags: "--max-credentials <n>",
        description: "most passkeys the software key holds: set on a new key, changed on an existing one",
        default: String(defaultMaxDiscoverableCredentials),
      },
      {
        flags: "--vault-guard-dir <dir>",
        description: "where the vault's rollback guard is kept (how far each vault had got)",
        default: defaultGuardDir,
      },
      {
        flags: "--attestation <format>",
        description: "attestation of a new software key: packed or none",
        default: "packed",
      },
    ],
  },
  open: (context, options) => openSoftwareKey(context, options),
};
