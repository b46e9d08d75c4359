/**
 * The challenge Entra puts in `publicKey.challenge`: not 32 random bytes but the base64url of a
 * compact JWE (RFC 7516 §7.1) whose protected header names RSA-OAEP-256 / A256GCM and carries the
 * encryption certificate as `x5c`. That is what the response recorded from a real tenant holds
 * (MichaelGrafnetter/webauthn-interop,
 * `Src/DSInternals.Win32.WebAuthn.Tests/MicrosoftGraphWebauthnCredentialCreationOptionsTester.cs`:
 * 6,931 base64url characters, about 5 KB decoded, starting `ZXlKaGJHY2lPaUpTVTBFdFQwRkZVQzB5TlRZ`,
 * i.e. `eyJhbGciOiJSU0EtT0FFUC0yNTY…`), and the Graph docs' example starts with the same prefix
 * (https://learn.microsoft.com/en-us/graph/api/fido2authenticationmethod-creationoptions).
 *
 * The sandbox seals a real JWE (jose, a per-tenant RSA key and self-signed certificate), so that a
 * client is exercised by a challenge of the real size and structure. What Entra puts inside is not
 * documented; the sandbox's payload names the user, the expiry and a nonce, padded to vary the
 * size. Registrations are still checked against the tenant's record of issued challenges.
 *
 * @module
 */
import { CompactEncrypt, importSPKI } from "jose";
import { randomBytes, toBase64, toBase64Url } from "../../../core/bytes.ts";
import { x509 } from "../../../core/x509.ts";

/** Seals challenges for one tenant. */
export interface ChallengeSealer {
  /**
   * A challenge for `userId`, expiring at `expiresAt` (ms): base64url of a compact JWE whose
   * plaintext carries `paddingBytes` extra bytes, so tests can vary the size.
   */
  seal(claims: { userId: string; expiresAt: number }, paddingBytes: number): Promise<string>;
}

/** Makes a sealer with a fresh 2048-bit RSA key and a self-signed certificate for its `x5c`. */
export async function createChallengeSealer(): Promise<ChallengeSealer> {
  const signing = {
    name: "RSASSA-PKCS1-v1_5",
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: "SHA-256",
  };
  const keys = await crypto.subtle.generateKey(signing, true, ["sign", "verify"]) as CryptoKeyPair;
  const now = Date.now();
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01" + Array.from(randomBytes(8), (b) => b.toString(16).padStart(2, "0")).join(""),
    name: "CN=provisioning sandbox challenge encryption",
    notBefore: new Date(now - 86_400_000),
    notAfter: new Date(now + 365 * 86_400_000),
    keys,
    signingAlgorithm: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  });
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey));
  const pem = `-----BEGIN PUBLIC KEY-----\n${toBase64(spki)}\n-----END PUBLIC KEY-----`;
  const encryptionKey = await importSPKI(pem, "RSA-OAEP-256");
  const x5c = [toBase64(new Uint8Array(certificate.rawData))];
  const encoder = new TextEncoder();
  return {
    async seal(claims, paddingBytes) {
      const payload = {
        uid: claims.userId,
        exp: Math.floor(claims.expiresAt / 1000),
        nonce: toBase64Url(randomBytes(32)),
        ...(paddingBytes > 0 ? { pad: toBase64Url(randomBytes(paddingBytes)) } : {}),
      };
      const jwe = await new CompactEncrypt(encoder.encode(JSON.stringify(payload)))
        .setProtectedHeader({ alg: "RSA-OAEP-256", enc: "A256GCM", x5c })
        .encrypt(encryptionKey);
      return toBase64Url(encoder.encode(jwe));
    },
  };
}
