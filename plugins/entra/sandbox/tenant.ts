/**
 * The sandbox's directory: an in-memory Microsoft Entra tenant with users, groups, admin accounts,
 * an app registration, the Passkey (FIDO2) and Temporary Access Pass method policies, and each
 * user's registered passkeys, Temporary Access Pass and outstanding WebAuthn challenges.
 *
 * It holds state only; `graph.ts` gives it Microsoft Graph's shape and rules. Everything a test or
 * a `provisioning sandbox` user may want to change at run time (policies, trusted attestation
 * roots) has a setter here, validated with the same schemas `POST /_sandbox/policy` uses.
 *
 * Shapes follow Microsoft Learn:
 * - user: https://learn.microsoft.com/en-us/graph/api/resources/user
 * - group: https://learn.microsoft.com/en-us/graph/api/resources/group
 * - fido2AuthenticationMethodConfiguration:
 *   https://learn.microsoft.com/en-us/graph/api/resources/fido2authenticationmethodconfiguration
 * - temporaryAccessPassAuthenticationMethodConfiguration:
 *   https://learn.microsoft.com/en-us/graph/api/resources/temporaryaccesspassauthenticationmethodconfiguration
 *
 * @module
 */
import { sha384 } from "@noble/hashes/sha2.js";
import { z } from "zod";
import { concatBytes, fromBase64Any, randomBytes, toBase64, toBase64Url, utf8 } from "../../../core/bytes.ts";
import type { CredentialIdEncoding } from "../../../core/webauthn/credential_id_text.ts";
import { x509 } from "../../../core/x509.ts";
import { type ChallengeSealer, createChallengeSealer } from "./challenge.ts";

// ---------------------------------------------------------------------------------------------
// Deterministic randomness for seeding (never for secrets a real attacker could guess: those
// come from crypto.getRandomValues unless a test asks for a seed)
// ---------------------------------------------------------------------------------------------

/** A seeded pseudo-random source, so a sandbox seeded with the same number is the same tenant. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  /** `length` pseudo-random bytes. */
  bytes(length: number): Uint8Array<ArrayBuffer>;
}

/** mulberry32: small, fast, good enough to seed fixtures and to draw fault injections. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    bytes: (length) => Uint8Array.from({ length }, () => Math.floor(next() * 256)),
  };
}

/** A version-4-shaped GUID from 16 bytes, as Entra object ids look. */
export function guidFrom(bytes: Uint8Array): string {
  const b = Uint8Array.from(bytes.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** True for text shaped like a GUID (how Graph tells an object id from a userPrincipalName). */
export function isGuid(text: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text);
}

// ---------------------------------------------------------------------------------------------
// Directory objects
// ---------------------------------------------------------------------------------------------

/** A user of the tenant (the properties of Graph's `user` the sandbox serves). */
export interface SandboxUser {
  id: string;
  userPrincipalName: string;
  displayName: string;
  givenName: string;
  surname: string;
  mail: string;
  jobTitle: string | null;
  accountEnabled: boolean;
  /** Entra directory roles held, e.g. "Authentication Administrator" (empty for most users). */
  directoryRoles: string[];
  /** Synced from on-premises AD (true) or cloud-only (false), as `onPremisesSyncEnabled`. */
  onPremisesSyncEnabled: boolean | null;
}

/**
 * An account that exists in on-premises Active Directory only: Entra has never seen it, so every
 * Graph call about it answers 404 exactly like a user that does not exist. This is the IDmelon
 * tool's "Failed to retrieve TAP" case (the sync to Entra has not run, or the account is out of
 * the sync scope), kept here so tests can name such a user.
 */
export interface OnPremisesOnlyAccount {
  userPrincipalName: string;
  displayName: string;
  reason: string;
}

/** A security group. `members` holds object ids of users and of nested groups. */
export interface SandboxGroup {
  id: string;
  displayName: string;
  mailNickname: string;
  description: string | null;
  members: string[];
}

/** A member of a group: a user or a nested group. */
export type DirectoryMember = { kind: "user"; user: SandboxUser } | { kind: "group"; group: SandboxGroup };

/** An account that can sign in (a user with a password), for the OAuth endpoints. */
export interface SandboxSignInAccount {
  objectId: string;
  userPrincipalName: string;
  password: string;
  directoryRoles: string[];
}

/** An app registration in the tenant, with its granted application permissions (app roles). */
export interface SandboxAppRegistration {
  clientId: string;
  displayName: string;
  secret?: string;
  certificateJwk?: JsonWebKey;
  redirectUris: string[];
  applicationPermissions: string[];
}

// ---------------------------------------------------------------------------------------------
// Authentication methods
// ---------------------------------------------------------------------------------------------

/** A registered passkey: Graph's fido2AuthenticationMethod plus what the verifier learnt. */
export interface StoredFido2Method {
  id: string;
  displayName: string;
  createdDateTime: string;
  aaGuid: string;
  model: string | null;
  /** SHA-1 thumbprints (hex) of the attestation certificates the key presented. */
  attestationCertificates: string[];
  attestationLevel: "attested" | "notAttested";
  /** "deviceBound" or "synced", from the backup-eligible flag. */
  passkeyType: "deviceBound" | "synced";
  /** The credential id, base64url. Never served by Graph; used for excludeCredentials. */
  credentialId: string;
  /** The COSE public key, base64url. */
  publicKey: string;
  signCount: number;
  /** Attestation statement format: "packed", "none", … */
  attestationFormat: string;
  /** True: `@simplewebauthn/server` verified the registration against the issued challenge. */
  verified: boolean;
  userVerified: boolean;
}

/** A Temporary Access Pass as stored (the pass value is kept to let a sign-in redeem it). */
export interface StoredTemporaryAccessPass {
  id: string;
  temporaryAccessPass: string;
  createdDateTime: string;
  startDateTime: string;
  lifetimeInMinutes: number;
  isUsableOnce: boolean;
  /** Set when a one-time pass has been redeemed. */
  usedDateTime: string | null;
}

/** A WebAuthn challenge issued by creationOptions, valid until `expiresAt`, usable once. */
export interface PendingChallenge {
  challenge: string;
  userId: string;
  issuedAt: number;
  expiresAt: number;
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

const targetSchema = z.object({
  targetType: z.literal("group"),
  /** A group object id, or "all_users". */
  id: z.string().min(1),
  isRegistrationRequired: z.boolean().default(false),
});

const excludeTargetSchema = z.object({
  targetType: z.literal("group"),
  id: z.string().min(1),
});

const aaguidText = z.string().regex(
  /^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$/,
  "must be an AAGUID such as cb69481e-8ff7-4039-93ec-0a2729a154a8",
);

/** fido2KeyRestrictions (https://learn.microsoft.com/en-us/graph/api/resources/fido2keyrestrictions). */
export const keyRestrictionsSchema = z.object({
  isEnforced: z.boolean(),
  enforcementType: z.enum(["allow", "block"]),
  aaGuids: z.array(aaguidText),
});

/** The Passkey (FIDO2) method policy: fido2AuthenticationMethodConfiguration. */
export const fido2PolicySchema = z.object({
  state: z.enum(["enabled", "disabled"]),
  isSelfServiceRegistrationAllowed: z.boolean(),
  isAttestationEnforced: z.boolean(),
  keyRestrictions: keyRestrictionsSchema,
  includeTargets: z.array(targetSchema),
  excludeTargets: z.array(excludeTargetSchema),
});
/** The Passkey (FIDO2) method policy. */
export type Fido2Policy = z.infer<typeof fido2PolicySchema>;

/** A change to the Passkey (FIDO2) policy: any subset of its fields (keyRestrictions too). */
export const fido2PolicyPatchSchema = fido2PolicySchema.partial().extend({
  keyRestrictions: keyRestrictionsSchema.partial().optional(),
}).strict();
/** A change to the Passkey (FIDO2) policy. */
export type Fido2PolicyPatch = z.input<typeof fido2PolicyPatchSchema>;

const lifetime = z.number().int().min(10).max(43200);

/** The Temporary Access Pass method policy: temporaryAccessPassAuthenticationMethodConfiguration. */
export const tapPolicySchema = z.object({
  state: z.enum(["enabled", "disabled"]),
  defaultLifetimeInMinutes: lifetime,
  defaultLength: z.number().int().min(8).max(48),
  minimumLifetimeInMinutes: lifetime,
  maximumLifetimeInMinutes: lifetime,
  isUsableOnce: z.boolean(),
  includeTargets: z.array(targetSchema),
  excludeTargets: z.array(excludeTargetSchema),
}).superRefine((policy, ctx) => {
  const { minimumLifetimeInMinutes: min, maximumLifetimeInMinutes: max, defaultLifetimeInMinutes: def } =
    policy;
  if (min > max) {
    ctx.addIssue({
      code: "custom",
      message: `minimumLifetimeInMinutes ${min} exceeds maximumLifetimeInMinutes ${max}`,
    });
  }
  if (def < min || def > max) {
    ctx.addIssue({ code: "custom", message: `defaultLifetimeInMinutes ${def} is outside ${min}–${max}` });
  }
});
/** The Temporary Access Pass method policy. */
export type TapPolicy = z.infer<typeof tapPolicySchema>;

/** A change to the Temporary Access Pass policy: any subset of its fields. */
export const tapPolicyPatchSchema = z.object({
  state: z.enum(["enabled", "disabled"]),
  defaultLifetimeInMinutes: lifetime,
  defaultLength: z.number().int().min(8).max(48),
  minimumLifetimeInMinutes: lifetime,
  maximumLifetimeInMinutes: lifetime,
  isUsableOnce: z.boolean(),
  includeTargets: z.array(targetSchema),
  excludeTargets: z.array(excludeTargetSchema),
}).partial().strict();
/** A change to the Temporary Access Pass policy. */
export type TapPolicyPatch = z.input<typeof tapPolicyPatchSchema>;

/**
 * The sandbox's starting FIDO2 policy: enabled for all users with self-service setup allowed (the
 * provisioning API needs it, see the known issue on
 * https://learn.microsoft.com/en-us/graph/known-issues#fido2-provisioning-api-requires-self-service-setup-to-be-enabled),
 * attestation not enforced and no key restrictions, so a software key registers out of the box.
 */
export function defaultFido2Policy(): Fido2Policy {
  return {
    state: "enabled",
    isSelfServiceRegistrationAllowed: true,
    isAttestationEnforced: false,
    keyRestrictions: { isEnforced: false, enforcementType: "block", aaGuids: [] },
    includeTargets: [{ targetType: "group", id: "all_users", isRegistrationRequired: false }],
    excludeTargets: [],
  };
}

/** Entra's out-of-the-box TAP settings (1 hour default and minimum, 8 hours maximum, 8 characters). */
export function defaultTapPolicy(): TapPolicy {
  return {
    state: "enabled",
    defaultLifetimeInMinutes: 60,
    defaultLength: 8,
    minimumLifetimeInMinutes: 60,
    maximumLifetimeInMinutes: 480,
    isUsableOnce: false,
    includeTargets: [{ targetType: "group", id: "all_users", isRegistrationRequired: false }],
    excludeTargets: [],
  };
}

// ---------------------------------------------------------------------------------------------
// WebAuthn relying party settings
// ---------------------------------------------------------------------------------------------

/**
 * How the tenant answers creationOptions and checks registrations. The defaults are the real
 * shapes, with the variation real tenants show, one variant per creationOptions call in turn.
 */
export interface WebAuthnSettings {
  /**
   * rp.id in creation options: Entra's, as the recorded real response and the docs' example
   * carry it. @default "login.microsoft.com"
   */
  rpId: string;
  /** rp.name. @default "Microsoft" */
  rpName: string;
  /**
   * Origins a registration's clientDataJSON may carry: `https://<rp id>`, the origin every real
   * client sends for Entra's rp id. @default [`https://${rpId}`]
   */
  origins: string[];
  /**
   * How excludeCredentials ids are written: unpadded base64url (the v1.0 docs), padded standard
   * base64 (the recorded real response), base64url with a padding digit (the beta docs), or
   * "rotate" through the three, one per creationOptions call (core/webauthn/credential_id_text.ts
   * cites each). @default "rotate"
   */
  excludeCredentialsEncoding: CredentialIdEncoding | "rotate";
  /**
   * `publicKey.timeout` values (ms), one per creationOptions call in turn: 60000 as the recorded
   * response and the v1.0 example, 0 as the beta example. @default [60000, 0]
   */
  timeouts: number[];
  /**
   * Extra plaintext bytes sealed into the JWE challenge, one per call in turn: 1800 gives the
   * recorded response's size (about 5 KB decoded), 0 about 2 KB, 12000 about 24 KB.
   * @default [1800, 0, 12000]
   */
  challengePaddingBytes: number[];
}

/** One creationOptions answer's share of the variation in {@link WebAuthnSettings}. */
export interface CreationOptionsVariant {
  encoding: CredentialIdEncoding;
  timeout: number;
  challengePaddingBytes: number;
}

const idEncodings: readonly CredentialIdEncoding[] = ["base64url", "base64", "base64url-padding-digit"];

/** Known authenticator models by AAGUID (a stand-in for the FIDO Metadata Service). */
export const defaultModels: Readonly<Record<string, string>> = {
  "70726f76-6973-696f-6e69-6e67736b0001": "Provisioning software key",
  "2fc0579f-8113-47ea-b116-bb5a8db9202a": "YubiKey 5 Series with NFC",
  "cb69481e-8ff7-4039-93ec-0a2729a154a8": "YubiKey 5 Series",
  "ee882879-721c-4913-9775-3dfcce97072a": "YubiKey 5 Series",
};

// ---------------------------------------------------------------------------------------------
// The tenant
// ---------------------------------------------------------------------------------------------

/** Built-in directory roles that may manage other users' authentication methods. */
export const authenticationAdminRoles = [
  "Authentication Administrator",
  "Privileged Authentication Administrator",
  "Global Administrator",
] as const;

/** Roles that make a user "privileged": only a Privileged Authentication Administrator may manage their methods. */
const privilegedRoles = new Set([
  "Global Administrator",
  "Privileged Authentication Administrator",
  "Privileged Role Administrator",
  "Security Administrator",
]);

/** Everything {@link SandboxTenant} is built from. */
export interface TenantInit {
  tenantId: string;
  domain: string;
  users: SandboxUser[];
  groups: SandboxGroup[];
  accounts: SandboxSignInAccount[];
  apps: SandboxAppRegistration[];
  onPremisesOnly?: OnPremisesOnlyAccount[];
  fido2Policy?: Fido2Policy;
  tapPolicy?: TapPolicy;
  webauthn?: Partial<WebAuthnSettings>;
  /**
   * How `GET …/authenticationMethodConfigurations/fido2` answers: "passkeyProfiles" as a tenant
   * migrated to passkey profiles (`defaultPasskeyProfile`, `passkeyProfiles`, targets'
   * `allowedPasskeyProfiles`; the deprecated policy-wide fields still present, as in the v1.0
   * update example), or "legacy" as before the migration.
   * @default "passkeyProfiles"
   */
  fido2PolicyShape?: "passkeyProfiles" | "legacy";
  /** The clock (ms since the epoch). @default Date.now */
  now?: () => number;
}

/** The live state of a sandbox tenant; see the module documentation. */
export class SandboxTenant {
  readonly tenantId: string;
  readonly domain: string;
  readonly webauthn: WebAuthnSettings;
  /** How the Passkey (FIDO2) policy is served (see {@link TenantInit.fido2PolicyShape}). */
  fido2PolicyShape: "passkeyProfiles" | "legacy";
  /** Authenticator model names by lowercase AAGUID; add to it to name more models. */
  readonly models: Map<string, string>;
  readonly accounts: SandboxSignInAccount[];
  readonly apps: SandboxAppRegistration[];
  readonly onPremisesOnly: OnPremisesOnlyAccount[];
  #now: () => number;
  #users = new Map<string, SandboxUser>();
  #usersByUpn = new Map<string, SandboxUser>();
  #usersByMail = new Map<string, SandboxUser>();
  #groups = new Map<string, SandboxGroup>();
  /** Transitive user members by group, computed on first use (groups do not change after seeding). */
  #transitiveUserIds = new Map<string, Set<string>>();
  /** Which user holds each registered credential id. */
  #credentialOwners = new Map<string, string>();
  #fido2Policy: Fido2Policy;
  #tapPolicy: TapPolicy;
  #trustedRoots: x509.X509Certificate[] = [];
  #fido2 = new Map<string, StoredFido2Method[]>();
  #taps = new Map<string, StoredTemporaryAccessPass>();
  #challenges = new Map<string, PendingChallenge>();
  #sealer: Promise<ChallengeSealer> | undefined;
  #optionsServed = 0;

  constructor(init: TenantInit) {
    this.tenantId = init.tenantId;
    this.domain = init.domain;
    this.#now = init.now ?? Date.now;
    const rpId = init.webauthn?.rpId ?? "login.microsoft.com";
    this.webauthn = {
      rpId,
      rpName: init.webauthn?.rpName ?? "Microsoft",
      origins: init.webauthn?.origins ?? [`https://${rpId}`],
      excludeCredentialsEncoding: init.webauthn?.excludeCredentialsEncoding ?? "rotate",
      timeouts: init.webauthn?.timeouts ?? [60_000, 0],
      challengePaddingBytes: init.webauthn?.challengePaddingBytes ?? [1800, 0, 12_000],
    };
    this.fido2PolicyShape = init.fido2PolicyShape ?? "passkeyProfiles";
    this.models = new Map(Object.entries(defaultModels));
    this.accounts = init.accounts;
    this.apps = init.apps;
    this.onPremisesOnly = init.onPremisesOnly ?? [];
    for (const user of init.users) this.addUser(user);
    for (const group of init.groups) this.#groups.set(group.id.toLowerCase(), group);
    this.#fido2Policy = fido2PolicySchema.parse(init.fido2Policy ?? defaultFido2Policy());
    this.#tapPolicy = tapPolicySchema.parse(init.tapPolicy ?? defaultTapPolicy());
  }

  /** The tenant's clock, in ms since the epoch (injectable so tests need not sleep). */
  now(): number {
    return this.#now();
  }

  // --- users and groups ----------------------------------------------------------------------

  /** Adds (or replaces) a user. */
  addUser(user: SandboxUser): void {
    this.#users.set(user.id.toLowerCase(), user);
    this.#usersByUpn.set(user.userPrincipalName.toLowerCase(), user);
    this.#usersByMail.set(user.mail.toLowerCase(), user);
  }

  /** Every cloud user, in creation order. */
  users(): SandboxUser[] {
    return [...this.#users.values()];
  }

  /** Number of users: decides the tenant's throttling size class. */
  get userCount(): number {
    return this.#users.size;
  }

  /** A user by object id or userPrincipalName (case-insensitive), as Graph's `/users/{id | upn}`. */
  user(idOrUpn: string): SandboxUser | undefined {
    const key = idOrUpn.toLowerCase();
    return this.#users.get(key) ?? this.#usersByUpn.get(key);
  }

  /** A user by primary SMTP address (case-insensitive). */
  userByMail(mail: string): SandboxUser | undefined {
    return this.#usersByMail.get(mail.toLowerCase());
  }

  /** A group by object id. */
  group(id: string): SandboxGroup | undefined {
    return this.#groups.get(id.toLowerCase());
  }

  /** Every group. */
  groups(): SandboxGroup[] {
    return [...this.#groups.values()];
  }

  /**
   * Members of a group and of every group nested in it, each once, groups included (as Graph's
   * transitiveMembers lists them), in a stable order: breadth first.
   */
  transitiveMembers(
    groupId: string,
  ): Array<{ kind: "user"; user: SandboxUser } | { kind: "group"; group: SandboxGroup }> {
    const out: Array<{ kind: "user"; user: SandboxUser } | { kind: "group"; group: SandboxGroup }> = [];
    const seen = new Set<string>([groupId.toLowerCase()]);
    const queue = [groupId.toLowerCase()];
    while (queue.length > 0) {
      const group = this.#groups.get(queue.shift()!);
      if (!group) continue;
      for (const memberId of group.members) {
        const key = memberId.toLowerCase();
        if (seen.has(key)) continue;
        seen.add(key);
        const user = this.#users.get(key);
        if (user) {
          out.push({ kind: "user", user });
          continue;
        }
        const nested = this.#groups.get(key);
        if (nested) {
          out.push({ kind: "group", group: nested });
          queue.push(key);
        }
      }
    }
    return out;
  }

  /** Whether a user is a transitive member of a group ("all_users" contains everyone). */
  isMember(userId: string, groupId: string): boolean {
    if (groupId === "all_users") return true;
    const key = groupId.toLowerCase();
    let members = this.#transitiveUserIds.get(key);
    if (!members) {
      members = new Set(
        this.transitiveMembers(key).flatMap((m) => m.kind === "user" ? [m.user.id.toLowerCase()] : []),
      );
      this.#transitiveUserIds.set(key, members);
    }
    return members.has(userId.toLowerCase());
  }

  /** Whether a method policy applies to a user: in an include target and in no exclude target. */
  isTargeted(userId: string, policy: Pick<Fido2Policy, "includeTargets" | "excludeTargets">): boolean {
    return policy.includeTargets.some((t) => this.isMember(userId, t.id)) &&
      !policy.excludeTargets.some((t) => this.isMember(userId, t.id));
  }

  /** Whether the user holds a role that only a Privileged Authentication Administrator may act on. */
  isPrivileged(user: SandboxUser): boolean {
    return user.directoryRoles.some((role) => privilegedRoles.has(role));
  }

  // --- policies ------------------------------------------------------------------------------

  /** The Passkey (FIDO2) policy (a copy). */
  get fido2Policy(): Fido2Policy {
    return structuredClone(this.#fido2Policy);
  }

  /** Changes the Passkey (FIDO2) policy; throws a ZodError naming the field when the patch is invalid. */
  setFido2Policy(patch: Fido2PolicyPatch): Fido2Policy {
    const parsed = fido2PolicyPatchSchema.parse(patch);
    const { keyRestrictions, ...rest } = parsed;
    const next = {
      ...this.#fido2Policy,
      ...definedOnly(rest),
      keyRestrictions: { ...this.#fido2Policy.keyRestrictions, ...definedOnly(keyRestrictions ?? {}) },
    };
    this.#fido2Policy = fido2PolicySchema.parse(next);
    return this.fido2Policy;
  }

  /** The Temporary Access Pass policy (a copy). */
  get tapPolicy(): TapPolicy {
    return structuredClone(this.#tapPolicy);
  }

  /** Changes the Temporary Access Pass policy; throws a ZodError when the result is inconsistent. */
  setTapPolicy(patch: TapPolicyPatch): TapPolicy {
    const parsed = tapPolicyPatchSchema.parse(patch);
    this.#tapPolicy = tapPolicySchema.parse({ ...this.#tapPolicy, ...definedOnly(parsed) });
    return this.tapPolicy;
  }

  /**
   * Trusts an attestation root CA (PEM or DER, or base64 DER): a packed attestation whose x5c
   * chains to it counts as "attested". Stands in for the FIDO Metadata Service, which Entra uses
   * to decide attestation; the software key's root is not in it, so tests add it here.
   */
  trustAttestationRoot(pemOrDer: string | Uint8Array): void {
    const certificate = parseCertificate(pemOrDer);
    if (!this.#trustedRoots.some((c) => c.equal(certificate))) this.#trustedRoots.push(certificate);
  }

  /** Forgets every trusted attestation root. */
  clearTrustedAttestationRoots(): void {
    this.#trustedRoots = [];
  }

  /** The trusted attestation roots. */
  get trustedAttestationRoots(): readonly x509.X509Certificate[] {
    return this.#trustedRoots;
  }

  // --- passkeys --------------------------------------------------------------------------------

  /** A user's registered passkeys (live array: do not mutate). */
  fido2Methods(userId: string): readonly StoredFido2Method[] {
    return this.#fido2.get(userId.toLowerCase()) ?? [];
  }

  /** Registers a passkey for a user. */
  addFido2Method(userId: string, method: StoredFido2Method): void {
    const key = userId.toLowerCase();
    this.#fido2.set(key, [...(this.#fido2.get(key) ?? []), method]);
    this.#credentialOwners.set(method.credentialId, key);
  }

  /** Removes a passkey; false when the user has none with that id. */
  deleteFido2Method(userId: string, methodId: string): boolean {
    const key = userId.toLowerCase();
    const methods = this.#fido2.get(key) ?? [];
    const removed = methods.find((m) => m.id === methodId);
    if (!removed) return false;
    this.#fido2.set(key, methods.filter((m) => m !== removed));
    this.#credentialOwners.delete(removed.credentialId);
    return true;
  }

  /** The user (id) that holds a credential id, if any: a credential belongs to one user. */
  credentialOwner(credentialId: string): string | undefined {
    return this.#credentialOwners.get(credentialId);
  }

  // --- WebAuthn challenges ---------------------------------------------------------------------

  /**
   * Issues a challenge for a user, valid for `timeoutMinutes`: `challenge` (base64url) when given —
   * a sealed one (see {@link sealChallenge}), or the Security info ceremony's, whose bytes are a
   * JWE string — else 32 random bytes.
   */
  issueChallenge(userId: string, timeoutMinutes: number, challenge?: string): PendingChallenge {
    this.#pruneChallenges();
    const issuedAt = this.now();
    const pending: PendingChallenge = {
      challenge: challenge ?? toBase64Url(randomBytes(32)),
      userId,
      issuedAt,
      expiresAt: issuedAt + timeoutMinutes * 60_000,
    };
    this.#challenges.set(pending.challenge, pending);
    return pending;
  }

  /**
   * Issues a challenge shaped like Entra's: the base64url of a compact JWE (see challenge.ts),
   * carrying `paddingBytes` extra bytes.
   */
  async sealChallenge(
    userId: string,
    timeoutMinutes: number,
    paddingBytes: number,
  ): Promise<PendingChallenge> {
    this.#sealer ??= createChallengeSealer();
    const expiresAt = this.now() + timeoutMinutes * 60_000;
    const challenge = await (await this.#sealer).seal({ userId, expiresAt }, paddingBytes);
    return this.issueChallenge(userId, timeoutMinutes, challenge);
  }

  /** The next creationOptions answer's id encoding, timeout and challenge size (they rotate). */
  nextCreationOptionsVariant(): CreationOptionsVariant {
    const n = this.#optionsServed++;
    const settings = this.webauthn;
    const pick = <T>(list: readonly T[], fallback: T): T =>
      list.length === 0 ? fallback : list[n % list.length]!;
    return {
      encoding: settings.excludeCredentialsEncoding === "rotate"
        ? idEncodings[n % idEncodings.length]!
        : settings.excludeCredentialsEncoding,
      timeout: pick(settings.timeouts, 60_000),
      challengePaddingBytes: pick(settings.challengePaddingBytes, 0),
    };
  }

  /**
   * The user handle creationOptions sends for a user: opaque and stable, 51 bytes like the
   * recorded real response's (`T0Y6…`, which begins with the ASCII `OF:`), never the sign-in name.
   * The sandbox derives the other 48 bytes from the tenant and user ids (SHA-384).
   */
  userHandle(userId: string): Uint8Array<ArrayBuffer> {
    return concatBytes(utf8("OF:"), sha384(utf8(`${this.tenantId}/${userId.toLowerCase()}`)));
  }

  /** Looks a challenge up and removes it: a challenge is good for one registration attempt. */
  takeChallenge(challenge: string): PendingChallenge | undefined {
    const pending = this.#challenges.get(challenge);
    this.#challenges.delete(challenge);
    return pending;
  }

  /** Challenges issued and not yet used (expired ones included until pruned). */
  get pendingChallenges(): number {
    return this.#challenges.size;
  }

  #pruneChallenges(): void {
    // Keep expired challenges for a while so a late POST gets "expired", not "unknown".
    const horizon = this.now() - 60 * 60_000;
    for (const [key, pending] of this.#challenges) {
      if (pending.expiresAt < horizon) this.#challenges.delete(key);
    }
  }

  // --- Temporary Access Pass -------------------------------------------------------------------

  /** The user's Temporary Access Pass, if any. */
  temporaryAccessPass(userId: string): StoredTemporaryAccessPass | undefined {
    return this.#taps.get(userId.toLowerCase());
  }

  /** Stores a TAP, replacing the user's previous one (a user has at most one). */
  setTemporaryAccessPass(userId: string, tap: StoredTemporaryAccessPass): void {
    this.#taps.set(userId.toLowerCase(), tap);
  }

  /** Deletes the user's TAP if its id matches; false otherwise. */
  deleteTemporaryAccessPass(userId: string, id: string): boolean {
    const tap = this.#taps.get(userId.toLowerCase());
    if (!tap || tap.id !== id) return false;
    this.#taps.delete(userId.toLowerCase());
    return true;
  }

  /** Every outstanding TAP, by user id. */
  temporaryAccessPasses(): Array<[userId: string, tap: StoredTemporaryAccessPass]> {
    return [...this.#taps.entries()];
  }

  /**
   * Why a TAP can or cannot be used now, as Graph's `methodUsabilityReason`:
   * EnabledByPolicy, DisabledByPolicy, Expired, NotYetValid or OneTimeUsed.
   */
  tapUsability(tap: StoredTemporaryAccessPass): { isUsable: boolean; methodUsabilityReason: string } {
    const now = this.now();
    const start = Date.parse(tap.startDateTime);
    const end = start + tap.lifetimeInMinutes * 60_000;
    let reason = "EnabledByPolicy";
    if (this.#tapPolicy.state !== "enabled") reason = "DisabledByPolicy";
    else if (tap.usedDateTime !== null) reason = "OneTimeUsed";
    else if (now < start) reason = "NotYetValid";
    else if (now >= end) reason = "Expired";
    return { isUsable: reason === "EnabledByPolicy", methodUsabilityReason: reason };
  }

  /**
   * Signs in with a TAP (for a browser flow built on this tenant): true when the pass matches and
   * is usable; a one-time pass is spent.
   */
  redeemTemporaryAccessPass(idOrUpn: string, value: string): boolean {
    const user = this.user(idOrUpn);
    const tap = user ? this.temporaryAccessPass(user.id) : undefined;
    if (!user || !tap || tap.temporaryAccessPass !== value) return false;
    if (!this.tapUsability(tap).isUsable) return false;
    if (tap.isUsableOnce) tap.usedDateTime = new Date(this.now()).toISOString();
    return true;
  }
}

/** The tenant's live state, under the name the sandbox's API uses. */
export type TenantState = SandboxTenant;

function definedOnly<T extends Record<string, unknown>>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function parseCertificate(pemOrDer: string | Uint8Array): x509.X509Certificate {
  try {
    if (typeof pemOrDer !== "string") return new x509.X509Certificate(Uint8Array.from(pemOrDer));
    if (pemOrDer.includes("-----BEGIN")) return new x509.X509Certificate(pemOrDer);
    return new x509.X509Certificate(Uint8Array.from(fromBase64Any(pemOrDer.trim())));
  } catch (error) {
    throw new TypeError(
      "Cannot trust attestation root: it is not an X.509 certificate in PEM, DER or base64 DER",
      { cause: error },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------------

/** Options of {@link seedTenant}. */
export interface SeedOptions {
  /** Regular users to create (user0001@…, user0002@…). @default 25 */
  users?: number;
  /** The tenant's verified domain. @default "contoso.sandbox" */
  domain?: string;
  /** Seeds ids, names and (unless `secrets: "random"`) passwords and the client secret. @default 1 */
  seed?: number;
  /** Where passwords and the app secret come from. @default "random" */
  secrets?: "random" | "seeded";
  /** The tenant id. @default derived from the seed */
  tenantId?: string;
  /** The clock. @default Date.now */
  now?: () => number;
  webauthn?: Partial<WebAuthnSettings>;
}

/** What {@link seedTenant} made, with the names tests and the CLI print. */
export interface SeededTenant {
  tenant: SandboxTenant;
  /** The default app registration (client credentials with a secret). */
  app: SandboxAppRegistration & { secret: string };
  /** An app with only the passkey permission (no TAP, no directory reads beyond users). */
  passkeyOnlyApp: SandboxAppRegistration & { secret: string };
  /** An app with no permissions granted, for 403 tests. */
  unprivilegedApp: SandboxAppRegistration & { secret: string };
  /** admin@… — Authentication Administrator. */
  admin: SandboxSignInAccount;
  /** privadmin@… — Privileged Authentication Administrator. */
  privilegedAdmin: SandboxSignInAccount;
  /** reader@… — a user with no admin role, for 403 tests. */
  reader: SandboxSignInAccount;
  /** Group ids by purpose. */
  groups: { allUsers: string; pilot: string; pilotWave2: string; pilotWave3: string };
  /** The on-premises-only account (answers 404 everywhere). */
  onPremisesOnly: OnPremisesOnlyAccount;
}

const givenNames = [
  "Ada",
  "Alan",
  "Grace",
  "Edsger",
  "Barbara",
  "Donald",
  "Frances",
  "Ken",
  "Margaret",
  "Dennis",
  "Radia",
  "Tim",
  "Hedy",
  "Linus",
  "Katherine",
  "Niklaus",
  "Sophie",
  "John",
  "Karen",
  "Leslie",
];
const surnames = [
  "Lovelace",
  "Turing",
  "Hopper",
  "Dijkstra",
  "Liskov",
  "Knuth",
  "Allen",
  "Thompson",
  "Hamilton",
  "Ritchie",
  "Perlman",
  "Berners-Lee",
  "Lamarr",
  "Torvalds",
  "Johnson",
  "Wirth",
  "Wilson",
  "Backus",
  "Jones",
  "Lamport",
];
const jobTitles = ["Engineer", "Analyst", "Nurse", "Teacher", "Designer", "Accountant", null];

/** Application permissions the default app is granted. */
export const defaultAppPermissions = [
  "UserAuthMethod-Passkey.ReadWrite.All",
  "UserAuthenticationMethod.ReadWrite.All",
  "User.Read.All",
  "GroupMember.Read.All",
  "Policy.Read.All",
];

/**
 * Makes a tenant: `users` regular users (`user0001@domain` …) with GUID object ids, names and mail
 * addresses; groups with nested groups; admin accounts; app registrations; one on-premises-only
 * account; the default policies.
 *
 * @example
 * ```ts
 * import { seedTenant } from "./tenant.ts";
 * const { tenant, admin } = seedTenant({ users: 3, seed: 7 });
 * console.assert(tenant.user("user0002@contoso.sandbox") !== undefined);
 * console.assert(admin.directoryRoles.includes("Authentication Administrator"));
 * ```
 */
export function seedTenant(options: SeedOptions = {}): SeededTenant {
  const count = options.users ?? 25;
  if (!Number.isInteger(count) || count < 0 || count > 1_000_000) {
    throw new RangeError(
      `Cannot seed sandbox tenant: users must be an integer from 0 to 1000000, got ${count}`,
    );
  }
  const domain = (options.domain ?? "contoso.sandbox").toLowerCase();
  const random = seededRandom(options.seed ?? 1);
  const secretRandom = options.secrets === "seeded" ? random.bytes : randomBytes;
  const guid = () => guidFrom(random.bytes(16));
  const tenantId = options.tenantId ?? guid();
  const digits = Math.max(4, String(count).length);

  const users: SandboxUser[] = [];
  for (let i = 1; i <= count; i++) {
    const given = givenNames[random.int(givenNames.length)]!;
    const surname = surnames[random.int(surnames.length)]!;
    const number = String(i).padStart(digits, "0");
    users.push({
      id: guid(),
      userPrincipalName: `user${number}@${domain}`,
      displayName: `${given} ${surname}`,
      givenName: given,
      surname,
      mail: `${given}.${surname}.${number}@${domain}`.toLowerCase().replaceAll(/[^a-z0-9.@-]/g, ""),
      jobTitle: jobTitles[random.int(jobTitles.length)] ?? null,
      accountEnabled: true,
      directoryRoles: [],
      onPremisesSyncEnabled: random.next() < 0.5 ? true : null,
    });
  }

  const password = () => `Sbx-${toBase64Url(secretRandom(12))}`;
  const makeAccount = (name: string, displayName: string, roles: string[]): SandboxSignInAccount => {
    const user: SandboxUser = {
      id: guid(),
      userPrincipalName: `${name}@${domain}`,
      displayName,
      givenName: displayName.split(" ")[0]!,
      surname: displayName.split(" ").slice(1).join(" "),
      mail: `${name}@${domain}`,
      jobTitle: roles[0] ?? null,
      accountEnabled: true,
      directoryRoles: roles,
      onPremisesSyncEnabled: null,
    };
    users.push(user);
    return {
      objectId: user.id,
      userPrincipalName: user.userPrincipalName,
      password: password(),
      directoryRoles: roles,
    };
  };
  const admin = makeAccount("admin", "Sandbox Admin", ["Authentication Administrator"]);
  const privilegedAdmin = makeAccount("privadmin", "Sandbox Privileged Admin", [
    "Privileged Authentication Administrator",
  ]);
  const reader = makeAccount("reader", "Sandbox Reader", []);

  const regular = users.slice(0, count).map((u) => u.id);
  const quarter = Math.ceil(count / 4);
  const groupIds = { allUsers: guid(), pilot: guid(), pilotWave2: guid(), pilotWave3: guid() };
  const groups: SandboxGroup[] = [
    {
      id: groupIds.allUsers,
      displayName: "All sandbox users",
      mailNickname: "all-sandbox-users",
      description: "Every seeded user",
      members: regular,
    },
    {
      id: groupIds.pilot,
      displayName: "Passkey pilot",
      mailNickname: "passkey-pilot",
      description: "First wave, with the later waves nested",
      members: [...regular.slice(0, quarter), groupIds.pilotWave2],
    },
    {
      id: groupIds.pilotWave2,
      displayName: "Passkey pilot - wave 2",
      mailNickname: "passkey-pilot-wave-2",
      description: null,
      members: [...regular.slice(quarter, 2 * quarter), groupIds.pilotWave3],
    },
    {
      id: groupIds.pilotWave3,
      displayName: "Passkey pilot - wave 3",
      mailNickname: "passkey-pilot-wave-3",
      description: "Overlaps wave 1 on purpose: transitive members are listed once",
      // The first user is also a direct member of the pilot group; the pilot group itself is
      // nested back in (Entra allows it), and both must not be listed twice.
      members: [...regular.slice(0, 1), ...regular.slice(2 * quarter, 2 * quarter + 2), groupIds.pilot],
    },
  ];

  const app = (displayName: string, permissions: string[]) => ({
    clientId: guid(),
    displayName,
    secret: `${toBase64Url(secretRandom(3))}~${toBase64(secretRandom(27)).replaceAll(/[+/=]/g, "_")}`,
    redirectUris: [
      "http://localhost",
      "http://127.0.0.1",
      "https://login.microsoftonline.com/common/oauth2/nativeclient",
    ],
    applicationPermissions: permissions,
  });
  const defaultApp = app("provisioning (sandbox)", [...defaultAppPermissions]);
  const passkeyOnlyApp = app("passkey only (sandbox)", [
    "UserAuthMethod-Passkey.ReadWrite.All",
    "User.Read.All",
  ]);
  const unprivilegedApp = app("no permissions (sandbox)", []);

  const onPremisesOnly: OnPremisesOnlyAccount = {
    userPrincipalName: `onprem.only@${domain}`,
    displayName: "On-premises Only",
    reason: "exists in on-premises Active Directory only (not synced to Entra ID)",
  };

  const tenant = new SandboxTenant({
    tenantId,
    domain,
    users,
    groups,
    accounts: [admin, privilegedAdmin, reader],
    apps: [defaultApp, passkeyOnlyApp, unprivilegedApp],
    onPremisesOnly: [onPremisesOnly],
    ...(options.now ? { now: options.now } : {}),
    ...(options.webauthn ? { webauthn: options.webauthn } : {}),
  });
  return {
    tenant,
    app: defaultApp,
    passkeyOnlyApp,
    unprivilegedApp,
    admin,
    privilegedAdmin,
    reader,
    groups: groupIds,
    onPremisesOnly,
  };
}
