/**
 * Writing a file so that a crash at any instant leaves either the old content or the new, never a
 * mix: a new 0600 file beside the target, fsync, then rename (or an exclusive link) over it, then
 * fsync of the folder. The vault, the token cache and (next) the run journal all need this.
 *
 * Errors are the file system's own; callers turn them into their domain's error.
 *
 * @example
 * ```ts
 * import { writeFileAtomically } from "./atomic_file.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomically(`${dir}/state.json`, "{}");
 * console.assert(await Deno.readTextFile(`${dir}/state.json`) === "{}");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { randomBytes, toHex, utf8 } from "./bytes.ts";

/** Options of {@link writeFileAtomically}. */
export interface AtomicWriteOptions {
  /**
   * Start of the temporary file's name, so that a caller can find and remove what a killed
   * writer left. @default `.<name of the target>.`
   */
  tempPrefix?: string;
  /**
   * Puts the finished temporary file at `path`. @default rename (replaces the target); pass an
   * exclusive link to refuse replacing a file that appeared meanwhile.
   */
  place?: (temp: string, path: string) => Promise<void>;
}

/** See the module documentation. The file is created with mode 0600. */
export async function writeFileAtomically(
  path: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const directory = dirname(path);
  const temp = join(directory, `${options.tempPrefix ?? `.${basename(path)}.`}${toHex(randomBytes(6))}.tmp`);
  let leftover = false;
  try {
    const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
    leftover = true;
    try {
      const bytes = typeof data === "string" ? utf8(data) : data;
      let written = 0;
      while (written < bytes.length) written += await file.write(bytes.subarray(written));
      await file.sync();
    } finally {
      file.close();
    }
    // createNew's mode is filtered by the umask; make sure nobody else can read it.
    if (Deno.build.os !== "windows") await Deno.chmod(temp, 0o600);
    if (options.place) {
      await options.place(temp, path);
    } else {
      await Deno.rename(temp, path);
      leftover = false;
    }
  } finally {
    if (leftover) await Deno.remove(temp).catch(() => undefined);
  }
  await syncDirectory(directory);
}

/** Makes a rename durable on POSIX; Windows cannot open a folder this way, and needs not. */
async function syncDirectory(directory: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  let handle: Deno.FsFile | undefined;
  try {
    handle = await Deno.open(directory, { read: true });
    await handle.sync();
  } catch {
    // Best effort: some file systems refuse fsync on a folder.
  } finally {
    handle?.close();
  }
}
