/**
 * TLS options: the restart decision as a pure function. The CA-file fetch and the real CLI over
 * HTTPS are in test/tls_test.ts (they use the Entra sandbox's certificate and server).
 */
import { assert, assertEquals } from "../test/assert.ts";
import {
  decideLaunch,
  fetchOnFreshConnection,
  type LaunchInput,
  parseTlsFlags,
  TLS_APPLIED_ENV,
  tlsFetch,
} from "./tls.ts";

const base: LaunchInput = {
  args: ["provision", "--user", "a@contoso.com"],
  applied: undefined,
  hosts: ["login.microsoftonline.com", "graph.microsoft.com"],
  execPath: "/usr/bin/deno",
  mainModule: "file:///opt/provisioning/main.ts",
  compiled: false,
  canRun: true,
};

Deno.test("parseTlsFlags reads the three flags anywhere, in both --ca-file forms, and stops at --", () => {
  assert.deepEqual(parseTlsFlags(["--", "whoami", "--ca-file", "a.pem", "--local-ssl-verify"]), {
    caFile: "a.pem",
    localStore: true,
    disableVerify: false,
  });
  assert.deepEqual(parseTlsFlags(["--ca-file=b.pem", "whoami", "--", "--disable-ssl-verify"]), {
    caFile: "b.pem",
    localStore: false,
    disableVerify: false,
  });
  assert.throws(() => parseTlsFlags(["whoami", "--ca-file"]), /Cannot use --ca-file: it needs the path/);
  assert.throws(
    () => parseTlsFlags(["--disable-ssl-verify", "--ca-file", "c.pem"]),
    /Cannot combine --disable-ssl-verify with --ca-file/,
  );
});

Deno.test("decideLaunch: no flag, or only --ca-file, runs here without a restart", () => {
  assert.deepEqual(decideLaunch(base), {
    kind: "continue",
    flags: { localStore: false, disableVerify: false },
  });
  const withCa = decideLaunch({ ...base, args: [...base.args, "--ca-file", "corp.pem"] });
  assertEquals(withCa.kind, "continue");
});

Deno.test("decideLaunch: --disable-ssl-verify restarts under the same permission set, scoped to the hosts, with the same arguments", () => {
  const args = ["--", "provision", "--disable-ssl-verify", "--user", "a@contoso.com"];
  const decision = decideLaunch({
    ...base,
    args,
    hosts: ["graph.microsoft.com", "127.0.0.1", "graph.microsoft.com"],
    grants: { read: ["/work/admin"], write: ["/work/admin"] },
  });
  assert.deepEqual(decision, {
    kind: "relaunch",
    command: "/usr/bin/deno",
    args: [
      "run",
      "-q",
      "--config=/opt/provisioning/deno.json",
      "-P=cli",
      "--allow-read=/work/admin",
      "--allow-write=/work/admin",
      "--unsafely-ignore-certificate-errors=graph.microsoft.com,127.0.0.1",
      "/opt/provisioning/main.ts",
      ...args,
    ],
    env: { [TLS_APPLIED_ENV]: "no-verify" },
  });
});

Deno.test("decideLaunch: the restarted process continues and carries the warning naming the hosts and the risk", () => {
  const decision = decideLaunch({ ...base, args: ["whoami", "--disable-ssl-verify"], applied: "no-verify" });
  assert.ok(decision.kind === "continue");
  assert.match(decision.warning!, /login\.microsoftonline\.com, graph\.microsoft\.com are NOT verified/);
  assert.match(decision.warning!, /tokens and Temporary Access Passes/);
  assert.ok(!decision.warning!.includes("\n"), "one line");
});

Deno.test("decideLaunch: --local-ssl-verify restarts with DENO_TLS_CA_STORE=system, also when compiled", () => {
  const fromCheckout = decideLaunch({ ...base, args: ["--local-ssl-verify", "doctor"] });
  assert.ok(fromCheckout.kind === "relaunch");
  assert.deepEqual(fromCheckout.env, { DENO_TLS_CA_STORE: "system", [TLS_APPLIED_ENV]: "system-store" });
  assert.ok(!fromCheckout.args.some((a) => a.startsWith("--unsafely")));

  const compiled = decideLaunch({
    ...base,
    args: ["--local-ssl-verify", "doctor"],
    compiled: true,
    execPath: "/usr/local/bin/provisioning",
    mainModule: "file:///tmp/deno-compile-provisioning/main.ts",
  });
  assert.deepEqual(compiled, {
    kind: "relaunch",
    command: "/usr/local/bin/provisioning",
    args: ["--local-ssl-verify", "doctor"],
    env: { DENO_TLS_CA_STORE: "system", [TLS_APPLIED_ENV]: "system-store" },
  });
  const applied = decideLaunch({ ...base, args: ["--local-ssl-verify"], applied: "system-store" });
  assertEquals(applied.kind, "continue");
});

Deno.test("decideLaunch refuses --disable-ssl-verify in a compiled build, and a restart it may not run", () => {
  const compiled = decideLaunch({ ...base, args: ["--disable-ssl-verify"], compiled: true });
  assert.ok(compiled.kind === "refuse");
  assert.match(compiled.error.message, /Cannot use --disable-ssl-verify in the compiled program/);
  assertEquals(compiled.error.exitCode, 2);

  const noRun = decideLaunch({ ...base, args: ["--disable-ssl-verify"], canRun: false });
  assert.ok(noRun.kind === "refuse");
  assertEquals(noRun.error.code, "tls-restart-not-permitted");
  assert.match(noRun.error.hint!, /--allow-run=\/usr\/bin\/deno/);
  assert.match(noRun.error.hint!, /PROVISIONING_TLS_APPLIED=no-verify deno run -P=cli --unsafely-ignore/);

  const badFlags = decideLaunch({ ...base, args: ["--disable-ssl-verify", "--local-ssl-verify"] });
  assert.ok(badFlags.kind === "refuse");
  assertEquals(badFlags.error.exitCode, 2);
});

/**
 * A server on loopback that answers the first request of each connection (keep-alive) and closes
 * the connection on the second without answering: what a server or proxy that drops an idle
 * connection as a request arrives looks like. Counts the POSTs it received.
 */
function droppingServer(): { url: string; posts: () => number; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let posts = 0;
  const connections: Promise<void>[] = [];
  const open = new Set<Deno.Conn>();
  const serve = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      connections.push((async () => {
        const buffer = new Uint8Array(65536);
        for (let request = 1;; request++) {
          const n = await conn.read(buffer).catch(() => null);
          if (n === null) break;
          if (new TextDecoder().decode(buffer.subarray(0, n)).startsWith("POST")) posts++;
          if (request > 1) break;
          await conn.write(
            new TextEncoder().encode(
              "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
            ),
          ).catch(() => {});
        }
        open.delete(conn);
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      })());
    }
  })();
  const { port } = listener.addr as Deno.NetAddr;
  return {
    url: `http://127.0.0.1:${port}/`,
    posts: () => posts,
    async close() {
      listener.close();
      // A client's idle keep-alive connection would hold its reader for a minute and more.
      for (const conn of open) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
      await serve.catch(() => {});
      await Promise.all(connections);
    },
  };
}

Deno.test("fetchOnFreshConnection: a POST is never sent twice by the runtime (a pooled connection closed unanswered is silently retried; a fresh one is not)", async () => {
  // The runtime's own behaviour first (measured: two POSTs for one fetch call), so this test
  // shows what the fresh connection is for.
  {
    const server = droppingServer();
    using client = Deno.createHttpClient({});
    await (await fetch(server.url, { method: "POST", body: "1", client })).text();
    await (await fetch(server.url, { method: "POST", body: "2", client })).text().catch(() => {});
    assertEquals(server.posts(), 3, "the pooled connection's POST was sent again");
    await server.close();
  }
  for (
    const [name, make] of [
      [
        "of any fetch",
        () => Promise.resolve(Object.assign(fetchOnFreshConnection(fetch), { [Symbol.dispose]() {} })),
      ],
      ["of a TlsFetch", async () => {
        const tls = await tlsFetch();
        return Object.assign(fetchOnFreshConnection(tls), {
          [Symbol.dispose]: () => tls[Symbol.dispose](),
        });
      }],
    ] as const
  ) {
    const server = droppingServer();
    using once = await make();
    for (let i = 0; i < 3; i++) {
      const answer = await once(server.url, { method: "POST", body: String(i) });
      assertEquals(await answer.text(), "ok", name);
    }
    assertEquals(server.posts(), 3, `${name}: one POST per call`);
    await server.close();
  }
});
