/**
 * The refusals of the sandbox's registration verifier (registration.ts), end to end: real
 * creationOptions over HTTP on 127.0.0.1, a real credential from the software key through
 * `core/webauthn/create.ts`, then one thing broken per POST. Each refusal must answer Graph's
 * error envelope with 400 and store no passkey.
 *
 * Two paths break a credential:
 * - as made by the software key (packed full attestation, x5c): used where nothing signed changes
 *   (body credential id) or where the signature itself is the thing broken;
 * - re-signed as packed self attestation with the test's own P-256 key (the software key does
 *   not export its credential key): the credential public key in authenticatorData is swapped
 *   for the test's key and `attStmt.sig` is recomputed over the edited authenticatorData and
 *   clientDataJSON, so the one edited field is the only check that can fail. The sandbox's
 *   policy (attestation not enforced) accepts self attestation, as the control shows.
 */
import assert from "node:assert/strict";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, fromBase64Any, randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { decodeCbor, decodeCborPrefix, encodeCbor } from "../../../core/ctap/cbor.ts";
import { CoseAlgorithm, encodeEc2PublicKey } from "../../../core/ctap/cose.ts";
import { create } from "../../../core/webauthn/create.ts";
import { newTestKey, scriptedUser, type TestKey } from "../../../test/software_key.ts";
import { type Sandbox, startSandbox } from "./server.ts";

const rpId = "login.microsoft.com";
const origin = `https://${rpId}`;
const pin = "4321";
const verifyFailed = "The WebAuthn registration could not be verified";

interface Answer {
  status: number;
  // deno-lint-ignore no-explicit-any
  body: any;
  headers: Headers;
}

interface Fido2Body {
  displayName: string;
  publicKeyCredential: {
    id: string;
    response: { clientDataJSON: string; attestationObject: string };
    clientExtensionResults: Record<string, unknown>;
  };
}

async function appToken(sandbox: Sandbox): Promise<string> {
  const app = sandbox.seeded.app;
  const response = await fetch(`${sandbox.url}/${sandbox.tenantId}/oauth2/v2.0/token`, {
    method: "POST",
    body: new URLSearchParams({
      grant_type: "client_credentials",
      client_id: app.clientId,
      client_secret: app.secret ?? "",
      scope: "https://graph.microsoft.com/.default",
    }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body.access_token;
}

async function setup() {
  const sandbox = await startSandbox({ users: 6, seed: 5 });
  const token = await appToken(sandbox);
  const graph = async (method: string, path: string, body?: unknown): Promise<Answer> => {
    const response = await fetch(`${sandbox.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return {
      status: response.status,
      body: text === "" ? undefined : JSON.parse(text),
      headers: response.headers,
    };
  };
  return { sandbox, graph };
}

type Graph = Awaited<ReturnType<typeof setup>>["graph"];

const methodsPath = (upn: string) => `/v1.0/users/${upn}/authentication/fido2Methods`;

async function creationOptions(graph: Graph, upn: string): Promise<Answer> {
  const options = await graph("GET", `${methodsPath(upn)}/creationOptions`);
  assert.equal(options.status, 200, JSON.stringify(options.body));
  return options;
}

/** A credential made by the software key through the WebAuthn client, as the POST body. */
async function softwareCredential(key: TestKey, options: Answer): Promise<Fido2Body> {
  const response = await create({
    options: options.body,
    origin,
    allowedRpIds: [rpId],
    authenticator: key,
    interaction: scriptedUser([pin]),
  });
  return {
    displayName: "Refusal test",
    publicKeyCredential: {
      id: response.id,
      response: {
        clientDataJSON: response.response.clientDataJSON,
        attestationObject: response.response.attestationObject,
      },
      clientExtensionResults: response.clientExtensionResults as Record<string, unknown>,
    },
  };
}

/** The attestation object as `core/ctap/cbor.ts` decodes it: text-keyed maps are plain objects. */
interface AttestationObject {
  fmt: string;
  attStmt: Record<string, unknown>;
  authData: Uint8Array;
}

function attestationOf(body: Fido2Body): AttestationObject {
  return decodeCbor(fromBase64Any(body.publicKeyCredential.response.attestationObject)) as AttestationObject;
}

function withAttestation(body: Fido2Body, attestation: AttestationObject): Fido2Body {
  const credential = body.publicKeyCredential;
  return {
    ...body,
    publicKeyCredential: {
      ...credential,
      response: { ...credential.response, attestationObject: toBase64Url(encodeCbor(attestation)) },
    },
  };
}

/** authenticatorData offsets (https://www.w3.org/TR/webauthn-3/#sctn-authenticator-data). */
const flagsOffset = 32;
const credentialIdLengthOffset = 55 - 2;
const flagUp = 0x01;
const flagUv = 0x04;

interface Edits {
  clientData?: (data: Record<string, unknown>) => Record<string, unknown>;
  authData?: (authData: Uint8Array) => void;
}

/**
 * Re-signs the software key's credential as packed self attestation
 * (https://www.w3.org/TR/webauthn-3/#sctn-packed-attestation, "self attestation": `alg` and `sig`,
 * no `x5c`, signed with the credential private key): the credential public key becomes the
 * test's own P-256 key, `edits` are applied, and the signature covers the edited bytes.
 */
function selfAttested(body: Fido2Body, edits: Edits = {}): Fido2Body {
  const original = attestationOf(body).authData;
  const idLength = (original[credentialIdLengthOffset]! << 8) | original[credentialIdLengthOffset + 1]!;
  const keyStart = credentialIdLengthOffset + 2 + idLength;
  const [, extensions] = decodeCborPrefix(original.subarray(keyStart));
  const secret = p256.utils.randomSecretKey();
  const cose = encodeCbor(encodeEc2PublicKey(p256.getPublicKey(secret, false), CoseAlgorithm.ES256));
  const authData = concatBytes(original.slice(0, keyStart), cose, extensions);
  edits.authData?.(authData);

  const credential = body.publicKeyCredential;
  const clientData = JSON.parse(new TextDecoder().decode(fromBase64Any(credential.response.clientDataJSON)));
  const clientDataJSON = new TextEncoder().encode(
    JSON.stringify(edits.clientData?.(clientData) ?? clientData),
  );
  // ES256 attestation signatures are DER (https://www.w3.org/TR/webauthn-3/#sctn-signature-attestation-types).
  const sig = p256.sign(concatBytes(authData, sha256(clientDataJSON)), secret, { format: "der" });
  const attestation: AttestationObject = {
    fmt: "packed",
    attStmt: { alg: CoseAlgorithm.ES256, sig },
    authData,
  };
  return withAttestation({
    ...body,
    publicKeyCredential: {
      ...credential,
      response: { ...credential.response, clientDataJSON: toBase64Url(clientDataJSON) },
    },
  }, attestation);
}

/** POSTs `body` and asserts Graph's 400 envelope, the refusal's reason, and that nothing was stored. */
async function assertRefused(
  sandbox: Sandbox,
  graph: Graph,
  upn: string,
  body: Fido2Body,
  reason: RegExp,
): Promise<void> {
  const answer = await graph("POST", methodsPath(upn), body);
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.deepEqual(Object.keys(answer.body), ["error"]);
  assert.equal(answer.body.error.code, "badRequest");
  assert.match(answer.body.error.message, reason);
  const inner = answer.body.error.innerError;
  assert.match(inner.date, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
  assert.equal(inner["request-id"], answer.headers.get("request-id"));
  await assertNothingStored(sandbox, graph, upn);
}

async function assertNothingStored(sandbox: Sandbox, graph: Graph, upn: string): Promise<void> {
  assert.deepEqual(sandbox.tenant.fido2Methods(sandbox.tenant.user(upn)!.id), []);
  const list = await graph("GET", methodsPath(upn));
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.value, []);
}

Deno.test("controls: the software key's credential, and the same credential re-signed as self attestation, are accepted", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0001@contoso.sandbox";
  const user = sandbox.tenant.user(upn)!;
  const key = await newTestKey({ pin });

  const body = await softwareCredential(key, await creationOptions(graph, upn));
  const created = await graph("POST", methodsPath(upn), body);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const stored = sandbox.tenant.fido2Methods(user.id);
  assert.equal(stored.length, 1);
  assert.equal(stored[0]!.credentialId, body.publicKeyCredential.id);
  assert.equal(stored[0]!.attestationFormat, "packed");
  assert.equal(stored[0]!.verified, true);
  assert.equal(stored[0]!.userVerified, true);

  // The re-signing path on its own passes, so a refusal below is the one edited field.
  const other = await newTestKey({ pin });
  const resigned = selfAttested(await softwareCredential(other, await creationOptions(graph, upn)));
  const self = await graph("POST", methodsPath(upn), resigned);
  assert.equal(self.status, 201, JSON.stringify(self.body));
  assert.equal(self.body.attestationLevel, "notAttested");
  assert.equal(sandbox.tenant.fido2Methods(user.id).length, 2);
});

Deno.test("a flipped byte of the packed attestation signature (full or self attestation) is refused and stores nothing", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0002@contoso.sandbox";
  const body = await softwareCredential(await newTestKey({ pin }), await creationOptions(graph, upn));
  const attestation = attestationOf(body);
  const statement = attestation.attStmt;
  assert.equal(attestation.fmt, "packed");
  assert.ok(Array.isArray(statement.x5c), "the software key's full attestation carries x5c");
  const sig = Uint8Array.from(statement.sig as Uint8Array);
  // The last byte: the DER framing stays intact, so only the signature's value is wrong.
  sig[sig.length - 1]! ^= 0x01;
  statement.sig = sig;
  // @simplewebauthn/server answers verified: false; registration.ts refuses with its own wording.
  await assertRefused(
    sandbox,
    graph,
    upn,
    withAttestation(body, attestation),
    /^The WebAuthn registration could not be verified\.$/,
  );

  // The self-attestation path's signature is checked too, so its control in the test above
  // means the signature was good, not ignored.
  const resigned = selfAttested(
    await softwareCredential(await newTestKey({ pin }), await creationOptions(graph, upn)),
  );
  const self = attestationOf(resigned);
  assert.equal(self.attStmt.x5c, undefined);
  const selfSig = Uint8Array.from(self.attStmt.sig as Uint8Array);
  selfSig[selfSig.length - 1]! ^= 0x01;
  self.attStmt.sig = selfSig;
  await assertRefused(
    sandbox,
    graph,
    upn,
    withAttestation(resigned, self),
    /^The WebAuthn registration could not be verified\.$/,
  );
});

Deno.test("clientDataJSON with a wrong origin, type or challenge is refused and stores nothing", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0003@contoso.sandbox";
  const key = await newTestKey({ pin });
  const broken = async (edit: NonNullable<Edits["clientData"]>) =>
    selfAttested(await softwareCredential(key, await creationOptions(graph, upn)), { clientData: edit });

  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((data) => ({ ...data, origin: "https://evil.example" })),
    new RegExp(`^${verifyFailed}: Unexpected registration response origin "https://evil\\.example"`),
  );
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((data) => ({ ...data, origin: "http://login.microsoft.com" })),
    new RegExp(`^${verifyFailed}: Unexpected registration response origin "http://login\\.microsoft\\.com"`),
  );
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((data) => ({ ...data, type: "webauthn.get" })),
    new RegExp(`^${verifyFailed}: Unexpected registration response type: webauthn\\.get`),
  );
  // A challenge creationOptions never issued: the sandbox's challenge store refuses it.
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((data) => ({ ...data, challenge: toBase64Url(randomBytes(32)) })),
    /not issued for this user by creationOptions, or has already been used/,
  );
});

Deno.test("a challenge already spent on a successful registration is refused for a new credential", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0004@contoso.sandbox";
  const user = sandbox.tenant.user(upn)!;
  const options = await creationOptions(graph, upn);
  const first = await graph(
    "POST",
    methodsPath(upn),
    await softwareCredential(await newTestKey({ pin }), options),
  );
  assert.equal(first.status, 201, JSON.stringify(first.body));
  // Another key, same options: a new credential, so neither the duplicate check nor a replay of
  // the same bytes is what refuses it.
  const second = await softwareCredential(await newTestKey({ pin }), options);
  const answer = await graph("POST", methodsPath(upn), second);
  assert.equal(answer.status, 400, JSON.stringify(answer.body));
  assert.equal(answer.body.error.code, "badRequest");
  assert.match(answer.body.error.message, /has already been used/);
  const stored = sandbox.tenant.fido2Methods(user.id);
  assert.equal(stored.length, 1);
  assert.notEqual(stored[0]!.credentialId, second.publicKeyCredential.id);
});

Deno.test("authenticatorData with another rp id's hash, or the UP or UV flag cleared, is refused and stores nothing", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0005@contoso.sandbox";
  const key = await newTestKey({ pin });
  const broken = async (edit: NonNullable<Edits["authData"]>) =>
    selfAttested(await softwareCredential(key, await creationOptions(graph, upn)), { authData: edit });

  const otherRp = sha256(new TextEncoder().encode("evil.example"));
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((authData) => authData.set(otherRp, 0)),
    new RegExp(`^${verifyFailed}: Unexpected RP ID hash`),
  );
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((authData) => void (authData[flagsOffset]! &= ~flagUp)),
    new RegExp(`^${verifyFailed}: User presence was required, but user was not present`),
  );
  // Entra requires user verification for passkeys: creationOptions answers
  // authenticatorSelection.userVerification "required" (as recorded; graph_test.ts asserts it),
  // and a Microsoft-compatible security key must implement client PIN
  // (https://learn.microsoft.com/en-us/windows/security/identity-protection/hello-for-business/microsoft-compatible-security-key).
  // registration.ts passes requireUserVerification: true, so the verifier refuses a cleared UV.
  await assertRefused(
    sandbox,
    graph,
    upn,
    await broken((authData) => void (authData[flagsOffset]! &= ~flagUv)),
    new RegExp(`^${verifyFailed}: User verification was required, but user could not be verified`),
  );
});

Deno.test("a body credential id that differs from the one in authenticatorData is refused and stores nothing", async () => {
  const { sandbox, graph } = await setup();
  await using _ = sandbox;
  const upn = "user0006@contoso.sandbox";
  const body = await softwareCredential(await newTestKey({ pin }), await creationOptions(graph, upn));
  // The body's id is not signed, so the software key's own attestation stays valid.
  const otherId = toBase64Url(randomBytes(fromBase64Any(body.publicKeyCredential.id).length));
  await assertRefused(
    sandbox,
    graph,
    upn,
    { ...body, publicKeyCredential: { ...body.publicKeyCredential, id: otherId } },
    /^publicKeyCredential\.id does not match the credential id in attestationObject\.$/,
  );
});
