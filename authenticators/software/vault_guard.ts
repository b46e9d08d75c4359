/**
 * The rollback guard: how far a vault had got the last time this machine saw it, kept outside the
 * vault file (in the data folder, `.provisioning/vaults/` by default), so that a vault replaced by
 * an older copy is noticed at open. The chain inside the file catches any record dropped,
 * reordered or altered; only whole records cut off the end, or an older copy put back, look
 * like a valid vault, and that is what this mark catches.
 *
 * One small JSON file per vault, named by the vault's random id:
 * `{"vault":"<id>","path":"/abs/key.vault","generation":3,"records":120,"chain":"<32 bytes>"}`.
 * It holds no secret: the chain value is a hash of ciphertext.
 *
 * @module
 */
import { join, resolve } from "node:path";
import { z } from "zod";
import { writeFileAtomically } from "../../core/atomic_file.ts";

/** Where guard marks go unless told otherwise, relative to the working folder. */
export const defaultGuardDir = ".provisioning/vaults";

/** How far a vault had got: its generation, records in that generation, and the chain there. */
export interface GuardMark {
  readonly generation: number;
  readonly records: number;
  /** base64url of the chain value after the last record. */
  readonly chain: string;
}

const markSchema = z.object({
  vault: z.string(),
  path: z.string(),
  generation: z.number().int().min(1),
  records: z.number().int().min(0),
  chain: z.string(),
});

/** The guard file of the vault with id `vaultId` in `dir`. */
export function guardFile(dir: string, vaultId: string): string {
  return resolve(join(dir, `${vaultId}.json`));
}

/** The mark last written for this vault, or `undefined` when there is none (or it is unreadable). */
export async function readGuardMark(dir: string, vaultId: string): Promise<GuardMark | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(guardFile(dir, vaultId));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    const parsed = markSchema.safeParse(JSON.parse(text));
    if (!parsed.success || parsed.data.vault !== vaultId) return undefined;
    return parsed.data;
  } catch {
    // A mark torn by a crash (it is written atomically, so only by a broken disk): start afresh.
    return undefined;
  }
}

/** True when `a` is strictly behind `b`. */
export function isBehind(
  a: Pick<GuardMark, "generation" | "records">,
  b: Pick<GuardMark, "generation" | "records">,
): boolean {
  return a.generation < b.generation || (a.generation === b.generation && a.records < b.records);
}

/** Records `mark` for the vault (atomically; the folder is made 0700 if needed). */
export async function writeGuardMark(
  dir: string,
  vaultId: string,
  path: string,
  mark: GuardMark,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const text = JSON.stringify({ vault: vaultId, path: resolve(path), ...mark });
  await writeFileAtomically(guardFile(dir, vaultId), `${text}\n`);
}
