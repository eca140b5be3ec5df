import { index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

/**
 * Every webhook event (Stripe event id, WhatsApp message id) seen, recorded in the same
 * transaction as its effect: a redelivery finds its row and has no second effect, also when two
 * processes receive it at once (the primary key decides).
 */
export const webhookEvents = sqliteTable(
  "webhook_events",
  {
    provider: text("provider").notNull(),
    eventId: text("event_id").notNull(),
    type: text("type").notNull(),
    receivedAt: integer("received_at").notNull(),
  },
  (table) => [
    primaryKey({ columns: [table.provider, table.eventId] }),
    // Each provider's retention prunes its own oldest rows (Stripe's in time order): without the
    // provider first, a prune sorted every old row of the table on each run.
    index("webhook_events_provider_received_at").on(table.provider, table.receivedAt),
  ],
);
