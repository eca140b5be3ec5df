/**
 * @module
 * WhatsApp's own metrics, beside the shared webhook counters (metrics.ts): replies by outcome,
 * delivery statuses by status, and the outbox backlog (read from the table at each scrape, so every
 * process reports the same shared number).
 */

import type { Database } from "bun:sqlite";
import { METRIC } from "../../plugins/metrics/names";
import {
  Counter,
  everyCombination,
  Gauge,
  type Registry,
  startAtZero,
} from "../../plugins/metrics/prom";
import { DELIVERY_STATUSES } from "./whatsapp-model";

export const REPLY_OUTCOMES = ["sent", "retried", "failed"] as const;
export type ReplyOutcome = (typeof REPLY_OUTCOMES)[number];

export interface WhatsAppMetrics {
  replies: Counter<"outcome">;
  statuses: Counter<"status">;
}

export function createWhatsAppMetrics(registry: Registry, sqlite: Database): WhatsAppMetrics {
  const pending = sqlite.query<{ n: number }, []>(
    "SELECT count(*) AS n FROM whatsapp_outbox WHERE state = 'pending'",
  );
  new Gauge({
    name: METRIC.whatsappOutboxPending,
    help: "WhatsApp replies accepted and not yet sent or given up",
    registers: [registry],
    collect() {
      try {
        this.set(pending.get()?.n ?? 0);
      } catch {
        // A locked or closed database: the scrape keeps the last value rather than failing.
      }
    },
  });
  const replies = new Counter({
    name: METRIC.whatsappReplies,
    help: "WhatsApp reply attempts by outcome (sent, retried after a transient failure, failed)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  const statuses = new Counter({
    name: METRIC.whatsappStatuses,
    help: "WhatsApp delivery status callbacks recorded, by status",
    labelNames: ["status"],
    registers: [registry],
  });
  startAtZero(replies, everyCombination({ outcome: REPLY_OUTCOMES }));
  startAtZero(statuses, everyCombination({ status: DELIVERY_STATUSES }));
  return { replies, statuses };
}
