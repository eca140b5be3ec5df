/**
 * @module
 * The payments feature: Stripe PaymentIntents for users and `payments` keys, refunds for admins.
 * Without STRIPE_SECRET_KEY it still mounts its routes (they answer 501) and `/ready` reports
 * `payments: not_configured` without failing: a service without payments still serves chat.
 */
import type { Core } from "../../core";
import { STOP_LOCK_WAIT_MS } from "../../db/waiting-writes";
import type { CredentialStanding } from "../../plugins/auth";
import type { Feature } from "../feature";
import { trackedGateway } from "./calls-in-flight";
import { paymentsModule, paymentsRouteClasses } from "./index";
import { type PaymentLedger, paymentLedgerOf } from "./ledger";
import { paymentMetrics } from "./metrics";
import { idempotencyKeysContributor, paymentsContributor } from "./privacy";
import { PaymentService } from "./service";
import { createStripe, type PaymentGateway, StripeGateway } from "./stripe-client";

export interface PaymentsFeatureOptions {
  /** Another gateway than the SDK's (none is needed in tests: they point the SDK at a local server). */
  gateway?: PaymentGateway | null;
  /** How long a request waits for another with its Idempotency-Key (default 10 s). */
  inProgressWaitMs?: number;
  /** Whether an owner (`user:<id>`, `key:<id>`) is still there to pay for (see PaymentService). */
  ownerStands?: (owner: string) => boolean;
  /** The asking credential as the database reads it, asked as a refund or an intent is claimed. */
  standing?: CredentialStanding;
}

export interface PaymentsFeature extends Feature {
  service: PaymentService;
  ledger: PaymentLedger;
}

export function paymentsFeature(core: Core, options: PaymentsFeatureOptions = {}): PaymentsFeature {
  const { config, db, clock, logger, audit, registry } = core;
  const { secretKey, apiUrl } = config.stripe;
  const stripe =
    options.gateway !== undefined
      ? options.gateway
      : secretKey === null
        ? null
        : new StripeGateway(createStripe({ secretKey, apiUrl }));
  // A stop waits for the calls still at Stripe (./calls-in-flight.ts).
  const tracked =
    stripe === null
      ? null
      : trackedGateway(stripe, {
          onWait: (calls, withinMs) =>
            logger.info(
              { calls, withinMs },
              "waiting for the calls still at Stripe before closing connections (each payment or refund is recorded and answered)",
            ),
        });
  const gateway = tracked?.gateway ?? null;
  const ledger = paymentLedgerOf(core);
  const service = new PaymentService({
    db,
    clock,
    logger,
    audit,
    ledger,
    metrics: paymentMetrics(registry),
    gateway,
    inProgressWaitMs: options.inProgressWaitMs,
    ownerStands: options.ownerStands,
    dailyIntents: config.payments.dailyIntents,
  });
  return {
    name: "payments",
    service,
    ledger,
    routeClasses: paymentsRouteClasses,
    routes: ({ auth }) =>
      paymentsModule({
        auth,
        service,
        ledger,
        payments: config.payments,
        standing: options.standing,
        audit,
        authMetrics: core.metrics.auth,
      }),
    // Configured is all /ready can say without calling Stripe on every probe.
    readiness: { payments: () => (service.configured ? undefined : "not_configured") },
    endInFlight: () => tracked?.settled(),
    // After the last request: what waits for another connection's lock is written before the
    // database closes, within as long as the outbox waits out a lock.
    stop: () => service.stop(STOP_LOCK_WAIT_MS),
    reportUndone: (why) => service.reportUndone(why),
    maintenance: (now) => {
      service.prune(now);
    },
    privacy: [paymentsContributor(db, ledger), idempotencyKeysContributor(db, ledger)],
  };
}
