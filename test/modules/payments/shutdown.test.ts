/**
 * A payment still waiting on Stripe when the stop's drain time is up is waited for, recorded and
 * answered, not cut with no answer and its Idempotency-Key left "in progress" for two minutes
 * (probe 30d F5).
 */
import { afterEach, expect, test } from "bun:test";
import { trackedGateway } from "../../../src/modules/payments/calls-in-flight";
import {
  type CreatedIntent,
  createStripe,
  type GatewayResult,
  type PaymentGateway,
  STRIPE_MAX_NETWORK_RETRIES,
  StripeGateway,
  stripeCallMaxMs,
} from "../../../src/modules/payments/stripe-client";
import { serveInProcess } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import {
  auditRows,
  buildPaymentsApp,
  newIdempotencyKey,
  type PaymentsApp,
  paidPayment,
  STRIPE_TEST_KEY,
} from "../../support/payments";
import { startFakeStripe } from "../../support/stripe-server";
import { waitFor } from "../../support/wait";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** An intent of 4200 asked of the server at `url` under Idempotency-Key `key`. */
function askIntent(url: URL | string, accessToken: string, key: string) {
  return fetch(new URL("/api/payments/intents", url), {
    method: "POST",
    headers: {
      ...bearer(accessToken),
      "content-type": "application/json",
      "idempotency-key": key,
    },
    body: JSON.stringify({ amount: 4200, currency: "usd" }),
  });
}

/** `target` served, its drain 200 ms, then the calls to Stripe in flight waited for. */
function servedWithShortDrain(target: PaymentsApp) {
  return serveInProcess(target, {
    drainTimeoutMs: 200,
    onDrainTimeout: () => target.services.endInFlight(),
  });
}

test("a payment at Stripe when the drain ends is answered with its intent before the connections are cut", async () => {
  const target = buildPaymentsApp();
  current = target;
  const user = await signUp(target);
  const server = servedWithShortDrain(target);
  const held = target.stripe.holdNext("/v1/payment_intents");
  const key = newIdempotencyKey();
  const answer = askIntent(server.url, user.accessToken, key);
  await held.reached;
  const stopped = server.shutdown("test");
  // Stripe answers well after the drain's 200 ms and the half second connections get to leave.
  await Bun.sleep(1_500);
  held.release();
  const response = await answer;
  expect(response.status).toBe(201);
  const body = (await response.json()) as { id: string; status: string };
  expect(body.status).toBeString();
  await stopped;
  expect(target.logs.entries.map((entry) => entry.msg)).not.toContain(
    "drain timed out; closing connections",
  );
  const claim = target.db.$client
    .query<{ n: number }, []>("SELECT count(*) AS n FROM payments")
    .get();
  expect(claim?.n).toBe(1);
});

test("a refund whose call at Stripe is answered after the drain by a server error Stripe keeps is still found, recorded and answered: the read of the refunds it starts is waited for (probe 59d F1)", async () => {
  const target = buildPaymentsApp();
  current = target;
  const { admin, id } = await paidPayment(target, 3000);
  const server = servedWithShortDrain(target);
  const refund = () =>
    fetch(new URL(`/api/admin/payments/${id}/refund`, server.url), {
      method: "POST",
      headers: { ...bearer(admin.accessToken), "content-type": "application/json" },
      body: JSON.stringify({ amount: 1000 }),
    });
  // Stripe makes the refund and answers 500, which it keeps for the key; the SDK's own retry is
  // its replay, then the payment's refunds are read. The first call is at Stripe when the stop
  // begins; the replay and the read come after the drain, each slowly.
  target.stripe.failNext("/v1/refunds", { status: 500, executed: true });
  const first = target.stripe.holdNext("/v1/refunds");
  const answer = refund();
  await first.reached;
  const stopped = server.shutdown("test");
  await Bun.sleep(700);
  const replay = target.stripe.holdNext("/v1/refunds");
  first.release();
  await replay.reached;
  const list = target.stripe.holdNext("/v1/refunds");
  replay.release();
  await list.reached;
  await Bun.sleep(700);
  list.release();
  const response = await answer;
  expect(response.status).toBe(200);
  const body = (await response.json()) as {
    refund: { id: string };
    payment: { amountRefunded: number };
  };
  expect(body.payment.amountRefunded).toBe(1000);
  await stopped;
  const audited = auditRows(target, "payment.refund").map((row) => JSON.parse(row.detail));
  expect(audited.map((detail) => detail.refundId)).toEqual([body.refund.id]);
  const recorded = target.db.$client
    .query<{ refunded: number }, [string]>(
      "SELECT amount_refunded AS refunded FROM payments WHERE id = ?",
    )
    .get(id);
  expect(recorded?.refunded).toBe(1000);
});

test("the wait for calls in flight ends at its bound, and at once when none is in flight; after it no call starts", async () => {
  let answer!: (result: GatewayResult<CreatedIntent>) => void;
  let asked = 0;
  const never: PaymentGateway = {
    createIntent: () => {
      asked++;
      return new Promise((resolve) => {
        answer = resolve;
      });
    },
    refund: () => Promise.reject(new Error("unused")),
    refundMadeUnder: () => Promise.reject(new Error("unused")),
    cancelIntent: () => Promise.reject(new Error("unused")),
  };
  const idle = trackedGateway(never);
  const started = performance.now();
  await idle.settled(50);
  expect(performance.now() - started).toBeLessThan(30);
  // Stopped: a call is answered as Stripe down would be, and never reaches the gateway.
  expect(await idle.gateway.createIntent({ amount: 1, currency: "usd" } as never, "k")).toEqual({
    ok: false,
    kind: "unavailable",
    reason: "stopping",
  });
  expect(asked).toBe(0);

  const busy = trackedGateway(never);
  const call = busy.gateway.createIntent({ amount: 1, currency: "usd" } as never, "k");
  const waited = performance.now();
  await busy.settled(100);
  expect(performance.now() - waited).toBeGreaterThanOrEqual(90);
  answer({ ok: false, kind: "unavailable", reason: "timeout" });
  await call;
  expect(asked).toBe(1);
});

test("a request that claims an Idempotency-Key given back after the stop's wait ended calls no Stripe: 503, the key given back (probe 60a F-STOP)", async () => {
  const target = buildPaymentsApp();
  current = target;
  const user = await signUp(target);
  const server = servedWithShortDrain(target);
  const key = newIdempotencyKey();
  const ask = () =>
    askIntent(server.url, user.accessToken, key).then(
      (response) => response.status,
      () => "cut",
    );
  const first = target.stripe.holdNext("/v1/payment_intents");
  const a = ask();
  await first.reached;
  // The second waits for the first's claim.
  const b = ask();
  await Bun.sleep(100);
  const stopped = server.shutdown("test");
  await Bun.sleep(400);
  // The first's call fails (a 503 Stripe keeps nothing of): it gives the key back, which the
  // second then claims.
  target.stripe.failNext("/v1/payment_intents", { status: 503, shouldRetry: false });
  first.release();
  await stopped;
  // The first is answered before the cut (the test above); the second's answer may be cut with its
  // connection, and what matters is what it did.
  await Promise.all([a, b]);
  const claims = () =>
    target.db.$client
      .query<{ state: string }, [string]>(
        "SELECT state FROM payment_idempotency_keys WHERE key = ?",
      )
      .all(key)
      .map((row) => row.state);
  // No claim is left in progress (the bug: the second's claim stayed pending, its intent unrecorded).
  await waitFor(() => claims().every((state) => state === "done"), {
    what: "no claim left in progress",
    timeoutMs: 12_000,
  });
  const intentCalls = target.stripe.calls.filter((c) => c.path === "/v1/payment_intents");
  if (claims().length === 0) {
    // The second claimed the key given back once the stop's wait had ended: refused at once, no
    // call to Stripe, the key given back too.
    expect(intentCalls).toHaveLength(1);
    expect(target.logs.text).toContain('"reason":"stopping"');
  } else {
    // On a loaded machine the second can claim it while the wait still runs (calls started then
    // are waited for, by design): its call was made, recorded and answered.
    expect(intentCalls).toHaveLength(2);
    expect(await b).toBe(201);
  }
}, 20_000);

test("the stop waits for a call through every attempt the client makes: a call on its retry is answered, not cut (probe 83c F1)", async () => {
  const stripe = startFakeStripe();
  try {
    // The client as the service makes it, with a short timeout so its retries come quickly.
    const timeoutMs = 300;
    const client = new StripeGateway(
      createStripe({ secretKey: STRIPE_TEST_KEY, apiUrl: stripe.url, timeoutMs }),
    );
    const callOf = (callMaxMs: number) => {
      const tracked = trackedGateway(client, { callMaxMs });
      let answered: GatewayResult<CreatedIntent> | null = null;
      const call = tracked.gateway
        .createIntent({ amount: 4200, currency: "usd" }, newIdempotencyKey())
        .then((result) => {
          answered = result;
        });
      return { tracked, call, answered: () => answered };
    };
    // Two attempts time out (held past the timeout); the third is answered.
    const twoSlowAttempts = async () => {
      const first = stripe.holdNext("/v1/payment_intents");
      await first.reached;
      const second = stripe.holdNext("/v1/payment_intents");
      return { second, release: () => first.release() };
    };

    // As before: the wait was one attempt's timeout, and the stop cut the call on its retry.
    const before = callOf(timeoutMs);
    const slowBefore = twoSlowAttempts();
    await (await slowBefore).second.reached.then(() => {});
    await before.tracked.settled();
    expect(before.answered()).toBeNull();
    await before.call;
    (await slowBefore).release();
    (await slowBefore).second.release();

    // Now: as long as every attempt of the call can take.
    const now = callOf(stripeCallMaxMs(timeoutMs, STRIPE_MAX_NETWORK_RETRIES));
    const slowNow = await twoSlowAttempts();
    await now.tracked.settled();
    expect(now.answered()).toMatchObject({ ok: true, amount: 4200 });
    slowNow.release();
    slowNow.second.release();
  } finally {
    stripe.stop();
  }
}, 20_000);
