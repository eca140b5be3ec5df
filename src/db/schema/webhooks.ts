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
    index("webhook_events_received_at").on(table.receivedAt),
  ],
);
