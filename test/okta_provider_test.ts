/**
 * The Okta provider on its sandbox org, over real HTTP on loopback, with a real software key and
 * the sandbox verifying every activation with @simplewebauthn/server: one user through the
 * WebAuthn client, bulk runs through the engine (50 users at concurrency 8, re-runs, an aborted
 * run resumed), throttling fed to the shared pacer, and the reasons of a user not found, a policy
 * refusal and a bad token.
 */
import { assert, assertEquals, deepStrictEqual } from "./assert.ts";
import { exportJWK, generateKeyPair } from "jose";
import { newTestKey, scriptedUser } from "./software_key.ts";
import { readOutput } from "./bulk_support.ts";
import { formatAaguid } from "../core/aaguid.ts";
import { ProvisioningError } from "../core/errors.ts";
import { runBulk } from "../core/jobs/engine.ts";
import type { JobEvent } from "../core/jobs/events.ts";
import { openJournal } from "../core/jobs/journal.ts";
import { openFailuresFile } from "../core/jobs/output/failures.ts";
import { openResultsFile } from "../core/jobs/output/results.ts";
import { provisionUser } from "../core/jobs/provision_user.ts";
import { AdaptivePacer } from "../core/jobs/rate.ts";
import { readUsersFromList } from "../core/jobs/sources/csv.ts";
import { sleep } from "../core/sleep.ts";
import type { PluginContext, ProviderSession, RequestPacer } from "../core/plugin.ts";
import { apiToken, OktaApi } from "../plugins/okta/api.ts";
import { oktaProvider, oktaTokenEnv } from "../plugins/okta/plugin.ts";
import { OktaSession } from "../plugins/okta/session.ts";
import {
  type OktaSandbox,
  type OktaSandboxOptions,
  startOktaSandbox,
} from "../plugins/okta/sandbox/server.ts";

const pin = "482916";
/** What the sandbox names an activated factor (`profile.authenticatorName`); the runs use it as their display name. */
const authenticatorName = "Security Key";

function context(sandbox: OktaSandbox, pacer?: RequestPacer, token = sandbox.token): PluginContext {
  return {
    interaction: scriptedUser([pin]),
    env: (name) => (name === oktaTokenEnv ? token : undefined),
    readSecret: () => Promise.reject(new Error("no secret expected")),
    ...(pacer ? { pacer } : {}),
  };
}

interface World extends AsyncDisposable {
  sandbox: OktaSandbox;
  session: ProviderSession;
  dir: string;
  logins: string[];
}

async function world(options: OktaSandboxOptions & { pacer?: RequestPacer } = {}): Promise<World> {
  const sandbox = await startOktaSandbox({ users: 12, authenticatorName, ...options });
  const session = await oktaProvider.connect(context(sandbox, options.pacer), { oktaOrg: sandbox.url });
  const dir = await Deno.makeTempDir({ prefix: "okta-test-" });
  const logins = [...sandbox.org.users.values()].map((u) => u.profile.login);
  return {
    sandbox,
    session,
    dir,
    logins,
    async [Symbol.asyncDispose]() {
      await session[Symbol.asyncDispose]();
      await sandbox.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function run(
  w: World,
  users: string[],
  options: { journal?: string; concurrency?: number; abort?: AbortSignal; onEvent?: (e: JobEvent) => void } =
    {},
) {
  await using key = await newTestKey({ pin });
  const aaguid = formatAaguid((await key.client.getInfo()).aaguid);
  await using results = await openResultsFile(`${w.dir}/results.csv`, { fresh: true });
  await using failures = await openFailuresFile(`${w.dir}/failures.csv`, { fresh: true });
  await using journal = await openJournal(`${w.dir}/${options.journal ?? "run"}.jsonl`, {
    runId: "0123456789ab",
    fingerprint: "okta",
  });
  const summary = await runBulk({
    runId: "0123456789ab",
    source: readUsersFromList(users),
    session: w.session,
    authenticator: key,
    authenticatorAaguid: aaguid,
    interaction: scriptedUser([pin]),
    displayName: authenticatorName,
    concurrency: options.concurrency ?? 3,
    journal,
    results,
    failures,
    retryDelayMs: 10,
    ...(options.abort ? { abort: options.abort } : {}),
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  await results.close();
  await failures.close();
  return {
    summary,
    results: await readOutput(`${w.dir}/results.csv`),
    failures: await readOutput(`${w.dir}/failures.csv`),
  };
}

/** Each login's count of ACTIVE factors, every one verified by the sandbox's verifier. */
function factorCounts(sandbox: OktaSandbox): Map<string, number> {
  const counts = new Map<string, number>();
  for (const [login, factors] of sandbox.org.activeFactorsByLogin()) {
    assert.ok(factors.every((f) => f.verified), `${login}: every factor verified`);
    counts.set(login, factors.length);
  }
  return counts;
}

Deno.test("okta: one user gets a passkey through the WebAuthn client; it lists, and deletes", async () => {
  await using w = await world();
  await using key = await newTestKey({ pin });
  const login = w.logins[0]!;
  const done = await provisionUser({
    session: w.session,
    user: login,
    authenticator: key,
    interaction: scriptedUser([pin]),
    displayName: authenticatorName,
  });
  assertEquals(done.origin, w.sandbox.url, "the origin is the org URL");
  assertEquals(done.rpId, "127.0.0.1", "the rp id is the org's host: Okta's activation names none");
  const factors = w.sandbox.org.activeFactorsByLogin().get(login)!;
  assertEquals(factors.length, 1);
  assert.ok(factors[0]!.verified);
  assertEquals(factors[0]!.profile?.credentialId, done.credentialId);
  assertEquals(factors[0]!.aaguid, done.aaguid);

  const listed = await w.session.listPasskeys(done.user);
  deepStrictEqual(listed.map((m) => m.id), [done.methodId]);
  await w.session.deletePasskey(done.user, done.methodId);
  assertEquals((await w.session.listPasskeys(done.user)).length, 0);
});

Deno.test("okta: 50 users at concurrency 8 get exactly one factor each; re-runs skip them", async () => {
  await using w = await world({ users: 50 });
  const first = await run(w, w.logins, { concurrency: 8 });
  assertEquals(first.summary.counts.provisioned, 50, JSON.stringify(first.failures.slice(0, 3)));
  const counts = factorCounts(w.sandbox);
  assertEquals(counts.size, 50);
  assert.ok([...counts.values()].every((n) => n === 1));

  // The same journal: nothing is redone.
  const again = await run(w, w.logins, { concurrency: 8 });
  assertEquals(again.summary.counts.provisioned, 0);
  assertEquals(again.results.length, 50);
  // A fresh journal: the engine asks Okta and skips each user who holds a matching factor.
  const fresh = await run(w, w.logins, { concurrency: 8, journal: "fresh" });
  assertEquals(fresh.summary.counts.skipped, 50);
  assert.ok([...factorCounts(w.sandbox).values()].every((n) => n === 1));
});

Deno.test("okta: a run aborted mid-way and resumed ends with exactly one factor each", async () => {
  await using w = await world({ users: 30 });
  const abort = new AbortController();
  let verified = 0;
  const interrupted = await run(w, w.logins, {
    concurrency: 8,
    abort: abort.signal,
    onEvent: (event) => {
      if (event.type === "user-state" && event.state === "verified" && ++verified === 10) {
        abort.abort(new Error("operator pulled the plug"));
      }
    },
  });
  assert.ok(interrupted.summary.counts.provisioned < 30, "the run stopped before the end");
  const resumed = await run(w, w.logins, { concurrency: 8 });
  const total = interrupted.summary.counts.provisioned + resumed.summary.counts.provisioned +
    resumed.summary.counts.reconciled;
  assert.ok(total >= 30 - resumed.summary.counts.skipped);
  assertEquals(resumed.failures.length, 0, JSON.stringify(resumed.failures.slice(0, 3)));
  const counts = factorCounts(w.sandbox);
  assertEquals(counts.size, 30);
  assert.ok([...counts.entries()].every(([, n]) => n === 1), JSON.stringify([...counts]));
});

Deno.test("okta: 429s with X-Rate-Limit-Reset are waited out through the shared pacer", async () => {
  const throttles: number[] = [];
  const pacer = new AdaptivePacer({ onThrottled: (info) => throttles.push(info.retryAfterMs) });
  await using w = await world({ users: 20, rateLimit: 15, rateWindowMs: 1000, pacer });
  const outcome = await run(w, w.logins, { concurrency: 8 });
  assertEquals(outcome.summary.counts.provisioned, 20, JSON.stringify(outcome.failures.slice(0, 3)));
  assert.ok(w.sandbox.org.throttled > 0, "the sandbox did throttle");
  assert.ok(throttles.length > 0, "the pacer was told");
  // From the headers: a 1 s window whose reset is rounded up to a second, less a `Date` of second
  // precision (which the server may cache for up to a second): never more than 4 s, never the 60 s cap.
  assert.ok(throttles.every((ms) => ms >= 0 && ms <= 4000), `waits from the reset header: ${throttles}`);
  assert.ok([...factorCounts(w.sandbox).values()].every((n) => n === 1));
});

Deno.test("okta: a user not found and a policy refusal fail with clear reasons; the others are provisioned", async () => {
  await using w = await world({ users: 3 });
  const [ok, refused] = w.logins;
  w.sandbox.org.settings.refusedLogins.add(refused!);
  const outcome = await run(w, [ok!, refused!, "ghost@example.com"]);
  assertEquals(outcome.summary.counts.provisioned, 1);
  const reasons = Object.fromEntries(outcome.failures.map((r) => [r["user"], r["reason code"]]));
  deepStrictEqual(reasons, { [refused!]: "factor-not-allowed", "ghost@example.com": "user-not-found" });
  const messages = outcome.failures.map((r) => r["message"] ?? "").join("\n");
  assert.ok(messages.includes("E0000007"), messages);
  assert.ok(messages.includes("E0000001") && messages.includes("enrollment policy"), messages);
});

Deno.test("okta: a wrong API token is `unauthorized` with what to do, and the token is in no message", async () => {
  await using sandbox = await startOktaSandbox({ users: 1 });
  const session = await oktaProvider.connect(context(sandbox, undefined, "not-the-token"), {
    oktaOrg: sandbox.url,
  });
  const error = await session.resolveUser("user1@example.com").then(() => undefined, (e) => e);
  assert.ok(error instanceof ProvisioningError);
  assertEquals(error.code, "unauthorized");
  assert.ok(error.message.includes("E0000011"), error.message);
  assert.ok(error.hint?.includes(oktaTokenEnv));
  assert.ok(!error.message.includes("not-the-token") && !error.message.includes(sandbox.token));
});

Deno.test("okta: group members are read page by page through the Link header", async () => {
  await using w = await world({ users: 450 });
  const group = w.sandbox.org.addGroup("Engineering", w.logins.slice(0, 430));
  w.sandbox.org.addGroup("Engineering Managers", w.logins.slice(430));
  const byName: string[] = [];
  for await (const user of w.session.listGroupMembers!("Engineering")) byName.push(user.userPrincipalName);
  deepStrictEqual(byName, w.logins.slice(0, 430));
  let byId = 0;
  for await (const _ of w.session.listGroupMembers!(group.id)) byId++;
  assertEquals(byId, 430);
  const missing = await (async () => {
    for await (const _ of w.session.listGroupMembers!("Nobody")) break;
  })().then(() => undefined, (e) => e);
  assertEquals(missing?.code, "group-not-found");
});

Deno.test("okta: a journal left in `created` is reconciled when the activation got through, enrolled anew when not", async () => {
  await using w = await world({ users: 2 });
  const [through, lost] = w.logins;
  // An earlier attempt: "through" was activated but died before journaling it; "lost" died
  // between the key and the activation (its factor stays PENDING_ACTIVATION).
  {
    await using journal = await openJournal(`${w.dir}/run.jsonl`, {
      runId: "0123456789ab",
      fingerprint: "okta",
    });
    await using key = await newTestKey({ pin });
    for (const login of [through!, lost!]) {
      const user = await w.session.resolveUser(login);
      await journal.append({
        k: login,
        s: "resolved",
        userId: user.id,
        upn: user.userPrincipalName,
        ref: login,
      });
      await provisionUser({
        session: w.session,
        user,
        authenticator: key,
        interaction: scriptedUser([pin]),
        displayName: authenticatorName,
        onTransition: async (t) => {
          if (t.state === "created") {
            await journal.append({
              k: login,
              s: "created",
              credentialId: t.credentialId,
              existing: [],
              displayName: t.displayName,
              createdAt: t.createdAt.toISOString(),
            });
            if (login === lost) throw new Error("power cut");
          }
          if (t.state === "registered") throw new Error("power cut");
        },
      }).catch((error) => {
        if (!(error instanceof Error && error.message === "power cut")) throw error;
      });
    }
  }
  assertEquals(factorCounts(w.sandbox).get(through!), 1);
  assertEquals(factorCounts(w.sandbox).get(lost!), undefined);

  const resumed = await run(w, [through!, lost!]);
  const statuses = Object.fromEntries(resumed.results.map((r) => [r["user"], r["status"]]));
  deepStrictEqual(statuses, { [through!]: "reconciled", [lost!]: "provisioned" });
  assertEquals(factorCounts(w.sandbox).get(through!), 1);
  assertEquals(factorCounts(w.sandbox).get(lost!), 1);
  // The factor the lost attempt left PENDING_ACTIVATION is gone: only the new, active one remains.
  const lostUser = w.sandbox.org.userByLogin(lost!)!;
  deepStrictEqual(w.sandbox.org.factorsOf(lostUser.id).map((f) => f.status), ["ACTIVE"]);
});

Deno.test("okta: a bulk run SIGKILLed mid-way and resumed ends with exactly one factor each", async () => {
  await using w = await world({ users: 40 });
  const journal = `${w.dir}/killed.jsonl`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-q",
      "--allow-net=127.0.0.1",
      "--allow-read",
      `--allow-write=${w.dir}`,
      `--allow-env=${oktaTokenEnv}`,
      new URL("../plugins/okta/test_support/bulk_child.ts", import.meta.url).pathname,
      w.sandbox.url,
      journal,
      w.dir,
      "40",
    ],
    env: { [oktaTokenEnv]: w.sandbox.token, DENO_NO_UPDATE_CHECK: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Kill it while users are in flight: once 12 activations went through.
  while (w.sandbox.org.activations < 12) {
    const exited = await Promise.race([child.status.then(() => true), sleep(5).then(() => false)]);
    if (exited) break;
  }
  child.kill("SIGKILL");
  const status = await child.status;
  const stderr = new TextDecoder().decode(
    (await child.output().catch(() => ({ stderr: new Uint8Array() }))).stderr,
  );
  assertEquals(status.signal, "SIGKILL", `the child ran until killed: ${stderr}`);
  const before = w.sandbox.org.activations;
  assert.ok(before >= 12 && before < 40, `killed mid-way (${before} activations)`);

  const resumed = await run(w, w.logins, { concurrency: 8, journal: "killed" });
  assertEquals(resumed.failures.length, 0, JSON.stringify(resumed.failures.slice(0, 3)));
  const counts = factorCounts(w.sandbox);
  assertEquals(counts.size, 40);
  assert.ok([...counts.values()].every((n) => n === 1), JSON.stringify([...counts]));
  assertEquals(w.sandbox.org.activations, 40, "no user was activated twice");
});

for (const requireDpop of [true, false]) {
  Deno.test(`okta: a service app signs in with private_key_jwt${requireDpop ? " and DPoP (nonce round trip)" : ""} and registers a user`, async () => {
    const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
    const publicJwk = { ...await exportJWK(publicKey), kid: "k1", alg: "RS256" };
    const wrong = await generateKeyPair("RS256", { extractable: true });
    await using sandbox = await startOktaSandbox({
      users: 1,
      serviceApp: { clientId: "0oaservice", publicKey: publicJwk, requireDpop },
    });
    const dir = await Deno.makeTempDir({ prefix: "okta-key-" });
    try {
      const keyFile = `${dir}/key.json`;
      await Deno.writeTextFile(
        keyFile,
        JSON.stringify({ ...await exportJWK(privateKey), kid: "k1", alg: "RS256" }),
      );
      const noToken: PluginContext = { ...context(sandbox), env: () => undefined };
      const options = { oktaOrg: sandbox.url, oktaClientId: "0oaservice", oktaPrivateKey: keyFile };
      await using session = await oktaProvider.connect(noToken, options);
      await using key = await newTestKey({ pin });
      const done = await provisionUser({
        session,
        user: "user1@example.com",
        authenticator: key,
        interaction: scriptedUser([pin]),
        displayName: authenticatorName,
      });
      assertEquals((await session.listPasskeys(done.user)).length, 1);
      // With DPoP: exactly one `use_dpop_nonce` answer, then a DPoP-bound token (a Bearer use of it is refused).
      assertEquals(sandbox.org.dpopNonceChallenges, requireDpop ? 1 : 0);

      // The token in the environment as well: refused instead of silently picking one.
      const both = await oktaProvider.connect(context(sandbox), options).then(() => undefined, (e) => e);
      assertEquals(both?.code, "usage");
      // A key the app does not know: `unauthorized` at the first request, naming the app.
      await Deno.writeTextFile(
        keyFile,
        JSON.stringify({ ...await exportJWK(wrong.privateKey), alg: "RS256" }),
      );
      await using rejected = await oktaProvider.connect(noToken, options);
      const error = await rejected.resolveUser("user1@example.com").then(() => undefined, (e) => e);
      assertEquals(error?.code, "unauthorized");
      assert.ok(
        String(error?.message).includes("0oaservice") && String(error?.message).includes("invalid_client"),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("okta: an activation whose answer is lost is found by listing, never activated twice", async () => {
  await using sandbox = await startOktaSandbox({ users: 6, authenticatorName });
  sandbox.org.loseActivationAnswers = 2;
  const api = new OktaApi({
    orgUrl: sandbox.url,
    credential: apiToken(sandbox.token),
    requestTimeoutMs: 1000,
  });
  const dir = await Deno.makeTempDir({ prefix: "okta-test-" });
  const w: World = {
    sandbox,
    session: new OktaSession(api),
    dir,
    logins: [...sandbox.org.users.values()].map((u) => u.profile.login),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
  await using _ = w;
  const outcome = await run(w, w.logins, { concurrency: 3 });
  assertEquals(outcome.failures.length, 0, JSON.stringify(outcome.failures));
  assertEquals(outcome.summary.counts.provisioned + outcome.summary.counts.reconciled, 6);
  assertEquals(sandbox.org.loseActivationAnswers, 0, "both answers were lost");
  assertEquals(sandbox.org.activations, 6, "no second activation for a lost answer");
  assert.ok([...factorCounts(sandbox).values()].every((n) => n === 1));
  const reconciled = outcome.results.filter((r) => r["status"] === "reconciled").length;
  assertEquals(reconciled + outcome.results.filter((r) => r["status"] === "provisioned").length, 6);
});
