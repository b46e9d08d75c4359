/**
 * Preparing a security key per the organisation's policy, before a passkey is written to it:
 * an optional factory reset, a PIN (random, or given), a minimum PIN length, enterprise
 * attestation, and a forced PIN change at first use.
 *
 * Every feature asked for ends as a {@link FeatureOutcome} in the report: done, already so,
 * deferred, or unsupported by this key — never silently skipped. What the key supports is read
 * from getInfo before anything changes, so `strict` fails a key untouched. A PIN asked for on a
 * key that cannot hold one always fails: the passkey would have no user verification.
 *
 * A forced PIN change makes the key refuse PIN tokens until the user picks a new PIN (CTAP 2.1
 * §6.5.5.7: PIN_POLICY_VIOLATION), so a run that still has to register and verify a passkey
 * asks for it with `deferForcePinChange` and applies it afterwards with
 * {@link applyForcePinChange}.
 *
 * @example
 * ```ts ignore
 * const report = await prepareKey({
 *   key, policy: { pin: { kind: "random", length: 8 }, minPinLength: 8, forcePinChange: true },
 *   notify: (text) => console.error(text), interaction,
 * });
 * await pinOutput.write({ user: "alice@contoso.com", pin: report.pin!.reveal(), ... });
 * ```
 *
 * @module
 */
import { formatAaguid } from "../../core/aaguid.ts";
import type { Ctap2Client } from "../../core/ctap/client.ts";
import type { GetInfoResponse } from "../../core/ctap/commands.ts";
import { PinUvAuthPermission } from "../../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../../core/ctap/status.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type { UserInteraction } from "../../core/plugin.ts";
import { checkGivenPin, randomPin, SecretPin } from "./pin_policy.ts";

/** What the organisation wants done to each key. */
export interface KeyPolicy {
  /** Factory-reset the key first: erases every passkey and the PIN. @default false */
  readonly reset?: boolean;
  /** Set a PIN: random digits, or the one given. Undefined leaves the PIN as it is. */
  readonly pin?: { readonly kind: "random"; readonly length?: number } | {
    readonly kind: "given";
    readonly pin: SecretPin;
  };
  /** Raise the key's minimum PIN length to this (authenticatorConfig). */
  readonly minPinLength?: number;
  /** Make the user choose a new PIN at first use (authenticatorConfig). @default false */
  readonly forcePinChange?: boolean;
  /** Enable enterprise attestation, where the key supports it. @default false */
  readonly enterpriseAttestation?: boolean;
  /** Fail a key that lacks an asked-for feature instead of reporting it. @default false */
  readonly strict?: boolean;
}

/** Length of random PINs when the policy does not say. */
export const defaultRandomPinLength = 8;

/** A policy feature. */
export type PolicyFeature =
  | "reset"
  | "pin"
  | "min-pin-length"
  | "enterprise-attestation"
  | "force-pin-change";

/** What became of one asked-for feature on one key. */
export interface FeatureOutcome {
  readonly feature: PolicyFeature;
  /** `done` now; `already` so before; `deferred` to {@link applyForcePinChange}; `unsupported` by the key. */
  readonly status: "done" | "already" | "deferred" | "unsupported";
  /** One line for the operator and the results file. Never a PIN. */
  readonly detail: string;
}

/** What preparing one key did. */
export interface PreparedKeyReport {
  readonly label: string;
  /** Lowercase UUID. */
  readonly aaguid: string;
  /** The PIN the key has now, when this run knows it (it set it, or was given it). */
  readonly pin: SecretPin | undefined;
  /** This run set or changed the PIN. */
  readonly pinSet: boolean;
  /** The key will make the user change the PIN at first use. */
  readonly pinMustChange: boolean;
  /** The key's minimum PIN length after preparation. */
  readonly minPinLength: number;
  readonly outcomes: readonly FeatureOutcome[];
}

/** Preparation failed; `outcomes` holds what was done before, and what was unsupported. */
export class KeyPreparationError extends ProvisioningError {
  readonly outcomes: readonly FeatureOutcome[];
  constructor(
    code: string,
    message: string,
    outcomes: readonly FeatureOutcome[],
    options: { cause?: unknown; hint?: string } = {},
  ) {
    super(code, message, options);
    this.outcomes = outcomes;
  }
}

/** What {@link prepareKey} works on. */
export interface PrepareKeyOptions {
  /** The key: its CTAP2 client and its name for messages. */
  readonly key: { readonly label: string; readonly ctap: Ctap2Client };
  readonly policy: KeyPolicy;
  /** The key's current PIN, when it has one and the run knows it (changePIN instead of setPIN). */
  readonly currentPin?: SecretPin | undefined;
  /** Leave the forced PIN change for {@link applyForcePinChange} (a passkey is still to be made). */
  readonly deferForcePinChange?: boolean;
  /** Explanations for the operator (the reset's touch rule). @default nothing */
  readonly notify?: (text: string) => void;
  /** Touch prompts during the reset. */
  readonly interaction?: UserInteraction;
  /** The key was plugged in moments ago (a key station saw it arrive). @default false */
  readonly freshlyInserted?: boolean;
  readonly signal?: AbortSignal;
}

interface Support {
  pin: boolean;
  config: boolean;
  enterpriseAttestation: "enabled" | "supported" | "unsupported";
}

function supportOf(info: GetInfoResponse): Support {
  const options = info.options ?? {};
  return {
    pin: "clientPin" in options,
    config: options["setMinPINLength"] === true && options["authnrCfg"] === true,
    enterpriseAttestation: options["ep"] === true ? "enabled" : "ep" in options ? "supported" : "unsupported",
  };
}

/** The explanation a reset needs: what it erases, and the touch-within-seconds rule. */
export function resetExplanation(label: string, freshlyInserted: boolean): string {
  return `Factory reset of ${label}: it erases every passkey on the key and its PIN. ` +
    `Keys accept a reset only in the first seconds after they are plugged in (10 s on most) and ` +
    `only with a touch: ${
      freshlyInserted ? "touch the key now" : "unplug it, plug it in again, and touch it as soon as it blinks"
    }.`;
}

/**
 * Prepares one key per `policy`; see the module documentation.
 *
 * @throws {KeyPreparationError} `pin-unsupported`, `feature-unsupported` (strict), `pin-already-set`,
 * `pin-blocked`, `reset-window-passed`, `reset-not-confirmed`, `pin-policy-violation`, or the
 * PIN checks of {@link checkGivenPin}; never with a PIN in the message.
 */
export async function prepareKey(options: PrepareKeyOptions): Promise<PreparedKeyReport> {
  const { key, policy } = options;
  const { label, ctap } = key;
  const outcomes: FeatureOutcome[] = [];
  const fail = (code: string, message: string, extra: { cause?: unknown; hint?: string } = {}): never => {
    throw new KeyPreparationError(code, `Cannot prepare ${label}: ${message}`, outcomes, extra);
  };

  let info = await ctap.getInfo({ refresh: true });
  const support = supportOf(info);

  // What the key cannot do, decided before anything changes.
  const wantsConfig = policy.minPinLength !== undefined || policy.forcePinChange === true;
  if (policy.pin && !support.pin) {
    outcomes.push({ feature: "pin", status: "unsupported", detail: "the key has no PIN (clientPin)" });
    fail("pin-unsupported", "it cannot hold a PIN (its getInfo lists no clientPin option)", {
      hint: "Use a FIDO2 key with PIN support; a passkey without user verification is refused",
    });
  }
  const unsupported: FeatureOutcome[] = [];
  if (policy.minPinLength !== undefined && !support.config) {
    unsupported.push({
      feature: "min-pin-length",
      status: "unsupported",
      detail: "the key has no authenticatorConfig setMinPINLength",
    });
  }
  if (policy.forcePinChange && !support.config) {
    unsupported.push({
      feature: "force-pin-change",
      status: "unsupported",
      detail: "the key has no authenticatorConfig setMinPINLength (forceChangePin)",
    });
  }
  if (policy.enterpriseAttestation && support.enterpriseAttestation === "unsupported") {
    unsupported.push({
      feature: "enterprise-attestation",
      status: "unsupported",
      detail: "the key lists no ep option",
    });
  }
  if (policy.strict && unsupported.length > 0) {
    outcomes.push(...unsupported);
    fail(
      "feature-unsupported",
      `it lacks ${unsupported.map((o) => o.feature).join(", ")} (nothing was changed)`,
      { hint: "Use keys that support authenticatorConfig, or drop --strict to go on and report it" },
    );
  }

  let pinKnown = options.currentPin;
  let pinSet = false;

  if (policy.reset) {
    options.notify?.(resetExplanation(label, options.freshlyInserted ?? false));
    try {
      await ctap.reset({
        ...(options.signal ? { signal: options.signal } : {}),
        onKeepalive: (status) => {
          if (status === "user-presence-needed") options.interaction?.promptUserPresence(label);
        },
      });
    } catch (error) {
      if (error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_NOT_ALLOWED) {
        fail(
          "reset-window-passed",
          "the key accepts a reset only in the first seconds after it is plugged in",
          {
            cause: error,
            hint: "Unplug the key, plug it in again, and touch it within 10 seconds",
          },
        );
      }
      if (
        error instanceof CtapError &&
        (error.status === CtapStatus.CTAP2_ERR_OPERATION_DENIED ||
          error.status === CtapStatus.CTAP2_ERR_USER_ACTION_TIMEOUT ||
          error.status === CtapStatus.CTAP2_ERR_ACTION_TIMEOUT)
      ) {
        fail("reset-not-confirmed", "the reset was not confirmed by a touch", {
          cause: error,
          hint: "Touch the key when it blinks, within 10 seconds of plugging it in",
        });
      }
      throw error;
    }
    outcomes.push({ feature: "reset", status: "done", detail: "factory reset" });
    pinKnown = undefined;
    info = await ctap.getInfo({ refresh: true });
  }

  const keyMin = info.minPINLength ?? 4;
  const target = Math.max(keyMin, policy.minPinLength ?? 0);
  const hasPin = info.options?.["clientPin"] === true;

  if (hasPin) {
    const { retries } = await ctap.getPinRetries();
    if (retries === 0) {
      fail("pin-blocked", "its PIN is blocked (no attempts left)", {
        hint: "Only a factory reset makes the key usable again (--reset), which erases its passkeys",
      });
    }
  }

  if (policy.pin) {
    let next: SecretPin;
    if (policy.pin.kind === "random") {
      next = randomPin(Math.max(policy.pin.length ?? defaultRandomPinLength, target));
    } else {
      next = policy.pin.pin;
      checkGivenPin(next, target, label);
    }
    try {
      if (hasPin) {
        if (!pinKnown) {
          fail("pin-already-set", "the key has a PIN already, and this run does not know it", {
            hint: "Reset the key (--reset), or give its current PIN",
          });
        }
        await ctap.changePin(pinKnown!.reveal(), next.reveal());
        outcomes.push({ feature: "pin", status: "done", detail: `PIN changed (${next.length} characters)` });
      } else {
        await ctap.setPin(next.reveal());
        outcomes.push({ feature: "pin", status: "done", detail: `PIN set (${next.length} characters)` });
      }
    } catch (error) {
      if (error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_POLICY_VIOLATION) {
        fail("pin-policy-violation", `the key refused the new PIN under its PIN policy (minimum ${keyMin})`, {
          cause: error,
        });
      }
      if (error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_INVALID) {
        fail("pin-invalid", "the current PIN given for it is wrong", { cause: error });
      }
      throw error;
    }
    pinKnown = next;
    pinSet = true;
  } else if (hasPin && pinKnown === undefined && (wantsConfig || policy.enterpriseAttestation)) {
    fail("pin-unknown", "changing its settings needs its PIN, which this run does not know", {
      hint: "Give the key's PIN, or let the policy set one",
    });
  }

  const configToken = async () => {
    if (!pinKnown) {
      return fail("pin-not-set", "changing its settings needs a PIN on the key", {
        hint: "Let the policy set a PIN (--pin-length or --pin)",
      });
    }
    return await ctap.getPinToken({
      pin: pinKnown.reveal(),
      permissions: PinUvAuthPermission.authenticatorConfiguration,
    });
  };

  let minPinLength = keyMin;
  if (policy.minPinLength !== undefined && support.config) {
    if (keyMin >= policy.minPinLength) {
      outcomes.push({
        feature: "min-pin-length",
        status: "already",
        detail: `the key's minimum PIN length is ${keyMin}`,
      });
    } else {
      await ctap.setMinPinLength(await configToken(), { newMinPINLength: policy.minPinLength });
      minPinLength = policy.minPinLength;
      outcomes.push({
        feature: "min-pin-length",
        status: "done",
        detail: `minimum PIN length raised from ${keyMin} to ${policy.minPinLength}`,
      });
    }
  }

  if (policy.enterpriseAttestation && support.enterpriseAttestation !== "unsupported") {
    if (support.enterpriseAttestation === "enabled") {
      outcomes.push({ feature: "enterprise-attestation", status: "already", detail: "already enabled" });
    } else {
      await ctap.enableEnterpriseAttestation(await configToken());
      outcomes.push({ feature: "enterprise-attestation", status: "done", detail: "enabled" });
    }
  }

  let pinMustChange = (await ctap.getInfo({ refresh: true })).forcePINChange ?? false;
  if (policy.forcePinChange && support.config) {
    if (options.deferForcePinChange) {
      outcomes.push({
        feature: "force-pin-change",
        status: "deferred",
        detail: "to be set once the passkey is registered",
      });
    } else {
      await ctap.setMinPinLength(await configToken(), { forceChangePin: true });
      pinMustChange = true;
      outcomes.push({ feature: "force-pin-change", status: "done", detail: "the user must change the PIN" });
    }
  }
  outcomes.push(...unsupported);

  return {
    label,
    aaguid: formatAaguid(info.aaguid),
    pin: pinKnown,
    pinSet,
    pinMustChange,
    minPinLength,
    outcomes,
  };
}

/**
 * Sets forceChangePin on a prepared key (the deferred last step of {@link prepareKey}): the key
 * then refuses its PIN until the user changes it.
 */
export async function applyForcePinChange(
  key: { readonly label: string; readonly ctap: Ctap2Client },
  pin: SecretPin,
): Promise<void> {
  const token = await key.ctap.getPinToken({
    pin: pin.reveal(),
    permissions: PinUvAuthPermission.authenticatorConfiguration,
  });
  await key.ctap.setMinPinLength(token, { forceChangePin: true });
}
