import Stripe from "stripe";
import { createApp } from "../src/app";
import { verifyStripeSignature } from "../src/modules/webhooks/stripe";
import { settleDeferredWork } from "./deferred";
import { benchServices } from "./services";

const SECRET = "whsec_bench_0123456789abcdefghijklmnopqrstuv";

function event(i: number): string {
  return JSON.stringify({
    id: `evt_bench${i}`,
    object: "event",
    api_version: "2026-10-28",
    created: Math.floor(Date.now() / 1000),
    type: "payment_intent.succeeded",
    livemode: false,
    pending_webhooks: 1,
    data: {
      object: {
        id: `pi_bench${i}`,
        object: "payment_intent",
        amount: 2000,
        currency: "usd",
        status: "succeeded",
        description: "x".repeat(1000),
        metadata: { order: `o-${i}` },
      },
    },
  });
}

export async function measureStripeWebhook(dir: string, deliveries: number, concurrency: number) {
  const verifyCount = deliveries;
  const payload = event(0);
  const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: SECRET });
  let started = performance.now();
  for (let i = 0; i < verifyCount; i++) {
    await verifyStripeSignature(payload, header, [SECRET], Date.now());
  }
  const verifyPerSecond = Math.round(verifyCount / ((performance.now() - started) / 1000));

  const bench = benchServices({
    databasePath: `${dir}/webhooks.db`,
    env: {
      STRIPE_WEBHOOK_SECRET: SECRET,
      RATE_LIMIT_PER_MINUTE: "1000000",
      RATE_LIMIT_BURST: "1000000",
      RATE_LIMIT_WEBHOOKS: "1000000",
    },
    level: "info",
    logs: "fd",
  });
  const { services } = bench;
  const app = createApp({ ...services, peerAddress: () => "127.0.0.1" });
  // Signed ahead: the loop measures the service, not the sender.
  const requests = await Promise.all(
    Array.from({ length: deliveries }, async (_, i) => {
      const body = event(i + 1);
      const signature = await Stripe.webhooks.generateTestHeaderStringAsync({
        payload: body,
        secret: SECRET,
      });
      return { body, signature };
    }),
  );
  let next = 0;
  let failed = 0;
  await settleDeferredWork();
  started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < requests.length) {
        const { body, signature } = requests[next++]!;
        const response = await app.handle(
          new Request("http://localhost/webhooks/stripe", {
            method: "POST",
            body,
            headers: { "content-type": "application/json", "stripe-signature": signature },
          }),
        );
        if (response.status !== 200) failed++;
        await response.arrayBuffer();
      }
    }),
  );
  await settleDeferredWork();
  const deliveriesPerSecond = Math.round(deliveries / ((performance.now() - started) / 1000));
  bench.close();
  return { verifyPerSecond, deliveriesPerSecond, failed };
}
