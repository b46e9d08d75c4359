import { assert, assertEquals, deepStrictEqual } from "../../test/assert.ts";
import type { RunCounts, RunSummary } from "../jobs/events.ts";
import { redactValue } from "../log.ts";
import {
  exitCodeForSummary,
  formatDuration,
  renderSummary,
  renderSummaryJson,
  summaryJson,
  usersPerMinute,
} from "./summary.ts";

function counts(partial: Partial<RunCounts> = {}): RunCounts {
  return { provisioned: 0, reconciled: 0, skipped: 0, dryRun: 0, failed: 0, byReason: {}, ...partial };
}

function summary(partial: Partial<RunSummary> = {}): RunSummary {
  return {
    runId: "r-20250102-abc",
    counts: counts(),
    fromEarlierAttempts: 0,
    elapsedMs: 60_000,
    interrupted: false,
    ...partial,
  };
}

Deno.test("formatDuration rounds to what matters at each size, with no 60 s or 60 min", () => {
  const cases: [number, string][] = [
    [0, "0.0 s"],
    [49, "0.0 s"],
    [400, "0.4 s"],
    [3_400, "3.4 s"],
    [9_949, "9.9 s"],
    [9_950, "10 s"],
    [42_000, "42 s"],
    [59_499, "59 s"],
    [59_500, "1 min 00 s"],
    [725_000, "12 min 05 s"],
    [3_599_499, "59 min 59 s"],
    [3_599_500, "1 h 00 min"],
    [3_720_000, "1 h 02 min"],
    [86_369_999, "23 h 59 min"],
    [86_370_000, "1 d 00 h"],
    [2 * 86_400_000 + 3 * 3_600_000, "2 d 03 h"],
    [-1, "–"],
    [Number.NaN, "–"],
    [Number.POSITIVE_INFINITY, "–"],
  ];
  for (const [ms, text] of cases) assertEquals(formatDuration(ms), text, `${ms} ms`);
});

Deno.test("exit code: 0 when all succeeded or were skipped, 1 when some failed, 130 when interrupted", () => {
  assertEquals(exitCodeForSummary(summary({ counts: counts({ provisioned: 5, skipped: 2 }) })), 0);
  assertEquals(exitCodeForSummary(summary({ counts: counts({ dryRun: 5 }) })), 0);
  assertEquals(exitCodeForSummary(summary()), 0);
  assertEquals(exitCodeForSummary(summary({ counts: counts({ provisioned: 5, failed: 1 }) })), 1);
  assertEquals(
    exitCodeForSummary(summary({ interrupted: true, counts: counts({ provisioned: 5, failed: 1 }) })),
    130,
  );
});

Deno.test("the summary lists counts, failures by reason (most first), rate, files and hints", () => {
  const text = renderSummary(
    summary({
      counts: counts({
        provisioned: 9_800,
        reconciled: 12,
        skipped: 120,
        failed: 48,
        byReason: { "throttled": 18, "user-not-found": 30, "attestation-rejected": 0 },
      }),
      fromEarlierAttempts: 1_234,
      elapsedMs: 3_720_000,
      resultsPath: "out/results.csv",
      failuresPath: "out/failures.csv",
    }),
    { rerunArgs: ["--tenant", "contoso.onmicrosoft.com"] },
  );
  assertEquals(
    text,
    [
      "Run r-20250102-abc finished in 1 h 02 min: 11,214 users",
      "  provisioned            9,800",
      "  reconciled                12",
      "  skipped                  120",
      "  failed                    48",
      "    user-not-found          30",
      "    throttled               18",
      "  from earlier attempts  1,234",
      "  rate                   161 users/min",
      "  results                out/results.csv",
      "  failures               out/failures.csv",
      "Re-run the failures: provisioning --tenant contoso.onmicrosoft.com --csv out/failures.csv",
      "Revoke the passkeys this run created: provisioning revoke --run r-20250102-abc",
      "",
    ].join("\n"),
  );
});

Deno.test("an interrupted run says how to resume; no hints for what did not happen", () => {
  const text = renderSummary(
    summary({ interrupted: true, elapsedMs: 3_400, counts: counts({ skipped: 1 }) }),
  );
  assert.match(text, /^Run r-20250102-abc stopped by Ctrl\+C after 3\.4 s: 1 user done\n/);
  assert.match(text, /Resume: run the same command again/);
  assert.ok(!text.includes("Re-run the failures"), text);
  assert.ok(!text.includes("revoke"), text);
});

Deno.test("a dry run says what would be provisioned and offers no revoke", () => {
  const text = renderSummary(summary({ counts: counts({ dryRun: 1_000, skipped: 3 }) }));
  assert.match(text, /would be provisioned \(dry run\) +1,000\n/);
  assert.ok(!/\bprovisioned +0/.test(text), text);
  assert.ok(!text.includes("revoke"), text);
});

Deno.test("hints quote paths for the shell and never show a secret given as an argument", () => {
  using _secret = redactValue("clientSecretValue123");
  const text = renderSummary(
    summary({ counts: counts({ failed: 1, byReason: { x: 1 } }), failuresPath: "my runs/it's failures.csv" }),
    {
      program: "deno task start",
      rerunArgs: ["--client-secret", "s3cret", "--note", "clientSecretValue123", "--token=abc.def"],
    },
  );
  assert.match(
    text,
    /Re-run the failures: deno task start --client-secret '\[redacted\]' --note '\[redacted\]' '--token=\[redacted\]' --csv 'my runs\/it'\\''s failures\.csv'\n/,
  );
  assert.ok(
    !text.includes("s3cret") && !text.includes("clientSecretValue123") && !text.includes("abc.def"),
    text,
  );
});

Deno.test("users per minute counts this attempt's users (counts never include earlier attempts)", () => {
  const resumed = summary({
    counts: counts({ provisioned: 600 }),
    fromEarlierAttempts: 500,
    elapsedMs: 30_000,
  });
  assertEquals(usersPerMinute(resumed), 1200);
  assertEquals(usersPerMinute(summary({ elapsedMs: 0 })), undefined);
  assert.ok(!renderSummary(summary({ elapsedMs: 0 })).includes("rate"));
});

Deno.test("the JSON summary is one line with the same facts and the exit code", () => {
  const line = renderSummaryJson(summary({
    counts: counts({ provisioned: 7, failed: 3, byReason: { b: 1, a: 1, c: 1 } }),
    elapsedMs: 45_000,
    resultsPath: "results.csv",
  }));
  assert.ok(line.endsWith("}\n") && line.indexOf("\n") === line.length - 1);
  deepStrictEqual(JSON.parse(line), {
    type: "summary",
    runId: "r-20250102-abc",
    interrupted: false,
    exitCode: 1,
    counts: { provisioned: 7, reconciled: 0, skipped: 0, dryRun: 0, failed: 3 },
    failedByReason: [{ code: "a", count: 1 }, { code: "b", count: 1 }, { code: "c", count: 1 }],
    fromEarlierAttempts: 0,
    elapsedMs: 45_000,
    usersPerMinute: 13.3,
    resultsPath: "results.csv",
    failuresPath: null,
  });
  assertEquals(summaryJson(summary({ elapsedMs: 0 })).usersPerMinute, null);
});

Deno.test("a dry run's summary does not offer its failures as a run to repeat, nor a revoke", () => {
  const text = renderSummary({
    runId: "r-dry",
    counts: {
      provisioned: 0,
      reconciled: 0,
      skipped: 0,
      dryRun: 7,
      failed: 1,
      byReason: { "user-not-found": 1 },
    },
    fromEarlierAttempts: 0,
    elapsedMs: 1000,
    interrupted: false,
    resultsPath: "/home/me/dry-run-results.csv",
    failuresPath: "/home/me/dry-run-failures.csv",
  });
  assert.match(text, /Would fail: see \/home\/me\/dry-run-failures\.csv; fix what the reasons say/);
  assert.doesNotMatch(text, /Re-run the failures|Revoke/);
  assert.match(text, /: 8 users\n/);
});
