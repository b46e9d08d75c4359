/**
 * The software FIDO2 authenticator: a complete CTAP 2.1 authenticator in TypeScript, answering
 * the raw CTAP2 messages of {@link CtapDevice}. It is used in-process, behind the CTAPHID socket
 * of `provisioning key serve`, and in every test as the real counterpart of our client.
 *
 * What it is, truthfully reported by getInfo: FIDO_2_0 and FIDO_2_1; ES256 and EdDSA;
 * discoverable and non-discoverable credentials; a PIN (protocols two and one) as its only user
 * verification; credProtect and hmac-secret; credential management; authenticatorConfig with
 * setMinPINLength; `packed` attestation with its own certificate chain, or `none`.
 *
 * Requests are handled one at a time, in arrival order; each state change is saved through the
 * {@link KeyStateStore} before the response leaves.
 *
 * @module
 */
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { concatBytes, equalBytes, fromBase64Any, randomBytes, toBase64Url } from "../../core/bytes.ts";
import { encodeCbor, toIntMap } from "../../core/ctap/cbor.ts";
import { AuthDataFlag, encodeAuthenticatorData } from "../../core/ctap/auth_data.ts";
import {
  ClientPinRequest,
  ClientPinResponse,
  ClientPinSubcommand,
  ConfigRequest,
  ConfigSubcommand,
  type CredentialDescriptor,
  credentialManagementParamsKeys,
  CredentialManagementRequest,
  CredentialManagementResponse,
  CredentialManagementSubcommand,
  CtapCommand,
  decodeBody,
  encodeResponse,
  GetAssertionRequest,
  GetAssertionResponse,
  GetInfoResponse,
  MakeCredentialRequest,
  MakeCredentialResponse,
  setMinPinLengthParamsKeys,
} from "../../core/ctap/commands.ts";
import { CoseAlgorithm } from "../../core/ctap/cose.ts";
import type { CtapCallOptions, CtapDevice } from "../../core/ctap/device.ts";
import {
  type PinProtocol,
  pinProtocol,
  PinProtocolAuthenticatorState,
  PinUvAuthPermission,
  unpadPin,
} from "../../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../../core/ctap/status.ts";
import { ProvisioningError } from "../../core/errors.ts";
import { type CredentialSecrets, unwrapCredentialId, wrapCredentialId } from "./credential_id.ts";
import {
  cosePublicKey,
  generateKeyPair,
  isSupportedAlgorithm,
  sign,
  supportedAlgorithms,
} from "./signing.ts";
import {
  applyKeyStateChange,
  type KeyStateChange,
  maxDiscoverableOf,
  type SoftwareKeyState,
  type StoredCredential,
} from "./state.ts";

/** Where the key's state lives: the encrypted vault, or memory for a throw-away key. */
export interface KeyStateStore {
  /** The current state (read-only). */
  read(): SoftwareKeyState;
  /**
   * Makes one change, computed from the current state (which, for a vault shared by several
   * processes, includes the others' changes), and resolves with it once it is durable.
   */
  change(compute: (state: SoftwareKeyState) => KeyStateChange): Promise<KeyStateChange | undefined>;
  /**
   * Brings {@link read} up to date with what other processes sharing the store changed; called
   * before each request. Absent for a store only this process uses.
   */
  refresh?(): Promise<unknown>;
}

/** A store that keeps the state in memory only (bench, throw-away keys). */
export class MemoryKeyStateStore implements KeyStateStore {
  #state: SoftwareKeyState;
  constructor(state: SoftwareKeyState) {
    this.#state = structuredClone(state);
  }
  read(): SoftwareKeyState {
    return this.#state;
  }
  /** Replaces the whole state (tests that put a key in a given state, such as a blocked PIN). */
  write(state: SoftwareKeyState): Promise<void> {
    this.#state = structuredClone(state);
    return Promise.resolve();
  }
  change(compute: (state: SoftwareKeyState) => KeyStateChange): Promise<KeyStateChange> {
    // A copy, as the vault keeps what it parsed back from JSON, not the caller's objects.
    const change = structuredClone(compute(this.#state));
    applyKeyStateChange(this.#state, change);
    return Promise.resolve(change);
  }
}

/** Asked whenever the key needs a touch; resolve `true` for "touched", `false` for "refused". */
export type UserPresenceCheck = (
  request: { command: string; rpId?: string; signal: AbortSignal },
) => Promise<boolean>;

/** Options of {@link SoftwareAuthenticator}. */
export interface SoftwareAuthenticatorOptions {
  /**
   * Asked for each touch; the key then reports "user presence needed" in its keep-alives.
   * @default none: every touch is given at once, silently (the admin's tool is the user)
   */
  userPresence?: UserPresenceCheck;
  /** Clock in milliseconds, for token lifetimes and the reset window. @default Date.now */
  now?: () => number;
  /** How long after power-up a reset is accepted (CTAP 2.1 §6.6). @default 10000 */
  resetWindowMs?: number;
  /** Most discoverable credentials the key holds. @default the key's own setting (its state) */
  maxDiscoverableCredentials?: number;
}

const maxMessageSize = 7609;
const maxCredentialsInList = 16;
// Sealed ids carry the private key and, with hmac-secret, two 32-byte secrets: about 131 bytes.
const maxCredentialIdLength = 256;
const pinRetriesMax = 8;
const pinAttemptsPerPowerCycle = 3;
const nextAssertionLifetimeMs = 30_000;

/** A decoded hmac-secret request: the session with the platform and its one or two salts. */
interface HmacSecretInput {
  protocol: PinProtocol;
  sharedSecret: Uint8Array;
  salts: Uint8Array[];
}

/** An assertion still to be returned by getNextAssertion. */
interface PendingAssertions {
  hmacSecret?: HmacSecretInput;
  rpId: string;
  clientDataHash: Uint8Array;
  flags: number;
  credentials: FoundCredential[];
  expiresAt: number;
}

interface FoundCredential {
  id: Uint8Array;
  secrets: CredentialSecrets;
  stored: StoredCredential | undefined;
}

/** Enumeration state of credential management between Begin and GetNext calls. */
interface PendingEnumeration {
  kind: "rps" | "credentials";
  items: CredentialManagementResponse[];
}

/** See the module documentation. */
export class SoftwareAuthenticator implements CtapDevice {
  readonly #store: KeyStateStore;
  readonly #userPresence: UserPresenceCheck | undefined;
  readonly #now: () => number;
  readonly #poweredUpAt: number;
  readonly #resetWindowMs: number;
  readonly #maxDiscoverableOverride: number | undefined;
  readonly #pin: PinProtocolAuthenticatorState;
  #queue: Promise<unknown> = Promise.resolve();
  #pinAttemptsThisPowerCycle = 0;
  #pendingAssertions: PendingAssertions | undefined;
  #pendingEnumeration: PendingEnumeration | undefined;
  /**
   * PIN retries a correct PIN gave back that are not saved yet: the restore is folded into the
   * next save instead of costing a sync of its own (a crash before it leaves the key with fewer
   * retries, never more; docs/keys.md, "The PIN retry counter").
   */
  #pinRetriesOwed = 0;

  constructor(store: KeyStateStore, options: SoftwareAuthenticatorOptions = {}) {
    this.#store = store;
    this.#userPresence = options.userPresence;
    this.#now = options.now ?? Date.now;
    this.#poweredUpAt = this.#now();
    this.#resetWindowMs = options.resetWindowMs ?? 10_000;
    this.#maxDiscoverableOverride = options.maxDiscoverableCredentials;
    this.#pin = new PinProtocolAuthenticatorState({ now: this.#now });
  }

  /**
   * Answers one CTAP2 request; never rejects for a protocol error (those become status bytes).
   * Rejects with the store's {@link ProvisioningError} when a change cannot be saved.
   */
  transceive(request: Uint8Array, options: CtapCallOptions = {}): Promise<Uint8Array> {
    const run = () => this.#handle(request, options);
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  async #handle(request: Uint8Array, options: CtapCallOptions): Promise<Uint8Array> {
    try {
      await this.#store.refresh?.();
      return await this.#dispatch(request, options);
    } catch (error) {
      if (error instanceof CtapError) return Uint8Array.of(error.status);
      if (options.signal?.aborted) return Uint8Array.of(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
      // The state could not be saved (a full disk, a vault locked too long): the caller needs the
      // reason and what to do, which a status byte (CTAP1_ERR_OTHER) cannot carry.
      if (error instanceof ProvisioningError) throw error;
      return Uint8Array.of(CtapStatus.CTAP1_ERR_OTHER);
    }
  }

  #dispatch(request: Uint8Array, options: CtapCallOptions): Promise<Uint8Array> | Uint8Array {
    if (request.length === 0) throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_LENGTH, "empty request");
    if (request.length > maxMessageSize) throw new CtapError(CtapStatus.CTAP2_ERR_REQUEST_TOO_LARGE);
    const command = request[0]!;
    const body = request.subarray(1);
    if (command !== CtapCommand.getNextAssertion) this.#pendingAssertions = undefined;
    if (command !== CtapCommand.credentialManagement) this.#pendingEnumeration = undefined;
    switch (command) {
      case CtapCommand.getInfo:
        return encodeResponse(GetInfoResponse, this.#info());
      case CtapCommand.makeCredential:
        return this.#makeCredential(decodeBody(MakeCredentialRequest, body), options);
      case CtapCommand.getAssertion:
        return this.#getAssertion(decodeBody(GetAssertionRequest, body), options);
      case CtapCommand.getNextAssertion:
        return this.#getNextAssertion();
      case CtapCommand.clientPin:
        return this.#clientPin(decodeBody(ClientPinRequest, body));
      case CtapCommand.reset:
        return this.#reset(options);
      case CtapCommand.selection:
        return this.#selection(options);
      case CtapCommand.config:
        return this.#config(decodeBody(ConfigRequest, body));
      case CtapCommand.credentialManagement:
        return this.#credentialManagement(decodeBody(CredentialManagementRequest, body));
      default:
        throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_COMMAND, `command 0x${command.toString(16)}`);
    }
  }

  get #state(): SoftwareKeyState {
    return this.#store.read();
  }

  get #maxDiscoverable(): number {
    return this.#maxDiscoverableOverride ?? maxDiscoverableOf(this.#state);
  }

  /**
   * Saves one change computed from the current state; resolves once it is durable. A PIN retry
   * restore still owed rides along, unless the change sets the PIN itself.
   */
  async #save(compute: (state: SoftwareKeyState) => KeyStateChange): Promise<KeyStateChange> {
    const owed = this.#pinRetriesOwed;
    const change = await this.#store.change((current) => {
      const change = compute(current);
      if (owed === 0 || current.pin === undefined || (change.set && "pin" in change.set)) return change;
      return {
        ...change,
        set: { ...change.set, pin: { ...current.pin, retries: this.#retriesOf(current)! } },
      };
    });
    if (change === undefined) {
      throw new CtapError(CtapStatus.CTAP1_ERR_OTHER, "the state change was not saved");
    }
    this.#pinRetriesOwed = 0;
    return change;
  }

  /**
   * The PIN retries left, counting a restore not saved yet. A stored 0 stays 0: only the stored
   * count can block, and a blocked PIN is never unblocked by what this process remembers.
   */
  #retriesOf(state: SoftwareKeyState): number | undefined {
    if (state.pin === undefined) return undefined;
    if (state.pin.retries === 0) return 0;
    return Math.min(pinRetriesMax, state.pin.retries + this.#pinRetriesOwed);
  }

  /**
   * Saves a PIN retry restore still owed (see {@link #pinRetriesOwed}); call before the key is
   * put away, so a run that registered nothing after its PIN check does not leave one retry fewer.
   */
  flush(): Promise<void> {
    const run = async () => {
      if (this.#pinRetriesOwed > 0 && this.#state.pin !== undefined) await this.#save(() => ({}));
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** Spends one signature counter value, durably, and returns it. */
  async #nextSignCount(extra: Omit<KeyStateChange, "set"> = {}): Promise<number> {
    const change = await this.#save((current) => ({ ...extra, set: { signCount: current.signCount + 1 } }));
    return change.set!.signCount!;
  }

  #info(): GetInfoResponse {
    const state = this.#state;
    const remaining = Math.max(0, this.#maxDiscoverable - state.credentials.length);
    return {
      versions: ["FIDO_2_0", "FIDO_2_1"],
      extensions: ["credProtect", "hmac-secret"],
      aaguid: fromBase64Any(state.aaguid),
      options: {
        rk: true,
        up: true,
        plat: false,
        clientPin: state.pin !== undefined,
        pinUvAuthToken: true,
        credMgmt: true,
        authnrCfg: true,
        setMinPINLength: true,
        makeCredUvNotRqd: true,
      },
      maxMsgSize: maxMessageSize,
      pinUvAuthProtocols: [2, 1],
      maxCredentialCountInList: maxCredentialsInList,
      maxCredentialIdLength,
      transports: ["usb"],
      algorithms: supportedAlgorithms.map((alg) => ({ type: "public-key", alg })),
      forcePINChange: state.forcePinChange,
      minPINLength: state.minPinLength,
      firmwareVersion: 1,
      maxRPIDsForSetMinPINLength: 0,
      remainingDiscoverableCredentials: remaining,
    };
  }

  // --- user presence --------------------------------------------------------------------------

  async #requireUserPresence(command: string, options: CtapCallOptions, rpId?: string): Promise<void> {
    if (options.signal?.aborted) throw new CtapError(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
    const check = this.#userPresence;
    if (!check) return;
    const controller = new AbortController();
    const onAbort = () => controller.abort(options.signal?.reason);
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (options.signal?.aborted) throw new CtapError(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL);
      options.onKeepalive?.("user-presence-needed");
      const cancelled = new Promise<never>((_, reject) => {
        const cancel = () => reject(new CtapError(CtapStatus.CTAP2_ERR_KEEPALIVE_CANCEL));
        // The caller may have aborted inside onKeepalive, before this listener existed.
        if (controller.signal.aborted) cancel();
        else controller.signal.addEventListener("abort", cancel, { once: true });
      });
      const touched = await Promise.race([
        check({ command, ...(rpId === undefined ? {} : { rpId }), signal: controller.signal }),
        cancelled,
      ]);
      if (!touched) throw new CtapError(CtapStatus.CTAP2_ERR_OPERATION_DENIED, "the user refused the touch");
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      controller.abort();
    }
  }

  // --- pinUvAuthParam checks ------------------------------------------------------------------

  /** Common checks of makeCredential/getAssertion step 1–2 (CTAP 2.1 §6.1.2, §6.2.2). */
  async #touchProbe(
    pinUvAuthParam: Uint8Array | undefined,
    options: CtapCallOptions,
    command: string,
  ): Promise<void> {
    if (pinUvAuthParam !== undefined && pinUvAuthParam.length === 0) {
      // A platform asking the user to pick this key: touch, then say what the PIN state is.
      await this.#requireUserPresence(command, options);
      throw new CtapError(
        this.#state.pin ? CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID : CtapStatus.CTAP2_ERR_PIN_NOT_SET,
      );
    }
  }

  /** Verifies pinUvAuthParam over `message` for `permission` and `rpId`; true when UV was done. */
  #verifyPinUvAuth(
    request: { pinUvAuthParam?: Uint8Array | undefined; pinUvAuthProtocol?: number | undefined },
    message: Uint8Array,
    permission: number,
    rpId: string | undefined,
  ): boolean {
    if (request.pinUvAuthParam === undefined) return false;
    const version = request.pinUvAuthProtocol;
    if (version === undefined) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "pinUvAuthProtocol");
    }
    if (version !== 1 && version !== 2) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "pinUvAuthProtocol");
    }
    if (!this.#pin.verifyToken(version, message, request.pinUvAuthParam)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
    }
    if (!this.#pin.hasPermission(permission)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID, "permission");
    }
    if (rpId !== undefined) {
      const bound = this.#pin.permissionsRpId;
      if (bound !== undefined && bound !== rpId) {
        throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID, "rp id");
      }
      if (bound === undefined) this.#pin.permissionsRpId = rpId;
    }
    return true;
  }

  // --- authenticatorMakeCredential (CTAP 2.1 §6.1.2) -----------------------------------------

  async #makeCredential(request: MakeCredentialRequest, options: CtapCallOptions): Promise<Uint8Array> {
    await this.#touchProbe(request.pinUvAuthParam, options, "makeCredential");
    const state = this.#state;
    const alg = request.pubKeyCredParams.find((p) => p.type === "public-key" && isSupportedAlgorithm(p.alg))
      ?.alg;
    if (alg === undefined || !isSupportedAlgorithm(alg)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_UNSUPPORTED_ALGORITHM);
    }
    const rk = request.options?.["rk"] ?? false;
    if (request.options?.["up"] === false) {
      throw new CtapError(CtapStatus.CTAP2_ERR_INVALID_OPTION, "up=false");
    }
    if (request.options?.["uv"] === true) {
      // The PIN is this key's only user verification; a platform must use pinUvAuthParam.
      throw new CtapError(CtapStatus.CTAP2_ERR_INVALID_OPTION, "no built-in user verification");
    }
    if (request.enterpriseAttestation !== undefined) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "enterprise attestation is not enabled");
    }
    const uv = this.#verifyPinUvAuth(
      request,
      request.clientDataHash,
      PinUvAuthPermission.makeCredential,
      request.rp.id,
    );
    if (state.pin && !uv && rk) throw new CtapError(CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
    if (uv && state.forcePinChange) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);

    const rpIdHash = sha256(new TextEncoder().encode(request.rp.id));
    for (const excluded of request.excludeList ?? []) {
      const found = this.#find(rpIdHash, excluded.id);
      if (!found) continue;
      if (found.secrets.credProtect === 3 && !uv) continue;
      // §6.1.2 step 11: the answer is "excluded" whether or not the user touched the key.
      await this.#requireUserPresence("makeCredential", options, request.rp.id).catch((error) => {
        if (!(error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_OPERATION_DENIED)) {
          throw error;
        }
      });
      throw new CtapError(CtapStatus.CTAP2_ERR_CREDENTIAL_EXCLUDED);
    }

    const extensions = request.extensions ?? {};
    const wantedProtect = extensions["credProtect"];
    const credProtect = typeof wantedProtect === "number" && wantedProtect >= 1 && wantedProtect <= 3
      ? wantedProtect
      : 1;
    const hmacSecret = extensions["hmac-secret"] === true;
    // Encoded once, not once per stored credential: with 10,000 passkeys that loop was most of the CPU.
    const userId = toBase64Url(request.user.id);
    if (rk && !state.credentials.some((c) => c.rpId === request.rp.id && c.user.id === userId)) {
      if (state.credentials.length >= this.#maxDiscoverable) {
        throw new CtapError(CtapStatus.CTAP2_ERR_KEY_STORE_FULL);
      }
    }

    await this.#requireUserPresence("makeCredential", options, request.rp.id);
    if (uv) this.#spendPinUvAuthToken();

    const keyPair = await generateKeyPair(alg);
    const secrets: CredentialSecrets = {
      alg,
      privateKey: keyPair.privateKey,
      credProtect,
      discoverable: rk,
      ...(hmacSecret ? { credRandomWithUv: randomBytes(32), credRandomWithoutUv: randomBytes(32) } : {}),
    };
    const credentialId = wrapCredentialId(fromBase64Any(state.masterKey), rpIdHash, secrets);
    const signCount = await this.#nextSignCount(
      rk ? { putCredential: this.#discoverableRecord(request, credentialId, alg, credProtect) } : {},
    );
    const authenticatorExtensions: Record<string, unknown> = {};
    if (typeof wantedProtect === "number") authenticatorExtensions["credProtect"] = credProtect;
    if (hmacSecret) authenticatorExtensions["hmac-secret"] = true;
    const authData = encodeAuthenticatorData({
      rpIdHash,
      flags: AuthDataFlag.userPresent | (uv ? AuthDataFlag.userVerified : 0),
      signCount,
      attestedCredentialData: {
        aaguid: fromBase64Any(state.aaguid),
        credentialId,
        publicKey: keyPair.publicKey,
        publicKeyBytes: new Uint8Array(),
      },
      extensions: authenticatorExtensions,
    });

    const response: MakeCredentialResponse = state.attestation.format === "packed"
      ? {
        fmt: "packed",
        authData,
        attStmt: {
          alg: CoseAlgorithm.ES256,
          sig: sign(
            CoseAlgorithm.ES256,
            fromBase64Any(state.attestation.privateKey),
            concatBytes(authData, request.clientDataHash),
          ),
          x5c: [fromBase64Any(state.attestation.certificate)],
        },
      }
      : { fmt: "none", authData, attStmt: {} };
    return encodeResponse(MakeCredentialResponse, response);
  }

  /** What the key remembers of a discoverable credential (its secrets are sealed in its id). */
  #discoverableRecord(
    request: MakeCredentialRequest,
    credentialId: Uint8Array,
    alg: number,
    credProtect: number,
  ): StoredCredential {
    return {
      id: toBase64Url(credentialId),
      rpId: request.rp.id,
      ...(request.rp.name === undefined ? {} : { rpName: request.rp.name }),
      user: {
        id: toBase64Url(request.user.id),
        ...(request.user.name === undefined ? {} : { name: request.user.name }),
        ...(request.user.displayName === undefined ? {} : { displayName: request.user.displayName }),
      },
      alg,
      credProtect,
      createdAt: new Date(this.#now()).toISOString(),
    };
  }

  /**
   * CTAP 2.1 §6.1.2 step 14 and §6.2.2 step 9: a user-present operation consumes the token's
   * flags and its permissions (but lbw), so one token authorises one makeCredential/getAssertion.
   */
  #spendPinUvAuthToken(): void {
    this.#pin.clearUserPresentFlag();
    this.#pin.clearUserVerifiedFlag();
    this.#pin.clearPinUvAuthTokenPermissionsExceptLbw();
  }

  /** Looks a credential id up for an rp: sealed by this key, and not deleted if discoverable. */
  #find(rpIdHash: Uint8Array, credentialId: Uint8Array): FoundCredential | undefined {
    const state = this.#state;
    const secrets = unwrapCredentialId(fromBase64Any(state.masterKey), rpIdHash, credentialId);
    if (!secrets) return undefined;
    const idText = toBase64Url(credentialId);
    const stored = state.credentials.find((c) => c.id === idText);
    if (secrets.discoverable && !stored) return undefined;
    return { id: credentialId, secrets, stored };
  }

  // --- authenticatorGetAssertion (CTAP 2.1 §6.2.2) -------------------------------------------

  async #getAssertion(request: GetAssertionRequest, options: CtapCallOptions): Promise<Uint8Array> {
    await this.#touchProbe(request.pinUvAuthParam, options, "getAssertion");
    if (request.options?.["uv"] === true) {
      throw new CtapError(CtapStatus.CTAP2_ERR_INVALID_OPTION, "no built-in user verification");
    }
    if (request.options?.["rk"] !== undefined) {
      throw new CtapError(CtapStatus.CTAP2_ERR_UNSUPPORTED_OPTION, "rk");
    }
    const up = request.options?.["up"] ?? true;
    const uv = this.#verifyPinUvAuth(
      request,
      request.clientDataHash,
      PinUvAuthPermission.getAssertion,
      request.rpId,
    );
    if (uv && this.#state.forcePinChange) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION);

    const hmacSecret = this.#hmacSecretInput(request.extensions?.["hmac-secret"]);
    const rpIdHash = sha256(new TextEncoder().encode(request.rpId));
    let found: FoundCredential[];
    if (request.allowList && request.allowList.length > 0) {
      found = request.allowList
        .map((descriptor) => this.#find(rpIdHash, descriptor.id))
        .filter((c): c is FoundCredential => c !== undefined)
        .filter((c) => c.secrets.credProtect !== 3 || uv);
    } else {
      found = this.#state.credentials
        .filter((c) => c.rpId === request.rpId)
        // Newest first; stored in creation order, so reversing first keeps same-millisecond ties right.
        .toReversed()
        .toSorted((a, b) => b.createdAt.localeCompare(a.createdAt))
        .map((c) => this.#find(rpIdHash, fromBase64Any(c.id)))
        .filter((c): c is FoundCredential => c !== undefined)
        .filter((c) => c.secrets.credProtect === 1 || uv);
    }
    if (found.length === 0) {
      if (up) await this.#requireUserPresence("getAssertion", options, request.rpId);
      throw new CtapError(CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
    }
    if (up) {
      await this.#requireUserPresence("getAssertion", options, request.rpId);
      if (uv) this.#spendPinUvAuthToken();
    }
    const flags = (up ? AuthDataFlag.userPresent : 0) | (uv ? AuthDataFlag.userVerified : 0);
    const first = found[0]!;
    const withAllowList = (request.allowList?.length ?? 0) > 0;
    if (!withAllowList && found.length > 1) {
      this.#pendingAssertions = {
        rpId: request.rpId,
        clientDataHash: request.clientDataHash,
        flags,
        credentials: found.slice(1),
        expiresAt: this.#now() + nextAssertionLifetimeMs,
        ...(hmacSecret ? { hmacSecret } : {}),
      };
    }
    return encodeResponse(
      GetAssertionResponse,
      await this.#assert(rpIdHash, request.clientDataHash, flags, first, {
        ...(!withAllowList && found.length > 1 ? { numberOfCredentials: found.length } : {}),
        ...(hmacSecret ? { hmacSecret } : {}),
        userDetails: uv,
      }),
    );
  }

  /**
   * Reads getAssertion's hmac-secret input (CTAP 2.1 §12.5): {1: keyAgreement, 2: saltEnc,
   * 3: saltAuth, 4: pinUvAuthProtocol}. Checked before the touch, so a bad one costs nothing.
   */
  #hmacSecretInput(input: unknown): HmacSecretInput | undefined {
    if (input === undefined) return undefined;
    if (!(input instanceof Map)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE, "hmac-secret");
    }
    const keyAgreement = input.get(1);
    const saltEnc = input.get(2);
    const saltAuth = input.get(3);
    const version = input.get(4) ?? 1;
    if (keyAgreement === undefined || saltEnc === undefined || saltAuth === undefined) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "hmac-secret");
    }
    if (!(saltEnc instanceof Uint8Array) || !(saltAuth instanceof Uint8Array)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_CBOR_UNEXPECTED_TYPE, "hmac-secret salts");
    }
    if (version !== 1 && version !== 2) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "hmac-secret protocol");
    }
    const sharedSecret = this.#pin.decapsulate(version, keyAgreement);
    const protocol = pinProtocol(version);
    if (!protocol.verify(sharedSecret, saltEnc, saltAuth)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
    }
    const plain = protocol.decrypt(sharedSecret, saltEnc);
    if (plain.length !== 32 && plain.length !== 64) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_LENGTH, "salts");
    }
    const salts = plain.length === 32 ? [plain] : [plain.slice(0, 32), plain.slice(32)];
    return { protocol, sharedSecret, salts };
  }

  async #getNextAssertion(): Promise<Uint8Array> {
    const pending = this.#pendingAssertions;
    if (!pending || pending.credentials.length === 0) throw new CtapError(CtapStatus.CTAP2_ERR_NOT_ALLOWED);
    if (this.#now() > pending.expiresAt) {
      this.#pendingAssertions = undefined;
      throw new CtapError(CtapStatus.CTAP2_ERR_NOT_ALLOWED, "getNextAssertion timed out");
    }
    const next = pending.credentials.shift()!;
    pending.expiresAt = this.#now() + nextAssertionLifetimeMs; // §6.3 step 7: reset the timer
    const rpIdHash = sha256(new TextEncoder().encode(pending.rpId));
    return encodeResponse(
      GetAssertionResponse,
      await this.#assert(rpIdHash, pending.clientDataHash, pending.flags, next, {
        userDetails: (pending.flags & AuthDataFlag.userVerified) !== 0,
        ...(pending.hmacSecret ? { hmacSecret: pending.hmacSecret } : {}),
      }),
    );
  }

  async #assert(
    rpIdHash: Uint8Array,
    clientDataHash: Uint8Array,
    flags: number,
    credential: FoundCredential,
    extra: { numberOfCredentials?: number; userDetails: boolean; hmacSecret?: HmacSecretInput },
  ): Promise<GetAssertionResponse> {
    const signCount = await this.#nextSignCount();
    const extensions: Record<string, unknown> = {};
    const credRandom = (flags & AuthDataFlag.userVerified)
      ? credential.secrets.credRandomWithUv
      : credential.secrets.credRandomWithoutUv;
    if (extra.hmacSecret && credRandom) {
      const { protocol, sharedSecret, salts } = extra.hmacSecret;
      const outputs = salts.map((salt) => hmac(sha256, credRandom, salt));
      extensions["hmac-secret"] = protocol.encrypt(sharedSecret, concatBytes(...outputs));
    }
    const authData = encodeAuthenticatorData({ rpIdHash, flags, signCount, extensions });
    const stored = credential.stored;
    const response: GetAssertionResponse = {
      credential: { type: "public-key", id: credential.id },
      authData,
      signature: sign(
        credential.secrets.alg,
        credential.secrets.privateKey,
        concatBytes(authData, clientDataHash),
      ),
    };
    if (stored) {
      response.user = {
        id: fromBase64Any(stored.user.id),
        ...(extra.userDetails && stored.user.name !== undefined ? { name: stored.user.name } : {}),
        ...(extra.userDetails && stored.user.displayName !== undefined
          ? { displayName: stored.user.displayName }
          : {}),
      };
    }
    if (extra.numberOfCredentials !== undefined) response.numberOfCredentials = extra.numberOfCredentials;
    return response;
  }

  // --- authenticatorClientPIN (CTAP 2.1 §6.5.5) ----------------------------------------------

  async #clientPin(request: ClientPinRequest): Promise<Uint8Array> {
    const state = this.#state;
    switch (request.subCommand) {
      case ClientPinSubcommand.getPinRetries:
        return encodeResponse(ClientPinResponse, {
          pinRetries: this.#retriesOf(state) ?? pinRetriesMax,
          powerCycleState: this.#pinAttemptsThisPowerCycle >= pinAttemptsPerPowerCycle,
        });
      case ClientPinSubcommand.getKeyAgreement:
        this.#protocolOf(request);
        return encodeResponse(ClientPinResponse, { keyAgreement: this.#pin.getPublicKey() });
      case ClientPinSubcommand.setPin:
        return await this.#setPin(request);
      case ClientPinSubcommand.changePin:
        return await this.#changePin(request);
      case ClientPinSubcommand.getPinToken:
        // §6.5.5.7.1: the legacy command takes no permissions; a platform that sends them is confused.
        if (request.permissions !== undefined || request.rpId !== undefined) {
          throw new CtapError(
            CtapStatus.CTAP1_ERR_INVALID_PARAMETER,
            "getPinToken takes no permissions or rpId",
          );
        }
        return await this.#getPinToken(
          request,
          PinUvAuthPermission.makeCredential | PinUvAuthPermission.getAssertion,
          undefined,
        );
      case ClientPinSubcommand.getPinUvAuthTokenUsingPinWithPermissions: {
        const permissions = need(request.permissions, "permissions");
        if (permissions === 0) {
          throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "permissions is 0");
        }
        const needsRpId = PinUvAuthPermission.makeCredential | PinUvAuthPermission.getAssertion;
        if ((permissions & needsRpId) && request.rpId === undefined) {
          throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "rpId");
        }
        const known = PinUvAuthPermission.makeCredential | PinUvAuthPermission.getAssertion |
          PinUvAuthPermission.credentialManagement | PinUvAuthPermission.authenticatorConfiguration;
        if (permissions & ~known) throw new CtapError(CtapStatus.CTAP2_ERR_UNAUTHORIZED_PERMISSION);
        return await this.#getPinToken(request, permissions, request.rpId);
      }
      default:
        throw new CtapError(
          CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND,
          `clientPIN 0x${request.subCommand.toString(16)}`,
        );
    }
  }

  #protocolOf(request: { pinUvAuthProtocol?: number | undefined }): 1 | 2 {
    const version = need(request.pinUvAuthProtocol, "pinUvAuthProtocol");
    if (version !== 1 && version !== 2) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "pinUvAuthProtocol");
    }
    return version;
  }

  async #setPin(request: ClientPinRequest): Promise<Uint8Array> {
    const version = this.#protocolOf(request);
    const keyAgreement = need(request.keyAgreement, "keyAgreement");
    const newPinEnc = need(request.newPinEnc, "newPinEnc");
    const param = need(request.pinUvAuthParam, "pinUvAuthParam");
    if (this.#state.pin) throw new CtapError(CtapStatus.CTAP2_ERR_NOT_ALLOWED, "a PIN is already set");
    const sharedSecret = this.#pin.decapsulate(version, keyAgreement);
    const protocol = pinProtocol(version);
    if (!protocol.verify(sharedSecret, newPinEnc, param)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
    }
    const pin = this.#decryptNewPin(version, sharedSecret, newPinEnc);
    await this.#save(() => ({
      set: {
        pin: { hash: toBase64Url(pinHashOf(pin)), codePoints: [...pin].length, retries: pinRetriesMax },
        forcePinChange: false,
      },
    }));
    return encodeResponse();
  }

  #decryptNewPin(version: 1 | 2, sharedSecret: Uint8Array, newPinEnc: Uint8Array): string {
    const expectedLength = version === 1 ? 64 : 80;
    if (newPinEnc.length !== expectedLength) {
      throw new CtapError(CtapStatus.CTAP1_ERR_INVALID_PARAMETER, "newPinEnc length");
    }
    const pin = unpadPin(pinProtocol(version).decrypt(sharedSecret, newPinEnc));
    if (pin === undefined) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION, "malformed PIN");
    if ([...pin].length < this.#state.minPinLength) {
      throw new CtapError(
        CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
        `PIN shorter than ${this.#state.minPinLength}`,
      );
    }
    return pin;
  }

  /** The shared PIN check of changePIN and getPinToken (CTAP 2.1 §6.5.5.7 steps on pinHashEnc). */
  async #checkPinHash(version: 1 | 2, sharedSecret: Uint8Array, pinHashEnc: Uint8Array): Promise<void> {
    const state = this.#state;
    if (!state.pin) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_NOT_SET);
    if (this.#retriesOf(state) === 0) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_BLOCKED);
    if (this.#pinAttemptsThisPowerCycle >= pinAttemptsPerPowerCycle) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED, "power-cycle the key");
    }
    // CTAP 2.1 §6.5.5.7: the retry is spent, durably, before the PIN is compared: a power cut
    // during the check must not give a free guess. A restore still owed is consumed here.
    const retriesLeft = this.#retriesOf(state)! - 1;
    await this.#save((current) => ({ set: { pin: { ...current.pin!, retries: retriesLeft } } }));
    const decrypted = pinProtocol(version).decrypt(sharedSecret, pinHashEnc);
    if (!equalBytes(decrypted, fromBase64Any(state.pin.hash))) {
      this.#pin.regenerate();
      this.#pinAttemptsThisPowerCycle++;
      if (retriesLeft === 0) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_BLOCKED);
      if (this.#pinAttemptsThisPowerCycle >= pinAttemptsPerPowerCycle) {
        throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_BLOCKED);
      }
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_INVALID);
    }
    this.#pinAttemptsThisPowerCycle = 0;
    // The right PIN resets the retries (§6.5.5.7), but not as a sync of its own: what it gives back
    // is owed and saved with the next change (the registration this token is for, or flush()).
    // Given back as a difference, so a wrong guess another process made on a shared vault since
    // is not erased.
    this.#pinRetriesOwed = pinRetriesMax - retriesLeft;
  }

  async #changePin(request: ClientPinRequest): Promise<Uint8Array> {
    const version = this.#protocolOf(request);
    const keyAgreement = need(request.keyAgreement, "keyAgreement");
    const newPinEnc = need(request.newPinEnc, "newPinEnc");
    const pinHashEnc = need(request.pinHashEnc, "pinHashEnc");
    const param = need(request.pinUvAuthParam, "pinUvAuthParam");
    if (!this.#state.pin) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_NOT_SET);
    if (this.#retriesOf(this.#state) === 0) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_BLOCKED);
    const sharedSecret = this.#pin.decapsulate(version, keyAgreement);
    if (!pinProtocol(version).verify(sharedSecret, concatBytes(newPinEnc, pinHashEnc), param)) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID);
    }
    await this.#checkPinHash(version, sharedSecret, pinHashEnc);
    const pin = this.#decryptNewPin(version, sharedSecret, newPinEnc);
    const hash = pinHashOf(pin);
    if (this.#state.forcePinChange && equalBytes(hash, fromBase64Any(this.#state.pin.hash))) {
      throw new CtapError(
        CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
        "the new PIN must differ from the old one",
      );
    }
    await this.#save(() => ({
      set: {
        pin: { hash: toBase64Url(hash), codePoints: [...pin].length, retries: pinRetriesMax },
        forcePinChange: false,
      },
    }));
    this.#pin.resetPinUvAuthToken();
    return encodeResponse();
  }

  async #getPinToken(
    request: ClientPinRequest,
    permissions: number,
    rpId: string | undefined,
  ): Promise<Uint8Array> {
    const version = this.#protocolOf(request);
    const keyAgreement = need(request.keyAgreement, "keyAgreement");
    const pinHashEnc = need(request.pinHashEnc, "pinHashEnc");
    if (!this.#state.pin) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_NOT_SET);
    const sharedSecret = this.#pin.decapsulate(version, keyAgreement);
    await this.#checkPinHash(version, sharedSecret, pinHashEnc);
    if (this.#state.forcePinChange) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION, "PIN change required");
    }
    this.#pin.resetPinUvAuthToken();
    this.#pin.beginUsingPinUvAuthToken(false);
    this.#pin.permissions = permissions;
    this.#pin.permissionsRpId = rpId;
    return encodeResponse(ClientPinResponse, {
      pinUvAuthToken: pinProtocol(version).encrypt(sharedSecret, this.#pin.token),
    });
  }

  // --- authenticatorReset and authenticatorSelection (CTAP 2.1 §6.6, §6.9) -------------------

  async #reset(options: CtapCallOptions): Promise<Uint8Array> {
    if (this.#now() - this.#poweredUpAt > this.#resetWindowMs) {
      throw new CtapError(
        CtapStatus.CTAP2_ERR_NOT_ALLOWED,
        `reset is only accepted within ${this.#resetWindowMs / 1000} s of power-up`,
      );
    }
    await this.#requireUserPresence("reset", options);
    await this.#save(() => ({
      set: { masterKey: toBase64Url(randomBytes(32)), pin: null, forcePinChange: false, minPinLength: 4 },
      clearCredentials: true,
    }));
    this.#pin.regenerate();
    this.#pin.resetPinUvAuthToken();
    this.#pinAttemptsThisPowerCycle = 0;
    return encodeResponse();
  }

  async #selection(options: CtapCallOptions): Promise<Uint8Array> {
    await this.#requireUserPresence("selection", options);
    return encodeResponse();
  }

  // --- authenticatorConfig (CTAP 2.1 §6.11) --------------------------------------------------

  async #config(request: ConfigRequest): Promise<Uint8Array> {
    const state = this.#state;
    if (state.pin) {
      const param = request.pinUvAuthParam;
      if (param === undefined) throw new CtapError(CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
      const params = request.subCommandParams
        ? encodeCbor(toIntMap(request.subCommandParams, setMinPinLengthParamsKeys))
        : new Uint8Array();
      const message = concatBytes(
        new Uint8Array(32).fill(0xff),
        Uint8Array.of(0x0d, request.subCommand),
        params,
      );
      this.#verifyPinUvAuth(request, message, PinUvAuthPermission.authenticatorConfiguration, undefined);
    }
    if (request.subCommand !== ConfigSubcommand.setMinPINLength) {
      throw new CtapError(
        CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND,
        `config 0x${request.subCommand.toString(16)}`,
      );
    }
    const params = request.subCommandParams ?? {};
    const newMin = params.newMinPINLength ?? state.minPinLength;
    if (newMin < state.minPinLength || newMin > 63) {
      throw new CtapError(
        CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
        "the minimum PIN length cannot decrease",
      );
    }
    if ((params.minPinLengthRPIDs?.length ?? 0) > 0) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION, "minPinLengthRPIDs is not supported");
    }
    if (params.forceChangePin && !state.pin) throw new CtapError(CtapStatus.CTAP2_ERR_PIN_NOT_SET);
    await this.#save((current) => {
      const tooShort = current.pin !== undefined && current.pin.codePoints < newMin;
      return {
        set: { minPinLength: newMin, ...(params.forceChangePin || tooShort ? { forcePinChange: true } : {}) },
      };
    });
    return encodeResponse();
  }

  // --- authenticatorCredentialManagement (CTAP 2.1 §6.8) --------------------------------------

  async #credentialManagement(request: CredentialManagementRequest): Promise<Uint8Array> {
    const sub = request.subCommand;
    const next = sub === CredentialManagementSubcommand.enumerateRPsGetNextRP ||
      sub === CredentialManagementSubcommand.enumerateCredentialsGetNextCredential;
    if (next) {
      return this.#nextEnumerated(
        sub === CredentialManagementSubcommand.enumerateRPsGetNextRP ? "rps" : "credentials",
      );
    }
    this.#pendingEnumeration = undefined;
    if (request.pinUvAuthParam === undefined) throw new CtapError(CtapStatus.CTAP2_ERR_PUAT_REQUIRED);
    const params = request.subCommandParams
      ? encodeCbor(toIntMap(request.subCommandParams, credentialManagementParamsKeys))
      : new Uint8Array();
    this.#verifyPinUvAuth(
      request,
      concatBytes(Uint8Array.of(sub), params),
      PinUvAuthPermission.credentialManagement,
      undefined,
    );
    const state = this.#state;
    // CTAP 2.1 §6.8.2–§6.8.5: a token bound to an rp may only manage that rp's credentials.
    const boundRpId = this.#pin.permissionsRpId;
    const allRps = sub === CredentialManagementSubcommand.getCredsMetadata ||
      sub === CredentialManagementSubcommand.enumerateRPsBegin;
    if (allRps && boundRpId !== undefined) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID, "the token is bound to one rp");
    }
    switch (sub) {
      case CredentialManagementSubcommand.getCredsMetadata:
        return encodeResponse(CredentialManagementResponse, {
          existingResidentCredentialsCount: state.credentials.length,
          maxPossibleRemainingResidentCredentialsCount: Math.max(
            0,
            this.#maxDiscoverable - state.credentials.length,
          ),
        });
      case CredentialManagementSubcommand.enumerateRPsBegin: {
        const rps = [...new Map(state.credentials.map((c) => [c.rpId, c])).values()];
        if (rps.length === 0) throw new CtapError(CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
        const items = rps.map((c): CredentialManagementResponse => ({
          rp: { id: c.rpId, ...(c.rpName === undefined ? {} : { name: c.rpName }) },
          rpIdHash: sha256(new TextEncoder().encode(c.rpId)),
        }));
        return this.#beginEnumeration("rps", items, { totalRPs: items.length });
      }
      case CredentialManagementSubcommand.enumerateCredentialsBegin: {
        const rpIdHash = need(request.subCommandParams?.rpIdHash, "rpIdHash");
        if (boundRpId !== undefined && !equalBytes(sha256(new TextEncoder().encode(boundRpId)), rpIdHash)) {
          throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID, "the token is bound to another rp");
        }
        const matching = state.credentials.filter((c) =>
          equalBytes(sha256(new TextEncoder().encode(c.rpId)), rpIdHash)
        );
        if (matching.length === 0) throw new CtapError(CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
        const items = matching.map((c): CredentialManagementResponse => {
          const secrets = unwrapCredentialId(fromBase64Any(state.masterKey), rpIdHash, fromBase64Any(c.id));
          if (!secrets) {
            throw new CtapError(CtapStatus.CTAP2_ERR_INTEGRITY_FAILURE, "stored credential does not open");
          }
          return {
            user: {
              id: fromBase64Any(c.user.id),
              ...(c.user.name === undefined ? {} : { name: c.user.name }),
              ...(c.user.displayName === undefined ? {} : { displayName: c.user.displayName }),
            },
            credentialId: { type: "public-key", id: fromBase64Any(c.id) },
            publicKey: cosePublicKey(secrets.alg, secrets.privateKey),
            credProtect: secrets.credProtect,
          };
        });
        return this.#beginEnumeration("credentials", items, { totalCredentials: items.length });
      }
      case CredentialManagementSubcommand.deleteCredential:
        return await this.#deleteCredential(
          need(request.subCommandParams?.credentialId, "credentialId"),
          boundRpId,
        );
      default:
        throw new CtapError(
          CtapStatus.CTAP2_ERR_INVALID_SUBCOMMAND,
          `credentialManagement 0x${sub.toString(16)}`,
        );
    }
  }

  #beginEnumeration(
    kind: PendingEnumeration["kind"],
    items: CredentialManagementResponse[],
    total: CredentialManagementResponse,
  ): Uint8Array {
    const [first, ...rest] = items;
    this.#pendingEnumeration = { kind, items: rest };
    return encodeResponse(CredentialManagementResponse, { ...first, ...total });
  }

  #nextEnumerated(kind: PendingEnumeration["kind"]): Uint8Array {
    const pending = this.#pendingEnumeration;
    if (!pending || pending.kind !== kind || pending.items.length === 0) {
      throw new CtapError(CtapStatus.CTAP2_ERR_NOT_ALLOWED, "nothing is being enumerated");
    }
    return encodeResponse(CredentialManagementResponse, pending.items.shift()!);
  }

  async #deleteCredential(
    descriptor: CredentialDescriptor,
    boundRpId: string | undefined,
  ): Promise<Uint8Array> {
    const idText = toBase64Url(descriptor.id);
    const stored = this.#state.credentials.find((c) => c.id === idText);
    if (!stored) throw new CtapError(CtapStatus.CTAP2_ERR_NO_CREDENTIALS);
    if (boundRpId !== undefined && stored.rpId !== boundRpId) {
      throw new CtapError(CtapStatus.CTAP2_ERR_PIN_AUTH_INVALID, "the token is bound to another rp");
    }
    await this.#save(() => ({ deleteCredential: idText }));
    return encodeResponse();
  }
}

function need<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, name);
  return value;
}

function pinHashOf(pin: string): Uint8Array {
  return sha256(new TextEncoder().encode(pin)).slice(0, 16);
}
