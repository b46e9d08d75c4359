/**
 * The Okta provider plugin, written against core/plugin.ts only: passkeys for Okta users as
 * WebAuthn factors through the Management API's Factors API, signed in with an API token.
 *
 * Options (namespaced, so they never collide with another provider's): `--okta-org URL` (or
 * `PROVISIONING_OKTA_ORG`), and the token from `PROVISIONING_OKTA_TOKEN` only: a secret on the
 * command line would show in the process list.
 *
 * @module
 */
import { exportJWK, importPKCS8, type JWK } from "jose";
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";
import type {
  Manifest,
  PluginContext,
  ProviderPlugin,
  ProviderSession,
  RunningSandbox,
} from "../../core/plugin.ts";
import { normalizeOrigin } from "../../core/webauthn/rp_id.ts";
import { apiToken, OktaApi, type OktaCredential } from "./api.ts";
import { oktaReasons } from "./errors.ts";
import { serviceAppCredential } from "./oauth.ts";
import { OktaSession } from "./session.ts";

/** The environment variable that holds the API token. */
export const oktaTokenEnv = "PROVISIONING_OKTA_TOKEN";
/** The environment variable that may hold the org URL. */
export const oktaOrgEnv = "PROVISIONING_OKTA_ORG";

/** The plugin's options as commander hands them over (`--okta-org` → `oktaOrg`). */
export const oktaOptionsSchema = z.object({
  oktaOrg: z.string().optional(),
  oktaClientId: z.string().min(1).optional(),
  oktaPrivateKey: z.string().min(1).optional(),
});
/** Parsed options of the Okta provider. */
export type OktaOptions = z.infer<typeof oktaOptionsSchema>;

/**
 * What the plugin needs. `hosts` lists Okta's documented org domains; the exact host is the one of
 * `--okta-org` ({@link oktaPermissions} computes it, a custom domain included).
 */
export const oktaManifest: Manifest = {
  id: "okta",
  summary: "Okta: passkeys as WebAuthn factors through the Factors API (API token)",
  hosts: ["*.okta.com", "*.oktapreview.com", "*.okta-emea.com"],
  env: [oktaTokenEnv, oktaOrgEnv],
  options: [
    {
      flags: "--okta-org <url>",
      description: "the Okta org URL, e.g. https://acme.okta.com",
      env: oktaOrgEnv,
    },
    {
      flags: "--okta-client-id <id>",
      description: "sign in as this OAuth 2.0 service app (private_key_jwt, DPoP when the app requires it)",
    },
    {
      flags: "--okta-private-key <file>",
      description: "the service app's private key: a JWK (JSON) or PKCS#8 PEM file",
    },
  ],
};

/** The permissions the plugin needs for these options: the org's host and its two variables. */
export function oktaPermissions(options: OktaOptions): { net: string[]; env: string[]; read: string[] } {
  const org = options.oktaOrg ? orgUrlOf(options.oktaOrg) : undefined;
  return {
    net: org ? [new URL(org).host] : [],
    env: [oktaTokenEnv, oktaOrgEnv],
    read: options.oktaPrivateKey ? [options.oktaPrivateKey] : [],
  };
}

/** See the module documentation. */
export const oktaProvider: ProviderPlugin<OktaOptions> = {
  kind: "provider",
  manifest: oktaManifest,
  /** Starts a sandbox org on loopback (loaded only when asked for: the shipped program need not carry its verifier). */
  async startSandbox(_context: PluginContext, _options: OktaOptions): Promise<RunningSandbox> {
    const { startOktaSandbox } = await import("./sandbox/server.ts");
    const sandbox = await startOktaSandbox({ users: 10 });
    return {
      url: sandbox.url,
      instructions: [
        `Okta sandbox org at ${sandbox.url}, users user1..user10@example.com.`,
        `Use --provider okta --okta-org ${sandbox.url} with ${oktaTokenEnv} set to the sandbox's API token:`,
        `  ${sandbox.token}`,
        "(a throwaway token of this sandbox only)",
      ].join("\n"),
      [Symbol.asyncDispose]: () => sandbox.close(),
    };
  },
  async connect(context: PluginContext, options: OktaOptions): Promise<ProviderSession> {
    const parsed = oktaOptionsSchema.parse(options);
    const orgInput = parsed.oktaOrg ?? context.env(oktaOrgEnv);
    if (!orgInput) {
      throw new ProvisioningError("usage", "Cannot connect to Okta: no org URL", {
        hint: `Give --okta-org https://YOUR-ORG.okta.com (or set ${oktaOrgEnv})`,
        exitCode: 2,
      });
    }
    const orgUrl = orgUrlOf(orgInput);
    const api = new OktaApi({
      orgUrl,
      credential: await credentialOf(context, parsed, orgUrl),
      ...(context.fetch ? { fetch: context.fetch } : {}),
      ...(context.pacer ? { pacer: context.pacer } : {}),
    });
    return new OktaSession(api);
  },
};

/** The service app when `--okta-client-id` is given, else the API token; both at once is refused. */
async function credentialOf(
  context: PluginContext,
  options: OktaOptions,
  orgUrl: string,
): Promise<OktaCredential> {
  const token = context.env(oktaTokenEnv);
  if (options.oktaClientId !== undefined || options.oktaPrivateKey !== undefined) {
    if (token) {
      throw new ProvisioningError(
        "usage",
        `Cannot choose how to sign in to Okta: ${oktaTokenEnv} and a service app are both given`,
        {
          hint:
            `Unset ${oktaTokenEnv} to sign in as the service app, or drop --okta-client-id/--okta-private-key`,
          exitCode: 2,
        },
      );
    }
    if (!options.oktaClientId || !options.oktaPrivateKey) {
      throw new ProvisioningError(
        "usage",
        "Cannot sign in as an Okta service app: give both --okta-client-id and --okta-private-key",
        {
          exitCode: 2,
        },
      );
    }
    return serviceAppCredential({
      orgUrl,
      clientId: options.oktaClientId,
      privateKey: await readPrivateKey(options.oktaPrivateKey),
      ...(context.fetch ? { fetch: context.fetch } : {}),
    });
  }
  if (!token) {
    throw new ProvisioningError(oktaReasons.unauthorized, "Cannot connect to Okta: no API token", {
      hint:
        `Set ${oktaTokenEnv} to an API token of an admin who may manage users' factors, or give --okta-client-id and --okta-private-key`,
      exitCode: 2,
    });
  }
  return apiToken(token);
}

/** A private key file: a JWK (as the Admin Console shows it) or PKCS#8 PEM (RS256 assumed). */
async function readPrivateKey(path: string): Promise<JWK> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ProvisioningError(
      "usage",
      `Cannot read the Okta private key "${path}": ${(error as Error).message}`,
      {
        exitCode: 2,
        cause: error,
      },
    );
  }
  if (text.includes("-----BEGIN PRIVATE KEY-----")) {
    const jwk = await exportJWK(await importPKCS8(text, "RS256", { extractable: true }));
    return { ...jwk, alg: "RS256" };
  }
  const parsed = z.object({ kty: z.string(), d: z.string() }).loose().safeParse(safeJson(text));
  if (!parsed.success) {
    throw new ProvisioningError(
      "usage",
      `Cannot use "${path}" as the Okta private key: it is neither a private JWK nor a PKCS#8 PEM`,
      {
        exitCode: 2,
      },
    );
  }
  return parsed.data as JWK;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The org URL as a serialized origin (the WebAuthn origin too); a path or a bad scheme is refused. */
function orgUrlOf(input: string): string {
  try {
    const url = new URL(input);
    if (url.pathname !== "/" && url.pathname !== "") throw new Error("it has a path");
    return normalizeOrigin(url.origin);
  } catch (error) {
    throw new ProvisioningError(
      "usage",
      `Cannot use "${input}" as the Okta org URL: ${(error as Error).message}`,
      {
        hint: "Give the org's origin, e.g. https://acme.okta.com",
        exitCode: 2,
        cause: error,
      },
    );
  }
}
