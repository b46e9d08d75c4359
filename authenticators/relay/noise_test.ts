/**
 * The OBR channel against the published cacophony vector for Noise_IK_25519_ChaChaPoly_SHA256
 * (testdata/, source cited in the file), and what a tampering relay can do to it.
 */
import { assert, assertEquals, deepStrictEqual, throws } from "../../test/assert.ts";
import { fromHex, toHex, utf8 } from "../../core/bytes.ts";
import vector from "./testdata/noise_ik_25519_chachapoly_sha256.json" with { type: "json" };
import {
  generateNoiseKeyPair,
  IkInitiator,
  IkResponder,
  NoiseError,
  noiseKeyPairFrom,
  type NoiseTransport,
  obrPrologue,
} from "./noise.ts";

Deno.test("cacophony vector Noise_IK_25519_ChaChaPoly_SHA256: every message and the handshake hash", () => {
  const initiator = new IkInitiator({
    prologue: fromHex(vector.init_prologue),
    staticKey: noiseKeyPairFrom(fromHex(vector.init_static)),
    ephemeralKey: noiseKeyPairFrom(fromHex(vector.init_ephemeral)),
    remoteStatic: fromHex(vector.init_remote_static),
  });
  const responder = new IkResponder({
    prologue: fromHex(vector.resp_prologue),
    staticKey: noiseKeyPairFrom(fromHex(vector.resp_static)),
    ephemeralKey: noiseKeyPairFrom(fromHex(vector.resp_ephemeral)),
  });
  const [m1, m2, ...transportMessages] = vector.messages;
  const first = initiator.writeMessage1(fromHex(m1!.payload));
  assertEquals(toHex(first), m1!.ciphertext);
  const read1 = responder.readMessage1(first);
  assertEquals(toHex(read1.payload), m1!.payload);
  assertEquals(toHex(read1.remoteStatic), toHex(noiseKeyPairFrom(fromHex(vector.init_static)).publicKey));

  const written2 = responder.writeMessage2(fromHex(m2!.payload));
  assertEquals(toHex(written2.message), m2!.ciphertext);
  const read2 = initiator.readMessage2(written2.message);
  assertEquals(toHex(read2.payload), m2!.payload);
  assertEquals(toHex(read2.transport.handshakeHash), vector.handshake_hash);
  assertEquals(toHex(written2.transport.handshakeHash), vector.handshake_hash);

  // After the handshake the initiator sends the even messages, the responder the odd ones (§ vectors format).
  transportMessages.forEach((message, index) => {
    const [sender, receiver] = index % 2 === 0
      ? [read2.transport, written2.transport]
      : [written2.transport, read2.transport];
    const sealed = sender.send.encryptWithAd(new Uint8Array(0), fromHex(message.payload));
    assertEquals(toHex(sealed), message.ciphertext);
    assertEquals(toHex(receiver.receive.decryptWithAd(new Uint8Array(0), sealed)), message.payload);
  });
});

function handshake(prologues: { admin: Uint8Array; agent: Uint8Array }) {
  const admin = generateNoiseKeyPair();
  const agent = generateNoiseKeyPair();
  const initiator = new IkInitiator({
    prologue: prologues.admin,
    staticKey: admin,
    remoteStatic: agent.publicKey,
  });
  const responder = new IkResponder({ prologue: prologues.agent, staticKey: agent });
  const read1 = responder.readMessage1(initiator.writeMessage1(utf8("hello")));
  const written2 = responder.writeMessage2(new Uint8Array(0));
  const read2 = initiator.readMessage2(written2.message);
  return {
    admin,
    agent,
    adminSide: read2.transport,
    agentSide: written2.transport,
    adminStatic: read1.remoteStatic,
  };
}

function channel(): { adminSide: NoiseTransport; agentSide: NoiseTransport } {
  const prologue = obrPrologue({ sessionId: "s1", userId: "u1", rpIds: ["login.microsoft.com"] });
  return handshake({ admin: prologue, agent: prologue });
}

const noAd = new Uint8Array(0);

Deno.test("the agent learns the admin's static key from handshake message 1", () => {
  const prologue = obrPrologue({ sessionId: "s1", userId: "u1", rpIds: ["a.example"] });
  const result = handshake({ admin: prologue, agent: prologue });
  deepStrictEqual(result.adminStatic, result.admin.publicKey);
});

Deno.test("a flipped byte in a transport frame fails with a tampering error", () => {
  const { adminSide, agentSide } = channel();
  const sealed = adminSide.send.encryptWithAd(noAd, utf8("request"));
  sealed[3]! ^= 0x01;
  const error = throws(() => agentSide.receive.decryptWithAd(noAd, sealed), NoiseError);
  assertEquals(error.code, "relay-tampering");
  assert(/does not authenticate/.test(error.message));
});

Deno.test("a dropped frame makes the next one fail (its nonce is not the expected one)", () => {
  const { adminSide, agentSide } = channel();
  adminSide.send.encryptWithAd(noAd, utf8("first, dropped by the relay"));
  const second = adminSide.send.encryptWithAd(noAd, utf8("second"));
  throws(() => agentSide.receive.decryptWithAd(noAd, second), NoiseError);
});

Deno.test("a replayed frame fails", () => {
  const { adminSide, agentSide } = channel();
  const first = adminSide.send.encryptWithAd(noAd, utf8("first"));
  assertEquals(new TextDecoder().decode(agentSide.receive.decryptWithAd(noAd, first)), "first");
  throws(() => agentSide.receive.decryptWithAd(noAd, first), NoiseError);
});

Deno.test("reordered frames fail", () => {
  const { adminSide, agentSide } = channel();
  const first = adminSide.send.encryptWithAd(noAd, utf8("first"));
  const second = adminSide.send.encryptWithAd(noAd, utf8("second"));
  throws(() => agentSide.receive.decryptWithAd(noAd, second), NoiseError);
  // The counter did not move on the failure: the right frame still opens.
  assertEquals(new TextDecoder().decode(agentSide.receive.decryptWithAd(noAd, first)), "first");
});

Deno.test("a frame reflected back to its sender fails (each direction has its own key)", () => {
  const { adminSide } = channel();
  const sealed = adminSide.send.encryptWithAd(noAd, utf8("request"));
  throws(() => adminSide.receive.decryptWithAd(noAd, sealed), NoiseError);
});

Deno.test("a different prologue (another session, user or rp list) fails the handshake", () => {
  const admin = obrPrologue({ sessionId: "s1", userId: "u1", rpIds: ["login.microsoft.com"] });
  const agent = obrPrologue({ sessionId: "s1", userId: "u2", rpIds: ["login.microsoft.com"] });
  throws(() => handshake({ admin, agent }), NoiseError);
});

Deno.test("a handshake to the wrong agent key fails at the agent", () => {
  const prologue = obrPrologue({ sessionId: "s1", userId: "u1", rpIds: [] });
  const initiator = new IkInitiator({
    prologue,
    staticKey: generateNoiseKeyPair(),
    remoteStatic: generateNoiseKeyPair().publicKey,
  });
  const impostor = new IkResponder({ prologue, staticKey: generateNoiseKeyPair() });
  throws(() => impostor.readMessage1(initiator.writeMessage1(new Uint8Array(0))), NoiseError);
});

Deno.test("a flipped byte in handshake message 2 fails at the admin", () => {
  const prologue = obrPrologue({ sessionId: "s1", userId: "u1", rpIds: [] });
  const agent = generateNoiseKeyPair();
  const initiator = new IkInitiator({
    prologue,
    staticKey: generateNoiseKeyPair(),
    remoteStatic: agent.publicKey,
  });
  const responder = new IkResponder({ prologue, staticKey: agent });
  responder.readMessage1(initiator.writeMessage1(new Uint8Array(0)));
  const { message } = responder.writeMessage2(new Uint8Array(0));
  message[message.length - 1]! ^= 0x80;
  throws(() => initiator.readMessage2(message), NoiseError);
});
