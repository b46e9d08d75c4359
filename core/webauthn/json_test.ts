import assert from "node:assert/strict";
import fc from "fast-check";
import graphResponse from "../../test/fixtures/graph-creation-options.json" with { type: "json" };
import recordedResponse from "../../test/fixtures/graph-creation-options-recorded.json" with { type: "json" };
import { fromBase64Any, toBase64, toBase64Url, utf8 } from "../bytes.ts";
import { toBase64UrlPaddingDigit } from "./credential_id_text.ts";
import { ProvisioningError } from "../errors.ts";
import {
  maxChallengeBytes,
  maxCredentialDescriptors,
  parseAuthenticationResponse,
  parseCreationOptions,
  parseRegistrationResponse,
  parseRequestOptions,
} from "./json.ts";

/** A fresh, mutable copy of Graph's `publicKey` dictionary from the fixture. */
function graphPublicKey(): Record<string, unknown> {
  return structuredClone(graphResponse.publicKey) as Record<string, unknown>;
}

/** Asserts that `fn` throws a ProvisioningError with `code` and exactly `message`; returns it. */
function assertRefused(fn: () => unknown, message: string, code = "invalid-options"): ProvisioningError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ProvisioningError, `expected a ProvisioningError, got ${String(caught)}`);
  assert.equal(caught.message, message);
  assert.equal(caught.code, code);
  return caught;
}

function withChange(change: (options: Record<string, unknown>) => void): Record<string, unknown> {
  const options = graphPublicKey();
  change(options);
  return options;
}

function record(value: unknown): Record<string, unknown> {
  assert.ok(typeof value === "object" && value !== null);
  return value as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Graph's creation options
// ---------------------------------------------------------------------------------------------

Deno.test("reads Graph's creationOptions response (webauthnCredentialCreationOptions) as it arrives", () => {
  const options = parseCreationOptions(graphResponse);
  assert.deepStrictEqual(options.rp, { id: "login.microsoft.com", name: "Microsoft" });
  assert.deepStrictEqual(options.user, {
    id: utf8("adele.vance@contoso.com"),
    name: "adele.vance@contoso.com",
    displayName: "Adele Vance",
  });
  assert.equal(options.challenge.length, 32);
  assert.equal(toBase64Url(options.challenge), graphResponse.publicKey.challenge);
  assert.deepStrictEqual(options.pubKeyCredParams, [
    { type: "public-key", alg: -7 },
    { type: "public-key", alg: -257 },
  ]);
  assert.equal(options.timeout, 60000);
  assert.deepStrictEqual(options.authenticatorSelection, {
    authenticatorAttachment: "cross-platform",
    requireResidentKey: true,
    userVerification: "required",
  });
  assert.equal(options.attestation, "direct");
  assert.equal(options.extensions?.hmacCreateSecret, true);
  assert.equal(options.extensions?.enforceCredentialProtectionPolicy, true);
  assert.equal(options.extensions?.credentialProtectionPolicy, "userVerificationOptional");
  assert.equal(options.excludeCredentials?.length, 2);
  assert.equal(options.excludeCredentials?.[0]?.id.length, 64);
  assert.deepStrictEqual(options.excludeCredentials?.[0]?.transports, ["usb", "nfc"]);
  // The decoded bytes are ArrayBuffer-backed copies, ready for CBOR.
  assert.ok(options.challenge.buffer instanceof ArrayBuffer);
});

Deno.test("reads the bare publicKey dictionary and the { publicKey } wrapper alike", () => {
  const bare = parseCreationOptions(graphPublicKey());
  assert.deepStrictEqual(parseCreationOptions({ publicKey: graphPublicKey() }), bare);
  assert.deepStrictEqual(parseCreationOptions(graphResponse), bare);
});

Deno.test("decodes excludeCredentials ids sent as base64url or as padded standard base64", () => {
  const id = new Uint8Array([0xfa, 0xf7, 0xf4, 0xf1, 0xee, 0xeb, 0xe8, 0xe5, 0xfb, 0xff, 0xfe]);
  const options = parseCreationOptions(withChange((o) => {
    o["excludeCredentials"] = [
      { type: "public-key", id: toBase64Url(id) },
      { type: "public-key", id: toBase64(id) },
      { type: "public-key", id: toBase64(id).replace(/=+$/, "") },
    ];
  }));
  assert.ok(toBase64(id).includes("+") && toBase64(id).endsWith("="), "the vector exercises both alphabets");
  assert.deepStrictEqual(options.excludeCredentials?.map((c) => c.id), [id, id, id]);
  // The fixture's padded id reads as the same bytes as its base64url spelling.
  const fixture = parseCreationOptions(graphResponse).excludeCredentials?.[1]?.id;
  assert.deepStrictEqual(fixture, fromBase64Any("-vf08e7r6OXi39zZ1tPQzQ"));
});

Deno.test("reads the creationOptions response recorded from a real tenant, 5 KB JWE challenge and all", () => {
  // test/fixtures/graph-creation-options-recorded.json: from MichaelGrafnetter/webauthn-interop.
  const options = parseCreationOptions(recordedResponse);
  assert.equal(recordedResponse.publicKey.challenge.length, 6931);
  assert.equal(options.challenge.length, 5198);
  // The challenge is the base64url of a compact JWE (RSA-OAEP-256 / A256GCM with an x5c chain).
  const jwe = new TextDecoder().decode(options.challenge);
  assert.equal(jwe.split(".").length, 5);
  assert.match(
    JSON.stringify(JSON.parse(atob(jwe.split(".")[0]!))),
    /"alg":"RSA-OAEP-256","enc":"A256GCM","x5c"/,
  );
  // clientDataJSON carries it re-encoded: byte for byte what the server sent.
  assert.equal(toBase64Url(options.challenge), recordedResponse.publicKey.challenge);
  // An opaque 51-byte user handle, not the sign-in name.
  assert.equal(options.user.id.length, 51);
  assert.equal(options.rp.id, "login.microsoft.com");
  assert.equal(options.timeout, 60000);
  assert.deepStrictEqual(options.excludeCredentials?.map((c) => c.id.length), [32, 32, 16, 32]);
  assert.deepStrictEqual(options.excludeCredentials?.[2]?.transports, ["usb", "nfc"]);
});

Deno.test("a timeout of 0 (Graph beta's example) reads as no timeout, so the client's default applies", () => {
  assert.equal(parseCreationOptions(withChange((o) => o["timeout"] = 0)).timeout, undefined);
  assert.equal(parseCreationOptions(withChange((o) => delete o["timeout"])).timeout, undefined);
  assert.equal(parseCreationOptions(withChange((o) => o["timeout"] = 60000)).timeout, 60000);
  assert.equal(parseRequestOptions({ challenge: "AAAA", timeout: 0 }).timeout, undefined);
});

Deno.test("accepts any challenge up to the documented cap and refuses one byte more", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: maxChallengeBytes }),
      fc.boolean(),
      (length, padded) => {
        const challenge = new Uint8Array(length).map((_, i) => (i * 131 + length) & 0xff);
        const options = parseCreationOptions(withChange((o) => {
          o["challenge"] = padded ? toBase64(challenge) : toBase64Url(challenge);
        }));
        assert.equal(options.challenge.length, length);
        assert.deepStrictEqual(options.challenge, challenge);
      },
    ),
    { numRuns: 60 },
  );
  parseCreationOptions(withChange((o) => o["challenge"] = toBase64Url(new Uint8Array(maxChallengeBytes))));
  assertRefused(
    () =>
      parseCreationOptions(
        withChange((o) => o["challenge"] = toBase64Url(new Uint8Array(maxChallengeBytes + 1))),
      ),
    `Cannot read creation options: "challenge" is ${
      maxChallengeBytes + 1
    } bytes long; a challenge must be at most ${maxChallengeBytes} bytes`,
  );
});

Deno.test("decodes excludeCredentials ids in all three encodings to the same id (property)", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 256 }),
      fc.constantFrom(toBase64Url, toBase64, toBase64UrlPaddingDigit),
      (id, encode) => {
        const options = parseCreationOptions(withChange((o) => {
          o["excludeCredentials"] = [{ type: "public-key", id: encode(id), transports: [] }];
        }));
        const ids = options.excludeCredentials?.map((c) => c.id) ?? [];
        assert.equal(ids.filter((candidate) => toBase64(candidate) === toBase64(id)).length, 1);
        assert.ok(ids.length === 1 || ids.length === 2);
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("keeps Graph's @odata.type and unknown extensions as unknown, harmless values", () => {
  const options = parseCreationOptions(withChange((o) => {
    o["extensions"] = { ...record(o["extensions"]), prf: { eval: { first: "AAAA" } }, credProps: true };
  }));
  assert.equal(
    options.extensions?.["@odata.type"],
    "#microsoft.graph.webauthnAuthenticationExtensionsClientInputs",
  );
  assert.deepStrictEqual(options.extensions?.["prf"], { eval: { first: "AAAA" } });
  assert.equal(options.extensions?.credProps, true);
  // Unknown top-level members (Graph's annotations) are dropped.
  assert.equal(Object.hasOwn(options, "@odata.type"), false);
});

Deno.test("uses ES256 and RS256 when the server sends no pubKeyCredParams (WebAuthn L3 §5.1.3)", () => {
  const options = parseCreationOptions(withChange((o) => o["pubKeyCredParams"] = []));
  assert.deepStrictEqual(options.pubKeyCredParams, [
    { type: "public-key", alg: -7 },
    { type: "public-key", alg: -257 },
  ]);
});

Deno.test("ignores enum values it does not know, as browsers do, instead of refusing the options", () => {
  const options = parseCreationOptions(withChange((o) => {
    o["authenticatorSelection"] = {
      authenticatorAttachment: "implant",
      residentKey: "sometimes",
      requireResidentKey: true,
      userVerification: "telepathy",
    };
    o["attestation"] = "everything";
    o["hints"] = ["security-key", "carrier-pigeon", "hybrid"];
    o["extensions"] = { credentialProtectionPolicy: "userVerificationMaybe", hmacCreateSecret: false };
    o["excludeCredentials"] = [{ type: "public-key", id: "AAAA", transports: ["usb", "quantum", "nfc"] }];
    o["pubKeyCredParams"] = [{ type: "password", alg: -7 }, { type: "public-key", alg: -8 }];
  }));
  assert.deepStrictEqual(options.authenticatorSelection, {
    authenticatorAttachment: undefined,
    residentKey: undefined,
    requireResidentKey: true,
    userVerification: undefined,
  });
  assert.equal(options.attestation, undefined);
  assert.deepStrictEqual(options.hints, ["security-key", "hybrid"]);
  assert.equal(options.extensions?.credentialProtectionPolicy, undefined);
  assert.deepStrictEqual(options.excludeCredentials?.[0]?.transports, ["usb", "nfc"]);
  // Unknown credential types are kept for the caller to skip (WebAuthn §5.1.3 step 10).
  assert.deepStrictEqual(options.pubKeyCredParams.map((p) => p.type), ["password", "public-key"]);
});

// ---------------------------------------------------------------------------------------------
// Hostile and broken creation options
// ---------------------------------------------------------------------------------------------

const brokenCreationOptions: [string, (options: Record<string, unknown>) => void, string][] = [
  ["missing challenge", (o) => delete o["challenge"], '"challenge" is missing'],
  [
    "challenge of the wrong type",
    (o) => o["challenge"] = [1, 2, 3],
    '"challenge" must be a string, got an array of 3',
  ],
  [
    "challenge not base64",
    (o) => o["challenge"] = "not base64!",
    '"challenge" is not base64url: "not base64!"',
  ],
  [
    "huge challenge",
    (o) => o["challenge"] = "A".repeat(1_000_000),
    '"challenge" is 1000000 characters long; a challenge must be at most 65536 bytes',
  ],
  ["missing rp", (o) => delete o["rp"], '"rp" is missing'],
  ["rp without a name", (o) => o["rp"] = { id: "login.microsoft.com" }, '"rp.name" is missing'],
  [
    "rp.id of the wrong type",
    (o) => o["rp"] = { id: 42, name: "x" },
    '"rp.id" must be a string, got number 42',
  ],
  [
    "user.id of the wrong type",
    (o) => record(o["user"])["id"] = 42,
    '"user.id" must be a string, got number 42',
  ],
  ["user.id not base64", (o) => record(o["user"])["id"] = "d@vid", '"user.id" is not base64url: "d@vid"'],
  [
    "empty user.id",
    (o) => record(o["user"])["id"] = "",
    '"user.id" is 0 bytes long; a user handle must be 1 to 64 bytes',
  ],
  [
    "user.id over 64 bytes",
    (o) => record(o["user"])["id"] = toBase64Url(new Uint8Array(65)),
    '"user.id" is 65 bytes long; a user handle must be 1 to 64 bytes',
  ],
  [
    "user without displayName",
    (o) => delete record(o["user"])["displayName"],
    '"user.displayName" is missing',
  ],
  [
    "huge displayName",
    (o) => record(o["user"])["displayName"] = "x".repeat(1_000_000),
    '"user.displayName" is 1000000 characters long, more than the 1024 accepted',
  ],
  [
    "pubKeyCredParams not a list",
    (o) => o["pubKeyCredParams"] = { alg: -7 },
    '"pubKeyCredParams" must be an array, got an object',
  ],
  [
    "non-integer alg",
    (o) => o["pubKeyCredParams"] = [{ type: "public-key", alg: 1.5 }],
    '"pubKeyCredParams[0].alg" must be an integer, got number 1.5',
  ],
  [
    "alg as a string",
    (o) => o["pubKeyCredParams"] = [{ type: "public-key", alg: "-7" }],
    '"pubKeyCredParams[0].alg" must be a number, got "-7"',
  ],
  [
    "huge pubKeyCredParams",
    (o) => o["pubKeyCredParams"] = Array.from({ length: 10_000 }, () => ({ type: "public-key", alg: -7 })),
    '"pubKeyCredParams" has 10000 entries, more than the 64 accepted',
  ],
  ["timeout as a string", (o) => o["timeout"] = "60000", '"timeout" must be a number, got "60000"'],
  ["negative timeout", (o) => o["timeout"] = -1, '"timeout" must be at least 0, got number -1'],
  [
    "excludeCredentials id not base64",
    (o) => record(record(o["excludeCredentials"])[1])["id"] = "%%%",
    '"excludeCredentials[1].id" is neither base64url, padded base64 nor base64url with a padding digit: "%%%"',
  ],
  [
    "excludeCredentials id over 1023 bytes",
    (o) => o["excludeCredentials"] = [{ type: "public-key", id: toBase64Url(new Uint8Array(1024)) }],
    '"excludeCredentials[0].id" is 1024 bytes long; a credential id must be 1 to 1023 bytes',
  ],
  [
    "huge excludeCredentials",
    (o) =>
      o["excludeCredentials"] = Array.from({ length: 100_000 }, () => ({ type: "public-key", id: "AAAA" })),
    `"excludeCredentials" has 100000 entries, more than the ${maxCredentialDescriptors} accepted`,
  ],
  [
    "transports not a list",
    (o) => o["excludeCredentials"] = [{ type: "public-key", id: "AAAA", transports: "usb" }],
    '"excludeCredentials[0].transports" must be an array, got "usb"',
  ],
  [
    "requireResidentKey as a string",
    (o) => o["authenticatorSelection"] = { requireResidentKey: "yes" },
    '"authenticatorSelection.requireResidentKey" must be a boolean, got "yes"',
  ],
  [
    "userVerification of the wrong type",
    (o) => o["authenticatorSelection"] = { userVerification: 3 },
    '"authenticatorSelection.userVerification" must be a string, got number 3',
  ],
  [
    "hmacCreateSecret as a string",
    (o) => o["extensions"] = { hmacCreateSecret: "true" },
    '"extensions.hmacCreateSecret" must be a boolean, got "true"',
  ],
  [
    "extensions as a string",
    (o) => o["extensions"] = "credProps",
    '"extensions" must be an object, got "credProps"',
  ],
];

for (const [name, change, problem] of brokenCreationOptions) {
  Deno.test(`refuses creation options with ${name}, naming the field`, () => {
    assertRefused(() => parseCreationOptions(withChange(change)), `Cannot read creation options: ${problem}`);
  });
}

Deno.test("names the field inside the { publicKey } wrapper and says what to do", () => {
  const publicKey = withChange((o) => delete o["challenge"]);
  const error = assertRefused(
    () => parseCreationOptions({ challengeTimeoutDateTime: "2026-04-20T10:05:00Z", publicKey }),
    'Cannot read creation options: "publicKey.challenge" is missing',
  );
  assert.match(error.hint ?? "", /nothing was sent to the authenticator/);
  assert.ok(error.cause !== undefined);
  assertRefused(
    () => parseCreationOptions({ publicKey: 5 }),
    'Cannot read creation options: "publicKey" must be an object, got number 5',
  );
});

Deno.test("counts the other problems when there are several", () => {
  assertRefused(
    () =>
      parseCreationOptions(withChange((o) => {
        delete o["challenge"];
        delete o["rp"];
        o["timeout"] = "soon";
      })),
    'Cannot read creation options: "rp" is missing (and 2 more problems)',
  );
});

Deno.test("refuses creation options that are not an object", () => {
  for (
    const [input, got] of [[null, "null"], [5, "number 5"], ["{}", '"{}"'], [[], "an array of 0"], [
      undefined,
      "nothing",
    ]] as const
  ) {
    assertRefused(
      () => parseCreationOptions(input),
      `Cannot read creation options: expected a JSON object, got ${got}`,
    );
  }
});

Deno.test("prototype-pollution keys neither pollute Object.prototype nor supply fields", () => {
  const publicKeyText = JSON.stringify(graphResponse.publicKey);
  const hostile = JSON.parse(
    `{"__proto__": {"polluted": true, "challenge": "AAAA"}, "publicKey": ${
      publicKeyText.replace(
        '"extensions":{',
        '"extensions":{"__proto__":{"credProps":true,"polluted":true},"constructor":{"prototype":{"polluted":true}},',
      ).replace('"user":{', '"user":{"__proto__":{"id":"AAAA","isAdmin":true},')
    }}`,
  ) as unknown;
  const options = parseCreationOptions(hostile);
  assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
  assert.equal(Object.getPrototypeOf(options), Object.prototype);
  assert.equal(Object.getPrototypeOf(options.extensions), Object.prototype);
  assert.equal(Object.getPrototypeOf(options.user), Object.prototype);
  assert.equal(options.extensions?.credProps, undefined, "credProps must not be inherited from __proto__");
  assert.equal(Object.hasOwn(options.extensions ?? {}, "__proto__"), false);
  // "constructor" is just an unknown extension: kept as data, never called.
  assert.deepStrictEqual(options.extensions?.["constructor"], { prototype: { polluted: true } });
  assert.equal(toBase64Url(options.user.id), graphResponse.publicKey.user.id);

  // A challenge offered only through __proto__ is no challenge.
  assertRefused(
    () =>
      parseCreationOptions(
        JSON.parse(
          `{"__proto__": {"challenge": "AAAA"}, ${
            publicKeyText.slice(1).replace(/"challenge":"[^"]*",/, "")
          }`,
        ),
      ),
    'Cannot read creation options: "challenge" is missing',
  );
  assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
});

Deno.test("any JSON value gives options or an invalid-options error, never another exception", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      try {
        parseCreationOptions(value);
        parseCreationOptions({ publicKey: value });
        parseRequestOptions(value);
      } catch (error) {
        assert.ok(error instanceof ProvisioningError && error.code === "invalid-options", String(error));
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("any field of Graph's options replaced by any JSON value gives options or an invalid-options error", () => {
  const fields = [
    "rp",
    "user",
    "challenge",
    "pubKeyCredParams",
    "timeout",
    "excludeCredentials",
    "authenticatorSelection",
    "hints",
    "attestation",
    "attestationFormats",
    "extensions",
  ];
  fc.assert(
    fc.property(fc.constantFrom(...fields), fc.jsonValue(), (field, value) => {
      try {
        parseCreationOptions(withChange((o) => o[field] = value));
      } catch (error) {
        assert.ok(error instanceof ProvisioningError && error.code === "invalid-options", String(error));
        assert.ok(error.message.includes(`"${field}`), error.message);
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("decoded challenge and ids equal the bytes the server encoded, in either alphabet", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 128 }),
      fc.uint8Array({ minLength: 1, maxLength: 64 }),
      fc.uint8Array({ minLength: 1, maxLength: 200 }),
      fc.boolean(),
      (challenge, userId, credentialId, padded) => {
        const encode = padded ? toBase64 : toBase64Url;
        const options = parseCreationOptions(withChange((o) => {
          o["challenge"] = encode(challenge);
          record(o["user"])["id"] = encode(userId);
          o["excludeCredentials"] = [{ type: "public-key", id: encode(credentialId) }];
        }));
        assert.deepStrictEqual(options.challenge, new Uint8Array(challenge));
        assert.deepStrictEqual(options.user.id, new Uint8Array(userId));
        assert.deepStrictEqual(options.excludeCredentials?.[0]?.id, new Uint8Array(credentialId));
      },
    ),
    { numRuns: 200 },
  );
});

// ---------------------------------------------------------------------------------------------
// Request options
// ---------------------------------------------------------------------------------------------

const requestOptions = {
  challenge: "CzBVep_E6Q4zWH2ix-wRNluApcrvFDleg6jN8hc8YYY",
  timeout: 120000,
  rpId: "login.microsoft.com",
  allowCredentials: [
    { type: "public-key", id: "+vf08e7r6OXi39zZ1tPQzQ==", transports: ["usb", "teleport"] },
    { type: "public-key", id: "-vf08e7r6OXi39zZ1tPQzQ" },
  ],
  userVerification: "preferred",
  extensions: { appid: "https://login.microsoft.com/appid.json" },
};

Deno.test("reads request options, bare or wrapped, with padded and base64url credential ids", () => {
  const options = parseRequestOptions(requestOptions);
  assert.equal(options.rpId, "login.microsoft.com");
  assert.equal(options.timeout, 120000);
  assert.equal(options.challenge.length, 32);
  assert.deepStrictEqual(options.allowCredentials?.[0]?.id, options.allowCredentials?.[1]?.id);
  assert.deepStrictEqual(options.allowCredentials?.[0]?.transports, ["usb"]);
  assert.equal(options.userVerification, "preferred");
  assert.deepStrictEqual(options.extensions, { appid: "https://login.microsoft.com/appid.json" });
  assert.deepStrictEqual(parseRequestOptions({ publicKey: requestOptions }), options);
});

Deno.test("request options: unknown userVerification is ignored, broken fields are named", () => {
  assert.equal(
    parseRequestOptions({ ...requestOptions, userVerification: "whenever" }).userVerification,
    undefined,
  );
  const { challenge: _challenge, ...withoutChallenge } = requestOptions;
  assertRefused(
    () => parseRequestOptions(withoutChallenge),
    'Cannot read request options: "challenge" is missing',
  );
  assertRefused(
    () => parseRequestOptions({ ...requestOptions, allowCredentials: [{ type: "public-key" }] }),
    'Cannot read request options: "allowCredentials[0].id" is missing',
  );
  assertRefused(
    () => parseRequestOptions({ ...requestOptions, rpId: ["login.microsoft.com"] }),
    'Cannot read request options: "rpId" must be a string, got an array of 1',
  );
});

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

const registration = {
  id: "BRIfLDlGU2BteoeUoa67yA",
  rawId: "BRIfLDlGU2BteoeUoa67yA",
  type: "public-key",
  response: {
    clientDataJSON: toBase64Url(utf8('{"type":"webauthn.create"}')),
    attestationObject: "o2NmbXRkbm9uZQ",
    transports: ["nfc", "usb"],
    publicKeyAlgorithm: -7,
  },
  authenticatorAttachment: "cross-platform",
  clientExtensionResults: { credProps: { rk: true }, hmacCreateSecret: true },
};

Deno.test("reads registration and authentication responses in unpadded base64url", () => {
  assert.deepStrictEqual(parseRegistrationResponse(registration), registration);
  const authentication = {
    id: "BRIfLDlGU2BteoeUoa67yA",
    rawId: "BRIfLDlGU2BteoeUoa67yA",
    type: "public-key",
    response: {
      clientDataJSON: "e30",
      authenticatorData: "AAAA",
      signature: "MEUCIQ",
      userHandle: "ZGF2aWQ",
    },
    clientExtensionResults: {},
  };
  assert.deepStrictEqual(parseAuthenticationResponse(authentication), authentication);
});

Deno.test("refuses responses with the wrong type, padded base64 or an id that is not rawId", () => {
  assertRefused(
    () => parseRegistrationResponse({ ...registration, type: "password" }),
    'Cannot read registration response: "type" must be "public-key", got "password"',
    "invalid-response",
  );
  assertRefused(
    () =>
      parseRegistrationResponse({
        ...registration,
        response: { ...registration.response, clientDataJSON: "e30=" },
      }),
    'Cannot read registration response: "response.clientDataJSON" is not base64url: "e30="',
    "invalid-response",
  );
  assertRefused(
    () => parseRegistrationResponse({ ...registration, rawId: "AAAA" }),
    'Cannot read registration response: "rawId" must equal "id"',
    "invalid-response",
  );
  assertRefused(
    () => parseAuthenticationResponse({ ...registration }),
    'Cannot read authentication response: "response.authenticatorData" is missing (and 1 more problem)',
    "invalid-response",
  );
});
