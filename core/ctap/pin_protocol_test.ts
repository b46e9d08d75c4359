import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { p256 } from "@noble/curves/nist.js";
import fc from "fast-check";
import { concatBytes, randomBytes, utf8 } from "../bytes.ts";
import { CoseAlgorithm, encodeEc2PublicKey, encodeEd25519PublicKey } from "./cose.ts";
import {
  isValidPinLength,
  padPin,
  pinHash,
  pinProtocol,
  PinProtocolAuthenticatorState,
  PinUvAuthPermission,
  type PinUvAuthProtocolVersion,
  unpadPin,
} from "./pin_protocol.ts";
import { CtapError, CtapStatus } from "./status.ts";

const versions: readonly PinUvAuthProtocolVersion[] = [1, 2];

/** The status of the CtapError `fn` throws; fails when it throws anything else or nothing. */
function ctapStatusOf(fn: () => unknown): number {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof CtapError, `expected a CtapError, got ${String(error)}`);
    return error.status;
  }
  assert.fail("expected a CtapError, nothing was thrown");
}

/** A platform and an authenticator that have agreed on a shared secret. */
function agree(version: PinUvAuthProtocolVersion, state = new PinProtocolAuthenticatorState()) {
  const protocol = pinProtocol(version);
  const { platformKeyAgreement, sharedSecret } = protocol.encapsulate(state.getPublicKey());
  return {
    protocol,
    state,
    platformKeyAgreement,
    sharedSecret,
    authenticatorSecret: state.decapsulate(version, platformKeyAgreement),
  };
}

/** AES-256-CBC by WebCrypto, which always pads: the first `plaintext.length` bytes are the unpadded ciphertext. */
async function webCryptoCbc(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const imported = await crypto.subtle.importKey("raw", Uint8Array.from(key), "AES-CBC", false, ["encrypt"]);
  const padded = await crypto.subtle.encrypt(
    { name: "AES-CBC", iv: Uint8Array.from(iv) },
    imported,
    Uint8Array.from(plaintext),
  );
  return new Uint8Array(padded).slice(0, plaintext.length);
}

async function webCryptoHmac(key: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  const imported = await crypto.subtle.importKey(
    "raw",
    Uint8Array.from(key),
    { name: "HMAC", hash: "SHA-256" },
    false,
    [
      "sign",
    ],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", imported, Uint8Array.from(message)));
}

const blocks = fc.integer({ min: 0, max: 16 }).chain((n) =>
  fc.uint8Array({ minLength: n * 16, maxLength: n * 16 })
);

// --- key agreement ----------------------------------------------------------------------------

for (const version of versions) {
  Deno.test(`protocol ${version}: platform and authenticator derive the same ${version === 1 ? 32 : 64}-byte shared secret`, () => {
    const { platformKeyAgreement, sharedSecret, authenticatorSecret } = agree(version);
    assert.equal(sharedSecret.length, version === 1 ? 32 : 64);
    assert.deepEqual(authenticatorSecret, sharedSecret);
    assert.equal(platformKeyAgreement.get(1), 2);
    assert.equal(platformKeyAgreement.get(3), CoseAlgorithm.ECDH_ES_HKDF_256);
    assert.equal(platformKeyAgreement.get(-1), 1);
  });
}

Deno.test("the authenticator's key-agreement key is a P-256 COSE key with alg -25 (CTAP 2.1 §6.5.6 getPublicKey)", () => {
  const key = new PinProtocolAuthenticatorState().getPublicKey();
  assert.equal(key.get(1), 2);
  assert.equal(key.get(3), -25);
  assert.equal(key.get(-1), 1);
  assert.equal((key.get(-2) as Uint8Array).length, 32);
  assert.equal((key.get(-3) as Uint8Array).length, 32);
});

Deno.test("each encapsulation uses a fresh ephemeral key", () => {
  const state = new PinProtocolAuthenticatorState();
  const a = pinProtocol(2).encapsulate(state.getPublicKey());
  const b = pinProtocol(2).encapsulate(state.getPublicKey());
  assert.notDeepEqual(a.platformKeyAgreement.get(-2), b.platformKeyAgreement.get(-2));
  assert.notDeepEqual(a.sharedSecret, b.sharedSecret);
});

Deno.test("regenerate() gives a new key-agreement key: old shared secrets no longer match", () => {
  const { state, platformKeyAgreement, sharedSecret } = agree(2);
  const before = state.getPublicKey();
  state.regenerate();
  assert.notDeepEqual(state.getPublicKey().get(-2), before.get(-2));
  assert.notDeepEqual(state.decapsulate(2, platformKeyAgreement), sharedSecret);
});

Deno.test("shared secrets match an independent WebCrypto ECDH + SHA-256 (one) and HKDF-SHA-256 (two)", async () => {
  const authenticator = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, [
    "deriveBits",
  ]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", authenticator.publicKey));
  for (const version of versions) {
    const { platformKeyAgreement, sharedSecret } = pinProtocol(version).encapsulate(
      encodeEc2PublicKey(raw, -25),
    );
    const platformPoint = concatBytes(
      Uint8Array.of(4),
      platformKeyAgreement.get(-2) as Uint8Array,
      platformKeyAgreement.get(-3) as Uint8Array,
    );
    const platformPublic = await crypto.subtle.importKey(
      "raw",
      platformPoint,
      { name: "ECDH", namedCurve: "P-256" },
      false,
      [],
    );
    const z = await crypto.subtle.deriveBits(
      { name: "ECDH", public: platformPublic },
      authenticator.privateKey,
      256,
    );
    let expected: Uint8Array;
    if (version === 1) {
      expected = new Uint8Array(await crypto.subtle.digest("SHA-256", z));
    } else {
      const ikm = await crypto.subtle.importKey("raw", z, "HKDF", false, ["deriveBits"]);
      const derive = async (info: string) =>
        new Uint8Array(
          await crypto.subtle.deriveBits(
            { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: utf8(info) },
            ikm,
            256,
          ),
        );
      expected = concatBytes(await derive("CTAP2 HMAC key"), await derive("CTAP2 AES key"));
    }
    assert.deepEqual(sharedSecret, expected, `protocol ${version}`);
  }
});

// --- invalid peer keys --------------------------------------------------------------------------

function offCurveKey(): Map<number, unknown> {
  const key = encodeEc2PublicKey(p256.getPublicKey(p256.utils.randomSecretKey(), false), -25);
  const y = (key.get(-3) as Uint8Array).slice();
  y[0]! ^= 0x80;
  key.set(-3, y);
  return key;
}

function invalidPeerKeys(): [string, unknown][] {
  const good = encodeEc2PublicKey(p256.getPublicKey(p256.utils.randomSecretKey(), false), -25);
  const shortX = new Map(good).set(-2, (good.get(-2) as Uint8Array).slice(1));
  const longY = new Map(good).set(-3, new Uint8Array(33));
  return [
    ["an off-curve point", offCurveKey()],
    ["a 31-byte x", shortX],
    ["a 33-byte y", longY],
    [
      "kty OKP (an Ed25519 key)",
      encodeEd25519PublicKey(ed25519.getPublicKey(ed25519.utils.randomSecretKey())),
    ],
    ["kty RSA", new Map(good).set(1, 3)],
    ["crv P-384", new Map(good).set(-1, 2)],
    ["x as text", new Map(good).set(-2, "x")],
    ["a byte string instead of a map", new Uint8Array(65)],
    ["nothing", undefined],
  ];
}

Deno.test("decapsulate refuses invalid platform keys with CTAP1_ERR_INVALID_PARAMETER", () => {
  const state = new PinProtocolAuthenticatorState();
  for (const version of versions) {
    for (const [name, key] of invalidPeerKeys()) {
      assert.equal(
        ctapStatusOf(() => state.decapsulate(version, key)),
        CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
        name,
      );
    }
  }
});

Deno.test("encapsulate refuses an authenticator key that is off the curve, of the wrong length or kty", () => {
  for (const version of versions) {
    for (const [name, key] of invalidPeerKeys().slice(0, 6)) {
      assert.equal(
        ctapStatusOf(() => pinProtocol(version).encapsulate(key)),
        CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
        name,
      );
    }
  }
});

// --- encrypt / decrypt --------------------------------------------------------------------------

for (const version of versions) {
  Deno.test(`protocol ${version}: what one side encrypts the other decrypts, for any whole number of blocks`, () => {
    const { protocol, sharedSecret, authenticatorSecret } = agree(version);
    fc.assert(fc.property(blocks, (plaintext) => {
      const ciphertext = protocol.encrypt(sharedSecret, plaintext);
      assert.equal(ciphertext.length, plaintext.length + (version === 2 ? 16 : 0));
      assert.deepEqual(protocol.decrypt(authenticatorSecret, ciphertext), plaintext);
      assert.deepEqual(
        protocol.decrypt(sharedSecret, protocol.encrypt(authenticatorSecret, plaintext)),
        plaintext,
      );
    }));
  });
}

Deno.test("protocol 1 encrypts with a zero IV and the whole secret, as WebCrypto AES-CBC does", async () => {
  const { protocol, sharedSecret } = agree(1);
  const plaintext = randomBytes(64);
  assert.deepEqual(
    protocol.encrypt(sharedSecret, plaintext),
    await webCryptoCbc(sharedSecret, new Uint8Array(16), plaintext),
  );
  // Deterministic: same input, same output.
  assert.deepEqual(protocol.encrypt(sharedSecret, plaintext), protocol.encrypt(sharedSecret, plaintext));
});

Deno.test("protocol 2 prepends a random IV and encrypts with the second half of the secret, as WebCrypto AES-CBC does", async () => {
  const { protocol, sharedSecret } = agree(2);
  const plaintext = randomBytes(32);
  const a = protocol.encrypt(sharedSecret, plaintext);
  const b = protocol.encrypt(sharedSecret, plaintext);
  assert.notDeepEqual(a.slice(0, 16), b.slice(0, 16));
  assert.deepEqual(a.slice(16), await webCryptoCbc(sharedSecret.slice(32), a.slice(0, 16), plaintext));
});

Deno.test("decrypt refuses ciphertexts that are not whole blocks (plus IV for two) with INVALID_PARAMETER", () => {
  const one = agree(1);
  const two = agree(2);
  for (const length of [1, 15, 17, 63]) {
    assert.equal(
      ctapStatusOf(() => one.protocol.decrypt(one.sharedSecret, new Uint8Array(length))),
      CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
    );
  }
  for (const length of [0, 8, 15, 33]) {
    assert.equal(
      ctapStatusOf(() => two.protocol.decrypt(two.sharedSecret, new Uint8Array(length))),
      CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
    );
  }
  assert.deepEqual(two.protocol.decrypt(two.sharedSecret, new Uint8Array(16)), new Uint8Array());
});

Deno.test("encrypt refuses partial blocks and secrets of the wrong length", () => {
  assert.throws(() => pinProtocol(1).encrypt(new Uint8Array(32), new Uint8Array(15)), RangeError);
  assert.throws(() => pinProtocol(2).encrypt(new Uint8Array(64), new Uint8Array(17)), RangeError);
  assert.throws(() => pinProtocol(1).encrypt(new Uint8Array(64), new Uint8Array(16)), RangeError);
  assert.throws(() => pinProtocol(2).encrypt(new Uint8Array(32), new Uint8Array(16)), RangeError);
  assert.throws(() => pinProtocol(2).decrypt(new Uint8Array(32), new Uint8Array(32)), RangeError);
});

// --- authenticate / verify ----------------------------------------------------------------------

for (const version of versions) {
  Deno.test(`protocol ${version}: pinUvAuthParam is ${version === 1 ? 16 : 32} bytes; verify accepts it and refuses tampering`, () => {
    const { protocol, sharedSecret, authenticatorSecret } = agree(version);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(), (message, at) => {
        const param = protocol.authenticate(sharedSecret, message);
        assert.equal(param.length, version === 1 ? 16 : 32);
        assert.equal(protocol.paramLength, param.length);
        assert.ok(protocol.verify(authenticatorSecret, message, param));
        const tampered = message.slice();
        tampered[at % tampered.length]! ^= 0x01;
        assert.ok(!protocol.verify(authenticatorSecret, tampered, param));
        const badParam = param.slice();
        badParam[at % badParam.length]! ^= 0x80;
        assert.ok(!protocol.verify(authenticatorSecret, message, badParam));
        assert.ok(!protocol.verify(authenticatorSecret, message, param.subarray(0, param.length - 1)));
        assert.ok(!protocol.verify(authenticatorSecret, message, concatBytes(param, new Uint8Array(1))));
      }),
      { numRuns: 50 },
    );
  });
}

Deno.test("protocol 1 authenticate is HMAC-SHA-256 truncated to 16 bytes (checked against WebCrypto)", async () => {
  const key = randomBytes(32);
  const message = randomBytes(100);
  assert.deepEqual(
    pinProtocol(1).authenticate(key, message),
    (await webCryptoHmac(key, message)).slice(0, 16),
  );
});

Deno.test("protocol 2 authenticate uses only the HMAC half of a 64-byte shared secret, and a 32-byte token whole", async () => {
  const { sharedSecret } = agree(2);
  const message = randomBytes(48);
  const expected = await webCryptoHmac(sharedSecret.slice(0, 32), message);
  assert.deepEqual(pinProtocol(2).authenticate(sharedSecret, message), expected);
  assert.deepEqual(pinProtocol(2).authenticate(sharedSecret.slice(0, 32), message), expected);
  const token = randomBytes(32);
  assert.deepEqual(pinProtocol(2).authenticate(token, message), await webCryptoHmac(token, message));
});

Deno.test("pinProtocol refuses unknown versions", () => {
  assert.throws(() => pinProtocol(3 as PinUvAuthProtocolVersion), RangeError);
  assert.equal(pinProtocol(1).version, 1);
  assert.equal(pinProtocol(2).version, 2);
});

// --- PIN padding and hashing --------------------------------------------------------------------

Deno.test("padPin zero-pads the UTF-8 PIN to 64 bytes and unpadPin reverses it", () => {
  const padded = padPin("1234");
  assert.equal(padded.length, 64);
  assert.deepEqual(padded.slice(0, 5), Uint8Array.of(0x31, 0x32, 0x33, 0x34, 0));
  assert.ok(padded.slice(4).every((byte) => byte === 0));
  assert.equal(unpadPin(padded), "1234");
});

Deno.test("a 63-byte PIN is the longest accepted; 64 bytes are refused on both sides", () => {
  const longest = "7".repeat(63);
  assert.equal(unpadPin(padPin(longest)), longest);
  assert.equal(unpadPin(padPin("é".repeat(31) + "x")), "é".repeat(31) + "x"); // 63 bytes, 32 code points
  assert.throws(() => padPin("7".repeat(64)), RangeError);
  assert.throws(() => padPin("é".repeat(32)), RangeError); // 64 bytes
  assert.equal(unpadPin(utf8("7".repeat(64))), undefined);
});

Deno.test("padPin refuses an empty PIN and one with a NUL character", () => {
  assert.throws(() => padPin(""), RangeError);
  assert.throws(() => padPin("12\u000034"), RangeError);
});

Deno.test("unpadPin refuses malformed paddings: wrong length, empty, trailing garbage, invalid UTF-8", () => {
  const good = padPin("123456");
  assert.equal(unpadPin(good.slice(0, 63)), undefined);
  assert.equal(unpadPin(concatBytes(good, new Uint8Array(16))), undefined);
  assert.equal(unpadPin(new Uint8Array(64)), undefined);
  const garbage = good.slice();
  garbage[40] = 0x41;
  assert.equal(unpadPin(garbage), undefined);
  const lastByte = good.slice();
  lastByte[63] = 1;
  assert.equal(unpadPin(lastByte), undefined);
  for (const invalid of [[0xff], [0xc3], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80]]) {
    const bytes = new Uint8Array(64);
    bytes.set([0x31, 0x32, 0x33, 0x34, ...invalid]);
    assert.equal(unpadPin(bytes), undefined, `bytes ${invalid.join(",")}`);
  }
});

Deno.test("padPin and pinHash normalize to NFC, so composed and decomposed PINs are the same PIN", () => {
  const composed = "caf\u00e9";
  const decomposed = "cafe\u0301";
  assert.deepEqual(padPin(decomposed), padPin(composed));
  assert.deepEqual(pinHash(decomposed), pinHash(composed));
  assert.equal(unpadPin(padPin(decomposed)), composed);
});

Deno.test("pad/unpad round-trips every PIN that fits, as its NFC form", () => {
  const pin = fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 })
    .filter((text) => !text.includes("\0") && utf8(text.normalize("NFC")).length <= 63);
  fc.assert(fc.property(pin, (text) => {
    assert.equal(unpadPin(padPin(text)), text.normalize("NFC"));
  }));
});

Deno.test("pinHash is the first 16 bytes of SHA-256 of the UTF-8 PIN (checked against WebCrypto)", async () => {
  const expected = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8("123456"))).slice(0, 16);
  assert.deepEqual(pinHash("123456"), expected);
});

Deno.test("isValidPinLength counts code points for the minimum and UTF-8 bytes for the maximum", () => {
  assert.ok(!isValidPinLength("123"));
  assert.ok(isValidPinLength("1234"));
  assert.ok(!isValidPinLength("12345", 6));
  assert.ok(isValidPinLength("123456", 6));
  assert.ok(!isValidPinLength("12", 1), "the floor is 4 whatever minPINLength says");
  assert.ok(isValidPinLength("😀😀😀😀"), "4 code points, 16 bytes");
  assert.ok(!isValidPinLength("😀😀😀"), "3 code points although 12 bytes");
  assert.ok(isValidPinLength("7".repeat(63)));
  assert.ok(!isValidPinLength("7".repeat(64)));
  assert.ok(!isValidPinLength("12\u000034"));
});

// --- pinUvAuthToken state (CTAP 2.1 §6.5.2.1) ---------------------------------------------------

function clockedState() {
  const clock = { now: 1_000_000 };
  const state = new PinProtocolAuthenticatorState({ now: () => clock.now });
  return { clock, state };
}

for (const version of versions) {
  Deno.test(`protocol ${version}: a token issued to the platform authenticates requests the authenticator accepts`, () => {
    const { protocol, state, sharedSecret, authenticatorSecret } = agree(version);
    state.resetPinUvAuthToken();
    state.beginUsingPinUvAuthToken(false);
    state.permissions = PinUvAuthPermission.makeCredential;
    state.permissionsRpId = "example.com";
    const token = protocol.decrypt(sharedSecret, protocol.encrypt(authenticatorSecret, state.token));
    assert.equal(token.length, 32);
    const clientDataHash = randomBytes(32);
    const param = protocol.authenticate(token, clientDataHash);
    assert.equal(param.length, version === 1 ? 16 : 32);
    assert.ok(state.verifyToken(version, clientDataHash, param));
    assert.ok(!state.verifyToken(version, randomBytes(32), param));
    assert.ok(state.hasPermission(PinUvAuthPermission.makeCredential));
    assert.ok(!state.hasPermission(PinUvAuthPermission.getAssertion));
    assert.equal(state.permissionsRpId, "example.com");
  });
}

Deno.test("a token is refused before beginUsingPinUvAuthToken, after stopUsingPinUvAuthToken, and after a reset", () => {
  const { state } = clockedState();
  const message = randomBytes(32);
  const sign = () => pinProtocol(2).authenticate(state.token, message);
  assert.ok(!state.inUse);
  assert.ok(!state.verifyToken(2, message, sign()));
  state.beginUsingPinUvAuthToken(true);
  assert.ok(state.verifyToken(2, message, sign()));
  state.stopUsingPinUvAuthToken();
  assert.ok(!state.verifyToken(2, message, sign()));
  state.beginUsingPinUvAuthToken(true);
  const old = sign();
  state.resetPinUvAuthToken();
  state.beginUsingPinUvAuthToken(true);
  assert.ok(!state.verifyToken(2, message, old));
  assert.ok(state.verifyToken(2, message, sign()));
});

Deno.test("an unused token expires after the 30 s initial usage time limit", () => {
  const { clock, state } = clockedState();
  state.beginUsingPinUvAuthToken(false);
  state.permissions = PinUvAuthPermission.getAssertion;
  state.permissionsRpId = "example.com";
  const message = randomBytes(32);
  const param = pinProtocol(1).authenticate(state.token, message);
  clock.now += 30_000;
  assert.ok(state.inUse, "still usable at exactly 30 s");
  clock.now += 1;
  assert.ok(!state.inUse);
  assert.ok(!state.verifyToken(1, message, param));
  assert.ok(!state.hasPermission(PinUvAuthPermission.getAssertion));
  assert.equal(state.permissions, 0);
  assert.equal(state.permissionsRpId, undefined);
  assert.ok(!state.getUserVerifiedFlagValue());
});

Deno.test("a token used within 30 s stays usable until the 10-minute maximum usage period", () => {
  const { clock, state } = clockedState();
  state.beginUsingPinUvAuthToken(false);
  state.permissions = PinUvAuthPermission.credentialManagement;
  const message = randomBytes(32);
  const param = pinProtocol(2).authenticate(state.token, message);
  clock.now += 20_000;
  assert.ok(state.verifyToken(2, message, param));
  clock.now += 5 * 60_000;
  assert.ok(state.verifyToken(2, message, param));
  assert.ok(state.hasPermission(PinUvAuthPermission.credentialManagement));
  clock.now = 1_000_000 + 600_001;
  assert.ok(!state.verifyToken(2, message, param));
  assert.ok(!state.inUse);
});

Deno.test("timer limits come from the options", () => {
  const clock = { now: 0 };
  const state = new PinProtocolAuthenticatorState({
    now: () => clock.now,
    initialUsageTimeLimitMs: 1_000,
    maxUsageTimePeriodMs: 5_000,
    userPresentTimeLimitMs: 2_000,
  });
  state.beginUsingPinUvAuthToken(true);
  clock.now = 1_001;
  assert.ok(!state.inUse);
  state.beginUsingPinUvAuthToken(true);
  const message = randomBytes(32);
  assert.ok(state.verifyToken(1, message, pinProtocol(1).authenticate(state.token, message)));
  clock.now += 2_001;
  assert.ok(state.inUse);
  assert.ok(!state.getUserPresentFlagValue());
  clock.now += 3_000;
  assert.ok(!state.inUse);
});

Deno.test("the userPresent and userVerified flags follow beginUsing, clear*, the user-present time limit and stopUsing", () => {
  const { clock, state } = clockedState();
  assert.ok(!state.getUserPresentFlagValue());
  assert.ok(!state.getUserVerifiedFlagValue());
  state.beginUsingPinUvAuthToken(false);
  assert.ok(!state.getUserPresentFlagValue());
  assert.ok(state.getUserVerifiedFlagValue());
  state.beginUsingPinUvAuthToken(true);
  assert.ok(state.getUserPresentFlagValue());
  state.clearUserPresentFlag();
  assert.ok(!state.getUserPresentFlagValue());
  assert.ok(state.getUserVerifiedFlagValue());
  state.clearUserVerifiedFlag();
  assert.ok(!state.getUserVerifiedFlagValue());
  assert.ok(state.inUse, "clearing flags does not stop the token");

  state.beginUsingPinUvAuthToken(true);
  const message = randomBytes(32);
  assert.ok(state.verifyToken(2, message, pinProtocol(2).authenticate(state.token, message)));
  clock.now += 30_001;
  assert.ok(!state.getUserPresentFlagValue(), "user presence expires after 30 s");
  assert.ok(state.getUserVerifiedFlagValue());
  state.stopUsingPinUvAuthToken();
  assert.ok(!state.getUserVerifiedFlagValue());
});

Deno.test("permissions: hasPermission needs every bit; clearPinUvAuthTokenPermissionsExceptLbw keeps only lbw", () => {
  const { state } = clockedState();
  state.beginUsingPinUvAuthToken(false);
  state.permissions = PinUvAuthPermission.makeCredential | PinUvAuthPermission.largeBlobWrite |
    PinUvAuthPermission.authenticatorConfiguration;
  assert.ok(state.hasPermission(PinUvAuthPermission.makeCredential));
  assert.ok(state.hasPermission(PinUvAuthPermission.makeCredential | PinUvAuthPermission.largeBlobWrite));
  assert.ok(!state.hasPermission(PinUvAuthPermission.makeCredential | PinUvAuthPermission.getAssertion));
  assert.ok(!state.hasPermission(0));
  state.clearPinUvAuthTokenPermissionsExceptLbw();
  assert.equal(state.permissions, PinUvAuthPermission.largeBlobWrite);
  assert.ok(!state.hasPermission(PinUvAuthPermission.makeCredential));
  assert.ok(state.hasPermission(PinUvAuthPermission.largeBlobWrite));
  assert.deepEqual(
    Object.values(PinUvAuthPermission),
    [0x01, 0x02, 0x04, 0x08, 0x10, 0x20],
  );
});

Deno.test("beginUsingPinUvAuthToken starts with no permissions and no RP ID", () => {
  const { state } = clockedState();
  state.beginUsingPinUvAuthToken(false);
  state.permissions = PinUvAuthPermission.getAssertion;
  state.permissionsRpId = "a.example";
  state.beginUsingPinUvAuthToken(false);
  assert.equal(state.permissions, 0);
  assert.equal(state.permissionsRpId, undefined);
});

Deno.test("the token getter returns a copy, so callers cannot change the authenticator's token", () => {
  const { state } = clockedState();
  state.beginUsingPinUvAuthToken(false);
  const copy = state.token;
  copy.fill(0);
  const message = randomBytes(32);
  assert.ok(!state.verifyToken(2, message, pinProtocol(2).authenticate(copy, message)));
  assert.ok(state.verifyToken(2, message, pinProtocol(2).authenticate(state.token, message)));
});
