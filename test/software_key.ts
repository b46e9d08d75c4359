/**
 * Throw-away software keys for tests: the real authenticator with a real attestation chain, its
 * state in memory instead of a vault (the vault has tests of its own).
 *
 * @module
 */
import { parseAaguid } from "../core/aaguid.ts";
import { createAttestationChain } from "../authenticators/software/attestation.ts";
import {
  MemoryKeyStateStore,
  SoftwareAuthenticator,
  type SoftwareAuthenticatorOptions,
} from "../authenticators/software/authenticator.ts";
import { defaultAaguid, newKeyState } from "../authenticators/software/state.ts";
import { Ctap2Client } from "../core/ctap/client.ts";
import type { Authenticator, UserInteraction } from "../core/plugin.ts";

/** A software key in memory, with a CTAP2 client on it. */
export interface TestKey extends Authenticator {
  readonly device: SoftwareAuthenticator;
  readonly store: MemoryKeyStateStore;
  readonly client: Ctap2Client;
}

/** Makes a fresh key; sets `pin` through clientPIN when given (the real command path). */
export async function newTestKey(options: {
  attestation?: "packed" | "none";
  pin?: string;
  aaguid?: string;
  authenticator?: SoftwareAuthenticatorOptions;
} = {}): Promise<TestKey> {
  const aaguid = parseAaguid(options.aaguid ?? defaultAaguid);
  const state = newKeyState({
    aaguid,
    attestation: options.attestation ?? "packed",
    chain: await createAttestationChain({ aaguid }),
  });
  const store = new MemoryKeyStateStore(state);
  const device = new SoftwareAuthenticator(store, options.authenticator ?? {});
  const client = new Ctap2Client(device);
  if (options.pin !== undefined) await client.setPin(options.pin);
  return { label: "test key", device, store, client, [Symbol.asyncDispose]: () => Promise.resolve() };
}

/** A user at the keyboard who answers PIN prompts from a list and counts touch prompts. */
export function scriptedUser(pins: readonly string[] = []): UserInteraction & {
  pinPrompts: number;
  touchPrompts: number;
} {
  const queue = [...pins];
  return {
    pinPrompts: 0,
    touchPrompts: 0,
    requestPin() {
      this.pinPrompts++;
      const pin = queue.length > 1 ? queue.shift()! : queue[0];
      return pin === undefined ? Promise.reject(new Error("no PIN scripted")) : Promise.resolve(pin);
    },
    promptUserPresence() {
      this.touchPrompts++;
    },
  };
}
