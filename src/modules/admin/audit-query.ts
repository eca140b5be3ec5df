/**
 * @module
 * Reading the audit log for admins: filters on type, actor, address and time, newest first, with
 * an id cursor (stable while rows are appended, unlike an offset).
 */
import type { Database } from "bun:sqlite";
import { and, desc, eq, gte, inArray, lt, lte } from "drizzle-orm";
import { drizzleOf } from "../../db/client";
import { auditEvents } from "../../db/schema";
import { storedTimeText, storedValueText } from "../../db/stored-values";
import type { AuditRow } from "../../plugins/audit/log";
import type { AuditEventView as AuditEventViewSchema } from "./model";

export interface AuditFilter {
  type?: string;
  actor?: string;
  /** The spellings an address is recorded under: itself, and its blocks' subject (an IPv6 /64). */
  ips?: readonly string[];
  since?: number;
  until?: number;
  cursor?: number;
  limit: number;
}

/** As the API shows it: the schema in model.ts is the type. */
export type AuditEventView = typeof AuditEventViewSchema.static;

/** A stored detail's JSON object, or what was stored, as text, under `unreadableDetail`. */
function storedDetail(value: unknown): Record<string, unknown> {
  if (typeof value === "string") {
    try {
      const parsed: unknown = JSON.parse(value);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
        return parsed as Record<string, unknown>;
      }
    } catch {
      // Not JSON: shown as it is, below.
    }
  }
  return { unreadableDetail: storedValueText(value) };
}

/**
 * The events an admin asked for, each marked `tampered` when `vouches` (the audit log's check of
 * a row read alone: its hash, under this file's key, over what it holds) does not vouch for it:
 * a row written or changed in the file was shown as genuine, its address or type forged, until
 * someone ran `audit:verify` (probe 69d F2). The chain's own columns (salt, commitment, hashes)
 * are read for that check, never shown.
 */
export function queryAuditEvents(
  sqlite: Database,
  filter: AuditFilter,
  vouches: (row: AuditRow) => boolean,
): { events: AuditEventView[]; nextCursor: number | null } {
  const when = <T>(value: T | undefined, condition: (value: T) => ReturnType<typeof eq>) =>
    value === undefined ? undefined : condition(value);
  const db = drizzleOf(sqlite);
  const matching = and(
    when(filter.type, (v) => eq(auditEvents.type, v)),
    when(filter.actor, (v) => eq(auditEvents.actor, v)),
    when(filter.ips, (v) => inArray(auditEvents.ip, [...v])),
    when(filter.since, (v) => gte(auditEvents.at, v)),
    when(filter.until, (v) => lte(auditEvents.at, v)),
    when(filter.cursor, (v) => lt(auditEvents.id, v)),
  );
  // One more than asked tells whether there is a next page.
  const wanted = filter.limit + 1;
  const windowed = filter.since !== undefined || filter.until !== undefined;
  // A time window is read by the time index and its rows put in id order: asked for whole rows,
  // SQLite read and sorted every row of the window for each page (874 ms a page over a window of
  // 300,000 rows: probe 90l F5). The page's ids come from the index alone, the newest kept as
  // they are read, and only the page's rows are read whole.
  const rows = db
    .select()
    .from(auditEvents)
    .where(
      windowed
        ? inArray(
            auditEvents.id,
            db
              .select({ id: auditEvents.id })
              .from(auditEvents)
              .where(matching)
              .orderBy(desc(auditEvents.id))
              .limit(wanted),
          )
        : matching,
    )
    .orderBy(desc(auditEvents.id))
    .limit(wanted)
    .all();
  const page = rows.slice(0, filter.limit);
  return {
    // A value written into the file as a BLOB, a number or text where Palisade writes another is
    // shown as the text it holds, not a 500 for every page that holds it (probes 41d F2, 41e F2).
    events: page.map((row) => ({
      id: row.id,
      at: storedTimeText(row.at),
      type: storedValueText(row.type) ?? "",
      actor: storedValueText(row.actor),
      ip: storedValueText(row.ip),
      route: storedValueText(row.route),
      requestId: storedValueText(row.requestId),
      outcome: storedValueText(row.outcome) ?? "",
      detail: storedDetail(row.detail),
      tampered: !vouches(row),
    })),
    nextCursor: rows.length > filter.limit ? page.at(-1)!.id : null,
  };
}
