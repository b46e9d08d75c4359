/**
 * On-behalf registration end to end on loopback: a relay, two key agents serving software keys in
 * real vaults, the admin's relay authenticator, and the Entra sandbox verifying each registration
 * with @simplewebauthn/server. The API path is driven through core/jobs/provision_user.ts.
 */
import { assert, assertEquals, rejects } from "./assert.ts";
import { cliSandbox, sandboxSession } from "./bulk_support.ts";
import { scriptedUser } from "./software_key.ts";
import { provisionUser } from "../core/jobs/provision_user.ts";
import type { ProvisioningError } from "../core/errors.ts";
import type { ProviderSession } from "../core/plugin.ts";
import type { Sandbox } from "../plugins/entra/sandbox/server.ts";
import {
  type InterceptedMessage,
  type ObrFixture,
  obrFixture,
  tamperingProxy,
  testAdmin,
  testPin,
  testToken,
} from "../authenticators/relay/_test_support.ts";
import { openRelayAuthenticator, type RelayAuthenticatorOptions } from "../authenticators/relay/plugin.ts";
import { RelayError } from "../authenticators/relay/errors.ts";

interface World extends AsyncDisposable {
  sandbox: Sandbox;
  session: ProviderSession;
  obr: ObrFixture;
  userA: string;
  userB: string;
}

async function world(): Promise<World> {
  const sandbox = await cliSandbox();
  const obr = await obrFixture();
  const session = await sandboxSession(sandbox, obr.dir);
  const [userA, userB] = sandbox.tenant.users().map((u) => u.userPrincipalName).filter((u) =>
    /^user\d+@/.test(u)
  );
  return {
    sandbox,
    session,
    obr,
    userA: userA!,
    userB: userB!,
    async [Symbol.asyncDispose]() {
      await session[Symbol.asyncDispose]();
      await obr[Symbol.asyncDispose]();
      await sandbox.close();
    },
  };
}

function channelOptions(w: World, user: string, agentKey: Uint8Array): RelayAuthenticatorOptions {
  return {
    relayUrl: w.obr.relay.url,
    obrUser: user,
    token: testToken,
    adminKey: w.obr.adminKey,
    agentKey,
    rpIds: w.session.allowedRpIds,
    requester: testAdmin,
    connectTimeoutMs: 5000,
    requestTimeoutMs: 5000,
  };
}

function passkeysOf(sandbox: Sandbox, upn: string) {
  return sandbox.inspect().users.find((u) => u.userPrincipalName === upn)?.passkeys ?? [];
}

function grantFor(w: World, user: string): void {
  w.obr.relay.grant(testAdmin, user, new Date(Date.now() + 10 * 60_000));
}

Deno.test("OBR: provisions user A onto A's own key through the relay; B's key is untouched", async () => {
  await using w = await world();
  const agentA = await w.obr.agent(w.userA, { allowedRpIds: w.session.allowedRpIds });
  const agentB = await w.obr.agent(w.userB, { allowedRpIds: w.session.allowedRpIds });
  assertEquals(w.obr.relay.online().sort().join(","), [w.userA, w.userB].sort().join(","));
  grantFor(w, w.userA);

  await using authenticator = await openRelayAuthenticator(
    channelOptions(w, w.userA, agentA.staticKey.publicKey),
  );
  const result = await provisionUser({
    session: w.session,
    user: w.userA,
    authenticator,
    interaction: scriptedUser([testPin]),
    displayName: "OBR key",
  });

  // The sandbox verified the registration, for A only.
  const passkeys = passkeysOf(w.sandbox, w.userA);
  assertEquals(passkeys.length, 1);
  assert(passkeys[0]!.verified);
  assertEquals(passkeysOf(w.sandbox, w.userB).length, 0);
  // The passkey lives in A's agent's vault, B's vault holds none.
  const stored = agentA.key.vault.read().credentials;
  assertEquals(stored.length, 1);
  assertEquals(stored[0]!.rpId, result.rpId);
  assertEquals(stored[0]!.id, result.credentialId);
  assertEquals(agentB.key.vault.read().credentials.length, 0);
  // A's agent logged the request and told its user; B's agent saw nothing.
  const log = await agentA.log();
  const made = log.filter((line) => line.command === "makeCredential");
  assertEquals(made.length, 1);
  assertEquals(made[0]!.rpId, result.rpId);
  assertEquals(made[0]!.decision, "notified");
  assertEquals(made[0]!.outcome, "CTAP2_OK");
  assertEquals(made[0]!.adminKeyName, "Contoso IT (admin)");
  assert(agentA.notices.some((text) => text.includes(`registering a passkey for ${result.rpId}`)));
  assertEquals((await agentB.log()).length, 0);
  // The relay's audit trail names who, which user and the outcome, never a payload.
  const opens = w.obr.relay.audit().filter((event) => event.event === "open");
  assertEquals(opens.length, 1);
  assertEquals(opens[0]!.admin, testAdmin);
  assertEquals(opens[0]!.user, w.userA);
  assertEquals(opens[0]!.outcome, "ok");
  assertEquals(opens[0]!.rpIds?.join(), w.session.allowedRpIds.join());
  // The PIN went sealed through the relay: neither the audit trail nor the agent's log holds it.
  assert(!JSON.stringify(w.obr.relay.audit()).includes(testPin));
  assert(!(await Deno.readTextFile(agentA.logPath)).includes(testPin));
  assert(w.obr.relay.audit().every((event) => !("data" in event)));
});

Deno.test("OBR: the admin cannot reach B's key while OBR is on for A", async () => {
  await using w = await world();
  await w.obr.agent(w.userA, { allowedRpIds: w.session.allowedRpIds });
  const agentB = await w.obr.agent(w.userB, { allowedRpIds: w.session.allowedRpIds });
  grantFor(w, w.userA);
  const error = await rejects(
    () => openRelayAuthenticator(channelOptions(w, w.userB, agentB.staticKey.publicKey)),
    RelayError,
  );
  assertEquals(error.code, "obr-not-granted");
  assert(error.message.includes(w.userB), error.message);
  assertEquals((await agentB.log()).length, 0);
  const refused = w.obr.relay.audit().filter((event) =>
    event.event === "open" && event.outcome === "refused"
  );
  assertEquals(refused.map((event) => event.user).join(), w.userB);
});

Deno.test("OBR: a relay that names another key than the pinned one is refused before any request", async () => {
  await using w = await world();
  const agentA = await w.obr.agent(w.userA, { allowedRpIds: w.session.allowedRpIds });
  grantFor(w, w.userA);
  const wrongPin = agentA.staticKey.publicKey.slice();
  wrongPin[0]! ^= 1;
  const error = await rejects(() => openRelayAuthenticator(channelOptions(w, w.userA, wrongPin)), RelayError);
  assertEquals(error.code, "agent-key-mismatch");
});

Deno.test("OBR: an agent whose user denies gives a clear failure and nothing is registered", async () => {
  await using w = await world();
  const asked: string[] = [];
  const agentA = await w.obr.agent(w.userA, {
    allowedRpIds: w.session.allowedRpIds,
    policy: "ask",
    ask: (request) => {
      asked.push(`${request.command} ${request.rpId} ${request.account}`);
      return Promise.resolve(false);
    },
  });
  grantFor(w, w.userA);
  await using authenticator = await openRelayAuthenticator(
    channelOptions(w, w.userA, agentA.staticKey.publicKey),
  );
  const error = await rejects(
    () =>
      provisionUser({
        session: w.session,
        user: w.userA,
        authenticator,
        interaction: scriptedUser([testPin]),
        displayName: "OBR key",
      }),
    Error,
  );
  assertEquals((error as ProvisioningError).code, "user-denied");
  assert(error.message.includes(w.userA), error.message);
  assertEquals(asked.length, 1);
  assert(asked[0]!.startsWith("makeCredential "), asked[0]);
  assertEquals(passkeysOf(w.sandbox, w.userA).length, 0);
  assertEquals(agentA.key.vault.read().credentials.length, 0);
  assertEquals((await agentA.log()).filter((line) => line.outcome === "user-denied").length, 1);
});

/** The makeCredential answer is the one frame to the admin that carries an attestation certificate. */
function isAttestationAnswer(intercepted: InterceptedMessage): boolean {
  return intercepted.direction === "to-admin" && intercepted.message.type === "frame" &&
    (intercepted.message.data?.length ?? 0) > 800;
}

for (
  const [name, tamper] of [
    ["flips a byte in", (message: InterceptedMessage["message"]) => [flipped(message)]],
    ["drops", () => []],
    [
      "replays an earlier answer instead of",
      (_: InterceptedMessage["message"], earlier: unknown) => [earlier],
    ],
  ] as const
) {
  Deno.test(`OBR: a relay that ${name} the agent's makeCredential answer fails the request; nothing is registered`, async () => {
    await using w = await world();
    const agentA = await w.obr.agent(w.userA, { allowedRpIds: w.session.allowedRpIds });
    grantFor(w, w.userA);
    let earlier: unknown;
    let tampered = 0;
    const proxy = await tamperingProxy(w.obr.relay.url, (intercepted) => {
      if (isAttestationAnswer(intercepted)) {
        tampered++;
        return tamper(intercepted.message, earlier);
      }
      if (intercepted.direction === "to-admin" && intercepted.message.type === "frame") {
        earlier = intercepted.message;
      }
      return [intercepted.message];
    });
    try {
      await using authenticator = await openRelayAuthenticator({
        ...channelOptions(w, w.userA, agentA.staticKey.publicKey),
        relayUrl: proxy.url,
        requestTimeoutMs: 1500,
      });
      const error = await rejects(
        () =>
          provisionUser({
            session: w.session,
            user: w.userA,
            authenticator,
            interaction: scriptedUser([testPin]),
            displayName: "OBR key",
          }),
        Error,
      );
      assertEquals(tampered, 1);
      assertEquals((error as ProvisioningError).code, name === "drops" ? "relay-timeout" : "relay-tampering");
      assert(error.message.includes(w.userA), error.message);
      assertEquals(passkeysOf(w.sandbox, w.userA).length, 0);
    } finally {
      await proxy.close();
    }
  });
}

function flipped(message: InterceptedMessage["message"]): unknown {
  const data = message.data!;
  const index = Math.floor(data.length / 2);
  const swapped = data[index] === "A" ? "B" : "A";
  return { ...message, data: data.slice(0, index) + swapped + data.slice(index + 1) };
}

Deno.test("OBR: a relay that replays the admin's makeCredential request to the agent cannot make a second passkey", async () => {
  await using w = await world();
  const agentA = await w.obr.agent(w.userA, { allowedRpIds: w.session.allowedRpIds });
  grantFor(w, w.userA);
  let lastRequest: unknown;
  let replayed = 0;
  const proxy = await tamperingProxy(w.obr.relay.url, (intercepted) => {
    if (isAttestationAnswer(intercepted) && lastRequest) {
      // The answer has come back: send the agent the request that caused it a second time.
      replayed++;
      intercepted.sendToRelay(lastRequest);
    }
    if (intercepted.direction === "to-relay" && intercepted.message.type === "frame") {
      lastRequest = intercepted.message;
    }
    return [intercepted.message];
  });
  try {
    await using authenticator = await openRelayAuthenticator({
      ...channelOptions(w, w.userA, agentA.staticKey.publicKey),
      relayUrl: proxy.url,
    });
    // The original request went through and was registered; the replay was refused by the agent.
    await provisionUser({
      session: w.session,
      user: w.userA,
      authenticator,
      interaction: scriptedUser([testPin]),
      displayName: "OBR key",
    });
    await waitFor(async () => (await agentA.log()).some((line) => line.outcome === "relay-tampering"));
    assertEquals(replayed, 1);
    assertEquals(agentA.key.vault.read().credentials.length, 1);
    assertEquals((await agentA.log()).filter((line) => line.command === "makeCredential").length, 1);
  } finally {
    await proxy.close();
  }
});

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("condition not met within 2 s");
}
