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
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";
import type { Manifest, PluginContext, ProviderPlugin, ProviderSession } from "../../core/plugin.ts";
import { normalizeOrigin } from "../../core/webauthn/rp_id.ts";
import { apiToken, OktaApi } from "./api.ts";
import { oktaReasons } from "./errors.ts";
import { OktaSession } from "./session.ts";

/** The environment variable that holds the API token. */
export const oktaTokenEnv = "PROVISIONING_OKTA_TOKEN";
/** The environment variable that may hold the org URL. */
export const oktaOrgEnv = "PROVISIONING_OKTA_ORG";

/** The plugin's options as commander hands them over (`--okta-org` → `oktaOrg`). */
export const oktaOptionsSchema = z.object({ oktaOrg: z.string().optional() });
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
  ],
};

/** The permissions the plugin needs for these options: the org's host and its two variables. */
export function oktaPermissions(options: OktaOptions): { net: string[]; env: string[] } {
  const org = options.oktaOrg ? orgUrlOf(options.oktaOrg) : undefined;
  return { net: org ? [new URL(org).host] : [], env: [oktaTokenEnv, oktaOrgEnv] };
}

/** See the module documentation. */
export const oktaProvider: ProviderPlugin<OktaOptions> = {
  kind: "provider",
  manifest: oktaManifest,
  connect(context: PluginContext, options: OktaOptions): Promise<ProviderSession> {
    const parsed = oktaOptionsSchema.parse(options);
    const orgInput = parsed.oktaOrg ?? context.env(oktaOrgEnv);
    if (!orgInput) {
      throw new ProvisioningError("usage", "Cannot connect to Okta: no org URL", {
        hint: `Give --okta-org https://YOUR-ORG.okta.com (or set ${oktaOrgEnv})`,
        exitCode: 2,
      });
    }
    const token = context.env(oktaTokenEnv);
    if (!token) {
      throw new ProvisioningError(oktaReasons.unauthorized, "Cannot connect to Okta: no API token", {
        hint: `Set ${oktaTokenEnv} to an API token of an admin who may manage users' factors`,
        exitCode: 2,
      });
    }
    const api = new OktaApi({
      orgUrl: orgUrlOf(orgInput),
      credential: apiToken(token),
      ...(context.fetch ? { fetch: context.fetch } : {}),
      ...(context.pacer ? { pacer: context.pacer } : {}),
    });
    return Promise.resolve(new OktaSession(api));
  },
};

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
