/**
 * `navigator.credentials.get()` for a command-line program: request options JSON in,
 * AuthenticationResponseJSON out (WebAuthn L3 §5.1.4, CTAP 2.1 §6.2). Used to prove a freshly
 * provisioned passkey works, and by the browser bridge for sign-in pages.
 *
 * @module
 */
import { toBase64Url } from "../bytes.ts";
import { Ctap2Client } from "../ctap/client.ts";
import { PinUvAuthPermission } from "../ctap/pin_protocol.ts";
import type { Authenticator, UserInteraction } from "../plugin.ts";
import { buildClientDataJSON } from "./client_data.ts";
import { promptOnKeepalive, runCeremony } from "./ceremony.ts";
import { WebAuthnError } from "./errors.ts";
import { type AuthenticationResponseJSON, parseRequestOptions } from "./json.ts";
import { checkRpId, effectiveRpId } from "./rp_id.ts";
import { obtainPinToken, userVerificationOf } from "./user_verification.ts";

/** What {@link get} needs. */
export interface GetRequest {
  /** PublicKeyCredentialRequestOptionsJSON (or `{ publicKey: … }`). */
  options: unknown;
  /** The origin the ceremony runs for. */
  origin: string;
  /** rp ids the caller accepts. */
  allowedRpIds: readonly string[];
  authenticator: Authenticator;
  interaction: UserInteraction;
  signal?: AbortSignal;
  /** @default 300000 */
  defaultTimeoutMs?: number;
}

/** See the module documentation. */
export async function get(request: GetRequest): Promise<AuthenticationResponseJSON> {
  const options = parseRequestOptions(request.options);
  const rpId = effectiveRpId(options.rpId, request.origin);
  checkRpId({ rpId, origin: request.origin, allowedRpIds: request.allowedRpIds, ceremony: "get" });
  const label = request.authenticator.label;
  const timeoutMs = options.timeout ?? request.defaultTimeoutMs ?? 300_000;
  return await runCeremony("get", rpId, { timeoutMs, signal: request.signal }, async (signal) => {
    const client = new Ctap2Client(request.authenticator.device);
    const clientData = await buildClientDataJSON({
      type: "webauthn.get",
      challenge: options.challenge,
      origin: request.origin,
    });
    const allowList = (options.allowCredentials ?? [])
      .filter((c) => c.type === "public-key")
      .map((c) => ({ type: "public-key", id: c.id }));
    const token = await obtainPinToken({
      client,
      rpId,
      permission: PinUvAuthPermission.getAssertion,
      userVerification: userVerificationOf(options.userVerification),
      mustVerify: false,
      interaction: request.interaction,
      label,
    });
    const response = await client.getAssertion({
      rpId,
      clientDataHash: clientData.hash,
      ...(allowList.length > 0 ? { allowList } : {}),
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
    // With several discoverable credentials a browser shows a chooser; we take the first
    // (the most recent, as authenticators order them).
    const credentialId = response.credential?.id ?? (allowList.length === 1 ? allowList[0]!.id : undefined);
    if (!credentialId) {
      throw new WebAuthnError(
        "bad-authenticator-response",
        `Cannot sign in for rp "${rpId}": ${label} did not say which credential it used`,
        { rpId },
      );
    }
    const id = toBase64Url(credentialId);
    return {
      id,
      rawId: id,
      type: "public-key",
      response: {
        clientDataJSON: toBase64Url(clientData.bytes),
        authenticatorData: toBase64Url(response.authData),
        signature: toBase64Url(response.signature),
        ...(response.user ? { userHandle: toBase64Url(response.user.id) } : {}),
      },
      authenticatorAttachment: "cross-platform",
      clientExtensionResults: {},
    };
  });
}
