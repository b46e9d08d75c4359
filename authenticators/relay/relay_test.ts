/**
 * The relay, the key agent and the relay authenticator over real WebSockets on loopback: who may
 * connect, who may reach whom, and the errors that say what to do.
 */
import { assert, assertEquals, rejects } from "../../test/assert.ts";
import { Ctap2Client } from "../../core/ctap/client.ts";
import { randomBytes, toBase64Url } from "../../core/bytes.ts";
import { UsageError } from "../../core/errors.ts";
import type { PluginContext } from "../../core/plugin.ts";
import { maxWireMessageLength } from "./protocol.ts";
import { type ObrFixture, obrFixture, testAdmin, type TestAgent, testToken } from "./_test_support.ts";
import { RelayError } from "./errors.ts";
import type { AgentLogLine } from "./key_agent.ts";
import { generateNoiseKeyPair } from "./noise.ts";
import {
  openRelayAuthenticator,
  relayAdminKeyEnv,
  relayAuthenticator,
  type RelayAuthenticatorOptions,
  relayTokenEnv,
} from "./plugin.ts";
import { pairKeyAgent, startKeyAgent } from "./key_agent.ts";

const rpId = "login.microsoft.com";
const alice = "alice@contoso.sandbox";

function options(obr: ObrFixture, agentKey: Uint8Array, extra: Partial<RelayAuthenticatorOptions> = {}) {
  return {
    relayUrl: obr.relay.url,
    obrUser: alice,
    token: testToken,
    adminKey: obr.adminKey,
    agentKey,
    rpIds: [rpId],
    connectTimeoutMs: 3000,
    requestTimeoutMs: 3000,
    ...extra,
  };
}

function grant(obr: ObrFixture, user = alice, ms = 60_000) {
  obr.relay.grant(testAdmin, user, new Date(Date.now() + ms));
}

Deno.test("relay: a pairing code works once, for its user only", async () => {
  await using obr = await obrFixture();
  const code = obr.relay.createPairingCode(alice);
  const wrongUser = await rejects(
    () => pairKeyAgent({ relayUrl: obr.relay.url, user: "bob@contoso.sandbox", code }),
    RelayError,
  );
  assertEquals(wrongUser.code, "key-not-paired");
  // The failed attempt used the code up.
  await rejects(() => pairKeyAgent({ relayUrl: obr.relay.url, user: alice, code }), RelayError);
  const fresh = obr.relay.createPairingCode(alice);
  const key = await pairKeyAgent({ relayUrl: obr.relay.url, user: alice, code: fresh });
  assertEquals(obr.relay.pairedKey(alice)?.join(), key.publicKey.join());
  await rejects(() => pairKeyAgent({ relayUrl: obr.relay.url, user: alice, code: fresh }), RelayError);
});

Deno.test("relay: an agent that cannot prove the paired key is refused and not online", async () => {
  await using obr = await obrFixture();
  await pairKeyAgent({ relayUrl: obr.relay.url, user: alice, code: obr.relay.createPairingCode(alice) });
  const impostor = generateNoiseKeyPair();
  const error = await rejects(
    () =>
      startKeyAgent({
        relayUrl: obr.relay.url,
        user: alice,
        staticKey: impostor,
        device: { transceive: () => Promise.reject(new Error("never called")) },
        allowedRpIds: [rpId],
        trustedAdmins: new Map(),
        policy: "notify",
        logPath: `${obr.dir}/impostor.jsonl`,
      }),
    RelayError,
  );
  assertEquals(error.code, "key-not-paired");
  assertEquals(obr.relay.online().length, 0);
  assert(obr.relay.audit().some((event) => event.event === "agent-refused" && event.user === alice));
});

Deno.test("relay: an unknown admin token is refused", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  grant(obr);
  const error = await rejects(
    () => openRelayAuthenticator(options(obr, agent.staticKey.publicKey, { token: "not-a-token" })),
    RelayError,
  );
  assertEquals(error.code, "admin-token-invalid");
});

Deno.test("relay: a user whose agent is not connected gives agent-offline, retryable", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  await agent.disconnect();
  grant(obr);
  const error = await rejects(
    () => openRelayAuthenticator(options(obr, agent.staticKey.publicKey)),
    RelayError,
  );
  assertEquals(error.code, "agent-offline");
  assert(error.retryable);
  assert(error.hint?.includes("provisioning key agent"), error.hint);
});

Deno.test("relay: an unreachable relay says so", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const error = await rejects(
    () =>
      openRelayAuthenticator({
        relayUrl: `ws://127.0.0.1:${port}`,
        obrUser: alice,
        token: testToken,
        adminKey: generateNoiseKeyPair(),
        agentKey: randomBytes(32),
        rpIds: [rpId],
      }),
    RelayError,
  );
  assertEquals(error.code, "relay-unreachable");
});

Deno.test("relay: an expired grant does not open a channel; revoking closes an open one", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  grant(obr, alice, -1);
  const expired = await rejects(
    () => openRelayAuthenticator(options(obr, agent.staticKey.publicKey)),
    RelayError,
  );
  assertEquals(expired.code, "obr-not-granted");

  grant(obr);
  await using authenticator = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const getInfo = Uint8Array.of(0x04);
  assertEquals((await authenticator.device.transceive(getInfo))[0], 0x00);
  obr.relay.revoke(testAdmin);
  const error = await rejects(() => authenticator.device.transceive(getInfo), RelayError);
  assertEquals(error.code, "obr-not-granted");
});

Deno.test("agent: refuses an admin key it does not trust", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId], trustAdmin: false });
  grant(obr);
  const error = await rejects(
    () => openRelayAuthenticator(options(obr, agent.staticKey.publicKey)),
    RelayError,
  );
  assertEquals(error.code, "admin-not-trusted");
  await waitForLog(agent, (line) => line.command === "open channel" && line.outcome === "admin-not-trusted");
});

async function waitForLog(agent: TestAgent, match: (line: AgentLogLine) => boolean): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if ((await agent.log()).some(match)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`the agent of "${agent.user}" never logged the expected line`);
}

Deno.test("agent: refuses a channel for rp ids off the organisation's list, and a makeCredential for one", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  grant(obr);
  const channel = await rejects(
    () => openRelayAuthenticator(options(obr, agent.staticKey.publicKey, { rpIds: ["evil.example"] })),
    RelayError,
  );
  assertEquals(channel.code, "rp-id-not-allowed");
  await waitForLog(agent, (line) => line.command === "open channel" && line.outcome === "rp-id-not-allowed");

  await using authenticator = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const client = new Ctap2Client(authenticator.device);
  const request = client.makeCredential({
    clientDataHash: randomBytes(32),
    rp: { id: "evil.example" },
    user: { id: randomBytes(16), name: "alice", displayName: "Alice" },
    pubKeyCredParams: [{ type: "public-key", alg: -7 }],
  });
  const error = await rejects(() => request, RelayError);
  assertEquals(error.code, "rp-id-not-allowed");
  assertEquals(agent.key.vault.read().credentials.length, 0);
  // A refusal is an answer: the channel still works.
  await client.getInfo();
  const log = await agent.log();
  assert(log.some((line) => line.rpId === "evil.example" && line.outcome === "rp-id-not-allowed"));
});

Deno.test("agent: never forwards reset (or any command off its list)", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  grant(obr);
  await using authenticator = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const error = await rejects(() => authenticator.device.transceive(Uint8Array.of(0x07)), RelayError);
  assertEquals(error.code, "command-not-allowed");
  assert((await agent.log()).some((line) => line.command === "0x7" && line.decision === "refused"));
});

Deno.test("agent: a user who does not answer in time gives approval-timeout", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, {
    allowedRpIds: [rpId],
    policy: "ask",
    askTimeoutMs: 100,
    ask: (_, signal) => new Promise((resolve) => signal.addEventListener("abort", () => resolve(true))),
  });
  grant(obr);
  await using authenticator = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const client = new Ctap2Client(authenticator.device);
  const error = await rejects(
    () =>
      client.makeCredential({
        clientDataHash: randomBytes(32),
        rp: { id: rpId },
        user: { id: randomBytes(16), name: "alice", displayName: "Alice" },
        pubKeyCredParams: [{ type: "public-key", alg: -7 }],
      }),
    RelayError,
  );
  assertEquals(error.code, "approval-timeout");
  assert(error.retryable);
  assertEquals(agent.key.vault.read().credentials.length, 0);
});

Deno.test("agent: going offline mid-request gives agent-offline; a new channel later succeeds once", async () => {
  await using obr = await obrFixture();
  let disconnect = () => Promise.resolve();
  const agent = await obr.agent(alice, {
    allowedRpIds: [rpId],
    policy: "ask",
    ask: () => {
      void disconnect();
      return new Promise<boolean>(() => {});
    },
  });
  disconnect = () => agent.disconnect();
  grant(obr);
  await using authenticator = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const makeCredential = (client: Ctap2Client) =>
    client.makeCredential({
      clientDataHash: randomBytes(32),
      rp: { id: rpId },
      user: { id: randomBytes(16), name: "alice", displayName: "Alice" },
      pubKeyCredParams: [{ type: "public-key", alg: -7 }],
    });
  const error = await rejects(() => makeCredential(new Ctap2Client(authenticator.device)), RelayError);
  assertEquals(error.code, "agent-offline");
  assert(error.retryable);
  assertEquals(agent.key.vault.read().credentials.length, 0);

  // The user comes back: a retry on a new channel creates exactly one credential.
  await agent.reconnect();
  await using again = await openRelayAuthenticator(options(obr, agent.staticKey.publicKey));
  const made = await makeCredential(new Ctap2Client(again.device));
  assertEquals(made.fmt, "packed");
  const answered = (await agent.log()).filter((line) =>
    line.command === "makeCredential" && line.outcome === "CTAP2_OK"
  );
  assertEquals(answered.length, 1);
});

Deno.test("plugin: open() reads the relay, the user and the pinned key from options, token and admin key from the environment", async () => {
  await using obr = await obrFixture();
  const agent = await obr.agent(alice, { allowedRpIds: [rpId] });
  grant(obr);
  const env: Record<string, string> = {
    [relayTokenEnv]: testToken,
    [relayAdminKeyEnv]: toBase64Url(obr.adminKey.privateKey),
  };
  const context: PluginContext = {
    interaction: { requestPin: () => Promise.reject(new Error("no PIN")), promptUserPresence: () => {} },
    env: (name) => env[name],
    readSecret: () => Promise.reject(new Error("no secret")),
  };
  const pluginOptions = {
    relay: obr.relay.url,
    obrUser: alice,
    agentKey: toBase64Url(agent.staticKey.publicKey),
  };
  await using authenticator = await relayAuthenticator.open(context, pluginOptions);
  assertEquals((await authenticator.device.transceive(Uint8Array.of(0x04)))[0], 0x00);

  delete env[relayTokenEnv];
  const missing = await rejects(
    async () => await relayAuthenticator.open(context, pluginOptions),
    UsageError,
  );
  assert(missing.hint?.includes(relayTokenEnv), missing.hint);
  const badKey = await rejects(
    async () => await relayAuthenticator.open(context, { ...pluginOptions, agentKey: "AAAA" }),
    UsageError,
  );
  assert(badKey.message.includes("agentKey"), badKey.message);
});

Deno.test("relay: a message larger than the limit closes the connection", async () => {
  await using obr = await obrFixture();
  const socket = new WebSocket(new URL("/admin", obr.relay.url));
  const closed = new Promise<CloseEvent>((resolve) =>
    socket.addEventListener("close", resolve, { once: true })
  );
  await new Promise((resolve) => socket.addEventListener("open", resolve, { once: true }));
  socket.send(JSON.stringify({ type: "auth", token: "x".repeat(maxWireMessageLength + 1) }));
  const event = await closed;
  assertEquals(event.code, 1008);
  assertEquals(event.reason, "malformed message");
});

Deno.test("relay: grants are per user; revoking one user's grant closes only that user's channel", async () => {
  await using obr = await obrFixture();
  const bob = "bob@contoso.sandbox";
  const agentA = await obr.agent(alice, { allowedRpIds: [rpId] });
  const agentB = await obr.agent(bob, { allowedRpIds: [rpId] });
  grant(obr, alice);
  grant(obr, bob);
  await using toAlice = await openRelayAuthenticator(options(obr, agentA.staticKey.publicKey));
  await using toBob = await openRelayAuthenticator(
    options(obr, agentB.staticKey.publicKey, { obrUser: bob }),
  );
  const getInfo = Uint8Array.of(0x04);
  obr.relay.revoke(testAdmin, bob);
  assertEquals((await toAlice.device.transceive(getInfo))[0], 0x00);
  const error = await rejects(() => toBob.device.transceive(getInfo), RelayError);
  assertEquals(error.code, "obr-not-granted");
});
