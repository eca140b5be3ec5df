/** The status rule, over every pair of statuses and every order of events. */
import { expect, test } from "bun:test";
import {
  mayMove,
  PAYMENT_STATUSES,
  type PaymentStatus,
} from "../../../src/modules/payments/status";

const FINAL: PaymentStatus[] = ["succeeded", "canceled", "refunded"];

test("nothing leaves a final status, except succeeded for refunded", () => {
  for (const current of FINAL) {
    for (const next of PAYMENT_STATUSES) {
      for (const eventAt of [50, 100, 150]) {
        const expected = current === "succeeded" && next === "refunded";
        expect({ current, next, eventAt, moves: mayMove(current, 100, next, eventAt) }).toEqual({
          current,
          next,
          eventAt,
          moves: expected,
        });
      }
    }
  }
});

test("from a non-final status: a final one always applies; others only from a newer event, or the same second forward", () => {
  const open = PAYMENT_STATUSES.filter((s) => !FINAL.includes(s));
  for (const current of open) {
    for (const next of PAYMENT_STATUSES) {
      if (next === current) {
        expect(mayMove(current, 100, next, 200)).toBe(false);
        continue;
      }
      const final = FINAL.includes(next);
      expect(mayMove(current, 100, next, 200)).toBe(true);
      expect(mayMove(current, 100, next, 50)).toBe(final);
    }
  }
  // The same second: forward in rank only.
  expect(mayMove("processing", 100, "failed", 100)).toBe(false);
  expect(mayMove("failed", 100, "processing", 100)).toBe(true);
  expect(mayMove("requires_payment_method", 100, "failed", 100)).toBe(true);
  expect(mayMove("requires_action", 100, "requires_payment_method", 100)).toBe(false);
});
