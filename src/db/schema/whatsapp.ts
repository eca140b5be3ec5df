import { sql } from "drizzle-orm";
import {
  type AnySQLiteColumn,
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
} from "drizzle-orm/sqlite-core";

/*
 * The outbox keeps its finished rows for 30 days, and the worker's and the prune's statements look
 * for the few that are not: each through a partial index of those (migration 0036), where they
 * read the whole table (probe-sized: 35–50 ms of write lock a statement at 300,000 rows, a claim
 * at every accepted message and every second). SQLite uses a partial index only for a query that
 * states its condition in the same words, with literals (a bound parameter is not known when the
 * plan is made): the conditions below are what both the indexes and the queries are written with.
 */

/** A reply still owed. */
export const outboxPending = (state: AnySQLiteColumn) => sql`${state} = 'pending'`;
/** A state Palisade never writes (the column is not sealed): given up by the prune. */
export const outboxStateUnwritten = (state: AnySQLiteColumn) =>
  sql`${state} NOT IN ('pending', 'sent', 'failed')`;
/** Finished, with a finish time no worker writes (none, or not a whole number): pruned at once. */
export const outboxFinishUnwritten = (state: AnySQLiteColumn, finishedAt: AnySQLiteColumn) =>
  sql`${state} IN ('sent', 'failed') AND typeof(${finishedAt}) != 'integer'`;

/**
 * The WhatsApp outbox: one row per accepted inbound message, written in the same transaction as its
 * `webhook_events` row, before the webhook answers 200. The worker (modules/webhooks/outbox.ts)
 * claims due rows with a lease, stores the chat reply on the row, sends it, and marks it sent.
 * The sender's number is kept in clear (`recipient`) only until the reply is sent or given up;
 * everything else names the sender by its keyed hash.
 */
export const whatsappOutbox = sqliteTable(
  "whatsapp_outbox",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    /** The inbound message's id (wamid); unique, like its webhook_events row. */
    messageId: text("message_id").notNull().unique(),
    /** The business number the message was sent to: the reply goes out from it. */
    phoneNumberId: text("phone_number_id").notNull(),
    /** The sender's number, in clear only while a reply is owed; null once sent or given up. */
    recipient: text("recipient"),
    /** HMAC of the sender's number: the chat owner and the rate-limit key. */
    senderHash: text("sender_hash").notNull(),
    /** `text` (answered by chat) or `unsupported` (answered with a fixed notice). */
    // `refused`: a text the chat message rules refuse (answered with a fixed notice, never chat).
    kind: text("kind", { enum: ["text", "refused", "unsupported"] }).notNull(),
    /** The inbound text; null once answered or given up. */
    body: text("body"),
    /** The reply, stored once before the first send: a retry resends it, never a second chat turn. */
    reply: text("reply"),
    conversationId: text("conversation_id"),
    state: text("state", { enum: ["pending", "sent", "failed"] }).notNull(),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: integer("next_attempt_at").notNull(),
    leaseUntil: integer("lease_until"),
    leaseOwner: text("lease_owner"),
    /**
     * How many parts of a reply longer than Graph takes in one message Graph has accepted
     * (modules/webhooks/reply-parts.ts): a retry sends the rest, never a part again.
     */
    replyPartsSent: integer("reply_parts_sent").notNull().default(0),
    /**
     * Where in the reply the text Graph has not accepted yet begins (UTF-16 offset), recorded with
     * each part accepted: the next try cuts the rest afresh from there (reply-parts.ts
     * replyPieces). Null on a row the release before wrote, whose parts are then counted.
     */
    replySentChars: integer("reply_sent_chars"),
    /** The Graph API's id of the reply (of its last part: what status callbacks name). */
    replyMessageId: text("reply_message_id"),
    lastError: text("last_error"),
    receivedAt: integer("received_at").notNull(),
    finishedAt: integer("finished_at"),
    /**
     * HMAC of what the row makes Palisade send, and to whom (modules/webhooks/outbox-seal.ts): a
     * row written into the file, not by Palisade, is never sent.
     */
    seal: text("seal"),
  },
  (table) => [
    index("whatsapp_outbox_due").on(table.nextAttemptAt).where(sql`${table.state} = 'pending'`),
    index("whatsapp_outbox_sender").on(table.senderHash, table.id),
    index("whatsapp_outbox_reply").on(table.replyMessageId),
    index("whatsapp_outbox_finished").on(table.finishedAt),
    index("whatsapp_outbox_owed").on(table.id).where(outboxPending(table.state)),
    index("whatsapp_outbox_owed_sender")
      .on(table.senderHash, table.id)
      .where(outboxPending(table.state)),
    index("whatsapp_outbox_state_unwritten").on(table.id).where(outboxStateUnwritten(table.state)),
    index("whatsapp_outbox_finish_unwritten")
      .on(table.id)
      .where(outboxFinishUnwritten(table.state, table.finishedAt)),
  ],
);

/**
 * Delivery status callbacks (sent, delivered, read, failed) for the replies we sent, one row per
 * (message, status): a redelivered callback changes nothing.
 */
export const whatsappStatuses = sqliteTable(
  "whatsapp_statuses",
  {
    /** The Graph API id of our outbound message. */
    messageId: text("message_id").notNull(),
    status: text("status", { enum: ["sent", "delivered", "read", "failed"] }).notNull(),
    /** When WhatsApp says it happened (ms since the epoch). */
    at: integer("at").notNull(),
    /** Graph's error code for a `failed` status. */
    errorCode: integer("error_code"),
    receivedAt: integer("received_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.messageId, table.status] }),
    index("whatsapp_statuses_received_at").on(table.receivedAt),
  ],
);
