/**
 * Who the tool is signed in as and whether that is enough: `provisioning whoami`.
 *
 * Reads the access token's claims (https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference):
 * `tid` tenant, `idtyp` app or user, `upn`/`name`/`oid` the admin, `appid`/`app_displayname` the
 * app, `scp` delegated permissions, `roles` application permissions, `wids` the template ids of
 * the admin's directory roles. The token is not verified (clients must not validate Graph
 * tokens); Graph has the last word, so the findings are warnings, not refusals.
 *
 * What provisioning needs:
 * - To create passkeys: `UserAuthMethod-Passkey.ReadWrite.All` (least privileged) or
 *   `UserAuthenticationMethod.ReadWrite.All`, delegated or application
 *   (https://learn.microsoft.com/graph/api/authentication-post-fido2methods).
 * - Delegated only: the admin must also hold a directory role that may manage other users'
 *   methods: Authentication Administrator (non-admin users only) or Privileged Authentication
 *   Administrator (everyone) — same page, "Important" note; template ids from
 *   https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference.
 * - The browser (TAP) path: `UserAuthMethod-TAP.ReadWrite.All` or
 *   `UserAuthenticationMethod.ReadWrite.All`.
 * - Resolving users: `User.Read.All` (or a broader directory read); group sources:
 *   `GroupMember.Read.All`; preflight reads of the methods policy: `Policy.Read.All` (or
 *   `Policy.ReadWrite.AuthenticationMethod`).
 *
 * @module
 */
import { readAccessTokenClaims } from "./tokens.ts";

/**
 * Template ids of the directory roles `whoami` names
 * (https://learn.microsoft.com/entra/identity/role-based-access-control/permissions-reference).
 */
export const directoryRoleNames: Readonly<Record<string, string>> = Object.freeze({
  "62e90394-69f5-4237-9190-012177145e10": "Global Administrator",
  "7be44c8a-adaf-4e2a-84d6-ab2649e08a13": "Privileged Authentication Administrator",
  "c4e39bd9-1100-46d3-8c65-fb160da0071f": "Authentication Administrator",
  "0526716b-113d-4c15-b2c8-68e3c22b9f80": "Authentication Policy Administrator",
  "e8611ab8-c189-46e8-94e1-60213ab1f814": "Privileged Role Administrator",
  "fe930be7-5e62-47db-91af-98c3a49a38b1": "User Administrator",
  "729827e3-9c14-49f7-bb1b-9608f156bbb8": "Helpdesk Administrator",
  "194ae4cb-b126-40b2-bd5b-6091b380977d": "Security Administrator",
  "f2ef992c-3afb-46b9-b7cf-a126ee74c451": "Global Reader",
  "88d8e3e3-8f55-4a1e-953a-9b9898b8876b": "Directory Readers",
  // Every member user holds this default role; the role list does not show it.
  "b79fbf4d-3ef9-4689-8143-76b194e85509": "User",
});

/** Authentication Administrator: manages methods of non-admin users. */
export const authenticationAdministratorId = "c4e39bd9-1100-46d3-8c65-fb160da0071f";
/** Privileged Authentication Administrator: manages methods of every user. */
export const privilegedAuthenticationAdministratorId = "7be44c8a-adaf-4e2a-84d6-ab2649e08a13";
/** Global Administrator: can do everything the two above can. */
export const globalAdministratorId = "62e90394-69f5-4237-9190-012177145e10";

/** The permissions that let the tool create passkeys, least privileged first. */
export const passkeyPermissions: readonly string[] = [
  "UserAuthMethod-Passkey.ReadWrite.All",
  "UserAuthenticationMethod.ReadWrite.All",
];

/** A missing permission or role, and what to do about it. */
export interface PermissionFinding {
  /** `error`: provisioning will fail; `warning`: a feature will; `info`: a limit to know. */
  readonly severity: "error" | "warning" | "info";
  /**
   * `missing-passkey-permission`, `missing-directory-role`, `limited-directory-role`,
   * `missing-tap-permission`, `missing-user-read`, `missing-group-read`, `missing-policy-read`,
   * `token-expired`, `token-unreadable`, `settings-changed` (the cached sign-in was made with
   * another tenant, client id or client credential than the settings now give).
   */
  readonly code: string;
  readonly message: string;
  readonly hint: string;
}

/** A directory role the admin holds. */
export interface DirectoryRole {
  /** The role's template id. */
  readonly id: string;
  /** Its name, when it is one `whoami` knows. */
  readonly name?: string;
}

/** What `whoami` reports; the CLI prints it as a table or JSON. Holds no token. */
export interface WhoAmI {
  /** `delegated` (an admin signed in) or `app` (client credentials). */
  readonly kind: "delegated" | "app";
  readonly tenantId?: string;
  /** The admin (delegated tokens). */
  readonly account?: {
    readonly userPrincipalName?: string;
    readonly displayName?: string;
    readonly objectId?: string;
  };
  /** The app the token was issued to. */
  readonly app: { readonly clientId?: string; readonly displayName?: string };
  /** Delegated permissions (`scp`). */
  readonly scopes: readonly string[];
  /** Application permissions (`roles`). */
  readonly roles: readonly string[];
  /** The admin's directory roles (`wids`), the default User role left out. */
  readonly directoryRoles: readonly DirectoryRole[];
  /** When the access token expires, as ISO 8601. */
  readonly expiresAt?: string;
  /** What is missing, most severe first. Empty when everything needed is there. */
  readonly findings: readonly PermissionFinding[];
}

/** Options of {@link whoAmI}. */
export interface WhoAmIOptions {
  /**
   * `delegated` or `app`, when the caller knows (from the sign-in it made); otherwise read from
   * the token's `idtyp`, then from whether it has `scp`.
   */
  readonly kind?: "delegated" | "app";
  /**
   * Clock in epoch milliseconds.
   * @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Describes the principal an access token speaks for and what it lacks for provisioning.
 *
 * @example
 * ```ts
 * import { whoAmI } from "./whoami.ts";
 * const claims = { tid: "t", idtyp: "user", upn: "admin@contoso.com", scp: "User.Read.All", wids: [] };
 * const payload = btoa(JSON.stringify(claims)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
 * const token = `e30.${payload}.sig`;
 * const report = whoAmI(token);
 * console.assert(report.findings.some((f) => f.code === "missing-passkey-permission"));
 * ```
 */
export function whoAmI(accessToken: string, options: WhoAmIOptions = {}): WhoAmI {
  const now = options.now ?? Date.now;
  const claims = readAccessTokenClaims(accessToken);
  if (claims === undefined) {
    return {
      kind: options.kind ?? "delegated",
      app: {},
      scopes: [],
      roles: [],
      directoryRoles: [],
      findings: [{
        severity: "warning",
        code: "token-unreadable",
        message: "The access token is not a JWT this tool can read",
        hint: "Graph decides what it allows; run a preflight (provisioning doctor) to find out",
      }],
    };
  }
  const kind = options.kind ??
    (claims.idtyp === "app"
      ? "app"
      : claims.idtyp === "user"
      ? "delegated"
      : claims.scp
      ? "delegated"
      : "app");
  const scopes = (claims.scp ?? "").split(" ").filter(Boolean);
  const roles = claims.roles ?? [];
  const granted = new Set((kind === "app" ? roles : scopes).map((name) => name.toLowerCase()));
  const has = (...names: string[]) => names.some((name) => granted.has(name.toLowerCase()));
  const wids = (claims.wids ?? []).map((id) => id.toLowerCase());
  const directoryRoles: DirectoryRole[] = wids
    .filter((id) => id !== "b79fbf4d-3ef9-4689-8143-76b194e85509")
    .map((id) => (directoryRoleNames[id] === undefined ? { id } : { id, name: directoryRoleNames[id]! }));
  const permissionKind = kind === "app" ? "application permission" : "delegated permission";
  const grantHint = kind === "app"
    ? "Add it under the app registration's API permissions (Microsoft Graph, Application) and grant admin consent"
    : "Add it under the app registration's API permissions (Microsoft Graph, Delegated), grant admin consent, and sign in again";

  const findings: PermissionFinding[] = [];
  if (!has(...passkeyPermissions)) {
    findings.push({
      severity: "error",
      code: "missing-passkey-permission",
      message: `The token has neither ${
        passkeyPermissions.join(" nor ")
      } (${permissionKind}): Graph will refuse to create passkeys`,
      hint: `${grantHint} (UserAuthMethod-Passkey.ReadWrite.All is the least privileged)`,
    });
  }
  if (kind === "delegated") {
    const canAll = wids.includes(privilegedAuthenticationAdministratorId) ||
      wids.includes(globalAdministratorId);
    const canNonAdmins = wids.includes(authenticationAdministratorId);
    if (!canAll && !canNonAdmins) {
      findings.push({
        severity: "error",
        code: "missing-directory-role",
        message:
          "The signed-in account holds neither Authentication Administrator nor Privileged Authentication Administrator: Graph will refuse to manage other users' methods",
        hint:
          "Assign (or activate in PIM) Privileged Authentication Administrator, or Authentication Administrator for non-admin users, then sign in again",
      });
    } else if (!canAll) {
      findings.push({
        severity: "info",
        code: "limited-directory-role",
        message: "Authentication Administrator manages the methods of non-admin users only",
        hint: "Provisioning users who hold admin roles needs Privileged Authentication Administrator",
      });
    }
  }
  if (!has("UserAuthMethod-TAP.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All")) {
    findings.push({
      severity: "warning",
      code: "missing-tap-permission",
      message: "The token cannot create Temporary Access Passes: the browser path will fail",
      hint: `${grantHint} (UserAuthMethod-TAP.ReadWrite.All or UserAuthenticationMethod.ReadWrite.All)`,
    });
  }
  if (!has("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")) {
    findings.push({
      severity: "warning",
      code: "missing-user-read",
      message: "The token cannot read users (User.Read.All): users may not resolve by UPN or mail",
      hint: grantHint,
    });
  }
  if (
    !has(
      "GroupMember.Read.All",
      "Group.Read.All",
      "Group.ReadWrite.All",
      "Directory.Read.All",
      "Directory.ReadWrite.All",
    )
  ) {
    findings.push({
      severity: "warning",
      code: "missing-group-read",
      message: "The token cannot read group members (GroupMember.Read.All): group sources will fail",
      hint: grantHint,
    });
  }
  if (!has("Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod", "Policy.Read.AuthenticationMethod")) {
    findings.push({
      severity: "warning",
      code: "missing-policy-read",
      message:
        "The token cannot read the authentication methods policy (Policy.Read.All): preflight will be blind",
      hint: grantHint,
    });
  }
  if (claims.exp !== undefined && claims.exp * 1000 <= now()) {
    findings.push({
      severity: "warning",
      code: "token-expired",
      message: "The access token has expired",
      hint: "It is renewed on the next Graph call; sign in again if that fails",
    });
  }
  const order = { error: 0, warning: 1, info: 2 } as const;
  findings.sort((a, b) => order[a.severity] - order[b.severity]);

  const result: {
    -readonly [K in keyof WhoAmI]: WhoAmI[K];
  } = { kind, app: appOf(claims), scopes, roles, directoryRoles, findings };
  if (claims.tid !== undefined) result.tenantId = claims.tid;
  if (kind === "delegated") {
    const account: { userPrincipalName?: string; displayName?: string; objectId?: string } = {};
    const upn = claims.upn ?? claims.preferred_username ?? claims.unique_name;
    if (upn !== undefined) account.userPrincipalName = upn;
    if (claims.name !== undefined) account.displayName = claims.name;
    if (claims.oid !== undefined) account.objectId = claims.oid;
    result.account = account;
  }
  if (claims.exp !== undefined) result.expiresAt = new Date(claims.exp * 1000).toISOString();
  return result;
}

function appOf(
  claims: { appid?: string | undefined; azp?: string | undefined; app_displayname?: string | undefined },
) {
  const app: { clientId?: string; displayName?: string } = {};
  const clientId = claims.appid ?? claims.azp;
  if (clientId !== undefined) app.clientId = clientId;
  if (claims.app_displayname !== undefined) app.displayName = claims.app_displayname;
  return app;
}

/**
 * The report as the CLI's `login` and `whoami` print it (core/plugin.ts `AccountSummary`):
 * labelled rows, and one warning line per error or warning finding (with its hint). Info findings
 * become a "Note" row.
 *
 * @example
 * ```ts
 * import { toAccountSummary } from "./whoami.ts";
 * const summary = toAccountSummary({ kind: "app", app: { clientId: "c" }, scopes: [], roles: ["User.Read.All"], directoryRoles: [], findings: [] });
 * console.assert(summary.rows.some(([label, value]) => label === "Permissions" && value === "User.Read.All"));
 * ```
 */
export function toAccountSummary(report: WhoAmI): {
  rows: [label: string, value: string][];
  warnings: string[];
} {
  const rows: [string, string][] = [];
  if (report.tenantId !== undefined) rows.push(["Tenant", report.tenantId]);
  rows.push([
    "Signed in as",
    report.kind === "app" ? "application (client credentials)" : "user (delegated)",
  ]);
  if (report.account?.userPrincipalName !== undefined) {
    rows.push(["Account", report.account.userPrincipalName]);
  }
  const app = [report.app.displayName, report.app.clientId && `(${report.app.clientId})`].filter(Boolean)
    .join(" ");
  if (app !== "") rows.push(["Application", app]);
  const permissions = report.kind === "app" ? report.roles : report.scopes;
  rows.push(["Permissions", permissions.length > 0 ? permissions.join(", ") : "(none)"]);
  if (report.kind === "delegated") {
    const roles = report.directoryRoles.map((role) => role.name ?? role.id);
    rows.push(["Directory roles", roles.length > 0 ? roles.join(", ") : "(none)"]);
  }
  if (report.expiresAt !== undefined) rows.push(["Token expires", report.expiresAt]);
  for (const finding of report.findings) {
    if (finding.severity === "info") rows.push(["Note", `${finding.message}. ${finding.hint}`]);
  }
  const warnings = report.findings
    .filter((finding) => finding.severity !== "info")
    .map((finding) => `${finding.message}. ${finding.hint}`);
  return { rows, warnings };
}
