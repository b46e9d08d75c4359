/**
 * The key agent (`provisioning key agent`, the user's side of OBR): serves the user's own
 * authenticator (the software key vault; a security key through the hid plugin later) to the relay
 * as that user's personal key.
 *
 * - Pairing ({@link pairKeyAgent}): a fresh X25519 static key pair whose public key the relay
 *   records against the user, with a one-time pairing code.
 * - On each channel: the admin's static key, learnt in the Noise handshake, must be one the agent
 *   trusts; the channel's rp ids must all be on the organisation's list.
 * - On each request: the CTAP command is read (core/ctap), a makeCredential's or getAssertion's rp
 *   id checked against the organisation's list, the user told or asked (policy `notify`, `ask`,
 *   `refuse`; asking has a timeout), and a JSON line written to the local log. Commands other than
 *   getInfo, makeCredential, getAssertion, getNextAssertion, clientPIN and selection (reset,
 *   config, credential management) are refused.
 *
 * @module
 */
import { x25519 } from "@noble/curves/ed25519.js";
import {
  CtapCommand,
  decodeBody,
  GetAssertionRequest,
  MakeCredentialRequest,
} from "../../core/ctap/commands.ts";
import type { CtapDevice } from "../../core/ctap/device.ts";
import { ctapStatusName } from "../../core/ctap/status.ts";
import { toBase64Url } from "../../core/bytes.ts";
import { type AgentAnswer, type ChannelHello, channelHelloSchema, encodeAnswer } from "./envelope.ts";
import { RelayError } from "./errors.ts";
import {
  generateNoiseKeyPair,
  IkResponder,
  NoiseError,
  type NoiseKeyPair,
  type NoiseTransport,
  obrPrologue,
} from "./noise.ts";
import {
  agentProof,
  type AgentToRelay,
  decodeWireBytes,
  encodeWireBytes,
  parseWire,
  type RelayToAgent,
  relayToAgent,
} from "./protocol.ts";

/** How the agent treats a registration or sign-in request: tell the user, ask them, or refuse. */
export type AgentPolicy = "notify" | "ask" | "refuse";

/** One request as the user is shown it and the local log records it. */
export interface AgentRequest {
  readonly time: string;
  readonly session: string;
  /** The admin as the relay names them (a claim of the relay). */
  readonly admin: string;
  /** The admin as the agent's own trust list names the static key the handshake proved. */
  readonly adminKeyName: string;
  /** What the admin's side says it is doing (from the sealed handshake). */
  readonly purpose: string;
  readonly command: string;
  readonly rpId?: string;
  /** The account the passkey is for (makeCredential's user name). */
  readonly account?: string;
}

/** One line of the agent's local log. */
export interface AgentLogLine extends Partial<AgentRequest> {
  readonly time: string;
  readonly session: string;
  readonly decision: "allowed" | "notified" | "approved" | "refused" | "failed";
  /** The CTAP status name of the device's answer, or the refusal's code. */
  readonly outcome: string;
}

/** What {@link startKeyAgent} needs. */
export interface KeyAgentOptions {
  /** `ws://host:port` of the relay. */
  readonly relayUrl: string;
  /** The user this agent is the personal key of (as the relay and the directory name them). */
  readonly user: string;
  /** The agent's paired static key pair ({@link pairKeyAgent}). */
  readonly staticKey: NoiseKeyPair;
  /** The user's authenticator. */
  readonly device: CtapDevice;
  /** rp ids of the organisation: nothing else is ever let through. */
  readonly allowedRpIds: readonly string[];
  /** Admin static public keys (base64url) the agent accepts channels from, with their names. */
  readonly trustedAdmins: ReadonlyMap<string, string>;
  readonly policy: AgentPolicy;
  /** Asks the user (policy `ask`): resolve true to approve. Aborted when the time is up. */
  readonly ask?: (request: AgentRequest, signal: AbortSignal) => Promise<boolean>;
  /** @default 60000 */
  readonly askTimeoutMs?: number;
  /** Tells the user (every policy): "your admin is registering a passkey for … on your key". */
  readonly notify?: (text: string, request: AgentRequest) => void;
  /** The local log: one JSON line per request. */
  readonly logPath: string;
  /** @default () => new Date() */
  readonly now?: () => Date;
}

/** A connected key agent. */
export interface RunningKeyAgent extends AsyncDisposable {
  /** Resolves when the connection ends (the relay closed it, or {@link close}). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

/** Generates the agent's static key and registers its public key with the relay against `user`. */
export async function pairKeyAgent(options: {
  relayUrl: string;
  user: string;
  code: string;
  fetch?: typeof fetch;
}): Promise<NoiseKeyPair> {
  const staticKey = generateNoiseKeyPair();
  const url = new URL("/pair", options.relayUrl.replace(/^ws/, "http"));
  let response: Response;
  try {
    response = await (options.fetch ?? fetch)(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        user: options.user,
        code: options.code,
        publicKey: toBase64Url(staticKey.publicKey),
      }),
    });
  } catch (cause) {
    throw new RelayError(
      "relay-unreachable",
      `Cannot pair the key agent of "${options.user}": ${url} is unreachable`,
      {
        user: options.user,
        cause,
      },
    );
  }
  const body: unknown = await response.json().catch(() => undefined);
  if (!response.ok) {
    const code = typeof body === "object" && body && "code" in body
      ? String(body.code)
      : `http-${response.status}`;
    throw new RelayError(
      code === "pairing-code-invalid" ? "key-not-paired" : code,
      `Cannot pair the key agent of "${options.user}": the relay answered ${response.status} (${code})`,
      { user: options.user },
    );
  }
  return staticKey;
}

interface AgentSession {
  readonly id: string;
  readonly admin: string;
  readonly rpIds: readonly string[];
  responder: IkResponder | undefined;
  transport: NoiseTransport | undefined;
  adminKeyName: string;
  hello: ChannelHello;
}

/** Connects to the relay, proves the paired key, and serves requests until closed. */
export function startKeyAgent(options: KeyAgentOptions): Promise<RunningKeyAgent> {
  const now = options.now ?? (() => new Date());
  const sessions = new Map<string, AgentSession>();
  /** One request at a time on the device, whoever asks. */
  let deviceQueue: Promise<unknown> = Promise.resolve();
  const socket = new WebSocket(new URL("/agent", options.relayUrl));
  const closed = new Promise<void>((resolve) => socket.addEventListener("close", () => resolve()));
  /** Ends a question still open to the user when the connection ends. */
  const connectionEnded = closed.then(() => "relay-closed" as const);

  const send = (message: AgentToRelay) => {
    if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  };
  const log = async (line: AgentLogLine) => {
    await Deno.writeTextFile(options.logPath, JSON.stringify(line) + "\n", { append: true, mode: 0o600 });
  };

  const running: RunningKeyAgent = {
    closed,
    async close() {
      socket.close(1000, "key agent stopped");
      await closed;
      await deviceQueue;
    },
    [Symbol.asyncDispose]() {
      return this.close();
    },
  };

  return new Promise((resolve, reject) => {
    let welcomed = false;
    socket.onerror = () => {
      if (!welcomed) {
        reject(
          new RelayError(
            "relay-unreachable",
            `Cannot connect the key agent of "${options.user}" to ${options.relayUrl}`,
            {
              user: options.user,
            },
          ),
        );
      }
    };
    socket.onmessage = (event) => {
      const message = parseWire(relayToAgent, event.data);
      if (!message) return socket.close(1008, "malformed message");
      switch (message.type) {
        case "challenge": {
          const sharedSecret = x25519.getSharedSecret(
            options.staticKey.privateKey,
            decodeWireBytes(message.relayKey),
          );
          const proof = agentProof({
            sharedSecret,
            nonce: decodeWireBytes(message.nonce),
            user: options.user,
            agentPublicKey: options.staticKey.publicKey,
          });
          return send({
            type: "hello",
            user: options.user,
            publicKey: encodeWireBytes(options.staticKey.publicKey),
            proof: encodeWireBytes(proof),
          });
        }
        case "welcome":
          welcomed = true;
          return resolve(running);
        case "error":
          if (!welcomed) {
            reject(
              new RelayError(message.code, `Cannot serve the key of "${options.user}": ${message.message}`, {
                user: options.user,
              }),
            );
          }
          return;
        case "open":
          return openSession(message);
        case "closed":
          sessions.delete(message.session);
          return;
        case "frame": {
          const session = sessions.get(message.session);
          if (!session) return;
          deviceQueue = deviceQueue.then(() => onFrame(session, decodeWireBytes(message.data))).catch(
            () => {},
          );
          return;
        }
      }
    };
    socket.onclose = () => {
      if (!welcomed) {
        reject(
          new RelayError(
            "relay-closed",
            `The relay closed the key agent of "${options.user}" before it was served`,
            { user: options.user },
          ),
        );
      }
    };
  });

  /** Ends a channel with a reason the admin sees; a channel refused before any request is logged too. */
  function refuseSession(session: string, code: string, message: string, admin?: string): void {
    const known = sessions.get(session);
    sessions.delete(session);
    send({ type: "close", session, code, message });
    if (code !== "relay-tampering" && code !== "agent-failed") {
      const named = admin ?? known?.admin;
      void log({
        time: now().toISOString(),
        session,
        ...(named === undefined ? {} : { admin: named }),
        command: "open channel",
        decision: "refused",
        outcome: code,
      }).catch(() => {});
    }
  }

  function openSession(message: Extract<RelayToAgent, { type: "open" }>): void {
    if (message.user !== options.user) {
      return refuseSession(
        message.session,
        "obr-not-granted",
        `This agent serves "${options.user}", not "${message.user}"`,
        message.admin,
      );
    }
    const outside = message.rpIds.filter((rpId) => !options.allowedRpIds.includes(rpId));
    if (outside.length > 0 || message.rpIds.length === 0) {
      return refuseSession(
        message.session,
        "rp-id-not-allowed",
        `The channel names rp ids not on the organisation's list: ${outside.join(", ") || "(none named)"}`,
        message.admin,
      );
    }
    const prologue = obrPrologue({ sessionId: message.session, userId: options.user, rpIds: message.rpIds });
    sessions.set(message.session, {
      id: message.session,
      admin: message.admin,
      rpIds: message.rpIds,
      responder: new IkResponder({ prologue, staticKey: options.staticKey }),
      transport: undefined,
      adminKeyName: "",
      hello: { requester: message.admin, purpose: "" },
    });
  }

  async function onFrame(session: AgentSession, data: Uint8Array): Promise<void> {
    if (!sessions.has(session.id)) return;
    try {
      if (!session.transport) return handshake(session, data);
      const request = session.transport.receive.decryptWithAd(new Uint8Array(0), data);
      const answer = await serve(session, request);
      send({
        type: "frame",
        session: session.id,
        data: encodeWireBytes(session.transport.send.encryptWithAd(new Uint8Array(0), encodeAnswer(answer))),
      });
    } catch (error) {
      const code = error instanceof NoiseError ? "relay-tampering" : "agent-failed";
      await log({
        time: now().toISOString(),
        session: session.id,
        admin: session.admin,
        decision: "failed",
        outcome: code,
      });
      refuseSession(session.id, code, error instanceof Error ? error.message : String(error));
    }
  }

  function handshake(session: AgentSession, data: Uint8Array): void {
    const { payload, remoteStatic } = session.responder!.readMessage1(data);
    const adminKeyName = options.trustedAdmins.get(toBase64Url(remoteStatic));
    if (!adminKeyName) {
      return refuseSession(
        session.id,
        "admin-not-trusted",
        "The admin's key is not on this agent's list of trusted admins",
      );
    }
    let hello: ChannelHello;
    try {
      hello = channelHelloSchema.parse(JSON.parse(new TextDecoder().decode(payload)));
    } catch {
      return refuseSession(session.id, "malformed-request", "The admin's handshake payload is not valid");
    }
    const { message, transport } = session.responder!.writeMessage2(new Uint8Array(0));
    session.responder = undefined;
    session.transport = transport;
    session.adminKeyName = adminKeyName;
    session.hello = hello;
    send({ type: "frame", session: session.id, data: encodeWireBytes(message) });
  }

  async function serve(session: AgentSession, request: Uint8Array): Promise<AgentAnswer> {
    const base = {
      time: now().toISOString(),
      session: session.id,
      admin: session.admin,
      adminKeyName: session.adminKeyName,
      purpose: session.hello.purpose,
    };
    const refuse = async (described: AgentRequest, code: string, message: string): Promise<AgentAnswer> => {
      await log({ ...described, decision: "refused", outcome: code });
      return { kind: "refused", code, message };
    };
    const command = request[0];
    const name = commandNames.get(command ?? -1);
    if (!name) {
      return await refuse(
        { ...base, command: `0x${(command ?? 0).toString(16)}` },
        "command-not-allowed",
        `The key agent does not forward CTAP command 0x${(command ?? 0).toString(16)}`,
      );
    }
    let described: AgentRequest = { ...base, command: name };
    if (command === CtapCommand.makeCredential || command === CtapCommand.getAssertion) {
      try {
        described = { ...described, ...targetOf(command, request.subarray(1)) };
      } catch {
        return await refuse(described, "malformed-request", "The CTAP request could not be read");
      }
      const rpId = described.rpId!;
      if (!options.allowedRpIds.includes(rpId) || !session.rpIds.includes(rpId)) {
        return await refuse(
          described,
          "rp-id-not-allowed",
          `rp id "${rpId}" is not on the organisation's list`,
        );
      }
      const decision = await decide(described);
      if (decision !== "notified" && decision !== "approved") {
        const message = decision === "user-denied"
          ? "The user refused the request"
          : decision === "approval-timeout"
          ? "The user did not answer in time"
          : decision === "relay-closed"
          ? "The connection to the relay ended while the user was deciding"
          : "The organisation's policy refuses OBR requests on this agent";
        return await refuse(described, decision, message);
      }
      if (!sessions.has(session.id)) {
        return await refuse(described, "relay-closed", "The channel closed while the user was deciding");
      }
      const response = await options.device.transceive(request);
      await log({ ...described, decision, outcome: ctapStatusName(response[0] ?? 0xff) });
      return { kind: "ctap", response };
    }
    const response = await options.device.transceive(request);
    await log({ ...described, decision: "allowed", outcome: ctapStatusName(response[0] ?? 0xff) });
    return { kind: "ctap", response };
  }

  async function decide(
    request: AgentRequest,
  ): Promise<
    "notified" | "approved" | "user-denied" | "approval-timeout" | "obr-refused-by-policy" | "relay-closed"
  > {
    if (options.policy === "refuse") return "obr-refused-by-policy";
    const what = request.command === "makeCredential" ? "registering a passkey" : "signing in with a passkey";
    options.notify?.(
      `${request.adminKeyName} is ${what} for ${request.rpId}${
        request.account ? ` (account ${request.account})` : ""
      } on your key`,
      request,
    );
    if (options.policy === "notify") return "notified";
    if (!options.ask) return "obr-refused-by-policy";
    const controller = new AbortController();
    const timeoutMs = options.askTimeoutMs ?? 60_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"approval-timeout">((resolve) => {
      timer = setTimeout(() => {
        controller.abort();
        resolve("approval-timeout");
      }, timeoutMs);
    });
    try {
      const answer = await Promise.race([
        options.ask(request, controller.signal).then((
          yes,
        ) => (yes ? "approved" as const : "user-denied" as const)),
        timeout,
        connectionEnded,
      ]);
      if (answer === "relay-closed") controller.abort();
      return answer;
    } catch {
      return "user-denied";
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The rp id (and, for a registration, the account) a makeCredential or getAssertion is for. */
function targetOf(command: number, body: Uint8Array): { rpId: string; account?: string } {
  if (command === CtapCommand.makeCredential) {
    const parsed = decodeBody(MakeCredentialRequest, body);
    return { rpId: parsed.rp.id, ...(parsed.user.name ? { account: parsed.user.name } : {}) };
  }
  return { rpId: decodeBody(GetAssertionRequest, body).rpId };
}

/** The CTAP commands the agent forwards, by name for the log. */
const commandNames = new Map<number, string>([
  [CtapCommand.makeCredential, "makeCredential"],
  [CtapCommand.getAssertion, "getAssertion"],
  [CtapCommand.getInfo, "getInfo"],
  [CtapCommand.clientPin, "clientPIN"],
  [CtapCommand.getNextAssertion, "getNextAssertion"],
  [CtapCommand.selection, "selection"],
]);
