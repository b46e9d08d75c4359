/**
 * The JSON forms of WebAuthn L3 (https://www.w3.org/TR/webauthn-3/#dictdef-publickeycredentialcreationoptionsjson
 * and the dictionaries after it): what a server sends us (creation and request options) and what
 * we send back (registration and authentication responses), as zod schemas with their types.
 *
 * Servers are outside input: every options object is parsed here, never cast. The parse follows
 * what browsers do with `PublicKeyCredential.parseCreationOptionsFromJSON()`:
 *
 * - a field of the wrong type, a missing required field or a binary field that is not base64
 *   refuses the whole options object, with an error that names the field;
 * - an enum-like string the client does not know (`userVerification: "sometimes"`) is ignored and
 *   the field reads as absent, so the default applies, as WebAuthn §5.4 asks of clients;
 * - unknown extensions are kept (as `unknown`), unknown top-level members are dropped.
 *
 * Binary fields are strings on the wire. Servers disagree on the encoding: options accept
 * base64url and padded standard base64 everywhere, and credential ids also in Graph's
 * "padding number suffix" form (see credential_id_text.ts, which reads all three and says how
 * the one ambiguous case is handled); responses are always written, and read, as unpadded
 * base64url.
 *
 * A `timeout` of 0 (Graph beta's documented example sends one) reads as absent: the client's own
 * default applies, as WebAuthn L3 §5.1.3 lets a client choose the timeout.
 *
 * @module
 */
import { z } from "zod";
import { fromBase64Any } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import { readCredentialIdText } from "./credential_id_text.ts";

// ---------------------------------------------------------------------------------------------
// Limits: generous for any real server, small enough that hostile options cannot make the
// client loop over the authenticator for minutes or send it megabytes.
// ---------------------------------------------------------------------------------------------

/** Most credentials accepted in `excludeCredentials` or `allowCredentials`. */
export const maxCredentialDescriptors = 1000;
/** Most entries accepted in `pubKeyCredParams`. */
export const maxCredentialParameters = 64;
/** Longest credential id, in bytes (WebAuthn L3 §4 "Credential ID": at most 1023 bytes). */
export const maxCredentialIdBytes = 1023;
/**
 * Longest challenge accepted, in bytes. WebAuthn sets no upper bound (only 16 bytes at least, as
 * advice to servers, §13.4.3). Entra's challenge is the base64url of a compact JWE whose header
 * carries a certificate chain: the response recorded from a real tenant (webauthn-interop,
 * MicrosoftGraphWebauthnCredentialCreationOptionsTester.cs) has a 6,931-character challenge,
 * about 5 KB decoded. 64 KiB leaves room for a chain ten times as long and still refuses the absurd.
 */
export const maxChallengeBytes = 64 * 1024;
/** Longest text accepted in a name, id or enum-like string, in UTF-16 code units. */
export const maxTextLength = 1024;
/** Longest binary field accepted in a response (an attestation with its certificate chain fits). */
const maxResponseFieldBytes = 1 << 20;
/** Most entries accepted in `hints`, `transports` and `attestationFormats`. */
const maxShortList = 32;

// ---------------------------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------------------------

/** The values WebAuthn L3 defines for its enum-like strings (§5.4.4 – §5.8.7). */
export const enumValues = {
  userVerification: ["required", "preferred", "discouraged"],
  residentKey: ["discouraged", "preferred", "required"],
  authenticatorAttachment: ["platform", "cross-platform"],
  attestation: ["none", "indirect", "direct", "enterprise"],
  hints: ["security-key", "client-device", "hybrid"],
  transports: ["usb", "nfc", "ble", "smart-card", "hybrid", "internal"],
  credentialProtectionPolicy: [
    "userVerificationOptional",
    "userVerificationOptionalWithCredentialIDList",
    "userVerificationRequired",
  ],
} as const;

type EnumValues = readonly [string, ...string[]];

const text = z.string().max(maxTextLength);

/** An enum-like string: any string is accepted, unknown values read as `undefined` (ignored). */
function lenientEnum<const T extends EnumValues>(values: T) {
  return text.transform((value): T[number] | undefined => values.find((known) => known === value));
}

/** A list of enum-like strings: unknown values are dropped, as clients must (WebAuthn §5.8.3). */
function lenientEnumList<const T extends EnumValues>(values: T) {
  return z.array(text).max(maxShortList).transform((list): T[number][] =>
    list.flatMap((value) => values.filter((known) => known === value))
  );
}

interface ByteLimits {
  min?: number;
  max: number;
  /** What the bytes are, for the error message. */
  what?: string;
}

/** Why `value` is not acceptable binary text, or `undefined` when it is. */
function base64Problem(value: string, limits: ByteLimits, urlOnly: boolean): string | undefined {
  const what = limits.what ?? "it";
  // Absurdly long text is refused before it is scanned.
  if (value.length > Math.ceil(limits.max / 3) * 4 + 2) {
    return `is ${value.length} characters long; ${what} must be at most ${limits.max} bytes`;
  }
  if (urlOnly ? !/^[A-Za-z0-9_-]*$/.test(value) || value.length % 4 === 1 : !isBase64Any(value)) {
    return `is not base64url: ${preview(value)}`;
  }
  const length = Math.floor(value.replace(/=+$/, "").length * 3 / 4);
  const min = limits.min ?? 0;
  if (length < min || length > limits.max) {
    const range = min === 0 ? `at most ${limits.max}` : `${min} to ${limits.max}`;
    return `is ${length} bytes long; ${what} must be ${range} bytes`;
  }
  return undefined;
}

function isBase64Any(value: string): boolean {
  try {
    fromBase64Any(value);
    return true;
  } catch {
    return false;
  }
}

/** Binary data in options: base64url or (padded) standard base64, kept as the server sent it. */
function base64Any(limits: ByteLimits) {
  return z.string().superRefine((value, ctx) => {
    const problem = base64Problem(value, limits, false);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  });
}

/**
 * A credential id in options: any of the three encodings credential_id_text.ts reads, each
 * reading 1 to {@link maxCredentialIdBytes} bytes long.
 */
const credentialIdText = z.string().superRefine((value, ctx) => {
  if (value.length > Math.ceil(maxCredentialIdBytes / 3) * 4 + 2) {
    ctx.addIssue({
      code: "custom",
      message:
        `is ${value.length} characters long; a credential id must be at most ${maxCredentialIdBytes} bytes`,
    });
    return;
  }
  const readings = readCredentialIdText(value);
  if (readings.length === 0) {
    ctx.addIssue({
      code: "custom",
      message: `is neither base64url, padded base64 nor base64url with a padding digit: ${preview(value)}`,
    });
    return;
  }
  if (!readings.some((r) => r.bytes.length >= 1 && r.bytes.length <= maxCredentialIdBytes)) {
    ctx.addIssue({
      code: "custom",
      message: `is ${
        readings[0]!.bytes.length
      } bytes long; a credential id must be 1 to ${maxCredentialIdBytes} bytes`,
    });
  }
});

/** Binary data in responses: unpadded base64url only. */
const base64Url = z.string().superRefine((value, ctx) => {
  const problem = base64Problem(value, { max: maxResponseFieldBytes, what: "a response field" }, true);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

// ---------------------------------------------------------------------------------------------
// Options (server -> client)
// ---------------------------------------------------------------------------------------------

/**
 * `timeout` in ms; 0 reads as absent ("no timeout given": Graph beta's creationOptions example
 * sends `"timeout": 0`, https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions?view=graph-rest-beta),
 * so the client's default applies instead of an immediate time-out.
 */
const timeoutSchema = z.number().nonnegative().optional().transform((value) =>
  value === 0 ? undefined : value
);

/** PublicKeyCredentialDescriptorJSON (WebAuthn L3 §5.10.3), for excludeCredentials and allowCredentials. */
export const credentialDescriptorJSONSchema = z.object({
  /** Clients skip descriptors of a type they do not know; the caller filters on `"public-key"`. */
  type: text,
  id: credentialIdText,
  transports: lenientEnumList(enumValues.transports).optional(),
});
/** A credential descriptor as the server sent it (id still base64). */
export type PublicKeyCredentialDescriptorJSON = z.infer<typeof credentialDescriptorJSONSchema>;

/** PublicKeyCredentialParameters (WebAuthn L3 §5.3): a credential type and a COSE algorithm. */
export const credentialParametersSchema = z.object({
  type: text,
  alg: z.number().int(),
});
/** One entry of `pubKeyCredParams`. */
export type PublicKeyCredentialParameters = z.infer<typeof credentialParametersSchema>;

/**
 * AuthenticationExtensionsClientInputsJSON for a registration: the extensions Entra asks for are
 * typed, any other is kept as `unknown` (a `__proto__` key is dropped, never assigned).
 */
export const registrationExtensionsSchema = z.object({
  /** CTAP 2.1 credProtect, as WebAuthn's credProtect extension names it. */
  credentialProtectionPolicy: lenientEnum(enumValues.credentialProtectionPolicy).optional(),
  enforceCredentialProtectionPolicy: z.boolean().optional(),
  hmacCreateSecret: z.boolean().optional(),
  credProps: z.boolean().optional(),
}).catchall(z.unknown());
/** The client extension inputs of a registration. */
export type RegistrationExtensionsJSON = z.infer<typeof registrationExtensionsSchema>;

/** AuthenticatorSelectionCriteria (WebAuthn L3 §5.4.4). Unknown enum values read as absent. */
export const authenticatorSelectionSchema = z.object({
  authenticatorAttachment: lenientEnum(enumValues.authenticatorAttachment).optional(),
  residentKey: lenientEnum(enumValues.residentKey).optional(),
  requireResidentKey: z.boolean().optional(),
  userVerification: lenientEnum(enumValues.userVerification).optional(),
});
/** The authenticator selection criteria of a registration. */
export type AuthenticatorSelectionCriteria = z.infer<typeof authenticatorSelectionSchema>;

/**
 * PublicKeyCredentialCreationOptionsJSON (WebAuthn L3 §5.4,
 * https://www.w3.org/TR/webauthn-3/#dictdef-publickeycredentialcreationoptionsjson), the body of
 * Graph's `publicKey` in `GET /users/{id}/authentication/fido2Methods/creationOptions`.
 */
export const creationOptionsJSONSchema = z.object({
  rp: z.object({ id: text.optional(), name: text }),
  user: z.object({
    /** The user handle: 1 to 64 bytes (WebAuthn L3 §5.4.3). */
    id: base64Any({ min: 1, max: 64, what: "a user handle" }),
    name: text,
    displayName: text,
  }),
  challenge: base64Any({ max: maxChallengeBytes, what: "a challenge" }),
  pubKeyCredParams: z.array(credentialParametersSchema).max(maxCredentialParameters),
  timeout: timeoutSchema,
  excludeCredentials: z.array(credentialDescriptorJSONSchema).max(maxCredentialDescriptors).optional(),
  authenticatorSelection: authenticatorSelectionSchema.optional(),
  hints: lenientEnumList(enumValues.hints).optional(),
  attestation: lenientEnum(enumValues.attestation).optional(),
  attestationFormats: z.array(text).max(maxShortList).optional(),
  extensions: registrationExtensionsSchema.optional(),
});
/** Creation options as the server sent them: binary fields still base64 text. */
export type PublicKeyCredentialCreationOptionsJSON = z.infer<typeof creationOptionsJSONSchema>;

/**
 * PublicKeyCredentialRequestOptionsJSON (WebAuthn L3 §5.5,
 * https://www.w3.org/TR/webauthn-3/#dictdef-publickeycredentialrequestoptionsjson).
 */
export const requestOptionsJSONSchema = z.object({
  challenge: base64Any({ max: maxChallengeBytes, what: "a challenge" }),
  timeout: timeoutSchema,
  rpId: text.optional(),
  allowCredentials: z.array(credentialDescriptorJSONSchema).max(maxCredentialDescriptors).optional(),
  userVerification: lenientEnum(enumValues.userVerification).optional(),
  hints: lenientEnumList(enumValues.hints).optional(),
  attestation: lenientEnum(enumValues.attestation).optional(),
  attestationFormats: z.array(text).max(maxShortList).optional(),
  /** Client extension inputs (appid, largeBlob, prf …), kept as sent. */
  extensions: z.object({}).catchall(z.unknown()).optional(),
});
/** Request options as the server sent them: binary fields still base64 text. */
export type PublicKeyCredentialRequestOptionsJSON = z.infer<typeof requestOptionsJSONSchema>;

/** A credential descriptor with its id decoded: what goes into a CTAP2 excludeList/allowList. */
export interface CredentialDescriptor {
  /** `"public-key"` for every credential WebAuthn defines; others are skipped by the caller. */
  type: string;
  id: Uint8Array<ArrayBuffer>;
  transports?: PublicKeyCredentialDescriptorJSON["transports"];
}

/**
 * Creation options ready for a CTAP2 makeCredential: {@link PublicKeyCredentialCreationOptionsJSON}
 * with `challenge`, `user.id` and `excludeCredentials[].id` decoded, and `pubKeyCredParams`
 * defaulted to ES256 and RS256 when the server sent none (WebAuthn L3 §5.1.3 step 10).
 */
export type CreationOptions =
  & Omit<PublicKeyCredentialCreationOptionsJSON, "challenge" | "user" | "excludeCredentials">
  & {
    challenge: Uint8Array<ArrayBuffer>;
    user: { id: Uint8Array<ArrayBuffer>; name: string; displayName: string };
    excludeCredentials?: CredentialDescriptor[];
  };

/**
 * Request options ready for a CTAP2 getAssertion: {@link PublicKeyCredentialRequestOptionsJSON}
 * with `challenge` and `allowCredentials[].id` decoded.
 */
export type RequestOptions =
  & Omit<PublicKeyCredentialRequestOptionsJSON, "challenge" | "allowCredentials">
  & { challenge: Uint8Array<ArrayBuffer>; allowCredentials?: CredentialDescriptor[] };

/** ES256 then RS256: what clients use when `pubKeyCredParams` is empty (WebAuthn L3 §5.1.3). */
const defaultCredentialParameters: readonly PublicKeyCredentialParameters[] = [
  { type: "public-key", alg: -7 },
  { type: "public-key", alg: -257 },
];

/**
 * Validates creation options from a server and decodes their binary fields.
 *
 * Accepts the bare PublicKeyCredentialCreationOptionsJSON, or any object that carries it as
 * `publicKey` — `{ publicKey }` as `navigator.credentials.create()` takes it, and Graph's whole
 * webauthnCredentialCreationOptions response (`{ challengeTimeoutDateTime, publicKey }`).
 *
 * @throws {ProvisioningError} code `invalid-options`, naming the field that is wrong.
 * @example
 * ```ts
 * import { parseCreationOptions } from "./json.ts";
 * const options = parseCreationOptions({
 *   publicKey: {
 *     rp: { id: "login.microsoft.com", name: "Microsoft" },
 *     user: { id: "ZGF2aWQ", name: "david@contoso.com", displayName: "David" },
 *     challenge: "AAECAwQFBgcICQoLDA0ODw",
 *     pubKeyCredParams: [{ type: "public-key", alg: -7 }],
 *     authenticatorSelection: { userVerification: "sometimes" },
 *   },
 * });
 * console.assert(options.challenge.length === 16 && options.user.id.length === 5);
 * console.assert(options.authenticatorSelection?.userVerification === undefined); // unknown: ignored
 * ```
 */
export function parseCreationOptions(input: unknown): CreationOptions {
  const json = parseOptions(creationOptionsJSONSchema, input, "creation options");
  const { challenge, user, excludeCredentials, pubKeyCredParams, ...rest } = json;
  return {
    ...rest,
    challenge: decode(challenge),
    user: { id: decode(user.id), name: user.name, displayName: user.displayName },
    pubKeyCredParams: pubKeyCredParams.length > 0
      ? pubKeyCredParams
      : defaultCredentialParameters.map((p) => ({ ...p })),
    ...(excludeCredentials ? { excludeCredentials: excludeCredentials.flatMap(decodeDescriptor) } : {}),
  };
}

/**
 * Validates request options from a server and decodes their binary fields. Accepts the bare
 * PublicKeyCredentialRequestOptionsJSON or an object carrying it as `publicKey`.
 *
 * @throws {ProvisioningError} code `invalid-options`, naming the field that is wrong.
 * @example
 * ```ts
 * import { parseRequestOptions } from "./json.ts";
 * const options = parseRequestOptions({
 *   challenge: "AAECAwQFBgcICQoLDA0ODw",
 *   rpId: "login.microsoft.com",
 *   allowCredentials: [{ type: "public-key", id: "+/8=" }], // padded standard base64 is read too
 * });
 * console.assert(options.allowCredentials?.[0]?.id.length === 2);
 * ```
 */
export function parseRequestOptions(input: unknown): RequestOptions {
  const json = parseOptions(requestOptionsJSONSchema, input, "request options");
  const { challenge, allowCredentials, ...rest } = json;
  return {
    ...rest,
    challenge: decode(challenge),
    ...(allowCredentials ? { allowCredentials: allowCredentials.flatMap(decodeDescriptor) } : {}),
  };
}

/** Decodes text the schema has already checked; a fresh ArrayBuffer-backed copy, as CTAP wants. */
function decode(value: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(fromBase64Any(value));
}

/**
 * One descriptor per reading of its id: one, or two for the one text two encodings share (see
 * credential_id_text.ts). A second candidate id costs the key one lookup; a missing one would
 * let it create a second passkey.
 */
function decodeDescriptor(descriptor: PublicKeyCredentialDescriptorJSON): CredentialDescriptor[] {
  return readCredentialIdText(descriptor.id)
    .filter((reading) => reading.bytes.length >= 1 && reading.bytes.length <= maxCredentialIdBytes)
    .map((reading) => ({
      type: descriptor.type,
      id: reading.bytes,
      ...(descriptor.transports ? { transports: descriptor.transports } : {}),
    }));
}

/** Unwraps `{ publicKey: {...} }` (when the object is not itself the options), then parses. */
function parseOptions<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  let options = input;
  let prefix: (string | number)[] = [];
  if (isRecord(input) && !Object.hasOwn(input, "challenge") && Object.hasOwn(input, "publicKey")) {
    options = input["publicKey"];
    prefix = ["publicKey"];
  }
  const result = schema.safeParse(options);
  if (result.success) return result.data;
  throw new ProvisioningError(
    "invalid-options",
    `Cannot read ${what}: ${describeIssues(result.error, options, prefix)}`,
    {
      cause: result.error,
      hint:
        "The server sent WebAuthn options a browser would also refuse; nothing was sent to the authenticator. " +
        "Check the provider's response, or report it to the provider",
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Responses (client -> server)
// ---------------------------------------------------------------------------------------------

/** Client extension outputs of a registration (WebAuthn L3 §5.8.6 credProps, CTAP hmac-secret …). */
export const registrationExtensionResultsSchema = z.object({
  credProps: z.object({ rk: z.boolean().optional() }).optional(),
  hmacCreateSecret: z.boolean().optional(),
}).catchall(z.unknown());

/**
 * RegistrationResponseJSON (WebAuthn L3 §5.1, https://www.w3.org/TR/webauthn-3/#dictdef-registrationresponsejson):
 * what `create()` returns and a provider posts to its server.
 */
export const registrationResponseJSONSchema = z.object({
  id: base64Url,
  rawId: base64Url,
  type: z.literal("public-key"),
  response: z.object({
    clientDataJSON: base64Url,
    attestationObject: base64Url,
    authenticatorData: base64Url.optional(),
    /** Kept as strings: the authenticator reports them and the server decides what they mean. */
    transports: z.array(text).max(maxShortList).optional(),
    publicKeyAlgorithm: z.number().int().optional(),
    /** SubjectPublicKeyInfo (DER), when the client could express the key that way. */
    publicKey: base64Url.optional(),
  }),
  authenticatorAttachment: lenientEnum(enumValues.authenticatorAttachment).optional(),
  clientExtensionResults: registrationExtensionResultsSchema,
}).refine((value) => value.id === value.rawId, { message: 'must equal "id"', path: ["rawId"] });
/** A registration response, binary fields as unpadded base64url. */
export type RegistrationResponseJSON = z.infer<typeof registrationResponseJSONSchema>;

/**
 * AuthenticationResponseJSON (WebAuthn L3 §5.1, https://www.w3.org/TR/webauthn-3/#dictdef-authenticationresponsejson):
 * what `get()` returns.
 */
export const authenticationResponseJSONSchema = z.object({
  id: base64Url,
  rawId: base64Url,
  type: z.literal("public-key"),
  response: z.object({
    clientDataJSON: base64Url,
    authenticatorData: base64Url,
    signature: base64Url,
    userHandle: base64Url.optional(),
  }),
  authenticatorAttachment: lenientEnum(enumValues.authenticatorAttachment).optional(),
  clientExtensionResults: z.object({}).catchall(z.unknown()),
}).refine((value) => value.id === value.rawId, { message: 'must equal "id"', path: ["rawId"] });
/** An authentication response, binary fields as unpadded base64url. */
export type AuthenticationResponseJSON = z.infer<typeof authenticationResponseJSONSchema>;

/**
 * Validates a registration response, e.g. one a browser page produced (browser path) or one the
 * sandbox receives.
 *
 * @throws {ProvisioningError} code `invalid-response`, naming the field that is wrong.
 */
export function parseRegistrationResponse(input: unknown): RegistrationResponseJSON {
  return parseResponse(registrationResponseJSONSchema, input, "registration response");
}

/**
 * Validates an authentication response.
 *
 * @throws {ProvisioningError} code `invalid-response`, naming the field that is wrong.
 */
export function parseAuthenticationResponse(input: unknown): AuthenticationResponseJSON {
  return parseResponse(authenticationResponseJSONSchema, input, "authentication response");
}

function parseResponse<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  throw new ProvisioningError(
    "invalid-response",
    `Cannot read ${what}: ${describeIssues(result.error, input, [])}`,
    {
      cause: result.error,
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Error messages: `"user.id" is not base64url: "###"`
// ---------------------------------------------------------------------------------------------

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `["excludeCredentials", 2, "id"]` → `excludeCredentials[2].id`. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

/** The value at `path` inside `root`, own properties only. */
function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const key of path) {
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, key)) return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

/** A short, quoted rendering of a value for an error message. */
function preview(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "string") {
    return JSON.stringify(value.length > 32 ? `${value.slice(0, 32)}…` : value);
  }
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object") return "an object";
  return `${typeof value} ${String(value)}`;
}

function describeIssues(error: z.ZodError, root: unknown, prefix: readonly (string | number)[]): string {
  const [first, ...others] = error.issues;
  if (!first) return "it is not valid";
  const more = others.length === 0
    ? ""
    : ` (and ${others.length} more ${others.length === 1 ? "problem" : "problems"})`;
  return describeIssue(first, root, prefix) + more;
}

function describeIssue(issue: z.core.$ZodIssue, root: unknown, prefix: readonly (string | number)[]): string {
  const value = valueAt(root, issue.path);
  const path = formatPath([...prefix, ...issue.path]);
  const subject = path === "" ? "the options" : `"${path}"`;
  switch (issue.code) {
    case "invalid_type": {
      if (path === "" && issue.expected === "object") {
        return `expected a JSON object, got ${preview(value)}`;
      }
      if (value === undefined) return `${subject} is missing`;
      const expected = issue.expected === "int" ? "an integer" : article(issue.expected);
      return `${subject} must be ${expected}, got ${preview(value)}`;
    }
    case "too_big": {
      const size = Array.isArray(value)
        ? `has ${value.length} entries`
        : typeof value === "string"
        ? `is ${value.length} characters long`
        : `is ${preview(value)}`;
      return `${subject} ${size}, more than the ${String(issue.maximum)} accepted`;
    }
    case "too_small":
      return `${subject} must be at least ${String(issue.minimum)}, got ${preview(value)}`;
    case "invalid_value":
      return `${subject} must be ${
        issue.values.map((v) => typeof v === "string" ? JSON.stringify(v) : String(v)).join(" or ")
      }, got ${preview(value)}`;
    case "custom":
      return `${subject} ${issue.message}`;
    default:
      return `${subject} is not valid (${issue.message})`;
  }
}

function article(noun: string): string {
  return /^[aeiou]/.test(noun) ? `an ${noun}` : `a ${noun}`;
}
