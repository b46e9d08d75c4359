/**
 * The `entra` provider plugin: Microsoft Entra ID through Microsoft Graph. It ties the pieces of
 * this folder together — settings and sign-in (auth/), the Graph client and its calls (graph/),
 * the session the provisioning paths use (session.ts), the preflight, and the sandbox tenant
 * (sandbox/) — behind the contract of core/plugin.ts.
 *
 * @module
 */
import { z } from "zod";
import type {
  AccountSummary,
  AuthenticatorFacts,
  BrowserRegistrationOptions,
  ConnectHints,
  DirectoryUser,
  PasskeyMethod,
  PluginContext,
  PreflightFinding,
  ProviderPlugin,
  RunningSandbox,
} from "../../core/plugin.ts";
import { ProvisioningError, UsageError } from "../../core/errors.ts";
import { login, logout, whoami } from "./auth/sign_in.ts";
import { createEntraSignIn, type SignInIo } from "./auth/sign_in.ts";
import { type EntraSettings, resolveEntraSettings, signInFlows } from "./auth/settings.ts";
import { forGraphClient } from "./auth/token_source.ts";
import { toAccountSummary, whoAmI } from "./auth/whoami.ts";
import { pacerObserver } from "./graph/pacer_observer.ts";
import { GraphClient } from "./graph/client.ts";
import { challengeTimeoutRange } from "./graph/fido2.ts";
import { runPreflight } from "./graph/policies.ts";
import { startSandbox } from "./sandbox/server.ts";
import { EntraSession } from "./session.ts";

/** The options the `entra` plugin takes from the command line (parsed here: they come from outside). */
export const entraOptionsSchema = z.object({
  tenant: z.string().optional(),
  clientId: z.string().optional(),
  cloud: z.string().optional(),
  sandbox: z.string().optional(),
  clientCertificate: z.string().optional(),
  account: z.string().optional(),
  signIn: z.enum(signInFlows).optional(),
  graphVersion: z.enum(["v1.0", "beta"]).optional(),
  /**
   * Minutes a passkey challenge stays valid (beta only, 5 to 43200): `batch fetch` asks for long
   * ones, so keys can be written for hours or days before the batch is registered.
   */
  challengeTimeout: z.coerce.number().int().optional(),
  /** `provisioning sandbox`: the port to listen on (0: any free one). */
  port: z.coerce.number().int().min(0).max(65535).optional(),
  /** `provisioning sandbox`: how many users to seed. */
  users: z.coerce.number().int().min(1).max(1_000_000).optional(),
});

/** Parsed options of the `entra` plugin. */
export type EntraOptions = z.input<typeof entraOptionsSchema>;

function parseOptions(raw: unknown): z.infer<typeof entraOptionsSchema> {
  const parsed = entraOptionsSchema.safeParse(raw ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new UsageError(`Cannot use the Entra option "${issue.path.join(".")}": ${issue.message}`);
}

async function settingsFor(context: PluginContext, raw: unknown): Promise<EntraSettings> {
  const options = parseOptions(raw);
  return await resolveEntraSettings({
    flags: {
      tenant: options.tenant,
      clientId: options.clientId,
      cloud: options.cloud,
      sandbox: options.sandbox,
      clientCertificate: options.clientCertificate,
      account: options.account,
      signIn: options.signIn,
    },
    env: context.env,
  });
}

function ioFor(context: PluginContext, interactive: boolean): SignInIo {
  return {
    notify: context.notify ?? ((text) => console.error(text)),
    interactive,
    ...(context.signal ? { signal: context.signal } : {}),
    ...(context.fetch ? { fetch: context.fetch } : {}),
  };
}

/** Signs in (cached tokens first) and opens a Graph session. */
async function connect(
  context: PluginContext,
  raw: EntraOptions,
  hints: ConnectHints = {},
): Promise<EntraSession> {
  const options = parseOptions(raw);
  const timeout = options.challengeTimeout;
  if (timeout !== undefined) {
    if ((options.graphVersion ?? "v1.0") !== "beta") {
      throw new UsageError(
        "Cannot use --challenge-timeout with Graph v1.0: its challenges last 5 minutes; add --graph-version beta",
      );
    }
    if (timeout < challengeTimeoutRange.min || timeout > challengeTimeoutRange.max) {
      throw new UsageError(
        `Cannot use --challenge-timeout ${timeout}: Graph takes ${challengeTimeoutRange.min} to ${challengeTimeoutRange.max} minutes`,
      );
    }
  }
  const settings = await settingsFor(context, raw);
  // With no tenant configured, the domain of the first user to provision names it (OpenID discovery).
  const tenantHint = hints.users?.find((reference) => reference.includes("@"));
  const signIn = await createEntraSignIn(settings, {
    ...ioFor(context, true),
    ...(tenantHint ? { tenantHint } : {}),
  });
  const token = await signIn.source.getAccessToken(context.signal);
  const who = whoAmI(token, { kind: signIn.kind });
  const client = new GraphClient({
    baseUrl: settings.cloud.graphBase,
    version: options.graphVersion ?? "v1.0",
    token: forGraphClient(signIn.source),
    ...(context.fetch ? { fetch: context.fetch } : {}),
    ...(context.pacer ? { observer: pacerObserver(context.pacer) } : {}),
  });
  return new EntraBrowserSession({
    client,
    cloud: settings.cloud,
    ...(who.tenantId ? { tenantId: who.tenantId } : {}),
    ...(who.account?.objectId ? { signedInUserId: who.account.objectId } : {}),
    ...(timeout === undefined ? {} : { challengeTimeoutInMinutes: timeout }),
  });
}

/** The session {@link connect} returns: the API path, plus the browser path of plugins/entra/browser/. */
class EntraBrowserSession extends EntraSession {
  /** Registers through Microsoft's sign-in and Security info pages (`--via browser`). */
  async registerInBrowser(
    user: DirectoryUser,
    options: BrowserRegistrationOptions,
  ): Promise<{ method: PasskeyMethod; credentialId: string }> {
    if (options.via === "tap") {
      // The browserless TAP path (plugins/entra/tap/): the same sequence without pages.
      const { registerWithPass } = await import("./tap/register.ts");
      return await registerWithPass({
        session: this,
        user,
        authenticator: options.authenticator,
        interaction: options.interaction,
        displayName: options.displayName,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onPassIssued ? { onPassIssued: options.onPassIssued } : {}),
      });
    }
    const browser = options.browser;
    if (!browser) {
      throw new ProvisioningError(
        "browser-path-unavailable",
        "Cannot register through the browser: no browser",
      );
    }
    // Loaded on first use: puppeteer is large, and API runs never need it.
    const { registerInBrowser } = await import("./browser/register.ts");
    return await registerInBrowser({ session: this, user, ...options, browser });
  }
}

/** What Microsoft will make of the authenticator's attestation, from what its plugin says. */
function attestationKind(facts: AuthenticatorFacts): "trusted" | "self" | "none" | "unknown" {
  // The software key's packed chain ends at its own root, not at a FIDO Metadata Service entry.
  if (facts.attestation === "packed") return facts.label.startsWith("software key") ? "self" : "unknown";
  if (facts.attestation === "none") return "none";
  return "unknown";
}

/** See the module documentation. */
export const entraProvider: ProviderPlugin<EntraOptions> = {
  kind: "provider",
  manifest: {
    id: "entra",
    summary: "Microsoft Entra ID, through Microsoft Graph (passkeys, Temporary Access Passes, policies)",
    hosts: ["login.microsoftonline.com", "login.microsoft.com", "graph.microsoft.com"],
    files: ["provisioning.json", ".provisioning/ (encrypted token cache)"],
    env: [
      "PROVISIONING_TENANT",
      "PROVISIONING_CLIENT_ID",
      "PROVISIONING_CLIENT_SECRET",
      "PROVISIONING_CLIENT_CERTIFICATE",
      "PROVISIONING_CLIENT_CERTIFICATE_KEY",
      "PROVISIONING_SANDBOX",
      "PROVISIONING_TOKEN_CACHE_PASSPHRASE",
    ],
    run: [
      "/usr/bin/xdg-open | /usr/local/bin/xdg-open | /usr/bin/open | %SystemRoot%\\System32\\rundll32.exe (browser sign-in only)",
    ],
    options: [
      {
        flags: "--tenant <tenant>",
        description: "tenant id or domain (discovered from the UPN when left out)",
      },
      { flags: "--client-id <id>", description: "the app registration's client id" },
      { flags: "--cloud <name>", description: "public, usgov, usgov-dod or china", default: "public" },
      { flags: "--sandbox <url>", description: "use a sandbox at this URL for every endpoint and the rp id" },
      { flags: "--client-certificate <pem>", description: "certificate (with key) for client credentials" },
      { flags: "--account <upn>", description: "the admin account to sign in as" },
      { flags: "--sign-in <flow>", description: "device-code, browser or client-credentials" },
      { flags: "--graph-version <version>", description: "v1.0 or beta", default: "v1.0" },
      {
        flags: "--challenge-timeout <minutes>",
        description:
          "how long a passkey challenge stays valid, 5 to 43200 minutes (needs --graph-version beta)",
      },
      { flags: "--port <n>", description: "sandbox: port to listen on (0: any)", default: "0" },
      { flags: "--users <n>", description: "sandbox: users to seed", default: "25" },
    ],
  },

  connect,

  async login(context, raw): Promise<AccountSummary> {
    return toAccountSummary(await login(await settingsFor(context, raw), ioFor(context, true)));
  },

  async logout(context, raw): Promise<void> {
    await logout(await settingsFor(context, raw));
  },

  async whoami(context, raw): Promise<AccountSummary> {
    return toAccountSummary(await whoami(await settingsFor(context, raw), ioFor(context, false)));
  },

  async preflight(context, raw, facts, hints = {}): Promise<PreflightFinding[]> {
    await using session = await connect(context, raw, hints);
    const settings = await settingsFor(context, raw);
    const tenantHint = hints.users?.find((reference) => reference.includes("@"));
    const signIn = await createEntraSignIn(settings, {
      ...ioFor(context, false),
      ...(tenantHint ? { tenantHint } : {}),
    });
    const who = whoAmI(await signIn.source.getAccessToken(context.signal), { kind: signIn.kind });
    return await runPreflight(session.client, {
      path: "api",
      authenticator: {
        label: facts.label,
        aaguid: facts.aaguid,
        attestation: attestationKind(facts),
        ...(facts.attestation === undefined ? {} : { attestationFormat: facts.attestation }),
      },
      grants: who.kind === "app" ? { kind: "application", permissions: who.roles } : {
        kind: "delegated",
        permissions: who.scopes,
        roleTemplateIds: who.directoryRoles.map((role) => role.id),
      },
      ...(context.signal ? { signal: context.signal } : {}),
    });
  },

  async startSandbox(_context, raw): Promise<RunningSandbox> {
    const options = parseOptions(raw);
    const sandbox = await startSandbox({
      port: options.port ?? 0,
      users: options.users ?? 25,
      // Entra's real shapes (rp id login.microsoft.com, origin https://login.microsoft.com, JWE
      // challenges, three id encodings): `--sandbox URL` runs exactly what production runs.
    });
    return {
      url: sandbox.url,
      instructions: sandboxInstructions(sandbox),
      [Symbol.asyncDispose]: () => sandbox.close(),
    };
  },
};

function sandboxInstructions(sandbox: Awaited<ReturnType<typeof startSandbox>>): string {
  const firstUser = sandbox.tenant.users()[0]?.userPrincipalName ?? `user0001@${sandbox.domain}`;
  return [
    `Entra sandbox tenant listening on ${sandbox.url} (loopback only; Ctrl+C stops it)`,
    "",
    `  tenant         ${sandbox.tenantId} (${sandbox.domain})`,
    `  admin          ${sandbox.admin.userPrincipalName} / ${sandbox.admin.password}  (Authentication Administrator)`,
    `  app            client id ${sandbox.app.clientId}`,
    `  inspection     ${sandbox.url}/_sandbox/inspect`,
    "",
    "These are sandbox credentials, valid only here. Client-credential runs:",
    "",
    `  export PROVISIONING_SANDBOX=${sandbox.url}`,
    `  export PROVISIONING_TENANT=${sandbox.tenantId}`,
    `  export PROVISIONING_CLIENT_ID=${sandbox.app.clientId}`,
    `  export PROVISIONING_CLIENT_SECRET=${sandbox.app.clientSecret}`,
    `  provisioning provision --user ${firstUser}`,
  ].join("\n");
}
