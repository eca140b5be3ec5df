/**
 * @module
 * The SQLite limiter store.
 *
 * Each check is one UPSERT on the (policy, key) row that advances both windows, decides and counts
 * in a single statement, so processes sharing the file never admit more than the limit; the row is
 * then read back in the same transaction, which still holds the write lock.
 *
 * Group commit: one autocommit UPSERT costs ~19 µs here, most of it the commit. Checks are queued
 * and run together in one BEGIN IMMEDIATE transaction per event-loop turn (setImmediate), which
 * costs a few µs per check under load and still holds the write lock across each decision.
 * Concurrent checks for the same key are one statement asking for that many permits: the store
 * grants as many as fit, and the first that many requests are admitted (and a lease, lease.ts,
 * asks for its permits after theirs in the same statement; permits a lease did not use are
 * uncounted at the start of the next transaction, GIVE_BACK). Rows
 * are read back with `.values()` inside that explicit transaction: reading them with `.get()`
 * outside one kept a read snapshot open and stopped the WAL from ever being reset.
 *
 * Another connection's write lock: the transaction waits the connection's short busy timeout
 * (db/busy), then the batch waits in a backlog and is retried from a timer, the event loop running
 * in between; batches that arrive meanwhile join the backlog, so one attempt (one short wait) is
 * made per retry however many requests are waiting. A batch still locked out after `busyWaitMs`
 * rejects. Any other failure (disk full) rejects at once. The plugin then fails open or closed by
 * policy.
 */
import type { Database, Statement } from "bun:sqlite";
import { and, eq, gte, inArray, lt, type SQL, sql } from "drizzle-orm";
import { isDatabaseBusy } from "../../db/busy";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { rateLimitCounters as counters } from "../../db/schema";
import {
  CheckQueue,
  estimateStored,
  fail,
  type Grant,
  latestNow,
  leaseOf,
  type PendingCheck,
  settle,
  shareGrants,
} from "./coalesce";
import { BURST_WINDOW_MS, type Policy } from "./policies";
import { previousWeight, windowStartOf } from "./sliding-window";
import type { LeasableStore, LimitCheck, LimitOutcome, UnusedPermits } from "./store";

// ?1 policy, ?2 key, ?3 window start, ?4 window ms, ?5 weight of the previous window, ?6 burst
// window start, ?7 burst window ms, ?8 burst weight, ?9 limit, ?10 burst limit, ?11 expiry,
// ?12 permits wanted. Grants as many of the wanted permits as fit under both windows' limits
// (floor(limit − estimate), never negative) and counts only those. `prune_after` is written only
// by the insert (and the prune): it is the indexed column, and an update that names an indexed
// column rewrites its index entry even when the value is unchanged.
// The rolled-over counts are spelled out in each SET expression because SET sees only the old row.
// Computing them once in a CTE joined to the row reads better but measured 10× slower here
// (16k against 180k checks/s grouped): SQLite materialised the CTE instead of using the key.
// Raw SQL, not Drizzle: the same statement as a Drizzle prepared statement (bench/limiter.ts,
// `prepareDrizzleUpsert`) binds 66 values where this binds 12 (Drizzle cannot number its
// parameters), and measured 0.70–0.75× this statement's checks/s at 256 checks per transaction,
// the store's grouped form (47–75k against 67–100k/s on a busy 2-core machine), 0.89–0.94× one
// autocommit per check. Every other query of the app goes through Drizzle.
const P =
  "CASE WHEN window_start = ?3 THEN previous WHEN window_start = ?3 - ?4 THEN current ELSE 0 END";
const C = "CASE WHEN window_start = ?3 THEN current ELSE 0 END";
const BP =
  "CASE WHEN burst_window_start = ?6 THEN burst_previous WHEN burst_window_start = ?6 - ?7 THEN burst_current ELSE 0 END";
const BC = "CASE WHEN burst_window_start = ?6 THEN burst_current ELSE 0 END";
const EXACT_GRANT = `MAX(0, MIN(?12, CAST(?9 - (${P}) * ?5 - (${C}) AS INTEGER), CAST(?10 - (${BP}) * ?8 - (${BC}) AS INTEGER)))`;
// Whichever window the row is in, its estimate is at most previous + current (a weight is at most
// 1, a rolled count is one of the stored ones or 0), so when those plain sums leave room for every
// permit wanted, the exact grant is all of them: only a key near a limit pays for the weighted
// estimate. GRANTED is spelled three times (SET sees only the old row), so this cheap test is what
// most checks evaluate: measured 8.2 → 7.0 µs a grouped check (61 interleaved rounds, 10k keys).
const GRANTED = `CASE WHEN previous + current + ?12 <= ?9 AND burst_previous + burst_current + ?12 <= ?10 THEN ?12 ELSE ${EXACT_GRANT} END`;
export const UPSERT = `
INSERT INTO rate_limit_counters (policy, key, window_start, current, previous,
  burst_window_start, burst_current, burst_previous, admitted, expires_at, prune_after)
VALUES (?1, ?2, ?3, MIN(?12, ?9, ?10), 0, ?6, MIN(?12, ?9, ?10), 0, MIN(?12, ?9, ?10), ?11, ?11)
ON CONFLICT (policy, key) DO UPDATE SET
  previous = ${P},
  current = (${C}) + ${GRANTED},
  burst_previous = ${BP},
  burst_current = (${BC}) + ${GRANTED},
  admitted = ${GRANTED},
  window_start = ?3,
  burst_window_start = ?6,
  expires_at = ?11`;

// What the UPSERT left, read back by a second statement rather than with RETURNING: SQLite
// gathers RETURNING rows in a temporary table per execution, which was about half the statement's
// cost (measured 9.8 → 8.3 µs a grouped check for UPSERT + this SELECT against UPSERT … RETURNING,
// 41 interleaved rounds). Raw for the same reason as the UPSERT: the two are one decision.
export const READ_BACK = `
SELECT window_start, previous, current, burst_window_start, burst_previous, burst_current, admitted
FROM rate_limit_counters WHERE policy = ?1 AND key = ?2`;

type Row = [number, number, number, number, number, number, number];

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

/** Everything but the decision: a read for the lockout's peek, and the bounded prune. */
function prepareStatements(db: AppDatabase) {
  const rowid = sql<number>`rowid`;
  return {
    peek: db
      .select({
        windowStart: counters.windowStart,
        previous: counters.previous,
        current: counters.current,
      })
      .from(counters)
      .where(
        and(
          eq(counters.policy, sql.placeholder("policy")),
          eq(counters.key, sql.placeholder("key")),
        ),
      )
      .prepare(),
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
  private readonly upsert: Statement;
  private readonly readBack: Statement;
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
    this.upsert = sqlite.prepare(UPSERT);
    this.readBack = sqlite.prepare(READ_BACK);
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

  peek(policy: Policy, key: string, now: number): Promise<number> {
    const stored = this.statements.peek.get({ policy: policy.id, key }) ?? null;
    return Promise.resolve(estimateStored(stored, now, policy.windowMs));
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
        const deleted = this.statements.pruneExpired.all({ before: now, limit }).length;
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

  private decideGroup(group: readonly PendingCheck[]): LimitOutcome[][] {
    const checks = group[0]!.checks;
    const now = latestNow(group);
    return shareGrants(
      group.length,
      checks.length,
      (index, wanted) => this.decide(checks[index]!, now, wanted),
      leaseOf(group),
    );
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

  /** `now` is the group's latest arrival, not the check's own. */
  private decide({ policy, key }: LimitCheck, now: number, wanted: number): Grant {
    const windowStart = windowStartOf(now, policy.windowMs);
    const burstWindowStart = windowStartOf(now, BURST_WINDOW_MS);
    const expiresAt = windowStart + 2 * policy.windowMs;
    this.upsert.run(
      policy.id,
      key,
      windowStart,
      policy.windowMs,
      previousWeight(now, policy.windowMs),
      burstWindowStart,
      BURST_WINDOW_MS,
      previousWeight(now, BURST_WINDOW_MS),
      policy.limit,
      policy.burstLimit,
      Math.max(expiresAt, burstWindowStart + 2 * BURST_WINDOW_MS),
      wanted,
    );
    const row = this.readBack.values(policy.id, key)[0] as unknown as Row;
    return {
      state: {
        windowStart: row[0],
        previous: row[1],
        current: row[2],
        burstWindowStart: row[3],
        burstPrevious: row[4],
        burstCurrent: row[5],
      },
      granted: row[6],
    };
  }
}
