/**
 * @module
 * A refund whose outcome Palisade never heard. A refund's Stripe idempotency key is derived from
 * the payment, its refunded total and the amount, so a retry is that refund again only while the
 * total stands; a refund Stripe made behind a timeout or a server error, and that
 * `charge.refunded` (or another refund) then counted, was made a second time by the retry its 503
 * asked for, under the key of the new total (probe 60a F-DUP). Such a refund is now kept on the
 * payment's row (`refund_undecided`) until the next refund of the payment has asked Stripe
 * whether it was made. Not made, the next refund goes on as asked. Made, it is recorded and
 * audited, and is the answer to a retry of its amount; a refund of another amount that found it is
 * told so (409), and it stays kept, made, for the retry of its own amount (within the 24 hours
 * Stripe keeps a key, after which a refund of that amount is a new one).
 */
import { isStripeId } from "./ids";

export interface UndecidedRefund {
  /** The last Stripe idempotency key the refund was asked under. */
  key: string;
  amount: number;
  /** The refunded total it started from. */
  before: number;
  /** Found made (and recorded) by a refund of another amount: its id and status, and when. */
  made?: { id: string; status: string; at: number };
}

/** The stored form of `undecided` (the `refund_undecided` column). */
export function storedUndecided(undecided: UndecidedRefund): string {
  return JSON.stringify(undecided);
}

const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/**
 * The undecided refund `stored` names for payment `id`, or null when it is no refund Palisade
 * stored for that payment (written into the file: a key of another payment, numbers that are not
 * counts, text that is not JSON).
 */
export function undecidedOf(stored: string, id: string): UndecidedRefund | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stored);
  } catch {
    return null;
  }
  if (parsed === null || typeof parsed !== "object") return null;
  const { key, amount, before, made } = parsed as Record<string, unknown>;
  if (typeof key !== "string" || !key.startsWith(`palisade_refund_${id}_`) || key.length > 512) {
    return null;
  }
  if (!isCount(amount) || amount === 0 || !isCount(before)) return null;
  if (made === undefined) return { key, amount, before };
  if (made === null || typeof made !== "object") return null;
  const { id: refundId, status, at } = made as Record<string, unknown>;
  if (
    !isStripeId("re", refundId) ||
    typeof status !== "string" ||
    !/^[a-z0-9_]{1,64}$/.test(status)
  ) {
    return null;
  }
  if (!isCount(at)) return null;
  return { key, amount, before, made: { id: refundId, status, at } };
}
