/**
 * The sign-in settings of the Entra plugin and where each comes from: command-line flags first,
 * then `PROVISIONING_*` environment variables, then the `"entra"` section of `provisioning.json`
 * in the working folder, then defaults.
 *
 * | setting | flag (the CLI's) | environment | file key |
 * |---|---|---|---|
 * | tenant (id or verified domain) | `--tenant` | `PROVISIONING_TENANT` | `tenant` |
 * | application (client) id | `--client-id` | `PROVISIONING_CLIENT_ID` | `clientId` |
 * | cloud | `--cloud` | `PROVISIONING_CLOUD` | `cloud` |
 * | sandbox URL (overrides cloud) | `--sandbox` | `PROVISIONING_SANDBOX` | `sandbox` |
 * | client secret | — | `PROVISIONING_CLIENT_SECRET` | — |
 * | certificate PEM path | `--client-certificate` | `PROVISIONING_CLIENT_CERTIFICATE` | `clientCertificate` |
 * | its key, if in another file | — | `PROVISIONING_CLIENT_CERTIFICATE_KEY` | `clientCertificateKey` |
 * | account to sign in as (hint) | `--account` | — | `account` |
 * | delegated Graph permissions | — | — | `permissions` |
 * | sign-in flow | `--login` → browser | — | `signIn` |
 * | token cache folder | — | — | `tokenCache` |
 * | token cache passphrase | — | `PROVISIONING_TOKEN_CACHE_PASSPHRASE` | — |
 *
 * Secrets come from the environment only: a flag shows in the process list and shell history, a
 * file gets committed. A `clientSecret` in the file is refused with that hint.
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import { UsageError } from "../../../core/errors.ts";
import { cloudByName, cloudFromSandbox, type EntraCloud } from "../cloud.ts";
import { defaultTokenCacheDir, tokenCachePassphraseEnv } from "./token_cache.ts";
import { defaultDelegatedPermissions } from "./tokens.ts";

/** The config file read from the working folder. */
export const configFileName = "provisioning.json";

/** How an admin signs in. */
export const signInFlows = ["device-code", "browser", "client-credentials"] as const;
/** One of {@link signInFlows}. */
export type SignInFlow = typeof signInFlows[number];

const guid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const domain =
  /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/i;

/** A tenant id (GUID) or verified domain; the multi-tenant aliases are refused. */
export const tenantSchema = z.string().trim().refine(
  (value) => guid.test(value) || domain.test(value),
  { message: "expected a tenant id (GUID) or a domain such as contoso.onmicrosoft.com" },
);

/** An application (client) id. */
export const clientIdSchema = z.string().trim().regex(guid, {
  message: "expected an application (client) id, a GUID",
});

/** The `"entra"` section of `provisioning.json`. Unknown keys are refused, so typos show. */
export const entraFileSettingsSchema = z.strictObject({
  tenant: tenantSchema.optional(),
  clientId: clientIdSchema.optional(),
  cloud: z.enum(["public", "usgov", "usgov-dod", "china"]).optional(),
  sandbox: z.url({ protocol: /^https?$/ }).optional(),
  clientCertificate: z.string().min(1).optional(),
  clientCertificateKey: z.string().min(1).optional(),
  account: z.string().min(3).max(256).optional(),
  permissions: z.array(z.string().min(1).max(200)).min(1).max(50).optional(),
  signIn: z.enum(signInFlows).optional(),
  tokenCache: z.string().min(1).optional(),
});

/** `provisioning.json`: sections per plugin; this module reads `"entra"` and leaves the rest. */
export const configFileSchema = z.looseObject({ entra: entraFileSettingsSchema.optional() });

/** The `"entra"` section, parsed. */
export type EntraFileSettings = z.infer<typeof entraFileSettingsSchema>;

/** Values the CLI parsed from flags (all optional; undefined means "not given"). */
export interface EntraFlagSettings {
  readonly tenant?: string | undefined;
  readonly clientId?: string | undefined;
  readonly cloud?: string | undefined;
  readonly sandbox?: string | undefined;
  readonly clientCertificate?: string | undefined;
  readonly account?: string | undefined;
  readonly signIn?: SignInFlow | undefined;
}

/** Where a setting's value came from. */
export type SettingSource = "flag" | "env" | "file" | "default";

/** The resolved settings. `clientSecret` and `tokenCachePassphrase` are secrets: never print them. */
export interface EntraSettings {
  readonly cloud: EntraCloud;
  /** Absent when it must be discovered (see `resolveTenant` in sign_in.ts). */
  readonly tenant: string | undefined;
  readonly clientId: string | undefined;
  readonly clientSecret: string | undefined;
  readonly clientCertificate: string | undefined;
  readonly clientCertificateKey: string | undefined;
  readonly account: string | undefined;
  /** Delegated Graph permissions to ask for (unqualified names). */
  readonly permissions: readonly string[];
  readonly signIn: SignInFlow;
  readonly tokenCacheDir: string;
  readonly tokenCachePassphrase: string | undefined;
  /** Where each setting came from, for `whoami` and error messages. */
  readonly sources: Readonly<Record<string, SettingSource>>;
}

/** Where {@link resolveEntraSettings} looks. */
export interface SettingsSources {
  readonly flags?: EntraFlagSettings;
  /** Reads an environment variable (the CLI context's `env`). @default Deno.env.get */
  readonly env?: (name: string) => string | undefined;
  /** The working folder. @default "." */
  readonly cwd?: string;
  /** The config file, relative to `cwd`; `null` reads none. @default "provisioning.json" */
  readonly configFile?: string | null;
}

/**
 * Resolves the settings: flags > environment > `provisioning.json` > defaults.
 *
 * @throws {UsageError} (exit code 2) naming the setting and where it came from, for a value that
 * is not valid, a config file that is not JSON or has unknown keys, or a secret in the file.
 * @example
 * ```ts
 * import { resolveEntraSettings } from "./settings.ts";
 * const env = (name: string) => ({ PROVISIONING_TENANT: "contoso.com" } as Record<string, string>)[name];
 * const settings = await resolveEntraSettings({ flags: { tenant: "fabrikam.com" }, env, configFile: null });
 * console.assert(settings.tenant === "fabrikam.com" && settings.sources.tenant === "flag");
 * ```
 */
export async function resolveEntraSettings(sources: SettingsSources = {}): Promise<EntraSettings> {
  const flags = sources.flags ?? {};
  const env = sources.env ?? ((name: string) => Deno.env.get(name));
  const cwd = sources.cwd ?? ".";
  const file = sources.configFile === null
    ? {}
    : await readConfigFile(join(cwd, sources.configFile ?? configFileName));
  const origin: Record<string, SettingSource> = {};
  const envValue = (name: string) => {
    const value = env(name)?.trim();
    return value === "" ? undefined : value;
  };

  /** Picks flag, env, file in that order, validating with `schema` and naming the source on failure. */
  function pick<T>(
    key: string,
    candidates: { flag?: string | undefined; env?: string; file?: T | undefined },
    schema: z.ZodType<T>,
  ): T | undefined {
    if (candidates.flag !== undefined && candidates.flag !== "") {
      origin[key] = "flag";
      return check(schema, candidates.flag, `--${kebab(key)}`);
    }
    const fromEnv = candidates.env === undefined ? undefined : envValue(candidates.env);
    if (fromEnv !== undefined) {
      origin[key] = "env";
      return check(schema, fromEnv, candidates.env!);
    }
    if (candidates.file !== undefined) {
      origin[key] = "file";
      return candidates.file;
    }
    return undefined;
  }

  const tenant = pick(
    "tenant",
    { flag: flags.tenant, env: "PROVISIONING_TENANT", file: file.tenant },
    tenantSchema,
  );
  const clientId = pick(
    "clientId",
    { flag: flags.clientId, env: "PROVISIONING_CLIENT_ID", file: file.clientId },
    clientIdSchema,
  );
  const sandbox = pick(
    "sandbox",
    { flag: flags.sandbox, env: "PROVISIONING_SANDBOX", file: file.sandbox },
    z.string(),
  );
  const cloudName = pick(
    "cloud",
    { flag: flags.cloud, env: "PROVISIONING_CLOUD", file: file.cloud },
    z.string(),
  );
  const cloud = sandbox !== undefined ? cloudFromSandbox(sandbox) : cloudByName(cloudName ?? "public");
  if (sandbox !== undefined) origin.cloud = origin.sandbox!;
  else origin.cloud ??= "default";

  const clientSecret = envValue("PROVISIONING_CLIENT_SECRET");
  if (clientSecret !== undefined) origin.clientSecret = "env";
  const clientCertificate = pick(
    "clientCertificate",
    { flag: flags.clientCertificate, env: "PROVISIONING_CLIENT_CERTIFICATE", file: file.clientCertificate },
    z.string().min(1),
  );
  const clientCertificateKey = pick(
    "clientCertificateKey",
    { env: "PROVISIONING_CLIENT_CERTIFICATE_KEY", file: file.clientCertificateKey },
    z.string().min(1),
  );
  const account = pick("account", { flag: flags.account, file: file.account }, z.string().min(3).max(256));
  const permissions = file.permissions ?? defaultDelegatedPermissions;
  origin.permissions = file.permissions ? "file" : "default";

  let signIn: SignInFlow;
  if (flags.signIn !== undefined) {
    signIn = flags.signIn;
    origin.signIn = "flag";
  } else if (file.signIn !== undefined) {
    signIn = file.signIn;
    origin.signIn = "file";
  } else {
    signIn = clientSecret !== undefined || clientCertificate !== undefined
      ? "client-credentials"
      : "device-code";
    origin.signIn = "default";
  }
  if (signIn === "client-credentials" && clientSecret === undefined && clientCertificate === undefined) {
    throw new UsageError(
      "Cannot sign in with client credentials: neither a client secret nor a certificate is set",
      {
        hint:
          "Set PROVISIONING_CLIENT_SECRET, or PROVISIONING_CLIENT_CERTIFICATE to a PEM file with the certificate and its key",
      },
    );
  }
  const tokenCachePassphrase = envValue(tokenCachePassphraseEnv);
  if (tokenCachePassphrase !== undefined) origin.tokenCachePassphrase = "env";
  origin.tokenCache = file.tokenCache ? "file" : "default";

  return {
    cloud,
    tenant,
    clientId,
    clientSecret,
    clientCertificate: clientCertificate === undefined ? undefined : resolvePath(cwd, clientCertificate),
    clientCertificateKey: clientCertificateKey === undefined
      ? undefined
      : resolvePath(cwd, clientCertificateKey),
    account,
    permissions,
    signIn,
    tokenCacheDir: resolvePath(cwd, file.tokenCache ?? defaultTokenCacheDir),
    tokenCachePassphrase,
    sources: origin,
  };
}

/**
 * The settings as safe to print: secrets shown as `"(set)"`, the cloud by name and login host.
 */
export function describeSettings(
  settings: EntraSettings,
): Record<string, string | readonly string[] | undefined> {
  return {
    cloud: `${settings.cloud.name} (${settings.cloud.loginBase})`,
    tenant: settings.tenant,
    clientId: settings.clientId,
    clientSecret: settings.clientSecret === undefined ? undefined : "(set)",
    clientCertificate: settings.clientCertificate,
    account: settings.account,
    permissions: settings.permissions,
    signIn: settings.signIn,
    tokenCache: settings.tokenCacheDir,
    tokenCachePassphrase: settings.tokenCachePassphrase === undefined ? undefined : "(set)",
  };
}

async function readConfigFile(path: string): Promise<EntraFileSettings> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new UsageError(`Cannot read "${path}": it is not JSON (${(cause as Error).message})`, { cause });
  }
  const section = z.object({ entra: z.record(z.string(), z.unknown()).optional() }).safeParse(json);
  if (section.success && section.data.entra !== undefined) {
    for (const secret of ["clientSecret", "client_secret", "tokenCachePassphrase"]) {
      if (secret in section.data.entra) {
        throw new UsageError(
          `Cannot read "${path}": "entra.${secret}" is a secret and does not belong in a file`,
          {
            hint: secret === "tokenCachePassphrase"
              ? `Remove it and set ${tokenCachePassphraseEnv}`
              : "Remove it and set PROVISIONING_CLIENT_SECRET (or use a certificate: PROVISIONING_CLIENT_CERTIFICATE)",
          },
        );
      }
    }
  }
  const parsed = configFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join(".") || "(top level)";
    const detail = issue?.code === "unrecognized_keys"
      ? `unknown key ${issue.keys.map((k) => `"${k}"`).join(", ")}`
      : issue?.message;
    throw new UsageError(`Cannot read "${path}": "${field}" is not valid (${detail})`, {
      hint: 'Check the "entra" section against the README\'s settings table',
    });
  }
  return parsed.data.entra ?? {};
}

function check<T>(schema: z.ZodType<T>, value: string, source: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new UsageError(
      `Cannot use ${source} "${value}": ${parsed.error.issues[0]?.message ?? "not valid"}`,
    );
  }
  return parsed.data;
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function resolvePath(cwd: string, path: string): string {
  return path.startsWith("/") || /^[A-Za-z]:[\\/]/.test(path) || cwd === "." ? path : join(cwd, path);
}
