/**
 * The payment's kept refunds are capped; those found made (the answers to retries, and, with an
 * Idempotency-Key, a day of them) go before any whose outcome Stripe has not told, which is what
 * keeps a refund Stripe may have made from being made again.
 */
import { expect, test } from "bun:test";
import {
  MAX_UNDECIDED_REFUNDS,
  storedUndecided,
  type UndecidedRefund,
  undecidedOf,
} from "../../../src/modules/payments/undecided-refund";

const ID = "pi_3CapTest000000000000000";
const seal = (paymentId: string, entries: string) => `${paymentId}:${entries.length}`;
const entry = (n: number, made: boolean): UndecidedRefund => ({
  key: `palisade_refund_${ID}_key_${n.toString(16).padStart(64, "0")}`,
  amount: 100,
  before: n * 100,
  at: n,
  ...(made
    ? {
        made: {
          id: `re_${"0".repeat(20)}${n.toString().padStart(4, "0")}`,
          status: "succeeded",
          at: n,
        },
      }
    : {}),
});

test("over the cap, the oldest found made go first; one not yet decided stays however old", () => {
  const undecided = entry(0, false);
  const made = Array.from({ length: MAX_UNDECIDED_REFUNDS }, (_, i) => entry(i + 1, true));
  const stored = storedUndecided(ID, [undecided, ...made], seal)!;
  const kept = undecidedOf(stored, ID, seal)!;
  expect(kept).toHaveLength(MAX_UNDECIDED_REFUNDS);
  expect(kept[0]).toEqual(undecided);
  expect(kept.slice(1)).toEqual(made.slice(1));
});

test("over the cap with none made, the oldest go", () => {
  const all = Array.from({ length: MAX_UNDECIDED_REFUNDS + 2 }, (_, i) => entry(i, false));
  const kept = undecidedOf(storedUndecided(ID, all, seal)!, ID, seal)!;
  expect(kept).toEqual(all.slice(2));
});
