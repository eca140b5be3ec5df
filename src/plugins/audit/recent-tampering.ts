/**
 * @module
 * `audit_tamper_events_recent{type}`: how many events of the types that page for tampering the
 * database file's audit log holds from the last hour, whichever process recorded them. The alerts
 * on `audit_events_total` hear only of what the scraped process recorded; a CLI command (a
 * `db:migrate` that seals a file put back into an older shape: `db.resealed`; a command that
 * reads a forged credential) or an instance Prometheus does not scrape records into the same file
 * and would page no one. Counted at each scrape through the (type, at) index: such rows are rare.
 *
 * Only rows stamped within the hour before now and at most `RECENT_AHEAD_MS` after it: one
 * written into the file stamped ten years ahead kept the pages firing for good (probe 89a F4). A
 * row written into the file within that window pages like a real one — it is itself tampering —
 * and resolves an hour later. Rows are counted, not checked one by one: checking at most 1,000 of
 * them let 1,000 forged rows hide a real event for an hour (probe 89d F4).
 */
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock";
import { METRIC } from "../metrics/names";
import { Gauge, type Registry } from "../metrics/prom";
import { TAMPER_EVENT_TYPES } from "./events";

/** How far back the gauge counts: long enough for a scrape interval, short enough to resolve. */
export const RECENT_TAMPERING_MS = 60 * 60 * 1000;
/** How far ahead of this clock a row may be stamped and count (another process's clock, a step). */
export const RECENT_AHEAD_MS = 5 * 60 * 1000;

export function registerRecentTampering(registry: Registry, sqlite: Database, clock: Clock): void {
  const placeholders = TAMPER_EVENT_TYPES.map(() => "?").join(", ");
  const counts = sqlite.query<{ type: string; n: number }, (string | number)[]>(
    `SELECT type, count(*) AS n FROM audit_events
     WHERE type IN (${placeholders}) AND at > ? AND at <= ? GROUP BY type`,
  );
  new Gauge({
    name: METRIC.auditTamperEventsRecent,
    help: "Tampering events in the database file's audit log from the last hour, by type, whichever process recorded them",
    labelNames: ["type"] as const,
    registers: [registry],
    collect() {
      // Every type, 0 when absent: an alert's selector must find its series.
      for (const type of TAMPER_EVENT_TYPES) this.set({ type }, 0);
      const now = clock.now();
      for (const { type, n } of counts.all(
        ...TAMPER_EVENT_TYPES,
        now - RECENT_TAMPERING_MS,
        now + RECENT_AHEAD_MS,
      )) {
        this.set({ type }, n);
      }
    },
  });
}
