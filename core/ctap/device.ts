/**
 * The one seam between the CTAP2 protocol and whatever carries it: a USB HID key, a software key
 * in-process, or a software key behind a Unix socket. Everything above it (the typed
 * {@link Ctap2Client}, the WebAuthn client) is written once against this interface.
 *
 * @module
 */

/** Status a device reports in a CTAPHID KEEPALIVE while it works on a request. */
export type KeepaliveStatus = "processing" | "user-presence-needed";

/** Options for one request to a device. */
export interface CtapCallOptions {
  /** Aborting sends CTAPHID_CANCEL (or the transport's equivalent) and rejects the call. */
  signal?: AbortSignal;
  /** Called on every keep-alive, e.g. to tell the operator to touch the key. */
  onKeepalive?: (status: KeepaliveStatus) => void;
}

/**
 * A CTAP2 authenticator reachable by CBOR messages.
 *
 * `transceive` takes a CTAP2 request (command byte followed by its CBOR parameters) and resolves
 * to the response (status byte followed by CBOR), exactly the payload of a CTAPHID_CBOR exchange.
 */
export interface CtapDevice {
  transceive(request: Uint8Array, options?: CtapCallOptions): Promise<Uint8Array>;
}
