/**
 * Reading vaults written in format version 1 (provisioning before the record log): one JSON
 * envelope holding the whole state, AES-256-GCM under a PBKDF2 key, the header bound as additional
 * data. {@link Vault.open} reads them once and rewrites them in version 2; nothing writes this
 * format any more.
 *
 * ```json
 * { "format": "provisioning-vault", "version": 1,
 *   "kdf": { "name": "PBKDF2-SHA256", "iterations": 600000, "salt": "<16 bytes>" },
 *   "cipher": { "name": "A256GCM", "iv": "<12 bytes>" },
 *   "ciphertext": "<AES-256-GCM of the state's JSON, tag appended>" }
 * ```
 *
 * @module
 */
import { z } from "zod";
import { fromBase64Any, utf8 } from "../../core/bytes.ts";
import { maxKdfIterations, vaultFormat } from "./vault_format.ts";

const base64url = (bytes: { exactly?: number; atLeast?: number }) =>
  z.string().regex(/^[A-Za-z0-9_-]+$/, "must be base64url").refine((text) => {
    const size = fromBase64Any(text).length;
    return (bytes.exactly === undefined || size === bytes.exactly) &&
      (bytes.atLeast === undefined || size >= bytes.atLeast);
  }, "has the wrong length");

const envelopeSchema = z.object({
  format: z.literal(vaultFormat),
  version: z.literal(1),
  kdf: z.object({
    name: z.literal("PBKDF2-SHA256"),
    iterations: z.number().int().min(1).max(maxKdfIterations),
    salt: base64url({ exactly: 16 }),
  }),
  cipher: z.object({ name: z.literal("A256GCM"), iv: base64url({ exactly: 12 }) }),
  ciphertext: base64url({ atLeast: 16 }),
});
type Envelope = z.infer<typeof envelopeSchema>;

/** A version 1 envelope, or why the text is not one (`field` names the first invalid field). */
export function parseLegacyEnvelope(json: unknown): Envelope | { field: string; message: string } {
  const parsed = envelopeSchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  return { field: issue.path.map(String).join(".") || "(root)", message: issue.message };
}

/** The PBKDF2 iteration count of a version 1 envelope. */
export function legacyIterations(envelope: Envelope): number {
  return envelope.kdf.iterations;
}

/** The decrypted state's JSON text, or `undefined` for a wrong passphrase or an altered file. */
export async function decryptLegacyEnvelope(
  envelope: Envelope,
  passphrase: string,
): Promise<string | undefined> {
  const material = await crypto.subtle.importKey("raw", utf8(passphrase.normalize("NFC")), "PBKDF2", false, [
    "deriveKey",
  ]);
  const key = await crypto.subtle.deriveKey(
    {
      name: "PBKDF2",
      hash: "SHA-256",
      salt: new Uint8Array(fromBase64Any(envelope.kdf.salt)),
      iterations: envelope.kdf.iterations,
    },
    material,
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  // The header as version 1 bound it: fixed key order, the values as stored.
  const additionalData = utf8(JSON.stringify({
    format: envelope.format,
    version: envelope.version,
    kdf: { name: envelope.kdf.name, iterations: envelope.kdf.iterations, salt: envelope.kdf.salt },
    cipher: { name: envelope.cipher.name, iv: envelope.cipher.iv },
  }));
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: new Uint8Array(fromBase64Any(envelope.cipher.iv)),
        additionalData,
        tagLength: 128,
      },
      key,
      new Uint8Array(fromBase64Any(envelope.ciphertext)),
    );
    return new TextDecoder("utf-8", { fatal: true }).decode(plain);
  } catch {
    return undefined;
  }
}
