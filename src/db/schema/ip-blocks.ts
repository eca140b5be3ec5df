import { index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

export const IP_BLOCK_SOURCES = ["auto", "admin"] as const;

/**
 * Blocked client addresses. `address` is the limiter key form: an IPv4 address, or an IPv6 /64
 * prefix, since one host can rotate through its whole /64. Expired rows are kept as history: they
 * decide how long the next automatic block lasts.
 */
export const ipBlocks = sqliteTable(
  "ip_blocks",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    address: text("address").notNull(),
    reason: text("reason").notNull(),
    source: text("source", { enum: IP_BLOCK_SOURCES }).notNull(),
    createdBy: text("created_by"),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
    /** Set when an admin lifts the block before it expires. */
    liftedAt: integer("lifted_at"),
    /**
     * An HMAC over the row's other columns (plugins/ip-block/seal.ts): a row without a matching
     * seal was written into the file, not by Palisade, and blocks nothing.
     */
    seal: text("seal"),
  },
  (table) => [
    index("ip_blocks_address").on(table.address, table.createdAt),
    index("ip_blocks_expires").on(table.expiresAt),
    // The admin list's order, newest first (with the id, which is the rowid, as the tiebreak): a
    // page read without it sorted every block in force (probe 84k F4).
    index("ip_blocks_created").on(table.createdAt),
  ],
);
