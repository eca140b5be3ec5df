/**
 * Webhook routes are limited by RATE_LIMIT_WEBHOOKS alone (per address, per minute): not also by
 * the default policy nor RATE_LIMIT_BURST, and a refusal there never blocks the sender's address
 * (Stripe and Meta are signature-verified and retry).
 */
import { afterEach, expect, test } from "bun:test";
import { buildTestApp, send, type TestApp } from "../../support/app";
import { buildPaymentsApp, signStripe, stripeEvent } from "../../support/payments";
import {
  notification,
  ScriptedChat,
  sign,
  WHATSAPP_PATH,
  whatsappEnv,
} from "../../support/whatsapp";

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

const STRIPE_PEER = "54.187.174.169";
const TIGHT = {
  RATE_LIMIT_PER_MINUTE: "60",
  RATE_LIMIT_BURST: "20",
  IP_BLOCK_RATE_LIMIT_REFUSALS: "5",
};

async function stripeDelivery(target: TestApp, i: number) {
  const text = JSON.stringify(
    stripeEvent("charge.refunded", {
      id: `ch_bulk${i}`,
      object: "charge",
      payment_intent: `pi_bulk${i}`,
      amount_refunded: 100,
    }),
  );
  return send(target, "/webhooks/stripe", {
    body: text,
    headers: {
      "stripe-signature": await signStripe(text),
      "content-type": "application/json; charset=utf-8",
    },
    peer: STRIPE_PEER,
  });
}

async function burst(count: number, one: (i: number) => Promise<Response>) {
  return Promise.all(Array.from({ length: count }, (_, i) => one(i).then((r) => r.status)));
}

test("RATE_LIMIT_WEBHOOKS=1000 admits a concurrent burst of 200 Stripe deliveries from one address", async () => {
  current = buildPaymentsApp({ env: { ...TIGHT, RATE_LIMIT_WEBHOOKS: "1000" } });
  const target = current;
  const statuses = await burst(200, (i) => stripeDelivery(target, i));
  expect(statuses.filter((s) => s !== 200)).toEqual([]);
});

test("the documented limit refuses exactly past it, and the refusals block nobody", async () => {
  current = buildPaymentsApp({ env: { ...TIGHT, RATE_LIMIT_WEBHOOKS: "30" } });
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) statuses.push((await stripeDelivery(current, i)).status);
  expect(statuses.slice(0, 30)).toEqual(Array(30).fill(200));
  // Ten refusals, twice IP_BLOCK_RATE_LIMIT_REFUSALS: still 429 (retry later), never 403.
  expect(statuses.slice(30)).toEqual(Array(10).fill(429));
  const blocks = current.db.$client.query("SELECT * FROM ip_blocks").all();
  expect(blocks).toEqual([]);
  // A flood costs one audit row per address and window, not one per refused request.
  current.services.audit.flush();
  const audited = current.db.$client
    .query("SELECT count(*) AS n FROM audit_events WHERE type = 'ratelimit.rejected'")
    .get() as { n: number };
  expect(audited.n).toBe(1);
  // Other routes from that address are not blocked either.
  const health = await send(current, "/health", { peer: STRIPE_PEER });
  expect(health.status).not.toBe(403);
});

test("WhatsApp deliveries follow the same limit: 100 concurrent signed notifications with RATE_LIMIT_WEBHOOKS=500", async () => {
  current = buildTestApp({
    env: whatsappEnv(null, { ...TIGHT, RATE_LIMIT_WEBHOOKS: "500" }),
    whatsapp: { chat: new ScriptedChat() },
  });
  const target = current;
  const statuses = await burst(100, async (i) => {
    const body = JSON.stringify(notification({ statuses: [{ id: `wamid.${i}`, status: "read" }] }));
    return send(target, WHATSAPP_PATH, {
      body,
      headers: { "x-hub-signature-256": sign(body), "content-type": "Application/JSON" },
      peer: "173.252.88.1",
    });
  });
  expect(statuses.filter((s) => s !== 200)).toEqual([]);
});

test("other routes keep the default policy and its burst, and their refusals still block", async () => {
  current = buildPaymentsApp({ env: { ...TIGHT, RATE_LIMIT_WEBHOOKS: "1000" } });
  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) {
    statuses.push((await send(current, "/api/payments", { peer: "10.77.0.1" })).status);
  }
  expect(statuses.slice(0, 20).every((s) => s === 401)).toBe(true);
  expect(statuses).toContain(429);
  expect(statuses).toContain(403);
});
