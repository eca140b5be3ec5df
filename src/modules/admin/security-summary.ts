/**
 * @module
 * Who is behind the refusals: the top client addresses and principals by failed logins, rate-limit
 * refusals and webhook signature failures, counted from the audit log. This detail stays out of
 * metric labels on purpose (an address per label value would grow the series without bound, and
 * put personal data in Prometheus); the dashboards show the rates, this shows the names.
 * `GET /api/admin/security/summary` and `bun run cli audit:top` both read it.
 *
 * Which events count:
 * - failed logins: `auth.login.failed` (a wrong password or an unknown account; the actor is the
 *   account when it exists) and `auth.login.locked` (an attempt on a locked account);
 * - rate-limit refusals: `ratelimit.rejected` (the actor is the principal when the refused policy
 *   counts per principal; per-address refusals have only the address);
 * - signature failures: `webhook.signature_failed` (no principal: webhooks carry none).
 *
 * Each count is one GROUP BY over the (type, at) index, bounded by the window: at most
 * MAX_WINDOW_MS back, so a summary never scans the whole retained log.
 */

import type { Database } from "bun:sqlite";
import { and, asc, desc, gte, inArray, isNotNull, lte, sql } from "drizzle-orm";
import { isCalendarDateTime } from "../../calendar";
import { DAY_MS } from "../../clock";
import { drizzleOf } from "../../db/client";
import { auditEvents } from "../../db/schema";
import { storedValueText } from "../../db/stored-values";
import type { AuditEventType } from "../../plugins/audit/events";

export const SUMMARY_CATEGORIES = {
  failedLogins: ["auth.login.failed", "auth.login.locked"],
  rateLimitRefusals: ["ratelimit.rejected"],
  signatureFailures: ["webhook.signature_failed"],
} as const satisfies Record<string, readonly AuditEventType[]>;

export type SummaryCategory = keyof typeof SUMMARY_CATEGORIES;

/** The window reaches back 24 hours unless asked otherwise, and never more than 30 days. */
export const DEFAULT_WINDOW_MS = DAY_MS;
export const MAX_WINDOW_MS = 30 * DAY_MS;
export const DEFAULT_TOP = 10;
export const MAX_TOP = 100;

export interface Ranked {
  value: string;
  count: number;
}

export interface CategorySummary {
  /** Every matching event in the window, with or without an address or principal. */
  total: number;
  addresses: Ranked[];
  principals: Ranked[];
}

export interface SecuritySummary {
  since: number;
  until: number;
  categories: Record<SummaryCategory, CategorySummary>;
}

/**
 * The summary as the API answers it and `audit:top --json` prints it: one shape for scripts that
 * read either (the CLI printed `{value, count}` where the API says `address` or `principal`: probe
 * 27c F5).
 */
export function presentSummary(summary: SecuritySummary) {
  const shown = (category: CategorySummary) => ({
    total: category.total,
    addresses: category.addresses.map(({ value, count }) => ({ address: value, count })),
    principals: category.principals.map(({ value, count }) => ({ principal: value, count })),
  });
  return {
    since: new Date(summary.since).toISOString(),
    until: new Date(summary.until).toISOString(),
    failedLogins: shown(summary.categories.failedLogins),
    rateLimitRefusals: shown(summary.categories.rateLimitRefusals),
    signatureFailures: shown(summary.categories.signatureFailures),
  };
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };
// A full date-time with an explicit offset: a bare date or local time would be read in the
// server's time zone, and an operator comparing with a log line would count the wrong hours.
const ISO_DATE_TIME =
  /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?(?:Z|[+-]\d{2}:\d{2})$/;

export type SinceResult = { ok: true; at: number } | { ok: false; message: string };

/**
 * `since` as a duration back from `now` (`90m`, `12h`, `7d`) or an ISO 8601 date-time with an
 * offset; refused when it is in the future or more than 30 days back.
 */
export function parseSince(raw: string | undefined, now: number): SinceResult {
  if (raw === undefined || raw === "") return { ok: true, at: now - DEFAULT_WINDOW_MS };
  let at: number;
  const duration = /^(\d{1,6})([mhd])$/.exec(raw);
  if (duration) {
    at = now - Number(duration[1]) * UNIT_MS[duration[2]!]!;
  } else if (ISO_DATE_TIME.test(raw) && !Number.isNaN(Date.parse(raw)) && isCalendarDateTime(raw)) {
    at = Date.parse(raw);
  } else {
    return {
      ok: false,
      message: "Expected a duration (90m, 12h, 7d) or an ISO 8601 date-time with an offset",
    };
  }
  if (at > now) return { ok: false, message: "Must not be in the future" };
  if (now - at > MAX_WINDOW_MS) return { ok: false, message: "Must be at most 30 days back" };
  return { ok: true, at };
}

export function summarizeSecurity(
  sqlite: Database,
  window: { since: number; until: number; top: number },
): SecuritySummary {
  const db = drizzleOf(sqlite);
  const categories = {} as Record<SummaryCategory, CategorySummary>;
  for (const [category, types] of Object.entries(SUMMARY_CATEGORIES) as [
    SummaryCategory,
    readonly AuditEventType[],
  ][]) {
    const inWindow = and(
      inArray(auditEvents.type, [...types]),
      gte(auditEvents.at, window.since),
      lte(auditEvents.at, window.until),
    );
    const count = sql<number>`count(*)`.mapWith(Number);
    const top = (column: typeof auditEvents.ip | typeof auditEvents.actor) =>
      db
        .select({ value: sql<unknown>`${column}`, count })
        .from(auditEvents)
        .where(and(inWindow, isNotNull(column)))
        .groupBy(column)
        // Ties in a stable order, so two reads of the same log print the same list.
        .orderBy(desc(count), asc(column))
        .limit(window.top)
        .all()
        // A value written into the file as a BLOB or a number is shown as the text it holds, as
        // the audit listing shows it, not a 500 for every window that holds it (probe 58a F1).
        .map(({ value, count }) => ({ value: storedValueText(value) ?? "", count }));
    const total = db.select({ count }).from(auditEvents).where(inWindow).get()?.count ?? 0;
    categories[category] = {
      total,
      addresses: top(auditEvents.ip),
      principals: top(auditEvents.actor),
    };
  }
  return { since: window.since, until: window.until, categories };
}
