/**
 * The sign-in cache: access and refresh tokens kept between runs, encrypted at rest.
 *
 * Layout, in the working folder (`.provisioning/` by default, created 0700 with a `.gitignore`
 * of `*` so it is never committed):
 *
 * - `tokens.jwe`: one compact JWE (RFC 7516) whose plaintext is the JSON list of cached tokens.
 *   Its protected header, which AES-GCM authenticates, says how the content key is found:
 *   - `"alg":"dir","enc":"A256GCM"`: the 256-bit key is in `tokens.key` beside it (a JWK, 0600);
 *   - `"alg":"PBES2-HS512+A256KW","enc":"A256GCM"`: the content key is wrapped with a key derived
 *     (PBKDF2-HMAC-SHA-512, `p2c` iterations, random `p2s` salt) from the passphrase in
 *     `PROVISIONING_TOKEN_CACHE_PASSPHRASE`; no key file exists in this mode.
 * - Every write is a new 0600 temporary file in the same folder, fsync, rename over the old one:
 *   a crash leaves either the old cache or the new one.
 *
 * Threat model, honestly:
 * - Protected: the cache file on its own. Copied into a ticket or a backup, synced, committed,
 *   caught by a secret scanner or printed with `cat`, it shows no token text and cannot be altered
 *   without the change being detected (the GCM tag covers header and content).
 * - Not protected with the key file: anyone who can read the working folder as this user (or as
 *   root) reads the key too. The key file only separates "the cache leaked" from "the folder
 *   leaked". File modes (0600/0700) keep other local users out on POSIX; Windows ignores them and
 *   the folder's ACL applies.
 * - With a passphrase: the folder at rest is protected from whoever lacks the passphrase. Not from
 *   malware running as this user while the passphrase is in the environment, nor from reading the
 *   process's memory.
 * - Tokens themselves: Graph access tokens live about an hour; refresh tokens until 90 days unused.
 *   `logout` deletes the local copies (and the key); it cannot revoke a refresh token at Microsoft,
 *   which an admin does by revoking the account's sessions
 *   (https://learn.microsoft.com/graph/api/user-revokesigninsessions).
 *
 * Entries are keyed by cloud + login host + tenant + client id + account (`app` for app-only).
 *
 * @module
 */
import { dirname, join } from "node:path";
import { compactDecrypt, CompactEncrypt, decodeProtectedHeader } from "jose";
import { z } from "zod";
import { fromBase64Any, randomBytes, toBase64Url, utf8 } from "../../../core/bytes.ts";
import { writeFileAtomically } from "../../../core/atomic_file.ts";
import { ProvisioningError } from "../../../core/errors.ts";

/** The folder the cache lives in when nothing else is said, relative to the working folder. */
export const defaultTokenCacheDir = ".provisioning";
/** The environment variable whose value, when set, encrypts the cache instead of the key file. */
export const tokenCachePassphraseEnv = "PROVISIONING_TOKEN_CACHE_PASSPHRASE";
/** PBKDF2-HMAC-SHA-512 iterations for a passphrase: OWASP's 2023 figure for that hash. */
export const defaultPbes2Iterations = 210_000;
/** The most iterations a cache file may ask for, so a crafted file cannot stall the program. */
export const maxPbes2Iterations = 10_000_000;

const cacheFileName = "tokens.jwe";
const keyFileName = "tokens.key";
const contentType = "provisioning-token-cache+json";
const cacheVersion = 1;
const maxFileSize = 4 * 1024 * 1024;

/** One cached sign-in. */
export const cachedTokenSchema = z.object({
  /** `delegated` (an admin signed in) or `app` (client credentials). */
  kind: z.enum(["delegated", "app"]),
  /** Cloud name (`public`, `usgov`, …, `sandbox`). */
  cloud: z.string().min(1),
  /** Login host base URL the tokens came from. */
  authority: z.string().min(1),
  /** Tenant as configured (id or domain). */
  tenant: z.string().min(1),
  /** Tenant id (GUID). */
  tenantId: z.string().min(1),
  clientId: z.string().min(1),
  /** The signed-in account (UPN, lowercase), or `app`. */
  account: z.string().min(1),
  accessToken: z.string().min(1),
  /** Epoch milliseconds. */
  expiresAt: z.number(),
  refreshToken: z.string().min(1).optional(),
  /** The scopes that were asked for. */
  requestedScopes: z.array(z.string()),
  /** The scopes the token endpoint said it granted. */
  grantedScopes: z.array(z.string()),
  /** Epoch milliseconds of the grant. */
  obtainedAt: z.number(),
  /**
   * App tokens: the kind of client credential that obtained them and its fingerprint (a
   * certificate's SHA-256 thumbprint, a hash of a secret; never the secret).
   */
  credential: z.object({ kind: z.enum(["secret", "certificate"]), fingerprint: z.string().min(1) })
    .optional(),
});

/** One cached sign-in (tokens included: never print it). */
export type CachedToken = z.infer<typeof cachedTokenSchema>;

const cacheContentSchema = z.object({
  version: z.literal(cacheVersion),
  entries: z.array(cachedTokenSchema),
});

const keyFileSchema = z.object({
  kty: z.literal("oct"),
  k: z.string().min(43),
  alg: z.literal("dir").optional(),
});

/** Which cached sign-in a flow can use. */
export interface CacheQuery {
  readonly kind: CachedToken["kind"];
  readonly authority: string;
  /** Matches the entry's configured tenant or its tenant id, case-insensitively. */
  readonly tenant: string;
  readonly clientId: string;
  /** A specific account; without it, the newest delegated sign-in matches. */
  readonly account?: string;
  /** Scopes the entry must have been asked for (all of them). */
  readonly scopes?: readonly string[];
}

/** Options of {@link TokenCache.open}. */
export interface TokenCacheOptions {
  /**
   * The folder holding `tokens.jwe` (and `tokens.key`).
   * @default ".provisioning"
   */
  readonly dir?: string;
  /** Encrypts with this passphrase (PBES2) instead of a key file; usually `PROVISIONING_TOKEN_CACHE_PASSPHRASE`. */
  readonly passphrase?: string;
  /**
   * PBKDF2 iterations for new writes with a passphrase.
   * @default 210000
   */
  readonly pbes2Iterations?: number;
  /**
   * Treat a cache that cannot be decrypted (`token-cache-unreadable`: lost key, wrong
   * passphrase, altered file) as empty, so that a new sign-in replaces it. For `login`.
   * @default false
   */
  readonly discardUnreadable?: boolean;
  /**
   * Told, in one sentence for the admin, when opening with a passphrase re-encrypted a cache
   * that was protected by its key file (and the key file was removed).
   */
  readonly notify?: (text: string) => void;
}

/**
 * Errors of the cache. Codes: `token-cache-locked` (encrypted with a passphrase that was not
 * given), `token-cache-unreadable` (wrong passphrase, missing or wrong key, altered or corrupt
 * file), `token-cache-write-failed`.
 */
export class TokenCacheError extends ProvisioningError {
  /** The cache file concerned. */
  readonly path: string;

  constructor(code: string, path: string, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(code, message, options);
    this.path = path;
  }
}

/** The stable key of an entry: cloud, login host, tenant id, client id and account. */
export function cacheKey(
  entry: Pick<CachedToken, "cloud" | "authority" | "tenantId" | "clientId" | "account">,
): string {
  return [entry.cloud, entry.authority.replace(/\/+$/, ""), entry.tenantId, entry.clientId, entry.account]
    .map((part) => part.toLowerCase())
    .join("|");
}

/**
 * The encrypted token cache of one working folder. Writes from one process are serialised;
 * two processes writing at once each write a whole, valid file, and the last one wins.
 */
export class TokenCache {
  /** Path of `tokens.jwe`. */
  readonly path: string;
  /** Path of `tokens.key` (absent in passphrase mode). */
  readonly keyPath: string;
  readonly #passphrase: string | undefined;
  readonly #iterations: number;
  #discardUnreadable = false;
  /** How the file on disk was protected when last read: `dir` (key file) or PBES2 (passphrase). */
  #readAlg: string | undefined;
  #entries: CachedToken[];
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(
    dir: string,
    entries: CachedToken[],
    passphrase: string | undefined,
    iterations: number,
  ) {
    this.path = join(dir, cacheFileName);
    this.keyPath = join(dir, keyFileName);
    this.#entries = entries;
    this.#passphrase = passphrase;
    this.#iterations = iterations;
  }

  /**
   * Opens (reads and decrypts) the cache of `options.dir`; an absent cache is an empty one, and
   * nothing is written until the first {@link put}.
   *
   * @throws {TokenCacheError} `token-cache-locked` or `token-cache-unreadable`.
   */
  static async open(options: TokenCacheOptions = {}): Promise<TokenCache> {
    const dir = options.dir ?? defaultTokenCacheDir;
    const passphrase = options.passphrase === "" ? undefined : options.passphrase;
    const iterations = options.pbes2Iterations ?? defaultPbes2Iterations;
    if (!Number.isInteger(iterations) || iterations < 1000 || iterations > maxPbes2Iterations) {
      throw new RangeError(`Cannot use ${iterations} PBES2 iterations: use 1000 to ${maxPbes2Iterations}`);
    }
    const cache = new TokenCache(dir, [], passphrase, iterations);
    cache.#discardUnreadable = options.discardUnreadable ?? false;
    cache.#entries = await cache.#read();
    if (passphrase !== undefined) await cache.#reprotect(options.notify);
    return cache;
  }

  /**
   * With a passphrase set, a cache still protected by its key file is re-encrypted with the
   * passphrase at once and the key file removed (issue 13, item 12): otherwise the tokens stay
   * readable by whoever can read the folder until the next sign-in writes the cache.
   */
  async #reprotect(notify: ((text: string) => void) | undefined): Promise<void> {
    const keyFileLeft = await exists(this.keyPath);
    if (this.#readAlg === "dir") {
      await this.#mutate((entries) => entries);
      notify?.(
        `The token cache "${this.path}" was encrypted with its key file; it is now encrypted with ${tokenCachePassphraseEnv} and the key file "${this.keyPath}" is removed`,
      );
    } else if (keyFileLeft) {
      // A key file beside a passphrase cache (or beside no cache) protects nothing: remove it.
      await Deno.remove(this.keyPath);
      notify?.(`Removed "${this.keyPath}": the token cache is encrypted with ${tokenCachePassphraseEnv}`);
    }
  }

  /** Every cached sign-in (tokens included: never print them). */
  entries(): readonly CachedToken[] {
    return this.#entries;
  }

  /** The cached sign-in `query` describes, newest first when several match. */
  find(query: CacheQuery): CachedToken | undefined {
    const tenant = query.tenant.toLowerCase();
    const authority = query.authority.replace(/\/+$/, "").toLowerCase();
    const wanted = (query.scopes ?? []).map((scope) => scope.toLowerCase());
    const matches = this.#entries.filter((entry) =>
      entry.kind === query.kind &&
      entry.authority.replace(/\/+$/, "").toLowerCase() === authority &&
      (entry.tenant.toLowerCase() === tenant || entry.tenantId.toLowerCase() === tenant) &&
      entry.clientId.toLowerCase() === query.clientId.toLowerCase() &&
      (query.account === undefined || entry.account === query.account.toLowerCase()) &&
      wanted.every((scope) => entry.requestedScopes.some((asked) => asked.toLowerCase() === scope))
    );
    return matches.sort((a, b) => b.obtainedAt - a.obtainedAt)[0];
  }

  /** Stores `entry`, replacing the one with the same {@link cacheKey}, and writes the file. */
  async put(entry: CachedToken): Promise<void> {
    const parsed = cachedTokenSchema.parse(entry);
    await this.#mutate((entries) => [...entries.filter((e) => cacheKey(e) !== cacheKey(parsed)), parsed]);
  }

  /** Removes the entries `predicate` selects and writes the file; returns how many went. */
  async remove(predicate: (entry: CachedToken) => boolean): Promise<number> {
    let removed = 0;
    await this.#mutate((entries) => {
      const kept = entries.filter((entry) => !predicate(entry));
      removed = entries.length - kept.length;
      return kept;
    });
    return removed;
  }

  /** Re-reads the file, applies `change`, writes; one change at a time. */
  #mutate(change: (entries: CachedToken[]) => CachedToken[]): Promise<void> {
    const run = this.#queue.then(async () => {
      const entries = change(await this.#read());
      await this.#write(entries);
      this.#entries = entries;
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #read(): Promise<CachedToken[]> {
    try {
      return await this.#readFile();
    } catch (error) {
      if (
        this.#discardUnreadable && error instanceof TokenCacheError && error.code === "token-cache-unreadable"
      ) {
        return [];
      }
      throw error;
    }
  }

  async #readFile(): Promise<CachedToken[]> {
    let text: string;
    try {
      const info = await Deno.stat(this.path);
      if (info.size > maxFileSize) throw unreadable(this.path, "it is larger than any token cache");
      text = (await Deno.readTextFile(this.path)).trim();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
    let alg: string | undefined;
    let iterations: unknown;
    this.#readAlg = undefined;
    try {
      const header = decodeProtectedHeader(text);
      alg = header.alg;
      iterations = header.p2c;
      if (header.cty !== contentType || header.enc !== "A256GCM") throw new TypeError("not a token cache");
    } catch (cause) {
      throw unreadable(this.path, "it is not a token cache", cause);
    }
    let key: Uint8Array;
    if (alg === "dir") {
      key = await this.#readKey();
    } else if (alg === "PBES2-HS512+A256KW") {
      if (this.#passphrase === undefined) {
        throw new TokenCacheError(
          "token-cache-locked",
          this.path,
          `Cannot read the token cache "${this.path}": it is encrypted with a passphrase`,
          {
            hint:
              `Set ${tokenCachePassphraseEnv}, or run "provisioning logout" to discard it and sign in again`,
          },
        );
      }
      if (typeof iterations !== "number" || iterations > maxPbes2Iterations) {
        throw unreadable(this.path, "its key derivation asks for too many iterations");
      }
      key = utf8(this.#passphrase);
    } else {
      throw unreadable(this.path, `its key algorithm "${alg}" is not one this tool writes`);
    }
    let plaintext: Uint8Array;
    try {
      ({ plaintext } = await compactDecrypt(text, key, {
        keyManagementAlgorithms: [alg],
        contentEncryptionAlgorithms: ["A256GCM"],
        maxPBES2Count: maxPbes2Iterations,
      }));
    } catch (cause) {
      const reason = alg === "dir"
        ? "the key file does not decrypt it (the key was replaced, or the file altered)"
        : "the passphrase is wrong or the file was altered";
      throw unreadable(this.path, reason, cause);
    }
    let content: z.infer<typeof cacheContentSchema>;
    try {
      content = cacheContentSchema.parse(JSON.parse(new TextDecoder().decode(plaintext)));
    } catch (cause) {
      throw unreadable(this.path, "its content is not a list of tokens", cause);
    }
    this.#readAlg = alg;
    return content.entries;
  }

  async #readKey(): Promise<Uint8Array> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.keyPath);
    } catch (cause) {
      if (cause instanceof Deno.errors.NotFound) {
        throw unreadable(this.path, `its key file "${this.keyPath}" is missing`, cause);
      }
      throw cause;
    }
    try {
      const jwk = keyFileSchema.parse(JSON.parse(text));
      const key = fromBase64Any(jwk.k);
      if (key.length !== 32) throw new RangeError("the key is not 256 bits");
      return key;
    } catch (cause) {
      throw unreadable(this.path, `its key file "${this.keyPath}" is not a 256-bit key`, cause);
    }
  }

  async #write(entries: CachedToken[]): Promise<void> {
    const dir = dirname(this.path);
    await ensureCacheDir(dir);
    const plaintext = utf8(JSON.stringify({ version: cacheVersion, entries }));
    let jwe: string;
    if (this.#passphrase !== undefined) {
      jwe = await new CompactEncrypt(plaintext)
        .setProtectedHeader({ alg: "PBES2-HS512+A256KW", enc: "A256GCM", cty: contentType })
        .setKeyManagementParameters({ p2c: this.#iterations, p2s: randomBytes(16) })
        .encrypt(utf8(this.#passphrase));
    } else {
      const key = await this.#readKey().catch(async (error) => {
        if (!(error instanceof TokenCacheError)) throw error;
        if (await exists(this.keyPath) && !this.#discardUnreadable) throw error;
        const fresh = randomBytes(32);
        await writeAtomically(
          this.keyPath,
          JSON.stringify({ kty: "oct", k: toBase64Url(fresh), alg: "dir" }) + "\n",
        );
        return fresh;
      });
      jwe = await new CompactEncrypt(plaintext)
        .setProtectedHeader({ alg: "dir", enc: "A256GCM", cty: contentType })
        .encrypt(key);
    }
    await writeAtomically(this.path, jwe + "\n");
    this.#readAlg = this.#passphrase === undefined ? "dir" : "PBES2-HS512+A256KW";
    // A passphrase replaces the key file: once the cache is re-encrypted, the key has no use.
    if (this.#passphrase !== undefined) await Deno.remove(this.keyPath).catch(() => undefined);
  }
}

/** What {@link logout} removed. */
export interface LogoutResult {
  /** Files deleted (the cache, the key, leftovers of killed writers). */
  readonly removed: readonly string[];
}

/**
 * Deletes the token cache and its key from `dir` (and temporary files a killed writer left).
 * Deleting what is not there is not an error.
 */
export async function logout(dir: string = defaultTokenCacheDir): Promise<LogoutResult> {
  const removed: string[] = [];
  const targets = [join(dir, cacheFileName), join(dir, keyFileName)];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile && /^\.tokens\.(jwe|key)\.[0-9a-f]{12}\.tmp$/.test(entry.name)) {
        targets.push(join(dir, entry.name));
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  for (const path of targets) {
    try {
      await Deno.remove(path);
      removed.push(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return { removed };
}

function unreadable(path: string, reason: string, cause?: unknown): TokenCacheError {
  return new TokenCacheError(
    "token-cache-unreadable",
    path,
    `Cannot read the token cache "${path}": ${reason}`,
    {
      cause,
      hint:
        `Check ${tokenCachePassphraseEnv} if you set one, or run "provisioning logout" to discard the cache and sign in again`,
    },
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Creates the cache folder 0700 with a `.gitignore` that keeps it out of version control. */
async function ensureCacheDir(dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const ignore = join(dir, ".gitignore");
  if (!await exists(ignore)) {
    await Deno.writeTextFile(
      ignore,
      "# Written by provisioning: sign-in tokens never belong in version control.\n*\n",
      {
        createNew: true,
      },
    ).catch((error) => {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    });
  }
}

/** Writes the cache file atomically (core/atomic_file.ts); a failure leaves the old cache. */
async function writeAtomically(path: string, text: string): Promise<void> {
  try {
    await writeFileAtomically(path, text);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new TokenCacheError(
      "token-cache-write-failed",
      path,
      `Cannot write the token cache "${path}": ${reason}`,
      {
        cause: error,
        hint: "Check the free space and the permissions of the folder; the previous cache is unchanged",
      },
    );
  }
}
