/**
 * What the OBR tests share: a relay, key agents serving software keys in real vaults, an admin
 * key, and a tampering man-in-the-middle that sits between the admin and the real relay (a hostile
 * relay, as far as the admin and the agent can tell) and rewrites, drops or replays frames.
 *
 * @module
 */
import { toBase64Url } from "../../core/bytes.ts";
import { Ctap2Client } from "../../core/ctap/client.ts";
import type { PluginContext } from "../../core/plugin.ts";
import { type OpenSoftwareKey, openSoftwareKey } from "../software/plugin.ts";
import {
  type AgentLogLine,
  type AgentPolicy,
  type KeyAgentOptions,
  pairKeyAgent,
  startKeyAgent,
} from "./key_agent.ts";
import { generateNoiseKeyPair, type NoiseKeyPair } from "./noise.ts";
import { type RelayServer, startRelayServer } from "./relay_server.ts";

/** The PIN every test key gets. */
export const testPin = "482916";
/** The admin as the relay's token table names them. */
export const testAdmin = "admin@contoso.sandbox";
/** The admin's relay token. */
export const testToken = "test-admin-token";

/** A paired key agent serving a software key in a vault. */
export interface TestAgent extends AsyncDisposable {
  readonly user: string;
  readonly key: OpenSoftwareKey;
  readonly staticKey: NoiseKeyPair;
  readonly logPath: string;
  /** The agent's local log, parsed. */
  log(): Promise<AgentLogLine[]>;
  /** What the agent told its user. */
  readonly notices: string[];
  /** Disconnects the agent from the relay (the key stays open until disposal). */
  disconnect(): Promise<void>;
  /** Connects again with the same paired key and vault, the policy now `notify`. */
  reconnect(): Promise<void>;
}

/** A relay, an admin key, and a temp folder. */
export interface ObrFixture extends AsyncDisposable {
  readonly relay: RelayServer;
  readonly adminKey: NoiseKeyPair;
  readonly dir: string;
  /** Pairs and starts a key agent for `user` with a fresh vault. */
  agent(
    user: string,
    options: {
      allowedRpIds: readonly string[];
      policy?: AgentPolicy;
      ask?: KeyAgentOptions["ask"];
      askTimeoutMs?: number;
      /** @default true: the fixture's admin key is on the agent's trusted list */
      trustAdmin?: boolean;
    },
  ): Promise<TestAgent>;
}

/** Starts a relay on loopback, with one admin token. */
export async function obrFixture(): Promise<ObrFixture> {
  const relay = await startRelayServer({ adminTokens: new Map([[testToken, testAdmin]]) });
  const adminKey = generateNoiseKeyPair();
  const dir = await Deno.makeTempDir({ prefix: "provisioning-obr-" });
  const agents: TestAgent[] = [];
  return {
    relay,
    adminKey,
    dir,
    async agent(user, options) {
      const vaultPath = `${dir}/${user}.vault`;
      const context: PluginContext = {
        interaction: { requestPin: () => Promise.reject(new Error("no PIN")), promptUserPresence: () => {} },
        env: (name) => name === "PROVISIONING_VAULT_PASSPHRASE" ? "correct horse battery" : undefined,
        readSecret: () => Promise.reject(new Error("no secret")),
      };
      const key = await openSoftwareKey(context, {
        vault: vaultPath,
        kdfIterations: 100_000,
        vaultGuardDir: `${dir}/guard`,
      });
      await new Ctap2Client(key.device).setPin(testPin);
      const staticKey = await pairKeyAgent({
        relayUrl: relay.url,
        user,
        code: relay.createPairingCode(user),
      });
      const logPath = `${dir}/${user}.agent.jsonl`;
      const notices: string[] = [];
      const start = (policy: AgentPolicy) =>
        startKeyAgent({
          relayUrl: relay.url,
          user,
          staticKey,
          device: key.device,
          allowedRpIds: options.allowedRpIds,
          trustedAdmins: options.trustAdmin === false
            ? new Map()
            : new Map([[toBase64Url(adminKey.publicKey), "Contoso IT (admin)"]]),
          policy,
          ...(options.ask ? { ask: options.ask } : {}),
          ...(options.askTimeoutMs ? { askTimeoutMs: options.askTimeoutMs } : {}),
          notify: (text) => notices.push(text),
          logPath,
        });
      let running = await start(options.policy ?? "notify");
      const agent: TestAgent = {
        user,
        key,
        staticKey,
        logPath,
        notices,
        disconnect: () => running.close(),
        async reconnect() {
          await running.close();
          running = await start("notify");
        },
        async log() {
          try {
            const text = await Deno.readTextFile(logPath);
            return text.trim().split("\n").map((line) => JSON.parse(line) as AgentLogLine);
          } catch (error) {
            if (error instanceof Deno.errors.NotFound) return [];
            throw error;
          }
        },
        async [Symbol.asyncDispose]() {
          await running.close();
          await key[Symbol.asyncDispose]();
        },
      };
      agents.push(agent);
      return agent;
    },
    async [Symbol.asyncDispose]() {
      for (const agent of agents) await agent[Symbol.asyncDispose]();
      await relay.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A frame as the tampering proxy sees it: the parsed message and where it is going. */
export interface InterceptedMessage {
  readonly direction: "to-relay" | "to-admin";
  readonly message: { type: string; session?: string; data?: string; [key: string]: unknown };
  /** Sends a message of the proxy's choosing to the relay, on this admin's connection. */
  readonly sendToRelay: (message: unknown) => void;
}

/**
 * A hostile relay: a WebSocket man-in-the-middle in front of the real relay's `/admin` route.
 * `tamper` returns the messages to deliver instead (none drops it, two replays one).
 */
export function tamperingProxy(
  upstream: string,
  tamper: (intercepted: InterceptedMessage) => unknown[],
): { url: string; close(): Promise<void> } {
  const sockets = new Set<WebSocket>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    const { socket: client, response } = Deno.upgradeWebSocket(request);
    const relay = new WebSocket(new URL(path, upstream));
    sockets.add(client).add(relay);
    const pending: string[] = [];
    const deliver = (socket: WebSocket, messages: unknown[]) => {
      for (const message of messages) {
        if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
      }
    };
    relay.onopen = () => pending.splice(0).forEach((text) => relay.send(text));
    const sendToRelay = (message: unknown) => deliver(relay, [message]);
    client.onmessage = (event) => {
      const messages = tamper({
        direction: "to-relay",
        message: JSON.parse(String(event.data)),
        sendToRelay,
      });
      if (relay.readyState === WebSocket.OPEN) deliver(relay, messages);
      else pending.push(...messages.map((m) => JSON.stringify(m)));
    };
    relay.onmessage = (event) => {
      deliver(
        client,
        tamper({ direction: "to-admin", message: JSON.parse(String(event.data)), sendToRelay }),
      );
    };
    relay.onclose = () => client.readyState <= WebSocket.OPEN && client.close();
    client.onclose = () => relay.readyState <= WebSocket.OPEN && relay.close();
    return response;
  });
  const { port } = server.addr as Deno.NetAddr;
  return {
    url: `ws://127.0.0.1:${port}`,
    async close() {
      const closing = [...sockets].filter((s) => s.readyState !== WebSocket.CLOSED).map((s) =>
        new Promise((resolve) => {
          s.addEventListener("close", resolve, { once: true });
          s.close();
        })
      );
      await Promise.all(closing);
      await server.shutdown();
    },
  };
}
