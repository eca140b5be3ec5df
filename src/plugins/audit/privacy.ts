/**
 * @module
 * What the audit log holds about a person, for the privacy export: the events whose actor is one
 * of theirs (the user, and the API keys they own), with an event's address only when their own
 * credential succeeded (a failed login or a
 * replayed refresh token comes from whoever tried it, and that third party's address must not be
 * handed out). Erasure is `AuditLog.pseudonymise`.
 */
import { asc, inArray, sql } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { auditEvents } from "../../db/schema";
import type { AuditLog } from "./log";

export function createAuditExport(db: AppDatabase, audit: AuditLog) {
  const columns = {
    id: auditEvents.id,
    at: auditEvents.at,
    type: auditEvents.type,
    ip: sql<string | null>`CASE WHEN ${auditEvents.outcome} = 'success' THEN ${auditEvents.ip} END`,
    route: auditEvents.route,
    requestId: auditEvents.requestId,
    outcome: auditEvents.outcome,
    detail: auditEvents.detail,
  };
  return function exportAuditEvents(actors: readonly string[]) {
    // Events still queued belong in the export too.
    audit.flush();
    return db
      .select(columns)
      .from(auditEvents)
      .where(inArray(auditEvents.actor, [...actors]))
      .orderBy(asc(auditEvents.id))
      .all()
      .map((row) => ({ ...row, detail: JSON.parse(row.detail) as unknown }));
  };
}
