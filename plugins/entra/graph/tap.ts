/**
 * A user's Temporary Access Pass (temporaryAccessPassAuthenticationMethod) through Microsoft Graph,
 * for the browser provisioning path:
 *
 * - create: `POST /users/{id}/authentication/temporaryAccessPassMethods` with `lifetimeInMinutes`
 *   (10 to 43200), `isUsableOnce` and optionally `startDateTime`; a user has one pass, and a new
 *   one replaces the old ("Create temporaryAccessPassMethod",
 *   https://learn.microsoft.com/graph/api/authentication-post-temporaryaccesspassmethods);
 * - list: `GET …/temporaryAccessPassMethods`
 *   (https://learn.microsoft.com/graph/api/temporaryaccesspassauthenticationmethod-list);
 * - delete: `DELETE …/temporaryAccessPassMethods/{id}`
 *   (https://learn.microsoft.com/graph/api/temporaryaccesspassauthenticationmethod-delete).
 *
 * The pass itself is a secret: {@link TemporaryAccessPass} keeps it out of `String()`, JSON,
 * `console.log` and `Deno.inspect`; only {@link TemporaryAccessPass.reveal} hands it out, to the
 * one place that types it into the sign-in page.
 *
 * @module
 */
import { ProvisioningError } from "../../../core/errors.ts";
import { GraphError } from "../errors.ts";
import type { GraphClient } from "./client.ts";
import type { Fido2User } from "./fido2.ts";
import { type TapMethodJson, tapMethodSchema } from "./schemas.ts";
import { userIdPath } from "./users.ts";

/** Lifetimes Graph accepts, in minutes (10 minutes to 30 days). */
export const tapLifetimeRange = { min: 10, max: 43_200 } as const;

const redacted = "[redacted Temporary Access Pass]";

/** A Temporary Access Pass just created: its metadata, and the pass kept secret. */
export class TemporaryAccessPass {
  /** The method id, for deleting it afterwards. */
  readonly id: string;
  readonly lifetimeInMinutes: number | undefined;
  readonly isUsableOnce: boolean | undefined;
  readonly startDateTime: string | undefined;
  readonly createdDateTime: string | undefined;
  readonly #value: string;

  constructor(json: TapMethodJson & { temporaryAccessPass: string }) {
    this.id = json.id;
    this.lifetimeInMinutes = json.lifetimeInMinutes ?? undefined;
    this.isUsableOnce = json.isUsableOnce ?? undefined;
    this.startDateTime = json.startDateTime ?? undefined;
    this.createdDateTime = json.createdDateTime ?? undefined;
    this.#value = json.temporaryAccessPass;
  }

  /** The pass, to type into the sign-in page. Never log it. */
  reveal(): string {
    return this.#value;
  }

  /** Keeps the pass out of JSON (logs, results files). */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      lifetimeInMinutes: this.lifetimeInMinutes,
      isUsableOnce: this.isUsableOnce,
      startDateTime: this.startDateTime,
      createdDateTime: this.createdDateTime,
      temporaryAccessPass: redacted,
    };
  }

  /** Keeps the pass out of string conversions. */
  toString(): string {
    return `Temporary Access Pass ${this.id}`;
  }

  /** Keeps the pass out of `console.log` and `Deno.inspect`. */
  [Symbol.for("Deno.customInspect")](): string {
    return `TemporaryAccessPass ${JSON.stringify(this.toJSON())}`;
  }
}

/** Options of {@link createTemporaryAccessPass}. */
export interface CreateTapOptions {
  /** 10 to 43200; the policy's default when absent. */
  lifetimeInMinutes?: number;
  /** @default true (one-time use: it is deleted after the registration anyway) */
  isUsableOnce?: boolean;
  /** When the pass becomes usable; immediately when absent. */
  startDateTime?: Date;
  signal?: AbortSignal;
}

/**
 * Creates a Temporary Access Pass for the user (replacing any they have).
 *
 * Retried like a read: if an answer is lost, a repeated POST replaces the pass we never saw, which
 * is what we want.
 *
 * @throws {ProvisioningError} `tap-lifetime-invalid` (exit code 2) before any call.
 * @throws {GraphError} `tap-disabled`, `insufficient-privileges` … (errors.ts); `graph-bad-response`
 * when Graph's answer lacks the pass.
 */
export async function createTemporaryAccessPass(
  client: GraphClient,
  user: Fido2User,
  options: CreateTapOptions = {},
): Promise<TemporaryAccessPass> {
  const lifetime = options.lifetimeInMinutes;
  if (
    lifetime !== undefined &&
    (!Number.isInteger(lifetime) || lifetime < tapLifetimeRange.min || lifetime > tapLifetimeRange.max)
  ) {
    throw new ProvisioningError(
      "tap-lifetime-invalid",
      `Cannot create a Temporary Access Pass for ${user.userPrincipalName}: its lifetime is a whole number of minutes from ${tapLifetimeRange.min} to ${tapLifetimeRange.max}, not ${lifetime}`,
      { exitCode: 2 },
    );
  }
  const path = `${userIdPath(user)}/authentication/temporaryAccessPassMethods`;
  const json = await client.request("POST", path, {
    schema: tapMethodSchema,
    body: {
      isUsableOnce: options.isUsableOnce ?? true,
      ...(lifetime === undefined ? {} : { lifetimeInMinutes: lifetime }),
      ...(options.startDateTime ? { startDateTime: options.startDateTime.toISOString() } : {}),
    },
    operation: "create-tap",
    action: "create a Temporary Access Pass",
    user: user.userPrincipalName,
    idempotent: true,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const value = json.temporaryAccessPass;
  if (typeof value !== "string") {
    throw new GraphError(
      "graph-bad-response",
      `Cannot create a Temporary Access Pass for ${user.userPrincipalName}: Graph's answer has no pass (POST /${client.version}${path})`,
      { endpoint: { method: "POST", path, version: client.version }, user: user.userPrincipalName },
    );
  }
  return new TemporaryAccessPass({ ...json, temporaryAccessPass: value });
}

/** The user's Temporary Access Pass methods (at most one), without the pass itself. */
export async function listTemporaryAccessPasses(
  client: GraphClient,
  user: Fido2User,
  options: { signal?: AbortSignal } = {},
): Promise<Omit<TapMethodJson, "temporaryAccessPass">[]> {
  const methods = await client.requestAll(
    `${userIdPath(user)}/authentication/temporaryAccessPassMethods`,
    tapMethodSchema,
    {
      operation: "list-taps",
      action: "list Temporary Access Passes",
      user: user.userPrincipalName,
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
  // Graph hides the pass after creation; drop the field whatever it says.
  return methods.map(({ temporaryAccessPass: _hidden, ...rest }) => rest);
}

/**
 * Deletes a Temporary Access Pass. Returns false when it no longer exists (used, expired and
 * cleaned up, or deleted by an earlier attempt), true when it was deleted.
 */
export async function deleteTemporaryAccessPass(
  client: GraphClient,
  user: Fido2User,
  methodId: string,
  options: { signal?: AbortSignal } = {},
): Promise<boolean> {
  return await client.deleteIfPresent(
    `${userIdPath(user)}/authentication/temporaryAccessPassMethods/${encodeURIComponent(methodId)}`,
    {
      operation: "delete-tap",
      action: "delete the Temporary Access Pass",
      user: user.userPrincipalName,
      ...(options.signal ? { signal: options.signal } : {}),
    },
  );
}
