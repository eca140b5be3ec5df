/**
 * @module
 * Triggers Palisade did not create. Palisade's schema has none, so any trigger in the file was
 * written there by someone else — and a trigger is code that runs inside Palisade's own writes:
 * `RAISE(IGNORE)` silently skips an audit event, a revocation or a logout, and the audit chain,
 * which links the rows that are written, cannot show a row that never was. The seals
 * (db/row-seal.ts) keep file writers from making rows Palisade trusts; this keeps them from
 * quietly stopping the rows Palisade writes. Every trigger found is dropped and reported: at each
 * start and CLI command before the migrations run, and by the background maintenance every few
 * seconds while the service runs.
 *
 * Bounds. Each DROP rewrites the schema, and thousands took minutes on the event loop: a running
 * service that finds more than MAX_DROPPED_WHILE_RUNNING stops instead (as for a changed schema),
 * and the next start, which serves nothing yet, drops them all. The first REPORTED_ONE_BY_ONE of a
 * sweep are reported one by one, the rest in one line and one audit event.
 */
import type { Database } from "bun:sqlite";
import { spellOut, spellOutReordering } from "../logging/spell-out";
import type { AuditEvent } from "../plugins/audit/events";

/**
 * A dropped trigger as it is reported. Whoever wrote the trigger chose all three, so they are shown
 * as other text read from the file is (logging/spell-out): the name and table spelt out, the
 * definition cut with its line-breaking and reordering characters spelt out, its control characters
 * left to the log's JSON and the CLI's terminal escaping (a definition's line breaks read as
 * `\n` or `\x0a` there).
 */
export interface DroppedTrigger {
  name: string;
  table: string;
  /** Its definition, for the operator to see what it did. */
  sql: string;
}

const MAX_REPORTED_SQL = 1000;
const MAX_REPORTED_NAME = 64;

export const MAX_DROPPED_WHILE_RUNNING = 100;
const REPORTED_ONE_BY_ONE = 20;

/** How many triggers the file holds (one read, no lock). */
export function countTriggers(sqlite: Database): number {
  return sqlite
    .query<{ n: number }, []>("SELECT count(*) AS n FROM main.sqlite_master WHERE type = 'trigger'")
    .get()!.n;
}

const FIND_TRIGGERS =
  "SELECT name, tbl_name AS \"table\", sql FROM main.sqlite_master WHERE type = 'trigger'";

/**
 * Drops every trigger in the main database; what it dropped. Found and dropped in one immediate
 * transaction, so that of several processes sweeping one file, one reports each trigger; the
 * write lock is taken only when a read found one.
 */
export function dropForeignTriggers(sqlite: Database): DroppedTrigger[] {
  type Found = { name: string; table: string; sql: string | null };
  if (countTriggers(sqlite) === 0) return [];
  const found = sqlite
    .transaction(() => {
      const triggers = sqlite.query<Found, []>(FIND_TRIGGERS).all();
      for (const { name } of triggers) {
        sqlite.run(`DROP TRIGGER IF EXISTS main."${name.replaceAll('"', '""')}"`);
      }
      return triggers;
    })
    .immediate();
  return found.map(({ name, table, sql }) => ({
    name: spellOut(name, MAX_REPORTED_NAME),
    table: spellOut(table, MAX_REPORTED_NAME),
    sql: spellOutReordering(sql ?? "", MAX_REPORTED_SQL),
  }));
}

/** Every trigger in the main database, as `dropForeignTriggers` reports them, dropping none. */
export function listTriggers(sqlite: Database): DroppedTrigger[] {
  type Found = { name: string; table: string; sql: string | null };
  return sqlite
    .query<Found, []>(FIND_TRIGGERS)
    .all()
    .map(({ name, table, sql }) => ({
      name: spellOut(name, MAX_REPORTED_NAME),
      table: spellOut(table, MAX_REPORTED_NAME),
      sql: spellOutReordering(sql ?? "", MAX_REPORTED_SQL),
    }));
}

/** What the log says of a dropped trigger. */
export const DROPPED_TRIGGER_MESSAGE =
  "a trigger Palisade did not create was in the database file: it was written there by someone else, and could stop or change Palisade's writes; it was dropped";

/**
 * The error lines and audit events of a sweep: one each for the first REPORTED_ONE_BY_ONE (name,
 * table, definition; the event without the definition), then one of each for the rest. `say`
 * writes a line (the log, or the CLI's stderr); `record` is null before the audit log exists.
 */
export function reportDroppedTriggers(
  dropped: readonly DroppedTrigger[],
  say: (fields: Record<string, unknown>, message: string) => void,
  record: ((event: AuditEvent) => void) | null,
): void {
  for (const trigger of dropped.slice(0, REPORTED_ONE_BY_ONE)) {
    say({ trigger: trigger.name, table: trigger.table, sql: trigger.sql }, DROPPED_TRIGGER_MESSAGE);
  }
  for (const event of droppedTriggerEvents(dropped)) record?.(event);
  const more = dropped.length - REPORTED_ONE_BY_ONE;
  if (more > 0) say({ more }, `${DROPPED_TRIGGER_MESSAGE} (and ${more} more like it)`);
}

/** The audit events of a sweep (see reportDroppedTriggers). */
export function droppedTriggerEvents(dropped: readonly DroppedTrigger[]): AuditEvent[] {
  const events: AuditEvent[] = dropped.slice(0, REPORTED_ONE_BY_ONE).map((trigger) => ({
    type: "db.trigger_dropped",
    outcome: "denied",
    actor: "system",
    detail: { trigger: trigger.name, table: trigger.table },
  }));
  const more = dropped.length - REPORTED_ONE_BY_ONE;
  if (more > 0) {
    events.push({
      type: "db.trigger_dropped",
      outcome: "denied",
      actor: "system",
      detail: { more },
    });
  }
  return events;
}
