/**
 * The web pages of the browser provisioning path, as the sandbox serves them, modelled on the
 * real sequence (sources in docs/fidelity.md, "Browser and TAP path"): the sign-in with a
 * Temporary Access Pass and its interrupts (login_pages.ts, standing in for
 * `login.microsoftonline.com`), Security info and its "Add sign-in method" wizard (mysignins.ts,
 * for `mysignins.microsoft.com`), and the ceremony page after a navigation
 * (`/{tenant}/fido/create`, for `login.microsoft.com`). Each user can get a variant of the
 * sequence (page_state.ts): the new or the old method picker, interrupts, a pass that is refused
 * for its first seconds, another page language.
 *
 * The browserless path's requests (ests.ts: the My Sign-Ins app's authorize, `/common/login`,
 * token and `session/authorize`) are served too.
 *
 * Paths: `GET/POST /login`, `POST /login/signout`, `POST /{tenant}/fido/create`,
 * `GET /mysignins/security-info`, `GET /mysignins/register[/skip]`,
 * `POST /mysignins/api/authenticationmethods/new|verify`, `POST /mysignins/api/post/newfido`.
 *
 * By default the ceremony page is `https://login.microsoft.com/{tenant}/fido/create` with rp id
 * and origin `login.microsoft.com`, as on real tenants: a browser reaches it only when the tool
 * routes that origin to the sandbox (the browser path does, for sandbox targets only;
 * core/browser/route_origin.ts). `ceremony = "loopback"` serves it from the sandbox's own URL.
 *
 * @module
 */
import { createEsts } from "./ests.ts";
import { createLoginPages } from "./login_pages.ts";
import { createMySignIns } from "./mysignins.ts";
import { type BrowserPageVariant, PageState } from "./page_state.ts";
import type { SandboxTenant } from "./tenant.ts";

export { type BrowserPageVariant, defaultVariant, securityKeysAllowed } from "./page_state.ts";

/** Options of {@link createSignInPages}. */
export interface SignInPagesOptions {
  tenant: SandboxTenant;
  /** The sandbox's base URL (`http://127.0.0.1:port`), known once it listens. */
  baseUrl: () => string;
}

/** The pages' request handler and settings. */
export interface SignInPages {
  /** Answers a request for one of the pages, or `undefined` when the path is not theirs. */
  handle(request: Request, url: URL): Promise<Response | undefined>;
  /** Sign-in sessions open now. */
  readonly sessions: number;
  /** Changes the page variant of one user (id or UPN), or of everyone when `user` is absent. */
  setVariant(patch: Partial<BrowserPageVariant>, user?: string): void;
  /** The variant a user gets. */
  variantFor(userId: string): BrowserPageVariant;
  /** Where the ceremony page is: `production` (`https://login.microsoft.com`, the default) or `loopback`. */
  ceremony: "production" | "loopback";
  /** The ceremony page's origin and rp id now. */
  ceremonyHost(): { origin: string; rpId: string };
}

/** See the module documentation. */
export function createSignInPages(options: SignInPagesOptions): SignInPages {
  const state = new PageState(options.tenant, options.baseUrl);
  const login = createLoginPages(state);
  const mySignIns = createMySignIns(state);
  const ests = createEsts(state);
  return {
    get sessions() {
      return state.sessions;
    },
    get ceremony() {
      return state.ceremony;
    },
    set ceremony(value) {
      state.ceremony = value;
    },
    setVariant: (patch, user) => state.setVariant(patch, user),
    variantFor: (userId) => state.variantFor(userId),
    ceremonyHost: () => state.ceremonyHost(),
    async handle(request, url) {
      return await login(request, url) ?? await ests(request, url) ?? await mySignIns(request, url);
    },
  };
}
