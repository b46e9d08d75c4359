/**
 * Checks a test assertion against the public key a registration returned: what a bulk run over
 * security keys does before it hands a key to its user, so a key that registered but cannot sign
 * (a broken or cloned device, a wrong PIN state) is caught at the desk, not at the user's first
 * sign-in. It is the relying party's check of WebAuthn L3 §7.2 steps that matter here: the
 * credential id, the client data (type, challenge, origin), the rp id hash, user presence, and the
 * signature over authenticatorData ‖ SHA-256(clientDataJSON) with the credential's key.
 *
 * @example
 * ```ts ignore
 * await verifyAssertion({ assertion, registration, challenge, origin, rpId });
 * ```
 *
 * @module
 */
import { fromBase64Any as decode, toBase64Url } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "./json.ts";

/** Bytes WebCrypto accepts (a fresh ArrayBuffer behind them). */
function fromBase64Any(text: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(decode(text));
}

/** What {@link verifyAssertion} compares. */
export interface VerifyAssertionRequest {
  readonly assertion: AuthenticationResponseJSON;
  /** The registration of the credential (its `response.publicKey` and algorithm). */
  readonly registration: RegistrationResponseJSON;
  /** The challenge the assertion was asked with, base64url. */
  readonly challenge: string;
  readonly origin: string;
  readonly rpId: string;
}

/**
 * Verifies the assertion; throws a ProvisioningError `assertion-invalid` naming what is wrong.
 * Supports ES256, EdDSA and RS256 credentials.
 */
export async function verifyAssertion(request: VerifyAssertionRequest): Promise<void> {
  const { assertion, registration } = request;
  const fail = (why: string) =>
    new ProvisioningError("assertion-invalid", `Cannot verify the key's test assertion: ${why}`, {
      hint: "Put the key aside and use another one; its passkey may not work for the user",
    });
  if (assertion.id !== registration.id) {
    throw fail(`it answered with credential ${assertion.id}, not ${registration.id}`);
  }
  const clientDataJSON = fromBase64Any(assertion.response.clientDataJSON);
  let clientData: { type?: unknown; challenge?: unknown; origin?: unknown };
  try {
    clientData = JSON.parse(new TextDecoder().decode(clientDataJSON));
  } catch {
    throw fail("its client data is not JSON");
  }
  if (clientData.type !== "webauthn.get") {
    throw fail(`its client data type is ${JSON.stringify(clientData.type)}`);
  }
  if (clientData.challenge !== request.challenge) throw fail("its client data carries another challenge");
  if (clientData.origin !== request.origin) {
    throw fail(`its client data origin is ${JSON.stringify(clientData.origin)}`);
  }
  const authenticatorData = fromBase64Any(assertion.response.authenticatorData);
  if (authenticatorData.length < 37) throw fail("its authenticator data is too short");
  const rpIdHash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(request.rpId)),
  );
  if (toBase64Url(authenticatorData.subarray(0, 32)) !== toBase64Url(rpIdHash)) {
    throw fail(`its rp id hash is not that of "${request.rpId}"`);
  }
  if ((authenticatorData[32]! & 0x01) === 0) throw fail("the key did not assert user presence");
  const spki = registration.response.publicKey;
  const algorithm = registration.response.publicKeyAlgorithm;
  if (spki === undefined || algorithm === undefined) throw fail("the registration carries no public key");
  const clientDataHash = new Uint8Array(await crypto.subtle.digest("SHA-256", clientDataJSON));
  const signed = new Uint8Array(authenticatorData.length + clientDataHash.length);
  signed.set(authenticatorData);
  signed.set(clientDataHash, authenticatorData.length);
  const signature = fromBase64Any(assertion.response.signature);
  const params = algorithmParams(algorithm);
  if (params === undefined) throw fail(`its algorithm ${algorithm} is not one this check knows`);
  const key = await crypto.subtle.importKey("spki", fromBase64Any(spki), params.import, false, ["verify"]);
  const raw = algorithm === -7 ? derToRaw(signature, 32) : signature;
  if (raw === undefined || !(await crypto.subtle.verify(params.verify, key, raw, signed))) {
    throw fail("its signature does not verify with the registered public key");
  }
}

function algorithmParams(
  algorithm: number,
): {
  import: AlgorithmIdentifier | EcKeyImportParams | RsaHashedImportParams;
  verify: AlgorithmIdentifier | EcdsaParams;
} | undefined {
  if (algorithm === -7) {
    return { import: { name: "ECDSA", namedCurve: "P-256" }, verify: { name: "ECDSA", hash: "SHA-256" } };
  }
  if (algorithm === -8) return { import: { name: "Ed25519" }, verify: { name: "Ed25519" } };
  if (algorithm === -257) {
    return { import: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, verify: { name: "RSASSA-PKCS1-v1_5" } };
  }
  return undefined;
}

/** An ASN.1 DER ECDSA signature (SEQUENCE of two INTEGERs) as r ‖ s of `size` bytes each. */
function derToRaw(der: Uint8Array, size: number): Uint8Array<ArrayBuffer> | undefined {
  if (der[0] !== 0x30) return undefined;
  let offset = der[1]! & 0x80 ? 2 + (der[1]! & 0x7f) : 2;
  const out = new Uint8Array(size * 2);
  for (let i = 0; i < 2; i++) {
    if (der[offset] !== 0x02) return undefined;
    const length = der[offset + 1]!;
    let value = der.subarray(offset + 2, offset + 2 + length);
    while (value.length > size && value[0] === 0) value = value.subarray(1);
    if (value.length > size) return undefined;
    out.set(value, i * size + (size - value.length));
    offset += 2 + length;
  }
  return out;
}
