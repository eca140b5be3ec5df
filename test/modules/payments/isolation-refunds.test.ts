/** Object-level isolation between users, and admin refunds (audited, bounded, one at a time). */
import { Database } from "bun:sqlite";
import { afterEach, expect, test } from "bun:test";
import { createApp } from "../../../src/app";
import { createLogger } from "../../../src/logging/logger";
import type { PaymentsFeature } from "../../../src/modules/payments/feature";
import { paymentLedgerOf } from "../../../src/modules/payments/ledger";
import { CLAIM_LEASE_MS, RECORD_RETRY_MS } from "../../../src/modules/payments/service";
import { createServices } from "../../../src/services";
import { LogCapture, send, TEST_PASSWORD_HASHING } from "../../support/app";
import { bearer, createKey, endedAfterAuthStage, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  deliver,
  metricValue,
  type PaymentsApp,
  paidPayment,
  pay,
  stripeEvent,
  succeed,
} from "../../support/payments";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** A fresh app (as `current`) with a succeeded payment of a user's and an admin to refund it. */
async function paidApp() {
  const target = buildPaymentsApp();
  current = target;
  return { target, ...(await paidPayment(target)) };
}

const refund = (target: PaymentsApp, id: string, who: Record<string, string>, body: unknown = {}) =>
  send(target, `/api/admin/payments/${id}/refund`, { body, headers: who });

test("a user sees only their own payments: another's is 404 (not 403), and absent from their list", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const bob = await signUp(current);
  const alicePayment = await pay(current, alice, 3000);
  const bobPayment = await pay(current, bob, 3000);

  const peek = await send(current, `/api/payments/${alicePayment}`, {
    headers: bearer(bob.accessToken),
  });
  expect(peek.status).toBe(404);
  expect(((await peek.json()) as { code: string }).code).toBe("NOT_FOUND");
  // Indistinguishable from an id nobody has.
  const nobody = await send(current, "/api/payments/pi_DoesNotExist", {
    headers: bearer(bob.accessToken),
  });
  expect(nobody.status).toBe(404);

  const bobList = (await (
    await send(current, "/api/payments", { headers: bearer(bob.accessToken) })
  ).json()) as { payments: { id: string }[] };
  expect(bobList.payments.map((p) => p.id)).toEqual([bobPayment]);

  // Bob's API key acts for Bob, and sees what Bob sees.
  const bobKey = createKey(current, ["payments"], bob.userId);
  expect(
    (await send(current, `/api/payments/${alicePayment}`, { headers: { "x-api-key": bobKey.key } }))
      .status,
  ).toBe(404);
  expect(
    (await send(current, `/api/payments/${bobPayment}`, { headers: { "x-api-key": bobKey.key } }))
      .status,
  ).toBe(200);
});

test("refunds are admins': a user is 403 (audited), Stripe is not called", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const id = await pay(current, alice, 3000);
  await succeed(current, id);
  const refused = await refund(current, id, bearer(alice.accessToken));
  expect(refused.status).toBe(403);
  expect(((await refused.json()) as { code: string }).code).toBe("FORBIDDEN");
  const userKey = createKey(current, ["payments"], alice.userId);
  expect((await refund(current, id, { "x-api-key": userKey.key })).status).toBe(403);
  expect(current.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(0);
  const forbidden = auditRows(current, "auth.forbidden");
  expect(forbidden.length).toBeGreaterThanOrEqual(2);
  // The matched pattern, as every audit row after routing names it, not the path with the id.
  expect(new Set(forbidden.map((row) => row.route))).toEqual(
    new Set(["POST /api/admin/payments/:id/refund"]),
  );
});

test("a refund asked by an admin key revoked, or a session logged out, right after the auth stage let it by is 401, by a key whose owner was demoted 403: Stripe is not called (probe 38c F1, 40b F3)", async () => {
  // The stage said yes, the refund's claim must not be taken.
  const ending = endedAfterAuthStage(() => current!.services);
  current = buildPaymentsApp({ authStageStillAdmin: ending.authStageStillAdmin });
  const alice = await signUp(current);
  const id = await pay(current, alice, 3000);
  await succeed(current, id);
  for (const credential of ["key", "session", "demoted key"] as const) {
    const admin = await signUp(current, { role: "admin" });
    const headers = credential.endsWith("key")
      ? { "x-api-key": createKey(current, ["admin", "payments"], admin.userId).key }
      : bearer(admin.accessToken);
    ending.arm(credential === "demoted key" ? "demote" : "end");
    const refused = await refund(current, id, headers);
    const code = ((await refused.json()) as { code: string }).code;
    // A demoted owner's key is narrowed, not ended: 403, as the auth stage tells it once it knows.
    const expected =
      credential === "demoted key"
        ? { status: 403, code: "FORBIDDEN" }
        : { status: 401, code: "UNAUTHENTICATED" };
    expect({ credential, status: refused.status, code }).toEqual({ credential, ...expected });
  }
  expect(current.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(0);
  expect(auditRows(current, "payment.refund")).toHaveLength(0);
  expect(auditRows(current, "auth.forbidden").map((row) => row.route)).toEqual([
    "POST /api/admin/payments/:id/refund",
  ]);
  // The payment is not held by a claim: a standing admin refunds it at once.
  const admin = await signUp(current, { role: "admin" });
  expect((await refund(current, id, bearer(admin.accessToken))).status).toBe(200);
});

test("an admin refunds in part then the rest: Stripe gets each, the row follows, each is audited as payment.refund", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const id = await pay(current, alice, 3000);
  await succeed(current, id);

  const part = await refund(current, id, bearer(admin.accessToken), { amount: 1000 });
  expect(part.status).toBe(200);
  const partBody = (await part.json()) as {
    refund: { id: string; amount: number };
    payment: Record<string, unknown>;
  };
  expect(partBody.refund).toMatchObject({
    id: expect.stringMatching(/^re_/),
    amount: 1000,
    status: "succeeded",
  });
  expect(partBody.payment).toMatchObject({ id, status: "succeeded", amountRefunded: 1000 });

  // More than what is left is refused before Stripe.
  const tooMuch = await refund(current, id, bearer(admin.accessToken), { amount: 2001 });
  expect(tooMuch.status).toBe(422);
  const problem = (await tooMuch.json()) as { code: string; errors: { field: string }[] };
  expect(problem.errors[0]!.field).toBe("body/amount");

  const rest = await refund(current, id, bearer(admin.accessToken));
  expect(rest.status).toBe(200);
  expect(((await rest.json()) as { payment: Record<string, unknown> }).payment).toMatchObject({
    status: "refunded",
    amountRefunded: 3000,
  });
  const stripeRefunds = current.stripe.calls.filter((c) => c.path === "/v1/refunds");
  expect(stripeRefunds.map((c) => [c.params.payment_intent, c.params.amount])).toEqual([
    [id, "1000"],
    [id, "2000"],
  ]);
  // Two refunds, two Stripe keys.
  expect(new Set(stripeRefunds.map((c) => c.idempotencyKey)).size).toBe(2);

  const audited = auditRows(current, "payment.refund");
  expect(audited).toHaveLength(2);
  expect(audited[0]!.actor).toBe(`user:${admin.userId}`);
  expect(audited.map((row) => row.route)).toEqual([
    "POST /api/admin/payments/:id/refund",
    "POST /api/admin/payments/:id/refund",
  ]);
  expect(JSON.parse(audited[0]!.detail)).toMatchObject({
    paymentId: id,
    amount: 1000,
    currency: "usd",
  });
  expect(await metricValue(current, "payments_total", { status: "refunded" })).toBe(1);

  // Nothing is left to refund.
  expect((await refund(current, id, bearer(admin.accessToken))).status).toBe(409);
});

test("only a succeeded payment can be refunded; an unknown one is 404; a Stripe failure leaves it refundable", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const id = await pay(current, alice, 3000);
  const early = await refund(current, id, bearer(admin.accessToken));
  expect(early.status).toBe(409);
  expect(((await early.json()) as { code: string }).code).toBe("CONFLICT");
  expect((await refund(current, "pi_Nobody", bearer(admin.accessToken))).status).toBe(404);

  await succeed(current, id);
  current.stripe.failNext("/v1/refunds", { status: 503, shouldRetry: false });
  const failed = await refund(current, id, bearer(admin.accessToken));
  expect(failed.status).toBe(503);
  const problem = (await failed.json()) as { code: string; detail: string };
  expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
  // A refund takes no Idempotency-Key: the answer does not ask for one.
  expect(problem.detail).toBe("The payment provider is unavailable; retry shortly.");
  const ok = await refund(current, id, bearer(admin.accessToken));
  expect(ok.status).toBe(200);
  expect(auditRows(current, "payment.refund")).toHaveLength(1);
});

test.each([
  ["of another payment (probe 90o F1)", { payment_intent: "pi_SomeoneElse" }],
  ["in another currency than the payment's (90o F1's currency half)", { currency: "jpy" }],
])(
  "a refund Stripe answers %s is not recorded as this one's: 502, nothing refunded on the row, nothing audited",
  async (_, tampered) => {
    const { target, admin, id } = await paidApp();
    target.stripe.tamperNextRefund(tampered);
    const answered = await refund(target, id, bearer(admin.accessToken), { amount: 300 });
    expect(answered.status).toBe(502);
    expect(((await answered.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
    const row = target.db.$client
      .query("SELECT amount_refunded AS refunded FROM payments WHERE id = ?1")
      .get(id) as { refunded: number };
    expect(row.refunded).toBe(0);
    expect(auditRows(target, "payment.refund")).toHaveLength(0);
  },
);

test("a refund's answer shows the payment as the refund left it, its updatedAt the one stored (probe 90o)", async () => {
  const clock = new ManualClock();
  const start = clock.now();
  const target = buildPaymentsApp({ clock });
  current = target;
  const { alice, admin, id } = await paidPayment(target);
  clock.advance(60_000);
  const answered = await refund(target, id, bearer(admin.accessToken), { amount: 300 });
  expect(answered.status).toBe(200);
  const { payment } = (await answered.json()) as {
    payment: { amountRefunded: number; updatedAt: string };
  };
  const stored = (await (
    await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
  ).json()) as { amountRefunded: number; updatedAt: string };
  expect(payment).toEqual(stored);
  expect(payment.updatedAt).toBe(new Date(start + 60_000).toISOString());
  expect(payment.amountRefunded).toBe(300);
  // The rest, which makes it `refunded`: one change, one time, in the answer and the row (probe
  // 92e F3: the move to `refunded` was a millisecond later).
  clock.advance(60_000);
  const rest = await refund(target, id, bearer(admin.accessToken));
  expect(rest.status).toBe(200);
  const after = ((await rest.json()) as { payment: { status: string; updatedAt: string } }).payment;
  expect(after).toMatchObject({
    status: "refunded",
    updatedAt: new Date(start + 120_000).toISOString(),
  });
  expect(
    await (
      await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
    ).json(),
  ).toEqual(after);
});

test("a change recorded after a newer write (a refund whose record waited for a lock behind a webhook) moves updatedAt forward, never back nor frozen (probes 92b F1, 92d F1, F2)", async () => {
  const { target, alice, id } = await paidApp();
  const ledger = paymentLedgerOf(target.services);
  const stored = () =>
    send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) }).then(
      (response) =>
        response.json() as Promise<{
          amountRefunded: number;
          disputed: boolean;
          updatedAt: string;
        }>,
    );
  // A dispute written at 10:00 (the webhook's time), then a refund Stripe answered at 09:59 whose
  // record had to wait for the lock the webhook held.
  const at = (time: string) => Date.parse(`2030-01-01T${time}Z`);
  target.db.transaction(() => {
    ledger.applyStripeEvent(
      stripeEvent("charge.dispute.created", {
        id: "dp_Late1",
        object: "dispute",
        charge: "ch_Late1",
        payment_intent: id,
        amount: 100,
        currency: "usd",
      }) as Parameters<typeof ledger.applyStripeEvent>[0],
      at("10:00:00"),
    );
  });
  expect(await stored()).toMatchObject({ disputed: true, updatedAt: "2030-01-01T10:00:00.000Z" });
  // Moved forward past what a client read, so that one syncing on `updatedAt > last seen` sees
  // the refund (probe 92d F1: kept at 10:00, it did not).
  target.db.transaction(() => ledger.recordRefund(id, 1000, at("09:59:00"), null));
  expect(await stored()).toMatchObject({
    amountRefunded: 1000,
    updatedAt: "2030-01-01T10:00:00.001Z",
  });
  // A time a clock ahead wrote stays ahead, each change a millisecond past it, neither frozen
  // (92d F2) nor moved back (which would hide the change); the clock's own once it passes it.
  target.db.transaction(() => ledger.recordRefund(id, 2000, at("09:59:30"), null));
  expect(await stored()).toMatchObject({ updatedAt: "2030-01-01T10:00:00.002Z" });
  target.db.transaction(() => ledger.recordRefund(id, 3000, at("10:05:00"), null));
  // The whole amount refunded, its move to `refunded` is the same change, at the same time.
  expect(await stored()).toMatchObject({
    amountRefunded: 3000,
    status: "refunded",
    updatedAt: "2030-01-01T10:05:00.000Z",
  });
});

test("two admins refunding one payment at once: one refund reaches Stripe, the other is 409", async () => {
  const { target, admin, id } = await paidApp();
  target.stripe.delayMs = 200;
  const responses = await Promise.all(
    Array.from({ length: 5 }, () => refund(target, id, bearer(admin.accessToken))),
  );
  expect(responses.map((r) => r.status).sort()).toEqual([200, 409, 409, 409, 409]);
  expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(1);
  // The 409 does not invite the same request a second later: once the first has ended, it would
  // be another refund (probe 78a F1).
  for (const response of responses.filter((r) => r.status === 409)) {
    expect(response.headers.get("retry-after")).toBeNull();
    expect(((await response.json()) as { detail: string }).detail).toContain(
      "Once it has ended, the same request without an Idempotency-Key is another refund",
    );
  }
});

test("a refund claim the file dates further ahead than a claim's lease, or not as a time, is no claim: the refund goes ahead; one within its lease still holds (probe 50b F2)", async () => {
  const { target, admin, id } = await paidApp();
  const stamp = (value: unknown) =>
    target.db.$client
      .query("UPDATE payments SET refund_started_at = ? WHERE id = ?")
      .run(value as number, id);
  stamp(Date.now() + 10_000);
  const held = await refund(target, id, bearer(admin.accessToken), { amount: 100 });
  expect(held.status).toBe(409);
  for (const [i, ahead] of [9e15, Date.now() + 10 * 365 * 86_400_000, "x"].entries()) {
    stamp(ahead);
    const response = await refund(target, id, bearer(admin.accessToken), { amount: 100 });
    expect([String(ahead), response.status]).toEqual([String(ahead), 200]);
    expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(i + 1);
  }
});

test("an intent Stripe made while the database is locked is stored once the lock goes, and answered 201; its key then replays it (probe 19b)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const alice = await signUp(target);
  target.stripe.delayMs = 300;
  const body = { amount: 4200, currency: "usd" };
  const answered = createIntent(target, bearer(alice.accessToken), body, "locked-1");
  // Another process (a CLI command, a backup) takes the write lock while Stripe works.
  const other = new Database(target.databasePath);
  await Bun.sleep(100);
  other.run("BEGIN IMMEDIATE");
  await Bun.sleep(800);
  other.run("COMMIT");
  other.close();
  const response = await answered;
  expect(response.status).toBe(201);
  const { id } = (await response.json()) as { id: string };
  expect(target.db.$client.query("SELECT status FROM payments WHERE id = ?").get(id)).toEqual({
    status: "requires_payment_method",
  });
  const again = await createIntent(target, bearer(alice.accessToken), body, "locked-1");
  expect(again.status).toBe(201);
  expect(again.headers.get("idempotent-replayed")).toBe("true");
  expect(((await again.json()) as { id: string }).id).toBe(id);
  expect(target.stripe.created("/v1/payment_intents")).toBe(1);
});

test("an intent Stripe made while the database stays locked past the wait: 503 naming the same key and when to retry (probe 19c N4)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const alice = await signUp(target);
  // Another process on the file whose requests wait 300 ms for a write.
  const services = createServices({
    config: target.config,
    db: target.db,
    logger: createLogger({ level: "info", destination: new LogCapture() }),
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    payments: { inProgressWaitMs: 300 },
  });
  const impatient = { app: createApp({ ...services, peerAddress: () => "10.4.4.5" }) };
  target.stripe.delayMs = 300;
  const other = new Database(target.databasePath);
  try {
    const answered = createIntent(
      impatient,
      bearer(alice.accessToken),
      { amount: 4200, currency: "usd" },
      "locked-2",
    );
    await Bun.sleep(100);
    other.run("BEGIN IMMEDIATE");
    const response = await answered;
    other.run("COMMIT");
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe(String(CLAIM_LEASE_MS / 1000));
    expect(((await response.json()) as { detail: string }).detail).toBe(
      `The payment intent was made but could not be recorded (the database is busy). Retry with the same Idempotency-Key in ${CLAIM_LEASE_MS / 1000} s: it returns the same intent.`,
    );
    // An early retry to the same process is told when, not "retry shortly" once a second (19d F5).
    const early = await createIntent(
      impatient,
      bearer(alice.accessToken),
      { amount: 4200, currency: "usd" },
      "locked-2",
    );
    expect(early.status).toBe(409);
    const seconds = Number(early.headers.get("retry-after"));
    expect(seconds).toBeGreaterThan(CLAIM_LEASE_MS / 1000 - 30);
    expect(seconds).toBeLessThanOrEqual(CLAIM_LEASE_MS / 1000);
    expect(((await early.json()) as { detail: string }).detail).toBe(
      `The payment intent of this Idempotency-Key was made but is not recorded yet; retry with the same key in ${seconds} s: it returns the same intent.`,
    );
    expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  } finally {
    if (other.inTransaction) other.run("ROLLBACK");
    other.close();
    services.close();
  }
});

test("an intent Stripe made that the ledger cannot record for another reason (a full disk) is the same 503 naming when to retry, logged with the intent's id (probe 29c F1)", async () => {
  current = buildPaymentsApp();
  const target = current;
  const alice = await signUp(target);
  const sqlite = target.db.$client;
  // The payments' insert refused as on a full disk (the sequence at its end, which this test used,
  // is now asked before Stripe is: probe 85d F5).
  sqlite.run(
    "CREATE TRIGGER full_disk BEFORE INSERT ON payments BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
  );
  const body = { amount: 4200, currency: "usd" };
  const response = await createIntent(target, bearer(alice.accessToken), body, "full-1");
  expect(response.status).toBe(503);
  expect(response.headers.get("retry-after")).toBe(String(CLAIM_LEASE_MS / 1000));
  expect(((await response.json()) as { detail: string }).detail).toBe(
    `The payment intent was made but could not be recorded (the database could not be written). Retry with the same Idempotency-Key in ${CLAIM_LEASE_MS / 1000} s: it returns the same intent.`,
  );
  const logged = target.logs.entries.find(
    (entry) => entry.msg === "payment intent made by Stripe could not be recorded",
  );
  expect(logged).toMatchObject({ level: "error", paymentId: expect.stringMatching(/^pi_/) });
  // An early retry is told when, at once, not "retry shortly" after a 10 s wait.
  const early = await createIntent(target, bearer(alice.accessToken), body, "full-1");
  expect(early.status).toBe(409);
  expect(Number(early.headers.get("retry-after"))).toBeGreaterThan(CLAIM_LEASE_MS / 1000 - 30);
  expect(target.stripe.created("/v1/payment_intents")).toBe(1);
  sqlite.run("DROP TRIGGER full_disk");
});

test("a refund Stripe made while the database is locked is answered, recorded once the lock goes, and audited", async () => {
  const { target, admin, id } = await paidApp();
  target.stripe.delayMs = 300;
  const answered = refund(target, id, bearer(admin.accessToken), { amount: 1000 });
  // Another process (a CLI command, a backup) takes the write lock while Stripe works.
  const other = new Database(target.databasePath);
  await Bun.sleep(100);
  other.run("BEGIN IMMEDIATE");
  let released = false;
  try {
    const response = await answered;
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      refund: { id: string; amount: number };
      payment: { amountRefunded: number; status: string };
    };
    expect(body.refund.amount).toBe(1000);
    expect(body.payment).toMatchObject({ amountRefunded: 1000, status: "succeeded" });
    // Still locked: the ledger has not been written, and nothing else may refund it meanwhile.
    expect(
      other.query("SELECT amount_refunded AS refunded FROM payments WHERE id = ?").get(id),
    ).toEqual({ refunded: 0 });
    // (503 from the payments limit, which fails closed while the file is locked; 409 after.)
    const meanwhile = await refund(target, id, bearer(admin.accessToken), { amount: 2000 });
    expect([409, 503]).toContain(meanwhile.status);
    other.run("COMMIT");
    released = true;

    // Written within a few retries of the lock going, and audited once with the refund's id.
    const stored = () =>
      target.db.$client
        .query(
          "SELECT amount_refunded AS refunded, refund_started_at AS claim FROM payments WHERE id = ?",
        )
        .get(id) as { refunded: number; claim: number | null };
    const deadline = Date.now() + 3000;
    let row = stored();
    while (row.refunded !== 1000 && Date.now() < deadline) {
      await Bun.sleep(50);
      row = stored();
    }
    expect(row).toEqual({ refunded: 1000, claim: null });
    const audited = auditRows(target, "payment.refund").map((r) => JSON.parse(r.detail as string));
    expect(audited).toEqual([
      expect.objectContaining({ paymentId: id, refundId: body.refund.id, amount: 1000 }),
    ]);
    const waited = target.logs.entries.find(
      (entry) => entry.msg === "refund answered by Stripe; its record waits for the database lock",
    );
    expect(waited).toMatchObject({ paymentId: id, refundId: body.refund.id, amount: 1000 });
    // The rest is what Stripe has not refunded: the next refund sees the first.
    const rest = await refund(target, id, bearer(admin.accessToken));
    expect(rest.status).toBe(200);
    expect(((await rest.json()) as { refund: { amount: number } }).refund.amount).toBe(2000);
    expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(2);
  } finally {
    if (!released) other.run("ROLLBACK");
    other.close();
  }
});

test("Stripe's charge.refunded for another refund does not end an admin refund's claim: no second refund starts beside it", async () => {
  const { target, admin, id } = await paidApp();
  target.stripe.delayMs = 400;
  const first = refund(target, id, bearer(admin.accessToken), { amount: 100 });
  await Bun.sleep(100);
  // A refund made in Stripe's Dashboard is reported meanwhile.
  const dashboard = await deliver(
    target,
    stripeEvent("charge.refunded", {
      id: "ch_dashboard1",
      object: "charge",
      payment_intent: id,
      amount_refunded: 50,
    }),
  );
  expect(dashboard.status).toBe(200);
  const second = await refund(target, id, bearer(admin.accessToken), { amount: 200 });
  expect(second.status).toBe(409);
  expect((await first).status).toBe(200);
  expect(target.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(1);
});

test("a lock held past the refund claim's 2 minutes: no other refund of the payment starts until the first is recorded, and none ends another's claim", async () => {
  const clock = new ManualClock();
  current = buildPaymentsApp({ clock });
  const target = current;
  const alice = await signUp(target);
  const admin = await signUp(target, { role: "admin" });
  const id = await pay(target, alice, 3000);
  await succeed(target, id);
  target.stripe.delayMs = 300;
  const first = refund(target, id, bearer(admin.accessToken), { amount: 1000 });
  const other = new Database(target.databasePath);
  await Bun.sleep(100);
  other.run("BEGIN IMMEDIATE");
  try {
    expect((await first).status).toBe(200);
    // The lock outlasts the claim's lease: a refund now must still wait for the first's record.
    clock.advance(CLAIM_LEASE_MS + 1000);
    const early = await refund(target, id, bearer(admin.accessToken), { amount: 500 });
    expect([409, 503]).toContain(early.status);
  } finally {
    other.run("ROLLBACK");
    other.close();
  }
  // The moment the lock goes, before the retry's timer: the next refund writes the first's record
  // itself, then starts from the true total.
  target.stripe.delayMs = 0;
  const second = await refund(target, id, bearer(admin.accessToken), { amount: 500 });
  expect(second.status).toBe(200);
  const keys = target.stripe.calls
    .filter((call) => call.path === "/v1/refunds")
    .map((call) => call.idempotencyKey);
  expect(keys).toEqual([`palisade_refund_${id}_0_1000`, `palisade_refund_${id}_1000_500`]);
  expect(
    target.db.$client
      .query(
        "SELECT amount_refunded AS refunded, refund_started_at AS claim FROM payments WHERE id = ?",
      )
      .get(id),
  ).toEqual({ refunded: 1500, claim: null });
});

test("a refund Stripe refuses while the database is locked is answered with Stripe's refusal, and its claim ends once the lock goes", async () => {
  const { target, admin, id } = await paidApp();
  target.stripe.delayMs = 300;
  target.stripe.failNext("/v1/refunds", {
    status: 400,
    type: "invalid_request_error",
    code: "charge_already_refunded",
    message: "This charge has already been refunded.",
  });
  const answered = refund(target, id, bearer(admin.accessToken), { amount: 1000 });
  const other = new Database(target.databasePath);
  await Bun.sleep(100);
  other.run("BEGIN IMMEDIATE");
  let response: Response;
  try {
    response = await answered;
  } finally {
    other.run("ROLLBACK");
    other.close();
  }
  expect(response.status).not.toBe(503);
  expect(response.status).toBeGreaterThanOrEqual(400);
  const refused = target.logs.entries.find(
    (entry) => entry.msg === "stripe did not make the refund",
  );
  expect(refused).toMatchObject({ paymentId: id });
  // The claim ends within a retry of the lock going: the payment is refundable again.
  await Bun.sleep(RECORD_RETRY_MS * 3);
  expect(
    target.db.$client.query("SELECT refund_started_at AS claim FROM payments WHERE id = ?").get(id),
  ).toEqual({ claim: null });
  expect((await refund(target, id, bearer(admin.accessToken), { amount: 1000 })).status).toBe(200);
});

test("a refund Stripe made whose record fails for another reason than a lock is answered 200, audited, and its ids logged", async () => {
  const { target, admin, id } = await paidApp();
  const feature = target.services.features.find((f) => f.name === "payments") as PaymentsFeature;
  // A database that cannot take this write (an I/O error, a full disk) after Stripe made the refund.
  feature.ledger.recordRefund = () => {
    throw new Error("disk I/O error");
  };
  const response = await refund(target, id, bearer(admin.accessToken), { amount: 1000 });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { refund: { id: string } };
  const line = target.logs.entries.find(
    (entry) =>
      entry.msg ===
      "refund answered by Stripe could not be recorded; charge.refunded will record its total",
  );
  expect(line).toMatchObject({ paymentId: id, refundId: body.refund.id, amount: 1000 });
  const audited = auditRows(target, "payment.refund").map((r) => JSON.parse(r.detail as string));
  expect(audited).toEqual([expect.objectContaining({ paymentId: id, refundId: body.refund.id })]);
});

test("a waiting refund record that then fails for another reason is logged as not recorded, never as recorded", async () => {
  const { target, admin, id } = await paidApp();
  const feature = target.services.features.find((f) => f.name === "payments") as PaymentsFeature;
  let calls = 0;
  feature.ledger.recordRefund = () => {
    calls++;
    const error = new Error(calls === 1 ? "database is locked" : "disk I/O error");
    (error as Error & { code: string }).code = calls === 1 ? "SQLITE_BUSY" : "SQLITE_IOERR";
    throw error;
  };
  const response = await refund(target, id, bearer(admin.accessToken), { amount: 1000 });
  expect(response.status).toBe(200);
  const messages = () => target.logs.entries.map((entry) => entry.msg);
  const deadline = Date.now() + 3000;
  while (calls < 2 && Date.now() < deadline) await Bun.sleep(50);
  expect(calls).toBe(2);
  expect(messages()).toContain("refund answered by Stripe; its record waits for the database lock");
  expect(messages()).toContain(
    "refund answered by Stripe could not be recorded; charge.refunded will record its total",
  );
  expect(messages()).not.toContain("refund recorded after the database lock");
});
