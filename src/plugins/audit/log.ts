/**
 * @module
 * The SQLite audit log.
 *
 * Writes: ordinary events are queued and written in one transaction every 100 ms or every 500
 * events, off the request path; `mustNotLose` events are written synchronously, together with
 * whatever is queued (keeping order), before `record` returns, so a response that follows them
 * can never outlive them. Queued events are lost only if the process is killed within those 100 ms;
 * `close()` flushes them on shutdown.
 *
 * Chain: every write runs in BEGIN IMMEDIATE and reads the last row's hash inside it, so several
 * processes appending to one file still form one chain.
 *
 * Retention: rows older than the retention period are deleted oldest first, a bounded number per
 * run, leaving a checkpoint with the last deleted hash so the remaining chain still verifies.
 */
import type { Database, Statement } from "bun:sqlite";
import type { Logger } from "pino";
import { Counter, type Registry } from "prom-client";
import type { Clock } from "../../clock";
import { isDatabaseBusy } from "../../db/busy";
import { GENESIS_HASH, newSalt, rowHash, subjectCommit } from "./chain";
import { type AuditEvent, encodeDetail, mustNotLose } from "./events";

export interface AuditRow {
  id: number;
  at: number;
  type: string;
  actor: string | null;
  ip: string | null;
  route: string | null;
  requestId: string | null;
  outcome: string;
  detail: string;
  subjectSalt: string | null;
  subjectCommit: string;
  prevHash: string;
  hash: string;
}

export type VerifyResult =
  | { ok: true; checked: number }
  | { ok: false; checked: number; badId: number; reason: string };

/** What the rest of the app needs from an audit log. */
export interface AuditLog {
  record(event: AuditEvent): void;
  flush(): void;
  close(): void;
}

export interface SqliteAuditLogOptions {
  sqlite: Database;
  clock: Clock;
  logger: Logger;
  registry?: Registry;
  flushIntervalMs?: number;
  flushBatchSize?: number;
}

const COLUMNS =
  "id, at, type, actor, ip, route, request_id AS requestId, outcome, detail, " +
  "subject_salt AS subjectSalt, subject_commit AS subjectCommit, prev_hash AS prevHash, hash";

const MAX_QUEUED_EVENTS = 100_000;

export class SqliteAuditLog implements AuditLog {
  private queue: AuditEvent[] = [];
  private timer: Timer | null = null;
  private closed = false;
  /** A batch met the lock and waits for the timer. */
  private deferred = false;
  private readonly sqlite: Database;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly flushIntervalMs: number;
  private readonly flushBatchSize: number;
  private readonly insert: Statement;
  private readonly lastRow: Statement<{ hash: string }>;
  private readonly lastCheckpoint: Statement<{ lastHash: string }>;
  private readonly counter: Counter<"type"> | null;

  constructor(options: SqliteAuditLogOptions) {
    this.sqlite = options.sqlite;
    this.clock = options.clock;
    this.logger = options.logger;
    this.flushIntervalMs = options.flushIntervalMs ?? 100;
    this.flushBatchSize = options.flushBatchSize ?? 500;
    this.insert = this.sqlite.prepare(
      `INSERT INTO audit_events (at, type, actor, ip, route, request_id, outcome, detail,
         subject_salt, subject_commit, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.lastRow = this.sqlite.prepare("SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1");
    this.lastCheckpoint = this.sqlite.prepare(
      "SELECT last_hash AS lastHash FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
    );
    this.counter = options.registry
      ? new Counter({
          name: "audit_events_total",
          help: "Security events recorded in the audit log, by type",
          labelNames: ["type"] as const,
          registers: [options.registry],
        })
      : null;
  }

  record(event: AuditEvent): void {
    const stamped = event.at === undefined ? { ...event, at: this.clock.now() } : event;
    this.counter?.labels(event.type).inc();
    if (this.closed || mustNotLose(event.type)) {
      const batch = [...this.takeQueue(), stamped];
      try {
        this.write(batch);
        this.deferred = false;
      } catch (error) {
        if (!isDatabaseBusy(error) || this.closed) throw error;
        this.requeue(batch);
        throw error;
      }
      return;
    }
    this.queue.push(stamped);
    // While the database is locked the timer retries; a full queue must not try on every event.
    if (this.queue.length >= this.flushBatchSize && !this.deferred) {
      this.flush();
    } else if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.flushIntervalMs);
      this.timer.unref?.();
    }
  }

  flush(): void {
    const batch = this.takeQueue();
    if (batch.length === 0) return;
    try {
      this.write(batch);
      this.deferred = false;
    } catch (error) {
      if (isDatabaseBusy(error) && !this.closed) {
        this.logger.warn({ queued: batch.length }, "audit flush deferred: the database is locked");
        this.requeue(batch);
        return;
      }
      // A full or broken database must not crash a request; the events are logged instead.
      this.logger.error({ err: error, lost: batch.length }, "audit flush failed");
    }
  }

  /** Puts a batch back in front of the queue (keeping order) and schedules the next try. */
  private requeue(batch: AuditEvent[]): void {
    this.deferred = true;
    this.queue = batch.concat(this.queue);
    // A lock held for very long must not hold memory without bound; the oldest go first.
    const excess = this.queue.length - MAX_QUEUED_EVENTS;
    if (excess > 0) {
      this.queue.splice(0, excess);
      this.logger.error({ lost: excess }, "audit events dropped: the database stayed locked");
    }
    if (this.timer === null) {
      this.timer = setTimeout(() => this.flush(), this.flushIntervalMs);
      this.timer.unref?.();
    }
  }

  close(): void {
    this.flush();
    this.closed = true;
    const left = this.takeQueue();
    if (left.length > 0) {
      this.logger.error(
        { lost: left.length },
        "audit events lost at shutdown: the database stayed locked",
      );
    }
  }

  private takeQueue(): AuditEvent[] {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.queue;
    this.queue = [];
    return batch;
  }

  private write(events: AuditEvent[]): void {
    this.sqlite
      .transaction(() => {
        let prevHash =
          this.lastRow.get()?.hash ?? this.lastCheckpoint.get()?.lastHash ?? GENESIS_HASH;
        for (const event of events) {
          const salt = newSalt();
          const actor = event.actor ?? null;
          const ip = event.ip ?? null;
          const fields = {
            at: event.at!,
            type: event.type,
            route: event.route ?? null,
            requestId: event.requestId ?? null,
            outcome: event.outcome,
            detail: encodeDetail(event.detail),
            subjectCommit: subjectCommit(salt, actor, ip),
          };
          const hash = rowHash(prevHash, fields);
          this.insert.run(
            fields.at,
            fields.type,
            actor,
            ip,
            fields.route,
            fields.requestId,
            fields.outcome,
            fields.detail,
            salt,
            fields.subjectCommit,
            prevHash,
            hash,
          );
          prevHash = hash;
        }
      })
      .immediate();
  }
}

/** Walks the chain from the oldest kept row; the first inconsistency is reported with its id. */
export function verifyAuditChain(sqlite: Database): VerifyResult {
  const checkpoint = sqlite
    .query<{ lastHash: string }, []>(
      "SELECT last_hash AS lastHash FROM audit_checkpoints ORDER BY id DESC LIMIT 1",
    )
    .get();
  let expectedPrev = checkpoint?.lastHash ?? GENESIS_HASH;
  let checked = 0;
  for (const row of sqlite
    .query<AuditRow, []>(`SELECT ${COLUMNS} FROM audit_events ORDER BY id`)
    .iterate()) {
    if (row.prevHash !== expectedPrev) {
      return {
        ok: false,
        checked,
        badId: row.id,
        reason: "a row before it was removed or altered",
      };
    }
    if (rowHash(row.prevHash, row) !== row.hash) {
      return { ok: false, checked, badId: row.id, reason: "its fields were altered" };
    }
    if (
      row.subjectSalt !== null &&
      subjectCommit(row.subjectSalt, row.actor, row.ip) !== row.subjectCommit
    ) {
      return { ok: false, checked, badId: row.id, reason: "its actor or address was altered" };
    }
    expectedPrev = row.hash;
    checked++;
  }
  return { ok: true, checked };
}

export function recentAuditEvents(sqlite: Database, limit: number): AuditRow[] {
  return sqlite
    .query<AuditRow, [number]>(`SELECT ${COLUMNS} FROM audit_events ORDER BY id DESC LIMIT ?`)
    .all(limit)
    .reverse();
}

/**
 * Deletes up to `maxRows` of the oldest rows older than `cutoff`, recording a checkpoint with the
 * last deleted row's hash. Returns how many rows were deleted.
 */
export function pruneAuditEvents(
  sqlite: Database,
  cutoff: number,
  now: number,
  maxRows = 5000,
): number {
  return sqlite
    .transaction(() => {
      const last = sqlite
        .query<{ id: number; hash: string }, [number, number]>(
          `SELECT id, hash FROM (SELECT id, hash FROM audit_events WHERE at < ? ORDER BY id LIMIT ?)
           ORDER BY id DESC LIMIT 1`,
        )
        .get(cutoff, maxRows);
      if (!last) return 0;
      // Only a contiguous run from the start of the chain may go, or the chain would have a hole.
      const deleted = sqlite.run("DELETE FROM audit_events WHERE id <= ?", [last.id]).changes;
      sqlite.run(
        `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count)
         VALUES (?, ?, ?, ?)`,
        [now, last.id, last.hash, deleted],
      );
      return deleted;
    })
    .immediate();
}
