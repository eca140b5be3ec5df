/**
 * @module
 * Calls to Stripe still in flight, so a stop can wait for their answers. The drain gives requests
 * 10 s; a payment still waiting on Stripe then had its connection cut with no answer at all, and
 * its Idempotency-Key answered 409 "in progress" for the two minutes of its claim, each retry
 * waiting 10 s (probe 30d F5), though Stripe had made or was making the intent. Now the stop waits
 * for such calls, at most one call's longest (every attempt of it: STRIPE_CALL_MAX_MS), and the
 * payment is recorded and answered first.
 */
import { type GatewayFailure, type PaymentGateway, STRIPE_CALL_MAX_MS } from "./stripe-client";

export interface TrackedGateway {
  gateway: PaymentGateway;
  /**
   * Resolves when no call is in flight (those started while it waits included), or after
   * `withinMs`; from then on no call starts (each is answered `unavailable`, "stopping").
   */
  settled(withinMs?: number): Promise<void>;
}

export function trackedGateway(
  gateway: PaymentGateway,
  options: {
    /** The longest one call takes with the client's timeout and retries. */
    callMaxMs?: number;
    /** Told when a stop starts waiting for calls in flight: how many, and for how long at most. */
    onWait?: (calls: number, withinMs: number) => void;
  } = {},
): TrackedGateway {
  const { callMaxMs = STRIPE_CALL_MAX_MS, onWait } = options;
  const inFlight = new Set<Promise<unknown>>();
  // Once the stop has waited for the calls, none starts: a request that claimed an
  // Idempotency-Key given back meanwhile called Stripe as the process closed, its claim left
  // pending and the intent unrecorded (probe 60a F-STOP). It is answered as Stripe down would
  // be, and gives its claim back.
  let stopped = false;
  const track = <T>(call: () => Promise<T>): Promise<T | GatewayFailure> => {
    if (stopped) {
      return Promise.resolve({ ok: false, kind: "unavailable", reason: "stopping" } as const);
    }
    const started = call();
    inFlight.add(started);
    const done = () => {
      inFlight.delete(started);
    };
    started.then(done, done);
    return started;
  };
  return {
    gateway: {
      createIntent: (request, idempotencyKey) =>
        track(() => gateway.createIntent(request, idempotencyKey)),
      refund: (paymentIntentId, amount, currency, idempotencyKey) =>
        track(() => gateway.refund(paymentIntentId, amount, currency, idempotencyKey)),
      refundMadeUnder: (paymentIntentId, amount, currency, idempotencyKey, walked) =>
        track(() =>
          gateway.refundMadeUnder(paymentIntentId, amount, currency, idempotencyKey, walked),
        ),
      cancelIntent: (paymentIntentId) => track(() => gateway.cancelIntent(paymentIntentId)),
    },
    async settled(withinMs = callMaxMs) {
      const until = performance.now() + withinMs;
      if (inFlight.size > 0) onWait?.(inFlight.size, withinMs);
      // A call answered may start another of the same request (a refund's kept server error, the
      // read of the payment's refunds; a refusal, the next key): it is waited for too, within the
      // bound. Waiting only for the calls in flight at the stop lost a refund Stripe made (probe
      // 59d F1).
      while (inFlight.size > 0) {
        const left = until - performance.now();
        if (left <= 0) break;
        await answeredOrLate([...inFlight], left);
        // The answered calls' requests go on (and start their next call) before the next look.
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      stopped = true;
    },
  };
}

/** Resolves when every call has its answer, or after `ms`. */
function answeredOrLate(calls: Promise<unknown>[], ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([Promise.allSettled(calls).then(() => {}), late]).finally(() =>
    clearTimeout(timer),
  );
}
