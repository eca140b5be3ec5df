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
 * Chain: every write runs in BEGIN IMMEDIATE and reads the last row's id and hash inside it, so
 * several processes appending to one file still form one chain. Each row is keyed with
 * AUDIT_SECRET_KEY (see chain.ts; verify.ts checks it).
 *
 * Anchors: the chain cannot tell on its own that its newest rows were deleted, so the head (the
 * newest row's hash and id) is written to the process log whenever it moved, at each maintenance
 * run and at shutdown; `audit:verify --head H --count N` checks the table against such a line.
 *
 * Retention: rows older than the retention period are deleted oldest first, a bounded number per
 * run, after checking them, leaving an authenticated checkpoint with the last deleted hash so the
 * remaining chain still verifies.
 *
 * Erasure: `pseudonymise` replaces an actor by its pseudonym, drops the address and the salt, and
 * authenticates that rewrite per row, so verification accepts it and refuses any other; in rows
 * that commit to their detail it also replaces the actor where others' details name it (found
 * through `audit_event_names`, written with each event). It also
 * records the actor as erased (`audit_erased_actors`, keyed by the actor's own pseudonym): an
 * event for it that any process writes afterwards (queued before the erasure, or recorded by a
 * request already under way) is written under the pseudonym, without its address.
 */
import type { Database } from "bun:sqlite";
import { and, asc, desc, eq, isNull, lte, max, ne, or, sql } from "drizzle-orm";
import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";
import { type Clock, DAY_MS, elapsedMs } from "../../clock";
import type { LogLevel } from "../../config";
import { afterTransaction } from "../../db/after-transaction";
import { isDatabaseBusy } from "../../db/busy";
import { type AppDatabase, drizzleOf } from "../../db/client";
import { IdSequenceError, spentIdsIn } from "../../db/id-sequence";
import { preparedOnUse } from "../../db/prepared-on-use";
import { sealMatches } from "../../db/row-seal";
import { auditCheckpoints, auditErasedActors, auditEventNames, auditEvents } from "../../db/schema";
import {
  cutBetweenCharacters,
  cutClientText,
  type LogFn,
  type Logger,
  logSafe,
  secretScrubber,
} from "../../logging/logger";
import { scrubUrlPart } from "../../logging/scrub";
import { METRIC } from "../metrics/names";
import { Counter, everyCombination, type Registry, startAtZero } from "../metrics/prom";
import {
  type AuditKeys,
  commitsToDetail,
  detailWithout,
  GENESIS_HASH,
  matchesCommit,
  newSalt,
  PSEUDONYM_PREFIX,
  subjectCommit,
} from "./chain";
import {
  AUDIT_EVENT_TYPES,
  type AuditDetail,
  type AuditEvent,
  encodeDetail,
  mustNotLose,
  principalsNamed,
  SEALING_EVENT_TYPES,
  type SealingEventType,
  SUBJECT_ADDRESS_TYPES,
  withPrincipalsReplaced,
} from "./events";
import {
  type AuditHead,
  type AuditRow,
  latestCheckpoint,
  rowVouched,
  verifyAuditChain,
} from "./verify";

export type { AuditHead, AuditRow, VerifyResult } from "./verify";
export { verifyAuditChain } from "./verify";

/** An erased actor whose rows are not all rewritten: its pseudonym, and when it was erased. */
export interface UnfinishedErasure {
  actor: string;
  pseudonym: string;
  /** As recorded (ms), by whichever process erased it; 0 when the file holds no time there. */
  erasedAt: number;
}

/** Where a scan for unfinished erasures stands: the actors of events, then the names in details. */
export interface ErasureScanCursor {
  in: "actors" | "names";
  after: string;
}

/** What the rest of the app needs from an audit log. */
export interface AuditLog {
  /**
   * Counts in the metrics events written on this log by another writer of this process, in a
   * transaction that has committed (an upgrade's, written with its migrations: upgrade-sealing.ts).
   */
  countWritten(events: readonly AuditEvent[]): void;
  record(event: AuditEvent): void;
  flush(): void;
  /**
   * The process exits now without closing (a stop signalled again): what is queued is written if
   * the database lets it at once, and what is left is logged as lost, as `close` logs it (probe
   * 50b F5: under a lock the queue holds everything since the lock began, and went unnamed).
   */
  reportQueued(why: string): void;
  /**
   * Erasure: rewrites every row of `actor` to `pseudonym` without address or salt, authenticated
   * per row, and has rows written for `actor` afterwards (by any process) take `pseudonym` too.
   * Queued events are written first. Returns how many rows were rewritten.
   */
  pseudonymise(actor: string, pseudonym: string): number;
  /**
   * Erasure a part at a time: records the erasure as `pseudonymise` does, then rewrites at most
   * `maxRows` of the actor's rows (its own events first, then others' naming it), in a transaction
   * of its own (or the caller's). Returns how many rows it looked at: fewer than `maxRows` once
   * none is left. A long history is rewritten over many calls, other requests served between them
   * (probe 40a F3).
   */
  pseudonymiseSome(actor: string, pseudonym: string, maxRows: number): number;
  /**
   * Erasures stopped part-way (the process ended between two parts): each erased actor, with the
   * pseudonym its rows take, whose own events or whose names in others' events are still there.
   * Reads the distinct actors and names, at most `maxActors` a call from `after` on (a cursor:
   * `next`, null at the end).
   */
  unfinishedErasures(
    after: ErasureScanCursor | null,
    maxActors: number,
  ): { unfinished: UnfinishedErasure[]; next: ErasureScanCursor | null };
  /** How many erasures the log has recorded (by any process): one more says another was made. */
  erasuresRecorded(): number;
  /** The pseudonym erasure gives `actor` (keyed, so it cannot be recomputed without the key). */
  pseudonymOf(actor: string): string;
  /** Whether a stored row, read alone, is as Palisade wrote or erased it (verify.ts rowVouched). */
  vouches(row: AuditRow): boolean;
  /**
   * The pseudonym an erasure (by any process) gave `actor`, or null while the actor stands. Inside
   * the caller's transaction when there is one, so an erasure is wholly before it or after it.
   */
  erasedAs(actor: string): string | null;
  /** Deletes expired rows from the start of the chain behind a checkpoint; returns how many. */
  prune(cutoff: number, now: number, maxRows?: number): number;
  /** Logs the chain's head when it moved since the last time (or always, with `force`). */
  logHead(force?: boolean): void;
  /**
   * `record` runs when the log closes, before its last flush: for what a stage holds back to
   * record later (counts of a window not over yet), which a stop would otherwise lose.
   */
  beforeClose(record: () => void): void;
  close(): void;
}

export interface SqliteAuditLogOptions {
  sqlite: Database;
  clock: Clock;
  logger: Logger;
  keys: AuditKeys;
  /**
   * Configured secret values, scrubbed from an event's `route` and detail texts with the token
   * shapes the logs scrub (a refused request's route is the path the client sent).
   */
  secretValues?: readonly string[];
  registry?: Registry;
  flushIntervalMs?: number;
  flushBatchSize?: number;
  /**
   * LOG_LEVEL: anchor lines are written at it when it is above info, so the logs keep them. A CLI
   * command's logger says only warnings, and no anchor is one of them there.
   * @default the logger's level
   */
  anchorLevel?: LogLevel;
}

const MAX_QUEUED_EVENTS = 100_000;
/** How often a flush deferred by a locked database is said again while the lock lasts. */
const DEFERRED_SAID_EVERY_MS = 10_000;

/** The sealing event types as an SQL list (fixed names, no client text). */
const SEALING_TYPES_SQL = SEALING_EVENT_TYPES.map((type) => `'${type}'`).join(", ");

/**
 * SQLite's own table of AUTOINCREMENT high-water marks, read (never written) by the chain. Declared
 * here, not in db/schema, so that migrations never try to create it.
 */
const sqliteSequence = sqliteTable("sqlite_sequence", {
  name: text("name").notNull(),
  seq: integer("seq").notNull(),
});

/** Prepared once per log, at its first write: the statements every write runs. */
function prepareWrites(db: AppDatabase) {
  const p = (name: string) => sql.placeholder(name);
  return preparedOnUse({
    insert: () =>
      db
        .insert(auditEvents)
        .values({
          id: p("id"),
          at: p("at"),
          type: p("type"),
          actor: p("actor"),
          ip: p("ip"),
          route: p("route"),
          requestId: p("requestId"),
          outcome: p("outcome"),
          detail: p("detail"),
          subjectSalt: p("subjectSalt"),
          subjectCommit: p("subjectCommit"),
          prevHash: p("prevHash"),
          hash: p("hash"),
          keyId: p("keyId"),
        })
        .prepare(),
    insertName: () =>
      db
        .insert(auditEventNames)
        .values({ name: p("name"), eventId: p("eventId") })
        .onConflictDoNothing()
        .prepare(),
    lastRow: () => lastRowQuery(db).prepare(),
    sequence: () =>
      db
        // As text too: past 2^53 the number is rounded, and a refusal names the stored value.
        .select({
          // As SQLite reads it for the next id: a text that is not a number is 0 (58f F3).
          seq: sql<number>`CAST(${sqliteSequence.seq} AS INTEGER)`,
          stored: sql<string>`CAST(${sqliteSequence.seq} AS TEXT)`,
        })
        .from(sqliteSequence)
        .where(eq(sqliteSequence.name, "audit_events"))
        .prepare(),
    erasedAs: () =>
      db
        .select({
          pseudonym: auditErasedActors.pseudonym,
          mac: auditErasedActors.mac,
          erasedAt: auditErasedActors.erasedAt,
        })
        .from(auditErasedActors)
        .where(eq(auditErasedActors.actorKey, p("actorKey")))
        .prepare(),
    ...prepareErasure(db),
  });
}

/** The columns an erasure reads of a row it rewrites. */
const SUBJECT_ADDRESS_TYPE_SET: ReadonlySet<string> = new Set(SUBJECT_ADDRESS_TYPES);

const erasureColumns = {
  id: auditEvents.id,
  type: auditEvents.type,
  actor: auditEvents.actor,
  ip: auditEvents.ip,
  detail: auditEvents.detail,
  subjectSalt: auditEvents.subjectSalt,
  subjectCommit: auditEvents.subjectCommit,
  erasureMac: auditEvents.erasureMac,
};

/**
 * An erasure's statements, prepared once: an erasure of a user with a thousand keys runs them for
 * each key, twice (building them each time took ~1 ms a key, with the write lock held).
 */
function prepareErasure(db: AppDatabase) {
  const p = (name: string) => sql.placeholder(name);
  return {
    recordErased: () =>
      db
        .insert(auditErasedActors)
        .values({
          actorKey: p("actorKey"),
          pseudonym: p("pseudonym"),
          erasedAt: p("erasedAt"),
          mac: p("mac"),
        })
        .onConflictDoNothing()
        .prepare(),
    ownRows: () =>
      db
        .select(erasureColumns)
        .from(auditEvents)
        .where(eq(auditEvents.actor, p("actor")))
        .orderBy(auditEvents.id)
        .limit(p("limit"))
        .prepare(),
    // Others' events that name the actor in their detail (an admin who looked up the user's
    // usage, the key made for the user), found through the names written with them.
    namingRows: () =>
      db
        .select(erasureColumns)
        .from(auditEventNames)
        .innerJoin(auditEvents, eq(auditEvents.id, auditEventNames.eventId))
        .where(
          and(
            eq(auditEventNames.name, p("actor")),
            or(isNull(auditEvents.actor), ne(auditEvents.actor, p("actor"))),
          ),
        )
        .orderBy(auditEventNames.eventId)
        .limit(p("limit"))
        .prepare(),
    rewriteRow: () =>
      db
        .update(auditEvents)
        .set({
          actor: sql`${p("actor")}`,
          ip: sql`${p("ip")}`,
          detail: sql`${p("detail")}`,
          subjectSalt: null,
          erasureMac: sql`${p("erasureMac")}`,
        })
        .where(eq(auditEvents.id, p("id")))
        .prepare(),
    dropNamesUpTo: () =>
      db
        .delete(auditEventNames)
        .where(and(eq(auditEventNames.name, p("actor")), lte(auditEventNames.eventId, p("upTo"))))
        .prepare(),
  };
}

/** How many actors' keyed pseudonyms a log keeps computed (one HMAC each), before starting over. */
const ACTOR_KEYS_KEPT = 10_000;

/**
 * The newest row. Written as `id = (SELECT max(id) …)`, not `ORDER BY id DESC LIMIT 1`: Drizzle
 * binds the limit as a parameter, and `LIMIT ?` measured 11–13 µs here against 4.6 µs for the
 * literal `LIMIT 1` (the max() form: 6–7 µs). Every audit write reads it.
 */
function lastRowQuery(db: AppDatabase) {
  return db
    .select({ id: auditEvents.id, hash: auditEvents.hash })
    .from(auditEvents)
    .where(eq(auditEvents.id, db.select({ id: max(auditEvents.id) }).from(auditEvents)));
}

/**
 * Records the audit row of something already done (an effect committed, a refund Stripe made): a
 * locked database must not turn it into a 503 that invites doing it again. The log keeps such a
 * row queued and writes it once the lock goes; the line says it waits. A log that cannot take the
 * row at all (a full disk, an id sequence written into the file) must not turn it into a 500
 * either: a refund recorded and answered 500 was retried as a second refund of what was left
 * (probe 59d F3). The row is then lost, and the error line says which.
 */
export function recordDone(
  audit: Pick<AuditLog, "record">,
  logger: Pick<Logger, "warn" | "error">,
  event: AuditEvent,
): void {
  try {
    audit.record(event);
  } catch (error) {
    if (isDatabaseBusy(error)) {
      logger.warn(
        { requestId: event.requestId, type: event.type },
        "audit row queued: the database is locked",
      );
      return;
    }
    // The row's own content, so the line is the record the log could not take (who did what:
    // for a refund, which payment, refund and amount). Logged through the logger, which escapes
    // and scrubs what it writes as it does every line.
    logger.error(
      {
        err: error,
        requestId: event.requestId,
        type: event.type,
        outcome: event.outcome,
        actor: event.actor,
        ip: event.ip,
        route: event.route,
        detail: event.detail,
      },
      "audit row lost: what it records was done and stands, but the audit log could not take it",
    );
  }
}

/**
 * The longest route a row keeps, in characters as sent (then escaped): a route pattern is far
 * shorter, and the path of a request refused before routing, at the log's 512, made a refusal's
 * row ~1 KB (probe 89b F2).
 */
export const AUDITED_ROUTE_LENGTH = 256;

function cutRoute(route: string): string {
  return route.length > AUDITED_ROUTE_LENGTH
    ? `${cutBetweenCharacters(route, AUDITED_ROUTE_LENGTH)}…`
    : route;
}

export class SqliteAuditLog implements AuditLog {
  private queue: AuditEvent[] = [];
  private timer: Timer | null = null;
  private closed = false;
  private readonly closing: (() => void)[] = [];
  /** The row id retention was last said to be held back by (noteRetentionHeldBy). */
  private retentionHeldBy: number | null = null;
  private lastLoggedHead: AuditHead | null = null;
  /** A batch met the lock and waits for the timer. */
  private deferred = false;
  /** When "audit flush deferred" was last logged, and the tries since (see flush). */
  private deferredSaidAt = Number.NEGATIVE_INFINITY;
  private deferredTries = 0;
  private readonly sqlite: Database;
  private readonly db: AppDatabase;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly keys: AuditKeys;
  private readonly flushIntervalMs: number;
  private readonly flushBatchSize: number;
  private readonly statements: ReturnType<typeof prepareWrites>;
  private readonly counter: Counter<"type"> | null;
  private readonly actorKeys = new Map<string, string>();

  private readonly scrub: (text: string) => string;
  /** The level anchor lines are written at (SqliteAuditLogOptions.anchorLevel). */
  private readonly anchorLevel: LogLevel;

  /**
   * A route as the client sent it, made safe to keep: scrubbed whole first, then cut, so a secret
   * cut leaves nothing of itself, then escaped.
   */
  private routeText(route: string): string {
    return logSafe(cutRoute(scrubUrlPart(route, this.scrub))) ?? "";
  }

  /** The detail itself when none of its texts changes, else a copy with them made safe. */
  private safeDetail(detail: AuditDetail): AuditDetail {
    let copy: AuditDetail | null = null;
    for (const key in detail) {
      const value = detail[key];
      if (typeof value !== "string") continue;
      // Scrubbed and cut, not escaped: a detail is read back as JSON (the API) or spelt out (the
      // CLI), and keeps what the client sent otherwise.
      const safe = cutClientText(scrubUrlPart(value, this.scrub));
      if (safe === value) continue;
      copy ??= { ...detail };
      copy[key] = safe;
    }
    return copy ?? detail;
  }

  constructor(options: SqliteAuditLogOptions) {
    this.sqlite = options.sqlite;
    this.clock = options.clock;
    this.logger = options.logger;
    this.keys = options.keys;
    this.anchorLevel = options.anchorLevel ?? options.logger.level;
    this.scrub = secretScrubber(options.secretValues ?? []);
    this.flushIntervalMs = options.flushIntervalMs ?? 100;
    this.flushBatchSize = options.flushBatchSize ?? 500;
    this.db = drizzleOf(options.sqlite);
    this.statements = prepareWrites(this.db);
    this.counter = options.registry
      ? new Counter({
          name: METRIC.auditEvents,
          help: "Security events recorded in the audit log, by type",
          labelNames: ["type"] as const,
          registers: [options.registry],
        })
      : null;
    if (this.counter) startAtZero(this.counter, everyCombination({ type: AUDIT_EVENT_TYPES }));
  }

  record(event: AuditEvent): void {
    // A route is a pattern, or for a request refused before routing the path as sent: client text
    // that can hold a secret, and as long as the URL. Detail texts can quote the client too (a
    // header's name, a key's name). Scrubbed and cut (the route also escaped, as the access log
    // writes it) before they are chained: a chained row cannot be redacted later.
    const route = event.route == null ? event.route : this.routeText(event.route);
    const detail = event.detail === undefined ? undefined : this.safeDetail(event.detail);
    const safe =
      route === event.route && detail === event.detail ? event : { ...event, route, detail };
    const stamped = safe.at === undefined ? { ...safe, at: this.clock.now() } : safe;
    if (this.closed || mustNotLose(event.type)) {
      // Inside a caller's transaction (a block and its event) the queued events stay queued: a
      // rollback of that transaction, at its COMMIT too (a full disk), would take them with it.
      const queued = this.sqlite.inTransaction ? [] : this.takeQueue();
      const batch = [...queued, stamped];
      try {
        const last = this.write(batch);
        this.deferred = false;
        // Counted once written, and inside a caller's transaction once that has committed: an
        // event the file could not take, or that its caller's rollback undid, is not counted.
        const count = () => this.counter?.labels(event.type).inc();
        // Only a count waits on the caller here: a database closed first (a CLI command that
        // failed and ended) leaves nothing to report (probe 58c F2: a second error line).
        if (this.sqlite.inTransaction) {
          this.afterCaller(
            last,
            (committed) => committed && count(),
            () => {},
          );
        } else count();
      } catch (error) {
        if (isDatabaseBusy(error) && !this.closed) {
          // Queued with the rest, to be written (or logged as lost) as they are: counted like them.
          this.requeue(batch);
          this.counter?.labels(event.type).inc();
        }
        // The caller's event fails with its caller. The queued events that were to go with it
        // are nobody's request: back to the queue, for the next flush to write (or to log as lost
        // if the file still cannot take them), never dropped without a word.
        else if (queued.length > 0) this.requeue(queued);
        throw error;
      }
      return;
    }
    this.counter?.labels(event.type).inc();
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
      const last = this.write(batch);
      this.deferred = false;
      // Inside a caller's transaction (an erasure flushes the queue in its own), which may roll back.
      if (this.sqlite.inTransaction) this.putBackUnlessCommitted(batch, last);
    } catch (error) {
      if (isDatabaseBusy(error) && !this.closed) {
        // Said when it starts, then once every 10 s with the tries since: the timer tries several
        // times a second, and a shell left in a transaction wrote ~24,000 lines an hour (probe
        // 85f F5).
        this.deferredTries++;
        const now = this.clock.now();
        if (!this.deferred || elapsedMs(now, this.deferredSaidAt) >= DEFERRED_SAID_EVERY_MS) {
          this.logger.warn(
            { queued: batch.length, tries: this.deferredTries },
            "audit flush deferred: the database is locked",
          );
          this.deferredSaidAt = now;
          this.deferredTries = 0;
        }
        this.requeue(batch);
        return;
      }
      // A full or broken database must not crash a request; the events are logged instead.
      this.logger.error({ err: error, lost: batch.length }, "audit flush failed");
    }
  }

  countWritten(events: readonly AuditEvent[]): void {
    for (const event of events) this.counter?.labels(event.type).inc();
  }

  /**
   * Writes `events` at once, in the caller's transaction, and throws what the file refuses: for
   * events that must commit with the caller's work or not at all (upgrade-sealing.ts). Not counted
   * in the metrics: the caller may roll them back.
   */
  writeWith(events: readonly AuditEvent[]): void {
    if (events.length === 0) return;
    const now = this.clock.now();
    this.write(
      events.map((event) => ({
        ...event,
        detail: event.detail === undefined ? undefined : this.safeDetail(event.detail),
        at: event.at ?? now,
      })),
    );
  }

  vouches(row: AuditRow): boolean {
    return rowVouched(this.keys, row);
  }

  pseudonymOf(actor: string): string {
    return this.keys.pseudonym(actor);
  }

  pseudonymise(actor: string, pseudonym: string): number {
    this.flush();
    return this.db.transaction(() => this.rewriteErased(actor, pseudonym, -1).rewritten, {
      behavior: "immediate",
    });
  }

  pseudonymiseSome(actor: string, pseudonym: string, maxRows: number): number {
    this.flush();
    return this.db.transaction(() => this.rewriteErased(actor, pseudonym, maxRows).examined, {
      behavior: "immediate",
    });
  }

  erasuresRecorded(): number {
    return (
      this.sqlite.query("SELECT count(*) AS n FROM audit_erased_actors").get() as { n: number }
    ).n;
  }

  unfinishedErasures(
    after: ErasureScanCursor | null,
    maxActors: number,
  ): { unfinished: UnfinishedErasure[]; next: ErasureScanCursor | null } {
    const unfinished: UnfinishedErasure[] = [];
    let cursor: ErasureScanCursor = after ?? { in: "actors", after: "" };
    // One index step a distinct value (the actor index, the names' primary key), not a scan of
    // every row: a log of millions of events has thousands of actors. Text only: a value written
    // into the file as a BLOB (which sorts after all text) names no actor Palisade wrote, and
    // asked of the erasure record it failed every scan (probe 41d F1).
    const nextActor = this.sqlite.query<{ actor: string }, [string]>(
      "SELECT actor FROM audit_events WHERE actor > ?1 AND typeof(actor) = 'text' ORDER BY actor LIMIT 1",
    );
    const nextName = this.sqlite.query<{ name: string }, [string]>(
      "SELECT name FROM audit_event_names WHERE name > ?1 AND typeof(name) = 'text' ORDER BY name LIMIT 1",
    );
    for (let looked = 0; looked < maxActors; looked++) {
      const found =
        cursor.in === "actors"
          ? nextActor.get(cursor.after)?.actor
          : nextName.get(cursor.after)?.name;
      if (found === undefined) {
        if (cursor.in === "names") return { unfinished, next: null };
        cursor = { in: "names", after: "" };
        continue;
      }
      cursor = { in: cursor.in, after: found };
      const erasure = this.erasureOf(found);
      if (erasure !== null) {
        // Unauthenticated, read from the file: anything but a time in ms reads as long ago.
        const erasedAt = typeof erasure.erasedAt === "number" ? erasure.erasedAt : 0;
        unfinished.push({ actor: found, pseudonym: erasure.pseudonym, erasedAt });
      }
    }
    return { unfinished, next: cursor };
  }

  /**
   * Rewrites up to `limit` rows of an erased actor (-1: all), inside the caller's transaction:
   * records the erasure, then its own events in id order, then others' events that name it (the
   * names index rows of those rewritten deleted with them, so the next call goes on from there).
   * `examined` counts the rows looked at, rewritten or not.
   */
  private rewriteErased(
    actor: string,
    pseudonym: string,
    limit: number,
  ): { rewritten: number; examined: number } {
    const keys = this.keys;
    const { recordErased, ownRows, namingRows, rewriteRow, dropNamesUpTo } = this.statements;
    // Events for the actor written from now on, by any process, take the pseudonym too.
    const actorKey = keys.pseudonym(actor);
    recordErased.run({
      actorKey,
      pseudonym,
      erasedAt: this.clock.now(),
      mac: keys.erasedActorMac(actorKey, pseudonym),
    });
    this.actorKeys.delete(actor);
    const own = ownRows.all({ actor, limit });
    const room = limit < 0 ? -1 : limit - own.length;
    const naming = room === 0 ? [] : namingRows.all({ actor, limit: room });
    let untrusted = 0;
    let rewritten = 0;
    const rewrite = (row: (typeof own)[number], ownRow: boolean) => {
      const detail = commitsToDetail(row.subjectCommit)
        ? detailWithout(row.detail, actor, pseudonym)
        : row.detail;
      if (!ownRow && detail === row.detail) return;
      // Only a row that still matches its commitment (or an earlier erasure's record) gets an
      // authenticated rewrite: erasure must not turn someone's earlier tampering into a row
      // that verifies.
      const intact =
        row.subjectSalt !== null
          ? row.erasureMac === null && matchesCommit({ ...row, subjectSalt: row.subjectSalt })
          : row.erasureMac !== null && sealMatches(keys.erasureMac(row), row.erasureMac);
      if (!intact) untrusted++;
      const erased = {
        id: row.id,
        subjectCommit: row.subjectCommit,
        actor: ownRow ? pseudonym : row.actor,
        // The actor's own address goes; a block's is the address blocked, someone else's, and the
        // record of what was blocked stays (probe 86e F4).
        ip: ownRow && !SUBJECT_ADDRESS_TYPE_SET.has(row.type) ? null : row.ip,
        detail,
      };
      rewriteRow.run({
        ...erased,
        erasureMac: intact ? keys.erasureMac(erased) : null,
      });
      rewritten++;
    };
    for (const row of own) rewrite(row, true);
    for (const row of naming) rewrite(row, false);
    // The raw id goes from the index too: all of it once the events are done, else those done.
    const examined = own.length + naming.length;
    if (limit < 0 || examined < limit) {
      dropNamesUpTo.run({ actor, upTo: Number.MAX_SAFE_INTEGER });
    } else if (naming.length > 0) {
      dropNamesUpTo.run({ actor, upTo: naming[naming.length - 1]!.id });
    }
    if (untrusted > 0) {
      this.logger.error(
        { rows: untrusted },
        "audit rows erased whose actor, address or detail had been altered; audit:verify reports them",
      );
    }
    return { rewritten, examined };
  }

  /**
   * The oldest row stamped more than a day ahead holds retention back until its stamp expires
   * (rows after it wait for it: the chain goes from its start); said once per row and process,
   * so an operator can see why old rows stay (probe 27g F2).
   */
  private noteRetentionHeldBy(first: { id: number; at: number }, now: number): void {
    if (first.at <= now + DAY_MS || this.retentionHeldBy === first.id) return;
    this.retentionHeldBy = first.id;
    this.logger.warn(
      { id: first.id, at: new Date(first.at).toISOString() },
      "audit retention waits: the oldest row is stamped in the future (a clock that was ahead); rows after it are kept until its time passes",
    );
  }

  prune(cutoff: number, now: number, maxRows = 5000): number {
    const db = this.db;
    // Counted once the transaction has committed.
    let carried: AuditEvent[] = [];
    const deleted = db.transaction(
      () => {
        // The run of expired rows at the start of the chain, up to the first row that is not: a row
        // written while the clock stood back is not a reason to take the recent rows before it
        // (probe 27e F1: the newest expired id was taken as the end, and every row up to it went).
        const first = db
          .select({ id: auditEvents.id, at: auditEvents.at })
          .from(auditEvents)
          .orderBy(asc(auditEvents.id))
          .limit(1)
          .get();
        if (!first) return 0;
        if (!(first.at < cutoff)) {
          this.noteRetentionHeldBy(first, now);
          return 0;
        }
        const head = db
          .select({ id: auditEvents.id, hash: auditEvents.hash, at: auditEvents.at })
          .from(auditEvents)
          .orderBy(asc(auditEvents.id))
          .limit(maxRows)
          .all();
        let expired = 0;
        while (expired < head.length && head[expired]!.at < cutoff) expired++;
        const last = head[expired - 1]!;
        // The rows to go are checked first: a checkpoint over altered rows would bury the evidence.
        const check = verifyAuditChain(this.sqlite, this.keys, { untilId: last.id });
        if (!check.ok) {
          this.logger.error(
            { at: check.where, reason: check.reason },
            "audit retention skipped: the rows it would delete do not verify",
          );
          return 0;
        }
        // Each kind of sealing with an event among the rows to go (checked above), whether or not a
        // later row says it too: a later row is not checked here, and one whose type was changed in
        // the file for the deletion would have kept the kind from being carried (probe 66 F2).
        const lastSealings = this.sqlite
          .query<{ type: SealingEventType; id: number }, [number]>(
            `SELECT type, max(id) AS id FROM audit_events
             WHERE type IN (${SEALING_TYPES_SQL}) AND id <= ?1 GROUP BY type ORDER BY id`,
          )
          .all(last.id);
        // Only a contiguous run from the start of the chain may go, or the chain would have a hole.
        const deleted = db
          .delete(auditEvents)
          .where(lte(auditEvents.id, last.id))
          .returning({ id: auditEvents.id })
          .all().length;
        db.delete(auditEventNames).where(lte(auditEventNames.eventId, last.id)).run();
        const checkpoint = {
          createdAt: now,
          lastDeletedId: last.id,
          lastHash: last.hash,
          deletedCount: deleted,
        };
        db.insert(auditCheckpoints)
          .values({
            ...checkpoint,
            keyId: this.keys.keyId,
            mac: this.keys.checkpointMac(checkpoint),
          })
          .run();
        // Written again on the chain, in this transaction: with the events of a sealing gone,
        // a file put back before that sealing would be sealed again unreported until the next
        // start recorded it late (probe 65 F1).
        carried = lastSealings.map(
          ({ type, id }): AuditEvent => ({
            type,
            outcome: "success",
            actor: "system",
            detail: { carriedForwardFrom: id },
            at: now,
          }),
        );
        if (carried.length > 0) this.write(carried);
        return deleted;
      },
      { behavior: "immediate" },
    );
    this.countWritten(carried);
    return deleted;
  }

  logHead(force = false): void {
    try {
      const head = auditHead(this.sqlite);
      if (!force && head.hash === this.lastLoggedHead?.hash) return;
      const earlier = this.lastLoggedHead;
      this.lastLoggedHead = head;
      // At the level the logs keep: at info, LOG_LEVEL=warn dropped every anchor, and with them
      // any sign of the newest rows deleted (probe 90l F2).
      anchorLog(this.logger, this.anchorLevel)(
        { auditHead: head.hash, auditCount: head.count },
        "audit chain head",
      );
      if (earlier !== null && !this.stillHolds(earlier, head)) this.wentBack(earlier, head);
    } catch (error) {
      this.logger.error({ err: error }, "audit chain head could not be read");
    }
  }

  /**
   * Whether a head this process logged is still in the chain: the chain has not gone back below
   * it, and its row holds the hash logged (or was taken by retention, which a checkpoint records).
   */
  private stillHolds(earlier: AuditHead, head: AuditHead): boolean {
    if (head.count < earlier.count) return false;
    if (head.count === earlier.count) return head.hash === earlier.hash;
    const row = this.sqlite
      .query<{ hash: string }, [number]>("SELECT hash FROM audit_events WHERE id = ?1")
      .get(earlier.count);
    if (row !== null) return row.hash === earlier.hash;
    // Taken by retention only if a checkpoint this key made says so: one written into the file
    // covered a cut (90n F3).
    const checkpoint = latestCheckpoint(this.sqlite);
    return (
      checkpoint !== null &&
      checkpoint.keyId === this.keys.keyId &&
      this.keys.checkpointMac(checkpoint) === checkpoint.mac &&
      checkpoint.lastDeletedId >= earlier.count
    );
  }

  /**
   * The chain went back below a head this process logged: its newest rows were deleted (and
   * perhaps written again) by someone with the file. Logging the shorter chain's head as if
   * nothing happened made the newest anchor vouch for it (probe 90l F1): said as an error, and
   * recorded as tampering, which pages.
   */
  private wentBack(earlier: AuditHead, head: AuditHead): void {
    // At error, or fatal where the logs keep only that (90n F4).
    this.logger[this.anchorLevel === "fatal" ? "fatal" : "error"](
      { earlierCount: earlier.count, earlierHead: earlier.hash, auditCount: head.count },
      "the audit chain went back: rows this process logged as its head were deleted or rewritten since; the anchor lines before this one are the ones to verify against (audit:verify --head --count)",
    );
    this.record({
      type: "audit.chain_went_back",
      outcome: "failure",
      actor: "system",
      detail: { earlierCount: earlier.count, earlierHead: earlier.hash, count: head.count },
    });
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

  beforeClose(record: () => void): void {
    this.closing.push(record);
  }

  close(): void {
    if (this.closed) return;
    this.recordHeldForTheStop();
    this.flush();
    this.closed = true;
    this.reportLost(this.takeQueue(), "the database stayed locked");
    this.logHead(true);
  }

  reportQueued(why: string): void {
    if (this.closed) return;
    // What the stop records of its own (the refusals a bound left out this window) goes too, and
    // the head is logged after, as at any stop (probe 51b F3: both were skipped).
    this.recordHeldForTheStop();
    this.closed = true;
    const left = this.takeQueue();
    if (left.length > 0) {
      try {
        // One attempt, no wait beyond the connection's busy timeout: the process is exiting.
        this.write(left);
      } catch (error) {
        if (!isDatabaseBusy(error)) this.logger.error({ err: error }, "audit flush failed");
        this.reportLost(left, why);
      }
    }
    this.logHead(true);
  }

  private recordHeldForTheStop(): void {
    for (const record of this.closing.splice(0)) {
      try {
        record();
      } catch (error) {
        this.logger.error({ err: error }, "an audit record held for the stop failed");
      }
    }
  }

  /**
   * What they were, so the log keeps the trace the table could not: each type and its count, and
   * the request ids (a refund's request id finds its refund id in the warning line).
   */
  private reportLost(left: readonly AuditEvent[], why: string): void {
    if (left.length === 0) return;
    const types: Record<string, number> = {};
    for (const event of left) types[event.type] = (types[event.type] ?? 0) + 1;
    const requestIds = [...new Set(left.flatMap((event) => event.requestId ?? []))].slice(0, 100);
    this.logger.error(
      { lost: left.length, types, requestIds },
      `audit events lost at shutdown: ${why}`,
    );
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

  /** Writes the events on the chain; returns the last row written (its id and hash). */
  private write(events: AuditEvent[]): { id: number; hash: string } {
    const { insert, insertName, lastRow, sequence } = this.statements;
    let erased = 0;
    const written = this.db.transaction(
      () => {
        const last = lastRow.get();
        const checkpoint = last ? null : latestCheckpoint(this.sqlite);
        let prevHash = last?.hash ?? checkpoint?.lastHash ?? GENESIS_HASH;
        // The id continues from the highest ever used (AUTOINCREMENT's sequence), not from the last
        // row: rows deleted from the end then leave a gap that verification reports.
        const sequenceRow = sequence.get();
        const used = sequenceRow?.seq ?? 0;
        let id = Math.max(last?.id ?? 0, checkpoint?.lastDeletedId ?? 0, used) + 1;
        // Palisade's ids count up from 1; one past what JavaScript counts exactly was written into
        // the file (sqlite_sequence), and every write would fail on it without saying why.
        if (!Number.isSafeInteger(id + events.length)) {
          // Named by what spends them: the sequence, or a row written at a larger id (58e F1).
          throw (
            spentIdsIn(this.sqlite, "audit_events", "the audit log's") ??
            new IdSequenceError("the audit log's", sequenceRow?.stored ?? used)
          );
        }
        const erasedAs = this.erasedActorReader();
        for (const event of events) {
          const salt = newSalt();
          // An actor erased before this write (in any process): stored as erasure left its rows.
          const pseudonym = event.actor == null ? null : erasedAs(event.actor);
          if (pseudonym !== null) erased++;
          const actor = pseudonym ?? event.actor ?? null;
          const ip = pseudonym === null ? (event.ip ?? null) : null;
          // A principal the detail names who was erased meanwhile (an event queued by another
          // process before the erasure): named by the pseudonym, as erasure left the others.
          const detail = encodeDetail(
            event.detail && withPrincipalsReplaced(event.detail, erasedAs),
          );
          const fields = {
            id,
            at: event.at!,
            type: event.type,
            route: event.route ?? null,
            requestId: event.requestId ?? null,
            outcome: event.outcome,
            detail,
            subjectCommit: subjectCommit(salt, actor, ip, detail),
          };
          const hash = this.keys.rowHash(prevHash, fields);
          // bun:sqlite's result (Drizzle passes it on; its type says void).
          const stored = insert.run({
            ...fields,
            actor,
            ip,
            subjectSalt: salt,
            prevHash,
            hash,
            keyId: this.keys.keyId,
          }) as unknown as Changes;
          // A trigger written into the file can skip the insert (RAISE(IGNORE)) without an error,
          // and a chain of the rows written cannot show one that never was: fail as loudly as any
          // failed write (db/foreign-triggers.ts drops such a trigger).
          if (stored.changes !== 1) throw new AuditNotStoredError(event.type);
          if (event.detail && principalsNamed(event.detail).length > 0) {
            // Indexed as stored (erasure finds the row by them).
            for (const [, name] of principalsNamed(JSON.parse(detail))) {
              insertName.run({ name, eventId: id });
            }
          }
          prevHash = hash;
          id++;
        }
        return { id: id - 1, hash: prevHash };
      },
      { behavior: "immediate" },
    );
    if (erased > 0) {
      this.logger.info(
        { events: erased },
        "audit events of an erased account written under its pseudonym, without their address",
      );
    }
    return written;
  }

  /**
   * The pseudonym an erasure (in any process) gave an actor, or null: asked inside the write's
   * transaction, so each erasure is wholly before the write (and is found here) or after it (and
   * rewrites its rows).
   */
  private erasedActorReader(): (actor: string) => string | null {
    const pseudonyms = new Map<string, string | null>();
    return (actor) => {
      let pseudonym = pseudonyms.get(actor);
      if (pseudonym === undefined) {
        pseudonym = this.erasedAs(actor);
        pseudonyms.set(actor, pseudonym);
      }
      return pseudonym;
    };
  }

  erasedAs(actor: string): string | null {
    return this.erasureOf(actor)?.pseudonym ?? null;
  }

  /** The erasure recorded for `actor` (by any process): its pseudonym and when, or null. */
  private erasureOf(actor: string): { pseudonym: string; erasedAt: unknown } | null {
    // A value read from the file may be anything (probe 41d F1).
    if (typeof actor !== "string" || actor.startsWith(PSEUDONYM_PREFIX)) return null;
    const actorKey = this.actorKey(actor);
    const stored = this.statements.erasedAs.get({ actorKey });
    if (stored === undefined) return null;
    // Only an erasure (holding the key) makes a row that matches an actor, but its pseudonym can
    // be rewritten in the file (to frame a living user, or another erased one): one its MAC does
    // not vouch for is not written; the actor's own pseudonym is.
    const vouched = this.keys.vouchesForErasedActor(actorKey, stored.pseudonym, stored.mac);
    return { pseudonym: vouched ? stored.pseudonym : actorKey, erasedAt: stored.erasedAt };
  }

  /** The actor's own keyed pseudonym, which `audit_erased_actors` is keyed by (one HMAC each). */
  private actorKey(actor: string): string {
    let key = this.actorKeys.get(actor);
    if (key === undefined) {
      if (this.actorKeys.size >= ACTOR_KEYS_KEPT) this.actorKeys.clear();
      key = this.keys.pseudonym(actor);
      this.actorKeys.set(actor, key);
    }
    return key;
  }

  /** Once the caller's transaction has ended: whether the last row written is still there. */
  private afterCaller(
    last: { id: number; hash: string },
    then: (committed: boolean) => void,
    closedFirst: (error: unknown) => void = (error) =>
      this.logger.error({ err: error }, "audit rows unconfirmed: the database closed first"),
  ) {
    afterTransaction(
      this.sqlite,
      () => {
        const row = this.sqlite
          .query("SELECT hash FROM audit_events WHERE id = ?1")
          .get(last.id) as { hash: string } | null;
        then(row?.hash === last.hash);
      },
      closedFirst,
    );
  }

  /** Events of the queue written in a caller's transaction that rolled back: queued again. */
  private putBackUnlessCommitted(batch: AuditEvent[], last: { id: number; hash: string }) {
    this.afterCaller(last, (committed) => {
      if (committed) return;
      if (this.closed) {
        this.logger.error(
          { lost: batch.length },
          "audit events lost: their transaction rolled back",
        );
        return;
      }
      this.logger.warn(
        { queued: batch.length },
        "audit events queued again: the transaction they were written in rolled back",
      );
      this.requeue(batch);
    });
  }
}

type Changes = { changes: number };

/** An audit event the database did not store though its insert succeeded. */
export class AuditNotStoredError extends Error {
  constructor(type: string) {
    super(
      `the audit event ${type} was not stored: something in the database file (a trigger) stopped the write`,
    );
    this.name = "AuditNotStoredError";
  }
}

/** The logger's method at the level its lines are kept at: info, or the configured one above it. */
function anchorLog(logger: Logger, level: LogLevel): LogFn {
  return level === "warn" || level === "error" || level === "fatal" ? logger[level] : logger.info;
}

/** The newest row's hash and id, or the newest checkpoint's when every row is gone. */
export function auditHead(sqlite: Database): AuditHead {
  const last = lastRowQuery(drizzleOf(sqlite)).get();
  if (last) return { hash: last.hash, count: last.id };
  const checkpoint = latestCheckpoint(sqlite);
  return checkpoint
    ? { hash: checkpoint.lastHash, count: checkpoint.lastDeletedId }
    : { hash: GENESIS_HASH, count: 0 };
}

export function recentAuditEvents(sqlite: Database, limit: number): AuditRow[] {
  return drizzleOf(sqlite)
    .select()
    .from(auditEvents)
    .orderBy(desc(auditEvents.id))
    .limit(limit)
    .all()
    .reverse();
}
