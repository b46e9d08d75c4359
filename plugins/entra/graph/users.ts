/**
 * Finding a user by object id, user principal name or mail.
 *
 * - `GET /users/{id | userPrincipalName}?$select=…` ("Get a user",
 *   https://learn.microsoft.com/graph/api/user-get). A UPN that starts with `$` is addressed as
 *   `/users('$x@y.com')` and a B2B UPN's `#` is percent-encoded, as that page's tips say.
 * - `GET /users?$filter=mail eq '…'&$select=…` ("List users",
 *   https://learn.microsoft.com/graph/api/user-list; `mail` supports `$filter` with `eq`) when no
 *   user has the reference as UPN.
 *
 * Later calls address the user by object id only, so a UPN's odd characters matter here alone.
 *
 * @module
 */
import { ProvisioningError } from "../../../core/errors.ts";
import type { DirectoryUser } from "../../../core/plugin.ts";
import { GraphError, notFoundHint } from "../errors.ts";
import type { GraphClient } from "./client.ts";
import { collectionSchema, type UserJson, userSchema, userSelect } from "./schemas.ts";

/** A directory user with the Entra properties preflight and reports use. */
export interface EntraUser extends DirectoryUser {
  /** False for a disabled account. */
  readonly accountEnabled?: boolean;
  /** `Member` or `Guest`. */
  readonly userType?: string;
  /** True for a user synced from on-premises Active Directory. */
  readonly onPremisesSyncEnabled?: boolean;
}

const guidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The Graph path of a user addressed by object id or UPN.
 *
 * @example
 * ```ts
 * import { userPath } from "./users.ts";
 * console.assert(userPath("alice@contoso.com") === "/users/alice%40contoso.com");
 * console.assert(userPath("bob_fabrikam.com#EXT#@contoso.com") === "/users/bob_fabrikam.com%23EXT%23%40contoso.com");
 * console.assert(userPath("$adele@contoso.com") === "/users('$adele@contoso.com')");
 * ```
 */
export function userPath(reference: string): string {
  if (reference.startsWith("$")) {
    // OData key syntax; a quote inside a string literal is doubled.
    const literal = encodeURIComponent(reference.replaceAll("'", "''")).replaceAll("%24", "$").replaceAll(
      "%40",
      "@",
    );
    return `/users('${literal}')`;
  }
  return `/users/${encodeURIComponent(reference)}`;
}

/** The Graph path of a resolved user, by object id. */
export function userIdPath(user: Pick<DirectoryUser, "id">): string {
  return `/users/${encodeURIComponent(user.id)}`;
}

/** An OData string literal: quoted, with single quotes doubled. */
function odataString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * Finds a user by object id, UPN or mail.
 *
 * @throws {GraphError} `user-not-found` naming the reference; `insufficient-privileges` and the
 * other Graph reasons as errors.ts describes.
 * @throws {ProvisioningError} `user-ambiguous` when several users have the mail,
 * `user-reference-invalid` for an empty reference.
 */
export async function resolveUser(
  client: GraphClient,
  reference: string,
  options: { signal?: AbortSignal } = {},
): Promise<EntraUser> {
  const ref = reference.trim();
  if (ref === "" || ref.length > 1024) {
    throw new ProvisioningError(
      "user-reference-invalid",
      `Cannot look up user "${ref.slice(0, 80)}": a user is named by object id, user principal name or mail`,
      { exitCode: 2 },
    );
  }
  const call = {
    operation: "resolve-user" as const,
    action: "look up user",
    user: ref,
    ...(options.signal ? { signal: options.signal } : {}),
  };
  const query = { $select: userSelect.join(",") };
  try {
    return toEntraUser(await client.request("GET", userPath(ref), { ...call, schema: userSchema, query }));
  } catch (error) {
    // Not a UPN (or id): it may be a mail address.
    if (!(error instanceof GraphError && error.reason === "user-not-found" && ref.includes("@"))) throw error;
    const byMail = await client.request("GET", "/users", {
      ...call,
      schema: collectionOfUsers,
      query: { ...query, $filter: `mail eq ${odataString(ref)}` },
    });
    if (byMail.value.length === 1) return toEntraUser(byMail.value[0]!);
    if (byMail.value.length > 1) {
      throw new ProvisioningError(
        "user-ambiguous",
        `Cannot look up user "${ref}": ${byMail.value.length} users have this mail address (${
          byMail.value.slice(0, 5).map((u) => u.userPrincipalName).join(", ")
        })`,
        { hint: "Name the user by user principal name or object id instead" },
      );
    }
    throw new GraphError(
      "user-not-found",
      `Cannot look up user "${ref}": no user has this user principal name or mail (${error.endpoint.method} /${error.endpoint.version}${error.endpoint.path}, then GET /${client.version}/users?$filter=mail eq …)`,
      {
        endpoint: error.endpoint,
        user: ref,
        ...(error.status === undefined ? {} : { status: error.status }),
        ...(error.requestId === undefined ? {} : { requestId: error.requestId }),
        hint: notFoundHint,
        cause: error,
      },
    );
  }
}

const collectionOfUsers = collectionSchema(userSchema);

/** Whether a reference looks like an object id (GUID). */
export function isObjectId(reference: string): boolean {
  return guidPattern.test(reference.trim());
}

function toEntraUser(json: UserJson): EntraUser {
  return {
    id: json.id,
    userPrincipalName: json.userPrincipalName,
    ...(json.displayName == null ? {} : { displayName: json.displayName }),
    ...(json.mail == null ? {} : { mail: json.mail }),
    ...(json.accountEnabled == null ? {} : { accountEnabled: json.accountEnabled }),
    ...(json.userType == null ? {} : { userType: json.userType }),
    ...(json.onPremisesSyncEnabled == null ? {} : { onPremisesSyncEnabled: json.onPremisesSyncEnabled }),
  };
}
