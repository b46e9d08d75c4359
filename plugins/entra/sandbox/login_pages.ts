/**
 * The sandbox's stand-ins for Microsoft's sign-in pages (`login.microsoftonline.com`) and for the
 * ceremony page at `login.microsoft.com/{tenant}/fido/create`, in the order real tenants show
 * them (sources: docs/fidelity.md, "Browser and TAP path"):
 *
 * 1. user name (`input[name=loginfmt]`, `#idSIButton9` "Next") — Msiavashi/automatic-microsoft-
 *    user-provisioning `selenium-automation/microsoft_credential_manager.py`;
 * 2. the Temporary Access Pass prompt, a field named `accesspass` and "Sign in" (same script;
 *    nathanmcnulty `Entra/passkeys/Register-PasskeyViaTAP.ps1` posts `accesspass` with `ps=56`).
 *    A new pass may be refused for a while (the variant's `passDelaySeconds`), as public scripts
 *    that retry the prompt for tens of seconds show (seanwest1-flatiron/azure-test
 *    `payloads/tap-sign-in-worker.mjs`); a spent one-time pass is "blocked due to User
 *    Credential Policy" (issue 19's evidence);
 * 3. interrupts: "More information required" (`#ProofUpDescription`, the selenium script) leading
 *    to "Keep your account secure" at mysignins `/register` (mysignins.ts), and "Stay signed in?"
 *    (`#idBtn_Back` "No", `#idSIButton9` "Yes");
 * 4. `POST /{tenant}/fido/create`: the form Security info posts (canary, serverChallenge, userId,
 *    memberName, userDisplayName, ExcludeNextGenCredentialsJSON, postBackUrl, as
 *    Register-PasskeyViaTAP.ps1 and CompassSecurity/deviceCode2SecurityKey send it); its page
 *    calls `navigator.credentials.create()` with the rp id of its own host and the UTF-8 bytes
 *    of the JWE `serverChallenge` as challenge, then posts the result to `postBackUrl`.
 *
 * The texts are the sandbox's English (a non-English variant changes `<html lang>` and the
 * buttons' words only); the client keys on attributes, roles and names it reads from flow data.
 *
 * @module
 */
import { cookie, escapeHtml, html, page, redirect } from "./page_html.ts";
import type { PageState } from "./page_state.ts";
import type { SandboxUser } from "./tenant.ts";

const securityInfoPath = "/mysignins/security-info";

/** Error texts of the pass prompt, by what went wrong. */
const passErrors = {
  incorrect: "Your Temporary Access Pass is incorrect. Check it and try again.",
  expired: "Your Temporary Access Pass has expired. Contact your admin for a new one.",
  notYetValid: "Your Temporary Access Pass is not valid yet. Try again later.",
  used: "Your Temporary Access Pass has been blocked due to User Credential Policy. Contact your admin.",
  disabled: "Temporary Access Pass sign-in is disabled for your organization. Contact your admin.",
} as const;

/** The few words that change with the page language. */
function words(lang: string): { next: string; signIn: string; no: string; yes: string } {
  return lang.startsWith("de")
    ? { next: "Weiter", signIn: "Anmelden", no: "Nein", yes: "Ja" }
    : { next: "Next", signIn: "Sign in", no: "No", yes: "Yes" };
}

/** The sign-in pages and the ceremony page; `undefined` when a path is not theirs. */
export function createLoginPages(
  state: PageState,
): (request: Request, url: URL) => Promise<Response | undefined> {
  const { tenant } = state;

  async function login(request: Request, url: URL): Promise<Response> {
    const lang = state.variantFor(undefined).language;
    if (request.method === "GET") {
      const { id } = state.newSession(safeReturn(url.searchParams.get("return")));
      return html(upnPage(lang), 200, { "set-cookie": cookie(id) });
    }
    const current = state.session(request);
    const form = await request.formData().catch(() => new FormData());
    const step = String(form.get("step") ?? "");
    if (!current) {
      return html(upnPage(lang, "Your sign-in session expired. Start again."), 200, {
        "set-cookie": cookie(state.newSession(securityInfoPath).id),
      });
    }
    const signIn = current.state;
    if (step === "upn") {
      const upn = String(form.get("loginfmt") ?? "").trim();
      const user = upn ? tenant.user(upn) ?? tenant.userByMail(upn) : undefined;
      if (!user || !user.accountEnabled) {
        return html(upnPage(
          lang,
          "This username may be incorrect. Make sure you typed it correctly. Otherwise, contact your admin.",
          upn,
        ));
      }
      signIn.userId = user.id;
      signIn.stage = "tap";
      return html(tapPage(user, state.variantFor(user.id).language));
    }
    const user = signIn.userId ? tenant.user(signIn.userId) : undefined;
    if (!user) return html(upnPage(lang));
    const variant = state.variantFor(user.id);
    if (step === "tap" && signIn.stage === "tap") {
      const refusal = checkPass(user, String(form.get("accesspass") ?? ""));
      if (refusal) return html(tapPage(user, variant.language, refusal));
      if (variant.proofUp !== "none") {
        signIn.stage = "proof-up";
        return html(proofUpPage(user, variant.language));
      }
      return afterInterrupts(signIn, variant.staySignedIn, variant.language);
    }
    if (step === "proof-up" && signIn.stage === "proof-up") {
      signIn.stage = "register";
      return redirect("/mysignins/register");
    }
    if (step === "kmsi" && signIn.stage === "kmsi") {
      signIn.stage = "done";
      return redirect(signIn.returnTo);
    }
    return html(upnPage(lang, "Your sign-in session expired. Start again."));
  }

  const checkPass = (user: SandboxUser, value: string) => passRefusal(state, user, value);

  async function fidoCreate(request: Request): Promise<Response> {
    const form = await request.formData().catch(() => new FormData());
    const field = (name: string) => String(form.get(name) ?? "");
    const ceremony = state.ceremonies.get(field("canary"));
    if (
      !ceremony || ceremony.serverChallenge !== field("serverChallenge") || tenant.now() > ceremony.expiresAt
    ) {
      return html(
        page(
          "Sign in to your account",
          `<div role="alert" id="fidoError" class="error">AADSTS135011: The request to set up your security key has expired or is not valid. Go back and try again.</div>`,
        ),
        400,
      );
    }
    const config = {
      canary: field("canary"),
      serverChallenge: ceremony.serverChallenge,
      userId: field("userId"),
      memberName: field("memberName"),
      userDisplayName: field("userDisplayName"),
      exclude: field("ExcludeNextGenCredentialsJSON") || "[]",
      postBackUrl: field("postBackUrl"),
      // Security info asks for a roaming authenticator in both pickers (the existing sandbox shape).
      attachment: "cross-platform",
    };
    return html(ceremonyPage(config));
  }

  return async (request, url) => {
    const path = url.pathname;
    if (path === "/login" && (request.method === "GET" || request.method === "POST")) {
      return await login(request, url);
    }
    if (path === "/login/signout" && request.method === "POST") {
      const current = state.session(request);
      if (current) state.endSession(current.id);
      await request.body?.cancel();
      return redirect("/login", { "set-cookie": cookie("", 0) });
    }
    if (path === `/${tenant.tenantId}/fido/create` && request.method === "POST") {
      return await fidoCreate(request);
    }
    return undefined;
  };
}

/**
 * Why the pass cannot be used now (the sign-in page's words), or undefined once it was redeemed
 * (a one-time pass is spent). Shared by the sign-in page and the ESTS login post (ests.ts).
 */
export function passRefusal(state: PageState, user: SandboxUser, value: string): string | undefined {
  const { tenant } = state;
  const tap = tenant.temporaryAccessPass(user.id);
  if (!tap || value === "" || tap.temporaryAccessPass !== value) return passErrors.incorrect;
  const delay = state.variantFor(user.id).passDelaySeconds * 1000;
  // Not known to the directory replica that answers yet: refused like an unknown pass, not spent.
  if (tenant.now() < Date.parse(tap.createdDateTime) + delay) return passErrors.incorrect;
  switch (tenant.tapUsability(tap).methodUsabilityReason) {
    case "Expired":
      return passErrors.expired;
    case "NotYetValid":
      return passErrors.notYetValid;
    case "OneTimeUsed":
      return passErrors.used;
    case "DisabledByPolicy":
      return passErrors.disabled;
  }
  return tenant.redeemTemporaryAccessPass(user.id, value) ? undefined : passErrors.expired;
}

/** "Stay signed in?" when the variant has it, else straight back to where the sign-in started. */
function afterInterrupts(
  signIn: { stage: string; returnTo: string },
  staySignedIn: boolean,
  lang: string,
): Response {
  if (staySignedIn) {
    signIn.stage = "kmsi";
    return html(kmsiPage(lang));
  }
  signIn.stage = "done";
  return redirect(signIn.returnTo);
}

/** Finishes a sign-in the proof-up interrupt held (mysignins.ts calls it after "Skip setup"). */
export function finishAfterRegister(state: PageState, request: Request): Response | undefined {
  const current = state.session(request);
  if (current?.state.stage !== "register" || !current.state.userId) return undefined;
  const variant = state.variantFor(current.state.userId);
  return afterInterrupts(current.state, variant.staySignedIn, variant.language);
}

function safeReturn(value: string | null): string {
  return value && /^\/[A-Za-z0-9/_-]*$/.test(value) ? value : securityInfoPath;
}

function errorBlock(id: string, text?: string): string {
  return text ? `<div id="${id}" class="error" role="alert">${escapeHtml(text)}</div>` : "";
}

function upnPage(lang: string, error?: string, upn = ""): string {
  const w = words(lang);
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" name="f1">
  <div role="heading" aria-level="1" class="heading" id="loginHeader">${
      lang.startsWith("de") ? "Anmelden" : "Sign in"
    }</div>
  ${errorBlock("usernameError", error)}
  <input type="hidden" name="step" value="upn">
  <input type="email" name="loginfmt" id="i0116" autocomplete="username" maxlength="113" lang="en"
    placeholder="Email, phone, or Skype" aria-label="Enter your email, phone, or Skype." value="${
      escapeHtml(upn)
    }">
  <input type="submit" id="idSIButton9" class="button_primary" value="${w.next}">
</form>`,
    lang,
  );
}

function tapPage(user: SandboxUser, lang: string, error?: string): string {
  const w = words(lang);
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" name="f1">
  <div id="displayName">${escapeHtml(user.userPrincipalName)}</div>
  <div role="heading" aria-level="1" class="heading">Enter Temporary Access Pass</div>
  ${errorBlock("accessPassError", error)}
  <input type="hidden" name="step" value="tap">
  <input type="password" name="accesspass" id="accesspass" autocomplete="off"
    placeholder="Temporary Access Pass" aria-label="Temporary Access Pass">
  <input type="submit" id="idSIButton9" class="button_primary" value="${w.signIn}">
</form>`,
    lang,
  );
}

function proofUpPage(user: SandboxUser, lang: string): string {
  const w = words(lang);
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" name="f1">
  <div id="displayName">${escapeHtml(user.userPrincipalName)}</div>
  <div role="heading" aria-level="1" class="heading">More information required</div>
  <div id="ProofUpDescription">Your organization needs more information to keep your account secure</div>
  <input type="hidden" name="step" value="proof-up">
  <input type="submit" id="idSIButton9" class="button_primary" value="${w.next}">
</form>`,
    lang,
  );
}

function kmsiPage(lang: string): string {
  const w = words(lang);
  return page(
    "Sign in to your account",
    `<form method="post" action="/login" name="f1">
  <div role="heading" aria-level="1" class="row text-title heading">Stay signed in?</div>
  <div id="KmsiDescription">Do this to reduce the number of times you are asked to sign in.</div>
  <label><input type="checkbox" name="DontShowAgain" id="KmsiCheckboxField"> Don't show this again</label>
  <input type="hidden" name="step" value="kmsi">
  <input type="button" id="idBtn_Back" value="${w.no}" onclick="this.form.requestSubmit()">
  <input type="submit" id="idSIButton9" class="button_primary" value="${w.yes}">
</form>`,
    lang,
  );
}

/** The ceremony page: the page's script, with the form fields it was posted. */
function ceremonyPage(config: Record<string, string>): string {
  const data = JSON.stringify(config).replace(/</g, "\\u003c");
  return page(
    "Sign in to your account",
    `<div role="heading" aria-level="1" class="heading">Setting up your passkey</div>
<p id="fidoStatus">Follow the instructions of your browser or security key.</p>
<form method="post" id="postBack" hidden>
  <input type="hidden" name="canary"><input type="hidden" name="clientDataJson"><input type="hidden" name="attestationObject">
  <input type="hidden" name="credentialId"><input type="hidden" name="clientExtensionResults"><input type="hidden" name="transports">
  <input type="hidden" name="authenticator"><input type="hidden" name="error_code"><input type="hidden" name="suberror_code">
</form>
<script type="application/json" id="fidoConfig">${data}</script>
<script>${ceremonyScript}</script>`,
  );
}

/** What the ceremony page does: create the credential for its own host, post the result back. */
const ceremonyScript = `
(async () => {
  const config = JSON.parse(document.getElementById("fidoConfig").textContent);
  const form = document.getElementById("postBack");
  const b64u = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const bytes = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const set = (name, value) => { form.elements[name].value = value; };
  set("canary", config.canary);
  set("authenticator", config.attachment);
  try {
    const exclude = JSON.parse(config.exclude).map((c) => ({ type: "public-key", id: bytes(c.id), transports: c.transports || ["usb", "nfc"] }));
    const credential = await navigator.credentials.create({ publicKey: {
      rp: { id: location.hostname, name: "Microsoft" },
      user: { id: bytes(config.userId), name: config.memberName, displayName: config.userDisplayName },
      challenge: new TextEncoder().encode(config.serverChallenge),
      pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
      timeout: 600000,
      excludeCredentials: exclude,
      authenticatorSelection: { authenticatorAttachment: config.attachment, requireResidentKey: true, residentKey: "required", userVerification: "required" },
      attestation: "direct",
      extensions: { credentialProtectionPolicy: "userVerificationOptional", enforceCredentialProtectionPolicy: true, hmacCreateSecret: true, credProps: true },
    } });
    set("clientDataJson", b64u(credential.response.clientDataJSON));
    set("attestationObject", b64u(credential.response.attestationObject));
    set("credentialId", credential.id);
    set("clientExtensionResults", b64u(new TextEncoder().encode(JSON.stringify(credential.getClientExtensionResults()))));
    set("transports", (credential.response.getTransports ? credential.response.getTransports() : []).join(","));
  } catch (error) {
    set("error_code", (error && error.name) || "UnknownError");
  }
  form.action = config.postBackUrl;
  form.submit();
})();
`;
