import assert from "node:assert/strict";
import { p256 } from "@noble/curves/nist.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { x509 } from "../../core/x509.ts";
import { SettingsService, verifyRegistrationResponse } from "@simplewebauthn/server";
import { encode } from "cborg";
import { concatBytes, fromHex, randomBytes, toBase64Url, utf8 } from "../../core/bytes.ts";
import {
  aaguidExtensionOid,
  type AttestationChain,
  attestationChainSchema,
  createAttestationChain,
  loadAttestationChain,
  signPacked,
  storeAttestationChain,
} from "./attestation.ts";

const aaguid = fromHex("70726f76697369696f6e696e67736b01");

Deno.test("the attestation certificate meets WebAuthn L3 §8.2.1 packed certificate requirements", async () => {
  const chain = await createAttestationChain({ aaguid, organisation: "Contoso, Ltd." });
  const leaf = new x509.X509Certificate(chain.attestationCertificate);

  // Version MUST be set to 3 (ASN.1 value 2): the first field of TBSCertificate is [0] { INTEGER 2 }.
  const der = chain.attestationCertificate;
  const tbsOffset = 2 + (der[1]! & 0x80 ? der[1]! & 0x7f : 0);
  const tbs = der.subarray(tbsOffset);
  const versionOffset = 2 + (tbs[1]! & 0x80 ? tbs[1]! & 0x7f : 0);
  assert.deepEqual([...tbs.subarray(versionOffset, versionOffset + 5)], [0xa0, 0x03, 0x02, 0x01, 0x02]);

  const subject = leaf.subjectName;
  assert.deepEqual(subject.getField("C"), ["US"]);
  assert.deepEqual(subject.getField("O"), ["Contoso, Ltd."]);
  assert.deepEqual(subject.getField("OU"), ["Authenticator Attestation"]);
  assert.equal(subject.getField("CN").length, 1);

  const basic = leaf.getExtension(x509.BasicConstraintsExtension);
  assert.ok(basic, "basicConstraints is present");
  assert.equal(basic.ca, false);
  assert.equal(basic.critical, true);

  const extension = leaf.getExtension(aaguidExtensionOid);
  assert.ok(extension, "id-fido-gen-ce-aaguid is present");
  assert.equal(extension.critical, false);
  // extnValue holds a DER OCTET STRING of the 16-byte AAGUID.
  assert.deepEqual(new Uint8Array(extension.value), new Uint8Array([0x04, 0x10, ...aaguid]));
});

Deno.test("the attestation certificate chains to the self-signed root CA", async () => {
  const chain = await createAttestationChain({ aaguid, validityYears: 5 });
  const root = new x509.X509Certificate(chain.rootCertificate);
  const leaf = new x509.X509Certificate(chain.attestationCertificate);

  assert.ok(await root.isSelfSigned());
  assert.ok(await root.verify({ date: new Date() }));
  assert.ok(await leaf.verify({ publicKey: root, date: new Date() }));
  assert.equal(leaf.issuer, root.subject);
  const rootBasic = root.getExtension(x509.BasicConstraintsExtension);
  assert.equal(rootBasic?.ca, true);
  const usage = root.getExtension(x509.KeyUsagesExtension);
  assert.ok(usage && (usage.usages & x509.KeyUsageFlags.keyCertSign) !== 0);

  const built = await new x509.X509ChainBuilder({ certificates: [root] }).build(leaf);
  assert.deepEqual(Array.from(built, (certificate) => certificate.serialNumber), [
    leaf.serialNumber,
    root.serialNumber,
  ]);

  const years = (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / (365.25 * 24 * 3600 * 1000);
  assert.ok(Math.abs(years - 5) < 0.01, `valid for ${years} years`);

  const other = await createAttestationChain({ aaguid });
  assert.equal(
    await leaf.verify({ publicKey: new x509.X509Certificate(other.rootCertificate), signatureOnly: true }),
    false,
  );
});

Deno.test("signPacked makes a DER ECDSA-SHA256 signature the certificate's public key verifies", async () => {
  const chain = await createAttestationChain({ aaguid });
  const leaf = new x509.X509Certificate(chain.attestationCertificate);
  const data = utf8("authenticatorData || clientDataHash");
  const signature = signPacked(chain.attestationPrivateKey, data);
  assert.equal(signature[0], 0x30, "a DER SEQUENCE");

  // Independent check with WebCrypto, which takes the raw r || s form.
  const publicKey = await leaf.publicKey.export({ name: "ECDSA", namedCurve: "P-256" }, ["verify"]);
  const raw = p256.Signature.fromBytes(signature, "der").toBytes("compact");
  assert.ok(
    await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, publicKey, new Uint8Array(raw), data),
  );
  assert.equal(
    await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      publicKey,
      new Uint8Array(raw),
      utf8("other"),
    ),
    false,
  );

  // And the private scalar belongs to the certificate's key.
  const spkiPoint = new Uint8Array(await crypto.subtle.exportKey("raw", publicKey));
  assert.deepEqual(p256.getPublicKey(chain.attestationPrivateKey, false), spkiPoint);
  assert.ok(p256.verify(signature, sha256(data), spkiPoint, { prehash: false, format: "der" }));
});

Deno.test("an attestation chain survives the vault's stored form", async () => {
  const chain = await createAttestationChain({ aaguid });
  const stored = attestationChainSchema.parse(JSON.parse(JSON.stringify(storeAttestationChain(chain))));
  assert.deepEqual(loadAttestationChain(stored), chain);
  assert.equal(attestationChainSchema.safeParse({ ...stored, privateKey: "AAAA" }).success, false);
});

Deno.test("createAttestationChain refuses an AAGUID that is not 16 bytes", async () => {
  await assert.rejects(createAttestationChain({ aaguid: new Uint8Array(15) }), {
    name: "RangeError",
    message: "Cannot create an attestation certificate: the AAGUID is 15 bytes, expected 16",
  });
  await assert.rejects(createAttestationChain({ aaguid, country: "usa" }), RangeError);
});

/** A `packed` registration response as a software key would return it, built by hand. */
function packedRegistration(
  chain: AttestationChain,
  options: { origin: string; rpId: string; challenge: string },
) {
  const credentialKey = p256.utils.randomSecretKey();
  const point = p256.getPublicKey(credentialKey, false);
  const credentialId = randomBytes(32);
  const coseKey = new Map<number, number | Uint8Array>([
    [1, 2], // kty: EC2
    [3, -7], // alg: ES256
    [-1, 1], // crv: P-256
    [-2, point.subarray(1, 33)],
    [-3, point.subarray(33)],
  ]);
  const cosePublicKey = encode(coseKey);
  const authData = concatBytes(
    sha256(utf8(options.rpId)),
    Uint8Array.of(0x41), // UP | AT
    Uint8Array.of(0, 0, 0, 0),
    aaguid,
    Uint8Array.of(0, credentialId.length),
    credentialId,
    cosePublicKey,
  );
  const clientDataJSON = utf8(
    JSON.stringify({ type: "webauthn.create", challenge: options.challenge, origin: options.origin }),
  );
  const signature = signPacked(chain.attestationPrivateKey, concatBytes(authData, sha256(clientDataJSON)));
  const attestationObject = encode({
    fmt: "packed",
    attStmt: { alg: -7, sig: signature, x5c: [chain.attestationCertificate] },
    authData,
  });
  return {
    id: toBase64Url(credentialId),
    rawId: toBase64Url(credentialId),
    type: "public-key" as const,
    response: {
      clientDataJSON: toBase64Url(clientDataJSON),
      attestationObject: toBase64Url(attestationObject),
    },
    clientExtensionResults: {},
  };
}

Deno.test("SimpleWebAuthn accepts a packed attestation from the chain, trusting only its root", async () => {
  const chain = await createAttestationChain({ aaguid });
  const expected = {
    expectedOrigin: "https://login.contoso.com",
    expectedRPID: "contoso.com",
    expectedChallenge: "Y2hhbGxlbmdl",
  };
  const response = packedRegistration(chain, {
    origin: expected.expectedOrigin,
    rpId: expected.expectedRPID,
    challenge: expected.expectedChallenge,
  });
  try {
    SettingsService.setRootCertificates({ identifier: "packed", certificates: [chain.rootCertificate] });
    const result = await verifyRegistrationResponse({
      response,
      ...expected,
      requireUserVerification: false,
    });
    assert.equal(result.verified, true);
    assert.equal(result.registrationInfo?.aaguid, "70726f76-6973-6969-6f6e-696e67736b01");
    assert.equal(result.registrationInfo?.fmt, "packed");

    const stranger = await createAttestationChain({ aaguid });
    SettingsService.setRootCertificates({ identifier: "packed", certificates: [stranger.rootCertificate] });
    await assert.rejects(
      verifyRegistrationResponse({ response, ...expected, requireUserVerification: false }),
      {
        message: /could not be chained to any specified trust anchor/,
      },
    );
  } finally {
    SettingsService.setRootCertificates({ identifier: "packed", certificates: [] });
  }
});
