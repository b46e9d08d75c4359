/**
 * The OBR channel: `Noise_IK_25519_ChaChaPoly_SHA256` from the Noise Protocol Framework
 * (revision 34, https://noiseprotocol.org/noise.html), built from @noble's audited X25519,
 * ChaCha20-Poly1305 and SHA-256.
 *
 * Why IK: the admin's side (initiator) knows the key agent's paired static key before it starts
 * (`<- s`), so its first message is already encrypted to that key and the relay cannot stand in
 * for the agent; the agent (responder) learns the admin's static key inside that message,
 * encrypted, and checks it against the admins it trusts. Two messages, then transport.
 *
 * ```
 * IK:
 *   <- s
 *   ...
 *   -> e, es, s, ss
 *   <- e, ee, se
 * ```
 *
 * Transport messages use each direction's nonce counter (§5.1): a frame that is flipped, dropped,
 * replayed or reordered no longer decrypts, and the channel is dead from then on ({@link NoiseError}).
 * The prologue binds the session (relay session id, user, rp id allow-list): both ends must agree
 * on it or the handshake fails.
 *
 * @module
 */
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, equalBytes, utf8 } from "../../core/bytes.ts";
import { ProvisioningError } from "../../core/errors.ts";

/** The protocol name, exactly as §8 composes it; it is hashed into every session. */
export const noiseProtocolName = "Noise_IK_25519_ChaChaPoly_SHA256";

const dhLength = 32;
const hashLength = 32;
const tagLength = 16;
/** §3: a Noise message is at most 65535 bytes. */
export const maxNoiseMessageLength = 65535;
/** §5.1: nonce 2^64-1 is reserved; we stop far earlier, at the largest exact JS integer. */
const maxNonce = Number.MAX_SAFE_INTEGER;

/** The channel failed: a frame did not decrypt (tampered, dropped, replayed, reordered) or is malformed. */
export class NoiseError extends ProvisioningError {
  constructor(message: string, options: { cause?: unknown; hint?: string } = {}) {
    super("relay-tampering", message, {
      hint: options.hint ??
        "The relay or the network altered, dropped, replayed or reordered a sealed frame; nothing was accepted. " +
          "Retry; if it happens again, the relay is not trustworthy",
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
  }
}

/** An X25519 key pair (raw 32-byte keys). */
export interface NoiseKeyPair {
  readonly publicKey: Uint8Array;
  readonly privateKey: Uint8Array;
}

/** A fresh X25519 key pair: a key agent's or an admin's static key, or an ephemeral one. */
export function generateNoiseKeyPair(): NoiseKeyPair {
  const privateKey = x25519.utils.randomSecretKey();
  return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
}

/** The key pair of a known private key (test vectors, a stored static key). */
export function noiseKeyPairFrom(privateKey: Uint8Array): NoiseKeyPair {
  return { privateKey, publicKey: x25519.getPublicKey(privateKey) };
}

function dh(keyPair: NoiseKeyPair, publicKey: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(keyPair.privateKey, publicKey);
  } catch (cause) {
    // @noble refuses a low-order point (all-zero shared secret): a peer that sends one is hostile.
    throw new NoiseError("Cannot complete the handshake: the peer sent an invalid X25519 key", { cause });
  }
}

/** HKDF as §4.3 defines it (HMAC-SHA256 chained), two or three outputs. */
function hkdf(chainingKey: Uint8Array, input: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const tempKey = hmac(sha256, chainingKey, input);
  const out1 = hmac(sha256, tempKey, Uint8Array.of(0x01));
  const out2 = hmac(sha256, tempKey, concatBytes(out1, Uint8Array.of(0x02)));
  if (outputs === 2) return [out1, out2];
  return [out1, out2, hmac(sha256, tempKey, concatBytes(out2, Uint8Array.of(0x03)))];
}

/** ChaChaPoly's nonce (§12.3): 32 bits of zeros, then the 64-bit counter little-endian. */
function chachaNonce(n: number): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, BigInt(n), true);
  return nonce;
}

/** §5.1: a key and a nonce counter; the counter is what makes replays and reorders fail. */
export class CipherState {
  #k: Uint8Array | undefined;
  #n = 0;

  constructor(key?: Uint8Array) {
    this.#k = key;
  }

  /** InitializeKey(key): a new key, the counter back to zero. */
  initializeKey(key: Uint8Array | undefined): void {
    this.#k = key;
    this.#n = 0;
  }

  /** HasKey(). */
  hasKey(): boolean {
    return this.#k !== undefined;
  }

  /** How many messages this state has sealed or opened (the next nonce). */
  get nonce(): number {
    return this.#n;
  }

  /** EncryptWithAd(ad, plaintext): plaintext as it is while there is no key. */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.#k === undefined) return plaintext;
    if (this.#n >= maxNonce) {
      throw new NoiseError("Cannot seal another frame: the channel's nonces are used up");
    }
    const sealed = chacha20poly1305(this.#k, chachaNonce(this.#n), ad).encrypt(plaintext);
    this.#n++;
    return sealed;
  }

  /** DecryptWithAd(ad, ciphertext): the counter moves only when the frame authenticates. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.#k === undefined) return ciphertext;
    if (this.#n >= maxNonce) {
      throw new NoiseError("Cannot open another frame: the channel's nonces are used up");
    }
    if (ciphertext.length < tagLength) {
      throw new NoiseError(
        `Cannot open frame ${this.#n}: ${ciphertext.length} bytes is shorter than its tag`,
      );
    }
    let plaintext: Uint8Array;
    try {
      plaintext = chacha20poly1305(this.#k, chachaNonce(this.#n), ad).decrypt(ciphertext);
    } catch (cause) {
      throw new NoiseError(
        `Cannot open frame ${this.#n}: it does not authenticate (altered, dropped, replayed or out of order)`,
        { cause },
      );
    }
    this.#n++;
    return plaintext;
  }
}

/** §5.2: the chaining key, the transcript hash, and the cipher state of the handshake. */
export class SymmetricState {
  readonly cipher = new CipherState();
  #ck: Uint8Array;
  #h: Uint8Array;

  /** InitializeSymmetric(protocolName). */
  constructor(protocolName: string) {
    const name = utf8(protocolName);
    this.#h = name.length <= hashLength
      ? concatBytes(name, new Uint8Array(hashLength - name.length))
      : sha256(name);
    this.#ck = this.#h;
  }

  /** The handshake hash h: a channel binding both ends share. */
  get handshakeHash(): Uint8Array {
    return this.#h;
  }

  /** MixKey(input_key_material). */
  mixKey(inputKeyMaterial: Uint8Array): void {
    const [ck, tempK] = hkdf(this.#ck, inputKeyMaterial, 2) as [Uint8Array, Uint8Array];
    this.#ck = ck;
    this.cipher.initializeKey(tempK);
  }

  /** MixHash(data). */
  mixHash(data: Uint8Array): void {
    this.#h = sha256(concatBytes(this.#h, data));
  }

  /** EncryptAndHash(plaintext). */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipher.encryptWithAd(this.#h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  /** DecryptAndHash(ciphertext). */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipher.decryptWithAd(this.#h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  /** Split(): the initiator's sending state first, the responder's second. */
  split(): [CipherState, CipherState] {
    const [k1, k2] = hkdf(this.#ck, new Uint8Array(0), 2) as [Uint8Array, Uint8Array];
    return [new CipherState(k1), new CipherState(k2)];
  }
}

/** The two directions of an established channel, from one end's point of view. */
export interface NoiseTransport {
  /** Seals one frame to the other end. */
  send: CipherState;
  /** Opens the next frame from the other end, in order. */
  receive: CipherState;
  /** The handshake hash (channel binding). */
  handshakeHash: Uint8Array;
  /** The other end's static public key, as the handshake authenticated it. */
  remoteStatic: Uint8Array;
}

/** What both ends of an IK handshake share: the prologue (§6) binding the session. */
export interface HandshakeBase {
  prologue: Uint8Array;
  /** This end's static key pair. */
  staticKey: NoiseKeyPair;
  /** For test vectors only: a fixed ephemeral key; a fresh one otherwise. */
  ephemeralKey?: NoiseKeyPair;
}

/** The admin's side: knows the agent's static key (`<- s`). */
export class IkInitiator {
  readonly #ss = new SymmetricState(noiseProtocolName);
  readonly #s: NoiseKeyPair;
  readonly #e: NoiseKeyPair;
  readonly #rs: Uint8Array;
  #step: "write-1" | "read-2" | "done" = "write-1";

  constructor(options: HandshakeBase & { remoteStatic: Uint8Array }) {
    if (options.remoteStatic.length !== dhLength) {
      throw new TypeError(
        `Cannot start the handshake: the agent's key is ${options.remoteStatic.length} bytes, not 32`,
      );
    }
    this.#s = options.staticKey;
    this.#e = options.ephemeralKey ?? generateNoiseKeyPair();
    this.#rs = options.remoteStatic;
    this.#ss.mixHash(options.prologue);
    this.#ss.mixHash(this.#rs); // pre-message "<- s"
  }

  /** `-> e, es, s, ss` with an encrypted payload. */
  writeMessage1(payload: Uint8Array): Uint8Array {
    if (this.#step !== "write-1") throw new TypeError("Cannot write handshake message 1 twice");
    this.#step = "read-2";
    const ss = this.#ss;
    ss.mixHash(this.#e.publicKey);
    ss.mixKey(dh(this.#e, this.#rs));
    const encryptedStatic = ss.encryptAndHash(this.#s.publicKey);
    ss.mixKey(dh(this.#s, this.#rs));
    const encryptedPayload = ss.encryptAndHash(payload);
    return checkLength(concatBytes(this.#e.publicKey, encryptedStatic, encryptedPayload));
  }

  /** `<- e, ee, se`: the payload, and the transport states. */
  readMessage2(message: Uint8Array): { payload: Uint8Array; transport: NoiseTransport } {
    if (this.#step !== "read-2") throw new TypeError("Cannot read handshake message 2 now");
    this.#step = "done";
    if (message.length < dhLength + tagLength) {
      throw new NoiseError(`Cannot read the agent's handshake answer: ${message.length} bytes is too short`);
    }
    const ss = this.#ss;
    const re = message.subarray(0, dhLength);
    ss.mixHash(re);
    ss.mixKey(dh(this.#e, re));
    ss.mixKey(dh(this.#s, re));
    const payload = ss.decryptAndHash(message.subarray(dhLength));
    const [send, receive] = ss.split();
    return { payload, transport: { send, receive, handshakeHash: ss.handshakeHash, remoteStatic: this.#rs } };
  }
}

/** The key agent's side: learns the admin's static key from message 1. */
export class IkResponder {
  readonly #ss = new SymmetricState(noiseProtocolName);
  readonly #s: NoiseKeyPair;
  readonly #e: NoiseKeyPair;
  #re: Uint8Array | undefined;
  #rs: Uint8Array | undefined;
  #step: "read-1" | "write-2" | "done" = "read-1";

  constructor(options: HandshakeBase) {
    this.#s = options.staticKey;
    this.#e = options.ephemeralKey ?? generateNoiseKeyPair();
    this.#ss.mixHash(options.prologue);
    this.#ss.mixHash(this.#s.publicKey); // pre-message "<- s"
  }

  /** Reads `-> e, es, s, ss`: the admin's static key and the payload. */
  readMessage1(message: Uint8Array): { payload: Uint8Array; remoteStatic: Uint8Array } {
    if (this.#step !== "read-1") throw new TypeError("Cannot read handshake message 1 twice");
    this.#step = "write-2";
    const staticLength = dhLength + tagLength;
    if (message.length < dhLength + staticLength + tagLength) {
      throw new NoiseError(`Cannot read the admin's handshake: ${message.length} bytes is too short`);
    }
    const ss = this.#ss;
    const re = message.subarray(0, dhLength);
    ss.mixHash(re);
    ss.mixKey(dh(this.#s, re));
    const rs = ss.decryptAndHash(message.subarray(dhLength, dhLength + staticLength));
    ss.mixKey(dh(this.#s, rs));
    const payload = ss.decryptAndHash(message.subarray(dhLength + staticLength));
    this.#re = re.slice();
    this.#rs = rs;
    return { payload, remoteStatic: rs };
  }

  /** `<- e, ee, se` with an encrypted payload, and the transport states. */
  writeMessage2(payload: Uint8Array): { message: Uint8Array; transport: NoiseTransport } {
    if (this.#step !== "write-2" || !this.#re || !this.#rs) {
      throw new TypeError("Cannot write handshake message 2 now");
    }
    this.#step = "done";
    const ss = this.#ss;
    ss.mixHash(this.#e.publicKey);
    ss.mixKey(dh(this.#e, this.#re));
    ss.mixKey(dh(this.#e, this.#rs));
    const encryptedPayload = ss.encryptAndHash(payload);
    const [initiatorToResponder, responderToInitiator] = ss.split();
    return {
      message: checkLength(concatBytes(this.#e.publicKey, encryptedPayload)),
      transport: {
        send: responderToInitiator,
        receive: initiatorToResponder,
        handshakeHash: ss.handshakeHash,
        remoteStatic: this.#rs,
      },
    };
  }
}

function checkLength(message: Uint8Array): Uint8Array {
  if (message.length > maxNoiseMessageLength) {
    throw new RangeError(
      `Cannot send a Noise message of ${message.length} bytes: the limit is ${maxNoiseMessageLength}`,
    );
  }
  return message;
}

/**
 * The prologue of an OBR session: what both ends must agree on, or the handshake fails. The
 * relay's session id makes a recorded handshake useless in another session; the user and the rp
 * id allow-list stop a relay from steering a channel meant for one user or rp to another.
 */
export function obrPrologue(
  binding: { sessionId: string; userId: string; rpIds: readonly string[] },
): Uint8Array {
  const rpIds = [...binding.rpIds].sort();
  return utf8(JSON.stringify(["provisioning-obr/1", binding.sessionId, binding.userId, rpIds]));
}

/** Constant-time comparison of two public keys. */
export function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return equalBytes(a, b);
}
