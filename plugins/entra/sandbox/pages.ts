/**
 * The web pages of the browser provisioning path, as the sandbox serves them: a multi-step
 * sign-in (user name, then Temporary Access Pass, then "Stay signed in?") standing in for
 * `login.microsoftonline.com`, and a Security info page with an "Add sign-in method" wizard
 * standing in for `mysignins.microsoft.com/security-info`. The wizard's script fetches creation
 * options shaped like the ones Entra's own page uses (cross-platform, resident key and user
 * verification required, direct attestation, credProtect, hmac-secret, credProps), calls
 * `navigator.credentials.create()`, reads the credential through the PublicKeyCredential
 * interface, and posts it back; the registration is verified by registration.ts, the same
 * verifier as Graph's `POST fido2Methods`.
 *
 * Paths:
 * - `GET /login?return=PATH`, `POST /login` (form `step` = `upn` | `tap` | `kmsi`);
 * - `GET /mysignins/security-info` (redirects to `/login` when not signed in);
 * - `GET /mysignins/api/fido2/options`, `POST /mysignins/api/fido2/register` (JSON, for the page's script);
 * - `POST /login/signout`.
 *
 * Elements carry stable `id` / `name` / `data-testid` attributes; where Microsoft's own sign-in
 * page has a well-known attribute (`name="loginfmt"`, `#idSIButton9`, `#idBtn_Back`) the sandbox
 * uses it too. Failure states are marked with `data-error-code`: `user-not-found`, `wrong-tap`,
 * `tap-expired`, `tap-not-yet-valid`, `tap-already-used`, `tap-disabled`,
 * `policy-forbids-security-keys`, `registration-refused`, `webauthn-failed`. The texts are the
 * sandbox's own; Microsoft's differ and change by locale, which is why the flow keys on attributes.
 *
 * The WebAuthn rp id is the sandbox's host and the origin its own URL: a browser on these pages
 * can only create credentials for them.
 *
 * @module
 */
import { z } from "zod";
import { randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { RegistrationRefused, verifyRegistration } from "./registration.ts";
import type { SandboxTenant, SandboxUser } from "./tenant.ts";

/** Options of {@link createSignInPages}. */
export interface SignInPagesOptions {
  tenant: SandboxTenant;
  /** The sandbox's base URL (`http://127.0.0.1:port`), known once it listens. */
  baseUrl: () => string;
}

/** The pages' request handler. */
export interface SignInPages {
  /** Answers a request for one of the pages, or `undefined` when the path is not theirs. */
  handle(request: Request, url: URL): Promise<Response | undefined>;
  /** Sign-in sessions open now. */
  readonly sessions: number;
}

/** Where a browser sign-in stands. */
interface SignInState {
  stage: "upn" | "tap" | "kmsi" | "done";
  userId?: string;
  returnTo: string;
  createdAt: number;
}

const cookieName = "sbx_signin";
const securityInfoPath = "/mysignins/security-info";

const registerBodySchema = z.object({
  displayName: z.string(),
  credential: z.object({
    id: z.string().min(1).max(2048),
    rawId: z.string().min(1).max(2048),
    type: z.literal("public-key"),
    response: z.object({
      clientDataJSON: z.string().min(1).max(65536),
      attestationObject: z.string().min(1).max(65536),
      transports: z.array(z.string()).optional(),
    }),
    clientExtensionResults: z.record(z.string(), z.unknown()).optional(),
  }),
});

/** Whether the Passkey (FIDO2) policy lets this user add a security key in Security info. */
export function securityKeysAllowed(tenant: SandboxTenant, user: SandboxUser): boolean {
  const policy = tenant.fido2Policy;
  return policy.state === "enabled" && policy.isSelfServiceRegistrationAllowed &&
    tenant.isTargeted(user.id, policy);
}

/** See the module documentation. */
export function createSignInPages(options: SignInPagesOptions): SignInPages {
  const { tenant } = options;
  const states = new Map<string, SignInState>();

  function stateOf(request: Request): { id: string; state: SignInState } | undefined {
    const cookie = request.headers.get("cookie") ?? "";
    const match = new RegExp(`(?:^|;\\s*)${cookieName}=([A-Za-z0-9_-]+)`).exec(cookie);
    const id = match?.[1];
    const state = id ? states.get(id) : undefined;
    return id && state ? { id, state } : undefined;
  }

  function newState(returnTo: string): { id: string; state: SignInState } {
    const id = toBase64Url(randomBytes(24));
    const state: SignInState = { stage: "upn", returnTo, createdAt: tenant.now() };
    states.set(id, state);
    return { id, state };
  }

  function signedInUser(request: Request): SandboxUser | undefined {
    const current = stateOf(request);
    if (current?.state.stage !== "done" || !current.state.userId) return undefined;
    return tenant.user(current.state.userId);
  }

  async function login(request: Request, url: URL): Promise<Response> {
    if (request.method === "GET") {
      const { id } = newState(safeReturn(url.searchParams.get("return")));
      return html(upnPage(), 200, { "set-cookie": cookie(id) });
    }
    const current = stateOf(request);
    const form = await request.formData().catch(() => new FormData());
    const step = String(form.get("step") ?? "");
    if (!current) {
      return html(
        upnPage({ code: "session-expired", text: "Your sign-in session expired. Start again." }),
        200,
        { "set-cookie": cookie(newState(securityInfoPath).id) },
      );
    }
    const { state } = current;
    if (step === "upn") {
      const upn = String(form.get("loginfmt") ?? "").trim();
      const user = upn ? tenant.user(upn) ?? tenant.userByMail(upn) : undefined;
      if (!user || !user.accountEnabled) {
        return html(upnPage({
          code: "user-not-found",
          text: "We couldn't find an account with that username. Try another one.",
        }, upn));
      }
      state.userId = user.id;
      state.stage = "tap";
      return html(tapPage(user));
    }
    if (step === "tap" && state.stage === "tap" && state.userId) {
      const user = tenant.user(state.userId);
      if (!user) return html(upnPage());
      const failure = checkPass(user, String(form.get("accesspass") ?? ""));
      if (failure) return html(tapPage(user, failure));
      state.stage = "kmsi";
      return html(kmsiPage());
    }
    if (step === "kmsi" && state.stage === "kmsi") {
      state.stage = "done";
      return new Response(null, { status: 302, headers: { location: state.returnTo } });
    }
    return html(upnPage({ code: "session-expired", text: "Your sign-in session expired. Start again." }));
  }

  /** Why the pass cannot be used now, or undefined when it was redeemed. */
  function checkPass(user: SandboxUser, value: string): { code: string; text: string } | undefined {
    const tap = tenant.temporaryAccessPass(user.id);
    if (!tap || value === "" || tap.temporaryAccessPass !== value) {
      return {
        code: "wrong-tap",
        text: "That Temporary Access Pass is not correct. Check it and try again.",
      };
    }
    const reason = tenant.tapUsability(tap).methodUsabilityReason;
    const refusals: Record<string, { code: string; text: string }> = {
      Expired: {
        code: "tap-expired",
        text: "Your Temporary Access Pass has expired. Ask your admin for a new one.",
      },
      NotYetValid: { code: "tap-not-yet-valid", text: "Your Temporary Access Pass is not valid yet." },
      OneTimeUsed: {
        code: "tap-already-used",
        text: "This Temporary Access Pass can be used once and has already been used.",
      },
      DisabledByPolicy: {
        code: "tap-disabled",
        text: "Temporary Access Pass sign-in is turned off for your organization.",
      },
    };
    const refusal = refusals[reason];
    if (refusal) return refusal;
    return tenant.redeemTemporaryAccessPass(user.id, value) ? undefined : refusals["Expired"];
  }

  function securityInfo(request: Request): Response {
    const user = signedInUser(request);
    if (!user) {
      return new Response(null, {
        status: 302,
        headers: { location: `/login?return=${encodeURIComponent(securityInfoPath)}` },
      });
    }
    return html(securityInfoPage(user, tenant.fido2Methods(user.id), securityKeysAllowed(tenant, user)));
  }

  function creationOptions(request: Request): Response {
    const user = signedInUser(request);
    if (!user) return apiError(401, "not-signed-in", "Sign in first.");
    if (!securityKeysAllowed(tenant, user)) {
      return apiError(
        403,
        "policy-forbids-security-keys",
        "Your organization's policy does not allow you to add a security key.",
      );
    }
    const base = new URL(options.baseUrl());
    const pending = tenant.issueChallenge(user.id, 5);
    return json({
      publicKey: {
        rp: { id: base.hostname, name: "Microsoft" },
        user: {
          id: toBase64Url(new TextEncoder().encode(user.userPrincipalName)),
          name: user.userPrincipalName,
          displayName: user.displayName,
        },
        challenge: pending.challenge,
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
        timeout: 180_000,
        excludeCredentials: tenant.fido2Methods(user.id).map((m) => ({
          type: "public-key",
          id: m.credentialId,
          transports: ["usb", "nfc"],
        })),
        authenticatorSelection: {
          authenticatorAttachment: "cross-platform",
          requireResidentKey: true,
          residentKey: "required",
          userVerification: "required",
        },
        attestation: "direct",
        extensions: {
          credentialProtectionPolicy: "userVerificationOptional",
          enforceCredentialProtectionPolicy: true,
          hmacCreateSecret: true,
          credProps: true,
        },
      },
    });
  }

  async function register(request: Request): Promise<Response> {
    const user = signedInUser(request);
    if (!user) return apiError(401, "not-signed-in", "Sign in first.");
    if (!securityKeysAllowed(tenant, user)) {
      return apiError(
        403,
        "policy-forbids-security-keys",
        "Your organization's policy does not allow you to add a security key.",
      );
    }
    let body: z.infer<typeof registerBodySchema>;
    try {
      body = registerBodySchema.parse(await request.json());
    } catch {
      return apiError(400, "registration-refused", "The request is not a security key registration.");
    }
    const name = body.displayName.trim();
    if ([...name].length < 1 || [...name].length > 30) {
      return apiError(400, "registration-refused", "Name your security key with 1 to 30 characters.");
    }
    const base = new URL(options.baseUrl());
    try {
      const method = await verifyRegistration(tenant, user, {
        displayName: name,
        credential: {
          id: body.credential.id,
          response: body.credential.response,
          clientExtensionResults: body.credential.clientExtensionResults,
        },
      }, { origins: [base.origin], rpId: base.hostname });
      return json({ id: method.id, displayName: method.displayName }, 201);
    } catch (error) {
      if (error instanceof RegistrationRefused) return apiError(400, "registration-refused", error.message);
      throw error;
    }
  }

  return {
    get sessions() {
      return states.size;
    },
    async handle(request, url) {
      const path = url.pathname;
      if (path === "/login" && (request.method === "GET" || request.method === "POST")) {
        return await login(request, url);
      }
      if (path === "/login/signout" && request.method === "POST") {
        const current = stateOf(request);
        if (current) states.delete(current.id);
        await request.body?.cancel();
        return new Response(null, {
          status: 302,
          headers: { location: "/login", "set-cookie": cookie("", 0) },
        });
      }
      if (path === securityInfoPath && request.method === "GET") return securityInfo(request);
      if (path === "/mysignins/api/fido2/options" && request.method === "GET") {
        return creationOptions(request);
      }
      if (path === "/mysignins/api/fido2/register" && request.method === "POST") {
        return await register(request);
      }
      return undefined;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function safeReturn(value: string | null): string {
  return value && /^\/[A-Za-z0-9/_-]*$/.test(value) ? value : securityInfoPath;
}

function cookie(id: string, maxAge?: number): string {
  return `${cookieName}=${id}; Path=/; HttpOnly; SameSite=Lax${
    maxAge === undefined ? "" : `; Max-Age=${maxAge}`
  }`;
}

const noStore = { "cache-control": "no-store" };

function html(body: string, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8", ...noStore, ...headers },
  });
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...noStore },
  });
}

function apiError(status: number, code: string, message: string): Response {
  return json({ error: { code, message } }, status);
}

const style = `<style>
  body { font-family: "Segoe UI", sans-serif; background: #f2f2f2; margin: 0; }
  main { background: #fff; max-width: 440px; margin: 48px auto; padding: 44px; box-shadow: 0 2px 6px rgba(0,0,0,.2); }
  input { width: 100%; font-size: 15px; padding: 6px 0; border: 0; border-bottom: 1px solid #666; margin: 12px 0; }
  button { font-size: 15px; padding: 6px 16px; margin: 8px 8px 0 0; cursor: pointer; }
  .primary { background: #0067b8; color: #fff; border: 0; }
  .error { color: #e81123; margin: 8px 0; }
  [hidden] { display: none !important; }
  .option { display: block; width: 100%; text-align: left; margin: 6px 0; }
</style>`;

function page(title: string, content: string, lang = "en"): string {
  return `<!doctype html><html lang="${lang}"><head><meta charset="utf-8"><title>${
    escapeHtml(title)
  }</title>${style}</head><body><main>${content}</main></body></html>`;
}

function errorBlock(id: string, error?: { code: string; text: string }): string {
  return error
    ? `<div id="${id}" class="error" role="alert" data-testid="signin-error" data-error-code="${
      escapeHtml(error.code)
    }">${escapeHtml(error.text)}</div>`
    : "";
}

function upnPage(error?: { code: string; text: string }, upn = ""): string {
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" data-testid="upn-form">
  <div role="heading" aria-level="1" data-testid="signin-title">Sign in</div>
  ${errorBlock("usernameError", error)}
  <input type="hidden" name="step" value="upn">
  <input type="email" name="loginfmt" id="i0116" data-testid="upn-input" autocomplete="username"
    placeholder="Email, phone, or Skype" aria-label="Enter your email, phone, or Skype." value="${
      escapeHtml(upn)
    }">
  <button type="submit" class="primary" id="idSIButton9" data-testid="primary-button">Next</button>
</form>`,
  );
}

function tapPage(user: SandboxUser, error?: { code: string; text: string }): string {
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" data-testid="tap-form">
  <div data-testid="signin-identity">${escapeHtml(user.userPrincipalName)}</div>
  <div role="heading" aria-level="1">Enter Temporary Access Pass</div>
  ${errorBlock("accessPassError", error)}
  <input type="hidden" name="step" value="tap">
  <input type="password" name="accesspass" id="accesspass" data-testid="tap-input" autocomplete="off"
    placeholder="Temporary Access Pass" aria-label="Temporary Access Pass">
  <button type="submit" class="primary" id="idSIButton9" data-testid="primary-button">Sign in</button>
</form>`,
  );
}

function kmsiPage(): string {
  return page(
    "Stay signed in?",
    `<form method="post" action="/login" data-testid="kmsi-form">
  <div role="heading" aria-level="1">Stay signed in?</div>
  <p>Do this to reduce the number of times you are asked to sign in.</p>
  <input type="hidden" name="step" value="kmsi">
  <button type="submit" id="idBtn_Back" data-testid="secondary-button" name="stay" value="no">No</button>
  <button type="submit" class="primary" id="idSIButton9" data-testid="primary-button" name="stay" value="yes">Yes</button>
</form>`,
  );
}

function securityInfoPage(
  user: SandboxUser,
  methods: readonly { id: string; displayName: string }[],
  securityKeys: boolean,
): string {
  const rows = methods.map((m) =>
    `<li data-testid="method-row" data-method="fido2" data-method-id="${escapeHtml(m.id)}">Security key: ${
      escapeHtml(m.displayName)
    }</li>`
  ).join("");
  const fido2Option = securityKeys
    ? `<button type="button" class="option" role="option" data-testid="method-option" data-method="fido2">Security key or passkey</button>`
    : "";
  return page(
    "Security info",
    `<div role="heading" aria-level="1" data-testid="security-info-title">Security info</div>
<p data-testid="signed-in-user">${escapeHtml(user.userPrincipalName)}</p>
<ul data-testid="methods-list">${rows}</ul>
<button type="button" id="add-method" data-testid="add-method-button">+ Add sign-in method</button>
<div role="dialog" data-testid="add-method-dialog" hidden>
  <section data-testid="method-chooser" data-wizard-step="choose" hidden>
    <div role="heading" aria-level="2">Add a method</div>
    <div role="listbox" aria-label="Which method would you like to add?">
      <button type="button" class="option" role="option" data-testid="method-option" data-method="microsoftAuthenticator">Microsoft Authenticator</button>
      ${fido2Option}
      <button type="button" class="option" role="option" data-testid="method-option" data-method="phone">Phone</button>
    </div>
  </section>
  <section data-testid="device-chooser" data-wizard-step="device" hidden>
    <div role="heading" aria-level="2">Security key</div>
    <p>Choose the type of security key that you have.</p>
    <button type="button" data-testid="security-key-usb" data-device="usb">USB device</button>
    <button type="button" data-testid="security-key-nfc" data-device="nfc">NFC device</button>
  </section>
  <section data-testid="key-ready" data-wizard-step="ready" hidden>
    <p>Have your key ready. When you choose Next, you will be asked to touch your key.</p>
    <button type="button" class="primary" data-testid="wizard-next" id="wizard-next">Next</button>
  </section>
  <section data-testid="key-naming" data-wizard-step="name" hidden>
    <p>Name your security key. This will help distinguish it from other keys.</p>
    <input type="text" id="securityKeyName" name="securityKeyName" data-testid="key-name-input" maxlength="30">
    <button type="button" class="primary" data-testid="name-next" id="name-next">Next</button>
  </section>
  <section data-testid="wizard-done" data-wizard-step="done" hidden>
    <p>You're all set! You can now use your security key instead of a password to sign in.</p>
    <button type="button" class="primary" data-testid="wizard-finish">Done</button>
  </section>
  <div data-testid="wizard-error" class="error" role="alert" hidden></div>
  <button type="button" data-testid="wizard-cancel">Cancel</button>
</div>
<script>${wizardScript}</script>`,
  );
}

/** The wizard's script: what Entra's page does around navigator.credentials.create(). */
const wizardScript = `
(() => {
  const $ = (selector) => document.querySelector(selector);
  const dialog = $('[data-testid="add-method-dialog"]');
  const errorBox = $('[data-testid="wizard-error"]');
  let credential = null;
  const show = (step) => {
    for (const section of dialog.querySelectorAll("[data-wizard-step]")) section.hidden = section.dataset.wizardStep !== step;
  };
  const fail = (code, message, extra) => {
    errorBox.dataset.errorCode = code;
    if (extra) errorBox.dataset.domException = extra;
    errorBox.textContent = message;
    errorBox.hidden = false;
  };
  const b64u = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  $('[data-testid="add-method-button"]').addEventListener("click", () => {
    errorBox.hidden = true;
    dialog.hidden = false;
    show("choose");
  });
  $('[data-testid="wizard-cancel"]').addEventListener("click", () => { dialog.hidden = true; });
  for (const option of dialog.querySelectorAll('[data-testid="method-option"]')) {
    option.addEventListener("click", () => {
      if (option.dataset.method === "fido2") show("device");
      else fail("method-unavailable", "This method cannot be added in the sandbox.");
    });
  }
  for (const device of dialog.querySelectorAll("[data-device]")) device.addEventListener("click", () => show("ready"));
  $('[data-testid="wizard-next"]').addEventListener("click", async () => {
    errorBox.hidden = true;
    const answer = await fetch("/mysignins/api/fido2/options", { credentials: "same-origin" });
    const body = await answer.json();
    if (!answer.ok) return fail(body.error.code, body.error.message);
    const options = body.publicKey;
    options.challenge = bytes(options.challenge);
    options.user.id = bytes(options.user.id);
    options.excludeCredentials = options.excludeCredentials.map((c) => ({ ...c, id: bytes(c.id) }));
    try {
      const created = await navigator.credentials.create({ publicKey: options });
      credential = {
        id: created.id,
        rawId: b64u(created.rawId),
        type: created.type,
        response: {
          clientDataJSON: b64u(created.response.clientDataJSON),
          attestationObject: b64u(created.response.attestationObject),
          transports: created.response.getTransports ? created.response.getTransports() : [],
        },
        clientExtensionResults: created.getClientExtensionResults(),
      };
      show("name");
    } catch (error) {
      fail("webauthn-failed", "We couldn't register your security key. Try again.", error && error.name);
    }
  });
  $('[data-testid="name-next"]').addEventListener("click", async () => {
    errorBox.hidden = true;
    const answer = await fetch("/mysignins/api/fido2/register", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ displayName: $('[data-testid="key-name-input"]').value, credential }),
    });
    const body = await answer.json();
    if (!answer.ok) return fail(body.error.code, body.error.message);
    dialog.dataset.methodId = body.id;
    show("done");
  });
  $('[data-testid="wizard-finish"]').addEventListener("click", () => location.reload());
})();
`;
