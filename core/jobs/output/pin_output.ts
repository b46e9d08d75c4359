/**
 * PIN delivery (`--pin-output FILE`): the PINs a run set on security keys go to one file, never
 * to the terminal or a log, for the helpdesk's PIN-mailer process. The file is created 0600 and
 * holds one record per line (JSON Lines), appended and synced one at a time so that a crash
 * never loses the PIN of a key already set.
 *
 * With a recipient (`--pin-recipient KEY`, a public key as JWK or PEM), each line is instead a
 * compact JWE (RFC 7516) of the record, encrypted to that key: RSA-OAEP-256 for RSA keys,
 * ECDH-ES+A256KW for EC and X25519 keys, content A256GCM. Only the holder of the private key reads
 * the PINs; the file then never holds a PIN in clear. A file is either clear or encrypted
 * throughout: appending the other kind is refused.
 *
 * @example
 * ```ts ignore
 * const recipient = await loadPinRecipient("helpdesk.pub.pem");
 * await using out = await PinOutputFile.open("pins.jsonl", { recipient });
 * await out.write({ user: "alice@contoso.com", pin: pin.reveal(), pinMustChange: true });
 * ```
 *
 * @module
 */
import { CompactEncrypt, type CryptoKey, importJWK, importSPKI, type JWK } from "jose";
import { z } from "zod";
import { ProvisioningError } from "../../errors.ts";

/** One PIN for the mailer. */
export interface PinRecord {
  /** The user the key is for (UPN). */
  readonly user: string;
  /** The PIN. */
  readonly pin: string;
  /** Where the key was (`/dev/hidraw3`), for the operator's sorting. */
  readonly device?: string;
  /** The key's AAGUID. */
  readonly aaguid?: string;
  /** The key's serial number, when known. */
  readonly serial?: string;
  /** The key will ask the user to change the PIN at first use. */
  readonly pinMustChange: boolean;
  /**
   * `prepared`: written as soon as the key got its PIN, before the passkey exists, so that a crash
   * never loses the PIN of a key; `completed`: the passkey is registered and the key finished. The
   * last record of a user is the one that counts. @default "completed"
   */
  readonly stage?: "prepared" | "completed";
}

/** A public key PINs are encrypted to. */
export interface PinRecipient {
  /** The JWE key-management algorithm for this key. */
  readonly alg: "RSA-OAEP-256" | "ECDH-ES+A256KW";
  readonly key: CryptoKey | Uint8Array;
  /** The key id, when the JWK had one; copied into each JWE header. */
  readonly kid?: string;
  /** Where it came from, for messages. */
  readonly source: string;
}

const publicJwkSchema = z.object({
  kty: z.enum(["RSA", "EC", "OKP"]),
  crv: z.string().optional(),
  kid: z.string().optional(),
  d: z.unknown().optional(),
}).loose();

function recipientError(source: string, detail: string, cause?: unknown): ProvisioningError {
  return new ProvisioningError(
    "pin-recipient-invalid",
    `Cannot use PIN recipient key "${source}": ${detail}`,
    {
      ...(cause === undefined ? {} : { cause }),
      hint: "Give the helpdesk's public key as a JWK (RSA, EC P-256/P-384/P-521 or X25519) or a PEM " +
        '"PUBLIC KEY" file',
    },
  );
}

/**
 * Reads a recipient public key from `text` (a JWK, or PEM SPKI); `source` names it in errors.
 *
 * @throws {ProvisioningError} `pin-recipient-invalid` for a private key, an unknown key type, or
 * text that is neither.
 */
export async function parsePinRecipient(text: string, source: string): Promise<PinRecipient> {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch (error) {
      throw recipientError(source, "it is not valid JSON", error);
    }
    const parsed = publicJwkSchema.safeParse(json);
    if (!parsed.success) throw recipientError(source, "it is not an RSA, EC or OKP JWK");
    if (parsed.data.d !== undefined) {
      throw recipientError(source, "it is a private key; give the public key only");
    }
    const alg = parsed.data.kty === "RSA" ? "RSA-OAEP-256" : "ECDH-ES+A256KW";
    if (parsed.data.kty === "OKP" && parsed.data.crv !== "X25519") {
      throw recipientError(source, `curve "${parsed.data.crv ?? ""}" cannot encrypt; use X25519`);
    }
    try {
      const key = await importJWK(json as JWK, alg);
      return { alg, key, ...(parsed.data.kid ? { kid: parsed.data.kid } : {}), source };
    } catch (error) {
      throw recipientError(source, error instanceof Error ? error.message : String(error), error);
    }
  }
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(trimmed)) {
    throw recipientError(source, "it is a private key; give the public key only");
  }
  if (!trimmed.startsWith("-----BEGIN PUBLIC KEY-----")) {
    throw recipientError(source, "it is neither a JWK nor a PEM public key");
  }
  for (const alg of ["RSA-OAEP-256", "ECDH-ES+A256KW"] as const) {
    try {
      return { alg, key: await importSPKI(trimmed, alg), source };
    } catch {
      // Not this key type; try the next.
    }
  }
  throw recipientError(source, "its key type cannot encrypt (RSA, EC or X25519 expected)");
}

/** Reads a recipient public key file; see {@link parsePinRecipient}. */
export async function loadPinRecipient(path: string): Promise<PinRecipient> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw recipientError(path, error instanceof Error ? error.message : String(error), error);
  }
  return await parsePinRecipient(text, path);
}

const encoder = new TextEncoder();
const jweLine = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The PIN file of a run. Records are written in call order. */
export class PinOutputFile implements AsyncDisposable {
  readonly #file: Deno.FsFile;
  readonly #recipient: PinRecipient | undefined;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;
  /** The file's path. */
  readonly path: string;

  private constructor(file: Deno.FsFile, path: string, recipient: PinRecipient | undefined) {
    this.#file = file;
    this.path = path;
    this.#recipient = recipient;
  }

  /**
   * Opens `path` for appending (created 0600; an existing file is made 0600). With `recipient`,
   * records are encrypted to it.
   *
   * @throws {ProvisioningError} `pin-output-mixed` when the file holds the other kind of records.
   */
  static async open(path: string, options: { recipient?: PinRecipient } = {}): Promise<PinOutputFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
    } catch (error) {
      throw new ProvisioningError(
        "pin-output-failed",
        `Cannot open PIN file "${path}": ${error instanceof Error ? error.message : String(error)}`,
        { cause: error },
      );
    }
    try {
      if (Deno.build.os !== "windows") await Deno.chmod(path, 0o600);
      const size = (await file.stat()).size;
      if (size > 0) {
        const head = new Uint8Array(Math.min(size, 4096));
        await file.seek(0, Deno.SeekMode.Start);
        const n = (await file.read(head)) ?? 0;
        const first = new TextDecoder().decode(head.subarray(0, n)).split("\n")[0] ?? "";
        const encrypted = jweLine.test(first.trim());
        if (encrypted !== (options.recipient !== undefined)) {
          throw new ProvisioningError(
            "pin-output-mixed",
            `Cannot append to PIN file "${path}": it holds ${
              encrypted ? "encrypted" : "clear"
            } PINs, and this run ` +
              `would write ${encrypted ? "clear" : "encrypted"} ones`,
            { hint: "Use another --pin-output file, or the same --pin-recipient as the run that started it" },
          );
        }
      }
      await file.seek(0, Deno.SeekMode.End);
    } catch (error) {
      file.close();
      throw error;
    }
    return new PinOutputFile(file, path, options.recipient);
  }

  /** Appends one record (encrypted when there is a recipient) and syncs it to disk. */
  write(record: PinRecord): Promise<void> {
    if (this.#closed) {
      return Promise.reject(
        new ProvisioningError("pin-output-closed", `Cannot write to PIN file "${this.path}": it is closed`),
      );
    }
    const run = async () => {
      const json = JSON.stringify({
        user: record.user,
        pin: record.pin,
        ...(record.device === undefined ? {} : { device: record.device }),
        ...(record.aaguid === undefined ? {} : { aaguid: record.aaguid }),
        ...(record.serial === undefined ? {} : { serial: record.serial }),
        pinMustChange: record.pinMustChange,
        stage: record.stage ?? "completed",
        writtenAt: new Date().toISOString(),
      });
      const recipient = this.#recipient;
      const line = recipient
        ? await new CompactEncrypt(encoder.encode(json))
          .setProtectedHeader({
            alg: recipient.alg,
            enc: "A256GCM",
            cty: "application/json",
            ...(recipient.kid ? { kid: recipient.kid } : {}),
          })
          .encrypt(recipient.key)
        : json;
      const bytes = encoder.encode(`${line}\n`);
      let offset = 0;
      while (offset < bytes.length) offset += await this.#file.write(bytes.subarray(offset));
      await this.#file.syncData();
    };
    const result = this.#queue.then(run);
    this.#queue = result.catch(() => {});
    return result.catch((error: unknown) => {
      throw new ProvisioningError(
        "pin-output-failed",
        `Cannot write the PIN of ${record.user} to "${this.path}": ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      );
    });
  }

  /** Waits for pending writes and closes the file. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#queue;
    this.#file.close();
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
