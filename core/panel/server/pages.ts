/**
 * The panel's pages, rendered on the server as plain HTML with one small stylesheet: they work
 * with JavaScript disabled (there is none). Every form that changes something posts the session's
 * CSRF token in a hidden `csrf` field; links from the terminal (bootstrap, sign-in) show a form
 * first, so a link previewer that fetches the URL does not spend the token.
 *
 * Pages: `/` (sign-in landing), `/bootstrap` and `/sign-in` (one-time links), `/users` (paged by
 * keyset, prefix search, "Add passkey" per user, select users and queue them at once), `/jobs` (state, attempts, step, last error,
 * cancel and retry), `/audit` (the audit log), `/panel.css`.
 *
 * @module
 */
import { z } from "zod";
import type { AuditEntry, JobState, PanelUserWithJob, QueueJob } from "../store/mod.ts";
import { jobStates } from "../store/schema.ts";
import { allows, clearedSessionCookie, type Principal, sessionCookie } from "./auth.ts";
import { PanelHttpError, parseInput, queryOf, securityHeaders } from "./http.ts";
import type { ProviderSignInFlow } from "./provider_sign_in.ts";
import { principalOf, type RequestContext, type Route } from "./routes.ts";

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const stylesheet = `body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1b1b1b}
header{background:#0f3a5f;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff}header form{margin-left:auto}main{padding:1em}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left}
.error{color:#a00}.state-failed{color:#a00}.state-verified{color:#070}form.inline{display:inline}
nav.pages{margin:1em 0}`;

function page(
  title: string,
  principal: Principal | null,
  body: string,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  const nav = principal === null
    ? ""
    : `<a href="/users">Users</a><a href="/jobs">Jobs</a><a href="/audit">Audit log</a>
<span>${escapeHtml(principal.admin.signInName)} (${escapeHtml(principal.admin.role)})</span>
${
      principal.kind === "session"
        ? `<form method="post" action="/sign-out">${csrfField(principal)}<button>Sign out</button></form>`
        : ""
    }`;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)} · provisioning panel</title>
<link rel="stylesheet" href="/panel.css"></head>
<body><header><strong>provisioning panel</strong>${nav}</header><main><h1>${escapeHtml(title)}</h1>
${body}</main></body></html>`;
  return new Response(html, {
    status,
    headers: { ...securityHeaders, "content-type": "text/html; charset=utf-8", ...headers },
  });
}

/** An error page for a refusal of a page route. */
export function errorPage(error: PanelHttpError, principal: Principal | null): Response {
  return page(
    "Cannot do that",
    principal,
    `<p class="error" data-code="${escapeHtml(error.code)}">${escapeHtml(error.message)}</p>
<p><a href="/">Back to the panel</a></p>`,
    error.status,
  );
}

function csrfField(principal: Principal): string {
  return principal.kind === "session"
    ? `<input type="hidden" name="csrf" value="${escapeHtml(principal.csrf)}">`
    : "";
}

function redirect(location: string, headers: Record<string, string> = {}): Response {
  return new Response(null, { status: 303, headers: { ...securityHeaders, location, ...headers } });
}

function landing(context: RequestContext): Promise<Response> {
  if (context.principal !== null) return Promise.resolve(redirect("/users"));
  return Promise.resolve(
    page(
      "Sign in",
      null,
      `<p>Sign in with the one-time link you were given: the first-run link the panel printed
on its terminal (for its owner), or the link the owner created for you.</p>
${
        context.panel.providerSignIn === null
          ? "<p>Signing in with the identity provider is not configured on this panel.</p>"
          : `<p><a href="/auth/sign-in">Sign in with ${
            escapeHtml(context.panel.providerSignIn.provider)
          }</a></p>`
      }`,
    ),
  );
}

function providerFlow(context: RequestContext): ProviderSignInFlow {
  if (context.panel.providerSignIn === null) {
    throw new PanelHttpError(
      404,
      "provider-sign-in-off",
      "Cannot sign in with the provider: this panel is not configured for it",
    );
  }
  return context.panel.providerSignIn;
}

const tokenQuery = z.object({ token: z.string().min(16).max(200) });

function linkForm(action: string, title: string, extra: string) {
  return (context: RequestContext): Promise<Response> => {
    const { token } = parseInput(tokenQuery, queryOf(context.url), "query");
    return Promise.resolve(page(
      title,
      null,
      `<form method="post" action="${action}">
<input type="hidden" name="token" value="${escapeHtml(token)}">${extra}
<button>Sign in</button></form>`,
    ));
  };
}

const bootstrapForm = z.object({
  token: z.string().min(16).max(200),
  signInName: z.string().trim().min(1).max(320),
});

async function bootstrap(context: RequestContext): Promise<Response> {
  const form = parseInput(bootstrapForm, Object.fromEntries(context.form ?? []), "form");
  const { store, sessionTtlMs, tls } = context.panel;
  const answer = await store.auth.redeemBootstrap({ ...form, at: context.now, sessionTtlMs });
  if (!answer.ok) {
    throw new PanelHttpError(
      410,
      `bootstrap-${answer.reason}`,
      `Cannot use this first-run link: ${refusalText[answer.reason]}`,
    );
  }
  return redirect("/users", {
    "set-cookie": sessionCookie({ tls, token: answer.session.token, maxAgeMs: sessionTtlMs }),
  });
}

const refusalText = {
  unknown: "it is not known to this panel",
  used: "it was used already",
  expired: "it expired; ask for a new one",
  "owner-exists": "the panel has an owner already",
} as const;

async function signIn(context: RequestContext): Promise<Response> {
  const { token } = parseInput(tokenQuery, Object.fromEntries(context.form ?? []), "form");
  const { store, sessionTtlMs, tls } = context.panel;
  const answer = await store.auth.redeemSignIn({ token, at: context.now, sessionTtlMs });
  if (!answer.ok) {
    throw new PanelHttpError(
      410,
      `sign-in-${answer.reason}`,
      `Cannot sign in with this link: ${refusalText[answer.reason]}`,
    );
  }
  return redirect("/users", {
    "set-cookie": sessionCookie({ tls, token: answer.session.token, maxAgeMs: sessionTtlMs }),
  });
}

async function signOut(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  if (principal.kind === "session") await context.panel.store.auth.endSession(principal.token);
  return redirect("/", { "set-cookie": clearedSessionCookie(context.panel.tls) });
}

const usersQuery = z.object({
  cursor: z.string().min(1).max(400).optional(),
  prefix: z.string().max(320).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});

function userRow(user: PanelUserWithJob, principal: Principal): string {
  const job = user.latestJob === null
    ? ""
    : `<a href="/jobs?userId=${user.id}">#${user.latestJob.id} ${user.latestJob.state}</a>`;
  const action = !allows(principal.admin.role, "edit-users")
    ? ""
    : user.syncState !== "in-sync"
    ? `<span class="error">not in sync: import from the directory again</span>`
    : `<form class="inline" method="post" action="/users/${user.id}/enqueue">${csrfField(principal)}
<select name="mode"><option value="automatic">Automatic</option><option value="manual">Manual</option></select>
<button>Add passkey</button></form>`;
  // The checkbox belongs to the bulk form below the table (the `form` attribute: forms cannot nest).
  const select = allows(principal.admin.role, "edit-users") && user.syncState === "in-sync"
    ? `<input type="checkbox" name="userId" value="${user.id}" form="bulk" aria-label="select">`
    : "";
  return `<tr data-user-id="${user.id}" data-sign-in="${escapeHtml(user.signInName)}"><td>${select}</td><td>${
    escapeHtml(user.signInName)
  }</td>
<td>${
    escapeHtml(user.displayName)
  }</td><td>${user.syncState}</td><td>${user.passkeyStatus}</td><td>${job}</td><td>${action}</td></tr>`;
}

async function usersPage(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  const q = parseInput(usersQuery, queryOf(context.url), "query");
  const result = await context.panel.store.listUsers({
    cursor: q.cursor ?? null,
    limit: q.limit,
    ...(q.prefix === undefined ? {} : { prefix: q.prefix }),
  });
  const next = result.next === null ? "" : `<a rel="next" href="/users?${new URLSearchParams({
    cursor: result.next,
    limit: String(q.limit),
    ...(q.prefix === undefined ? {} : { prefix: q.prefix }),
  })}">Next page</a>`;
  return page(
    "Users",
    principal,
    `<form method="get" action="/users"><label>Sign-in name starts with
<input name="prefix" value="${escapeHtml(q.prefix ?? "")}"></label><button>Search</button></form>
<table><thead><tr><th></th><th>Sign-in name</th><th>Name</th><th>Directory</th><th>Passkey</th><th>Latest job</th><th></th></tr></thead>
<tbody>${result.items.map((u) => userRow(u, principal)).join("\n")}</tbody></table>
${
      allows(principal.admin.role, "edit-users")
        ? `<form id="bulk" method="post" action="/users/enqueue">${csrfField(principal)}
<select name="mode"><option value="automatic">Automatic</option><option value="manual">Manual</option></select>
<button>Queue the selected users</button></form>`
        : ""
    }
<nav class="pages"><a href="/users${
      q.prefix ? `?prefix=${encodeURIComponent(q.prefix)}` : ""
    }">First page</a> ${next}</nav>`,
  );
}

const modeForm = z.object({ mode: z.enum(["automatic", "manual"]).default("automatic") });
const bulkForm = z.object({
  mode: z.enum(["automatic", "manual"]).default("automatic"),
  userIds: z.array(z.coerce.number().int().min(1)).min(1, "select at least one user").max(500),
});

/** "Queue the selected users": one job per selected user (a user with an active job keeps it). */
async function enqueueSelected(context: RequestContext): Promise<Response> {
  const form = context.form ?? new URLSearchParams();
  const { mode, userIds } = parseInput(
    bulkForm,
    { mode: form.get("mode") ?? undefined, userIds: form.getAll("userId") },
    "form",
  );
  await context.panel.store.enqueue({ userIds, mode, actor: principalOf(context).admin.signInName });
  return redirect("/jobs");
}

async function enqueueUser(context: RequestContext): Promise<Response> {
  const userId = parseInput(z.coerce.number().int().min(1), context.params.id, "path");
  const { mode } = parseInput(modeForm, { mode: context.form?.get("mode") ?? undefined }, "form");
  const [outcome] = await context.panel.store.enqueue({
    userIds: [userId],
    mode,
    actor: principalOf(context).admin.signInName,
  });
  if (outcome === undefined || !("jobId" in outcome)) {
    const reason = outcome?.outcome ?? "unknown-user";
    throw new PanelHttpError(
      reason === "unknown-user" ? 404 : 409,
      reason,
      `Cannot queue user ${userId}: ${reason}`,
    );
  }
  return redirect(`/jobs?userId=${userId}`);
}

const jobsQuery = z.object({
  cursor: z.string().min(1).max(400).optional(),
  state: z.enum(jobStates).optional(),
  userId: z.coerce.number().int().min(1).optional(),
});

function jobRow(job: QueueJob, principal: Principal): string {
  const editable = allows(principal.admin.role, "edit-users");
  const button = (action: string, label: string) =>
    `<form class="inline" method="post" action="/jobs/${job.id}/${action}">${
      csrfField(principal)
    }<button>${label}</button></form>`;
  const actions = !editable
    ? ""
    : job.state === "queued" || job.state === "leased"
    ? button("cancel", "Cancel")
    : job.state === "failed" || job.state === "cancelled"
    ? button("retry", "Retry")
    : "";
  const error = job.lastError === null
    ? ""
    : `${escapeHtml(job.lastError.code)}: ${escapeHtml(job.lastError.message)}`;
  return `<tr data-job-id="${job.id}" data-state="${job.state}"><td>#${job.id}</td><td><a href="/jobs?userId=${job.userId}">user ${job.userId}</a></td>
<td class="state-${job.state}">${job.state}</td><td>${job.mode}</td><td>${job.attempts}/${job.maxAttempts}</td>
<td>${escapeHtml(job.leaseHolder ?? "")}</td><td>${
    escapeHtml(job.step ?? "")
  }</td><td class="error">${error}</td><td>${actions}</td></tr>`;
}

async function jobsPage(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  const q = parseInput(jobsQuery, queryOf(context.url), "query");
  const filter = {
    ...(q.state === undefined ? {} : { state: q.state as JobState }),
    ...(q.userId === undefined ? {} : { userId: q.userId }),
  };
  const [result, counts] = await Promise.all([
    context.panel.store.listJobs({ cursor: q.cursor ?? null, ...filter }),
    context.panel.store.counts(),
  ]);
  const params = (extra: Record<string, string>) =>
    new URLSearchParams({
      ...Object.fromEntries(Object.entries(filter).map(([k, v]) => [k, String(v)])),
      ...extra,
    });
  const next = result.next === null
    ? ""
    : `<a rel="next" href="/jobs?${params({ cursor: result.next })}">Next page</a>`;
  const summary = jobStates.map((s) => `<a href="/jobs?state=${s}">${s}: ${counts[s]}</a>`).join(" · ");
  return page(
    "Jobs",
    principal,
    `<p>${summary} · <a href="/jobs">all</a></p>
<table><thead><tr><th>Job</th><th>User</th><th>State</th><th>Mode</th><th>Attempts</th><th>Agent</th><th>Step</th><th>Last error</th><th></th></tr></thead>
<tbody>${
      result.items.map((j) => jobRow(j, principal)).join("\n")
    }</tbody></table><nav class="pages">${next}</nav>`,
  );
}

function jobAction(action: "cancel" | "retry") {
  return async (context: RequestContext): Promise<Response> => {
    const jobId = parseInput(z.coerce.number().int().min(1), context.params.id, "path");
    const answer = await context.panel.store[action]({ jobId, actor: principalOf(context).admin.signInName });
    if (!answer.done) {
      throw new PanelHttpError(
        answer.reason === "unknown-job" ? 404 : 409,
        answer.reason,
        `Cannot ${action} job ${jobId}: ${answer.reason}`,
      );
    }
    return redirect("/jobs");
  };
}

function auditRow(entry: AuditEntry): string {
  return `<tr data-audit-id="${entry.id}"><td>${new Date(entry.at).toISOString()}</td><td>${
    escapeHtml(entry.actor)
  }</td>
<td>${escapeHtml(entry.action)}</td><td>${entry.jobId ?? ""}</td><td>${
    entry.userId ?? ""
  }</td><td>${entry.outcome}</td>
<td>${escapeHtml(entry.detail === null ? "" : JSON.stringify(entry.detail))}</td></tr>`;
}

async function auditPage(context: RequestContext): Promise<Response> {
  const q = parseInput(
    z.object({ cursor: z.string().min(1).max(400).optional() }),
    queryOf(context.url),
    "query",
  );
  const result = await context.panel.store.listAudit({ cursor: q.cursor ?? null });
  const next = result.next === null
    ? ""
    : `<a rel="next" href="/audit?${new URLSearchParams({ cursor: result.next })}">Next page</a>`;
  return page(
    "Audit log",
    principalOf(context),
    `<table><thead><tr><th>When (UTC)</th><th>Who</th><th>What</th><th>Job</th>
<th>User</th><th>Outcome</th><th>Detail</th></tr></thead><tbody>${
      result.items.map(auditRow).join("\n")
    }</tbody></table>
<nav class="pages">${next}</nav>`,
  );
}

/** The pages' routes. */
export const pageRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/panel.css",
    kind: "page",
    access: "public",
    handle: () =>
      Promise.resolve(
        new Response(stylesheet, {
          headers: { ...securityHeaders, "content-type": "text/css; charset=utf-8" },
        }),
      ),
  },
  { method: "GET", path: "/", kind: "page", access: "public", handle: landing },
  {
    method: "GET",
    path: "/auth/sign-in",
    kind: "page",
    access: "public",
    handle: (c) => providerFlow(c).start(c),
  },
  {
    method: "GET",
    path: "/auth/callback",
    kind: "page",
    access: "public",
    handle: (c) => providerFlow(c).callback(c),
  },
  {
    method: "GET",
    path: "/bootstrap",
    kind: "page",
    access: "public",
    handle: linkForm(
      "/bootstrap",
      "Set up this panel",
      `<p>You become the panel's owner.</p>
<label>Your sign-in name (e.g. your user principal name) <input name="signInName" required></label>`,
    ),
  },
  { method: "POST", path: "/bootstrap", kind: "page", access: "public", handle: bootstrap },
  {
    method: "GET",
    path: "/sign-in",
    kind: "page",
    access: "public",
    handle: linkForm("/sign-in", "Sign in", ""),
  },
  { method: "POST", path: "/sign-in", kind: "page", access: "public", handle: signIn },
  { method: "POST", path: "/sign-out", kind: "page", access: "session", permission: "read", handle: signOut },
  { method: "GET", path: "/users", kind: "page", access: "session", permission: "read", handle: usersPage },
  {
    method: "POST",
    path: "/users/enqueue",
    kind: "page",
    access: "session",
    permission: "edit-users",
    handle: enqueueSelected,
  },
  {
    method: "POST",
    path: "/users/{id}/enqueue",
    kind: "page",
    access: "session",
    permission: "edit-users",
    handle: enqueueUser,
  },
  { method: "GET", path: "/jobs", kind: "page", access: "session", permission: "read", handle: jobsPage },
  {
    method: "POST",
    path: "/jobs/{id}/cancel",
    kind: "page",
    access: "session",
    permission: "edit-users",
    handle: jobAction("cancel"),
  },
  {
    method: "POST",
    path: "/jobs/{id}/retry",
    kind: "page",
    access: "session",
    permission: "edit-users",
    handle: jobAction("retry"),
  },
  { method: "GET", path: "/audit", kind: "page", access: "session", permission: "read", handle: auditPage },
];
