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
 */
import type { Database } from "bun:sqlite";
import type { AuditEvent } from "../plugins/audit/events";

export interface DroppedTrigger {
  name: string;
  table: string;
  /** Its definition as the file held it (cut), for the operator to see what it did. */
  sql: string;
}

const MAX_REPORTED_SQL = 1000;
const MAX_REPORTED_NAME = 64;

const cut = (text: string, length: number) =>
  text.length > length ? `${text.slice(0, length)}…` : text;

const FIND_TRIGGERS =
  "SELECT name, tbl_name AS \"table\", sql FROM main.sqlite_master WHERE type = 'trigger'";

/**
 * Drops every trigger in the main database; what it dropped. Found and dropped in one immediate
 * transaction, so that of several processes sweeping one file, one reports each trigger; the
 * write lock is taken only when a read found one.
 */
export function dropForeignTriggers(sqlite: Database): DroppedTrigger[] {
  type Found = { name: string; table: string; sql: string | null };
  if (sqlite.query<Found, []>(FIND_TRIGGERS).all().length === 0) return [];
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
    name: cut(name, MAX_REPORTED_NAME),
    table: cut(table, MAX_REPORTED_NAME),
    sql: cut(sql ?? "", MAX_REPORTED_SQL),
  }));
}

/** What the log says of a dropped trigger. */
export const DROPPED_TRIGGER_MESSAGE =
  "a trigger Palisade did not create was in the database file: it was written there by someone else, and could stop or change Palisade's writes; it was dropped";

/** The error line of a dropped trigger (its name, table and definition). */
export function logDroppedTrigger(
  logger: { error(fields: Record<string, unknown>, message: string): void },
  trigger: DroppedTrigger,
): void {
  logger.error(
    { trigger: trigger.name, table: trigger.table, sql: trigger.sql },
    DROPPED_TRIGGER_MESSAGE,
  );
}

/** The audit event of a dropped trigger (its name and table; the definition is in the log). */
export function droppedTriggerEvent(trigger: DroppedTrigger): AuditEvent {
  return {
    type: "db.trigger_dropped",
    outcome: "denied",
    actor: "system",
    detail: { trigger: trigger.name, table: trigger.table },
  };
}
