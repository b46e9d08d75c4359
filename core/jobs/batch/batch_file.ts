/**
 * A batch of prefetched challenges: the file a key station works through over hours without an
 * admin session (`provisioning batch fetch`, `batch write`, `batch register`).
 *
 * It is a run journal (core/jobs/journal.ts: JSON lines, fsync'd, one process at a time, a torn
 * last line cut off) whose header `meta` says which provider and tenant the challenges came from,
 * the passkeys' display name and the rp ids they may carry, and whose user records carry the
 * challenge (`fetched`), then the key's registration (`written`), then the provider's method id
 * (`created` → `registered` → `verified`), as a bulk run's journal does.
 *
 * What is in it is not secret — challenges, user handles, public keys, attestation certificates —
 * but it says who gets which key, so it is created 0600 like every output. PINs never go in it.
 *
 * @example
 * ```ts
 * import { batchPhase } from "./batch_file.ts";
 * console.assert(batchPhase({ k: "alice@contoso.com", s: "fetched", challenge: { options: {}, origin: "https://login.microsoft.com" } }) === "to-write");
 * console.assert(batchPhase({ k: "bob@contoso.com", s: "failed", code: "user-not-found" }) === "unresolved");
 * ```
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../../errors.ts";
import { parseCreationOptions } from "../../webauthn/json.ts";
import { effectiveRpId } from "../../webauthn/rp_id.ts";
import { type Journal, type JournalIdentity, openJournal, readJournal, type UserRecord } from "../journal.ts";

/** What a batch knows of where its challenges came from (the journal header's `meta`). */
export interface BatchInfo {
  /** The provider plugin's id, e.g. `entra`. */
  readonly provider: string;
  /** The provider's stable name of the directory (ProviderSession.tenant). */
  readonly tenant: string;
  /** The passkeys' display name, as checked by the provider. */
  readonly displayName: string;
  /** rp ids the challenges may carry: `batch write` refuses any other before a key is touched. */
  readonly allowedRpIds: readonly string[];
}

const metaSchema = z.object({
  kind: z.literal("batch"),
  provider: z.string().min(1),
  tenant: z.string(),
  displayName: z.string().min(1),
  rpIds: z.string(),
});

/** Where a user of a batch stands, from their latest record. */
export type BatchPhase =
  /** Never got a challenge (not found, refused …): `code` says why. */
  | "unresolved"
  /** Already holds a passkey with the batch's name (`batch fetch` without `--force`). */
  | "skipped"
  /** Has a challenge; no key written yet (or the last try failed). */
  | "to-write"
  /** A key holds the credential; the provider has not confirmed it. */
  | "to-register"
  /** Registered and listed by the provider. */
  | "done";

/** The phase of a user record of a batch; see {@link BatchPhase}. */
export function batchPhase(record: UserRecord): BatchPhase {
  if (record.s === "verified") return "done";
  if (record.s === "skipped") return "skipped";
  if (record.registration !== undefined && record.registration !== null) return "to-register";
  if (record.challenge !== undefined) return "to-write";
  return "unresolved";
}

/** True when the provider will refuse a response to the record's challenge within `marginMs`. */
export function challengeExpires(record: UserRecord, now: number, marginMs = 0): boolean {
  const expiresAt = record.challenge?.expiresAt;
  return expiresAt !== undefined && Date.parse(expiresAt) <= now + marginMs;
}

/** The rp id a user's stored challenge is for (what the key's passkey will be bound to). */
export function challengeRpId(record: UserRecord): string | undefined {
  const challenge = record.challenge;
  if (!challenge) return undefined;
  return effectiveRpId(parseCreationOptions(challenge.options).rp.id, challenge.origin);
}

/** An open batch: its journal (append transitions to it) and what it was fetched for. */
export interface OpenBatch extends AsyncDisposable {
  readonly journal: Journal;
  readonly info: BatchInfo;
}

/**
 * Opens the batch at `path` to add users to it (`batch fetch`), creating it for `info` when it
 * does not exist. An existing batch must be of the same provider, tenant and display name.
 *
 * @throws {ProvisioningError} `batch-mismatch` (exit code 2) for a batch of another tenant or name.
 */
export async function openBatchForFetch(path: string, info: BatchInfo): Promise<OpenBatch> {
  const identity = await batchIdentity(info);
  let existing: Awaited<ReturnType<typeof readJournal>> | undefined;
  // A file a crash left empty (before its header was written) is a new batch.
  const empty = await Deno.stat(path).then((info) => info.size === 0, () => false);
  try {
    if (!empty) existing = await readJournal(path);
  } catch (error) {
    if (!(error instanceof ProvisioningError && error.code === "journal-not-found")) throw error;
  }
  if (existing && existing.identity.fingerprint !== identity.fingerprint) {
    const theirs = infoOf(existing.meta, path);
    throw new ProvisioningError(
      "batch-mismatch",
      `Cannot add to batch ${path}: it holds challenges of ${theirs.provider} tenant ${theirs.tenant} for passkeys named "${theirs.displayName}", not of ${info.provider} tenant ${info.tenant} named "${info.displayName}"`,
      { hint: "Give another --batch file, or the same tenant and --display-name", exitCode: 2 },
    );
  }
  const journal = await openBatchJournal(path, identity, {
    kind: "batch",
    provider: info.provider,
    tenant: info.tenant,
    displayName: info.displayName,
    rpIds: info.allowedRpIds.join(" "),
  });
  return { journal, info, [Symbol.asyncDispose]: () => journal.close() };
}

/**
 * Opens an existing batch (`batch write`, `batch register`, `batch status`).
 *
 * @throws {ProvisioningError} `batch-not-found` (exit code 2), `batch-invalid` for a file that is
 * a journal but not a batch, `run-in-progress` when another process has it open.
 */
export async function openBatch(path: string): Promise<OpenBatch> {
  const { identity, meta } = await readBatchFile(path);
  const info = infoOf(meta, path);
  const journal = await openBatchJournal(path, identity);
  return { journal, info, [Symbol.asyncDispose]: () => journal.close() };
}

/** Reads a batch without opening it for writing: what it is for and every user's latest record. */
export async function readBatch(path: string): Promise<{ info: BatchInfo; users: UserRecord[] }> {
  const { meta, users } = await readBatchFile(path);
  return { info: infoOf(meta, path), users: [...users.values()] };
}

/** Opens the batch's journal; another process using it is named as a batch step, not a run. */
async function openBatchJournal(
  path: string,
  identity: JournalIdentity,
  meta?: Record<string, string>,
): Promise<Journal> {
  try {
    return await openJournal(path, { ...identity, ...(meta ? { meta } : {}) });
  } catch (error) {
    if (error instanceof ProvisioningError && error.code === "run-in-progress") {
      throw new ProvisioningError(
        "batch-in-use",
        `Cannot open batch ${path}: another provisioning process is working on it`,
        { hint: "Wait for that batch step to finish (or stop it), then run this one again", exitCode: 2 },
      );
    }
    throw error;
  }
}

async function readBatchFile(path: string): ReturnType<typeof readJournal> {
  try {
    return await readJournal(path);
  } catch (error) {
    if (error instanceof ProvisioningError && error.code === "journal-not-found") {
      throw new ProvisioningError("batch-not-found", `Cannot open batch ${path}: the file does not exist`, {
        hint: "Give the --batch file `provisioning batch fetch` wrote",
        exitCode: 2,
        cause: error,
      });
    }
    throw error;
  }
}

function infoOf(meta: Readonly<Record<string, string>>, path: string): BatchInfo {
  const parsed = metaSchema.safeParse(meta);
  if (!parsed.success) {
    throw new ProvisioningError(
      "batch-invalid",
      `Cannot use ${path} as a batch: it is a journal of another kind (a provision run's?)`,
      { hint: "Give the --batch file `provisioning batch fetch` wrote", exitCode: 2 },
    );
  }
  return {
    provider: parsed.data.provider,
    tenant: parsed.data.tenant,
    displayName: parsed.data.displayName,
    allowedRpIds: parsed.data.rpIds.split(" ").filter((id) => id !== ""),
  };
}

/** The journal identity of a batch: the same provider, tenant and name give the same batch. */
async function batchIdentity(info: BatchInfo): Promise<{ runId: string; fingerprint: string }> {
  const text = JSON.stringify(["batch", info.provider, info.tenant, info.displayName]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { runId: `batch-${hex.slice(0, 12)}`, fingerprint: `sha256:${hex}` };
}
