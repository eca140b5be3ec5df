/**
 * Findings of the payments / Stripe-webhook probe (branch probe-pay). Each test states what the
 * README promises and fails on the code as probed; none of them changes the service.
 */
import { afterEach, expect, test } from "bun:test";
import { send } from "../../support/app";
import { bearer, createKey, type Session, signUp } from "../../support/auth";
import {
  buildPaymentsApp,
  createIntent,
  type PaymentsApp,
  signStripe,
  stripeEvent,
  succeed,
} from "../../support/payments";

let current: PaymentsApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

async function pay(target: PaymentsApp, who: Session, amount = 5000): Promise<string> {
  const response = await createIntent(target, bearer(who.accessToken), { amount, currency: "usd" });
  expect(response.status).toBe(201);
  return ((await response.json()) as { id: string }).id;
}

function stripeRefundAmounts(target: PaymentsApp): string[] {
  return target.stripe.calls
    .filter((c) => c.path === "/v1/refunds")
    .map((c) => c.params.amount ?? "");
}

// Finding 1 (medium): a refund body that is valid JSON but not an object is read as "no body",
// i.e. "refund everything that is left". A client that wraps `{amount}` in an array (or sends a
// bare number) to refund 100 refunds the whole payment instead. README: `{amount?}` (the rest
// when absent); "Any other field is 422 … a misspelt field must not become a payment without it".
for (const raw of ['[{"amount":100}]', "100", '"100"', "null", "[]", "true"]) {
  test(`a refund body ${raw} is refused (422), not read as "refund the whole payment"`, async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    const admin = await signUp(current, { role: "admin" });
    const id = await pay(current, alice);
    await succeed(current, id);

    const response = await send(current, `/api/admin/payments/${id}/refund`, {
      body: raw,
      headers: bearer(admin.accessToken),
    });
    expect(response.status).toBe(422);
    expect(stripeRefundAmounts(current)).toEqual([]);
  });
}

// Finding 2 (medium): media types are case-insensitive (RFC 9110 §8.3.1) and the request guard
// accepts `Application/JSON`, but the guard's JSON parser only takes the exact string
// `application/json`; the body then reaches the refund route as text and `{"amount":100}`
// becomes a refund of the whole remaining amount.
test("a partial refund sent with Content-Type Application/JSON refunds the amount asked, not everything", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const admin = await signUp(current, { role: "admin" });
  const id = await pay(current, alice, 5000);
  await succeed(current, id);

  const response = await send(current, `/api/admin/payments/${id}/refund`, {
    body: '{"amount":100}',
    headers: { ...bearer(admin.accessToken), "content-type": "Application/JSON" },
  });
  // Either honoured as JSON (a refund of 100) or refused before Stripe; never 5000.
  if (response.status === 200) {
    expect(stripeRefundAmounts(current)).toEqual(["100"]);
  } else {
    expect([400, 415, 422]).toContain(response.status);
    expect(stripeRefundAmounts(current)).toEqual([]);
  }
});

// Finding 2b (low): the same parser gap makes a correctly signed Stripe delivery with an
// upper-case media type fail verification (the raw text is never kept), answered 400
// BAD_SIGNATURE and counted/audited as a forgery.
test("a correctly signed webhook with Content-Type Application/JSON is not reported as a bad signature", async () => {
  current = buildPaymentsApp();
  const text = JSON.stringify(stripeEvent("customer.created", { id: "cus_1", object: "customer" }));
  const response = await send(current, "/webhooks/stripe", {
    body: text,
    headers: { "stripe-signature": await signStripe(text), "content-type": "Application/JSON" },
    peer: "54.187.174.169",
  });
  expect(response.status).not.toBe(400);
});

// Finding 3 (low): `metadata` sent as a string passes validation and is turned into an object of
// its characters: `"metadata":"ab"` becomes Stripe metadata `{0:"a",1:"b"}` and is stored so.
// README: metadata is an object of string values; other shapes must be refused, not changed.
test('"metadata": "<string>" is refused (422) and never reaches Stripe as per-character keys', async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const response = await createIntent(current, bearer(alice.accessToken), {
    amount: 1000,
    currency: "usd",
    metadata: "order-42",
  });
  expect(response.status).toBe(422);
  expect(current.stripe.created("/v1/payment_intents")).toBe(0);
});

// Finding 4 (low): a `__proto__` metadata key is silently dropped (and its value, an object, is
// never checked to be a string): the payment is made without metadata the client sent.
test("a __proto__ metadata key is refused rather than silently dropped", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  const response = await createIntent(
    current,
    bearer(alice.accessToken),
    '{"amount":1000,"currency":"usd","metadata":{"__proto__":{"nested":"object"},"a":"b"}}',
  );
  expect(response.status).toBe(422);
  expect(current.stripe.created("/v1/payment_intents")).toBe(0);
});

// Finding 5 (low): `amount` is documented as an integer, but strings are coerced with Number():
// "0x3e8" (hex), " 1000 " and "1e3" all become a 1000-cent intent.
for (const amount of ["0x3e8", " 1000 ", "1e3", "1000"]) {
  test(`amount ${JSON.stringify(amount)} (a string) is refused (422)`, async () => {
    current = buildPaymentsApp();
    const alice = await signUp(current);
    const response = await createIntent(current, bearer(alice.accessToken), {
      amount,
      currency: "usd",
    });
    expect(response.status).toBe(422);
    expect(current.stripe.created("/v1/payment_intents")).toBe(0);
  });
}

// Finding 6 (medium, availability): correctly signed deliveries count as address violations. A
// burst of more than RATE_LIMIT_BURST (20 per 10 s) genuine events from one Stripe address is
// 429'd, and five of those 429s auto-block Stripe's address for 15 minutes (then 1 h, then 24 h
// within a week), so every later event from it — signed or not — is 403 IP_BLOCKED. The README
// only says "raise RATE_LIMIT_WEBHOOKS if a burst meets 429s"; it does not say the sender gets
// blocked, and raising RATE_LIMIT_WEBHOOKS does not lift the burst window.
test("genuine, correctly signed Stripe deliveries never get Stripe's address blocked", async () => {
  current = buildPaymentsApp({
    env: {
      RATE_LIMIT_PER_MINUTE: "60",
      RATE_LIMIT_BURST: "20",
      RATE_LIMIT_WEBHOOKS: "30",
      IP_BLOCK_RATE_LIMIT_REFUSALS: "5",
    },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) {
    const text = JSON.stringify(
      stripeEvent("customer.created", { id: `cus_${i}`, object: "customer" }),
    );
    const response = await send(current, "/webhooks/stripe", {
      body: text,
      headers: {
        "stripe-signature": await signStripe(text),
        "content-type": "application/json; charset=utf-8",
      },
      peer: "54.187.174.169",
    });
    statuses.push(response.status);
  }
  expect(statuses).not.toContain(403);
});

// Finding 6b (medium): the README's remedy — "raise RATE_LIMIT_WEBHOOKS if a burst of events (a
// bulk refund) meets 429s" — does not work: the default policy (RATE_LIMIT_PER_MINUTE, 60 per
// address) and the burst window (RATE_LIMIT_BURST, 20 per 10 s) still apply to the webhook, so
// with RATE_LIMIT_WEBHOOKS=1000 the 21st delivery in 10 s is 429 and the 26th is 403 IP_BLOCKED.
test("with RATE_LIMIT_WEBHOOKS raised as the README advises, a burst of 100 signed events is accepted", async () => {
  current = buildPaymentsApp({
    env: {
      RATE_LIMIT_PER_MINUTE: "60",
      RATE_LIMIT_BURST: "20",
      RATE_LIMIT_WEBHOOKS: "1000",
      IP_BLOCK_RATE_LIMIT_REFUSALS: "5",
    },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 100; i++) {
    const text = JSON.stringify(
      stripeEvent("charge.refunded", {
        id: `ch_bulk${i}`,
        object: "charge",
        payment_intent: `pi_bulk${i}`,
        amount_refunded: 100,
      }),
    );
    const response = await send(current, "/webhooks/stripe", {
      body: text,
      headers: {
        "stripe-signature": await signStripe(text),
        "content-type": "application/json; charset=utf-8",
      },
      peer: "54.187.174.169",
    });
    statuses.push(response.status);
  }
  expect(statuses.filter((s) => s !== 200)).toEqual([]);
});

// Finding 7 (low): an ownerless key's payments and Idempotency-Keys belong to `key:<id>`, so a
// rotation (meant to be seamless: "the old one works until the grace ends") gives the successor
// another owner. A client that retries a request with the same Idempotency-Key after switching
// to the successor gets a second Stripe intent, and the successor cannot read the payments its
// predecessor made.
test("after rotating an ownerless payments key, a retry with the same Idempotency-Key is not a second intent", async () => {
  current = buildPaymentsApp();
  const admin = await signUp(current, { role: "admin" });
  const old = createKey(current, ["payments"], null);
  const body = { amount: 2222, currency: "usd" };
  const first = await createIntent(current, { "x-api-key": old.key }, body, "order-77");
  expect(first.status).toBe(201);
  const firstId = ((await first.json()) as { id: string }).id;

  const rotated = await send(current, `/api/admin/api-keys/${old.record.id}/rotate`, {
    body: { graceMinutes: 5 },
    headers: bearer(admin.accessToken),
  });
  expect(rotated.status).toBe(201);
  const successor = ((await rotated.json()) as { key: string }).key;

  const retry = await createIntent(current, { "x-api-key": successor }, body, "order-77");
  expect(retry.status).toBe(201);
  expect(((await retry.json()) as { id: string }).id).toBe(firstId);
  expect(current.stripe.created("/v1/payment_intents")).toBe(1);
});

// Finding 8 (low–medium, privacy): erasure (DELETE /api/me) racing an intent that is still with
// Stripe misses it. The erasure re-owns and strips the rows that exist; the in-flight request then
// inserts its row under `user:<erased id>` with the customer email, description and client
// secret the erasure was meant to remove (and audits payment.intent.created for the erased user).
test("an intent in flight when the user erases their account does not leave their data behind", async () => {
  current = buildPaymentsApp();
  const alice = await signUp(current);
  current.stripe.delayMs = 400;
  const inFlight = createIntent(current, bearer(alice.accessToken), {
    amount: 3333,
    currency: "usd",
    customerEmail: "private.person@example.org",
    description: "for Jane Doe",
  });
  await Bun.sleep(100);
  const erased = await send(current, "/api/me", {
    method: "DELETE",
    headers: bearer(alice.accessToken),
  });
  expect(erased.status).toBe(204);
  await inFlight;
  current.stripe.delayMs = 0;
  const rows = current.db.$client
    .query("SELECT owner, customer_email, description, client_secret FROM payments")
    .all() as Record<string, string | null>[];
  for (const row of rows) {
    expect(row.owner).not.toBe(`user:${alice.userId}`);
    expect(row.customer_email).toBeNull();
    expect(row.description).toBeNull();
    expect(row.client_secret).toBeNull();
  }
});

// Finding 9 (low): the refund's own status from Stripe is never looked at. A refund Stripe answers
// as `failed` (or `canceled`) is recorded as money returned: amountRefunded grows, a full one
// makes the payment `refunded` (final: it never leaves it), and no later event can undo it
// (charge.refunded only ever grows the total), so the payment can never be refunded for real.
test("a refund Stripe reports as failed is not recorded as refunded", async () => {
  const upstream = buildPaymentsApp();
  const proxy = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const url = new URL(request.url);
      const answer = await fetch(`${upstream.stripe.url}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body: request.method === "GET" ? undefined : await request.text(),
      });
      const text = await answer.text();
      if (url.pathname !== "/v1/refunds" || answer.status !== 200) {
        return new Response(text, { status: answer.status, headers: answer.headers });
      }
      return Response.json({ ...JSON.parse(text), status: "failed", failure_reason: "unknown" });
    },
  });
  try {
    current = buildPaymentsApp({ env: { STRIPE_API_URL: `http://127.0.0.1:${proxy.port}` } });
    const alice = await signUp(current);
    const admin = await signUp(current, { role: "admin" });
    const id = await pay(current, alice, 5000);
    await succeed(current, id);
    await send(current, `/api/admin/payments/${id}/refund`, {
      body: {},
      headers: bearer(admin.accessToken),
    });
    const view = (await (
      await send(current, `/api/payments/${id}`, { headers: bearer(alice.accessToken) })
    ).json()) as { status: string; amountRefunded: number };
    expect(view.amountRefunded).toBe(0);
    expect(view.status).toBe("succeeded");
  } finally {
    proxy.stop(true);
    upstream.close();
  }
});
