/**
 * The tenant's Passkey (FIDO2) and Temporary Access Pass method policies, and the preflight that
 * reads them to say what will fail before anything is created (`provisioning doctor`, and before
 * every bulk run).
 *
 * - `GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2`
 *   (https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get); tenants
 *   migrated to passkey profiles carry `defaultPasskeyProfile` and `passkeyProfiles`, whose
 *   `attestationEnforcement` and `keyRestrictions` replace the policy-wide `isAttestationEnforced`
 *   and `keyRestrictions` (https://learn.microsoft.com/graph/api/resources/passkeyprofile).
 * - `GET …/authenticationMethodConfigurations/temporaryAccessPass`
 *   (https://learn.microsoft.com/graph/api/temporaryaccesspassauthenticationmethodconfiguration-get).
 * - Permissions and roles: the provisioning API takes UserAuthMethod-Passkey.ReadWrite.All or
 *   UserAuthenticationMethod.ReadWrite.All, and a delegated admin needs the Authentication
 *   Administrator or Privileged Authentication Administrator role
 *   (https://learn.microsoft.com/graph/api/authentication-post-fido2methods); Temporary Access
 *   Passes take UserAuthMethod-TAP.ReadWrite.All or UserAuthenticationMethod.ReadWrite.All
 *   (https://learn.microsoft.com/graph/permissions-reference). Role template ids are from
 *   "Microsoft Entra built-in roles"
 *   (https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference).
 *
 * @module
 */
import { GraphError, passkeyPermissions, type PolicyFacts, tapPermissions } from "../errors.ts";
import type { GraphClient } from "./client.ts";
import {
  type Fido2PolicyJson,
  fido2PolicySchema,
  type KeyRestrictionsJson,
  type TapPolicyJson,
  tapPolicySchema,
} from "./schemas.ts";

/** Path of the Passkey (FIDO2) method policy. */
export const fido2PolicyPath =
  "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2";
/** Path of the Temporary Access Pass method policy. */
export const tapPolicyPath =
  "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/temporaryAccessPass";

/** Role template ids that may manage other users' authentication methods. */
export const authenticationAdminRoles: Readonly<Record<string, string>> = {
  "c4e39bd9-1100-46d3-8c65-fb160da0071f": "Authentication Administrator",
  "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
  "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
};

/** Reads the Passkey (FIDO2) method policy. */
export async function getFido2Policy(
  client: GraphClient,
  options: { signal?: AbortSignal } = {},
): Promise<Fido2PolicyJson> {
  return await client.request("GET", fido2PolicyPath, {
    schema: fido2PolicySchema,
    operation: "read-policy",
    action: "read the Passkey (FIDO2) policy",
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/** Reads the Temporary Access Pass method policy. */
export async function getTapPolicy(
  client: GraphClient,
  options: { signal?: AbortSignal } = {},
): Promise<TapPolicyJson> {
  return await client.request("GET", tapPolicyPath, {
    schema: tapPolicySchema,
    operation: "read-policy",
    action: "read the Temporary Access Pass policy",
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

/** How bad a finding is: `error` will fail, `warning` may fail, `info` is worth knowing. */
export type FindingSeverity = "error" | "warning" | "info";

/** One thing preflight found; `code` matches the reason code the failure would have. */
export interface PreflightFinding {
  readonly code: string;
  readonly severity: FindingSeverity;
  readonly message: string;
  readonly hint?: string;
}

/** What preflight knows about the authenticator the run will use. */
export interface AuthenticatorFacts {
  /** For messages, e.g. `software key "demo.vault"`. */
  label: string;
  /** The AAGUID, lowercase with dashes. */
  aaguid?: string;
  /**
   * What Microsoft will make of the key's attestation: `trusted` for a model in the FIDO Metadata
   * Service, `self` for self attestation or a private attestation CA (the software key), `none`
   * for no attestation.
   */
  attestation: "trusted" | "self" | "none" | "unknown";
  /** The attestation statement format the key makes (`packed`, `none`, `tpm` …), when known. */
  attestationFormat?: string;
}

/**
 * The attestation formats `POST fido2Methods` takes: the beta page says only `packed` and `none`
 * are supported (https://learn.microsoft.com/graph/api/authentication-post-fido2methods?view=graph-rest-beta).
 */
export const graphAttestationFormats: readonly string[] = ["packed", "none"];

/** What the signed-in admin or app was granted (from the access token: `scp`/`roles`, `wids`). */
export interface AdminGrants {
  kind: "application" | "delegated";
  /** Graph permissions: `roles` for an app, `scp` (space-separated) for a delegated token. */
  permissions: readonly string[];
  /** Directory role template ids (`wids`), for delegated tokens. */
  roleTemplateIds?: readonly string[];
}

/** What {@link preflight} checks. */
export interface PreflightInput {
  /** `api`: creationOptions + POST; `browser`: Temporary Access Pass + sign-in page. */
  path: "api" | "browser";
  /** The Passkey (FIDO2) policy, or the error reading it. */
  fido2Policy?: Fido2PolicyJson | Error;
  /** The Temporary Access Pass policy, or the error reading it (browser path). */
  tapPolicy?: TapPolicyJson | Error;
  authenticator?: AuthenticatorFacts;
  grants?: AdminGrants;
  /** The lifetime the run will ask for, browser path. */
  tapLifetimeInMinutes?: number;
  /** Whether the run's passes are one-time. @default true */
  tapIsUsableOnce?: boolean;
}

/** The settings that decide a registration: the default passkey profile's, else the policy-wide ones. */
interface EffectiveFido2Settings {
  source: string;
  attestationEnforced: boolean;
  keyRestrictions: KeyRestrictionsJson | undefined;
  passkeyTypes: string | undefined;
}

function effectiveSettings(policy: Fido2PolicyJson): EffectiveFido2Settings {
  const profiles = policy.passkeyProfiles ?? [];
  const profile = profiles.find((p) => p.id === policy.defaultPasskeyProfile) ??
    (profiles.length === 1 ? profiles[0] : undefined);
  if (profile) {
    return {
      source: `passkey profile "${profile.name ?? profile.id}"`,
      attestationEnforced: profile.attestationEnforcement === "registrationOnly",
      keyRestrictions: profile.keyRestrictions ?? undefined,
      passkeyTypes: profile.passkeyTypes ?? undefined,
    };
  }
  return {
    source: "Passkey (FIDO2) policy",
    attestationEnforced: policy.isAttestationEnforced === true,
    keyRestrictions: policy.keyRestrictions ?? undefined,
    passkeyTypes: undefined,
  };
}

/**
 * What the policies say, as errors.ts explains a refusal with it: the Passkey (FIDO2) policy with
 * its default passkey profile's settings applied (both shapes read, see {@link effectiveSettings}),
 * and the TAP policy's state. A policy that cannot be read (no Policy.Read permission) is left out.
 */
export async function readPolicyFacts(
  client: GraphClient,
  which: "fido2" | "tap",
  options: { signal?: AbortSignal } = {},
): Promise<PolicyFacts> {
  try {
    if (which === "tap") return { tap: { state: (await getTapPolicy(client, options)).state } };
    const policy = await getFido2Policy(client, options);
    const settings = effectiveSettings(policy);
    return {
      fido2: {
        state: policy.state,
        isSelfServiceRegistrationAllowed: policy.isSelfServiceRegistrationAllowed,
        attestationEnforced: settings.attestationEnforced,
        keyRestrictions: settings.keyRestrictions,
      },
    };
  } catch (error) {
    if (error instanceof GraphError) return {};
    throw error;
  }
}

/**
 * Says, from the policies and grants, what will fail before anything is created. Errors first.
 *
 * @example
 * ```ts
 * import { preflight } from "./policies.ts";
 * const findings = preflight({
 *   path: "api",
 *   fido2Policy: { state: "enabled", isSelfServiceRegistrationAllowed: false },
 * });
 * console.assert(findings[0]?.code === "self-service-setup-off" && findings[0].severity === "error");
 * ```
 */
export function preflight(input: PreflightInput): PreflightFinding[] {
  const findings: PreflightFinding[] = [];
  const add = (finding: PreflightFinding) => findings.push(finding);
  checkFido2(input, add);
  if (input.path === "api") checkAttestationFormat(input, add);
  if (input.path === "browser") checkTap(input, add);
  checkGrants(input, add);
  const rank: Record<FindingSeverity, number> = { error: 0, warning: 1, info: 2 };
  return findings.sort((a, b) => rank[a.severity] - rank[b.severity]);
}

type Add = (finding: PreflightFinding) => void;

/** A key whose attestation format Graph does not take: every registration would be refused after the key made it. */
function checkAttestationFormat(input: PreflightInput, add: Add): void {
  const format = input.authenticator?.attestationFormat;
  if (format === undefined || graphAttestationFormats.includes(format)) return;
  add({
    code: "attestation-format-unsupported",
    severity: "error",
    message: `${
      input.authenticator?.label ?? "The key"
    } makes '${format}' attestation, and Microsoft Graph takes only ${
      graphAttestationFormats.map((f) => `'${f}'`).join(" and ")
    } (POST fido2Methods): each registration would be refused after the key created the credential`,
    hint: "Use a key that makes packed attestation (most FIDO2 security keys do), or the browser path",
  });
}

function checkFido2(input: PreflightInput, add: Add): void {
  const policy = input.fido2Policy;
  if (policy === undefined) return;
  if (policy instanceof Error) {
    add(unreadable("Passkey (FIDO2)", policy));
    return;
  }
  if (policy.state === "disabled") {
    add({
      code: "fido2-disabled",
      severity: "error",
      message: "The Passkey (FIDO2) method is disabled in this tenant: no passkey can be registered",
      hint: "Enable it in Entra ID > Authentication methods > Passkey (FIDO2) for the users to provision",
    });
  }
  if (policy.isSelfServiceRegistrationAllowed === false) {
    add({
      code: "self-service-setup-off",
      severity: "error",
      message: input.path === "api"
        ? '"Allow self-service setup" is off in the Passkey (FIDO2) policy; the provisioning API refuses to work without it (a known issue of Microsoft Graph)'
        : '"Allow self-service setup" is off in the Passkey (FIDO2) policy; users (and the browser path acting for them) cannot add a security key',
      hint:
        'Turn on "Allow self-service setup" in Entra ID > Authentication methods > Passkey (FIDO2) > Configure; see https://learn.microsoft.com/graph/known-issues#fido2-provisioning-api-requires-self-service-setup-to-be-enabled',
    });
  }
  if ((policy.includeTargets ?? undefined)?.length === 0 && policy.state === "enabled") {
    add({
      code: "fido2-no-targets",
      severity: "warning",
      message: "The Passkey (FIDO2) policy is enabled for no group: registrations will be refused",
      hint: "Add the users' groups (or All users) as targets of the Passkey (FIDO2) policy",
    });
  }

  const settings = effectiveSettings(policy);
  const profiles = policy.passkeyProfiles ?? [];
  if (profiles.length > 1) {
    add({
      code: "passkey-profiles",
      severity: "info",
      message:
        `The tenant has ${profiles.length} passkey profiles; the checks below use ${settings.source}, and a user's group may be bound to another`,
    });
  }
  const authenticator = input.authenticator;
  const label = authenticator?.label ?? "the authenticator";

  if (
    settings.passkeyTypes !== undefined &&
    !settings.passkeyTypes.split(",").map((t) => t.trim()).includes("deviceBound")
  ) {
    add({
      code: "passkey-type-not-allowed",
      severity: "error",
      message:
        `${settings.source} allows only "${settings.passkeyTypes}" passkeys; security keys create device-bound passkeys`,
      hint: 'Add "deviceBound" to the passkey types of the profile',
    });
  }

  if (settings.attestationEnforced) {
    const attestation = authenticator?.attestation ?? "unknown";
    if (attestation === "self" || attestation === "none") {
      add({
        code: "attestation-enforced",
        severity: "error",
        message: `${settings.source} enforces attestation and ${label} ${
          attestation === "none"
            ? "gives no attestation"
            : "self-attests (its attestation is not in the FIDO Metadata Service)"
        }: Graph will reject every registration`,
        hint:
          'Turn off "Enforce attestation" in the Passkey (FIDO2) policy, or use a key whose attestation Microsoft trusts',
      });
    } else if (attestation === "unknown") {
      add({
        code: "attestation-enforced",
        severity: "warning",
        message:
          `${settings.source} enforces attestation; registrations fail unless ${label} is a model listed in the FIDO Metadata Service`,
      });
    }
  }

  const restrictions = settings.keyRestrictions;
  if (restrictions?.isEnforced === true) {
    const list = (restrictions.aaGuids ?? []).map((a) => a.toLowerCase());
    const type = restrictions.enforcementType ?? "allow";
    const aaguid = authenticator?.aaguid?.toLowerCase();
    if (aaguid === undefined) {
      add({
        code: "aaguid-not-allowed",
        severity: "warning",
        message:
          `${settings.source} restricts keys by AAGUID (${type} list of ${list.length}); the authenticator's AAGUID is not known, so it cannot be checked`,
      });
    } else if ((type === "allow" && !list.includes(aaguid)) || (type === "block" && list.includes(aaguid))) {
      add({
        code: "aaguid-not-allowed",
        severity: "error",
        message: `${settings.source} ${
          type === "allow" ? "allows only listed AAGUIDs and" : "blocks"
        } ${label}'s AAGUID ${aaguid}${
          type === "allow" ? " is not on the list" : ""
        }: Graph will reject every registration`,
        hint: type === "allow"
          ? `Add ${aaguid} to the allowed AAGUIDs of the Passkey (FIDO2) policy, or use an allowed key model`
          : `Remove ${aaguid} from the blocked AAGUIDs of the Passkey (FIDO2) policy, or use another key model`,
      });
    }
  }
}

function checkTap(input: PreflightInput, add: Add): void {
  const policy = input.tapPolicy;
  if (policy === undefined) return;
  if (policy instanceof Error) {
    add(unreadable("Temporary Access Pass", policy));
    return;
  }
  if (policy.state !== "enabled") {
    add({
      code: "tap-disabled",
      severity: "error",
      message: "The Temporary Access Pass method is disabled: the browser path cannot sign users in",
      hint:
        "Enable Temporary Access Pass in Entra ID > Authentication methods for the users to provision, or use the API path",
    });
  }
  const oneTime = input.tapIsUsableOnce ?? true;
  if (!oneTime && policy.isUsableOnce === true) {
    add({
      code: "tap-disabled",
      severity: "error",
      message: "The run asks for reusable Temporary Access Passes but the policy allows one-time passes only",
      hint: "Leave passes one-time (the default)",
    });
  } else if (!oneTime) {
    add({
      code: "tap-not-one-time",
      severity: "warning",
      message:
        "The run creates reusable Temporary Access Passes: a pass stays usable until it expires or is deleted",
      hint: "Use one-time passes (the default); every pass is deleted after its registration either way",
    });
  }
  const lifetime = input.tapLifetimeInMinutes;
  const min = policy.minimumLifetimeInMinutes ?? undefined;
  const max = policy.maximumLifetimeInMinutes ?? undefined;
  if (
    lifetime !== undefined && ((min !== undefined && lifetime < min) || (max !== undefined && lifetime > max))
  ) {
    add({
      code: "tap-disabled",
      severity: "error",
      message: `The run asks for ${lifetime}-minute Temporary Access Passes; the policy allows ${
        min ?? 10
      } to ${max ?? 43200} minutes`,
      hint: "Choose a lifetime within the policy's range",
    });
  }
}

function checkGrants(input: PreflightInput, add: Add): void {
  const grants = input.grants;
  if (grants === undefined) return;
  const has = (names: readonly string[]) => names.some((name) => grants.permissions.includes(name));
  const needed = input.path === "api" ? passkeyPermissions : tapPermissions;
  const kind = grants.kind === "application" ? "application permission" : "delegated permission";
  if (!has(needed)) {
    add({
      code: "insufficient-privileges",
      severity: "error",
      message: `The ${grants.kind === "application" ? "app" : "sign-in"} lacks the ${kind} ${
        needed.join(" or ")
      }`,
      hint: `Add ${needed[0]} to the app registration's Microsoft Graph ${kind}s and grant admin consent`,
    });
  }
  if (
    input.path === "browser" && !has(passkeyPermissions) &&
    !grants.permissions.includes("UserAuthenticationMethod.Read.All")
  ) {
    add({
      code: "insufficient-privileges",
      severity: "warning",
      message: "The app cannot read users' passkeys, so a re-run cannot tell who already has one",
      hint: `Add ${passkeyPermissions[0]} (or UserAuthMethod-Passkey.Read.All)`,
    });
  }
  if (grants.kind === "delegated") {
    const roles = (grants.roleTemplateIds ?? []).filter((id) => Object.hasOwn(authenticationAdminRoles, id));
    if (roles.length === 0) {
      add({
        code: "insufficient-privileges",
        severity: "error",
        message:
          "The signed-in admin has neither the Authentication Administrator nor the Privileged Authentication Administrator role",
        hint:
          "Assign one of these roles (Privileged Authentication Administrator to provision other admins), or sign in with an app's client credentials",
      });
    }
  }
}

function unreadable(policy: string, error: Error): PreflightFinding {
  const denied = error instanceof GraphError && error.status === 403;
  return {
    code: "policy-unreadable",
    severity: "warning",
    message: `Cannot read the ${policy} policy${
      denied ? ": access denied" : `: ${error.message}`
    }; its settings are not checked`,
    hint:
      "Grant Policy.Read.AuthenticationMethod (least privileged) to check the policies before provisioning",
  };
}

/** What {@link runPreflight} needs besides a client. */
export type RunPreflightOptions = Omit<PreflightInput, "fido2Policy" | "tapPolicy"> & {
  signal?: AbortSignal;
};

/**
 * Reads the policies (the TAP one only for the browser path) and runs {@link preflight}. A policy
 * that cannot be read becomes a warning, not a failure.
 */
export async function runPreflight(
  client: GraphClient,
  options: RunPreflightOptions,
): Promise<PreflightFinding[]> {
  const signal = options.signal ? { signal: options.signal } : {};
  const settle = <T>(promise: Promise<T>) =>
    promise.catch((error: unknown) => {
      // A refused token (401) is not a policy the app cannot read: it stops the preflight.
      if (error instanceof GraphError && error.status !== 401) return error;
      throw error;
    });
  const [fido2Policy, tapPolicy] = await Promise.all([
    settle(getFido2Policy(client, signal)),
    options.path === "browser" ? settle(getTapPolicy(client, signal)) : Promise.resolve(undefined),
  ]);
  const { signal: _signal, ...rest } = options;
  return preflight({ ...rest, fido2Policy, ...(tapPolicy === undefined ? {} : { tapPolicy }) });
}
