/**
 * A refund whose outcome Palisade never heard (a timeout, a server error, refunds that could not
 * be read) is kept on the payment until the next refund of it asks Stripe whether it was made: the
 * retry its 503 asks for made a second refund once `charge.refunded`, or another refund, had moved
 * the refunded total its Stripe key is derived from (probe 60a F-DUP).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { applyMigrations } from "../../../src/db/migrate";
import type { PaymentsFeature } from "../../../src/modules/payments/feature";
import { createPaymentSeal } from "../../../src/modules/payments/seal";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import { secondProcess, send } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { migrationTagsFrom, putBackBefore } from "../../support/migrations";
import {
  auditRows,
  buildPaymentsApp,
  chargeRefunded,
  type PaymentsApp,
  paidPayment,
  refundMadeAtStripeUnder,
  STRIPE_TEST_KEY,
  stripeRefundsOf,
} from "../../support/payments";

const REFUNDS = "/v1/refunds";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const refund = (id: string, admin: { accessToken: string }, amount: number) =>
  send(current!, `/api/admin/payments/${id}/refund`, {
    body: { amount },
    headers: bearer(admin.accessToken),
  });

const storedUndecided = (target: PaymentsApp, id: string) =>
  target.db.$client
    .query<{ undecided: string | null; refunded: number }, [string]>(
      "SELECT refund_undecided AS undecided, amount_refunded AS refunded FROM payments WHERE id = ?",
    )
    .get(id);

/** Migration 0028 run again on the app's file, put back before it: what its sealing did. */
function undecidedSealingRun(target: PaymentsApp) {
  putBackBefore(target.db.$client, 28);
  const sealing = upgradeSealing(target.config.audit.secretKey);
  applyMigrations(target.db, sealing.companions);
  return sealing.sealed().find((said) => said.event.type === "payment.undecided_sealed");
}

describe("a refund Stripe made whose answer Palisade never heard", () => {
  for (const [why, script] of [
    [
      "a server error Stripe answers once",
      () => current!.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true }),
    ],
    [
      "an answer lost on the way (Stripe down after it made it)",
      () => current!.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false, executed: true }),
    ],
  ] as const) {
    test(`${why}, then charge.refunded: the retry its 503 asks for is that refund, never a second one`, async () => {
      current = buildPaymentsApp();
      const { admin, id } = await paidPayment(current, 5000);
      script();
      const first = await refund(id, admin, 1000);
      expect(first.status).toBe(503);
      expect(JSON.parse(storedUndecided(current, id)!.undecided!).entries).toMatchObject([
        { amount: 1000, before: 0 },
      ]);
      await chargeRefunded(current, id, 1000);
      const retried = await refund(id, admin, 1000);
      expect(retried.status).toBe(200);
      const made = await stripeRefundsOf(current, id);
      expect(made).toHaveLength(1);
      const body = (await retried.json()) as {
        refund: { id: string };
        payment: { amountRefunded: number };
      };
      expect(body.refund.id).toBe(made[0]!.id);
      expect(body.payment.amountRefunded).toBe(1000);
      expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1000 });
      const audited = auditRows(current, "payment.refund").map((row) => JSON.parse(row.detail));
      expect(audited.map((detail) => detail.refundId)).toEqual([made[0]!.id]);
      // Settled: the next refund of the same amount is a new one.
      expect((await refund(id, admin, 1000)).status).toBe(200);
      expect(await stripeRefundsOf(current, id)).toHaveLength(2);
    });
  }

  test("past 30 s into the request (503, no read of the refunds), then charge.refunded: the retry is that refund", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, executed: true });
    const held = current.stripe.holdNext(REFUNDS);
    const slow = refund(id, admin, 1000);
    await held.reached;
    clock.advance(31_000);
    held.release();
    expect((await slow).status).toBe(503);
    await chargeRefunded(current, id, 1000);
    expect((await refund(id, admin, 1000)).status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });

  test("a refund of another amount in between is told of the one made (409), and the retry of the first amount is still that refund", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    const [made] = await stripeRefundsOf(current, id);
    const other = await refund(id, admin, 300);
    expect(other.status).toBe(409);
    const problem = (await other.json()) as { code: string; detail: string };
    expect(problem.code).toBe("CONFLICT");
    expect(problem.detail).toContain(made!.id);
    expect(problem.detail).toContain("1000 refunded");
    expect(storedUndecided(current, id)!.refunded).toBe(1000);
    // Asked again, the other amount is refunded; the first amount's retry is still the first.
    expect((await refund(id, admin, 300)).status).toBe(200);
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    expect(((await retried.json()) as { refund: { id: string } }).refund.id).toBe(made!.id);
    const refunds = await stripeRefundsOf(current, id);
    expect(refunds.map((r) => r.amount).sort()).toEqual([1000, 300]);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1300 });
    // Audited once each.
    expect(auditRows(current, "payment.refund")).toHaveLength(2);
  });

  test("one found made is kept for a retry of its amount for a day, not longer", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    expect((await refund(id, admin, 300)).status).toBe(409);
    clock.advance(24 * 60 * 60 * 1000);
    const later = await signUp(current, { role: "admin" });
    expect((await refund(id, later, 1000)).status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([1000, 1000]);
  });

  test("one Stripe did not make: the retry makes it once; refunds that cannot be read leave it kept (503)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    const kept = storedUndecided(current, id)!.undecided;
    expect(kept).not.toBeNull();
    // The read of the refunds fails: nothing asked, nothing forgotten.
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    const unread = await refund(id, admin, 1000);
    expect(unread.status).toBe(503);
    expect(unread.headers.get("retry-after")).toBe("5");
    expect(storedUndecided(current, id)!.undecided).toBe(kept);
    expect(current.stripe.created(REFUNDS)).toBe(1);
    expect((await refund(id, admin, 1000)).status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1000 });
  });

  test("a refund Stripe refused (4xx) leaves nothing undecided", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 400, code: "charge_disputed" });
    expect((await refund(id, admin, 1000)).status).toBe(502);
    expect(storedUndecided(current, id)!.undecided).toBeNull();
  });

  test("undecided refunds changed in the database file make the payment fail its seal: emptied, unsealed, under another seal, a forged refund id answered as made, a `before` that would raise the refunded total, text that is not JSON, an earlier state written back (probes 60c F3, F4; 61a F3)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 100)).status).toBe(503);
    const sqlite = current.db.$client;
    const rowNow = () =>
      sqlite
        .query<{ undecided: string | null; seal: string }, [string]>(
          "SELECT refund_undecided AS undecided, seal FROM payments WHERE id = ?",
        )
        .get(id)!;
    const earlier = rowNow();
    // Retried, it is made; then another whose answer is lost: a list again, under another seal.
    expect((await refund(id, admin, 100)).status).toBe(200);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 100)).status).toBe(503);
    const genuine = rowNow();
    expect(genuine.undecided).not.toBeNull();
    expect(genuine.undecided).not.toBe(earlier.undecided);
    const list = JSON.parse(genuine.undecided!) as { entries: { key: string }[]; seal: string };
    const key = list.entries[0]!.key;
    const forged = [
      null,
      JSON.stringify({ entries: [{ key, amount: 100, before: 4900, at: 0 }] }),
      JSON.stringify({ entries: [{ key, amount: 100, before: 4900, at: 0 }], seal: list.seal }),
      JSON.stringify({
        entries: [
          {
            key,
            amount: 100,
            before: 0,
            at: 0,
            made: { id: "re_Forged0123456789", status: "succeeded", at: Date.now() },
          },
        ],
        seal: list.seal,
      }),
      "{",
      earlier.undecided,
    ];
    for (const stored of forged) {
      sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [stored, id]);
      const answered = await refund(id, admin, 100);
      expect(answered.status).toBe(404);
    }
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    expect(current.logs.text).toContain("a payments row does not match its seal");
    expect(auditRows(current, "payment.tampered")).toHaveLength(1);
    // Put back as Palisade left it, the payment is refunded again.
    sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [genuine.undecided, id]);
    expect((await refund(id, admin, 100)).status).toBe(200);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 200 });
  });

  test("a list the release before wrote (sealed alone, its payment without it) is put under the payment's seal by the upgrade and still asked about; written back into the file once settled, the payment fails its seal (probe 61c F2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    const secret = current.config.audit.secretKey;
    const sealer = createPaymentSeal(secret);
    const key = `palisade_refund_${id}_0_1000`;
    const entries = JSON.stringify([{ key, amount: 1000, before: 0 }]);
    const sqlite = current.db.$client;
    const oldList = JSON.stringify({
      entries: JSON.parse(entries),
      seal: sealer.undecidedRefunds(id, entries),
    });
    sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [oldList, id]);
    putBackBefore(sqlite, 28);
    const sealing = upgradeSealing(secret);
    expect(applyMigrations(current.db, sealing.companions).appliedNow).toEqual(
      migrationTagsFrom(28),
    );
    expect(
      sealing.sealed().find((said) => said.event.type === "payment.undecided_sealed"),
    ).toMatchObject({
      event: { type: "payment.undecided_sealed", detail: { payments: 1 } },
      message: expect.stringContaining("sealed the undecided refunds of the 1 payments"),
    });
    await refundMadeAtStripeUnder(current, id, key);
    await chargeRefunded(current, id, 1000);
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1000 });
    // The old list, written back into the file once settled: before, it was the answer to a new
    // refund of 1000 (found made again under its key), and nothing was refunded.
    sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [oldList, id]);
    expect((await refund(id, admin, 1000)).status).toBe(404);
    expect(current.logs.text).toContain("a payments row does not match its seal");
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });

  test("the upgrade seals only a list both seals say Palisade wrote: one forged in that shape stays unsealed, and its payment fails its seal (probe 61c F2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    const sqlite = current.db.$client;
    const key = `palisade_refund_${id}_0_1000`;
    sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [
      JSON.stringify({ entries: [{ key, amount: 1000, before: 0 }], seal: "x" }),
      id,
    ]);
    expect(undecidedSealingRun(current)).toMatchObject({
      event: { type: "payment.undecided_sealed", detail: { payments: 0 } },
      message: null,
    });
    expect((await refund(id, admin, 300)).status).toBe(404);
    expect(await stripeRefundsOf(current, id)).toEqual([]);
  });

  test("a refund is among the payment's undecided ones before Stripe is asked: a stop or a crash while Stripe works leaves it to be asked about, and the retry in another process after the claim's lease is that refund (probe 60c F2)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    const held = current.stripe.holdNext(REFUNDS);
    const first = refund(id, admin, 1000);
    await held.reached;
    expect(JSON.parse(storedUndecided(current, id)!.undecided!).entries).toMatchObject([
      { key: `palisade_refund_${id}_0_1000`, amount: 1000, before: 0 },
    ]);
    // The process is gone (its answer never written); Stripe made the refund; charge.refunded.
    await refundMadeAtStripeUnder(current, id, `palisade_refund_${id}_0_1000`);
    await chargeRefunded(current, id, 1000);
    clock.advance(3 * 60_000);
    const other = secondProcess(current, clock);
    try {
      const later = await signUp(current, { role: "admin" });
      const retried = await send(other, `/api/admin/payments/${id}/refund`, {
        body: { amount: 1000 },
        headers: bearer(later.accessToken),
      });
      expect(retried.status).toBe(200);
    } finally {
      other.close();
    }
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    held.release();
    await first;
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });

  test("a refund found made stays the answer to a retry of its amount while later refunds of other amounts are left undecided too (probe 60c F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    expect((await refund(id, admin, 300)).status).toBe(409);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 300)).status).toBe(503);
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    expect((await refund(id, admin, 300)).status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([1000, 300]);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1300 });
  });

  test("a retry of a refund charge.refunded counted is that refund, not 422 too much (probe 60c F5)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 3000)).status).toBe(503);
    await chargeRefunded(current, id, 3000);
    expect((await refund(id, admin, 3000)).status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    expect(auditRows(current, "payment.refund")).toHaveLength(1);
  });

  test("two processes on one file: the retry in the other process settles it the same way", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    await chargeRefunded(current, id, 1000);
    const other = secondProcess(current);
    try {
      const retried = await send(other, `/api/admin/payments/${id}/refund`, {
        body: { amount: 1000 },
        headers: bearer(admin.accessToken),
      });
      expect(retried.status).toBe(200);
    } finally {
      other.close();
    }
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });
});

/** The Idempotency-Key of the first refund Palisade asked Stripe for. */
const firstRefundKeyAsked = (target: PaymentsApp) =>
  target.stripe.calls.find((call) => call.method === "POST" && call.path === REFUNDS)!
    .idempotencyKey!;

const refundTheRest = (id: string, admin: { accessToken: string }) =>
  send(current!, `/api/admin/payments/${id}/refund`, {
    method: "POST",
    headers: bearer(admin.accessToken),
  });

describe("a refund Stripe may still be making (probe 61a)", () => {
  test("answered 409 idempotency_key_in_use (Stripe still at the SDK's first attempt) it stays undecided: made after, then charge.refunded, the retry is that refund (F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, {
      status: 409,
      type: "idempotency_error",
      code: "idempotency_key_in_use",
      shouldRetry: false,
      kept: false,
    });
    const first = await refund(id, admin, 1000);
    expect(first.status).toBe(503);
    expect(storedUndecided(current, id)!.undecided).not.toBeNull();
    // Stripe ends the request it was working on, and tells of it.
    await refundMadeAtStripeUnder(current, id, firstRefundKeyAsked(current));
    await chargeRefunded(current, id, 1000);
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    const made = await stripeRefundsOf(current, id);
    expect(made).toHaveLength(1);
    expect(((await retried.json()) as { refund: { id: string } }).refund.id).toBe(made[0]!.id);
    const audited = auditRows(current, "payment.refund").map((row) => JSON.parse(row.detail));
    expect(audited.map((detail) => detail.refundId)).toEqual([made[0]!.id]);
  });

  test("one Stripe does not list yet holds a refund of another amount (503, Retry-After) until Stripe lists it: then it is told of, recorded, and the retry of its amount is it (F1)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    clock.advance(60_000);
    const held = await refund(id, admin, 300);
    expect(held.status).toBe(503);
    expect(held.headers.get("retry-after")).toBe("540");
    expect(((await held.json()) as { detail: string }).detail).toContain(
      "may still be in the making",
    );
    expect(await stripeRefundsOf(current, id)).toEqual([]);
    expect(storedUndecided(current, id)!.refunded).toBe(0);
    // Stripe ends the first late.
    await refundMadeAtStripeUnder(current, id, firstRefundKeyAsked(current));
    expect((await refund(id, admin, 300)).status).toBe(409);
    expect((await refund(id, admin, 300)).status).toBe(200);
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([1000, 300]);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 1300 });
  });

  test("ten minutes after it was asked, one Stripe still does not list was not made: the refund asked for goes on", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    clock.advance(10 * 60_000 - 1_000);
    expect((await refund(id, admin, 300)).status).toBe(503);
    clock.advance(1_000);
    expect((await refund(id, admin, 300)).status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([300]);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 300 });
  });

  test("the refund of the whole rest whose answer was lost, then charge.refunded: its retry without an amount is that refund, audited (F2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    expect((await refund(id, admin, 1000)).status).toBe(200);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refundTheRest(id, admin)).status).toBe(503);
    await chargeRefunded(current, id, 5000);
    const retried = await refundTheRest(id, admin);
    expect(retried.status).toBe(200);
    const body = (await retried.json()) as { refund: { amount: number } };
    expect(body.refund.amount).toBe(4000);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([1000, 4000]);
    const audited = auditRows(current, "payment.refund").map((row) => JSON.parse(row.detail));
    expect(audited.map((detail) => detail.amount).sort()).toEqual([1000, 4000]);
    // Answered: nothing is left to refund.
    expect((await refundTheRest(id, admin)).status).toBe(409);
  });

  test("a refund of the rest without an amount is not answered with an earlier refund found made that happens to equal the rest now (probe 61c F3)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    expect((await refund(id, admin, 3000)).status).toBe(409);
    expect((await refund(id, admin, 3000)).status).toBe(200);
    expect((await refundTheRest(id, admin)).status).toBe(200);
    const amounts = (await stripeRefundsOf(current, id)).map((r) => r.amount).sort();
    expect(amounts).toEqual([1000, 1000, 3000]);
    expect(storedUndecided(current, id)!.refunded).toBe(5000);
  });

  for (const retry of ["with its amount", "without an amount"] as const) {
    test(`the refund of the whole payment whose answer was lost: its retry ${retry} is that refund, with charge.refunded counted first or not (F2)`, async () => {
      for (const counted of [true, false]) {
        current?.close();
        current = buildPaymentsApp();
        const { admin, id } = await paidPayment(current, 5000);
        current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
        expect((await refund(id, admin, 5000)).status).toBe(503);
        if (counted) await chargeRefunded(current, id, 5000);
        const retried =
          retry === "with its amount"
            ? await refund(id, admin, 5000)
            : await refundTheRest(id, admin);
        expect(retried.status).toBe(200);
        expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([5000]);
        expect(auditRows(current, "payment.refund")).toHaveLength(1);
        expect(storedUndecided(current, id)!.refunded).toBe(5000);
      }
    });
  }
});

test("a refund Stripe lists under an undecided refund's key that is not that refund (another amount) keeps it, and no other refund starts (probe 61a F5)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 5000);
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
  expect((await refund(id, admin, 2000)).status).toBe(503);
  const kept = storedUndecided(current, id)!.undecided;
  // Under the first refund's key, a refund of 1000.
  await refundMadeAtStripeUnder(current, id, firstRefundKeyAsked(current));
  const other = await refund(id, admin, 300);
  // Not "retry shortly": a retry is this answer again until an operator looks (probe 92b F2).
  expect(other.status).toBe(502);
  expect(other.headers.get("retry-after")).toBeNull();
  expect(((await other.json()) as { detail: string }).detail).toContain(
    "until an operator resolves it (bun run cli payments:undecided)",
  );
  expect(storedUndecided(current, id)).toEqual({ undecided: kept, refunded: 0 });
  expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([1000]);
  expect(current.logs.text).toContain("it is kept, and no other refund of the payment starts");
});

test("a kept server error whose key lists another refund (another amount) is that 502 at once, logged at error, not 'whether the refund was made is unknown' (probe 92d F3)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 5000);
  // A refund of 1000 carrying the key this refund of 300 will be asked with (an upstream that
  // lists what it likes); then Stripe keeps a 500 for the request.
  const made = await fetch(`${current.stripe.url}${REFUNDS}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${STRIPE_TEST_KEY}`,
      "content-type": "application/x-www-form-urlencoded",
      "idempotency-key": "made-elsewhere",
    },
    body: new URLSearchParams({
      payment_intent: id,
      amount: "1000",
      "metadata[palisade_key]": `palisade_refund_${id}_0_300`,
    }).toString(),
  });
  expect(made.status).toBe(200);
  // The SDK's own retry is answered the kept error again (Idempotent-Replayed).
  current.stripe.failNext(REFUNDS, { status: 500, kept: true });
  const first = await refund(id, admin, 300);
  expect(first.status).toBe(502);
  expect(first.headers.get("retry-after")).toBeNull();
  expect(((await first.json()) as { detail: string }).detail).toContain(
    "until an operator resolves it (bun run cli payments:undecided)",
  );
  expect(
    current.logs.entries.find(
      (entry) =>
        entry.level === "error" &&
        String(entry.msg).startsWith("the refund Stripe lists under this refund's key"),
    ),
  ).toMatchObject({ paymentId: id });
  expect(storedUndecided(current, id)?.refunded).toBe(0);
});

test("payments:undecided shows a payment's undecided refunds, and --clear takes them off, the payment still sealed, audited", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 5000);
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
  expect((await refund(id, admin, 1000)).status).toBe(503);
  const env = {
    DATABASE_PATH: current.databasePath,
    AUDIT_SECRET_KEY: current.config.audit.secretKey,
  };
  const shown = await cliInProcess(["payments:undecided", id], env);
  expect(shown.code).toBe(0);
  expect(shown.stdout).toContain(`${id}  1000 from a refunded total of 0, asked `);
  expect(shown.stdout).toContain(": not known");
  expect((await cliInProcess(["payments:undecided", "pi_NotThere0123456789"], env)).code).toBe(1);
  expect((await cliInProcess(["payments:undecided", "x"], env)).code).toBe(2);
  const cleared = await cliInProcess(["payments:undecided", id, "--clear"], env);
  expect(cleared.code).toBe(0);
  expect(cleared.stdout).toContain(`${id}: 1 undecided refund(s) cleared`);
  expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 0 });
  const audited = auditRows(current, "payment.refund.undecided_cleared").map((row) =>
    JSON.parse(row.detail),
  );
  expect(audited).toEqual([{ paymentId: id, cleared: 1, amounts: "1000" }]);
  // Still the payment Palisade sealed: a refund of another amount goes on at once.
  expect((await refund(id, admin, 300)).status).toBe(200);
});

describe("a refund's claim of the payment while Stripe's refunds are read (probe 61c F1)", () => {
  test("lapsed while they were read, and taken by another refund: it writes nothing and starts nothing, and the other goes on alone", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    // Past the time Stripe may still be making it: the next read finds it not made.
    clock.advance(11 * 60_000);
    const slowRead = current.stripe.holdNext(REFUNDS);
    const first = refund(id, admin, 300);
    await slowRead.reached;
    clock.advance(3 * 60_000);
    const otherRead = current.stripe.holdNext(REFUNDS);
    const second = refund(id, admin, 200);
    await otherRead.reached;
    const otherMade = current.stripe.holdNext(REFUNDS);
    otherRead.release();
    await otherMade.reached;
    // The second refund is with Stripe; the first's read ends now.
    slowRead.release();
    expect((await first).status).toBe(409);
    const stored = JSON.parse(storedUndecided(current, id)!.undecided!) as {
      entries: { amount: number }[];
    };
    expect(stored.entries.map((entry) => entry.amount)).toEqual([200]);
    otherMade.release();
    expect((await second).status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([200]);
    expect(storedUndecided(current, id)).toEqual({ undecided: null, refunded: 200 });
    expect(current.logs.text).toContain("the refund's claim of the payment lapsed");
    // Asked again, the first goes on.
    expect((await refund(id, admin, 300)).status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([200, 300]);
  });

  test("no read of them starts past 30 s into the claim (503), and a refund that starts after them has a claim of its own lease", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    const feature = current.services.features.find((f) => f.name === "payments") as PaymentsFeature;
    const row = feature.ledger.find(id)!;
    const entry = (amount: number) => ({
      key: `palisade_refund_${id}_0_${amount}`,
      amount,
      before: 0,
      at: clock.now(),
    });
    expect(feature.ledger.writeUndecided(row, [entry(1000), entry(700)])).toBe(true);
    const reads = () =>
      current!.stripe.calls.filter((call) => call.method === "GET" && call.path === REFUNDS).length;
    const slowRead = current.stripe.holdNext(REFUNDS);
    const asked = refund(id, admin, 1000);
    await slowRead.reached;
    clock.advance(31_000);
    slowRead.release();
    const answer = await asked;
    expect(answer.status).toBe(503);
    expect(answer.headers.get("retry-after")).not.toBeNull();
    expect(reads()).toBe(1);
    expect(feature.ledger.find(id)!.refundStartedAt).toBeNull();
    // Both read at once this time; past ten minutes neither was made, and the refund asked for
    // starts under a claim taken when it starts, not when the reads began.
    clock.advance(10 * 60_000);
    const readAgain = current.stripe.holdNext(REFUNDS);
    const again = refund(id, admin, 300);
    await readAgain.reached;
    clock.advance(20_000);
    const started = clock.now();
    const secondRead = current.stripe.holdNext(REFUNDS);
    readAgain.release();
    await secondRead.reached;
    const made = current.stripe.holdNext(REFUNDS);
    secondRead.release();
    await made.reached;
    expect(feature.ledger.find(id)!.refundStartedAt).toBe(started);
    made.release();
    expect((await again).status).toBe(200);
    expect(reads()).toBe(3);
  });
});

test("an undecided refund written ahead of the clock (the clock set back since) holds others no longer than ten minutes from when it is first found (probe 61c F4)", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock });
  const { admin, id } = await paidPayment(current, 5000);
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
  expect((await refund(id, admin, 1000)).status).toBe(503);
  clock.advance(-60 * 60_000);
  const held = await refund(id, admin, 300);
  expect(held.status).toBe(503);
  expect(held.headers.get("retry-after")).toBe("600");
  clock.advance(5 * 60_000);
  expect((await refund(id, admin, 300)).headers.get("retry-after")).toBe("300");
  clock.advance(5 * 60_000);
  expect((await refund(id, admin, 300)).status).toBe(200);
  expect((await stripeRefundsOf(current, id)).map((r) => r.amount)).toEqual([300]);
});

describe("probe 62a", () => {
  test("a lapsed refund whose list was changed meanwhile by a retry answered without the claim writes nothing: the refund found made does not come back to answer a new refund (F2)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    const [made] = await stripeRefundsOf(current, id);
    expect((await refund(id, admin, 300)).status).toBe(409);
    current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false });
    expect((await refund(id, admin, 300)).status).toBe(503);
    // The retry of 300 reads Stripe's refunds for as long as its claim lasts.
    const slowRead = current.stripe.holdNext(REFUNDS);
    const first = refund(id, admin, 300);
    await slowRead.reached;
    clock.advance(3 * 60_000);
    // Meanwhile the retry of 1000 is answered with the refund found made, and takes it off.
    const retried = await refund(id, admin, 1000);
    expect(retried.status).toBe(200);
    expect(((await retried.json()) as { refund: { id: string } }).refund.id).toBe(made!.id);
    slowRead.release();
    expect((await first).status).toBe(409);
    expect((await refund(id, admin, 300)).status).toBe(200);
    // A new refund of 1000 is a new one.
    const fresh = await refund(id, admin, 1000);
    expect(fresh.status).toBe(200);
    expect(((await fresh.json()) as { refund: { id: string } }).refund.id).not.toBe(made!.id);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([
      1000, 1000, 300,
    ]);
  });

  test("a refund found made at a time ahead of the clock (set back since) answers a retry of its amount a day from when the clock was seen behind it, not from that time (F3)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { id } = await paidPayment(current, 5000);
    const day = 24 * 60 * 60 * 1000;
    clock.advance(2 * day);
    const ahead = await signUp(current, { role: "admin" });
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, ahead, 1000)).status).toBe(503);
    expect((await refund(id, ahead, 300)).status).toBe(409);
    clock.advance(-2 * day);
    const admin = await signUp(current, { role: "admin" });
    expect((await refund(id, admin, 300)).status).toBe(200);
    clock.advance(day);
    const later = await signUp(current, { role: "admin" });
    const fresh = await refund(id, later, 1000);
    expect(fresh.status).toBe(200);
    expect((await stripeRefundsOf(current, id)).map((r) => r.amount).sort()).toEqual([
      1000, 1000, 300,
    ]);
  });

  test("a second run of the upgrade (0028 forgotten in the file) does not reseal a list this release wrote: a settled one written back fails the payment's seal (F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.failNext(REFUNDS, { status: 500, shouldRetry: false, executed: true });
    expect((await refund(id, admin, 1000)).status).toBe(503);
    expect((await refund(id, admin, 300)).status).toBe(409);
    const saved = storedUndecided(current, id)!.undecided!;
    expect((await refund(id, admin, 1000)).status).toBe(200);
    const sqlite = current.db.$client;
    sqlite.run("UPDATE payments SET refund_undecided = ? WHERE id = ?", [saved, id]);
    expect(undecidedSealingRun(current)).toMatchObject({
      event: { type: "payment.undecided_sealed", detail: { payments: 0 } },
    });
    expect((await refund(id, admin, 1000)).status).toBe(404);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });
});
