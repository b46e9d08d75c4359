/**
 * Serves one origin's requests of a page from another server: a page of the browser path may
 * navigate to `https://login.microsoft.com/...` while the target is a sandbox, and the browser
 * must then see that origin (a secure context whose host is the rp id) while the sandbox answers.
 *
 * Only the listed origins are paused (CDP `Fetch.enable` with URL patterns on the page's own
 * session); each paused request is sent to the other server with the same method, headers and
 * body, and its answer (status, headers including `Set-Cookie` and `Location`, body) is given to
 * the browser with `Fetch.fulfillRequest`. Nothing is process-wide: other contexts, and every
 * other origin, are untouched. Used only when the provider's target is a sandbox.
 *
 * @example
 * ```ts ignore
 * await using route = await routeOrigin(page, [
 *   { from: "https://login.microsoft.com", to: sandbox.url },
 * ]);
 * ```
 *
 * @module
 */
import type { CDPSession, Page } from "puppeteer-core/internal/puppeteer-core-browser.js";
import { fromBase64Any, toBase64 } from "../bytes.ts";

/** One origin served by another server. */
export interface OriginRoute {
  /** The origin the page asks for, e.g. `https://login.microsoft.com`. */
  from: string;
  /** The base URL that answers instead, e.g. `http://127.0.0.1:8443`. */
  to: string;
}

/** A route in place; `close()` removes it. */
export interface RoutedOrigins extends AsyncDisposable {
  close(): Promise<void>;
}

/** Headers the browser sets itself, or that describe the other hop. */
const hopHeaders = new Set(["host", "content-length", "connection", "accept-encoding"]);

/** Routes `routes`' origins of `page` to their servers; see the module documentation. */
export async function routeOrigin(page: Page, routes: readonly OriginRoute[]): Promise<RoutedOrigins> {
  const session: CDPSession = await page.createCDPSession();
  const tasks = new Set<Promise<void>>();
  session.on("Fetch.requestPaused", (event) => {
    const task = answer(session, routes, event).finally(() => tasks.delete(task));
    tasks.add(task);
  });
  await session.send("Fetch.enable", {
    patterns: routes.map((r) => ({
      urlPattern: `${new URL(r.from).origin}/*`,
      requestStage: "Request" as const,
    })),
  });
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      await Promise.allSettled([...tasks]);
      await session.detach().catch(() => undefined);
    })();
  return { close, [Symbol.asyncDispose]: close };
}

async function answer(
  session: CDPSession,
  routes: readonly OriginRoute[],
  event: {
    requestId: string;
    request: {
      url: string;
      method: string;
      headers: Record<string, string>;
      postData?: string;
      postDataEntries?: { bytes?: string }[];
    };
  },
): Promise<void> {
  const url = new URL(event.request.url);
  const route = routes.find((r) => new URL(r.from).origin === url.origin);
  try {
    if (!route) {
      await session.send("Fetch.continueRequest", { requestId: event.requestId });
      return;
    }
    const target = `${route.to.replace(/\/+$/, "")}${url.pathname}${url.search}`;
    const headers = new Headers();
    for (const [name, value] of Object.entries(event.request.headers)) {
      if (!hopHeaders.has(name.toLowerCase())) headers.set(name, value);
    }
    const body = bodyOf(event.request);
    const response = await fetch(target, {
      method: event.request.method,
      headers,
      redirect: "manual",
      ...(body ? { body } : {}),
    });
    const bytes = new Uint8Array(await response.arrayBuffer());
    const responseHeaders: { name: string; value: string }[] = [];
    response.headers.forEach((value, name) => {
      if (name !== "set-cookie" && name !== "content-encoding") responseHeaders.push({ name, value });
    });
    for (const value of response.headers.getSetCookie()) responseHeaders.push({ name: "set-cookie", value });
    await session.send("Fetch.fulfillRequest", {
      requestId: event.requestId,
      responseCode: response.status,
      responseHeaders,
      body: toBase64(bytes),
    });
  } catch {
    // The server is gone or the page closed: the browser shows a network error.
    await session.send("Fetch.failRequest", { requestId: event.requestId, errorReason: "ConnectionFailed" })
      .catch(() => undefined);
  }
}

function bodyOf(
  request: { postData?: string; postDataEntries?: { bytes?: string }[] },
): Uint8Array<ArrayBuffer> | undefined {
  if (request.postDataEntries && request.postDataEntries.length > 0) {
    const parts = request.postDataEntries.map((e) => e.bytes ? fromBase64Any(e.bytes) : new Uint8Array(0));
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
  return request.postData === undefined ? undefined : new TextEncoder().encode(request.postData);
}
