/**
 * Who may use the panel, kept in the panel's database (migration 2): admins with a role, browser
 * sessions, agents' bearer tokens and single-use tokens (the first-run bootstrap link).
 *
 * No token is stored as given: sessions, agent tokens and one-time tokens are looked up by the
 * SHA-256 of a 256-bit random value, so a copy of the database signs nobody in. (A slow password
 * hash is not needed: the values are random, not chosen by people.) The CSRF token of a session is
 * stored as is: it is sent in every page's forms and protects nothing on its own.
 *
 * Times are given by the caller (the panel's clock), so tests can move past an expiry without
 * waiting. Every grant is audited in the transaction that makes it; no audit row holds a token.
 *
 * @module
 */
import { z } from "zod";
import { parseRow, writeAudit } from "./queue_store.ts";
import type { SqlDatabase, SqlSession } from "./sql.ts";

/** What an admin may do: everything (owner), edit users and run agents (admin), or look (read-only). */
export type AdminRole = "owner" | "admin" | "read-only";

/** The roles, from most to least allowed. */
export const adminRoles = ["owner", "admin", "read-only"] as const satisfies readonly AdminRole[];

/** A person who may sign in to the panel. */
export interface PanelAdmin {
  readonly id: number;
  readonly signInName: string;
  readonly role: AdminRole;
  /** Who created this admin (the bootstrap link for the first owner). */
  readonly createdBy: string;
  readonly createdAt: number;
}

/** A new browser session: the cookie's token (shown once), its CSRF token and expiry. */
export interface SessionGrant {
  readonly token: string;
  readonly csrf: string;
  readonly expiresAt: number;
  readonly admin: PanelAdmin;
}

/** A live session found by its cookie. */
export interface PanelSession {
  readonly admin: PanelAdmin;
  readonly csrf: string;
  readonly expiresAt: number;
}

/** A new agent token (shown once) and what it is bound to. */
export interface AgentTokenGrant {
  readonly id: number;
  readonly token: string;
  readonly label: string;
  readonly expiresAt: number;
  readonly admin: PanelAdmin;
}

/** Whether a bearer token is a live agent token, and whose; or why not. */
export type AgentTokenCheck =
  | {
    readonly valid: true;
    readonly id: number;
    readonly label: string;
    readonly expiresAt: number;
    readonly admin: PanelAdmin;
  }
  | { readonly valid: false; readonly reason: "unknown" | "expired" | "revoked" };

/** Why a bootstrap link was not honoured. */
export type BootstrapRefusal = "unknown" | "used" | "expired" | "owner-exists";

/** The panel's admins, sessions and tokens; see the module documentation. */
export interface PanelAuthStore {
  /** True once the panel has an owner (then no bootstrap link is issued). */
  hasOwner(): Promise<boolean>;
  /**
   * A new first-run token while the panel has no owner (earlier unused ones stop working), or null
   * when it has one.
   */
  issueBootstrapToken(options: { at: number; ttlMs: number }): Promise<string | null>;
  /** Spends a bootstrap token: the first owner is created and signed in, once. */
  redeemBootstrap(options: {
    token: string;
    signInName: string;
    at: number;
    sessionTtlMs: number;
  }): Promise<{ ok: true; session: SessionGrant } | { ok: false; reason: BootstrapRefusal }>;
  /** A single-use link token that signs `adminId` in once (until the provider's sign-in exists). */
  issueSignInToken(options: { adminId: number; at: number; ttlMs: number; actor: string }): Promise<string>;
  /** Spends a sign-in token: a session for its admin, once. */
  redeemSignIn(options: { token: string; at: number; sessionTtlMs: number }): Promise<
    { ok: true; session: SessionGrant } | { ok: false; reason: Exclude<BootstrapRefusal, "owner-exists"> }
  >;
  /** Adds an admin; refused when the sign-in name (case-insensitive) is taken. */
  createAdmin(options: { signInName: string; role: AdminRole; actor: string; at: number }): Promise<
    { created: true; admin: PanelAdmin } | { created: false; reason: "exists" }
  >;
  listAdmins(): Promise<PanelAdmin[]>;
  /** The admin with this sign-in name (case-insensitive), or null. */
  findAdmin(signInName: string): Promise<PanelAdmin | null>;
  /** Starts a browser session for an admin. */
  createSession(options: { adminId: number; at: number; ttlMs: number }): Promise<SessionGrant>;
  /** The live session of a cookie's token, or null (unknown, or expired at `at`). */
  findSession(token: string, at: number): Promise<PanelSession | null>;
  /** Ends a session (sign-out); unknown tokens are ignored. */
  endSession(token: string): Promise<void>;
  /** A bearer token for an agent, bound to `adminId`, valid `ttlMs`. */
  issueAgentToken(options: {
    adminId: number;
    label: string;
    at: number;
    ttlMs: number;
    actor: string;
  }): Promise<AgentTokenGrant>;
  /** Checks a bearer token at `at`. */
  checkAgentToken(token: string, at: number): Promise<AgentTokenCheck>;
  /** Agent tokens, newest first: one admin's, or everyone's. Never the tokens themselves. */
  listAgentTokens(options?: { adminId?: number }): Promise<AgentTokenRow[]>;
  /**
   * Revokes an agent token (the agent's `logout`, or an admin); with `adminId`, only when it is
   * that admin's. False when there is no such live token.
   */
  revokeAgentToken(options: { id: number; actor: string; at: number; adminId?: number }): Promise<boolean>;
}

/** An agent token as listed: what it is bound to and until when, without the token. */
export interface AgentTokenRow {
  readonly id: number;
  readonly label: string;
  readonly admin: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly revokedAt: number | null;
}

const int = z.coerce.number().int();
const adminRowSchema = z.object({
  id: int,
  sign_in_name: z.string(),
  role: z.enum(adminRoles),
  created_by: z.string(),
  created_at: int,
});
const adminColumns = "a.id, a.sign_in_name, a.role, a.created_by, a.created_at";
const sessionRowSchema = adminRowSchema.extend({ csrf_token: z.string(), expires_at: int });
const agentTokenRowSchema = adminRowSchema.extend({
  token_id: int,
  label: z.string(),
  expires_at: int,
  revoked_at: int.nullable(),
});
const tokenListRowSchema = z.object({
  id: int,
  label: z.string(),
  sign_in_name: z.string(),
  created_at: int,
  expires_at: int,
  revoked_at: int.nullable(),
});
const oneTimeRowSchema = z.object({ expires_at: int, used_at: int.nullable(), admin_id: int.nullable() });

/** A fresh 256-bit random token, base64url. */
export function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The SHA-256 of a token, hex: what the database keeps instead of the token. */
export async function tokenHash(token: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Opens the auth operations on `db` (already migrated to version 2 or later). */
export function createAuthStore(db: SqlDatabase): PanelAuthStore {
  const lockRow = db.sql.lockRows();
  const toAdmin = (row: Record<string, unknown>): PanelAdmin => {
    const a = parseRow(adminRowSchema, row, db, "admins");
    return {
      id: a.id,
      signInName: a.sign_in_name,
      role: a.role,
      createdBy: a.created_by,
      createdAt: a.created_at,
    };
  };

  async function insertSession(tx: SqlSession, admin: PanelAdmin, at: number, ttlMs: number) {
    const token = randomToken();
    const csrf = randomToken();
    const expiresAt = at + ttlMs;
    // Expired sessions are refused by findSession already; dropping them here keeps the table small.
    await tx.execute("DELETE FROM sessions WHERE expires_at <= ?", [at]);
    await tx.execute(
      "INSERT INTO sessions (token_hash, admin_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
      [await tokenHash(token), admin.id, csrf, at, expiresAt],
    );
    return { token, csrf, expiresAt, admin } satisfies SessionGrant;
  }

  async function adminById(session: SqlSession, id: number): Promise<PanelAdmin | null> {
    const rows = await session.query(`SELECT ${adminColumns} FROM admins a WHERE a.id = ?`, [id]);
    return rows[0] === undefined ? null : toAdmin(rows[0]);
  }

  return {
    async hasOwner() {
      const rows = await db.query("SELECT id FROM admins WHERE role = 'owner' LIMIT 1");
      return rows.length > 0;
    },

    issueBootstrapToken: ({ at, ttlMs }) =>
      db.transaction(async (tx) => {
        const owners = await tx.query("SELECT id FROM admins WHERE role = 'owner' LIMIT 1");
        if (owners.length > 0) return null;
        await tx.execute("DELETE FROM one_time_tokens WHERE purpose = 'bootstrap' AND used_at IS NULL");
        const token = randomToken();
        await tx.execute(
          "INSERT INTO one_time_tokens (token_hash, purpose, created_at, expires_at) VALUES (?, 'bootstrap', ?, ?)",
          [await tokenHash(token), at, at + ttlMs],
        );
        await writeAudit(tx, at, [{
          actor: "panel",
          action: "panel.bootstrap-link",
          detail: { expiresAt: at + ttlMs },
        }]);
        return token;
      }),

    async redeemBootstrap({ token, signInName, at, sessionTtlMs }) {
      const hash = await tokenHash(token);
      return await db.transaction(async (tx) => {
        const rows = await tx.query(
          `SELECT expires_at, used_at, admin_id FROM one_time_tokens WHERE token_hash = ? AND purpose = 'bootstrap' ${lockRow}`,
          [hash],
        );
        const refuse = async (reason: BootstrapRefusal) => {
          await writeAudit(tx, at, [{
            actor: signInName,
            action: "panel.bootstrap",
            outcome: "refused",
            detail: { reason },
          }]);
          return { ok: false as const, reason };
        };
        if (rows[0] === undefined) return await refuse("unknown");
        const row = parseRow(oneTimeRowSchema, rows[0], db, "one_time_tokens");
        if (row.used_at !== null) return await refuse("used");
        if (row.expires_at <= at) return await refuse("expired");
        const owners = await tx.query("SELECT id FROM admins WHERE role = 'owner' LIMIT 1");
        if (owners.length > 0) return await refuse("owner-exists");
        await tx.execute("UPDATE one_time_tokens SET used_at = ? WHERE token_hash = ?", [at, hash]);
        const [inserted] = await tx.query(
          `INSERT INTO admins (sign_in_name, sign_in_key, role, created_by, created_at)
           VALUES (?, ?, 'owner', 'bootstrap link', ?) RETURNING id`,
          [signInName, signInName.toLowerCase(), at],
        );
        const admin = (await adminById(tx, Number(inserted!.id)))!;
        await writeAudit(tx, at, [{
          actor: signInName,
          action: "panel.bootstrap",
          detail: { role: "owner" },
        }]);
        return { ok: true as const, session: await insertSession(tx, admin, at, sessionTtlMs) };
      });
    },

    async issueSignInToken({ adminId, at, ttlMs, actor }) {
      const token = randomToken();
      const hash = await tokenHash(token);
      await db.transaction(async (tx) => {
        const admin = await adminById(tx, adminId);
        if (admin === null) {
          throw new RangeError(`Cannot issue a sign-in link for admin ${adminId}: no such admin`);
        }
        await tx.execute(
          "INSERT INTO one_time_tokens (token_hash, purpose, admin_id, created_at, expires_at) VALUES (?, 'sign-in', ?, ?, ?)",
          [hash, adminId, at, at + ttlMs],
        );
        await writeAudit(tx, at, [{
          actor,
          action: "admin.sign-in-link",
          detail: { admin: admin.signInName, expiresAt: at + ttlMs },
        }]);
      });
      return token;
    },

    async redeemSignIn({ token, at, sessionTtlMs }) {
      const hash = await tokenHash(token);
      return await db.transaction(async (tx) => {
        const rows = await tx.query(
          `SELECT expires_at, used_at, admin_id FROM one_time_tokens WHERE token_hash = ? AND purpose = 'sign-in' ${lockRow}`,
          [hash],
        );
        const row = rows[0] === undefined ? null : parseRow(oneTimeRowSchema, rows[0], db, "one_time_tokens");
        const admin = row?.admin_id == null ? null : await adminById(tx, row.admin_id);
        const reason = row === null || admin === null
          ? "unknown"
          : row.used_at !== null
          ? "used"
          : row.expires_at <= at
          ? "expired"
          : null;
        await writeAudit(tx, at, [{
          actor: admin?.signInName ?? "unknown",
          action: "admin.sign-in",
          outcome: reason === null ? "ok" : "refused",
          detail: reason === null ? { via: "link" } : { reason },
        }]);
        if (reason !== null || admin === null) return { ok: false as const, reason: reason ?? "unknown" };
        await tx.execute("UPDATE one_time_tokens SET used_at = ? WHERE token_hash = ?", [at, hash]);
        return { ok: true as const, session: await insertSession(tx, admin, at, sessionTtlMs) };
      });
    },

    createAdmin: ({ signInName, role, actor, at }) =>
      db.transaction(async (tx) => {
        const [inserted] = await tx.query(
          `INSERT INTO admins (sign_in_name, sign_in_key, role, created_by, created_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (sign_in_key) DO NOTHING RETURNING id`,
          [signInName, signInName.toLowerCase(), role, actor, at],
        );
        await writeAudit(tx, at, [{
          actor,
          action: "admin.create",
          outcome: inserted === undefined ? "refused" : "ok",
          detail: { signInName, role, ...(inserted === undefined ? { reason: "exists" } : {}) },
        }]);
        if (inserted === undefined) return { created: false as const, reason: "exists" as const };
        return { created: true as const, admin: (await adminById(tx, Number(inserted.id)))! };
      }),

    async findAdmin(signInName) {
      const rows = await db.query(`SELECT ${adminColumns} FROM admins a WHERE a.sign_in_key = ?`, [
        signInName.toLowerCase(),
      ]);
      return rows[0] === undefined ? null : toAdmin(rows[0]);
    },

    async listAdmins() {
      const rows = await db.query(`SELECT ${adminColumns} FROM admins a ORDER BY a.sign_in_key`);
      return rows.map(toAdmin);
    },

    createSession: ({ adminId, at, ttlMs }) =>
      db.transaction(async (tx) => {
        const admin = await adminById(tx, adminId);
        if (admin === null) {
          throw new RangeError(`Cannot start a session for admin ${adminId}: no such admin`);
        }
        return await insertSession(tx, admin, at, ttlMs);
      }),

    async findSession(token, at) {
      const rows = await db.query(
        `SELECT ${adminColumns}, s.csrf_token, s.expires_at FROM sessions s JOIN admins a ON a.id = s.admin_id
         WHERE s.token_hash = ?`,
        [await tokenHash(token)],
      );
      if (rows[0] === undefined) return null;
      const row = parseRow(sessionRowSchema, rows[0], db, "sessions");
      if (row.expires_at <= at) return null;
      return { admin: toAdmin(rows[0]), csrf: row.csrf_token, expiresAt: row.expires_at };
    },

    async endSession(token) {
      await db.execute("DELETE FROM sessions WHERE token_hash = ?", [await tokenHash(token)]);
    },

    issueAgentToken: ({ adminId, label, at, ttlMs, actor }) =>
      db.transaction(async (tx) => {
        const admin = await adminById(tx, adminId);
        if (admin === null) {
          throw new RangeError(`Cannot issue an agent token for admin ${adminId}: no such admin`);
        }
        const token = randomToken();
        const expiresAt = at + ttlMs;
        const [inserted] = await tx.query(
          `INSERT INTO agent_tokens (token_hash, admin_id, label, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
           RETURNING id`,
          [await tokenHash(token), adminId, label, at, expiresAt],
        );
        const id = Number(inserted!.id);
        await writeAudit(tx, at, [{
          actor,
          action: "agent-token.issue",
          detail: { tokenId: id, label, admin: admin.signInName, expiresAt },
        }]);
        return { id, token, label, expiresAt, admin };
      }),

    async checkAgentToken(token, at) {
      const rows = await db.query(
        `SELECT ${adminColumns}, t.id AS token_id, t.label, t.expires_at, t.revoked_at
         FROM agent_tokens t JOIN admins a ON a.id = t.admin_id WHERE t.token_hash = ?`,
        [await tokenHash(token)],
      );
      if (rows[0] === undefined) return { valid: false, reason: "unknown" };
      const row = parseRow(agentTokenRowSchema, rows[0], db, "agent_tokens");
      if (row.revoked_at !== null) return { valid: false, reason: "revoked" };
      if (row.expires_at <= at) return { valid: false, reason: "expired" };
      return {
        valid: true,
        id: row.token_id,
        label: row.label,
        expiresAt: row.expires_at,
        admin: toAdmin(rows[0]),
      };
    },

    async listAgentTokens({ adminId } = {}) {
      const rows = await db.query(
        `SELECT t.id, t.label, a.sign_in_name, t.created_at, t.expires_at, t.revoked_at
         FROM agent_tokens t JOIN admins a ON a.id = t.admin_id
         ${adminId === undefined ? "" : "WHERE t.admin_id = ?"} ORDER BY t.id DESC LIMIT 500`,
        adminId === undefined ? [] : [adminId],
      );
      return rows.map((row) => {
        const t = parseRow(tokenListRowSchema, row, db, "agent_tokens");
        return {
          id: t.id,
          label: t.label,
          admin: t.sign_in_name,
          createdAt: t.created_at,
          expiresAt: t.expires_at,
          revokedAt: t.revoked_at,
        };
      });
    },

    revokeAgentToken: ({ id, actor, at, adminId }) =>
      db.transaction(async (tx) => {
        const changed = await tx.execute(
          `UPDATE agent_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL
           ${adminId === undefined ? "" : "AND admin_id = ?"}`,
          adminId === undefined ? [at, id] : [at, id, adminId],
        );
        await writeAudit(tx, at, [{
          actor,
          action: "agent-token.revoke",
          outcome: changed === 1 ? "ok" : "refused",
          detail: { tokenId: id },
        }]);
        return changed === 1;
      }),
  };
}
