/**
 * Refund outcomes, erasure racing an intent, and ownerless keys across rotation (the payments
 * probe's findings, widened).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createStripe, StripeGateway } from "../../../src/modules/payments/stripe-client";
import { generateApiKey } from "../../../src/plugins/auth/api-key-format";
import { secondProcess, send } from "../../support/app";
import { bearer, createKey, signUp } from "../../support/auth";
import { ManualClock } from "../../support/clock";
import { untoldInstance } from "../../support/instance";
import {
  auditRows,
  buildPaymentsApp,
  createIntent,
  type PaymentsApp,
  paidPayment,
  pay,
  ROOMY_LIMITS,
  refundMadeAtStripeUnder,
  refundStatusStripes,
  STRIPE_TEST_KEY,
  signStripe,
  stripeEvent,
  stripeRefundsOf,
  succeed,
} from "../../support/payments";

/** What a second instance needs to reach the same local Stripe. */
function stripeEnvOf(target: PaymentsApp) {
  return { ...ROOMY_LIMITS, STRIPE_SECRET_KEY: STRIPE_TEST_KEY, STRIPE_API_URL: target.stripe.url };
}

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});
const withRefundStatus = refundStatusStripes();

/** An admin's refund of 1000 of payment `id` on the current app, as a function to call again. */
const refunding = (id: string, admin: { accessToken: string }) => () =>
  send(current!, `/api/admin/payments/${id}/refund`, {
    body: { amount: 1000 },
    headers: bearer(admin.accessToken),
  });

/** Stripe made the refund Palisade's first call asked for, and its answer never came back. */
const refundMadeAtStripe = (target: PaymentsApp, id: string) =>
  refundMadeAtStripeUnder(target, id, `palisade_refund_${id}_0_1000`);

/** An audit row written into the file at an id past 2^53: the log takes no row after it. */
function spendAuditIds(target: PaymentsApp) {
  target.db.$client.run(
    `INSERT INTO audit_events (id, at, type, actor, ip, route, request_id, outcome, detail, subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac)
     SELECT 9007199254740993, at, type, actor, ip, route, request_id, outcome, detail, subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac
     FROM audit_events LIMIT 1`,
  );
}

/** How many refund requests reached the local Stripe, replays included. */
const refundCallsOf = (target: PaymentsApp) =>
  target.stripe.calls.filter((call) => call.method === "POST" && call.path === "/v1/refunds")
    .length;

describe("only a succeeded refund is money returned", () => {
  for (const status of ["failed", "canceled"]) {
    test(`a refund Stripe reports as ${status} is 502 and changes nothing`, async () => {
      const { app: target, upstream } = withRefundStatus(status);
      const alice = await signUp(target);
      const admin = await signUp(target, { role: "admin" });
      const id = await pay(target, alice);
      await succeed(target, id);
      const response = await send(target, `/api/admin/payments/${id}/refund`, {
        body: {},
        headers: bearer(admin.accessToken),
      });
      expect(response.status).toBe(502);
      expect(((await response.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
      const view = (await (
        await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
      ).json()) as { status: string; amountRefunded: number };
      expect(view).toMatchObject({ status: "succeeded", amountRefunded: 0 });
      // Not left marked as in progress: a retry reaches Stripe again.
      await send(target, `/api/admin/payments/${id}/refund`, {
        body: {},
        headers: bearer(admin.accessToken),
      });
      expect(upstream.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(2);
    });
  }

  test("a refund Stripe refused is retried as a new refund: Stripe's replay of the refusal is walked past, and each key is the same on every retry (probe 32b)", async () => {
    current = buildPaymentsApp();
    const { alice, admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    const refundsMade = () => current!.stripe.created("/v1/refunds");
    const keysSent = () =>
      current!.stripe.calls
        .filter((call) => call.path === "/v1/refunds")
        .map((call) => call.idempotencyKey);
    current.stripe.refundStatusNext("failed", "canceled");
    expect((await refund()).status).toBe(502);
    expect(refundsMade()).toBe(1);
    // Retried: Stripe replays the failure to the first key; the next key is a new refund,
    // canceled.
    expect((await refund()).status).toBe(502);
    expect(refundsMade()).toBe(2);
    // Retried again: both refusals replayed, the third key makes the refund.
    const made = await refund();
    expect(made.status).toBe(200);
    expect(refundsMade()).toBe(3);
    // Each retry starts where the last stopped: the first key's refusal, replayed, then the next.
    const keys = keysSent();
    expect(keys).toHaveLength(5);
    expect(new Set(keys).size).toBe(3);
    expect(keys[1]).toBe(keys[0]!);
    expect(keys[3]).toBe(keys[2]!);
    const view = (await (
      await send(current, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
    ).json()) as { amountRefunded: number };
    expect(view.amountRefunded).toBe(1000);
  });

  test("past more refusals than one request walks, each retry walks on from where the last stopped (probe 33c F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    current.stripe.refundStatusNext(...Array<string>(12).fill("failed"));
    const statuses: number[] = [];
    for (let i = 0; i < 20 && statuses.at(-1) !== 200; i++) statuses.push((await refund()).status);
    expect(statuses).toEqual([...Array<number>(12).fill(502), 200]);
    // Every refusal was asked for once, then the refund made once.
    expect(current.stripe.created("/v1/refunds")).toBe(13);
  });

  test("a Stripe call that fails mid-walk leaves the remembered place as it was (probe 33d F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    current.stripe.refundStatusNext("failed", "failed", "failed");
    expect((await refund()).status).toBe(502);
    expect((await refund()).status).toBe(502);
    // The walk's next call fails (Stripe down, a 503 it keeps nothing of): no refund, the walk's
    // place kept.
    current.stripe.failNext("/v1/refunds", { status: 503, shouldRetry: false });
    expect((await refund()).status).toBeGreaterThanOrEqual(500);
    // The retry starts at the second refusal, not the first: one replay, then the third refusal.
    const before = refundCallsOf(current!);
    expect((await refund()).status).toBe(502);
    expect(refundCallsOf(current!) - before).toBe(2);
    expect((await refund()).status).toBe(200);
    // Three refusals, the failed call, the refund: each reached Stripe once.
    expect(current.stripe.created("/v1/refunds")).toBe(5);
  });

  test("a server error Stripe keeps for the refund's key: the payment's refunds are read, and none made under it, the next key makes the refund, once (probe 59a F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    current.stripe.failNext("/v1/refunds", { status: 500, shouldRetry: false });
    const first = await refund();
    expect(first.status).toBe(503);
    expect(first.headers.get("retry-after")).toBe("5");
    const again = await refund();
    expect(again.status).toBe(200);
    const made = ((await again.json()) as { refund: { id: string } }).refund.id;
    const calls = current.stripe.calls.filter((c) => c.path === "/v1/refunds");
    const key = calls[0]!.idempotencyKey!;
    // The retry first asks whether the refund left undecided was made (none), then walks.
    expect(calls.map((c) => [c.method, c.idempotencyKey, c.replayed])).toEqual([
      ["POST", key, false],
      ["GET", null, false],
      ["POST", key, true],
      ["GET", null, false],
      ["POST", `${key}_after_error`, false],
    ]);
    expect((await stripeRefundsOf(current, id)).map((r) => r.id)).toEqual([made]);
    expect(auditRows(current, "payment.refund")).toHaveLength(1);
    // Recorded: the rest is what is left to refund.
    expect((await refund()).status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(2);
  });

  test("a refund Stripe made behind a server error it keeps is found among the payment's refunds: answered, recorded and audited as made, never made again (probe 59a F1)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    current.stripe.failNext("/v1/refunds", { status: 500, shouldRetry: false, executed: true });
    expect((await refund()).status).toBe(503);
    const [made] = await stripeRefundsOf(current, id);
    const again = await refund();
    expect(again.status).toBe(200);
    const answered = (await again.json()) as {
      refund: { id: string; amount: number };
      payment: { amountRefunded: number };
    };
    expect(answered.refund).toMatchObject({ id: made!.id, amount: 1000 });
    expect(answered.payment.amountRefunded).toBe(1000);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    const audited = auditRows(current, "payment.refund").map((row) => JSON.parse(row.detail));
    expect(audited.map((detail) => detail.refundId)).toEqual([made!.id]);
  });

  test("the refund found under a key must be of the payment, of the amount asked for and in its currency; the list must be read whole", async () => {
    current = buildPaymentsApp();
    const { id } = await paidPayment(current, 3000);
    const gateway = new StripeGateway(
      createStripe({ secretKey: STRIPE_TEST_KEY, apiUrl: current.stripe.url }),
    );
    const key = `palisade_refund_${id}_0_1000`;
    expect(await gateway.refundMadeUnder(id, 1000, "usd", key)).toEqual({
      ok: true,
      refund: null,
    });
    const made = await refundMadeAtStripe(current, id);
    expect(await gateway.refundMadeUnder(id, 1000, "usd", key)).toMatchObject({
      ok: true,
      refund: { id: made, amount: 1000, replayed: true },
    });
    // The same key asked with another amount: not this refund, and no walk past it.
    expect(await gateway.refundMadeUnder(id, 500, "usd", key)).toMatchObject({
      ok: false,
      kind: "bad_response",
    });
    // Of the amount asked for, but in another currency than the payment's.
    expect(await gateway.refundMadeUnder(id, 1000, "eur", key)).toEqual({
      ok: false,
      kind: "bad_response",
      reason: "refund currency",
    });
  });

  test("a kept server error whose refunds cannot be read whole (more than 100 of the payment) is 502 saying whether the refund was made is unknown, without Retry-After; no other key is tried", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    // 101 refunds of a cent made in Stripe's Dashboard: one read of the list holds 100.
    for (let made = 0; made < 101; made++) {
      const response = await fetch(`${current.stripe.url}/v1/refunds`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${STRIPE_TEST_KEY}`,
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ payment_intent: id, amount: "1" }).toString(),
      });
      expect(response.status).toBe(200);
    }
    const refund = refunding(id, admin);
    // The refund's 500, kept (the SDK's own retry is its replay).
    current.stripe.failNext("/v1/refunds", { status: 500 });
    const failed = await refund();
    expect(failed.status).toBe(502);
    expect(failed.headers.get("retry-after")).toBeNull();
    const problem = (await failed.json()) as { code: string; detail: string };
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(problem.detail).toContain("keeps for 24 hours");
    expect(problem.detail).toContain("whether the refund was made is unknown");
    const posted = current.stripe.calls.filter(
      (c) => c.method === "POST" && c.path === "/v1/refunds" && c.idempotencyKey !== null,
    );
    expect(new Set(posted.map((c) => c.idempotencyKey)).size).toBe(1);
    expect(await stripeRefundsOf(current, id)).toHaveLength(100);
  });

  test("a kept server error whose refunds could not be read for now (a 429) is 503 with Retry-After, and the retry reads them and makes the refund once (probe 60a F-LIST)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    // The refund's 500, kept (the SDK's own retry is its replay); then the list's 429.
    current.stripe.failNext("/v1/refunds", { status: 500 });
    current.stripe.failNext("/v1/refunds", { status: 429, shouldRetry: false });
    const failed = await refund();
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toBe("5");
    expect(((await failed.json()) as { detail: string }).detail).not.toContain("24 hours");
    expect((await refund()).status).toBe(200);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });

  test("walking past refusals stops 30 s into the request, inside the refund's claim; the next retry walks on (probe 33b F3)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    current.stripe.refundStatusNext("failed", "failed");
    expect((await refund()).status).toBe(502);
    expect((await refund()).status).toBe(502);
    expect(current.stripe.created("/v1/refunds")).toBe(2);
    // Stripe slow: its replay of the first refusal comes 31 s into the request.
    const before = refundCallsOf(current!);
    const held = current.stripe.holdNext("/v1/refunds");
    const slow = refund();
    await held.reached;
    clock.advance(31_000);
    held.release();
    expect((await slow).status).toBe(502);
    expect(refundCallsOf(current!) - before).toBe(1);
    // The next retry walks past both refusals, and the third key makes the refund.
    expect((await refund()).status).toBe(200);
    expect(current.stripe.created("/v1/refunds")).toBe(3);
  });

  test("a kept server error answered past 30 s into the request starts no read of the refunds: every call ends inside the refund's claim; the next retry reads them (probe 59d F2)", async () => {
    const clock = new ManualClock();
    current = buildPaymentsApp({ clock });
    const { admin, id } = await paidPayment(current, 3000);
    const refund = refunding(id, admin);
    // Stripe makes the refund and answers 500, 31 s into the request; the SDK's retry is its
    // replay of the 500 it keeps.
    current.stripe.failNext("/v1/refunds", { status: 500, executed: true });
    const held = current.stripe.holdNext("/v1/refunds");
    const slow = refund();
    await held.reached;
    clock.advance(31_000);
    held.release();
    const stopped = await slow;
    expect(stopped.status).toBe(503);
    expect(stopped.headers.get("retry-after")).toBe("5");
    expect(current.stripe.calls.filter((c) => c.method === "GET")).toHaveLength(0);
    const again = await refund();
    expect(again.status).toBe(200);
    expect(current.stripe.calls.filter((c) => c.method === "GET")).toHaveLength(1);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
  });

  test("a pending refund retried is Stripe's one refund replayed, audited once; a refund whose first answer was lost is audited by its replay (probe 59a F2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    const refund = refunding(id, admin);
    current.stripe.refundStatusNext("pending");
    const answers = [];
    for (let retry = 0; retry < 3; retry++) {
      const response = await refund();
      expect(response.status).toBe(200);
      answers.push(((await response.json()) as { refund: { id: string } }).refund.id);
    }
    expect(new Set(answers).size).toBe(1);
    expect(current.stripe.created("/v1/refunds")).toBe(1);
    const rows = auditRows(current, "payment.refund");
    expect(rows.map((row) => JSON.parse(row.detail).refundId)).toEqual([answers[0]]);

    // Stripe made a refund whose answer never reached Palisade (a timeout): the retry's replay is
    // the first Palisade hears of it, and is audited, once.
    const other = await paidPayment(current, 4000);
    current.stripe.refundStatusNext("pending");
    await refundMadeAtStripe(current, other.id);
    const refundOther = refunding(other.id, other.admin);
    for (let retry = 0; retry < 2; retry++) expect((await refundOther()).status).toBe(200);
    expect(current.stripe.created("/v1/refunds")).toBe(2);
    const audited = auditRows(current, "payment.refund").map((row) => JSON.parse(row.detail));
    expect(audited.map((detail) => detail.paymentId)).toEqual([id, other.id]);
  });

  test("audit rows written into the file neither keep a replayed refund out of the log nor fail it: a detail that is not JSON, a forged row naming the refund (probe 59c F2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 5000);
    current.stripe.refundStatusNext("pending");
    expect((await refunding(id, admin)()).status).toBe(200);
    current.db.$client.run("UPDATE audit_events SET detail = '{' WHERE type = 'payment.refund'");
    // A replay of that pending refund: answered, and not audited again only by a vouched row.
    expect((await refunding(id, admin)()).status).toBe(200);

    // A refund Stripe made whose answer was lost, and a row forged in the file naming it.
    const other = await paidPayment(current, 4000);
    current.stripe.refundStatusNext("pending");
    const refundId = await refundMadeAtStripe(current, other.id);
    current.db.$client.run(
      `INSERT INTO audit_events (at, type, actor, ip, route, request_id, outcome, detail, subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac)
       SELECT at, type, actor, ip, route, request_id, outcome, ?, subject_salt, subject_commit, prev_hash, hash, key_id, erasure_mac
       FROM audit_events WHERE type = 'payment.refund' LIMIT 1`,
      [JSON.stringify({ paymentId: other.id, refundId, amount: 1000 })],
    );
    expect((await refunding(other.id, other.admin)()).status).toBe(200);
    const named = auditRows(current, "payment.refund").filter(
      (row) => row.detail !== "{" && JSON.parse(row.detail).refundId === refundId,
    );
    // The forged row and the refund's own.
    expect(named).toHaveLength(2);
  });

  test("a refund the audit log cannot record is not made: with its id sequence written past 2^53 in the file, 500 and Stripe never asked (probe 60a F-AUD2)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    spendAuditIds(current);
    const response = await refunding(id, admin)();
    expect(response.status).toBe(500);
    expect(refundCallsOf(current)).toBe(0);
    // Nothing claimed: the payment is as it was.
    const row = current.db.$client
      .query<{ claim: number | null; refunded: number }, [string]>(
        "SELECT refund_started_at AS claim, amount_refunded AS refunded FROM payments WHERE id = ?",
      )
      .get(id);
    expect(row).toEqual({ claim: null, refunded: 0 });
  });

  test("an audit log that stops taking rows while Stripe makes the refund does not turn it into a 500: answered, recorded, the lost row logged with its content (probe 59d F3)", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current, 3000);
    const held = current.stripe.holdNext("/v1/refunds");
    const pending = refunding(id, admin)();
    await held.reached;
    spendAuditIds(current);
    held.release();
    const response = await pending;
    expect(response.status).toBe(200);
    const body = (await response.json()) as { payment: { amountRefunded: number } };
    expect(body.payment.amountRefunded).toBe(1000);
    expect(await stripeRefundsOf(current, id)).toHaveLength(1);
    const recorded = current.db.$client
      .query<{ refunded: number }, [string]>(
        "SELECT amount_refunded AS refunded FROM payments WHERE id = ?",
      )
      .get(id);
    expect(recorded?.refunded).toBe(1000);
    const lost = current.logs.entries.filter((entry) =>
      String(entry.msg).startsWith("audit row lost"),
    );
    expect(lost).toHaveLength(1);
    const [made] = await stripeRefundsOf(current, id);
    expect(lost[0]).toMatchObject({
      level: "error",
      type: "payment.refund",
      actor: `user:${admin.userId}`,
      detail: { paymentId: id, refundId: made!.id, amount: 1000, currency: "usd" },
    });
  });

  test("a pending refund is answered as pending and counted only when charge.refunded settles it", async () => {
    const target = withRefundStatus("pending").app;
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const id = await pay(target, alice);
    await succeed(target, id);
    const response = await send(target, `/api/admin/payments/${id}/refund`, {
      body: { amount: 1000 },
      headers: bearer(admin.accessToken),
    });
    expect(response.status).toBe(200);
    const answered = (await response.json()) as {
      refund: { status: string };
      payment: { amountRefunded: number; status: string };
    };
    expect(answered.refund.status).toBe("pending");
    expect(answered.payment).toMatchObject({ amountRefunded: 0, status: "succeeded" });
    const event = stripeEvent("charge.refunded", {
      id: "ch_settled1",
      object: "charge",
      payment_intent: id,
      amount_refunded: 1000,
    });
    const text = JSON.stringify(event);
    const delivered = await send(target, "/webhooks/stripe", {
      body: text,
      headers: { "stripe-signature": await signStripe(text) },
      peer: "54.187.174.169",
    });
    expect(delivered.status).toBe(200);
    const view = (await (
      await send(target, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
    ).json()) as { amountRefunded: number };
    expect(view.amountRefunded).toBe(1000);
  });
});

/** `who` erases the account while `held` keeps a Stripe call's answer back; then it goes. */
async function erasedWhileStripeHolds(
  target: PaymentsApp,
  who: { accessToken: string },
  held: { reached: Promise<void>; release(): void },
): Promise<void> {
  await held.reached;
  const erased = await send(target, "/api/me", {
    method: "DELETE",
    headers: bearer(who.accessToken),
  });
  expect(erased.status).toBe(204);
  held.release();
}

describe("erasure and an intent in flight exclude each other", () => {
  test("an intent Stripe is still making when the user erases their account keeps no personal data", async () => {
    current = buildPaymentsApp();
    const target = current;
    const alice = await signUp(target);
    const held = target.stripe.holdNext("/v1/payment_intents");
    const inFlight = createIntent(target, bearer(alice.accessToken), {
      amount: 3333,
      currency: "usd",
      customerEmail: "private.person@example.org",
      description: "for Jane Doe",
      metadata: { name: "Jane Doe" },
    });
    await erasedWhileStripeHolds(target, alice, held);
    // Answered as a request after the erasure is: its client secret handed to the erased
    // account's client made an intent it could pay with no owner or order left (probe 83a F2).
    const answer = await inFlight;
    expect(answer.status).toBe(401);
    const body = await answer.text();
    expect(JSON.parse(body).code).toBe("UNAUTHENTICATED");
    expect(body).not.toContain("secret");
    // And canceled at Stripe, so no one pays it.
    const [atStripe] = [...target.stripe.intents.values()];
    expect(atStripe).toMatchObject({ status: "canceled", cancellation_reason: "abandoned" });
    const rows = target.db.$client
      .query(
        "SELECT owner, customer_email, description, metadata, client_secret, status FROM payments",
      )
      .all() as Record<string, string | null>[];
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      customer_email: null,
      description: null,
      metadata: null,
      client_secret: null,
    });
    expect(rows[0]!.owner).not.toContain(alice.userId);
    const keys = target.db.$client.query("SELECT owner FROM payment_idempotency_keys").all();
    expect(keys).toEqual([]);
    const audit = auditRows(target, "payment.intent.created");
    expect(audit).toHaveLength(1);
    expect(audit[0]!.actor).not.toContain(alice.userId);
    // Erasure drops the address from the user's audit rows: the late one too, under the pseudonym
    // that links it to the rest of the erased history.
    expect(audit[0]!.ip).toBeNull();
    expect(auditRows(target, "privacy.erased")[0]!.actor).toBe(audit[0]!.actor);
    // The address is there for anyone not erased (so the assertion above can fail).
    const bob = await signUp(target);
    await pay(target, bob);
    expect(auditRows(target, "payment.intent.created")[1]!.ip).not.toBeNull();
  });

  test("a refund Stripe is making when the owner erases the account: the admin's answer holds none of what the erasure stripped (probe 87d F5)", async () => {
    current = buildPaymentsApp();
    const target = current;
    const alice = await signUp(target);
    const admin = await signUp(target, { role: "admin" });
    const made = await createIntent(target, bearer(alice.accessToken), {
      amount: 3000,
      currency: "usd",
      customerEmail: "private.person@example.org",
      description: "for Jane Doe",
      metadata: { name: "Jane Doe" },
    });
    const id = ((await made.json()) as { id: string }).id;
    await succeed(target, id);
    const held = target.stripe.holdNext("/v1/refunds");
    const refund = send(target, `/api/admin/payments/${id}/refund`, {
      body: { amount: 1000 },
      headers: bearer(admin.accessToken),
    });
    await erasedWhileStripeHolds(target, alice, held);
    const answer = await refund;
    expect(answer.status).toBe(200);
    const text = await answer.text();
    expect(JSON.parse(text).payment).toMatchObject({
      id,
      amountRefunded: 1000,
      description: null,
      customerEmail: null,
      metadata: null,
    });
    expect(text).not.toContain("Jane Doe");
    expect(text).not.toContain("private.person");
  });

  test("an intent asked for after the erasure, of a process not yet told of it, is refused 401 and stores nothing", async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    const other = untoldInstance(current, stripeEnvOf(current));
    try {
      const first = await createIntent(other, bearer(alice.accessToken), {
        amount: 1000,
        currency: "usd",
      });
      expect(first.status).toBe(201);
      await send(current, "/api/me", { method: "DELETE", headers: bearer(alice.accessToken) });
      // What the account feature holds decides, not the audit log's record of erasures, which
      // someone with the file could delete.
      current.db.$client.run("DELETE FROM audit_erased_actors");
      const late = await createIntent(other, bearer(alice.accessToken), {
        amount: 4444,
        currency: "usd",
        customerEmail: "private.person@example.org",
        description: "for Jane Doe",
      });
      expect(late.status).toBe(401);
      expect(((await late.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
      expect(current.stripe.created("/v1/payment_intents")).toBe(1);
      const sqlite = current.db.$client;
      const stored = JSON.stringify([
        sqlite.query("SELECT * FROM payments").all(),
        sqlite.query("SELECT * FROM payment_idempotency_keys").all(),
      ]);
      expect(stored).not.toContain(alice.userId);
      expect(stored).not.toContain("private.person@example.org");
    } finally {
      other.close();
    }
  });

  test("an intent asked by a key revoked, or a session logged out, in the second before a process not yet told reads it is refused 401: Stripe never asked, nothing claimed", async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    const { key, record } = createKey(current, ["payments"], alice.userId);
    const other = untoldInstance(current, stripeEnvOf(current));
    try {
      const viaKey = { "x-api-key": key };
      const viaSession = bearer(alice.accessToken);
      for (const headers of [viaKey, viaSession]) {
        const first = await createIntent(other, headers, { amount: 1000, currency: "usd" });
        expect(first.status).toBe(201);
      }
      expect(current.services.apiKeys.revoke(record.id, "test")).toBe(true);
      const loggedOut = await send(current, "/api/auth/logout", {
        headers: viaSession,
        body: { refreshToken: alice.refreshToken },
      });
      expect(loggedOut.status).toBeLessThan(300);
      const keysBefore = current.db.$client
        .query("SELECT count(*) AS n FROM payment_idempotency_keys")
        .get();
      for (const headers of [viaKey, viaSession]) {
        const late = await createIntent(other, headers, { amount: 4444, currency: "usd" });
        expect(late.status).toBe(401);
        expect(((await late.json()) as { code: string }).code).toBe("UNAUTHENTICATED");
        expect(late.headers.get("www-authenticate")).toBe(
          'Bearer realm="palisade", error="invalid_token"',
        );
      }
      expect(current.stripe.created("/v1/payment_intents")).toBe(2);
      expect(
        current.db.$client.query("SELECT count(*) AS n FROM payment_idempotency_keys").get(),
      ).toEqual(keysBefore);
    } finally {
      other.close();
    }
  });

  test("an intent that finishes before erasure is stripped by the erasure, as before", async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    await pay(current, alice);
    await send(current, "/api/me", { method: "DELETE", headers: bearer(alice.accessToken) });
    const rows = current.db.$client
      .query("SELECT owner, client_secret FROM payments")
      .all() as Record<string, string | null>[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.client_secret).toBeNull();
    expect(rows[0]!.owner).not.toContain(alice.userId);
  });
});

describe("a refund by an admin credential revoked in the second before this process reads it", () => {
  test("a revoked admin key and a logged-out admin session refund nothing: 401, Stripe never asked", async () => {
    current = buildPaymentsApp();
    const { admin, id } = await paidPayment(current);
    const { key, record } = createKey(current, ["admin"], admin.userId);
    const other = untoldInstance(current, stripeEnvOf(current));
    try {
      const viaKey = { "x-api-key": key };
      const viaToken = bearer(admin.accessToken);
      for (const headers of [viaKey, viaToken]) {
        expect((await send(other, "/api/admin/api-keys", { headers })).status).toBe(200);
      }
      await send(current, `/api/admin/api-keys/${record.id}`, {
        method: "DELETE",
        headers: viaToken,
      });
      await send(current, "/api/auth/logout", {
        headers: viaToken,
        body: { refreshToken: admin.refreshToken },
      });
      for (const headers of [viaKey, viaToken]) {
        const refund = await send(other, `/api/admin/payments/${id}/refund`, {
          headers,
          body: { amount: 1000 },
        });
        expect(refund.status).toBe(401);
      }
      expect(current.stripe.calls.filter((c) => c.path === "/v1/refunds")).toHaveLength(0);
    } finally {
      other.close();
    }
  });
});

describe("an ownerless key's payments across rotation", () => {
  test("an ownerless successor keeps its predecessor's payments and Idempotency-Keys", async () => {
    current = buildPaymentsApp();
    const operator = createKey(current, ["admin"], null);
    const old = createKey(current, ["payments"], null);
    const body = { amount: 2222, currency: "usd" };
    const first = await createIntent(current, { "x-api-key": old.key }, body, "order-77");
    expect(first.status).toBe(201);
    const firstId = ((await first.json()) as { id: string }).id;

    const rotated = await send(current, `/api/admin/api-keys/${old.record.id}/rotate`, {
      body: { graceMinutes: 5 },
      headers: { "x-api-key": operator.key },
    });
    expect(rotated.status).toBe(201);
    const successor = (await rotated.json()) as { key: string; apiKey: { id: string } };
    // Rotate the successor too: the chain is followed to its first key.
    const again = await send(current, `/api/admin/api-keys/${successor.apiKey.id}/rotate`, {
      body: { graceMinutes: 5 },
      headers: { "x-api-key": operator.key },
    });
    const third = ((await again.json()) as { key: string }).key;

    for (const key of [successor.key, third]) {
      const retry = await createIntent(current, { "x-api-key": key }, body, "order-77");
      expect(retry.status).toBe(201);
      expect(retry.headers.get("idempotent-replayed")).toBe("true");
      expect(((await retry.json()) as { id: string }).id).toBe(firstId);
      const read = await send(current, `/api/payments/${firstId}`, {
        headers: { "x-api-key": key },
      });
      expect(read.status).toBe(200);
    }
    expect(current.stripe.created("/v1/payment_intents")).toBe(1);

    // Its first key revoked outright, the chain's last key still pays: an ownerless key is no
    // account an erasure can take.
    const revoked = await send(current, `/api/admin/api-keys/${old.record.id}`, {
      method: "DELETE",
      headers: { "x-api-key": operator.key },
    });
    expect(revoked.status).toBeLessThan(300);
    const after = await createIntent(current, { "x-api-key": third }, body, "order-78");
    expect(after.status).toBe(201);
  });

  test("a rotation link pointed elsewhere, cut, or its old key deleted in the database file moves no payment (probes 19b, 19c)", async () => {
    current = buildPaymentsApp();
    const operator = createKey(current, ["admin"], null);
    const shopA = createKey(current, ["payments"], null);
    const shopB = createKey(current, ["payments"], null);
    const body = { amount: 4200, currency: "usd", metadata: { order: "order-43" } };
    const paid = await createIntent(current, { "x-api-key": shopA.key }, body, "order-43");
    expect(paid.status).toBe(201);
    const paidId = ((await paid.json()) as { id: string }).id;
    const rotated = await send(current, `/api/admin/api-keys/${shopA.record.id}/rotate`, {
      body: { graceMinutes: 5 },
      headers: { "x-api-key": operator.key },
    });
    const successor = (await rotated.json()) as { key: string; apiKey: { id: string } };
    const sqlite = current.db.$client;
    const owns = async (key: string) => {
      const read = await send(current!, `/api/payments/${paidId}`, {
        headers: { "x-api-key": key },
      });
      return read.status;
    };
    expect(await owns(successor.key)).toBe(200);
    // Without any secret: A "replaced by" B instead (B gains nothing), then the link cut, then the
    // old key deleted (the successor loses nothing, and its retry replays the same intent).
    sqlite.run("UPDATE api_keys SET replaced_by = ? WHERE id = ?", [
      shopB.record.id,
      shopA.record.id,
    ]);
    expect(await owns(shopB.key)).toBe(404);
    expect(await owns(successor.key)).toBe(200);
    sqlite.run("UPDATE api_keys SET replaced_by = NULL WHERE id = ?", [shopA.record.id]);
    expect(await owns(successor.key)).toBe(200);
    sqlite.run("DELETE FROM api_keys WHERE id = ?", [shopA.record.id]);
    expect(await owns(successor.key)).toBe(200);
    const retry = await createIntent(current, { "x-api-key": successor.key }, body, "order-43");
    expect(retry.status).toBe(201);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    expect(((await retry.json()) as { id: string }).id).toBe(paidId);
    const replay = await createIntent(current, { "x-api-key": shopB.key }, body, "order-43");
    expect(((await replay.json()) as { id: string }).id).not.toBe(paidId);
    expect(current.stripe.created("/v1/payment_intents")).toBe(2);
  });

  test("a key's lineage written into the database file reaches no payment: 401, reported once", async () => {
    current = buildPaymentsApp();
    const shopA = createKey(current, ["payments"], null);
    const shopB = createKey(current, ["payments"], null);
    const paid = await createIntent(
      current,
      { "x-api-key": shopA.key },
      { amount: 4200, currency: "usd" },
    );
    const paidId = ((await paid.json()) as { id: string }).id;
    const sqlite = current.db.$client;
    // B claims A's lineage: unsealed, with a made-up seal, with A's own seal (over A's id), none.
    const aSeal = (
      sqlite.query("SELECT lineage_seal AS s FROM api_keys WHERE id = ?").get(shopA.record.id) as {
        s: string;
      }
    ).s;
    for (const lineageSeal of [null, "x".repeat(43), aSeal]) {
      sqlite.run("UPDATE api_keys SET lineage = ?, lineage_seal = ? WHERE id = ?", [
        shopA.record.id,
        lineageSeal,
        shopB.record.id,
      ]);
      const read = await send(current, `/api/payments/${paidId}`, {
        headers: { "x-api-key": shopB.key },
      });
      expect(read.status).toBe(401);
      const listed = await send(current, "/api/payments", { headers: { "x-api-key": shopB.key } });
      expect(listed.status).toBe(401);
    }
    sqlite.run("UPDATE api_keys SET lineage = NULL, lineage_seal = NULL WHERE id = ?", [
      shopB.record.id,
    ]);
    const created = await createIntent(
      current,
      { "x-api-key": shopB.key },
      { amount: 100, currency: "usd" },
    );
    expect(created.status).toBe(401);
    expect(current.stripe.created("/v1/payment_intents")).toBe(1);
    const reports = sqlite
      .query<{ detail: string }, []>(
        "SELECT detail FROM audit_events WHERE type = 'auth.credential_tampered'",
      )
      .all()
      .map((row) => JSON.parse(row.detail));
    expect(reports).toEqual([{ table: "api_keys", id: shopB.record.id, part: "lineage" }]);
  });

  test("a bootstrap key's row deleted from the database file comes back at the next start with its payments (probe 19d F1)", async () => {
    const key = generateApiKey("live");
    current = buildPaymentsApp({ env: { API_KEYS: `${key}:payments` } });
    const body = { amount: 4200, currency: "usd" };
    const paid = await createIntent(current, { "x-api-key": key }, body, "order-9");
    expect(paid.status).toBe(201);
    const paidId = ((await paid.json()) as { id: string }).id;
    const sqlite = current.db.$client;
    const before = sqlite.query("SELECT id, lineage FROM api_keys").get() as {
      id: string;
      lineage: string;
    };
    sqlite.run("DELETE FROM api_keys");
    // The next start adds it back from API_KEYS, under another id and the same lineage.
    const restarted = secondProcess(current);
    try {
      const after = sqlite.query("SELECT id, lineage FROM api_keys").get() as {
        id: string;
        lineage: string;
      };
      expect(after.id).not.toBe(before.id);
      expect(after.lineage).toBe(before.lineage);
      const read = await send(restarted, `/api/payments/${paidId}`, {
        headers: { "x-api-key": key },
      });
      expect(read.status).toBe(200);
      const retry = await createIntent(restarted, { "x-api-key": key }, body, "order-9");
      expect(retry.headers.get("idempotent-replayed")).toBe("true");
      expect(current.stripe.created("/v1/payment_intents")).toBe(1);
    } finally {
      restarted.close();
    }
  });

  test("another ownerless key is another owner", async () => {
    current = buildPaymentsApp();
    const one = createKey(current, ["payments"], null);
    const other = createKey(current, ["payments"], null);
    const created = await createIntent(
      current,
      { "x-api-key": one.key },
      { amount: 1000, currency: "usd" },
    );
    const id = ((await created.json()) as { id: string }).id;
    const read = await send(current, `/api/payments/${id}`, {
      headers: { "x-api-key": other.key },
    });
    expect(read.status).toBe(404);
  });
});
