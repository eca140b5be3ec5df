/**
 * @module
 * Daily token budgets: `CHAT_DAILY_TOKEN_BUDGET` tokens per owner (user, API key, WhatsApp sender)
 * per UTC day, counted in the `chat_usage` table so every process on the file shares one count.
 *
 * How a turn is counted:
 * 1. reserve: before the upstream call, the turn's most possible cost (the prompt's estimate plus
 *    the provider's completion cap, CHAT_MAX_COMPLETION_TOKENS or the offline FAQ's longest
 *    answer) is added to the day's `reserved` by one UPDATE whose WHERE refuses when
 *    used + reserved + that amount would pass the budget. SQLite runs each statement under its
 *    write lock, so however many requests (in one process or in several on the file) reserve at
 *    once, the admitted reservations never add up past the budget.
 * 2. settle: after the call, in the transaction that stores the reply, the reservation leaves
 *    `reserved` and the turn's real usage joins `used`, counted at most up to what was reserved.
 * 3. release: a call that failed before the upstream was sent anything gives its reservation back;
 *    an aborted one settles its prompt's estimate plus what it received (the upstream billed them).
 *
 * `CHAT_MAX_CONCURRENT_TURNS` is decided in the same transaction, before the budget: a turn is
 * refused when its owner already has that many reservation rows (turns in flight) in any process
 * on the file, so one principal cannot hold every slot of an upstream that answers a few requests
 * at a time, and the count is exact across processes as the budget is.
 *
 * Each reservation is also a row naming the process that holds it (./reservations.ts): what a
 * process killed mid-turn reserved is given back by another's maintenance a minute later, and a
 * reservation a reset or an erasure cleared is not taken from `reserved` a second time when its
 * turn ends (a reset leaves the row, still a slot, with no tokens; an erasure deletes it).
 *
 * What it guarantees: `used` never passes the budget, whatever the concurrency: a turn is only
 * admitted when its largest possible charge fits in what the day has left, counting the turns
 * still in flight, and it is never charged more than it reserved. An upstream that counts more
 * prompt tokens than the estimate (text far from English, where four characters are less than a
 * token) is charged its reservation; the message row keeps the upstream's own figures. With the
 * budget off (0) usage is still counted, for `GET /api/admin/usage`.
 */

import type { Database } from "bun:sqlite";
import { and, asc, eq, sql } from "drizzle-orm";
import { isCalendarDay } from "../../calendar";
import { DAY_MS } from "../../clock";
import { drizzleOf } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { CHAT_OWNER_KINDS, chatUsage } from "../../db/schema";
import type { ChatOwner } from "./contract";
import { readableCount } from "./readable-columns";
import { ownerDayPlaceholders, type Reclaimed, TurnReservations } from "./reservations";

/** `YYYY-MM-DD` of a time, in UTC. */
export function utcDay(now: number): string {
  return new Date(now).toISOString().slice(0, 10);
}

/** Whole seconds until the next UTC midnight (at least 1): a refused turn's Retry-After. */
export function secondsUntilNextUtcDay(now: number): number {
  const next = Math.floor(now / DAY_MS) * DAY_MS + DAY_MS;
  return Math.max(1, Math.ceil((next - now) / 1000));
}

/** `user:<id>`, `key:<id>`, `whatsapp:<id>`: how owners are named in the audit log and the API. */
export function ownerRef(owner: ChatOwner): string {
  return `${owner.kind}:${owner.id}`;
}

/**
 * The owner names Palisade gives, and nothing else: a user's or key's id (a UUID, lower case) and a
 * WhatsApp sender's keyed hash (32 hex). An admin's look-up or reset naming anything else (a full
 * stop or a zero-width space copied after the id) was answered with nothing and audited as typed,
 * where the user's erasure never found it (probe 38a F3).
 */
export const OWNER_REF_PATTERN =
  "^(?:(?:user|key):[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|whatsapp:[0-9a-f]{32})$";
const OWNER_REF = new RegExp(OWNER_REF_PATTERN);

export function parseOwnerRef(ref: string): ChatOwner | null {
  if (!OWNER_REF.test(ref)) return null;
  const colon = ref.indexOf(":");
  return { kind: ref.slice(0, colon) as ChatOwner["kind"], id: ref.slice(colon + 1) };
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** Where a page of a day's usage ended: the last row's kind and its id's bytes, as stored. */
export interface UsagePosition {
  kind: ChatOwner["kind"];
  /** Bytes, not text: an id written into the file need not be valid UTF-8, and text would not
   * round-trip (the next page would start before the row and repeat it). */
  idBytes: Uint8Array;
  /**
   * Whether the id is stored as a BLOB (only a file writer stores one): SQLite sorts every BLOB
   * after every text, so a position among them is compared as a BLOB.
   */
  blob: boolean;
}

/**
 * Where a page of a day's usage ended, for the next page: `<day>.<kind>.<id>`, the id's stored
 * bytes in base64url. It carries the day, so a client paging across midnight keeps reading the day
 * it began; and the id goes as bytes, so any id a row holds round-trips. Every character is one a
 * query string carries as it is.
 */
export function encodeUsageCursor(day: string, position: UsagePosition): string {
  const id = Buffer.from(position.idBytes).toString("base64url");
  return `${day}.${position.kind}.${id}${position.blob ? ".blob" : ""}`;
}

/** The day and position of a cursor `encodeUsageCursor` made, or null for anything else. */
export function decodeUsageCursor(cursor: string): { day: string; after: UsagePosition } | null {
  const parts = cursor.split(".");
  if (parts.length !== 3 && !(parts.length === 4 && parts[3] === "blob")) return null;
  const [day, kind, id] = parts as [string, string, string];
  if (!isCalendarDay(day)) return null;
  if (!(CHAT_OWNER_KINDS as readonly string[]).includes(kind)) return null;
  if (!BASE64URL.test(id)) return null;
  const idBytes = new Uint8Array(Buffer.from(id, "base64url"));
  // One spelling per position: base64url's unused low bits of a last character are refused.
  if (idBytes.length === 0 || Buffer.from(idBytes).toString("base64url") !== id) return null;
  return { day, after: { kind: kind as ChatOwner["kind"], idBytes, blob: parts.length === 4 } };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Rows after a position, as a row value: SQLite starts the index search at it only then (for an
 * `OR` of the two columns it reads the day from its start). An id that is valid UTF-8 (every id
 * Palisade writes) is bound as text; one that is not is compared as its bytes cast to text, which
 * SQLite does not use the index for beyond the kind — correct, and slower only for such rows.
 */
function afterPosition({ kind, idBytes, blob }: UsagePosition) {
  if (blob) return sql`(${chatUsage.ownerKind}, ${chatUsage.ownerId}) > (${kind}, ${idBytes})`;
  let text: string | null;
  try {
    text = strictUtf8.decode(idBytes);
  } catch {
    text = null;
  }
  return text !== null
    ? sql`(${chatUsage.ownerKind}, ${chatUsage.ownerId}) > (${kind}, ${text})`
    : sql`(${chatUsage.ownerKind}, ${chatUsage.ownerId}) > (${kind}, CAST(${idBytes} AS TEXT))`;
}

export interface Reservation {
  owner: ChatOwner;
  day: string;
  /** What was reserved: the prompt's estimate plus the completion cap. */
  tokens: number;
  /** Its row in `chat_reservations`. */
  id: number;
}

export type ReserveOutcome =
  | { kind: "reserved"; reservation: Reservation }
  | { kind: "over_budget"; retryAfterSeconds: number }
  | { kind: "too_many_turns" }
  | { kind: "owner_gone" };

/** A page of a day's usage: at most `limit` rows, after the position `after` when given. */
export interface UsagePageRequest {
  after?: UsagePosition;
  limit: number;
}

function toUsageRow(row: {
  kind: ChatOwner["kind"];
  id: string;
  day: string;
  usedTokens: number;
  reservedTokens: number;
  requests: number;
}): UsageRow {
  const { kind, id, day } = row;
  return {
    principal: ownerRef({ kind, id }),
    day,
    usedTokens: countOrNone(row.usedTokens),
    reservedTokens: countOrNone(row.reservedTokens),
    requests: countOrNone(row.requests),
  };
}

/**
 * A count as Palisade writes one, or null for what the file holds instead (text, a fraction, a
 * negative number): one such row made the admin's whole usage page for its day 500 (its schema
 * refused the answer), and the CLI printed the text as if it were a count.
 */
function countOrNone(value: unknown): number | null {
  return readableCount(value) ? value : null;
}

export interface UsageRow {
  principal: string;
  day: string;
  /** Null where the file holds no count (readable-columns). */
  usedTokens: number | null;
  reservedTokens: number | null;
  requests: number | null;
}

export interface ChatBudgetOptions {
  /**
   * Whether an owner is still there (a user not erased, a key not revoked): a day's row is made
   * only for one that is. Absent: every owner is.
   */
  ownerExists?: (owner: ChatOwner) => boolean;
  /** This process's id in `chat_holders` and on its reservations; a random one when absent. */
  holder?: string;
  /** CHAT_MAX_CONCURRENT_TURNS: turns one owner may have in flight at once; 0 or absent: no limit. */
  concurrentTurns?: number;
}

export class ChatBudget {
  private readonly db;
  private readonly statements;
  private readonly ownerExists?: (owner: ChatOwner) => boolean;
  /** The rows naming which process holds each turn in flight. */
  readonly turns: TurnReservations;
  private readonly reserveTransaction;
  private readonly endTransaction;

  constructor(
    sqlite: Database,
    /** Tokens per owner per UTC day; 0: no budget (usage is still counted). */
    readonly dailyTokens: number,
    options: ChatBudgetOptions = {},
  ) {
    const db = drizzleOf(sqlite);
    this.db = db;
    this.ownerExists = options.ownerExists;
    this.turns = new TurnReservations(sqlite, options.holder);
    const owner = () => ownerDayPlaceholders(chatUsage);
    // A reservation leaves `reserved` unless a reset, an erasure or a reclaim took it already.
    // What the turn's row still held: nothing once a reset, an erasure or a reclaim took it.
    const leaveReserved = () =>
      sql`max(0, ${chatUsage.reservedTokens} - ${sql.placeholder("held")})`;
    const reserve = () => ({
      reservedTokens: sql`${chatUsage.reservedTokens} + ${sql.placeholder("estimate")}`,
      updatedAt: sql`${sql.placeholder("now")}`,
    });
    this.statements = preparedOnUse({
      ensureRow: () =>
        db
          .insert(chatUsage)
          .values({
            ownerKind: sql.placeholder("kind"),
            ownerId: sql.placeholder("id"),
            day: sql.placeholder("day"),
            updatedAt: sql.placeholder("now"),
          })
          .onConflictDoNothing({ target: [chatUsage.ownerKind, chatUsage.ownerId, chatUsage.day] })
          .returning({ day: chatUsage.day })
          .prepare(),
      // The one statement that decides: it matches no row when the estimate does not fit.
      reserveWithin: () =>
        db
          .update(chatUsage)
          .set(reserve())
          .where(
            and(
              owner(),
              sql`${chatUsage.usedTokens} + ${chatUsage.reservedTokens} + ${sql.placeholder("estimate")} <= ${sql.placeholder("budget")}`,
            ),
          )
          .returning({ reservedTokens: chatUsage.reservedTokens })
          .prepare(),
      reserveAlways: () =>
        db
          .update(chatUsage)
          .set(reserve())
          .where(owner())
          .returning({ reservedTokens: chatUsage.reservedTokens })
          .prepare(),
      // Every turn runs one of these two: prepared, not rebuilt by the query builder each time.
      settle: () =>
        db
          .update(chatUsage)
          .set({
            reservedTokens: leaveReserved(),
            usedTokens: sql`${chatUsage.usedTokens} + ${sql.placeholder("charged")}`,
            requests: sql`${chatUsage.requests} + 1`,
            updatedAt: sql`${sql.placeholder("now")}`,
          })
          .where(owner())
          .prepare(),
      release: () =>
        db
          .update(chatUsage)
          .set({
            reservedTokens: leaveReserved(),
            updatedAt: sql`${sql.placeholder("now")}`,
          })
          .where(owner())
          .prepare(),
    });
    // The decision and the turn's row in one transaction: a process killed between the two
    // would leave tokens in `reserved` that no row names, which nothing could give back.
    this.reserveTransaction = sqlite.transaction(
      (owner: ChatOwner, tokens: number, now: number): ReserveOutcome => {
        const day = utcDay(now);
        const key = { kind: owner.kind, id: owner.id, day };
        const concurrentTurns = options.concurrentTurns ?? 0;
        if (concurrentTurns > 0 && this.turns.inFlight(owner) >= concurrentTurns) {
          return { kind: "too_many_turns" };
        }
        const attempt = () =>
          this.dailyTokens > 0
            ? this.statements.reserveWithin.get({
                ...key,
                estimate: tokens,
                now,
                budget: this.dailyTokens,
              })
            : this.statements.reserveAlways.get({ ...key, estimate: tokens, now });
        // The day's row exists after the owner's first turn: the first attempt decides.
        let row = attempt();
        if (!row) {
          // A request authenticated just before its user's erasure reaches here after it: the
          // row the erasure deleted must not be made again. The erasure's transaction (also
          // immediate) runs wholly before or after this one.
          if (this.ownerExists?.(owner) === false) return { kind: "owner_gone" };
          // The row was there and refused the turn: that stands. It was missing: decide again.
          if (this.statements.ensureRow.get({ ...key, now }) !== undefined) row = attempt();
        }
        if (!row) return { kind: "over_budget", retryAfterSeconds: secondsUntilNextUtcDay(now) };
        const id = this.turns.hold(owner, day, tokens, now);
        return { kind: "reserved", reservation: { owner, day, tokens, id } };
      },
    );
    // The row's end and `reserved`: one transaction of its own, or a savepoint in the storing one.
    this.endTransaction = sqlite.transaction(
      (reservation: Reservation, now: number, charged: number | null) => {
        const { owner, day, tokens, id } = reservation;
        // Never more than it reserved, whatever the file says the row held.
        const held = Math.min(this.turns.end(id), tokens);
        const key = { kind: owner.kind, id: owner.id, day, held, now };
        if (charged === null) this.statements.release.run(key);
        else this.statements.settle.run({ ...key, charged });
      },
    );
  }

  /** Reserves `tokens` (a turn's largest possible charge) if they fit in the day's budget. */
  reserve(owner: ChatOwner, tokens: number, now: number): ReserveOutcome {
    return this.reserveTransaction.immediate(owner, tokens, now);
  }

  /**
   * The reservation leaves `reserved`, the real usage joins `used` (at most the reservation, so
   * `used` stays within the budget). Run it in the storing transaction; returns what was charged.
   */
  settle(reservation: Reservation, usedTokens: number, now: number): number {
    const charged = Math.min(Math.max(0, usedTokens), reservation.tokens);
    this.endTransaction.immediate(reservation, now, charged);
    return charged;
  }

  /**
   * A reservation whose settling or release failed (a lock, a full disk): left to the next
   * maintenance run, which gives it back (./reservations.ts).
   */
  abandon(reservation: Reservation): void {
    this.turns.abandon(reservation.id);
  }

  /** Gives a failed turn's reservation back. */
  release(reservation: Reservation, now: number): void {
    this.endTransaction.immediate(reservation, now, null);
  }

  /**
   * The maintenance run: gives back what gone processes reserved for turns they will never
   * finish, and this process's own reservations no turn holds (see ./reservations.ts).
   */
  reclaim(now: number): Reclaimed {
    return this.turns.reclaim(now);
  }

  /** A day's usage, every owner's or one's, ordered by principal (kind, then id). */
  usage(day: string, owner?: ChatOwner): UsageRow[] {
    return this.usageQuery(day, owner).all().map(toUsageRow);
  }

  /**
   * At most `limit` rows of a day's usage after the position `after` (where the page before ended),
   * and where the next page starts: null on the last page. The admin API pages; the CLI reads all.
   */
  usagePage(
    day: string,
    owner: ChatOwner | undefined,
    { after, limit }: UsagePageRequest,
  ): { rows: UsageRow[]; next: UsagePosition | null } {
    // One more than asked tells whether there is a next page.
    const found = this.usageQuery(day, owner, { after, limit: limit + 1 }).all();
    const rows = found.slice(0, limit);
    const last = found.length > limit ? rows.at(-1)! : null;
    return {
      rows: rows.map(toUsageRow),
      next: last ? { kind: last.kind, idBytes: last.idBytes, blob: last.idType === "blob" } : null,
    };
  }

  /**
   * The query `usage` runs. A page reads from the `(day, owner_kind, owner_id)` index from where the
   * page before ended, so a page costs its own rows, not the day's.
   */
  usageQuery(day: string, owner?: ChatOwner, page?: UsagePageRequest) {
    const after = page?.after;
    const query = this.db
      .select({
        kind: chatUsage.ownerKind,
        id: chatUsage.ownerId,
        idBytes: sql<Uint8Array>`CAST(${chatUsage.ownerId} AS BLOB)`,
        idType: sql<string>`typeof(${chatUsage.ownerId})`,
        day: chatUsage.day,
        usedTokens: chatUsage.usedTokens,
        reservedTokens: chatUsage.reservedTokens,
        requests: chatUsage.requests,
      })
      .from(chatUsage)
      .where(
        and(
          owner ? this.ownerDay(owner, day) : eq(chatUsage.day, day),
          after ? afterPosition(after) : undefined,
        ),
      )
      .orderBy(asc(chatUsage.ownerKind), asc(chatUsage.ownerId));
    return page ? query.limit(page.limit) : query;
  }

  /**
   * Sets an owner's used and reserved tokens for a day back to 0; what was cleared, or null without
   * a row. Reservations too: a process killed mid-turn never settles or releases its turn's (its
   * row is given back a minute later, see ./reservations.ts). A turn still in flight charges its
   * usage to the day given back, and its reservation, already cleared (its row's tokens set to 0
   * here), is not taken from `reserved` again: the turns admitted after the reset keep theirs. Its
   * row stays, so it still holds its slot of CHAT_MAX_CONCURRENT_TURNS until it ends.
   */
  reset(owner: ChatOwner, day: string, now: number): { used: number; reserved: number } | null {
    return this.db.transaction(
      (tx) => {
        const row = tx
          .select({ used: chatUsage.usedTokens, reserved: chatUsage.reservedTokens })
          .from(chatUsage)
          .where(this.ownerDay(owner, day))
          .get();
        if (!row) return null;
        this.turns.clearTokensOf(owner, day);
        tx.update(chatUsage)
          .set({ usedTokens: 0, reservedTokens: 0, updatedAt: now })
          .where(this.ownerDay(owner, day))
          .run();
        return row;
      },
      { behavior: "immediate" },
    );
  }

  private ownerDay(owner: ChatOwner, day: string) {
    return and(
      eq(chatUsage.ownerKind, owner.kind),
      eq(chatUsage.ownerId, owner.id),
      eq(chatUsage.day, day),
    );
  }
}
