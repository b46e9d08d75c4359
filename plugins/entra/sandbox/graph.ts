/**
 * Microsoft Graph, as far as the Entra plugin calls it: users, groups, the passkey provisioning
 * API, Temporary Access Passes and the two authentication method policies, under `/v1.0` and
 * `/beta`, with Graph's JSON shapes, `@odata.context`/`@odata.type`, error envelope and status
 * codes. Each handler cites the Microsoft Learn page it reproduces.
 *
 * Handlers take an already verified {@link Principal} (what the OAuth side put in the access
 * token), so they can be called directly as well as through `server.ts`.
 *
 * Error envelope (https://learn.microsoft.com/en-us/graph/errors):
 * `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
 *
 * Where Microsoft documents a behaviour but not the exact error text (policy refusals, a bad
 * attestation), the sandbox answers with Graph's generic `badRequest` code and a message that
 * names the policy setting, and says so in a comment.
 *
 * @module
 */
import { z } from "zod";
import { fromBase64Any, randomBytes, toBase64, toBase64Url } from "../../../core/bytes.ts";
import {
  type CredentialIdEncoding,
  toBase64UrlPaddingDigit,
} from "../../../core/webauthn/credential_id_text.ts";
import type { Principal } from "./oauth.ts";
import { graphAttestationFormats, RegistrationRefused, verifyRegistration } from "./registration.ts";
import {
  authenticationAdminRoles,
  type DirectoryMember,
  guidFrom,
  type SandboxGroup,
  type SandboxTenant,
  type SandboxUser,
  type StoredFido2Method,
  type StoredTemporaryAccessPass,
} from "./tenant.ts";

// ---------------------------------------------------------------------------------------------
// Public surface
// ---------------------------------------------------------------------------------------------

/** The ids Graph puts in its response headers and in every error's innerError. */
export interface RequestIds {
  requestId: string;
  clientRequestId: string;
}

/** A Graph API version the sandbox serves. */
export type GraphVersion = "v1.0" | "beta";

/** A request matched to one of the sandbox's Graph routes. */
export interface GraphRoute {
  version: GraphVersion;
  /** Template without the version, as Graph's throttling tables write paths: `users/{id}`. */
  template: string;
  /** `GET /v1.0/users/{id}`: the name call counts are kept under. */
  name: string;
  /** True for POST, PATCH, PUT and DELETE (they count against the write limits). */
  write: boolean;
}

/** Options of {@link createGraphApi}. */
export interface GraphApiOptions {
  tenant: SandboxTenant;
  /** The sandbox's own base URL (`http://127.0.0.1:port`), for `@odata.context` and nextLinks. */
  baseUrl: () => string;
}

/** The Graph side of the sandbox. */
export interface GraphApi {
  /** Matches a request to a route, or `undefined` when the path is not Graph's or not served. */
  route(method: string, url: URL): GraphRoute | undefined;
  /** Answers a Graph request for an authenticated principal. Never throws for bad input. */
  handle(request: Request, url: URL, principal: Principal, ids?: RequestIds): Promise<Response>;
}

/** JSON responses of Graph carry this content type. */
export const graphContentType =
  "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/**
 * Builds a Graph error response in Graph's envelope
 * (https://learn.microsoft.com/en-us/graph/errors#json-representation).
 */
export function graphError(
  status: number,
  code: string,
  message: string,
  ids: RequestIds,
  now: number = Date.now(),
  headers: Record<string, string> = {},
): Response {
  return new Response(
    JSON.stringify({
      error: {
        code,
        message,
        innerError: {
          date: new Date(now).toISOString().slice(0, 19),
          "request-id": ids.requestId,
          "client-request-id": ids.clientRequestId,
        },
      },
    }),
    { status, headers: { "content-type": "application/json", ...headers } },
  );
}

/** Application or delegated permissions that allow an operation, and the roles a delegated caller needs. */
interface Requirement {
  permissions: readonly string[];
  /** Directory roles a delegated caller acting on another user must hold (any of). Empty: none needed. */
  roles: readonly string[];
  /** The 403 code and message Graph's service for this resource answers. */
  denied: { code: string; message: string };
}

const directoryDenied = {
  code: "Authorization_RequestDenied",
  message: "Insufficient privileges to complete the operation.",
};
// The authentication methods service answers its own 403 (seen in Graph SDK issue reports, e.g.
// https://github.com/microsoftgraph/msgraph-sdk-go/issues/441).
const methodsDenied = { code: "accessDenied", message: "Request Authorization failed" };

/** Who may call what, from each page's permissions table and its "roles" include. */
const requirements = {
  // https://learn.microsoft.com/en-us/graph/api/user-get (permissions)
  readUsers: {
    permissions: [
      "User.Read.All",
      "User.ReadBasic.All",
      "User.ReadWrite.All",
      "Directory.Read.All",
      "Directory.ReadWrite.All",
      "Directory.AccessAsUser.All",
    ],
    roles: [],
    denied: directoryDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers (permissions)
  readGroups: {
    permissions: [
      "GroupMember.Read.All",
      "Group.Read.All",
      "Group.ReadWrite.All",
      "Directory.Read.All",
      "Directory.ReadWrite.All",
    ],
    roles: [],
    denied: directoryDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions: the
  // read-others roles include, with the passkey write permission.
  passkeyOptions: {
    permissions: ["UserAuthMethod-Passkey.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All"],
    roles: [...authenticationAdminRoles, "Global Reader"],
    denied: methodsDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/authentication-post-fido2methods and
  // https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-delete
  passkeyWrite: {
    permissions: ["UserAuthMethod-Passkey.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All"],
    roles: authenticationAdminRoles,
    denied: methodsDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-list
  passkeyRead: {
    permissions: [
      "UserAuthMethod-Passkey.Read.All",
      "UserAuthMethod-Passkey.ReadWrite.All",
      "UserAuthenticationMethod.Read.All",
      "UserAuthenticationMethod.ReadWrite.All",
    ],
    roles: [...authenticationAdminRoles, "Global Reader"],
    denied: methodsDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/authentication-post-temporaryaccesspassmethods:
  // UserAuthMethod-TAP.ReadWrite.All is the least privileged permission the page lists.
  tapWrite: {
    permissions: ["UserAuthMethod-TAP.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All"],
    roles: authenticationAdminRoles,
    denied: methodsDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/authentication-list-temporaryaccesspassmethods
  tapRead: {
    permissions: [
      "UserAuthMethod-TAP.Read.All",
      "UserAuthMethod-TAP.ReadWrite.All",
      "UserAuthenticationMethod.Read.All",
      "UserAuthenticationMethod.ReadWrite.All",
    ],
    roles: [...authenticationAdminRoles, "Global Reader"],
    denied: methodsDenied,
  },
  // https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethodconfiguration-get: the
  // least privileged permission is Policy.Read.AuthenticationMethod (the sandbox checks the
  // permission only, not the policy-reader roles).
  readPolicy: {
    permissions: [
      "Policy.Read.AuthenticationMethod",
      "Policy.Read.All",
      "Policy.ReadWrite.AuthenticationMethod",
    ],
    roles: [],
    denied: directoryDenied,
  },
} satisfies Record<string, Requirement>;

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

type Handler = (this: Api, ctx: Ctx) => Promise<Response> | Response;

interface RouteDef {
  /** Segments; `{id}`-style names capture, others match case-insensitively. */
  pattern: string[];
  methods: Partial<Record<string, Handler>>;
}

interface Ctx {
  request: Request;
  url: URL;
  version: GraphVersion;
  principal: Principal;
  ids: RequestIds;
  params: Record<string, string>;
  /** The raw last segment, for function calls such as `creationOptions(challengeTimeoutInMinutes=10)`. */
  functionArgs: string | undefined;
}

const routes: RouteDef[] = [];
function on(pattern: string, methods: Partial<Record<string, Handler>>): void {
  routes.push({ pattern: pattern.split("/"), methods });
}

interface Match {
  def: RouteDef;
  version: GraphVersion;
  params: Record<string, string>;
  functionArgs: string | undefined;
  template: string;
}

function matchPath(url: URL, principal: Principal | undefined): Match | { badSegment: string } | undefined {
  const raw = url.pathname.split("/").filter((s) => s.length > 0);
  const versionText = raw.shift();
  const version = versionText === "v1.0" ? "v1.0" : versionText === "beta" ? "beta" : undefined;
  if (!version) return undefined;
  let segments: string[];
  try {
    segments = raw.map((s) => decodeURIComponent(s));
  } catch {
    return { badSegment: raw.join("/") };
  }
  // `/users('{userPrincipalName}')` is `/users/{userPrincipalName}`: the key syntax the user-get
  // page asks for when a UPN begins with `$` (https://learn.microsoft.com/en-us/graph/api/user-get).
  const keyed = /^users\('((?:[^']|'')*)'\)$/i.exec(segments[0] ?? "");
  if (keyed) segments = ["users", keyed[1]!.replaceAll("''", "'"), ...segments.slice(1)];
  // `/me/...` is `/users/{signed-in user}/...` (https://learn.microsoft.com/en-us/graph/api/user-get).
  let viaMe = false;
  if (segments[0]?.toLowerCase() === "me") {
    viaMe = true;
    segments = ["users", principal?.objectId ?? "", ...segments.slice(1)];
  }
  for (const def of routes) {
    if (def.pattern.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let functionArgs: string | undefined;
    let ok = true;
    for (let i = 0; i < def.pattern.length && ok; i++) {
      const want = def.pattern[i]!;
      const have = segments[i]!;
      if (want.startsWith("{")) {
        params[want.slice(1, -1)] = have;
      } else if (want.endsWith("()")) {
        const name = want.slice(0, -2).toLowerCase();
        const m = /^([^(]+)(?:\((.*)\))?$/s.exec(have);
        if (!m || m[1]!.toLowerCase() !== name) ok = false;
        else functionArgs = m[2];
      } else if (want.toLowerCase() !== have.toLowerCase()) {
        ok = false;
      }
    }
    if (!ok) continue;
    if (viaMe) params["me"] = "true";
    const template = def.pattern.map((p) => p.endsWith("()") ? p.slice(0, -2) : p).join("/");
    return { def, version, params, functionArgs, template };
  }
  const known = new Set(routes.flatMap((r) => r.pattern).map((s) => s.toLowerCase()));
  const bad = segments.find((s) => !known.has(s.toLowerCase())) ?? segments.at(-1) ?? "";
  return { badSegment: bad };
}

/** See {@link GraphApi}. */
export function createGraphApi(options: GraphApiOptions): GraphApi {
  const { tenant } = options;
  const api = { tenant, baseUrl: options.baseUrl };
  return {
    route(method, url) {
      const match = matchPath(url, undefined);
      if (!match || "badSegment" in match) return undefined;
      const upper = method.toUpperCase();
      return {
        version: match.version,
        template: match.template,
        name: `${upper} /${match.version}/${match.template}`,
        write: upper !== "GET" && upper !== "HEAD",
      };
    },
    async handle(request, url, principal, ids) {
      const requestIds = ids ?? { requestId: crypto.randomUUID(), clientRequestId: crypto.randomUUID() };
      const match = matchPath(url, principal);
      const fail = (status: number, code: string, message: string) =>
        graphError(status, code, message, requestIds, tenant.now());
      if (!match) {
        return fail(400, "BadRequest", `Invalid version: ${url.pathname.split("/")[1] ?? ""}`);
      }
      if ("badSegment" in match) {
        return fail(400, "BadRequest", `Resource not found for the segment '${match.badSegment}'.`);
      }
      if (match.params["me"] === "true" && principal.kind !== "user") {
        // https://learn.microsoft.com/en-us/graph/api/user-get: /me needs a signed-in user.
        return fail(400, "BadRequest", "/me request is only valid with delegated authentication flow.");
      }
      const handler = match.def.methods[request.method.toUpperCase()];
      if (!handler) {
        return fail(
          405,
          "Request_BadRequest",
          "Specified HTTP method is not allowed for the request target.",
        );
      }
      try {
        return await handler.call(api, {
          request,
          url,
          version: match.version,
          principal,
          ids: requestIds,
          params: match.params,
          functionArgs: match.functionArgs,
        });
      } catch (error) {
        if (error instanceof GraphFailure) return fail(error.status, error.code, error.message);
        return fail(500, "generalException", `An unexpected error occurred: ${describe(error)}`);
      }
    },
  };
}

/** Thrown inside handlers to answer a Graph error. */
class GraphFailure extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface Api {
  tenant: SandboxTenant;
  baseUrl: () => string;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": graphContentType, ...headers },
  });
}

function context(api: Api, version: GraphVersion, fragment: string): string {
  return `${api.baseUrl()}/${version}/$metadata#${fragment}`;
}

/** Query options may be written with or without `$` (https://learn.microsoft.com/en-us/graph/query-parameters). */
function query(url: URL, name: string): string | null {
  return url.searchParams.get(`$${name}`) ?? url.searchParams.get(name);
}

/** Whether the principal holds one of the requirement's permissions (roles not considered). */
function canRead(principal: Principal, requirement: Requirement): boolean {
  const granted = principal.kind === "app" ? principal.roles : principal.scopes;
  return requirement.permissions.some((p) => granted.some((g) => g.toLowerCase() === p.toLowerCase()));
}

/** A directory object as Graph returns an inaccessible one: its id, every other property null. */
function limited(properties: Record<string, unknown>, readable: boolean): Record<string, unknown> {
  if (readable) return properties;
  return Object.fromEntries(
    Object.keys(properties).map((key) => [key, key === "id" ? properties[key] : null]),
  );
}

function authorize(principal: Principal, requirement: Requirement, targetUser?: SandboxUser): void {
  const granted = principal.kind === "app" ? principal.roles : principal.scopes;
  const hasPermission = requirement.permissions.some((p) =>
    granted.some((g) => g.toLowerCase() === p.toLowerCase())
  );
  if (!hasPermission) throw new GraphFailure(403, requirement.denied.code, requirement.denied.message);
  if (principal.kind === "user" && requirement.roles.length > 0 && targetUser?.id !== principal.objectId) {
    const hasRole = requirement.roles.some((role) => principal.directoryRoles.includes(role));
    if (!hasRole) throw new GraphFailure(403, requirement.denied.code, requirement.denied.message);
  }
}

/**
 * Only a Privileged Authentication Administrator (or Global Administrator) may manage the methods
 * of a user who holds a privileged role
 * (https://learn.microsoft.com/en-us/entra/identity/role-based-access-control/privileged-roles-permissions#who-can-perform-sensitive-actions).
 */
function authorizePrivilegedTarget(api: Api, principal: Principal, user: SandboxUser): void {
  if (principal.kind !== "user" || !api.tenant.isPrivileged(user) || user.id === principal.objectId) return;
  const allowed = ["Privileged Authentication Administrator", "Global Administrator"];
  if (!allowed.some((role) => principal.directoryRoles.includes(role))) {
    throw new GraphFailure(403, methodsDenied.code, methodsDenied.message);
  }
}

/** `/users/{id | userPrincipalName}`: 404 Request_ResourceNotFound for unknown and on-premises-only users. */
function findUser(api: Api, ctx: Ctx): SandboxUser {
  const key = ctx.params["id"] ?? "";
  const user = api.tenant.user(key);
  if (!user) {
    throw new GraphFailure(
      404,
      "Request_ResourceNotFound",
      `Resource '${key}' does not exist or one of its queried reference-property objects are not present.`,
    );
  }
  return user;
}

async function readJson(request: Request): Promise<unknown> {
  const text = await request.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new GraphFailure(
      400,
      "BadRequest",
      "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
    );
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

// ---------------------------------------------------------------------------------------------
// Users — https://learn.microsoft.com/en-us/graph/api/user-get,
// https://learn.microsoft.com/en-us/graph/api/user-list
// ---------------------------------------------------------------------------------------------

/** Properties Graph returns for a user when no $select is given (v1.0). */
const defaultUserProperties = [
  "businessPhones",
  "displayName",
  "givenName",
  "jobTitle",
  "mail",
  "mobilePhone",
  "officeLocation",
  "preferredLanguage",
  "surname",
  "userPrincipalName",
  "id",
] as const;

function userProperties(user: SandboxUser): Record<string, unknown> {
  return {
    businessPhones: [],
    displayName: user.displayName,
    givenName: user.givenName,
    jobTitle: user.jobTitle,
    mail: user.mail,
    mobilePhone: null,
    officeLocation: null,
    preferredLanguage: null,
    surname: user.surname,
    userPrincipalName: user.userPrincipalName,
    id: user.id,
    accountEnabled: user.accountEnabled,
    onPremisesSyncEnabled: user.onPremisesSyncEnabled,
    otherMails: [],
    proxyAddresses: [`SMTP:${user.mail}`],
    mailNickname: user.userPrincipalName.split("@")[0],
    userType: "Member",
  };
}

const groupTypeName = "microsoft.graph.group";
const userTypeName = "microsoft.graph.user";

function groupProperties(group: SandboxGroup): Record<string, unknown> {
  return {
    id: group.id,
    displayName: group.displayName,
    description: group.description,
    mailNickname: group.mailNickname,
    mail: null,
    mailEnabled: false,
    securityEnabled: true,
    groupTypes: [],
  };
}

/** Parses `$select`; unknown names answer Graph's 400. */
function parseSelect(url: URL, known: Record<string, unknown>, typeName: string): string[] | undefined {
  const text = query(url, "select");
  if (text === null || text.trim() === "") return undefined;
  const names = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  for (const name of names) {
    if (!Object.keys(known).some((k) => k.toLowerCase() === name.toLowerCase())) {
      throw new GraphFailure(
        400,
        "BadRequest",
        `Could not find a property named '${name}' on type '${typeName}'.`,
      );
    }
  }
  return names.map((name) => Object.keys(known).find((k) => k.toLowerCase() === name.toLowerCase())!);
}

function pick(all: Record<string, unknown>, names: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(names.map((n) => [n, all[n] ?? null]));
}

function shapeUser(user: SandboxUser, select: string[] | undefined): Record<string, unknown> {
  const all = userProperties(user);
  return pick(all, select ?? defaultUserProperties);
}

function shapeGroup(group: SandboxGroup, select: string[] | undefined): Record<string, unknown> {
  const all = groupProperties(group);
  return select ? pick(all, select) : all;
}

const sampleUserProperties = userProperties({
  id: "",
  userPrincipalName: "",
  displayName: "",
  givenName: "",
  surname: "",
  mail: "",
  jobTitle: null,
  accountEnabled: true,
  directoryRoles: [],
  onPremisesSyncEnabled: null,
});
const sampleGroupProperties = groupProperties({
  id: "",
  displayName: "",
  mailNickname: "",
  description: null,
  members: [],
});

function getUser(this: Api, ctx: Ctx): Response {
  authorizeUserRead(ctx);
  const user = findUser(this, ctx);
  const select = parseSelect(ctx.url, sampleUserProperties, userTypeName);
  const fragment = select ? `users(${select.join(",")})/$entity` : "users/$entity";
  return json({ "@odata.context": context(this, ctx.version, fragment), ...shapeUser(user, select) });
}

function authorizeUserRead(ctx: Ctx): void {
  // Any signed-in user may read their own profile with User.Read
  // (https://learn.microsoft.com/en-us/graph/api/user-get#permissions).
  if (
    ctx.params["me"] === "true" ||
    (ctx.principal.kind === "user" && ctx.params["id"] === ctx.principal.objectId)
  ) {
    authorize(ctx.principal, {
      ...requirements.readUsers,
      permissions: [...requirements.readUsers.permissions, "User.Read", "User.ReadWrite"],
    });
    return;
  }
  authorize(ctx.principal, requirements.readUsers);
}

/** The `$filter`s the sandbox understands on users: `mail|userPrincipalName|id eq '…'` and `in (…)`. */
function parseEqFilter(
  text: string,
  supported: readonly string[],
  resource: string,
): { property: string; values: string[] } {
  const literal = "'((?:[^']|'')*)'";
  const eq = new RegExp(`^\\s*([A-Za-z/]+)\\s+eq\\s+${literal}\\s*$`).exec(text);
  const inList = /^\s*([A-Za-z/]+)\s+in\s+\((.*)\)\s*$/.exec(text);
  const unquote = (s: string) => s.replaceAll("''", "'");
  let property: string;
  let values: string[];
  if (eq) {
    property = eq[1]!;
    values = [unquote(eq[2]!)];
  } else if (inList) {
    property = inList[1]!;
    const items = inList[2]!.split(",").map((s) => s.trim());
    if (!items.every((s) => /^'(?:[^']|'')*'$/.test(s))) {
      throw new GraphFailure(400, "BadRequest", `Invalid filter clause: ${text}`);
    }
    values = items.map((s) => unquote(s.slice(1, -1)));
    // https://learn.microsoft.com/en-us/graph/filter-query-parameter: at most 15 values in `in`.
    if (values.length > 15) {
      throw new GraphFailure(
        400,
        "Request_UnsupportedQuery",
        "Too many values in the 'in' clause: at most 15 are allowed.",
      );
    }
  } else {
    const prop = /^\s*([A-Za-z/]+)\s/.exec(text)?.[1];
    if (prop && !supported.some((s) => s.toLowerCase() === prop.toLowerCase())) {
      throw new GraphFailure(
        400,
        "Request_UnsupportedQuery",
        `Unsupported or invalid query filter clause specified for property '${prop}' of resource '${resource}'.`,
      );
    }
    throw new GraphFailure(400, "BadRequest", `Invalid filter clause: ${text}`);
  }
  const canonical = supported.find((s) => s.toLowerCase() === property.toLowerCase());
  if (!canonical) {
    throw new GraphFailure(
      400,
      "Request_UnsupportedQuery",
      `Unsupported or invalid query filter clause specified for property '${property}' of resource '${resource}'.`,
    );
  }
  return { property: canonical, values };
}

function listUsers(this: Api, ctx: Ctx): Response {
  authorize(ctx.principal, requirements.readUsers);
  const select = parseSelect(ctx.url, sampleUserProperties, userTypeName);
  const filter = query(ctx.url, "filter");
  let users: SandboxUser[];
  if (filter !== null) {
    const { property, values } = parseEqFilter(filter, ["mail", "userPrincipalName", "id"], "User");
    const found = values.map((v) =>
      property === "mail"
        ? this.tenant.userByMail(v)
        : property === "id"
        ? (/^[0-9a-f-]{36}$/i.test(v) ? this.tenant.user(v) : undefined)
        : this.tenant.user(v)
    );
    users = found.filter((u): u is SandboxUser => u !== undefined)
      .filter((u, i, all) => all.indexOf(u) === i);
  } else {
    users = this.tenant.users();
  }
  const fragment = select ? `users(${select.join(",")})` : "users";
  return page(this, ctx, users.map((u) => shapeUser(u, select)), fragment);
}

// ---------------------------------------------------------------------------------------------
// Groups — https://learn.microsoft.com/en-us/graph/api/group-get,
// https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers,
// https://learn.microsoft.com/en-us/graph/api/group-list-members
// ---------------------------------------------------------------------------------------------

function findGroup(api: Api, ctx: Ctx): SandboxGroup {
  const key = ctx.params["groupId"] ?? "";
  const group = api.tenant.group(key);
  if (!group) {
    throw new GraphFailure(
      404,
      "Request_ResourceNotFound",
      `Resource '${key}' does not exist or one of its queried reference-property objects are not present.`,
    );
  }
  return group;
}

function getGroup(this: Api, ctx: Ctx): Response {
  authorize(ctx.principal, requirements.readGroups);
  const group = findGroup(this, ctx);
  const select = parseSelect(ctx.url, sampleGroupProperties, groupTypeName);
  const fragment = select ? `groups(${select.join(",")})/$entity` : "groups/$entity";
  return json({ "@odata.context": context(this, ctx.version, fragment), ...shapeGroup(group, select) });
}

function listGroups(this: Api, ctx: Ctx): Response {
  authorize(ctx.principal, requirements.readGroups);
  const select = parseSelect(ctx.url, sampleGroupProperties, groupTypeName);
  const filter = query(ctx.url, "filter");
  let groups = this.tenant.groups();
  if (filter !== null) {
    const { property, values } = parseEqFilter(filter, ["displayName", "id", "mailNickname"], "Group");
    const wanted = new Set(values.map((v) => v.toLowerCase()));
    groups = groups.filter((g) => wanted.has(String(g[property as "id"]).toLowerCase()));
  }
  const fragment = select ? `groups(${select.join(",")})` : "groups";
  return page(this, ctx, groups.map((g) => shapeGroup(g, select)), fragment);
}

function members(transitive: boolean, usersOnly: boolean) {
  return function (this: Api, ctx: Ctx): Response {
    authorize(ctx.principal, requirements.readGroups);
    const group = findGroup(this, ctx);
    const all: DirectoryMember[] = transitive
      ? this.tenant.transitiveMembers(group.id)
      : group.members.flatMap((id): DirectoryMember[] => {
        const user = this.tenant.user(id);
        if (user) return [{ kind: "user", user }];
        const nested = this.tenant.group(id);
        return nested ? [{ kind: "group", group: nested }] : [];
      });
    const known = usersOnly ? sampleUserProperties : { ...sampleUserProperties, ...sampleGroupProperties };
    const select = parseSelect(ctx.url, known, usersOnly ? userTypeName : "microsoft.graph.directoryObject");
    // An app that may read the group but not users gets its user members "with limited
    // information": only @odata.type and id, every other property null
    // (https://learn.microsoft.com/en-us/graph/api/directoryobject-getbyids, "Important";
    // https://learn.microsoft.com/en-us/graph/permissions-overview#limited-information-returned-for-inaccessible-member-objects).
    const canReadUsers = canRead(ctx.principal, requirements.readUsers);
    const items = all
      .filter((m) => !usersOnly || m.kind === "user")
      .map((m) =>
        m.kind === "user"
          ? {
            "@odata.type": `#${userTypeName}`,
            ...limited(shapeUser(m.user, select?.filter((s) => s in sampleUserProperties)), canReadUsers),
          }
          : {
            "@odata.type": `#${groupTypeName}`,
            ...shapeGroup(m.group, select?.filter((s) => s in sampleGroupProperties)),
          }
      );
    const base = usersOnly ? "users" : "directoryObjects";
    return page(this, ctx, items, select ? `${base}(${select.join(",")})` : base);
  };
}

/**
 * Server-driven paging (https://learn.microsoft.com/en-us/graph/paging): `$top` (1–999, default
 * 100) sets the page size; `@odata.nextLink` carries an opaque `$skiptoken`.
 */
function page(api: Api, ctx: Ctx, items: unknown[], fragment: string): Response {
  const topText = query(ctx.url, "top");
  let top = 100;
  if (topText !== null) {
    top = Number(topText);
    if (!Number.isInteger(top) || top < 1 || top > 999) {
      throw new GraphFailure(
        400,
        "Request_BadRequest",
        `Invalid page size specified: '${topText}'. Must be between 1 and 999 inclusive.`,
      );
    }
  }
  const token = query(ctx.url, "skiptoken");
  let offset = 0;
  if (token !== null) {
    const decoded = /^o([0-9]+)$/.exec(token.startsWith("RFNwdAIA") ? atobSafe(token.slice(8)) : "");
    if (!decoded) throw new GraphFailure(400, "Request_BadRequest", "Invalid paging token.");
    offset = Number(decoded[1]);
  }
  const slice = items.slice(offset, offset + top);
  const body: Record<string, unknown> = { "@odata.context": context(api, ctx.version, fragment) };
  if (
    query(ctx.url, "count") === "true" &&
    ctx.request.headers.get("consistencylevel")?.toLowerCase() === "eventual"
  ) {
    body["@odata.count"] = items.length;
  }
  if (offset + top < items.length) {
    const params: string[] = [];
    for (const [key, value] of ctx.url.searchParams) {
      if (key === "$skiptoken" || key === "skiptoken") continue;
      params.push(`${key}=${encodeURIComponent(value)}`);
    }
    params.push(`$skiptoken=RFNwdAIA${btoa(`o${offset + top}`).replaceAll("=", "")}`);
    body["@odata.nextLink"] = `${api.baseUrl()}${ctx.url.pathname}?${params.join("&")}`;
  }
  body["value"] = slice;
  return json(body);
}

function atobSafe(text: string): string {
  try {
    return atob(text + "=".repeat((4 - text.length % 4) % 4));
  } catch {
    return "";
  }
}

// ---------------------------------------------------------------------------------------------
// Passkeys — fido2AuthenticationMethod
// ---------------------------------------------------------------------------------------------

/** Challenge timeout of creationOptions, in minutes: fixed in v1.0, 5–43200 in beta. */
export const challengeTimeout = { defaultMinutes: 5, minMinutes: 5, maxMinutes: 43200 } as const;

/**
 * Refuses the passkey provisioning API when the FIDO2 policy does not let it run: method disabled,
 * user not targeted, or "Allow self-service setup" off — the documented known issue
 * (https://learn.microsoft.com/en-us/graph/known-issues#fido2-provisioning-api-requires-self-service-setup-to-be-enabled).
 * Microsoft does not document the error body: the sandbox answers 400 badRequest naming the setting.
 */
function checkFido2Policy(api: Api, user: SandboxUser): void {
  const policy = api.tenant.fido2Policy;
  if (policy.state !== "enabled") {
    throw new GraphFailure(
      400,
      "badRequest",
      "The Passkey (FIDO2) authentication method is disabled in the authentication methods policy.",
    );
  }
  if (!api.tenant.isTargeted(user.id, policy)) {
    throw new GraphFailure(
      400,
      "badRequest",
      `User '${user.userPrincipalName}' is not enabled for the Passkey (FIDO2) authentication method by policy.`,
    );
  }
  if (!policy.isSelfServiceRegistrationAllowed) {
    throw new GraphFailure(
      400,
      "badRequest",
      "Passkey (FIDO2) provisioning requires 'Allow self-service setup' (isSelfServiceRegistrationAllowed) to be enabled in the FIDO2 authentication method policy.",
    );
  }
}

/**
 * Self-service on beta. The v1.0 pages now list `GET /me/authentication/fido2Methods/creationOptions`
 * and `POST /me/authentication/fido2Methods` and no longer say self-service is unsupported
 * (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-1.0),
 * so v1.0 lets a user act on themselves. The beta pages still say "Self-service operations aren't
 * supported" (…?view=graph-rest-beta) without documenting the answer: status and body here are
 * the sandbox's own (405, as for an unsupported method), and the client must not match on them.
 */
function refuseSelfService(ctx: Ctx, user: SandboxUser): void {
  if (ctx.version !== "beta") return;
  if (ctx.principal.kind === "user" && ctx.principal.objectId === user.id) {
    throw new GraphFailure(405, "methodNotAllowed", "The method is not supported for this URL.");
  }
}

/** A stored (base64url) credential id in the encoding this answer uses. */
function encodeExcludeId(credentialId: string, encoding: CredentialIdEncoding): string {
  const bytes = fromBase64Any(credentialId);
  return encoding === "base64"
    ? toBase64(bytes)
    : encoding === "base64url-padding-digit"
    ? toBase64UrlPaddingDigit(bytes)
    : toBase64Url(bytes);
}

/**
 * `GET /users/{id}/authentication/fido2Methods/creationOptions` — v1.0:
 * https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-1.0
 * (5-minute challenge, no parameter); beta:
 * https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-beta
 * (`challengeTimeoutInMinutes` 5–43200). Response: webauthnCredentialCreationOptions
 * (https://learn.microsoft.com/en-us/graph/api/resources/webauthncredentialcreationoptions); the
 * publicKey members follow the documented example, with the pubKeyCredParams, attachment and
 * extensions that Microsoft's published provisioning samples receive.
 */
async function creationOptions(this: Api, ctx: Ctx): Promise<Response> {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.passkeyOptions, user);
  refuseSelfService(ctx, user);
  authorizePrivilegedTarget(this, ctx.principal, user);
  checkFido2Policy(this, user);

  const argument = ctx.functionArgs?.trim() || query(ctx.url, "challengeTimeoutInMinutes") || undefined;
  let minutes: number = challengeTimeout.defaultMinutes;
  if (argument !== undefined) {
    const m = /^(?:challengeTimeoutInMinutes\s*=\s*)?(-?[0-9]+)$/i.exec(argument);
    if (ctx.version === "v1.0") {
      throw new GraphFailure(
        400,
        "badRequest",
        "challengeTimeoutInMinutes is not supported in v1.0: the challenge timeout is fixed at 5 minutes. Use the beta endpoint to set it.",
      );
    }
    const value = m ? Number(m[1]) : NaN;
    if (
      !Number.isInteger(value) || value < challengeTimeout.minMinutes || value > challengeTimeout.maxMinutes
    ) {
      throw new GraphFailure(
        400,
        "badRequest",
        `challengeTimeoutInMinutes must be an integer between ${challengeTimeout.minMinutes} and ${challengeTimeout.maxMinutes}, got '${argument}'.`,
      );
    }
    minutes = value;
  }
  // Real shapes, varied call by call: a JWE challenge of about 2, 5 or 24 KB, timeout 60000 or 0,
  // excludeCredentials ids in each of Graph's three encodings (tenant.ts cites each).
  const variant = this.tenant.nextCreationOptionsVariant();
  const pending = await this.tenant.sealChallenge(user.id, minutes, variant.challengePaddingBytes);
  const webauthn = this.tenant.webauthn;
  const existing = this.tenant.fido2Methods(user.id);
  return json({
    "@odata.context": context(this, ctx.version, "microsoft.graph.webauthnCredentialCreationOptions"),
    "@odata.type": "#microsoft.graph.webauthnCredentialCreationOptions",
    challengeTimeoutDateTime: iso(pending.expiresAt),
    publicKey: {
      "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialCreationOptions",
      rp: {
        "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialRpEntity",
        id: webauthn.rpId,
        name: webauthn.rpName,
      },
      user: {
        "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialUserEntity",
        // An opaque 51-byte handle, as in the recorded real response (tenant.userHandle).
        id: toBase64Url(this.tenant.userHandle(user.id)),
        displayName: user.displayName,
        name: user.userPrincipalName,
      },
      challenge: pending.challenge,
      pubKeyCredParams: [-7, -257].map((alg) => ({
        "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialParameters",
        type: "public-key",
        alg,
      })),
      timeout: variant.timeout,
      excludeCredentials: existing.map((m) => ({
        "@odata.type": "#microsoft.graph.webauthnPublicKeyCredentialDescriptor",
        type: "public-key",
        id: encodeExcludeId(m.credentialId, variant.encoding),
        transports: [],
      })),
      authenticatorSelection: {
        "@odata.type": "#microsoft.graph.webauthnAuthenticatorSelectionCriteria",
        authenticatorAttachment: "cross-platform",
        requireResidentKey: true,
        userVerification: "required",
      },
      attestation: "direct",
      extensions: {
        "@odata.type": "#microsoft.graph.webauthnAuthenticationExtensionsClientInputs",
        credentialProtectionPolicy: "userVerificationOptional",
        enforceCredentialProtectionPolicy: true,
        hmacCreateSecret: true,
      },
    },
  });
}

/** What Graph answers when the POST body is not a bare fido2AuthenticationMethod (e.g. carries `@odata.type`). */
export const missingFido2EntityMessage =
  "The request is missing a fido2AuthenticationMethod entity with a displayName and publicKeyCredential in the request body. All other properties will be ignored.";

const base64UrlText = z.string().min(1).regex(/^[A-Za-z0-9_-]+$/, "must be base64url without padding");

/** The POST body (https://learn.microsoft.com/en-us/graph/api/authentication-post-fido2methods#request-body). */
const createFido2Schema = z.object({
  displayName: z.string(),
  publicKeyCredential: z.object({
    id: base64UrlText,
    response: z.object({
      clientDataJSON: base64UrlText,
      attestationObject: base64UrlText,
    }),
    clientExtensionResults: z.record(z.string(), z.unknown()).optional(),
  }),
});

/** displayName of a passkey: 1 to 30 characters. */
export const displayNameLimits = { min: 1, max: 30 } as const;

function fido2Json(method: StoredFido2Method): Record<string, unknown> {
  // publicKeyCredential is write-only: never part of a response.
  return {
    "@odata.type": "#microsoft.graph.fido2AuthenticationMethod",
    id: method.id,
    displayName: method.displayName,
    createdDateTime: method.createdDateTime,
    aaGuid: method.aaGuid,
    model: method.model,
    attestationCertificates: method.attestationCertificates,
    attestationLevel: method.attestationLevel,
    passkeyType: method.passkeyType,
  };
}

/**
 * `POST /users/{id}/authentication/fido2Methods`
 * (https://learn.microsoft.com/en-us/graph/api/authentication-post-fido2methods): verifies the
 * registration with `@simplewebauthn/server` against the challenge creationOptions issued
 * (unexpired, used once), applies attestation enforcement and key restrictions from the FIDO2
 * policy, and answers 201 with the new fido2AuthenticationMethod
 * (https://learn.microsoft.com/en-us/graph/api/resources/fido2authenticationmethod).
 */
async function createFido2(this: Api, ctx: Ctx): Promise<Response> {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.passkeyWrite, user);
  refuseSelfService(ctx, user);
  authorizePrivilegedTarget(this, ctx.principal, user);
  checkFido2Policy(this, user);

  const body = await readJson(ctx.request);
  // Graph refuses a body that carries `@odata.type`, even though its own example shows one
  // (https://github.com/microsoftgraph/msgraph-beta-sdk-dotnet/issues/941).
  if (typeof body !== "object" || body === null || Array.isArray(body) || "@odata.type" in body) {
    throw new GraphFailure(400, "badRequest", missingFido2EntityMessage);
  }
  if (!("displayName" in body) || !("publicKeyCredential" in body)) {
    throw new GraphFailure(400, "badRequest", missingFido2EntityMessage);
  }
  const parsed = createFido2Schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new GraphFailure(
      400,
      "badRequest",
      `Invalid fido2AuthenticationMethod: '${issue?.path.join(".") ?? ""}' ${
        issue?.message ?? "is invalid"
      }.`,
    );
  }
  const { displayName, publicKeyCredential } = parsed.data;
  const nameLength = [...displayName].length;
  if (nameLength < displayNameLimits.min || nameLength > displayNameLimits.max) {
    throw new GraphFailure(
      400,
      "badRequest",
      `The displayName must be between ${displayNameLimits.min} and ${displayNameLimits.max} characters long; it is ${nameLength}.`,
    );
  }

  let method: StoredFido2Method;
  try {
    method = await verifyRegistration(this.tenant, user, { displayName, credential: publicKeyCredential }, {
      origins: this.tenant.webauthn.origins,
      rpId: this.tenant.webauthn.rpId,
      attestationFormats: graphAttestationFormats,
    });
  } catch (error) {
    if (error instanceof RegistrationRefused) throw new GraphFailure(400, "badRequest", error.message);
    throw error;
  }
  return json({
    "@odata.context": context(this, ctx.version, `users('${user.id}')/authentication/fido2Methods/$entity`),
    ...fido2Json(method),
  }, 201);
}

/** `GET /users/{id}/authentication/fido2Methods` (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-list). */
function listFido2(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.passkeyRead, user);
  return json({
    "@odata.context": context(this, ctx.version, `users('${user.id}')/authentication/fido2Methods`),
    value: this.tenant.fido2Methods(user.id).map(fido2Json),
  });
}

function findFido2(api: Api, ctx: Ctx, user: SandboxUser): StoredFido2Method {
  const id = ctx.params["methodId"] ?? "";
  const method = api.tenant.fido2Methods(user.id).find((m) => m.id === id);
  if (!method) {
    throw new GraphFailure(
      404,
      "itemNotFound",
      `The fido2AuthenticationMethod '${id}' was not found for this user.`,
    );
  }
  return method;
}

/** `GET /users/{id}/authentication/fido2Methods/{id}` (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-get). */
function getFido2(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.passkeyRead, user);
  const method = findFido2(this, ctx, user);
  return json({
    "@odata.context": context(this, ctx.version, `users('${user.id}')/authentication/fido2Methods/$entity`),
    ...fido2Json(method),
  });
}

/** `DELETE /users/{id}/authentication/fido2Methods/{id}` (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-delete): 204. */
function deleteFido2(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.passkeyWrite, user);
  authorizePrivilegedTarget(this, ctx.principal, user);
  const method = findFido2(this, ctx, user);
  this.tenant.deleteFido2Method(user.id, method.id);
  return new Response(null, { status: 204 });
}

// ---------------------------------------------------------------------------------------------
// Temporary Access Pass — temporaryAccessPassAuthenticationMethod
// ---------------------------------------------------------------------------------------------

/** Characters of a generated pass (Entra's passes mix letters, digits and symbols, e.g. `+drkzqAD`). */
const tapAlphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789+$%&@#!?";

function generatePass(length: number): string {
  // Rejection sampling keeps every character equally likely.
  const limit = 256 - (256 % tapAlphabet.length);
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length)) {
      if (byte < limit && out.length < length) out += tapAlphabet[byte % tapAlphabet.length];
    }
  }
  return out;
}

/** The POST body (https://learn.microsoft.com/en-us/graph/api/authentication-post-temporaryaccesspassmethods#request-body). */
const createTapSchema = z.object({
  isUsableOnce: z.boolean().optional(),
  lifetimeInMinutes: z.number().int().optional(),
  startDateTime: z.iso.datetime({ offset: true }).optional(),
});

function tapJson(api: Api, tap: StoredTemporaryAccessPass, revealPass: boolean): Record<string, unknown> {
  const usability = api.tenant.tapUsability(tap);
  return {
    "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
    id: tap.id,
    // Only the create response carries the pass; reads answer null.
    temporaryAccessPass: revealPass ? tap.temporaryAccessPass : null,
    createdDateTime: tap.createdDateTime,
    startDateTime: tap.startDateTime,
    lifetimeInMinutes: tap.lifetimeInMinutes,
    isUsableOnce: tap.isUsableOnce,
    isUsable: usability.isUsable,
    methodUsabilityReason: usability.methodUsabilityReason,
  };
}

/**
 * `POST /users/{id}/authentication/temporaryAccessPassMethods`
 * (https://learn.microsoft.com/en-us/graph/api/authentication-post-temporaryaccesspassmethods):
 * lifetime 10–43200 minutes and within the policy's minimum and maximum (the policy's default when
 * omitted); a multi-use pass only when the policy allows it; a user has one pass, and a new one
 * replaces the previous one (as the page says). Policy refusals are not documented word for word:
 * the sandbox answers 400 badRequest naming the setting.
 */
async function createTap(this: Api, ctx: Ctx): Promise<Response> {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.tapWrite, user);
  authorizePrivilegedTarget(this, ctx.principal, user);
  const policy = this.tenant.tapPolicy;
  if (policy.state !== "enabled") {
    throw new GraphFailure(
      400,
      "badRequest",
      "The Temporary Access Pass authentication method is disabled in the authentication methods policy.",
    );
  }
  if (!this.tenant.isTargeted(user.id, policy)) {
    throw new GraphFailure(
      400,
      "badRequest",
      `User '${user.userPrincipalName}' is not enabled for the Temporary Access Pass authentication method by policy.`,
    );
  }
  const text = await ctx.request.text();
  let raw: unknown = {};
  if (text.trim() !== "") {
    try {
      raw = JSON.parse(text);
    } catch {
      throw new GraphFailure(
        400,
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
      );
    }
  }
  const parsed = createTapSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new GraphFailure(
      400,
      "badRequest",
      `Invalid temporaryAccessPassAuthenticationMethod: '${issue?.path.join(".") ?? ""}' ${
        issue?.message ?? "is invalid"
      }.`,
    );
  }
  const lifetime = parsed.data.lifetimeInMinutes ?? policy.defaultLifetimeInMinutes;
  const min = Math.max(10, policy.minimumLifetimeInMinutes);
  const max = Math.min(43200, policy.maximumLifetimeInMinutes);
  if (lifetime < min || lifetime > max) {
    throw new GraphFailure(
      400,
      "badRequest",
      `lifetimeInMinutes must be between ${min} and ${max} (the Temporary Access Pass policy's minimum and maximum); got ${lifetime}.`,
    );
  }
  const isUsableOnce = parsed.data.isUsableOnce ?? policy.isUsableOnce;
  if (policy.isUsableOnce && !isUsableOnce) {
    throw new GraphFailure(
      400,
      "badRequest",
      "The Temporary Access Pass policy allows one-time passes only: isUsableOnce cannot be false.",
    );
  }
  const now = this.tenant.now();
  const tap: StoredTemporaryAccessPass = {
    id: guidFrom(randomBytes(16)),
    temporaryAccessPass: generatePass(policy.defaultLength),
    createdDateTime: iso(now),
    startDateTime: parsed.data.startDateTime ? iso(Date.parse(parsed.data.startDateTime)) : iso(now),
    lifetimeInMinutes: lifetime,
    isUsableOnce,
    usedDateTime: null,
  };
  this.tenant.setTemporaryAccessPass(user.id, tap);
  return json({
    "@odata.context": context(
      this,
      ctx.version,
      `users('${user.id}')/authentication/temporaryAccessPassMethods/$entity`,
    ),
    ...tapJson(this, tap, true),
  }, 201);
}

/** `GET /users/{id}/authentication/temporaryAccessPassMethods` (https://learn.microsoft.com/en-us/graph/api/authentication-list-temporaryaccesspassmethods). */
function listTaps(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.tapRead, user);
  const tap = this.tenant.temporaryAccessPass(user.id);
  return json({
    "@odata.context": context(
      this,
      ctx.version,
      `users('${user.id}')/authentication/temporaryAccessPassMethods`,
    ),
    value: tap ? [tapJson(this, tap, false)] : [],
  });
}

function findTap(api: Api, ctx: Ctx, user: SandboxUser): StoredTemporaryAccessPass {
  const id = ctx.params["tapId"] ?? "";
  const tap = api.tenant.temporaryAccessPass(user.id);
  if (!tap || tap.id !== id) {
    throw new GraphFailure(
      404,
      "itemNotFound",
      `The temporaryAccessPassAuthenticationMethod '${id}' was not found for this user.`,
    );
  }
  return tap;
}

/** `GET …/temporaryAccessPassMethods/{id}` (https://learn.microsoft.com/en-us/graph/api/temporaryaccesspassauthenticationmethod-get). */
function getTap(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.tapRead, user);
  const tap = findTap(this, ctx, user);
  return json({
    "@odata.context": context(
      this,
      ctx.version,
      `users('${user.id}')/authentication/temporaryAccessPassMethods/$entity`,
    ),
    ...tapJson(this, tap, false),
  });
}

/** `DELETE …/temporaryAccessPassMethods/{id}` (https://learn.microsoft.com/en-us/graph/api/temporaryaccesspassauthenticationmethod-delete): 204. */
function deleteTap(this: Api, ctx: Ctx): Response {
  const user = findUser(this, ctx);
  authorize(ctx.principal, requirements.tapWrite, user);
  authorizePrivilegedTarget(this, ctx.principal, user);
  const tap = findTap(this, ctx, user);
  this.tenant.deleteTemporaryAccessPass(user.id, tap.id);
  return new Response(null, { status: 204 });
}

// ---------------------------------------------------------------------------------------------
// Authentication method policies
// ---------------------------------------------------------------------------------------------

/** The default passkey profile's id in the fido2AuthenticationMethodConfiguration update example. */
const defaultPasskeyProfileId = "00000000-0000-0000-0000-000000000001";

/**
 * `GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{fido2 | temporaryAccessPass}`:
 * https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethodconfiguration-get and
 * https://learn.microsoft.com/en-us/graph/api/temporaryaccesspassauthenticationmethodconfiguration-get
 */
function getMethodConfiguration(this: Api, ctx: Ctx): Response {
  authorize(ctx.principal, requirements.readPolicy);
  const id = (ctx.params["configId"] ?? "").toLowerCase();
  const ctxUrl = context(this, ctx.version, "authenticationMethodConfigurations/$entity");
  if (id === "fido2") {
    const p = this.tenant.fido2Policy;
    const legacy = {
      "@odata.context": ctxUrl,
      "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
      id: "Fido2",
      state: p.state,
      isSelfServiceRegistrationAllowed: p.isSelfServiceRegistrationAllowed,
      isAttestationEnforced: p.isAttestationEnforced,
      keyRestrictions: p.keyRestrictions,
      includeTargets: p.includeTargets,
      excludeTargets: p.excludeTargets,
    };
    if (this.tenant.fido2PolicyShape === "legacy") return json(legacy);
    // A tenant migrated to passkey profiles (fido2AuthenticationMethodConfiguration, v1.0 and
    // beta; passkeyProfile, https://learn.microsoft.com/en-us/graph/api/resources/passkeyprofile):
    // the default profile "initially mirrors the tenant's legacy global passkey (FIDO2)
    // authentication methods policy settings", with the id, name and passkeyTypes of the update
    // page's example; isAttestationEnforced and keyRestrictions are deprecated but still sent.
    return json({
      ...legacy,
      includeTargets: p.includeTargets.map((t) => ({
        ...t,
        allowedPasskeyProfiles: [defaultPasskeyProfileId],
      })),
      defaultPasskeyProfile: defaultPasskeyProfileId,
      passkeyProfiles: [{
        id: defaultPasskeyProfileId,
        name: "Default passkey profile",
        passkeyTypes: "deviceBound,synced",
        attestationEnforcement: p.isAttestationEnforced ? "registrationOnly" : "disabled",
        keyRestrictions: p.keyRestrictions,
      }],
    });
  }
  if (id === "temporaryaccesspass") {
    const p = this.tenant.tapPolicy;
    return json({
      "@odata.context": ctxUrl,
      "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
      id: "TemporaryAccessPass",
      state: p.state,
      defaultLifetimeInMinutes: p.defaultLifetimeInMinutes,
      defaultLength: p.defaultLength,
      minimumLifetimeInMinutes: p.minimumLifetimeInMinutes,
      maximumLifetimeInMinutes: p.maximumLifetimeInMinutes,
      isUsableOnce: p.isUsableOnce,
      includeTargets: p.includeTargets,
      excludeTargets: p.excludeTargets,
    });
  }
  throw new GraphFailure(
    404,
    "itemNotFound",
    `The authentication method configuration '${ctx.params["configId"] ?? ""}' is not served by the sandbox.`,
  );
}

// ---------------------------------------------------------------------------------------------
// Route table
// ---------------------------------------------------------------------------------------------

on("users", { GET: listUsers });
on("users/{id}", { GET: getUser });
on("users/{id}/authentication/fido2Methods", { GET: listFido2, POST: createFido2 });
on("users/{id}/authentication/fido2Methods/creationOptions()", { GET: creationOptions });
on("users/{id}/authentication/fido2Methods/{methodId}", { GET: getFido2, DELETE: deleteFido2 });
on("users/{id}/authentication/temporaryAccessPassMethods", { GET: listTaps, POST: createTap });
on("users/{id}/authentication/temporaryAccessPassMethods/{tapId}", { GET: getTap, DELETE: deleteTap });
on("groups", { GET: listGroups });
on("groups/{groupId}", { GET: getGroup });
on("groups/{groupId}/members", { GET: members(false, false) });
on("groups/{groupId}/transitiveMembers", { GET: members(true, false) });
on("groups/{groupId}/transitiveMembers/microsoft.graph.user", { GET: members(true, true) });
on("policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{configId}", {
  GET: getMethodConfiguration,
});
