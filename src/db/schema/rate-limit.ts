import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * One row per (policy, key) holding both windows of the sliding-window counter: the long window
 * (a minute, or the policy's own) and the 10-second burst window, each as its current fixed window's
 * start and count plus the previous window's count. One decision reads and advances both.
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
    /** Permits the last decision granted (concurrent checks of one key are one decision). */
    admitted: integer("admitted").notNull(),
    /** When both windows have passed and the row no longer affects any decision. */
    expiresAt: integer("expires_at").notNull(),
    /**
     * When the prune should look at the row again: `expires_at` as it was when the row was inserted
     * or last looked at, never later than `expires_at`. Only this column is indexed, and checks
     * never write it: an indexed `expires_at` rewritten by every check cost each check an index
     * delete and insert (~15 % of a grouped check). The prune deletes the rows it finds expired and
     * moves the others on to their `expires_at` (see sqlite-store's prune).
     */
    pruneAfter: integer("prune_after").notNull().default(0),
  },
  (table) => [
    primaryKey({ columns: [table.policy, table.key] }),
    index("rate_limit_counters_prune").on(table.pruneAfter),
  ],
);
