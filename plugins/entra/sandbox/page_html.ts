/**
 * What the sandbox's web pages share: HTML and JSON answers, escaping, the sign-in cookie, and the
 * page frame. The pages themselves are login_pages.ts (the sign-in and the ceremony page standing
 * in for `login.microsoftonline.com` and `login.microsoft.com`) and mysignins.ts (Security info).
 *
 * @module
 */

/** Escapes text for HTML element content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The sign-in cookie's name. */
export const signInCookie = "sbx_signin";

/** A `set-cookie` value for the sign-in cookie (`maxAge` 0 removes it). */
export function cookie(id: string, maxAge?: number): string {
  return `${signInCookie}=${id}; Path=/; HttpOnly; SameSite=Lax${
    maxAge === undefined ? "" : `; Max-Age=${maxAge}`
  }`;
}

/** The sign-in cookie's value, if the request has one. */
export function cookieValue(request: Request): string | undefined {
  const header = request.headers.get("cookie") ?? "";
  return new RegExp(`(?:^|;\\s*)${signInCookie}=([A-Za-z0-9_-]+)`).exec(header)?.[1];
}

const noStore = { "cache-control": "no-store" };

/** An HTML answer. */
export function html(body: string, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8", ...noStore, ...headers },
  });
}

/** A JSON answer. */
export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...noStore },
  });
}

/** A redirect. */
export function redirect(location: string, headers: Record<string, string> = {}): Response {
  return new Response(null, { status: 302, headers: { location, ...noStore, ...headers } });
}

const style = `<style>
  body { font-family: "Segoe UI", sans-serif; background: #f2f2f2; margin: 0; }
  main { background: #fff; max-width: 480px; margin: 48px auto; padding: 44px; box-shadow: 0 2px 6px rgba(0,0,0,.2); }
  input[type=email], input[type=password], input[type=text] { width: 100%; font-size: 15px; padding: 6px 0; border: 0; border-bottom: 1px solid #666; margin: 12px 0; }
  button, input[type=submit], input[type=button] { font-size: 15px; padding: 6px 16px; margin: 8px 8px 0 0; cursor: pointer; }
  .button_primary, .ms-Button--primary { background: #0067b8; color: #fff; border: 0; }
  .error { color: #e81123; margin: 8px 0; }
  [hidden] { display: none !important; }
  .option { display: block; width: 100%; text-align: left; margin: 6px 0; }
  .heading { font-size: 24px; font-weight: 600; margin: 8px 0 16px; }
</style>`;

/** A whole page: `lang` is the page's language, as Microsoft's pages set it on `<html>`. */
export function page(title: string, content: string, lang = "en"): string {
  return `<!doctype html><html dir="ltr" lang="${escapeHtml(lang)}"><head><meta charset="utf-8"><title>${
    escapeHtml(title)
  }</title>${style}</head><body><main>${content}</main></body></html>`;
}
