/**
 * A compact record of the users a source has handed out, so that a later row naming the same user
 * is caught as a duplicate of the first, in flat memory however long the file.
 *
 * A `Map<string, number>` of a million references held 100 to 200 MB (a string and a map entry per
 * user). This table keeps no strings: per user, a 64-bit fingerprint of the lowercased reference
 * (two independent 32-bit hashes over its UTF-16 code units, FNV-1a and MurmurHash3, each seeded)
 * and the first row number, in one `Uint32Array` of 12 bytes a slot, open addressing with linear
 * probing, kept at most 9/10 full by doubling. Sized from the number of users expected (a CSV's
 * line count) it is allocated once, 4/5 full at that number: a million users take 15 MB, and no
 * doubling ever holds an old and a new array at once (nor leaves the old one to fragment the
 * allocator). Without an expectation it starts small and doubles.
 *
 * The one cost: two different references with the same 64-bit fingerprint would be taken for the
 * same user. For n users the chance that any two collide is about n² / 2^65, about 3e-8 for a
 * million, 3e-6 for ten million. The seeds are drawn per table from `crypto.getRandomValues`, so a
 * crafted file cannot aim at a collision either, and a collision would never go unseen: the
 * second user becomes a `duplicate` failure (in failures.csv) naming the row it was taken for.
 *
 * @example
 * ```ts
 * import { SeenUsers } from "./seen_users.ts";
 * const seen = new SeenUsers();
 * console.assert(seen.admit("alice@contoso.com", 2) === undefined);
 * console.assert(seen.admit("bob@contoso.com", 3) === undefined);
 * console.assert(seen.admit("ALICE@Contoso.com", 4) === 2);
 * console.assert(seen.size === 2);
 * ```
 *
 * @module
 */

/** Options of {@link SeenUsers}. */
export interface SeenUsersOptions {
  /**
   * Seeds of the two hashes. Tests fix them to make a run repeatable.
   * @default two random 32-bit numbers from crypto.getRandomValues
   */
  seeds?: readonly [number, number];
  /**
   * Users the caller expects (e.g. the lines of a CSV file): the table is made 4/5 full at that
   * number, so it never grows unless the guess was short.
   * @default 800 (1,024 slots)
   */
  expectedUsers?: number | undefined;
}

/** Largest row number a slot holds (row 0 marks an empty slot). */
export const maxRow = 0xffff_ffff;

/** Fill beyond which the table doubles: 9/10 (linear probing still averages a few probes). */
const maxLoadNumerator = 9;
const maxLoadDenominator = 10;

/** Slots for `users` expected users: 5/4 of them (4/5 full), at least 16. */
function slotsFor(users: number): number {
  return Math.max(16, Math.ceil((Number.isFinite(users) && users > 0 ? users : 0) * 5 / 4));
}

/** See the module documentation. */
export class SeenUsers {
  /** Slot i is `[hash1, hash2, first row]` at 3i; row 0 means empty. */
  #slots: Uint32Array;
  /** Number of slots (any whole number; a slot is picked by scaling hash1, not by masking). */
  #capacity: number;
  #size = 0;
  readonly #seed1: number;
  readonly #seed2: number;
  // The fingerprint of the last hashed key, kept here rather than in a fresh array per call.
  #hash1 = 0;
  #hash2 = 0;

  constructor(options: SeenUsersOptions = {}) {
    const seeds = options.seeds ?? crypto.getRandomValues(new Uint32Array(2));
    this.#seed1 = (seeds[0] ?? 0) >>> 0;
    this.#seed2 = (seeds[1] ?? 0) >>> 0;
    this.#capacity = slotsFor(options.expectedUsers ?? 800);
    this.#slots = new Uint32Array(this.#capacity * 3);
  }

  /** Users admitted so far. */
  get size(): number {
    return this.#size;
  }

  /** Bytes the table holds. */
  get byteLength(): number {
    return this.#slots.byteLength;
  }

  /**
   * The row where `reference` (compared case-insensitively, by `toLowerCase`) was first admitted;
   * or, when it is new, records `row` as its first and returns `undefined`.
   *
   * @throws {RangeError} for a row that is not a whole number from 1 to {@link maxRow}.
   */
  admit(reference: string, row: number): number | undefined {
    if (!Number.isInteger(row) || row < 1 || row > maxRow) {
      throw new RangeError(`Cannot record row ${row}: rows are numbered from 1 to ${maxRow}`);
    }
    this.#fingerprint(reference.toLowerCase());
    const h1 = this.#hash1, h2 = this.#hash2;
    const slots = this.#slots;
    const capacity = this.#capacity;
    for (let i = home(h1, capacity);; i = i + 1 === capacity ? 0 : i + 1) {
      const at = i * 3;
      const first = slots[at + 2]!;
      if (first === 0) break;
      if (slots[at] === h1 && slots[at + 1] === h2) return first;
    }
    if ((this.#size + 1) * maxLoadDenominator > capacity * maxLoadNumerator) this.#grow();
    this.#insert(h1, h2, row);
    this.#size++;
    return undefined;
  }

  /** The number recorded for `reference` (case-insensitive), if any. */
  get(reference: string): number | undefined {
    const at = this.#find(reference);
    return at < 0 ? undefined : this.#slots[at + 2];
  }

  /**
   * Records `value` for `reference` (case-insensitive), replacing what was recorded: for tables
   * whose number changes (the journal's line of a user's latest outcome).
   *
   * @throws {RangeError} for a value that is not a whole number from 1 to {@link maxRow}.
   */
  put(reference: string, value: number): void {
    if (!Number.isInteger(value) || value < 1 || value > maxRow) {
      throw new RangeError(`Cannot record ${value}: values are whole numbers from 1 to ${maxRow}`);
    }
    const at = this.#find(reference);
    if (at >= 0) {
      this.#slots[at + 2] = value;
      return;
    }
    const h1 = this.#hash1, h2 = this.#hash2;
    if ((this.#size + 1) * maxLoadDenominator > this.#capacity * maxLoadNumerator) this.#grow();
    this.#insert(h1, h2, value);
    this.#size++;
  }

  /** The slot offset holding `reference`'s fingerprint, or -1; leaves the fingerprint in `#hash1/2`. */
  #find(reference: string): number {
    this.#fingerprint(reference.toLowerCase());
    const h1 = this.#hash1, h2 = this.#hash2;
    const slots = this.#slots;
    const capacity = this.#capacity;
    for (let i = home(h1, capacity);; i = i + 1 === capacity ? 0 : i + 1) {
      const at = i * 3;
      if (slots[at + 2] === 0) return -1;
      if (slots[at] === h1 && slots[at + 1] === h2) return at;
    }
  }

  /** Puts a fingerprint known to be absent into the first free slot of its probe sequence. */
  #insert(h1: number, h2: number, row: number): void {
    const slots = this.#slots;
    const capacity = this.#capacity;
    let i = home(h1, capacity);
    while (slots[i * 3 + 2] !== 0) i = i + 1 === capacity ? 0 : i + 1;
    slots[i * 3] = h1;
    slots[i * 3 + 1] = h2;
    slots[i * 3 + 2] = row;
  }

  #grow(): void {
    const old = this.#slots;
    this.#capacity *= 2;
    this.#slots = new Uint32Array(this.#capacity * 3);
    for (let at = 0; at < old.length; at += 3) {
      const row = old[at + 2]!;
      if (row !== 0) this.#insert(old[at]!, old[at + 1]!, row);
    }
  }

  /**
   * Two 32-bit hashes of `key`'s UTF-16 code units into `#hash1`, `#hash2`: FNV-1a over each code
   * unit's two bytes (seeded offset basis), finished with MurmurHash3's fmix32 so the low bits that
   * pick a slot are well mixed; and MurmurHash3 x86_32 over code units taken two at a time.
   */
  #fingerprint(key: string): void {
    let a = (0x811c9dc5 ^ this.#seed1) >>> 0;
    let b = this.#seed2;
    const length = key.length;
    let i = 0;
    for (; i + 1 < length; i += 2) {
      const u0 = key.charCodeAt(i), u1 = key.charCodeAt(i + 1);
      a = Math.imul(a ^ (u0 & 0xff), 0x01000193);
      a = Math.imul(a ^ (u0 >>> 8), 0x01000193);
      a = Math.imul(a ^ (u1 & 0xff), 0x01000193);
      a = Math.imul(a ^ (u1 >>> 8), 0x01000193);
      let k = u0 | (u1 << 16);
      k = Math.imul(k, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, 0x1b873593);
      b ^= k;
      b = (b << 13) | (b >>> 19);
      b = (Math.imul(b, 5) + 0xe6546b64) | 0;
    }
    if (i < length) {
      const u0 = key.charCodeAt(i);
      a = Math.imul(a ^ (u0 & 0xff), 0x01000193);
      a = Math.imul(a ^ (u0 >>> 8), 0x01000193);
      let k = Math.imul(u0, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      k = Math.imul(k, 0x1b873593);
      b ^= k;
    }
    this.#hash1 = fmix32(a ^ length);
    this.#hash2 = fmix32(b ^ (length * 2));
  }
}

/**
 * The slot a fingerprint starts probing at: hash1 scaled to the table (Lemire's multiply-shift
 * range reduction), so any number of slots works and every bit of hash1 counts.
 */
function home(h1: number, capacity: number): number {
  return Math.floor((h1 / 0x1_0000_0000) * capacity);
}

/** MurmurHash3's 32-bit finaliser: every input bit affects every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
