/**
 * @module
 * The SQLite limiter store.
 *
 * Each decision reads the (policy, key) row, advances both windows and decides here, and writes the
 * row back (or inserts it), inside a BEGIN IMMEDIATE transaction: the write lock is held from the
 * read to the write, so processes sharing the file never admit more than the limit. A decision is
 * never run outside such a transaction.
 *
 * Group commit: one transaction per check costs ~19 µs here, most of it the commit. Checks are
 * queued and run together in one BEGIN IMMEDIATE transaction per event-loop turn (setImmediate),
 * which costs a few µs per check under load and still holds the write lock across each decision.
 * Concurrent checks for the same key are one decision asking for that many permits: the store
 * grants as many as fit, and the first that many requests are admitted (and a lease, lease.ts,
 * asks for its permits after theirs in the same decision; permits a lease did not use are
 * uncounted at the start of the next transaction, GIVE_BACK). Rows are read with `.values()`
 * inside that explicit transaction: reading them with `.get()` outside one kept a read snapshot
 * open and stopped the WAL from ever being reset.
 *
 * Another connection's write lock: the transaction waits the connection's short busy timeout
 * (db/busy), then the batch waits in a backlog and is retried from a timer, the event loop running
 * in between; batches that arrive meanwhile join the backlog, so one attempt (one short wait) is
 * made per retry however many requests are waiting. A batch still locked out after `busyWaitMs`
 * rejects. Any other failure (disk full) rejects at once. The plugin then fails open or closed by
 * policy.
 */
import type { Database, Statement } from "bun:sqlite";
import { and, gt, gte, inArray, lt, type SQL, sql } from "drizzle-orm";
import { isDatabaseBusy } from "../../db/busy";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { rateLimitCounters as counters } from "../../db/schema";
import {
  CheckQueue,
  fail,
  grantOf,
  latestNow,
  leaseOf,
  type PendingCheck,
  type PolicyDecision,
  settle,
  shareGrants,
} from "./coalesce";
import { BURST_WINDOW_MS, type Policy } from "./policies";
import { rollForward, windowStartOf } from "./sliding-window";
import type { LeasableStore, LimitCheck, LimitOutcome, UnusedPermits } from "./store";

// The decision is a read of the (policy, key) row, the arithmetic here, and a write of the row,
// inside the BEGIN IMMEDIATE transaction every decision runs in: the write lock is held from the
// read to the write, so no other process can count between them and processes sharing the file
// never admit more than the limit, exactly as when one UPSERT read and wrote the row. Measured
// against that UPSERT (its CASE expressions spelled three times, then a primary-key SELECT to
// read the decided row back): 6.4 → 4.5 µs a check of an existing key and 7.4 → 5.4 µs a new
// key, 256 checks a transaction, 5 interleaved rounds. The write names neither the key columns
// nor `prune_after`, so it rewrites no index entry; only the insert and the prune write
// `prune_after` (the indexed column). Raw SQL, not Drizzle: the same three statements as Drizzle
// prepared ones (bench/limiter.ts, `prepareDrizzleDecision`) measured 0.52× these at 256 checks a
// transaction (145k against 281k checks/s, one run on a busy 2-core machine). The row is written
// back by its key, not its rowid: a rowid past 2^53 (any new row's, once one row written into the
// file holds the largest rowid) reads rounded as a JS number, and the write by it changed no row
// or another one, every new client's counts stuck at one (probe 50a F2).
export const READ_ROW = `
SELECT window_start, previous, current, burst_window_start, burst_previous, burst_current
FROM rate_limit_counters WHERE policy = ?1 AND key = ?2`;

// ?1 policy, ?2 key, ?3 window start, ?4 previous, ?5 current, ?6 burst window start, ?7 burst
// previous, ?8 burst current, ?9 permits granted, ?10 expiry.
export const WRITE_ROW = `
UPDATE rate_limit_counters SET window_start = ?3, previous = ?4, current = ?5,
  burst_window_start = ?6, burst_previous = ?7, burst_current = ?8, admitted = ?9, expires_at = ?10
WHERE policy = ?1 AND key = ?2`;

// ?1 policy, ?2 key, ?3 window start, ?4 burst window start, ?5 permits granted, ?6 expiry.
export const INSERT_ROW = `
INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
  burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
VALUES (?1, ?2, ?3, ?5, 0, ?4, ?5, 0, ?5, ?6, ?6)`;

// The windows as stored: read as they are, since someone editing the file may write anything.
type StoredRow = unknown[];

// ?1 policy, ?2 key, ?3 window start the permits were counted in, ?4 window ms, ?5 permits, ?6 burst
// window start, ?7 burst window ms. Uncounts unused leased permits where they were counted: the
// current count while the row is still in that window, the previous one once it has rolled once
// (the roll moved the count there), nothing later; never below zero.
export const GIVE_BACK = `
UPDATE rate_limit_counters SET
  current = CASE WHEN window_start = ?3 THEN MAX(0, current - ?5) ELSE current END,
  previous = CASE WHEN window_start = ?3 + ?4 THEN MAX(0, previous - ?5) ELSE previous END,
  burst_current = CASE WHEN burst_window_start = ?6 THEN MAX(0, burst_current - ?5) ELSE burst_current END,
  burst_previous = CASE WHEN burst_window_start = ?6 + ?7 THEN MAX(0, burst_previous - ?5) ELSE burst_previous END
WHERE policy = ?1 AND key = ?2`;

/**
 * The first `limit` rows whose `prune_after` has passed, in index order: the prune's batch. Run
 * twice in one transaction (delete the expired, then move on the rest), it names the same rows the
 * second time, less those the first deleted.
 */
function dueForPrune(db: AppDatabase, rowid: SQL<number>) {
  return db
    .select({ rowid })
    .from(counters)
    .where(lt(counters.pruneAfter, sql.placeholder("before")))
    .orderBy(counters.pruneAfter)
    .limit(sql.placeholder("limit"));
}

/** Everything but the decision: the bounded prune. */
function prepareStatements(db: AppDatabase) {
  const rowid = sql<number>`rowid`;
  return {
    pruneExpired: db
      .delete(counters)
      .where(
        and(
          inArray(rowid, dueForPrune(db, rowid)),
          lt(counters.expiresAt, sql.placeholder("before")),
        ),
      )
      .returning({ policy: counters.policy })
      .prepare(),
    // A `prune_after` no check or prune writes: text, or further ahead than any window reaches.
    // The store never rewrites it, so such a row written into the file was kept for good, and its
    // client's counts with it (probe 89b F3).
    pruneUnwritable: db
      .delete(counters)
      .where(
        inArray(
          rowid,
          db
            .select({ rowid })
            .from(counters)
            .where(gt(counters.pruneAfter, sql.placeholder("horizon")))
            .orderBy(counters.pruneAfter)
            .limit(sql.placeholder("limit")),
        ),
      )
      .returning({ policy: counters.policy })
      .prepare(),
    moveOnLive: db
      .update(counters)
      .set({ pruneAfter: counters.expiresAt })
      .where(
        and(
          inArray(rowid, dueForPrune(db, rowid)),
          gte(counters.expiresAt, sql.placeholder("before")),
        ),
      )
      .returning({ policy: counters.policy })
      .prepare(),
  };
}

/**
 * How far ahead a row's `prune_after` may lie: two of the longest window (15 minutes) is what the
 * store writes; a day more allows for a clock set back since. Past it, the row is deleted.
 */
export const PRUNE_HORIZON_MS = 24 * 60 * 60_000 + 2 * 15 * 60_000;

/** How long a check waits for another connection's write lock before the store gives up. */
export const LIMITER_BUSY_WAIT_MS = 500;
const BUSY_RETRY_MS = 25;

interface Waiting {
  groups: PendingCheck[][];
  returns: UnusedPermits[];
  since: number;
}

export interface SqliteLimiterStoreOptions {
  sqlite: Database;
  /** How long checks wait for a locked database in total; LIMITER_BUSY_WAIT_MS by default. */
  busyWaitMs?: number;
  /** Rows deleted per event-loop turn at most, so a prune never stalls the event loop. */
  pruneBatch?: number;
}

export class SqliteLimiterStore implements LeasableStore {
  private readonly sqlite: Database;
  private readonly readRow: Statement;
  private readonly writeRow: Statement;
  private readonly insertRow: Statement;
  private readonly giveBackStatement: Statement;
  private readonly statements: ReturnType<typeof prepareStatements>;
  private readonly pruneBatch: number;
  private readonly busyWaitMs: number;
  private readonly queue = new CheckQueue((groups, returns) => this.runGroups(groups, returns));
  private backlog: Waiting[] = [];
  private retryTimer: Timer | null = null;
  private pruneContinuation: ReturnType<typeof setImmediate> | null = null;

  constructor({
    sqlite,
    pruneBatch = 1000,
    busyWaitMs = LIMITER_BUSY_WAIT_MS,
  }: SqliteLimiterStoreOptions) {
    this.sqlite = sqlite;
    this.busyWaitMs = busyWaitMs;
    this.readRow = sqlite.prepare(READ_ROW);
    this.writeRow = sqlite.prepare(WRITE_ROW);
    this.insertRow = sqlite.prepare(INSERT_ROW);
    this.giveBackStatement = sqlite.prepare(GIVE_BACK);
    this.statements = prepareStatements(drizzleOf(sqlite));
    this.pruneBatch = pruneBatch;
  }

  check(checks: readonly LimitCheck[]): Promise<LimitOutcome[]> {
    return this.queue.check(checks);
  }

  checkAndLease(checks: readonly LimitCheck[], extra: number) {
    return this.queue.checkAndLease(checks, extra);
  }

  giveBack(permits: readonly UnusedPermits[]): void {
    this.queue.giveBack(permits);
  }

  /**
   * Decides one request's checks now, in a transaction of their own: the one-commit-per-check form
   * the benchmark measures the group commit against. The app itself always goes through `check`.
   */
  checkNow(checks: readonly LimitCheck[]): LimitOutcome[] {
    const entry: PendingCheck = { checks, resolve() {}, reject() {} };
    return this.sqlite.transaction(() => this.decideGroup([entry])[0]!).immediate();
  }

  reset(policy: Policy, key: string): Promise<void> {
    this.sqlite
      .query("DELETE FROM rate_limit_counters WHERE policy = ? AND key = ?")
      .run(policy.id, key);
    return Promise.resolve();
  }

  /**
   * Deletes one batch of expired rows now and, while batches come back full, the next batch on each
   * following event-loop turn: a flood of new addresses creates thousands of rows a second, and
   * one batch per maintenance tick would let the table (and the file) grow without bound.
   * Returns the rows deleted now.
   *
   * A batch is the `pruneBatch` rows whose `prune_after` has passed. Those whose `expires_at` has
   * passed too are deleted; the others, clients still counting (checks move `expires_at` on, never
   * `prune_after`), get `prune_after = expires_at` and leave the batch until then. So every expired
   * row is due (its `prune_after` is at most its `expires_at`), a live row is looked at about once
   * per two windows, and a batch examines at most `pruneBatch` rows, in one transaction.
   */
  prune(now: number): number {
    const { deleted, examined } = this.pruneBatchNow(now);
    if (examined === this.pruneBatch && this.pruneContinuation === null) this.continuePruning(now);
    return deleted;
  }

  private pruneBatchNow(now: number): { deleted: number; examined: number } {
    return this.sqlite
      .transaction(() => {
        const limit = this.pruneBatch;
        const unwritable = this.statements.pruneUnwritable.all({
          horizon: now + PRUNE_HORIZON_MS,
          limit,
        }).length;
        const deleted =
          unwritable +
          (unwritable < limit
            ? this.statements.pruneExpired.all({ before: now, limit: limit - unwritable }).length
            : 0);
        const moved =
          deleted < limit
            ? this.statements.moveOnLive.all({ before: now, limit: limit - deleted }).length
            : 0;
        return { deleted, examined: deleted + moved };
      })
      .immediate();
  }

  private continuePruning(now: number): void {
    this.pruneContinuation = setImmediate(() => {
      this.pruneContinuation = null;
      let examined: number;
      try {
        examined = this.pruneBatchNow(now).examined;
      } catch {
        // Locked or failing: the next maintenance tick starts over.
        return;
      }
      if (examined === this.pruneBatch) this.continuePruning(now);
    });
  }

  close(): void {
    this.queue.flush();
    if (this.pruneContinuation !== null) {
      clearImmediate(this.pruneContinuation);
      this.pruneContinuation = null;
    }
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    const closed = new Error("the limiter store is closed");
    for (const waiting of this.backlog) for (const group of waiting.groups) fail(group, closed);
    this.backlog = [];
  }

  private runGroups(groups: PendingCheck[][], returns: UnusedPermits[]): void {
    const waiting = { groups, returns, since: performance.now() };
    // While the lock holds, new checks wait with the others rather than each meeting it.
    if (this.retryTimer !== null) this.backlog.push(waiting);
    else this.attempt([waiting]);
  }

  /** All groups in one BEGIN IMMEDIATE transaction; a failure rejects them all, or waits. */
  private attempt(entries: Waiting[]): void {
    const groups = entries.length === 1 ? entries[0]!.groups : entries.flatMap((e) => e.groups);
    const returns = entries.length === 1 ? entries[0]!.returns : entries.flatMap((e) => e.returns);
    let decided: LimitOutcome[][][];
    try {
      decided = this.sqlite
        .transaction(() => {
          // Permits given back first, so the checks of the same turn can have them.
          for (const r of returns) this.uncount(r);
          return groups.map((g) => this.decideGroup(g));
        })
        .immediate();
    } catch (error) {
      const now = performance.now();
      for (const entry of entries) {
        if (isDatabaseBusy(error) && now - entry.since < this.busyWaitMs) this.backlog.push(entry);
        // Permits not given back stay counted: never more than the limit, only fewer.
        else for (const group of entry.groups) fail(group, error);
      }
      if (this.backlog.length > 0 && this.retryTimer === null) {
        this.retryTimer = setTimeout(() => this.retryBacklog(), BUSY_RETRY_MS);
      }
      return;
    }
    for (let g = 0; g < groups.length; g++) settle(groups[g]!, decided[g]!);
  }

  private retryBacklog(): void {
    this.retryTimer = null;
    const entries = this.backlog;
    this.backlog = [];
    if (entries.length > 0) this.attempt(entries);
  }

  /**
   * One decision over all of the group's policies: each row read and rolled forward first, then
   * what every policy has room for (grantOf) counted in each. A refused request is counted by none.
   */
  private decideGroup(group: readonly PendingCheck[]): LimitOutcome[][] {
    const checks = group[0]!.checks;
    const now = latestNow(group);
    if (group.length === 1 && !(group[0]!.extra! > 0)) return [this.decideAlone(checks, now)];
    const lease = leaseOf(group);
    const looks = checks.map((check) => this.look(check, now));
    const granted = grantOf(
      group.length + lease.extra,
      looks.map((look) => look.room),
    );
    if (granted > 0)
      for (let i = 0; i < checks.length; i++) this.count(checks[i]!, looks[i]!, granted);
    return shareGrants(group.length, looks, granted, lease);
  }

  /**
   * A request alone in its group and asking no lease (most requests when clients are many): one
   * permit counted in every policy if each has room, else none, as shareGrants would decide it,
   * without its per-group arrays and copies. Each outcome is the look's own state object; a
   * refused request's has every policy's, each saying whether that policy had room, so its
   * Retry-After is the wait until all of them admit (probe 50a F1).
   */
  private decideAlone(checks: readonly LimitCheck[], now: number): LimitOutcome[] {
    const outcomes: LimitOutcome[] = [];
    let refused = false;
    const looks: Look[] = [];
    for (let i = 0; i < checks.length; i++) {
      const look = this.look(checks[i]!, now);
      looks.push(look);
      outcomes.push(look.state);
      if (look.room < 1) {
        look.state.admitted = false;
        refused = true;
      }
    }
    if (!refused) for (let i = 0; i < checks.length; i++) this.count(checks[i]!, looks[i]!, 1);
    return outcomes;
  }

  private uncount({ policy, key, windowStart, burstWindowStart, count }: UnusedPermits): void {
    this.giveBackStatement.run(
      policy.id,
      key,
      windowStart,
      policy.windowMs,
      count,
      burstWindowStart,
      BURST_WINDOW_MS,
    );
  }

  /**
   * The (policy, key) row as it stands at `now` (`now` is the group's latest arrival, not the
   * check's own), its windows rolled forward, and how many permits it has room for:
   * floor(limit − estimate) under both windows' limits, never negative; a new key's room is the
   * smaller limit. Counts nothing. Runs inside the group's transaction.
   */
  private look({ policy, key }: LimitCheck, now: number): Look {
    const row = this.readRow.values(policy.id, key)[0] as unknown as StoredRow | undefined;
    if (row === undefined) {
      const windowStart = windowStartOf(now, policy.windowMs);
      const burstWindowStart = windowStartOf(now, BURST_WINDOW_MS);
      return {
        stored: false,
        state: {
          windowStart,
          previous: 0,
          current: 0,
          burstWindowStart,
          burstPrevious: 0,
          burstCurrent: 0,
          admitted: true,
        },
        room: Math.max(0, Math.min(policy.limit, policy.burstLimit)),
      };
    }
    const long = rollForward(now, policy.windowMs, row[0], row[1], row[2]);
    const burst = rollForward(now, BURST_WINDOW_MS, row[3], row[4], row[5]);
    // Left to right as SQL's CAST(limit − previous × weight − current AS INTEGER) computed it.
    const room = Math.max(
      0,
      Math.min(
        Math.trunc(policy.limit - long.previous * long.weight - long.current),
        Math.trunc(policy.burstLimit - burst.previous * burst.weight - burst.current),
      ),
    );
    return {
      stored: true,
      state: {
        windowStart: long.windowStart,
        previous: long.previous,
        current: long.current,
        burstWindowStart: burst.windowStart,
        burstPrevious: burst.previous,
        burstCurrent: burst.current,
        admitted: true,
      },
      room,
    };
  }

  /** Counts `granted` permits in the row `look` read (inserting it for a new key), and in its state. */
  private count({ policy, key }: LimitCheck, look: Look, granted: number): void {
    const state = look.state;
    state.current += granted;
    state.burstCurrent += granted;
    const expiresAt = expiryOf(state.windowStart, policy.windowMs, state.burstWindowStart);
    if (!look.stored) {
      this.insertRow.run(
        policy.id,
        key,
        state.windowStart,
        state.burstWindowStart,
        granted,
        expiresAt,
      );
      return;
    }
    this.writeRow.run(
      policy.id,
      key,
      state.windowStart,
      state.previous,
      state.current,
      state.burstWindowStart,
      state.burstPrevious,
      state.burstCurrent,
      granted,
      expiresAt,
    );
  }
}

/** A row as a decision read it: whether it is stored (not for a new key), its windows now, and its room. */
interface Look extends PolicyDecision {
  stored: boolean;
  state: LimitOutcome;
}

/** When a row of these windows may be pruned: once both are two windows old. */
function expiryOf(windowStart: number, windowMs: number, burstWindowStart: number): number {
  return Math.max(windowStart + 2 * windowMs, burstWindowStart + 2 * BURST_WINDOW_MS);
}
