/**
 * @module
 * Which process holds each chat turn in flight, so that what a process killed mid-turn reserved
 * is given back instead of holding the owner's day until midnight.
 *
 * Each turn's reservation is a row of `chat_reservations` naming its process (a random id made
 * when the budget is built). Every process says it is running (`chat_holders.seen_at`) at start
 * and at every maintenance run (10 s); a row whose process never said so counts from when it was
 * reserved. Any
 * process's maintenance gives a row back — deletes it and takes its tokens from its day's
 * `reserved` — when:
 * - its process has not been seen for a minute (killed, or its event loop held that long; a mark a
 *   minute ahead of the clock is one not written since the clock stepped back), and the
 *   maintaining process has itself written its mark run after run for 20 s: after anything that
 *   kept every process from writing (a write lock held for minutes, a VACUUM, a full disk), a
 *   stall of the maintaining process or a step of the clock, every live process gets two runs to
 *   say it is running before any of its turns is taken for gone;
 * - it is the maintaining process's own and no turn of the process holds it any more: the turn's
 *   settle or release failed (a locked or full disk) or was rolled back with the turn's storing.
 * A row whose tokens are not a count (written into the file by hand) is deleted and gives nothing
 * back; the table refuses such rows from the service itself.
 *
 * Why the process and not the turn: a turn's length has no bound (a slow stream), a process's
 * liveness has one, and it costs one small write per process every 10 s, not one per turn.
 *
 * What it cannot tell: a process whose event loop stalls for more than a minute looks gone, and so
 * do one whose writes alone fail for a minute while the others' succeed (a lock that comes and
 * goes in step with its runs) and one whose clock is a minute apart from the others' (processes on
 * one host share its clock). Such a process's turns' rows are given back while it runs them; when
 * those turns finish they charge their usage without taking from `reserved` again (their rows are
 * gone), so the day can end over its budget by at most their charges. And a dead process's turns
 * are given back only by a process that has run for 20 s: while every process restarts sooner (a
 * crash loop), they stay reserved.
 */
import type { Database } from "bun:sqlite";
import { and, eq, sql } from "drizzle-orm";
import type { SQLiteColumn } from "drizzle-orm/sqlite-core";
import { drizzleOf } from "../../db/client";
import { preparedOnUse } from "../../db/prepared-on-use";
import { insertWithRandomId } from "../../db/random-id";
import { chatHolders, chatReservations, chatUsage } from "../../db/schema";
import type { ChatOwner } from "./contract";

/** How often a process says it is running. */
export const HOLDER_BEAT_MS = 10_000;
/** A process not seen for this long is gone, and its turns' reservations are given back. */
export const HOLDER_GONE_AFTER_MS = 60_000;
/** Rows given back per maintenance run, oldest first, of other processes and of this one each. */
export const RECLAIM_BATCH = 1000;
/**
 * How long this process's maintenance must have reached the database, run after run, before it
 * takes another process for gone: two beats, so every live process had two runs to say so.
 */
export const REACHED_FOR_MS = 2 * HOLDER_BEAT_MS;
/** Runs further apart than this (a lock, a stall, a clock step) start the count again. */
const RUNS_APART_MS = 3 * HOLDER_BEAT_MS;

export interface Reclaimed {
  /** Turns whose reservations were given back. */
  turns: number;
  /** The tokens they had reserved. */
  tokens: number;
}

/** A table's rows of an owner, by the placeholders `kind` and `id`. */
function ownerPlaceholders(table: { ownerKind: SQLiteColumn; ownerId: SQLiteColumn }) {
  return and(
    eq(table.ownerKind, sql.placeholder("kind")),
    eq(table.ownerId, sql.placeholder("id")),
  );
}

/** A table's row of an owner's day, by the placeholders `kind`, `id` and `day`. */
export function ownerDayPlaceholders(table: {
  ownerKind: SQLiteColumn;
  ownerId: SQLiteColumn;
  day: SQLiteColumn;
}) {
  return and(ownerPlaceholders(table), eq(table.day, sql.placeholder("day")));
}

interface ReservationRow {
  id: number;
  /** The id as the file holds it, as text (exact past 2^53). */
  storedId: string;
  kind: ChatOwner["kind"];
  ownerId: string;
  day: string;
  /** What the file holds: a count when the service wrote it. */
  tokens: unknown;
}

/** A mark outside this window was not written by a live process. */
function goneOutside(now: number) {
  return { goneBefore: now - HOLDER_GONE_AFTER_MS, goneAfter: now + HOLDER_GONE_AFTER_MS };
}

/** Tokens a row can give back: its count, or nothing for a value written into the file by hand. */
function countedTokens(tokens: unknown): number {
  return typeof tokens === "number" && Number.isSafeInteger(tokens) && tokens > 0 ? tokens : 0;
}

export class TurnReservations {
  /** Ids of this process's rows whose turns will still settle or release them. */
  private readonly held = new Set<number>();
  /** Since when every maintenance run reached the database, each within RUNS_APART_MS of the last. */
  private reachedSince: number | null = null;
  private lastRun = Number.NEGATIVE_INFINITY;
  private readonly statements;
  private readonly reclaimTransaction;

  constructor(
    sqlite: Database,
    /** This process's id in `chat_holders`. */
    readonly holder: string = crypto.randomUUID(),
  ) {
    const db = drizzleOf(sqlite);
    const r = chatReservations;
    const reclaimable = {
      id: r.id,
      // As the file holds it: past 2^53 the number is read rounded, and a delete by it missed the
      // row, given back again at every run, in every process, without end (probe 54a F2).
      storedId: sql<string>`CAST(${r.id} AS TEXT)`,
      kind: r.ownerKind,
      ownerId: r.ownerId,
      day: r.day,
      tokens: r.tokens,
    };
    this.statements = preparedOnUse({
      beat: () =>
        db
          .insert(chatHolders)
          .values({ holder: sql.placeholder("holder"), seenAt: sql.placeholder("now") })
          .onConflictDoUpdate({
            target: chatHolders.holder,
            set: { seenAt: sql`excluded.seen_at` },
          })
          .prepare(),
      hold: () =>
        db
          .insert(r)
          .values({
            id: sql.placeholder("reservation"),
            ownerKind: sql.placeholder("kind"),
            ownerId: sql.placeholder("id"),
            day: sql.placeholder("day"),
            tokens: sql.placeholder("tokens"),
            holder: sql.placeholder("holder"),
            createdAt: sql.placeholder("now"),
          })
          .onConflictDoNothing({ target: r.id })
          .returning({ id: r.id })
          .prepare(),
      end: () =>
        db
          .delete(r)
          .where(eq(r.id, sql.placeholder("id")))
          .returning({ tokens: r.tokens })
          .prepare(),
      // A reclaimed row, by its id as stored (text, compared as the integer it spells).
      endReclaimed: () =>
        db
          .delete(r)
          .where(eq(r.id, sql`CAST(${sql.placeholder("storedId")} AS INTEGER)`))
          .prepare(),
      clearOfOwnerDay: () =>
        db.update(r).set({ tokens: 0 }).where(ownerDayPlaceholders(r)).prepare(),
      inFlight: () =>
        db.select({ turns: sql<number>`count(*)` }).from(r).where(ownerPlaceholders(r)).prepare(),
      endOfOwner: () => db.delete(r).where(ownerPlaceholders(r)).prepare(),
      // The turns in flight are among them: as many more as this process holds.
      own: () =>
        db
          .select(reclaimable)
          .from(r)
          .where(eq(r.holder, sql.placeholder("holder")))
          .orderBy(r.id)
          .limit(sql.placeholder("limit"))
          .prepare(),
      // A process never seen (its row deleted from the file) counts from when it reserved. A mark
      // a minute ahead is one not written since the clock stepped back: its process is gone too.
      othersGone: () =>
        db
          .select(reclaimable)
          .from(r)
          .leftJoin(chatHolders, eq(chatHolders.holder, r.holder))
          .where(
            and(
              sql`${r.holder} IS NOT ${sql.placeholder("holder")}`,
              sql`coalesce(${chatHolders.seenAt}, ${r.createdAt}, 0) NOT BETWEEN ${sql.placeholder("goneBefore")} AND ${sql.placeholder("goneAfter")}`,
            ),
          )
          .orderBy(r.id)
          .limit(RECLAIM_BATCH)
          .prepare(),
      giveBack: () =>
        db
          .update(chatUsage)
          .set({
            reservedTokens: sql`max(0, ${chatUsage.reservedTokens} - ${sql.placeholder("tokens")})`,
          })
          .where(ownerDayPlaceholders(chatUsage))
          .prepare(),
      forgetGone: () =>
        db
          .delete(chatHolders)
          .where(
            sql`${chatHolders.holder} IN (SELECT gone.holder FROM ${chatHolders} AS gone WHERE gone.seen_at NOT BETWEEN ${sql.placeholder("goneBefore")} AND ${sql.placeholder("goneAfter")} AND gone.holder NOT IN (SELECT ${r.holder} FROM ${r} WHERE ${r.holder} IS NOT NULL) LIMIT ${RECLAIM_BATCH})`,
          )
          .prepare(),
    });
    this.reclaimTransaction = sqlite.transaction((now: number, others: boolean): Reclaimed => {
      const { statements } = this;
      const orphans = statements.own
        .all({ holder: this.holder, limit: RECLAIM_BATCH + this.held.size })
        .filter((row) => !this.held.has(row.id))
        .slice(0, RECLAIM_BATCH);
      const gone = others
        ? statements.othersGone.all({ holder: this.holder, ...goneOutside(now) })
        : [];
      let tokens = 0;
      for (const row of [...orphans, ...gone] as ReservationRow[]) {
        const counted = countedTokens(row.tokens);
        if (counted > 0) {
          statements.giveBack.run({
            kind: row.kind,
            id: row.ownerId,
            day: row.day,
            tokens: counted,
          });
        }
        statements.endReclaimed.run({ storedId: row.storedId });
        tokens += counted;
      }
      statements.forgetGone.run(goneOutside(now));
      return { turns: orphans.length + gone.length, tokens };
    });
  }

  /**
   * The owner's turns in flight, in every process on the file, whatever day they reserved on; a
   * turn of a process killed mid-turn counts until its row is given back (a minute on).
   */
  inFlight(owner: ChatOwner): number {
    return this.statements.inFlight.get({ kind: owner.kind, id: owner.id })?.turns ?? 0;
  }

  /**
   * Records a turn's reservation under this process; run it in the transaction that added the
   * tokens to the day's `reserved`. Returns the row's id.
   */
  hold(owner: ChatOwner, day: string, tokens: number, now: number): number {
    const values = { kind: owner.kind, id: owner.id, day, tokens, holder: this.holder, now };
    // The id is drawn at random (db/random-id): no row of the table, nor a row given back since,
    // has it (so a turn whose row was given back cannot end a later turn's), and drawing it writes
    // nothing, where AUTOINCREMENT writes its sequence table at every reservation.
    const row = insertWithRandomId(
      (reservation) => this.statements.hold.get({ ...values, reservation }),
      () =>
        new Error("a chat reservation's row could not be written: chat_reservations ignored it"),
    );
    this.held.add(row.id);
    return row.id;
  }

  /**
   * Ends a turn's row; run it in the transaction that settles or releases the turn. Returns the
   * tokens the row still held, which are to leave `reserved`: 0 when a reset cleared them, or an
   * erasure or another process's maintenance took the row.
   */
  end(id: number): number {
    // Before the statement: should it fail, or the transaction around it roll back, the row is
    // this process's and no turn's, and the next maintenance run gives it back.
    this.held.delete(id);
    return countedTokens(this.statements.end.get({ id })?.tokens);
  }

  /**
   * Lets go of a turn's row without ending it, when the turn could not end it (its settling failed:
   * a lock, a full disk): the row is then this process's and no turn's, and the next maintenance
   * run gives it back. Ending it would need the write that just failed.
   */
  abandon(id: number): void {
    this.held.delete(id);
  }

  /** Ends every turn's row of an owner (an erasure). */
  endAllOf(owner: ChatOwner): void {
    this.statements.endOfOwner.run({ kind: owner.kind, id: owner.id });
  }

  /**
   * Clears the tokens of an owner's day's rows (a reset), keeping the rows: each is still a turn in
   * flight, holding its slot of CHAT_MAX_CONCURRENT_TURNS until it ends (deleting them let the
   * owner start as many again at each reset, probe 84b F1), and leaves nothing more to take from
   * `reserved` when it does.
   */
  clearTokensOf(owner: ChatOwner, day: string): void {
    this.statements.clearOfOwnerDay.run({ kind: owner.kind, id: owner.id, day });
  }

  /**
   * The maintenance run (and the first mark, at start): says this process is running, and gives
   * back the reservations of gone processes and its own no turn holds, at most RECLAIM_BATCH each.
   */
  reclaim(now: number): Reclaimed {
    // A clock stepped either way, or a run missed: count again from here.
    if (now - this.lastRun > RUNS_APART_MS || now < this.lastRun) this.reachedSince = null;
    this.lastRun = now;
    const others = this.reachedSince !== null && now - this.reachedSince >= REACHED_FOR_MS;
    let reclaimed: Reclaimed;
    try {
      // Every run writes its mark, turns held or not, in a statement of its own (whatever the
      // giving back meets, the mark stays written): a run that cannot write — a lock, a full
      // disk, a file that refuses writes — is one the other processes' marks may have missed too.
      this.beat(now);
      reclaimed = this.reclaimTransaction.immediate(now, others);
    } catch (error) {
      this.reachedSince = null;
      throw error;
    }
    this.reachedSince ??= now;
    return reclaimed;
  }

  private beat(now: number) {
    this.statements.beat.run({ holder: this.holder, now });
  }
}
