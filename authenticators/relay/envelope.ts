/**
 * What travels inside the sealed channel after the handshake. Admin to agent: one CTAP2 request
 * (command byte and CBOR), exactly what {@link CtapDevice.transceive} takes. Agent to admin: a
 * tag byte, then either the device's CTAP2 response (status byte and CBOR) or the agent's refusal.
 *
 * The handshake's first payload names what the admin says it is doing (shown to the user); it
 * travels encrypted to the agent, so the relay can neither read nor change it.
 *
 * @module
 */
import { z } from "zod";
import { concatBytes, utf8 } from "../../core/bytes.ts";

const answerTag = { ctap: 0x00, refused: 0x01 } as const;

/** The agent's answer to one request. */
export type AgentAnswer =
  | { readonly kind: "ctap"; readonly response: Uint8Array }
  | { readonly kind: "refused"; readonly code: string; readonly message: string };

const refusalSchema = z.object({ code: z.string().max(64), message: z.string().max(1000) });

/** Encodes an answer for sealing. */
export function encodeAnswer(answer: AgentAnswer): Uint8Array {
  if (answer.kind === "ctap") return concatBytes(Uint8Array.of(answerTag.ctap), answer.response);
  return concatBytes(
    Uint8Array.of(answerTag.refused),
    utf8(JSON.stringify({ code: answer.code, message: answer.message })),
  );
}

/** Decodes an opened answer; undefined when it is not one (the channel is then treated as broken). */
export function decodeAnswer(bytes: Uint8Array): AgentAnswer | undefined {
  if (bytes[0] === answerTag.ctap && bytes.length > 1) return { kind: "ctap", response: bytes.slice(1) };
  if (bytes[0] !== answerTag.refused) return undefined;
  try {
    const parsed = refusalSchema.safeParse(JSON.parse(new TextDecoder().decode(bytes.subarray(1))));
    return parsed.success ? { kind: "refused", ...parsed.data } : undefined;
  } catch {
    return undefined;
  }
}

/** The admin's statement in handshake message 1: what the user is shown as the purpose. */
export const channelHelloSchema = z.object({
  /** Who asks, as the admin's side names itself (e.g. `admin@contoso.com via panel`). */
  requester: z.string().max(320),
  /** What for, e.g. `register a passkey`. */
  purpose: z.string().max(200),
});
/** See {@link channelHelloSchema}. */
export type ChannelHello = z.infer<typeof channelHelloSchema>;
