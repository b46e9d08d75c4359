/**
 * A bulk run in a process of its own, for the SIGKILL-and-resume test (test/okta_provider_test.ts)
 * until the Okta provider is wired into the CLI: the Okta provider through the bulk engine with a
 * journal, a software key in memory, users `user1..userN@example.com`.
 *
 * Usage: `deno run … bulk_child.ts ORG_URL JOURNAL_PATH OUT_DIR USERS`, the API token in
 * `PROVISIONING_OKTA_TOKEN`. Prints one line per verified user.
 *
 * @module
 */
import { formatAaguid } from "../../../core/aaguid.ts";
import { runBulk } from "../../../core/jobs/engine.ts";
import { openJournal } from "../../../core/jobs/journal.ts";
import { openFailuresFile } from "../../../core/jobs/output/failures.ts";
import { openResultsFile } from "../../../core/jobs/output/results.ts";
import { readUsersFromList } from "../../../core/jobs/sources/csv.ts";
import { newTestKey, scriptedUser } from "../../../test/software_key.ts";
import { oktaProvider } from "../plugin.ts";

const [orgUrl, journalPath, outDir, count] = Deno.args;
if (!orgUrl || !journalPath || !outDir || !count) throw new Error("usage: ORG_URL JOURNAL OUT_DIR USERS");
const pin = "482916";
const session = await oktaProvider.connect({
  interaction: scriptedUser([pin]),
  env: (name) => Deno.env.get(name),
  readSecret: () => Promise.reject(new Error("no secret expected")),
}, { oktaOrg: orgUrl });
await using key = await newTestKey({ pin });
await using journal = await openJournal(journalPath, { runId: "0123456789ab", fingerprint: "okta" });
await using results = await openResultsFile(`${outDir}/child-results.csv`, { fresh: true });
await using failures = await openFailuresFile(`${outDir}/child-failures.csv`, { fresh: true });
const logins = Array.from({ length: Number(count) }, (_, i) => `user${i + 1}@example.com`);
await runBulk({
  runId: "0123456789ab",
  source: readUsersFromList(logins),
  session,
  authenticator: key,
  authenticatorAaguid: formatAaguid((await key.client.getInfo()).aaguid),
  interaction: scriptedUser([pin]),
  displayName: "Security Key",
  concurrency: 8,
  journal,
  results,
  failures,
  retryDelayMs: 10,
  onEvent: (event) => {
    if (event.type === "user-state" && event.state === "verified") console.log(`verified ${event.user}`);
  },
});
