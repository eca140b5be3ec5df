import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * One row per (policy, key) holding both windows of the sliding-window counter: the long window
 * (a minute, or the policy's own) and the 10-second burst window, each as its current fixed window's
 * start and count plus the previous window's count. One UPSERT reads and advances both.
 */
export const rateLimitCounters = sqliteTable(
  "rate_limit_counters",
  {
    policy: text("policy").notNull(),
    key: text("key").notNull(),
    windowStart: integer("window_start").notNull(),
    current: integer("current").notNull(),
    previous: integer("previous").notNull(),
    burstWindowStart: integer("burst_window_start").notNull(),
    burstCurrent: integer("burst_current").notNull(),
    burstPrevious: integer("burst_previous").notNull(),
    /** Permits the last statement granted (concurrent checks are one statement): RETURNING cannot tell otherwise. */
    admitted: integer("admitted").notNull(),
    /** When both windows have passed and the row no longer affects any decision. */
    expiresAt: integer("expires_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.policy, table.key] }),
    index("rate_limit_counters_expires").on(table.expiresAt),
  ],
);
