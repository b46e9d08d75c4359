/**
 * A sequential reference client of Entra's passkey provisioning API, written from Microsoft's
 * documentation alone and sharing no code with the tool (not its Graph client, not its WebAuthn
 * client, not its CTAP encoder). It is what a careful admin's script would do, one user after
 * the other, and it serves two purposes:
 *
 * - **fidelity**: it registers against the Entra sandbox unchanged, so the sandbox accepts what a
 *   client written from the docs sends (a bare token, origin `https://<rp id>`, the challenge
 *   timeout in the query string);
 * - **baseline**: a benchmark can run it against the CLI, as the sequential floor.
 *
 * The steps and their sources:
 *
 * 1. Token: client credentials, `POST {login}/{tenant}/oauth2/v2.0/token` with `client_id`,
 *    `client_secret`, `scope=https://graph.microsoft.com/.default`, `grant_type=client_credentials`
 *    (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
 * 2. Options: `GET /users/{id | upn}/authentication/fido2Methods/creationOptions`
 *    (https://learn.microsoft.com/graph/api/fido2authenticationmethod-creationoptions), on beta with
 *    `challengeTimeoutInMinutes` (5–43200). The parameter goes in the query string, the OData form
 *    of a function parameter (OData 4.01 URL Conventions §5.1.1.13.1, parameter values as query
 *    options) that YubicoLabs' provisioning script uses.
 * 3. Authorization: the bare access token, which Graph accepts (microsoftgraph/msgraph-sdk-php-core
 *    PR #194, a maintainer's review; YubicoLabs' script sends it so).
 * 4. clientDataJSON: `{"type":"webauthn.create","challenge":…,"origin":"https://<rp.id>",
 *    "crossOrigin":false}` (WebAuthn L3 §5.8.1; the origin a browser on the rp's page would send,
 *    as in the example body of https://learn.microsoft.com/graph/api/authentication-post-fido2methods).
 * 5. The key: CTAP 2.1 `authenticatorClientPIN` getPinToken with PIN protocol 1 (§6.5.6, §6.5.5.7)
 *    and `authenticatorMakeCredential` (§6.1) with `rk`, credProtect and hmac-secret as asked.
 * 6. Register: `POST /users/{id}/authentication/fido2Methods` with `displayName` and
 *    `publicKeyCredential` `{ id, response: { clientDataJSON, attestationObject } }`
 *    (https://learn.microsoft.com/graph/api/authentication-post-fido2methods).
 *
 * @module
 */
import { decode as decodeCbor, encode as encodeCbor } from "cborg";
import { p256 } from "@noble/curves/nist.js";
import { cbc } from "@noble/ciphers/aes.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import type { CtapDevice } from "../../core/ctap/device.ts";

/** What {@link registerPasskeysSequentially} needs: one options object. */
export interface ReferenceClientOptions {
  /** Identity platform base, e.g. `https://login.microsoftonline.com` (or a sandbox URL). */
  loginBase: string;
  /** Graph base without version, e.g. `https://graph.microsoft.com` (or a sandbox URL). */
  graphBase: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
  /** User principal names (or object ids), registered one after the other. */
  users: readonly string[];
  /** The key, spoken to in raw CTAP2 (e.g. a software authenticator). */
  device: CtapDevice;
  /** The key's PIN: the options ask for user verification. */
  pin: string;
  /** @default "beta" (the version that takes challengeTimeoutInMinutes) */
  graphVersion?: "beta" | "v1.0";
  /** Sent on beta only. @default undefined (Graph's 5 minutes) */
  challengeTimeoutInMinutes?: number;
  /** The passkey's name in Entra. @default "Reference key" */
  displayName?: string;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
}

/** One user's outcome. */
export interface ReferenceResult {
  user: string;
  ok: boolean;
  /** The fido2AuthenticationMethod id Graph answered. */
  methodId?: string;
  /** The HTTP status or CTAP status of the failure. */
  status?: number;
  error?: string;
}

/** Registers a passkey for each user in turn; never throws for one user's failure. */
export async function registerPasskeysSequentially(
  options: ReferenceClientOptions,
): Promise<ReferenceResult[]> {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const version = options.graphVersion ?? "beta";
  let token: { value: string; expiresAt: number } | undefined;
  const results: ReferenceResult[] = [];
  for (const user of options.users) {
    try {
      if (token === undefined || Date.now() > token.expiresAt - 60_000) {
        token = await getToken(options, doFetch);
      }
      results.push(await registerOne(options, doFetch, version, token.value, user));
    } catch (error) {
      results.push({
        user,
        ok: false,
        ...(error instanceof ReferenceFailure ? { status: error.status } : {}),
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }
  return results;
}

class ReferenceFailure extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

async function getToken(options: ReferenceClientOptions, doFetch: typeof fetch) {
  const response = await doFetch(
    `${options.loginBase.replace(/\/+$/, "")}/${options.tenantId}/oauth2/v2.0/token`,
    {
      method: "POST",
      body: new URLSearchParams({
        client_id: options.clientId,
        client_secret: options.clientSecret,
        scope: "https://graph.microsoft.com/.default",
        grant_type: "client_credentials",
      }),
    },
  );
  const body = await response.json();
  if (!response.ok) {
    throw new ReferenceFailure(`token: ${body.error_description ?? body.error}`, response.status);
  }
  return { value: String(body.access_token), expiresAt: Date.now() + Number(body.expires_in) * 1000 };
}

async function registerOne(
  options: ReferenceClientOptions,
  doFetch: typeof fetch,
  version: string,
  token: string,
  user: string,
): Promise<ReferenceResult> {
  const graph = `${options.graphBase.replace(/\/+$/, "")}/${version}/users/${encodeURIComponent(user)}`;
  const query = version === "beta" && options.challengeTimeoutInMinutes !== undefined
    ? `?challengeTimeoutInMinutes=${options.challengeTimeoutInMinutes}`
    : "";
  const got = await doFetch(`${graph}/authentication/fido2Methods/creationOptions${query}`, {
    headers: { Authorization: token },
  });
  const creation = await got.json();
  if (!got.ok) throw new ReferenceFailure(`creationOptions: ${creation.error?.message}`, got.status);
  const publicKey = creation.publicKey;
  const rpId: string = publicKey.rp.id;

  const clientDataJSON = new TextEncoder().encode(JSON.stringify({
    type: "webauthn.create",
    challenge: base64url(decodeDocumentedBase64(publicKey.challenge)),
    origin: `https://${rpId}`,
    crossOrigin: false,
  }));
  const clientDataHash = sha256(clientDataJSON);
  const pinToken = await getPinToken(options.device, options.pin);

  const extensions = new Map<string, unknown>();
  const credProtect = {
    userVerificationOptional: 1,
    userVerificationOptionalWithCredentialIDList: 2,
    userVerificationRequired: 3,
  }[
    publicKey.extensions?.credentialProtectionPolicy as string
  ];
  if (credProtect !== undefined) extensions.set("credProtect", credProtect);
  if (publicKey.extensions?.hmacCreateSecret === true) extensions.set("hmac-secret", true);
  const request = new Map<number, unknown>([
    [1, clientDataHash],
    [2, { id: rpId, name: publicKey.rp.name }],
    [3, {
      id: decodeDocumentedBase64(publicKey.user.id),
      name: publicKey.user.name,
      displayName: publicKey.user.displayName,
    }],
    [4, publicKey.pubKeyCredParams.map((p: { type: string; alg: number }) => ({ alg: p.alg, type: p.type }))],
  ]);
  const exclude = (publicKey.excludeCredentials ?? []) as { type: string; id: string }[];
  if (exclude.length > 0) {
    request.set(5, exclude.map((c) => ({ id: decodeDocumentedBase64(c.id), type: c.type })));
  }
  if (extensions.size > 0) request.set(6, extensions);
  request.set(7, { rk: true });
  request.set(8, hmac(sha256, pinToken, clientDataHash).slice(0, 16));
  request.set(9, 1);
  const made = await ctap(options.device, 0x01, request) as Map<number, unknown>;
  const fmt = made.get(1) as string;
  const authData = made.get(2) as Uint8Array;
  const attStmt = made.get(3);
  // authData: rpIdHash(32) flags(1) signCount(4) aaguid(16) credentialIdLength(2) credentialId …
  const idLength = (authData[53]! << 8) | authData[54]!;
  const credentialId = authData.slice(55, 55 + idLength);
  // The attestation object as WebAuthn L3 §6.5 writes it: text keys fmt, attStmt, authData.
  const attestationObject = encodeCbor({ fmt, attStmt, authData });

  const posted = await doFetch(`${graph}/authentication/fido2Methods`, {
    method: "POST",
    headers: { Authorization: token, "Content-Type": "application/json" },
    body: JSON.stringify({
      displayName: options.displayName ?? "Reference key",
      publicKeyCredential: {
        id: base64url(credentialId),
        response: {
          clientDataJSON: base64url(clientDataJSON),
          attestationObject: base64url(attestationObject),
        },
      },
    }),
  });
  const method = await posted.json();
  if (posted.status !== 201) {
    throw new ReferenceFailure(`fido2Methods: ${method.error?.message}`, posted.status);
  }
  return { user, ok: true, methodId: String(method.id) };
}

/** A PIN token through clientPIN getPinToken, PIN protocol 1 (CTAP 2.1 §6.5.6). */
async function getPinToken(device: CtapDevice, pin: string): Promise<Uint8Array> {
  const agreement = await ctap(device, 0x06, new Map([[1, 1], [2, 2]])) as Map<
    number,
    Map<number, Uint8Array>
  >;
  const keyAgreement = agreement.get(1)!;
  const peer = new Uint8Array([4, ...keyAgreement.get(-2)!, ...keyAgreement.get(-3)!]);
  const secret = p256.utils.randomSecretKey();
  const own = p256.getPublicKey(secret, false);
  const shared = sha256(p256.getSharedSecret(secret, peer, true).slice(1));
  const zeroIv = new Uint8Array(16);
  const pinHashEnc = cbc(shared, zeroIv, { disablePadding: true }).encrypt(
    sha256(new TextEncoder().encode(pin)).slice(0, 16),
  );
  const platformKey = new Map<number, unknown>([[1, 2], [3, -25], [-1, 1], [-2, own.slice(1, 33)], [
    -3,
    own.slice(33, 65),
  ]]);
  const answer = await ctap(
    device,
    0x06,
    new Map<number, unknown>([[1, 1], [2, 5], [3, platformKey], [
      6,
      pinHashEnc,
    ]]),
  ) as Map<number, Uint8Array>;
  return cbc(shared, zeroIv, { disablePadding: true }).decrypt(answer.get(2)!);
}

/** One CTAP2 command: command byte + CBOR parameters; status byte + CBOR answer. */
async function ctap(device: CtapDevice, command: number, parameters: Map<number, unknown>): Promise<unknown> {
  const response = await device.transceive(new Uint8Array([command, ...encodeCbor(parameters)]));
  if (response[0] !== 0) {
    throw new ReferenceFailure(`CTAP command 0x${command.toString(16)} failed`, response[0]!);
  }
  return decodeCbor(response.subarray(1), { useMaps: true });
}

/**
 * The binary text Graph documents: base64url without padding (v1.0), also read with padding or
 * in the standard alphabet, and the beta page's "Base64URL with a padding number suffix" (a last
 * digit 0–2 counting removed `=`, recognised where the length calls for it).
 */
function decodeDocumentedBase64(text: string): Uint8Array {
  let body = text.replaceAll("-", "+").replaceAll("_", "/").replace(/=+$/, "");
  const digit = body.at(-1);
  // A suffix 0 or 2 leaves a length no plain text has; a suffix 1 is indistinguishable from plain
  // base64url by its length alone, and is read plainly here.
  if ((digit === "0" && (body.length - 1) % 4 === 0) || (digit === "2" && (body.length - 1) % 4 === 2)) {
    body = body.slice(0, -1);
  }
  const binary = atob(body + "=".repeat((4 - body.length % 4) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
