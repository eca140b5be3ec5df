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
 * Counted from the rows of the (type, at) index in the window, a part at a time (summarizeSecurity),
 * bounded by the window: at most MAX_WINDOW_MS back, so a summary never scans the whole retained
 * log.
 */

import type { Database } from "bun:sqlite";
import { and, asc, eq, gte, lte, sql } from "drizzle-orm";
import { isCalendarDateTime } from "../../calendar";
import { DAY_MS } from "../../clock";
import { drizzleOf } from "../../db/client";
import { auditEvents } from "../../db/schema";
import { storedValueText } from "../../db/stored-values";
import type { AuditEventType } from "../../plugins/audit/events";
import type { AuditRow } from "../../plugins/audit/log";

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
  /** Rows of the window the audit log does not vouch for (written into the file): left out. */
  tampered: number;
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
    tampered: summary.tampered,
    failedLogins: shown(summary.categories.failedLogins),
    rateLimitRefusals: shown(summary.categories.rateLimitRefusals),
    signatureFailures: shown(summary.categories.signatureFailures),
  };
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };
// A full date-time with an explicit offset: a bare date or local time would be read in the
// server's time zone, and an operator comparing with a log line would count the wrong hours.

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
  } else if (isCalendarDateTime(raw)) {
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

/** Rows of the window read at once: each part a few milliseconds of the event loop. */
export const SUMMARY_PART_ROWS = 2000;

/**
 * The summary, counted from the rows the audit log vouches for (`vouches`: the row's hash, under
 * this file's key, over what it holds): a row written into the file is left out and counted in
 * `tampered`, not counted against the address or account it names (probe 86d F1: 50 forged failed
 * logins framed an address). Read a part at a time, in the order of the (type, at) index, with the
 * event loop let go between parts: nine GROUP BYs over a window of 500,000 rows held every request
 * 1–3.4 s (probe 86c F1). The counts are kept per distinct value until the window is read.
 */
export async function summarizeSecurity(
  sqlite: Database,
  window: { since: number; until: number; top: number },
  vouches: (row: AuditRow) => boolean,
): Promise<SecuritySummary> {
  const db = drizzleOf(sqlite);
  const categories = {} as Record<SummaryCategory, CategorySummary>;
  let tampered = 0;
  for (const [category, types] of Object.entries(SUMMARY_CATEGORIES) as [
    SummaryCategory,
    readonly AuditEventType[],
  ][]) {
    let total = 0;
    const addresses = new Map<string, number>();
    const principals = new Map<string, number>();
    for (const type of types) {
      let after: [number, number] = [window.since - 1, Number.MAX_SAFE_INTEGER];
      while (true) {
        const part = db
          .select()
          .from(auditEvents)
          .where(
            and(
              eq(auditEvents.type, type),
              gte(auditEvents.at, window.since),
              lte(auditEvents.at, window.until),
              sql`(${auditEvents.at}, ${auditEvents.id}) > (${after[0]}, ${after[1]})`,
            ),
          )
          .orderBy(asc(auditEvents.at), asc(auditEvents.id))
          .limit(SUMMARY_PART_ROWS)
          .all();
        for (const row of part) {
          if (!vouches(row)) {
            tampered++;
            continue;
          }
          total++;
          // A value written as a BLOB or a number is shown as the text it holds (probe 58a F1).
          const address = storedValueText(row.ip);
          if (address !== null) addresses.set(address, (addresses.get(address) ?? 0) + 1);
          const principal = storedValueText(row.actor);
          if (principal !== null) principals.set(principal, (principals.get(principal) ?? 0) + 1);
        }
        if (part.length < SUMMARY_PART_ROWS) break;
        const last = part.at(-1)!;
        after = [Number(last.at), Number(last.id)];
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    categories[category] = {
      total,
      addresses: ranked(addresses, window.top),
      principals: ranked(principals, window.top),
    };
  }
  return { since: window.since, until: window.until, tampered, categories };
}

/** The `top` highest counts, ties in a stable order: two reads of the same log print one list. */
function ranked(counts: Map<string, number>, top: number): Ranked[] {
  return [...counts]
    .map(([value, count]) => ({ value, count }))
    .sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0))
    .slice(0, top);
}
