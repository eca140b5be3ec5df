/**
 * Every refund an admin asks for is audited as asked (`payment.refund.requested`) before Stripe is
 * asked, and that request's rows end in one saying what came of it: the refund it made
 * (`payment.refund`), none (`payment.refund.not_made`), or one Stripe may have made without saying
 * (`payment.refund.undecided`), which a later refund of the payment finds and audits, naming when
 * it was asked. Probe 94b: a retry answered with a refund found made had no such row, a refund
 * Stripe had made was audited as not made, and a database lock while the next refund settled it
 * left it audited by no one.
 */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { send } from "../../support/app";
import { bearer } from "../../support/auth";
import { buildPaymentsApp, type PaymentsApp, paidPayment } from "../../support/payments";

const REFUNDS = "/v1/refunds";
const ENDINGS = ["payment.refund", "payment.refund.not_made", "payment.refund.undecided"];

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function refund(target: PaymentsApp, id: string, token: string, amount: number) {
  const response = await send(target, `/api/admin/payments/${id}/refund`, {
    body: { amount },
    headers: bearer(token),
  });
  return { status: response.status, requestId: response.headers.get("x-request-id")! };
}

/** The refund rows of the audit log, in order, as `type` and detail. */
function refundRows(target: PaymentsApp) {
  target.services.audit.flush();
  return target.db.$client
    .query<{ type: string; requestId: string; detail: string }, []>(
      "SELECT type, request_id AS requestId, detail FROM audit_events WHERE type LIKE 'payment.refund%' ORDER BY id",
    )
    .all()
    .map((row) => ({ ...row, detail: JSON.parse(row.detail) as Record<string, unknown> }));
}

/**
 * A refund whose next call to Stripe is held there while another connection (a process, a CLI
 * command, a backup) takes the write lock; answered while the lock is still held. The caller
 * commits (or rolls back) `other` and closes it.
 */
async function refundUnderLock(target: PaymentsApp, id: string, token: string, amount: number) {
  const held = target.stripe.holdNext(REFUNDS);
  const asked = refund(target, id, token, amount);
  await held.reached;
  const other = new Database(target.databasePath);
  other.run("BEGIN IMMEDIATE");
  held.release();
  return { answered: await asked, other };
}

/** Each request's rows after its `requested` row: exactly one says what came of it. */
function endingsOf(target: PaymentsApp, requestIds: readonly string[]) {
  const rows = refundRows(target);
  return requestIds.map((requestId) => {
    const own = rows.filter((row) => row.requestId === requestId);
    expect(own.filter((row) => row.type === "payment.refund.requested")).toHaveLength(1);
    return own.filter((row) => ENDINGS.includes(row.type));
  });
}

test("a refund Stripe made behind a lost answer is undecided, found made by the next refund (naming when it was asked), and a retry answered with it says so (probe 94b F1)", async () => {
  current = buildPaymentsApp();
  const { admin, id } = await paidPayment(current, 100000);
  // Stripe makes the refund and answers 503, which the SDK does not retry.
  current.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false, executed: true });
  const lost = await refund(current, id, admin.accessToken, 300);
  expect(lost.status).toBe(503);
  // Another amount: the first is found made (409, told of it), audited under this request.
  const other = await refund(current, id, admin.accessToken, 200);
  expect(other.status).toBe(409);
  // The first one's retry is answered with it: 200, and no second refund at Stripe.
  const retry = await refund(current, id, admin.accessToken, 300);
  expect(retry.status).toBe(200);
  expect(current.stripe.created(REFUNDS)).toBe(1);

  const [lostRows, otherRows, retryRows] = endingsOf(current, [
    lost.requestId,
    other.requestId,
    retry.requestId,
  ]);
  expect(lostRows!.map((row) => [row.type, row.detail.reason])).toEqual([
    ["payment.refund.undecided", "unavailable"],
  ]);
  const found = otherRows!.find((row) => row.type === "payment.refund")!;
  expect(found.detail).toMatchObject({ paymentId: id, amount: 300 });
  expect(typeof found.detail.askedAt).toBe("string");
  expect(Date.parse(found.detail.askedAt as string)).toBeLessThanOrEqual(Date.now());
  expect(otherRows!.map((row) => [row.type, row.detail.reason])).toEqual([
    ["payment.refund", undefined],
    ["payment.refund.not_made", "earlier_refund_made"],
  ]);
  expect(retryRows!.map((row) => row.type)).toEqual(["payment.refund.not_made"]);
  expect(retryRows![0]!.detail).toMatchObject({
    reason: "earlier_refund_answered",
    refundId: found.detail.refundId,
  });
  // One `payment.refund` row for the one refund made.
  expect(refundRows(current).filter((row) => row.type === "payment.refund")).toHaveLength(1);
});

test("a refund found made while the database stays locked past the wait is audited all the same, and its request's row ends (probe 94b F2)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const { admin, id } = await paidPayment(target, 100000);
  target.stripe.failNext(REFUNDS, { status: 503, shouldRetry: false, executed: true });
  const lost = await refund(target, id, admin.accessToken, 300);
  expect(lost.status).toBe(503);

  // The next refund reads Stripe's refunds (held there) while another process takes the lock.
  const { answered, other } = await refundUnderLock(target, id, admin.accessToken, 300);
  try {
    expect(answered.status).toBe(503);
    other.run("COMMIT");
    // Queued while locked, written once the lock went.
    const [askedRows] = endingsOf(target, [answered.requestId]);
    expect(askedRows!.map((row) => [row.type, row.detail.reason])).toEqual([
      ["payment.refund", undefined],
      ["payment.refund.not_made", "database_busy"],
    ]);
    expect(askedRows![0]!.detail).toMatchObject({ paymentId: id, amount: 300 });

    // The retry records it in the ledger and is answered with it; it is not audited again.
    const retry = await refund(target, id, admin.accessToken, 300);
    expect(retry.status).toBe(200);
    expect(target.stripe.created(REFUNDS)).toBe(1);
    const [retryRows] = endingsOf(target, [retry.requestId]);
    expect(retryRows!.map((row) => [row.type, row.detail.reason])).toEqual([
      ["payment.refund.not_made", "earlier_refund_answered"],
    ]);
    expect(refundRows(target).filter((row) => row.type === "payment.refund")).toHaveLength(1);
    expect(
      target.db.$client
        .query<{ refunded: number }, [string]>(
          "SELECT amount_refunded AS refunded FROM payments WHERE id = ?",
        )
        .get(id)?.refunded,
    ).toBe(300);
  } finally {
    if (other.inTransaction) other.run("ROLLBACK");
    other.close();
  }
});

test("a refund whose row waits in the audit queue behind a lock is not audited again by a retry answered meanwhile (probe 94c F1)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const { admin, id } = await paidPayment(target, 100000);
  // Stripe answers the refund `pending` while another process holds the write lock.
  target.stripe.refundStatusNext("pending");
  const { answered: first, other } = await refundUnderLock(target, id, admin.accessToken, 300);
  try {
    expect(first.status).toBe(200);
    other.run("COMMIT");
    // At once, before the audit queue's next try: Stripe replays the same refund.
    const retry = await refund(target, id, admin.accessToken, 300);
    expect(retry.status).toBe(200);
    expect(target.stripe.created(REFUNDS)).toBe(1);
    const [firstRows, retryRows] = endingsOf(target, [first.requestId, retry.requestId]);
    expect(firstRows!.map((row) => row.type)).toEqual(["payment.refund"]);
    expect(retryRows!.map((row) => [row.type, row.detail.reason])).toEqual([
      ["payment.refund.not_made", "earlier_refund_answered"],
    ]);
    expect(refundRows(target).filter((row) => row.type === "payment.refund")).toHaveLength(1);
  } finally {
    if (other.inTransaction) other.run("ROLLBACK");
    other.close();
  }
});
