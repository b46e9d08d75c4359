/**
 * The users of an Entra group, for the `--group NAME|ID` source:
 *
 * - find the group: by object id, `GET /groups/{id}` (https://learn.microsoft.com/graph/api/group-get),
 *   else by display name, `GET /groups?$filter=displayName eq '…'`
 *   (https://learn.microsoft.com/graph/filter-query-parameter; a quote inside the literal is
 *   doubled). No group, or several, is a {@link ProvisioningError} saying which;
 * - list its users, members of nested groups included, each once:
 *   `GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=id,userPrincipalName,displayName,mail&$top=999&$count=true`
 *   (https://learn.microsoft.com/graph/api/group-list-transitivemembers). That page says a cast to
 *   `microsoft.graph.user` needs the advanced query parameters (`ConsistencyLevel: eventual` and
 *   `$count=true`), so both are sent; the index behind them may lag a member added moments ago.
 *   999 is the largest page Graph serves.
 *
 * Pages are read one at a time as the caller iterates (one page of users in memory, never the
 * group), each parsed with zod before any of its users is handed on, following `@odata.nextLink`
 * (https://learn.microsoft.com/graph/paging) only while it stays on the client's Graph base URL:
 * another host would receive the access token.
 *
 * Permissions: GroupMember.Read.All (or Group.Read.All, Directory.Read.All) to read the group and
 * its members; reading the members' user principal names also takes User.ReadBasic.All or
 * User.Read.All, without which Graph returns the users with only their id
 * (https://learn.microsoft.com/graph/permissions-overview#limited-information-returned-for-inaccessible-member-objects).
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../../core/errors.ts";
import type { DirectoryUser } from "../../../core/plugin.ts";
import { type GraphEndpoint, GraphError } from "../errors.ts";
import type { GraphClient } from "./client.ts";
import { collectionSchema, userSchema } from "./schemas.ts";

/** A group found by {@link resolveGroup}. */
export interface EntraGroup {
  /** The object id. */
  readonly id: string;
  /** The display name, when Graph has one. */
  readonly displayName?: string;
}

/** Options of {@link listGroupUsers} and {@link listTransitiveUsers}. */
export interface ListGroupUsersOptions {
  signal?: AbortSignal;
  /** Users per page (`$top`), 1 to 999. @default 999 */
  pageSize?: number;
}

/** The permissions that let an app read a group and its members, least privileged first. */
export const groupReadPermissions = ["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"] as const;
/** The permissions that let an app read the members' user principal names, least privileged first. */
export const memberProfilePermissions = ["User.ReadBasic.All", "User.Read.All"] as const;

/** The largest page Graph serves for directory objects. */
export const maxGroupPageSize = 999;

/** The user properties asked for: what a {@link DirectoryUser} holds. */
export const memberSelect = ["id", "userPrincipalName", "displayName", "mail"] as const;

const guidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The group resource (https://learn.microsoft.com/graph/api/resources/group), as `$select=id,displayName`. */
const groupSchema = z.object({
  id: z.string().min(1).max(2048),
  displayName: z.string().max(2048).nullable().exactOptional(),
});

/**
 * A user among the transitive members. The user principal name may be null: Graph answers so
 * for an app that may read the group but not users (limited information), which
 * {@link listTransitiveUsers} turns into a clear error.
 */
const memberSchema = userSchema.pick({ id: true, displayName: true, mail: true }).extend({
  userPrincipalName: userSchema.shape.userPrincipalName.nullable().exactOptional(),
});
const memberPageSchema = collectionSchema(memberSchema);
const groupPageSchema = collectionSchema(groupSchema);

/**
 * An OData string literal: quoted, with single quotes doubled
 * (https://learn.microsoft.com/graph/query-parameters#escaping-single-quotes).
 *
 * @example
 * ```ts
 * import { odataString } from "./groups.ts";
 * console.assert(odataString("O'Brien's team") === "'O''Brien''s team'");
 * ```
 */
export function odataString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** How a group is named in messages: `"Passkey pilot"`, or the id when it has no name. */
function label(group: EntraGroup): string {
  return JSON.stringify(group.displayName ?? group.id);
}

/**
 * Finds a group by object id or display name (Graph compares names case-insensitively). A GUID
 * that is no group's id is tried as a display name too.
 *
 * @throws {ProvisioningError} (exit code 2) `group-not-found` when no group has this id or name,
 * `group-ambiguous` listing the ids when several groups have the name, `group-reference-invalid`
 * for an empty reference.
 * @throws {GraphError} `insufficient-privileges` naming {@link groupReadPermissions}, and the
 * other Graph reasons as errors.ts describes.
 */
export async function resolveGroup(
  client: GraphClient,
  reference: string,
  options: { signal?: AbortSignal } = {},
): Promise<EntraGroup> {
  const ref = reference.trim();
  if (ref === "" || ref.length > 1024) {
    throw new ProvisioningError(
      "group-reference-invalid",
      `Cannot look up group "${ref.slice(0, 80)}": a group is named by object id or display name`,
      { exitCode: 2, hint: 'Give --group an object id or a display name such as "Passkey pilot"' },
    );
  }
  const action = `look up group ${JSON.stringify(ref)}`;
  const call = { operation: "other" as const, action, ...(options.signal ? { signal: options.signal } : {}) };
  const $select = "id,displayName";
  try {
    if (guidPattern.test(ref)) {
      try {
        return toGroup(
          await client.request("GET", `/groups/${encodeURIComponent(ref)}`, {
            ...call,
            schema: groupSchema,
            query: { $select },
          }),
        );
      } catch (error) {
        if (!(error instanceof GraphError && error.status === 404)) throw error;
        // Not an id: a group may still carry this GUID as its name.
      }
    }
    const page = await client.request("GET", "/groups", {
      ...call,
      schema: groupPageSchema,
      query: { $filter: `displayName eq ${odataString(ref)}`, $select, $top: "100" },
    });
    const [only, ...others] = page.value;
    if (only !== undefined && others.length === 0) return toGroup(only);
    if (only === undefined) {
      throw new ProvisioningError(
        "group-not-found",
        `Cannot look up group ${JSON.stringify(ref)}: no group has this ${
          guidPattern.test(ref) ? "object id or " : ""
        }display name`,
        {
          exitCode: 2,
          hint:
            "Check the spelling and the tenant (and cloud); the Entra admin center lists groups under Groups > All groups",
        },
      );
    }
    const count = page["@odata.nextLink"] === undefined
      ? `${page.value.length}`
      : `more than ${page.value.length}`;
    const ids = page.value.slice(0, 10).map((group) => group.id).join(", ");
    throw new ProvisioningError(
      "group-ambiguous",
      `Cannot look up group ${JSON.stringify(ref)}: ${count} groups have this display name (${ids}${
        page.value.length > 10 ? ", …" : ""
      })`,
      { exitCode: 2, hint: "Name the group by its object id instead, e.g. --group " + page.value[0]!.id },
    );
  } catch (error) {
    throw explainDenied(error, action);
  }
}

/**
 * The users of a group named by object id or display name, members of nested groups included,
 * page by page as the caller iterates: {@link resolveGroup}, then {@link listTransitiveUsers}.
 *
 * @example
 * ```ts ignore
 * for await (const user of listGroupUsers(client, "Passkey pilot")) console.log(user.userPrincipalName);
 * ```
 */
export async function* listGroupUsers(
  client: GraphClient,
  reference: string,
  options: ListGroupUsersOptions = {},
): AsyncGenerator<DirectoryUser, void, undefined> {
  const group = await resolveGroup(client, reference, options.signal ? { signal: options.signal } : {});
  yield* listTransitiveUsers(client, group, options);
}

/**
 * The users among a group's transitive members, page by page; see the module documentation.
 *
 * @throws {ProvisioningError} `group-not-found` when the group is gone; a `RangeError` for a
 * page size outside 1–999.
 * @throws {GraphError} `insufficient-privileges` naming {@link groupReadPermissions} (403), or
 * {@link memberProfilePermissions} (users without their user principal name);
 * `graph-bad-response` for a page that does not parse or a next-page link off the Graph base URL.
 */
export async function* listTransitiveUsers(
  client: GraphClient,
  group: EntraGroup,
  options: ListGroupUsersOptions = {},
): AsyncGenerator<DirectoryUser, void, undefined> {
  const pageSize = options.pageSize ?? maxGroupPageSize;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > maxGroupPageSize) {
    throw new RangeError(`Cannot list group members: the page size must be 1 to 999, not ${pageSize}`);
  }
  const action = `list the members of group ${label(group)}`;
  const call = {
    operation: "other" as const,
    action,
    schema: memberPageSchema,
    // group-list-transitivemembers: an OData cast takes the advanced query parameters.
    headers: { ConsistencyLevel: "eventual" },
    ...(options.signal ? { signal: options.signal } : {}),
  };
  let path = `/groups/${encodeURIComponent(group.id)}/transitiveMembers/microsoft.graph.user`;
  let query: Record<string, string> | undefined = {
    $select: memberSelect.join(","),
    $top: String(pageSize),
    $count: "true",
  };
  let previous: string | undefined;
  while (true) {
    let page: z.infer<typeof memberPageSchema>;
    try {
      page = await client.request("GET", path, { ...call, ...(query ? { query } : {}) });
    } catch (error) {
      if (error instanceof GraphError && error.status === 404) {
        throw new ProvisioningError(
          "group-not-found",
          `Cannot ${action}: the group ${group.id} no longer exists`,
          {
            exitCode: 2,
            hint: "It was deleted after it was looked up; check the group and run again",
            cause: error,
          },
        );
      }
      throw explainDenied(error, action);
    }
    const endpoint = endpointOf(client, path);
    const users = page.value.map((member) => {
      const upn = member.userPrincipalName;
      if (upn == null) {
        throw new GraphError(
          "insufficient-privileges",
          `Cannot ${action}: Graph returned user ${member.id} without a user principal name, as it does when the app may read the group but not users (GET /${endpoint.version}${endpoint.path})`,
          {
            endpoint,
            hint: `Grant and admin-consent ${memberProfilePermissions[0]} (or ${
              memberProfilePermissions[1]
            }) to the app registration, besides ${groupReadPermissions[0]}`,
          },
        );
      }
      return toUser(member, upn);
    });
    yield* users;
    const link = page["@odata.nextLink"];
    if (link === undefined) return;
    if (link === previous) {
      throw new GraphError(
        "graph-bad-response",
        `Cannot ${action}: Graph's next-page link repeats the page it was on (GET /${endpoint.version}${endpoint.path})`,
        { endpoint, hint: "Graph may have changed; run again, or report it" },
      );
    }
    previous = link;
    path = nextPagePath(client, link, action);
    query = undefined;
  }
}

/**
 * The path (after the version) and query of a next-page link, refused unless it stays on the
 * client's Graph base URL: the access token goes wherever the link points.
 */
function nextPagePath(client: GraphClient, link: string, action: string): string {
  const base = new URL(`${client.baseUrl}/${client.version}/`);
  let url: URL | undefined;
  try {
    url = new URL(link);
  } catch {
    url = undefined;
  }
  if (
    url === undefined || url.origin !== base.origin || url.username !== "" || url.password !== "" ||
    !url.pathname.startsWith(base.pathname)
  ) {
    const shown = url === undefined ? link.slice(0, 200) : `${url.origin}${url.pathname}`;
    throw new GraphError(
      "graph-bad-response",
      `Cannot ${action}: Graph's next-page link "${shown}" leaves ${base.href}`,
      {
        endpoint: { method: "GET", path: url?.pathname ?? "", version: client.version },
        hint:
          "The access token is only ever sent to the configured Graph endpoint; check proxies between here and Graph",
      },
    );
  }
  return `/${url.pathname.slice(base.pathname.length)}${url.search}`;
}

function endpointOf(client: GraphClient, path: string): GraphEndpoint {
  return { method: "GET", path: path.replace(/\?.*$/s, ""), version: client.version };
}

/**
 * A 403 from the group endpoints names the group permissions (errors.ts knows only the passkey,
 * TAP and policy ones); anything else passes through.
 */
function explainDenied(error: unknown, action: string): unknown {
  if (!(error instanceof GraphError && error.status === 403)) return error;
  const said = error.graphMessage
    ? `; Graph said "${error.graphMessage.replace(/\s+/g, " ").slice(0, 300)}"`
    : "";
  const where = [
    `${error.endpoint.method} /${error.endpoint.version}${error.endpoint.path}`,
    error.graphCode ? `403 ${error.graphCode}` : "403",
    ...(error.requestId ? [`request-id ${error.requestId}`] : []),
  ].join(", ");
  return new GraphError(
    "insufficient-privileges",
    `Cannot ${action}: Graph denied access: the app needs the permission ${
      groupReadPermissions.join(" or ")
    }${said} (${where})`,
    {
      endpoint: error.endpoint,
      status: 403,
      ...(error.graphCode === undefined ? {} : { graphCode: error.graphCode }),
      ...(error.graphMessage === undefined ? {} : { graphMessage: error.graphMessage }),
      ...(error.requestId === undefined ? {} : { requestId: error.requestId }),
      ...(error.clientRequestId === undefined ? {} : { clientRequestId: error.clientRequestId }),
      ...(error.attempts === undefined ? {} : { attempts: error.attempts }),
      hint: `Grant and admin-consent ${
        groupReadPermissions[0]
      } to the app registration (for delegated sign-in, consent the ${
        groupReadPermissions[0]
      } scope); a group with hidden membership also needs Member.Read.Hidden`,
      cause: error,
    },
  );
}

function toGroup(json: z.infer<typeof groupSchema>): EntraGroup {
  return { id: json.id, ...(json.displayName == null ? {} : { displayName: json.displayName }) };
}

function toUser(member: z.infer<typeof memberSchema>, userPrincipalName: string): DirectoryUser {
  return {
    id: member.id,
    userPrincipalName,
    ...(member.displayName == null ? {} : { displayName: member.displayName }),
    ...(member.mail == null ? {} : { mail: member.mail }),
  };
}
