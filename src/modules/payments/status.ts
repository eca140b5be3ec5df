/**
 * @module
 * A payment's status and the one rule for moving it. Stripe does not deliver events in order, and
 * redelivers them, so a late `processing` may arrive after `succeeded`. Each status has a rank; a
 * move is applied when:
 *
 * - the payment is not final (`succeeded` only ever moves to `refunded`; `canceled` and `refunded`
 *   never move), and
 * - the event is newer than the one that set the current status (Stripe's `created`, seconds), or,
 *   for an event as old or older, the move goes forward in rank.
 *
 * So a newer event may still move a payment back where Stripe itself does (a `processing` debit
 * that fails returns to `failed`), but an older one never undoes a later state, and nothing
 * undoes a final one.
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
  if (eventAt > currentAt) return true;
  return RANK[next] > RANK[current];
}
