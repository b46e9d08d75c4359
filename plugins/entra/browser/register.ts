/**
 * The Entra browser path for one user, automatic or manual (`--via browser`, `--mode headful`).
 *
 * Automatic: create a one-time Temporary Access Pass through Graph, open Security info in a fresh
 * private context of the shared browser, sign in with the user's name and the pass, add a
 * security key (the WebAuthn bridge answers the page's `navigator.credentials.create()` with the
 * chosen authenticator), wait for the page's confirmation, find the new passkey through Graph,
 * and delete the pass whatever happened.
 *
 * Manual: the tool signs the user in with a one-time pass (or the admin signs in), then the admin
 * adds the key in the window; the tool watches the bridge and Graph and closes the window once
 * Graph lists the new passkey.
 *
 * Steps and selectors are data: flows.ts loads automatic_flow.json and manual_flow.json.
 *
 * @example
 * ```ts ignore
 * await using browser = await launchBrowser({ headless: true });
 * const { method, credentialId } = await registerInBrowser({
 *   session, browser, user, authenticator, interaction,
 *   displayName: "YubiKey", mode: "automatic",
 * });
 * ```
 *
 * @module
 */
import type { BrowserHandle, UserContext } from "../../../core/browser/driver.ts";
import { type BridgeEvent, WebAuthnBridge } from "../../../core/browser/bridge.ts";
import { captureFailure } from "../../../core/browser/debug_capture.ts";
import { FlowCapture } from "../../../core/browser/flow_capture.ts";
import type { BrowserFlow } from "../../../core/browser/flow.ts";
import { type RoutedOrigins, routeOrigin } from "../../../core/browser/route_origin.ts";
import { runFlow, StepFailure } from "../../../core/browser/steps.ts";
import { ProvisioningError } from "../../../core/errors.ts";
import type { Authenticator, DirectoryUser, PasskeyMethod, UserInteraction } from "../../../core/plugin.ts";
import type { Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import type { TemporaryAccessPass } from "../graph/tap.ts";
import type { EntraSession } from "../session.ts";
import { BrowserFlowError, browserReasons, describeReason } from "./errors.ts";
import { automaticFlow, manualFlow } from "./flows.ts";
import { sleep } from "../../../core/sleep.ts";
import { checkPolicies } from "./policy_check.ts";

/** What {@link registerInBrowser} needs. */
export interface RegisterInBrowserOptions {
  /** The signed-in Entra session: Graph for the pass and the confirmation, the rp-id allow-list. */
  session: EntraSession;
  /** The run's one browser; each call opens (and always closes) its own private context. */
  browser: BrowserHandle;
  user: DirectoryUser;
  authenticator: Authenticator;
  interaction: UserInteraction;
  /** The passkey's name in the user's Security info (1 to 30 characters; the admin types it in manual mode). */
  displayName: string;
  /** `automatic`: the tool does every step. `manual`: the admin adds the key in the window. */
  mode: "automatic" | "manual";
  signal?: AbortSignal;
  /** Where failure screenshots go; `false` for none. @default "debug" */
  debugDir?: string | false;
  /** The page to open instead of the flow's start page for the session's cloud. */
  startUrl?: string;
  /** Lifetime of the Temporary Access Pass, 10 to 43200 minutes. @default the tenant's TAP policy default */
  tapLifetimeInMinutes?: number;
  /**
   * Manual mode: `tool` (the default) signs the user in with a one-time pass; `admin` leaves the
   * sign-in to the admin, who gets a pass through {@link showTemporaryAccessPass} when it is set.
   */
  manualSignIn?: "tool" | "admin";
  /** Manual mode with `manualSignIn: "admin"`: shows the admin the pass to sign in with. */
  showTemporaryAccessPass?: (pass: { userPrincipalName: string; reveal(): string }) => void;
  /** Told the pass's id once it exists, before it is used (the run journals it). */
  onPassIssued?: (passId: string) => Promise<void>;
  /** Called with each page the flow opens, before it navigates (tests, a UI that shows progress). */
  onPage?: (page: Page) => void | Promise<void>;
  /** Told when each step starts. */
  onStep?: (step: string) => void;
  /** Replaces the data file's flow (a tenant with localised or changed pages). */
  flow?: BrowserFlow;
  /**
   * `--capture-flow DIR`: saves, before each screen the flow answers and at its end, the URL, a
   * sanitized DOM snapshot and a masked screenshot into `DIR/<user>/` (core/browser/flow_capture.ts).
   */
  captureDir?: string;
}

/** The ceremony origin of Microsoft's Security info, served by the sandbox when the target is one. */
const ceremonyOrigin = "https://login.microsoft.com";

/** What a successful registration yields. */
export interface BrowserRegistration {
  /** The passkey as Graph lists it. */
  method: PasskeyMethod;
  /** The credential id the bridge saw created, base64url. */
  credentialId: string;
}

/**
 * Registers a passkey for one user through the browser; see the module documentation.
 *
 * @throws {BrowserFlowError} with a reason code: `wrong-tap`, `tap-expired`, `tap-already-used`,
 * `policy-forbids-security-keys`, `page-changed`, `registration-refused`,
 * `registration-not-confirmed`, `manual-timeout`, `browser-closed`, `tap-delete-failed`, or the
 * WebAuthn client's own (`pin-invalid`, `rp-id-not-allowed`, …). Graph failures (creating the
 * pass) keep their codes.
 */
export async function registerInBrowser(options: RegisterInBrowserOptions): Promise<BrowserRegistration> {
  const { session, user, signal } = options;
  const upn = user.userPrincipalName;
  const flow = options.flow ?? (options.mode === "manual" ? manualFlow : automaticFlow);
  const startUrl = options.startUrl ?? startUrlFor(flow, session, upn);
  const displayName = session.checkDisplayName(options.displayName, user);
  const toolSignsIn = options.mode === "automatic" || (options.manualSignIn ?? "tool") === "tool";
  // Never spend a pass on a flow that cannot finish: the policies first, the page before the pass.
  // Both are read while the browser context opens; the pass waits for them.
  const prepared = Promise.all([
    checkPolicies(session, upn, signal),
    session.listPasskeys(user, signal).then((methods) => new Set(methods.map((m) => m.id))),
  ]);
  prepared.catch(() => undefined); // Awaited below; not an unhandled rejection meanwhile.
  let tap: TemporaryAccessPass | undefined;
  const issuePass = async () => {
    await prepared;
    if (tap) return;
    tap = await session.createTemporaryAccessPass(user, {
      isUsableOnce: true,
      ...(options.tapLifetimeInMinutes === undefined
        ? {}
        : { lifetimeInMinutes: options.tapLifetimeInMinutes }),
      ...(signal ? { signal } : {}),
    });
    if (options.onPassIssued) {
      try {
        await options.onPassIssued(tap.id);
      } catch (error) {
        // Not recorded, so no later attempt would find it: it must not outlive this call.
        const issued = tap;
        tap = undefined;
        await deletePass(session, user, issued);
        throw error;
      }
    }
  };
  if (!toolSignsIn && options.showTemporaryAccessPass) {
    await issuePass();
    const issued = tap!;
    options.showTemporaryAccessPass({ userPrincipalName: upn, reveal: () => issued.reveal() });
  }

  let context: UserContext | undefined;
  let page: Page | undefined;
  let bridge: WebAuthnBridge | undefined;
  let routes: RoutedOrigins | undefined;
  let step = "open-browser";
  let outcome: BrowserRegistration | undefined;
  let failure: BrowserFlowError | undefined;
  const capture = options.captureDir === undefined ? undefined : new FlowCapture({
    dir: options.captureDir,
    label: upn,
    maskSelectors: flow.maskSelectors,
    displayName,
  });
  const secrets = () => tap ? [tap.reveal()] : [];
  try {
    context = await options.browser.newContext();
    page = await context.newPage();
    const sandbox = session.cloud.name === "sandbox";
    if (sandbox) {
      // The ceremony runs on login.microsoft.com as on real tenants; for a sandbox target that
      // origin is served by the sandbox, in this page only.
      routes = await routeOrigin(page, [{ from: ceremonyOrigin, to: session.cloud.loginBase }]);
    }
    bridge = await WebAuthnBridge.install(page, {
      authenticator: options.authenticator,
      interaction: options.interaction,
      allowedRpIds: sandbox && !session.allowedRpIds.includes("login.microsoft.com")
        ? [...session.allowedRpIds, "login.microsoft.com"]
        : session.allowedRpIds,
      ...(signal ? { signal } : {}),
    });
    await options.onPage?.(page);
    step = "open-start-page";
    await page.goto(startUrl, { waitUntil: "domcontentloaded", timeout: 60_000 });
    step = "check-policy";
    const [, before] = await prepared;

    const values = { upn, displayName, tap: () => tap?.reveal() ?? "" };
    const currentPage = page;
    const beforeScreen = async (screen: { name: string; issuesPass: boolean }, nth: number) => {
      step = screen.name;
      if (nth === 1) options.onStep?.(screen.name);
      await capture?.step(currentPage, screen.name, secrets());
      if (screen.issuesPass) await issuePass();
    };
    let handedOver = false;
    if (toolSignsIn) {
      try {
        await runFlow(page, flow, { values, bridge, ...(signal ? { signal } : {}), beforeScreen });
        await capture?.step(page, "goal", secrets());
      } catch (error) {
        // A page in a language the flow has no words for: in a window the admin sees, fall back to
        // manual mode (as the vendor tool advises); headless, stop before any pass exists.
        const language = error instanceof StepFailure && error.code === "page-language-unsupported";
        if (!language || options.browser.headless || tap !== undefined) throw error;
        handedOver = true;
        step = "manual-fallback";
        options.onStep?.("manual-fallback");
      }
    }
    if (handedOver) {
      // The tool still types what needs no words (user name, pass: by their attributes); the admin
      // does the rest in the window; the bridge and Graph say when the passkey exists.
      const stop = new AbortController();
      const signIn = runFlow(page, manualFlow, {
        values,
        bridge,
        signal: signal ? AbortSignal.any([signal, stop.signal]) : stop.signal,
        beforeScreen,
        unsupportedLanguage: "continue",
      }).then(() => undefined, (error) => {
        if (stop.signal.aborted || (error instanceof StepFailure && error.code === "page-changed")) return;
        throw error;
      });
      step = "watch";
      try {
        outcome = await Promise.race([
          watchManual(page, bridge, session, user, before, manualFlow, upn, signal),
          signIn.then(() => new Promise<never>(() => {})),
        ]);
      } finally {
        stop.abort();
        await signIn.catch(() => undefined);
      }
    } else if (options.mode === "automatic") {
      step = "confirm";
      const created = bridge.events.find((e): e is Extract<BridgeEvent, { type: "created" }> =>
        e.type === "created"
      );
      if (!created) {
        throw new BrowserFlowError(
          "registration-not-confirmed",
          upn,
          step,
          "the page confirmed, but no passkey was created",
        );
      }
      const method = await findNewPasskey(session, user, before, displayName, 10, 500, signal);
      if (!method) {
        throw new BrowserFlowError(
          "registration-not-confirmed",
          upn,
          step,
          describeReason("registration-not-confirmed"),
        );
      }
      outcome = { method, credentialId: created.credential.id };
    } else {
      step = "watch";
      options.onStep?.("watch");
      outcome = await watchManual(page, bridge, session, user, before, flow, upn, signal);
    }
  } catch (error) {
    failure = toFlowError(error, upn, step);
    if (page && !page.isClosed()) {
      await capture?.step(page, `failed-${failure.code}`, secrets());
      if (options.debugDir !== false) {
        const saved = await captureFailure(page, {
          dir: options.debugDir ?? "debug",
          step,
          reason: failure.code,
          label: upn,
          message: failure.message,
          secrets: secrets(),
          maskSelectors: flow.maskSelectors,
        });
        failure.debugFiles = [saved.screenshot, saved.html, saved.info].filter((f): f is string => !!f);
      }
    }
  } finally {
    await bridge?.close();
    await routes?.close();
    await context?.close();
  }

  const issued = tap as TemporaryAccessPass | undefined;
  const deleteError = issued ? await deletePass(session, user, issued) : undefined;
  if (failure) {
    if (deleteError !== undefined) failure.tapDeleteError = deleteError;
    throw failure;
  }
  if (deleteError !== undefined) {
    const error = new BrowserFlowError(
      "tap-delete-failed",
      upn,
      "delete-tap",
      `${describeReason("tap-delete-failed")}: ${
        deleteError instanceof Error ? deleteError.message : String(deleteError)
      }`,
      { cause: deleteError },
    );
    error.registration = outcome;
    throw error;
  }
  return outcome!;
}

/** The start page for the session's cloud, from the flow's `startUrls`. */
function startUrlFor(flow: BrowserFlow, session: EntraSession, upn: string): string {
  const template = flow.startUrls[session.cloud.name];
  if (!template) {
    throw new BrowserFlowError(
      "browser-path-unavailable",
      upn,
      "open-start-page",
      `the browser flow has no start page for ${session.cloud.label}`,
      { hint: "Pass the Security info URL of this cloud as the start URL" },
    );
  }
  return template.replaceAll("{loginBase}", session.cloud.loginBase);
}

/** The passkey that is new since `before` (named `displayName` when given), asking Graph up to `tries` times. */
async function findNewPasskey(
  session: EntraSession,
  user: DirectoryUser,
  before: ReadonlySet<string>,
  displayName: string | undefined,
  tries: number,
  pauseMs: number,
  signal: AbortSignal | undefined,
): Promise<PasskeyMethod | undefined> {
  for (let attempt = 0; attempt < tries; attempt++) {
    const methods = await session.listPasskeys(user, signal);
    const fresh = methods.filter((m) =>
      !before.has(m.id) && (displayName === undefined || m.displayName === displayName)
    );
    if (fresh.length > 0) {
      return fresh.sort((a, b) => (b.createdDateTime ?? "").localeCompare(a.createdDateTime ?? ""))[0];
    }
    if (attempt + 1 < tries) await sleep(pauseMs, signal);
  }
  return undefined;
}

/** Manual mode: waits for the bridge to create a credential and Graph to list the new passkey. */
async function watchManual(
  page: Page,
  bridge: WebAuthnBridge,
  session: EntraSession,
  user: DirectoryUser,
  before: ReadonlySet<string>,
  flow: BrowserFlow,
  upn: string,
  signal: AbortSignal | undefined,
): Promise<BrowserRegistration> {
  const watch = flow.watch ?? { timeoutMs: 900_000, graphPollMs: 2_000 };
  const deadline = Date.now() + watch.timeoutMs;
  while (true) {
    signal?.throwIfAborted();
    if (page.isClosed()) {
      throw new BrowserFlowError("browser-closed", upn, "watch", describeReason("browser-closed"));
    }
    const created = bridge.events.findLast((e): e is Extract<BridgeEvent, { type: "created" }> =>
      e.type === "created"
    );
    if (created) {
      const method = await findNewPasskey(session, user, before, undefined, 1, 0, signal);
      if (method) return { method, credentialId: created.credential.id };
    }
    if (Date.now() > deadline) {
      throw new BrowserFlowError("manual-timeout", upn, "watch", describeReason("manual-timeout"));
    }
    await sleep(created ? Math.min(500, watch.graphPollMs) : Math.min(250, watch.graphPollMs), signal);
  }
}

async function deletePass(
  session: EntraSession,
  user: DirectoryUser,
  tap: TemporaryAccessPass,
): Promise<unknown> {
  // Not the run's signal: the pass is deleted even when the run is being cancelled.
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await session.deleteTemporaryAccessPass(user, tap.id, AbortSignal.timeout(30_000));
      return undefined;
    } catch (error) {
      if (attempt === 2) return error;
      await sleep(500 * (attempt + 1), undefined);
    }
  }
  return undefined;
}

function toFlowError(error: unknown, upn: string, step: string): BrowserFlowError {
  if (error instanceof BrowserFlowError) return error;
  if (error instanceof StepFailure) {
    const detail = browserReasons[error.code] || !(error.cause instanceof Error)
      ? describeReason(error.code, error.pageText)
      : error.cause.message;
    return new BrowserFlowError(error.code, upn, error.step, detail, {
      cause: error.cause ?? error,
      ...(error.cause instanceof ProvisioningError && error.cause.hint ? { hint: error.cause.hint } : {}),
    });
  }
  if (error instanceof ProvisioningError) {
    return new BrowserFlowError(error.code, upn, step, error.message, {
      cause: error,
      ...(error.hint ? { hint: error.hint } : {}),
    });
  }
  if (error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError")) {
    return new BrowserFlowError("cancelled", upn, step, "the run was cancelled", { cause: error });
  }
  return new BrowserFlowError(
    "browser-error",
    upn,
    step,
    error instanceof Error ? error.message : String(error),
    { cause: error },
  );
}
