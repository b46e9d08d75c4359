/**
 * One process at a time per user and tenant, on this machine: before a run lists a user's passkeys
 * (the skip check) it takes the user's lock, and holds it until the user is finished (verified,
 * skipped, failed or left for a resume). A second process that reaches the same user (a nightly
 * export started while yesterday's run still works through the same people, under another run id)
 * waits, says who holds the user, and then finds the passkey the first one made (and skips). The
 * journal's lock only keeps one process per run; this keeps one per user, whatever the run.
 *
 * A lock is a file `<folder>/<digest of tenant and object id>.lock` holding an OS file lock
 * (`flock` on Unix, `LockFileEx` on Windows, both dropped by the OS when the process dies, kill -9
 * included) and, for the waiting process to read, who holds it: `{"pid","runId","user","since"}`.
 * The holder removes the file before unlocking, so a folder of a million users does not keep a
 * million files; a process that locked a file just removed (it opened it before the removal) sees
 * that the path no longer names its file and tries again.
 *
 * Where this ends: processes sharing the lock folder (the journal folder, `.provisioning/runs` in
 * the working folder by default) on one machine. Agents on several machines share the panel's queue
 * (leases) instead; see docs/exactly-once.md.
 *
 * @example
 * ```ts
 * import { openUserLocks } from "./user_locks.ts";
 * const dir = await Deno.makeTempDir();
 * const locks = openUserLocks(`${dir}/locks`, { runId: "r1", tenant: "contoso" });
 * const held = await locks.acquire({ userId: "5f0c", user: "alice@contoso.com" });
 * console.assert(held !== undefined);
 * await held?.release();
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { z } from "zod";
import { ProvisioningError } from "../errors.ts";
import { sleep } from "../sleep.ts";
import { describeIoError, isNoSpace } from "./disk_errors.ts";

/** Who holds a user's lock, as written in its file. */
export interface LockHolder {
  readonly pid: number;
  readonly runId: string;
  /** The user as that run's source named them. */
  readonly user: string;
  /** ISO time the lock was taken. */
  readonly since: string;
}

const holderSchema = z.object({
  pid: z.number().int(),
  runId: z.string(),
  user: z.string(),
  since: z.string(),
});

/** A user's lock, held until released. */
export interface HeldUserLock {
  release(): Promise<void>;
}

/** The locks of one tenant's users; see the module documentation. */
export interface UserLocks {
  /**
   * Takes the lock of `userId`, waiting while another process holds it (`onWait` is told who, each
   * time the holder changes). Resolves `undefined` when `signal` aborts the wait.
   */
  acquire(
    who: { readonly userId: string; readonly user: string },
    options?: { readonly signal?: AbortSignal; readonly onWait?: (holder: LockHolder | undefined) => void },
  ): Promise<HeldUserLock | undefined>;
}

/** Options of {@link openUserLocks}. */
export interface UserLocksOptions {
  readonly runId: string;
  /** The provider and tenant, stably (a session's `tenant`): users of two tenants never share a lock. */
  readonly tenant: string;
  /** Between two looks at a held lock, ms. @default 250 */
  readonly pollMs?: number;
  /** @default () => new Date() */
  readonly now?: () => Date;
}

/** The locks in `folder` (created 0700 on first use); see the module documentation. */
export function openUserLocks(folder: string, options: UserLocksOptions): UserLocks {
  const pollMs = options.pollMs ?? 250;
  const now = options.now ?? (() => new Date());
  let made = false;
  return {
    async acquire(who, { signal, onWait } = {}) {
      if (!made) {
        await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
        made = true;
      }
      const path = `${folder}/${await lockName(options.tenant, who.userId)}.lock`;
      let lastHolder: string | undefined;
      while (true) {
        if (signal?.aborted) return undefined;
        const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 }).catch(
          (error) => {
            throw userLockError(who.user, path, error);
          },
        );
        let locked = false;
        try {
          locked = await file.tryLock(true);
          if (locked && await stillNamedBy(path, file)) {
            const holder: LockHolder = {
              pid: Deno.pid,
              runId: options.runId,
              user: who.user,
              since: now().toISOString(),
            };
            // Who holds it is for the messages of others: a full disk does not stop the lock.
            await file.truncate(0).then(() => file.write(new TextEncoder().encode(JSON.stringify(holder))))
              .catch(() => {});
            return held(path, file);
          }
          if (!locked) {
            const holder = await readHolder(file);
            const described = JSON.stringify(holder ?? null);
            if (described !== lastHolder) {
              lastHolder = described;
              onWait?.(holder);
            }
          }
        } catch (error) {
          file.close();
          throw userLockError(who.user, path, error);
        }
        // Held elsewhere, or this file was removed by its holder before we locked it.
        file.close();
        if (locked) continue;
        try {
          await sleep(pollMs, signal);
        } catch {
          return undefined;
        }
      }
    },
  };
}

/** The reason code of a lock that cannot be taken (its folder is full or not writable): the run stops. */
export const userLockFailedCode = "user-lock-failed";

function userLockError(user: string, path: string, error: unknown): ProvisioningError {
  if (error instanceof ProvisioningError) return error;
  return new ProvisioningError(
    userLockFailedCode,
    `Cannot lock ${user} for this run: ${path}: ${describeIoError(error)}`,
    {
      cause: error,
      hint: `${
        isNoSpace(error)
          ? "Free space on the disk that holds the journal folder"
          : "Check that the journal folder is writable"
      }, then run the same command again to resume`,
    },
  );
}

/** Describes a holder for a message: "process 4242 (run 0123456789ab) since 2026-12-06T05:30:00Z". */
export function describeHolder(holder: LockHolder | undefined): string {
  return holder === undefined
    ? "another process"
    : `process ${holder.pid} (run ${holder.runId}) since ${holder.since}`;
}

function held(path: string, file: Deno.FsFile): HeldUserLock {
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      try {
        // Removed while still locked: a waiter then creates a new file, never locks a stale one.
        if (Deno.build.os !== "windows") await Deno.remove(path).catch(() => {});
      } finally {
        file.close(); // closing drops the lock
      }
    },
  };
}

/** True when `path` still names the file `file` has open (its holder may have removed it). */
async function stillNamedBy(path: string, file: Deno.FsFile): Promise<boolean> {
  if (Deno.build.os === "windows") return true; // no removal there
  try {
    const [atPath, open] = await Promise.all([Deno.stat(path), file.stat()]);
    return atPath.ino === open.ino && atPath.dev === open.dev;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function readHolder(file: Deno.FsFile): Promise<LockHolder | undefined> {
  try {
    await file.seek(0, Deno.SeekMode.Start);
    const buffer = new Uint8Array(1024);
    const n = await file.read(buffer);
    if (n === null) return undefined;
    return holderSchema.parse(JSON.parse(new TextDecoder().decode(buffer.subarray(0, n))));
  } catch {
    return undefined; // being written, or not ours: "another process"
  }
}

/** The file name of a user's lock: no object id or tenant in clear, a fixed length. */
async function lockName(tenant: string, userId: string): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${tenant}\n${userId.toLowerCase()}`)),
  );
  return [...digest.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
