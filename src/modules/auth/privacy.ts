/**
 * @module
 * What the auth feature holds about a user, as privacy contributors: the sessions (refresh-token
 * families) and the API keys the user owns. The account row itself is the privacy service's
 * `account`: it is exported as the profile and deleted last.
 */
import { asc, eq, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { rateLimitCounters, refreshFamilies, users } from "../../db/schema";
import { WITHHELD_PRINCIPAL } from "../../plugins/audit/privacy";
import type { CredentialSeal } from "../../plugins/auth/seal";
import { sealedFamilyColumns } from "../../plugins/auth/sealed-columns";
import type { PrivacyContributor } from "../privacy/contributor";
import type { PrivacyAccount } from "../privacy/service";
import type { ApiKeyService, SealScan } from "./api-keys";
import { type AuthService, accountLimitKey } from "./service";

export function sessionsContributor(
  db: AppDatabase,
  auth: AuthService,
  seal: Pick<CredentialSeal, "intact">,
): PrivacyContributor {
  // Prepared by the first export, not at start.
  const statements = preparedOnUse({
    sessions: () =>
      db
        .select({
          ...sealedFamilyColumns,
          startedAt: refreshFamilies.createdAt,
          expiresAt: refreshFamilies.expiresAt,
        })
        .from(refreshFamilies)
        .where(eq(refreshFamilies.userId, sql.placeholder("userId")))
        .orderBy(asc(refreshFamilies.createdAt))
        .prepare(),
  });
  return {
    name: "sessions",
    // The sessions whose sealed row names the user: another's moved to them in the file is not
    // theirs to be shown (probe 38b F6), as their keys are read (apiKeysContributor).
    export: (userId) =>
      statements.sessions
        .all({ userId })
        .filter((row) => seal.intact.family(row))
        .map(({ id, startedAt, expiresAt, revokedAt }) => ({
          familyId: id,
          startedAt,
          expiresAt,
          revokedAt,
        })),
    // Used tokens first, a part at a time while the account stands (its sessions go on without
    // them): the erasure's transaction then ends the sessions and deletes what is left, at most a
    // token a session and those made since (probe 86c F2: 400,000 rows held the lock 12.9 s).
    eraseAhead: (userId) => () => auth.deleteUsedTokens(userId, USED_TOKENS_AHEAD_PART),
    erase: (userId) => auth.revokeUserSessions(userId),
  };
}

/** Used refresh tokens an erasure deletes in one transaction ahead of its own. */
export const USED_TOKENS_AHEAD_PART = 250;

/** API keys an erasure revokes in one transaction ahead of its own (~20–40 ms of the lock here). */
export const KEYS_AHEAD_PART = 100;

/** Keys whose seal an erasure compares with the user's in one part ahead of its transaction. */
export const SEAL_SCAN_PART = 1_000;

/** The reason on a revocation made ahead of an erasure's transaction. */
const ERASURE_REASON = "account_erasure";

/** No address: an erasure takes the person's addresses out of their rows (probe 37a F3). */
const erasureOrigin = (requestId: string | null) => ({ ip: null, route: null, requestId });

export function apiKeysContributor(apiKeys: ApiKeyService): PrivacyContributor {
  // The keys whose sealed row names the user: a `user_id` written into the file must not put
  // another's key, and what it did (its conversations, its audit rows), into this user's export or
  // erasure (probe 20c F3). The export reads the keys the file lists under the user and checks
  // each; an erasure also finds the user's keys moved to another account in the file, checking
  // every key's seal (probe 38b F7), which only an erasure pays for (probe 39a F3: 10,000 keys made
  // every export ~150 ms). Every key the file says is theirs is still revoked with the erasure.
  const listedKeysOf = (userId: string) =>
    apiKeys.list(userId).filter((key) => apiKeys.intact(key.id));
  // What the scan of every key's seal found ahead of each erasure under way here: the transaction
  // compares only what came after it (probe 91e F1). Taken by the transaction; a scan whose
  // erasure then found no account is replaced by the next erasure of that user, or dropped with
  // the oldest past a few.
  const scans = new Map<string, SealScan>();
  return {
    name: "apiKeys",
    export: (userId) => {
      const keys = listedKeysOf(userId);
      const own = new Set(keys.map((key) => key.id));
      // A successor an admin made by rotating the user's key is the admin's (a successor acts for
      // whoever rotated): withheld as the audit events withhold another principal (probe 32d F3).
      return keys.map(({ userId: _owner, ...key }) => ({
        ...key,
        replacedBy:
          key.replacedBy === null || own.has(key.replacedBy) ? key.replacedBy : WITHHELD_PRINCIPAL,
      }));
    },
    actors: (userId, forErasure) => {
      if (!forErasure) return listedKeysOf(userId).map((key) => `key:${key.id}`);
      const scanned = scans.get(userId);
      scans.delete(userId);
      return apiKeys.sealedKeysOf(userId, scanned).map((key) => `key:${key.id}`);
    },
    // Revoked KEYS_AHEAD_PART at a time before the erasure's transaction (each revocation sealed
    // and audited: 2,000 keys held every request ~0.6–1.8 s in it; probe 41b F5), by whoever
    // asked for the erasure, not its pseudonym (probe 42a F2): the keys listed under the user whose
    // seal names them (its actors). Revoked in the transaction instead: a key whose seal names the
    // user but the file lists under another (its row fails its seal, which a revocation leaves as
    // it was, so with `revoked_at` set the transaction's seal scan would no longer find it theirs,
    // nor its conversations and audit rows), one listed whose seal fails (reported there), and one
    // created since. Then the scan of every key's seal for the user, SEAL_SCAN_PART keys a part,
    // which the transaction's `actors` takes up (probe 91e F1).
    eraseAhead(userId, { requestedBy, requestId, actors }) {
      const sealedToThem = new Set(actors);
      const active = apiKeys
        .list(userId)
        .filter((key) => key.revokedAt === null && sealedToThem.has(`key:${key.id}`))
        .map((key) => key.id);
      let next = 0;
      // Then every key's seal, a part at a time, read outside any write lock.
      const found: string[] = [];
      let after: string | null = null;
      scans.delete(userId);
      return () => {
        if (next < active.length) {
          const part = active.slice(next, next + KEYS_AHEAD_PART);
          apiKeys.revokeMany(part, requestedBy, ERASURE_REASON, erasureOrigin(requestId));
          next += part.length;
          return false;
        }
        const part = apiKeys.sealScanPart(userId, after, SEAL_SCAN_PART);
        found.push(...part.ids);
        if (part.lastRowid !== null) {
          after = part.lastRowid;
          return false;
        }
        if (scans.size >= 16) scans.delete(scans.keys().next().value as string);
        scans.set(userId, { ids: found, throughRowid: after });
        return true;
      };
    },
    erase(userId, { pseudonym, requestId, actors }) {
      // A key listed under the user whose row fails its seal has no owner that can be told: it is
      // revoked, and reported (its conversations and audit rows are left; probe 39a F6).
      const erased = new Set(actors);
      const listed = apiKeys.list(userId);
      for (const key of listed) if (!erased.has(`key:${key.id}`)) apiKeys.intact(key.id);
      // The keys whose seal names the user are its actors (found in this transaction by the
      // seal scan `actors` does): those listed under another account are revoked too, found
      // again by no second scan.
      const listedIds = new Set(listed.map((key) => key.id));
      const elsewhere = actors
        .filter((actor) => actor.startsWith("key:") && !listedIds.has(actor.slice(4)))
        .map((actor) => actor.slice(4));
      const active = listed.filter((key) => key.revokedAt === null).map((key) => key.id);
      apiKeys.revokeMany([...active, ...elsewhere], pseudonym, undefined, erasureOrigin(requestId));
    },
  };
}

/**
 * The limiter's counts kept under the person's names: each principal's (`user:<id>`, `key:<id>`,
 * their limits and lockout violations) and the account's failed-login count (`account:` and a hash
 * of the address). They would go when their windows pass; an erasure takes them at once. Only the
 * SQLite store's: with REDIS_URL they are Redis's, and go when their windows pass.
 */
export function limiterCountsContributor(db: AppDatabase): PrivacyContributor {
  const keysOf = (userId: string, actors: readonly string[]) => {
    // The account's failed-login count is keyed by its address's key; an account set aside by the
    // address upgrade (no key: another account holds it) has none of its own.
    const row = db
      .select({ emailKey: users.emailKey })
      .from(users)
      .where(eq(users.id, userId))
      .get();
    return row?.emailKey ? [...actors, accountLimitKey(row.emailKey)] : [...actors];
  };
  // The counters' key is (policy, key): a search by key alone read the whole table, which holds a
  // row for every client of the last two windows (hundreds of thousands under a flood; an erasure
  // held the write lock for it). So each policy in the table is found by its own seek, and the
  // person's keys within it through the key (test/modules/privacy.test.ts reads the plan).
  const theirs = (keys: readonly string[]) =>
    sql`WITH RECURSIVE policies(name) AS (
          SELECT min(policy) FROM ${rateLimitCounters}
          UNION ALL
          SELECT (SELECT min(policy) FROM ${rateLimitCounters} WHERE policy > policies.name)
          FROM policies WHERE policies.name IS NOT NULL)
        SELECT counter.rowid FROM policies CROSS JOIN ${rateLimitCounters} AS counter
        WHERE counter.policy = policies.name AND counter.key IN ${keys}`;
  return {
    name: "rateLimits",
    export: (userId, { actors }) =>
      db
        .select({
          policy: rateLimitCounters.policy,
          windowStart: rateLimitCounters.windowStart,
          current: rateLimitCounters.current,
          previous: rateLimitCounters.previous,
        })
        .from(rateLimitCounters)
        .where(sql`rowid IN (${theirs(keysOf(userId, actors))})`)
        .orderBy(asc(rateLimitCounters.policy))
        .all(),
    erase(userId, { actors }) {
      db.delete(rateLimitCounters)
        .where(sql`rowid IN (${theirs(keysOf(userId, actors))})`)
        .run();
    },
  };
}

export function account(db: AppDatabase, auth: AuthService): PrivacyAccount {
  return {
    find: (userId) => auth.findUser(userId),
    stored: (userId) =>
      db.select({ id: users.id }).from(users).where(eq(users.id, userId)).get() !== undefined,
    remove(userId) {
      db.delete(users).where(eq(users.id, userId)).run();
    },
    isAdmin: (userId) => auth.findUser(userId)?.role === "admin",
    anyAdmin: () =>
      db
        .select({ id: users.id })
        .from(users)
        .where(eq(users.role, "admin"))
        .all()
        .some(({ id }) => auth.findUser(id)?.role === "admin"),
  };
}
