/**
 * The OBR relay (`provisioning relay`, later also inside the panel): a WebSocket server that
 * routes sealed frames between admin sessions and key agents and never sees inside them.
 *
 * What it enforces:
 * - agents prove their paired static key on every connection ({@link agentProof}); a user's key is
 *   paired once with a one-time code (`POST /pair`);
 * - admins present a bearer token the relay is configured with (the panel's agent tokens later);
 * - an admin opens a channel only to the agent of the user OBR is on for ({@link RelayServer.grant}),
 *   until the grant ends; revoking a grant closes its channels at once;
 * - per-connection bounds: message size, sessions per admin, and the bytes queued on a socket
 *   (a peer that does not read is disconnected, not buffered without end).
 *
 * It keeps presence (which agents are online) and an audit trail: who, which user, which rp ids
 * the admin declared, when, outcome. Never a frame's content.
 *
 * @module
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { equalBytes, randomBytes, toBase64Url } from "../../core/bytes.ts";
import { generateNoiseKeyPair } from "./noise.ts";
import {
  type AdminToRelay,
  adminToRelay,
  agentProof,
  type AgentToRelay,
  agentToRelay,
  decodeWireBytes,
  encodeWireBytes,
  maxWireMessageLength,
  pairRequest,
  parseWire,
  type RelayToAdmin,
  type RelayToAgent,
} from "./protocol.ts";

/** One line of the relay's audit trail: never a payload, never a token or key. */
export interface RelayAuditEvent {
  readonly time: string;
  readonly event:
    | "pair"
    | "agent-online"
    | "agent-offline"
    | "agent-refused"
    | "admin-online"
    | "admin-refused"
    | "grant"
    | "revoke"
    | "open"
    | "close";
  readonly outcome: "ok" | "refused" | "closed";
  readonly admin?: string;
  readonly user?: string;
  readonly session?: string;
  /** The rp ids the admin declared for the session (bound into the channel's prologue). */
  readonly rpIds?: readonly string[];
  /** A reason code for refusals and closes. */
  readonly reason?: string;
}

/** What {@link startRelayServer} needs. */
export interface RelayServerOptions {
  /** Bearer tokens of admins and the admin each names. The panel's agent tokens will replace this. */
  readonly adminTokens: ReadonlyMap<string, string>;
  /** @default 0 (any free port) */
  readonly port?: number;
  /** @default Date.now */
  readonly now?: () => number;
  /** Bytes a socket may have queued before its peer is disconnected as too slow. @default 1048576 */
  readonly maxQueuedBytes?: number;
  /** Channels one admin connection may hold at once. @default 4 */
  readonly maxSessionsPerAdmin?: number;
  /** How long a connection has to authenticate. @default 10000 */
  readonly authTimeoutMs?: number;
  /** Also told every audit event (a file, the panel's audit table). */
  readonly onAudit?: (event: RelayAuditEvent) => void;
}

/** A running relay. */
export interface RelayServer extends AsyncDisposable {
  /** `ws://127.0.0.1:PORT`: agents connect to `/agent`, admins to `/admin`; pairing is `POST /pair`. */
  readonly url: string;
  /**
   * Turns OBR on for `admin` towards `user` until `until` (a later grant for the same pair moves the
   * end). An admin may hold grants for several users at once (a bulk run); each channel reaches only
   * the user it was opened for.
   */
  grant(admin: string, user: string, until: Date): void;
  /** Turns OBR off for `admin` towards `user` (or every user): the matching open channels close at once. */
  revoke(admin: string, user?: string): void;
  /** A one-time pairing code for `user`'s key agent, valid for `ttlMs`. */
  createPairingCode(user: string, ttlMs?: number): string;
  /** Forgets `user`'s paired key (unpair); a connected agent is disconnected. */
  unpair(user: string): void;
  /** The users whose agents are connected and authenticated. */
  online(): string[];
  /** The paired public key of `user`, if any (what the panel shows to pin). */
  pairedKey(user: string): Uint8Array | undefined;
  /** The audit trail so far (the most recent 10,000 events). */
  audit(): readonly RelayAuditEvent[];
  close(): Promise<void>;
}

interface Session {
  readonly id: string;
  readonly admin: AdminConnection;
  readonly agent: AgentConnection;
  readonly user: string;
}

interface AgentConnection {
  readonly socket: WebSocket;
  user?: string;
  readonly sessions: Map<string, Session>;
}

interface AdminConnection {
  readonly socket: WebSocket;
  admin?: string;
  readonly sessions: Map<string, Session>;
}

const maxAuditEvents = 10_000;

/** Starts a relay on 127.0.0.1. TLS outside loopback is for a later step (see docs/obr.md). */
export function startRelayServer(options: RelayServerOptions): Promise<RelayServer> {
  const now = options.now ?? Date.now;
  const maxQueuedBytes = options.maxQueuedBytes ?? 1024 * 1024;
  const maxSessionsPerAdmin = options.maxSessionsPerAdmin ?? 4;
  const authTimeoutMs = options.authTimeoutMs ?? 10_000;
  const pairedKeys = new Map<string, Uint8Array>();
  const pairingCodes = new Map<string, { user: string; expires: number }>();
  /** admin → user → until (ms). */
  const grants = new Map<string, Map<string, number>>();
  const granted = (admin: string, user: string) => (grants.get(admin)?.get(user) ?? 0) > now();
  const agents = new Map<string, AgentConnection>();
  const admins = new Set<AdminConnection>();
  const trail: RelayAuditEvent[] = [];

  function audit(event: Omit<RelayAuditEvent, "time">): void {
    const full = { time: new Date(now()).toISOString(), ...event };
    trail.push(full);
    if (trail.length > maxAuditEvents) trail.shift();
    options.onAudit?.(full);
  }

  /** Sends, or disconnects a peer that has let too much pile up. */
  function send(socket: WebSocket, message: RelayToAgent | RelayToAdmin): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > maxQueuedBytes) {
      socket.close(1008, "queue full: the peer is not reading");
      return;
    }
    socket.send(JSON.stringify(message));
  }

  function closeSession(
    session: Session,
    code: string,
    message: string,
    notify: "admin" | "agent" | "both",
  ): void {
    if (!session.admin.sessions.delete(session.id)) return;
    session.agent.sessions.delete(session.id);
    if (notify !== "agent") {
      send(session.admin.socket, { type: "closed", session: session.id, code, message });
    }
    if (notify !== "admin") {
      send(session.agent.socket, { type: "closed", session: session.id, code, message });
    }
    audit({
      event: "close",
      outcome: "closed",
      ...(session.admin.admin ? { admin: session.admin.admin } : {}),
      user: session.user,
      session: session.id,
      reason: code,
    });
  }

  // ---- key agents -------------------------------------------------------------------------

  function serveAgent(socket: WebSocket): void {
    const connection: AgentConnection = { socket, sessions: new Map() };
    const ephemeral = generateNoiseKeyPair();
    const nonce = randomBytes(32);
    const timer = setTimeout(() => {
      if (!connection.user) socket.close(1008, "authentication timed out");
    }, authTimeoutMs);
    socket.onopen = () =>
      send(socket, {
        type: "challenge",
        relayKey: encodeWireBytes(ephemeral.publicKey),
        nonce: encodeWireBytes(nonce),
      });
    socket.onmessage = (event) => {
      const message = parseWire(agentToRelay, event.data);
      if (!message) return socket.close(1008, "malformed message");
      if (!connection.user) {
        if (message.type !== "hello") return socket.close(1008, "authenticate first");
        return helloAgent(connection, message, ephemeral.privateKey, nonce);
      }
      const session = connection.sessions.get(message.type === "hello" ? "" : message.session);
      if (!session) return; // a session the relay already closed: its frames are dropped
      if (message.type === "frame") {
        send(session.admin.socket, { type: "frame", session: session.id, data: message.data });
      }
      if (message.type === "close") closeSession(session, message.code, message.message, "admin");
    };
    socket.onclose = () => {
      clearTimeout(timer);
      for (const session of [...connection.sessions.values()]) {
        closeSession(
          session,
          "agent-offline",
          `The key agent of "${session.user}" went offline during the request`,
          "admin",
        );
      }
      if (connection.user && agents.get(connection.user) === connection) {
        agents.delete(connection.user);
        audit({ event: "agent-offline", outcome: "closed", user: connection.user });
      }
    };
  }

  function helloAgent(
    connection: AgentConnection,
    hello: Extract<AgentToRelay, { type: "hello" }>,
    ephemeralPrivate: Uint8Array,
    nonce: Uint8Array,
  ): void {
    const paired = pairedKeys.get(hello.user);
    const publicKey = decodeWireBytes(hello.publicKey);
    const refuse = (code: string, message: string) => {
      audit({ event: "agent-refused", outcome: "refused", user: hello.user, reason: code });
      send(connection.socket, { type: "error", code, message });
      connection.socket.close(1008, code);
    };
    if (!paired || !equalBytes(paired, publicKey)) {
      return refuse("key-not-paired", `No key agent with this key is paired for "${hello.user}"`);
    }
    let expected: Uint8Array;
    try {
      const sharedSecret = x25519.getSharedSecret(ephemeralPrivate, publicKey);
      expected = agentProof({ sharedSecret, nonce, user: hello.user, agentPublicKey: publicKey });
    } catch {
      return refuse("agent-proof-invalid", "The agent's key is not a valid X25519 key");
    }
    if (!equalBytes(expected, decodeWireBytes(hello.proof))) {
      return refuse("agent-proof-invalid", `The agent for "${hello.user}" did not prove its paired key`);
    }
    const previous = agents.get(hello.user);
    if (previous) previous.socket.close(1000, "replaced by a newer connection of the same agent");
    connection.user = hello.user;
    agents.set(hello.user, connection);
    audit({ event: "agent-online", outcome: "ok", user: hello.user });
    send(connection.socket, { type: "welcome", user: hello.user });
  }

  // ---- admins ------------------------------------------------------------------------------

  function serveAdmin(socket: WebSocket): void {
    const connection: AdminConnection = { socket, sessions: new Map() };
    admins.add(connection);
    const timer = setTimeout(() => {
      if (!connection.admin) socket.close(1008, "authentication timed out");
    }, authTimeoutMs);
    socket.onmessage = (event) => {
      const message = parseWire(adminToRelay, event.data);
      if (!message) return socket.close(1008, "malformed message");
      if (!connection.admin) {
        if (message.type !== "auth") return socket.close(1008, "authenticate first");
        const admin = options.adminTokens.get(message.token);
        if (!admin) {
          audit({ event: "admin-refused", outcome: "refused", reason: "admin-token-invalid" });
          send(socket, {
            type: "error",
            code: "admin-token-invalid",
            message: "The relay does not know this token",
          });
          return socket.close(1008, "admin-token-invalid");
        }
        connection.admin = admin;
        audit({ event: "admin-online", outcome: "ok", admin });
        return send(socket, { type: "ready", admin });
      }
      handleAdmin(connection, message);
    };
    socket.onclose = () => {
      clearTimeout(timer);
      admins.delete(connection);
      for (const session of [...connection.sessions.values()]) {
        closeSession(session, "admin-gone", "The admin's session ended", "agent");
      }
    };
  }

  function handleAdmin(connection: AdminConnection, message: AdminToRelay): void {
    const admin = connection.admin!;
    if (message.type === "open") return openSession(connection, admin, message.user, message.rpIds);
    if (message.type === "auth") return;
    const session = connection.sessions.get(message.session);
    if (!session) return;
    if (message.type === "close") {
      return closeSession(session, "admin-closed", "The admin closed the channel", "agent");
    }
    if (!granted(admin, session.user)) {
      return closeSession(
        session,
        "obr-not-granted",
        `OBR for "${session.user}" is off or has ended`,
        "both",
      );
    }
    send(session.agent.socket, { type: "frame", session: session.id, data: message.data });
  }

  function openSession(
    connection: AdminConnection,
    admin: string,
    user: string,
    rpIds: readonly string[],
  ): void {
    const refuse = (code: string, message: string) => {
      audit({ event: "open", outcome: "refused", admin, user, rpIds, reason: code });
      send(connection.socket, { type: "error", code, message });
    };
    if (!granted(admin, user)) {
      return refuse("obr-not-granted", `OBR is not on for "${user}" for admin "${admin}"`);
    }
    const key = pairedKeys.get(user);
    if (!key) return refuse("key-not-paired", `"${user}" has no paired key agent`);
    const agent = agents.get(user);
    if (!agent) return refuse("agent-offline", `The key agent of "${user}" is not connected`);
    if (connection.sessions.size >= maxSessionsPerAdmin) {
      return refuse(
        "too-many-sessions",
        `This admin connection already holds ${maxSessionsPerAdmin} channels`,
      );
    }
    const session: Session = { id: toBase64Url(randomBytes(16)), admin: connection, agent, user };
    connection.sessions.set(session.id, session);
    agent.sessions.set(session.id, session);
    audit({ event: "open", outcome: "ok", admin, user, rpIds, session: session.id });
    send(agent.socket, { type: "open", session: session.id, admin, user, rpIds: [...rpIds] });
    send(connection.socket, { type: "opened", session: session.id, user, agentKey: encodeWireBytes(key) });
  }

  // ---- pairing -----------------------------------------------------------------------------

  async function pair(request: Request): Promise<Response> {
    const reply = (status: number, body: unknown) => Response.json(body, { status });
    let body: unknown;
    try {
      const text = await request.text();
      if (text.length > 4096) {
        return reply(413, { code: "too-large", message: "The pairing request is too large" });
      }
      body = JSON.parse(text);
    } catch {
      return reply(400, { code: "malformed", message: "The pairing request is not JSON" });
    }
    const parsed = pairRequest.safeParse(body);
    if (!parsed.success) {
      return reply(400, { code: "malformed", message: "The pairing request is not valid" });
    }
    const { user, code, publicKey } = parsed.data;
    const entry = pairingCodes.get(code);
    pairingCodes.delete(code); // one attempt per code, right or wrong
    if (!entry || entry.user !== user || entry.expires <= now()) {
      audit({ event: "pair", outcome: "refused", user, reason: "pairing-code-invalid" });
      return reply(403, {
        code: "pairing-code-invalid",
        message: `The pairing code is not valid for "${user}"`,
      });
    }
    pairedKeys.set(user, decodeWireBytes(publicKey));
    audit({ event: "pair", outcome: "ok", user });
    return reply(200, { user });
  }

  // ---- the server --------------------------------------------------------------------------

  function handle(request: Request): Response | Promise<Response> {
    const path = new URL(request.url).pathname;
    if (path === "/pair" && request.method === "POST") return pair(request);
    if ((path === "/agent" || path === "/admin") && request.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(request, { idleTimeout: 60 });
      if (path === "/agent") serveAgent(socket);
      else serveAdmin(socket);
      return response;
    }
    return Response.json({ code: "not-found", message: `No route ${request.method} ${path}` }, {
      status: 404,
    });
  }

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: options.port ?? 0,
      onListen: () => {},
    }, handle);
    const { port } = server.addr as Deno.NetAddr;
    const relay: RelayServer = {
      url: `ws://127.0.0.1:${port}`,
      grant(admin, user, until) {
        const users = grants.get(admin) ?? new Map<string, number>();
        users.set(user, until.getTime());
        grants.set(admin, users);
        audit({ event: "grant", outcome: "ok", admin, user });
      },
      revoke(admin, user) {
        if (user === undefined) grants.delete(admin);
        else grants.get(admin)?.delete(user);
        audit({ event: "revoke", outcome: "ok", admin, ...(user === undefined ? {} : { user }) });
        closeAdminSessions(admin, user);
      },
      createPairingCode(user, ttlMs = 10 * 60_000) {
        for (const [old, entry] of pairingCodes) if (entry.expires <= now()) pairingCodes.delete(old);
        // 10 characters of Crockford's base32 (32 symbols, so no modulo bias): 50 bits, one attempt per code.
        const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        const code = Array.from(randomBytes(10), (b) => alphabet[b % 32]).join("");
        pairingCodes.set(code, { user, expires: now() + ttlMs });
        return code;
      },
      unpair(user) {
        pairedKeys.delete(user);
        agents.get(user)?.socket.close(1000, "unpaired");
      },
      online: () => [...agents.keys()],
      pairedKey: (user) => pairedKeys.get(user),
      audit: () => trail,
      async close() {
        for (const agent of agents.values()) agent.socket.close(1001, "relay shutting down");
        for (const admin of admins) admin.socket.close(1001, "relay shutting down");
        await server.shutdown();
      },
      [Symbol.asyncDispose]() {
        return this.close();
      },
    };
    resolve(relay);

    function closeAdminSessions(admin: string, user: string | undefined): void {
      for (const connection of admins) {
        if (connection.admin !== admin) continue;
        for (const session of [...connection.sessions.values()]) {
          if (user !== undefined && session.user !== user) continue;
          closeSession(session, "obr-not-granted", `OBR for "${session.user}" was turned off`, "both");
        }
      }
    }
  });
}

/** The largest message the relay accepts; exported for the clients' own bound. */
export { maxWireMessageLength };
