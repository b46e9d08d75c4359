/**
 * A signed-in connection to one Okta org, as core/plugin.ts's ProviderSession: users by id or
 * login, passkeys as WebAuthn factors of the Factors API, group members with `Link` paging.
 *
 * A registration is two calls: enroll a `webauthn`/`FIDO` factor (the answer's
 * `_embedded.activation` is the creation options; the factor waits in `PENDING_ACTIVATION`), then
 * activate it with the attestation object and client data
 * (https://developer.okta.com/docs/reference/api/factors/#enroll-webauthn-factor,
 * https://developer.okta.com/docs/reference/api/factors/#activate-webauthn-factor). The factor id
 * of the enrollment is kept per user between the two calls.
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../core/errors.ts";
import type {
  DirectoryUser,
  PasskeyMethod,
  ProviderSession,
  RegistrationChallenge,
} from "../../core/plugin.ts";
import { nextLink, type OktaApi } from "./api.ts";
import { oktaReasons } from "./errors.ts";

/** User object, the fields we read (https://developer.okta.com/docs/reference/api/users/#user-object). */
const userSchema = z.object({
  id: z.string().min(1),
  status: z.string(),
  profile: z.object({
    login: z.string().min(1),
    email: z.string().optional(),
    firstName: z.string().nullish(),
    lastName: z.string().nullish(),
  }),
});

/** Factor object (https://developer.okta.com/docs/reference/api/factors/#factor-object). */
const factorSchema = z.object({
  id: z.string().min(1),
  factorType: z.string(),
  provider: z.string().optional(),
  status: z.string(),
  created: z.string().optional(),
  lastUpdated: z.string().optional(),
  /** WebAuthn factor profile: `credentialId`, `authenticatorName` (the Factors API's WebAuthn factor profile). */
  profile: z.object({ credentialId: z.string().optional(), authenticatorName: z.string().optional() }).loose()
    .optional(),
});

/** An enrollment answer: a factor with `_embedded.activation`, the creation options at its top level. */
const enrollmentSchema = factorSchema.extend({
  _embedded: z.object({ activation: z.record(z.string(), z.unknown()) }),
});

/** Group object (https://developer.okta.com/docs/reference/api/groups/#group-object). */
const groupSchema = z.object({ id: z.string().min(1), profile: z.object({ name: z.string() }) });

/** Okta ids are 20 characters of letters and digits (users `00u…`, groups `00g…`). */
const oktaIdPattern = /^[0-9A-Za-z]{20}$/;

/** See the module documentation. */
export class OktaSession implements ProviderSession {
  readonly tenant: string;
  readonly allowedRpIds: readonly string[];
  readonly #api: OktaApi;
  /** The factor each user's pending enrollment created, for {@link registerPasskey}. */
  readonly #pending = new Map<string, string>();
  /**
   * WebAuthn factors left `PENDING_ACTIVATION` by an earlier attempt that died before activating,
   * as the last listing of each user showed them: deleted before the user's next enrollment.
   */
  readonly #leftovers = new Map<string, string[]>();

  constructor(api: OktaApi) {
    this.#api = api;
    this.tenant = `okta:${new URL(api.orgUrl).host}`;
    // Okta's activation names no rp id (`rp` has only `name`): the browser's default applies, the
    // host of the org URL the ceremony runs on (WebAuthn L3 §5.4.2 `rp.id` default).
    this.allowedRpIds = [new URL(api.orgUrl).hostname];
  }

  /** Finds a user by id or login (`GET /api/v1/users/{id|login}`, https://developer.okta.com/docs/reference/api/users/#get-user). */
  async resolveUser(reference: string, signal?: AbortSignal): Promise<DirectoryUser> {
    const body = await this.#api.getJson(
      `/api/v1/users/${encodeURIComponent(reference)}`,
      "resolve-user",
      `find Okta user "${reference}"`,
      signal,
    );
    return toDirectoryUser(parse(userSchema, body, `the user "${reference}"`));
  }

  /** Enrolls a WebAuthn factor; its activation object is the creation options, the org URL the origin. */
  async creationOptions(user: DirectoryUser, signal?: AbortSignal): Promise<RegistrationChallenge> {
    for (const leftover of this.#leftovers.get(user.id) ?? []) {
      await this.deletePasskey(user, leftover, signal);
    }
    this.#leftovers.delete(user.id);
    const response = await this.#api.request({
      method: "POST",
      path: `/api/v1/users/${user.id}/factors`,
      body: { factorType: "webauthn", provider: "FIDO" },
      step: "enroll",
      what: `enroll a WebAuthn factor for ${user.userPrincipalName}`,
      signal,
    });
    const enrollment = parse(
      enrollmentSchema,
      await response.json(),
      `the enrollment of ${user.userPrincipalName}`,
    );
    this.#pending.set(user.id, enrollment.id);
    return { options: enrollment._embedded.activation, origin: this.#api.orgUrl };
  }

  /** Activates the pending factor with the authenticator's attestation object and client data. */
  async registerPasskey(
    user: DirectoryUser,
    registration: { credential: unknown; displayName: string },
    signal?: AbortSignal,
  ): Promise<PasskeyMethod> {
    const factorId = this.#pending.get(user.id);
    if (factorId === undefined) {
      throw new ProvisioningError(
        "no-pending-enrollment",
        `Cannot activate a WebAuthn factor for ${user.userPrincipalName}: no enrollment was started in this session`,
      );
    }
    const credential = parse(registrationSchema, registration.credential, "the registration");
    const response = await this.#api.request({
      method: "POST",
      path: `/api/v1/users/${user.id}/factors/${factorId}/lifecycle/activate`,
      // Both base64url, as Okta's own sign-in widget sends them.
      body: {
        attestation: credential.response.attestationObject,
        clientData: credential.response.clientDataJSON,
      },
      step: "activate",
      what: `activate the WebAuthn factor of ${user.userPrincipalName}`,
      signal,
      nonIdempotent: true,
    });
    this.#pending.delete(user.id);
    const factor = parse(
      factorSchema,
      await response.json(),
      `the activated factor of ${user.userPrincipalName}`,
    );
    return toPasskey(factor);
  }

  /**
   * The user's ACTIVE WebAuthn factors (`GET /api/v1/users/{id}/factors`). Pending ones an earlier
   * attempt left are remembered and deleted before this user's next enrollment.
   */
  async listPasskeys(user: DirectoryUser, signal?: AbortSignal): Promise<PasskeyMethod[]> {
    const body = await this.#api.getJson(
      `/api/v1/users/${user.id}/factors`,
      "list-factors",
      `list the factors of ${user.userPrincipalName}`,
      signal,
    );
    const webauthn = parse(z.array(factorSchema), body, `the factors of ${user.userPrincipalName}`)
      .filter((f) => f.factorType === "webauthn");
    const pending = webauthn.filter((f) => f.status === "PENDING_ACTIVATION");
    if (pending.length > 0) this.#leftovers.set(user.id, pending.map((f) => f.id));
    else this.#leftovers.delete(user.id);
    return webauthn.filter((f) => f.status === "ACTIVE").map(toPasskey);
  }

  /** Deletes a factor (`DELETE /api/v1/users/{id}/factors/{factorId}`); one already gone is not an error. */
  async deletePasskey(user: DirectoryUser, methodId: string, signal?: AbortSignal): Promise<void> {
    try {
      const response = await this.#api.request({
        method: "DELETE",
        path: `/api/v1/users/${user.id}/factors/${encodeURIComponent(methodId)}`,
        step: "delete-factor",
        what: `delete factor ${methodId} of ${user.userPrincipalName}`,
        signal,
      });
      await response.body?.cancel();
    } catch (error) {
      if (error instanceof ProvisioningError && error.code === oktaReasons.userNotFound) return;
      throw error;
    }
  }

  /**
   * The members of a group by id or exact name, page by page (`GET /api/v1/groups/{id}/users`,
   * next page from the `Link` header). Okta groups do not nest, so there is nothing further to expand.
   */
  async *listGroupMembers(group: string, signal?: AbortSignal): AsyncIterable<DirectoryUser> {
    const id = oktaIdPattern.test(group) ? group : await this.#groupIdByName(group, signal);
    let path: string | undefined = `/api/v1/groups/${encodeURIComponent(id)}/users?limit=200`;
    while (path !== undefined) {
      const response = await this.#api.request({
        method: "GET",
        path,
        step: "group",
        what: `list the members of Okta group "${group}"`,
        signal,
      });
      const users = parse(z.array(userSchema), await response.json(), `the members of "${group}"`);
      for (const user of users) yield toDirectoryUser(user);
      path = nextLink(response.headers);
    }
  }

  /** `GET /api/v1/groups?q=` searches by name prefix; exactly one exact match is wanted. */
  async #groupIdByName(name: string, signal?: AbortSignal): Promise<string> {
    const body = await this.#api.getJson(
      `/api/v1/groups?q=${encodeURIComponent(name)}&limit=200`,
      "group",
      `find Okta group "${name}"`,
      signal,
    );
    const matches = parse(z.array(groupSchema), body, `the groups named "${name}"`)
      .filter((g) => g.profile.name.toLowerCase() === name.toLowerCase());
    if (matches.length === 1) return matches[0]!.id;
    throw new ProvisioningError(
      matches.length === 0 ? oktaReasons.groupNotFound : "group-ambiguous",
      matches.length === 0
        ? `Cannot find Okta group "${name}"`
        : `Cannot choose Okta group "${name}": ${matches.length} groups have that name (${
          matches.map((g) => g.id).join(", ")
        })`,
      { hint: "Give the group's id (00g…) instead", exitCode: 2 },
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.#pending.clear();
    this.#leftovers.clear();
    return Promise.resolve();
  }
}

/** The fields of RegistrationResponseJSON the activation sends. */
const registrationSchema = z.object({
  response: z.object({ attestationObject: z.string().min(1), clientDataJSON: z.string().min(1) }),
});

function toDirectoryUser(user: z.infer<typeof userSchema>): DirectoryUser {
  const name = [user.profile.firstName, user.profile.lastName].filter(Boolean).join(" ");
  return {
    id: user.id,
    userPrincipalName: user.profile.login,
    ...(name ? { displayName: name } : {}),
    ...(user.profile.email ? { mail: user.profile.email } : {}),
  };
}

/**
 * A factor as a passkey. Okta gives a WebAuthn factor no name of ours: its `authenticatorName` is
 * the name Okta shows for the authenticator model, so that is the display name here.
 */
function toPasskey(factor: z.infer<typeof factorSchema>): PasskeyMethod {
  return {
    id: factor.id,
    ...(factor.profile?.authenticatorName ? { displayName: factor.profile.authenticatorName } : {}),
    ...(factor.created ? { createdDateTime: factor.created } : {}),
  };
}

function parse<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new ProvisioningError(
    "unexpected-answer",
    `Cannot read ${what} from Okta: ${
      result.error.issues.map((i) => `${i.path.join(".") || "(root)"} ${i.message}`).join("; ")
    }`,
    {
      hint:
        "The org answered in a shape the Factors/Users API does not document; report it with the errorId if any",
    },
  );
}
