/**
 * @module
 * The webhook metrics, shared by every provider's endpoint (Stripe, WhatsApp). The first endpoint
 * built on a registry creates them; the others get the same counters, so each name is registered
 * once per app.
 */

import { METRIC } from "../../plugins/metrics/names";
import {
  type Counter,
  counterIn,
  everyCombination,
  type Registry,
  startAtZero,
} from "../../plugins/metrics/prom";

export const WEBHOOK_PROVIDERS = ["stripe", "whatsapp"] as const;
export type WebhookProvider = (typeof WEBHOOK_PROVIDERS)[number];

/**
 * What happened to a verified delivery: `processed` (its effect applied), `duplicate` (seen
 * before, acknowledged with no second effect), `ignored` (a type we do not act on), `failed`.
 */
export const WEBHOOK_OUTCOMES = ["processed", "duplicate", "ignored", "failed"] as const;
export type WebhookOutcome = (typeof WEBHOOK_OUTCOMES)[number];

export interface WebhookMetrics {
  signatureFailures: Counter<"provider">;
  events: Counter<"provider" | "outcome">;
}

const SIGNATURE_FAILURES = METRIC.webhookSignatureFailures;
const EVENTS = METRIC.webhookEvents;

export function webhookMetrics(registry: Registry): WebhookMetrics {
  const signatureFailures = counterIn<"provider">(registry, {
    name: SIGNATURE_FAILURES,
    help: "Webhook deliveries refused because their signature did not verify",
    labelNames: ["provider"],
  });
  const events = counterIn<"provider" | "outcome">(registry, {
    name: EVENTS,
    help: "Verified webhook deliveries, by provider and outcome",
    labelNames: ["provider", "outcome"],
  });
  startAtZero(signatureFailures, everyCombination({ provider: WEBHOOK_PROVIDERS }));
  startAtZero(events, everyCombination({ provider: WEBHOOK_PROVIDERS, outcome: WEBHOOK_OUTCOMES }));
  return { signatureFailures, events };
}
