/**
 * How commands put their output files (results.csv, failures.csv) in place: written beside their
 * final names (`results.csv.partial`) and renamed at the end, so that the input stays intact while
 * it is read (`--csv failures.csv`) and a crash never leaves half a file under the final name; an
 * earlier run's file at a final name is first kept under a name with its time
 * (`results.2026-11-23T12-40-00.csv`), unless it is the input itself.
 *
 * With `inPlace` (provision), every file but the input is written under its final name from the
 * start, so an admin sees rows appear as users finish. Such a file never lies after a crash: each
 * row is written only after the journal holds the user's outcome, a row cut short is the only
 * damage (a reader sees an unterminated last line), and the next attempt rewrites the file from the
 * journal. The input is still staged: it is being read.
 *
 * @example
 * ```ts
 * import { stageOutputFiles } from "./output_files.ts";
 * const dir = await Deno.makeTempDir();
 * const staged = await stageOutputFiles([`${dir}/results.csv`], { keepEarlier: true });
 * await Deno.writeTextFile(staged.path(`${dir}/results.csv`), "user\n");
 * await staged.commit();
 * console.assert(await Deno.readTextFile(`${dir}/results.csv`) === "user\n");
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @module
 */

/** Output files being written; see the module documentation. */
export interface StagedOutputFiles {
  /** Where to write the file whose final name is `final`. */
  path(final: string): string;
  /** Puts every file in place (call after closing them). */
  commit(): Promise<void>;
}

/** Options of {@link stageOutputFiles}. */
export interface StageOptions {
  /** The command's input file, never kept aside (it is replaced at the end, if at all). */
  readonly input?: string | undefined;
  /** Keep an earlier run's files aside first (false when resuming a run that owns them). */
  readonly keepEarlier: boolean;
  /** Write every file but the input under its final name from the start. @default false */
  readonly inPlace?: boolean;
}

/** Prepares `finals` for writing; see the module documentation. */
export async function stageOutputFiles(
  finals: readonly string[],
  options: StageOptions,
): Promise<StagedOutputFiles> {
  const input = options.input === undefined
    ? undefined
    : await Deno.realPath(options.input).catch(() => undefined);
  const staged = new Set<string>();
  for (const path of finals) {
    const isInput = input !== undefined && await Deno.realPath(path).catch(() => undefined) === input;
    if (options.keepEarlier && !isInput) await keepEarlierOutput(path);
    if (!options.inPlace || isInput) staged.add(path);
  }
  return {
    path: (final) => staged.has(final) ? `${final}.partial` : final,
    async commit() {
      for (const final of staged) await Deno.rename(`${final}.partial`, final);
    },
  };
}

/** An earlier run's file at `path`, kept under a name with its time. */
async function keepEarlierOutput(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    return;
  }
  const stamp = (info.mtime ?? new Date()).toISOString().slice(0, 19).replaceAll(":", "-");
  const dot = path.lastIndexOf(".");
  const kept = dot > path.lastIndexOf("/")
    ? `${path.slice(0, dot)}.${stamp}${path.slice(dot)}`
    : `${path}.${stamp}`;
  await Deno.rename(path, kept);
}
