/**
 * App-only sign-in for unattended runs: the OAuth 2.0 client credentials grant
 * (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow) with
 * either a client secret (`client_secret` in the body) or a certificate.
 *
 * With a certificate the app proves itself with a `private_key_jwt` client assertion
 * (https://learn.microsoft.com/entra/identity-platform/certificate-credentials), signed here with
 * jose: header `alg` RS256 (or PS256, which the page now recommends), `typ` JWT, the certificate's
 * SHA-256 thumbprint as `x5t#S256` and its SHA-1 thumbprint as `x5t` (older tenants look for
 * that one); claims `aud` = the tenant's token endpoint (not the issuer, which is oauth4webapi's
 * default), `iss` = `sub` = the client id, a random `jti`, `nbf`/`iat` now and `exp` five minutes
 * later.
 *
 * App-only tokens ask for `{graph}/.default`: every application permission an admin consented to.
 *
 * @module
 */
import { importPKCS8, SignJWT } from "jose";
import * as oauth from "oauth4webapi";
import { fromBase64Any, toBase64Url } from "../../../core/bytes.ts";
import { x509 } from "../../../core/x509.ts";
import { type Authority, requestOptions } from "./discovery.ts";
import { EntraAuthError, toAuthError } from "./errors.ts";
import { type TokenSet, toTokenSet } from "./tokens.ts";

/** A certificate credential: the private key and the thumbprints of its certificate. */
export interface CertificateCredential {
  readonly kind: "certificate";
  /** The RSA private key (PKCS#8), non-extractable. */
  readonly privateKey: CryptoKey;
  /** Base64url SHA-256 of the certificate's DER (`x5t#S256`). */
  readonly thumbprintSha256: string;
  /** Base64url SHA-1 of the certificate's DER (`x5t`). */
  readonly thumbprintSha1: string;
  /** The certificate's DER, for whoever wants to show its subject or register it. */
  readonly certificateDer: Uint8Array;
  /** Where it came from (a path), named in errors. */
  readonly source: string;
  /**
   * Signature algorithm of the assertion.
   * @default "RS256"
   */
  readonly algorithm: "RS256" | "PS256";
}

/** A client secret credential. */
export interface SecretCredential {
  readonly kind: "secret";
  /** The secret's value (never its id). Never printed. */
  readonly secret: string;
  /** Where it came from (`PROVISIONING_CLIENT_SECRET`), named in hints. */
  readonly source: string;
}

/** How the app proves itself. */
export type ClientCredential = SecretCredential | CertificateCredential;

/**
 * What a cached app token remembers of the credential that obtained it, to tell when the settings
 * have changed since: the kind and, for a certificate, its SHA-256 thumbprint; for a secret a
 * fingerprint (16 bytes of SHA-256 over a label and the secret), never the secret itself.
 */
export interface CredentialFingerprint {
  readonly kind: ClientCredential["kind"];
  readonly fingerprint: string;
}

/**
 * The {@link CredentialFingerprint} of `credential`.
 *
 * @example
 * ```ts
 * import { credentialFingerprint } from "./client_credentials.ts";
 * const a = await credentialFingerprint({ kind: "secret", secret: "one~secret", source: "env" });
 * const b = await credentialFingerprint({ kind: "secret", secret: "another~secret", source: "env" });
 * console.assert(a.fingerprint !== b.fingerprint && !a.fingerprint.includes("one~secret"));
 * ```
 */
export async function credentialFingerprint(credential: ClientCredential): Promise<CredentialFingerprint> {
  if (credential.kind === "certificate") {
    return { kind: "certificate", fingerprint: credential.thumbprintSha256 };
  }
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(`provisioning client secret fingerprint\0${credential.secret}`),
  );
  return { kind: "secret", fingerprint: toBase64Url(new Uint8Array(digest).slice(0, 16)) };
}

/** Options of {@link acquireAppToken}. */
export interface AppTokenOptions {
  readonly authority: Authority;
  readonly clientId: string;
  readonly credential: ClientCredential;
  /**
   * The scope asked for.
   * @default `${authority.cloud.graphDefaultScope}`
   */
  readonly scope?: string;
  readonly signal?: AbortSignal;
  /**
   * Clock in epoch milliseconds (assertion times, token expiry).
   * @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Gets an app-only access token with the client credentials grant.
 *
 * @throws {EntraAuthError} `auth-failed` (wrong secret, unknown app, certificate not registered,
 * …) or `auth-consent-required`, with Microsoft's AADSTS code and a hint; `auth-unreachable`.
 * The secret never appears in a message.
 */
export async function acquireAppToken(options: AppTokenOptions): Promise<TokenSet> {
  const { authority, credential } = options;
  const now = options.now ?? Date.now;
  const scope = options.scope ?? authority.cloud.graphDefaultScope;
  const client: oauth.Client = { client_id: options.clientId };
  const clientAuth = credential.kind === "secret"
    ? oauth.ClientSecretPost(credential.secret)
    : certificateClientAuth(credential, now);
  const context = {
    action: `sign in to tenant "${authority.tenant}" as app "${options.clientId}"`,
    authority: authority.cloud.loginBase,
    tenant: authority.tenant,
    clientId: options.clientId,
    scopes: [scope],
    secrets: credential.kind === "secret" ? [credential.secret] : [],
    ...(credential.kind === "secret"
      ? { secretSource: credential.source }
      : { certificateSource: credential.source }),
  };
  try {
    const response = await oauth.clientCredentialsGrantRequest(
      authority.server,
      client,
      clientAuth,
      { scope },
      requestOptions(authority, options.signal),
    );
    return toTokenSet(
      await oauth.processClientCredentialsResponse(authority.server, client, response),
      now(),
    );
  } catch (error) {
    throw toAuthError(error, context);
  }
}

/**
 * oauth4webapi client authentication that sends a `private_key_jwt` assertion shaped as
 * Microsoft documents (see the module comment), a fresh one per request.
 */
export function certificateClientAuth(
  credential: CertificateCredential,
  now: () => number = Date.now,
): oauth.ClientAuth {
  return async (server, client, body) => {
    const issuedAt = Math.floor(now() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({
        alg: credential.algorithm,
        typ: "JWT",
        "x5t#S256": credential.thumbprintSha256,
        x5t: credential.thumbprintSha1,
      })
      .setAudience(server.token_endpoint!)
      .setIssuer(client.client_id)
      .setSubject(client.client_id)
      .setJti(crypto.randomUUID())
      .setNotBefore(issuedAt)
      .setIssuedAt(issuedAt)
      .setExpirationTime(issuedAt + 300)
      .sign(credential.privateKey);
    body.set("client_id", client.client_id);
    body.set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    body.set("client_assertion", assertion);
  };
}

/** Options of {@link loadCertificateCredential}. */
export interface LoadCertificateOptions {
  /** A separate PEM file with the private key, when the certificate file has none. */
  readonly keyPath?: string;
  /**
   * Assertion signature algorithm.
   * @default "RS256"
   */
  readonly algorithm?: "RS256" | "PS256";
  /**
   * Clock for the validity check.
   * @default Date.now
   */
  readonly now?: () => number;
}

/**
 * Reads a certificate credential from a PEM file holding the certificate and its unencrypted
 * PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`), or the key from `keyPath`. Checks that the
 * key belongs to the certificate and that the certificate is within its validity period.
 *
 * @throws {EntraAuthError} `auth-failed` with a hint for a missing or unsupported part.
 */
export async function loadCertificateCredential(
  path: string,
  options: LoadCertificateOptions = {},
): Promise<CertificateCredential> {
  const action = `use the client certificate "${path}"`;
  const read = async (file: string) => {
    try {
      return await Deno.readTextFile(file);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new EntraAuthError("auth-failed", `Cannot ${action}: "${file}" does not exist`, {
          hint: "Check PROVISIONING_CLIENT_CERTIFICATE (a PEM file with the certificate and its private key)",
        });
      }
      throw error;
    }
  };
  const certificatePem = await read(path);
  const keyPem = options.keyPath === undefined ? certificatePem : await read(options.keyPath);
  return await certificateCredentialFromPem(certificatePem, keyPem, {
    source: path,
    algorithm: options.algorithm ?? "RS256",
    now: options.now ?? Date.now,
  });
}

/**
 * Builds a {@link CertificateCredential} from PEM text (the certificate first in `certificatePem`,
 * the PKCS#8 key in `keyPem`, which may be the same text).
 */
export async function certificateCredentialFromPem(
  certificatePem: string,
  keyPem: string,
  options: { source: string; algorithm?: "RS256" | "PS256"; now?: () => number },
): Promise<CertificateCredential> {
  const action = `use the client certificate "${options.source}"`;
  const certificateBlock = pemBlocks(certificatePem).find((block) => block.label === "CERTIFICATE");
  if (certificateBlock === undefined) {
    throw new EntraAuthError("auth-failed", `Cannot ${action}: it holds no "BEGIN CERTIFICATE" block`, {
      hint: "Give a PEM file with the certificate (and its private key)",
    });
  }
  const keyBlock = pemBlocks(keyPem).find((block) => block.label.endsWith("PRIVATE KEY"));
  if (keyBlock === undefined) {
    throw new EntraAuthError("auth-failed", `Cannot ${action}: no private key was found`, {
      hint:
        "Put the PKCS#8 private key into the same PEM file, or name its file in PROVISIONING_CLIENT_CERTIFICATE_KEY",
    });
  }
  if (keyBlock.label !== "PRIVATE KEY") {
    throw new EntraAuthError(
      "auth-failed",
      `Cannot ${action}: its "${keyBlock.label}" is not an unencrypted PKCS#8 key`,
      { hint: "Convert it: openssl pkcs8 -topk8 -nocrypt -in key.pem -out key-pkcs8.pem" },
    );
  }
  const algorithm = options.algorithm ?? "RS256";
  let certificate: x509.X509Certificate;
  try {
    certificate = new x509.X509Certificate(certificateBlock.der);
  } catch (cause) {
    throw new EntraAuthError("auth-failed", `Cannot ${action}: the certificate is not valid DER`, { cause });
  }
  const at = new Date((options.now ?? Date.now)());
  if (at < certificate.notBefore || at > certificate.notAfter) {
    throw new EntraAuthError(
      "auth-failed",
      `Cannot ${action}: it is valid from ${certificate.notBefore.toISOString()} to ${certificate.notAfter.toISOString()}`,
      {
        hint:
          "Create a new certificate, upload it to the app registration, and point PROVISIONING_CLIENT_CERTIFICATE at it",
      },
    );
  }
  let privateKey: CryptoKey;
  let publicModulus: string | undefined;
  try {
    const extractable = await importPKCS8(keyBlock.text, algorithm, { extractable: true });
    if (!(extractable instanceof CryptoKey)) throw new TypeError("not a CryptoKey");
    const jwk = await crypto.subtle.exportKey("jwk", extractable);
    publicModulus = jwk.n;
    privateKey = await importPKCS8(keyBlock.text, algorithm) as CryptoKey;
  } catch (cause) {
    throw new EntraAuthError(
      "auth-failed",
      `Cannot ${action}: the private key is not an RSA key usable for ${algorithm}`,
      {
        cause,
        hint: "Microsoft accepts RSA certificates (2048 bits or more) for client assertions",
      },
    );
  }
  const certificateKey = await crypto.subtle.exportKey(
    "jwk",
    await certificate.publicKey.export({ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, ["verify"]),
  ).catch(() => undefined);
  if (certificateKey?.n === undefined || certificateKey.n !== publicModulus) {
    throw new EntraAuthError(
      "auth-failed",
      `Cannot ${action}: the private key does not belong to the certificate`,
      {
        hint: "Give the certificate together with its own private key",
      },
    );
  }
  const der = new Uint8Array(certificateBlock.der);
  return {
    kind: "certificate",
    privateKey,
    thumbprintSha256: toBase64Url(new Uint8Array(await crypto.subtle.digest("SHA-256", der))),
    thumbprintSha1: toBase64Url(new Uint8Array(await crypto.subtle.digest("SHA-1", der))),
    certificateDer: der,
    source: options.source,
    algorithm,
  };
}

interface PemBlock {
  readonly label: string;
  readonly text: string;
  readonly der: Uint8Array<ArrayBuffer>;
}

function pemBlocks(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  const pattern = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (const match of text.matchAll(pattern)) {
    const body = match[2]!.replace(/\s+/g, "");
    if (/:/.test(match[2]!)) {
      // Legacy encrypted PEM ("Proc-Type: 4,ENCRYPTED" headers): report as such.
      blocks.push({ label: `ENCRYPTED ${match[1]!}`, text: match[0], der: new Uint8Array(0) });
      continue;
    }
    try {
      blocks.push({ label: match[1]!, text: match[0], der: new Uint8Array(fromBase64Any(body)) });
    } catch {
      // Not base64: skip the block, a later check reports what is missing.
    }
  }
  return blocks;
}
