/**
 * The `relay` authenticator plugin (the admin's side of OBR): `open()` connects to the relay,
 * opens a channel to the OBR user's key agent pinned to that agent's paired static key
 * (Noise IK, noise.ts), and presents a {@link CtapDevice} whose CTAP2 requests travel sealed to the
 * agent and are answered by the user's own key. The WebAuthn client, the API path and the engine
 * use it like any other authenticator.
 *
 * One request at a time per channel (a key does one ceremony at a time anyway); a frame that does
 * not authenticate, a timeout or a closed channel leaves the channel dead: every later request
 * fails with the same error, and the authenticator must be opened again.
 *
 * @module
 */
import { z } from "zod";
import { fromBase64Any, toBase64Url, utf8 } from "../../core/bytes.ts";
import type { CtapCallOptions, CtapDevice } from "../../core/ctap/device.ts";
import type { Authenticator, AuthenticatorPlugin, PluginContext } from "../../core/plugin.ts";
import { UsageError } from "../../core/errors.ts";
import { decodeAnswer } from "./envelope.ts";
import { RelayError } from "./errors.ts";
import {
  IkInitiator,
  NoiseError,
  type NoiseKeyPair,
  noiseKeyPairFrom,
  type NoiseTransport,
  obrPrologue,
} from "./noise.ts";
import {
  type AdminToRelay,
  decodeWireBytes,
  encodeWireBytes,
  parseWire,
  type RelayToAdmin,
  relayToAdmin,
} from "./protocol.ts";

/** The environment variable holding the admin's relay token. */
export const relayTokenEnv = "PROVISIONING_RELAY_TOKEN";
/** The environment variable holding the admin's static private key (base64url, 32 bytes). */
export const relayAdminKeyEnv = "PROVISIONING_RELAY_ADMIN_KEY";

/** What {@link openRelayAuthenticator} needs. */
export interface RelayAuthenticatorOptions {
  /** `ws://127.0.0.1:PORT` of the relay. */
  readonly relayUrl: string;
  /** The user OBR is on for: the channel goes to this user's key agent only. */
  readonly obrUser: string;
  /** The admin's bearer token for the relay. */
  readonly token: string;
  /** The admin's static key pair: the agent checks its public key against its trusted admins. */
  readonly adminKey: NoiseKeyPair;
  /**
   * The agent's paired static public key, pinned from a trusted source (the panel, the pairing
   * record). The relay's word for it is only compared, never trusted.
   */
  readonly agentKey: Uint8Array;
  /** rp ids this channel is for (bound into the prologue; the agent checks them against its own list). */
  readonly rpIds: readonly string[];
  /** Who asks and why, shown to the user by their agent. */
  readonly requester?: string;
  /** @default "register a passkey" */
  readonly purpose?: string;
  /** How long to wait for the relay and the handshake. @default 10000 */
  readonly connectTimeoutMs?: number;
  /** How long one CTAP request may take, the user's approval included. @default 120000 */
  readonly requestTimeoutMs?: number;
}

/** An open OBR channel presented as an authenticator. */
export interface RelayAuthenticator extends Authenticator {
  /** The relay's session id (for the audit trail and messages). */
  readonly session: string;
}

/** Messages from the relay, waited for one at a time; closing rejects every waiter. */
class Inbox {
  readonly #queue: RelayToAdmin[] = [];
  #waiter: ((message: RelayToAdmin | Error) => void) | undefined;
  #ended: Error | undefined;

  push(message: RelayToAdmin): void {
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter(message);
    } else this.#queue.push(message);
  }

  end(error: Error): void {
    this.#ended ??= error;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.(error);
  }

  /** The next message, or the error that ended the connection, or a timeout. */
  next(timeoutMs: number, onTimeout: () => Error, signal?: AbortSignal): Promise<RelayToAdmin> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      const finish = (value: RelayToAdmin | Error) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", abort);
        if (value instanceof Error) reject(value);
        else resolve(value);
      };
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        finish(onTimeout());
      }, timeoutMs);
      const abort = () => {
        this.#waiter = undefined;
        finish(signal!.reason instanceof Error ? signal!.reason : new Error("aborted"));
      };
      signal?.addEventListener("abort", abort, { once: true });
      this.#waiter = finish;
    });
  }
}

/** Opens a channel to the OBR user's key agent through the relay. */
export async function openRelayAuthenticator(
  options: RelayAuthenticatorOptions,
): Promise<RelayAuthenticator> {
  const user = options.obrUser;
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 120_000;
  const fail = (code: string, message: string, cause?: unknown) =>
    new RelayError(code, `Cannot reach the key of "${user}" through the relay: ${message}`, {
      user,
      ...(cause === undefined ? {} : { cause }),
    });
  const timedOut = (what: string) => () => fail("relay-timeout", `${what} took longer than allowed`);

  const inbox = new Inbox();
  let socket: WebSocket;
  try {
    socket = new WebSocket(new URL("/admin", options.relayUrl));
  } catch (cause) {
    throw fail("relay-unreachable", `"${options.relayUrl}" is not a WebSocket URL`, cause);
  }
  const opened = new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = () =>
      reject(fail("relay-unreachable", `${options.relayUrl} did not accept the connection`));
  });
  socket.onmessage = (event) => {
    const message = parseWire(relayToAdmin, event.data);
    if (message) inbox.push(message);
    else {
      inbox.end(fail("relay-tampering", "the relay sent a malformed message"));
      socket.close(1008, "malformed message");
    }
  };
  socket.onclose = () => inbox.end(fail("relay-closed", "the relay closed the connection"));
  const send = (message: AdminToRelay) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };

  try {
    await withTimeout(opened, connectTimeoutMs, timedOut("Connecting to the relay"));
    send({ type: "auth", token: options.token });
    const ready = await inbox.next(connectTimeoutMs, timedOut("Signing in to the relay"));
    if (ready.type === "error") throw fail(ready.code, ready.message);
    if (ready.type !== "ready") {
      throw fail("relay-tampering", `the relay answered "${ready.type}" to sign-in`);
    }

    send({ type: "open", user, rpIds: [...options.rpIds] });
    const channel = await inbox.next(connectTimeoutMs, timedOut("Opening the channel"));
    if (channel.type === "error") throw fail(channel.code, channel.message);
    if (channel.type !== "opened" || channel.user !== user) {
      throw fail("relay-tampering", `the relay answered "${channel.type}" to opening a channel`);
    }
    const session = channel.session;
    if (toBase64Url(decodeWireBytes(channel.agentKey)) !== toBase64Url(options.agentKey)) {
      throw fail("agent-key-mismatch", "the relay names a different key than the one pinned for this user");
    }
    const transport = await handshake(session);
    return present(session, transport);
  } catch (error) {
    socket.close(1000, "open failed");
    throw error instanceof NoiseError ? fail("relay-tampering", error.message, error) : error;
  }

  async function handshake(session: string): Promise<NoiseTransport> {
    const initiator = new IkInitiator({
      prologue: obrPrologue({ sessionId: session, userId: user, rpIds: options.rpIds }),
      staticKey: options.adminKey,
      remoteStatic: options.agentKey,
    });
    const hello = {
      requester: options.requester ?? "an administrator",
      purpose: options.purpose ?? "register a passkey",
    };
    send({
      type: "frame",
      session,
      data: encodeWireBytes(initiator.writeMessage1(utf8(JSON.stringify(hello)))),
    });
    const answer = await inbox.next(connectTimeoutMs, timedOut("The handshake with the key agent"));
    if (answer.type === "closed") throw fail(answer.code, answer.message);
    if (answer.type !== "frame" || answer.session !== session) {
      throw fail("relay-tampering", `the relay answered "${answer.type}" during the handshake`);
    }
    return initiator.readMessage2(decodeWireBytes(answer.data)).transport;
  }

  function present(session: string, transport: NoiseTransport): RelayAuthenticator {
    let broken: Error | undefined;
    let queue: Promise<unknown> = Promise.resolve();

    async function exchange(request: Uint8Array, callOptions: CtapCallOptions): Promise<Uint8Array> {
      if (broken) throw broken;
      try {
        const sealed = transport.send.encryptWithAd(new Uint8Array(0), request);
        send({ type: "frame", session, data: encodeWireBytes(sealed) });
        const message = await inbox.next(
          requestTimeoutMs,
          timedOut("The request to the key agent"),
          callOptions.signal,
        );
        if (message.type === "closed") throw fail(message.code, message.message);
        if (message.type === "error") throw fail(message.code, message.message);
        if (message.type !== "frame" || message.session !== session) {
          throw fail("relay-tampering", `the relay sent "${message.type}" instead of the agent's answer`);
        }
        const answer = decodeAnswer(
          transport.receive.decryptWithAd(new Uint8Array(0), decodeWireBytes(message.data)),
        );
        if (!answer) throw fail("relay-tampering", "the agent's answer is not a valid envelope");
        if (answer.kind === "refused") {
          // A refusal is an answer, not a broken channel: later requests may still go through.
          throw fail(answer.code, answer.message);
        }
        return answer.response;
      } catch (error) {
        const wrapped = error instanceof NoiseError ? fail("relay-tampering", error.message, error) : error;
        const refusal = wrapped instanceof RelayError && refusalCodes.has(wrapped.code);
        if (!refusal) {
          broken = wrapped instanceof Error ? wrapped : new Error(String(wrapped));
          socket.close(1000, "channel broken");
        }
        throw wrapped;
      }
    }

    const device: CtapDevice = {
      transceive(request, callOptions = {}) {
        const result = queue.then(() => exchange(request, callOptions));
        queue = result.catch(() => {});
        return result;
      },
    };
    return {
      label: `the key of "${user}" (through the relay)`,
      device,
      session,
      async [Symbol.asyncDispose]() {
        if (socket.readyState === WebSocket.OPEN) send({ type: "close", session });
        const closed = new Promise((resolve) => socket.addEventListener("close", resolve, { once: true }));
        socket.close(1000, "done");
        if (socket.readyState !== WebSocket.CLOSED) await closed;
      },
    };
  }
}

/** Codes of answers the agent gives without the channel breaking. */
const refusalCodes = new Set([
  "user-denied",
  "approval-timeout",
  "obr-refused-by-policy",
  "rp-id-not-allowed",
  "command-not-allowed",
  "malformed-request",
  "relay-closed",
]);

async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, onTimeout: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(onTimeout()), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The relay authenticator's options as the CLI passes them (parsed: they come from outside). */
export const relayOptionsSchema = z.object({
  /** The relay's URL, e.g. `ws://127.0.0.1:8443`. */
  relay: z.string().regex(/^wss?:\/\//, "must be a ws:// or wss:// URL"),
  /** The user OBR is on for. */
  obrUser: z.string().min(1),
  /** The agent's paired public key (base64url), from the panel or the pairing record. */
  agentKey: z.string().refine(
    (text) => fromBase64Any(text).length === 32,
    "must be a 32-byte key in base64url",
  ),
  /** rp ids of the channel, comma-separated. @default "login.microsoft.com" */
  rpIds: z.string().optional(),
});

/** The plugin object; main.ts registers it once the CLI wiring lands (see docs/obr.md). */
export const relayAuthenticator: AuthenticatorPlugin<z.input<typeof relayOptionsSchema>> = {
  kind: "authenticator",
  manifest: {
    id: "relay",
    summary: "The OBR user's own key, reached end to end encrypted through a relay and the user's key agent",
    hosts: ["the relay's host (--relay)"],
    env: [relayTokenEnv, relayAdminKeyEnv],
    options: [
      { flags: "--relay <url>", description: "the OBR relay, ws://host:port (wss:// outside loopback)" },
      { flags: "--obr-user <upn>", description: "the user OBR is on for: passkeys go onto this user's key" },
      { flags: "--agent-key <base64url>", description: "the user's paired agent key, as the panel shows it" },
      {
        flags: "--rp-ids <list>",
        description: "rp ids the channel is for, comma-separated",
        default: "login.microsoft.com",
      },
    ],
  },
  async open(context: PluginContext, rawOptions) {
    const parsed = relayOptionsSchema.safeParse(rawOptions ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new UsageError(
        `Cannot open the relay authenticator: option "${issue.path.join(".")}" ${issue.message}`,
      );
    }
    const token = context.env(relayTokenEnv);
    const adminKey = context.env(relayAdminKeyEnv);
    if (!token || !adminKey || fromBase64Any(adminKey).length !== 32) {
      throw new UsageError("Cannot open the relay authenticator: the admin's relay token or key is missing", {
        hint: `Set ${relayTokenEnv} and ${relayAdminKeyEnv} (a 32-byte X25519 private key, base64url)`,
      });
    }
    return await openRelayAuthenticator({
      relayUrl: parsed.data.relay,
      obrUser: parsed.data.obrUser,
      token,
      adminKey: noiseKeyPairFrom(fromBase64Any(adminKey)),
      agentKey: fromBase64Any(parsed.data.agentKey),
      rpIds: (parsed.data.rpIds ?? "login.microsoft.com").split(",").map((id) => id.trim()).filter(Boolean),
    });
  },
};
