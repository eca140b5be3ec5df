/**
 * @module
 * The webhook providers' dedupe records (`webhook_events`): each provider prunes its own past its
 * retention, oldest first, a bounded batch a run — a range of the (provider, received_at) index.
 */
import { and, eq, inArray, lt } from "drizzle-orm";
import type { AppDatabase } from "../../db/client";
import { webhookEvents } from "../../db/schema";

const PRUNE_BATCH = 1000;

/** Deletes up to a batch of `provider`'s records received before `cutoff`, oldest first. */
export function pruneWebhookEvents(db: AppDatabase, provider: string, cutoff: number): void {
  const old = db
    .select({ id: webhookEvents.eventId })
    .from(webhookEvents)
    .where(and(eq(webhookEvents.provider, provider), lt(webhookEvents.receivedAt, cutoff)))
    .orderBy(webhookEvents.receivedAt)
    .limit(PRUNE_BATCH);
  db.delete(webhookEvents)
    .where(and(eq(webhookEvents.provider, provider), inArray(webhookEvents.eventId, old)))
    .run();
}
