/**
 * `provisioning provision` (and the seed tool's `provisioning --csv users.csv`): passkeys for the
 * users of a CSV file, a group, or `--user` references, through the bulk engine
 * (core/jobs/engine.ts), with results.csv, failures.csv, a journal that makes a re-run of the
 * same command resume, progress on stderr and a summary at the end.
 *
 * The run's identity (its id and journal) is a digest of what the run is: the source, the
 * provider and its settings, the authenticator and the passkey's name. Run the same command again
 * after Ctrl+C, `kill -9` or a crash and it picks up where it stopped.
 *
 * Exit codes: 0 every user provisioned or skipped, 1 some failed, 2 usage error, 130 Ctrl+C.
 *
 * @module
 */
import { resolve } from "node:path";
import { browserSearchDenied } from "./path_guard.ts";
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { sha256 } from "@noble/hashes/sha2.js";
import { formatAaguid } from "../aaguid.ts";
import { Ctap2Client } from "../ctap/client.ts";
import { ProvisioningError, UsageError } from "../errors.ts";
import { runBulk } from "../jobs/engine.ts";
import { openJournal } from "../jobs/journal.ts";
import { openUserLocks } from "../jobs/user_locks.ts";
import { openFailuresFile } from "../jobs/output/failures.ts";
import { openResultsFile } from "../jobs/output/results.ts";
import { AdaptivePacer } from "../jobs/rate.ts";
import type { JobEvent, RunSummary } from "../jobs/events.ts";
import type { ConnectHints, ProviderPlugin } from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { keyPolicyFrom, openPinOutputFrom, withKeyPolicyOptions } from "./key_policy.ts";
import { isSecretName } from "../log.ts";
import { keyPinEnv, newKeyPinEnv, pinFromEnvironment } from "./pin.ts";
import { optionsFor } from "./plugin_options.ts";
import { connectForCalls, defaultDisplayName, pluginContext, withBoth } from "./provider.ts";
import { printRunSummary, startProgress } from "./run_output.ts";
import { stageOutputFiles } from "./output_files.ts";
import {
  chooseUserSource,
  connectHintsOf,
  estimateRows,
  prepareCsvSource,
  sourceRows,
} from "./user_sources.ts";

/** Where journals go unless `--journal-dir` says otherwise (beside the token cache). */
export const defaultJournalDir = ".provisioning/runs";

interface ProvisionFlags {
  user?: string[];
  csv?: string;
  group?: string;
  column?: string[];
  displayName: string;
  concurrency: string;
  dryRun?: true;
  force?: true;
  replaceExisting?: true;
  yes?: true;
  results?: string;
  failures?: string;
  journalDir: string;
  logFormat: string;
  preflight: boolean;
  login?: true;
  automaticProvision?: true;
  mode?: string;
  via: string;
  manual?: true;
  browser?: string;
  debugDir: string;
  captureFlow?: string;
  registerDeeplink?: true;
  provider?: string;
  authenticator?: string;
  /** The root program's `--verbose`. */
  verbose?: true;
}

/**
 * The longest passkey name the directory takes: Entra's limit, 30 characters
 * (plugins/entra/graph/fido2.ts cites the source). Checked before the run, not per user.
 */
export const PASSKEY_NAME_MAX = 30;

/**
 * Refuses a passkey name the directory would refuse for every user, before the run starts.
 *
 * @throws {UsageError} the name is empty or longer than {@link PASSKEY_NAME_MAX} characters
 */
export function checkDisplayName(verb: string, name: string): void {
  const length = [...name].length;
  if (length >= 1 && length <= PASSKEY_NAME_MAX) return;
  throw new UsageError(
    `Cannot ${verb}: --display-name ${JSON.stringify(name)} has ${length} characters; ` +
      `the directory takes 1 to ${PASSKEY_NAME_MAX}`,
    {
      hint:
        `Give a name of at most ${PASSKEY_NAME_MAX} characters, e.g. --display-name "${defaultDisplayName}"`,
    },
  );
}

/** `provision`: the admin's main job. */
export function provisionCommand(context: CliContext): CommandUnknownOpts {
  const command = new Command("provision")
    .description(
      "create a passkey for each user of a CSV file, a group or a list, on the chosen authenticator, " +
        "and register it with the provider (re-run the same command to resume)",
    )
    .option("--csv <file>", "users from a CSV file (UPN, mail or object id column; see --column)")
    .option("--user <upn...>", 'users by sign-in name, mail or object id; repeatable; "-" reads stdin')
    .option("--group <name-or-id>", "the members of a group, nested groups included")
    .option("--column <field=header...>", "which CSV column holds a field, e.g. upn=Email; repeatable")
    .option(
      "--display-name <name>",
      "the passkey's name in the directory (1–30 characters)",
      defaultDisplayName,
    )
    .option("--concurrency <n>", "users provisioned at once", "4")
    .option("--dry-run", "resolve every user and say what would happen, create nothing")
    .option("--force", "also provision users who already have a matching passkey")
    .option(
      "--replace-existing",
      "delete each user's older passkeys once the new one is verified (asked first; --yes to confirm in scripts)",
    )
    .option("--yes", "confirm --replace-existing without asking")
    .option("--results <file>", "results file (default results.csv; dry-run-results.csv with --dry-run)")
    .option(
      "--failures <file>",
      "failures file (default failures.csv; dry-run-failures.csv with --dry-run)",
    )
    .option("--journal-dir <dir>", "where run journals are kept", defaultJournalDir)
    .addOption(
      new Option("--log-format <format>", "progress and logs on stderr: text or json")
        .choices(["text", "json"])
        .default("text"),
    )
    .option("--no-preflight", "do not check the provider's policies before the run")
    .option("--login", "sign in interactively before the run (seed-compatible)")
    .addOption(
      new Option(
        "--via <path>",
        "register through the provider's API, its pages in a browser, or (tap) the pages' requests without a browser",
      )
        .choices(["api", "browser", "tap"])
        .default("api"),
    )
    .option("--manual", "browser path: the admin adds each key in a visible window")
    .option(
      "--mode <mode>",
      "browser path: headless (default) or headful, to watch; headful implies --via browser",
    )
    .option("--browser <path>", "browser path: Chromium, Chrome or Edge to use (found when left out)")
    .option("--debug-dir <dir>", "browser path: where failure screenshots go (secrets masked)", "debug")
    .option(
      "--capture-flow <dir>",
      "browser path: save every step's URL, sanitized page and masked screenshot, to send us what your tenant shows",
    )
    .addOption(
      new Option("--automatic-provision", "seed-compatible; provisioning is automatic unless --manual")
        .hideHelp(),
    )
    .addOption(new Option("--register-deeplink", "seed-compatible; not needed by this tool").hideHelp());
  // Security keys (--authenticator hid): the key policy, as `key prepare` takes it.
  withKeyPolicyOptions(command, "keep");
  return withBoth(command, context).action(async (_parsed, self) => {
    const flags = self.optsWithGlobals() as unknown as ProvisionFlags & Record<string, unknown>;
    await runProvision(context, flags);
  });
}

async function runProvision(
  context: CliContext,
  flags: ProvisionFlags & Record<string, unknown>,
): Promise<void> {
  // A file that is no CSV is refused here, before the run starts and leaves a journal.
  const source = await prepareCsvSource(chooseUserSource("provision", flags), context.stderr);
  const concurrency = Number(flags.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw new UsageError(
      `Cannot provision: --concurrency ${JSON.stringify(flags.concurrency)} is not 1 to 64`,
    );
  }
  if (flags.mode !== undefined && flags.mode !== "headless" && flags.mode !== "headful") {
    throw new UsageError(`Cannot provision: --mode ${JSON.stringify(flags.mode)} is not headless or headful`);
  }
  if (flags.via === "tap" && (flags.manual || flags.mode !== undefined || flags.browser !== undefined)) {
    throw new UsageError(
      "Cannot use --via tap with --manual, --mode or --browser: the TAP path needs no browser",
      {
        hint: "Use --via browser for a browser",
      },
    );
  }
  if (flags.captureFlow !== undefined && viaBrowserFlag(flags) !== "browser") {
    throw new UsageError("Cannot use --capture-flow without the browser path: it captures the pages' steps", {
      hint: "Add --via browser, or leave --capture-flow out",
    });
  }
  if (!flags.dryRun && (flags.mode === "headful" || flags.manual === true)) refuseWithoutDisplay(context);
  checkDisplayName("provision", flags.displayName);
  if (flags.registerDeeplink) {
    context.stderr.write(
      "note: --register-deeplink does nothing here: it registers the provisioning:// link the panel opens, " +
        "and there is no panel yet\n",
    );
  }
  if (flags.automaticProvision) {
    context.stderr.write(
      "note: --automatic-provision: the users given are provisioned without asking, as always; " +
        "the panel's automatic queue does not exist yet\n",
    );
  }
  if (flags.replaceExisting && !flags.yes && !(flags.dryRun)) await confirmReplace(context);
  const dryRun = flags.dryRun === true;
  const provider = context.registry.provider(flags.provider ?? "entra");
  const authenticatorId = flags.authenticator ?? "software";
  const providerOptions = optionsFor(context, "provider", flags);
  const authenticatorOptions = optionsFor(context, "authenticator", flags);

  // Security keys (one per user) come from the plugin's station; any other kind is opened once,
  // first, so a missing key or vault fails here, before any sign-in.
  const authenticatorPlugin = context.registry.authenticator(authenticatorId);
  const perUserDevices = authenticatorPlugin.station !== undefined;
  const stationMode = perUserDevices && !dryRun;
  const policy = stationMode ? await keyPolicyFrom(context, flags) : undefined;
  const pinOutput = policy ? await openPinOutputFrom(flags, policy) : undefined;
  await using _pinFile = pinOutput?.file;
  await using authenticator = perUserDevices
    ? undefined
    : await authenticatorPlugin.open(context, { ...authenticatorOptions, create: false } as never);
  const aaguid = authenticator
    ? formatAaguid((await new Ctap2Client(authenticator.device).getInfo()).aaguid)
    : undefined;

  if (flags.login) {
    if (!provider.login) {
      throw new UsageError(`Cannot sign in: the ${provider.manifest.id} provider has no login`);
    }
    await provider.login(pluginContext(context), providerOptions as never);
  }
  // With no tenant configured, the provider may find it from a user's domain.
  const hints = await connectHintsOf(source);
  if (flags.preflight && (!authenticator || !aaguid)) {
    context.stderr.write(
      "note: no preflight: each security key's AAGUID is known only when it is inserted (provisioning doctor --authenticator hid checks one)\n",
    );
  } else if (flags.preflight && authenticator && aaguid) {
    await preflight(
      context,
      provider,
      providerOptions,
      {
        aaguid,
        attestation: authenticator.attestationFormat,
        label: authenticator.label,
      },
      hints,
      dryRun,
    );
  }

  // Events go to the progress display; the pacer reports throttling as events too.
  const progress = startProgress(context, {
    format: flags.logFormat === "json" ? "json" : "text",
    verbose: flags.verbose === true,
    secrets: secretEnvironmentValues(context),
  });
  const emit = (event: JobEvent) => progress.listener(event);
  const pacer = new AdaptivePacer({
    onThrottled: ({ retryAfterMs, ratePerSecond }) =>
      emit({ type: "throttled", retryAfterMs, ratePerSecond }),
  });
  // In-flight calls must not see the first Ctrl+C (they finish).
  const { session, calls: callsController } = await connectForCalls(
    context,
    provider,
    providerOptions,
    hints,
    pacer,
  );
  await using _session = session;

  // The run's identity: where it writes (the tenant), with what (the key model), for whom (the
  // source's content, not its name: a failures.csv rewritten by a finished run is a new run), and
  // how (the passkey's name, --force, the path). The same command after a crash is the same run.
  const identity = await runIdentity({
    provider: provider.manifest.id,
    tenant: session.tenant ?? providerOptions,
    authenticator: aaguid ?? authenticatorId,
    source: source.kind === "csv"
      ? { csv: await fileDigest(source.path), columns: source.columns }
      : source.kind === "group"
      ? { group: source.group }
      : { users: [...new Set(source.users.map((u) => u.trim().toLowerCase()))].sort() },
    displayName: flags.displayName,
    force: flags.force === true,
    replaceExisting: flags.replaceExisting === true,
    via: viaBrowserFlag(flags),
  });
  const resultsPath = flags.results ?? (dryRun ? "dry-run-results.csv" : "results.csv");
  const failuresPath = flags.failures ?? (dryRun ? "dry-run-failures.csv" : "failures.csv");
  const journalPath = `${flags.journalDir}/${identity.runId}.jsonl`;
  // Finished users stay on disk (their rows are streamed back): a million of them resume in flat memory.
  await using journal = dryRun
    ? undefined
    : await openJournal(journalPath, { ...identity, keepFinished: false });
  const csvPath = source.kind === "csv" ? source.path : undefined;
  // The browser path: one browser for the run, a private context per user.
  const viaBrowser = viaBrowserFlag(flags) === "browser";
  const viaTap = flags.via === "tap";
  if (viaTap && !session.registerInBrowser) {
    throw new UsageError(`Cannot use --via tap: the ${provider.manifest.id} provider has no TAP path`);
  }
  if (viaBrowser && !dryRun && (flags.mode === "headful" || flags.manual === true)) {
    refuseWithoutDisplay(context);
  }
  if (viaBrowser && !session.registerInBrowser) {
    throw new UsageError(
      `Cannot use --via browser: the ${provider.manifest.id} provider has no browser flow`,
    );
  }
  // Loaded only for the browser path: puppeteer is large, and API runs never need it.
  await using browser = viaBrowser && !dryRun
    ? await (await import("../browser/driver.ts")).launchBrowser({
      ...(flags.browser ? { executablePath: flags.browser } : {}),
      headless: flags.mode !== "headful" && flags.manual !== true,
      profileParent: `${flags.journalDir}/..`,
    }).catch((error) => {
      throw browserSearchDenied(error) ?? error;
    })
    : undefined;
  // Outputs are written beside their final names and put in place at the end of the attempt; a
  // new run first keeps an earlier run's files aside (a resumed one owns what is there).
  const staged = dryRun ? undefined : await stageOutputFiles([resultsPath, failuresPath], {
    input: csvPath,
    keepEarlier: !journal?.resumed,
    inPlace: true,
  });
  const outputs = {
    results: staged?.path(resultsPath) ?? resultsPath,
    failures: staged?.path(failuresPath) ?? failuresPath,
  };
  await using results = await openResultsFile(outputs.results, { fresh: true });
  await using failures = await openFailuresFile(outputs.failures, { fresh: true });
  const total = csvPath === undefined
    ? flags.user?.filter((u) => u !== "-").length
    : await estimateRows(csvPath);

  let summary: RunSummary;
  try {
    summary = await runBulk({
      runId: identity.runId,
      source: sourceRows(source, session, total),
      session,
      ...(authenticator ? { authenticator } : {}),
      ...(aaguid ? { authenticatorAaguid: aaguid } : {}),
      ...(policy
        ? {
          station: authenticatorPlugin.station!(
            pluginContext(context),
            authenticatorOptions as never,
            {
              policy,
              // Which of the provider's rp ids the challenges will carry is known only per user.
              rpId: session.allowedRpIds[0] ?? "",
              otherRpIds: session.allowedRpIds.slice(1),
              notify: (text) => context.stderr.write(`${text}\n`),
            },
          ),
        }
        : {}),
      ...(pinOutput?.file ? { pinOutput: pinOutput.file } : {}),
      interaction: pinFromEnvironment(context),
      displayName: flags.displayName,
      concurrency,
      dryRun,
      force: flags.force === true,
      ...(flags.replaceExisting ? { replaceExisting: true } : {}),
      ...(journal ? { journal } : {}),
      // One process per user and tenant on this machine, whatever the run (docs/exactly-once.md).
      ...(journal
        ? {
          userLocks: openUserLocks(`${flags.journalDir}/locks`, {
            runId: identity.runId,
            tenant: JSON.stringify([provider.manifest.id, session.tenant ?? providerOptions]),
          }),
          onWaitForUser: (text: string) => context.stderr.write(`note: ${text}\n`),
        }
        : {}),
      ...(viaTap && !dryRun ? { browser: { via: "tap" as const, mode: "automatic" as const } } : {}),
      ...(browser
        ? {
          browser: {
            browser,
            mode: flags.manual ? "manual" as const : "automatic" as const,
            debugDir: flags.debugDir,
            ...(flags.captureFlow ? { captureDir: flags.captureFlow } : {}),
          },
        }
        : {}),
      results,
      failures,
      stop: context.signal,
      abort: callsController.signal,
      onEvent: emit,
      ...(total === undefined ? {} : { total }),
    });
  } finally {
    progress.close();
  }
  if (!dryRun) {
    await results.close();
    await failures.close();
    await staged?.commit();
  }
  summary = { ...summary, resultsPath: resolve(resultsPath), failuresPath: resolve(failuresPath) };
  printRunSummary(context, summary, { format: flags.logFormat === "json" ? "json" : "text" });
  if (summary.halted) {
    throw new ProvisioningError(
      summary.halted.code,
      `Run ${summary.runId} stopped: every other user would fail the same way. ${summary.halted.message}`,
      { hint: "Fix it, then run the same command again to resume" },
    );
  }
  if (summary.interrupted) {
    throw new ProvisioningError("interrupted", `Run ${summary.runId} stopped by Ctrl+C`, {
      hint: "Run the same command again to resume",
      exitCode: 130,
    });
  }
  if (summary.counts.failed > 0) {
    // The final name (the file was written beside it and renamed), absolute: the admin opens it.
    const failed = `${summary.counts.failed} user${summary.counts.failed === 1 ? "" : "s"}`;
    throw dryRun
      ? new ProvisioningError("some-failed", `${failed} would fail; see ${resolve(failuresPath)}`, {
        hint: "Fix what the reasons say, then dry-run again; a real run would fail them the same way",
      })
      : new ProvisioningError("some-failed", `${failed} failed; see ${resolve(failuresPath)}`, {
        hint: `Fix what the reasons say, then run: provisioning provision --csv ${resolve(failuresPath)}`,
      });
  }
}

/**
 * A visible browser (`--mode headful`, `--manual`) needs a desktop session: on Linux and the BSDs
 * that is an X11 or Wayland display. Without one, one clear line instead of Chromium's log.
 */
function refuseWithoutDisplay(context: CliContext): void {
  if (Deno.build.os === "windows" || Deno.build.os === "darwin") return;
  const display = (name: string) => {
    try {
      return context.env(name);
    } catch {
      return undefined;
    }
  };
  if (display("DISPLAY") || display("WAYLAND_DISPLAY")) return;
  throw new UsageError(
    "Cannot open a visible browser window: no display (neither DISPLAY nor WAYLAND_DISPLAY is set)",
    { hint: "Use --mode headless, or run where a desktop session is available" },
  );
}

/**
 * The values of the secret environment variables (PINs, client secrets, passphrases) the run may
 * hold: registered with the log sink so no line can show them, whatever prints them.
 */
function secretEnvironmentValues(context: CliContext): string[] {
  const names = new Set([keyPinEnv, newKeyPinEnv]);
  for (const plugin of context.registry.list()) {
    for (const name of plugin.manifest.env ?? []) if (isSecretName(name)) names.add(name);
  }
  return [...names].map((name) => context.env(name)).filter((value): value is string => !!value);
}

/**
 * `--replace-existing` deletes passkeys users rely on: the admin confirms by typing "replace"
 * (or gives `--yes` in a script); without a terminal to ask on, the run stops with the hint.
 */
async function confirmReplace(context: CliContext): Promise<void> {
  const answer = await context.readSecret({
    label: 'Delete every user\'s older passkeys once the new one is verified? Type "replace" to confirm',
    hint: "Give --yes to confirm --replace-existing without a terminal",
  });
  if (answer.trim().toLowerCase() !== "replace") {
    throw new UsageError("Cannot replace passkeys: not confirmed", {
      hint: 'Type "replace" when asked, or give --yes',
    });
  }
}

/** `api` or `browser`: which path the flags choose (part of the run's identity). */
function viaBrowserFlag(flags: ProvisionFlags): "api" | "browser" | "tap" {
  if (flags.via === "tap") return "tap";
  return flags.via === "browser" || flags.mode === "headful" || flags.manual === true ? "browser" : "api";
}

/** The provider's preflight: errors stop a real run (not a dry run); warnings are printed. */
async function preflight(
  context: CliContext,
  provider: ProviderPlugin<never>,
  providerOptions: Record<string, unknown>,
  facts: { aaguid: string; attestation: string | undefined; label: string },
  hints: ConnectHints,
  dryRun: boolean,
): Promise<void> {
  if (!provider.preflight) return;
  const findings = await provider.preflight(pluginContext(context), providerOptions as never, facts, hints);
  for (const finding of findings) {
    if (finding.severity === "info") continue;
    context.stderr.write(
      `${finding.severity}: ${finding.message}${finding.hint ? `. ${finding.hint}` : ""}\n`,
    );
  }
  const errors = findings.filter((f) => f.severity === "error");
  if (errors.length > 0 && !dryRun) {
    throw new ProvisioningError(
      "preflight-failed",
      `Cannot start the run: ${errors.length} problem${
        errors.length === 1 ? "" : "s"
      } would make every user fail (${errors.map((e) => e.code).join(", ")})`,
      { hint: "Fix them (provisioning doctor explains), or give --no-preflight to run anyway" },
    );
  }
}

/**
 * The run's id and fingerprint: a SHA-256 over what the run is. Secrets are never part of it
 * (they come from the environment, not from options).
 */
async function runIdentity(what: Record<string, unknown>): Promise<{ runId: string; fingerprint: string }> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(sortDeep(what)))),
  );
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { runId: hex.slice(0, 12), fingerprint: `sha256:${hex}` };
}

function sortDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortDeep);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).filter(([, v]) => v !== undefined).sort((
        [a],
        [b],
      ) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => [k, sortDeep(v)]),
    );
  }
  return value;
}

/** SHA-256 of a file's content, streamed: the identity of a CSV source. */
async function fileDigest(path: string): Promise<string> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new ProvisioningError(
      "csv-unreadable",
      `Cannot read ${JSON.stringify(path)}: ${error instanceof Error ? error.message : String(error)}`,
      { hint: "Check the path and that the file is readable", exitCode: 2, cause: error },
    );
  }
  const hash = sha256.create();
  for await (const chunk of file.readable) hash.update(chunk);
  return [...hash.digest()].map((b) => b.toString(16).padStart(2, "0")).join("");
}
