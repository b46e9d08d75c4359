/**
 * `provisioning revoke --run ID | --csv results.csv`: deletes the passkeys a run created, and only
 * those. With `--run`, the run's journal says which (users it skipped because they already held a
 * passkey keep theirs); with `--csv`, the rows of a results file whose status is `provisioned` or
 * `reconciled`. A passkey already gone counts as revoked. Each deletion is journaled in the run's
 * journal, so an interrupted revoke can simply be run again.
 *
 * Exit codes: 0 all revoked, 1 some could not be, 2 usage error.
 *
 * @module
 */
import { INTERRUPTED_EXIT_CODE } from "./terminal.ts";
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { parse } from "csv-parse/sync";
import { z } from "zod";
import { ProvisioningError, UsageError } from "../errors.ts";
import { openJournal, readJournal, type UserRecord } from "../jobs/journal.ts";
import { restoreCell } from "../jobs/output/formula.ts";
import { AdaptivePacer } from "../jobs/rate.ts";
import type { DirectoryUser, ProviderSession } from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { optionsFor, withPluginOptions } from "./plugin_options.ts";
import { defaultJournalDir } from "./provision.ts";
import { connectForCalls } from "./provider.ts";

/** One passkey to delete. */
interface Revocation {
  readonly key: string;
  readonly user: DirectoryUser;
  readonly methodId: string;
}

const resultRowSchema = z.object({
  user: z.string(),
  "object id": z.string().regex(/^[0-9a-fA-F-]{36}$/, "is not an object id"),
  status: z.string(),
  "method id": z.string(),
});

/** `revoke`: delete the passkeys of a run. */
export function revokeCommand(context: CliContext): CommandUnknownOpts {
  const command = withPluginOptions(
    new Command("revoke")
      .description("delete the passkeys a provision run created (by its run id, or from its results.csv)")
      .option("--run <id>", "the run id a provision run printed")
      .option("--csv <file>", "a results.csv: its provisioned and reconciled rows")
      .option("--journal-dir <dir>", "where run journals are kept", defaultJournalDir)
      .option("--dry-run", "list what would be deleted, delete nothing"),
    context,
    "provider",
    "entra",
  );
  return command.action(async (parsed) => {
    const flags = parsed as {
      run?: string;
      csv?: string;
      journalDir: string;
      dryRun?: true;
      provider?: string;
    };
    if ((flags.run === undefined) === (flags.csv === undefined)) {
      throw new UsageError("Cannot revoke: give either --run ID or --csv FILE");
    }
    if (flags.run !== undefined && !/^[0-9a-f]{12}$/.test(flags.run)) {
      throw new UsageError(`Cannot revoke: ${JSON.stringify(flags.run)} is not a run id (12 hex digits)`);
    }
    const journalPath = flags.run === undefined ? undefined : `${flags.journalDir}/${flags.run}.jsonl`;
    const fromRun = journalPath === undefined ? undefined : await fromJournal(journalPath);
    const targets = fromRun ? fromRun.known : await fromResults(flags.csv!);
    if (flags.dryRun) {
      if (fromRun && fromRun.uncertain.length > 0) {
        context.stdout.write(
          `${fromRun.uncertain.length} user${
            fromRun.uncertain.length === 1 ? "" : "s"
          } stopped mid-registration: ` +
            "their passkeys are looked up when the revoke runs\n",
        );
      }
      for (const t of targets) {
        context.stdout.write(`would delete ${t.methodId} of ${t.user.userPrincipalName}\n`);
      }
      for (const record of fromRun?.passes ?? []) {
        context.stdout.write(`would delete the sign-in pass ${record.passId} of ${record.upn}\n`);
      }
      context.stdout.write(`${targets.length} passkey${targets.length === 1 ? "" : "s"} would be deleted\n`);
      return;
    }
    const provider = context.registry.provider(flags.provider ?? "entra");
    // Deletions in flight finish after the first Ctrl+C, so that what is reported is what was done.
    const { session: connected, calls } = await connectForCalls(
      context,
      provider as never,
      optionsFor(context, "provider", parsed as Record<string, unknown>),
      {
        users: [...targets, ...(fromRun?.uncertain ?? [])].slice(0, 3).map((t) =>
          "user" in t ? t.user.userPrincipalName : t.upn!
        ),
      },
      new AdaptivePacer(),
    );
    await using session = connected;
    using _cancel = { [Symbol.dispose]: () => calls.abort() };
    if (fromRun) targets.push(...await findUncertain(session, fromRun.uncertain));
    const identity = journalPath === undefined ? undefined : (await readJournal(journalPath)).identity;
    await using journal = identity && journalPath ? await openJournal(journalPath, identity) : undefined;
    for (const record of fromRun?.passes ?? []) {
      if (!session.deleteSignInPass) break;
      await session.deleteSignInPass({ id: record.userId!, userPrincipalName: record.upn! }, record.passId!);
      await journal?.append({ k: record.k, s: record.s, passId: "" });
      context.stdout.write(`Deleted the sign-in pass an interrupted attempt left for ${record.upn}\n`);
    }
    const outcome = await revokeAll(context, session, targets, async (target) => {
      await journal?.append({ k: target.key, s: "revoked", methodId: target.methodId });
    });
    const { revoked, failed } = outcome;
    const left = targets.length - revoked;
    const plural = (n: number) => `${n} passkey${n === 1 ? "" : "s"}`;
    if (context.signal.aborted) {
      // Say what was done and what is left: a re-run deletes the rest (the journal keeps track).
      context.stdout.write(
        `Stopped by Ctrl+C: revoked ${revoked} of ${targets.length} passkeys; ${plural(left)} left` +
          `${failed > 0 ? ` (${failed} of them failed)` : ""}\n`,
      );
      throw new ProvisioningError("interrupted", `Revoke stopped by Ctrl+C with ${plural(left)} left`, {
        hint: "Run the same command again to delete the rest",
        exitCode: INTERRUPTED_EXIT_CODE,
      });
    }
    context.stdout.write(`Revoked ${revoked} of ${targets.length} passkeys\n`);
    if (failed > 0) {
      throw new ProvisioningError(
        "some-failed",
        `${plural(failed)} could not be deleted`,
        {
          hint: "Run the same command again to retry them",
        },
      );
    }
  });
}

/** What {@link revokeAll} did: deleted, failed, and (after Ctrl+C) not tried. */
interface RevokeOutcome {
  readonly revoked: number;
  readonly failed: number;
}

/**
 * Deletes each passkey, four at a time, until done or Ctrl+C (the deletions in flight finish);
 * failures are reported on stderr, and progress too when it takes a while.
 */
async function revokeAll(
  context: CliContext,
  session: ProviderSession,
  targets: readonly Revocation[],
  onRevoked: (target: Revocation) => Promise<void>,
): Promise<RevokeOutcome> {
  let failed = 0;
  let revoked = 0;
  let next = 0;
  const progress = revokeProgress(context, targets.length);
  const worker = async () => {
    while (next < targets.length && !context.signal.aborted) {
      const target = targets[next++]!;
      try {
        await session.deletePasskey(target.user, target.methodId);
        await onRevoked(target);
        revoked++;
      } catch (error) {
        if (!(error instanceof ProvisioningError)) throw error;
        failed++;
        progress.above(`error: ${error.message}${error.hint ? `. ${error.hint}` : ""} [${error.code}]\n`);
      }
      progress.update(revoked, failed);
    }
  };
  try {
    await Promise.all(Array.from({ length: 4 }, worker));
  } finally {
    progress.close();
  }
  return { revoked, failed };
}

/** Every this many ms at most, the progress of a revoke: a live line on a terminal, else a line. */
const REVOKE_PROGRESS_MS = 1000;
const REVOKE_LINE_MS = 10_000;

function revokeProgress(context: CliContext, total: number) {
  const tty = context.stderr.isTerminal === true;
  let last = Date.now();
  let shown = false;
  const clear = () => {
    if (shown) context.stderr.write("\r\x1b[2K");
    shown = false;
  };
  return {
    update(revoked: number, failed: number) {
      const now = Date.now();
      if (now - last < (tty ? REVOKE_PROGRESS_MS : REVOKE_LINE_MS)) return;
      last = now;
      const text = `Revoking: ${revoked} of ${total} deleted${failed > 0 ? `, ${failed} failed` : ""}`;
      if (tty) {
        context.stderr.write(`\r\x1b[2K${text}`);
        shown = true;
      } else context.stderr.write(`${text}\n`);
    },
    above(text: string) {
      clear();
      context.stderr.write(text);
    },
    close: clear,
  };
}

/** The passkeys the run created and did not revoke yet. */
async function fromJournal(
  path: string,
): Promise<{ known: Revocation[]; uncertain: UserRecord[]; passes: UserRecord[] }> {
  const { users } = await readJournal(path);
  const known: Revocation[] = [];
  const uncertain: UserRecord[] = [];
  // One-time sign-in passes an interrupted browser attempt left (deleted too).
  const passes = [...users.values()].filter((record) => record.passId && record.userId && record.upn);
  for (const record of users.values()) {
    if (record.s === "skipped" || record.s === "revoked" || !record.userId || !record.upn) continue;
    if (record.methodId && (record.s === "verified" || record.s === "registered" || record.existing)) {
      known.push({
        key: record.k,
        user: { id: record.userId, userPrincipalName: record.upn },
        methodId: record.methodId,
      });
    } else if (record.existing !== undefined) {
      // It got as far as a credential, and then stopped or failed: the provider may hold it.
      uncertain.push(record);
    }
  }
  return { known, uncertain, passes };
}

/**
 * The passkeys of users whose attempt stopped after a credential was made: a passkey the user did
 * not have before, with the run's name, made since the attempt (less clock skew).
 */
async function findUncertain(
  session: ProviderSession,
  records: readonly UserRecord[],
): Promise<Revocation[]> {
  const found: Revocation[] = [];
  for (const record of records) {
    const user = { id: record.userId!, userPrincipalName: record.upn! };
    const before = new Set(record.existing);
    const since = record.createdAt ? Date.parse(record.createdAt) - 5 * 60_000 : -Infinity;
    for (const method of await session.listPasskeys(user)) {
      if (before.has(method.id) || method.displayName !== record.displayName) continue;
      if (method.createdDateTime !== undefined && Date.parse(method.createdDateTime) < since) continue;
      found.push({ key: record.k, user, methodId: method.id });
    }
  }
  return found;
}

/** The provisioned and reconciled rows of a results file. */
async function fromResults(path: string): Promise<Revocation[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ProvisioningError("csv-unreadable", `Cannot read ${JSON.stringify(path)}: ${String(error)}`, {
      hint: "Give the results.csv a provision run wrote",
      exitCode: 2,
      cause: error,
    });
  }
  let rows: Record<string, string>[];
  try {
    rows = parse(text.replace(/^\uFEFF/, ""), { columns: true, skip_empty_lines: true });
  } catch (error) {
    throw new UsageError(`Cannot read ${JSON.stringify(path)}: it is not a CSV file (${String(error)})`);
  }
  const targets: Revocation[] = [];
  rows.forEach((raw, index) => {
    const cells = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, restoreCell(v)]));
    const row = resultRowSchema.safeParse(cells);
    if (!row.success) {
      throw new UsageError(
        `Cannot read row ${index + 2} of ${JSON.stringify(path)}: ${
          row.error.issues.map((i) => `${i.path.join(".")} ${i.message}`).join("; ")
        }`,
        { hint: "Give the results.csv a provision run wrote (user, object id, status, method id …)" },
      );
    }
    if (row.data.status !== "provisioned" && row.data.status !== "reconciled") return;
    targets.push({
      key: row.data.user.toLowerCase(),
      user: { id: row.data["object id"], userPrincipalName: row.data.user },
      methodId: row.data["method id"],
    });
  });
  return targets;
}
