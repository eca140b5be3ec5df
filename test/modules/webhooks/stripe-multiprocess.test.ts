/**
 * Exactly once across processes: 1,000 concurrent deliveries of 100 distinct Stripe events, spread
 * over two service processes on one SQLite file, apply exactly 100 effects. A delivery the
 * database could not take right now (503) is delivered again, as Stripe does.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { join } from "node:path";
import { createPaymentSeal } from "../../../src/modules/payments/seal";
import { PRODUCTION_ENV, tempDir } from "../../support/app";
import { signStripe, stripeEvent, WEBHOOK_SECRET } from "../../support/payments";
import { type ServiceProcess, startService } from "../../support/process";

test("1,000 concurrent deliveries of 100 events across 2 processes: exactly 100 effects", async () => {
  const dir = tempDir();
  const services: ServiceProcess[] = [];
  try {
    const env = {
      DATABASE_PATH: join(dir.path, "shared.db"),
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      RATE_LIMIT_WEBHOOKS: "1000000",
      RATE_LIMIT_PER_MINUTE: "1000000",
      RATE_LIMIT_BURST: "1000000",
      LOG_LEVEL: "info",
      AUDIT_SECRET_KEY: PRODUCTION_ENV.AUDIT_SECRET_KEY,
    };
    // The first start migrates; the second joins the migrated file.
    services.push(await startService(env));
    const seed = new Database(env.DATABASE_PATH);
    seed.run("PRAGMA busy_timeout = 5000");
    const ids = Array.from({ length: 100 }, (_, i) => `pi_Multi${String(i).padStart(4, "0")}`);
    // As the service writes them: sealed with its AUDIT_SECRET_KEY (an unsealed row is absent).
    const seal = createPaymentSeal(env.AUDIT_SECRET_KEY);
    const insert = seed.prepare(
      "INSERT INTO payments (id, owner, amount, currency, status, created_at, updated_at, seal) VALUES (?, 'user:seed', 1000, 'usd', 'processing', ?, ?, ?)",
    );
    const now = Date.now();
    seed.transaction(() => {
      for (const id of ids) {
        const row = {
          id,
          owner: "user:seed",
          amount: 1000,
          currency: "usd",
          status: "processing",
          statusEventAt: 0,
          amountRefunded: 0,
          disputedAt: null,
          clientSecret: null,
          description: null,
          customerEmail: null,
          metadata: null,
          createdAt: now,
          updatedAt: now,
        };
        insert.run(id, now, now, seal.payment(row));
      }
    })();
    seed.close();
    services.push(await startService(env));

    // Half successes, half disputes: a dispute is audited every time it is applied, so any second
    // application shows as an extra audit row, whatever the payment's status says.
    const events = ids.map((id, i) =>
      JSON.stringify(
        i < 50
          ? stripeEvent("payment_intent.succeeded", { id, object: "payment_intent" })
          : stripeEvent("charge.dispute.created", {
              id: `dp_Multi${i}`,
              object: "dispute",
              charge: `ch_Multi${i}`,
              payment_intent: id,
              amount: 1000,
              reason: "fraudulent",
            }),
      ),
    );
    const deliveries = Array.from({ length: 1000 }, (_, i) => events[(i * 37) % 100]!);
    const outcomes = await Promise.all(
      deliveries.map(async (payload, i) => {
        const url = new URL("/webhooks/stripe", services[i % 2]!.url);
        for (let attempt = 0; attempt < 20; attempt++) {
          const response = await fetch(url, {
            method: "POST",
            body: payload,
            headers: {
              "content-type": "application/json; charset=utf-8",
              "stripe-signature": await signStripe(payload),
            },
          });
          if (response.status === 200) {
            return ((await response.json()) as { outcome: string }).outcome;
          }
          await response.arrayBuffer();
          if (response.status !== 503) return `status ${response.status}`;
          await Bun.sleep(20 + Math.random() * 50);
        }
        return "gave up";
      }),
    );
    expect(outcomes.filter((o) => o !== "processed" && o !== "duplicate")).toEqual([]);
    expect(outcomes.filter((o) => o === "processed")).toHaveLength(100);
    expect(outcomes.filter((o) => o === "duplicate")).toHaveLength(900);
    // Both processes applied some.
    for (const p of [0, 1]) {
      expect(outcomes.some((o, i) => i % 2 === p && o === "processed")).toBe(true);
    }

    await Promise.all(services.splice(0).map((s) => s.stop("SIGTERM")));
    const db = new Database(env.DATABASE_PATH, { readonly: true });
    const count = (sql: string) => (db.query(sql).get() as { n: number }).n;
    expect(count("SELECT count(*) AS n FROM webhook_events WHERE provider = 'stripe'")).toBe(100);
    expect(count("SELECT count(*) AS n FROM payments WHERE status = 'succeeded'")).toBe(50);
    expect(count("SELECT count(*) AS n FROM payments WHERE disputed_at IS NOT NULL")).toBe(50);
    expect(count("SELECT count(*) AS n FROM audit_events WHERE type = 'payment.succeeded'")).toBe(
      50,
    );
    expect(
      count("SELECT count(*) AS n FROM audit_events WHERE type = 'payment.dispute.created'"),
    ).toBe(50);
    db.close();
  } finally {
    await Promise.all(services.map((s) => s.stop("SIGKILL")));
    dir.remove();
  }
}, 120_000);
