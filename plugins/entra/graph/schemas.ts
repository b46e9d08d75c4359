/**
 * zod schemas of the Microsoft Graph responses the Entra plugin reads, each with the Microsoft
 * Learn page it follows. Graph is outside input: every response is parsed here, never cast.
 *
 * The schemas are lenient where Graph is known to grow (unknown properties are dropped, a `null`
 * is accepted wherever Graph's type is `NullableOption`) and strict where we depend on a value
 * (an id is a non-empty string). Where `@microsoft/microsoft-graph-types` has the resource, the
 * parsed type is checked at compile time to be assignable to it; the types package has no
 * `webauthnCredentialCreationOptions` or `passkeyProfile` yet, so those are ours alone.
 *
 * @module
 */
import type * as Graph from "@microsoft/microsoft-graph-types";
import { z } from "zod";
import { maxChallengeBytes } from "../../../core/webauthn/json.ts";

/** Longest string accepted in an ordinary Graph field (names, ids, dates). */
const maxText = 2048;
const text = z.string().max(maxText);
const id = z.string().min(1).max(maxText);
/** An ISO 8601 timestamp as Graph writes them (`2026-04-20T10:05:00Z`, fractions and offsets allowed). */
const timestamp = z.string().max(100).refine((value) => !Number.isNaN(Date.parse(value)), {
  message: "is not an ISO 8601 date-time",
});

/** A nullable, possibly absent Graph property (`NullableOption<T>` in the Graph types). */
function nullable<T extends z.ZodType>(schema: T) {
  return schema.nullable().exactOptional();
}

/** Compile-time check that `T` can be used where Graph's type `U` is expected. */
type AssertAssignable<T extends U, U> = T;

// ---------------------------------------------------------------------------------------------
// Collections
// ---------------------------------------------------------------------------------------------

/**
 * A Graph collection page: `{ value: [...], "@odata.nextLink"?: url }`
 * (https://learn.microsoft.com/graph/paging).
 */
export function collectionSchema<T extends z.ZodType>(item: T) {
  return z.object({
    value: z.array(item).max(10_000),
    "@odata.nextLink": z.string().url().max(8192).exactOptional(),
  });
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

/**
 * The properties of a user the plugin asks for with `$select` (the user resource,
 * https://learn.microsoft.com/graph/api/resources/user; `GET /users/{id | userPrincipalName}`,
 * https://learn.microsoft.com/graph/api/user-get).
 */
export const userSelect = [
  "id",
  "userPrincipalName",
  "displayName",
  "mail",
  "accountEnabled",
  "userType",
  "onPremisesSyncEnabled",
] as const;

/** A user as `$select=` {@link userSelect} returns it. */
export const userSchema = z.object({
  id,
  userPrincipalName: id,
  displayName: nullable(text),
  mail: nullable(text),
  accountEnabled: nullable(z.boolean()),
  userType: nullable(text),
  onPremisesSyncEnabled: nullable(z.boolean()),
});
/** A parsed user. */
export type UserJson = AssertAssignable<z.infer<typeof userSchema>, Graph.User>;

// ---------------------------------------------------------------------------------------------
// Passkeys (FIDO2)
// ---------------------------------------------------------------------------------------------

/**
 * fido2AuthenticationMethod (https://learn.microsoft.com/graph/api/resources/fido2authenticationmethod):
 * what `POST /users/{id}/authentication/fido2Methods` answers with 201 and what the list returns.
 * `passkeyType` (deviceBound | synced) is newer than the types package.
 */
export const fido2MethodSchema = z.object({
  id,
  displayName: nullable(text),
  createdDateTime: nullable(timestamp),
  aaGuid: nullable(text),
  model: nullable(text),
  attestationCertificates: nullable(z.array(z.string().max(65_536)).max(16)),
  attestationLevel: nullable(text),
  passkeyType: nullable(text),
});
/** A parsed fido2AuthenticationMethod. */
export type Fido2MethodJson =
  & AssertAssignable<
    Omit<z.infer<typeof fido2MethodSchema>, "attestationLevel" | "passkeyType">,
    Omit<Graph.Fido2AuthenticationMethod, "attestationLevel">
  >
  & Pick<z.infer<typeof fido2MethodSchema>, "attestationLevel" | "passkeyType">;

/**
 * webauthnCredentialCreationOptions
 * (https://learn.microsoft.com/graph/api/resources/webauthncredentialcreationoptions), the answer of
 * `GET /users/{id}/authentication/fido2Methods/creationOptions`
 * (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions).
 *
 * Only what this plugin reads is checked here (the expiry and `publicKey.rp.id`); the whole
 * `publicKey` is kept as sent (`looseObject`) and validated field by field by the WebAuthn client
 * (`parseCreationOptions` in core/webauthn/json.ts), which also reads the excludeCredentials ids in
 * the three encodings Graph has used (core/webauthn/credential_id_text.ts).
 */
export const creationOptionsResponseSchema = z.looseObject({
  challengeTimeoutDateTime: nullable(timestamp),
  publicKey: z.looseObject({
    rp: z.looseObject({ id: nullable(text), name: nullable(text) }),
    // The WebAuthn client enforces the byte limit (maxChallengeBytes, 64 KiB); real challenges are
    // multi-kilobyte JWEs (see core/webauthn/json.ts), so only the absurd is cut here.
    challenge: z.string().min(1).max(Math.ceil(maxChallengeBytes / 3) * 4 + 2),
    user: z.looseObject({ id: z.string().min(1).max(1024) }),
  }),
});
/** A parsed creationOptions response, every other field kept as Graph sent it. */
export type CreationOptionsResponse = z.infer<typeof creationOptionsResponseSchema>;

// ---------------------------------------------------------------------------------------------
// Temporary Access Pass
// ---------------------------------------------------------------------------------------------

/**
 * temporaryAccessPassAuthenticationMethod
 * (https://learn.microsoft.com/graph/api/resources/temporaryaccesspassauthenticationmethod).
 * `temporaryAccessPass` (the secret) is present only in the answer to the create call.
 */
export const tapMethodSchema = z.object({
  id,
  temporaryAccessPass: nullable(z.string().min(1).max(256)),
  createdDateTime: nullable(timestamp),
  startDateTime: nullable(timestamp),
  lifetimeInMinutes: nullable(z.number().int()),
  isUsableOnce: nullable(z.boolean()),
  isUsable: nullable(z.boolean()),
  methodUsabilityReason: nullable(text),
});
/** A parsed temporaryAccessPassAuthenticationMethod. */
export type TapMethodJson = AssertAssignable<
  z.infer<typeof tapMethodSchema>,
  Graph.TemporaryAccessPassAuthenticationMethod
>;

// ---------------------------------------------------------------------------------------------
// Authentication methods policy
// ---------------------------------------------------------------------------------------------

/** fido2KeyRestrictions (https://learn.microsoft.com/graph/api/resources/fido2keyrestrictions). */
export const keyRestrictionsSchema = z.object({
  isEnforced: nullable(z.boolean()),
  enforcementType: nullable(text),
  aaGuids: nullable(z.array(text).max(10_000)),
});
/** Parsed key restrictions. */
export type KeyRestrictionsJson = z.infer<typeof keyRestrictionsSchema>;

/**
 * passkeyProfile (https://learn.microsoft.com/graph/api/resources/passkeyprofile): the group-based
 * settings that replace the policy-wide `isAttestationEnforced` and `keyRestrictions`.
 */
export const passkeyProfileSchema = z.object({
  id,
  name: nullable(text),
  /** `deviceBound`, `synced` or both, comma-separated. */
  passkeyTypes: nullable(text),
  /** `disabled` | `registrationOnly`. */
  attestationEnforcement: nullable(text),
  keyRestrictions: nullable(keyRestrictionsSchema),
});
/** A parsed passkey profile. */
export type PasskeyProfileJson = z.infer<typeof passkeyProfileSchema>;

/** authenticationMethodTarget / passkeyAuthenticationMethodTarget (who a policy applies to). */
const targetSchema = z.object({
  id: nullable(text),
  targetType: nullable(text),
  allowedPasskeyProfiles: nullable(z.array(text).max(1000)),
});

/**
 * fido2AuthenticationMethodConfiguration
 * (https://learn.microsoft.com/graph/api/resources/fido2authenticationmethodconfiguration), read from
 * `GET /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2`
 * (https://learn.microsoft.com/graph/api/fido2authenticationmethodconfiguration-get). Tenants
 * migrated to passkey profiles also carry `defaultPasskeyProfile` and `passkeyProfiles`.
 */
export const fido2PolicySchema = z.object({
  id: text.exactOptional(),
  state: nullable(text),
  isSelfServiceRegistrationAllowed: nullable(z.boolean()),
  isAttestationEnforced: nullable(z.boolean()),
  keyRestrictions: nullable(keyRestrictionsSchema),
  defaultPasskeyProfile: nullable(text),
  passkeyProfiles: nullable(z.array(passkeyProfileSchema).max(1000)),
  includeTargets: nullable(z.array(targetSchema).max(10_000)),
});
/** The parsed Passkey (FIDO2) policy. */
export type Fido2PolicyJson = z.infer<typeof fido2PolicySchema>;

/**
 * temporaryAccessPassAuthenticationMethodConfiguration
 * (https://learn.microsoft.com/graph/api/resources/temporaryaccesspassauthenticationmethodconfiguration),
 * read from `.../authenticationMethodConfigurations/temporaryAccessPass`.
 */
export const tapPolicySchema = z.object({
  id: text.exactOptional(),
  state: nullable(text),
  isUsableOnce: nullable(z.boolean()),
  defaultLifetimeInMinutes: nullable(z.number().int()),
  minimumLifetimeInMinutes: nullable(z.number().int()),
  maximumLifetimeInMinutes: nullable(z.number().int()),
  defaultLength: nullable(z.number().int()),
  includeTargets: nullable(z.array(targetSchema).max(10_000)),
});
/** The parsed Temporary Access Pass policy. */
export type TapPolicyJson =
  & AssertAssignable<
    Omit<z.infer<typeof tapPolicySchema>, "includeTargets" | "state">,
    Omit<Graph.TemporaryAccessPassAuthenticationMethodConfiguration, "includeTargets" | "state">
  >
  & Pick<z.infer<typeof tapPolicySchema>, "includeTargets" | "state">;
