/**
 * @module
 * The payment gateway: what the payments feature asks of Stripe, as an interface (habit 2) with one
 * implementation over the official SDK. Outcomes are values: `unavailable` (Stripe could not be
 * reached, timed out, answered 5xx or 429: worth retrying, answered 503), `refused` (Stripe
 * answered 4xx: the request will not succeed as it is) and `bad_response` (an answer we will not
 * trust: an id or client secret that does not match Stripe's pattern, or an intent that is not
 * the one asked for). Nothing from Stripe is used before it is checked here.
 *
 * `STRIPE_API_URL` points the SDK at another host (a local Stripe-compatible server in tests).
 * Retries: the SDK's own, 2 per call (so 3 attempts), with its exponential backoff; every POST
 * carries our idempotency key, so a retry after a lost answer is replayed by Stripe, never done
 * twice. Timeout 20 s per attempt.
 */

import type Stripe from "stripe";
import { boundedFetch } from "../../bounded-fetch";
import { NOT_NOW_STATUSES } from "../../retry-after";
import { isClientSecretOf, isStripeId } from "./ids";
import type { PaymentStatus } from "./status";
import { STRIPE_ERROR_CODES } from "./stripe-error-codes";

/**
 * What Stripe answers for an intent made as Palisade makes it, with no payment method and not
 * confirmed (a replay of its key answers the same). Checked against the ledger's statuses, it took
 * `succeeded` (paid, with no event: an integration ships on that), and `failed` and `refunded`,
 * which are Palisade's own words for what events say later, not Stripe's (probe 85a F2).
 */
const NEW_INTENT_STATUSES: readonly PaymentStatus[] = [
  "requires_payment_method",
  "requires_confirmation",
];

function newIntentStatus(status: unknown): PaymentStatus | null {
  return NEW_INTENT_STATUSES.find((each) => each === status) ?? null;
}

export const STRIPE_MAX_NETWORK_RETRIES = 2;
export const STRIPE_TIMEOUT_MS = 20_000;

/**
 * The longest one call to Stripe can take: every attempt to its timeout, the SDK's waits between
 * them (0.5 s, then 1 s at most: stripe-node's backoff from 0.5 s, doubling), and a second for the
 * answers' reading. A stop waits this long for a call in flight: it waited one attempt's timeout,
 * and a call on its retry was cut with no answer, made at Stripe and not recorded (probe 83c F1).
 */
export function stripeCallMaxMs(timeoutMs: number, retries: number): number {
  let backoffMs = 0;
  for (let retry = 1; retry <= retries; retry++)
    backoffMs += Math.min(500 * 2 ** (retry - 1), 5_000);
  return timeoutMs * (retries + 1) + backoffMs + 1_000;
}

/** One call's longest with the client's settings: 62.5 s. */
export const STRIPE_CALL_MAX_MS = stripeCallMaxMs(STRIPE_TIMEOUT_MS, STRIPE_MAX_NETWORK_RETRIES);

export interface IntentRequest {
  amount: number;
  currency: string;
  description?: string;
  customerEmail?: string;
  metadata?: Record<string, string>;
}

export interface CreatedIntent {
  id: string;
  clientSecret: string;
  status: PaymentStatus;
  amount: number;
  currency: string;
}

export interface CreatedRefund {
  id: string;
  amount: number;
  status: string;
  /** Stripe answered with what it answered this idempotency key before (`Idempotent-Replayed`). */
  replayed: boolean;
}

export type GatewayFailure =
  | {
      ok: false;
      kind: "unavailable";
      reason: string;
      /**
       * Stripe answered a server error it keeps for this idempotency key (`Idempotent-Replayed`):
       * it began the request once and saved the error, and answers it again for 24 hours however
       * often the key is sent, so the same key cannot get another answer.
       */
      keptByStripe?: boolean;
    }
  | {
      ok: false;
      kind: "refused";
      reason: string;
      /**
       * Stripe refused the idempotency key itself: it was first sent with other parameters
       * (`idempotency_error`), so nothing was made and the same key never will make this request.
       */
      keyReused?: boolean;
    }
  | { ok: false; kind: "bad_response"; reason: string };

export type GatewayResult<T> = ({ ok: true } & T) | GatewayFailure;

export interface PaymentGateway {
  createIntent(
    request: IntentRequest,
    idempotencyKey: string,
  ): Promise<GatewayResult<CreatedIntent>>;
  /** A refund of `amount` of the payment, which is in `currency` (an answer in another is refused). */
  refund(
    paymentIntentId: string,
    amount: number,
    currency: string,
    idempotencyKey: string,
  ): Promise<GatewayResult<CreatedRefund>>;
  /**
   * The refund of `amount` Stripe made under `idempotencyKey` (each refund carries its key in its
   * metadata), found among the payment's refunds; null when Stripe holds none: the request behind
   * a server error Stripe keeps did not make one. A failure when the payment's refunds cannot all
   * be read, or the one under the key is not a refund of the payment, the amount asked for and
   * the payment's currency.
   * `walked`: a refund made under a key walked to from this one counts too (a made one first).
   */
  refundMadeUnder(
    paymentIntentId: string,
    amount: number,
    currency: string,
    idempotencyKey: string,
    walked?: boolean,
  ): Promise<GatewayResult<{ refund: CreatedRefund | null }>>;
  /**
   * Cancels an intent no one may pay (its owner was erased while Stripe made it); the status
   * Stripe answers. Stripe refuses it for an intent already paid or being paid.
   */
  cancelIntent(paymentIntentId: string): Promise<GatewayResult<{ status: string }>>;
}

/** Why refundMadeUnder could not say: the payment has more refunds than one read holds. */
export const REFUNDS_NOT_READ_WHOLE = "refund list not read whole";

/** The metadata key a refund carries its idempotency key under (refundMadeUnder). */
export const REFUND_KEY_METADATA = "palisade_key";
/** The most refunds of one payment read to find one (Stripe's page; a payment has a few). */
const REFUNDS_READ = 100;

/**
 * The most of a Stripe answer read: a payment intent or a refund is a few KiB. A larger one (an
 * endless body from the host at STRIPE_API_URL) is not read on into memory (probe 54a F1's class):
 * the call fails as one whose connection broke.
 */
export const STRIPE_ANSWER_BYTES = 1024 * 1024;

export interface StripeClientOptions {
  secretKey: string;
  /** `STRIPE_API_URL`: another host for the API (tests); Stripe's own when null. */
  apiUrl: string | null;
  maxNetworkRetries?: number;
  timeoutMs?: number;
}

/** The SDK's host, port and protocol options for `STRIPE_API_URL`. */
export function stripeHostOptions(apiUrl: string | null): Partial<Stripe.StripeConfig> {
  if (apiUrl === null) return {};
  const url = new URL(apiUrl);
  const protocol = url.protocol === "http:" ? "http" : "https";
  return {
    host: url.hostname.replace(/^\[|\]$/g, ""),
    port: url.port === "" ? (protocol === "http" ? 80 : 443) : Number(url.port),
    protocol,
  };
}

/**
 * The SDK client, loaded on first need: a service without STRIPE_SECRET_KEY never loads the SDK
 * (about 60 ms and 8 MB of a start), and one with it loads it in the background at start.
 */
export async function createStripe(options: StripeClientOptions): Promise<Stripe> {
  const { default: StripeSdk } = await import("stripe");
  return new StripeSdk(options.secretKey, {
    ...stripeHostOptions(options.apiUrl),
    maxNetworkRetries: options.maxNetworkRetries ?? STRIPE_MAX_NETWORK_RETRIES,
    timeout: options.timeoutMs ?? STRIPE_TIMEOUT_MS,
    telemetry: false,
    // Stripe never redirects. One from the host at STRIPE_API_URL (or one in between) re-sent the
    // payment (amount, description, customer email, metadata) to the host it named, over any
    // scheme: refused, a connection failure, as the chat provider and the Graph client refuse one.
    // An answer is read to at most STRIPE_ANSWER_BYTES (bounded-fetch.ts): past it, a failed call.
    httpClient: StripeSdk.createFetchHttpClient(
      boundedFetch({ bodyBytes: STRIPE_ANSWER_BYTES }, (url, init) =>
        fetch(url, { ...init, redirect: "error" }),
      ),
    ),
  });
}

/**
 * A header of the SDK's `lastResponse`: a plain object under Node's HTTP client (as its types say),
 * a `Headers` under the fetch client Bun gets.
 */
function headerOf(headers: unknown, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const value = (headers as Record<string, unknown> | undefined)?.[name];
  return typeof value === "string" ? value : undefined;
}

/** The shape of a refund status Stripe writes (`succeeded`, `requires_action`). */
const REFUND_STATUS = /^[a-z0-9_]{1,64}$/;
/** What stands for an upstream code of any other shape: it is never shown nor logged. */
export const UNRECOGNISED_CODE = "unrecognised_code";

/**
 * The upstream's error code as a reason we may show the client and log: the code (or type) is
 * whatever the answering host wrote, and a host at `STRIPE_API_URL` (or one in between) may echo
 * a credential or write control characters, line separators or pages of text into it. Only one of
 * Stripe's own codes and types (`STRIPE_ERROR_CODES`) is kept; anything else is one fixed word.
 */
export function stripeErrorCode(code: unknown): string {
  return typeof code === "string" && STRIPE_ERROR_CODES.has(code) ? code : UNRECOGNISED_CODE;
}

/** What stands for a refund status of another shape (it is answered to the admin and audited). */
export const UNRECOGNISED_STATUS = "unrecognised_status";

/**
 * The type of a Stripe error without a code: a refused key and a rate limit come typed
 * `invalid_request_error`, a client's mistake in a log line, and are named by their class instead
 * (probe 81g F1); anything else by the type Stripe wrote.
 */
function typeOf(
  error: Stripe.errors.StripeError,
  errors: typeof Stripe.errors,
): string | undefined {
  if (error instanceof errors.StripeAuthenticationError) return "authentication_error";
  if (error instanceof errors.StripeRateLimitError) return "rate_limit_error";
  return error.rawType;
}

/** What a thrown SDK error means for us; Stripe's own error code (never its message) as the reason. */
async function failureOf(error: unknown): Promise<GatewayFailure> {
  const { default: Stripe } = await import("stripe");
  // Stripe never answered (refused, reset, timed out): a network failure, not a code of Stripe's.
  // Read as one of its errors, its SDK class name was shown and logged as `unrecognised_code`, and
  // an outage read as an upstream writing odd codes (probe 81f F2).
  if (error instanceof Stripe.errors.StripeConnectionError) {
    return { ok: false, kind: "unavailable", reason: "network_error" };
  }
  if (error instanceof Stripe.errors.StripeError) {
    const status = error.statusCode;
    // The code, else the type (`api_error`), not the SDK's class name for it.
    const reason = stripeErrorCode(error.code || typeOf(error, Stripe.errors));
    // A 409 is another request under the same idempotency key that Stripe is still working on
    // (the SDK's own retry of an attempt that timed out, `idempotency_key_in_use`): Stripe has
    // not said what it made of it. Taken as a refusal, the refund was taken off the payment's
    // undecided ones, and Stripe made it after; the retry, its key moved by charge.refunded, made
    // it again (probe 61a F1).
    // A 408 or 425 (a timeout or too early, Stripe's or a proxy's before it) refused nothing
    // either: answered as a refusal it was a 502, and a refund so answered left its undecided ones
    // (probe 84g F1's class).
    if (status === undefined || status >= 500 || status === 409 || NOT_NOW_STATUSES.has(status)) {
      const keptByStripe =
        status !== undefined &&
        status >= 500 &&
        headerOf(error.headers, "idempotent-replayed") === "true";
      return { ok: false, kind: "unavailable", reason, ...(keptByStripe ? { keptByStripe } : {}) };
    }
    if (error instanceof Stripe.errors.StripeIdempotencyError) {
      return { ok: false, kind: "refused", reason, keyReused: true };
    }
    return { ok: false, kind: "refused", reason };
  }
  return { ok: false, kind: "unavailable", reason: "network_error" };
}

export class StripeGateway implements PaymentGateway {
  private readonly stripe: Promise<Stripe>;

  constructor(stripe: Stripe | Promise<Stripe>) {
    this.stripe = Promise.resolve(stripe);
    // A failed load is answered by the first call that awaits it, not left unhandled.
    this.stripe.catch(() => {});
  }

  async createIntent(
    request: IntentRequest,
    idempotencyKey: string,
  ): Promise<GatewayResult<CreatedIntent>> {
    let intent: Stripe.PaymentIntent;
    try {
      intent = await (await this.stripe).paymentIntents.create(
        {
          amount: request.amount,
          currency: request.currency,
          description: request.description,
          receipt_email: request.customerEmail,
          metadata: request.metadata,
          automatic_payment_methods: { enabled: true },
        },
        { idempotencyKey },
      );
    } catch (error) {
      return await failureOf(error);
    }
    if (!isStripeId("pi", intent.id)) {
      return { ok: false, kind: "bad_response", reason: "payment intent id" };
    }
    if (!isClientSecretOf(intent.id, intent.client_secret)) {
      return { ok: false, kind: "bad_response", reason: "client secret" };
    }
    const status = newIntentStatus(intent.status);
    if (status === null) return { ok: false, kind: "bad_response", reason: "status" };
    if (intent.amount !== request.amount || intent.currency !== request.currency) {
      return { ok: false, kind: "bad_response", reason: "amount or currency" };
    }
    return {
      ok: true,
      id: intent.id,
      clientSecret: intent.client_secret,
      status,
      amount: intent.amount,
      currency: intent.currency,
    };
  }

  async cancelIntent(paymentIntentId: string): Promise<GatewayResult<{ status: string }>> {
    let intent: Stripe.PaymentIntent;
    try {
      intent = await (await this.stripe).paymentIntents.cancel(paymentIntentId, {
        cancellation_reason: "abandoned",
      });
    } catch (error) {
      return await failureOf(error);
    }
    return typeof intent.status === "string"
      ? { ok: true, status: intent.status }
      : { ok: false, kind: "bad_response", reason: "status" };
  }

  async refund(
    paymentIntentId: string,
    amount: number,
    currency: string,
    idempotencyKey: string,
  ): Promise<GatewayResult<CreatedRefund>> {
    let refund: Stripe.Response<Stripe.Refund>;
    try {
      refund = await (await this.stripe).refunds.create(
        {
          payment_intent: paymentIntentId,
          amount,
          metadata: { [REFUND_KEY_METADATA]: idempotencyKey },
        },
        { idempotencyKey },
      );
    } catch (error) {
      return await failureOf(error);
    }
    return checkedRefund(
      refund,
      { paymentIntentId, amount, currency },
      headerOf(refund.lastResponse?.headers, "idempotent-replayed") === "true",
    );
  }

  async refundMadeUnder(
    paymentIntentId: string,
    amount: number,
    currency: string,
    idempotencyKey: string,
    walked = false,
  ): Promise<GatewayResult<{ refund: CreatedRefund | null }>> {
    let listed: Stripe.ApiList<Stripe.Refund>;
    try {
      listed = await (await this.stripe).refunds.list({
        payment_intent: paymentIntentId,
        limit: REFUNDS_READ,
      });
    } catch (error) {
      return await failureOf(error);
    }
    if (!Array.isArray(listed.data)) {
      return { ok: false, kind: "bad_response", reason: "refund list" };
    }
    // With `walked`, a refund under a key the walk went on to from this one counts too
    // (`…_after_error`, `…_after_<refund id>`), one Stripe made before one it refused.
    const keyOf = (refund: Stripe.Refund | undefined) => refund?.metadata?.[REFUND_KEY_METADATA];
    const under = (refund: Stripe.Refund | undefined) => {
      const key = keyOf(refund);
      return (
        key === idempotencyKey ||
        (walked && typeof key === "string" && key.startsWith(`${idempotencyKey}_after_`))
      );
    };
    const refused = (refund: Stripe.Refund | undefined) =>
      refund?.status === "failed" || refund?.status === "canceled";
    const made =
      listed.data.find((refund) => under(refund) && !refused(refund)) ?? listed.data.find(under);
    if (made === undefined) {
      // Not among those read: with more left unread, it may be among them.
      if (listed.has_more !== false) {
        return { ok: false, kind: "unavailable", reason: REFUNDS_NOT_READ_WHOLE };
      }
      return { ok: true, refund: null };
    }
    const checked = checkedRefund(made, { paymentIntentId, amount, currency }, true);
    return checked.ok ? { ok: true, refund: checked } : checked;
  }
}

/** A refund Stripe answered, checked before it is shown, recorded or audited. */
function checkedRefund(
  refund: Stripe.Refund,
  asked: { paymentIntentId: string; amount: number; currency: string },
  replayed: boolean,
): GatewayResult<CreatedRefund> {
  const { paymentIntentId, amount, currency } = asked;
  if (!isStripeId("re", refund.id)) return { ok: false, kind: "bad_response", reason: "refund id" };
  // A refund of another payment is not this one's, whatever its amount: it was recorded as one
  // (probe 90o F1; the read of a payment's refunds checked this already).
  const ofPayment =
    typeof refund.payment_intent === "string" ? refund.payment_intent : refund.payment_intent?.id;
  if (ofPayment !== paymentIntentId) {
    return { ok: false, kind: "bad_response", reason: "refund of another payment" };
  }
  if (refund.amount !== amount) {
    return { ok: false, kind: "bad_response", reason: "refund amount" };
  }
  // 300 of another currency is not 300 of the payment's: recorded, it counted as such (probe 90o
  // F1's currency half). Stripe writes currencies in lower case, as the payment's is stored.
  if (typeof refund.currency !== "string" || refund.currency.toLowerCase() !== currency) {
    return { ok: false, kind: "bad_response", reason: "refund currency" };
  }
  // Any status but `succeeded` leaves the refund to be settled by `charge.refunded`; one of
  // another shape than Stripe's words is not shown nor audited as the upstream wrote it.
  const status = refund.status ?? "pending";
  return {
    ok: true,
    id: refund.id,
    amount: refund.amount,
    status: REFUND_STATUS.test(status) ? status : UNRECOGNISED_STATUS,
    replayed,
  };
}
