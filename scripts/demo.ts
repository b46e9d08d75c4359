/**
 * `deno task demo`: the main job end to end against the embedded Entra sandbox. The sandbox
 * tenant starts on 127.0.0.1; a fresh software key (a real encrypted vault in a temporary folder)
 * gets a PIN; the `entra` plugin signs in with the sandbox's app registration (client
 * credentials) and runs the bulk engine over a users.csv of the tenant's sample users (a repeated
 * row included) through Graph's passkey API, with journal, results.csv and failures.csv, then runs
 * it again to show the resume; the sandbox verifies every registration with
 * @simplewebauthn/server, and its inspection endpoint shows one verified passkey per user. Nothing
 * leaves this machine.
 *
 * @module
 */
import { openSoftwareKey } from "../authenticators/software/plugin.ts";
import { toBase64Url } from "../core/bytes.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import { parse } from "csv-parse/sync";
import { renderSummary } from "../core/cli/summary.ts";
import { describeError } from "../core/errors.ts";
import { runBulk } from "../core/jobs/engine.ts";
import type { RunSummary } from "../core/jobs/events.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { readUsersFromCsv } from "../core/jobs/sources/csv.ts";
import type { Authenticator, PluginContext, ProviderSession, UserInteraction } from "../core/plugin.ts";
import { entraProvider } from "../plugins/entra/plugin.ts";

const sampleUsers = 5;
const say = (text: string) => console.log(text);

async function demo(): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-demo-" });
  const home = Deno.cwd();
  // The admin's working folder: provisioning.json, the token cache and the vault live here.
  Deno.chdir(dir);
  try {
    const quiet: PluginContext = {
      interaction: {
        requestPin: () => Promise.reject(new Error("no PIN yet")),
        promptUserPresence: () => {},
      },
      env: () => undefined,
      readSecret: () => Promise.reject(new Error("no secret yet")),
    };
    await using sandbox = await entraProvider.startSandbox!(quiet, { port: 0, users: sampleUsers });
    say(`1. Sandbox tenant on ${sandbox.url} (Graph, OAuth, passkey verification, all on loopback)`);

    const settings = Object.fromEntries(
      [...sandbox.instructions.matchAll(/export (\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]),
    );
    const pin = String(100000 + crypto.getRandomValues(new Uint32Array(1))[0]! % 900000);
    const passphrase = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
    const context: PluginContext = {
      interaction: { requestPin: () => Promise.resolve(pin), promptUserPresence: () => {} },
      env: (name) => settings[name],
      readSecret: () => Promise.resolve(passphrase),
      notify: (text) => say(`   ${text}`),
    };

    await using key = await openSoftwareKey(context, {
      vault: `${dir}/demo-key.vault`,
      kdfIterations: 100_000,
      vaultGuardDir: `${dir}/.provisioning/vaults`,
    });
    await new Ctap2Client(key.device).setPin(pin);
    say("2. A software FIDO2 key in a throwaway folder: vault encrypted at rest, PIN set");

    await using session = await entraProvider.connect(context, {});
    say("3. Signed in to the tenant with its app registration (client credentials)");

    const inspection = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as Inspection;
    const upns = inspection.users.map((u) => u.userPrincipalName).filter((upn) => /^user\d+@/.test(upn));
    // The admin's CSV: the sample users, and one of them twice (provisioned once, the repeat reported).
    const csv = ["User principal name,Display name", ...upns.map((upn, i) => `${upn},Sample user ${i + 1}`)]
      .concat(`${upns[0]},Sample user 1 again`).join("\r\n");
    await Deno.writeTextFile(`${dir}/users.csv`, csv);
    say(`4. Bulk run of users.csv (${upns.length} users and a repeated row), 3 at a time, journaled`);
    const run = () => bulkRun({ dir, session, key, interaction: context.interaction });
    const first = await run();
    const results = await readResults(`${dir}/results.csv`);
    say(table(["USER", "STATUS", "METHOD ID"], results.map((r) => [r.user, r.status, r.methodId])));
    // The demo's folder is deleted when it ends: no paths to open, no run to revoke later.
    const { resultsPath: _results, failuresPath: _failures, ...shown } = first;
    say(indent(
      renderSummary(shown).split("\n").filter((line) => !/^(Re-run|Revoke) /.test(line)).join("\n"),
    ));
    const again = await run();
    say(
      `5. The same run again resumes from its journal: ${again.fromEarlierAttempts} users done before, ` +
        `${again.counts.provisioned} provisioned anew`,
    );

    const after = await (await fetch(`${sandbox.url}/_sandbox/inspect`)).json() as Inspection;
    const verified = after.users.filter((u) => upns.includes(u.userPrincipalName))
      .filter((u) => u.passkeys.length === 1 && u.passkeys[0]!.verified);
    say(
      `6. The sandbox's inspection: ${verified.length} of ${upns.length} users hold exactly one verified passkey`,
    );
    return verified.length === upns.length && first.counts.provisioned === upns.length &&
      again.counts.provisioned === 0;
  } finally {
    Deno.chdir(home);
    await Deno.remove(dir, { recursive: true });
  }
}

/** The run the CLI makes of `provisioning --csv users.csv --concurrency 3`, on the demo's key. */
async function bulkRun(options: {
  dir: string;
  session: ProviderSession;
  key: Authenticator;
  interaction: UserInteraction;
}): Promise<RunSummary> {
  const { dir } = options;
  await using journal = await openJournal(`${dir}/.provisioning/runs/demo.jsonl`, {
    runId: "demo",
    fingerprint: "demo users.csv",
  });
  await using results = await openResultsFile(`${dir}/results.csv`, { fresh: true });
  await using failures = await openFailuresFile(`${dir}/failures.csv`, { fresh: true });
  const file = await Deno.open(`${dir}/users.csv`);
  return await runBulk({
    runId: "demo",
    source: readUsersFromCsv(file.readable, { source: "users.csv" }),
    session: options.session,
    authenticator: options.key,
    interaction: options.interaction,
    displayName: "Provisioning demo key",
    concurrency: 3,
    journal,
    results,
    failures,
  });
}

async function readResults(path: string): Promise<{ user: string; status: string; methodId: string }[]> {
  const rows = parse((await Deno.readTextFile(path)).replace(/^\uFEFF/, ""), { columns: true }) as Record<
    string,
    string
  >[];
  return rows.map((r) => ({ user: r["user"]!, status: r["status"]!, methodId: r["method id"]! }));
}

function indent(text: string): string {
  return text.trimEnd().split("\n").map((line) => `   ${line}`).join("\n");
}

interface Inspection {
  users: { userPrincipalName: string; passkeys: { verified: boolean }[] }[];
}

function table(headings: string[], rows: string[][]): string {
  const widths = headings.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => "   " + cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(headings), ...rows.map(line)].join("\n");
}

try {
  if (!await demo()) {
    console.error("Demo failed: not every sample user ended with one verified passkey");
    Deno.exit(1);
  }
  say(
    "Done. The demo's folder is deleted. To try the CLI itself: deno task start sandbox (README: from the sandbox to your tenant)",
  );
} catch (error) {
  console.error(`Demo failed: ${describeError(error)}`);
  Deno.exit(1);
}
