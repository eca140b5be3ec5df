import { sql } from "drizzle-orm";
import { type AnySQLiteColumn, index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * An end no block of Palisade's has (it writes only whole numbers): written into the file, it blocks
 * nothing and never ends, so the prune deletes it. The partial index of those is made on these
 * words, and the prune states them alike: SQLite uses a partial index only for a query that does.
 */
export const blockEndUnwritten = (expiresAt: AnySQLiteColumn) =>
  sql`typeof(${expiresAt}) != 'integer'`;

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
    // The prune's other two ways in (migration 0037): blocks lifted, and ends no block has. With
    // the expiry's index, none of its statements reads every block (an attacker with many /64s
    // makes a block each).
    index("ip_blocks_lifted").on(table.liftedAt).where(sql`${table.liftedAt} IS NOT NULL`),
    // The blocks an admin made (automatic ones name no one): what an erasure of a person renames,
    // found without reading every block (probe 88e F1; migration 0038).
    index("ip_blocks_created_by").on(table.createdBy).where(sql`${table.createdBy} IS NOT NULL`),
    index("ip_blocks_end_unwritten").on(table.expiresAt).where(blockEndUnwritten(table.expiresAt)),
  ],
);
