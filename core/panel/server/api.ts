/**
 * The panel's JSON API, version 1 (`/api/v1/…`; the OpenAPI document in openapi.ts describes it and
 * its test checks both agree). Each route maps onto one store operation
 * (core/panel/store/types.ts); every body and query is parsed with zod; refusals are
 * `{error:{code,message}}` with their status:
 *
 * - 400 invalid body, query or CSV; 401 no or dead session or agent token; 403 role or CSRF;
 *   404 unknown job; 409 a refused lease answer (`lease-lost`, `finished`, `cancelled`) or admin
 *   action (`finished`, `not-retryable`, `already-queued`), with the job as it is now.
 *
 * The agent's side (lease, renew, complete, fail, release) needs an agent token; its lease holder in
 * the store is `admin/agent`, so one admin's agent cannot answer for another's lease.
 *
 * @module
 */
import { z } from "zod";
import { adminRoles, type LeaseAnswer, type LeaseRef, maxLeaseMs } from "../store/mod.ts";
import { jobStates } from "../store/schema.ts";
import { parseUsersCsv } from "./csv_users.ts";
import { json, maxCsvBytes, PanelHttpError, parseInput, parseJsonBody, queryOf, readText } from "./http.ts";
import { openApiDocument } from "./openapi.ts";
import { actorOf, principalOf, type RequestContext, type Route } from "./routes.ts";

const cursor = z.string().min(1).max(400);
const limit = z.coerce.number().int().min(1).max(500);
const id = z.coerce.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const agentName = z.string().regex(/^[A-Za-z0-9._:@-]{1,100}$/, "1 to 100 letters, digits or . _ : @ -");
const leaseToken = z.string().min(1).max(100);

const usersQuery = z.object({
  cursor: cursor.optional(),
  limit: limit.optional(),
  prefix: z.string().max(320).optional(),
})
  .strict();
const importQuery = z.object({
  provider: z.string().regex(/^[a-z][a-z0-9-]{0,40}$/).default("entra"),
  fullSync: z.enum(["true", "false"]).default("false"),
}).strict();
const enqueueBody = z.object({
  userIds: z.array(id).min(1).max(1000),
  mode: z.enum(["automatic", "manual"]).default("automatic"),
}).strict();
const jobsQuery = z.object({
  state: z.enum(jobStates).optional(),
  userId: id.optional(),
  cursor: cursor.optional(),
  limit: limit.optional(),
}).strict();
const auditQuery = z.object({ jobId: id.optional(), cursor: cursor.optional(), limit: limit.optional() })
  .strict();
const adminBody = z.object({
  signInName: z.string().trim().min(1).max(320),
  role: z.enum(adminRoles).exclude(["owner"]),
}).strict();
const agentTokenBody = z.object({ label: z.string().trim().min(1).max(100).default("agent") }).strict();
const leaseBody = z.object({
  agent: agentName,
  limit: z.number().int().min(1).max(500).default(1),
  leaseMs: z.number().int().min(1000).max(maxLeaseMs).default(120_000),
}).strict();
const leaseRefBody = z.object({ agent: agentName, token: leaseToken });
const renewBody = leaseRefBody.extend({
  leaseMs: z.number().int().min(1000).max(maxLeaseMs).default(120_000),
  step: z.string().min(1).max(40).optional(),
}).strict();
const completeBody = leaseRefBody.extend({
  state: z.enum(["verified", "skipped"]),
  result: z.record(z.string(), z.unknown()).optional(),
}).strict();
const failBody = leaseRefBody.extend({
  code: z.string().regex(/^[a-z0-9-]{1,80}$/),
  message: z.string().min(1).max(2000),
  retryable: z.boolean(),
}).strict();
const releaseBody = leaseRefBody.strict();

function jobIdOf(context: RequestContext): number {
  return parseInput(id, context.params.id, "path");
}

async function usersList(context: RequestContext): Promise<Response> {
  const q = parseInput(usersQuery, queryOf(context.url), "query");
  const page = await context.panel.store.listUsers({
    cursor: q.cursor ?? null,
    ...(q.limit === undefined ? {} : { limit: q.limit }),
    ...(q.prefix === undefined ? {} : { prefix: q.prefix }),
  });
  return json(page);
}

async function usersImport(context: RequestContext): Promise<Response> {
  const q = parseInput(importQuery, queryOf(context.url), "query");
  const type = context.request.headers.get("content-type") ?? "";
  if (!/^text\/csv\b/i.test(type)) {
    throw new PanelHttpError(
      415,
      "unsupported-media-type",
      `Cannot import a "${type || "(none)"}" body: send text/csv`,
    );
  }
  const users = parseUsersCsv(await readText(context.request, maxCsvBytes));
  const result = await context.panel.store.importUsers({
    provider: q.provider,
    users,
    actor: actorOf(principalOf(context)),
    fullSync: q.fullSync === "true",
  });
  return json(result);
}

async function jobsEnqueue(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, enqueueBody);
  const outcomes = await context.panel.store.enqueue({
    userIds: body.userIds,
    mode: body.mode,
    actor: actorOf(principalOf(context)),
  });
  return json({ outcomes });
}

async function jobsList(context: RequestContext): Promise<Response> {
  const q = parseInput(jobsQuery, queryOf(context.url), "query");
  return json(
    await context.panel.store.listJobs({
      cursor: q.cursor ?? null,
      ...(q.state === undefined ? {} : { state: q.state }),
      ...(q.userId === undefined ? {} : { userId: q.userId }),
      ...(q.limit === undefined ? {} : { limit: q.limit }),
    }),
  );
}

async function jobGet(context: RequestContext): Promise<Response> {
  const jobId = jobIdOf(context);
  const job = await context.panel.store.getJob(jobId);
  if (job === null) throw new PanelHttpError(404, "unknown-job", `Cannot find job ${jobId}`);
  const user = await context.panel.store.getUser(job.userId);
  return json({ job, user });
}

function adminAction(action: "cancel" | "retry") {
  return async (context: RequestContext): Promise<Response> => {
    const jobId = jobIdOf(context);
    const answer = await context.panel.store[action]({ jobId, actor: actorOf(principalOf(context)) });
    if (answer.done) return json({ job: answer.job });
    const status = answer.reason === "unknown-job" ? 404 : 409;
    throw new PanelHttpError(status, answer.reason, `Cannot ${action} job ${jobId}: ${answer.reason}`, {
      job: answer.job,
    });
  };
}

async function auditList(context: RequestContext): Promise<Response> {
  const q = parseInput(auditQuery, queryOf(context.url), "query");
  return json(
    await context.panel.store.listAudit({
      cursor: q.cursor ?? null,
      ...(q.jobId === undefined ? {} : { jobId: q.jobId }),
      ...(q.limit === undefined ? {} : { limit: q.limit }),
    }),
  );
}

function session(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  return Promise.resolve(json({
    admin: principal.admin,
    kind: principal.kind,
    ...(principal.kind === "session" ? { csrf: principal.csrf } : { label: principal.label }),
  }));
}

async function adminsList(context: RequestContext): Promise<Response> {
  return json({ items: await context.panel.store.auth.listAdmins() });
}

async function adminsCreate(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, adminBody);
  const { store, signInLinkTtlMs } = context.panel;
  const actor = actorOf(principalOf(context));
  const created = await store.auth.createAdmin({ ...body, actor, at: context.now });
  if (!created.created) {
    throw new PanelHttpError(
      409,
      "admin-exists",
      `Cannot add admin "${body.signInName}": that sign-in name exists`,
    );
  }
  const token = await store.auth.issueSignInToken({
    adminId: created.admin.id,
    at: context.now,
    ttlMs: signInLinkTtlMs,
    actor,
  });
  return json({
    admin: created.admin,
    signInLink: new URL(`/sign-in?token=${token}`, context.url).toString(),
    signInLinkExpiresAt: context.now + signInLinkTtlMs,
  }, 201);
}

async function agentTokensCreate(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, agentTokenBody);
  const principal = principalOf(context);
  const grant = await context.panel.store.auth.issueAgentToken({
    adminId: principal.admin.id,
    label: body.label,
    at: context.now,
    ttlMs: context.panel.agentTokenTtlMs,
    actor: actorOf(principal),
  });
  return json({
    id: grant.id,
    token: grant.token,
    label: grant.label,
    expiresAt: grant.expiresAt,
    admin: grant.admin,
  }, 201);
}

async function agentTokensList(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  const mine = principal.admin.role === "owner" ? {} : { adminId: principal.admin.id };
  return json({ items: await context.panel.store.auth.listAgentTokens(mine) });
}

async function agentTokensRevoke(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  const tokenId = parseInput(id, context.params.id, "path");
  const revoked = await context.panel.store.auth.revokeAgentToken({
    id: tokenId,
    actor: actorOf(principal),
    at: context.now,
    ...(principal.admin.role === "owner" ? {} : { adminId: principal.admin.id }),
  });
  if (!revoked) {
    throw new PanelHttpError(
      404,
      "unknown-agent-token",
      `Cannot revoke agent token ${tokenId}: none of yours is live`,
    );
  }
  return json({ revoked: tokenId });
}

/** The agent's `logout`: its own token stops working at once. */
async function agentLogout(context: RequestContext): Promise<Response> {
  const principal = principalOf(context);
  if (principal.kind !== "agent") throw new TypeError("agent route without an agent token");
  await context.panel.store.auth.revokeAgentToken({
    id: principal.tokenId,
    actor: actorOf(principal, principal.label),
    at: context.now,
  });
  return json({ revoked: principal.tokenId });
}

async function agentLease(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, leaseBody);
  const agent = actorOf(principalOf(context), body.agent);
  const jobs = await context.panel.store.lease({ agent, limit: body.limit, leaseMs: body.leaseMs });
  return json({ jobs });
}

/** Turns a lease answer into 200 with the job, or 409/404 with the refusal and the job as it is. */
function leaseAnswer(answer: LeaseAnswer, action: string, jobId: number): Response {
  if (answer.accepted) return json({ job: answer.job });
  const status = answer.reason === "unknown-job" ? 404 : 409;
  throw new PanelHttpError(status, answer.reason, `Cannot ${action} job ${jobId}: ${answer.reason}`, {
    job: answer.job,
  });
}

function leaseRef(context: RequestContext, body: { agent: string; token: string }): LeaseRef {
  return { jobId: jobIdOf(context), agent: actorOf(principalOf(context), body.agent), token: body.token };
}

async function agentRenew(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, renewBody);
  const lease = leaseRef(context, body);
  const answer = await context.panel.store.renew(lease, {
    leaseMs: body.leaseMs,
    ...(body.step === undefined ? {} : { step: body.step }),
  });
  return leaseAnswer(answer, "renew the lease of", lease.jobId);
}

async function agentComplete(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, completeBody);
  const lease = leaseRef(context, body);
  const answer = await context.panel.store.complete(lease, {
    state: body.state,
    ...(body.result === undefined ? {} : { result: body.result }),
  });
  return leaseAnswer(answer, "complete", lease.jobId);
}

async function agentFail(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, failBody);
  const lease = leaseRef(context, body);
  const answer = await context.panel.store.fail(lease, {
    code: body.code,
    message: body.message,
    retryable: body.retryable,
  });
  return leaseAnswer(answer, "fail", lease.jobId);
}

async function agentRelease(context: RequestContext): Promise<Response> {
  const body = await parseJsonBody(context.request, releaseBody);
  const lease = leaseRef(context, body);
  return leaseAnswer(await context.panel.store.release(lease), "release", lease.jobId);
}

/** The API's routes; openapi.ts documents exactly these (its test compares them). */
export const apiRoutes: readonly Route[] = [
  {
    method: "GET",
    path: "/api/v1/openapi.json",
    kind: "api",
    access: "public",
    handle: () => Promise.resolve(json(openApiDocument)),
  },
  {
    method: "GET",
    path: "/api/v1/session",
    kind: "api",
    access: "session-or-agent",
    permission: "read",
    handle: session,
  },
  {
    method: "GET",
    path: "/api/v1/users",
    kind: "api",
    access: "session-or-agent",
    permission: "read",
    handle: usersList,
  },
  {
    method: "POST",
    path: "/api/v1/users/import",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: usersImport,
  },
  {
    method: "GET",
    path: "/api/v1/jobs",
    kind: "api",
    access: "session-or-agent",
    permission: "read",
    handle: jobsList,
  },
  {
    method: "POST",
    path: "/api/v1/jobs",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: jobsEnqueue,
  },
  {
    method: "GET",
    path: "/api/v1/jobs/{id}",
    kind: "api",
    access: "session-or-agent",
    permission: "read",
    handle: jobGet,
  },
  {
    method: "POST",
    path: "/api/v1/jobs/{id}/cancel",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: adminAction("cancel"),
  },
  {
    method: "POST",
    path: "/api/v1/jobs/{id}/retry",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: adminAction("retry"),
  },
  {
    method: "GET",
    path: "/api/v1/audit",
    kind: "api",
    access: "session",
    permission: "read",
    handle: auditList,
  },
  {
    method: "GET",
    path: "/api/v1/admins",
    kind: "api",
    access: "session",
    permission: "owner",
    handle: adminsList,
  },
  {
    method: "POST",
    path: "/api/v1/admins",
    kind: "api",
    access: "session",
    permission: "owner",
    handle: adminsCreate,
  },
  {
    method: "POST",
    path: "/api/v1/agent-tokens",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: agentTokensCreate,
  },
  {
    method: "GET",
    path: "/api/v1/agent-tokens",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: agentTokensList,
  },
  {
    method: "POST",
    path: "/api/v1/agent-tokens/{id}/revoke",
    kind: "api",
    access: "session",
    permission: "edit-users",
    handle: agentTokensRevoke,
  },
  {
    method: "POST",
    path: "/api/v1/agent/logout",
    kind: "api",
    access: "agent",
    permission: "read",
    handle: agentLogout,
  },
  {
    method: "POST",
    path: "/api/v1/agent/lease",
    kind: "api",
    access: "agent",
    permission: "edit-users",
    handle: agentLease,
  },
  {
    method: "POST",
    path: "/api/v1/agent/jobs/{id}/renew",
    kind: "api",
    access: "agent",
    permission: "edit-users",
    handle: agentRenew,
  },
  {
    method: "POST",
    path: "/api/v1/agent/jobs/{id}/complete",
    kind: "api",
    access: "agent",
    permission: "edit-users",
    handle: agentComplete,
  },
  {
    method: "POST",
    path: "/api/v1/agent/jobs/{id}/fail",
    kind: "api",
    access: "agent",
    permission: "edit-users",
    handle: agentFail,
  },
  {
    method: "POST",
    path: "/api/v1/agent/jobs/{id}/release",
    kind: "api",
    access: "agent",
    permission: "edit-users",
    handle: agentRelease,
  },
];
