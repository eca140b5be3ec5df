/**
 * @module
 * `audit_tamper_events_recent{type}`: how many events of the types that page for tampering the
 * database file's audit log holds from the last hour, whichever process recorded them. The alerts
 * on `audit_events_total` hear only of what the scraped process recorded; a CLI command (a
 * `db:migrate` that seals a file put back into an older shape: `db.resealed`; a command that
 * reads a forged credential) or an instance Prometheus does not scrape records into the same file
 * and would page no one. Read at each scrape through the (type, at) index: such rows are rare.
 *
 * Only rows Palisade wrote are counted (each row's keyed hash, read alone: verify.ts rowVouched).
 * A row written into the file with a tampering type and a time years ahead kept the pages firing
 * for good (probe 89a F4), and a later real event then paged no one anew; such a row is itself
 * tampering, which `audit:verify` reports. At most `RECENT_TAMPERING_READ` rows are read a scrape,
 * oldest first, so a file filled with forged rows cannot make a scrape slow.
 */
import type { Database } from "bun:sqlite";
import { and, asc, gt, inArray, sql } from "drizzle-orm";
import type { Clock } from "../../clock";
import { drizzleOf } from "../../db/client";
import { auditEvents } from "../../db/schema";
import { METRIC } from "../metrics/names";
import { Gauge, type Registry } from "../metrics/prom";
import type { AuditKeys } from "./chain";
import { TAMPER_EVENT_TYPES } from "./events";
import { rowVouched } from "./verify";

/** How far back the gauge counts: long enough for a scrape interval, short enough to resolve. */
export const RECENT_TAMPERING_MS = 60 * 60 * 1000;
/** How many rows a scrape reads and checks at most (each an HMAC: ~1,000 take a few ms). */
export const RECENT_TAMPERING_READ = 1000;

export function registerRecentTampering(
  registry: Registry,
  sqlite: Database,
  clock: Clock,
  keys: AuditKeys,
): void {
  const recent = drizzleOf(sqlite)
    .select()
    .from(auditEvents)
    .where(
      and(
        inArray(auditEvents.type, [...TAMPER_EVENT_TYPES]),
        gt(auditEvents.at, sql.placeholder("since")),
      ),
    )
    .orderBy(asc(auditEvents.at))
    .limit(RECENT_TAMPERING_READ)
    .prepare();
  new Gauge({
    name: METRIC.auditTamperEventsRecent,
    help: "Tampering events in the database file's audit log from the last hour, by type, whichever process recorded them",
    labelNames: ["type"] as const,
    registers: [registry],
    collect() {
      const counts = new Map<string, number>(TAMPER_EVENT_TYPES.map((type) => [type, 0]));
      for (const row of recent.all({ since: clock.now() - RECENT_TAMPERING_MS })) {
        const count = counts.get(row.type);
        if (count !== undefined && rowVouched(keys, row)) counts.set(row.type, count + 1);
      }
      // Every type, 0 when absent: an alert's selector must find its series.
      for (const [type, n] of counts) this.set({ type }, n);
    },
  });
}
