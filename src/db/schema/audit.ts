import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * Security events, hash-chained: each row's `hash` covers its fields and the previous row's hash,
 * so editing or deleting a row breaks the chain at that point. Personal data (actor, client IP) is
 * covered through `subjectCommit`, a salted hash of the two, so erasure can replace them with a
 * pseudonym and drop the salt without breaking the chain.
 */
export const auditEvents = sqliteTable(
  "audit_events",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    at: integer("at").notNull(),
    type: text("type").notNull(),
    actor: text("actor"),
    ip: text("ip"),
    route: text("route"),
    requestId: text("request_id"),
    outcome: text("outcome").notNull(),
    detail: text("detail").notNull(),
    /** Random per row; deleted on erasure so the commitment can no longer be brute-forced. */
    subjectSalt: text("subject_salt"),
    subjectCommit: text("subject_commit").notNull(),
    prevHash: text("prev_hash").notNull(),
    hash: text("hash").notNull(),
  },
  (table) => [
    index("audit_events_at").on(table.at),
    index("audit_events_type_at").on(table.type, table.at),
    index("audit_events_actor").on(table.actor),
  ],
);

/** Where retention cut the chain: the first kept row's prev_hash must equal `lastHash`. */
export const auditCheckpoints = sqliteTable("audit_checkpoints", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  createdAt: integer("created_at").notNull(),
  lastDeletedId: integer("last_deleted_id").notNull(),
  lastHash: text("last_hash").notNull(),
  deletedCount: integer("deleted_count").notNull(),
});
