/**
 * @module
 * Verifying credentials, paying for each verification once.
 *
 * Access tokens: a JWT signature check costs tens of microseconds, so a verified token is cached,
 * keyed by the SHA-256 of the token (never the token itself), until it expires. API keys: looked up
 * by their prefix (no hash over the whole table), compared by SHA-256 in constant time, cached for
 * 30 s.
 *
 * A key acts for its owner: its effective scopes are its stored scopes bounded by the owner's role
 * as read with the key (see `boundScopes`), so a demoted admin's key stops being an admin key. A
 * key whose owner row is gone is refused. In production `pal_test_` keys are refused outright.
 *
 * Revocation: logout, refresh-token reuse, key revocation and rotation append to
 * `auth_revocations`; so do role changes and erasure (kind `user`: every cached key of that user is
 * dropped, and re-read with the owner's new role at its next use). Every process reads the new
 * rows at most once a second (on the next request after a second has passed) and drops what they
 * revoke from its caches, so a revocation takes effect everywhere within a second; in the process
 * that made it, at once. New rows are those past the last id read and those written since the last
 * read (REVOCATION_OVERLAP_MS), so an id cursor pushed ahead in the file hides none.
 *
 * The durable record of a family's revocation is its `refresh_families` row, not the feed: an
 * access token that is not in the cache is accepted only if its family's row exists, belongs to
 * its subject and is not revoked. So a process that starts, or forgot a revocation after its
 * in-memory window, still refuses the token for its whole life; the feed only bounds how long a
 * cached token outlives a revocation made elsewhere (a second).
 */

import type { Database } from "bun:sqlite";
import { eq, lt, max, sql } from "drizzle-orm";
import { type Clock, elapsedMs } from "../../clock";
import { afterTransaction } from "../../db/after-transaction";
import { type AppDatabase, drizzleOf, sqliteCodeOf } from "../../db/client";
import { spentIdsIn } from "../../db/id-sequence";
import { preparedOnUse } from "../../db/prepared-on-use";
import { sealMatches } from "../../db/row-seal";
import { firstRowReader } from "../../db/rows";
import { apiKeys, authRevocations, refreshFamilies, users } from "../../db/schema";
import { storedValueText } from "../../db/stored-values";
import { hashApiKey, hasValidChecksum, KEY_PATTERN, keyPrefix } from "./api-key-format";
import type { ForgedTokenReport } from "./forged-token";
import { bootstrapLimitName, boundScopes, type Principal, type Scope } from "./principal";
import type { CredentialSeal } from "./seal";
import { sealedFamilyColumns, sealedKeyColumns } from "./sealed-columns";
import { type SigningKeys, sha256Hex, verifyAccessToken } from "./tokens";

export type Verification =
  | { ok: true; principal: Principal }
  | { ok: false; reason: "invalid" | "expired" | "revoked" };

interface CachedToken {
  principal: Extract<Principal, { kind: "user" }>;
  expiresAt: number;
  /** When its session's row was last read (TOKEN_RECHECK_MS). */
  checkedAt: number;
}

interface CachedKey {
  principal: Extract<Principal, { kind: "key" }>;
  cachedAt: number;
  expiresAt: number | null;
}

/** The owning account's row, as its seal covers it, read with a key or a session (left-joined). */
const ownerColumns = {
  ownerId: users.id,
  ownerEmail: users.email,
  ownerEmailKey: users.emailKey,
  ownerRole: users.role,
  ownerPasswordHash: users.passwordHash,
  ownerSeal: users.seal,
};

type OwnerRow = {
  ownerId: string | null;
  ownerEmail: string | null;
  ownerEmailKey: string | null;
  ownerRole: string | null;
  ownerPasswordHash: string | null;
  ownerSeal: string | null;
};

/** The owner's columns as the account row its seal was computed over. */
function ownerAccount(row: OwnerRow & { ownerId: string }) {
  return {
    id: row.ownerId,
    email: row.ownerEmail ?? "",
    emailKey: row.ownerEmailKey,
    passwordHash: row.ownerPasswordHash ?? "",
    role: row.ownerRole ?? "",
    seal: row.ownerSeal,
  };
}

/** The statements verification runs, prepared once per verifier. */
function prepareStatements(db: AppDatabase) {
  // The owner's row as its seal covers it: the role bounds the key's scopes.
  const keyFields = { ...sealedKeyColumns, name: apiKeys.name, ...ownerColumns };
  // A session with its account as the account's seal covers it: a token of an account whose row
  // fails its seal is refused, as the account's own login, refresh and keys are.
  const familyFields = { ...sealedFamilyColumns, ...ownerColumns };
  return preparedOnUse({
    /** A key by its prefix, with its owner's role now (null: ownerless, or the owner row is gone). */
    findKey: () =>
      firstRowReader(
        db
          .select(keyFields)
          .from(apiKeys)
          .leftJoin(users, eq(users.id, apiKeys.userId))
          .where(eq(apiKeys.prefix, sql.placeholder("prefix")))
          .prepare(),
        keyFields,
      ),
    // Two reads, each by its own index, merged. Raw SQL for INDEXED BY: `id > … OR created_at >=
    // …` walked the whole table at every poll, a second's worth of polls a second (probe 88c: 8 ms
    // a poll at 200,000 rows), and so did Drizzle's union of the two, its second half read in id
    // order to skip the sort (0.006 ms with the index named).
    newRevocations: () =>
      db.$client.query<typeof authRevocations.$inferSelect, { after: number; since: number }>(
        `SELECT id, kind, subject, created_at AS createdAt FROM auth_revocations WHERE id > $after
         UNION SELECT id, kind, subject, created_at AS createdAt
           FROM auth_revocations INDEXED BY auth_revocations_created WHERE created_at >= $since
         ORDER BY id`,
      ),
    touchKey: () =>
      db
        .update(apiKeys)
        .set({ lastUsedAt: sql`${sql.placeholder("now")}` })
        .where(eq(apiKeys.id, sql.placeholder("id")))
        .prepare(),
    insertRevocation: () =>
      db
        .insert(authRevocations)
        .values({
          kind: sql.placeholder("kind"),
          subject: sql.placeholder("subject"),
          createdAt: sql.placeholder("createdAt"),
        })
        .prepare(),
    familyState: () =>
      firstRowReader(
        db
          .select(familyFields)
          .from(refreshFamilies)
          .leftJoin(users, eq(users.id, refreshFamilies.userId))
          .where(eq(refreshFamilies.id, sql.placeholder("id")))
          .prepare(),
        familyFields,
      ),
  });
}

const CACHE_LIMIT = 10_000;
const KEY_CACHE_MS = 30_000;
const REVOCATION_POLL_MS = 1_000;
/**
 * A cached access token's session row is read again this often. The feed clears a revoked token
 * within a second, but its rows are the file's: one deleted before a process reads it, or kept
 * from being written, would leave the token cached for its whole life (an hour by default). The
 * session's row is the durable, sealed record, so this bounds that to 30 s whatever the feed says.
 */
const TOKEN_RECHECK_MS = 30_000;
/**
 * A poll also reads every row written since the previous poll (less this, for the clocks of other
 * processes): a row written into the file with a huge id, then deleted, pushes the id cursor past
 * every later revocation, which an id alone would then never show. Reading a revocation twice is
 * harmless.
 */
const REVOCATION_OVERLAP_MS = 5_000;
const LAST_USED_WRITE_MS = 60_000;

export interface CredentialVerifierOptions {
  sqlite: Database;
  clock: Clock;
  signingKeys: SigningKeys;
  /** How long revoked families must be remembered: the access-token lifetime. */
  accessTokenTtlMs: number;
  /** Cache verified access tokens (default). Off only to measure what the cache saves. */
  cacheTokens?: boolean;
  /** Production: `pal_test_` keys are refused (401) whatever the database says. */
  refuseTestKeys?: boolean;
  /** A key row, its owner's, or a token's session is trusted only with a matching seal. */
  seal: CredentialSeal;
  /** Hears of a token, signed with the key, that claims a role its account does not have. */
  reportForgedToken?: ForgedTokenReport;
}

export class CredentialVerifier {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly keys = new Map<string, CachedKey>();
  /** family id → when it was revoked; kept as long as a token of it could still be valid. */
  private readonly revokedFamilies = new Map<string, number>();
  private readonly lastUsedWritten = new Map<string, number>();
  private lastRevocationId = 0;
  private lastPoll = Number.NEGATIVE_INFINITY;
  private readonly statements: ReturnType<typeof prepareStatements>;

  constructor(private readonly options: CredentialVerifierOptions) {
    const db = drizzleOf(options.sqlite);
    this.statements = prepareStatements(db);
    // Families revoked while their access tokens could still be alive must be known at start.
    const since = options.clock.now() - options.accessTokenTtlMs - 60_000;
    this.lastRevocationId =
      db
        .select({ id: max(authRevocations.id) })
        .from(authRevocations)
        .where(lt(authRevocations.createdAt, since))
        .get()?.id ?? 0;
    this.poll(options.clock.now());
  }

  /**
   * The verdict on an access token: at once (no promise) for one this process verified before and
   * still caches, else once its signature is checked. One look-up and one hash either way.
   */
  accessToken(token: string, via: "bearer" | "cookie"): Verification | Promise<Verification> {
    const now = this.options.clock.now();
    this.pollIfDue(now);
    const cacheKey = sha256Hex(token);
    return this.fromCache(cacheKey, via, now) ?? this.verifySignature(token, via, cacheKey, now);
  }

  private async verifySignature(
    token: string,
    via: "bearer" | "cookie",
    cacheKey: string,
    now: number,
  ): Promise<Verification> {
    const verdict = await verifyAccessToken(
      this.options.signingKeys,
      token,
      now,
      this.options.accessTokenTtlMs / 1000,
    );
    if (!verdict.ok) return verdict;
    const { claims } = verdict;
    if (this.revokedFamilies.has(claims.fam)) return { ok: false, reason: "revoked" };
    // The durable check, read after the signature (no await between it and the cache write).
    if (!this.sessionLive(claims.fam, claims.sub, claims.role)) {
      return { ok: false, reason: "revoked" };
    }
    const principal = {
      kind: "user" as const,
      id: claims.sub,
      role: claims.role,
      familyId: claims.fam,
      via,
    };
    if (this.options.cacheTokens === false) return { ok: true, principal };
    if (this.tokens.size >= CACHE_LIMIT) this.tokens.clear();
    this.tokens.set(cacheKey, { principal, expiresAt: claims.exp * 1000, checkedAt: now });
    return { ok: true, principal };
  }

  private fromCache(cacheKey: string, via: "bearer" | "cookie", now: number): Verification | null {
    const cached = this.tokens.get(cacheKey);
    if (cached === undefined || cached.expiresAt <= now) return null;
    if (this.revokedFamilies.has(cached.principal.familyId))
      return { ok: false, reason: "revoked" };
    if (elapsedMs(now, cached.checkedAt) >= TOKEN_RECHECK_MS) {
      const { familyId, id, role } = cached.principal;
      if (!this.sessionLive(familyId, id, role)) {
        this.tokens.delete(cacheKey);
        return { ok: false, reason: "revoked" };
      }
      cached.checkedAt = now;
    }
    return {
      ok: true,
      principal: cached.principal.via === via ? cached.principal : { ...cached.principal, via },
    };
  }

  /**
   * Whether the session (refresh family) exists, is the subject's, is not revoked, and matches its
   * seal (a revocation cleared in the file breaks the seal, so the session stays ended), and its
   * account's row matches its own: a token is refused like the account's login and keys when
   * the row was changed in the file (a role raised or lowered there). And the account's role is
   * the one the token claims: a token re-signed with `role: "admin"` by someone holding
   * `JWT_SECRET_KEY` acts for no admin (probe 27b F1); a role changed by Palisade ends the
   * account's sessions anyway.
   */
  sessionLive(familyId: string, userId: string, role: string): boolean {
    const family = this.statements.familyState({ id: familyId });
    if (!family || family.userId !== userId || family.revokedAt !== null) return false;
    const { seal } = this.options;
    if (!seal.intact.family(family)) return false;
    // The seal first: a row changed in the file is reported as such, whatever the token claims.
    if (
      family.ownerId === null ||
      !seal.intact.account(ownerAccount({ ...family, ownerId: family.ownerId }))
    ) {
      return false;
    }
    if (family.ownerRole !== role) {
      this.options.reportForgedToken?.(userId, role);
      return false;
    }
    return true;
  }

  verifyApiKey(key: string): Verification {
    const now = this.options.clock.now();
    this.pollIfDue(now);
    // A pal_ key with a wrong checksum is a typo or a forgery: no need to ask the database.
    if (KEY_PATTERN.test(key) ? !hasValidChecksum(key) : key.length < 16) {
      return { ok: false, reason: "invalid" };
    }
    if (this.options.refuseTestKeys && key.startsWith("pal_test_")) {
      return { ok: false, reason: "invalid" };
    }
    const hash = hashApiKey(key);
    const cached = this.keys.get(hash);
    if (cached && elapsedMs(now, cached.cachedAt) < KEY_CACHE_MS) {
      if (cached.expiresAt !== null && cached.expiresAt <= now) {
        return { ok: false, reason: "expired" };
      }
      this.noteUse(cached.principal.id, now);
      return { ok: true, principal: cached.principal };
    }
    const row = this.statements.findKey({ prefix: keyPrefix(key, hash) });
    // The stored hash as the file holds it: of another length or type (written into the file), a
    // mismatch like any other, not timingSafeEqual's RangeError, a 500 on every route the key was
    // sent to (probe 82g F3).
    if (!row || !sealMatches(hash, row.secretHash)) {
      return { ok: false, reason: "invalid" };
    }
    // Written into the file rather than by Palisade: as good as no key at all.
    const { seal } = this.options;
    if (!seal.intact.apiKey(row)) return { ok: false, reason: "invalid" };
    if (row.revokedAt !== null) return { ok: false, reason: "revoked" };
    if (row.expiresAt !== null && row.expiresAt <= now) return { ok: false, reason: "expired" };
    // An owned key whose owner is gone acts for nobody.
    if (row.userId !== null && row.ownerId === null) return { ok: false, reason: "revoked" };
    if (
      row.ownerId !== null &&
      !seal.intact.account(ownerAccount({ ...row, ownerId: row.ownerId }))
    ) {
      return { ok: false, reason: "invalid" };
    }
    const principal = {
      kind: "key" as const,
      id: row.id,
      // A name written into the file as a BLOB or a number: its text (probe 82g F2: `/me` was 500).
      name: storedValueText(row.name) ?? "",
      userId: row.userId,
      scopes: boundScopes(JSON.parse(row.scopes) as Scope[], row.ownerRole),
      ...(row.origin === "bootstrap" ? { limitName: bootstrapLimitName(row.secretHash) } : {}),
    };
    if (this.keys.size >= CACHE_LIMIT) this.keys.clear();
    this.keys.set(hash, { principal, cachedAt: now, expiresAt: row.expiresAt });
    this.noteUse(row.id, now);
    return { ok: true, principal };
  }

  /** Records a revocation for every process and applies it here at once. */
  revoke(kind: "family" | "key" | "user", subject: string): void {
    this.recordRevocation(kind, subject);
    this.applyRevocations();
  }

  /** Appends to the feed only: for a caller that makes it part of its own transaction. */
  recordRevocation(kind: "family" | "key" | "user", subject: string): void {
    let stored: { changes: number };
    try {
      stored = this.statements.insertRevocation.run({
        kind,
        subject,
        createdAt: this.options.clock.now(),
      }) as unknown as { changes: number };
    } catch (error) {
      throw this.feedSequenceSpent(error) ?? error;
    }
    // A trigger written into the file can skip the insert without an error: the revocation then
    // fails, with what it is part of, rather than reaching no other process.
    if (stored.changes !== 1) {
      throw new Error(
        "the revocation was not stored: something in the database file (a trigger) stopped the write",
      );
    }
  }

  /**
   * SQLite refuses an AUTOINCREMENT insert once the sequence is at its last id with "database or
   * disk is full": no disk is, and Palisade's ids never get near it; it was written into the file
   * (probe 58c F2: every logout, revocation, role change and erasure refused, the operator sent to
   * look for a full disk). Named as the other sequences are, with its value as the file holds it.
   */
  private feedSequenceSpent(error: unknown): Error | null {
    if (sqliteCodeOf(error) !== "SQLITE_FULL") return null;
    // Or a row written at the last id, whatever the sequence says (probe 58d F2).
    return spentIdsIn(this.options.sqlite, "auth_revocations", "the revocation feed's");
  }

  /** Reads the feed now, so what this process just revoked takes effect here at once. */
  applyRevocations(): void {
    this.poll(this.options.clock.now());
  }

  private pollIfDue(now: number): void {
    if (elapsedMs(now, this.lastPoll) >= REVOCATION_POLL_MS) this.poll(now);
  }

  private poll(now: number): void {
    const since = Number.isFinite(this.lastPoll)
      ? this.lastPoll - REVOCATION_OVERLAP_MS
      : now - this.options.accessTokenTtlMs - 60_000;
    this.lastPoll = now;
    const rows = this.statements.newRevocations.all({ after: this.lastRevocationId, since });
    // Inside a caller's transaction (an erasure, a role change) the feed shows its own rows before
    // they are committed: applied at once, as a revocation must be, and undone here if that
    // transaction rolls back, at its COMMIT too, or this process alone would keep refusing.
    if (rows.length > 0 && this.options.sqlite.inTransaction) this.undoIfRolledBack(rows);
    // What the rows name is gathered first and each cache is passed over once, whatever the
    // number of rows: one pass per row held the event loop for seconds after tens of thousands of
    // sessions were ended at once (sessions:end).
    const families = new Set<string>();
    const keys = new Set<string>();
    // The owner's role changed or the account went: its keys are re-read at their next use.
    const owners = new Set<string>();
    for (const row of rows) {
      this.lastRevocationId = Math.max(this.lastRevocationId, row.id);
      if (row.kind === "family") {
        this.revokedFamilies.set(row.subject, row.createdAt);
        families.add(row.subject);
      } else if (row.kind === "key") {
        keys.add(row.subject);
      } else if (row.kind === "user") {
        owners.add(row.subject);
      }
    }
    if (families.size > 0) {
      for (const [hash, entry] of this.tokens) {
        if (families.has(entry.principal.familyId)) this.tokens.delete(hash);
      }
    }
    if (keys.size > 0 || owners.size > 0) {
      for (const [hash, entry] of this.keys) {
        const { id, userId } = entry.principal;
        if (keys.has(id) || (userId !== null && owners.has(userId))) this.keys.delete(hash);
      }
    }
    for (const [family, revokedAt] of this.revokedFamilies) {
      if (revokedAt < now - this.options.accessTokenTtlMs - 60_000) {
        this.revokedFamilies.delete(family);
      }
    }
  }

  private undoIfRolledBack(rows: readonly { id: number; kind: string; subject: string }[]): void {
    const before = this.lastRevocationId;
    const { sqlite } = this.options;
    // A database closed first (a CLI command that failed and ended) leaves nothing to undo here.
    afterTransaction(sqlite, () => {
      const stored = sqlite.query("SELECT 1 FROM auth_revocations WHERE id = ?1");
      const gone = rows.filter((row) => stored.get(row.id) === null);
      if (gone.length === 0) return;
      const revoked = sqlite.query(
        "SELECT 1 FROM auth_revocations WHERE kind = 'family' AND subject = ?1",
      );
      for (const row of gone) {
        if (row.kind === "family" && revoked.get(row.subject) === null) {
          this.revokedFamilies.delete(row.subject);
        }
      }
      // The feed is read again from before them: what was committed meanwhile is applied anew.
      this.lastRevocationId = Math.min(this.lastRevocationId, before);
    });
  }

  private noteUse(keyId: string, now: number): void {
    const last = this.lastUsedWritten.get(keyId) ?? 0;
    if (elapsedMs(now, last) < LAST_USED_WRITE_MS) return;
    this.lastUsedWritten.set(keyId, now);
    try {
      this.statements.touchKey.run({ now, id: keyId });
    } catch {
      // last_used_at is a hint: a file that cannot take it (locked, full) must not fail the
      // request it describes, nor change its answer. Written again at the key's next use.
      this.lastUsedWritten.set(keyId, last);
    }
  }
}
