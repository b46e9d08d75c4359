/**
 * The typed CTAP2 client: one method per authenticator command (CTAP 2.1 §6), over any
 * {@link CtapDevice}. It knows the PIN/UV auth protocols, so callers ask for "a token with the
 * mc permission for this rp" and get one, and it computes every pinUvAuthParam the spec asks for.
 *
 * @example
 * ```ts ignore
 * const client = new Ctap2Client(device);
 * const info = await client.getInfo();
 * const token = await client.getPinToken({ pin: "123456", permissions: PinUvAuthPermission.makeCredential, rpId: "example.com" });
 * ```
 *
 * @module
 */
import { concatBytes } from "../bytes.ts";
import { encodeCbor } from "./cbor.ts";
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
  type CtapCommandCode,
  decodeResponse,
  encodeRequest,
  GetAssertionRequest,
  GetAssertionResponse,
  GetInfoResponse,
  MakeCredentialRequest,
  MakeCredentialResponse,
  type MessageCodec,
  setMinPinLengthParamsKeys,
  type UserEntity,
} from "./commands.ts";
import { toIntMap } from "./cbor.ts";
import type { CtapCallOptions, CtapDevice } from "./device.ts";
import { padPin, pinHash, type PinProtocol, pinProtocol } from "./pin_protocol.ts";
import { CtapError, CtapStatus } from "./status.ts";

/** A pinUvAuthToken together with the protocol it was obtained under. */
export interface PinToken {
  readonly protocol: PinProtocol;
  readonly token: Uint8Array;
}

/** One credential as credential management reports it. */
export interface ManagedCredential {
  readonly rpId: string;
  readonly credentialId: CredentialDescriptor;
  readonly user: UserEntity;
  readonly publicKey: Map<unknown, unknown>;
  readonly credProtect: number | undefined;
}

/** See the module documentation. */
export class Ctap2Client {
  readonly device: CtapDevice;
  #info: GetInfoResponse | undefined;

  constructor(device: CtapDevice) {
    this.device = device;
  }

  async #call<Req extends object, Res>(
    command: CtapCommandCode,
    request: { codec: MessageCodec<Req>; fields: Req } | undefined,
    response: MessageCodec<Res> | undefined,
    options?: CtapCallOptions,
  ): Promise<Res | undefined> {
    const bytes = encodeRequest(command, request?.codec, request?.fields);
    return decodeResponse(response, await this.device.transceive(bytes, options));
  }

  /** authenticatorGetInfo; the answer is cached for the life of the client. */
  async getInfo(options?: { refresh?: boolean }): Promise<GetInfoResponse> {
    if (!this.#info || options?.refresh) {
      const info = await this.#call(CtapCommand.getInfo, undefined, GetInfoResponse);
      if (!info) throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "getInfo returned no data");
      this.#info = info;
    }
    return this.#info;
  }

  /** The best PIN/UV auth protocol both sides support (two before one). */
  async preferredPinProtocol(): Promise<PinProtocol> {
    const supported = (await this.getInfo()).pinUvAuthProtocols ?? [1];
    return pinProtocol(supported.includes(2) ? 2 : 1);
  }

  /** authenticatorMakeCredential. */
  async makeCredential(
    request: MakeCredentialRequest,
    options?: CtapCallOptions,
  ): Promise<MakeCredentialResponse> {
    const response = await this.#call(
      CtapCommand.makeCredential,
      { codec: MakeCredentialRequest, fields: request },
      MakeCredentialResponse,
      options,
    );
    if (!response) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "makeCredential returned no data");
    }
    return response;
  }

  /** authenticatorGetAssertion. */
  async getAssertion(request: GetAssertionRequest, options?: CtapCallOptions): Promise<GetAssertionResponse> {
    const response = await this.#call(
      CtapCommand.getAssertion,
      { codec: GetAssertionRequest, fields: request },
      GetAssertionResponse,
      options,
    );
    if (!response) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "getAssertion returned no data");
    }
    return response;
  }

  /** authenticatorGetNextAssertion. */
  async getNextAssertion(options?: CtapCallOptions): Promise<GetAssertionResponse> {
    const response = await this.#call(CtapCommand.getNextAssertion, undefined, GetAssertionResponse, options);
    if (!response) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "getNextAssertion returned no data");
    }
    return response;
  }

  /** authenticatorReset: erases every credential and the PIN. Keys ask for a touch. */
  async reset(options?: CtapCallOptions): Promise<void> {
    await this.#call(CtapCommand.reset, undefined, undefined, options);
  }

  /** authenticatorSelection: asks the user to touch this key among several. */
  async selection(options?: CtapCallOptions): Promise<void> {
    await this.#call(CtapCommand.selection, undefined, undefined, options);
  }

  // --- authenticatorClientPIN ---------------------------------------------------------------

  async #clientPin(fields: ClientPinRequest): Promise<ClientPinResponse> {
    return await this.#call(CtapCommand.clientPin, { codec: ClientPinRequest, fields }, ClientPinResponse) ??
      {};
  }

  /** Remaining PIN attempts, and whether the key must be power-cycled before the next one. */
  async getPinRetries(): Promise<{ retries: number; powerCycleState: boolean }> {
    const response = await this.#clientPin({ subCommand: ClientPinSubcommand.getPinRetries });
    if (response.pinRetries === undefined) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "getPINRetries returned no pinRetries");
    }
    return { retries: response.pinRetries, powerCycleState: response.powerCycleState ?? false };
  }

  async #sharedSecret(protocol: PinProtocol) {
    const response = await this.#clientPin({
      pinUvAuthProtocol: protocol.version,
      subCommand: ClientPinSubcommand.getKeyAgreement,
    });
    if (!response.keyAgreement) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "getKeyAgreement returned no keyAgreement");
    }
    return protocol.encapsulate(response.keyAgreement);
  }

  /** Sets the first PIN of a key that has none. */
  async setPin(pin: string): Promise<void> {
    const protocol = await this.preferredPinProtocol();
    const { platformKeyAgreement, sharedSecret } = await this.#sharedSecret(protocol);
    const newPinEnc = protocol.encrypt(sharedSecret, padPin(pin));
    await this.#clientPin({
      pinUvAuthProtocol: protocol.version,
      subCommand: ClientPinSubcommand.setPin,
      keyAgreement: platformKeyAgreement,
      newPinEnc,
      pinUvAuthParam: protocol.authenticate(sharedSecret, newPinEnc),
    });
  }

  /** Changes the PIN; also what clears a forced PIN change. */
  async changePin(currentPin: string, newPin: string): Promise<void> {
    const protocol = await this.preferredPinProtocol();
    const { platformKeyAgreement, sharedSecret } = await this.#sharedSecret(protocol);
    const newPinEnc = protocol.encrypt(sharedSecret, padPin(newPin));
    const pinHashEnc = protocol.encrypt(sharedSecret, pinHash(currentPin));
    await this.#clientPin({
      pinUvAuthProtocol: protocol.version,
      subCommand: ClientPinSubcommand.changePin,
      keyAgreement: platformKeyAgreement,
      newPinEnc,
      pinHashEnc,
      pinUvAuthParam: protocol.authenticate(sharedSecret, concatBytes(newPinEnc, pinHashEnc)),
    });
  }

  /**
   * getPinUvAuthTokenUsingPinWithPermissions (CTAP 2.1 §6.5.5.7.2), or the legacy getPinToken on
   * keys that only speak CTAP 2.0 (no `pinUvAuthToken` option in getInfo).
   */
  async getPinToken(request: { pin: string; permissions: number; rpId?: string }): Promise<PinToken> {
    const info = await this.getInfo();
    const protocol = await this.preferredPinProtocol();
    const { platformKeyAgreement, sharedSecret } = await this.#sharedSecret(protocol);
    const pinHashEnc = protocol.encrypt(sharedSecret, pinHash(request.pin));
    const withPermissions = info.options?.["pinUvAuthToken"] === true;
    const response = await this.#clientPin({
      pinUvAuthProtocol: protocol.version,
      subCommand: withPermissions
        ? ClientPinSubcommand.getPinUvAuthTokenUsingPinWithPermissions
        : ClientPinSubcommand.getPinToken,
      keyAgreement: platformKeyAgreement,
      pinHashEnc,
      ...(withPermissions ? { permissions: request.permissions } : {}),
      ...(withPermissions && request.rpId !== undefined ? { rpId: request.rpId } : {}),
    });
    if (!response.pinUvAuthToken) {
      throw new CtapError(CtapStatus.CTAP2_ERR_MISSING_PARAMETER, "the key returned no pinUvAuthToken");
    }
    return { protocol, token: protocol.decrypt(sharedSecret, response.pinUvAuthToken) };
  }

  // --- authenticatorConfig ------------------------------------------------------------------

  /** setMinPINLength (CTAP 2.1 §6.11.4): raise the minimum PIN length and/or force a PIN change. */
  async setMinPinLength(
    token: PinToken,
    params: { newMinPINLength?: number; minPinLengthRPIDs?: string[]; forceChangePin?: boolean },
  ): Promise<void> {
    const subCommand = ConfigSubcommand.setMinPINLength;
    const paramsBytes = encodeCbor(toIntMap(params, setMinPinLengthParamsKeys));
    const message = concatBytes(new Uint8Array(32).fill(0xff), Uint8Array.of(0x0d, subCommand), paramsBytes);
    await this.#call(CtapCommand.config, {
      codec: ConfigRequest,
      fields: {
        subCommand,
        subCommandParams: params,
        pinUvAuthProtocol: token.protocol.version,
        pinUvAuthParam: token.protocol.authenticate(token.token, message),
      },
    }, undefined);
  }

  /**
   * enableEnterpriseAttestation (CTAP 2.1 §6.11.1): lets the key return enterprise attestation
   * (with a serial number) to the rp ids its vendor pre-configured. Keys that support it list the
   * `ep` option in getInfo; the token needs the `acfg` permission.
   */
  async enableEnterpriseAttestation(token: PinToken): Promise<void> {
    const subCommand = ConfigSubcommand.enableEnterpriseAttestation;
    const message = concatBytes(new Uint8Array(32).fill(0xff), Uint8Array.of(0x0d, subCommand));
    await this.#call(CtapCommand.config, {
      codec: ConfigRequest,
      fields: {
        subCommand,
        pinUvAuthProtocol: token.protocol.version,
        pinUvAuthParam: token.protocol.authenticate(token.token, message),
      },
    }, undefined);
  }

  // --- authenticatorCredentialManagement ----------------------------------------------------

  async #credentialManagement(
    token: PinToken | undefined,
    subCommand: number,
    params?: { rpIdHash?: Uint8Array; credentialId?: CredentialDescriptor; user?: UserEntity },
  ): Promise<CredentialManagementResponse> {
    const paramsBytes = params
      ? encodeCbor(toIntMap(params, credentialManagementParamsKeys))
      : new Uint8Array();
    const fields: CredentialManagementRequest = { subCommand };
    if (params) fields.subCommandParams = params;
    if (token) {
      fields.pinUvAuthProtocol = token.protocol.version;
      fields.pinUvAuthParam = token.protocol.authenticate(
        token.token,
        concatBytes(Uint8Array.of(subCommand), paramsBytes),
      );
    }
    return await this.#call(
      CtapCommand.credentialManagement,
      { codec: CredentialManagementRequest, fields },
      CredentialManagementResponse,
    ) ?? {};
  }

  /** How many discoverable credentials the key holds and how many more fit. Needs a `cm` token. */
  async getCredentialsMetadata(token: PinToken): Promise<{ existing: number; remaining: number }> {
    const response = await this.#credentialManagement(token, CredentialManagementSubcommand.getCredsMetadata);
    return {
      existing: response.existingResidentCredentialsCount ?? 0,
      remaining: response.maxPossibleRemainingResidentCredentialsCount ?? 0,
    };
  }

  /** Every discoverable credential on the key, rp by rp. Needs a `cm` token. */
  async listCredentials(token: PinToken): Promise<ManagedCredential[]> {
    const out: ManagedCredential[] = [];
    let first: CredentialManagementResponse;
    try {
      first = await this.#credentialManagement(token, CredentialManagementSubcommand.enumerateRPsBegin);
    } catch (error) {
      if (error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_NO_CREDENTIALS) return out;
      throw error;
    }
    const rps = [first];
    for (let i = 1; i < (first.totalRPs ?? 0); i++) {
      rps.push(
        await this.#credentialManagement(undefined, CredentialManagementSubcommand.enumerateRPsGetNextRP),
      );
    }
    for (const rp of rps) {
      if (!rp.rp || !rp.rpIdHash) continue;
      const begin = await this.#credentialManagement(
        token,
        CredentialManagementSubcommand.enumerateCredentialsBegin,
        {
          rpIdHash: rp.rpIdHash,
        },
      );
      const credentials = [begin];
      for (let i = 1; i < (begin.totalCredentials ?? 0); i++) {
        credentials.push(
          await this.#credentialManagement(
            undefined,
            CredentialManagementSubcommand.enumerateCredentialsGetNextCredential,
          ),
        );
      }
      for (const credential of credentials) {
        if (!credential.credentialId || !credential.user || !credential.publicKey) continue;
        out.push({
          rpId: rp.rp.id,
          credentialId: credential.credentialId,
          user: credential.user,
          publicKey: credential.publicKey,
          credProtect: credential.credProtect,
        });
      }
    }
    return out;
  }

  /** Deletes one discoverable credential. Needs a `cm` token. */
  async deleteCredential(token: PinToken, credentialId: CredentialDescriptor): Promise<void> {
    await this.#credentialManagement(token, CredentialManagementSubcommand.deleteCredential, {
      credentialId,
    });
  }
}
