/**
 * A provider written against core/plugin.ts only, for testing core without any real provider: its
 * directory and passkeys live in memory, but every registration is verified for real by
 * `@simplewebauthn/server` (the independent verifier) against the challenge this provider issued,
 * and what each user's calls do is scripted: succeed, be throttled N times, fail transiently N
 * times, fail for this user, fail the whole run, lose the answer to the registration after storing
 * the passkey, or die mid-call (hang until the caller aborts, after storing the passkey).
 *
 * It must pass the provider conformance suite (test/scripted_conformance_test.ts) like any real
 * provider, so the engine's tests that use it test the engine, not a stub.
 *
 * @module
 */
import { verifyRegistrationResponse } from "@simplewebauthn/server";
import { fromBase64Any, randomBytes, toBase64Url } from "../../core/bytes.ts";
import { ProvisioningError } from "../../core/errors.ts";
import type {
  DirectoryUser,
  PasskeyMethod,
  ProviderSession,
  RegistrationChallenge,
} from "../../core/plugin.ts";

/** The rp id and origin the scripted provider's creation options carry. */
export const scriptedRpId = "scripted.test";
/** See {@link scriptedRpId}. */
export const scriptedOrigin = "https://scripted.test";

/** The reason codes the scripted provider fails with. */
export const scriptedCodes = {
  userNotFound: "user-not-found",
  throttled: "throttled",
  unavailable: "provider-error",
  userRefused: "user-refused",
  /** A code the engine treats as run-wide: the admin lacks a right (halts the run). */
  runWide: "insufficient-privileges",
  /** The code for a registration whose answer was lost (core/jobs/provision_user.ts). */
  outcomeUnknown: "outcome-unknown",
  registrationRefused: "registration-refused",
  groupNotFound: "group-not-found",
} as const;

/** Which call of the provider a scripted behaviour applies to. */
export type ScriptedCall =
  | "resolveUser"
  | "creationOptions"
  | "registerPasskey"
  | "listPasskeys"
  | "deletePasskey";

/** What a user's calls do; each behaviour applies to `call` (default: `registerPasskey`). */
export type UserScript =
  | { readonly kind: "succeed" }
  /** Answer "too many requests" (retryable) the first `times` calls, then behave. */
  | { readonly kind: "throttle"; readonly times: number; readonly call?: ScriptedCall }
  /** Answer a server error (retryable) the first `times` calls (Infinity: always), then behave. */
  | { readonly kind: "transient"; readonly times: number; readonly call?: ScriptedCall }
  /** Refuse this user (not retryable, not run-wide). */
  | { readonly kind: "fail-user"; readonly call?: ScriptedCall }
  /** Refuse with a run-wide reason (the admin's rights): every other user would fail the same way. */
  | { readonly kind: "fail-run"; readonly call?: ScriptedCall }
  /** Store the passkey, then lose the answer (`outcome-unknown`), the first `times` registrations. */
  | { readonly kind: "lose-answer"; readonly times?: number }
  /** Store the passkey, then never answer until the caller aborts (a crash after `created`). */
  | { readonly kind: "die"; readonly times?: number };

/** A passkey the scripted provider holds, with what the verifier found. */
export interface StoredPasskey extends PasskeyMethod {
  readonly credentialId: string;
  readonly verified: boolean;
}

/** What {@link ScriptedProvider} starts with. */
export interface ScriptedProviderOptions {
  /** Sign-in names of the directory's users; ids are derived. */
  readonly users: readonly string[];
  /** Per sign-in name; users without a script succeed. */
  readonly scripts?: Readonly<Record<string, UserScript>>;
  /** Groups by name: sign-in names of their members. */
  readonly groups?: Readonly<Record<string, readonly string[]>>;
  /** Told each time a scripted `die` starts hanging (so a test can abort the run then). */
  readonly onDie?: (user: DirectoryUser) => void;
}

interface PendingChallenge {
  readonly challenge: string;
  readonly userId: string;
}

/**
 * The in-memory directory and its sessions. `connect()` gives a {@link ProviderSession}; the
 * provider itself is the inspection side tests read (passkeys, calls).
 */
export class ScriptedProvider {
  readonly #users = new Map<string, DirectoryUser>();
  readonly #byId = new Map<string, DirectoryUser>();
  readonly #passkeys = new Map<string, StoredPasskey[]>();
  readonly #challenges = new Map<string, PendingChallenge>();
  readonly #scripts = new Map<string, UserScript>();
  readonly #callsSeen = new Map<string, number>();
  readonly #groups: Readonly<Record<string, readonly string[]>>;
  readonly #onDie: ((user: DirectoryUser) => void) | undefined;
  #nextMethod = 1;
  /** Every call made, in order: `call user` (for assertions on what the engine did). */
  readonly calls: string[] = [];

  constructor(options: ScriptedProviderOptions) {
    for (const [index, name] of options.users.entries()) {
      const user: DirectoryUser = {
        id: `00000000-0000-4000-8000-${String(index + 1).padStart(12, "0")}`,
        userPrincipalName: name,
        displayName: name.split("@")[0] ?? name,
      };
      this.#users.set(name.toLowerCase(), user);
      this.#byId.set(user.id, user);
    }
    for (const [name, script] of Object.entries(options.scripts ?? {})) this.script(name, script);
    this.#groups = options.groups ?? {};
    this.#onDie = options.onDie;
  }

  /** Sets (or replaces) what a user's calls do from now on; counts start again. */
  script(name: string, script: UserScript): void {
    const user = this.#users.get(name.toLowerCase());
    if (!user) throw new TypeError(`Cannot script "${name}": no such user in the scripted directory`);
    this.#scripts.set(user.id, script);
    for (const key of [...this.#callsSeen.keys()]) {
      if (key.startsWith(`${user.id} `)) this.#callsSeen.delete(key);
    }
  }

  /** The passkeys a user holds, by sign-in name. */
  passkeysOf(name: string): readonly StoredPasskey[] {
    const user = this.#users.get(name.toLowerCase());
    return user ? this.#passkeys.get(user.id) ?? [] : [];
  }

  /** A signed-in session on this directory. */
  connect(): Promise<ProviderSession> {
    return Promise.resolve(new ScriptedSession(this));
  }

  /** @internal Resolves a reference (sign-in name or id). */
  find(reference: string): DirectoryUser | undefined {
    return this.#users.get(reference.toLowerCase()) ?? this.#byId.get(reference);
  }

  /** @internal Applies the user's script to a call; resolves when the call may proceed. */
  gate(user: DirectoryUser | string, call: ScriptedCall): void {
    const id = typeof user === "string" ? this.find(user)?.id : user.id;
    const name = typeof user === "string" ? user : user.userPrincipalName;
    this.calls.push(`${call} ${name}`);
    const script = id === undefined ? undefined : this.#scripts.get(id);
    if (!script || script.kind === "succeed" || script.kind === "lose-answer" || script.kind === "die") {
      return;
    }
    if ((script.call ?? "registerPasskey") !== call) return;
    const seen = this.#count(`${id} ${call}`);
    switch (script.kind) {
      case "throttle":
        if (seen <= script.times) {
          throw new ProvisioningError(
            scriptedCodes.throttled,
            `Cannot ${call} for ${name}: too many requests`,
            {
              retryable: true,
              hint: "Wait and try again",
            },
          );
        }
        return;
      case "transient":
        if (seen <= script.times) {
          throw new ProvisioningError(
            scriptedCodes.unavailable,
            `Cannot ${call} for ${name}: the scripted provider answered 503`,
            { retryable: true, hint: "Try again later" },
          );
        }
        return;
      case "fail-user":
        throw new ProvisioningError(
          scriptedCodes.userRefused,
          `Cannot ${call} for ${name}: the user is refused`,
          {
            hint: "Check the user's account",
          },
        );
      case "fail-run":
        throw new ProvisioningError(
          scriptedCodes.runWide,
          `Cannot ${call} for ${name}: the admin lacks the right to manage passkeys`,
          { hint: "Grant the admin the right and run again" },
        );
    }
  }

  /** @internal What happens after a registration was stored: answer, lose the answer, or hang. */
  async afterStore(user: DirectoryUser, signal: AbortSignal | undefined): Promise<void> {
    const script = this.#scripts.get(user.id);
    if (script?.kind !== "lose-answer" && script?.kind !== "die") return;
    const seen = this.#count(`${user.id} stored`);
    if (seen > (script.times ?? 1)) return;
    if (script.kind === "lose-answer") {
      throw new ProvisioningError(
        scriptedCodes.outcomeUnknown,
        `Cannot tell whether the passkey of ${user.userPrincipalName} was registered: the answer was lost`,
        { retryable: true, hint: "List the user's passkeys" },
      );
    }
    this.#onDie?.(user);
    await new Promise<never>((_, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }

  /** @internal Issues a challenge for a user. */
  issue(user: DirectoryUser): RegistrationChallenge {
    const challenge = toBase64Url(randomBytes(32));
    this.#challenges.set(challenge, { challenge, userId: user.id });
    const excludeCredentials = (this.#passkeys.get(user.id) ?? []).map((p) => ({
      type: "public-key",
      id: p.credentialId,
    }));
    return {
      origin: scriptedOrigin,
      options: {
        rp: { id: scriptedRpId, name: "Scripted provider" },
        user: {
          id: toBase64Url(new TextEncoder().encode(user.id)),
          name: user.userPrincipalName,
          displayName: user.displayName ?? user.userPrincipalName,
        },
        challenge,
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
        timeout: 60_000,
        excludeCredentials,
        authenticatorSelection: { residentKey: "required", userVerification: "required" },
        attestation: "direct",
      },
    };
  }

  /** @internal Verifies a registration with @simplewebauthn/server and stores the passkey. */
  async store(user: DirectoryUser, credential: unknown, displayName: string): Promise<StoredPasskey> {
    const response = credential as {
      id: string;
      response: { clientDataJSON: string; attestationObject: string };
      clientExtensionResults?: Record<string, unknown>;
    };
    const refuse = (why: string) =>
      new ProvisioningError(
        scriptedCodes.registrationRefused,
        `Cannot register the passkey of ${user.userPrincipalName}: ${why}`,
        { hint: "Start the registration again with new creation options" },
      );
    const challenge = challengeOf(response.response?.clientDataJSON);
    const pending = challenge === undefined ? undefined : this.#challenges.get(challenge);
    if (!pending || pending.userId !== user.id) {
      throw refuse("the challenge was not issued for this user or was used");
    }
    this.#challenges.delete(pending.challenge);
    let verification;
    try {
      verification = await verifyRegistrationResponse({
        response: {
          id: response.id,
          rawId: response.id,
          type: "public-key",
          response: response.response,
          clientExtensionResults: response.clientExtensionResults ?? {},
        },
        expectedChallenge: pending.challenge,
        expectedOrigin: scriptedOrigin,
        expectedRPID: scriptedRpId,
        requireUserVerification: true,
      });
    } catch (error) {
      throw refuse(`the verifier refused it (${error instanceof Error ? error.message : String(error)})`);
    }
    if (!verification.verified || !verification.registrationInfo) throw refuse("the verifier refused it");
    const passkey: StoredPasskey = {
      id: `method-${this.#nextMethod++}`,
      displayName,
      aaguid: verification.registrationInfo.aaguid,
      createdDateTime: new Date().toISOString(),
      credentialId: verification.registrationInfo.credential.id,
      verified: true,
    };
    this.#passkeys.set(user.id, [...(this.#passkeys.get(user.id) ?? []), passkey]);
    return passkey;
  }

  /** @internal Lists a user's passkeys as a provider would show them. */
  list(user: DirectoryUser): PasskeyMethod[] {
    return (this.#passkeys.get(user.id) ?? []).map(({ id, displayName, aaguid, createdDateTime }) => ({
      id,
      ...(displayName === undefined ? {} : { displayName }),
      ...(aaguid === undefined ? {} : { aaguid }),
      ...(createdDateTime === undefined ? {} : { createdDateTime }),
    }));
  }

  /** @internal Deletes a passkey; one already gone is not an error (a retried or repeated delete). */
  remove(user: DirectoryUser, methodId: string): void {
    this.#passkeys.set(user.id, (this.#passkeys.get(user.id) ?? []).filter((p) => p.id !== methodId));
  }

  /** @internal Members of a group by name. */
  members(group: string): DirectoryUser[] {
    const names = this.#groups[group];
    if (!names) {
      throw new ProvisioningError(
        "group-not-found",
        `Cannot find group "${group}" in the scripted directory`,
        {
          hint: `Known groups: ${Object.keys(this.#groups).join(", ") || "none"}`,
        },
      );
    }
    return names.map((n) => this.find(n)).filter((u): u is DirectoryUser => u !== undefined);
  }

  #count(key: string): number {
    const seen = (this.#callsSeen.get(key) ?? 0) + 1;
    this.#callsSeen.set(key, seen);
    return seen;
  }
}

/** The challenge in a clientDataJSON (base64url of JSON), if it can be read. */
function challengeOf(clientDataJSON: unknown): string | undefined {
  if (typeof clientDataJSON !== "string") return undefined;
  try {
    const text = new TextDecoder().decode(fromBase64Any(clientDataJSON));
    const parsed: unknown = JSON.parse(text);
    const challenge = (parsed as { challenge?: unknown }).challenge;
    return typeof challenge === "string" ? challenge : undefined;
  } catch {
    return undefined;
  }
}

/** A session on a {@link ScriptedProvider}: every call goes through the user's script first. */
class ScriptedSession implements ProviderSession {
  readonly tenant = "scripted";
  readonly allowedRpIds: readonly string[] = [scriptedRpId];
  readonly #provider: ScriptedProvider;

  constructor(provider: ScriptedProvider) {
    this.#provider = provider;
  }

  resolveUser(reference: string): Promise<DirectoryUser> {
    return Promise.resolve().then(() => {
      this.#provider.gate(reference, "resolveUser");
      const user = this.#provider.find(reference);
      if (!user) {
        throw new ProvisioningError(
          scriptedCodes.userNotFound,
          `Cannot find user "${reference}" in the scripted directory`,
          { hint: "Check the sign-in name" },
        );
      }
      return user;
    });
  }

  creationOptions(user: DirectoryUser): Promise<RegistrationChallenge> {
    return Promise.resolve().then(() => {
      this.#provider.gate(user, "creationOptions");
      return this.#provider.issue(user);
    });
  }

  async registerPasskey(
    user: DirectoryUser,
    registration: { credential: unknown; displayName: string },
    signal?: AbortSignal,
  ): Promise<PasskeyMethod> {
    this.#provider.gate(user, "registerPasskey");
    const stored = await this.#provider.store(user, registration.credential, registration.displayName);
    await this.#provider.afterStore(user, signal);
    return this.#provider.list(user).find((m) => m.id === stored.id)!;
  }

  listPasskeys(user: DirectoryUser): Promise<PasskeyMethod[]> {
    return Promise.resolve().then(() => {
      this.#provider.gate(user, "listPasskeys");
      return this.#provider.list(user);
    });
  }

  deletePasskey(user: DirectoryUser, methodId: string): Promise<void> {
    return Promise.resolve().then(() => {
      this.#provider.gate(user, "deletePasskey");
      this.#provider.remove(user, methodId);
    });
  }

  async *listGroupMembers(group: string): AsyncIterable<DirectoryUser> {
    await Promise.resolve();
    for (const user of this.#provider.members(group)) yield user;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}
