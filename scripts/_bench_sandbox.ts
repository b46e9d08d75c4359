/**
 * The Entra sandbox as a process of its own, for `scripts/cli_bench.ts`: the CLI under test then
 * shares no event loop, heap or CPU accounting with the server it talks to.
 *
 * `deno run -P=bench scripts/_bench_sandbox.ts <users> <latency ms>`
 *
 * Starts a sandbox seeded with `users` users, with Entra's real rp id and origin (the sandbox's
 * default, as `provisioning sandbox` uses), throttling off (the write limit is `provision_bench.ts`'s subject;
 * here it would only measure the limit) and `latencyMs` of the sandbox's fault injector as the
 * added latency of every Graph request (the sandbox adds none to OAuth requests). Prints one JSON
 * line on stdout ({@link BenchSandboxInfo}) and serves counters on a second loopback port until
 * stdin closes.
 *
 * Requests are counted inside the sandbox, without a proxy hop: every OAuth and Graph request
 * passes through the sandbox's `oauth.handle` (its Graph requests fall through it to Graph), so
 * the launcher wraps that one method to stamp and count them. Graph calls by route come from the
 * sandbox's own inspection.
 *
 * @module
 */
import { startSandbox } from "../plugins/entra/sandbox/server.ts";

/** The line the launcher prints once the sandbox listens. */
export interface BenchSandboxInfo {
  url: string;
  tenantId: string;
  clientId: string;
  clientSecret: string;
  /**
   * `GET ${control}/counts` answers {@link BenchSandboxCounts}; `POST ${control}/arm` forgets the
   * first request's time, so that the next request's is recorded (the start-up of the next run).
   */
  control: string;
  /** User principal names and object ids of the seeded regular users, in order. */
  users: { upn: string; id: string }[];
}

/** What `GET /counts` answers. */
export interface BenchSandboxCounts {
  /** OAuth and Graph requests seen (the sandbox's `/_sandbox` and browser-page paths excluded). */
  requests: number;
  /** Requests by method and path with ids replaced, e.g. `GET /v1.0/users/{id}`. */
  byPath: Record<string, number>;
  /** Wall clock (ms since the epoch, sub-millisecond) of the first request since start or `/arm`, or null. */
  firstRequestAt: number | null;
  /** Graph calls by route, as the sandbox's inspection counts them. */
  graphCalls: Record<string, number>;
  /** Users holding exactly one verified passkey, and passkeys in all. */
  usersWithOnePasskey: number;
  passkeys: number;
}

if (import.meta.main) {
  const users = Number(Deno.args[0] ?? 1000);
  const latencyMs = Number(Deno.args[1] ?? 0);
  const sandbox = await startSandbox({
    users,
    throttle: { enabled: false },
    faults: { latencyMs },
  });

  let requests = 0;
  let firstRequestAt: number | null = null;
  const byPath = new Map<string, number>();
  const handle = sandbox.oauth.handle.bind(sandbox.oauth);
  sandbox.oauth.handle = (request, url) => {
    firstRequestAt ??= performance.timeOrigin + performance.now();
    requests++;
    const key = `${request.method} ${pathTemplate(url.pathname)}`;
    byPath.set(key, (byPath.get(key) ?? 0) + 1);
    return handle(request, url);
  };

  const control = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    const path = new URL(request.url).pathname;
    if (path === "/arm" && request.method === "POST") {
      firstRequestAt = null;
      return new Response(null, { status: 204 });
    }
    if (path !== "/counts") return new Response("not found", { status: 404 });
    const inspection = sandbox.inspect();
    const counts: BenchSandboxCounts = {
      requests,
      byPath: Object.fromEntries(byPath),
      firstRequestAt,
      graphCalls: inspection.calls,
      usersWithOnePasskey: inspection.users.filter((u) => u.passkeys.length === 1 && u.passkeys[0]!.verified)
        .length,
      passkeys: inspection.users.reduce((sum, u) => sum + u.passkeys.length, 0),
    };
    return Response.json(counts);
  });

  const info: BenchSandboxInfo = {
    url: sandbox.url,
    tenantId: sandbox.tenantId,
    clientId: sandbox.app.clientId,
    clientSecret: sandbox.app.clientSecret,
    control: `http://127.0.0.1:${control.addr.port}`,
    users: sandbox.tenant.users().filter((u) => /^user\d+@/.test(u.userPrincipalName))
      .map((u) => ({ upn: u.userPrincipalName, id: u.id })),
  };
  console.log(JSON.stringify(info));
  // Runs until the bench closes stdin (or dies, which closes it too).
  for await (const _ of Deno.stdin.readable) { /* drain */ }
  await control.shutdown();
  await sandbox.close();
}

/** `/v1.0/users/0f…/authentication/fido2Methods` → `/v1.0/users/{id}/authentication/fido2Methods`. */
function pathTemplate(path: string): string {
  return path.split("/").map((segment) =>
    /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(segment) ||
      segment.includes("@") || segment.includes("%40") ||
      /^[A-Za-z0-9_-]{20,}$/.test(segment)
      ? "{id}"
      : segment
  ).join("/");
}
