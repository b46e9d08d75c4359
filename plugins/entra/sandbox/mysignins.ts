/**
 * The sandbox's stand-in for `mysignins.microsoft.com`: Security info, the "Keep your account
 * secure" interrupt at `/register`, and the calls Security info makes to add a passkey, in the
 * order a recorded session shows them (nathanmcnulty/nathanmcnulty
 * `Entra/passkeys/Register-PasskeyViaTAP.ps1`, February 2026; CompassSecurity/deviceCode2SecurityKey
 * for the older `securityinfo` names; sources in docs/fidelity.md, "Browser and TAP path"):
 *
 * 1. `POST /mysignins/api/authenticationmethods/new` `{"Type":18}` (12 for the old picker's
 *    security key) answers `{Type, VerificationState: 1, Data, ErrorCode: 0}` where `Data` is a
 *    JSON string (double-encoded) holding `provisionUrl` and `requestData` (`canary`,
 *    `serverChallenge` — a JWE string —, `postBackUrl`, `userId`, `ExcludeNextGenCredentialsJSON`,
 *    `memberName`, `userDisplayName`);
 * 2. the page posts a form to `provisionUrl` (`login.microsoft.com/{tenant}/fido/create`,
 *    login_pages.ts), where the ceremony runs after the navigation;
 * 3. that page posts the result to `postBackUrl` (`/mysignins/api/post/newfido`), which answers a
 *    page with `<div id="context" data-content=…>` and `<div id="redirectUrl" data-content=…>`
 *    pointing at Security info with `#fidoProvisionSuccess=<canary>`;
 * 4. Security info asks for a name (a default of at most 30 characters) and finishes with
 *    `POST /mysignins/api/authenticationmethods/verify` `{Type, VerificationData}` (a JSON string
 *    with `Name`, `Canary`, `AttestationObject`, `ClientDataJson`, `CredentialId`,
 *    `ClientExtensionResults`); `VerificationState: 2` is success. The registration is verified
 *    here by registration.ts, the same @simplewebauthn/server verifier as Graph's.
 *
 * The real calls carry a bearer token and `SessionCtxV2`; the sandbox's Security info uses its
 * sign-in cookie instead (the browserless path of plugins/entra/tap/ is where the token dance
 * matters). The page's markup (roles, names) follows what public automation clicks: "Add sign-in
 * method", "Show more options" and "Passkey" then "Next" (seanewest/ap2
 * `scripts/homer-self-service-auth-proof.mjs`), or the "Authentication method options" drop-down,
 * "Security key", "Add", "USB device", "Next" (the Selenium script); a name field, "Next", "Done";
 * the method list with a "Delete Passkey" button per passkey.
 *
 * @module
 */
import { CompactEncrypt } from "jose";
import { z } from "zod";
import { fromBase64Any, randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { finishAfterRegister } from "./login_pages.ts";
import { escapeHtml, html, json, page, redirect } from "./page_html.ts";
import { type BrowserPageVariant, type PageState, securityKeysAllowed } from "./page_state.ts";
import { RegistrationRefused, verifyRegistration } from "./registration.ts";
import type { SandboxUser } from "./tenant.ts";

const securityInfoPath = "/mysignins/security-info";

const newBodySchema = z.object({ Type: z.union([z.literal(18), z.literal(12)]) });
const verifyBodySchema = z.object({
  Type: z.union([z.literal(18), z.literal(12)]),
  VerificationData: z.string(),
});
const verificationDataSchema = z.object({
  Name: z.string(),
  Canary: z.string().min(1),
  AttestationObject: z.string().min(1).max(65536),
  ClientDataJson: z.string().min(1).max(65536),
  CredentialId: z.string().min(1).max(2048),
  ClientExtensionResults: z.string().max(65536).optional(),
});

/** Security info and its calls; `undefined` when a path is not theirs. */
export function createMySignIns(
  state: PageState,
): (request: Request, url: URL) => Promise<Response | undefined> {
  const { tenant } = state;
  const challengeKey = randomBytes(32);

  function notSignedIn(): Response {
    return json({ ErrorCode: 401, Message: "Sign in first." }, 401);
  }

  async function newMethod(request: Request): Promise<Response> {
    const user = state.requestUser(request);
    if (!user) return notSignedIn();
    const body = newBodySchema.safeParse(await request.json().catch(() => undefined));
    if (!body.success) {
      return json({ ErrorCode: 400, Message: "Type must be 18 (passkey) or 12 (security key)." }, 400);
    }
    if (!securityKeysAllowed(tenant, user)) {
      return json({ Type: body.data.Type, VerificationState: 3, ErrorCode: 403, Data: null });
    }
    const canary = toBase64Url(randomBytes(48));
    // The challenge is a JWE string; the WebAuthn challenge is its UTF-8 bytes (Register-PasskeyViaTAP.ps1).
    const serverChallenge = await new CompactEncrypt(
      new TextEncoder().encode(JSON.stringify({ uid: user.id, nonce: toBase64Url(randomBytes(16)) })),
    ).setProtectedHeader({ alg: "dir", enc: "A256GCM" }).encrypt(challengeKey);
    const pending = tenant.issueChallenge(
      user.id,
      10,
      toBase64Url(new TextEncoder().encode(serverChallenge)),
    );
    state.ceremonies.set(canary, {
      userId: user.id,
      serverChallenge,
      type: body.data.Type,
      expiresAt: pending.expiresAt,
    });
    const base = state.baseUrl();
    const data = {
      provisionUrl: `${state.ceremonyHost().origin}/${tenant.tenantId}/fido/create`,
      requestData: {
        canary,
        serverChallenge,
        postBackUrl: `${base}/mysignins/api/post/newfido`,
        userId: toBase64Url(new TextEncoder().encode(user.id)),
        memberName: user.userPrincipalName,
        userDisplayName: user.displayName,
        userIconUrl: "",
        authenticator: "cross-platform",
        ExcludeNextGenCredentialsJSON: JSON.stringify(
          tenant.fido2Methods(user.id).map((m) => ({ id: m.credentialId, transports: ["usb", "nfc"] })),
        ),
      },
    };
    return json({ Type: body.data.Type, VerificationState: 1, Data: JSON.stringify(data), ErrorCode: 0 });
  }

  async function newFido(request: Request, url: URL): Promise<Response> {
    const form = await request.formData().catch(() => new FormData());
    const field = (name: string) => String(form.get(name) ?? "");
    const canary = field("canary");
    const ceremony = state.ceremonies.get(canary);
    const base = state.baseUrl();
    if (!ceremony || tenant.now() > ceremony.expiresAt) {
      return html(relayPage({}, `${base}${securityInfoPath}#fidoProvisionError=expired`), 400);
    }
    if (field("error_code") !== "") {
      state.ceremonies.delete(canary);
      return html(
        relayPage(
          {},
          `${base}${securityInfoPath}#fidoProvisionError=${encodeURIComponent(field("error_code"))}`,
        ),
      );
    }
    ceremony.result = {
      Canary: canary,
      AttestationObject: field("attestationObject"),
      ClientDataJson: field("clientDataJson"),
      CredentialId: field("credentialId"),
      ClientExtensionResults: field("clientExtensionResults"),
      DefaultName: ceremony.type === 12 ? "Security key" : "Passkey",
      cid: url.searchParams.get("cid") ?? "",
    };
    return html(relayPage(ceremony.result, `${base}${securityInfoPath}#fidoProvisionSuccess=${canary}`));
  }

  async function verify(request: Request): Promise<Response> {
    const user = state.requestUser(request);
    if (!user) return notSignedIn();
    const body = verifyBodySchema.safeParse(await request.json().catch(() => undefined));
    let data: z.infer<typeof verificationDataSchema> | undefined;
    try {
      data = body.success ? verificationDataSchema.parse(JSON.parse(body.data.VerificationData)) : undefined;
    } catch {
      data = undefined;
    }
    const refuse = (message: string) =>
      json({
        Type: body.success ? body.data.Type : 18,
        VerificationState: 3,
        ErrorCode: 1,
        Message: message,
      });
    if (!data) return refuse("The request is not a passkey registration.");
    const ceremony = state.ceremonies.get(data.Canary);
    if (!ceremony || ceremony.userId !== user.id || !ceremony.result) {
      return refuse("This passkey setup has expired. Start again.");
    }
    const name = data.Name.trim();
    if ([...name].length < 1 || [...name].length > 30) {
      return refuse("Name your passkey with 1 to 30 characters.");
    }
    state.ceremonies.delete(data.Canary);
    const host = state.ceremonyHost();
    let extensions: Record<string, unknown> = {};
    try {
      extensions = data.ClientExtensionResults
        ? JSON.parse(new TextDecoder().decode(fromBase64Any(data.ClientExtensionResults)))
        : {};
    } catch {
      return refuse("The client extension results are not base64url JSON.");
    }
    try {
      const method = await verifyRegistration(tenant, user, {
        displayName: name,
        credential: {
          id: data.CredentialId,
          response: { clientDataJSON: data.ClientDataJson, attestationObject: data.AttestationObject },
          clientExtensionResults: extensions,
        },
      }, { origins: [host.origin], rpId: host.rpId });
      return json({
        Type: ceremony.type,
        VerificationState: 2,
        ErrorCode: 0,
        DataUpdates: {
          FidoDevices: {
            CredentialId: method.credentialId,
            DisplayName: method.displayName,
            CreationTime: method.createdDateTime,
          },
        },
      });
    } catch (error) {
      if (error instanceof RegistrationRefused) return refuse(error.message);
      throw error;
    }
  }

  return async (request, url) => {
    const path = url.pathname;
    if (path === securityInfoPath && request.method === "GET") {
      const user = state.signedInUser(request);
      if (!user) return redirect(`/login?return=${encodeURIComponent(securityInfoPath)}`);
      return html(securityInfoPage(user, state, state.variantFor(user.id)));
    }
    if (path === "/mysignins/register" && request.method === "GET") {
      const current = state.session(request);
      if (current?.state.stage !== "register" || !current.state.userId) return redirect("/login");
      return html(registerPage(state.variantFor(current.state.userId)));
    }
    if (path === "/mysignins/register/skip" && request.method === "GET") {
      const current = state.session(request);
      const variant = state.variantFor(current?.state.userId);
      if (variant.proofUp !== "skippable") return redirect("/mysignins/register");
      return finishAfterRegister(state, request) ?? redirect("/login");
    }
    if (path === "/mysignins/api/authenticationmethods/new" && request.method === "POST") {
      return await newMethod(request);
    }
    if (path === "/mysignins/api/post/newfido" && request.method === "POST") {
      return await newFido(request, url);
    }
    if (path === "/mysignins/api/authenticationmethods/verify" && request.method === "POST") {
      return await verify(request);
    }
    return undefined;
  };
}

/** `newfido`'s answer: the context for Security info's script, and where to go next. */
function relayPage(context: Record<string, string>, redirectUrl: string): string {
  return page(
    "Security info",
    `<div id="context" data-content="${escapeHtml(JSON.stringify(context))}"></div>
<div id="redirectUrl" data-content="${escapeHtml(redirectUrl)}"></div>
<script>
  sessionStorage.setItem("fidoContext", document.getElementById("context").dataset.content);
  location.replace(document.getElementById("redirectUrl").dataset.content);
</script>`,
  );
}

function registerPage(variant: BrowserPageVariant): string {
  const skip = variant.proofUp === "skippable"
    ? `<a href="/mysignins/register/skip" id="skipSetup">Skip setup</a>`
    : "";
  return page(
    "My Sign-Ins",
    `<div role="heading" aria-level="1" class="heading">Keep your account secure</div>
<p>Your organization requires you to set up the following methods of proving who you are.</p>
<div role="heading" aria-level="2">Microsoft Authenticator</div>
<p>Start by getting the app</p>
<button type="button" class="ms-Button ms-Button--primary">Next</button>
<p><a href="#" id="differentMethod">I want to set up a different method</a></p>
${skip}`,
    variant.language,
  );
}

function securityInfoPage(user: SandboxUser, state: PageState, variant: BrowserPageVariant): string {
  const methods = state.tenant.fido2Methods(user.id);
  const allowed = securityKeysAllowed(state.tenant, user);
  const rows = methods.map((m) =>
    `<div role="listitem" class="method-row" data-method-id="${
      escapeHtml(m.id)
    }"><span>Passkey</span> <span>${
      escapeHtml(m.displayName)
    }</span> <button type="button" aria-label="Delete Passkey">Delete</button></div>`
  ).join("");
  const picker = variant.picker === "new" ? newPicker(allowed) : oldPicker(allowed);
  return page(
    "My Sign-Ins | Security Info",
    `<div role="heading" aria-level="1" class="heading">Security info</div>
<p>These are the methods you use to sign into your account or reset your password.</p>
<p id="signedInUser">${escapeHtml(user.userPrincipalName)}</p>
<button type="button" id="addMethod" class="ms-Button"><span aria-hidden="true">+ </span><span>Add sign-in method</span></button>
<div role="list" aria-label="Sign-in methods">${rows}</div>
<div role="dialog" aria-modal="true" aria-label="Add a sign-in method" id="addMethodDialog" hidden>
  ${picker}
  <section data-step="name" hidden>
    <div role="heading" aria-level="2" class="heading" data-name-title></div>
    <p>Give it a name that helps you tell it apart from your other sign-in methods.</p>
    <label for="TextField77">Name</label>
    <input type="text" id="TextField77" maxlength="30">
    <button type="button" class="ms-Button ms-Button--primary" data-action="save-name">Next</button>
  </section>
  <section data-step="done" hidden>
    <div role="heading" aria-level="2" class="heading" data-done-title></div>
    <p>You can now use it to sign in.</p>
    <button type="button" class="ms-Button ms-Button--primary" data-action="done">Done</button>
  </section>
  <div role="alert" class="error" id="wizardError" hidden></div>
  <button type="button" class="ms-Button" data-action="cancel">Cancel</button>
</div>
<script>${securityInfoScript}</script>`,
    variant.language,
  );
}

/** The redesigned picker (August 2024): a recommended method, "Show more options", then "Passkey". */
function newPicker(allowed: boolean): string {
  const passkey = allowed
    ? `<div role="option" tabindex="0" class="option" data-method="passkey" aria-describedby="passkeyHint">Passkey</div>
       <div id="passkeyHint" class="hint">Sign in with your face, fingerprint, PIN or security key</div>`
    : "";
  return `<div role="heading" aria-level="2" class="heading">Add a sign-in method</div>
  <section data-step="recommended">
    <p>Recommended</p>
    <div role="option" tabindex="0" class="option" data-method="authenticator">Microsoft Authenticator</div>
    <button type="button" class="ms-Button" data-action="more">Show more options</button>
  </section>
  <section data-step="all" hidden>
    <div role="listbox" aria-label="Sign-in methods">
      ${passkey}
      <div role="option" tabindex="0" class="option" data-method="authenticator">Microsoft Authenticator</div>
      <div role="option" tabindex="0" class="option" data-method="phone">Phone</div>
    </div>
  </section>
  <section data-step="ready" data-type="18" hidden>
    <div role="heading" aria-level="2" class="heading">Passkey</div>
    <p>Have your security key ready. When you choose Next, you will be asked to create a passkey.</p>
    <button type="button" class="ms-Button ms-Button--primary" data-action="ceremony">Next</button>
  </section>`;
}

/** The older picker: a drop-down with "Security key", "Add", then USB or NFC, then "Next". */
function oldPicker(allowed: boolean): string {
  const key = allowed
    ? `<button type="button" role="option" class="option" data-method="securityKey"><span class="ms-Button-flexContainer"><span>Security key</span></span></button>`
    : "";
  return `<section data-step="choose">
    <div role="heading" aria-level="2" class="heading">Add a method</div>
    <p>Which method would you like to add?</p>
    <div role="combobox" tabindex="0" aria-expanded="false" aria-haspopup="listbox" aria-label="Authentication method options">Choose a method</div>
    <div role="listbox" hidden>
      <button type="button" role="option" class="option" data-method="authenticator"><span>Authenticator app</span></button>
      ${key}
      <button type="button" role="option" class="option" data-method="phone"><span>Phone</span></button>
    </div>
    <button type="button" class="ms-Button ms-Button--primary" data-action="add" disabled><span>Add</span></button>
  </section>
  <section data-step="device" hidden>
    <div role="heading" aria-level="2" class="heading">Security key</div>
    <p>Choose the type of security key that you have.</p>
    <button type="button" class="ms-Button" data-action="device"><span>USB device</span></button>
    <button type="button" class="ms-Button" data-action="device"><span>NFC device</span></button>
  </section>
  <section data-step="ready" data-type="12" hidden>
    <div role="heading" aria-level="2" class="heading">Security key</div>
    <p>Have your key ready. When you choose Next, you will be prompted to plug your security key into the USB port.</p>
    <button type="button" class="ms-Button ms-Button--primary" data-action="ceremony"><span>Next</span></button>
  </section>`;
}

/** Security info's script: the wizard, the navigation to the ceremony page, and the naming call. */
const securityInfoScript = `
(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const dialog = $("#addMethodDialog");
  const errorBox = $("#wizardError");
  const show = (step) => {
    for (const section of dialog.querySelectorAll("section[data-step]")) section.hidden = section.dataset.step !== step;
  };
  const fail = (message) => { errorBox.textContent = message; errorBox.hidden = false; };
  let type = 18;
  $("#addMethod").addEventListener("click", () => {
    errorBox.hidden = true;
    dialog.hidden = false;
    show(dialog.querySelector('section[data-step="recommended"]') ? "recommended" : "choose");
  });
  dialog.addEventListener("click", async (event) => {
    const target = event.target.closest("[data-action], [data-method], [role=combobox]");
    if (!target || target.disabled) return;
    if (target.matches("[role=combobox]")) {
      target.setAttribute("aria-expanded", "true");
      $("[role=listbox]", dialog).hidden = false;
      return;
    }
    if (target.dataset.method) {
      if (target.closest('section[data-step="choose"]')) {
        const combo = $("[role=combobox]", dialog);
        combo.textContent = target.textContent.trim();
        combo.setAttribute("aria-expanded", "false");
        $("[role=listbox]", dialog).hidden = true;
        const add = $('[data-action="add"]', dialog);
        add.disabled = target.dataset.method !== "securityKey";
        return;
      }
      if (target.dataset.method === "passkey") return show("ready");
      return fail("This method cannot be added in the sandbox.");
    }
    const action = target.dataset.action;
    if (action === "more") return show("all");
    if (action === "add") return show("device");
    if (action === "device") return show("ready");
    if (action === "cancel") { dialog.hidden = true; return; }
    if (action === "done") { location.replace(location.pathname); return; }
    if (action === "ceremony") {
      type = Number(target.closest("section").dataset.type);
      const answer = await fetch("/mysignins/api/authenticationmethods/new", {
        method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
        body: JSON.stringify({ Type: type }),
      });
      const body = await answer.json();
      if (!answer.ok || body.ErrorCode !== 0) return fail("Your organization's policy does not allow you to add this method.");
      const data = JSON.parse(body.Data);
      const cid = crypto.randomUUID();
      const form = document.createElement("form");
      form.method = "post";
      form.action = data.provisionUrl + "?cid=" + cid;
      const fields = { ...data.requestData, correlationId: cid, postBackUrl: data.requestData.postBackUrl + "?mysignins-region=westus2&cid=" + cid };
      for (const [name, value] of Object.entries(fields)) {
        const input = document.createElement("input");
        input.type = "hidden"; input.name = name; input.value = value;
        form.appendChild(input);
      }
      document.body.appendChild(form);
      form.submit();
      return;
    }
    if (action === "save-name") {
      errorBox.hidden = true;
      const context = JSON.parse(sessionStorage.getItem("fidoContext") || "{}");
      const verification = {
        Name: $("#TextField77").value, Canary: context.Canary, AttestationObject: context.AttestationObject,
        ClientDataJson: context.ClientDataJson, CredentialId: context.CredentialId,
        ClientExtensionResults: context.ClientExtensionResults, PostInfo: "",
      };
      const answer = await fetch("/mysignins/api/authenticationmethods/verify", {
        method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" },
        body: JSON.stringify({ Type: context.DefaultName === "Security key" ? 12 : 18, VerificationData: JSON.stringify(verification) }),
      });
      const body = await answer.json();
      if (body.VerificationState !== 2) return fail(body.Message || "We couldn't add your passkey. Try again.");
      sessionStorage.removeItem("fidoContext");
      return show("done");
    }
  });
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("fidoProvisionSuccess")) {
    const context = JSON.parse(sessionStorage.getItem("fidoContext") || "{}");
    dialog.hidden = false;
    const passkey = context.DefaultName !== "Security key";
    $("[data-name-title]").textContent = passkey ? "Name your passkey" : "Name your security key";
    $("[data-done-title]").textContent = passkey ? "Passkey saved" : "You're all set!";
    $("#TextField77").value = (context.DefaultName || "Passkey").slice(0, 30);
    show("name");
  } else if (hash.has("fidoProvisionError")) {
    dialog.hidden = false;
    show("none");
    fail("We couldn't add your passkey. (" + hash.get("fidoProvisionError") + ")");
  }
})();
`;
