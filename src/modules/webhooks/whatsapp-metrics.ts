/**
 * @module
 * WhatsApp's own metrics, beside the shared webhook counters (metrics.ts): replies by outcome,
 * delivery statuses by status, and the outbox backlog (read from the table at each scrape, so every
 * process reports the same shared number).
 */

import type { Database } from "bun:sqlite";
import { METRIC } from "../../plugins/metrics/names";
import { Counter, Gauge, type Registry } from "../../plugins/metrics/prom";

export type ReplyOutcome = "sent" | "retried" | "failed";

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
  return {
    replies: new Counter({
      name: METRIC.whatsappReplies,
      help: "WhatsApp reply attempts by outcome (sent, retried after a transient failure, failed)",
      labelNames: ["outcome"],
      registers: [registry],
    }),
    statuses: new Counter({
      name: METRIC.whatsappStatuses,
      help: "WhatsApp delivery status callbacks recorded, by status",
      labelNames: ["status"],
      registers: [registry],
    }),
  };
}
