/**
 * @module
 * A payment's status and the one rule for moving it. Stripe does not deliver events in order, and
 * redelivers them, so a late `processing` may arrive after `succeeded`. The rule:
 *
 * - a final status is never left: `succeeded` only moves to `refunded`; `canceled` and `refunded`
 *   never move;
 * - a final status (`succeeded`, `canceled`, `refunded`) is applied whenever it is heard of, since
 *   Stripe never leaves it either;
 * - any other status is applied only from an event newer than the one that set the current status
 *   (Stripe's `created`, in seconds); from one stamped in the same second, only a move forward in
 *   rank. An older event never undoes what a newer one said.
 *
 * So a newer event may still move a payment back where Stripe itself does (a `processing` debit
 * that fails returns to `failed`), but an older one never does, and nothing undoes a final one.
 */

export const PAYMENT_STATUSES = [
  "requires_payment_method",
  "requires_confirmation",
  "requires_action",
  "processing",
  "requires_capture",
  "failed",
  "canceled",
  "succeeded",
  "refunded",
] as const;

export type PaymentStatus = (typeof PAYMENT_STATUSES)[number];

const RANK: Record<PaymentStatus, number> = {
  requires_payment_method: 0,
  requires_confirmation: 0,
  requires_action: 0,
  failed: 1,
  processing: 2,
  requires_capture: 2,
  canceled: 3,
  succeeded: 3,
  refunded: 4,
};

const FINAL: ReadonlySet<PaymentStatus> = new Set(["succeeded", "canceled", "refunded"]);

export function isPaymentStatus(value: unknown): value is PaymentStatus {
  return typeof value === "string" && (PAYMENT_STATUSES as readonly string[]).includes(value);
}

/** Whether an event created at `eventAt` may move a payment from `current` (set at `currentAt`) to `next`. */
export function mayMove(
  current: PaymentStatus,
  currentAt: number,
  next: PaymentStatus,
  eventAt: number,
): boolean {
  if (current === next) return false;
  if (current === "refunded" || current === "canceled") return false;
  if (current === "succeeded") return next === "refunded";
  if (FINAL.has(next)) return true;
  if (eventAt > currentAt) return true;
  return eventAt === currentAt && RANK[next] > RANK[current];
}
