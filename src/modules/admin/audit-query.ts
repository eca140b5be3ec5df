/**
 * @module
 * Reading the audit log for admins: filters on type, actor, address and time, newest first, with
 * an id cursor (stable while rows are appended, unlike an offset).
 */
import type { Database } from "bun:sqlite";
import { and, desc, eq, gte, lt, lte } from "drizzle-orm";
import { drizzleOf } from "../../db/client";
import { auditEvents } from "../../db/schema";
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

/** A stored value as text: a BLOB decoded as UTF-8, a number written out, text and null as they are. */
function storedText(value: unknown): string | null {
  if (value === null || typeof value === "string") return value;
  if (value instanceof Uint8Array) return new TextDecoder().decode(value);
  return String(value);
}

/** The columns an admin sees: not the chain's own (salt, commitment, hashes). */
const VISIBLE = {
  id: auditEvents.id,
  at: auditEvents.at,
  type: auditEvents.type,
  actor: auditEvents.actor,
  ip: auditEvents.ip,
  route: auditEvents.route,
  requestId: auditEvents.requestId,
  outcome: auditEvents.outcome,
  detail: auditEvents.detail,
};

export function queryAuditEvents(
  sqlite: Database,
  filter: AuditFilter,
): { events: AuditEventView[]; nextCursor: number | null } {
  const when = <T>(value: T | undefined, condition: (value: T) => ReturnType<typeof eq>) =>
    value === undefined ? undefined : condition(value);
  const rows = drizzleOf(sqlite)
    .select(VISIBLE)
    .from(auditEvents)
    .where(
      and(
        when(filter.type, (v) => eq(auditEvents.type, v)),
        when(filter.actor, (v) => eq(auditEvents.actor, v)),
        when(filter.ip, (v) => eq(auditEvents.ip, v)),
        when(filter.since, (v) => gte(auditEvents.at, v)),
        when(filter.until, (v) => lte(auditEvents.at, v)),
        when(filter.cursor, (v) => lt(auditEvents.id, v)),
      ),
    )
    .orderBy(desc(auditEvents.id))
    // One more than asked tells whether there is a next page.
    .limit(filter.limit + 1)
    .all();
  const page = rows.slice(0, filter.limit);
  return {
    events: page.map((row) => ({
      ...row,
      // An actor written into the file as a BLOB (or a number) is shown as the text it holds,
      // as the other columns are, not a 500 for every page that holds it (probe 41d F2).
      actor: storedText(row.actor),
      at: new Date(row.at).toISOString(),
      detail: JSON.parse(row.detail) as Record<string, unknown>,
    })),
    nextCursor: rows.length > filter.limit ? page.at(-1)!.id : null,
  };
}
