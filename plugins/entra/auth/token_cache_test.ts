/**
 * The token cache on a real file system: encrypted (no token text on disk), 0600 files in a 0700
 * folder kept out of git, surviving a restart, passphrase mode, tampering and lost keys detected,
 * and logout removing everything.
 */
import { join } from "node:path";
import { decodeProtectedHeader } from "jose";
import { assert, assertEquals, deepStrictEqual, rejects } from "../../../test/assert.ts";
import { tempDir } from "./_testing.ts";
import { type CachedToken, cacheKey, logout, TokenCache, TokenCacheError } from "./token_cache.ts";

const posix = Deno.build.os !== "windows";

function entry(overrides: Partial<CachedToken> = {}): CachedToken {
  return {
    kind: "delegated",
    cloud: "public",
    authority: "https://login.microsoftonline.com",
    tenant: "contoso.com",
    tenantId: "72f988bf-86f1-41af-91ab-2d7cd011db47",
    clientId: "00001111-aaaa-2222-bbbb-3333cccc4444",
    account: "admin@contoso.com",
    accessToken: "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-TEXT.signature",
    refreshToken: "0.AAAA-REFRESH-TOKEN-TEXT",
    expiresAt: 1_900_000_000_000,
    requestedScopes: ["https://graph.microsoft.com/User.Read.All", "offline_access"],
    grantedScopes: ["https://graph.microsoft.com/User.Read.All"],
    obtainedAt: 1_800_000_000_000,
    ...overrides,
  };
}

Deno.test("the token cache file holds no token text, and file, key and folder are private", async () => {
  await using dir = await tempDir();
  const folder = join(dir.path, ".provisioning");
  const cache = await TokenCache.open({ dir: folder });
  await cache.put(entry());
  const text = await Deno.readTextFile(cache.path);
  for (const secret of ["ACCESS-TOKEN-TEXT", "REFRESH-TOKEN-TEXT", "admin@contoso.com", "contoso"]) {
    assert(!text.includes(secret), `the file shows "${secret}"`);
  }
  assertEquals(text.trim().split(".").length, 5, "a compact JWE");
  if (posix) {
    assertEquals((await Deno.stat(cache.path)).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(cache.keyPath)).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(folder)).mode! & 0o777, 0o700);
  }
  assertEquals((await Deno.readTextFile(join(folder, ".gitignore"))).trim().split("\n").at(-1), "*");
  const leftovers = [];
  for await (const item of Deno.readDir(folder)) if (item.name.endsWith(".tmp")) leftovers.push(item.name);
  deepStrictEqual(leftovers, []);
});

Deno.test("the token cache survives a restart and finds entries by tenant id or configured name", async () => {
  await using dir = await tempDir();
  const first = await TokenCache.open({ dir: dir.path });
  await first.put(entry());
  await first.put(entry({ kind: "app", account: "app", refreshToken: undefined, accessToken: "app-token" }));
  await first.put(entry({ accessToken: "newer-token", obtainedAt: 1_800_000_100_000 }));

  const second = await TokenCache.open({ dir: dir.path });
  assertEquals(second.entries().length, 2, "the newer delegated entry replaced the older one");
  const query = {
    kind: "delegated" as const,
    authority: "https://login.microsoftonline.com/",
    clientId: "00001111-AAAA-2222-bbbb-3333cccc4444",
  };
  assertEquals(second.find({ ...query, tenant: "CONTOSO.com" })?.accessToken, "newer-token");
  assertEquals(
    second.find({ ...query, tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47" })?.accessToken,
    "newer-token",
  );
  assertEquals(second.find({ ...query, tenant: "fabrikam.com" }), undefined);
  assertEquals(
    second.find({ ...query, tenant: "contoso.com", scopes: ["https://graph.microsoft.com/Policy.Read.All"] }),
    undefined,
  );
  assertEquals(
    second.find({ ...query, kind: "app", tenant: "contoso.com", account: "app" })?.accessToken,
    "app-token",
  );
  assertEquals(
    cacheKey(entry()),
    "public|https://login.microsoftonline.com|72f988bf-86f1-41af-91ab-2d7cd011db47|00001111-aaaa-2222-bbbb-3333cccc4444|admin@contoso.com",
  );
});

Deno.test("a passphrase-encrypted cache has no key file and opens only with the passphrase", async () => {
  await using dir = await tempDir();
  const options = { dir: dir.path, passphrase: "correct horse battery staple", pbes2Iterations: 1000 };
  const cache = await TokenCache.open(options);
  await cache.put(entry());
  assert(!(await exists(cache.keyPath)), "no key file in passphrase mode");
  const header = decodeProtectedHeader((await Deno.readTextFile(cache.path)).trim());
  assertEquals(header.alg, "PBES2-HS512+A256KW");

  assertEquals((await TokenCache.open(options)).entries().length, 1);
  const locked = await rejects(TokenCache.open({ dir: dir.path }), TokenCacheError);
  assertEquals(locked.code, "token-cache-locked");
  assert(locked.hint?.includes("PROVISIONING_TOKEN_CACHE_PASSPHRASE"));
  const wrong = await rejects(TokenCache.open({ ...options, passphrase: "wrong" }), TokenCacheError);
  assertEquals(wrong.code, "token-cache-unreadable");
  assert(wrong.message.includes("passphrase is wrong"), wrong.message);
});

Deno.test("setting a passphrase re-encrypts a key-file cache and removes the key file", async () => {
  await using dir = await tempDir();
  const plain = await TokenCache.open({ dir: dir.path });
  await plain.put(entry());
  assert(await exists(plain.keyPath));
  const protectedCache = await TokenCache.open({
    dir: dir.path,
    passphrase: "s3cret passphrase",
    pbes2Iterations: 1000,
  });
  assertEquals(protectedCache.entries().length, 1, "read with the key file");
  await protectedCache.put(entry({ accessToken: "rotated" }));
  assert(!(await exists(plain.keyPath)), "the key file is gone");
  const reopened = await TokenCache.open({ dir: dir.path, passphrase: "s3cret passphrase" });
  assertEquals(reopened.entries()[0]?.accessToken, "rotated");
});

Deno.test("a tampered cache file or a lost key is reported, and discarded when asked", async () => {
  await using dir = await tempDir();
  const cache = await TokenCache.open({ dir: dir.path });
  await cache.put(entry());
  const parts = (await Deno.readTextFile(cache.path)).trim().split(".");
  const ciphertext = parts[3]!;
  parts[3] = (ciphertext[0] === "A" ? "B" : "A") + ciphertext.slice(1);
  await Deno.writeTextFile(cache.path, parts.join("."));
  const tampered = await rejects(TokenCache.open({ dir: dir.path }), TokenCacheError);
  assertEquals(tampered.code, "token-cache-unreadable");
  assert(tampered.hint?.includes("provisioning logout"), tampered.hint);

  await Deno.remove(cache.keyPath);
  const lost = await rejects(TokenCache.open({ dir: dir.path }), TokenCacheError);
  assert(lost.message.includes("key file") && lost.message.includes("missing"), lost.message);

  const fresh = await TokenCache.open({ dir: dir.path, discardUnreadable: true });
  assertEquals(fresh.entries().length, 0);
  await fresh.put(entry({ accessToken: "after discard" }));
  assertEquals((await TokenCache.open({ dir: dir.path })).entries()[0]?.accessToken, "after discard");
});

Deno.test("concurrent writes from one process are applied one after another", async () => {
  await using dir = await tempDir();
  const cache = await TokenCache.open({ dir: dir.path });
  await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => cache.put(entry({ account: `admin${i}@contoso.com`, accessToken: `t${i}` })),
    ),
  );
  assertEquals((await TokenCache.open({ dir: dir.path })).entries().length, 12);
  assertEquals(await cache.remove((e) => e.account.startsWith("admin1")), 3);
  assertEquals((await TokenCache.open({ dir: dir.path })).entries().length, 9);
});

Deno.test("logout removes the cache, its key and leftovers, and is quiet when there is nothing", async () => {
  await using dir = await tempDir();
  const cache = await TokenCache.open({ dir: dir.path });
  await cache.put(entry());
  const leftover = join(dir.path, ".tokens.jwe.0123456789ab.tmp");
  await Deno.writeTextFile(leftover, "half-written");
  const result = await logout(dir.path);
  deepStrictEqual([...result.removed].sort(), [cache.path, cache.keyPath, leftover].sort());
  for (const path of [cache.path, cache.keyPath, leftover]) assert(!(await exists(path)), path);
  deepStrictEqual((await logout(dir.path)).removed, []);
  deepStrictEqual((await logout(join(dir.path, "never-created"))).removed, []);
  assertEquals((await TokenCache.open({ dir: dir.path })).entries().length, 0);
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test("setting a passphrase re-encrypts a key-file cache at once, removes the key file and says so", async () => {
  await using dir = await tempDir();
  const plain = await TokenCache.open({ dir: dir.path });
  await plain.put(entry());
  await Deno.stat(plain.keyPath);

  const notes: string[] = [];
  const protectedCache = await TokenCache.open({
    dir: dir.path,
    passphrase: "correct horse battery staple",
    pbes2Iterations: 1000,
    notify: (text) => notes.push(text),
  });
  assertEquals(protectedCache.entries()[0]?.accessToken, entry().accessToken);
  await rejects(Deno.stat(protectedCache.keyPath), Deno.errors.NotFound);
  const header = decodeProtectedHeader((await Deno.readTextFile(protectedCache.path)).trim());
  assertEquals(header.alg, "PBES2-HS512+A256KW");
  assertEquals(notes.length, 1);
  assert(
    notes[0]!.includes("PROVISIONING_TOKEN_CACHE_PASSPHRASE") && notes[0]!.includes(protectedCache.keyPath),
    notes[0],
  );

  // Without the passphrase the cache is now locked; with it, the tokens are all there.
  const locked = await rejects(TokenCache.open({ dir: dir.path }), TokenCacheError);
  assertEquals(locked.code, "token-cache-locked");
  const again = await TokenCache.open({ dir: dir.path, passphrase: "correct horse battery staple" });
  assertEquals(again.entries().length, 1);
  if (posix) assertEquals((await Deno.stat(again.path)).mode! & 0o777, 0o600);
});
