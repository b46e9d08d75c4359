/**
 * What the software key remembers between runs, as stored (JSON, binary as base64url) in its
 * encrypted vault: identity (AAGUID, attestation chain), the master secret that seals
 * credential ids, the PIN state, the signature counter and its discoverable credentials.
 *
 * @module
 */
import { z } from "zod";
import { parseAaguid } from "../../core/aaguid.ts";
import { fromBase64Any, randomBytes, toBase64Url } from "../../core/bytes.ts";

const b64url = (length?: number) =>
  z.string().regex(/^[A-Za-z0-9_-]*$/, { message: "is not base64url", abort: true }).refine(
    (text) => length === undefined || fromBase64Any(text).length === length,
    `must decode to ${length} bytes`,
  );

/** A discoverable credential's record (its secrets live in its id, see credential_id.ts). */
export const storedCredentialSchema = z.object({
  id: b64url(),
  rpId: z.string(),
  rpName: z.string().optional(),
  user: z.object({ id: b64url(), name: z.string().optional(), displayName: z.string().optional() }),
  alg: z.number().int(),
  credProtect: z.number().int().min(1).max(3),
  createdAt: z.iso.datetime(),
});
export type StoredCredential = z.infer<typeof storedCredentialSchema>;

/** The PIN as kept: never the PIN itself. */
const pinStateSchema = z.object({
  /** LEFT(SHA-256(PIN), 16), as CTAP 2.1 §6.5.5.5 keeps it. */
  hash: b64url(16),
  /** The PIN's length in Unicode code points, for setMinPINLength. */
  codePoints: z.number().int().min(1),
  retries: z.number().int().min(0).max(8),
});

/** Discoverable credentials a new software key holds at most, unless told otherwise. */
export const defaultMaxDiscoverableCredentials = 100_000;

/** The most discoverable credentials a software key may be set to hold (its vault's memory and open time grow with them). */
export const maxMaxDiscoverableCredentials = 1_000_000;

/** The whole state of a software key. */
export const softwareKeyStateSchema = z.object({
  format: z.literal("provisioning-software-key"),
  version: z.literal(1),
  aaguid: b64url(16),
  /** Seals credential ids; replaced by a reset. */
  masterKey: b64url(32),
  attestation: z.object({
    format: z.enum(["packed", "none"]),
    certificate: b64url(),
    rootCertificate: b64url(),
    privateKey: b64url(32),
  }),
  pin: pinStateSchema.optional(),
  forcePinChange: z.boolean(),
  minPinLength: z.number().int().min(4).max(63),
  signCount: z.number().int().min(0),
  /**
   * Discoverable credentials the key holds at most (getInfo's remainingDiscoverableCredentials
   * counts down from it). Absent in keys made before it was a setting: they held 1,000.
   */
  maxDiscoverableCredentials: z.number().int().min(1).max(maxMaxDiscoverableCredentials).optional(),
  credentials: z.array(storedCredentialSchema),
});
export type SoftwareKeyState = z.infer<typeof softwareKeyStateSchema>;

/**
 * One change to a software key's state, as its vault stores it: a few fields set, and at most one
 * credential added (replacing the same user's at the same rp), deleted, or all cleared. Applied in
 * that order by {@link applyKeyStateChange}. A change is a few hundred bytes whatever the number
 * of credentials, which is what makes a registration cost O(1) on disk.
 */
export const keyStateChangeSchema = z.object({
  set: z.object({
    masterKey: b64url(32),
    /** `null` removes the PIN (reset). */
    pin: pinStateSchema.nullable(),
    forcePinChange: z.boolean(),
    minPinLength: z.number().int().min(4).max(63),
    signCount: z.number().int().min(0),
    maxDiscoverableCredentials: z.number().int().min(1).max(maxMaxDiscoverableCredentials),
  }).partial().optional(),
  clearCredentials: z.literal(true).optional(),
  deleteCredential: b64url().optional(),
  putCredential: storedCredentialSchema.optional(),
});
export type KeyStateChange = z.infer<typeof keyStateChangeSchema>;

/** Applies `change` to `state` in place. Adding a credential replaces that user's at that rp. */
export function applyKeyStateChange(state: SoftwareKeyState, change: KeyStateChange): void {
  const set = change.set ?? {};
  for (const [name, value] of Object.entries(set)) {
    if (name === "pin" && value === null) delete state.pin;
    else (state as Record<string, unknown>)[name] = value;
  }
  if (change.clearCredentials) state.credentials = [];
  if (change.deleteCredential !== undefined) {
    const at = state.credentials.findIndex((c) => c.id === change.deleteCredential);
    if (at !== -1) state.credentials.splice(at, 1);
  }
  const put = change.putCredential;
  if (put !== undefined) {
    const at = state.credentials.findIndex((c) => c.rpId === put.rpId && c.user.id === put.user.id);
    if (at !== -1) state.credentials.splice(at, 1);
    state.credentials.push(put);
  }
}

/** The most discoverable credentials `state`'s key holds. */
export function maxDiscoverableOf(state: SoftwareKeyState): number {
  return state.maxDiscoverableCredentials ?? 1000;
}

/** The AAGUID the software key reports unless configured otherwise: "provisioning software key v1". */
export const defaultAaguid = "70726f76-6973-696f-6e69-6e67736b0001";

/** The settings a new software key is made with. */
export interface NewKeyOptions {
  /** @default defaultAaguid */
  aaguid?: Uint8Array;
  /** @default "packed" */
  attestation?: "packed" | "none";
  /** @default defaultMaxDiscoverableCredentials */
  maxDiscoverableCredentials?: number;
  /** The attestation chain, from attestation.ts. */
  chain: {
    attestationCertificate: Uint8Array;
    rootCertificate: Uint8Array;
    attestationPrivateKey: Uint8Array;
  };
}

/** A fresh state: no PIN, no credentials, a new master secret. */
export function newKeyState(options: NewKeyOptions): SoftwareKeyState {
  return {
    format: "provisioning-software-key",
    version: 1,
    aaguid: toBase64Url(options.aaguid ?? parseAaguid(defaultAaguid)),
    masterKey: toBase64Url(randomBytes(32)),
    attestation: {
      format: options.attestation ?? "packed",
      certificate: toBase64Url(options.chain.attestationCertificate),
      rootCertificate: toBase64Url(options.chain.rootCertificate),
      privateKey: toBase64Url(options.chain.attestationPrivateKey),
    },
    forcePinChange: false,
    minPinLength: 4,
    signCount: 0,
    maxDiscoverableCredentials: options.maxDiscoverableCredentials ?? defaultMaxDiscoverableCredentials,
    credentials: [],
  };
}
