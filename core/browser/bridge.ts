/**
 * The WebAuthn bridge: a page's `navigator.credentials.create()` and `get()` run on the tool's
 * WebAuthn client (core/webauthn/) and the authenticator the admin chose, instead of the
 * browser's own.
 *
 * Over one CDP session of the page: `Runtime.addBinding` gives the page a function that reaches
 * us, `Page.addScriptToEvaluateOnNewDocument` installs bridge_script.ts before any page script
 * runs, and `Runtime.executionContextCreated` tells us the real origin of every execution
 * context. A call is answered for the origin of the context it came from, never for an origin
 * the page claims, so the WebAuthn client's rp-id rules (the rp id must be the origin's host or a
 * registrable parent, and on the provider's allow-list) hold exactly as in a browser.
 *
 * Ceremonies on one authenticator run one at a time, whichever page they come from: a key does
 * one thing at a time, and a second PIN token would invalidate the first.
 *
 * @example
 * ```ts ignore
 * const page = await context.newPage();
 * await using bridge = await WebAuthnBridge.install(page, {
 *   authenticator, interaction, allowedRpIds: session.allowedRpIds,
 * });
 * await page.goto(securityInfoUrl);
 * const event = await bridge.next((e) => e.type === "created");
 * ```
 *
 * @module
 */
import { z } from "zod";
import type { CDPSession, Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { toHex } from "../bytes.ts";
import { ProvisioningError } from "../errors.ts";
import type { Authenticator, UserInteraction } from "../plugin.ts";
import { create } from "../webauthn/create.ts";
import { oneCeremonyAtATime } from "../webauthn/one_at_a_time.ts";
import { get } from "../webauthn/get.ts";
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from "../webauthn/json.ts";
import { bridgeScript } from "./bridge_script.ts";

/** Options of {@link WebAuthnBridge.install}. */
export interface WebAuthnBridgeOptions {
  /** The authenticator every ceremony of this page runs on. */
  authenticator: Authenticator;
  /** Answers PIN prompts and shows touch prompts. */
  interaction: UserInteraction;
  /** rp ids the provider accepts (the session's allow-list); the page's origin must also allow them. */
  allowedRpIds: readonly string[];
  /** Cancels every ceremony of this page. */
  signal?: AbortSignal;
  /** Used when the page's options carry no timeout. @default 300000 */
  defaultTimeoutMs?: number;
  /** Told of every ceremony's outcome, as it happens. */
  onEvent?: (event: BridgeEvent) => void;
}

/** What happened to one ceremony a page asked for. */
export type BridgeEvent =
  | { type: "created"; origin: string; credential: RegistrationResponseJSON }
  | { type: "asserted"; origin: string; credential: AuthenticationResponseJSON }
  | { type: "failed"; ceremony: "create" | "get"; origin: string; error: Error };

/** What the page script sends over the binding. */
const callSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("create"), id: z.string().max(32), options: z.unknown() }),
  z.object({ type: z.literal("get"), id: z.string().max(32), options: z.unknown() }),
  z.object({ type: z.literal("abort"), id: z.string().max(32) }),
]);

/** The DOMException name a page sees for an error, as a browser would report it. */
export function domExceptionName(error: unknown): string {
  if (!(error instanceof ProvisioningError)) return "NotAllowedError";
  switch (error.code) {
    case "rp-id-not-allowed":
      return "SecurityError";
    case "credential-excluded":
      return "InvalidStateError";
    case "unsupported-algorithm":
    case "resident-key-unsupported":
    case "cred-protect-unsupported":
      return "NotSupportedError";
    case "invalid-options":
      return "TypeError";
    default:
      return "NotAllowedError";
  }
}

/** Browsers' own wording, so the page learns no more than from a browser. */
const pageMessages: Readonly<Record<string, string>> = {
  SecurityError:
    "The relying party ID is not a registrable domain suffix of, nor equal to the current domain.",
  InvalidStateError:
    "The user attempted to register an authenticator that contains one of the credentials already registered with the relying party.",
  NotSupportedError:
    "The specified `userVerification` requirement cannot be fulfilled by this device unless the device is secured with a screen lock.",
  TypeError: "The options are malformed.",
  NotAllowedError:
    "The operation either timed out or was not allowed. See: https://www.w3.org/TR/webauthn-2/#sctn-privacy-considerations-client.",
};

/** See the module documentation. */
export class WebAuthnBridge implements AsyncDisposable {
  readonly #page: Page;
  readonly #session: CDPSession;
  readonly #options: WebAuthnBridgeOptions;
  readonly #bindingName: string;
  readonly #settleName: string;
  readonly #contexts = new Map<number, { origin: string; isDefault: boolean }>();
  readonly #inflight = new Map<string, AbortController>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #events: BridgeEvent[] = [];
  readonly #waiters = new Set<(event: BridgeEvent) => void>();
  #closing: Promise<void> | undefined;

  private constructor(page: Page, session: CDPSession, options: WebAuthnBridgeOptions) {
    this.#page = page;
    this.#session = session;
    this.#options = options;
    const token = toHex(crypto.getRandomValues(new Uint8Array(8)));
    this.#bindingName = `__provisioningWebAuthn_${token}`;
    this.#settleName = `__provisioningWebAuthnSettle_${token}`;
  }

  /**
   * Installs the bridge on a page. Call it before the page navigates: documents loaded after it
   * see the bridged `navigator.credentials`.
   */
  static async install(page: Page, options: WebAuthnBridgeOptions): Promise<WebAuthnBridge> {
    const session = await page.createCDPSession();
    const bridge = new WebAuthnBridge(page, session, options);
    try {
      await bridge.#attach();
    } catch (error) {
      await bridge.close();
      throw error;
    }
    return bridge;
  }

  /** Every ceremony outcome so far, oldest first. */
  get events(): readonly BridgeEvent[] {
    return this.#events;
  }

  /** The most recent failed ceremony, if the last outcome was a failure. */
  get lastFailure(): Extract<BridgeEvent, { type: "failed" }> | undefined {
    const last = this.#events.at(-1);
    return last?.type === "failed" ? last : undefined;
  }

  /** Ceremonies running now (a flow waiting on one is not stalled). */
  get pending(): number {
    return this.#inflight.size;
  }

  /** The page the bridge is installed on. */
  get page(): Page {
    return this.#page;
  }

  /**
   * The first event (already seen or still to come) that `match` accepts; rejects with the
   * signal's reason when `signal` aborts.
   */
  next(match: (event: BridgeEvent) => boolean, signal?: AbortSignal): Promise<BridgeEvent> {
    const seen = this.#events.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = (event: BridgeEvent) => {
        if (!match(event)) return;
        this.#waiters.delete(waiter);
        signal?.removeEventListener("abort", onAbort);
        resolve(event);
      };
      const onAbort = () => {
        this.#waiters.delete(waiter);
        reject(signal?.reason);
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  async #attach(): Promise<void> {
    const session = this.#session;
    session.on("Runtime.executionContextCreated", (event) => {
      const aux = event.context.auxData as { isDefault?: boolean } | undefined;
      this.#contexts.set(event.context.id, {
        origin: event.context.origin,
        isDefault: aux?.isDefault === true,
      });
    });
    session.on("Runtime.executionContextDestroyed", (event) => {
      this.#contexts.delete(event.executionContextId);
    });
    session.on("Runtime.executionContextsCleared", () => this.#contexts.clear());
    session.on("Runtime.bindingCalled", (event) => {
      if (event.name !== this.#bindingName) return;
      this.#onCall(event.payload, event.executionContextId);
    });
    await session.send("Runtime.addBinding", { name: this.#bindingName });
    const source = bridgeScript({ bindingName: this.#bindingName, settleName: this.#settleName });
    await session.send("Page.enable");
    await session.send("Page.addScriptToEvaluateOnNewDocument", { source });
    await session.send("Runtime.enable");
    // Documents already there (about:blank) get the script too.
    for (const [id, context] of this.#contexts) {
      if (!context.isDefault) continue;
      await session.send("Runtime.evaluate", { expression: source, contextId: id }).catch(() => undefined);
    }
  }

  #onCall(payload: string, contextId: number): void {
    if (this.#closing) return;
    let call: z.infer<typeof callSchema>;
    try {
      call = callSchema.parse(JSON.parse(payload));
    } catch {
      return; // Not our script's message: a page calling the binding by hand.
    }
    const key = `${contextId}:${call.id}`;
    if (call.type === "abort") {
      this.#inflight.get(key)?.abort(new DOMException("The page aborted the ceremony", "AbortError"));
      return;
    }
    const context = this.#contexts.get(contextId);
    const controller = new AbortController();
    this.#inflight.set(key, controller);
    const task = this.#ceremony(call.type, call.options, context, controller.signal)
      .then((outcome) => this.#settle(contextId, call.id, outcome))
      .finally(() => {
        this.#inflight.delete(key);
        this.#tasks.delete(task);
      });
    this.#tasks.add(task);
  }

  async #ceremony(
    kind: "create" | "get",
    options: unknown,
    context: { origin: string; isDefault: boolean } | undefined,
    pageSignal: AbortSignal,
  ): Promise<{ ok: true; credential: unknown } | { ok: false; name: string; message: string }> {
    const origin = context?.isDefault ? context.origin : "";
    const signal = AbortSignal.any([pageSignal, ...(this.#options.signal ? [this.#options.signal] : [])]);
    try {
      if (!context?.isDefault) {
        throw new ProvisioningError(
          "bridge-unknown-context",
          "Cannot run a WebAuthn ceremony: the call came from a context that is not a page's main world",
        );
      }
      const request = {
        options,
        origin,
        allowedRpIds: this.#options.allowedRpIds,
        authenticator: this.#options.authenticator,
        interaction: this.#options.interaction,
        signal,
        ...(this.#options.defaultTimeoutMs === undefined
          ? {}
          : { defaultTimeoutMs: this.#options.defaultTimeoutMs }),
      };
      if (kind === "create") {
        const credential = await oneCeremonyAtATime(this.#options.authenticator, () => create(request));
        this.#emit({ type: "created", origin, credential });
        return { ok: true, credential };
      }
      const credential = await oneCeremonyAtATime(this.#options.authenticator, () => get(request));
      this.#emit({ type: "asserted", origin, credential });
      return { ok: true, credential };
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      this.#emit({ type: "failed", ceremony: kind, origin, error: failure });
      const name = signal.aborted && pageSignal.aborted ? "AbortError" : domExceptionName(error);
      return { ok: false, name, message: pageMessages[name] ?? "The operation failed." };
    }
  }

  async #settle(contextId: number, id: string, outcome: unknown): Promise<void> {
    if (this.#closing && !this.#contexts.has(contextId)) return;
    try {
      await this.#session.send("Runtime.callFunctionOn", {
        functionDeclaration: `function (id, outcome) {
          const settle = globalThis[${JSON.stringify(this.#settleName)}];
          if (typeof settle === "function") settle(id, outcome);
        }`,
        executionContextId: contextId,
        arguments: [{ value: id }, { value: outcome }],
      });
    } catch {
      // The document is gone (navigated or closed): nobody is waiting any more.
    }
  }

  #emit(event: BridgeEvent): void {
    this.#events.push(event);
    try {
      this.#options.onEvent?.(event);
    } finally {
      for (const waiter of [...this.#waiters]) waiter(event);
    }
  }

  /** Cancels ceremonies still running, waits for them, and detaches from the page. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const controller of this.#inflight.values()) {
        controller.abort(new DOMException("The browser page was closed", "AbortError"));
      }
      await Promise.allSettled([...this.#tasks]);
      try {
        await this.#session.detach();
      } catch {
        // Detached with its page already.
      }
    })();
    return this.#closing;
  }

  /** Same as {@link close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
