import { sql } from "drizzle-orm";
import { check, index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/** Who a conversation and a budget belong to (see modules/chat/contract.ts ChatOwner). */
export const CHAT_OWNER_KINDS = ["user", "key", "whatsapp"] as const;
export const CHAT_MESSAGE_ROLES = ["user", "assistant"] as const;

/**
 * Conversations, each owned by one principal: a user (bearer token or session cookie), an API key
 * (its own conversations, not its owner's), or a WhatsApp sender. The id is 128 random bits,
 * base64url: it says nothing about who owns it or how many there are.
 */
export const chatConversations = sqliteTable(
  "chat_conversations",
  {
    id: text("id").primaryKey(),
    ownerKind: text("owner_kind", { enum: CHAT_OWNER_KINDS }).notNull(),
    ownerId: text("owner_id").notNull(),
    createdAt: integer("created_at").notNull(),
    updatedAt: integer("updated_at").notNull(),
    /**
     * How many messages it holds (migration 0025), so a page or the list reads it instead of
     * counting a long conversation's rows on every request: a turn adds its two messages,
     * retention takes off what it deletes (modules/chat/service.ts). Not sealed: a shown figure,
     * as the times are; a value no count can be is counted instead.
     */
    messageCount: integer("message_count").notNull().default(0),
    /**
     * HMAC of id and owner (modules/chat/history-seal.ts): a conversation whose row does not match
     * is neither continued nor shown.
     */
    seal: text("seal"),
  },
  (table) => [
    // The owner's list, newest first, and the cursor's keyset (created_at, id).
    index("chat_conversations_owner").on(table.ownerKind, table.ownerId, table.createdAt, table.id),
    index("chat_conversations_updated").on(table.updatedAt),
  ],
);

/**
 * The messages of a conversation in the order they were written (`id`). An assistant message the
 * client stopped reading (or the upstream cut) is kept with what was received and `incomplete`
 * set. `tokens` is the content's estimate (for the context window); the turn's usage is on the
 * assistant message.
 */
export const chatMessages = sqliteTable(
  "chat_messages",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    conversationId: text("conversation_id")
      .notNull()
      .references(() => chatConversations.id, { onDelete: "cascade" }),
    role: text("role", { enum: CHAT_MESSAGE_ROLES }).notNull(),
    content: text("content").notNull(),
    incomplete: integer("incomplete", { mode: "boolean" }).notNull().default(false),
    tokens: integer("tokens").notNull(),
    promptTokens: integer("prompt_tokens"),
    completionTokens: integer("completion_tokens"),
    createdAt: integer("created_at").notNull(),
    /**
     * HMAC of its conversation, id, the seal of the message before it, role, content, `incomplete`
     * and tokens (modules/chat/history-seal.ts): a conversation holding a message that does not
     * match, or whose messages are not in the order they were written, is neither continued nor
     * shown.
     */
    seal: text("seal"),
    /** The seal of the conversation's message written before this one; null for the first. */
    previousSeal: text("previous_seal"),
  },
  (table) => [
    index("chat_messages_conversation").on(table.conversationId, table.id),
    index("chat_messages_created").on(table.createdAt),
  ],
);

/**
 * Tokens per owner per UTC day (`YYYY-MM-DD`). `reserved` holds the estimates of turns in flight:
 * a turn reserves before it calls the upstream, in one statement that refuses when
 * used + reserved + estimate would pass the budget, and settles to its real usage after. Each
 * turn's share of `reserved` is also a row of `chat_reservations`, so that what a process killed
 * mid-turn reserved can be given back (modules/chat/budget.ts).
 */
export const chatUsage = sqliteTable(
  "chat_usage",
  {
    ownerKind: text("owner_kind", { enum: CHAT_OWNER_KINDS }).notNull(),
    ownerId: text("owner_id").notNull(),
    day: text("day").notNull(),
    usedTokens: integer("used_tokens").notNull().default(0),
    reservedTokens: integer("reserved_tokens").notNull().default(0),
    requests: integer("requests").notNull().default(0),
    updatedAt: integer("updated_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.ownerKind, table.ownerId, table.day] }),
    // A day's rows in principal order: the admin view pages through them with a cursor, and a
    // page must not read (or sort) the rows of the pages before it.
    index("chat_usage_day_owner").on(table.day, table.ownerKind, table.ownerId),
    check("chat_usage_reserved_nonnegative", sql`${table.reservedTokens} >= 0`),
  ],
);

/**
 * One row per turn in flight: what it added to its day's `reserved` and which process holds it.
 * Settling or releasing the turn deletes the row and takes its tokens from `reserved`; a row whose
 * process stopped beating (`chat_holders`) is given back by another process's maintenance. Ids
 * are random (53 bits), so a turn whose row was given back cannot end a later turn's. No index:
 * the table holds the turns in flight, and each statement that is not by id (a reset, an erasure,
 * the maintenance) reads it whole; an index would be two more pages written by every turn.
 */
export const chatReservations = sqliteTable(
  "chat_reservations",
  {
    id: integer("id").primaryKey(),
    ownerKind: text("owner_kind", { enum: CHAT_OWNER_KINDS }).notNull(),
    ownerId: text("owner_id").notNull(),
    day: text("day").notNull(),
    tokens: integer("tokens").notNull(),
    /** The reserving process's random id (its row in `chat_holders`). */
    holder: text("holder").notNull(),
    createdAt: integer("created_at").notNull(),
  },
  (table) => [
    check(
      "chat_reservations_tokens_counted",
      sql`typeof(${table.tokens}) = 'integer' AND ${table.tokens} >= 0`,
    ),
  ],
);

/**
 * The processes serving chat, each with when it last said it was running: written at start and
 * every maintenance run (10 s). One not seen for a minute is gone (modules/chat/reservations.ts
 * says when another process may take it for gone).
 */
export const chatHolders = sqliteTable("chat_holders", {
  holder: text("holder").primaryKey(),
  seenAt: integer("seen_at").notNull(),
});
