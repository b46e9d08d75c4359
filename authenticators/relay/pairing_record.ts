/**
 * The key agent's pairing record: which relay, which user, and the agent's static X25519 key pair,
 * kept in a file only its owner can read (mode 0600, written atomically), like an SSH private key.
 * `provisioning key agent pair` will write it and `provisioning key agent` read it.
 *
 * @module
 */
import { z } from "zod";
import { fromBase64Any, toBase64Url } from "../../core/bytes.ts";
import { writeFileAtomically } from "../../core/atomic_file.ts";
import { RelayError } from "./errors.ts";
import { type NoiseKeyPair, noiseKeyPairFrom } from "./noise.ts";

const key32 = z.string().regex(/^[A-Za-z0-9_-]{43}$/, "is not a 32-byte key in base64url");

/** The file's shape, version 1. */
export const pairingRecordSchema = z.object({
  format: z.literal("provisioning-obr-pairing"),
  version: z.literal(1),
  relayUrl: z.string().regex(/^wss?:\/\//),
  user: z.string().min(1),
  publicKey: key32,
  privateKey: key32,
  pairedAt: z.iso.datetime(),
});

/** A pairing as the agent keeps it. */
export interface PairingRecord {
  readonly relayUrl: string;
  readonly user: string;
  readonly staticKey: NoiseKeyPair;
  readonly pairedAt: Date;
}

/** Writes the record (replacing an older pairing: re-pairing is explicit, by calling this). */
export async function savePairingRecord(path: string, record: PairingRecord): Promise<void> {
  const file: z.infer<typeof pairingRecordSchema> = {
    format: "provisioning-obr-pairing",
    version: 1,
    relayUrl: record.relayUrl,
    user: record.user,
    publicKey: toBase64Url(record.staticKey.publicKey),
    privateKey: toBase64Url(record.staticKey.privateKey),
    pairedAt: record.pairedAt.toISOString(),
  };
  await writeFileAtomically(path, JSON.stringify(file, null, 2) + "\n");
}

/** Reads a record; a missing file is `key-not-paired`, a damaged one says which field. */
export async function loadPairingRecord(path: string): Promise<PairingRecord> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    if (cause instanceof Deno.errors.NotFound) {
      throw new RelayError("key-not-paired", `Cannot start the key agent: no pairing record at "${path}"`, {
        cause,
      });
    }
    throw cause;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new RelayError(
      "pairing-record-invalid",
      `Cannot read the pairing record "${path}": it is not JSON`,
      {
        cause,
      },
    );
  }
  const parsed = pairingRecordSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RelayError(
      "pairing-record-invalid",
      `Cannot read the pairing record "${path}": "${issue.path.join(".")}" ${issue.message}`,
    );
  }
  const staticKey = noiseKeyPairFrom(fromBase64Any(parsed.data.privateKey));
  if (toBase64Url(staticKey.publicKey) !== parsed.data.publicKey) {
    throw new RelayError(
      "pairing-record-invalid",
      `Cannot read the pairing record "${path}": its public key does not match its private key`,
    );
  }
  return {
    relayUrl: parsed.data.relayUrl,
    user: parsed.data.user,
    staticKey,
    pairedAt: new Date(parsed.data.pairedAt),
  };
}
