/**
 * @module
 * Verifying credentials, paying for each verification once.
 *
 * Access tokens: a JWT signature check costs tens of microseconds, so a verified token is cached,
 * keyed by the SHA-256 of the token (never the token itself), until it expires. API keys: looked up
 * by their prefix (no hash over the whole table), compared by SHA-256 in constant time, cached for
 * 30 s.
 *
 * Revocation: logout, refresh-token reuse, key revocation and rotation append to
 * `auth_revocations`. Every process reads the new rows at most once a second (on the next request
 * after a second has passed) and drops what they revoke, so a revocation takes effect everywhere
 * within a second; in the process that made it, at once.
 */

import type { Database, Statement } from "bun:sqlite";
import { timingSafeEqual } from "node:crypto";
import type { Clock } from "../../clock";
import { isDatabaseBusy } from "../../db/busy";
import { hashApiKey, hasValidChecksum, KEY_PATTERN, keyPrefix } from "./api-key-format";
import type { Principal, Scope } from "./principal";
import { type SigningKeys, sha256Hex, verifyAccessToken } from "./tokens";

export type Verification =
  | { ok: true; principal: Principal }
  | { ok: false; reason: "invalid" | "expired" | "revoked" };

interface CachedToken {
  principal: Extract<Principal, { kind: "user" }>;
  expiresAt: number;
}

interface CachedKey {
  principal: Extract<Principal, { kind: "key" }>;
  cachedAt: number;
  expiresAt: number | null;
}

interface KeyRow {
  id: string;
  name: string;
  secretHash: string;
  scopes: string;
  userId: string | null;
  expiresAt: number | null;
  revokedAt: number | null;
}

const CACHE_LIMIT = 10_000;
const KEY_CACHE_MS = 30_000;
const REVOCATION_POLL_MS = 1_000;
const LAST_USED_WRITE_MS = 60_000;

export interface CredentialVerifierOptions {
  sqlite: Database;
  clock: Clock;
  signingKeys: SigningKeys;
  /** How long revoked families must be remembered: the access-token lifetime. */
  accessTokenTtlMs: number;
  /** Cache verified access tokens (default). Off only to measure what the cache saves. */
  cacheTokens?: boolean;
}

export class CredentialVerifier {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly keys = new Map<string, CachedKey>();
  /** family id → when it was revoked; kept as long as a token of it could still be valid. */
  private readonly revokedFamilies = new Map<string, number>();
  private readonly lastUsedWritten = new Map<string, number>();
  private lastRevocationId = 0;
  private lastPoll = Number.NEGATIVE_INFINITY;
  private readonly findKey: Statement<KeyRow, [string]>;
  private readonly newRevocations: Statement<
    { id: number; kind: string; subject: string; createdAt: number },
    [number]
  >;
  private readonly touchKey: Statement;
  private readonly insertRevocation: Statement;

  constructor(private readonly options: CredentialVerifierOptions) {
    const { sqlite } = options;
    this.findKey = sqlite.prepare(
      `SELECT id, name, secret_hash AS secretHash, scopes, user_id AS userId,
              expires_at AS expiresAt, revoked_at AS revokedAt
       FROM api_keys WHERE prefix = ?`,
    );
    this.newRevocations = sqlite.prepare(
      `SELECT id, kind, subject, created_at AS createdAt FROM auth_revocations
       WHERE id > ? ORDER BY id`,
    );
    this.touchKey = sqlite.prepare("UPDATE api_keys SET last_used_at = ? WHERE id = ?");
    this.insertRevocation = sqlite.prepare(
      "INSERT INTO auth_revocations (kind, subject, created_at) VALUES (?, ?, ?)",
    );
    // Families revoked while their access tokens could still be alive must be known at start.
    const since = options.clock.now() - options.accessTokenTtlMs - 60_000;
    this.lastRevocationId =
      sqlite
        .query<{ id: number }, [number]>(
          "SELECT coalesce(max(id), 0) AS id FROM auth_revocations WHERE created_at < ?",
        )
        .get(since)?.id ?? 0;
    this.poll(options.clock.now());
  }

  async verifyAccessToken(token: string, via: "bearer" | "cookie"): Promise<Verification> {
    const now = this.options.clock.now();
    this.pollIfDue(now);
    const cacheKey = sha256Hex(token);
    const cached = this.tokens.get(cacheKey);
    if (cached && cached.expiresAt > now) {
      if (this.revokedFamilies.has(cached.principal.familyId))
        return { ok: false, reason: "revoked" };
      return {
        ok: true,
        principal: cached.principal.via === via ? cached.principal : { ...cached.principal, via },
      };
    }
    const verdict = await verifyAccessToken(this.options.signingKeys, token, now);
    if (!verdict.ok) return verdict;
    const { claims } = verdict;
    if (this.revokedFamilies.has(claims.fam)) return { ok: false, reason: "revoked" };
    const principal = {
      kind: "user" as const,
      id: claims.sub,
      role: claims.role,
      familyId: claims.fam,
      via,
    };
    if (this.options.cacheTokens === false) return { ok: true, principal };
    if (this.tokens.size >= CACHE_LIMIT) this.tokens.clear();
    this.tokens.set(cacheKey, { principal, expiresAt: claims.exp * 1000 });
    return { ok: true, principal };
  }

  verifyApiKey(key: string): Verification {
    const now = this.options.clock.now();
    this.pollIfDue(now);
    // A pal_ key with a wrong checksum is a typo or a forgery: no need to ask the database.
    if (KEY_PATTERN.test(key) ? !hasValidChecksum(key) : key.length < 16) {
      return { ok: false, reason: "invalid" };
    }
    const hash = hashApiKey(key);
    const cached = this.keys.get(hash);
    if (cached && now - cached.cachedAt < KEY_CACHE_MS) {
      if (cached.expiresAt !== null && cached.expiresAt <= now) {
        return { ok: false, reason: "expired" };
      }
      this.noteUse(cached.principal.id, now);
      return { ok: true, principal: cached.principal };
    }
    const row = this.findKey.get(keyPrefix(key));
    if (!row || !timingSafeEqual(Buffer.from(row.secretHash), Buffer.from(hash))) {
      return { ok: false, reason: "invalid" };
    }
    if (row.revokedAt !== null) return { ok: false, reason: "revoked" };
    if (row.expiresAt !== null && row.expiresAt <= now) return { ok: false, reason: "expired" };
    const principal = {
      kind: "key" as const,
      id: row.id,
      name: row.name,
      userId: row.userId,
      scopes: JSON.parse(row.scopes) as Scope[],
    };
    if (this.keys.size >= CACHE_LIMIT) this.keys.clear();
    this.keys.set(hash, { principal, cachedAt: now, expiresAt: row.expiresAt });
    this.noteUse(row.id, now);
    return { ok: true, principal };
  }

  /** Records a revocation for every process and applies it here at once. */
  revoke(kind: "family" | "key", subject: string): void {
    this.insertRevocation.run(kind, subject, this.options.clock.now());
    this.poll(this.options.clock.now());
  }

  private pollIfDue(now: number): void {
    if (now - this.lastPoll >= REVOCATION_POLL_MS) this.poll(now);
  }

  private poll(now: number): void {
    this.lastPoll = now;
    for (const row of this.newRevocations.all(this.lastRevocationId)) {
      this.lastRevocationId = row.id;
      if (row.kind === "family") {
        this.revokedFamilies.set(row.subject, row.createdAt);
      } else if (row.kind === "key") {
        for (const [hash, entry] of this.keys) {
          if (entry.principal.id === row.subject) this.keys.delete(hash);
        }
      }
    }
    for (const [family, revokedAt] of this.revokedFamilies) {
      if (revokedAt < now - this.options.accessTokenTtlMs - 60_000) {
        this.revokedFamilies.delete(family);
      }
    }
  }

  private noteUse(keyId: string, now: number): void {
    const last = this.lastUsedWritten.get(keyId) ?? 0;
    if (now - last < LAST_USED_WRITE_MS) return;
    this.lastUsedWritten.set(keyId, now);
    try {
      this.touchKey.run(now, keyId);
    } catch (error) {
      // last_used_at is a hint: a locked database must not fail the request it describes.
      if (!isDatabaseBusy(error)) throw error;
      this.lastUsedWritten.set(keyId, last);
    }
  }
}
