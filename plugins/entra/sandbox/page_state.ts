/**
 * The state the sandbox's web pages keep: browser sign-in sessions (by cookie), the page variant
 * each user gets, and the Security info ceremonies in flight (by canary). Shared by
 * login_pages.ts and mysignins.ts; pages.ts puts them together.
 *
 * @module
 */
import { randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { cookieValue } from "./page_html.ts";
import type { SandboxTenant, SandboxUser } from "./tenant.ts";

/**
 * How the pages behave for a user: which of the real sequences' variants they reproduce. Each is
 * seen on real tenants (sources in docs/fidelity.md, "Browser and TAP path").
 */
export interface BrowserPageVariant {
  /**
   * `new`: "Add sign-in method" opens a recommended method and "Show more options", which lists
   * "Passkey" (the redesigned picker, August 2024). `old`: a drop-down ("Authentication method
   * options") with "Security key", then "Add", then "USB device" or "NFC device".
   */
  picker: "new" | "old";
  /**
   * After the pass: `none`; `skippable`: "More information required", then "Keep your account
   * secure" at mysignins `/register` with "Skip setup"; `required`: the same without the skip.
   */
  proofUp: "none" | "skippable" | "required";
  /** "Stay signed in?" after the sign-in. */
  staySignedIn: boolean;
  /** A new pass is refused, as one the directory does not know yet, for this many seconds after it was created. */
  passDelaySeconds: number;
  /** The pages' language (`<html lang>`); the sandbox has English words only, other tags only change the attribute and a few words. */
  language: string;
  /**
   * Security info's session asks for the NGC-MFA claims (`requireNgcMfaForSecurityInfo`) until the
   * token was refreshed with them (the TAP path; Register-PasskeyViaTAP.ps1).
   */
  requireNgcMfa: boolean;
}

/** What every user gets unless {@link PageState.setVariant} said otherwise. */
export const defaultVariant: BrowserPageVariant = {
  picker: "new",
  proofUp: "none",
  staySignedIn: true,
  passDelaySeconds: 0,
  language: "en",
  requireNgcMfa: false,
};

/** Where a browser sign-in stands. */
export interface SignInState {
  stage: "upn" | "tap" | "proof-up" | "register" | "kmsi" | "done";
  userId?: string;
  returnTo: string;
  createdAt: number;
}

/** A Security info ceremony in flight, keyed by its canary. */
export interface PendingCeremony {
  userId: string;
  /** The JWE string whose UTF-8 bytes are the WebAuthn challenge. */
  serverChallenge: string;
  /** `Type` of `authenticationmethods/new`: 18 passkey (new picker), 12 security key (old picker). */
  type: number;
  expiresAt: number;
  /** Set by `newfido` once the ceremony page posted its result. */
  result?: Record<string, string>;
}

/** Where the ceremony page lives: its origin and the rp id the credential must be scoped to. */
export interface CeremonyHost {
  origin: string;
  rpId: string;
}

/** The pages' shared state. */
export class PageState {
  readonly tenant: SandboxTenant;
  readonly baseUrl: () => string;
  /**
   * `production`: the ceremony page is `https://login.microsoft.com/{tenant}/fido/create`, rp id
   * and origin `login.microsoft.com` as on real tenants (a browser reaches it only when the tool
   * routes that origin to the sandbox, as the browser path does for sandbox targets). `loopback`:
   * the sandbox's own URL and host.
   */
  ceremony: "production" | "loopback" = "production";
  readonly #sessions = new Map<string, SignInState>();
  readonly #variants = new Map<string, BrowserPageVariant>();
  #default: BrowserPageVariant = { ...defaultVariant };
  readonly ceremonies = new Map<string, PendingCeremony>();

  constructor(tenant: SandboxTenant, baseUrl: () => string) {
    this.tenant = tenant;
    this.baseUrl = baseUrl;
  }

  /** Changes the variant of one user (by id or UPN), or of everyone when `user` is absent. */
  setVariant(patch: Partial<BrowserPageVariant>, user?: string): void {
    if (user === undefined) {
      this.#default = { ...this.#default, ...patch };
      return;
    }
    const found = this.tenant.user(user);
    if (!found) throw new TypeError(`Cannot set the page variant of "${user}": no such sandbox user`);
    this.#variants.set(found.id, { ...this.variantFor(found.id), ...patch });
  }

  /** The variant a user gets (the default before the user is known). */
  variantFor(userId: string | undefined): BrowserPageVariant {
    return (userId ? this.#variants.get(userId) : undefined) ?? this.#default;
  }

  /** Where the ceremony page is served from. */
  ceremonyHost(): CeremonyHost {
    if (this.ceremony === "production") {
      return { origin: "https://login.microsoft.com", rpId: "login.microsoft.com" };
    }
    const base = new URL(this.baseUrl());
    return { origin: base.origin, rpId: base.hostname };
  }

  /** The request's sign-in session. */
  session(request: Request): { id: string; state: SignInState } | undefined {
    const id = cookieValue(request);
    const state = id ? this.#sessions.get(id) : undefined;
    return id && state ? { id, state } : undefined;
  }

  /** Starts a sign-in session. */
  newSession(returnTo: string): { id: string; state: SignInState } {
    const id = toBase64Url(randomBytes(24));
    const state: SignInState = { stage: "upn", returnTo, createdAt: this.tenant.now() };
    this.#sessions.set(id, state);
    return { id, state };
  }

  /** Ends a sign-in session. */
  endSession(id: string): void {
    this.#sessions.delete(id);
  }

  /** The user the request's session signed in, once the sign-in is done. */
  signedInUser(request: Request): SandboxUser | undefined {
    const current = this.session(request);
    if (current?.state.stage !== "done" || !current.state.userId) return undefined;
    return this.tenant.user(current.state.userId);
  }

  /**
   * Security info sessions of API clients (the browserless path): `SessionCtxV2` → user id, made
   * by `POST /mysignins/api/session/authorize` from a My Sign-Ins access token (ests.ts).
   */
  readonly apiSessions = new Map<string, string>();

  /** The user of the request: its sign-in cookie, or its `SessionCtxV2` header. */
  requestUser(request: Request): SandboxUser | undefined {
    const signedIn = this.signedInUser(request);
    if (signedIn) return signedIn;
    const ctx = request.headers.get("sessionctxv2");
    const userId = ctx ? this.apiSessions.get(ctx) : undefined;
    return userId ? this.tenant.user(userId) : undefined;
  }

  /** Sign-in sessions open now. */
  get sessions(): number {
    return this.#sessions.size;
  }
}

/** Whether the Passkey (FIDO2) policy lets this user add a passkey in Security info. */
export function securityKeysAllowed(tenant: SandboxTenant, user: SandboxUser): boolean {
  const policy = tenant.fido2Policy;
  return policy.state === "enabled" && policy.isSelfServiceRegistrationAllowed &&
    tenant.isTargeted(user.id, policy);
}
