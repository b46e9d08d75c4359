/**
 * The contracts every plugin satisfies, and the registry `main.ts` fills.
 *
 * A plugin is a plain object with a {@link Manifest}: what it is and what it needs from the
 * outside world (network hosts, files, environment variables, programs). The manifest is what a
 * third-party plugin's Worker is granted as Deno permissions, and what `provisioning plugins`
 * shows. Core never imports a plugin; `main.ts` registers the built-in ones.
 *
 * @module
 */
import type { BrowserHandle } from "./browser/driver.ts";
import type { CtapDevice } from "./ctap/device.ts";
import { ProvisioningError } from "./errors.ts";

/** A command-line option a plugin adds, e.g. `--vault <path>` for the software key. */
export interface PluginOption {
  /** Commander-style flags, e.g. `"--vault <path>"`. */
  readonly flags: string;
  /** One line for `--help`. */
  readonly description: string;
  /** Environment variable that supplies the value when the flag is absent. */
  readonly env?: string;
  /** Default value, shown in help. */
  readonly default?: string;
}

/** What a plugin is and what it needs: becomes its Deno permissions when run in a Worker. */
export interface Manifest {
  /** Unique id within its kind, lowercase: `entra`, `software`, `hid`. */
  readonly id: string;
  /** One line saying what the plugin does. */
  readonly summary: string;
  /** Network hosts (`host` or `host:port`) it talks to. Empty for none. */
  readonly hosts: readonly string[];
  /** Files or folders it reads or writes. */
  readonly files?: readonly string[];
  /** Environment variables it reads. */
  readonly env?: readonly string[];
  /** Programs it runs (e.g. a browser). */
  readonly run?: readonly string[];
  /** CLI options it adds to the commands that use it. */
  readonly options?: readonly PluginOption[];
}

/**
 * How plugins reach the person at the keyboard. Prompts go through here, never through
 * `prompt()` deep inside a plugin, so a bulk run can answer them from policy or files.
 */
export interface UserInteraction {
  /**
   * Ask for an authenticator PIN. `attemptsLeft` is the key's remaining retries, when known;
   * `refused` is true when the key refused the PIN given for this same ceremony a moment ago (a
   * drop in `attemptsLeft` alone proves nothing: another process sharing the key may be mid-check).
   */
  requestPin(request: { label: string; attemptsLeft?: number; refused?: boolean }): Promise<string>;
  /** Tell the operator to touch the key (a keep-alive asked for user presence). */
  promptUserPresence(label: string): void;
}

/** What every plugin call gets from the host program. */
export interface PluginContext {
  readonly interaction: UserInteraction;
  /** Cancels the whole operation (Ctrl+C). */
  readonly signal?: AbortSignal;
  /** Reads an environment variable the manifest declared. */
  readonly env: (name: string) => string | undefined;
  /** Asks the operator for a secret (a vault passphrase) without echo. */
  readonly readSecret: (request: { label: string; hint?: string }) => Promise<string>;
  /** Shows the operator something to act on (a device-code sign-in message). @default stderr */
  readonly notify?: (text: string) => void;
  /**
   * The fetch for every request to the provider: it carries the run's TLS settings (`--ca-file`)
   * and turns an untrusted certificate into an error naming the host and the TLS options.
   * @default globalThis.fetch
   */
  readonly fetch?: typeof fetch;
  /**
   * Paces every request to the provider in a bulk run: one shared controller for all workers,
   * told of every throttling answer (core/jobs/rate.ts). Absent outside bulk runs.
   */
  readonly pacer?: RequestPacer;
}

/**
 * A rate controller a provider plugin calls around each HTTP request, so that many workers share
 * one budget: wait in {@link admit} before sending, report throttling answers and successes.
 * `write` requests (POST, PATCH, DELETE) usually have their own, smaller quota.
 */
export interface RequestPacer {
  /** Resolves when a request of this kind may be sent; rejects when `signal` aborts. */
  admit(kind: "read" | "write", signal?: AbortSignal): Promise<void>;
  /** The provider answered "too many requests"; `retryAfterMs` is what it asked to wait. */
  throttled(kind: "read" | "write", retryAfterMs: number | undefined): void;
  /** The provider answered without throttling. */
  succeeded(kind: "read" | "write"): void;
}

/** An opened authenticator: a CTAP2 device plus what to call it in messages. */
export interface Authenticator extends AsyncDisposable {
  /** Human-readable name for messages, e.g. `software key "demo.vault"`. */
  readonly label: string;
  /** The CTAP2 device the WebAuthn client talks to. */
  readonly device: CtapDevice;
  /** The attestation the authenticator makes (`packed`, `none`), when the plugin knows it. */
  readonly attestationFormat?: string;
}

/** An authenticator kind: software, hid, relay. */
export interface AuthenticatorPlugin<Options = Record<string, unknown>> {
  readonly kind: "authenticator";
  readonly manifest: Manifest;
  /** Opens one authenticator. `options` are the parsed values of the manifest's options. */
  open(context: PluginContext, options: Options): Promise<Authenticator>;
  /**
   * For kinds where each user gets a device of their own (a box of security keys): a station
   * that lends one prepared device per user of a bulk run. Absent for kinds where one
   * authenticator serves every user (the software key).
   */
  station?(context: PluginContext, options: Options, request: StationRequest): AuthenticatorStation;
}

/**
 * How a key station prepares each device (`key prepare` and bulk runs over security keys): the
 * organisation's policy. Features a device lacks are reported per device, never skipped silently.
 */
export interface KeyPreparationPolicy {
  /** Factory-reset the device first (erases its passkeys and PIN). */
  readonly reset?: boolean;
  /** Set a PIN: random digits of a length (raised to the device's minimum), or the one given. */
  readonly pin?: { readonly kind: "random"; readonly length?: number } | {
    readonly kind: "given";
    readonly pin: string;
  };
  /** Raise the device's minimum PIN length (authenticatorConfig). */
  readonly minPinLength?: number;
  /** Make the user choose a new PIN at first use (applied after the passkey is registered). */
  readonly forcePinChange?: boolean;
  readonly enterpriseAttestation?: boolean;
  /** Fail a device that lacks an asked-for feature instead of reporting it. */
  readonly strict?: boolean;
}

/** What a bulk run asks of {@link AuthenticatorPlugin.station}. */
export interface StationRequest {
  readonly policy: KeyPreparationPolicy;
  /** The provider's rp id: a device that already holds a passkey for it is refused (reused). */
  readonly rpId: string;
  /**
   * Further rp ids the provider's passkeys may be for (when the run does not know which one its
   * challenges will carry): a device with a passkey for any of them is refused too.
   */
  readonly otherRpIds?: readonly string[];
  /** Tells the operator what to do (insert the next key, touch it). */
  readonly notify: (text: string) => void;
}

/** Lends one prepared device per user; see {@link AuthenticatorPlugin.station}. */
export interface AuthenticatorStation {
  /** Says who is next, waits for a device (or takes one plugged in), prepares it, and lends it. */
  next(user: { reference: string; pin?: string }, signal?: AbortSignal): Promise<LentAuthenticator>;
}

/** A device lent for one user; disposing it gives it back (unused, if {@link complete} was not called). */
export interface LentAuthenticator extends AsyncDisposable {
  readonly authenticator: Authenticator;
  /** Answers the device's PIN prompts with the PIN the station knows. */
  readonly interaction: UserInteraction;
  /** The PIN the station knows for the device: only for the PIN file, never printed. */
  readonly pin: { reveal(): string } | undefined;
  /** True when the station set that PIN now (the PIN file gets it then). */
  readonly pinSet: boolean;
  /**
   * After the provider accepted the registration: finishes the device (a forced PIN change) and
   * says what to record about it.
   */
  complete(registration: { credentialId: string; attestationObject?: string }): Promise<LentDeviceRecord>;
}

/** What a bulk run records about the device a user got. */
export interface LentDeviceRecord {
  readonly device: string;
  readonly aaguid: string;
  /** The device's serial number, when its attestation carries one. */
  readonly serial?: string;
  readonly pinSet: boolean;
  readonly pinMustChange: boolean;
}

/** A user as the identity provider knows them. */
export interface DirectoryUser {
  /** The provider's stable id (Entra: the object id). */
  readonly id: string;
  /** The sign-in name (Entra: the UPN). */
  readonly userPrincipalName: string;
  readonly displayName?: string;
  readonly mail?: string;
}

/** A passkey registered with the provider. */
export interface PasskeyMethod {
  /** The provider's id of the method (Entra: the fido2AuthenticationMethod id). */
  readonly id: string;
  readonly displayName?: string;
  readonly aaguid?: string;
  readonly createdDateTime?: string;
  readonly model?: string;
}

/** What the provider hands out to start one registration. */
export interface RegistrationChallenge {
  /** PublicKeyCredentialCreationOptionsJSON (or the provider's wrapper of it), parsed by the WebAuthn client. */
  readonly options: unknown;
  /** The origin the WebAuthn ceremony runs for (goes into clientDataJSON). */
  readonly origin: string;
  /** When the provider stops accepting a response to this challenge, when it says. */
  readonly expiresAt?: Date;
}

/**
 * A signed-in connection to one identity provider's tenant: what the provisioning paths need.
 * Every method takes the user as resolved by {@link resolveUser}; errors are ProvisioningErrors
 * whose `code` is a reason code for failures.csv.
 */
export interface ProviderSession extends AsyncDisposable {
  /**
   * Which directory this is, stably (e.g. the cloud and tenant id): part of a bulk run's identity,
   * so the same command against another tenant is another run, never a resume.
   */
  readonly tenant?: string | undefined;
  /** rp ids this tenant's creation options may carry; anything else is refused before the key is touched. */
  readonly allowedRpIds: readonly string[];
  /** Finds a user by sign-in name, mail or id. */
  resolveUser(reference: string, signal?: AbortSignal): Promise<DirectoryUser>;
  /**
   * The user a reference names without asking the provider (an object id is the id every call
   * addresses), or undefined when it needs {@link resolveUser}: a bulk run then saves a request
   * per user. The user's sign-in name is the reference itself until an answer gives the real one.
   */
  userFromReference?(reference: string): DirectoryUser | undefined;
  /**
   * True when {@link creationOptions} creates nothing at the provider (Entra: a challenge that
   * expires unused), so a bulk run may ask for it while it lists the user's passkeys and drop it
   * when the user is skipped. Absent or false (Okta: enrolling makes a pending factor): asked only
   * once the run knows it will register.
   */
  readonly creationOptionsHaveNoEffect?: boolean;
  /** Starts a registration for the user. */
  creationOptions(user: DirectoryUser, signal?: AbortSignal): Promise<RegistrationChallenge>;
  /** Completes the registration with the authenticator's response (RegistrationResponseJSON). */
  registerPasskey(
    user: DirectoryUser,
    registration: { credential: unknown; displayName: string },
    signal?: AbortSignal,
  ): Promise<PasskeyMethod>;
  /** The user's passkeys, for idempotency and reconciliation. */
  listPasskeys(user: DirectoryUser, signal?: AbortSignal): Promise<PasskeyMethod[]>;
  /** Deletes one of the user's passkeys. */
  deletePasskey(user: DirectoryUser, methodId: string, signal?: AbortSignal): Promise<void>;
  /**
   * Checks a passkey display name against the provider's rules before the authenticator is
   * touched; returns the name to use. Throws a ProvisioningError naming the rule.
   */
  checkDisplayName?(displayName: string, user: DirectoryUser): string;
  /**
   * The users of a group, members of nested groups included, page by page (`--group NAME|ID`).
   * `group` is the provider's id or the group's display name; a name that matches no group or
   * several is a ProvisioningError saying which.
   */
  listGroupMembers?(group: string, signal?: AbortSignal): AsyncIterable<DirectoryUser>;
  /**
   * The browser path (`--via browser`): signs the user in with a one-time pass in a private
   * context of `browser` and adds the passkey through the provider's own pages, the page's WebAuthn
   * calls bridged to `authenticator`. Absent when the provider has no browser flow.
   */
  registerInBrowser?(
    user: DirectoryUser,
    options: BrowserRegistrationOptions,
  ): Promise<{ method: PasskeyMethod; credentialId: string }>;
  /**
   * Deletes a one-time sign-in pass the browser path created (by the id it reported through
   * {@link BrowserRegistrationOptions.onPassIssued}); a pass already gone is not an error.
   */
  deleteSignInPass?(user: DirectoryUser, passId: string, signal?: AbortSignal): Promise<void>;
}

/** What {@link ProviderSession.registerInBrowser} needs besides the user. */
export interface BrowserRegistrationOptions {
  /** The run's one browser (core/browser/driver.ts); each user gets a private context of it. Absent for `via: "tap"`. */
  readonly browser?: BrowserHandle;
  /**
   * `browser` (the default): the provider's pages in `browser`. `tap`: no browser; the requests
   * the provider's pages make, sent by the tool (`--via tap`).
   */
  readonly via?: "browser" | "tap";
  readonly authenticator: Authenticator;
  readonly interaction: UserInteraction;
  readonly displayName: string;
  /** `automatic`: the tool does every step; `manual`: the admin does them in a visible window. */
  readonly mode: "automatic" | "manual";
  /** Where failure screenshots (secrets masked) go; `false` for none. */
  readonly debugDir?: string | false;
  /** `--capture-flow DIR`: evidence of every step (URL, sanitized DOM snapshot, masked screenshot). */
  readonly captureDir?: string;
  readonly signal?: AbortSignal;
  /**
   * Told the id of a one-time sign-in pass as soon as the flow has created it, before the pass is
   * used: a run journals it, so a pass a crash leaves behind is deleted at the user's next attempt
   * ({@link ProviderSession.deleteSignInPass}). The flow deletes the pass itself when it ends.
   */
  readonly onPassIssued?: (passId: string) => Promise<void>;
}

/** What a command knows that may help a provider sign in. */
export interface ConnectHints {
  /** The user references (UPN, mail, id) the command will work on. */
  readonly users?: readonly string[];
}

/** One finding of a provider's preflight (`provisioning doctor`): what will fail, and what to do. */
export interface PreflightFinding {
  /** `error` will fail, `warning` may fail, `info` is worth knowing. */
  readonly severity: "error" | "warning" | "info";
  /** The reason code a run would fail with, e.g. `self-service-setup-off`. */
  readonly code: string;
  readonly message: string;
  readonly hint?: string;
}

/** What the admin is signed in as, for `login` and `whoami`: labelled rows and warnings. */
export interface AccountSummary {
  readonly rows: readonly (readonly [label: string, value: string])[];
  readonly warnings: readonly string[];
}

/** What a preflight needs to know of the chosen authenticator. */
export interface AuthenticatorFacts {
  /** The AAGUID as a UUID. */
  readonly aaguid: string;
  /** `packed` (a certificate chain), `none`, or undefined when unknown. */
  readonly attestation: string | undefined;
  /** For messages, e.g. `software key "demo.vault"`. */
  readonly label: string;
}

/** A provider's sandbox server, started by `provisioning sandbox`. */
export interface RunningSandbox extends AsyncDisposable {
  readonly url: string;
  /** How to use it: tenant, admin account, app registration. Printed as it is. */
  readonly instructions: string;
}

/** An identity provider: entra, okta, keycloak. The optional methods back the CLI commands of the same name. */
export interface ProviderPlugin<Options = Record<string, unknown>> {
  readonly kind: "provider";
  readonly manifest: Manifest;
  /**
   * Signs in (from cached tokens, or by the flow the options choose) and returns a session.
   * `hints` are what the command knows that may help, e.g. the users it is about to provision
   * (Entra finds the tenant from a UPN's domain when none is configured).
   */
  connect(context: PluginContext, options: Options, hints?: ConnectHints): Promise<ProviderSession>;
  /** Signs the admin in interactively and caches the tokens. */
  login?(context: PluginContext, options: Options): Promise<AccountSummary>;
  /** Removes cached tokens. */
  logout?(context: PluginContext, options: Options): Promise<void>;
  /** Who the cached or configured credentials are, and what they are missing. */
  whoami?(context: PluginContext, options: Options): Promise<AccountSummary>;
  /** Reads the tenant's policies and says what a run with this authenticator would hit. */
  preflight?(
    context: PluginContext,
    options: Options,
    authenticator: AuthenticatorFacts,
    hints?: ConnectHints,
  ): Promise<PreflightFinding[]>;
  /** Starts the provider's sandbox server. */
  startSandbox?(context: PluginContext, options: Options): Promise<RunningSandbox>;
}

/** Any plugin. */
export type Plugin = AuthenticatorPlugin<never> | ProviderPlugin<never>;

/**
 * The set of plugins the program knows, filled by `main.ts`.
 *
 * @example
 * ```ts
 * import { PluginRegistry } from "./plugin.ts";
 * const registry = new PluginRegistry();
 * console.assert(registry.list().length === 0);
 * ```
 */
export class PluginRegistry {
  readonly #plugins = new Map<string, Plugin>();

  /** Adds a plugin; a second plugin of the same kind and id is an error. */
  register(plugin: Plugin): this {
    const key = `${plugin.kind}:${plugin.manifest.id}`;
    if (!/^[a-z][a-z0-9-]*$/.test(plugin.manifest.id)) {
      throw new TypeError(`Cannot register plugin: id "${plugin.manifest.id}" is not lowercase kebab-case`);
    }
    if (this.#plugins.has(key)) {
      throw new TypeError(`Cannot register plugin: a ${plugin.kind} plugin "${plugin.manifest.id}" exists`);
    }
    this.#plugins.set(key, plugin);
    return this;
  }

  /** Every registered plugin, in registration order. */
  list(): Plugin[] {
    return [...this.#plugins.values()];
  }

  /** The authenticator plugin with this id, or a clear error naming the ones there are. */
  authenticator(id: string): AuthenticatorPlugin<never> {
    const plugin = this.#plugins.get(`authenticator:${id}`);
    if (plugin?.kind === "authenticator") return plugin;
    throw new ProvisioningError("unknown-plugin", `Cannot find authenticator "${id}"`, {
      hint: `Known authenticators: ${this.#ids("authenticator").join(", ") || "none"}`,
      exitCode: 2,
    });
  }

  /** The provider plugin with this id, or a clear error naming the ones there are. */
  provider(id: string): ProviderPlugin<never> {
    const plugin = this.#plugins.get(`provider:${id}`);
    if (plugin?.kind === "provider") return plugin;
    throw new ProvisioningError("unknown-plugin", `Cannot find provider "${id}"`, {
      hint: `Known providers: ${this.#ids("provider").join(", ") || "none"}`,
      exitCode: 2,
    });
  }

  #ids(kind: Plugin["kind"]): string[] {
    return this.list().filter((p) => p.kind === kind).map((p) => p.manifest.id);
  }
}
