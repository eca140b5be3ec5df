/**
 * @module
 * API key management: create (the key is returned once and only its hash kept), list, revoke,
 * rotate (a new key; the old one keeps working until the grace period ends), and the bootstrap
 * keys from API_KEYS, reconciled with the variable at every start.
 *
 * Owners: a key acts for the user who made it (or the one named with `keys:create --owner`) and may
 * hold no scope that user's role does not allow (`ROLE_SCOPES`): checked at creation, applied to the
 * stored scopes when the role changes (`boundToRole`: narrowed, or revoked when nothing is left,
 * audited), and again at every use by the verifier. Ownerless keys are operator keys: the
 * bootstrap keys, whose power is whatever API_KEYS says, and keys made by `keys:create` without
 * `--owner` or through the API by a bootstrap key; they are bounded by their own scopes only.
 */
import type { Database } from "bun:sqlite";
import { and, desc, eq, inArray, isNull, lt, or, sql } from "drizzle-orm";
import { type Clock, DAY_MS } from "../../clock";
import { type BootstrapKey, ConfigError } from "../../config";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { sealMatches } from "../../db/row-seal";
import { API_KEY_SCOPES, apiKeys, users } from "../../db/schema";
import { LAST_TIME_MS, orderableTime, readableTime, storedValueText } from "../../db/stored-values";
import { encodeCursor, type ListCursor } from "../../list-cursor";
import { secretScrubber, storedText } from "../../logging/logger";
import { scrubAnySpelling, type TextScrubber } from "../../logging/scrub";
import type { AuditLog } from "../../plugins/audit/log";
import {
  generateApiKey,
  hashApiKey,
  hashedPrefix,
  type KeyEnvironment,
  keyPrefix,
} from "../../plugins/auth/api-key-format";
import type { CredentialVerifier } from "../../plugins/auth/credentials";
import { keyLineage } from "../../plugins/auth/lineage";
import {
  ActorGone,
  boundScopes,
  ROLE_SCOPES,
  type Role,
  type Scope,
} from "../../plugins/auth/principal";
import type { CredentialSeal, SealedSuccessor } from "../../plugins/auth/seal";
import { sealedAccountColumns, sealedKeyColumns } from "../../plugins/auth/sealed-columns";
import { withoutShapingCharacters } from "../../shaping-characters";
import { showsSomething } from "../../visible-text";

/** A stored key as operators see it: never its hash. */
type KeyRow = Omit<
  typeof apiKeys.$inferSelect,
  "secretHash" | "seal" | "lineage" | "lineageSeal" | "successorSeal"
> & {
  /** The owner's email when the key has an owner. */
  ownerEmail: (typeof users.$inferSelect)["email"] | null;
};

/** A stored key as its seal reads it. */
type StoredKeyRow = ReturnType<ApiKeyService["storedKeys"]>[number];

export type ApiKeyRecord = Omit<KeyRow, "scopes"> & { scopes: Scope[] };

/** A listed key and what of it fails its seal (each failure reported). */
export interface CheckedKey {
  record: ApiKeyRecord;
  seals: {
    /** The key's row or its owner's account fails its seal: the key is refused. */
    tampered: boolean;
    /** Its lineage fails: no payments for a key acting for no user, no rotation. */
    lineageTampered: boolean;
    /** Its rotation mark fails: no rotation. */
    rotationTampered: boolean;
  };
}

/**
 * Where a key action came from, for its audit row: an admin route's client address, matched route
 * and request id (probe 36b F1: they were left empty, so an address search missed who minted keys).
 */
export interface KeyActionOrigin {
  ip: string | null;
  route: string | null;
  requestId: string | null;
  /**
   * Whether the credential that asked still stands, asked in the writing transaction: requests
   * already past the auth stage when their credential was revoked or logged out must not mint,
   * rotate or revoke after it (ActorGone; probe 38c F1). Absent: the CLI, an erasure.
   */
  actorStands?: () => boolean;
}

/** The audit row's fields of an origin. */
function audited(origin: KeyActionOrigin | undefined) {
  return origin === undefined
    ? undefined
    : { ip: origin.ip, route: origin.route, requestId: origin.requestId };
}

/** Throws ActorGone when the credential that asked no longer stands. */
function stillStanding(origin: KeyActionOrigin | undefined): void {
  if (origin?.actorStands?.() === false) throw new ActorGone();
}

export interface NewApiKey {
  name: string;
  scopes: Scope[];
  userId: string | null;
  expiresAt?: number | null;
  environment?: KeyEnvironment;
}

export const MAX_ROTATION_GRACE_MS = 7 * DAY_MS;
export const DEFAULT_ROTATION_GRACE_MS = 60 * 60 * 1000;

/** Why a key may not be created as asked; the edge turns it into a 422 or a CLI usage error. */
export type KeyRefusal =
  | { code: "SCOPES_EXCEED_ROLE"; role: Role; scopes: Scope[] }
  | { code: "TEST_KEY_IN_PRODUCTION" }
  | { code: "NO_OWNER" };

/** What `create` throws for a key the owner's role (read in the inserting transaction) does not allow. */
export class KeyRefused extends Error {
  constructor(readonly refusal: KeyRefusal) {
    super(`API key refused: ${refusal.code}`);
    this.name = "KeyRefused";
  }
}

export interface ApiKeyServiceOptions {
  /** Production: no `pal_test_` key is created or rotated. */
  refuseTestKeys?: boolean;
  /** Every key row is written with its seal, and resealed by every change of what it grants. */
  seal: CredentialSeal;
  /** The configured secrets: redacted from a key's name as it is stored (storedKeyName). */
  secretValues?: readonly string[];
}

/** The longest key name, in UTF-16 units as the API counts it; the CLI holds to it too. */
export const MAX_KEY_NAME_LENGTH = 100;

/**
 * What a key's name may not hold: controls (NUL, ESC, CR, LF, DEL, C1), line and paragraph
 * separators, unpaired surrogates, unassigned code points and noncharacters, the bidirectional
 * overrides, embeddings, isolates and marks that make a listing read otherwise than it is stored,
 * and every other character that draws nothing (a zero-width space, a soft hyphen: two names that
 * look alike, or a secret split so redaction misses it; probe 39b F5, F6), asked of the name
 * once the joiners, variation selectors and tags that shape visible text where they stand are
 * taken out (shaping-characters.ts: `ops\u200Dkey` is refused, `👨‍👩‍👧` kept; probe 40b F4).
 */
const KEY_NAME_REFUSED = /[\p{Cc}\p{Cs}\p{Cn}\p{Zl}\p{Zp}\p{Cf}\p{Default_Ignorable_Code_Point}]/u;

/**
 * What a scan of every key's seal ahead of an erasure found: the keys sealed to the user, and the
 * last rowid it read (text; null when the file held no key).
 */
export interface SealScan {
  ids: readonly string[];
  throughRowid: string | null;
}

/** Why a key's name is refused (the API's 422, the CLI's usage error), or null (probe 38a F1). */
export function keyNameProblem(name: string): string | null {
  if (name.length === 0 || name.length > MAX_KEY_NAME_LENGTH) {
    return `Must be 1 to ${MAX_KEY_NAME_LENGTH} characters (UTF-16 units)`;
  }
  if (KEY_NAME_REFUSED.test(withoutShapingCharacters(name))) {
    return "Must not contain control characters, line breaks, bidirectional controls, unpaired surrogates, unassigned code points or characters that draw nothing where they stand";
  }
  // A name of blanks alone names nothing (the chat message's rule).
  if (!showsSomething(name)) return "Must contain a character that shows";
  return null;
}

/**
 * A key's name as stored, listed, exported and audited: configured secrets and credential shapes
 * redacted, as the audit row's scrubber redacts them (until this release the key list, `keys:list`
 * and the owner's export showed what the audit log hid, probes 38a F1, 38c F3), then well-formed
 * and held to its bound between characters (a redaction can lengthen it).
 */
function storedKeyName(name: unknown, scrub: TextScrubber): string {
  // A rotation names the new key after the old one's row, which the file may hold as a BLOB
  // (probe 82g F2: the rotation was a 500).
  return storedText(scrubAnySpelling(storedValueText(name) ?? "", scrub), MAX_KEY_NAME_LENGTH);
}

type KeyChange = Partial<{
  scopes: string;
  expiresAt: number | null;
  revokedAt: number | null;
  replacedBy: string | null;
  successorSeal: string;
  prefix: string;
}>;

/** Keys with their owner's email: what every listing reads. */
function selectKeys(db: AppDatabase) {
  return db
    .select({
      id: apiKeys.id,
      name: apiKeys.name,
      prefix: apiKeys.prefix,
      scopes: apiKeys.scopes,
      userId: apiKeys.userId,
      createdAt: apiKeys.createdAt,
      expiresAt: apiKeys.expiresAt,
      lastUsedAt: apiKeys.lastUsedAt,
      revokedAt: apiKeys.revokedAt,
      replacedBy: apiKeys.replacedBy,
      successorSeal: apiKeys.successorSeal,
      ownerEmail: users.email,
      origin: apiKeys.origin,
    })
    .from(apiKeys)
    .leftJoin(users, eq(users.id, apiKeys.userId));
}

function prepareActiveById(db: AppDatabase) {
  return db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.id, sql.placeholder("id")), isNull(apiKeys.revokedAt)))
    .prepare();
}

/**
 * A key's sealed columns by id: every change reads them (an erasure of a user with a thousand keys
 * revokes each, with the write lock held; building the query each time was a third of that).
 */
function prepareSealedById(db: AppDatabase) {
  return db
    .select(sealedKeyColumns)
    .from(apiKeys)
    .where(eq(apiKeys.id, sql.placeholder("id")))
    .prepare();
}

/**
 * A stored key's scopes. Only a sealed row is ever believed, but every row is listed: one written
 * into the file may hold anything there, and a listing must show it (as tampered), not fail.
 */
function storedScopes(text: string): Scope[] {
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) ? parsed.filter((scope) => isScope(String(scope))) : [];
  } catch {
    return [];
  }
}

/**
 * Whether and by which key a key was rotated, as its row's `successor_seal` vouches; `intact`
 * false (reported, `replacedBy` null) when the mark fails its seal: a `replaced_by` written,
 * cleared or copied in the file.
 */
function markOf(
  seal: CredentialSeal,
  row: SealedSuccessor & { successorSeal: string | null },
): { intact: boolean; replacedBy: string | null } {
  const intact = seal.intact.successor(row);
  return { intact, replacedBy: intact ? row.replacedBy : null };
}

/** A listed row as admins see it: `replacedBy` only as its sealed rotation mark (`markOf`) says. */
/**
 * The time a key is listed by: its creation, or for a row whose creation the file holds as no time
 * (text, a fraction, out of range: written there, not by Palisade) a time after every real one, so
 * it heads the list and a cursor can name it. Ordered by the column itself, such a row (SQLite
 * sorts text above every number) came first and could not be paged past (probe 46b F1).
 */
const UNREADABLE_LISTED_AT = LAST_TIME_MS + 1;
const LISTED_TIME = sql<number>`(CASE WHEN ${orderableTime(apiKeys.createdAt)} THEN ${apiKeys.createdAt} ELSE ${sql.raw(String(UNREADABLE_LISTED_AT))} END)`;
/**
 * Keys of one listed time are ordered by their place in the file, which a cursor can always name:
 * by id, a row written into the file with an id longer than a cursor holds, empty or a BLOB made
 * the list stop there (422 for its own cursor) or skip the real keys of that time (probe 47a F1).
 */
const KEY_ROWID = sql<number>`"api_keys"."rowid"`;
const listedTime = (createdAt: unknown) =>
  readableTime(createdAt) ? createdAt : UNREADABLE_LISTED_AT;

function toRecord(
  row: KeyRow & { successorSeal: string | null },
  mark: { replacedBy: string | null },
): ApiKeyRecord {
  const { successorSeal: _sealed, ...shown } = row;
  return { ...shown, replacedBy: mark.replacedBy, scopes: storedScopes(row.scopes) };
}

export function isScope(value: string): value is Scope {
  return (API_KEY_SCOPES as readonly string[]).includes(value);
}

export class ApiKeyService {
  private readonly db: AppDatabase;
  /**
   * A key change's UPDATE, prepared once per set of columns it writes: an erasure revokes each of
   * a user's keys, with the write lock held, and building the statement was most of each change.
   */
  private readonly changeStatements = new Map<
    string,
    { run(values: Record<string, unknown>): unknown }
  >();
  private readonly statements: {
    activeById: ReturnType<typeof prepareActiveById>;
    sealedById: ReturnType<typeof prepareSealedById>;
  };
  private readonly scrub: TextScrubber;

  constructor(
    sqlite: Database,
    private readonly clock: Clock,
    private readonly audit: AuditLog,
    private readonly credentials: CredentialVerifier,
    private readonly options: ApiKeyServiceOptions,
  ) {
    this.db = drizzleOf(sqlite);
    const db = this.db;
    this.statements = preparedOnUse({
      activeById: () => prepareActiveById(db),
      sealedById: () => prepareSealedById(db),
    });
    this.scrub = secretScrubber(options.secretValues ?? []);
  }

  /**
   * Whether a key exists and is not revoked: one prepared lookup, since every chat turn of a key
   * asks it (a turn is kept only for an owner still there).
   */
  isActive(id: string): boolean {
    return this.statements.activeById.get({ id }) !== undefined;
  }

  /**
   * Whether a key grants `scope` now, read from its row rather than a cache: not revoked, not
   * expired, its row and its owner's intact, and `scope` among its stored scopes as its owner's
   * role bounds them today (a demoted owner's key no longer grants `admin`).
   */
  grants(id: string, scope: Scope): boolean {
    return this.liveScopes(id)?.includes(scope) ?? false;
  }

  /**
   * Whether a key still verifies, read from its row: not revoked, not expired, its row and its
   * owner's intact, whatever its scopes (a demoted owner's key is narrowed, not ended).
   */
  verifies(id: string): boolean {
    return this.liveScopes(id) !== null;
  }

  /** A live key's scopes as its owner's role bounds them today; null for a key that is not live. */
  private liveScopes(id: string): readonly Scope[] | null {
    const record = this.get(id);
    if (!record || record.revokedAt !== null || !this.intact(record.id)) return null;
    if (record.expiresAt !== null && record.expiresAt <= this.clock.now()) return null;
    // The owner read once: gone or failing its seal, the key is tampered (as `tampered` says).
    const role = record.userId === null ? null : this.roleOf(record.userId);
    if (record.userId !== null && role === null) return null;
    return boundScopes(record.scopes, role);
  }

  /** The owner's role now, or null when there is no such user (or its row fails its seal). */
  private roleOf(userId: string): Role | null {
    const owner = this.db
      .select(sealedAccountColumns)
      .from(users)
      .where(eq(users.id, userId))
      .get();
    return owner && this.options.seal.intact.account(owner) ? owner.role : null;
  }

  /** Whether a key's row matches its seal (reported when it does not). */
  intact(id: string): boolean {
    const row = this.db.select(sealedKeyColumns).from(apiKeys).where(eq(apiKeys.id, id)).get();
    return row !== undefined && this.options.seal.intact.apiKey(row);
  }

  /** Whether a key, or the account it acts for, fails its seal: such a key is refused. */
  tampered(key: Pick<ApiKeyRecord, "id" | "userId">): boolean {
    if (!this.intact(key.id)) return true;
    return key.userId !== null && this.roleOf(key.userId) === null;
  }

  /** Why `spec` may not be created, or null: the owner's role must allow every scope. */
  refusal(spec: NewApiKey): KeyRefusal | null {
    if (this.options.refuseTestKeys && spec.environment === "test") {
      return { code: "TEST_KEY_IN_PRODUCTION" };
    }
    if (spec.userId === null) return null;
    const role = this.roleOf(spec.userId);
    if (role === null) return { code: "NO_OWNER" };
    const beyond = spec.scopes.filter((scope) => !ROLE_SCOPES[role].includes(scope));
    return beyond.length > 0 ? { code: "SCOPES_EXCEED_ROLE", role, scopes: beyond } : null;
  }

  /**
   * Creates the key, or throws KeyRefused. The owner's role is read in the transaction that inserts
   * the key: an owner erased or demoted meanwhile by another process is seen there, not found by
   * the insert's foreign key (a 500) or bypassed (a key beyond the new role).
   */
  create(
    spec: NewApiKey,
    actor: string | null,
    /** A rotation's: the first key of the chain the new key continues (see `lineageOf`). */
    lineage?: string,
    /** The request that asked, for the audit row (none from the CLI). */
    origin?: KeyActionOrigin,
  ): { key: string; record: ApiKeyRecord } {
    const key = generateApiKey(spec.environment ?? "live");
    const id = Bun.randomUUIDv7();
    const name = storedKeyName(spec.name, this.scrub);
    this.db.transaction(
      () => {
        // Stamped once the write lock is held, as a revocation is.
        const now = this.clock.now();
        stillStanding(origin);
        const refused = this.refusal(spec);
        if (refused) throw new KeyRefused(refused);
        this.insertSealed(
          {
            id,
            name,
            prefix: keyPrefix(key),
            secretHash: hashApiKey(key),
            scopes: JSON.stringify(spec.scopes),
            userId: spec.userId,
            createdAt: now,
            expiresAt: spec.expiresAt ?? null,
            origin: "api",
          },
          lineage,
        );
      },
      { behavior: "immediate" },
    );
    this.audit.record({
      type: "admin.key.created",
      outcome: "success",
      actor,
      ...audited(origin),
      detail: { keyId: id, name, scopes: spec.scopes.join(",") },
    });
    return { key, record: this.get(id)! };
  }

  /** The key's lineage (plugins/auth/lineage); null when missing or failing its seal. */
  lineageOf(id: string): string | null {
    return keyLineage(this.db.$client, this.options.seal, id);
  }

  /** The key; `replacedBy` only as its sealed rotation mark says (null when that fails). */
  get(id: string): ApiKeyRecord | null {
    return this.read(id)?.record ?? null;
  }

  /** The key and its rotation mark, from one read of its row. */
  private read(id: string): { record: ApiKeyRecord; mark: ReturnType<typeof markOf> } | null {
    const row = selectKeys(this.db).where(eq(apiKeys.id, id)).get();
    if (!row) return null;
    const mark = markOf(this.options.seal, row);
    return { record: toRecord(row, mark), mark };
  }

  /**
   * The keys whose sealed row names the user, wherever the file's `user_id` column points now: a
   * key moved to another account in the file is still this user's to export and erase (probe 38b
   * F7), and one moved to this user is not (probe 20c F3). Each row is compared with a seal made
   * for this user, without reporting: another user's key is no forgery for not matching it.
   *
   * With `scanned` (what `sealScanPart` found, in parts, ahead of an erasure's transaction), only
   * the keys it found, those listed under the user and those written after it are compared: every
   * key's seal, in the transaction, held the write lock ~150 ms with 4,600 keys in the file, past
   * the 50 ms another process's request waits for it (probe 91e F1).
   */
  sealedKeysOf(userId: string, scanned?: SealScan): ApiKeyRecord[] {
    const { seal } = this.options;
    const candidates = this.db.select(sealedKeyColumns).from(apiKeys);
    const rows =
      scanned === undefined
        ? candidates.all()
        : candidates
            .where(
              or(
                scanned.throughRowid === null
                  ? sql`1`
                  : sql`${apiKeys}.rowid > CAST(${scanned.throughRowid} AS INTEGER)`,
                eq(apiKeys.userId, userId),
                scanned.ids.length === 0 ? undefined : inArray(apiKeys.id, [...scanned.ids]),
              ),
            )
            .all();
    const ids = rows
      .filter((row) => sealMatches(seal.apiKey({ ...row, userId }), row.seal))
      .map((row) => row.id);
    if (ids.length === 0) return [];
    return selectKeys(this.db)
      .where(inArray(apiKeys.id, ids))
      .orderBy(desc(apiKeys.createdAt))
      .all()
      .map((row) => toRecord(row, markOf(seal, row)));
  }

  /**
   * One part of the scan of every key's seal for the user (`sealedKeysOf`): the next `limit` keys
   * in the file after `afterRowid` (text: a rowid past 2^53 read as a number is another), from the
   * first when null (a row the file moved to rowid 0 or below is a key too: probe 91f F1), the ids
   * of those sealed to the user, and the last rowid read (null once none is left).
   */
  sealScanPart(
    userId: string,
    afterRowid: string | null,
    limit: number,
  ): { ids: string[]; lastRowid: string | null } {
    const { seal } = this.options;
    const rows = this.db
      .select({ ...sealedKeyColumns, rowid: sql<string>`CAST(${apiKeys}.rowid AS TEXT)` })
      .from(apiKeys)
      .where(
        afterRowid === null ? undefined : sql`${apiKeys}.rowid > CAST(${afterRowid} AS INTEGER)`,
      )
      .orderBy(sql`${apiKeys}.rowid`)
      .limit(limit)
      .all();
    return {
      ids: rows
        .filter((row) => sealMatches(seal.apiKey({ ...row, userId }), row.seal))
        .map((row) => row.id),
      lastRowid: rows.at(-1)?.rowid ?? null,
    };
  }

  /** Every key, newest first; or only the keys acting for one user. */
  list(userId?: string): ApiKeyRecord[] {
    return selectKeys(this.db)
      .where(userId === undefined ? undefined : eq(apiKeys.userId, userId))
      .orderBy(desc(apiKeys.createdAt))
      .all()
      .map((row) => toRecord(row, markOf(this.options.seal, row)));
  }

  /**
   * Keys newest first (by creation, then id), each with what of it fails its seal, `limit` after
   * `cursor` (every key when no limit): the rows, their owners, lineages and rotation marks in one
   * read, instead of four more reads a key.
   */
  listChecked(page: { cursor?: ListCursor; limit?: number } = {}): {
    keys: CheckedKey[];
    nextCursor: string | null;
  } {
    const { cursor, limit } = page;
    const query = this.db
      .select({
        ...sealedKeyColumns,
        rowid: sql<string>`CAST("api_keys"."rowid" AS TEXT)`,
        name: apiKeys.name,
        createdAt: apiKeys.createdAt,
        lastUsedAt: apiKeys.lastUsedAt,
        replacedBy: apiKeys.replacedBy,
        successorSeal: apiKeys.successorSeal,
        lineage: apiKeys.lineage,
        lineageSeal: apiKeys.lineageSeal,
        ownerId: users.id,
        ownerEmail: users.email,
        ownerEmailKey: users.emailKey,
        ownerPasswordHash: users.passwordHash,
        ownerRole: users.role,
        ownerSeal: users.seal,
      })
      .from(apiKeys)
      .leftJoin(users, eq(users.id, apiKeys.userId))
      .where(
        cursor === undefined
          ? undefined
          : or(
              lt(LISTED_TIME, cursor.createdAt),
              // The rowid as text: SQLite compares it as the integer it spells, exactly, where a
              // JS number rounds one past 2^53 (probe 48a F1: a page repeated, or a key skipped).
              and(eq(LISTED_TIME, cursor.createdAt), sql`${KEY_ROWID} < ${cursor.id}`),
            ),
      )
      .orderBy(desc(LISTED_TIME), desc(KEY_ROWID));
    const rows = limit === undefined ? query.all() : query.limit(limit + 1).all();
    const read = limit === undefined ? rows : rows.slice(0, limit);
    const { intact } = this.options.seal;
    const keys = read.map((row): CheckedKey => {
      const mark = markOf(this.options.seal, row);
      const ownerIntact =
        row.ownerId !== null &&
        row.ownerEmail !== null &&
        row.ownerEmailKey !== null &&
        row.ownerPasswordHash !== null &&
        row.ownerRole !== null &&
        intact.account({
          id: row.ownerId,
          email: row.ownerEmail,
          emailKey: row.ownerEmailKey,
          passwordHash: row.ownerPasswordHash,
          role: row.ownerRole,
          seal: row.ownerSeal,
        });
      const rowIntact = intact.apiKey(row);
      return {
        record: toRecord(
          {
            id: row.id,
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes,
            userId: row.userId,
            createdAt: row.createdAt,
            expiresAt: row.expiresAt,
            lastUsedAt: row.lastUsedAt,
            revokedAt: row.revokedAt,
            replacedBy: row.replacedBy,
            successorSeal: row.successorSeal,
            ownerEmail: row.ownerEmail,
            origin: row.origin,
          },
          mark,
        ),
        seals: {
          tampered: !rowIntact || (row.userId !== null && !ownerIntact),
          lineageTampered: !intact.lineage(row),
          rotationTampered: !mark.intact,
        },
      };
    });
    const last = read.at(-1);
    return {
      keys,
      nextCursor:
        limit !== undefined && rows.length > limit && last
          ? encodeCursor(listedTime(last.createdAt), last.rowid)
          : null,
    };
  }

  /**
   * The revocation, its feed row and its audit event in one transaction: written one after another,
   * a feed row that could not be written (a lock past the busy timeout, a full disk) left the key
   * revoked in the file but unaudited and still accepted from every cache, and the retry the
   * admin was told to make answered 404 (probe 58a F2).
   */
  revoke(id: string, actor: string | null, reason?: string, origin?: KeyActionOrigin): boolean {
    const revoked = this.db.transaction(() => this.revokeRow(id, actor, reason, origin), {
      behavior: "immediate",
    });
    if (revoked) this.credentials.applyRevocations();
    return revoked;
  }

  /**
   * Revokes many keys (an erasure's) in one transaction (the caller's, when there is one), reading
   * the revocation feed once at the end: read after each, every key re-read every revocation
   * written so far, and an erasure of 20,000 keys held the event loop for minutes (probe 39a F2).
   * How many were revoked.
   */
  revokeMany(
    ids: Iterable<string>,
    actor: string | null,
    reason?: string,
    origin?: KeyActionOrigin,
  ): number {
    const revoked = this.db.transaction(
      () => {
        let count = 0;
        for (const id of ids) if (this.revokeRow(id, actor, reason, origin)) count++;
        return count;
      },
      { behavior: "immediate" },
    );
    if (revoked > 0) this.credentials.applyRevocations();
    return revoked;
  }

  /** A revocation, recorded in the feed but not yet read from it (the caller reads it). */
  private revokeRow(
    id: string,
    actor: string | null,
    reason?: string,
    origin?: KeyActionOrigin,
  ): boolean {
    const applies = (row: { revokedAt: number | null }) => {
      if (row.revokedAt !== null) return false;
      stillStanding(origin);
      return true;
    };
    // Stamped once the write lock is held: a key another process minted with this one, committed
    // before the revocation, must not read as minted after it (probe 39b F3).
    if (!this.change(id, () => ({ revokedAt: this.clock.now() }), applies)) return false;
    this.credentials.recordRevocation("key", id);
    this.audit.record({
      type: "admin.key.revoked",
      outcome: "success",
      actor,
      ...audited(origin),
      detail: reason ? { keyId: id, reason } : { keyId: id },
    });
    return true;
  }

  /**
   * After the owner's role changed: each active key keeps only the scopes the role allows; a key
   * left with none is revoked. Each change is audited with the old and new scopes.
   */
  boundToRole(userId: string, role: Role, actor: string | null): void {
    let changed = false;
    for (const key of this.list(userId)) {
      if (key.revokedAt !== null) continue;
      const kept = boundScopes(key.scopes, role);
      if (kept.length === key.scopes.length) continue;
      changed = true;
      if (kept.length === 0) {
        this.revokeRow(key.id, actor, "owner_role_changed");
        continue;
      }
      this.change(key.id, { scopes: JSON.stringify(kept) });
      // Read from the feed once, after the loop (revokeMany).
      this.credentials.recordRevocation("key", key.id);
      this.audit.record({
        type: "admin.key.narrowed",
        outcome: "success",
        actor,
        detail: {
          keyId: key.id,
          from: key.scopes.join(","),
          to: kept.join(","),
          reason: "owner_role_changed",
        },
      });
    }
    if (changed) this.credentials.applyRevocations();
  }

  /**
   * Issues the key's successor; the old one dies after `graceMs`. The successor's secret is shown
   * to whoever rotates, so it acts for them: a rotation by a user (or a user's key) gives the new
   * key that user as owner, bounded by their role, as a key they created would be — otherwise an
   * admin could rotate an operator's or another admin's key into one that outlives their own
   * demotion. A rotation by an ownerless operator key gives an ownerless key: kept the old owner,
   * it handed the operator a key acting as that user — the user's payments, their client secrets,
   * a way to rotate the user's other keys into their chat history (probe 20d). One immediate
   * transaction that needs the key not yet replaced, so concurrent rotations make one successor.
   * Bootstrap keys are not rotated here: API_KEYS is their truth.
   */
  rotate(
    id: string,
    graceMs: number,
    actor: string | null,
    actingUserId: string | null = null,
    /** When the successor must have expired at the latest (a key rotated by a key: the caller's end). */
    endsBy: number | null = null,
    origin?: KeyActionOrigin,
  ): { key: string; record: ApiKeyRecord } | null {
    const rotated = this.db.transaction(
      () => {
        stillStanding(origin);
        const found = this.read(id);
        const now = this.clock.now();
        if (!found || found.record.revokedAt !== null) return null;
        const { record: old, mark } = found;
        // Rotated already; or its rotation mark fails its seal (reported), so whether it was
        // cannot be told, and a second successor of one key is not made on a guess.
        if (!mark.intact || mark.replacedBy !== null) return null;
        // A successor inherits the old key's scopes: never from a row written into the file.
        if (!this.intact(id)) return null;
        // And its lineage (whose payments an ownerless key holds): none, or one that fails its
        // seal, would start the successor's own, another owner's, and its payments would be lost.
        const lineage = this.lineageOf(id);
        if (lineage === null) return null;
        if (old.expiresAt !== null && old.expiresAt <= now) return null;
        if (old.origin === "bootstrap") return null;
        const ownerId = actingUserId;
        const environment = old.prefix.startsWith("pal_test_") ? "test" : "live";
        // In production a pal_test_ key is not an active key: there is nothing to rotate.
        if (environment === "test" && this.options.refuseTestKeys) return null;
        const ownerRole = ownerId === null ? null : this.roleOf(ownerId);
        if (ownerId !== null && ownerRole === null) return null;
        const scopes = boundScopes(old.scopes, ownerRole);
        if (scopes.length === 0) return null;
        const expiresAt = earliest(old.expiresAt, endsBy);
        // The successor continues the chain (an ownerless key's payments, a key's chat history)
        // only when it acts for the key's own owner: one rotated by anyone else is theirs, and
        // starts a chain of its own.
        const continues = ownerId === old.userId;
        const fresh = this.create(
          { name: old.name, scopes, userId: ownerId, expiresAt, environment },
          actor,
          continues ? lineage : undefined,
          origin,
        );
        const graceEnds = Math.min(now + graceMs, old.expiresAt ?? Number.POSITIVE_INFINITY);
        const replacedBy = fresh.record.id;
        this.change(id, {
          expiresAt: graceEnds,
          replacedBy,
          successorSeal: this.options.seal.successor({ id, replacedBy, expiresAt: graceEnds }),
        });
        // In the rotation's transaction (probe 58a F2): after its commit, a feed row that could
        // not be written failed the request with the rotation kept, the successor's secret never
        // shown and the old key's grace running.
        this.credentials.recordRevocation("key", id);
        this.audit.record({
          type: "admin.key.rotated",
          outcome: "success",
          actor,
          ...audited(origin),
          detail: {
            keyId: id,
            replacedBy: fresh.record.id,
            // The grace the old key has, cut at its own end: the one asked for said a leaked key
            // worked days longer than it does (probe 84j F2).
            graceSeconds: Math.round((graceEnds - now) / 1000),
            ...(graceEnds < now + graceMs ? { graceAskedSeconds: Math.round(graceMs / 1000) } : {}),
          },
        });
        return fresh;
      },
      { behavior: "immediate" },
    );
    // Cached copies of the old key carry its old expiry: dropped here now, elsewhere by the feed.
    if (rotated) this.credentials.applyRevocations();
    return rotated;
  }

  /**
   * What `reconcileBootstrap` would refuse, read without writing anything: a start checks API_KEYS
   * against the stored keys before it binds its ports, and applies them only once it listens.
   */
  checkBootstrap(entries: readonly BootstrapKey[]): void {
    const stored = this.storedKeys();
    const byHash = new Map(stored.map((row) => [row.secretHash, row]));
    const byPrefix = new Map(stored.map((row) => [row.prefix, row]));
    entries.forEach((entry, index) => {
      const hash = hashApiKey(entry.key);
      this.refuseConflict(entry, index, hash, byHash.get(hash), byPrefix);
    });
  }

  /**
   * Throws the ConfigError an API_KEYS entry meets against the stored keys: an entry that is a key
   * made through the API or CLI, or a new one sharing its lookup prefix with a stored key.
   */
  private refuseConflict(
    entry: BootstrapKey,
    index: number,
    hash: string,
    row: StoredKeyRow | undefined,
    byPrefix: ReadonlyMap<string, unknown>,
  ): void {
    // A bootstrap row whose origin was changed in the file fails its seal (reported): it is
    // refused as every such row is, and the start goes on; the configuration is not at fault.
    if (row && row.origin !== "bootstrap" && !this.options.seal.intact.apiKey(row)) return;
    if (row && row.origin !== "bootstrap") {
      throw new ConfigError(
        "API_KEYS",
        `entry ${index + 1} is a key created through the API or CLI; remove it from API_KEYS`,
      );
    }
    if (!row && byPrefix.has(keyPrefix(entry.key, hash))) {
      throw new ConfigError(
        "API_KEYS",
        `entry ${index + 1} shares its lookup prefix (a pal_ key's first 16 characters) with a stored API key; use another key`,
      );
    }
  }

  private storedKeys() {
    return this.db.select(sealedKeyColumns).from(apiKeys).all();
  }

  /**
   * Makes the bootstrap keys follow API_KEYS: an entry not yet stored is added (as a hash), a
   * stored one whose scopes changed is updated, and a stored bootstrap key no longer listed is
   * revoked; each change is audited (actor `system`) and dropped from every process's cache. A
   * bootstrap key revoked through the API or CLI stays revoked while it is still listed (a leaked
   * key must not come back at the next restart). An entry that is already a key made through the
   * API or CLI, or that shares its lookup prefix with one, is refused with a ConfigError
   * naming API_KEYS. One immediate transaction, so processes starting together agree.
   */
  reconcileBootstrap(entries: readonly BootstrapKey[]): BootstrapOutcome {
    const outcome: BootstrapOutcome = {
      added: 0,
      updated: 0,
      revoked: 0,
      stillRevoked: [],
      prefixesReplaced: 0,
    };
    const changedKeys: string[] = [];
    this.db.transaction(
      () => {
        const stored = this.storedKeys();
        outcome.prefixesReplaced = this.replaceClearPrefixes(stored);
        const byHash = new Map(stored.map((row) => [row.secretHash, row]));
        const byPrefix = new Map(stored.map((row) => [row.prefix, row]));
        const listed = new Set<string>();
        const now = this.clock.now();
        entries.forEach((entry, index) => {
          const hash = hashApiKey(entry.key);
          listed.add(hash);
          const row = byHash.get(hash);
          const scopes = JSON.stringify(entry.scopes);
          this.refuseConflict(entry, index, hash, row, byPrefix);
          if (row && row.origin !== "bootstrap") return;
          if (!row) {
            const id = Bun.randomUUIDv7();
            this.insertSealed(
              {
                id,
                name: `bootstrap-${index + 1}`,
                prefix: keyPrefix(entry.key, hash),
                secretHash: hash,
                scopes,
                userId: null,
                createdAt: now,
                expiresAt: null,
                origin: "bootstrap",
              },
              bootstrapLineage(hash, this.options.seal),
            );
            this.audit.record({
              type: "admin.key.created",
              outcome: "success",
              actor: "system",
              detail: { keyId: id, scopes: entry.scopes.join(","), reason: "api_keys_added" },
            });
            outcome.added++;
            return;
          }
          if (row.revokedAt !== null) {
            outcome.stillRevoked.push(index + 1);
            return;
          }
          if (row.scopes !== scopes) {
            this.change(row.id, { scopes });
            // With the change it reports (probe 58a F2's class); read after the commit.
            this.credentials.recordRevocation("key", row.id);
            changedKeys.push(row.id);
            this.audit.record({
              type: "admin.key.scopes_changed",
              outcome: "success",
              actor: "system",
              detail: {
                keyId: row.id,
                from: storedScopes(row.scopes).join(","),
                to: entry.scopes.join(","),
                reason: "api_keys_changed",
              },
            });
            outcome.updated++;
          }
        });
        for (const row of stored) {
          if (row.origin !== "bootstrap" || row.revokedAt !== null || listed.has(row.secretHash)) {
            continue;
          }
          // An origin written into the file is not believed: such a row is refused (and reported)
          // as it is, not revoked as an API_KEYS entry it never was (probe 36b F4).
          if (!this.options.seal.intact.apiKey(row)) continue;
          this.revoke(row.id, "system", "removed_from_api_keys");
          outcome.revoked++;
        }
      },
      { behavior: "immediate" },
    );
    if (changedKeys.length > 0) this.credentials.applyRevocations();
    return outcome;
  }

  /**
   * Rows stored before a key of no `pal_` shape was found by its hash hold its first 16 characters
   * in clear (probe 82a F1): each gets the prefix its hash gives, resealed when its seal held (one
   * that did not stays refused). `stored` is updated to match. Returns how many were replaced. A
   * row whose hashed prefix another row holds already (two rows of one hash, written into the
   * file) is left as it is: the prefix is unique, and the start would fail on it.
   */
  private replaceClearPrefixes(stored: Array<{ id: string; prefix: string; secretHash: string }>) {
    const held = new Set(stored.map((row) => row.prefix));
    let replaced = 0;
    for (const row of stored) {
      if (typeof row.prefix !== "string" || typeof row.secretHash !== "string") continue;
      if (row.prefix.startsWith("pal_")) continue;
      const prefix = hashedPrefix(row.secretHash);
      if (held.has(prefix)) continue;
      this.change(row.id, { prefix });
      held.delete(row.prefix);
      held.add(prefix);
      row.prefix = prefix;
      replaced++;
    }
    return replaced;
  }

  private insertSealed(
    row: Omit<
      typeof apiKeys.$inferInsert,
      "seal" | "revokedAt" | "lineage" | "lineageSeal" | "replacedBy" | "successorSeal"
    > & {
      expiresAt: number | null;
      userId: string | null;
      origin: "api" | "bootstrap";
    },
    /** The first key of the chain a rotation continues; the key's own id when it starts one. */
    lineage: string = row.id,
  ): void {
    const { seal } = this.options;
    this.db
      .insert(apiKeys)
      .values({
        ...row,
        seal: seal.apiKey({ ...row, revokedAt: null }),
        lineage,
        lineageSeal: seal.lineage({ id: row.id, lineage }),
        replacedBy: null,
        successorSeal: seal.successor({ id: row.id, replacedBy: null, expiresAt: row.expiresAt }),
      })
      .run();
  }

  /**
   * Applies `change` to a key and reseals it, in one transaction, when `applies` to the row as it
   * is. A row that did not match its seal is changed (a revocation must still take) but not
   * resealed: a change by Palisade must never make a row written into the file trusted.
   */
  private change(
    id: string,
    changeAsked: KeyChange | (() => KeyChange),
    applies: (row: { revokedAt: number | null }) => boolean = () => true,
  ): boolean {
    const { seal } = this.options;
    return this.db.transaction(
      () => {
        const row = this.statements.sealedById.get({ id });
        if (!row || !applies(row)) return false;
        const change = typeof changeAsked === "function" ? changeAsked() : changeAsked;
        const intact = seal.intact.apiKey(row);
        const next = { ...row, ...change };
        const values: Record<string, unknown> = intact
          ? { ...change, seal: seal.apiKey(next) }
          : { ...change };
        // Drizzle's `set` leaves out an undefined value: so does the statement.
        const columns = Object.keys(values).filter((column) => values[column] !== undefined);
        this.changeStatement(columns).run({ ...values, id });
        return true;
      },
      { behavior: "immediate" },
    );
  }

  /** The UPDATE of these columns by id, prepared by its first use and kept. */
  private changeStatement(columns: string[]): { run(values: Record<string, unknown>): unknown } {
    const name = columns.join(",");
    let statement = this.changeStatements.get(name);
    if (statement === undefined) {
      const set = Object.fromEntries(columns.map((column) => [column, sql.placeholder(column)]));
      statement = this.db
        .update(apiKeys)
        .set(set)
        .where(eq(apiKeys.id, sql.placeholder("id")))
        .prepare();
      this.changeStatements.set(name, statement);
    }
    return statement;
  }
}

/**
 * A bootstrap key's lineage: its secret's, not its row's. API_KEYS is its truth, and a row deleted
 * from the file comes back at the next start under a new id: keyed by its id, it would come back a
 * new owner, its payments gone from its view and a retried Idempotency-Key a second Stripe intent.
 * Keyed from AUDIT_SECRET_KEY (through the lineage seal): an unkeyed hash of the secret would be
 * the same in another deployment listing the same key, whose Stripe idempotency keys, derived from
 * the owner, would then replay this one's intents.
 */
export function bootstrapLineage(
  secretHash: string,
  seal: Pick<CredentialSeal, "lineage">,
): string {
  return `bootstrap-${seal.lineage({ id: "bootstrap", lineage: secretHash }).slice(0, 32)}`;
}

export interface BootstrapOutcome {
  added: number;
  updated: number;
  revoked: number;
  /** API_KEYS entries (1-based) whose key was revoked and so stays revoked. */
  stillRevoked: number[];
  /** Stored keys whose first characters were their lookup prefix, now read from their hash. */
  prefixesReplaced: number;
}

/** The earlier of two ends, either of which may be none (null). */
export function earliest(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}
