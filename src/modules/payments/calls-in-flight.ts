/**
 * @module
 * Calls to Stripe still in flight, so a stop can wait for their answers. The drain gives requests
 * 10 s; a payment still waiting on Stripe then had its connection cut with no answer at all, and
 * its Idempotency-Key answered 409 "in progress" for the two minutes of its claim, each retry
 * waiting 10 s (probe 30d F5), though Stripe had made or was making the intent. Now the stop waits
 * for such calls, at most STRIPE_DRAIN_MS more, and the payment is recorded and answered first.
 */
import type { PaymentGateway } from "./stripe-client";

/** How long a stop waits for Stripe calls in flight past the drain: one call's timeout. */
export const STRIPE_DRAIN_MS = 20_000;

export interface TrackedGateway {
  gateway: PaymentGateway;
  /** Resolves when every call in flight now has its answer, or after `withinMs`. */
  settled(withinMs?: number): Promise<void>;
}

export function trackedGateway(gateway: PaymentGateway): TrackedGateway {
  const inFlight = new Set<Promise<unknown>>();
  const track = <T>(call: Promise<T>): Promise<T> => {
    inFlight.add(call);
    const done = () => {
      inFlight.delete(call);
    };
    call.then(done, done);
    return call;
  };
  return {
    gateway: {
      createIntent: (request, idempotencyKey) =>
        track(gateway.createIntent(request, idempotencyKey)),
      refund: (paymentIntentId, amount, idempotencyKey) =>
        track(gateway.refund(paymentIntentId, amount, idempotencyKey)),
      refundMadeUnder: (paymentIntentId, amount, idempotencyKey) =>
        track(gateway.refundMadeUnder(paymentIntentId, amount, idempotencyKey)),
    },
    settled(withinMs = STRIPE_DRAIN_MS) {
      if (inFlight.size === 0) return Promise.resolve();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, withinMs);
      });
      return Promise.race([Promise.allSettled([...inFlight]).then(() => {}), late]).finally(() =>
        clearTimeout(timer),
      );
    },
  };
}
