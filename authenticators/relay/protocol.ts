/**
 * The relay's wire protocol: JSON text messages on two WebSocket routes, `/agent` (key agents)
 * and `/admin` (relay authenticators), plus `POST /pair`. Every message is parsed with zod at the
 * edge, on both sides. `frame.data` is an opaque sealed Noise message (base64url): the relay
 * routes it and never reads it.
 *
 * ```
 * agent  ──/agent──►  relay  ◄──/admin──  admin (relay authenticator)
 *   ◄ challenge {relayKey, nonce}            ► auth {token}         ◄ ready {admin}
 *   ► hello {user, publicKey, proof}         ► open {user, rpIds}   ◄ opened {session, agentKey}
 *   ◄ welcome / error                        ► frame {session,data} ◄ frame {session,data}
 *   ◄ open {session, admin, user, rpIds}     ► close {session}      ◄ closed {session, code, message}
 *   ◄► frame {session, data}, close {session}
 * ```
 *
 * @module
 */
import { z } from "zod";
import { concatBytes, fromBase64Any, toBase64Url, utf8 } from "../../core/bytes.ts";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { maxNoiseMessageLength } from "./noise.ts";

/** Largest text message either side accepts (a sealed frame of 65535 bytes in base64url, plus JSON). */
export const maxWireMessageLength = 4 * Math.ceil(maxNoiseMessageLength / 3) + 1024;

const base64url = z.string().regex(/^[A-Za-z0-9_-]*$/, "is not base64url").max(maxWireMessageLength);
const key32 = base64url.refine((text) => fromBase64Any(text).length === 32, "is not a 32-byte key");
const name = z.string().min(1).max(320);
const sessionId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/);
const rpIds = z.array(z.string().min(1).max(253)).max(32);
const errorFields = { code: z.string().max(64), message: z.string().max(1000) };

/** Messages a key agent sends the relay. */
export const agentToRelay = z.discriminatedUnion("type", [
  z.object({ type: z.literal("hello"), user: name, publicKey: key32, proof: base64url }),
  z.object({ type: z.literal("frame"), session: sessionId, data: base64url }),
  z.object({ type: z.literal("close"), session: sessionId, ...errorFields }),
]);
/** A message from a key agent. */
export type AgentToRelay = z.infer<typeof agentToRelay>;

/** Messages the relay sends a key agent. */
export const relayToAgent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("challenge"), relayKey: key32, nonce: base64url }),
  z.object({ type: z.literal("welcome"), user: name }),
  z.object({ type: z.literal("open"), session: sessionId, admin: name, user: name, rpIds }),
  z.object({ type: z.literal("frame"), session: sessionId, data: base64url }),
  z.object({ type: z.literal("closed"), session: sessionId, ...errorFields }),
  z.object({ type: z.literal("error"), ...errorFields }),
]);
/** A message to a key agent. */
export type RelayToAgent = z.infer<typeof relayToAgent>;

/** Messages a relay authenticator (the admin's side) sends the relay. */
export const adminToRelay = z.discriminatedUnion("type", [
  z.object({ type: z.literal("auth"), token: z.string().min(1).max(4096) }),
  z.object({ type: z.literal("open"), user: name, rpIds }),
  z.object({ type: z.literal("frame"), session: sessionId, data: base64url }),
  z.object({ type: z.literal("close"), session: sessionId }),
]);
/** A message from an admin. */
export type AdminToRelay = z.infer<typeof adminToRelay>;

/** Messages the relay sends an admin. */
export const relayToAdmin = z.discriminatedUnion("type", [
  z.object({ type: z.literal("ready"), admin: name }),
  z.object({ type: z.literal("opened"), session: sessionId, user: name, agentKey: key32 }),
  z.object({ type: z.literal("frame"), session: sessionId, data: base64url }),
  z.object({ type: z.literal("closed"), session: sessionId, ...errorFields }),
  z.object({ type: z.literal("error"), ...errorFields }),
]);
/** A message to an admin. */
export type RelayToAdmin = z.infer<typeof relayToAdmin>;

/** `POST /pair`: a key agent registers its static public key against a user with a one-time code. */
export const pairRequest = z.object({ user: name, code: z.string().min(6).max(64), publicKey: key32 });
/** The body of `POST /pair`. */
export type PairRequest = z.infer<typeof pairRequest>;

/**
 * Parses one text message with `schema`; undefined when it is not valid (the caller closes the
 * connection with a reason).
 */
export function parseWire<T>(schema: z.ZodType<T>, data: unknown): T | undefined {
  if (typeof data !== "string" || data.length > maxWireMessageLength) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return undefined;
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? parsed.data : undefined;
}

/** Encodes bytes for a `frame` or a key field. */
export const encodeWireBytes = toBase64Url;
/** Decodes a `frame` or key field (already checked to be base64url by the schema). */
export const decodeWireBytes = fromBase64Any;

/**
 * The agent's proof of its paired static key: an HMAC keyed with the X25519 secret between the
 * agent's static key and the relay's per-connection ephemeral key, over the relay's nonce, the user
 * and the agent's public key. Only the holder of the static private key (or of the relay's fresh
 * ephemeral) can compute it, and it is useless on any other connection (the nonce and the
 * ephemeral are new each time). The shape of Noise's `es` token, without a full handshake.
 */
export function agentProof(input: {
  sharedSecret: Uint8Array;
  nonce: Uint8Array;
  user: string;
  agentPublicKey: Uint8Array;
}): Uint8Array {
  return hmac(
    sha256,
    input.sharedSecret,
    concatBytes(
      utf8("provisioning-obr/agent-auth/1\0"),
      input.nonce,
      utf8(`\0${input.user}\0`),
      input.agentPublicKey,
    ),
  );
}
