/**
 * The sandbox's registration verifier, shared by Graph's `POST …/fido2Methods` (graph.ts) and
 * the Security info pages (pages.ts): the challenge must have been issued for this user and not
 * used or expired, `@simplewebauthn/server` verifies the attestation (independently of our
 * WebAuthn client), and the FIDO2 policy's attestation enforcement and key restrictions apply.
 * On success the passkey is stored on the tenant.
 *
 * @module
 */
import { decode as decodeCbor } from "cborg";
import { verifyRegistrationResponse } from "@simplewebauthn/server";
import { fromBase64Any, randomBytes, toBase64Url, toHex } from "../../../core/bytes.ts";
import { x509 } from "../../../core/x509.ts";
import { guidFrom, type SandboxTenant, type SandboxUser, type StoredFido2Method } from "./tenant.ts";

/** A registration the tenant refuses; `message` is what Graph (or the page) says. */
export class RegistrationRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RegistrationRefused";
  }
}

/** What the client sent: a passkey name and the credential (RegistrationResponseJSON's fields). */
export interface RegistrationInput {
  displayName: string;
  credential: {
    id: string;
    response: { clientDataJSON: string; attestationObject: string };
    clientExtensionResults?: Record<string, unknown> | undefined;
  };
}

/** The origins and rp id the clientDataJSON and authenticator data must carry. */
export interface ExpectedRelyingParty {
  origins: string[];
  rpId: string;
  /**
   * Attestation statement formats accepted; others are refused before verification. Graph's
   * POST takes only `packed` and `none` (see {@link graphAttestationFormats}). @default any
   */
  attestationFormats?: readonly string[];
}

/**
 * The attestation formats `POST /users/{id}/authentication/fido2Methods` supports: the beta page
 * says only `packed` and `none`
 * (https://learn.microsoft.com/en-us/graph/api/authentication-post-fido2methods?view=graph-rest-beta,
 * request body, publicKeyCredential). The refusal's wording is not documented; the sandbox's own.
 */
export const graphAttestationFormats: readonly string[] = ["packed", "none"];

/**
 * Verifies a registration for `user` and stores the passkey.
 *
 * @throws {RegistrationRefused} naming what is wrong (challenge, signature, policy, duplicate).
 */
export async function verifyRegistration(
  tenant: SandboxTenant,
  user: SandboxUser,
  input: RegistrationInput,
  expected: ExpectedRelyingParty,
): Promise<StoredFido2Method> {
  const { displayName, credential } = input;
  // Decoded first, so that an attestation object that is not CBOR gets a readable 400 naming it
  // rather than the verifier's internal message.
  const fmt = attestationFormatOf(credential.response.attestationObject);
  if (expected.attestationFormats && !expected.attestationFormats.includes(fmt)) {
    throw new RegistrationRefused(
      `The attestation format '${fmt}' is not supported. Supported formats: ${
        expected.attestationFormats.map((f) => `'${f}'`).join(", ")
      }.`,
    );
  }
  const challenge = challengeOf(credential.response.clientDataJSON);
  const pending = challenge === undefined ? undefined : tenant.takeChallenge(challenge);
  if (!pending || pending.userId !== user.id) {
    throw new RegistrationRefused(
      "The challenge in clientDataJSON was not issued for this user by creationOptions, or has already been used.",
    );
  }
  if (tenant.now() > pending.expiresAt) {
    throw new RegistrationRefused(
      `The challenge expired at ${
        iso(pending.expiresAt)
      }. Request new creationOptions and create the credential again.`,
    );
  }

  let verification;
  try {
    verification = await verifyRegistrationResponse({
      response: {
        id: credential.id,
        rawId: credential.id,
        type: "public-key",
        response: {
          clientDataJSON: credential.response.clientDataJSON,
          attestationObject: credential.response.attestationObject,
        },
        clientExtensionResults: credential.clientExtensionResults ?? {},
      },
      expectedChallenge: pending.challenge,
      expectedOrigin: expected.origins,
      expectedRPID: expected.rpId,
      requireUserVerification: true,
      supportedAlgorithmIDs: [-7, -257],
    });
  } catch (error) {
    throw new RegistrationRefused(`The WebAuthn registration could not be verified: ${describe(error)}`);
  }
  if (!verification.verified) {
    throw new RegistrationRefused("The WebAuthn registration could not be verified.");
  }
  const info = verification.registrationInfo;
  if (info.credential.id !== credential.id) {
    throw new RegistrationRefused(
      "publicKeyCredential.id does not match the credential id in attestationObject.",
    );
  }
  const aaGuid = info.aaguid.toLowerCase();
  const attestation = await classifyAttestation(tenant, credential.response.attestationObject);
  const policy = tenant.fido2Policy;
  if (policy.isAttestationEnforced && attestation.level !== "attested") {
    // Entra checks attestation against the FIDO Metadata Service; the message is the sandbox's.
    throw new RegistrationRefused(
      `Attestation is enforced by the FIDO2 authentication method policy and the security key's attestation could not be verified (${attestation.reason}).`,
    );
  }
  const restrictions = policy.keyRestrictions;
  if (restrictions.isEnforced) {
    const listed = restrictions.aaGuids.some((g) => normalizeAaguid(g) === aaGuid);
    if (restrictions.enforcementType === "allow" ? !listed : listed) {
      throw new RegistrationRefused(
        `The security key's AAGUID '${aaGuid}' is ${
          restrictions.enforcementType === "allow" ? "not in the allowed list" : "in the blocked list"
        } of the FIDO2 authentication method policy's key restrictions.`,
      );
    }
  }
  if (tenant.credentialOwner(info.credential.id) !== undefined) {
    throw new RegistrationRefused("This credential is already registered.");
  }

  const method: StoredFido2Method = {
    id: guidFrom(randomBytes(16)),
    displayName,
    createdDateTime: iso(tenant.now()),
    aaGuid,
    model: tenant.models.get(aaGuid) ?? null,
    attestationCertificates: attestation.thumbprints,
    attestationLevel: attestation.level,
    passkeyType: info.credentialDeviceType === "multiDevice" ? "synced" : "deviceBound",
    credentialId: info.credential.id,
    publicKey: toBase64Url(info.credential.publicKey),
    signCount: info.credential.counter,
    attestationFormat: info.fmt,
    verified: true,
    userVerified: info.userVerified,
  };
  tenant.addFido2Method(user.id, method);
  return method;
}

function normalizeAaguid(text: string): string {
  const hex = text.replaceAll("-", "").toLowerCase();
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The attestation object's `fmt`, or a readable refusal when it is not a CBOR map with one. */
function attestationFormatOf(attestationObject: string): string {
  let decoded: unknown;
  try {
    decoded = decodeCbor(fromBase64Any(attestationObject));
  } catch (error) {
    throw new RegistrationRefused(
      `publicKeyCredential.response.attestationObject could not be decoded: it is not base64url-encoded CBOR (${
        describe(error)
      }).`,
    );
  }
  const fmt = typeof decoded === "object" && decoded !== null
    ? (decoded as { fmt?: unknown }).fmt
    : undefined;
  if (typeof fmt !== "string") {
    throw new RegistrationRefused(
      "publicKeyCredential.response.attestationObject could not be decoded: it has no attestation format (fmt).",
    );
  }
  return fmt;
}

function challengeOf(clientDataJSON: string): string | undefined {
  try {
    const data = JSON.parse(new TextDecoder().decode(fromBase64Any(clientDataJSON)));
    return typeof data?.challenge === "string" ? data.challenge : undefined;
  } catch {
    return undefined;
  }
}

/**
 * "attested" when the statement carries an x5c chain that ends at a trusted root (the sandbox's
 * stand-in for the FIDO Metadata Service); "notAttested" for `none`, self attestation, or a chain
 * to an unknown root. Thumbprints are the SHA-1 of each x5c certificate, hex.
 */
async function classifyAttestation(
  tenant: SandboxTenant,
  attestationObject: string,
): Promise<{ level: "attested" | "notAttested"; thumbprints: string[]; reason: string }> {
  let decoded: { fmt?: unknown; attStmt?: { x5c?: unknown } };
  try {
    decoded = decodeCbor(fromBase64Any(attestationObject)) as typeof decoded;
  } catch (error) {
    throw new RegistrationRefused(`attestationObject is not valid CBOR: ${describe(error)}`);
  }
  const fmt = typeof decoded.fmt === "string" ? decoded.fmt : "unknown";
  const x5c = Array.isArray(decoded.attStmt?.x5c)
    ? decoded.attStmt.x5c.filter((c): c is Uint8Array => c instanceof Uint8Array)
    : [];
  if (fmt === "none") {
    return { level: "notAttested", thumbprints: [], reason: "the key sent no attestation (format 'none')" };
  }
  if (x5c.length === 0) {
    return {
      level: "notAttested",
      thumbprints: [],
      reason: `the key attested itself (format '${fmt}' without a certificate)`,
    };
  }
  const thumbprints = await Promise.all(
    x5c.map(async (der) => toHex(new Uint8Array(await crypto.subtle.digest("SHA-1", Uint8Array.from(der))))),
  );
  const trusted = await chainsToTrustedRoot(tenant, x5c);
  return trusted ? { level: "attested", thumbprints, reason: "" } : {
    level: "notAttested",
    thumbprints,
    reason: "its attestation certificate does not chain to a trusted root",
  };
}

async function chainsToTrustedRoot(tenant: SandboxTenant, x5c: Uint8Array[]): Promise<boolean> {
  let certificates: x509.X509Certificate[];
  try {
    certificates = x5c.map((der) => new x509.X509Certificate(Uint8Array.from(der)));
  } catch {
    return false;
  }
  const date = new Date(tenant.now());
  for (const root of tenant.trustedAttestationRoots) {
    const chain = certificates.at(-1)?.equal(root) ? certificates.slice(0, -1) : certificates;
    let ok = true;
    for (let i = 0; i < chain.length && ok; i++) {
      const issuer = chain[i + 1] ?? root;
      try {
        ok = await chain[i]!.verify({ publicKey: issuer.publicKey, date });
      } catch {
        ok = false;
      }
    }
    if (ok) return true;
  }
  return false;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
