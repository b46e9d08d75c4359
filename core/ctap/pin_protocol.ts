/**
 * PIN/UV auth protocols one and two (CTAP 2.1 §6.5.6 and §6.5.7,
 * https://fidoalliance.org/specs/fido-v2.1-ps-20210615/fido-client-to-authenticator-protocol-v2.1-ps-20210615.html#pinProto1),
 * for both ends of the wire:
 *
 * - the platform side, {@link pinProtocol}: key agreement with the authenticator's key, then
 *   encrypt (new PIN, PIN hash), decrypt (the pinUvAuthToken) and authenticate (pinUvAuthParam);
 * - the authenticator side, {@link PinProtocolAuthenticatorState}: the key-agreement key pair
 *   and the pinUvAuthToken with its permissions, flags and usage timer (§6.5.2.1), as a pure
 *   in-memory object with an injected clock;
 * - the PIN rules both sides share: {@link padPin}, {@link unpadPin}, {@link pinHash},
 *   {@link isValidPinLength}.
 *
 * @example
 * ```ts
 * import { pinProtocol, PinProtocolAuthenticatorState } from "./pin_protocol.ts";
 * const authenticator = new PinProtocolAuthenticatorState();
 * const platform = pinProtocol(2);
 * const { platformKeyAgreement, sharedSecret } = platform.encapsulate(authenticator.getPublicKey());
 * const theirs = authenticator.decapsulate(2, platformKeyAgreement);
 * console.assert(platform.verify(theirs, new Uint8Array(32), platform.authenticate(sharedSecret, new Uint8Array(32))));
 * ```
 *
 * @module
 */
import { cbc } from "@noble/ciphers/aes.js";
import { p256 } from "@noble/curves/nist.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, equalBytes, randomBytes, utf8 } from "../bytes.ts";
import { CoseAlgorithm, decodeCosePublicKey, encodeEc2PublicKey, uncompressedPoint } from "./cose.ts";
import { CtapError, CtapStatus } from "./status.ts";

/** A PIN/UV auth protocol number, as `pinUvAuthProtocol` carries it. */
export type PinUvAuthProtocolVersion = 1 | 2;

/**
 * pinUvAuthToken permissions (CTAP 2.1 §6.5.5.7 "permissions" bit field): what a token obtained
 * with getPinUvAuthTokenUsingPinWithPermissions may be used for.
 */
export const PinUvAuthPermission = {
  /** `mc`: authenticatorMakeCredential; needs an RP ID. */
  makeCredential: 0x01,
  /** `ga`: authenticatorGetAssertion; needs an RP ID. */
  getAssertion: 0x02,
  /** `cm`: authenticatorCredentialManagement; RP ID optional. */
  credentialManagement: 0x04,
  /** `be`: authenticatorBioEnrollment. */
  bioEnrollment: 0x08,
  /** `lbw`: authenticatorLargeBlobs writes. */
  largeBlobWrite: 0x10,
  /** `acfg`: authenticatorConfig. */
  authenticatorConfiguration: 0x20,
} as const;

/** The result of the platform's key agreement: what to send, and what to keep. */
export interface Encapsulation {
  /** The platform's ephemeral public key, a COSE_Key with alg -25, sent as `keyAgreement`. */
  readonly platformKeyAgreement: Map<number, unknown>;
  /** The shared secret: 32 bytes (protocol one) or 64 bytes, HMAC key then AES key (two). */
  readonly sharedSecret: Uint8Array<ArrayBuffer>;
}

/**
 * One PIN/UV auth protocol, the operations of CTAP 2.1 §6.5.4 "PIN/UV Auth Protocol Abstract
 * Definition". The same object serves the authenticator for encrypt, decrypt and verify.
 */
export interface PinProtocol {
  /** 1 or 2, the `pinUvAuthProtocol` value. */
  readonly version: PinUvAuthProtocolVersion;
  /** Length in bytes of a pinUvAuthParam: 16 (one) or 32 (two). */
  readonly paramLength: number;
  /**
   * Platform side: ECDH with the authenticator's key-agreement key (from getKeyAgreement) and a
   * fresh ephemeral key, then the protocol's KDF.
   *
   * @throws {CtapError} `CTAP1_ERR_INVALID_PARAMETER` or `CTAP2_ERR_CBOR_UNEXPECTED_TYPE` when the
   * authenticator's key is not a P-256 COSE key on the curve.
   */
  encapsulate(peerCoseKey: unknown): Encapsulation;
  /** The KDF applied to Z, the 32-byte x coordinate of the ECDH shared point. */
  kdf(z: Uint8Array): Uint8Array<ArrayBuffer>;
  /**
   * Encrypts a multiple of 16 bytes with AES-256-CBC: a zero IV (one), or a random IV that is
   * prepended to the ciphertext (two).
   *
   * @throws {RangeError} when the key has the wrong length or the plaintext is not whole blocks.
   */
  encrypt(sharedSecret: Uint8Array, plaintext: Uint8Array): Uint8Array<ArrayBuffer>;
  /**
   * Reverses {@link PinProtocol.encrypt}.
   *
   * @throws {CtapError} `CTAP1_ERR_INVALID_PARAMETER` when the ciphertext is not whole blocks
   * (plus the IV for protocol two).
   * @throws {RangeError} when the key has the wrong length.
   */
  decrypt(sharedSecret: Uint8Array, ciphertext: Uint8Array): Uint8Array<ArrayBuffer>;
  /**
   * The pinUvAuthParam of `message`: HMAC-SHA-256 truncated to 16 bytes (one), or the full 32
   * bytes (two). `key` is a pinUvAuthToken or a shared secret; for protocol two a 64-byte shared
   * secret contributes only its first 32 bytes, the HMAC key (§6.5.7 "authenticate").
   */
  authenticate(key: Uint8Array, message: Uint8Array): Uint8Array<ArrayBuffer>;
  /** Whether `signature` is `authenticate(key, message)`, compared in constant time. */
  verify(key: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
}

const blockSize = 16;
const zeroIv = new Uint8Array(blockSize);
const hkdfSalt = new Uint8Array(32);
const hmacKeyInfo = utf8("CTAP2 HMAC key");
const aesKeyInfo = utf8("CTAP2 AES key");

function requireKeyLength(key: Uint8Array, expected: number, version: number, what: string): void {
  if (key.length !== expected) {
    throw new RangeError(
      `Cannot ${what} with PIN/UV auth protocol ${version}: the shared secret is ${key.length} bytes, expected ${expected}`,
    );
  }
}

function requireWholeBlocks(plaintext: Uint8Array, version: number): void {
  if (plaintext.length % blockSize !== 0) {
    throw new RangeError(
      `Cannot encrypt with PIN/UV auth protocol ${version}: ${plaintext.length} bytes is not a multiple of 16`,
    );
  }
}

/** ECDH on P-256: Z is the x coordinate of `secretKey · peer`. */
function ecdhX(secretKey: Uint8Array, peerCoseKey: unknown): Uint8Array {
  const peer = decodeCosePublicKey(peerCoseKey);
  if (peer.kty !== "EC2") {
    throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "key-agreement key is not a P-256 (EC2) key");
  }
  // Compressed form: one prefix byte, then x.
  return p256.getSharedSecret(secretKey, uncompressedPoint(peer), true).slice(1);
}

function encapsulateWith(
  kdf: (z: Uint8Array) => Uint8Array<ArrayBuffer>,
  peerCoseKey: unknown,
): Encapsulation {
  const secretKey = p256.utils.randomSecretKey();
  const z = ecdhX(secretKey, peerCoseKey);
  return {
    platformKeyAgreement: encodeEc2PublicKey(
      p256.getPublicKey(secretKey, false),
      CoseAlgorithm.ECDH_ES_HKDF_256,
    ),
    sharedSecret: kdf(z),
  };
}

const protocolOne: PinProtocol = Object.freeze({
  version: 1,
  paramLength: 16,
  encapsulate(peerCoseKey: unknown): Encapsulation {
    return encapsulateWith(protocolOne.kdf, peerCoseKey);
  },
  kdf(z: Uint8Array): Uint8Array<ArrayBuffer> {
    return sha256(z);
  },
  encrypt(sharedSecret: Uint8Array, plaintext: Uint8Array): Uint8Array<ArrayBuffer> {
    requireKeyLength(sharedSecret, 32, 1, "encrypt");
    requireWholeBlocks(plaintext, 1);
    return cbc(sharedSecret, zeroIv, { disablePadding: true }).encrypt(plaintext);
  },
  decrypt(sharedSecret: Uint8Array, ciphertext: Uint8Array): Uint8Array<ArrayBuffer> {
    requireKeyLength(sharedSecret, 32, 1, "decrypt");
    if (ciphertext.length % blockSize !== 0) {
      throw new CtapError(
        CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
        `protocol 1 ciphertext is ${ciphertext.length} bytes, not a multiple of 16`,
      );
    }
    return cbc(sharedSecret, zeroIv, { disablePadding: true }).decrypt(ciphertext);
  },
  authenticate(key: Uint8Array, message: Uint8Array): Uint8Array<ArrayBuffer> {
    return hmac(sha256, key, message).slice(0, 16);
  },
  verify(key: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    return equalBytes(protocolOne.authenticate(key, message), signature);
  },
});

const protocolTwo: PinProtocol = Object.freeze({
  version: 2,
  paramLength: 32,
  encapsulate(peerCoseKey: unknown): Encapsulation {
    return encapsulateWith(protocolTwo.kdf, peerCoseKey);
  },
  kdf(z: Uint8Array): Uint8Array<ArrayBuffer> {
    return concatBytes(hkdf(sha256, z, hkdfSalt, hmacKeyInfo, 32), hkdf(sha256, z, hkdfSalt, aesKeyInfo, 32));
  },
  encrypt(sharedSecret: Uint8Array, plaintext: Uint8Array): Uint8Array<ArrayBuffer> {
    requireKeyLength(sharedSecret, 64, 2, "encrypt");
    requireWholeBlocks(plaintext, 2);
    const iv = randomBytes(blockSize);
    return concatBytes(iv, cbc(sharedSecret.subarray(32), iv, { disablePadding: true }).encrypt(plaintext));
  },
  decrypt(sharedSecret: Uint8Array, ciphertext: Uint8Array): Uint8Array<ArrayBuffer> {
    requireKeyLength(sharedSecret, 64, 2, "decrypt");
    if (ciphertext.length < blockSize || ciphertext.length % blockSize !== 0) {
      throw new CtapError(
        CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
        `protocol 2 ciphertext is ${ciphertext.length} bytes, expected a 16-byte IV and whole 16-byte blocks`,
      );
    }
    const iv = ciphertext.subarray(0, blockSize);
    return cbc(sharedSecret.subarray(32), iv, { disablePadding: true }).decrypt(
      ciphertext.subarray(blockSize),
    );
  },
  authenticate(key: Uint8Array, message: Uint8Array): Uint8Array<ArrayBuffer> {
    // §6.5.7: "If key is longer than 32 bytes, discard the AES-key portion of key".
    return hmac(sha256, key.length > 32 ? key.subarray(0, 32) : key, message);
  },
  verify(key: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
    return equalBytes(protocolTwo.authenticate(key, message), signature);
  },
});

/**
 * The PIN/UV auth protocol with this number. Both objects are stateless and shared; the
 * platform's ephemeral key lives only inside {@link PinProtocol.encapsulate}.
 *
 * @throws {RangeError} for a version other than 1 or 2.
 */
export function pinProtocol(version: PinUvAuthProtocolVersion): PinProtocol {
  if (version === 1) return protocolOne;
  if (version === 2) return protocolTwo;
  throw new RangeError(`Cannot use PIN/UV auth protocol ${String(version)}: only 1 and 2 exist`);
}

// --- PIN rules (CTAP 2.1 §6.5.1 and §6.5.5.5) ----------------------------------------------------

/** The fewest Unicode code points a PIN may have, unless the authenticator's minPINLength is higher. */
export const defaultMinPinLength = 4;
/** The most UTF-8 bytes a PIN may have (§6.5.5.5: the padded PIN must end with a zero byte). */
export const maxPinBytes = 63;
/** The length of a padded PIN, the plaintext of newPinEnc. */
export const paddedPinLength = 64;

/**
 * Whether a PIN fits the CTAP rules: at least `minPinLength` (and at least 4) Unicode code points,
 * at most 63 bytes of UTF-8 after NFC normalisation, and no NUL character (it would be taken for
 * padding).
 */
export function isValidPinLength(pin: string, minPinLength: number = defaultMinPinLength): boolean {
  const normalized = pin.normalize("NFC");
  return [...normalized].length >= Math.max(defaultMinPinLength, minPinLength) &&
    utf8(normalized).length <= maxPinBytes && !normalized.includes("\0");
}

/**
 * The platform's padded PIN for setPIN and changePIN (§6.5.5.5): the UTF-8 bytes of the PIN in
 * Unicode Normalization Form C (§6.5.1), followed by zero bytes up to 64 bytes. The minimum
 * length is the authenticator's to enforce (its minPINLength may be higher than 4).
 *
 * @throws {RangeError} when the PIN is empty, longer than 63 bytes, or contains a NUL character.
 */
export function padPin(pin: string): Uint8Array<ArrayBuffer> {
  const bytes = utf8(pin.normalize("NFC"));
  if (bytes.length === 0) throw new RangeError("Cannot use the PIN: it is empty");
  if (bytes.length > maxPinBytes) {
    throw new RangeError(
      `Cannot use the PIN: it is ${bytes.length} bytes in UTF-8, at most ${maxPinBytes} are allowed`,
    );
  }
  if (bytes.includes(0)) throw new RangeError("Cannot use the PIN: it contains a NUL character");
  const padded = new Uint8Array(paddedPinLength);
  padded.set(bytes);
  return padded;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The authenticator's reading of a decrypted newPinEnc: the PIN, or `undefined` when the bytes
 * are not a padded PIN (not 64 bytes, no zero terminator within them, an empty PIN, a non-zero
 * byte after the padding starts, or invalid UTF-8). The caller answers `undefined` with
 * CTAP2_ERR_PIN_POLICY_VIOLATION and checks the minimum length itself.
 */
export function unpadPin(bytes: Uint8Array): string | undefined {
  if (bytes.length !== paddedPinLength) return undefined;
  const end = bytes.indexOf(0);
  if (end <= 0) return undefined; // no terminator (64 bytes of PIN) or empty PIN
  for (let i = end; i < bytes.length; i++) if (bytes[i] !== 0) return undefined;
  try {
    return strictUtf8.decode(bytes.subarray(0, end));
  } catch {
    return undefined;
  }
}

/**
 * pinHash (§6.5.5.7): the first 16 bytes of SHA-256 of the PIN's UTF-8 bytes in Normalization
 * Form C; what the platform encrypts as pinHashEnc and the authenticator stores.
 */
export function pinHash(pin: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(sha256(utf8(pin.normalize("NFC"))).subarray(0, 16));
}

// --- Authenticator side (CTAP 2.1 §6.5.2.1, §6.5.4, §6.5.6) ------------------------------------

/** Options of {@link PinProtocolAuthenticatorState}. */
export interface PinProtocolAuthenticatorStateOptions {
  /** The clock, in milliseconds. @default Date.now */
  now?: () => number;
  /**
   * How long a new token stays usable if the platform does not use it (§6.5.2.1 "initial usage
   * time limit"; 30 s for USB). @default 30000
   */
  initialUsageTimeLimitMs?: number;
  /** How long the userPresent flag of a token stays set. @default 30000 */
  userPresentTimeLimitMs?: number;
  /** How long a token stays usable at most, used or not (§6.5.2.1, 10 minutes). @default 600000 */
  maxUsageTimePeriodMs?: number;
}

/** The defaults of {@link PinProtocolAuthenticatorStateOptions}. */
export const pinTokenTimingDefaults = {
  initialUsageTimeLimitMs: 30_000,
  userPresentTimeLimitMs: 30_000,
  maxUsageTimePeriodMs: 600_000,
} as const satisfies PinProtocolAuthenticatorStateOptions;

/**
 * The authenticator's half of the PIN/UV auth protocols: its key-agreement key pair, shared by
 * both protocols, and the pinUvAuthToken state of §6.5.2.1 (the token, its permissions and
 * permissions RP ID, the in-use flag, the userPresent and userVerified flags and the usage timer).
 *
 * It holds no timers: expiry is computed from the injected clock whenever the state is read, so
 * nothing leaks and tests move time by hand. Construction runs §6.5.4 `initialize()`.
 *
 * @example
 * ```ts
 * import { PinProtocolAuthenticatorState, PinUvAuthPermission } from "./pin_protocol.ts";
 * let now = 0;
 * const state = new PinProtocolAuthenticatorState({ now: () => now });
 * state.beginUsingPinUvAuthToken(false);
 * state.permissions = PinUvAuthPermission.makeCredential;
 * now += 31_000; // not used within the initial usage time limit
 * console.assert(!state.inUse && !state.hasPermission(PinUvAuthPermission.makeCredential));
 * ```
 */
export class PinProtocolAuthenticatorState {
  readonly #now: () => number;
  readonly #initialUsageTimeLimitMs: number;
  readonly #userPresentTimeLimitMs: number;
  readonly #maxUsageTimePeriodMs: number;
  #secretKey: Uint8Array = new Uint8Array(0);
  #publicKey: Map<number, unknown> = new Map();
  #token: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  #inUse = false;
  #used = false;
  #startedAt = 0;
  #userPresent = false;
  #userVerified = false;
  #permissions = 0;
  #permissionsRpId: string | undefined;

  constructor(options: PinProtocolAuthenticatorStateOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#initialUsageTimeLimitMs = options.initialUsageTimeLimitMs ??
      pinTokenTimingDefaults.initialUsageTimeLimitMs;
    this.#userPresentTimeLimitMs = options.userPresentTimeLimitMs ??
      pinTokenTimingDefaults.userPresentTimeLimitMs;
    this.#maxUsageTimePeriodMs = options.maxUsageTimePeriodMs ?? pinTokenTimingDefaults.maxUsageTimePeriodMs;
    this.initialize();
  }

  /** §6.5.4 `initialize()`, run at power-up: a new key-agreement key and a new token. */
  initialize(): void {
    this.regenerate();
    this.resetPinUvAuthToken();
  }

  /**
   * §6.5.4 `regenerate()`: a new key-agreement key pair, which invalidates every shared secret
   * platforms hold. Run after a wrong PIN, and at reset.
   */
  regenerate(): void {
    this.#secretKey = p256.utils.randomSecretKey();
    this.#publicKey = encodeEc2PublicKey(
      p256.getPublicKey(this.#secretKey, false),
      CoseAlgorithm.ECDH_ES_HKDF_256,
    );
  }

  /** §6.5.6 `getPublicKey()`: the key-agreement key for getKeyAgreement, a COSE_Key with alg -25. */
  getPublicKey(): Map<number, unknown> {
    return new Map(this.#publicKey);
  }

  /**
   * §6.5.6 `decapsulate()`: ECDH with the platform's `keyAgreement` key, then that protocol's KDF.
   *
   * @throws {CtapError} `CTAP1_ERR_INVALID_PARAMETER` when the platform's key is malformed or not
   * a P-256 point on the curve.
   */
  decapsulate(version: PinUvAuthProtocolVersion, peerCoseKey: unknown): Uint8Array<ArrayBuffer> {
    const protocol = pinProtocol(version);
    let z: Uint8Array;
    try {
      z = ecdhX(this.#secretKey, peerCoseKey);
    } catch (cause) {
      if (cause instanceof CtapError && cause.status === CtapStatus.CTAP1_ERR_INVALID_PARAMETER) throw cause;
      throw new CtapError(
        CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
        "the platform's keyAgreement is not a well-formed COSE key",
        { cause },
      );
    }
    return protocol.kdf(z);
  }

  /**
   * §6.5.2.1 `resetPinUvAuthToken()`: a fresh random 32-byte token (valid for both protocols);
   * the old one stops working, and the token is no longer in use until
   * {@link beginUsingPinUvAuthToken}.
   */
  resetPinUvAuthToken(): void {
    this.#token = randomBytes(32);
    this.stopUsingPinUvAuthToken();
  }

  /** The current pinUvAuthToken, for the authenticator to encrypt to the platform (a copy). */
  get token(): Uint8Array<ArrayBuffer> {
    return this.#token.slice();
  }

  /**
   * §6.5.2.1 `beginUsingPinUvAuthToken(userIsPresent)`: marks the token in use, sets the
   * userVerified flag and the userPresent flag to `userIsPresent`, and starts the usage timer.
   * Permissions and the permissions RP ID start empty; the caller sets them.
   */
  beginUsingPinUvAuthToken(userIsPresent: boolean): void {
    this.#inUse = true;
    this.#used = false;
    this.#startedAt = this.#now();
    this.#userPresent = userIsPresent;
    this.#userVerified = true;
    this.#permissions = 0;
    this.#permissionsRpId = undefined;
  }

  /**
   * §6.5.2.1 `stopUsingPinUvAuthToken()`: the token is no longer in use; permissions, the
   * permissions RP ID and both flags are cleared.
   */
  stopUsingPinUvAuthToken(): void {
    this.#inUse = false;
    this.#used = false;
    this.#permissions = 0;
    this.#permissionsRpId = undefined;
    this.#userPresent = false;
    this.#userVerified = false;
  }

  /** Whether the token is in use: begun, not stopped, and not expired by the usage timer. */
  get inUse(): boolean {
    this.#observe();
    return this.#inUse;
  }

  /** The token's permissions bit field ({@link PinUvAuthPermission}); 0 when not in use. */
  get permissions(): number {
    this.#observe();
    return this.#permissions;
  }

  set permissions(value: number) {
    this.#permissions = value;
  }

  /**
   * The RP ID the token's permissions are bound to, if any: set when the token is issued with
   * an rpId, or by the first makeCredential/getAssertion that uses a token issued without one.
   */
  get permissionsRpId(): string | undefined {
    this.#observe();
    return this.#permissionsRpId;
  }

  set permissionsRpId(value: string | undefined) {
    this.#permissionsRpId = value;
  }

  /** Whether the token is in use and has every bit of `permission`. */
  hasPermission(permission: number): boolean {
    this.#observe();
    return this.#inUse && permission !== 0 && (this.#permissions & permission) === permission;
  }

  /** §6.5.2.1 `getUserPresentFlagValue()`: the userPresent flag while the token is in use, else false. */
  getUserPresentFlagValue(): boolean {
    this.#observe();
    return this.#inUse && this.#userPresent;
  }

  /** §6.5.2.1 `getUserVerifiedFlagValue()`: the userVerified flag while the token is in use, else false. */
  getUserVerifiedFlagValue(): boolean {
    this.#observe();
    return this.#inUse && this.#userVerified;
  }

  /** §6.5.2.1 `clearUserPresentFlag()`: after an operation consumed the user's presence. */
  clearUserPresentFlag(): void {
    this.#userPresent = false;
  }

  /** §6.5.2.1 `clearUserVerifiedFlag()`: after an operation consumed the user verification. */
  clearUserVerifiedFlag(): void {
    this.#userVerified = false;
  }

  /** §6.5.2.1 `clearPinUvAuthTokenPermissionsExceptLbw()`: keeps only the largeBlobWrite bit. */
  clearPinUvAuthTokenPermissionsExceptLbw(): void {
    this.#permissions &= PinUvAuthPermission.largeBlobWrite;
  }

  /**
   * Checks a request's pinUvAuthParam against the current token (§6.5.4 `verify(pinUvAuthToken,
   * …)`): false when the token is not in use or has expired, or when the MAC is wrong. A valid
   * use counts as "used" for the initial usage time limit. Permissions are checked separately
   * with {@link hasPermission}.
   */
  verifyToken(version: PinUvAuthProtocolVersion, message: Uint8Array, param: Uint8Array): boolean {
    this.#observe();
    if (!this.#inUse) return false;
    if (!pinProtocol(version).verify(this.#token, message, param)) return false;
    this.#used = true;
    return true;
  }

  /** §6.5.2.1 pinUvAuthTokenUsageTimerObserver, run lazily against the clock. */
  #observe(): void {
    if (!this.#inUse) return;
    const elapsed = this.#now() - this.#startedAt;
    if (elapsed > this.#maxUsageTimePeriodMs || (!this.#used && elapsed > this.#initialUsageTimeLimitMs)) {
      this.stopUsingPinUvAuthToken();
      return;
    }
    if (elapsed > this.#userPresentTimeLimitMs) this.#userPresent = false;
  }
}
