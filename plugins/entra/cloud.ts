/**
 * Where an Entra tenant lives: the sign-in (token) endpoint base, the Microsoft Graph base, the
 * rp ids its passkey creation options may carry, and the WebAuthn origin the API path puts into
 * clientDataJSON. One {@link EntraCloud} per national cloud, plus {@link cloudFromSandbox} for the
 * local sandbox, where one URL stands for every endpoint.
 *
 * Sources:
 *
 * - Endpoint bases per cloud: "Microsoft Graph national cloud deployments",
 *   https://learn.microsoft.com/graph/deployments (Microsoft Entra ID endpoint and Microsoft Graph
 *   service root endpoint tables).
 * - The provisioning API (`fido2Methods/creationOptions`, `POST fido2Methods`) is marked "Global
 *   service" only in its national cloud table,
 *   https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions — hence
 *   {@link EntraCloud.provisioningApi} is false for the others.
 * - rp ids: the documentation's example response carries `rp.id` "login.microsoftonline.com"
 *   (same page); real tenants have answered "login.microsoft.com" (the response recorded in
 *   DSInternals.Passkeys' tests, github.com/MichaelGrafnetter/webauthn-interop,
 *   `MicrosoftGraphWebauthnCredentialCreationOptionsTester.cs`). Both are on the public cloud's
 *   allow-list; the rp id is always read from the response, never assumed.
 * - Origin: a browser on the rp's own sign-in page would report `https://<rp id>`, and that is
 *   what every published client of this API sends: Microsoft's example request body for
 *   `POST fido2Methods` (https://learn.microsoft.com/graph/api/authentication-post-fido2methods)
 *   carries a clientDataJSON whose origin is "https://login.microsoftonline.com" for the rp id
 *   "login.microsoftonline.com"; the python-fido2 sample derived from Microsoft's provisioning
 *   sample builds its client with `origin="https://" + rp_id` from the creation options
 *   (github.com/sayeedkamal/entraId-register-passkeys-on-behalf-of-users,
 *   `bulkRegistration/step2CreateAndActivateCredential.py`); DSInternals.Passkeys lets Windows'
 *   WebAuthn API derive it from the rp id the same way. So {@link EntraCloud.originFor} is
 *   `https://<rp id>`.
 * - US Government and China: the documentation names no passkey rp id for them (the API is not
 *   offered there); their allow-lists hold their sign-in host only, unverified.
 *
 * @module
 */
import { UsageError } from "../../core/errors.ts";

/** The national clouds Microsoft documents, and the local sandbox. */
export type CloudName = "public" | "usgov" | "usgov-dod" | "china" | "sandbox";

/** Endpoints and WebAuthn settings of one Entra cloud. */
export interface EntraCloud {
  /** Which cloud this is. */
  readonly name: CloudName;
  /** Human-readable name for messages. */
  readonly label: string;
  /** Base of the Microsoft identity platform endpoints, no trailing slash: `{loginBase}/{tenant}/oauth2/v2.0/token`. */
  readonly loginBase: string;
  /** Base of Microsoft Graph, no trailing slash and no version: `{graphBase}/v1.0/users`. */
  readonly graphBase: string;
  /** The scope that asks for every Graph permission consented to the app (client credentials flows). */
  readonly graphDefaultScope: string;
  /** rp ids creation options from this cloud may carry; anything else is refused before the key is touched. */
  readonly allowedRpIds: readonly string[];
  /** Whether Microsoft documents the passkey provisioning API (creationOptions, POST fido2Methods) here. */
  readonly provisioningApi: boolean;
  /** The origin to put into clientDataJSON for an rp id (the rp id the creation options carry, when they carry one). */
  originFor(rpId: string | undefined): string;
}

/** A cloud whose WebAuthn origin is `https://<rp id>`, or `https://<first allowed rp id>` when options carry none. */
function hostedCloud(fields: Omit<EntraCloud, "originFor" | "graphDefaultScope">): EntraCloud {
  return {
    ...fields,
    graphDefaultScope: `${fields.graphBase}/.default`,
    originFor: (rpId) => `https://${rpId ?? fields.allowedRpIds[0]}`,
  };
}

/** The public (global) cloud: login.microsoftonline.com and graph.microsoft.com. */
export const publicCloud: EntraCloud = hostedCloud({
  name: "public",
  label: "Microsoft Entra ID (global service)",
  loginBase: "https://login.microsoftonline.com",
  graphBase: "https://graph.microsoft.com",
  // Order matters only for options without an rp id: the documented value first.
  allowedRpIds: ["login.microsoftonline.com", "login.microsoft.com"],
  provisioningApi: true,
});

/** Microsoft Graph for US Government L4 (GCC High). GCC tenants use {@link publicCloud}. */
export const usGovCloud: EntraCloud = hostedCloud({
  name: "usgov",
  label: "Microsoft Entra ID for US Government (L4)",
  loginBase: "https://login.microsoftonline.us",
  graphBase: "https://graph.microsoft.us",
  allowedRpIds: ["login.microsoftonline.us"],
  provisioningApi: false,
});

/** Microsoft Graph for US Government L5 (DoD). */
export const usGovDodCloud: EntraCloud = hostedCloud({
  name: "usgov-dod",
  label: "Microsoft Entra ID for US Government (L5, DoD)",
  loginBase: "https://login.microsoftonline.us",
  graphBase: "https://dod-graph.microsoft.us",
  allowedRpIds: ["login.microsoftonline.us"],
  provisioningApi: false,
});

/** Microsoft Graph China operated by 21Vianet. */
export const chinaCloud: EntraCloud = hostedCloud({
  name: "china",
  label: "Microsoft Entra ID operated by 21Vianet",
  loginBase: "https://login.chinacloudapi.cn",
  graphBase: "https://microsoftgraph.chinacloudapi.cn",
  allowedRpIds: ["login.chinacloudapi.cn"],
  provisioningApi: false,
});

/** Every national cloud by its `--cloud` name. */
export const clouds: Readonly<Record<Exclude<CloudName, "sandbox">, EntraCloud>> = {
  public: publicCloud,
  usgov: usGovCloud,
  "usgov-dod": usGovDodCloud,
  china: chinaCloud,
};

/**
 * The cloud named on the command line (`--cloud usgov`).
 *
 * @throws {UsageError} naming the clouds there are.
 * @example
 * ```ts
 * import { cloudByName } from "./cloud.ts";
 * console.assert(cloudByName("public").graphBase === "https://graph.microsoft.com");
 * ```
 */
export function cloudByName(name: string): EntraCloud {
  const cloud = (clouds as Readonly<Record<string, EntraCloud>>)[name];
  if (cloud !== undefined && Object.hasOwn(clouds, name)) return cloud;
  throw new UsageError(`Cannot use cloud "${name}": it is not a known Entra cloud`, {
    hint: `Use one of ${
      Object.keys(clouds).map((n) => `"${n}"`).join(", ")
    }, or --sandbox URL for a local sandbox`,
  });
}

/** What {@link cloudFromSandbox} may add to what it reads from the URL. */
export interface SandboxCloudOptions {
  /** rp ids accepted besides the public cloud's and the sandbox's host. */
  extraRpIds?: readonly string[];
}

/**
 * A cloud whose every endpoint is one sandbox URL (`--sandbox URL`): the token endpoint is
 * `{url}/{tenant}/oauth2/v2.0/token`, Graph is `{url}/v1.0/...`. Its WebAuthn rules are the
 * public cloud's, with no special case: the sandbox answers as Entra does (rp id
 * `login.microsoft.com`) and the origin is `https://<rp id>`, exactly as in production, so the
 * production origin rule is what every sandbox run exercises.
 *
 * The sandbox's own host is also on the allow-list, for one case only: a browser-path test
 * whose pages the sandbox serves on its loopback host (`relyingParty: "loopback"` in
 * sandbox/server.ts). There the origin is the page's own, which the browser bridge reads from the
 * page; {@link EntraCloud.originFor} never yields it.
 *
 * @throws {UsageError} when the URL is not an http(s) URL without query or fragment.
 * @example
 * ```ts
 * import { cloudFromSandbox } from "./cloud.ts";
 * const cloud = cloudFromSandbox("http://127.0.0.1:8443/");
 * console.assert(cloud.graphBase === "http://127.0.0.1:8443");
 * console.assert(cloud.allowedRpIds.includes("login.microsoft.com"));
 * console.assert(cloud.originFor("login.microsoft.com") === "https://login.microsoft.com");
 * ```
 */
export function cloudFromSandbox(url: string | URL, options: SandboxCloudOptions = {}): EntraCloud {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (cause) {
    throw new UsageError(`Cannot use sandbox URL "${String(url)}": it is not a URL`, { cause });
  }
  if (
    (parsed.protocol !== "http:" && parsed.protocol !== "https:") || parsed.search !== "" ||
    parsed.hash !== ""
  ) {
    throw new UsageError(`Cannot use sandbox URL "${String(url)}": it must be http(s)://host[:port][/path]`, {
      hint: "Pass the URL the sandbox printed when it started, e.g. http://127.0.0.1:8443",
    });
  }
  const base = `${parsed.origin}${parsed.pathname.replace(/\/+$/, "")}`;
  const allowedRpIds = [
    ...new Set([...publicCloud.allowedRpIds, parsed.hostname, ...(options.extraRpIds ?? [])]),
  ];
  return {
    name: "sandbox",
    label: `sandbox at ${base}`,
    loginBase: base,
    graphBase: base,
    graphDefaultScope: "https://graph.microsoft.com/.default",
    allowedRpIds,
    provisioningApi: true,
    originFor: publicCloud.originFor,
  };
}
