/**
 * @module
 * Refunds whose outcome Palisade has not heard. A refund's Stripe idempotency key is derived from
 * the payment, its refunded total and the amount, so a retry is that refund again only while the
 * total stands; a refund Stripe made behind a timeout or a server error, and that
 * `charge.refunded` (or another refund) then counted, was made a second time by the retry its 503
 * asked for, under the key of the new total (probe 60a F-DUP).
 *
 * So every refund is written on the payment's row (`refund_undecided`) with its claim, before
 * Stripe is asked, and taken off once Stripe has said what it made of it: one whose answer never
 * came (a timeout, a server error, a stop or a crash while Stripe worked: probe 60c F2) stays. The
 * next refund of the payment first asks Stripe about each one left (a refund made under its first
 * key or a key walked to from it). Not made, it goes. Made, it is recorded and audited, and kept,
 * made, for a day (as long as Stripe keeps a key): the answer to a retry of its amount. Several are
 * kept at once (probe 60c F1: one kept made was overwritten by a later refund's). One Stripe does
 * not list yet may still be in the making for UNLISTED_KEPT_MS (probe 61a F1). The list is sealed
 * with the payment seals' key, and the payment's seal covers it (seal.ts): one written into the
 * file (a forged refund id answered as made, a `before` that raised the sealed refunded total,
 * emptied, or an earlier state: probes 60c F3, F4, 61a F3) fails the payment's seal.
 */
import { DAY_MS } from "../../clock";
import { sealMatches } from "../../db/row-seal";
import { isStripeId } from "./ids";

export interface UndecidedRefund {
  /** The first Stripe idempotency key the refund was asked under. */
  key: string;
  amount: number;
  /** The refunded total it started from. */
  before: number;
  /**
   * When it was written, before Stripe was asked (0 in a list the release before this one wrote):
   * one Stripe does not list yet may still be in the making until UNLISTED_KEPT_MS after it.
   */
  at: number;
  /** Found made (and recorded): its id and status, and when. */
  made?: { id: string; status: string; at: number };
}

/** At most this many are kept on a payment (keptOf says which go first). */
export const MAX_UNDECIDED_REFUNDS = 10;

/** How long a refund found made stays the answer to a retry of its amount: Stripe keeps a key a day. */
export const MADE_KEPT_MS = DAY_MS;

/**
 * How long after it was written a refund Stripe does not list is still taken as one Stripe may be
 * making: every call of a refund ends inside its 2-minute claim, and Stripe goes on with a request
 * whose client has given up (a timeout, then the SDK's retries answered 409 while it works: probe
 * 61a F1). Until then no other refund of the payment starts; past it, one not listed was not made.
 */
export const UNLISTED_KEPT_MS = 10 * 60 * 1000;

/** The stored form of `entries`: null for none. */
export function storedUndecided(
  paymentId: string,
  entries: readonly UndecidedRefund[],
  seal: (paymentId: string, entries: string) => string,
): string | null {
  if (entries.length === 0) return null;
  const kept = JSON.stringify(keptOf(entries));
  return JSON.stringify({ entries: JSON.parse(kept), seal: seal(paymentId, kept) });
}

/**
 * The first Stripe idempotency key of a refund asked with the admin's Idempotency-Key: derived from
 * the payment and that key alone, so it names the one refund whatever the refunded total has
 * become since (probe 78a F1). Hashed: the admin's key may hold any printable character.
 */
export function keyedRefundKey(id: string, idempotencyKey: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(idempotencyKey).digest("hex");
  return `palisade_refund_${id}_key_${digest}`;
}

/** Whether a refund's first key is one keyedRefundKey made. */
export function isKeyedRefund(key: string): boolean {
  return /_key_[0-9a-f]{64}$/.test(key);
}

/**
 * At most MAX_UNDECIDED_REFUNDS. The oldest asked under an Idempotency-Key and found made go first:
 * their Stripe key holds, so a retry without the entry is Stripe's replay of the same refund. Then
 * the oldest other ones found made, whose retry without the entry would derive a new key and make
 * a second refund (probe 78c F2: ten keyed refunds pushed out the made entry a 503's retry needed).
 * Last, the oldest whose outcome is not known, which keep a refund Stripe may have made from being
 * made again.
 */
function keptOf(entries: readonly UndecidedRefund[]): readonly UndecidedRefund[] {
  let excess = entries.length - MAX_UNDECIDED_REFUNDS;
  if (excess <= 0) return entries;
  const without = (list: readonly UndecidedRefund[], goes: (entry: UndecidedRefund) => boolean) =>
    list.filter((entry) => {
      if (excess === 0 || !goes(entry)) return true;
      excess--;
      return false;
    });
  const lessKeyed = without(
    entries,
    (entry) => entry.made !== undefined && isKeyedRefund(entry.key),
  );
  const lessMade = without(lessKeyed, (entry) => entry.made !== undefined);
  return lessMade.slice(-MAX_UNDECIDED_REFUNDS);
}

const isCount = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/** One entry as Palisade writes it for payment `id`, or null. */
function entryOf(value: unknown, id: string): UndecidedRefund | null {
  if (value === null || typeof value !== "object") return null;
  const { key, amount, before, at: written, made } = value as Record<string, unknown>;
  if (typeof key !== "string" || !key.startsWith(`palisade_refund_${id}_`) || key.length > 512) {
    return null;
  }
  if (!isCount(amount) || amount === 0 || !isCount(before)) return null;
  if (written !== undefined && !isCount(written)) return null;
  const at = written ?? 0;
  if (made === undefined) return { key, amount, before, at };
  if (made === null || typeof made !== "object") return null;
  const { id: refundId, status, at: madeAt } = made as Record<string, unknown>;
  if (
    !isStripeId("re", refundId) ||
    typeof status !== "string" ||
    !/^[a-z0-9_]{1,64}$/.test(status)
  ) {
    return null;
  }
  if (!isCount(madeAt)) return null;
  return { key, amount, before, at, made: { id: refundId, status, at: madeAt } };
}

/** The object a stored list is, unchecked; null when it is no JSON object. */
export function storedListOf(stored: string): Record<string, unknown> | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stored);
  } catch {
    return null;
  }
  return parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : null;
}

/**
 * The refunds `stored` keeps for payment `id`, or null when it is none Palisade stored (its seal
 * does not match, or it is not the shape written).
 */
export function undecidedOf(
  stored: string,
  id: string,
  seal: (paymentId: string, entries: string) => string,
): UndecidedRefund[] | null {
  const parsed = storedListOf(stored);
  if (parsed === null) return null;
  const { entries, seal: stamp } = parsed;
  if (!Array.isArray(entries) || typeof stamp !== "string") return null;
  if (!sealMatches(seal(id, JSON.stringify(entries)), stamp)) return null;
  const read = entries.map((entry) => entryOf(entry, id));
  return read.every((entry) => entry !== null) ? (read as UndecidedRefund[]) : null;
}
