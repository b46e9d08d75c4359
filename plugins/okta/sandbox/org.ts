/**
 * The state of a sandbox Okta org: users, groups, factors and the WebAuthn challenges handed out,
 * plus the inspection API tests read (which factors each user holds, whether each activation was
 * verified). The HTTP routes in server.ts are the only writers besides the test setup methods.
 *
 * Shapes follow Okta's Management API as documented:
 * - User: https://developer.okta.com/docs/reference/api/users/#user-object
 * - Group: https://developer.okta.com/docs/reference/api/groups/#group-object
 * - Factor: https://developer.okta.com/docs/reference/api/factors/#factor-object
 *
 * @module
 */

/** An Okta user as the sandbox stores it (User object: id, status, profile). */
export interface OrgUser {
  /** Okta ids are 20 characters, users start with `00u` (e.g. `00ub0oNGTSWTBKOLGLNR` in the Users API examples). */
  readonly id: string;
  status: "ACTIVE" | "SUSPENDED" | "DEPROVISIONED" | "STAGED";
  readonly created: string;
  readonly profile: { login: string; email: string; firstName: string; lastName: string };
}

/** An Okta group (Group object: id, type, profile.name). */
export interface OrgGroup {
  readonly id: string;
  readonly profile: { name: string; description: string };
  readonly members: string[];
}

/** A user factor (Factor object); only `webauthn`/`FIDO` factors are modelled. */
export interface OrgFactor {
  readonly id: string;
  readonly userId: string;
  status: "PENDING_ACTIVATION" | "ACTIVE";
  readonly created: string;
  lastUpdated: string;
  /** The challenge the enrollment handed out (base64url), until activation consumes it. */
  challenge: string | undefined;
  /** Set on activation: WebAuthn factor profile `credentialId`, `authenticatorName`. */
  profile?: { credentialId: string; authenticatorName: string };
  /** True once @simplewebauthn/server verified the activation's attestation and client data. */
  verified: boolean;
  /** The AAGUID the attestation carried (the sandbox's inspection only: Okta does not list it). */
  aaguid?: string;
}

/** Policy and behaviour switches of a sandbox org. */
export interface OrgSettings {
  /**
   * The org's enrollment policy allows the FIDO2 (WebAuthn) factor. When false, enrolling one is
   * refused (see server.ts for the answer and its source).
   */
  webauthnAllowed: boolean;
  /** Logins whose enrollment the policy refuses (a group-scoped policy rule). */
  refusedLogins: Set<string>;
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A 20-character Okta-style id with the given 3-character prefix (`00u` user, `00g` group, `fwf` factor). */
export function oktaId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(17));
  return prefix + [...bytes].map((b) => idAlphabet[b % idAlphabet.length]).join("");
}

/** See the module documentation. */
export class SandboxOrg {
  readonly users = new Map<string, OrgUser>();
  readonly groups = new Map<string, OrgGroup>();
  readonly factors = new Map<string, OrgFactor>();
  readonly settings: OrgSettings = { webauthnAllowed: true, refusedLogins: new Set() };
  /** Every request the server answered 429, for tests. */
  throttled = 0;
  /** Successful activations, for tests. */
  activations = 0;
  /**
   * Fault: the next this-many activations are carried out but their answers never sent (the
   * connection hangs until the client gives up), as when a network drops an answer.
   */
  loseActivationAnswers = 0;
  /** Token requests answered `use_dpop_nonce`, for tests. */
  dpopNonceChallenges = 0;

  /** Adds an ACTIVE user; `login` is also the email. */
  addUser(login: string, name: { firstName?: string; lastName?: string } = {}): OrgUser {
    const user: OrgUser = {
      id: oktaId("00u"),
      status: "ACTIVE",
      created: new Date().toISOString(),
      profile: {
        login,
        email: login,
        firstName: name.firstName ?? login.split("@")[0] ?? login,
        lastName: name.lastName ?? "Sandbox",
      },
    };
    this.users.set(user.id, user);
    return user;
  }

  /** Adds a group of the given users (by login). */
  addGroup(name: string, logins: readonly string[]): OrgGroup {
    const members = logins.map((login) => {
      const user = this.userByLogin(login);
      if (!user) throw new Error(`sandbox: no user ${login}`);
      return user.id;
    });
    const group: OrgGroup = { id: oktaId("00g"), profile: { name, description: "" }, members };
    this.groups.set(group.id, group);
    return group;
  }

  /** A user by id or login (the Users API's `GET /api/v1/users/{id|login}`). */
  findUser(idOrLogin: string): OrgUser | undefined {
    return this.users.get(idOrLogin) ?? this.userByLogin(idOrLogin);
  }

  userByLogin(login: string): OrgUser | undefined {
    const wanted = login.toLowerCase();
    for (const user of this.users.values()) {
      if (user.profile.login.toLowerCase() === wanted) return user;
    }
    return undefined;
  }

  /** The factors a user holds, in creation order. */
  factorsOf(userId: string): OrgFactor[] {
    return [...this.factors.values()].filter((f) => f.userId === userId);
  }

  /** Inspection: the ACTIVE webauthn factors of each login that has any. */
  activeFactorsByLogin(): Map<string, OrgFactor[]> {
    const result = new Map<string, OrgFactor[]>();
    for (const factor of this.factors.values()) {
      if (factor.status !== "ACTIVE") continue;
      const login = this.users.get(factor.userId)?.profile.login ?? factor.userId;
      result.set(login, [...(result.get(login) ?? []), factor]);
    }
    return result;
  }
}
