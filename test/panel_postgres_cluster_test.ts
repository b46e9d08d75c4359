/**
 * The throwaway PostgreSQL cluster of the panel's tests (test/support/postgres.ts): it runs a real
 * server on loopback, and without the server binaries it fails (never skips) saying what CI must
 * install.
 */
import postgres from "postgres";
import { assert, assertEquals, rejects } from "./assert.ts";
import { startPostgres } from "./support/postgres.ts";

Deno.test("the test cluster serves a fresh database on 127.0.0.1 and is gone after stop", async () => {
  const cluster = await startPostgres();
  try {
    const url = await cluster.createDatabase("probe");
    assert(url.startsWith(`postgres://postgres@127.0.0.1:${cluster.port}/`));
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      const [row] = await sql.unsafe("SELECT current_database() AS db, inet_server_addr()::text AS addr");
      assertEquals(row?.db, "probe");
      assertEquals(row?.addr, "127.0.0.1/32");
    } finally {
      await sql.end({ timeout: 5 });
    }
  } finally {
    await cluster.stop();
  }
  const after = postgres(cluster.url(), { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    await rejects(after.unsafe("SELECT 1"), Error, "the stopped cluster refuses connections");
  } finally {
    await after.end({ timeout: 1 });
  }
});

Deno.test("without PostgreSQL's server binaries the helper fails, saying what .ci/run must install", async () => {
  const error = await rejects(startPostgres({ bindir: "/nonexistent/postgresql/bin" }), Error);
  assert(error.message.includes(".ci/run must install"), error.message);
  assert(error.message.includes("apt-get install -y --no-install-recommends postgresql"), error.message);
});
