import { sql } from "drizzle-orm";
import { index, integer, sqliteTable, text, uniqueIndex } from "drizzle-orm/sqlite-core";
import { users } from "./users";

/**
 * Refresh families: one per login. Revocation (logout, reuse, role change, erasure) is recorded
 * here, on the family, so it also covers tokens inserted after it: a refresh consumes its token and
 * inserts the next one in one transaction that first checks this row, and every access-token
 * verification that is not a cache hit reads it. `expires_at` is the latest expiry of any token
 * issued in the family (refresh or access); the row is kept until then, so a family, once revoked,
 * stays revoked for as long as any of its tokens could be valid. A token whose family has no row is
 * refused.
 */
export const refreshFamilies = sqliteTable(
  "refresh_families",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
    revokedAt: integer("revoked_at"),
    /** HMAC of id, owner and revocation (plugins/auth/seal.ts): a row without a match is refused. */
    seal: text("seal"),
  },
  (table) => [
    index("refresh_families_user").on(table.userId),
    index("refresh_families_expires").on(table.expiresAt),
    // The sessions ended: what the prune walks to delete their used tokens (migration 0035).
    index("refresh_families_revoked")
      .on(table.revokedAt)
      .where(sql`${table.revokedAt} IS NOT NULL`),
  ],
);

/**
 * Refresh tokens, stored as SHA-256 hashes. Each login starts a family; each refresh marks its
 * token used and adds the next one to the family. A used token presented again means it was
 * copied: the whole family is revoked.
 */
export const refreshTokens = sqliteTable(
  "refresh_tokens",
  {
    id: text("id").primaryKey(),
    userId: text("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    familyId: text("family_id").notNull(),
    tokenHash: text("token_hash").notNull(),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
    usedAt: integer("used_at"),
    revokedAt: integer("revoked_at"),
    /** HMAC of what the token grants (plugins/auth/seal.ts): a row without a match is refused. */
    seal: text("seal"),
  },
  (table) => [
    uniqueIndex("refresh_tokens_hash").on(table.tokenHash),
    index("refresh_tokens_family").on(table.familyId),
    index("refresh_tokens_user").on(table.userId),
    // What the prune deletes first, found without reading the rest (probe 87c: a scan of 720,000
    // rows held the write lock 0.15 s every 10 s; migration 0035).
    index("refresh_tokens_expires").on(table.expiresAt),
    // A session's tokens not used yet (one, or a few in a rotation's grace): what ending it
    // revokes, found without reading its used ones (10,000 in a full session: probe 87a F1).
    index("refresh_tokens_unused")
      .on(table.familyId)
      .where(sql`${table.usedAt} IS NULL AND ${table.revokedAt} IS NULL`),
  ],
);

export const API_KEY_SCOPES = ["chat", "payments", "admin", "metrics"] as const;
/** api: created through the admin API or the CLI; bootstrap: from API_KEYS, reconciled at start. */
export const API_KEY_ORIGINS = ["api", "bootstrap"] as const;

/**
 * API keys: only a short lookup prefix and the SHA-256 of the whole key are kept. Rotation gives
 * the old key an expiry (the grace period) and points it at its successor.
 */
export const apiKeys = sqliteTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    name: text("name").notNull(),
    /** What finds the row, shown to operators: a `pal_` key's first 16 characters, another's `sha256:` and the start of its hash. */
    prefix: text("prefix").notNull(),
    secretHash: text("secret_hash").notNull(),
    /** JSON array of scopes. */
    scopes: text("scopes").notNull(),
    /** The user the key acts for (its creator); null for bootstrap keys from API_KEYS. */
    userId: text("user_id").references(() => users.id, { onDelete: "cascade" }),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at"),
    lastUsedAt: integer("last_used_at"),
    revokedAt: integer("revoked_at"),
    /** The key a rotation replaced this one with, believed only with `successor_seal`: see below. */
    replacedBy: text("replaced_by"),
    /**
     * Whether and by which key this key was rotated is believed only with this seal over (id,
     * replaced_by, expires_at) (plugins/auth/seal.ts, `successor`), written when the key is made
     * (replaced by none) and when it is rotated (which also sets its expiry, the grace's end): a
     * `replaced_by` written into the file, cleared, or copied from another row, or the key's own
     * mark from before its rotation written back, matches nothing.
     */
    successorSeal: text("successor_seal"),
    /**
     * The first key of the rotation chain this key ends (its own id when it replaced none), and an
     * HMAC of the pair (plugins/auth/seal.ts, `lineage`): whose payments an ownerless key holds,
     * written on the key itself, so nothing done to another row can move or cut it.
     */
    lineage: text("lineage"),
    lineageSeal: text("lineage_seal"),
    origin: text("origin", { enum: API_KEY_ORIGINS }).notNull().default("api"),
    /** HMAC of what the key grants (plugins/auth/seal.ts): a row without a match is refused. */
    seal: text("seal"),
  },
  (table) => [uniqueIndex("api_keys_prefix").on(table.prefix)],
);

export const REVOCATION_KINDS = ["family", "key", "user"] as const;

/**
 * An append-only feed of revocations that every process polls (at most a second apart) to drop
 * what it cached: a refresh family (logout, reuse), an API key (revoke, rotation), or every token
 * of a user issued before the row (role change, erasure).
 */
export const authRevocations = sqliteTable(
  "auth_revocations",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    kind: text("kind", { enum: REVOCATION_KINDS }).notNull(),
    subject: text("subject").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (table) => [index("auth_revocations_created").on(table.createdAt)],
);
