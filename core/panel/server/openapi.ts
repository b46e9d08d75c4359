/**
 * The OpenAPI 3.1 document of the panel's API, version 1, written by hand (served at
 * `/api/v1/openapi.json`). test/panel_server_test.ts checks that it lists exactly the routes of
 * api.ts, with the same methods, and that every documented path answers.
 *
 * Sessions: the cookie `provisioning-panel` (`__Host-provisioning-panel` under TLS) and, on every
 * state-changing request, the header `x-csrf-token` with the session's CSRF token (from
 * `GET /api/v1/session`). Agents: `Authorization: Bearer <agent token>`.
 *
 * @module
 */

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const jsonContent = (schema: Json): Json => ({ "application/json": { schema } });
const ok = (description: string, schema: Json): Json => ({ description, content: jsonContent(schema) });
const error = (description: string): Json => ({ description, content: jsonContent(ref("Error")) });
const query = (name: string, schema: Json, description: string): Json => ({
  name,
  in: "query",
  required: false,
  schema,
  description,
});
const jobIdParam: Json = { name: "id", in: "path", required: true, schema: { type: "integer", minimum: 1 } };
const cursorParam = query("cursor", { type: "string" }, "The `next` of the previous page");
const limitParam = query("limit", { type: "integer", minimum: 1, maximum: 500, default: 50 }, "Rows a page");
const session = [{ session: [], csrf: [] }];
const agent = [{ agentToken: [] }];
const readers = [{ session: [] }, { agentToken: [] }];
const common = {
  "400": error("The body, query or path is invalid (the message names the field)"),
  "401": error("No live session or agent token (`agent-token-expired` after 12 hours)"),
  "403": error("The role does not allow it (`role-forbidden`), or the CSRF token is missing or wrong"),
};
const leaseRefusals = {
  ...common,
  "404": error("No such job (`unknown-job`)"),
  "409": {
    description:
      "The answer was refused: `lease-lost` (another lease holds the job), `finished`, `cancelled`; `job` is the job now",
    content: jsonContent(ref("Refusal")),
  },
};
const leaseRef = {
  agent: {
    type: "string",
    pattern: "^[A-Za-z0-9._:@-]{1,100}$",
    description: "The agent's name, as in its lease",
  },
  token: { type: "string", description: "The lease's token from `lease`" },
};
const body = (schema: Json, type = "application/json"): Json => ({
  required: true,
  content: { [type]: { schema } },
});
const agentAnswer = (summary: string, properties: Json, required: string[]): Json => ({
  post: {
    summary,
    security: agent,
    parameters: [jobIdParam],
    requestBody: body({
      type: "object",
      additionalProperties: false,
      required: ["agent", "token", ...required],
      properties: { ...leaseRef, ...properties },
    }),
    responses: { "200": ok("Accepted; the job as it is now", jobEnvelope), ...leaseRefusals },
  },
});
const jobEnvelope = { type: "object", required: ["job"], properties: { job: ref("Job") } };
const page = (item: string): Json => ({
  type: "object",
  required: ["items", "next"],
  properties: { items: { type: "array", items: ref(item) }, next: { type: ["string", "null"] } },
});

/** The document; see the module documentation. */
export const openApiDocument = {
  openapi: "3.1.0",
  info: {
    title: "provisioning panel",
    version: "1",
    description:
      "The panel's users, work queue and audit log, for admins (browser session) and agents (bearer token). docs/panel.md describes the auth model.",
  },
  paths: {
    "/api/v1/openapi.json": {
      get: {
        summary: "This document",
        security: [],
        responses: { "200": ok("The document", { type: "object" }) },
      },
    },
    "/api/v1/session": {
      get: {
        summary: "Who is signed in, and the session's CSRF token",
        security: readers,
        responses: { "200": ok("The caller", ref("Session")), ...common },
      },
    },
    "/api/v1/users": {
      get: {
        summary: "Users by sign-in name, keyset-paged, with a prefix search",
        security: readers,
        parameters: [
          cursorParam,
          limitParam,
          query("prefix", { type: "string" }, "Sign-in names starting with it"),
        ],
        responses: { "200": ok("A page of users", page("User")), ...common },
      },
    },
    "/api/v1/users/import": {
      post: {
        summary: "Import users from a CSV (objectId, userPrincipalName, displayName)",
        security: session,
        parameters: [
          query("provider", { type: "string", default: "entra" }, "The provider the users belong to"),
          query(
            "fullSync",
            { type: "string", enum: ["true", "false"], default: "false" },
            "Mark unlisted users not in sync",
          ),
        ],
        requestBody: body({ type: "string" }, "text/csv"),
        responses: {
          "200": ok("Imported", {
            type: "object",
            properties: { imported: { type: "integer" }, notInSync: { type: "integer" } },
          }),
          ...common,
          "413": error("The CSV is too large"),
        },
      },
    },
    "/api/v1/jobs": {
      get: {
        summary: "Jobs, newest first, keyset-paged",
        security: readers,
        parameters: [
          cursorParam,
          limitParam,
          query("state", {
            type: "string",
            enum: ["queued", "leased", "verified", "skipped", "failed", "cancelled"],
          }, "Only this state"),
          query("userId", { type: "integer" }, "Only this user's"),
        ],
        responses: { "200": ok("A page of jobs", page("Job")), ...common },
      },
      post: {
        summary: "Queue users (one job per user; a user with an active job keeps it)",
        security: session,
        requestBody: body({
          type: "object",
          additionalProperties: false,
          required: ["userIds"],
          properties: {
            userIds: { type: "array", minItems: 1, maxItems: 1000, items: { type: "integer" } },
            mode: { type: "string", enum: ["automatic", "manual"], default: "automatic" },
          },
        }),
        responses: {
          "200": ok("One outcome per user: queued, already-queued, not-in-sync, unknown-user", {
            type: "object",
            properties: { outcomes: { type: "array", items: { type: "object" } } },
          }),
          ...common,
        },
      },
    },
    "/api/v1/jobs/{id}": {
      get: {
        summary: "One job and its user",
        security: readers,
        parameters: [jobIdParam],
        responses: {
          "200": ok("The job", { type: "object", properties: { job: ref("Job"), user: ref("User") } }),
          ...common,
          "404": error("No such job"),
        },
      },
    },
    "/api/v1/jobs/{id}/cancel": {
      post: {
        summary: "Cancel a queued or leased job",
        security: session,
        parameters: [jobIdParam],
        responses: { "200": ok("Cancelled", jobEnvelope), ...leaseRefusals },
      },
    },
    "/api/v1/jobs/{id}/retry": {
      post: {
        summary: "Queue a failed or cancelled job again",
        security: session,
        parameters: [jobIdParam],
        responses: { "200": ok("Queued again", jobEnvelope), ...leaseRefusals },
      },
    },
    "/api/v1/audit": {
      get: {
        summary: "The audit log, newest first",
        security: [{ session: [] }],
        parameters: [cursorParam, limitParam, query("jobId", { type: "integer" }, "Only this job's")],
        responses: { "200": ok("A page of entries", page("AuditEntry")), ...common },
      },
    },
    "/api/v1/admins": {
      get: {
        summary: "The panel's admins (owner only)",
        security: [{ session: [] }],
        responses: {
          "200": ok("Admins", {
            type: "object",
            properties: { items: { type: "array", items: ref("Admin") } },
          }),
          ...common,
        },
      },
      post: {
        summary: "Add an admin (owner only); answers a one-time sign-in link for them",
        security: session,
        requestBody: body({
          type: "object",
          additionalProperties: false,
          required: ["signInName", "role"],
          properties: {
            signInName: { type: "string" },
            role: { type: "string", enum: ["admin", "read-only"] },
          },
        }),
        responses: {
          "201": ok("Added", {
            type: "object",
            properties: {
              admin: ref("Admin"),
              signInLink: { type: "string" },
              signInLinkExpiresAt: { type: "integer" },
            },
          }),
          ...common,
          "409": error("That sign-in name is an admin already"),
        },
      },
    },
    "/api/v1/agent-tokens": {
      get: {
        summary: "Agent tokens, newest first (your own; the owner: everyone's), without the tokens",
        security: [{ session: [] }],
        responses: {
          "200": ok("Tokens", {
            type: "object",
            properties: {
              items: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    id: { type: "integer" },
                    label: { type: "string" },
                    admin: { type: "string" },
                    createdAt: { type: "integer" },
                    expiresAt: { type: "integer" },
                    revokedAt: { type: ["integer", "null"] },
                  },
                },
              },
            },
          }),
          ...common,
        },
      },
      post: {
        summary: "A bearer token for an agent, bound to the signed-in admin, valid 12 hours (shown once)",
        security: session,
        requestBody: body({
          type: "object",
          additionalProperties: false,
          properties: { label: { type: "string", default: "agent" } },
        }),
        responses: {
          "201": ok("The token", {
            type: "object",
            properties: {
              id: { type: "integer" },
              token: { type: "string" },
              label: { type: "string" },
              expiresAt: { type: "integer" },
              admin: ref("Admin"),
            },
          }),
          ...common,
        },
      },
    },
    "/api/v1/agent-tokens/{id}/revoke": {
      post: {
        summary: "Revoke an agent token (your own; the owner: anyone's)",
        security: session,
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "integer", minimum: 1 } }],
        responses: {
          "200": ok("Revoked", { type: "object", properties: { revoked: { type: "integer" } } }),
          ...common,
          "404": error("No such live token of yours"),
        },
      },
    },
    "/api/v1/agent/logout": {
      post: {
        summary: "The agent's logout: revokes the calling token",
        security: agent,
        responses: {
          "200": ok("Revoked", { type: "object", properties: { revoked: { type: "integer" } } }),
          ...common,
        },
      },
    },
    "/api/v1/agent/lease": {
      post: {
        summary: "Lease up to `limit` jobs (expired leases first, then queued jobs)",
        security: agent,
        requestBody: body({
          type: "object",
          additionalProperties: false,
          required: ["agent"],
          properties: {
            agent: leaseRef.agent,
            limit: { type: "integer", minimum: 1, maximum: 500, default: 1 },
            leaseMs: { type: "integer", minimum: 1000, maximum: 3600000, default: 120000 },
          },
        }),
        responses: {
          "200": ok("The leased jobs (none when the queue is empty)", {
            type: "object",
            properties: { jobs: { type: "array", items: ref("LeasedJob") } },
          }),
          ...common,
        },
      },
    },
    "/api/v1/agent/jobs/{id}/renew": agentAnswer("Extend the lease; report the current step", {
      leaseMs: { type: "integer", minimum: 1000, maximum: 3600000, default: 120000 },
      step: { type: "string" },
    }, []),
    "/api/v1/agent/jobs/{id}/complete": agentAnswer("Finish the job as verified or skipped", {
      state: { type: "string", enum: ["verified", "skipped"] },
      result: { type: "object" },
    }, ["state"]),
    "/api/v1/agent/jobs/{id}/fail": agentAnswer("Report a failure (retryable ones are queued again)", {
      code: { type: "string", pattern: "^[a-z0-9-]{1,80}$" },
      message: { type: "string", maxLength: 2000 },
      retryable: { type: "boolean" },
    }, ["code", "message", "retryable"]),
    "/api/v1/agent/jobs/{id}/release": agentAnswer(
      "Give the job back untouched (the attempt is not counted)",
      {},
      [],
    ),
  },
  components: {
    securitySchemes: {
      session: { type: "apiKey", in: "cookie", name: "provisioning-panel" },
      csrf: { type: "apiKey", in: "header", name: "x-csrf-token" },
      agentToken: { type: "http", scheme: "bearer" },
    },
    schemas: {
      Error: {
        type: "object",
        required: ["error"],
        properties: {
          error: {
            type: "object",
            required: ["code", "message"],
            properties: { code: { type: "string" }, message: { type: "string" } },
          },
        },
      },
      Refusal: {
        allOf: [ref("Error"), {
          type: "object",
          properties: { job: { oneOf: [ref("Job"), { type: "null" }] } },
        }],
      },
      Admin: {
        type: "object",
        properties: {
          id: { type: "integer" },
          signInName: { type: "string" },
          role: { type: "string", enum: ["owner", "admin", "read-only"] },
          createdBy: { type: "string" },
          createdAt: { type: "integer" },
        },
      },
      Session: {
        type: "object",
        properties: {
          admin: ref("Admin"),
          kind: { type: "string", enum: ["session", "agent"] },
          csrf: { type: "string" },
          label: { type: "string" },
        },
      },
      User: {
        type: "object",
        properties: {
          id: { type: "integer" },
          provider: { type: "string" },
          objectId: { type: "string" },
          signInName: { type: "string" },
          displayName: { type: "string" },
          syncState: { type: "string", enum: ["in-sync", "not-in-sync"] },
          passkeyStatus: { type: "string", enum: ["unknown", "none", "registered"] },
          syncedAt: { type: "integer" },
          latestJob: { type: ["object", "null"] },
        },
      },
      Job: {
        type: "object",
        properties: {
          id: { type: "integer" },
          userId: { type: "integer" },
          state: { type: "string", enum: ["queued", "leased", "verified", "skipped", "failed", "cancelled"] },
          mode: { type: "string", enum: ["automatic", "manual"] },
          attempts: { type: "integer" },
          maxAttempts: { type: "integer" },
          leaseHolder: { type: ["string", "null"] },
          leaseExpiresAt: { type: ["integer", "null"] },
          step: { type: ["string", "null"] },
          lastError: { type: ["object", "null"] },
          result: {},
          requestedBy: { type: "string" },
          createdAt: { type: "integer" },
          updatedAt: { type: "integer" },
          finishedAt: { type: ["integer", "null"] },
        },
      },
      LeasedJob: {
        type: "object",
        properties: {
          job: ref("Job"),
          user: ref("User"),
          lease: {
            type: "object",
            properties: {
              jobId: { type: "integer" },
              agent: { type: "string", description: "The holder in the store: `admin/agent`" },
              token: { type: "string" },
              expiresAt: { type: "integer" },
            },
          },
          reclaimedFrom: {
            type: ["string", "null"],
            description: "Reconcile with the provider first when set",
          },
        },
      },
      AuditEntry: {
        type: "object",
        properties: {
          id: { type: "integer" },
          at: { type: "integer" },
          actor: { type: "string" },
          action: { type: "string" },
          jobId: { type: ["integer", "null"] },
          userId: { type: ["integer", "null"] },
          outcome: { type: "string", enum: ["ok", "refused"] },
          detail: { type: ["object", "null"] },
        },
      },
    },
  },
} as const;
