/**
 * Throttling and fault injection for the sandbox's Graph side.
 *
 * Throttling models Microsoft Graph's identity and access service limits
 * (https://learn.microsoft.com/en-us/graph/throttling-limits#identity-and-access-service-limits):
 * a token bucket of resource units per application+tenant pair sized by the tenant's user count
 * (S under 50 users: 3,500 per 10 s; M up to 500: 5,000; L above: 8,000), 150,000 per 20 s per
 * application, and write quotas of 3,000 requests per 150 s per application+tenant, 35,000 per
 * 5 min per application and 18,000 per 5 min per tenant. Request costs follow that page's table
 * (`GET users` 2, `GET groups/{id}/members` 3, `GET groups/{id}/transitiveMembers` 5, anything else
 * 1; writes cost 1 write; `$select` −1, `$expand` +1, `$top` under 20 −1, never below 1). A
 * refused request is not charged. Answers follow https://learn.microsoft.com/en-us/graph/throttling:
 * `429` with `Retry-After` (seconds), `x-ms-throttle-scope` and `x-ms-throttle-information`, and
 * `x-ms-resource-unit` / `x-ms-throttle-limit-percentage` on the requests that pass.
 *
 * Every number is configurable, at start and at run time, and `scale` multiplies every window so
 * a test can use tiny limits with an injected clock instead of sleeping.
 *
 * Faults (5xx answers, connection resets, lost responses, latency, slow responses) are drawn from
 * a seeded random source so a run is reproducible.
 *
 * @module
 */
import { z } from "zod";
import { type Random, seededRandom } from "./tenant.ts";

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

const windowSchema = z.object({
  /** Requests (or resource units) allowed per window. */
  limit: z.number().positive(),
  windowSeconds: z.number().positive(),
});

/** The throttling limits; see the module documentation for Microsoft's numbers. */
export const throttleSettingsSchema = z.object({
  /** Off: every request passes (resource-unit headers are still sent). */
  enabled: z.boolean(),
  /** Resource units per application+tenant pair per window, by tenant size. */
  resourceUnits: z.object({
    small: z.number().positive(),
    medium: z.number().positive(),
    large: z.number().positive(),
    windowSeconds: z.number().positive(),
    /** A tenant with fewer users than this is small (S). */
    mediumFromUsers: z.number().int().nonnegative(),
    /** A tenant with more users than this is large (L). */
    largeAboveUsers: z.number().int().nonnegative(),
  }),
  /** Resource units per application (across tenants: the sandbox has one). */
  applicationResourceUnits: windowSchema,
  /** Write requests per application+tenant pair. */
  writesPerAppTenant: windowSchema,
  /** Write requests per application. */
  writesPerApp: windowSchema,
  /** Write requests per tenant, all applications together. */
  writesPerTenant: windowSchema,
  /** Multiplies every window: 0.001 turns 10 s into 10 ms. */
  scale: z.number().positive(),
});
/** Throttling limits. */
export type ThrottleSettings = z.infer<typeof throttleSettingsSchema>;

/** A change to the throttling limits (any subset, nested objects too). */
export const throttlePatchSchema = z.object({
  enabled: z.boolean(),
  resourceUnits: throttleSettingsSchema.shape.resourceUnits.partial(),
  applicationResourceUnits: windowSchema.partial(),
  writesPerAppTenant: windowSchema.partial(),
  writesPerApp: windowSchema.partial(),
  writesPerTenant: windowSchema.partial(),
  scale: z.number().positive(),
}).partial().strict();
/** A change to the throttling limits. */
export type ThrottlePatch = z.input<typeof throttlePatchSchema>;

/** Microsoft's published limits (throttling-limits page, identity and access section). */
export function defaultThrottleSettings(): ThrottleSettings {
  return {
    enabled: true,
    resourceUnits: {
      small: 3500,
      medium: 5000,
      large: 8000,
      windowSeconds: 10,
      mediumFromUsers: 50,
      largeAboveUsers: 500,
    },
    applicationResourceUnits: { limit: 150_000, windowSeconds: 20 },
    writesPerAppTenant: { limit: 3000, windowSeconds: 150 },
    writesPerApp: { limit: 35_000, windowSeconds: 300 },
    writesPerTenant: { limit: 18_000, windowSeconds: 300 },
    scale: 1,
  };
}

// ---------------------------------------------------------------------------------------------
// Request cost
// ---------------------------------------------------------------------------------------------

/**
 * Resource units a request costs (the base cost table and "other factors" of the identity and
 * access section). `template` is the path without the version, `{id}`-style:
 * `users`, `groups/{groupId}/transitiveMembers`.
 */
export function resourceUnitCost(method: string, template: string, url: URL): number {
  const path = template.toLowerCase();
  let cost = 1;
  if (method.toUpperCase() === "GET") {
    if (path === "users") cost = 2;
    else if (/^groups\/[^/]+\/members(\/|$)/.test(path)) cost = 3;
    else if (/^groups\/[^/]+\/transitivemembers(\/|$)/.test(path)) cost = 5;
  }
  const param = (name: string) => url.searchParams.get(`$${name}`) ?? url.searchParams.get(name);
  if (param("select") !== null) cost -= 1;
  if (param("expand") !== null) cost += 1;
  const top = param("top");
  if (top !== null && Number(top) < 20) cost -= 1;
  return Math.max(1, cost);
}

// ---------------------------------------------------------------------------------------------
// Token buckets
// ---------------------------------------------------------------------------------------------

interface Bucket {
  tokens: number;
  at: number;
}

/** What {@link Throttle.admit} needs to know about a request. */
export interface ThrottleRequest {
  appId: string;
  tenantId: string;
  method: string;
  template: string;
  url: URL;
  write: boolean;
}

/** A request that may go on, with the headers Graph adds to it. */
export interface Admitted {
  ok: true;
  cost: number;
  headers: Record<string, string>;
}

/** A refused request: answer it with {@link tooManyRequests}. */
export interface Refused {
  ok: false;
  cost: number;
  retryAfterSeconds: number;
  /** `x-ms-throttle-scope`: `<Scope>/<Limit>/<ApplicationId>/<TenantId>`. */
  scope: string;
  /** `x-ms-throttle-information`. */
  information: "ResourceUnitLimitExceeded" | "WriteLimitExceeded";
}

/** Counters for the inspection endpoint. */
export interface ThrottleStats {
  admitted: number;
  throttled: number;
  /** Refusals by `x-ms-throttle-scope` prefix, e.g. `Tenant_Application/ReadWrite`. */
  byScope: Record<string, number>;
}

/** See the module documentation. */
export class Throttle {
  #settings: ThrottleSettings;
  #now: () => number;
  #userCount: () => number;
  #buckets = new Map<string, Bucket>();
  #stats: ThrottleStats = { admitted: 0, throttled: 0, byScope: {} };

  constructor(options: { settings?: ThrottlePatch; now?: () => number; userCount: () => number }) {
    this.#settings = defaultThrottleSettings();
    this.#now = options.now ?? Date.now;
    this.#userCount = options.userCount;
    if (options.settings) this.configure(options.settings);
  }

  /** The limits in force (a copy). */
  get settings(): ThrottleSettings {
    return structuredClone(this.#settings);
  }

  /** Changes limits at run time; a changed limit starts its buckets full. Throws a ZodError on bad input. */
  configure(patch: ThrottlePatch): ThrottleSettings {
    const p = throttlePatchSchema.parse(patch);
    const s = this.#settings;
    this.#settings = throttleSettingsSchema.parse({
      enabled: p.enabled ?? s.enabled,
      resourceUnits: { ...s.resourceUnits, ...defined(p.resourceUnits) },
      applicationResourceUnits: { ...s.applicationResourceUnits, ...defined(p.applicationResourceUnits) },
      writesPerAppTenant: { ...s.writesPerAppTenant, ...defined(p.writesPerAppTenant) },
      writesPerApp: { ...s.writesPerApp, ...defined(p.writesPerApp) },
      writesPerTenant: { ...s.writesPerTenant, ...defined(p.writesPerTenant) },
      scale: p.scale ?? s.scale,
    });
    this.#buckets.clear();
    return this.settings;
  }

  /** Counters so far (a copy). */
  get stats(): ThrottleStats {
    return structuredClone(this.#stats);
  }

  /** The tenant's size class for the resource-unit limit. */
  tenantSize(): "small" | "medium" | "large" {
    const users = this.#userCount();
    const ru = this.#settings.resourceUnits;
    if (users < ru.mediumFromUsers) return "small";
    if (users > ru.largeAboveUsers) return "large";
    return "medium";
  }

  /** Charges a request to every limit it falls under, or refuses it without charging. */
  admit(request: ThrottleRequest): Admitted | Refused {
    const s = this.#settings;
    const cost = resourceUnitCost(request.method, request.template, request.url);
    const ru = s.resourceUnits;
    const limits: Array<{
      key: string;
      limit: number;
      windowSeconds: number;
      amount: number;
      scope: string;
      information: Refused["information"];
    }> = [
      {
        key: `ru|${request.appId}|${request.tenantId}`,
        limit: ru[this.tenantSize()],
        windowSeconds: ru.windowSeconds,
        amount: cost,
        scope: `Tenant_Application/ReadWrite/${request.appId}/${request.tenantId}`,
        information: "ResourceUnitLimitExceeded",
      },
      {
        key: `ru|${request.appId}`,
        ...s.applicationResourceUnits,
        amount: cost,
        scope: `Application/ReadWrite/${request.appId}/${request.tenantId}`,
        information: "ResourceUnitLimitExceeded",
      },
    ];
    if (request.write) {
      limits.push(
        {
          key: `w|${request.appId}|${request.tenantId}`,
          ...s.writesPerAppTenant,
          amount: 1,
          scope: `Tenant_Application/Write/${request.appId}/${request.tenantId}`,
          information: "WriteLimitExceeded",
        },
        {
          key: `w|${request.appId}`,
          ...s.writesPerApp,
          amount: 1,
          scope: `Application/Write/${request.appId}/${request.tenantId}`,
          information: "WriteLimitExceeded",
        },
        {
          key: `w||${request.tenantId}`,
          ...s.writesPerTenant,
          amount: 1,
          scope: `Tenant/Write/${request.appId}/${request.tenantId}`,
          information: "WriteLimitExceeded",
        },
      );
    }
    const now = this.#now();
    const buckets = limits.map((l) => {
      const windowMs = l.windowSeconds * 1000 * s.scale;
      const rate = l.limit / windowMs;
      const bucket = this.#buckets.get(l.key) ?? { tokens: l.limit, at: now };
      const tokens = Math.min(l.limit, bucket.tokens + Math.max(0, now - bucket.at) * rate);
      return { ...l, rate, tokens };
    });
    if (s.enabled) {
      const short = buckets.find((b) => b.tokens < b.amount);
      if (short) {
        // Refused requests are not charged, but the refill up to now is kept.
        for (const b of buckets) this.#buckets.set(b.key, { tokens: b.tokens, at: now });
        const waitMs = (short.amount - short.tokens) / short.rate;
        this.#stats.throttled++;
        const scopeKey = short.scope.split("/").slice(0, 2).join("/");
        this.#stats.byScope[scopeKey] = (this.#stats.byScope[scopeKey] ?? 0) + 1;
        return {
          ok: false,
          cost,
          retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)),
          scope: short.scope,
          information: short.information,
        };
      }
    }
    for (const b of buckets) this.#buckets.set(b.key, { tokens: Math.max(0, b.tokens - b.amount), at: now });
    this.#stats.admitted++;
    const headers: Record<string, string> = { "x-ms-resource-unit": String(cost) };
    const first = buckets[0]!;
    const used = (first.limit - Math.max(0, first.tokens - first.amount)) / first.limit;
    if (used >= 0.8) headers["x-ms-throttle-limit-percentage"] = Math.min(1.8, used).toFixed(1);
    return { ok: true, cost, headers };
  }
}

function defined<T extends object>(value: T | undefined): Partial<T> {
  if (!value) return {};
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * Graph's 429 answer (https://learn.microsoft.com/en-us/graph/throttling#sample-response): the
 * body's innerError carries `code` "429" and `status` "429" besides the usual ids.
 */
export function tooManyRequests(
  refused: Refused,
  ids: { requestId: string; clientRequestId: string },
  now: number = Date.now(),
): Response {
  return new Response(
    JSON.stringify({
      error: {
        code: "TooManyRequests",
        message: "Please retry again later.",
        innerError: {
          code: "429",
          date: new Date(now).toISOString().slice(0, 19),
          message: "Please retry after",
          "request-id": ids.requestId,
          "client-request-id": ids.clientRequestId,
          status: "429",
        },
      },
    }),
    {
      status: 429,
      headers: {
        "content-type": "application/json",
        "retry-after": String(refused.retryAfterSeconds),
        "x-ms-throttle-scope": refused.scope,
        "x-ms-throttle-information": refused.information,
      },
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

const rate = z.number().min(0).max(1);

/** Fault injection settings; rates are probabilities per Graph request. */
export const faultSettingsSchema = z.object({
  /** Answer a 5xx (one of `serverErrorStatuses`) before the request is processed. */
  serverErrorRate: rate,
  /** Statuses drawn for server errors. 503 answers carry `Retry-After`. */
  serverErrorStatuses: z.array(z.union([z.literal(500), z.literal(502), z.literal(503), z.literal(504)])).min(
    1,
  ),
  /** Close the connection without an answer, before the request is processed. */
  resetRate: rate,
  /** Process the request, then close the connection without an answer (the write happened). */
  lostResponseRate: rate,
  /** Added to every Graph request, in ms. */
  latencyMs: z.number().min(0).max(60_000),
  /** Delay some requests by `slowMs` more. */
  slowRate: rate,
  slowMs: z.number().min(0).max(600_000),
  /** Seed of the random source; changing it restarts the sequence. */
  seed: z.number().int(),
}).superRefine((s, ctx) => {
  if (s.serverErrorRate + s.resetRate + s.lostResponseRate > 1) {
    ctx.addIssue({
      code: "custom",
      message: "serverErrorRate + resetRate + lostResponseRate must not exceed 1",
    });
  }
});
/** Fault injection settings. */
export type FaultSettings = z.infer<typeof faultSettingsSchema>;

/** A change to the fault settings (any subset). */
export const faultPatchSchema = z.object({
  serverErrorRate: rate,
  serverErrorStatuses: z.array(z.union([z.literal(500), z.literal(502), z.literal(503), z.literal(504)])).min(
    1,
  ),
  resetRate: rate,
  lostResponseRate: rate,
  latencyMs: z.number().min(0).max(60_000),
  slowRate: rate,
  slowMs: z.number().min(0).max(600_000),
  seed: z.number().int(),
}).partial().strict();
/** A change to the fault settings. */
export type FaultPatch = z.input<typeof faultPatchSchema>;

/** No faults. */
export function defaultFaultSettings(): FaultSettings {
  return {
    serverErrorRate: 0,
    serverErrorStatuses: [500, 503, 504],
    resetRate: 0,
    lostResponseRate: 0,
    latencyMs: 0,
    slowRate: 0,
    slowMs: 2000,
    seed: 1,
  };
}

/** What to do to one request. */
export interface FaultDecision {
  /** Wait this long (ms) before doing anything else. */
  delayMs: number;
  slow: boolean;
  action: "none" | "reset" | "serverError" | "lostResponse";
  /** For `serverError`: the status to answer. */
  status: number;
}

/** Counters for the inspection endpoint. */
export interface FaultStats {
  serverErrors: number;
  resets: number;
  lostResponses: number;
  slow: number;
}

/** Draws faults from a seeded source; see {@link FaultSettings}. */
export class FaultInjector {
  #settings: FaultSettings;
  #random: Random;
  #stats: FaultStats = { serverErrors: 0, resets: 0, lostResponses: 0, slow: 0 };

  constructor(settings: FaultPatch = {}) {
    this.#settings = faultSettingsSchema.parse({ ...defaultFaultSettings(), ...settings });
    this.#random = seededRandom(this.#settings.seed);
  }

  /** The settings in force (a copy). */
  get settings(): FaultSettings {
    return structuredClone(this.#settings);
  }

  /** Changes settings at run time; a new `seed` restarts the sequence. Throws a ZodError on bad input. */
  configure(patch: FaultPatch): FaultSettings {
    const parsed = faultPatchSchema.parse(patch);
    this.#settings = faultSettingsSchema.parse({ ...this.#settings, ...defined(parsed) });
    if (parsed.seed !== undefined) this.#random = seededRandom(parsed.seed);
    return this.settings;
  }

  /** Counters so far (a copy). */
  get stats(): FaultStats {
    return { ...this.#stats };
  }

  /** Decides the fate of one request and counts it. */
  draw(): FaultDecision {
    const s = this.#settings;
    const slow = s.slowRate > 0 && this.#random.next() < s.slowRate;
    const roll = this.#random.next();
    let action: FaultDecision["action"] = "none";
    if (roll < s.resetRate) action = "reset";
    else if (roll < s.resetRate + s.serverErrorRate) action = "serverError";
    else if (roll < s.resetRate + s.serverErrorRate + s.lostResponseRate) action = "lostResponse";
    const status = action === "serverError"
      ? s.serverErrorStatuses[this.#random.int(s.serverErrorStatuses.length)]!
      : 200;
    if (slow) this.#stats.slow++;
    if (action === "reset") this.#stats.resets++;
    if (action === "serverError") this.#stats.serverErrors++;
    if (action === "lostResponse") this.#stats.lostResponses++;
    return { delayMs: s.latencyMs + (slow ? s.slowMs : 0), slow, action, status };
  }
}

/**
 * A Graph 5xx answer in Graph's error envelope (status codes:
 * https://learn.microsoft.com/en-us/graph/errors#http-status-codes).
 */
export function serverErrorResponse(
  status: number,
  ids: { requestId: string; clientRequestId: string },
  now: number = Date.now(),
): Response {
  const [code, message] = status === 503
    ? ["serviceNotAvailable", "The service is temporarily unavailable. Try again later."]
    : status === 500
    ? ["generalException", "An unspecified error occurred while processing the request."]
    : ["UnknownError", ""];
  return new Response(
    JSON.stringify({
      error: {
        code,
        message,
        innerError: {
          date: new Date(now).toISOString().slice(0, 19),
          "request-id": ids.requestId,
          "client-request-id": ids.clientRequestId,
        },
      },
    }),
    {
      status,
      headers: { "content-type": "application/json", ...(status === 503 ? { "retry-after": "1" } : {}) },
    },
  );
}
