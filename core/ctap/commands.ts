/**
 * CTAP 2.1 authenticator API messages (CTAP 2.1 §6 "Authenticator API"), written once for both
 * directions: a client encodes requests and decodes responses, an authenticator decodes
 * requests and encodes responses. Each message is a key table (field name → CBOR integer key)
 * plus a zod schema of the named fields.
 *
 * Decoding maps schema failures onto the statuses the spec asks for: a missing required field is
 * CTAP2_ERR_MISSING_PARAMETER, a field of the wrong type CTAP2_ERR_CBOR_UNEXPECTED_TYPE, bytes
 * that are not CBOR CTAP2_ERR_INVALID_CBOR.
 *
 * @module
 */
import { z } from "zod";
import { CborDecodeError, decodeCbor, encodeCbor, fromIntMap, type KeyTable, toIntMap } from "./cbor.ts";
import { CtapError, CtapStatus } from "./status.ts";

/** CTAP2 command bytes (CTAP 2.1 §6 and §11.2.9.1.5 for the CTAPHID_CBOR payload). */
export const CtapCommand = {
  makeCredential: 0x01,
  getAssertion: 0x02,
  getInfo: 0x04,
  clientPin: 0x06,
  reset: 0x07,
  getNextAssertion: 0x08,
  credentialManagement: 0x0a,
  selection: 0x0b,
  config: 0x0d,
} as const;

/** A CTAP2 command byte. */
export type CtapCommandCode = (typeof CtapCommand)[keyof typeof CtapCommand];

/** authenticatorClientPIN subcommands (CTAP 2.1 §6.5.5). */
export const ClientPinSubcommand = {
  getPinRetries: 0x01,
  getKeyAgreement: 0x02,
  setPin: 0x03,
  changePin: 0x04,
  getPinToken: 0x05,
  getPinUvAuthTokenUsingUvWithPermissions: 0x06,
  getUvRetries: 0x07,
  getPinUvAuthTokenUsingPinWithPermissions: 0x09,
} as const;

/** authenticatorCredentialManagement subcommands (CTAP 2.1 §6.8). */
export const CredentialManagementSubcommand = {
  getCredsMetadata: 0x01,
  enumerateRPsBegin: 0x02,
  enumerateRPsGetNextRP: 0x03,
  enumerateCredentialsBegin: 0x04,
  enumerateCredentialsGetNextCredential: 0x05,
  deleteCredential: 0x06,
  updateUserInformation: 0x07,
} as const;

/** authenticatorConfig subcommands (CTAP 2.1 §6.11). */
export const ConfigSubcommand = {
  enableEnterpriseAttestation: 0x01,
  toggleAlwaysUv: 0x02,
  setMinPINLength: 0x03,
  vendorPrototype: 0xff,
} as const;

// ---------------------------------------------------------------------------------------------
// Shared shapes

const bytes = z.custom<Uint8Array>((value) => value instanceof Uint8Array, "expected a byte string");
const int = z.number().int();
/** A text-keyed CBOR map. An empty map decodes as an empty `Map`; accept it as `{}`. */
const textMap = <T extends z.ZodType>(schema: T) =>
  z.preprocess((value) => {
    if (value instanceof Map && value.size === 0) return {};
    // zod's objects and records accept any object (a byte string too): only a decoded map may pass.
    return isPlainObject(value) ? value : notAMap;
  }, schema);
/** An integer-keyed CBOR map read into named fields. */
const intMap = <T extends z.ZodRawShape>(keys: KeyTable, shape: T) =>
  z.preprocess((value) => fromIntMap(value, keys) ?? notAMap, z.object(shape));
/** Stands for "not a CBOR map" so that the schema reports a type error. */
const notAMap = Symbol("not a CBOR map");
function isPlainObject(value: unknown): boolean {
  return value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype;
}

/** PublicKeyCredentialRpEntity as CTAP carries it. */
export const rpEntitySchema = textMap(z.object({ id: z.string(), name: z.string().optional() }));
/** PublicKeyCredentialUserEntity as CTAP carries it. */
export const userEntitySchema = textMap(z.object({
  id: bytes,
  name: z.string().optional(),
  displayName: z.string().optional(),
}));
/** PublicKeyCredentialDescriptor (excludeList, allowList, credential). */
export const credentialDescriptorSchema = textMap(z.object({
  type: z.string(),
  id: bytes,
  transports: z.array(z.string()).optional(),
}));
/** PublicKeyCredentialParameters. */
export const credentialParametersSchema = textMap(z.object({ type: z.string(), alg: int }));
/** A COSE_Key: an integer-keyed map, validated where it is used (see cose.ts). */
export const coseKeySchema = z.instanceof(Map);
const extensionsSchema = textMap(z.record(z.string(), z.unknown()));
const optionsSchema = textMap(z.record(z.string(), z.boolean()));

export type RpEntity = z.infer<typeof rpEntitySchema>;
export type UserEntity = z.infer<typeof userEntitySchema>;
export type CredentialDescriptor = z.infer<typeof credentialDescriptorSchema>;
export type CredentialParameters = z.infer<typeof credentialParametersSchema>;

// ---------------------------------------------------------------------------------------------
// Message definitions

/** A CTAP message: its key table and the schema of its named fields. */
export interface MessageCodec<T> {
  readonly name: string;
  readonly keys: KeyTable;
  readonly schema: z.ZodType<T>;
}

function message<const K extends KeyTable, S extends z.ZodRawShape>(
  name: string,
  keys: K,
  shape: S,
): MessageCodec<z.infer<z.ZodObject<S>>> {
  return { name, keys, schema: z.object(shape) as unknown as z.ZodType<z.infer<z.ZodObject<S>>> };
}

/** authenticatorMakeCredential request (CTAP 2.1 §6.1). */
export const MakeCredentialRequest = message("authenticatorMakeCredential", {
  clientDataHash: 0x01,
  rp: 0x02,
  user: 0x03,
  pubKeyCredParams: 0x04,
  excludeList: 0x05,
  extensions: 0x06,
  options: 0x07,
  pinUvAuthParam: 0x08,
  pinUvAuthProtocol: 0x09,
  enterpriseAttestation: 0x0a,
}, {
  clientDataHash: bytes,
  rp: rpEntitySchema,
  user: userEntitySchema,
  pubKeyCredParams: z.array(credentialParametersSchema),
  excludeList: z.array(credentialDescriptorSchema).optional(),
  extensions: extensionsSchema.optional(),
  options: optionsSchema.optional(),
  pinUvAuthParam: bytes.optional(),
  pinUvAuthProtocol: int.optional(),
  enterpriseAttestation: int.optional(),
});
export type MakeCredentialRequest = z.infer<typeof MakeCredentialRequest.schema>;

/** authenticatorMakeCredential response (CTAP 2.1 §6.1.2). */
export const MakeCredentialResponse = message("authenticatorMakeCredential response", {
  fmt: 0x01,
  authData: 0x02,
  attStmt: 0x03,
  epAtt: 0x04,
  largeBlobKey: 0x05,
}, {
  fmt: z.string(),
  authData: bytes,
  attStmt: textMap(z.record(z.string(), z.unknown())),
  epAtt: z.boolean().optional(),
  largeBlobKey: bytes.optional(),
});
export type MakeCredentialResponse = z.infer<typeof MakeCredentialResponse.schema>;

/** authenticatorGetAssertion request (CTAP 2.1 §6.2). */
export const GetAssertionRequest = message("authenticatorGetAssertion", {
  rpId: 0x01,
  clientDataHash: 0x02,
  allowList: 0x03,
  extensions: 0x04,
  options: 0x05,
  pinUvAuthParam: 0x06,
  pinUvAuthProtocol: 0x07,
}, {
  rpId: z.string(),
  clientDataHash: bytes,
  allowList: z.array(credentialDescriptorSchema).optional(),
  extensions: extensionsSchema.optional(),
  options: optionsSchema.optional(),
  pinUvAuthParam: bytes.optional(),
  pinUvAuthProtocol: int.optional(),
});
export type GetAssertionRequest = z.infer<typeof GetAssertionRequest.schema>;

/** authenticatorGetAssertion and authenticatorGetNextAssertion response (CTAP 2.1 §6.2.2). */
export const GetAssertionResponse = message("authenticatorGetAssertion response", {
  credential: 0x01,
  authData: 0x02,
  signature: 0x03,
  user: 0x04,
  numberOfCredentials: 0x05,
  userSelected: 0x06,
  largeBlobKey: 0x07,
}, {
  // May be left out when the allowList named exactly one credential (CTAP 2.1 §6.2.2).
  credential: credentialDescriptorSchema.optional(),
  authData: bytes,
  signature: bytes,
  user: userEntitySchema.optional(),
  numberOfCredentials: int.optional(),
  userSelected: z.boolean().optional(),
  largeBlobKey: bytes.optional(),
});
export type GetAssertionResponse = z.infer<typeof GetAssertionResponse.schema>;

/** authenticatorGetInfo response (CTAP 2.1 §6.4). */
export const GetInfoResponse = message("authenticatorGetInfo response", {
  versions: 0x01,
  extensions: 0x02,
  aaguid: 0x03,
  options: 0x04,
  maxMsgSize: 0x05,
  pinUvAuthProtocols: 0x06,
  maxCredentialCountInList: 0x07,
  maxCredentialIdLength: 0x08,
  transports: 0x09,
  algorithms: 0x0a,
  maxSerializedLargeBlobArray: 0x0b,
  forcePINChange: 0x0c,
  minPINLength: 0x0d,
  firmwareVersion: 0x0e,
  maxCredBlobLength: 0x0f,
  maxRPIDsForSetMinPINLength: 0x10,
  preferredPlatformUvAttempts: 0x11,
  uvModality: 0x12,
  certifications: 0x13,
  remainingDiscoverableCredentials: 0x14,
  vendorPrototypeConfigCommands: 0x15,
}, {
  versions: z.array(z.string()),
  extensions: z.array(z.string()).optional(),
  aaguid: bytes.refine((b) => b.length === 16, "AAGUID must be 16 bytes"),
  options: optionsSchema.optional(),
  maxMsgSize: int.optional(),
  pinUvAuthProtocols: z.array(int).optional(),
  maxCredentialCountInList: int.optional(),
  maxCredentialIdLength: int.optional(),
  transports: z.array(z.string()).optional(),
  algorithms: z.array(credentialParametersSchema).optional(),
  maxSerializedLargeBlobArray: int.optional(),
  forcePINChange: z.boolean().optional(),
  minPINLength: int.optional(),
  firmwareVersion: int.optional(),
  maxCredBlobLength: int.optional(),
  maxRPIDsForSetMinPINLength: int.optional(),
  preferredPlatformUvAttempts: int.optional(),
  uvModality: int.optional(),
  certifications: textMap(z.record(z.string(), int)).optional(),
  remainingDiscoverableCredentials: int.optional(),
  vendorPrototypeConfigCommands: z.array(int).optional(),
});
export type GetInfoResponse = z.infer<typeof GetInfoResponse.schema>;

/** authenticatorClientPIN request (CTAP 2.1 §6.5.5). */
export const ClientPinRequest = message("authenticatorClientPIN", {
  pinUvAuthProtocol: 0x01,
  subCommand: 0x02,
  keyAgreement: 0x03,
  pinUvAuthParam: 0x04,
  newPinEnc: 0x05,
  pinHashEnc: 0x06,
  permissions: 0x09,
  rpId: 0x0a,
}, {
  pinUvAuthProtocol: int.optional(),
  subCommand: int,
  keyAgreement: coseKeySchema.optional(),
  pinUvAuthParam: bytes.optional(),
  newPinEnc: bytes.optional(),
  pinHashEnc: bytes.optional(),
  permissions: int.optional(),
  rpId: z.string().optional(),
});
export type ClientPinRequest = z.infer<typeof ClientPinRequest.schema>;

/** authenticatorClientPIN response (CTAP 2.1 §6.5.5). */
export const ClientPinResponse = message("authenticatorClientPIN response", {
  keyAgreement: 0x01,
  pinUvAuthToken: 0x02,
  pinRetries: 0x03,
  powerCycleState: 0x04,
  uvRetries: 0x05,
}, {
  keyAgreement: coseKeySchema.optional(),
  pinUvAuthToken: bytes.optional(),
  pinRetries: int.optional(),
  powerCycleState: z.boolean().optional(),
  uvRetries: int.optional(),
});
export type ClientPinResponse = z.infer<typeof ClientPinResponse.schema>;

/** Keys of authenticatorCredentialManagement's subCommandParams (CTAP 2.1 §6.8). */
export const credentialManagementParamsKeys = { rpIdHash: 0x01, credentialId: 0x02, user: 0x03 } as const;

/** authenticatorCredentialManagement request (CTAP 2.1 §6.8). */
export const CredentialManagementRequest = message("authenticatorCredentialManagement", {
  subCommand: 0x01,
  subCommandParams: 0x02,
  pinUvAuthProtocol: 0x03,
  pinUvAuthParam: 0x04,
}, {
  subCommand: int,
  subCommandParams: intMap(credentialManagementParamsKeys, {
    rpIdHash: bytes.optional(),
    credentialId: credentialDescriptorSchema.optional(),
    user: userEntitySchema.optional(),
  }).optional(),
  pinUvAuthProtocol: int.optional(),
  pinUvAuthParam: bytes.optional(),
});
export type CredentialManagementRequest = z.infer<typeof CredentialManagementRequest.schema>;

/** authenticatorCredentialManagement response (CTAP 2.1 §6.8). */
export const CredentialManagementResponse = message("authenticatorCredentialManagement response", {
  existingResidentCredentialsCount: 0x01,
  maxPossibleRemainingResidentCredentialsCount: 0x02,
  rp: 0x03,
  rpIdHash: 0x04,
  totalRPs: 0x05,
  user: 0x06,
  credentialId: 0x07,
  publicKey: 0x08,
  totalCredentials: 0x09,
  credProtect: 0x0a,
  largeBlobKey: 0x0b,
}, {
  existingResidentCredentialsCount: int.optional(),
  maxPossibleRemainingResidentCredentialsCount: int.optional(),
  rp: rpEntitySchema.optional(),
  rpIdHash: bytes.optional(),
  totalRPs: int.optional(),
  user: userEntitySchema.optional(),
  credentialId: credentialDescriptorSchema.optional(),
  publicKey: coseKeySchema.optional(),
  totalCredentials: int.optional(),
  credProtect: int.optional(),
  largeBlobKey: bytes.optional(),
});
export type CredentialManagementResponse = z.infer<typeof CredentialManagementResponse.schema>;

/** Keys of authenticatorConfig's setMinPINLength subCommandParams (CTAP 2.1 §6.11.4). */
export const setMinPinLengthParamsKeys = {
  newMinPINLength: 0x01,
  minPinLengthRPIDs: 0x02,
  forceChangePin: 0x03,
} as const;

/** authenticatorConfig request (CTAP 2.1 §6.11). */
export const ConfigRequest = message("authenticatorConfig", {
  subCommand: 0x01,
  subCommandParams: 0x02,
  pinUvAuthProtocol: 0x03,
  pinUvAuthParam: 0x04,
}, {
  subCommand: int,
  subCommandParams: intMap(setMinPinLengthParamsKeys, {
    newMinPINLength: int.optional(),
    minPinLengthRPIDs: z.array(z.string()).optional(),
    forceChangePin: z.boolean().optional(),
  }).optional(),
  pinUvAuthProtocol: int.optional(),
  pinUvAuthParam: bytes.optional(),
});
export type ConfigRequest = z.infer<typeof ConfigRequest.schema>;

// ---------------------------------------------------------------------------------------------
// Encoding and decoding

/** Nested integer-keyed maps that must be encoded with their own key tables. */
const nestedKeys: Readonly<Record<string, KeyTable>> = {
  "authenticatorCredentialManagement.subCommandParams": credentialManagementParamsKeys,
  "authenticatorConfig.subCommandParams": setMinPinLengthParamsKeys,
};

/** The CBOR map of a message, with nested integer-keyed maps expanded. */
export function messageToMap<T extends object>(codec: MessageCodec<T>, fields: T): Map<number, unknown> {
  const record = { ...fields } as Record<string, unknown>;
  for (const [name, value] of Object.entries(record)) {
    const keys = nestedKeys[`${codec.name}.${name}`];
    if (keys && value !== undefined) record[name] = toIntMap(value as Record<string, unknown>, keys);
  }
  return toIntMap(record, codec.keys);
}

/**
 * Reads a decoded CBOR value as a message; throws the CTAP status the spec prescribes.
 * The authenticator uses it on requests; the client on responses (see {@link decodeResponse}).
 */
export function mapToMessage<T>(codec: MessageCodec<T>, value: unknown): T {
  const fields = fromIntMap(value, codec.keys);
  if (!fields) {
    throw new CtapError(CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE, `${codec.name} is not a map`);
  }
  const parsed = codec.schema.safeParse(fields);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.join(".");
  const missing = issue.path.length === 1 && fields[String(issue.path[0])] === undefined;
  throw new CtapError(
    missing ? CtapStatus.CTAP2_ERR_MISSING_PARAMETER : CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE,
    `${codec.name}: "${field}" ${missing ? "is missing" : issue.message}`,
  );
}

/** Encodes a request: the command byte followed by the canonical CBOR map (if any). */
export function encodeRequest<T extends object>(
  command: CtapCommandCode,
  codec?: MessageCodec<T>,
  fields?: T,
): Uint8Array<ArrayBuffer> {
  if (!codec || !fields) return Uint8Array.of(command);
  const body = encodeCbor(messageToMap(codec, fields));
  const out = new Uint8Array(1 + body.length);
  out[0] = command;
  out.set(body, 1);
  return out;
}

/** Decodes a CBOR parameter block (request or response body); bad CBOR is CTAP2_ERR_INVALID_CBOR. */
export function decodeBody<T>(codec: MessageCodec<T>, body: Uint8Array): T {
  let value: unknown;
  try {
    value = decodeCbor(body);
  } catch (cause) {
    if (cause instanceof CborDecodeError) {
      throw new CtapError(CtapStatus.CTAP2_ERR_INVALID_CBOR, `${codec.name}: ${cause.message}`, { cause });
    }
    throw cause;
  }
  return mapToMessage(codec, value);
}

/** Encodes a successful response: status 0x00 followed by the CBOR map (if any). */
export function encodeResponse<T extends object>(
  codec?: MessageCodec<T>,
  fields?: T,
): Uint8Array<ArrayBuffer> {
  return encodeRequest(CtapStatus.CTAP2_OK as unknown as CtapCommandCode, codec, fields);
}

/**
 * Splits a device response into status and body; a non-zero status throws {@link CtapError}.
 * An empty body decodes as `undefined`.
 */
export function decodeResponse<T>(codec: MessageCodec<T> | undefined, response: Uint8Array): T | undefined {
  if (response.length === 0) {
    throw new CtapError(CtapStatus.CTAP1_ERR_OTHER, "the authenticator answered with an empty response");
  }
  const status = response[0]!;
  if (status !== CtapStatus.CTAP2_OK) throw new CtapError(status);
  if (!codec || response.length === 1) return undefined;
  return decodeBody(codec, response.subarray(1));
}
