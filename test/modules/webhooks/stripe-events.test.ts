/**
 * What verified Stripe events do: each event id once (its row in webhook_events committed with its
 * effect), never a backwards move, disputes audited and alerted, the unknown acknowledged.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { bearer, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  deliver,
  metricValue,
  type PaymentsApp,
  stripeEvent,
} from "../../support/payments";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function newPayment(target: PaymentsApp, amount = 2000): Promise<string> {
  const user = await signUp(target);
  const response = await createIntent(target, bearer(user.accessToken), {
    amount,
    currency: "usd",
  });
  expect(response.status).toBe(201);
  return ((await response.json()) as { id: string }).id;
}

function payment(target: PaymentsApp, id: string) {
  return target.db.$client
    .query(
      "SELECT status, amount_refunded AS refunded, disputed_at AS disputedAt FROM payments WHERE id = ?",
    )
    .get(id) as { status: string; refunded: number; disputedAt: number | null };
}

const intentEvent = (type: string, id: string, created: number, eventId?: string) =>
  stripeEvent(type, { id, object: "payment_intent" }, { created, id: eventId });

/** `charge.refunded` for payment `id` of 2000, its refunded total `amountRefunded`. */
const chargeRefunded = (id: string, amountRefunded: number, created: number) =>
  stripeEvent(
    "charge.refunded",
    {
      id: "ch_3Pabc",
      object: "charge",
      payment_intent: id,
      amount: 2000,
      currency: "usd",
      amount_refunded: amountRefunded,
    },
    { created },
  );

test("payment_intent.succeeded moves the payment, audits payment.succeeded and counts it", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const response = await deliver(
    current,
    intentEvent("payment_intent.succeeded", id, 1_800_000_000),
  );
  expect(response.status).toBe(200);
  expect(await response.json()).toEqual({ received: true, outcome: "processed" });
  expect(payment(current, id).status).toBe("succeeded");
  const audited = auditRows(current, "payment.succeeded");
  expect(audited).toHaveLength(1);
  expect(audited[0]!.actor).toBe("stripe");
  expect(JSON.parse(audited[0]!.detail).paymentId).toBe(id);
  expect(await metricValue(current, "payments_total", { status: "succeeded" })).toBe(1);
  expect(
    await metricValue(current, "webhook_events_total", {
      provider: "stripe",
      outcome: "processed",
    }),
  ).toBe(1);
});

test("every spelling that reaches the webhook is audited under its matched route, a signature failure too (probe 50b F1)", async () => {
  current = buildPaymentsApp();
  const paths = ["/webhooks/stripe", "/webhooks/stripe/", "/webhooks/stripe/."];
  for (const [i, path] of paths.entries()) {
    const id = await newPayment(current);
    const response = await deliver(
      current,
      intentEvent("payment_intent.succeeded", id, 1_800_000_000 + i),
      {
        path,
      },
    );
    expect([path, response.status]).toEqual([path, 200]);
    const bad = await deliver(current, intentEvent("payment_intent.succeeded", id, 1), {
      path,
      secret: "whsec_not0the0secret0of0this0endpoint",
      peer: `192.0.2.${60 + i}`,
    });
    expect([path, bad.status]).toEqual([path, 400]);
  }
  const routes = [
    ...auditRows(current, "payment.succeeded"),
    ...auditRows(current, "webhook.signature_failed"),
  ].map((row) => row.route);
  expect(routes).toHaveLength(6);
  expect(new Set(routes)).toEqual(new Set(["POST /webhooks/stripe"]));
});

test("a redelivered event is acknowledged with 200 and has no second effect", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const event = intentEvent("payment_intent.succeeded", id, 1_800_000_000);
  const first = await deliver(current, event);
  expect(first.status).toBe(200);
  // Stripe redelivers the same event (same id), later and re-signed; concurrently too.
  const again = await Promise.all(Array.from({ length: 5 }, () => deliver(current!, event)));
  for (const response of again) {
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ received: true, outcome: "duplicate" });
  }
  expect(auditRows(current, "payment.succeeded")).toHaveLength(1);
  expect(await metricValue(current, "payments_total", { status: "succeeded" })).toBe(1);
  expect(
    await metricValue(current, "webhook_events_total", {
      provider: "stripe",
      outcome: "duplicate",
    }),
  ).toBe(5);
  const recorded = current.db.$client
    .query("SELECT provider, event_id AS eventId, type FROM webhook_events")
    .all();
  expect(recorded).toEqual([
    { provider: "stripe", eventId: event.id, type: "payment_intent.succeeded" },
  ]);
});

test("out of order: an older processing or failure never overwrites succeeded", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const t0 = 1_800_000_000;
  expect(
    (await deliver(current, intentEvent("payment_intent.succeeded", id, t0 + 20))).status,
  ).toBe(200);
  for (const type of [
    "payment_intent.processing",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
  ]) {
    const late = await deliver(current, intentEvent(type, id, t0 + 10));
    expect(late.status).toBe(200);
    expect(((await late.json()) as { outcome: string }).outcome).toBe("ignored");
  }
  // Even a newer one: succeeded is final.
  await deliver(current, intentEvent("payment_intent.payment_failed", id, t0 + 30));
  expect(payment(current, id).status).toBe("succeeded");
  expect(auditRows(current, "payment.failed")).toHaveLength(0);
});

test("out of order: an older event never undoes a newer one; a newer one may move back where Stripe does; success is final whenever it comes", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const t0 = 1_800_000_000;
  // processing (t0+10) arrives before requires_… is known to have moved; then a newer failure.
  await deliver(current, intentEvent("payment_intent.processing", id, t0 + 10));
  expect(payment(current, id).status).toBe("processing");
  await deliver(current, intentEvent("payment_intent.payment_failed", id, t0 + 20));
  expect(payment(current, id).status).toBe("failed");
  // An older processing does not undo the newer failure, though processing ranks higher.
  await deliver(current, intentEvent("payment_intent.processing", id, t0 + 5));
  expect(payment(current, id).status).toBe("failed");
  // Success is final in Stripe: applied even when its event is stamped before the failure's.
  await deliver(current, intentEvent("payment_intent.succeeded", id, t0 + 15));
  expect(payment(current, id).status).toBe("succeeded");
  expect(auditRows(current, "payment.failed")).toHaveLength(1);
  expect(auditRows(current, "payment.succeeded")).toHaveLength(1);
});

test("canceled is final", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  await deliver(current, intentEvent("payment_intent.canceled", id, 1_800_000_010));
  await deliver(current, intentEvent("payment_intent.succeeded", id, 1_800_000_020));
  expect(payment(current, id).status).toBe("canceled");
  expect(auditRows(current, "payment.canceled")).toHaveLength(1);
});

test("charge.refunded: the refunded total only grows; the full amount makes it refunded", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current, 2000);
  await deliver(current, intentEvent("payment_intent.succeeded", id, 1_800_000_000));
  const charge = (amountRefunded: number, created: number) =>
    chargeRefunded(id, amountRefunded, created);
  await deliver(current, charge(500, 1_800_000_100));
  expect(payment(current, id)).toMatchObject({ status: "succeeded", refunded: 500 });
  await deliver(current, charge(2000, 1_800_000_300));
  expect(payment(current, id)).toMatchObject({ status: "refunded", refunded: 2000 });
  // The older partial refund, delivered late, changes nothing.
  const late = await deliver(current, charge(1200, 1_800_000_200));
  expect(((await late.json()) as { outcome: string }).outcome).toBe("ignored");
  expect(payment(current, id)).toMatchObject({ status: "refunded", refunded: 2000 });
  expect(auditRows(current, "payment.refunded")).toHaveLength(2);
});

test("a whole refund heard of before the payment's success records that success once, whatever the order of delivery (probe 83a F1)", async () => {
  const outcomes: Record<string, unknown> = {};
  for (const order of ["succeeded first", "refund first", "partial refunds first"] as const) {
    current = buildPaymentsApp();
    const id = await newPayment(current, 2000);
    const succeeded = intentEvent("payment_intent.succeeded", id, 1_800_000_000);
    const refund = (amountRefunded: number, created: number) =>
      chargeRefunded(id, amountRefunded, created);
    const events =
      order === "succeeded first"
        ? [succeeded, refund(2000, 1_800_000_060)]
        : order === "refund first"
          ? [refund(2000, 1_800_000_060), succeeded]
          : [refund(500, 1_800_000_030), refund(2000, 1_800_000_060), succeeded];
    for (const event of events) expect((await deliver(current, event)).status).toBe(200);
    outcomes[order] = {
      row: payment(current, id),
      succeededAudited: auditRows(current, "payment.succeeded").map((row) =>
        JSON.parse(row.detail),
      ),
      refundedAudited: auditRows(current, "payment.refunded").length,
      succeededCounted: await metricValue(current, "payments_total", { status: "succeeded" }),
      refundedCounted: await metricValue(current, "payments_total", { status: "refunded" }),
    };
    current.close();
    current = null;
  }
  for (const order of ["succeeded first", "refund first", "partial refunds first"]) {
    expect(outcomes[order]).toMatchObject({
      row: { status: "refunded", refunded: 2000 },
      succeededAudited: [expect.objectContaining({ amount: 2000, currency: "usd" })],
      succeededCounted: 1,
      refundedCounted: 1,
    });
  }
});

test("an event whose amount or currency is not the payment's is acknowledged, not applied, and logged as an alert (probe 70b F1)", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current, 1000);
  const other = await newPayment(current, 2000);
  const intent = (fields: Record<string, unknown>) =>
    stripeEvent("payment_intent.succeeded", { id, object: "payment_intent", ...fields });
  const refund = (fields: Record<string, unknown>) =>
    stripeEvent("charge.refunded", {
      id: "ch_3Pdef",
      object: "charge",
      payment_intent: other,
      amount: 2000,
      amount_refunded: 2000,
      currency: "usd",
      ...fields,
    });
  const mismatched = [
    intent({ amount: 50, currency: "usd" }),
    intent({ amount: 1000, currency: "eur" }),
    intent({ amount: "1000", currency: "usd" }),
    intent({ amount: 1000, currency: 840 }),
    refund({ currency: "eur" }),
    refund({ amount: 5000 }),
    refund({ amount_refunded: 2001 }),
  ];
  for (const event of mismatched) {
    const response = await deliver(current, event);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ received: true, outcome: "ignored" });
  }
  expect(payment(current, id).status).toBe("requires_payment_method");
  expect(payment(current, other)).toMatchObject({ status: "requires_payment_method", refunded: 0 });
  const alerts = current.logs.entries.filter(
    (entry) =>
      entry.msg === "stripe event not applied: the event's amount or currency is not the payment's",
  );
  expect(alerts).toHaveLength(mismatched.length);
  expect(alerts.every((entry) => entry.level === "error")).toBe(true);
  // The same payment's own money, in Stripe's spelling or upper case: applied.
  const own = await deliver(current, intent({ amount: 1000, currency: "USD" }));
  expect(await own.json()).toEqual({ received: true, outcome: "processed" });
  expect(payment(current, id).status).toBe("succeeded");
  expect(await (await deliver(current, refund({}))).json()).toEqual({
    received: true,
    outcome: "processed",
  });
  expect(payment(current, other)).toMatchObject({ status: "refunded", refunded: 2000 });
});

test("charge.dispute.created is audited as payment.dispute.created and logged as an alert", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const response = await deliver(
    current,
    stripeEvent("charge.dispute.created", {
      id: "dp_1Pxyz",
      object: "dispute",
      charge: "ch_1Pxyz",
      payment_intent: id,
      amount: 2000,
      reason: "fraudulent",
    }),
  );
  expect(response.status).toBe(200);
  expect(payment(current, id).disputedAt).not.toBeNull();
  const audited = auditRows(current, "payment.dispute.created");
  expect(audited).toHaveLength(1);
  expect(JSON.parse(audited[0]!.detail)).toMatchObject({
    disputeId: "dp_1Pxyz",
    chargeId: "ch_1Pxyz",
    paymentId: id,
    reason: "fraudulent",
  });
  const alert = current.logs.entries.find((entry) => entry.msg === "payment disputed");
  expect(alert?.level).toBe("error");
});

test("a dispute whose money is not the payment's (another currency, no whole amount) marks no payment, and is still audited and alerted as a dispute; a part of it, or a little more (currency fluctuation), does mark it", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current, 2000);
  const dispute = (n: number, fields: Record<string, unknown>) =>
    stripeEvent("charge.dispute.created", {
      id: `dp_1Pmis${n}`,
      object: "dispute",
      charge: `ch_1Pmis${n}`,
      payment_intent: id,
      amount: 2000,
      currency: "usd",
      reason: "fraudulent",
      ...fields,
    });
  const mismatched = [
    dispute(1, { currency: "eur" }),
    dispute(2, { amount: 20.5 }),
    dispute(3, { amount: "2000" }),
    dispute(4, { amount: 0 }),
    dispute(5, { currency: 840 }),
  ];
  for (const event of mismatched) {
    const response = await deliver(current, event);
    expect(await response.json()).toEqual({ received: true, outcome: "processed" });
  }
  expect(payment(current, id).disputedAt).toBeNull();
  const audited = auditRows(current, "payment.dispute.created").map((row) =>
    JSON.parse(row.detail),
  );
  expect(audited).toHaveLength(mismatched.length);
  expect(audited.every((detail) => detail.paymentId === null)).toBe(true);
  const alerts = current.logs.entries.filter(
    (entry) =>
      entry.msg === "payment disputed: the event's amount or currency is not the payment's",
  );
  expect(alerts).toHaveLength(mismatched.length);
  expect(alerts.every((entry) => entry.level === "error")).toBe(true);
  // A dispute of part of the payment, its currency in upper case: the payment's.
  await deliver(current, dispute(6, { amount: 500, currency: "USD" }));
  expect(payment(current, id).disputedAt).not.toBeNull();
  const [, , , , , partial] = auditRows(current, "payment.dispute.created");
  expect(JSON.parse(partial!.detail).paymentId).toBe(id);
  // Stripe's dispute amount "can differ (usually because of currency fluctuation)": more is ours.
  const other = await newPayment(current, 1000);
  await deliver(
    current,
    stripeEvent("charge.dispute.created", {
      id: "dp_1Pmore",
      object: "dispute",
      charge: "ch_1Pmore",
      payment_intent: other,
      amount: 1013,
      currency: "usd",
    }),
  );
  expect(payment(current, other).disputedAt).not.toBeNull();
});

test("a dispute's reason is cut at 64 between characters: never half an emoji in the audit detail (probe 38a F8)", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const response = await deliver(
    current,
    stripeEvent("charge.dispute.created", {
      id: "dp_1Pcut",
      object: "dispute",
      charge: "ch_1Pcut",
      payment_intent: id,
      amount: 2000,
      reason: `${"r".repeat(63)}😀tail`,
    }),
  );
  expect(response.status).toBe(200);
  const [audited] = auditRows(current, "payment.dispute.created");
  expect(audited!.detail).not.toContain("\\ud83d");
  expect(JSON.parse(audited!.detail).reason).toBe("r".repeat(63));
});

test("events for payments we do not hold, unknown types and malformed ids inside events are acknowledged, counted, harmless", async () => {
  current = buildPaymentsApp();
  const unknownPayment = await deliver(
    current,
    intentEvent("payment_intent.succeeded", "pi_NotOurs123", 1_800_000_000),
  );
  expect(unknownPayment.status).toBe(200);
  expect(await unknownPayment.json()).toEqual({ received: true, outcome: "ignored" });

  const unknownType = await deliver(
    current,
    stripeEvent("invoice.paid", { id: "in_1", object: "invoice" }),
  );
  expect(unknownType.status).toBe(200);

  for (const badId of ["pi_../../x", "' OR 1=1 --", "pi_", 42, null, `pi_${"a".repeat(300)}`]) {
    const response = await deliver(
      current,
      stripeEvent("payment_intent.succeeded", { id: badId, object: "payment_intent" }),
    );
    expect(response.status).toBe(200);
    expect(((await response.json()) as { outcome: string }).outcome).toBe("ignored");
  }
  const badCharge = await deliver(
    current,
    stripeEvent("charge.refunded", {
      id: "ch_1",
      payment_intent: "pi_1; DROP",
      amount_refunded: 5,
    }),
  );
  expect(badCharge.status).toBe(200);
  expect(
    await metricValue(current, "webhook_events_total", { provider: "stripe", outcome: "ignored" }),
  ).toBe(9);
});

test("a signed event that is not shaped like one (id not evt_…, no type, null, a list) is 400 BAD_REQUEST, not a signature failure, and not recorded", async () => {
  current = buildPaymentsApp();
  const events = [
    { ...stripeEvent("invoice.paid", {}), id: "evil_1" },
    { ...stripeEvent("invoice.paid", {}), type: 7 },
    { ...stripeEvent("invoice.paid", {}), created: "yesterday" },
    { ...stripeEvent("invoice.paid", {}), data: null },
    "null",
    "[]",
    "7",
  ];
  for (const event of events) {
    const response = await deliver(current, event);
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe("BAD_REQUEST");
  }
  const rows = current.db.$client.query("SELECT count(*) AS n FROM webhook_events").get() as {
    n: number;
  };
  expect(rows.n).toBe(0);
  expect(
    await metricValue(current, "webhook_events_total", { provider: "stripe", outcome: "failed" }),
  ).toBe(events.length);
  // Each was signed: none is a signature failure (probe 26a F4: `null` was one).
  expect(
    await metricValue(current, "webhook_signature_failures_total", { provider: "stripe" }),
  ).toBe(0);
  // Signed and not JSON, or a thin event of the v2 API: a broken or foreign body, counted failed,
  // never a signature failure (probe 90c: the SDK's parse error read as one).
  for (const [body, code] of [
    ["{not json", "MALFORMED_BODY"],
    // Refused by the request guard before its signature is read, as on every route: not counted.
    ["", "MALFORMED_BODY"],
    [
      JSON.stringify({
        id: "evt_thin",
        object: "v2.core.event",
        type: "v1.billing.meter.no_meter_found",
        created: "2026-01-01T00:00:00Z",
      }),
      "BAD_REQUEST",
    ],
  ] as const) {
    const response = await deliver(current, body);
    expect({
      status: response.status,
      code: ((await response.json()) as { code: string }).code,
    }).toEqual({ status: 400, code });
  }
  expect(
    await metricValue(current, "webhook_events_total", { provider: "stripe", outcome: "failed" }),
  ).toBe(events.length + 2);
  expect(
    await metricValue(current, "webhook_signature_failures_total", { provider: "stripe" }),
  ).toBe(0);
});

test("a signed event whose metadata a merchant keyed like Object.prototype members is taken, not refused forever", async () => {
  current = buildPaymentsApp();
  const id = await newPayment(current);
  const response = await deliver(
    current,
    stripeEvent("payment_intent.succeeded", {
      id,
      object: "payment_intent",
      status: "succeeded",
      metadata: { constructor: "dashboard", toString: "x", valueOf: "y" },
    }),
  );
  expect(response.status).toBe(200);
  expect(payment(current, id).status).toBe("succeeded");
});

describe("how long event ids are remembered", () => {
  const DAY = 24 * 60 * 60 * 1000;
  const stripeRows = (target: PaymentsApp) =>
    target.db.$client
      .query("SELECT event_id AS id FROM webhook_events WHERE provider = 'stripe' ORDER BY id")
      .values()
      .flat();

  test("a resend within Stripe's 30 days is still a duplicate; the record goes after 35 days", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const target = current;
    const id = await newPayment(target);
    const event = intentEvent("payment_intent.succeeded", id, 1_800_000_000);
    const at = () => ({ timestamp: Math.floor(clock.now() / 1000) });
    expect(await (await deliver(target, event, at())).json()).toMatchObject({
      outcome: "processed",
    });

    // Resent from the Dashboard on day 30 (a fresh signature): nothing happens twice.
    clock.advance(30 * DAY);
    target.services.runMaintenance();
    expect(await (await deliver(target, event, at())).json()).toMatchObject({
      outcome: "duplicate",
    });
    expect(auditRows(target, "payment.succeeded")).toHaveLength(1);

    clock.advance(5 * DAY - 60_000);
    target.services.runMaintenance();
    expect(stripeRows(target)).toEqual([event.id]);
    clock.advance(120_000);
    target.services.runMaintenance();
    expect(stripeRows(target)).toEqual([]);
  });

  test("pruning is bounded per run, oldest first, and leaves WhatsApp's records to their own retention", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const sqlite = current.db.$client;
    const old = clock.now() - 40 * DAY;
    const insert = sqlite.prepare(
      "INSERT INTO webhook_events (provider, event_id, type, received_at) VALUES (?, ?, 'payment_intent.succeeded', ?)",
    );
    sqlite.transaction(() => {
      for (let i = 0; i < 2500; i++)
        insert.run("stripe", `evt_old${String(i).padStart(5, "0")}`, old + i);
      insert.run("stripe", "evt_recent", clock.now() - DAY);
      insert.run("whatsapp", "wamid.recent", clock.now() - DAY);
    })();
    current.services.runMaintenance();
    const left = stripeRows(current);
    expect(left).toHaveLength(1501);
    // The oldest thousand went first.
    expect(left[0]).toBe("evt_old01000");
    current.services.runMaintenance();
    current.services.runMaintenance();
    expect(stripeRows(current)).toEqual(["evt_recent"]);
    expect(
      sqlite
        .query("SELECT event_id FROM webhook_events WHERE provider = 'whatsapp'")
        .values()
        .flat(),
    ).toEqual(["wamid.recent"]);
  });
});
