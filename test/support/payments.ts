/** Helpers for the payments and Stripe webhook tests: an app wired to a local Stripe, and signed events. */
import { afterEach, expect } from "bun:test";
import Stripe from "stripe";
import { buildTestApp, send, type TestApp, type TestAppOptions } from "./app";
import { bearer, type Session, signUp } from "./auth";
import { type FakeStripe, startFakeStripe } from "./stripe-server";

export const STRIPE_TEST_KEY = "sk_test_palisade0123456789";
export const WEBHOOK_SECRET = "whsec_palisade_current_0123456789abcdef";
export const OLD_WEBHOOK_SECRET = "whsec_palisade_previous_0123456789abcdef";

/** Limits high enough that a test's own requests are never what it measures. */
export const ROOMY_LIMITS = {
  RATE_LIMIT_PER_MINUTE: "100000",
  RATE_LIMIT_BURST: "100000",
  RATE_LIMIT_PAYMENTS: "100000",
  RATE_LIMIT_WEBHOOKS: "100000",
  RATE_LIMIT_REGISTER: "1000",
  RATE_LIMIT_LOGIN: "1000",
};

export interface PaymentsApp extends TestApp {
  stripe: FakeStripe;
}

/** A test app whose Stripe SDK talks to a fresh local Stripe. */
export function buildPaymentsApp(options: TestAppOptions = {}): PaymentsApp {
  const stripe = startFakeStripe();
  const target = buildTestApp({
    ...options,
    env: {
      ...ROOMY_LIMITS,
      STRIPE_SECRET_KEY: STRIPE_TEST_KEY,
      STRIPE_API_URL: stripe.url,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      ...options.env,
    },
  });
  const close = target.close;
  return Object.assign(target, {
    stripe,
    close() {
      close();
      stripe.stop();
    },
  });
}

let keyCounter = 0;
export function newIdempotencyKey(): string {
  return `key-${Date.now()}-${++keyCounter}`;
}

export function createIntent(
  target: Parameters<typeof send>[0],
  headers: Record<string, string>,
  body: unknown,
  idempotencyKey: string | null = newIdempotencyKey(),
) {
  return send(target, "/api/payments/intents", {
    body,
    headers: idempotencyKey === null ? headers : { ...headers, "idempotency-key": idempotencyKey },
  });
}

/** A Stripe event as Stripe sends it (only the fields the service reads, and a few more). */
export function stripeEvent(
  type: string,
  object: Record<string, unknown>,
  options: { id?: string; created?: number } = {},
) {
  return {
    id: options.id ?? `evt_${crypto.randomUUID().replaceAll("-", "")}`,
    object: "event",
    api_version: "2026-10-28",
    created: options.created ?? Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    type,
    data: { object },
  };
}

/** The `Stripe-Signature` header for `payload`, made by the SDK (its async form: Bun's build). */
export function signStripe(payload: string, secret = WEBHOOK_SECRET, timestamp?: number) {
  return Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret, timestamp });
}

/** Delivers `payload` (an event or its exact text) signed, as Stripe does. */
export async function deliver(
  target: TestApp,
  payload: unknown,
  options: { secret?: string; timestamp?: number; peer?: string; path?: string } = {},
) {
  const text = typeof payload === "string" ? payload : JSON.stringify(payload);
  const signature = await signStripe(text, options.secret, options.timestamp);
  return send(target, options.path ?? "/webhooks/stripe", {
    body: text,
    headers: { "stripe-signature": signature, "content-type": "application/json; charset=utf-8" },
    peer: options.peer ?? "54.187.174.169",
  });
}

/** Marks a payment succeeded through the real webhook. */
export async function succeed(target: TestApp, paymentId: string, created?: number) {
  const response = await deliver(
    target,
    stripeEvent(
      "payment_intent.succeeded",
      { id: paymentId, object: "payment_intent", status: "succeeded" },
      { created },
    ),
  );
  if (response.status !== 200)
    throw new Error(`webhook: ${response.status} ${await response.text()}`);
}

export function auditRows(target: TestApp, type: string) {
  target.services.audit.flush();
  return target.db.$client
    .query("SELECT actor, ip, outcome, detail, route FROM audit_events WHERE type = ? ORDER BY id")
    .all(type) as {
    actor: string | null;
    ip: string | null;
    outcome: string;
    detail: string;
    route: string | null;
  }[];
}

export async function metricValue(target: TestApp, name: string, labels: Record<string, string>) {
  const metric = target.services.registry.getSingleMetric(name);
  if (!metric) return 0;
  const values = (await metric.get()).values;
  const found = values.find((v) =>
    Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want),
  );
  return found?.value ?? 0;
}

/** Creates a payment intent of `amount` cents for `who` (201) and returns its id. */
export async function pay(target: PaymentsApp, who: Session, amount = 5000): Promise<string> {
  const response = await createIntent(target, bearer(who.accessToken), { amount, currency: "usd" });
  expect(response.status).toBe(201);
  return ((await response.json()) as { id: string }).id;
}

/** On `target`: a user's succeeded payment of `amount` cents, and an admin to refund it. */
export async function paidPayment(target: PaymentsApp, amount = 3000) {
  const alice = await signUp(target);
  const admin = await signUp(target, { role: "admin" });
  const id = await pay(target, alice, amount);
  await succeed(target, id);
  return { alice, admin, id };
}

export interface RefundStatusStripe {
  /** The app, whose STRIPE_API_URL is the proxy. */
  app: PaymentsApp;
  /** The local Stripe behind the proxy (its `stripe.calls`). */
  upstream: PaymentsApp;
  close(): void;
}

/**
 * An app whose Stripe answers refunds with `status`: a proxy in front of a local Stripe that
 * rewrites only a successful `POST /v1/refunds` answer (the rest is the local Stripe's own).
 */
export function stripeAnsweringRefundsAs(status: string): RefundStatusStripe {
  const upstream = buildPaymentsApp();
  const base = upstream.stripe.url;
  const proxy = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const url = new URL(request.url);
      const answer = await fetch(`${base}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body: request.method === "GET" ? undefined : await request.text(),
      });
      const text = await answer.text();
      if (url.pathname !== "/v1/refunds" || answer.status !== 200) {
        return new Response(text, { status: answer.status, headers: answer.headers });
      }
      return Response.json({ ...JSON.parse(text), status });
    },
  });
  const app = buildPaymentsApp({ env: { STRIPE_API_URL: `http://127.0.0.1:${proxy.port}` } });
  return {
    app,
    upstream,
    close() {
      app.close();
      proxy.stop(true);
      upstream.close();
    },
  };
}

/**
 * For a test file, called at its top level: makes apps whose Stripe answers refunds with a status
 * (stripeAnsweringRefundsAs), each closed after the test that made it.
 */
export function refundStatusStripes(): (status: string) => RefundStatusStripe {
  const open: RefundStatusStripe[] = [];
  afterEach(() => {
    for (const stripe of open.splice(0)) stripe.close();
  });
  return (status) => {
    const stripe = stripeAnsweringRefundsAs(status);
    open.push(stripe);
    return stripe;
  };
}

/**
 * Stripe made a refund of 1000 of payment `id` under `key`, whose answer Palisade never had; its id.
 */
export async function refundMadeAtStripeUnder(
  target: PaymentsApp,
  id: string,
  key: string,
): Promise<string> {
  const made = await fetch(`${target.stripe.url}/v1/refunds`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${STRIPE_TEST_KEY}`,
      "content-type": "application/x-www-form-urlencoded",
      "idempotency-key": key,
    },
    body: new URLSearchParams({
      payment_intent: id,
      amount: "1000",
      "metadata[palisade_key]": key,
    }).toString(),
  });
  expect(made.status).toBe(200);
  return ((await made.json()) as { id: string }).id;
}

/** The refunds the local Stripe holds of a payment, newest first, read as Stripe lists them. */
export async function stripeRefundsOf(target: PaymentsApp, id: string) {
  const listed = await fetch(`${target.stripe.url}/v1/refunds?payment_intent=${id}&limit=100`, {
    headers: { authorization: `Bearer ${STRIPE_TEST_KEY}` },
  });
  return ((await listed.json()) as { data: { id: string; amount: number }[] }).data;
}

/** Stripe's `charge.refunded` for payment `id`, the charge's refunded total `total`, delivered. */
export async function chargeRefunded(target: PaymentsApp, id: string, total: number) {
  const delivered = await deliver(
    target,
    stripeEvent("charge.refunded", {
      id: `ch_${id.slice(3)}`,
      object: "charge",
      payment_intent: id,
      amount_refunded: total,
    }),
  );
  expect(delivered.status).toBe(200);
}
