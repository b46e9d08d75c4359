/**
 * `batch write`: the key station's step, offline. For each user of the batch with a challenge and
 * no key yet, the station lends a prepared key (PIN per policy), the key makes the credential for
 * the stored challenge, a test assertion proves it holds it, the key is finished (a forced PIN
 * change) and the registration is journaled — all without the provider: no admin session, no
 * network. `batch register` sends the registrations later.
 *
 * One user at a time, in the order of the source's rows. Before a key is touched the journal says `writing`:
 * after a crash the operator is told that the key in use then may hold a credential that was never
 * journaled (the station refuses it as reused until it is reset). A user whose challenge has
 * expired is left out (`batch fetch` renews it).
 *
 * @module
 */
import { ProvisioningError } from "../../errors.ts";
import type { AuthenticatorStation } from "../../plugin.ts";
import { create } from "../../webauthn/create.ts";
import { parseCreationOptions } from "../../webauthn/json.ts";
import { effectiveRpId } from "../../webauthn/rp_id.ts";
import { haltingReasons } from "../engine.ts";
import type { PinRecord } from "../output/pin_output.ts";
import { checkWithTestAssertion } from "../test_assertion.ts";
import { batchPhase, challengeExpires, type OpenBatch } from "./batch_file.ts";
import type { BatchUserEvent } from "./fetch.ts";

/** What {@link writeBatchKeys} needs. */
export interface WriteBatchOptions {
  readonly batch: OpenBatch;
  /** Lends one prepared key per user (`--authenticator hid`). */
  readonly station: AuthenticatorStation;
  /**
   * Pre-assigned PINs by user reference (lowercased), from the admin's CSV `pin` column
   * (`batch write --pins FILE`): the station sets or uses that PIN on the user's key.
   */
  readonly pins?: ReadonlyMap<string, string> | undefined;
  /** Where the PINs the station sets go (`--pin-output`); never anywhere else. */
  readonly pinOutput?: { write(record: PinRecord): Promise<void> } | undefined;
  /** Tells the operator what is going on (which user is next, a warning). */
  readonly notify: (text: string) => void;
  readonly onUser?: (event: BatchUserEvent) => void;
  /** Take no more users (Ctrl+C); the key in use is finished first. */
  readonly stop?: AbortSignal | undefined;
  /** Stop after this many keys (the operator's box holds that many). @default no limit */
  readonly maxKeys?: number | undefined;
  /** Users whose challenge expires within this many ms are left out. @default one minute */
  readonly expiryMarginMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/** What {@link writeBatchKeys} did. */
export interface WriteBatchCounts {
  written: number;
  /** Users whose challenge had expired (renew with `batch fetch`). */
  expired: number;
  failed: number;
  /** Users with no key to write: already written, registered, skipped or unresolved. */
  other: number;
  /** Set when the step stopped because the first keys failed in a way every key would. */
  halted?: { code: string; message: string };
}

/** Reasons that belong to one key, not to the batch: the next key may well do. */
const oneKeyReasons: ReadonlySet<string> = new Set([
  "pin-blocked",
  "pin-auth-blocked",
  "pin-invalid",
  "key-store-full",
  "key-already-used",
]);

/**
 * Writes a key for every user of the batch that needs one.
 *
 * @throws whatever is not a per-user ProvisioningError.
 */
export async function writeBatchKeys(options: WriteBatchOptions): Promise<WriteBatchCounts> {
  const { journal, info } = options.batch;
  const now = options.now ?? Date.now;
  const margin = options.expiryMarginMs ?? 60_000;
  const counts: WriteBatchCounts = { written: 0, expired: 0, failed: 0, other: 0 };
  // In the source's order (the operator's pile of keys follows the list), whatever order the
  // concurrent fetch journaled the users in.
  const todo = [...journal.users()].sort((a, b) =>
    (a.row ?? Number.MAX_SAFE_INTEGER) - (b.row ?? Number.MAX_SAFE_INTEGER)
  );
  const pending = todo.filter((record) => batchPhase(record) === "to-write").length;
  let position = 0;
  for (const record of todo) {
    if (batchPhase(record) !== "to-write") {
      counts.other++;
      continue;
    }
    if (options.stop?.aborted || counts.halted) break;
    if (options.maxKeys !== undefined && counts.written >= options.maxKeys) break;
    const ref = record.ref ?? record.k;
    const upn = record.upn ?? ref;
    const challenge = record.challenge!;
    position++;
    if (challengeExpires(record, now(), margin)) {
      counts.expired++;
      options.onUser?.({ user: ref, row: record.row, outcome: "expired", detail: challenge.expiresAt });
      continue;
    }
    if (record.s === "writing") {
      options.notify(
        `warning: the last attempt stopped while writing ${
          record.device ?? "a key"
        } for ${upn}: that key may hold a passkey that was never registered; reset it before using it again (provisioning key prepare --reset)`,
      );
    }
    options.notify(`Next: ${upn} (${position} of ${pending})`);
    const pin = options.pins?.get(record.k) ?? options.pins?.get(upn.toLowerCase());
    try {
      await using lent = await options.station.next(
        { reference: upn, ...(pin ? { pin } : {}) },
        options.stop,
      );
      if (lent.pin && lent.pinSet) {
        // Before the passkey exists: a crash from here on never loses the PIN the key now has.
        await options.pinOutput?.write({
          user: upn,
          pin: lent.pin.reveal(),
          device: lent.authenticator.label,
          pinMustChange: false,
          stage: "prepared",
        });
      }
      await journal.append({ k: record.k, s: "writing", device: lent.authenticator.label });
      // From here on the ceremony runs to its end: the first Ctrl+C finishes this key.
      const registration = await create({
        options: challenge.options,
        origin: challenge.origin,
        allowedRpIds: info.allowedRpIds,
        authenticator: lent.authenticator,
        interaction: lent.interaction,
      });
      await checkWithTestAssertion({
        registration,
        rpId: effectiveRpId(parseCreationOptions(challenge.options).rp.id, challenge.origin),
        origin: challenge.origin,
        allowedRpIds: info.allowedRpIds,
        authenticator: lent.authenticator,
        interaction: lent.interaction,
      });
      // Journaled as soon as it is proven: whatever happens to the key next, the passkey is real.
      await journal.append({
        k: record.k,
        s: "written",
        credentialId: registration.id,
        registration,
        createdAt: new Date(now()).toISOString(),
        device: lent.authenticator.label,
        code: "",
        message: "",
      });
      let device;
      try {
        device = await lent.complete({
          credentialId: registration.id,
          attestationObject: registration.response.attestationObject,
        });
      } catch (error) {
        if (!(error instanceof ProvisioningError)) throw error;
        // The passkey stays (it will be registered); the key missed its last step.
        counts.written++;
        counts.failed++;
        const message =
          `The passkey for ${upn} is written, but finishing ${lent.authenticator.label} failed: ${error.message}; ` +
          "apply the PIN policy by hand (provisioning key prepare)";
        await journal.append({ k: record.k, s: "written", code: error.code, message });
        options.onUser?.({ user: ref, row: record.row, outcome: "written, not finished", detail: message });
        continue;
      }
      await journal.append({
        k: record.k,
        s: "written",
        aaguid: device.aaguid,
        device: device.device,
        ...(device.serial ? { serial: device.serial } : {}),
        pinSet: device.pinSet,
        pinMustChange: device.pinMustChange,
      });
      if (lent.pin && device.pinSet) {
        await options.pinOutput?.write({
          user: upn,
          pin: lent.pin.reveal(),
          device: device.device,
          aaguid: device.aaguid,
          ...(device.serial ? { serial: device.serial } : {}),
          pinMustChange: device.pinMustChange,
        });
      }
      counts.written++;
      options.onUser?.({ user: ref, row: record.row, outcome: "written", detail: device.device });
    } catch (error) {
      // Ctrl+C while waiting for a key: the user stays to write.
      if (options.stop?.aborted) break;
      if (!(error instanceof ProvisioningError)) throw error;
      counts.failed++;
      const message = error.hint ? `${error.message}. ${error.hint}` : error.message;
      await journal.append({ k: record.k, s: "failed", code: error.code, message });
      options.onUser?.({
        user: ref,
        row: record.row,
        outcome: "failed",
        detail: `${error.code}: ${message}`,
      });
      // A failure every key would hit (a PIN the policy cannot meet, an rp id not allowed) stops
      // the station before it asks for key after key; one key's trouble does not.
      if (counts.written === 0 && haltingReasons.has(error.code) && !oneKeyReasons.has(error.code)) {
        counts.halted = { code: error.code, message };
      }
    }
  }
  return counts;
}
