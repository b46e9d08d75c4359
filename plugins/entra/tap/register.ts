/**
 * The browserless Temporary Access Pass path (`--via tap`): the requests Security info makes to
 * add a passkey, sent by us, with the ceremony on our WebAuthn client (core/webauthn). For
 * tenants and clouds where Graph's passkey provisioning API is not available.
 *
 * The sequence follows the recorded session of nathanmcnulty/nathanmcnulty
 * `Entra/passkeys/Register-PasskeyViaTAP.ps1` (February 2026): the My Sign-Ins app's authorize
 * page (`$Config`), `POST /common/login` with `accesspass` and `ps=56`, the code exchange with
 * PKCE (Origin `https://mysignins.microsoft.com`; a "Stay signed in?" form that posts itself is
 * followed), `POST /api/session/authorize` (`sessionCtxV2`; with the NGC-MFA claims refresh when
 * it asks for it),
 * `POST /api/authenticationmethods/new` `{Type: 18}` (double-encoded `Data`), the form post to
 * `login.microsoft.com/{tenant}/fido/create`, the ceremony (rp id and origin of that page,
 * challenge the UTF-8 bytes of the JWE `serverChallenge`), `POST /api/post/newfido`, and the naming
 * call `POST /api/authenticationmethods/verify`. None of these is documented by Microsoft: every
 * answer is parsed against the recorded shape and a different shape stops the user with
 * `unexpected-response` naming the endpoint (docs/fidelity.md, "Browser and TAP path").
 *
 * The pass is created through Graph only after the policies were read, and deleted whatever
 * happened; the new passkey is confirmed through Graph.
 *
 * @module
 */
import { z } from "zod";
import { randomBytes, toBase64Url } from "../../../core/bytes.ts";
import { ProvisioningError } from "../../../core/errors.ts";
import type { Authenticator, DirectoryUser, PasskeyMethod, UserInteraction } from "../../../core/plugin.ts";
import { sleep } from "../../../core/sleep.ts";
import { create } from "../../../core/webauthn/create.ts";
import { oneCeremonyAtATime } from "../../../core/webauthn/one_at_a_time.ts";
import type { TemporaryAccessPass } from "../graph/tap.ts";
import type { EntraSession } from "../session.ts";
import { sha256 } from "@noble/hashes/sha2.js";
import { checkPolicies } from "../browser/policy_check.ts";

/** The My Sign-Ins single-page app (Register-PasskeyViaTAP.ps1). */
const mySignInsClientId = "19db86c3-b2b9-44cc-b339-36da233a3be2";
const mySignInsOrigin = "https://mysignins.microsoft.com";
const ceremonyOrigin = "https://login.microsoft.com";

/** A TAP-path failure: `code` is the reason; the message names the user and the endpoint. */
export class TapPathError extends ProvisioningError {}

/** What {@link registerWithPass} needs. */
export interface RegisterWithPassOptions {
  session: EntraSession;
  user: DirectoryUser;
  authenticator: Authenticator;
  interaction: UserInteraction;
  /** The passkey's name (1 to 30 characters). */
  displayName: string;
  signal?: AbortSignal;
  /** Told the pass's id once it exists, before it is used (the run journals it). */
  onPassIssued?: (passId: string) => Promise<void>;
  /** How long a new pass may be refused before the user fails with `tap-refused`. @default 60000 */
  passRetryMs?: number;
  /** Pause between two tries of a refused pass. @default 2000 */
  passRetryPauseMs?: number;
}

/** The hosts of the sequence for the session's cloud. */
interface Hosts {
  login: string;
  mySignIns: string;
  /** Where requests for `https://login.microsoft.com` go (the sandbox serves that origin itself). */
  ceremonyBase: string;
}

function hostsFor(session: EntraSession, upn: string): Hosts {
  if (session.cloud.name === "sandbox") {
    const base = session.cloud.loginBase;
    return { login: base, mySignIns: `${base}/mysignins`, ceremonyBase: base };
  }
  if (session.cloud.name === "public") {
    return {
      login: "https://login.microsoftonline.com",
      mySignIns: mySignInsOrigin,
      ceremonyBase: ceremonyOrigin,
    };
  }
  throw new TapPathError(
    "tap-path-unavailable",
    `Cannot register a passkey for ${upn} with --via tap: the Security info requests of ${session.cloud.label} were never recorded`,
    { hint: "Use --via browser for this cloud (its pages are the same flow)" },
  );
}

// --- the recorded shapes ------------------------------------------------------------------------

const configSchema = z.object({
  pgid: z.string().optional(),
  sFT: z.string().optional(),
  sCtx: z.string().optional(),
  canary: z.string().optional(),
  urlPost: z.string().optional(),
  strServiceExceptionMessage: z.string().optional(),
});
const tokenSchema = z.object({ access_token: z.string().min(1), refresh_token: z.string().min(1) });
const sessionSchema = z.object({
  isAuthorized: z.literal(true),
  sessionCtxV2: z.string().min(1),
  requireNgcMfaForSecurityInfo: z.boolean().optional(),
});
const newMethodSchema = z.object({ ErrorCode: z.literal(0), Data: z.string().min(2) });
const newDataSchema = z.object({
  provisionUrl: z.url(),
  requestData: z.object({
    canary: z.string().min(1),
    serverChallenge: z.string().min(1),
    postBackUrl: z.url(),
    userId: z.string().min(1),
    memberName: z.string().optional(),
    userDisplayName: z.string().optional(),
    ExcludeNextGenCredentialsJSON: z.string().optional(),
  }),
});
const excludeSchema = z.array(z.object({ id: z.string(), transports: z.array(z.string()).optional() }));
const verifySchema = z.object({
  VerificationState: z.number(),
  ErrorCode: z.number().optional(),
  Message: z.string().optional(),
});

/** Registers one user's passkey without a browser; see the module documentation. */
export async function registerWithPass(
  options: RegisterWithPassOptions,
): Promise<{ method: PasskeyMethod; credentialId: string }> {
  const { session, user, signal } = options;
  const upn = user.userPrincipalName;
  const displayName = session.checkDisplayName(options.displayName, user);
  const hosts = hostsFor(session, upn);
  await checkPolicies(session, upn, signal);
  const before = new Set((await session.listPasskeys(user, signal)).map((m) => m.id));
  const tap = await session.createTemporaryAccessPass(user, {
    isUsableOnce: true,
    ...(signal ? { signal } : {}),
  });
  let failure: unknown;
  let outcome: { method: PasskeyMethod; credentialId: string } | undefined;
  try {
    await options.onPassIssued?.(tap.id);
    const client = new Client(upn, signal);
    const tokens = await signIn(client, hosts, session, upn, tap, options);
    const { accessToken, sessionCtxV2 } = await authorizeSession(client, hosts, tokens);
    const credentialId = await addPasskey(
      client,
      hosts,
      session,
      options,
      accessToken,
      sessionCtxV2,
      displayName,
    );
    const method = await confirm(session, user, before, displayName, signal);
    outcome = { method, credentialId };
  } catch (error) {
    failure = error;
  }
  // Not the run's signal: the pass is deleted even when the run is being cancelled.
  let deleteError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await session.deleteTemporaryAccessPass(user, tap.id, AbortSignal.timeout(30_000));
      deleteError = undefined;
      break;
    } catch (error) {
      deleteError = error;
      await sleep(500 * (attempt + 1));
    }
  }
  if (failure) throw failure;
  if (deleteError) {
    throw new TapPathError(
      "tap-delete-failed",
      `Registered a passkey for ${upn} but could not delete its Temporary Access Pass`,
      { cause: deleteError, hint: "Delete the user's Temporary Access Pass in Entra ID by hand" },
    );
  }
  return outcome!;
}

/** The My Sign-Ins tokens of a signed-in user. */
interface SignedIn {
  access: string;
  refresh: string;
  tokenUrl: string;
}

/** 1–3: the authorize page, then the pass (retried while a new pass is refused), then the code exchange. */
async function signIn(
  client: Client,
  hosts: Hosts,
  session: EntraSession,
  upn: string,
  tap: TemporaryAccessPass,
  options: RegisterWithPassOptions,
): Promise<SignedIn> {
  const verifier = toBase64Url(randomBytes(32));
  const challenge = toBase64Url(sha256(new TextEncoder().encode(verifier)));
  const tenant = session.tenant?.split("/").at(-1) ?? "organizations";
  const state = crypto.randomUUID();
  const deadline = Date.now() + (options.passRetryMs ?? 60_000);
  while (true) {
    const authorize = new URL(`${hosts.login}/${tenant}/oauth2/v2.0/authorize`);
    for (
      const [k, v] of Object.entries({
        client_id: mySignInsClientId,
        redirect_uri: mySignInsOrigin,
        scope: `${mySignInsClientId}/.default openid profile offline_access`,
        response_type: "code",
        response_mode: "fragment",
        prompt: "login",
        login_hint: upn,
        code_challenge: challenge,
        code_challenge_method: "S256",
        state,
      })
    ) authorize.searchParams.set(k, v);
    const page = await client.send("authorize", authorize, { method: "GET" });
    const config = client.shape("authorize", configSchema, parseConfig(await page.text()));
    if (config.pgid !== "ConvergedSignIn" || !config.sFT || !config.sCtx || !config.canary) {
      throw client.unexpected("authorize", "a ConvergedSignIn $Config with sFT, sCtx and canary");
    }
    let posted = await client.send("login", new URL(config.urlPost ?? "/common/login", hosts.login), {
      method: "POST",
      body: new URLSearchParams({
        login: upn,
        loginfmt: upn,
        accesspass: tap.reveal(),
        ps: "56",
        ctx: config.sCtx,
        flowToken: config.sFT,
        canary: config.canary,
        IsFidoSupported: "1",
        i19: "10000",
      }),
    });
    // "Stay signed in?" answers a script with a page whose form posts itself (KmsiBroker).
    for (let hop = 0; hop < 3 && posted.status === 200; hop++) {
      const text = await client.lastText();
      const form = autoSubmitForm(text);
      if (!form || (parseConfig(text) as { pgid?: string } | undefined)?.pgid === "ConvergedSignIn") break;
      await posted.body?.cancel();
      posted = await client.send("kmsi", new URL(form.action, hosts.login), {
        method: "POST",
        body: new URLSearchParams(form.fields),
      });
    }
    const location = posted.headers.get("location") ?? "";
    const code = /[#?&]code=([^&#]+)/.exec(location)?.[1];
    await posted.body?.cancel();
    if (code) {
      const token = await client.send("token", new URL(`${hosts.login}/${tenant}/oauth2/v2.0/token`), {
        method: "POST",
        headers: { origin: mySignInsOrigin },
        body: new URLSearchParams({
          client_id: mySignInsClientId,
          scope: `${mySignInsClientId}/.default openid profile offline_access`,
          grant_type: "authorization_code",
          code: decodeURIComponent(code),
          redirect_uri: mySignInsOrigin,
          code_verifier: verifier,
        }),
      });
      const tokens = client.shape("token", tokenSchema, await client.json("token", token));
      return {
        access: tokens.access_token,
        refresh: tokens.refresh_token,
        tokenUrl: `${hosts.login}/${tenant}/oauth2/v2.0/token`,
      };
    }
    if (posted.status !== 200) throw client.unexpected("login", "a redirect with #code= or the sign-in page");
    const refused = client.shape("login", configSchema, parseConfig(await client.lastText()));
    const reason = passReason(refused.strServiceExceptionMessage ?? "");
    if (reason !== "tap-refused" || Date.now() > deadline) {
      throw new TapPathError(
        reason,
        `Cannot sign ${upn} in with the Temporary Access Pass: the sign-in said "${
          (refused.strServiceExceptionMessage ?? "").slice(0, 200)
        }"`,
        { hint: "A new pass can take a while before sign-in accepts it; run again later" },
      );
    }
    await sleep(options.passRetryPauseMs ?? 2_000, options.signal);
  }
}

/** The reason for a refused pass, from the sign-in's words (the same texts as the browser flow's). */
function passReason(text: string): string {
  if (/blocked due to User Credential Policy/i.test(text)) return "tap-already-used";
  if (/has expired/i.test(text)) return "tap-expired";
  if (/not valid yet/i.test(text)) return "tap-not-yet-valid";
  if (/is disabled for your organization/i.test(text)) return "tap-disabled";
  if (/username may be incorrect/i.test(text)) return "user-not-found";
  return "tap-refused";
}

/** The claims Security info asks for when `requireNgcMfaForSecurityInfo` (Register-PasskeyViaTAP.ps1). */
const ngcClaims = JSON.stringify({
  id_token: { amr: { essential: true, values: ["ngcmfa"] } },
  access_token: { amr: { essential: true, values: ["ngcmfa"] } },
});

/**
 * 4: Security info's session; when it asks for the NGC-MFA claims, the token is refreshed with
 * them (a pass satisfies them) and the session authorized again. Returns the token to use too.
 */
async function authorizeSession(
  client: Client,
  hosts: Hosts,
  tokens: SignedIn,
): Promise<{ accessToken: string; sessionCtxV2: string }> {
  const authorize = async (accessToken: string) => {
    const answer = await client.send(
      "session/authorize",
      new URL(`${hosts.mySignIns}/api/session/authorize`),
      {
        method: "POST",
        headers: {
          authorization: `Bearer ${accessToken}`,
          "content-type": "application/json",
          origin: mySignInsOrigin,
        },
        body: "",
      },
    );
    return client.shape("session/authorize", sessionSchema, await client.json("session/authorize", answer));
  };
  const first = await authorize(tokens.access);
  if (!first.requireNgcMfaForSecurityInfo) {
    return { accessToken: tokens.access, sessionCtxV2: first.sessionCtxV2 };
  }
  const refreshed = await client.send("token (ngcmfa claims)", new URL(tokens.tokenUrl), {
    method: "POST",
    headers: { origin: mySignInsOrigin },
    body: new URLSearchParams({
      client_id: mySignInsClientId,
      scope: `${mySignInsClientId}/.default openid`,
      grant_type: "refresh_token",
      refresh_token: tokens.refresh,
      claims: ngcClaims,
    }),
  });
  const access = client.shape("token (ngcmfa claims)", tokenSchema, await client.json("token", refreshed))
    .access_token;
  const second = await authorize(access);
  if (second.requireNgcMfaForSecurityInfo) {
    throw new TapPathError(
      "ngc-mfa-required",
      `Cannot open Security info for ${client.upn}: it still asks for the NGC-MFA claims after the refresh`,
      { hint: "Use --via browser for these users" },
    );
  }
  return { accessToken: access, sessionCtxV2: second.sessionCtxV2 };
}

/** The first form of a page that posts itself: its action and hidden fields. */
function autoSubmitForm(html: string): { action: string; fields: Record<string, string> } | undefined {
  const form = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  const action = form ? /\baction="([^"]+)"/i.exec(form[1]!)?.[1] : undefined;
  if (!form || !action) return undefined;
  const fields: Record<string, string> = {};
  for (const input of form[2]!.matchAll(/<input\b([^>]*)>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(input[1]!)?.[1];
    const value = /\bvalue="([^"]*)"/i.exec(input[1]!)?.[1] ?? "";
    if (name) {
      fields[name] = value.replace(/&#(\d+);/g, (_, c) => String.fromCharCode(Number(c))).replace(
        /&amp;/g,
        "&",
      );
    }
  }
  return { action: action.replace(/&amp;/g, "&"), fields };
}

/** 5–8: new method, fido/create, the ceremony, newfido, verify with the name. */
async function addPasskey(
  client: Client,
  hosts: Hosts,
  session: EntraSession,
  options: RegisterWithPassOptions,
  accessToken: string,
  sessionCtxV2: string,
  displayName: string,
): Promise<string> {
  const api = { sessionctxv2: sessionCtxV2, origin: mySignInsOrigin, "content-type": "application/json" };
  const started = await client.send(
    "authenticationmethods/new",
    new URL(`${hosts.mySignIns}/api/authenticationmethods/new`),
    {
      method: "POST",
      headers: { ...api, authorization: `Bearer ${accessToken}` },
      body: JSON.stringify({ Type: 18 }),
    },
  );
  const answer = await client.json("authenticationmethods/new", started);
  const outer = newMethodSchema.safeParse(answer);
  if (!outer.success) {
    const code = (answer as { ErrorCode?: unknown })?.ErrorCode;
    if (code === 403) {
      throw new TapPathError(
        "policy-forbids-security-keys",
        `Cannot add a passkey for ${client.upn}: Security info refused (policy)`,
      );
    }
    throw client.unexpected("authenticationmethods/new", "{ErrorCode: 0, Data: <JSON string>}");
  }
  let inner: unknown;
  try {
    inner = JSON.parse(outer.data.Data);
  } catch {
    throw client.unexpected("authenticationmethods/new", "Data holding a JSON string");
  }
  const data = client.shape("authenticationmethods/new", newDataSchema, inner);
  const request = data.requestData;
  const cid = crypto.randomUUID();
  const provision = new URL(data.provisionUrl);
  const provisionTarget = new URL(`${provision.pathname}?cid=${cid}`, hosts.ceremonyBase);
  const page = await client.send("fido/create", provisionTarget, {
    method: "POST",
    headers: { origin: mySignInsOrigin },
    body: new URLSearchParams({
      correlationId: cid,
      canary: request.canary,
      ExcludeNextGenCredentialsJSON: request.ExcludeNextGenCredentialsJSON ?? "[]",
      memberName: request.memberName ?? client.upn,
      postBackUrl: `${request.postBackUrl}?mysignins-region=westus2&cid=${cid}`,
      serverChallenge: request.serverChallenge,
      userDisplayName: request.userDisplayName ?? client.upn,
      userIconUrl: "",
      userId: request.userId,
    }),
  });
  await page.body?.cancel();
  if (page.status !== 200) throw client.unexpected("fido/create", "the ceremony page (200)");

  // The ceremony as the fido/create page runs it: its own host as rp id, the JWE's bytes as challenge.
  const exclude = client.shape(
    "ExcludeNextGenCredentialsJSON",
    excludeSchema,
    safeJson(request.ExcludeNextGenCredentialsJSON ?? "[]"),
  );
  const origin = provision.origin;
  const rpId = provision.hostname;
  const credential = await oneCeremonyAtATime(options.authenticator, () =>
    create({
      options: {
        rp: { id: rpId, name: "Microsoft" },
        user: {
          id: request.userId,
          name: request.memberName ?? client.upn,
          displayName: request.userDisplayName ?? client.upn,
        },
        challenge: toBase64Url(new TextEncoder().encode(request.serverChallenge)),
        pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
        timeout: 600_000,
        excludeCredentials: exclude.map((c) => ({
          type: "public-key",
          id: c.id,
          transports: c.transports ?? ["usb", "nfc"],
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
      origin,
      allowedRpIds: session.allowedRpIds.includes(rpId) || session.cloud.name !== "sandbox"
        ? session.allowedRpIds
        : [...session.allowedRpIds, rpId],
      authenticator: options.authenticator,
      interaction: options.interaction,
      ...(options.signal ? { signal: options.signal } : {}),
    }));
  const extensions = toBase64Url(
    new TextEncoder().encode(JSON.stringify(credential.clientExtensionResults ?? {})),
  );
  const relay = await client.send(
    "post/newfido",
    new URL(`${request.postBackUrl}?mysignins-region=westus2&cid=${cid}`),
    {
      method: "POST",
      headers: { origin: ceremonyOrigin },
      body: new URLSearchParams({
        canary: request.canary,
        authenticator: "cross-platform",
        transports: (credential.response.transports ?? []).join(","),
        error_code: "",
        suberror_code: "",
        clientDataJson: credential.response.clientDataJSON,
        attestationObject: credential.response.attestationObject,
        credentialId: credential.id,
        clientExtensionResults: extensions,
      }),
    },
  );
  const relayed = await relay.text();
  const redirectTo = /<div\s+id="redirectUrl"\s+data-content="([^"]*)"/.exec(relayed)?.[1]?.replace(
    /&#38;|&amp;/g,
    "&",
  );
  if (
    !/<div\s+id="context"\s+data-content="/.test(relayed) || !redirectTo?.includes("fidoProvisionSuccess")
  ) {
    throw client.unexpected(
      "post/newfido",
      "a page with div#context and div#redirectUrl (#fidoProvisionSuccess)",
    );
  }
  const verified = await client.send(
    "authenticationmethods/verify",
    new URL(`${hosts.mySignIns}/api/authenticationmethods/verify`),
    {
      method: "POST",
      headers: api,
      body: JSON.stringify({
        Type: 18,
        VerificationData: JSON.stringify({
          Name: displayName,
          Canary: request.canary,
          AttestationObject: credential.response.attestationObject,
          ClientDataJson: credential.response.clientDataJSON,
          CredentialId: credential.id,
          ClientExtensionResults: extensions,
          PostInfo: "",
          AAGuid: "00000000-0000-0000-0000-000000000000",
          CredentialDeviceType: "singleDevice",
        }),
      }),
    },
  );
  const result = client.shape(
    "authenticationmethods/verify",
    verifySchema,
    await client.json("authenticationmethods/verify", verified),
  );
  if (result.VerificationState !== 2) {
    throw new TapPathError(
      "registration-refused",
      `Cannot register a passkey for ${client.upn}: Security info refused it ("${
        (result.Message ?? "").slice(0, 300)
      }")`,
      { hint: "Attestation enforcement or key restrictions may exclude this authenticator" },
    );
  }
  return credential.id;
}

/** 9: Graph lists the new passkey. */
async function confirm(
  session: EntraSession,
  user: DirectoryUser,
  before: ReadonlySet<string>,
  displayName: string,
  signal: AbortSignal | undefined,
): Promise<PasskeyMethod> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const fresh = (await session.listPasskeys(user, signal)).filter((m) =>
      !before.has(m.id) && m.displayName === displayName
    );
    if (fresh[0]) return fresh[0];
    await sleep(500, signal);
  }
  throw new TapPathError(
    "registration-not-confirmed",
    `Security info confirmed the passkey of ${user.userPrincipalName}, but Graph does not list it`,
    { hint: "Look at the user's authentication methods in Entra ID before running again" },
  );
}

/** `$Config={…};` of an ESTS page. */
function parseConfig(html: string): unknown {
  const match = /\$Config=(\{.*?\});\s*\n/s.exec(html);
  return match ? safeJson(match[1]!) : undefined;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** HTTP for one user: cookies kept per host, no automatic redirects, shapes checked. */
class Client {
  readonly upn: string;
  readonly #signal: AbortSignal | undefined;
  readonly #cookies = new Map<string, Map<string, string>>();
  #last = "";

  constructor(upn: string, signal: AbortSignal | undefined) {
    this.upn = upn;
    this.#signal = signal;
  }

  /** Sends a request (following GET redirects), keeping cookies; the endpoint's name is for errors. */
  async send(
    endpoint: string,
    url: URL,
    init: { method: string; headers?: Record<string, string>; body?: BodyInit },
  ): Promise<Response> {
    let target = url;
    for (let hop = 0; hop < 10; hop++) {
      const headers = new Headers(init.headers);
      const jar = this.#cookies.get(target.host);
      if (jar && jar.size > 0) headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
      let response: Response;
      try {
        response = await fetch(target, {
          method: hop === 0 ? init.method : "GET",
          headers,
          redirect: "manual",
          ...(hop === 0 && init.body !== undefined ? { body: init.body } : {}),
          ...(this.#signal ? { signal: this.#signal } : {}),
        });
      } catch (cause) {
        throw new TapPathError(
          "network-error",
          `Cannot reach ${endpoint} (${target.origin}) for ${this.upn}`,
          {
            cause,
            retryable: true,
          },
        );
      }
      for (const line of response.headers.getSetCookie()) {
        const [pair] = line.split(";");
        const at = pair?.indexOf("=") ?? -1;
        if (pair && at > 0) {
          const jarFor = this.#cookies.get(target.host) ?? new Map<string, string>();
          jarFor.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
          this.#cookies.set(target.host, jarFor);
        }
      }
      const location = response.headers.get("location");
      if (init.method === "GET" && response.status >= 300 && response.status < 400 && location) {
        await response.body?.cancel();
        target = new URL(location, target);
        continue;
      }
      if (response.status >= 500) {
        await response.body?.cancel();
        throw new TapPathError("server-error", `${endpoint} answered ${response.status} for ${this.upn}`, {
          retryable: true,
        });
      }
      if (response.status === 200 && (endpoint === "login" || endpoint === "kmsi")) {
        this.#last = await response.clone().text();
      }
      return response;
    }
    throw this.unexpected(endpoint, "at most 10 redirects");
  }

  /** The text of the last `login` answer. */
  lastText(): Promise<string> {
    return Promise.resolve(this.#last);
  }

  /** A JSON body, or an `unexpected-response` naming the endpoint. */
  async json(endpoint: string, response: Response): Promise<unknown> {
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch {
      throw this.unexpected(endpoint, `JSON (got ${response.status})`);
    }
  }

  /** Parses `value` with `schema`, or fails naming the endpoint and the recorded shape. */
  shape<T extends z.ZodType>(endpoint: string, schema: T, value: unknown): z.infer<T> {
    const parsed = schema.safeParse(value);
    if (parsed.success) return parsed.data;
    const issue = parsed.error.issues[0];
    throw this.unexpected(
      endpoint,
      `${issue?.path.join(".") || "the answer"}: ${issue?.message ?? "invalid"}`,
    );
  }

  /** An answer without the recorded shape. */
  unexpected(endpoint: string, expected: string): TapPathError {
    return new TapPathError(
      "unexpected-response",
      `Cannot register a passkey for ${this.upn} with --via tap: ${endpoint} did not answer in the recorded shape (expected ${expected})`,
      {
        hint:
          "Microsoft may have changed Security info's undocumented requests; use --via browser, and send us a --capture-flow of one user",
      },
    );
  }
}
