/**
 * Test support for the hid authenticator: software keys served in-process over their CTAPHID Unix
 * socket (the stand-in for a USB key), and variants of a key at the CTAP seam (a key without PIN
 * support). Used by test/hid_*_test.ts.
 *
 * @module
 */
import type { SoftwareAuthenticatorOptions } from "../software/authenticator.ts";
import { CtapCommand, decodeBody, encodeResponse, GetInfoResponse } from "../../core/ctap/commands.ts";
import type { CtapCallOptions, CtapDevice } from "../../core/ctap/device.ts";
import type { CtapHidDeviceOptions } from "../../core/ctap/hid_device.ts";
import { CtapStatus } from "../../core/ctap/status.ts";
import { type CtapHidSocketServer, serveCtapHidOnUnixSocket } from "../../core/ctap/unix_socket.ts";
import { newTestKey, type TestKey } from "../../test/software_key.ts";
import { keyLabel, type KeyLocation } from "./keys.ts";

/** A software key served on a CTAPHID socket, as a plugged-in key. */
export interface ServedKey extends AsyncDisposable {
  readonly key: TestKey;
  readonly server: CtapHidSocketServer;
  /** `unix:PATH`, what `--device` takes. */
  readonly device: string;
  readonly location: KeyLocation;
}

/**
 * A key without PIN support, at the CTAP seam: getInfo lists no clientPin (nor what needs a PIN)
 * and clientPIN is an unknown command, as on early FIDO2 keys.
 */
export function withoutPinSupport(inner: CtapDevice): CtapDevice {
  return {
    async transceive(request: Uint8Array, options?: CtapCallOptions) {
      if (request[0] === CtapCommand.clientPin) return Uint8Array.of(CtapStatus.CTAP1_ERR_INVALID_COMMAND);
      const response = await inner.transceive(request, options);
      if (request[0] !== CtapCommand.getInfo || response[0] !== CtapStatus.CTAP2_OK) return response;
      const info = decodeBody(GetInfoResponse, response.subarray(1));
      const options_ = { ...info.options };
      for (const name of ["clientPin", "pinUvAuthToken", "credMgmt", "authnrCfg", "setMinPINLength"]) {
        delete options_[name];
      }
      const { pinUvAuthProtocols: _, minPINLength: __, forcePINChange: ___, ...rest } = info;
      return encodeResponse(GetInfoResponse, { ...rest, options: options_ });
    },
  };
}

/** Serves a fresh software key (or `wrap` of it) in `dir` as `name.sock`. */
export async function serveKey(dir: string, name: string, options: {
  pin?: string;
  authenticator?: SoftwareAuthenticatorOptions;
  wrap?: (device: CtapDevice) => CtapDevice;
  hid?: CtapHidDeviceOptions;
  key?: TestKey;
} = {}): Promise<ServedKey> {
  const key = options.key ?? await newTestKey({
    ...(options.pin === undefined ? {} : { pin: options.pin }),
    ...(options.authenticator ? { authenticator: options.authenticator } : {}),
  });
  const path = `${dir}/${name}.sock`;
  const server = await serveCtapHidOnUnixSocket({
    path,
    device: options.wrap ? options.wrap(key.device) : key.device,
    ...(options.hid ? { hid: options.hid } : {}),
  });
  const address = { kind: "unix", path } as const;
  return {
    key,
    server,
    device: `unix:${path}`,
    location: { address, label: keyLabel(address) },
    [Symbol.asyncDispose]: () => server.close(),
  };
}
