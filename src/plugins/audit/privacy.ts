/**
 * @module
 * What the audit log holds about an actor, for the privacy export: the events whose actor it is,
 * with an event's address only when the actor's own credential succeeded (a failed login or a
 * replayed refresh token comes from whoever tried it, and that third party's address must not be
 * handed out). Erasure is `AuditLog.pseudonymise`.
 */
import { asc, eq, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { auditEvents } from "../../db/schema";
import type { AuditLog } from "./log";

export function createAuditExport(db: AppDatabase, audit: AuditLog) {
  const events = db
    .select({
      id: auditEvents.id,
      at: auditEvents.at,
      type: auditEvents.type,
      ip: sql<
        string | null
      >`CASE WHEN ${auditEvents.outcome} = 'success' THEN ${auditEvents.ip} END`,
      route: auditEvents.route,
      requestId: auditEvents.requestId,
      outcome: auditEvents.outcome,
      detail: auditEvents.detail,
    })
    .from(auditEvents)
    .where(eq(auditEvents.actor, sql.placeholder("actor")))
    .orderBy(asc(auditEvents.id))
    .prepare();
  return function exportAuditEvents(actor: string) {
    // Events still queued belong in the export too.
    audit.flush();
    return events
      .all({ actor })
      .map((row) => ({ ...row, detail: JSON.parse(row.detail) as unknown }));
  };
}
