/**
 * The organisation's key policy on the command line, shared by `key prepare` (one key by hand)
 * and bulk runs over security keys (`provisioning --csv users.csv --authenticator hid`): factory
 * reset, the PIN (random, asked, or kept), minimum PIN length, forced PIN change, enterprise
 * attestation, strictness, and where new PINs go (`--pin-output`, optionally encrypted with
 * `--pin-recipient`). PINs are never printed: a policy that sets one needs a PIN file.
 *
 * @module
 */
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { UsageError } from "../errors.ts";
import { loadPinRecipient, PinOutputFile } from "../jobs/output/pin_output.ts";
import type { KeyPreparationPolicy } from "../plugin.ts";
import type { CliContext } from "./context.ts";
import { newKeyPinEnv } from "./pin.ts";

/** Adds the policy options to `command`; `defaultNewPin` is `random` for `key prepare`, `keep` for bulk runs. */
export function withKeyPolicyOptions<C extends CommandUnknownOpts>(
  command: C,
  defaultNewPin: "random" | "keep",
): C {
  command
    .option(
      "--reset",
      "factory-reset the key first (erases its passkeys; touch within seconds of plugging in)",
    )
    .option("--new-pin <mode>", `random, ask (or ${newKeyPinEnv}), or keep`, defaultNewPin)
    .option("--pin-length <n>", "digits of a random PIN (raised to the key's and policy's minimum)", "8")
    .option("--min-pin-length <n>", "raise the key's minimum PIN length (authenticatorConfig)")
    .option("--force-pin-change", "make the user change the PIN at first use (authenticatorConfig)")
    .option("--enterprise-attestation", "enable enterprise attestation where the key supports it")
    .option("--strict", "fail a key that lacks an asked-for feature instead of reporting it")
    .option("--pin-output <file>", "append new PINs to this file (created 0600); never printed")
    .option("--pin-recipient <key-file>", "encrypt PIN records to this public key (JWK or PEM): JWE");
  return command;
}

/** The policy the parsed options ask for; `--new-pin ask` asks twice (or reads PROVISIONING_NEW_KEY_PIN). */
export async function keyPolicyFrom(
  context: CliContext,
  options: Record<string, unknown>,
): Promise<KeyPreparationPolicy> {
  const mode = String(options["newPin"] ?? "random");
  let pin: KeyPreparationPolicy["pin"];
  if (mode === "random") {
    pin = { kind: "random", length: positiveInt(options["pinLength"], "--pin-length", 4) ?? 8 };
  } else if (mode === "ask") {
    const given = context.env(newKeyPinEnv) || await askNewPin(context);
    pin = { kind: "given", pin: given };
  } else if (mode !== "keep") {
    throw new UsageError(`Cannot use --new-pin "${mode}": expected random, ask or keep`);
  }
  const minPinLength = positiveInt(options["minPinLength"], "--min-pin-length", 4);
  return {
    ...(options["reset"] ? { reset: true } : {}),
    ...(pin ? { pin } : {}),
    ...(minPinLength === undefined ? {} : { minPinLength }),
    ...(options["forcePinChange"] ? { forcePinChange: true } : {}),
    ...(options["enterpriseAttestation"] ? { enterpriseAttestation: true } : {}),
    ...(options["strict"] ? { strict: true } : {}),
  };
}

/**
 * Opens `--pin-output` (encrypted to `--pin-recipient` when given). A policy that sets a PIN
 * without a PIN file is refused: the PIN would be lost, as PINs are never printed.
 */
export async function openPinOutputFrom(
  options: Record<string, unknown>,
  policy: KeyPreparationPolicy,
): Promise<{ file: PinOutputFile | undefined; recipient: string | undefined }> {
  const path = options["pinOutput"] as string | undefined;
  if (policy.pin && !path) {
    throw new UsageError("Cannot set key PINs: the new PIN would be lost, as PINs are never printed", {
      hint: "Give --pin-output FILE (and --pin-recipient KEY to encrypt it), or --new-pin keep",
    });
  }
  const recipientPath = options["pinRecipient"] as string | undefined;
  if (recipientPath && !path) throw new UsageError("Cannot use --pin-recipient without --pin-output");
  const recipient = recipientPath ? await loadPinRecipient(recipientPath) : undefined;
  const file = path ? await PinOutputFile.open(path, recipient ? { recipient } : {}) : undefined;
  return { file, recipient: recipient?.source };
}

function positiveInt(value: unknown, flag: string, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > 63) {
    throw new UsageError(`Cannot use ${flag} "${String(value)}": expected a whole number from ${min} to 63`);
  }
  return n;
}

async function askNewPin(context: CliContext): Promise<string> {
  const pin = await context.readSecret({
    label: "New PIN for the security key",
    hint: `Set ${newKeyPinEnv}`,
  });
  const again = await context.readSecret({ label: "Repeat the new PIN", hint: `Set ${newKeyPinEnv}` });
  if (pin !== again) throw new UsageError("Cannot set the PIN: the two entries differ");
  return pin;
}
