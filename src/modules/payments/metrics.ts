/**
 * @module
 * `payments_total{status}`: every status a payment entered — the status Stripe gave a new intent,
 * then each move a webhook or a refund applied (see status.ts). Shared by the payments routes and
 * the Stripe webhook, so each name is registered once per registry.
 */

import { METRIC } from "../../plugins/metrics/names";
import {
  type Counter,
  counterIn,
  everyCombination,
  type Registry,
  startAtZero,
} from "../../plugins/metrics/prom";
import { PAYMENT_STATUSES } from "./status";

const PAYMENTS = METRIC.payments;

export interface PaymentMetrics {
  payments: Counter<"status">;
}

export function paymentMetrics(registry: Registry): PaymentMetrics {
  const payments = counterIn<"status">(registry, {
    name: PAYMENTS,
    help: "Payments entering each status: created intents, then moves from webhooks and refunds",
    labelNames: ["status"],
  });
  startAtZero(payments, everyCombination({ status: PAYMENT_STATUSES }));
  return { payments };
}
