/**
 * @module
 * The webhooks feature: endpoints that providers call, authenticated by signature (no session, no
 * CSRF), each with its route classes (256 KiB bodies, the `webhooks` policy per address). Each
 * provider is one part — its route classes and its Elysia module — composed here; a new provider
 * is one more part in `parts`.
 */
import { Elysia } from "elysia";
import type { Core } from "../../core";
import type { authPlugin } from "../../plugins/auth";
import type { RouteClass } from "../../plugins/route-class";
import type { Feature } from "../feature";
import { paymentLedgerOf } from "../payments/ledger";
import { paymentMetrics } from "../payments/metrics";
import { webhookMetrics } from "./metrics";
import { pruneStripeEvents, stripeWebhook, stripeWebhookRouteClasses } from "./stripe";

/** One provider's endpoint(s). */
export interface WebhookPart {
  routeClasses: readonly RouteClass[];
  routes(auth: ReturnType<typeof authPlugin>): Elysia;
}

export function webhooksFeature(core: Core): Feature {
  const { config, db, clock, logger, audit, registry } = core;
  const metrics = webhookMetrics(registry);
  const parts: WebhookPart[] = [
    {
      routeClasses: stripeWebhookRouteClasses,
      routes: stripeWebhook({
        db,
        clock,
        logger,
        audit,
        secrets: config.stripe.webhookSecrets,
        metrics,
        payments: paymentMetrics(registry),
        ledger: paymentLedgerOf(core),
      }) as unknown as WebhookPart["routes"],
    },
  ];
  return {
    name: "webhooks",
    routeClasses: parts.flatMap((part) => part.routeClasses),
    maintenance: (now) => {
      pruneStripeEvents(db, now);
    },
    routes: ({ auth }) =>
      parts.reduce(
        (module, part) => module.use(part.routes(auth)),
        new Elysia({ name: "palisade.module.webhooks" }),
      ),
  };
}
