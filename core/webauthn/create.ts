/**
 * `navigator.credentials.create()` for a command-line program: creation options JSON in,
 * RegistrationResponseJSON out, with the checks a browser makes on the way (WebAuthn L3 §5.1.3
 * "Create a New Credential", CTAP 2.1 §6.1 for what is sent to the authenticator).
 *
 * @example
 * ```ts ignore
 * const response = await create({
 *   options: await graph.creationOptions(user),
 *   origin: "https://login.microsoft.com",
 *   allowedRpIds: ["login.microsoft.com", "login.microsoftonline.com"],
 *   authenticator,
 *   interaction,
 * });
 * ```
 *
 * @module
 */
import { toBase64Url } from "../bytes.ts";
import { decodeAuthenticatorData } from "../ctap/auth_data.ts";
import { encodeCbor } from "../ctap/cbor.ts";
import { Ctap2Client } from "../ctap/client.ts";
import type { CredentialDescriptor, GetInfoResponse } from "../ctap/commands.ts";
import { cosePublicKeyToSpki, decodeCosePublicKey } from "../ctap/cose.ts";
import { PinUvAuthPermission } from "../ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../ctap/status.ts";
import type { Authenticator, UserInteraction } from "../plugin.ts";
import { buildClientDataJSON } from "./client_data.ts";
import { promptOnKeepalive, runCeremony } from "./ceremony.ts";
import { WebAuthnError } from "./errors.ts";
import { type CreationOptions, parseCreationOptions, type RegistrationResponseJSON } from "./json.ts";
import { checkRpId, effectiveRpId } from "./rp_id.ts";
import { obtainPinToken, userVerificationOf } from "./user_verification.ts";

/** What {@link create} needs. */
export interface CreateRequest {
  /** PublicKeyCredentialCreationOptionsJSON (or `{ publicKey: … }`), as a server sent it. */
  options: unknown;
  /** The origin the ceremony runs for, e.g. `https://login.microsoft.com`. */
  origin: string;
  /** rp ids the caller accepts; anything else is refused before the authenticator is touched. */
  allowedRpIds: readonly string[];
  authenticator: Authenticator;
  interaction: UserInteraction;
  /** Cancels the ceremony (CTAPHID_CANCEL on a key). */
  signal?: AbortSignal;
  /** Used when the options carry no timeout. @default 300000 */
  defaultTimeoutMs?: number;
}

/** credProtect levels by WebAuthn's credentialProtectionPolicy names (CTAP 2.1 §12.1). */
const credProtectLevels: Readonly<Record<string, number>> = {
  userVerificationOptional: 1,
  userVerificationOptionalWithCredentialIDList: 2,
  userVerificationRequired: 3,
};

/** See the module documentation. */
export async function create(request: CreateRequest): Promise<RegistrationResponseJSON> {
  const options = parseCreationOptions(request.options);
  const rpId = effectiveRpId(options.rp.id, request.origin);
  checkRpId({ rpId, origin: request.origin, allowedRpIds: request.allowedRpIds });

  const timeoutMs = options.timeout ?? request.defaultTimeoutMs ?? 300_000;
  return await runCeremony(
    "create",
    rpId,
    { timeoutMs, signal: request.signal },
    (signal) => ceremony(request, options, rpId, signal, request.authenticator.label),
  );
}

async function ceremony(
  request: CreateRequest,
  options: CreationOptions,
  rpId: string,
  signal: AbortSignal,
  label: string,
): Promise<RegistrationResponseJSON> {
  const client = new Ctap2Client(request.authenticator.device);
  const info = await client.getInfo();
  const clientData = await buildClientDataJSON({
    type: "webauthn.create",
    challenge: options.challenge,
    origin: request.origin,
  });

  const selection = options.authenticatorSelection ?? {};
  const residentKey = selection.residentKey ?? (selection.requireResidentKey ? "required" : "discouraged");
  const rk = residentKey === "required" || (residentKey === "preferred" && info.options?.["rk"] === true);
  if (rk && info.options?.["rk"] !== true) {
    throw new WebAuthnError(
      "resident-key-unsupported",
      `Cannot create a passkey for rp "${rpId}": ${label} cannot store discoverable credentials`,
      {
        rpId,
        hint: "Use a FIDO2 key that supports resident keys (passkeys)",
      },
    );
  }

  const extensions = authenticatorExtensions(options, info, rpId);
  const token = await obtainPinToken({
    client,
    rpId,
    permission: PinUvAuthPermission.makeCredential,
    userVerification: userVerificationOf(selection.userVerification),
    mustVerify: rk,
    interaction: request.interaction,
    label,
  });
  const excludeList = await excludeListFor(
    client,
    info,
    rpId,
    options.excludeCredentials ?? [],
    clientData.hash,
  );

  const response = await client.makeCredential({
    clientDataHash: clientData.hash,
    rp: { id: rpId, ...(options.rp.name ? { name: options.rp.name } : {}) },
    user: {
      id: options.user.id,
      name: options.user.name,
      displayName: options.user.displayName,
    },
    pubKeyCredParams: options.pubKeyCredParams.filter((p) => p.type === "public-key"),
    ...(excludeList.length > 0 ? { excludeList } : {}),
    ...(Object.keys(extensions).length > 0 ? { extensions } : {}),
    ...(rk ? { options: { rk: true } } : {}),
    ...(token
      ? {
        pinUvAuthParam: token.protocol.authenticate(token.token, clientData.hash),
        pinUvAuthProtocol: token.protocol.version,
      }
      : {}),
  }, {
    signal,
    onKeepalive: promptOnKeepalive(request.interaction, label),
  });

  const authData = decodeAuthenticatorData(response.authData);
  const attested = authData.attestedCredentialData;
  if (!attested) {
    throw new WebAuthnError(
      "bad-authenticator-response",
      `Cannot create a passkey for rp "${rpId}": ${label} returned no credential`,
      { rpId },
    );
  }
  const publicKey = decodeCosePublicKey(attested.publicKey);
  const conveyance = options.attestation ?? "none";
  // WebAuthn §5.4.7: for "none" the client replaces the attestation statement; the AAGUID is
  // kept, since directory policies (Entra's AAGUID allow-list) need it.
  const attestationObject = conveyance === "none"
    ? { fmt: "none", attStmt: {}, authData: response.authData }
    : { fmt: response.fmt, attStmt: response.attStmt, authData: response.authData };

  const clientExtensionResults: RegistrationResponseJSON["clientExtensionResults"] = {};
  if (options.extensions?.credProps === true) clientExtensionResults.credProps = { rk };
  if (options.extensions?.hmacCreateSecret === true) {
    clientExtensionResults.hmacCreateSecret = authData.extensions?.["hmac-secret"] === true;
  }
  const id = toBase64Url(attested.credentialId);
  return {
    id,
    rawId: id,
    type: "public-key",
    response: {
      clientDataJSON: toBase64Url(clientData.bytes),
      attestationObject: toBase64Url(encodeCbor(attestationObject)),
      authenticatorData: toBase64Url(response.authData),
      transports: [...(info.transports ?? [])].sort(),
      publicKeyAlgorithm: publicKey.alg,
      publicKey: toBase64Url(cosePublicKeyToSpki(publicKey)),
    },
    authenticatorAttachment: "cross-platform",
    clientExtensionResults,
  };
}

/** The authenticator extension inputs for the client extensions Entra asks for. */
function authenticatorExtensions(
  options: CreationOptions,
  info: GetInfoResponse,
  rpId: string,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const requested = options.extensions ?? {};
  const policy = requested.credentialProtectionPolicy;
  const level = policy === undefined ? undefined : credProtectLevels[policy];
  if (level !== undefined) {
    const supported = info.extensions?.includes("credProtect") ?? false;
    if (supported) out["credProtect"] = level;
    else if (requested.enforceCredentialProtectionPolicy === true && level > 1) {
      throw new WebAuthnError(
        "cred-protect-unsupported",
        `Cannot create a passkey for rp "${rpId}": the rp enforces credential protection "${policy}" and the authenticator does not support credProtect`,
        { rpId, hint: "Use a FIDO2.1 key that supports credProtect" },
      );
    }
  }
  if (requested.hmacCreateSecret === true && info.extensions?.includes("hmac-secret")) {
    out["hmac-secret"] = true;
  }
  return out;
}

/**
 * The excludeList to send. When the rp lists more credentials than the key takes in one
 * request, the lists are probed silently in batches (getAssertion with up=false, as browsers
 * do) and only a credential the key recognises is sent.
 */
async function excludeListFor(
  client: Ctap2Client,
  info: GetInfoResponse,
  rpId: string,
  excluded: readonly CredentialDescriptor[],
  clientDataHash: Uint8Array,
): Promise<CredentialDescriptor[]> {
  const maxIdLength = info.maxCredentialIdLength ?? Infinity;
  const usable = excluded
    .filter((c) => c.type === "public-key" && c.id.length <= maxIdLength)
    .map((c) => ({ type: "public-key", id: c.id }));
  const batch = info.maxCredentialCountInList ?? 1;
  if (usable.length <= batch) return usable;
  for (let i = 0; i < usable.length; i += batch) {
    try {
      const found = await client.getAssertion({
        rpId,
        clientDataHash,
        allowList: usable.slice(i, i + batch),
        options: { up: false },
      });
      return [found.credential ?? usable[i]!];
    } catch (error) {
      // CTAP2_ERR_NO_CREDENTIALS: none of this batch is on the key.
      if (!(error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_NO_CREDENTIALS)) throw error;
    }
  }
  return [];
}
