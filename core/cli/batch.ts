/**
 * `provisioning batch`: a key station's workflow in three steps, so that the station needs no
 * admin session while it writes keys for hours (core/jobs/batch/):
 *
 * 1. `batch fetch --batch keys.batch --csv users.csv --graph-version beta --challenge-timeout 2880`
 *    (the admin, signed in): a challenge per user that lasts as long as asked, in the batch file.
 * 2. `batch write --batch keys.batch --authenticator hid --new-pin random --pin-output pins.jsonl`
 *    (the operator, offline): one prepared key per user, the credential made for the stored
 *    challenge and checked with a test assertion.
 * 3. `batch register --batch keys.batch` (the admin again): every written key registered in one
 *    pass; results.csv and failures.csv.
 *
 * `batch status --batch keys.batch` says where each user stands and when challenges expire. Every
 * step can be stopped and run again: it picks up where it stopped.
 *
 * @module
 */
import { resolve } from "node:path";
import { checkDisplayName } from "./provision.ts";
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { ProvisioningError, UsageError } from "../errors.ts";
import {
  type BatchPhase,
  batchPhase,
  challengeExpires,
  challengeRpId,
  type OpenBatch,
  openBatch,
  openBatchForFetch,
  readBatch,
} from "../jobs/batch/batch_file.ts";
import { AdaptivePacer } from "../jobs/rate.ts";
import { type BatchUserEvent, fetchBatch } from "../jobs/batch/fetch.ts";
import { registerBatch } from "../jobs/batch/register.ts";
import { writeBatchKeys } from "../jobs/batch/write_keys.ts";
import type { UserRecord } from "../jobs/journal.ts";
import { openFailuresFile } from "../jobs/output/failures.ts";
import { openResultsFile } from "../jobs/output/results.ts";
import type { ProviderSession } from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { keyPolicyFrom, openPinOutputFrom, withKeyPolicyOptions } from "./key_policy.ts";
import { optionsFor, withPluginOptions } from "./plugin_options.ts";
import { stageOutputFiles } from "./output_files.ts";
import { connectForCalls, defaultDisplayName, pluginContext, withProvider } from "./provider.ts";
import {
  chooseUserSource,
  connectHintsOf,
  csvRows,
  estimateRows,
  prepareCsvSource,
  sourceRows,
  type UserSourceFlags,
} from "./user_sources.ts";

/** `batch`: the command group. */
export function batchCommand(context: CliContext): CommandUnknownOpts {
  return new Command("batch")
    .description(
      "provision a pile of security keys offline: fetch long-lived challenges, write the keys, register them in one go",
    )
    .addCommand(fetchCommand(context))
    .addCommand(writeCommand(context))
    .addCommand(registerCommand(context))
    .addCommand(statusCommand(context));
}

interface FetchFlags extends UserSourceFlags {
  batch: string;
  displayName: string;
  force?: true;
  concurrency: string;
  failures: string;
  renewWithin: string;
  provider?: string;
}

function fetchCommand(context: CliContext): CommandUnknownOpts {
  const command = new Command("fetch")
    .description(
      "admin, signed in: a challenge for each user, kept in the batch file (with --graph-version beta, " +
        "--challenge-timeout MINUTES sets how long they last)",
    )
    .requiredOption("--batch <file>", "the batch file (created, or added to)")
    .option("--csv <file>", "users from a CSV file")
    .option("--user <upn...>", 'users by sign-in name, mail or object id; "-" reads stdin')
    .option("--group <name-or-id>", "the members of a group, nested groups included")
    .option("--column <field=header...>", "which CSV column holds a field, e.g. upn=Email")
    .option("--display-name <name>", "the passkeys' name in the directory", defaultDisplayName)
    .option("--force", "also users who already have a passkey with that name")
    .option("--concurrency <n>", "users fetched at once", "4")
    .option("--failures <file>", "users that got no challenge, with the reason", "failures.csv")
    .option("--renew-within <minutes>", "renew unwritten challenges that expire sooner than this", "60");
  return withProvider(command, context).action(async (_parsed, self) => {
    const flags = self.optsWithGlobals() as unknown as FetchFlags & Record<string, unknown>;
    checkDisplayName("fetch challenges", flags.displayName);
    const source = await prepareCsvSource(chooseUserSource("fetch challenges", flags), context.stderr);
    const concurrency = wholeNumber(flags.concurrency, "--concurrency", 1, 64);
    const renewWithin = wholeNumber(flags.renewWithin, "--renew-within", 0, 43_200);
    const provider = context.registry.provider(flags.provider ?? "entra");
    await using session = await connect(context, flags, await connectHintsOf(source));
    const displayName = flags.displayName;
    const input = source.kind === "csv" ? source.path : undefined;
    const staged = await stageOutputFiles([flags.failures], { input, keepEarlier: true });
    await using batch = await openBatchForFetch(flags.batch, {
      provider: provider.manifest.id,
      tenant: session.tenant ?? "",
      displayName,
      allowedRpIds: session.allowedRpIds,
    });
    await using failures = await openFailuresFile(staged.path(flags.failures), { fresh: true });
    const expected = source.kind === "csv" ? await estimateRows(source.path) : undefined;
    context.stderr.write(`Fetching challenges into ${flags.batch}\n`);
    const counts = await fetchBatch({
      batch,
      source: sourceRows(source, session, expected),
      session,
      ...(flags.force ? { force: true } : {}),
      failures,
      concurrency,
      renewWithinMs: renewWithin * 60_000,
      onUser: userLine(context),
      stop: context.signal,
    });
    await failures.close();
    await staged.commit();
    if (counts.pinsIgnored) {
      context.stderr.write(
        "note: the CSV's pin column is not kept (a batch never holds PINs): give the same file to " +
          `provisioning batch write --batch ${flags.batch} --pins ${input} at the station\n`,
      );
    }
    const shortest = counts.shortestValidityMs;
    if (shortest !== undefined && shortest < 60 * 60_000) {
      context.stderr.write(
        `warning: these challenges last only ${
          Math.max(0, Math.round(shortest / 60_000))
        } minutes: every key must be ` +
          "written and registered before then. Give --graph-version beta --challenge-timeout MINUTES for longer ones\n",
      );
    }
    const expiry = soonestExpiry([...batch.journal.users()], ["to-write"], Date.now());
    context.stdout.write(
      `batch ${flags.batch}: ${counts.fetched} fetched, ${counts.kept} kept, ${counts.skipped} skipped, ${counts.failed} failed` +
        (counts.voided > 0
          ? `, ${counts.voided} written key${counts.voided === 1 ? "" : "s"} void (reset and write again)`
          : "") +
        `${expiry ? `; write the keys before ${expiry}` : ""}\n` +
        `next: provisioning batch write --batch ${flags.batch} --authenticator hid\n`,
    );
    await finish(context, counts, flags.failures, `batch fetch --batch ${flags.batch}`);
  });
}

interface WriteFlags {
  batch: string;
  count?: string;
  pins?: string;
  column?: string[];
  authenticator?: string;
}

function writeCommand(context: CliContext): CommandUnknownOpts {
  const command = new Command("write")
    .description("operator, offline: one prepared key per user of the batch, its passkey made and checked")
    .requiredOption("--batch <file>", "the batch file batch fetch wrote")
    .option("--count <n>", "stop after writing this many keys (the keys at hand)")
    .option("--pins <file>", "pre-assigned PINs: the CSV batch fetch read, with its pin column");
  withKeyPolicyOptions(command, "keep");
  return withPluginOptions(command, context, "authenticator", "hid").action(async (_parsed, self) => {
    const flags = self.optsWithGlobals() as unknown as WriteFlags & Record<string, unknown>;
    const maxKeys = flags.count === undefined ? undefined : wholeNumber(flags.count, "--count", 1, 1_000_000);
    const plugin = context.registry.authenticator(flags.authenticator ?? "hid");
    if (!plugin.station) {
      throw new UsageError(
        `Cannot write keys with --authenticator ${plugin.manifest.id}: it does not lend one device per user`,
        { hint: "Use --authenticator hid (security keys)" },
      );
    }
    const policy = await keyPolicyFrom(context, flags);
    const pinOutput = await openPinOutputFrom(flags, policy);
    await using _pins = pinOutput.file;
    await using batch = await openBatch(flags.batch);
    const pins = flags.pins === undefined ? undefined : await readPins(flags.pins);
    const notify = (text: string) => context.stderr.write(`${text}\n`);
    const station = plugin.station(
      pluginContext(context),
      optionsFor(context, "authenticator", flags) as never,
      // A key that already holds a passkey for this rp is refused as reused.
      { policy, rpId: batchRpId(batch, flags.batch), notify },
    );
    // The first Ctrl+C finishes the key in hand and stops; a second one stops at once.
    const counts = await writeBatchKeys({
      batch,
      station,
      pins,
      pinOutput: pinOutput.file,
      maxKeys,
      notify,
      onUser: userLine(context),
      stop: context.signal,
    });
    const registerBy = soonestExpiry([...batch.journal.users()], ["to-register"], Date.now());
    context.stdout.write(
      `batch ${flags.batch}: ${counts.written} key${
        counts.written === 1 ? "" : "s"
      } written, ${counts.failed} failed, ` +
        `${counts.expired} challenge${counts.expired === 1 ? "" : "s"} expired\n` +
        (counts.expired > 0
          ? `renew them: provisioning batch fetch --batch ${flags.batch} (same source)\n`
          : "") +
        `next: provisioning batch register --batch ${flags.batch}${
          registerBy ? ` before ${registerBy}` : ""
        }\n`,
    );
    // Users left with an expired challenge got no key: the operator must hear about it.
    await finish(
      context,
      { failed: counts.failed + counts.expired, ...(counts.halted ? { halted: counts.halted } : {}) },
      undefined,
      `batch write --batch ${flags.batch}`,
    );
  });
}

interface RegisterFlags {
  batch: string;
  results: string;
  failures: string;
  concurrency: string;
  provider?: string;
}

function registerCommand(context: CliContext): CommandUnknownOpts {
  const command = new Command("register")
    .description("admin, signed in: register every key the station wrote; results.csv and failures.csv")
    .requiredOption("--batch <file>", "the batch file")
    .option("--results <file>", "every user the batch finished", "results.csv")
    .option("--failures <file>", "every user it did not, with the reason", "failures.csv")
    .option("--concurrency <n>", "users registered at once", "4");
  return withProvider(command, context).action(async (_parsed, self) => {
    const flags = self.optsWithGlobals() as unknown as RegisterFlags & Record<string, unknown>;
    const concurrency = wholeNumber(flags.concurrency, "--concurrency", 1, 64);
    await using batch = await openBatch(flags.batch);
    const provider = context.registry.provider(flags.provider ?? batch.info.provider);
    const upns = [...batch.journal.users()].flatMap((r) => r.upn ? [r.upn] : []).slice(0, 3);
    await using session = await connect(context, { ...flags, provider: provider.manifest.id }, {
      users: upns,
    });
    if (provider.manifest.id !== batch.info.provider || (session.tenant ?? "") !== batch.info.tenant) {
      throw new ProvisioningError(
        "batch-mismatch",
        `Cannot register batch ${flags.batch}: its challenges come from ${batch.info.provider} tenant ${batch.info.tenant}, and you are signed in to ${provider.manifest.id} tenant ${
          session.tenant ?? "(unknown)"
        }`,
        { hint: "Sign in to the tenant the batch was fetched from (--tenant)", exitCode: 2 },
      );
    }
    const staged = await stageOutputFiles([flags.results, flags.failures], { keepEarlier: true });
    await using results = await openResultsFile(staged.path(flags.results), { fresh: true });
    await using failures = await openFailuresFile(staged.path(flags.failures), { fresh: true });
    const counts = await registerBatch({
      batch,
      session,
      results,
      failures,
      concurrency,
      onUser: userLine(context),
      stop: context.signal,
    });
    context.stdout.write(
      `batch ${flags.batch}: ${counts.registered} registered, ${counts.reconciled} found registered, ` +
        `${counts.unchanged} finished before, ${counts.failed} failed\n`,
    );
    await results.close();
    await failures.close();
    await staged.commit();
    await finish(context, counts, flags.failures, `batch register --batch ${flags.batch}`);
  });
}

function statusCommand(context: CliContext): CommandUnknownOpts {
  return new Command("status")
    .description("where each user of a batch stands, and when its challenges expire")
    .requiredOption("--batch <file>", "the batch file")
    .option("--users", "one line per user: phase, challenge expiry, key, last reason")
    .action(async (flags) => {
      const { info, users } = await readBatch(flags.batch);
      const now = Date.now();
      const phases: BatchPhase[] = ["to-write", "to-register", "done", "skipped", "unresolved"];
      const count = (phase: BatchPhase) => users.filter((u) => batchPhase(u) === phase).length;
      const expired = users.filter((u) => {
        const phase = batchPhase(u);
        return (phase === "to-write" || phase === "to-register") && challengeExpires(u, now);
      }).length;
      const expiry = soonestExpiry(users, ["to-write", "to-register"], now);
      context.stdout.write(
        `batch ${flags.batch}: ${info.provider} tenant ${info.tenant}, passkeys named "${info.displayName}"\n` +
          phases.map((phase) => `  ${phase.padEnd(12)} ${count(phase)}\n`).join("") +
          `  expired      ${expired}\n` +
          (expiry ? `the first challenge still to use expires at ${expiry}\n` : ""),
      );
      if (flags.users) {
        for (const user of users) {
          const cells = [
            user.upn ?? user.ref ?? user.k,
            batchPhase(user) + (user.s === "writing" ? " (stopped while writing a key)" : ""),
            user.challenge?.expiresAt ? `expires ${user.challenge.expiresAt}` : "",
            user.device ? `${user.device}${user.serial ? ` serial ${user.serial}` : ""}` : "",
            user.code ? `last: ${user.code}` : "",
          ];
          context.stdout.write(`${cells.filter((cell) => cell !== "").join("  ")}\n`);
        }
      }
    });
}

/** Signs in (the first Ctrl+C cancels a sign-in, not the calls after it). */
async function connect(
  context: CliContext,
  flags: Record<string, unknown>,
  hints: { users: string[] },
): Promise<ProviderSession> {
  const provider = context.registry.provider((flags["provider"] as string | undefined) ?? "entra");
  // One rate controller for the command's calls: it backs off on throttling and climbs back.
  const pacer = new AdaptivePacer();
  const { session } = await connectForCalls(
    context,
    provider,
    optionsFor(context, "provider", flags),
    hints,
    pacer,
  );
  return session;
}

/** One line per user on stderr. */
function userLine(context: CliContext): (event: BatchUserEvent) => void {
  return (event) =>
    context.stderr.write(
      `${event.row === undefined ? "" : `row ${event.row}: `}${event.user}: ${event.outcome}${
        event.detail ? ` (${event.detail})` : ""
      }\n`,
    );
}

/** The earliest challenge expiry after `now` among users in `phases`, ISO, if any. */
function soonestExpiry(
  users: readonly UserRecord[],
  phases: readonly BatchPhase[],
  now: number,
): string | undefined {
  const times = users.filter((u) => phases.includes(batchPhase(u)) && !challengeExpires(u, now))
    .flatMap((u) => u.challenge?.expiresAt ? [u.challenge.expiresAt] : []).sort();
  return times[0];
}

/**
 * The one rp id the batch's unwritten challenges are for: the station refuses a key that already
 * holds a passkey for it.
 */
function batchRpId(batch: OpenBatch, path: string): string {
  const rpIds = new Set(
    [...batch.journal.users()].filter((u) => batchPhase(u) === "to-write").flatMap((u) =>
      challengeRpId(u) ?? []
    ),
  );
  if (rpIds.size > 1) {
    throw new ProvisioningError(
      "batch-invalid",
      `Cannot write keys for batch ${path}: its challenges are for several rp ids (${[...rpIds].join(", ")})`,
      { hint: "Fetch each rp's users into a batch of its own", exitCode: 2 },
    );
  }
  return [...rpIds][0] ?? batch.info.allowedRpIds[0] ?? "";
}

/** Pre-assigned PINs by user (lowercased reference) from a CSV with a pin column. */
async function readPins(path: string): Promise<Map<string, string>> {
  const pins = new Map<string, string>();
  for await (const row of csvRows(path)) {
    if (row.ok && row.user.pin !== undefined) pins.set(row.user.reference.toLowerCase(), row.user.pin);
  }
  if (pins.size === 0) {
    throw new UsageError(`Cannot read PINs from ${JSON.stringify(path)}: it has no pin column with values`, {
      hint: "Give the CSV with the users' pre-assigned PINs (a pin column), or leave --pins out",
    });
  }
  return pins;
}

/** Exit: 130 after Ctrl+C, the halting reason's error, 1 when some failed, else 0. */
function finish(
  context: CliContext,
  counts: { failed: number; halted?: { code: string; message: string } },
  failuresPath: string | undefined,
  again: string,
): Promise<void> {
  if (counts.halted) {
    throw new ProvisioningError(
      counts.halted.code,
      `Stopped: every other user would fail the same way. ${counts.halted.message}`,
      { hint: `Fix it, then run provisioning ${again} again` },
    );
  }
  if (context.signal.aborted) {
    throw new ProvisioningError("interrupted", "Stopped by Ctrl+C", {
      hint: `Run provisioning ${again} again to go on`,
      exitCode: 130,
    });
  }
  if (counts.failed > 0) {
    throw new ProvisioningError(
      "some-failed",
      `${counts.failed} user${counts.failed === 1 ? "" : "s"} failed${
        failuresPath ? `; see ${resolve(failuresPath)}` : ""
      }`,
      { hint: `Fix what the reasons say, then run provisioning ${again} again` },
    );
  }
  return Promise.resolve();
}

function wholeNumber(value: string, flag: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Cannot use ${flag} ${JSON.stringify(value)}: expected a whole number from ${min} to ${max}`,
    );
  }
  return n;
}
