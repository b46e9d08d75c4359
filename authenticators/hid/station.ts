/**
 * The key station: what a bulk run over hardware keys uses to get one prepared key per user.
 *
 * `next(user)` says which user is next, takes a key that is plugged in and not yet used (or
 * waits until one is inserted), checks that it does not already carry a passkey for the
 * provider's rp (the same key coming back must never get a second user), prepares it per the
 * {@link KeyPolicy}, and hands it over as a {@link StationKey}: an {@link Authenticator} for the
 * WebAuthn client, and a {@link UserInteraction} that answers PIN prompts with the PIN it set.
 * Once the passkey is registered and verified, `complete()` applies the deferred forced PIN
 * change, remembers the credential, and returns the {@link StationRecord} for the results file.
 *
 * Keys are told apart by where they are plugged in: a key that was used is not offered again
 * until it is unplugged. A key that comes back is checked before it is touched:
 * - a silent getAssertion (up=false) for the rp finds discoverable credentials of credProtect 1
 *   and, with this run's credential ids in the allowList, those of credProtect 2;
 * - with a PIN the run knows for it (a pre-assigned one, or the policy's fixed one), credential
 *   management lists the key's credentials for the rp;
 * - a key with a PIN the run does not know is not fresh: it is refused unless the policy resets
 *   keys, and a key whose PIN is blocked is refused unless the policy resets keys.
 *
 * Several `next()` calls may run at once (one per key plugged in): each takes a different key.
 *
 * @example
 * ```ts ignore
 * const station = new KeyStation({ discover: () => discoverKeys(), rpId: "login.microsoft.com",
 *   policy: { pin: { kind: "random", length: 8 }, forcePinChange: true }, notify, interaction });
 * for (const user of users) {
 *   await using key = await station.next({ reference: user.upn }, signal);
 *   const registration = await create({ ..., authenticator: key.authenticator, interaction: key.interaction });
 *   const record = await key.complete({ credentialId: registration.id, attestationObject: registration.response.attestationObject });
 * }
 * ```
 *
 * @module
 */
import { fromBase64Any, randomBytes, toBase64Url } from "../../core/bytes.ts";
import type { Ctap2Client } from "../../core/ctap/client.ts";
import type { CredentialDescriptor } from "../../core/ctap/commands.ts";
import { PinUvAuthPermission } from "../../core/ctap/pin_protocol.ts";
import { CtapError, CtapStatus } from "../../core/ctap/status.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type { Authenticator, UserInteraction } from "../../core/plugin.ts";
import { formatKeyAddress, type HidKey, type KeyDiscovery, type KeyLocation, openKey } from "./keys.ts";
import { SecretPin } from "./pin_policy.ts";
import {
  applyForcePinChange,
  type FeatureOutcome,
  type KeyPolicy,
  KeyPreparationError,
  type PreparedKeyReport,
  prepareKey,
} from "./prepare.ts";
import { attestationSerial } from "./serial.ts";
import { sleep } from "../../core/sleep.ts";

/** The user a key is prepared for. */
export interface StationUser {
  /** How messages name the user: the UPN. */
  readonly reference: string;
  /**
   * A PIN the organisation pre-assigned to this user (a CSV `pin` column); overrides the
   * policy's. A string is wrapped in a {@link SecretPin} at once.
   */
  readonly pin?: SecretPin | string;
}

/** What {@link KeyStation} needs. */
export interface KeyStationOptions {
  /** Lists the keys plugged in now; polled while the station waits. */
  readonly discover: () => Promise<KeyDiscovery>;
  /** Opens one key. @default {@link openKey} with `interaction` */
  readonly open?: (location: KeyLocation, signal: AbortSignal | undefined) => Promise<HidKey>;
  readonly policy: KeyPolicy;
  /** The provider's rp id: a key that holds a credential for it is refused. */
  readonly rpId: string;
  /** Further rp ids of the provider, checked the same way. @default [] */
  readonly otherRpIds?: readonly string[];
  /** Tells the operator what to do: which user is next, insert a key, touch it, put it aside. */
  readonly notify: (text: string) => void;
  /** Touch prompts. */
  readonly interaction: UserInteraction;
  /** How often discovery is polled while waiting, in ms. @default 500 */
  readonly pollIntervalMs?: number;
}

/** What the results file records for one user's key. */
export interface StationRecord {
  readonly user: string;
  /** `--device` form of where the key was. */
  readonly device: string;
  /** Lowercase UUID. */
  readonly aaguid: string;
  /** The key's serial number, when its attestation carries one (enterprise attestation). */
  readonly serial?: string;
  /** Serial number of the attestation certificate (a batch for most vendors), hex. */
  readonly attestationCertificateSerial?: string;
  /** The USB serial number string, when the device reports one. */
  readonly usbSerial?: string;
  /** base64url. */
  readonly credentialId: string;
  /** The run set (or changed) the key's PIN. */
  readonly pinSet: boolean;
  /** The user must change the PIN at first use. */
  readonly pinMustChange: boolean;
  readonly outcomes: readonly FeatureOutcome[];
}

/** A prepared key handed to one user's registration. Dispose it (or `complete`) to release it. */
export interface StationKey extends AsyncDisposable {
  readonly user: StationUser;
  /** The key, for create() and get(). */
  readonly authenticator: Authenticator;
  /** Answers PIN prompts with the key's PIN (never shown), touch prompts to the operator. */
  readonly interaction: UserInteraction;
  readonly report: PreparedKeyReport;
  /** The key's PIN, for the PIN file; undefined when the run did not set or know it. */
  readonly pin: SecretPin | undefined;
  /** True when this station set the PIN now (not a PIN the key already had). */
  readonly pinSet: boolean;
  /**
   * The passkey is registered and verified: apply the deferred forced PIN change, remember the
   * credential (a key coming back is recognised by it), release the key, and say what to record.
   */
  complete(registration: { credentialId: string; attestationObject?: string }): Promise<StationRecord>;
}

/** A key refused by the station, as the operator was told. */
export interface StationRefusal {
  readonly device: string;
  readonly code: string;
  readonly message: string;
}

/** A {@link StationUser} whose PIN, if any, is a {@link SecretPin}. */
interface PreparedUser extends StationUser {
  readonly pin?: SecretPin;
}

interface UsedKey {
  user: string;
  credentialId: Uint8Array;
}

function describe(error: unknown): string {
  return error instanceof ProvisioningError && error.hint
    ? `${error.message}. ${error.hint}`
    : error instanceof Error
    ? error.message
    : String(error);
}

/** See the module documentation. */
export class KeyStation {
  readonly #options: KeyStationOptions;
  /** Keys handed out now, by device. */
  readonly #busy = new Set<string>();
  /** Keys used or refused, by device, until they are unplugged. */
  readonly #settled = new Set<string>();
  /** PINs of keys this run prepared that went back unused (a failed registration), by device. */
  readonly #knownPins = new Map<string, SecretPin>();
  /** Credentials this run created, for the silent check of keys coming back. */
  readonly #created: UsedKey[] = [];
  /** When each device was first seen, to tell a freshly inserted key (for the reset rule). */
  readonly #firstSeen = new Map<string, number>();
  #started = false;
  /** Every key refused so far. */
  readonly refusals: StationRefusal[] = [];

  constructor(options: KeyStationOptions) {
    this.#options = options;
  }

  /**
   * Prepares a key for `user`: a key already plugged in and unused, or the next one inserted.
   * Rejects when `signal` aborts (the key in hand, if any, is released).
   */
  async next(request: StationUser, signal?: AbortSignal): Promise<StationKey> {
    const { notify } = this.#options;
    const user: PreparedUser = typeof request.pin === "string"
      ? { reference: request.reference, pin: new SecretPin(request.pin) }
      : request as PreparedUser;
    let told = false;
    for (;;) {
      signal?.throwIfAborted();
      const location = await this.#take();
      if (!location) {
        if (!told) {
          notify(`Next: ${user.reference}. Insert a security key.`);
          told = true;
        }
        await this.#sleep(signal);
        continue;
      }
      const device = formatKeyAddress(location.address);
      notify(`Next: ${user.reference}, on ${location.label}.`);
      try {
        const key = await this.#prepare(location, device, user, signal);
        if (key) return key;
      } catch (error) {
        this.#busy.delete(device);
        throw error;
      }
    }
  }

  /** Picks an unused key among those plugged in, and marks it busy; forgets unplugged keys. */
  async #take(): Promise<KeyLocation | undefined> {
    const { keys } = await this.#options.discover();
    const present = new Set(keys.map((k) => formatKeyAddress(k.address)));
    const now = Date.now();
    for (const device of [...this.#settled]) if (!present.has(device)) this.#settled.delete(device);
    for (const device of [...this.#firstSeen.keys()]) {
      if (!present.has(device)) {
        this.#firstSeen.delete(device);
        this.#knownPins.delete(device);
      }
    }
    for (const device of present) {
      // Keys present when the station starts were not just inserted.
      if (!this.#firstSeen.has(device)) this.#firstSeen.set(device, this.#started ? now : 0);
    }
    this.#started = true;
    const location = keys.find((k) => {
      const device = formatKeyAddress(k.address);
      return !this.#busy.has(device) && !this.#settled.has(device);
    });
    if (location) this.#busy.add(formatKeyAddress(location.address));
    return location;
  }

  #sleep(signal: AbortSignal | undefined): Promise<void> {
    return sleep(this.#options.pollIntervalMs ?? 500, signal);
  }

  #refuse(device: string, label: string, code: string, message: string): undefined {
    this.#busy.delete(device);
    this.#settled.add(device);
    this.refusals.push({ device, code, message });
    this.#options.notify(`Refused ${label}: ${message}. Put it aside and insert another key.`);
    return undefined;
  }

  /** Opens, checks and prepares one key; undefined when it was refused (the station moves on). */
  async #prepare(
    location: KeyLocation,
    device: string,
    user: PreparedUser,
    signal: AbortSignal | undefined,
  ): Promise<StationKey | undefined> {
    const { policy, interaction } = this.#options;
    let key: HidKey;
    try {
      key = await (this.#options.open ??
        ((l, s) => openKey(l, { interaction, ...(s ? { signal: s } : {}) })))(location, signal);
    } catch (error) {
      if (signal?.aborted) throw error;
      return this.#refuse(
        device,
        location.label,
        error instanceof ProvisioningError ? error.code : "open-failed",
        describe(error),
      );
    }
    let handedOver = false;
    try {
      const knownPin = this.#knownPins.get(device) ?? user.pin ??
        (policy.pin?.kind === "given" ? policy.pin.pin : undefined);
      const reuse = await this.#checkReuse(key, knownPin);
      if (reuse) return this.#refuse(device, location.label, reuse.code, reuse.message);

      const userPolicy: KeyPolicy = user.pin ? { ...policy, pin: { kind: "given", pin: user.pin } } : policy;
      const seen = this.#firstSeen.get(device) ?? 0;
      let report: PreparedKeyReport;
      try {
        report = await prepareKey({
          key,
          policy: userPolicy,
          currentPin: this.#knownPins.get(device),
          deferForcePinChange: true,
          notify: this.#options.notify,
          interaction,
          freshlyInserted: seen > 0 && Date.now() - seen < 5000,
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        if (signal?.aborted) throw error;
        if (error instanceof KeyPreparationError) {
          return this.#refuse(device, location.label, error.code, describe(error));
        }
        throw error;
      }
      if (report.pin) this.#knownPins.set(device, report.pin);
      const pin = report.pin;
      let released = false;
      const release = async (used: boolean) => {
        if (released) return;
        released = true;
        this.#busy.delete(device);
        if (used) this.#settled.add(device);
        await key[Symbol.asyncDispose]();
      };
      handedOver = true;
      return {
        user,
        authenticator: key,
        report,
        pin,
        pinSet: report.pinSet,
        interaction: {
          requestPin: (request) => pin ? Promise.resolve(pin.reveal()) : interaction.requestPin(request),
          promptUserPresence: (label) => interaction.promptUserPresence(label),
        },
        complete: async (registration) => {
          if (released) {
            throw new ProvisioningError(
              "key-released",
              `Cannot complete ${location.label} for ${user.reference}: it was released already`,
            );
          }
          let pinMustChange = report.pinMustChange;
          const outcomes = [...report.outcomes];
          try {
            const deferred = outcomes.findIndex((o) => o.status === "deferred");
            if (deferred >= 0 && pin) {
              await applyForcePinChange(key, pin);
              pinMustChange = true;
              outcomes[deferred] = {
                feature: "force-pin-change",
                status: "done",
                detail: "the user must change the PIN",
              };
            }
            const credentialId = fromBase64Any(registration.credentialId);
            this.#created.push({ user: user.reference, credentialId });
            this.#knownPins.delete(device);
            const serial = registration.attestationObject
              ? attestationSerial(fromBase64Any(registration.attestationObject))
              : {};
            const usbSerial = location.descriptor?.serialNumber;
            return {
              user: user.reference,
              device,
              aaguid: report.aaguid,
              ...(serial.serial ? { serial: serial.serial } : {}),
              ...(serial.certificateSerial ? { attestationCertificateSerial: serial.certificateSerial } : {}),
              ...(usbSerial ? { usbSerial } : {}),
              credentialId: toBase64Url(credentialId),
              pinSet: report.pinSet,
              pinMustChange,
              outcomes,
            };
          } finally {
            await release(true);
          }
        },
        [Symbol.asyncDispose]: () => release(false),
      };
    } finally {
      if (!handedOver) await key[Symbol.asyncDispose]();
    }
  }

  /** Looks for signs that the key was provisioned before; see the module documentation. */
  async #checkReuse(
    key: HidKey,
    knownPin: SecretPin | undefined,
  ): Promise<{ code: string; message: string } | undefined> {
    const { policy } = this.#options;
    const rpIds = [this.#options.rpId, ...(this.#options.otherRpIds ?? [])];
    const ctap = key.ctap;
    const info = await ctap.getInfo({ refresh: true });
    const batch = Math.max(1, info.maxCredentialCountInList ?? 1);
    for (const rpId of rpIds) {
      const found = await silentProbe(ctap, rpId, []);
      if (found) {
        return { code: "key-already-used", message: `it already holds a passkey for "${rpId}"` };
      }
      for (let i = 0; i < this.#created.length; i += batch) {
        const chunk = this.#created.slice(i, i + batch);
        const hit = await silentProbe(
          ctap,
          rpId,
          chunk.map((c) => ({ type: "public-key", id: c.credentialId })),
        );
        if (hit) {
          const owner = this.#created.find((c) => toBase64Url(c.credentialId) === toBase64Url(hit));
          return {
            code: "key-already-used",
            message: `it already holds the passkey for "${rpId}" made for ${
              owner?.user ?? "another user"
            } in this run`,
          };
        }
      }
    }
    if (info.options?.["clientPin"] !== true) return undefined;
    if (info.forcePINChange === true && !policy.reset) {
      return {
        code: "key-already-used",
        message: "it waits for its first PIN change, so it was prepared for a user before",
      };
    }
    const { retries } = await ctap.getPinRetries();
    if (retries === 0) {
      if (policy.reset) return undefined;
      return {
        code: "pin-blocked",
        message: "its PIN is blocked (no attempts left); only a factory reset (--reset) makes it usable",
      };
    }
    if (
      knownPin && (info.options?.["credMgmt"] === true || info.options?.["credentialMgmtPreview"] === true)
    ) {
      let credentials;
      try {
        const token = await ctap.getPinToken({
          pin: knownPin.reveal(),
          permissions: PinUvAuthPermission.credentialManagement,
        });
        credentials = await ctap.listCredentials(token);
      } catch (error) {
        if (error instanceof CtapError && error.status === CtapStatus.CTAP2_ERR_PIN_INVALID) {
          if (policy.reset) return undefined;
          return {
            code: "pin-unknown",
            message: "it has a PIN that differs from the one this run was given",
          };
        }
        throw error;
      }
      const mine = credentials.filter((c) => rpIds.includes(c.rpId));
      if (mine.length > 0) {
        const names = mine.map((c) => c.user.name ?? "unnamed").join(", ");
        return {
          code: "key-already-used",
          message: `it already holds ${mine.length} passkey(s) for "${mine[0]!.rpId}" (${names})`,
        };
      }
      return undefined;
    }
    if (knownPin || policy.reset) return undefined;
    return {
      code: "key-not-fresh",
      message: "it has a PIN already, so it was set up before; reset it (--reset) or give its PIN",
    };
  }
}

/**
 * getAssertion with up=false and no PIN: finds credentials for `rpId` without a touch and
 * without spending a PIN attempt. Resolves to the credential id found, or undefined.
 */
async function silentProbe(
  ctap: Ctap2Client,
  rpId: string,
  allowList: CredentialDescriptor[],
): Promise<Uint8Array | undefined> {
  try {
    const assertion = await ctap.getAssertion({
      rpId,
      clientDataHash: randomBytes(32),
      ...(allowList.length > 0 ? { allowList } : {}),
      options: { up: false },
    });
    return assertion.credential?.id ?? allowList[0]?.id ?? new Uint8Array();
  } catch (error) {
    if (error instanceof CtapError) return undefined;
    throw error;
  }
}
