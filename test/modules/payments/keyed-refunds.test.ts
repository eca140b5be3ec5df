/**
 * A refund asked with an Idempotency-Key is the one refund of that key: a request sent again after
 * Palisade answered it (a proxy that timed out, a second click) returns it, whatever the refunded
 * total has become since. Without a key, the same request after the answer was a second refund,
 * and the in-progress 409's `Retry-After: 1` invited it (probe 78a F1); a pending refund's retry
 * was a second refund once `charge.refunded` had counted it (78a F1b).
 */
import { afterEach, expect, test } from "bun:test";
import type { PaymentsFeature } from "../../../src/modules/payments/feature";
import { send } from "../../support/app";
import { bearer } from "../../support/auth";
import {
  auditRows,
  buildPaymentsApp,
  chargeRefunded,
  type PaymentsApp,
  paidPayment,
  stripeRefundsOf,
} from "../../support/payments";

const REFUNDS = "/v1/refunds";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function refund(
  target: PaymentsApp,
  id: string,
  admin: { accessToken: string },
  body: unknown,
  key?: string,
) {
  return send(target, `/api/admin/payments/${id}/refund`, {
    body,
    headers: {
      ...bearer(admin.accessToken),
      ...(key === undefined ? {} : { "idempotency-key": key }),
    },
  });
}

const refunded = (target: PaymentsApp, id: string) =>
  target.db.$client
    .query<{ refunded: number }, [string]>(
      "SELECT amount_refunded AS refunded FROM payments WHERE id = ?",
    )
    .get(id)?.refunded;

type RefundAnswer = { refund: { id: string; amount: number; status: string } };

test("the same request with its Idempotency-Key after the answer is that refund, not a second: one at Stripe, one in the ledger, audited once", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  const first = await refund(current, id, admin, { amount: 1000 }, "refund-order-17");
  expect(first.status).toBe(200);
  expect(first.headers.get("idempotent-replayed")).toBeNull();
  const made = ((await first.json()) as RefundAnswer).refund;

  for (const body of [{ amount: 1000 }, { amount: 1000 }]) {
    const again = await refund(current, id, admin, body, "refund-order-17");
    expect(again.status).toBe(200);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(((await again.json()) as RefundAnswer).refund).toEqual(made);
  }
  expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  expect(refunded(current, id)).toBe(1000);
  expect(auditRows(current, "payment.refund")).toHaveLength(1);

  // Another key is another refund; the same amount without a key too (never the keyed one's).
  expect((await refund(current, id, admin, { amount: 1000 }, "refund-order-18")).status).toBe(200);
  const keyless = await refund(current, id, admin, { amount: 1000 });
  expect(keyless.status).toBe(200);
  expect(((await keyless.json()) as RefundAnswer).refund.id).not.toBe(made.id);
  expect(await stripeRefundsOf(current, id)).toHaveLength(3);
  expect(refunded(current, id)).toBe(3000);
});

test("a refund of the rest asked with a key is that refund again without an amount, and with its amount", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  const first = await refund(current, id, admin, {}, "whole");
  expect(first.status).toBe(200);
  const made = ((await first.json()) as RefundAnswer).refund;
  expect(made.amount).toBe(3000);
  for (const body of [{}, { amount: 3000 }]) {
    const again = await refund(current, id, admin, body, "whole");
    expect(again.status).toBe(200);
    expect(((await again.json()) as RefundAnswer).refund.id).toBe(made.id);
  }
  expect(await stripeRefundsOf(current, id)).toHaveLength(1);
});

test("the key with another amount is 409 and asks Stripe nothing", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  expect((await refund(current, id, admin, { amount: 1000 }, "k1")).status).toBe(200);
  const other = await refund(current, id, admin, { amount: 500 }, "k1");
  expect(other.status).toBe(409);
  const problem = (await other.json()) as { code: string; detail: string };
  expect(problem.code).toBe("CONFLICT");
  expect(problem.detail).toContain("another amount");
  expect(current.stripe.created(REFUNDS)).toBe(1);
  expect(refunded(current, id)).toBe(1000);
});

test("the key of a refund Stripe failed, sent with another amount, is 409: Stripe holds the key to its first amount and nothing is made (probe 78c F3)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  current.stripe.refundStatusNext("failed");
  const failed = await refund(current, id, admin, { amount: 1000 }, "k1");
  expect(failed.status).toBe(502);
  const other = await refund(current, id, admin, { amount: 500 }, "k1");
  expect(other.status).toBe(409);
  const problem = (await other.json()) as { code: string; detail: string };
  expect(problem.code).toBe("CONFLICT");
  expect(problem.detail).toContain("another amount");
  // One refund at Stripe, the failed one; none recorded.
  expect((await stripeRefundsOf(current, id)).map((listed) => listed.amount)).toEqual([1000]);
  expect(refunded(current, id)).toBe(0);
  // Another key refunds.
  expect((await refund(current, id, admin, { amount: 500 }, "k2")).status).toBe(200);
  expect(refunded(current, id)).toBe(500);
});

test("five at once with one key: one refund at Stripe; those refused meanwhile are told to retry with the key, and the retry is that refund", async () => {
  current = buildPaymentsApp();
  const target = current;
  const { admin, id } = await paidPayment(target, 3000);
  target.stripe.delayMs = 200;
  const responses = await Promise.all(
    Array.from({ length: 5 }, () => refund(target, id, admin, { amount: 1000 }, "burst")),
  );
  target.stripe.delayMs = 0;
  expect(responses.map((r) => r.status).sort()).toEqual([200, 409, 409, 409, 409]);
  const made = ((await responses.find((r) => r.status === 200)!.json()) as RefundAnswer).refund;
  for (const response of responses.filter((r) => r.status === 409)) {
    expect(response.headers.get("retry-after")).toBe("1");
    const retried = await refund(target, id, admin, { amount: 1000 }, "burst");
    expect(retried.status).toBe(200);
    expect(((await retried.json()) as RefundAnswer).refund.id).toBe(made.id);
  }
  expect(target.stripe.created(REFUNDS)).toBe(1);
  expect(refunded(target, id)).toBe(1000);
});

test("a pending refund asked with a key stays its answer after charge.refunded counted it (probe 78a F1b)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  current.stripe.refundStatusNext("pending");
  const first = await refund(current, id, admin, { amount: 1000 }, "slow-bank");
  expect(first.status).toBe(200);
  const made = ((await first.json()) as RefundAnswer).refund;
  expect(made.status).toBe("pending");
  await chargeRefunded(current, id, 1000);
  expect(refunded(current, id)).toBe(1000);
  const again = await refund(current, id, admin, { amount: 1000 }, "slow-bank");
  expect(again.status).toBe(200);
  expect(((await again.json()) as RefundAnswer).refund.id).toBe(made.id);
  expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  expect(refunded(current, id)).toBe(1000);
});

test("a keyed refund Stripe made whose answer was lost, then charge.refunded: the retry with the key is that refund", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 5000);
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false, executed: true });
  const first = await refund(current, id, admin, { amount: 1000 }, "lost");
  expect(first.status).toBe(503);
  await chargeRefunded(current, id, 1000);
  const retried = await refund(current, id, admin, { amount: 1000 }, "lost");
  expect(retried.status).toBe(200);
  const made = await stripeRefundsOf(current, id);
  expect(made).toHaveLength(1);
  expect(((await retried.json()) as RefundAnswer).refund.id).toBe(made[0]!.id);
  expect(refunded(current, id)).toBe(1000);
  // And again: still that refund.
  const third = await refund(current, id, admin, { amount: 1000 }, "lost");
  expect(((await third.json()) as RefundAnswer).refund.id).toBe(made[0]!.id);
  expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  expect(auditRows(current, "payment.refund")).toHaveLength(1);
});

test("an Idempotency-Key that is not 1–255 printable ASCII characters is 422, and nothing is refunded", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  for (const key of ["x".repeat(256), "tab\there", " "]) {
    const response = await refund(current, id, admin, { amount: 1000 }, key);
    expect([key.length, response.status]).toEqual([key.length, 422]);
  }
  expect(current.stripe.created(REFUNDS)).toBe(0);
});

test("a keyed retry once its entry has gone (ten keyed refunds later) is Stripe's replay of that refund, not counted again (probe 78c F1)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 20000);
  const first = await refund(current, id, admin, { amount: 1000 }, "k0");
  const made = ((await first.json()) as RefundAnswer).refund;
  for (let i = 1; i <= 10; i++) {
    expect((await refund(current, id, admin, { amount: 1000 }, `k${i}`)).status).toBe(200);
  }
  expect(refunded(current, id)).toBe(11000);
  const again = await refund(current, id, admin, { amount: 1000 }, "k0");
  expect(again.status).toBe(200);
  expect(((await again.json()) as RefundAnswer).refund.id).toBe(made.id);
  expect(await stripeRefundsOf(current, id)).toHaveLength(11);
  expect(refunded(current, id)).toBe(11000);
  expect(auditRows(current, "payment.refund")).toHaveLength(11);
});

test("a keyed retry after an operator cleared the payment's kept refunds is not counted twice (probe 78c F1)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  expect((await refund(current, id, admin, { amount: 1000 }, "cleared")).status).toBe(200);
  const payments = current.services.features.find(
    (feature) => feature.name === "payments",
  ) as PaymentsFeature;
  const cleared = payments.service.clearUndecided(id);
  expect(cleared.kind).toBe("cleared");
  const again = await refund(current, id, admin, { amount: 1000 }, "cleared");
  expect(again.status).toBe(200);
  expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  expect(refunded(current, id)).toBe(1000);
});

test("ten keyed refunds do not push out the refund found made that a keyless 503's retry is answered with (probe 78c F2)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 20000);
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false, executed: true });
  expect((await refund(current, id, admin, { amount: 1000 })).status).toBe(503);
  // The next refund finds it made (409, told of it) and keeps it as the retry's answer.
  expect((await refund(current, id, admin, { amount: 500 }, "k-first")).status).toBe(409);
  for (let i = 1; i <= 10; i++) {
    expect((await refund(current, id, admin, { amount: 500 }, `k${i}`)).status).toBe(200);
  }
  const retry = await refund(current, id, admin, { amount: 1000 });
  expect(retry.status).toBe(200);
  const ofThousand = (await stripeRefundsOf(current, id)).filter((r) => r.amount === 1000);
  expect(ofThousand).toHaveLength(1);
  expect(((await retry.json()) as RefundAnswer).refund.id).toBe(ofThousand[0]!.id);
  expect(refunded(current, id)).toBe(6000);
});

test("a refund asked for and not made is audited with why: Stripe's refusal, an answer that never came, and the retry an undecided refund blocks (probe 92d)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 3000);
  const notMade = () =>
    auditRows(current!, "payment.refund.not_made").map((row) => ({
      outcome: row.outcome,
      detail: JSON.parse(row.detail) as Record<string, unknown>,
    }));
  // Refused by Stripe (a 4xx): nothing made.
  current.stripe.failNext(REFUNDS, { status: 400, code: "charge_already_refunded" });
  expect((await refund(current, id, admin, { amount: 1000 })).status).toBe(502);
  // No answer (a 503 Stripe says not to retry): the refund stays undecided...
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
  const unanswered = await refund(current, id, admin, { amount: 1000 });
  expect(unanswered.status).toBeGreaterThanOrEqual(500);
  // ...and a retry asks Stripe about it first, which fails again.
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
  expect((await refund(current, id, admin, { amount: 1000 })).status).toBeGreaterThanOrEqual(500);
  const rows = notMade();
  expect(rows).toHaveLength(2);
  expect(rows.every((row) => row.outcome === "failure" && row.detail.paymentId === id)).toBe(true);
  // The retry made none: it asked Stripe about the earlier one, not for a refund.
  expect(rows.map((row) => row.detail.reason)).toEqual(["refused", "unavailable"]);
  // The one Stripe never answered may be made: undecided, not "not made" (probe 94b F1).
  const undecided = auditRows(current, "payment.refund.undecided");
  expect(undecided.map((row) => JSON.parse(row.detail).reason)).toEqual(["unavailable"]);
  expect(auditRows(current, "payment.refund.requested")).toHaveLength(3);
  // Made, no such row.
  const made = await refund(current, id, admin, { amount: 1000 });
  expect(made.status).toBe(200);
  expect(notMade()).toHaveLength(2);
  expect(auditRows(current, "payment.refund.undecided")).toHaveLength(1);
  expect(JSON.stringify(rows)).not.toContain("charge_already_refunded");
});
