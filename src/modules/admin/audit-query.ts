/**
 * @module
 * Reading the audit log for admins: filters on type, actor, address and time, newest first, with
 * an id cursor (stable while rows are appended, unlike an offset).
 */
import type { Database } from "bun:sqlite";
import type { AuditRow } from "../../plugins/audit/log";
import type { AuditEventView as AuditEventViewSchema } from "./model";

export interface AuditFilter {
  type?: string;
  actor?: string;
  ip?: string;
  since?: number;
  until?: number;
  cursor?: number;
  limit: number;
}

/** As the API shows it: the schema in model.ts is the type. */
export type AuditEventView = typeof AuditEventViewSchema.static;

/** The columns an admin sees: not the chain's own (salt, commitment, hashes). */
type Row = Omit<AuditRow, "subjectSalt" | "subjectCommit" | "prevHash" | "hash">;

export function queryAuditEvents(
  sqlite: Database,
  filter: AuditFilter,
): { events: AuditEventView[]; nextCursor: number | null } {
  const where: string[] = [];
  const params: (string | number)[] = [];
  const add = (clause: string, value: string | number | undefined) => {
    if (value === undefined) return;
    where.push(clause);
    params.push(value);
  };
  add("type = ?", filter.type);
  add("actor = ?", filter.actor);
  add("ip = ?", filter.ip);
  add("at >= ?", filter.since);
  add("at <= ?", filter.until);
  add("id < ?", filter.cursor);
  const sql = `SELECT id, at, type, actor, ip, route, request_id AS requestId, outcome, detail
    FROM audit_events ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
    ORDER BY id DESC LIMIT ?`;
  // One more than asked tells whether there is a next page.
  const rows = sqlite.query<Row, (string | number)[]>(sql).all(...params, filter.limit + 1);
  const page = rows.slice(0, filter.limit);
  return {
    events: page.map((row) => ({
      ...row,
      at: new Date(row.at).toISOString(),
      detail: JSON.parse(row.detail) as Record<string, unknown>,
    })),
    nextCursor: rows.length > filter.limit ? page.at(-1)!.id : null,
  };
}
