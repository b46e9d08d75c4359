/**
 * Key preparation per policy, against the software key served over its CTAPHID Unix socket in
 * place of a USB key, opened through the hid plugin (`--device unix:PATH`).
 */
import assert from "node:assert/strict";
import { serveKey, withoutPinSupport } from "../authenticators/hid/_test_support.ts";
import { type HidKey, openKey } from "../authenticators/hid/keys.ts";
import { SecretPin, trivialPinReason } from "../authenticators/hid/pin_policy.ts";
import { hidAuthenticator } from "../authenticators/hid/plugin.ts";
import { type KeyPolicy, KeyPreparationError, prepareKey } from "../authenticators/hid/prepare.ts";
import { CtapHidCapability } from "../core/ctap/hid.ts";
import { PinUvAuthPermission } from "../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../core/ctap/status.ts";
import type { PluginContext } from "../core/plugin.ts";
import { scriptedUser } from "./software_key.ts";

function pluginContext(interaction = scriptedUser(), signal?: AbortSignal): PluginContext {
  return {
    interaction,
    env: () => undefined,
    readSecret: () => Promise.reject(new Error("no secrets in this test")),
    ...(signal ? { signal } : {}),
  };
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "provisioning-hid-prepare-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function prepare(
  key: HidKey,
  policy: KeyPolicy,
  extra: Partial<Parameters<typeof prepareKey>[0]> = {},
) {
  const notes: string[] = [];
  const report = await prepareKey({ key, policy, notify: (t) => notes.push(t), ...extra });
  return { report, notes };
}

Deno.test("a random PIN of the asked length is set, the minimum PIN length raised, the PIN change forced, and unsupported enterprise attestation reported", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "key");
    await using key = await hidAuthenticator.open(pluginContext(), { device: served.device }) as HidKey;
    const { report } = await prepare(key, {
      pin: { kind: "random", length: 6 },
      minPinLength: 8,
      forcePinChange: true,
      enterpriseAttestation: true,
    });
    assert.deepEqual(report.outcomes.map((o) => [o.feature, o.status]), [
      ["pin", "done"],
      ["min-pin-length", "done"],
      ["force-pin-change", "done"],
      ["enterprise-attestation", "unsupported"],
    ]);
    // The policy asked for 6 digits, its minimum is 8: the PIN follows the minimum.
    const pin = report.pin!.reveal();
    assert.match(pin, /^\d{8}$/);
    assert.equal(trivialPinReason(pin), undefined);
    assert.equal(report.pinSet, true);
    assert.equal(report.pinMustChange, true);
    assert.equal(report.minPinLength, 8);
    assert.ok(!JSON.stringify(report).includes(pin), "the report prints its PIN");
    const info = await key.ctap.getInfo({ refresh: true });
    assert.equal(info.forcePINChange, true);
    assert.equal(info.minPINLength, 8);
    // The key holds that PIN, and wants it changed before it gives a token.
    await assert.rejects(
      key.ctap.getPinToken({ pin, permissions: PinUvAuthPermission.credentialManagement }),
      (error: unknown) =>
        error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION,
    );
    await key.ctap.changePin(pin, "52094718");
  });
});

Deno.test("strict policy fails a key that lacks an asked-for feature before anything changes", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "key");
    await using key = await openKey(served.location);
    await assert.rejects(
      prepare(key, { pin: { kind: "random" }, enterpriseAttestation: true, strict: true }),
      (error: unknown) => {
        assert.ok(error instanceof KeyPreparationError);
        assert.equal(error.code, "feature-unsupported");
        assert.match(error.message, /lacks enterprise-attestation \(nothing was changed\)/);
        return true;
      },
    );
    assert.equal((await key.ctap.getInfo({ refresh: true })).options?.["clientPin"], false);
  });
});

Deno.test("a key without PIN support is refused when the policy sets a PIN, and says why", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "nopin", { wrap: withoutPinSupport });
    await using key = await openKey(served.location);
    await assert.rejects(prepare(key, { pin: { kind: "random" } }), (error: unknown) => {
      assert.ok(error instanceof KeyPreparationError);
      assert.equal(error.code, "pin-unsupported");
      assert.match(error.message, /cannot hold a PIN/);
      assert.deepEqual(error.outcomes.map((o) => [o.feature, o.status]), [["pin", "unsupported"]]);
      return true;
    });
    // Without a PIN in the policy it is prepared, and what it lacks is reported.
    const { report } = await prepare(key, { minPinLength: 8, forcePinChange: true });
    assert.deepEqual(report.outcomes.map((o) => [o.feature, o.status]), [
      ["min-pin-length", "unsupported"],
      ["force-pin-change", "unsupported"],
    ]);
  });
});

Deno.test("a key whose PIN is blocked is refused, and a factory reset makes it usable again", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "blocked", { pin: "83920174" });
    const state = served.key.store.read();
    await served.key.store.write({ ...state, pin: { ...state.pin!, retries: 0 } });
    await using key = await openKey(served.location);
    await assert.rejects(prepare(key, { pin: { kind: "random" } }), (error: unknown) => {
      assert.ok(error instanceof KeyPreparationError);
      assert.equal(error.code, "pin-blocked");
      assert.match(error.hint ?? "", /--reset/);
      return true;
    });
    const { report, notes } = await prepare(key, { reset: true, pin: { kind: "random" } });
    assert.deepEqual(report.outcomes.map((o) => [o.feature, o.status]), [["reset", "done"], ["pin", "done"]]);
    assert.match(notes[0]!, /Keys accept a reset only in the first seconds after they are plugged in/);
    assert.equal((await key.ctap.getPinRetries()).retries, 8);
  });
});

Deno.test("a reset outside the key's power-up window is refused with the re-plug instruction", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "old", {
      authenticator: { resetWindowMs: 0, now: () => Date.now() + 1 },
    });
    await using key = await openKey(served.location);
    await assert.rejects(prepare(key, { reset: true }), (error: unknown) => {
      assert.ok(error instanceof KeyPreparationError);
      assert.equal(error.code, "reset-window-passed");
      assert.match(error.hint ?? "", /Unplug the key, plug it in again, and touch it within 10 seconds/);
      return true;
    });
  });
});

Deno.test("keep-alives during the reset prompt a touch, and Ctrl+C in the middle cancels it; the key stays usable", async () => {
  await withDir(async (dir) => {
    let asked = 0;
    await using served = await serveKey(dir, "touch", {
      // A key waiting for a touch that never comes, until the request is cancelled.
      authenticator: {
        userPresence: ({ signal }) => {
          asked++;
          return new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
        },
      },
      hid: { keepaliveIntervalMs: 20 },
    });
    const ctrlC = new AbortController();
    const user = scriptedUser();
    const interaction = {
      ...user,
      promptUserPresence(label: string) {
        user.promptUserPresence(label);
        // The operator gives up after the third "touch your key".
        if (user.touchPrompts === 3) ctrlC.abort(new Error("Ctrl+C"));
      },
    };
    await using key = await openKey(served.location, { interaction, signal: ctrlC.signal });
    await assert.rejects(
      prepare(key, { reset: true }, { interaction }),
      (error: Error) => error.name === "AbortError",
    );
    assert.equal(user.touchPrompts, 3);
    assert.equal(asked, 1);
    // The channel is in sync again: a new request on a fresh client works.
    await using again = await openKey(served.location);
    assert.deepEqual((await again.ctap.getInfo()).versions, ["FIDO_2_0", "FIDO_2_1"]);
  });
});

Deno.test("a given PIN shorter than the key's minimum or trivial is refused without showing it", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "key");
    await using key = await openKey(served.location);
    await assert.rejects(
      prepare(key, { pin: { kind: "given", pin: new SecretPin("4821") }, minPinLength: 6 }),
      (error: Error & { code?: string }) => error.code === "pin-too-short" && !error.message.includes("4821"),
    );
    await assert.rejects(
      prepare(key, { pin: { kind: "given", pin: new SecretPin("13579135") } }),
      (error: Error & { code?: string }) =>
        error.code === "pin-trivial" && !error.message.includes("13579135"),
    );
    const { report } = await prepare(key, { pin: { kind: "given", pin: new SecretPin("48213967") } });
    assert.equal(report.pin?.reveal(), "48213967");
  });
});

Deno.test("a CTAP1/U2F-only device is refused with a clear message", async () => {
  await withDir(async (dir) => {
    await using served = await serveKey(dir, "u2f", { hid: { capabilities: CtapHidCapability.WINK } });
    await assert.rejects(
      hidAuthenticator.open(pluginContext(), { device: served.device }),
      (error: Error & { code?: string; hint?: string }) => {
        assert.equal(error.code, "ctap1-only-device");
        assert.match(error.message, /Cannot use security key at "unix:.*u2f.sock": .*speaks only CTAP1\/U2F/);
        assert.match(error.hint ?? "", /FIDO2/);
        return true;
      },
    );
  });
});
