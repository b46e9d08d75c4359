/**
 * Test support for the sign-in tests: a controllable clock, the sandbox's programmatic
 * approvals (standing in for the admin at a browser), a fetch that records what went over the
 * wire, throwaway folders, and a certificate credential made on the spot. Not part of the plugin.
 *
 * @module
 */
import { toBase64 } from "../../../core/bytes.ts";
import { x509 } from "../../../core/x509.ts";
import type { Sandbox } from "../sandbox/server.ts";

/** A clock the test moves: `now()` for the code under test and the sandbox, `advance(ms)` for the test. */
export interface TestClock {
  now(): number;
  advance(ms: number): void;
}

/** A clock starting at the real time that moves only when told. */
export function testClock(start: number = Date.now()): TestClock {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

/** An account the sandbox knows. */
export interface TestAccount {
  readonly userPrincipalName: string;
  readonly password: string;
}

/** Approves (or declines) a pending device code as `account`, like the admin at /devicelogin. */
export async function approveDeviceCode(
  sandbox: Pick<Sandbox, "url">,
  userCode: string,
  account: TestAccount,
  decline = false,
): Promise<void> {
  const response = await fetch(`${sandbox.url}/_sandbox/device/approve`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      user_code: userCode,
      userPrincipalName: account.userPrincipalName,
      password: account.password,
      decline,
    }),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`device approval answered ${response.status}: ${text}`);
}

/**
 * An `openBrowser` that does what the admin's browser would: signs `account` in at the sandbox's
 * authorize endpoint, then follows the redirect to the tool's loopback listener. Records the
 * authorization URLs it was given and the listener's answers.
 */
export function sandboxBrowser(sandbox: Pick<Sandbox, "url">, account: TestAccount) {
  const opened: string[] = [];
  const landings: { status: number; body: string }[] = [];
  const visits: Promise<void>[] = [];
  return {
    opened,
    landings,
    openBrowser(url: string): Promise<void> {
      opened.push(url);
      const visit = (async () => {
        const location = await authorizeLocation(sandbox, url, account);
        const landing = await fetch(location);
        landings.push({ status: landing.status, body: await landing.text() });
      })();
      visits.push(visit);
      return visit;
    },
    /** Waits until every page the "browser" opened has finished loading. */
    async settled(): Promise<void> {
      await Promise.all(visits);
    },
  };
}

/** Signs in at the sandbox's authorize endpoint and returns where the browser is redirected. */
export async function authorizeLocation(
  sandbox: Pick<Sandbox, "url">,
  authorizeUrl: string,
  account: TestAccount,
): Promise<string> {
  const response = await fetch(`${sandbox.url}/_sandbox/authorize/approve`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      authorizeUrl,
      userPrincipalName: account.userPrincipalName,
      password: account.password,
    }),
  });
  const body = await response.json() as { location?: string };
  if (!response.ok || typeof body.location !== "string") {
    throw new Error(`authorize approval answered ${response.status}: ${JSON.stringify(body)}`);
  }
  return body.location;
}

/** One request a {@link recordingFetch} saw. */
export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly body: string;
}

/** A fetch that passes everything through and records method, URL and body of each request. */
export function recordingFetch(): { fetch: typeof fetch; requests: RecordedRequest[] } {
  const requests: RecordedRequest[] = [];
  const recorded: typeof fetch = async (input, init) => {
    const request = new Request(input, init);
    const body = request.body === null ? "" : await request.clone().text();
    requests.push({ method: request.method, url: request.url, body });
    return await fetch(request);
  };
  return { fetch: recorded, requests };
}

/** A temporary folder removed when disposed. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "provisioning-auth-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** A self-signed RSA certificate with its PKCS#8 key, as PEM, and the public JWK a sandbox app registers. */
export interface TestCertificate {
  /** Certificate then private key, one PEM text (what PROVISIONING_CLIENT_CERTIFICATE points at). */
  readonly pem: string;
  readonly certificatePem: string;
  readonly keyPem: string;
  /** Public key with `x5c`, for `SandboxApp.certificateJwk`. */
  readonly publicJwk: JsonWebKey;
}

/** Makes a 2048-bit RSA certificate valid from an hour ago for a day. */
export async function newTestCertificate(name = "CN=provisioning auth test"): Promise<TestCertificate> {
  const algorithm = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256", publicExponent: new Uint8Array([1, 0, 1]) };
  const keys = await crypto.subtle.generateKey({ ...algorithm, modulusLength: 2048 }, true, [
    "sign",
    "verify",
  ]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "01",
    name,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 86400_000),
    signingAlgorithm: algorithm,
    keys,
  });
  const der = new Uint8Array(certificate.rawData);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  const certificatePem = pem("CERTIFICATE", der);
  const keyPem = pem("PRIVATE KEY", pkcs8);
  const publicJwk: JsonWebKey = Object.assign(await crypto.subtle.exportKey("jwk", keys.publicKey), {
    x5c: [toBase64(der)],
  });
  return { pem: certificatePem + keyPem, certificatePem, keyPem, publicJwk };
}

function pem(label: string, der: Uint8Array): string {
  const lines = toBase64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Decodes a JWS's protected header and payload (no verification: for assertions on shape). */
export function decodeJws(
  jws: string,
): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const [header, payload] = jws.split(".");
  const decode = (part: string | undefined) =>
    JSON.parse(
      new TextDecoder().decode(Uint8Array.from(atob(toStandard(part ?? "")), (c) => c.charCodeAt(0))),
    );
  return { header: decode(header), payload: decode(payload) };
}

function toStandard(base64url: string): string {
  const standard = base64url.replaceAll("-", "+").replaceAll("_", "/");
  return standard + "=".repeat((4 - standard.length % 4) % 4);
}
