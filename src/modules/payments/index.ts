/**
 * @module
 * The payment routes: `POST /api/payments/intents` (Idempotency-Key required), `GET
 * /api/payments[/:id]` (the caller's own), and the admins' `POST /api/admin/payments/:id/refund`.
 * Callers are signed-in users or API keys with the `payments` scope; a payment belongs to the user
 * (an API key acting for a user sees that user's payments), and another's is 404, never 403. With
 * no STRIPE_SECRET_KEY every route answers 501 NOT_CONFIGURED saying so.
 */
import { Elysia, t } from "elysia";
import type { Config } from "../../config";
import { AppError, problemResponses } from "../../errors";
import type { AuditLog } from "../../plugins/audit/log";
import {
  type authPlugin,
  type CredentialStanding,
  endedCredential,
  lostAdmin,
} from "../../plugins/auth";
import type { AuthMetrics } from "../../plugins/auth/metrics";
import { type Principal, principalRef } from "../../plugins/auth/principal";
import type { RouteClass } from "../../plugins/route-class";
import { withoutShapingCharacters } from "../../shaping-characters";
import { hasControlBesidesTabAndNewline } from "../../visible-text";
import { checkEmail } from "../auth/email";
import type { PaymentLedger } from "./ledger";
import { viewOf } from "./ledger";
import {
  CreatedIntent,
  IdempotencyHeaders,
  IntentBody,
  METADATA_KEY_MAX_LENGTH,
  OptionalIdempotencyHeaders,
  Payment,
  PaymentIdParams,
  PaymentListQuery,
  PaymentPage,
  RefundBody,
  RefundResult,
} from "./model";
import {
  type ActingRequest,
  INTENT_OF_ANOTHER_PAYMENT,
  type PaymentService,
  UNDECIDED_NOT_THAT_REFUND,
} from "./service";
import type { GatewayFailure } from "./stripe-client";

/** Intents and refunds spend money: the `payments` policy (per principal, fails closed). */
export const paymentsRouteClasses: readonly RouteClass[] = [
  { routes: ["POST /api/payments/intents"], policy: "payments", bodyLimit: "payments" },
  { routes: ["GET /api/payments", "GET /api/payments/:id"] },
  { routes: ["POST /api/admin/payments/:id/refund"], policy: "payments" },
];

export interface PaymentsModuleOptions {
  auth: ReturnType<typeof authPlugin>;
  service: PaymentService;
  ledger: PaymentLedger;
  payments: Config["payments"];
  /** The asking credential as the database reads it, asked as a refund or an intent is claimed. */
  standing?: CredentialStanding;
  /** Where a credential that lost its standing while its request was under way is counted. */
  authMetrics: AuthMetrics;
  /** Where such a credential's 403 is recorded. */
  audit: AuditLog;
}

/**
 * Whose a payment is: the user (for a user's API key too), or, for a key that acts for no user,
 * the first key of its rotation chain, so a successor that is still ownerless keeps its
 * predecessors' payments and Idempotency-Keys. (A rotation by a user makes the successor act for
 * that user: its payments are then that user's, a new owner.)
 */
export function ownerOf(principal: Principal, ledger: Pick<PaymentLedger, "firstKeyOf">): string {
  if (principal.kind === "user") return `user:${principal.id}`;
  if (principal.userId !== null) return `user:${principal.userId}`;
  const first = ledger.firstKeyOf(principal.id);
  // A lineage written into the file: the key reaches no payments (reported by the ledger).
  if (first === null) {
    throw new AppError("UNAUTHENTICATED", "These credentials are no longer valid.");
  }
  return `key:${first}`;
}

const NOT_CONFIGURED = "Payments are not configured on this service (STRIPE_SECRET_KEY is unset).";

const WELL_FORMED = "Must be well-formed Unicode (no unpaired surrogates)";
// A control is refused as in a chat message (visible-text.ts): NUL cuts the text in C-string tools
// (probe 29c F5), and each other control is six bytes of JSON in every list and export of the
// payment (probe 87d F1: 61 KB a payment of U+0001, 6.4 MB a page of the list).
const NO_CONTROL = "Must not contain control characters other than newline and tab";
/**
 * What a metadata key may not hold: square brackets (Stripe refuses them), and what does not show
 * or is no character: controls, line and paragraph separators, private-use, unassigned and
 * noncharacter code points, the replacement character, blank letters (the braille blank, the
 * Hangul fillers, a soft hyphen; a combining grapheme joiner is default-ignorable), and every
 * other format or default-ignorable character (bidirectional overrides, zero-width spaces),
 * asked of the key once the joiners, variation selectors and tags that shape visible text where
 * they stand are taken out (`❤️`, `👨‍👩‍👧`, Persian and Sinhala words, subdivision flags; probe 33d F3
 * found a first version refusing those, 40b F4 the next keeping them anywhere).
 */
const METADATA_KEY_UNSEEN =
  /[[\]\p{Cc}\p{Co}\p{Cn}\p{Zl}\p{Zp}\uFFFD\u2800\u115F\u1160\u3164\uFFA0\u00AD\p{Cf}\p{Default_Ignorable_Code_Point}]/u;
/** Blank between words but one plain space (NBSP, a thin space, two spaces), or at either end. */
const METADATA_KEY_BLANKS = /[^\S ]| {2}|^\s|\s$/u;

function invalid(field: string, message: string, detail = "The request body is invalid."): never {
  throw new AppError("VALIDATION_FAILED", detail, [{ field, message }]);
}

/**
 * A failed Stripe call at the edge: 503 when worth retrying, 502 when Stripe will not do it. An
 * intent is retried with its Idempotency-Key, and so is a refund asked with one; a refund asked
 * without one has a Stripe key derived from the payment, its refunded total and the amount, so a
 * retry of it while that total stands is not made twice.
 */
function upstreamError(
  failure: GatewayFailure,
  retry = "retry shortly",
  keptError = "retry shortly",
): AppError {
  // For the error report: the failure as stripe-client wrote it (its kind and our reason, never
  // Stripe's text), tagged `upstream: stripe` as the chat provider's failures are (probe 30b F5).
  const cause = new Error(`stripe ${failure.kind}: ${failure.reason}`);
  // An error Stripe keeps for the key: the same request is that error again for 24 hours, so no
  // Retry-After (probe 59a F1).
  if (failure.kind === "unavailable" && failure.keptByStripe) {
    return new AppError(
      "UPSTREAM_UNAVAILABLE",
      `The payment provider answered this request with a server error it keeps for 24 hours; ${keptError}.`,
    ).causedBy(cause, "stripe");
  }
  // Stripe answers a key as it answered it first, for 24 hours: the same key is this again.
  if (failure.reason === INTENT_OF_ANOTHER_PAYMENT) {
    return new AppError(
      "UPSTREAM_UNAVAILABLE",
      "The payment provider answered with a payment this request did not ask for (another owner's, amount, currency or details), and answers this Idempotency-Key so for 24 hours: nothing was made here; send the request with a new Idempotency-Key.",
    ).causedBy(cause, "stripe");
  }
  if (failure.reason === UNDECIDED_NOT_THAT_REFUND) {
    return new AppError(
      "UPSTREAM_UNAVAILABLE",
      "An earlier refund of this payment is in doubt: the payment provider lists a refund under its key that is not that refund. No refund of this payment starts until an operator resolves it (bun run cli payments:undecided).",
    ).causedBy(cause, "stripe");
  }
  if (failure.kind === "unavailable") {
    return new AppError(
      "UPSTREAM_UNAVAILABLE",
      `The payment provider is unavailable; ${retry}.`,
      undefined,
      { "retry-after": "5" },
      503,
    ).causedBy(cause, "stripe");
  }
  return new AppError(
    "UPSTREAM_UNAVAILABLE",
    failure.kind === "refused"
      ? `The payment provider refused the request (${failure.reason}).`
      : "The payment provider's answer could not be trusted.",
  ).causedBy(cause, "stripe");
}

export function paymentsModule(options: PaymentsModuleOptions) {
  const { service, ledger, payments, standing } = options;
  const tags = ["payments"];
  const acting = (
    principal: Principal,
    request: Request,
    route: string,
    ip: string,
    requestId: string,
  ): ActingRequest => ({
    actor: principalRef(principal),
    ip,
    route: `${request.method} ${route}`,
    requestId,
  });

  return (
    new Elysia({ name: "palisade.module.payments" })
      .use(options.auth)
      // After authentication and validation (an anonymous caller still gets 401, a malformed body
      // 422), before any handler reaches for Stripe.
      .onBeforeHandle(function paymentsConfigured() {
        if (!service.configured) {
          throw new AppError("NOT_CONFIGURED", NOT_CONFIGURED);
        }
      })
      .post(
        "/api/payments/intents",
        async ({ body, headers, principal, request, route, clientIp, requestId, set }) => {
          if (body.amount > payments.maxAmount) {
            invalid("body/amount", `Must be at most ${payments.maxAmount}`);
          }
          const currency = body.currency.toLowerCase();
          if (!payments.currencies.includes(currency)) {
            invalid("body/currency", `Must be one of ${payments.currencies.join(", ")}`);
          }
          let customerEmail: string | undefined;
          if (body.customerEmail !== undefined) {
            const verdict = checkEmail(body.customerEmail);
            if (!verdict.ok) {
              invalid(
                "body/customerEmail",
                verdict.reason === "invisible_characters"
                  ? "Must not contain invisible or control characters"
                  : "Expected an email address",
              );
            }
            customerEmail = verdict.email;
          }
          // Text Stripe cannot take (the SDK fails encoding a lone surrogate, which answered 503 as
          // if Stripe were down, and every retry failed the same way) is the client's to mend.
          // A control character but tab and newline is refused too (see NO_CONTROL).
          if (body.description !== undefined) {
            if (!body.description.isWellFormed()) invalid("body/description", WELL_FORMED);
            if (hasControlBesidesTabAndNewline(body.description)) {
              invalid("body/description", NO_CONTROL);
            }
          }
          if (body.metadata !== undefined) {
            for (const [key, value] of Object.entries(body.metadata)) {
              if (!key.isWellFormed() || !String(value).isWellFormed()) {
                invalid("body/metadata", WELL_FORMED);
              }
              if (hasControlBesidesTabAndNewline(String(value)))
                invalid("body/metadata", NO_CONTROL);
              // Stripe refuses empty keys, keys over 40 characters and square brackets. A key is a
              // name a person reads in the Dashboard, so every character must show, words apart by
              // one space, in one normal form: two keys that read alike are two keys (probes 33a
              // F5, 33c F2, 33d F2).
              if (
                key.length === 0 ||
                key.length > METADATA_KEY_MAX_LENGTH ||
                METADATA_KEY_UNSEEN.test(withoutShapingCharacters(key)) ||
                METADATA_KEY_BLANKS.test(key) ||
                // One spelling a key: `café` precomposed and with a combining accent read alike.
                key.normalize("NFC") !== key
              ) {
                invalid(
                  "body/metadata",
                  `Keys must be 1–${METADATA_KEY_MAX_LENGTH} characters that show, in Unicode's NFC form, words apart by one space, without square brackets, control, zero-width or blank characters`,
                );
              }
            }
          }
          const outcome = await service.createIntent(
            ownerOf(principal, ledger),
            headers["idempotency-key"],
            {
              amount: body.amount,
              currency,
              description: body.description,
              customerEmail,
              metadata: body.metadata,
            },
            {
              ...acting(principal, request, route, clientIp, requestId),
              stands: standing && (() => standing.stillValid(principal)),
            },
          );
          switch (outcome.kind) {
            case "actor_gone":
              throw endedCredential(options.authMetrics, principal);
            case "created":
              set.status = 201;
              if (outcome.replayed) set.headers["idempotent-replayed"] = "true";
              return outcome.response;
            case "key_reused":
              throw new AppError(
                "CONFLICT",
                "This Idempotency-Key was used with a different request body.",
              );
            case "payment_gone":
              throw new AppError(
                "CONFLICT",
                "The payment this Idempotency-Key made is not on record as it was made; it is not answered again. Use a new Idempotency-Key.",
              );
            case "owner_gone":
              throw new AppError("UNAUTHENTICATED", "The account no longer exists.");
            case "over_daily":
              throw new AppError(
                "QUOTA_EXCEEDED",
                "This account has made as many payment intents as it may in 24 hours; the next may be made when the oldest of them is a day old.",
                undefined,
                { "retry-after": String(outcome.retryAfterSeconds) },
              );
            case "in_progress":
              if (outcome.retryAfterSeconds !== undefined) {
                throw new AppError(
                  "CONFLICT",
                  `The payment intent of this Idempotency-Key was made but is not recorded yet; retry with the same key in ${outcome.retryAfterSeconds} s: it returns the same intent.`,
                  undefined,
                  { "retry-after": String(outcome.retryAfterSeconds) },
                );
              }
              throw new AppError(
                "CONFLICT",
                "A request with this Idempotency-Key is still in progress; retry shortly.",
                undefined,
                { "retry-after": "1" },
              );
            case "unrecorded":
              throw new AppError(
                "SERVICE_UNAVAILABLE",
                `The payment intent was made but could not be recorded (${outcome.reason === "busy" ? "the database is busy" : "the database could not be written"}). Retry with the same Idempotency-Key in ${outcome.retryAfterSeconds} s: it returns the same intent.`,
                undefined,
                { "retry-after": String(outcome.retryAfterSeconds) },
              );
            default:
              throw upstreamError(
                outcome,
                "retry with the same Idempotency-Key",
                "retry with a new Idempotency-Key",
              );
          }
        },
        {
          auth: { scope: "payments" },
          body: IntentBody,
          headers: IdempotencyHeaders,
          response: { 201: CreatedIntent, ...problemResponses(409, 422, 501, 502, 503) },
          detail: {
            tags,
            summary: "Create a Stripe PaymentIntent (Idempotency-Key required)",
          },
        },
      )
      .get(
        "/api/payments",
        ({ query, principal }) =>
          ledger.list(ownerOf(principal, ledger), query.cursor, query.limit ?? 50),
        {
          auth: { scope: "payments" },
          query: PaymentListQuery,
          response: { 200: PaymentPage, ...problemResponses(422, 501) },
          detail: { tags, summary: "Your payments, newest first (cursor pagination)" },
        },
      )
      .get(
        "/api/payments/:id",
        ({ params, principal }) => {
          const row = ledger.findOwned(ownerOf(principal, ledger), params.id);
          if (!row) throw new AppError("NOT_FOUND", "No payment of yours has that id.");
          return viewOf(row);
        },
        {
          auth: { scope: "payments" },
          params: PaymentIdParams,
          response: { 200: Payment, ...problemResponses(404, 422, 501) },
          detail: { tags, summary: "One of your payments" },
        },
      )
      .post(
        "/api/admin/payments/:id/refund",
        async ({ params, body, headers, principal, request, route, clientIp, requestId, set }) => {
          const idempotencyKey = headers["idempotency-key"];
          const outcome = await service.refund(
            params.id,
            body?.amount,
            {
              ...acting(principal, request, route, clientIp, requestId),
              stands: standing && (() => standing.stillAdmin(principal)),
            },
            idempotencyKey,
          );
          switch (outcome.kind) {
            case "actor_gone":
              throw lostAdmin(
                { metrics: options.authMetrics, audit: options.audit, standing: standing! },
                principal,
                { route: `${request.method} ${route}`, ip: clientIp, requestId },
              );
            case "refunded":
              if (outcome.replayed) set.headers["idempotent-replayed"] = "true";
              return { refund: outcome.refund, payment: outcome.payment };
            case "key_reused":
              throw new AppError(
                "CONFLICT",
                "This Idempotency-Key was used for a refund of another amount of this payment (a refund sent without an amount is of what was left to refund when its key was first used).",
              );
            case "not_found":
              throw new AppError("NOT_FOUND", "No payment has that id.");
            case "earlier_refund_made":
              throw new AppError(
                "CONFLICT",
                `An earlier refund of ${outcome.refund.amount} of this payment, whose answer was lost, was made by Stripe (${outcome.refund.id}, ${outcome.refund.status}) and is now recorded (${outcome.payment.amountRefunded} refunded); this refund was not asked for. Ask again if another refund is wanted.`,
              );
            case "earlier_refund_undecided":
              throw new AppError(
                "UPSTREAM_UNAVAILABLE",
                `An earlier refund of this payment, whose answer was lost, is not among Stripe's refunds yet and may still be in the making; no other refund of it starts until Stripe lists it or ${outcome.retryAfterSeconds} s have passed. Retry then.`,
                undefined,
                { "retry-after": String(outcome.retryAfterSeconds) },
                503,
              );
            case "not_refundable":
              throw new AppError(
                "CONFLICT",
                `Only a succeeded payment can be refunded; this one is ${outcome.status}.`,
              );
            case "in_progress":
              // With an Idempotency-Key, a retry is the refund asked under it, whatever ran
              // meanwhile. Without one, the same request sent once the running refund has ended
              // is a second refund, and a Retry-After of a second invited exactly that (probe 78a
              // F1).
              if (idempotencyKey !== undefined) {
                throw new AppError(
                  "CONFLICT",
                  "A refund of this payment is in progress; retry with the same Idempotency-Key shortly: if the refund in progress is this key's, the retry returns it.",
                  undefined,
                  { "retry-after": "1" },
                );
              }
              throw new AppError(
                "CONFLICT",
                "A refund of this payment is in progress. Once it has ended, the same request without an Idempotency-Key is another refund: check what it made (the payment's refunds in Stripe's Dashboard) before asking again, or send one.",
              );
            case "too_much":
              return invalid(
                "body/amount",
                `Must be at most the ${outcome.remaining} not yet refunded`,
                "The refund is larger than what is left to refund.",
              );
            default:
              throw upstreamError(
                outcome,
                "retry shortly",
                "whether the refund was made is unknown: see the payment in Stripe's dashboard (a refund Stripe made is recorded here by its charge.refunded event)",
              );
          }
        },
        {
          auth: { role: "admin" },
          params: PaymentIdParams,
          headers: OptionalIdempotencyHeaders,
          body: t.Optional(RefundBody),
          response: { 200: RefundResult, ...problemResponses(404, 409, 422, 501, 502, 503) },
          detail: {
            tags: ["admin", ...tags],
            summary:
              "Refund a payment, whole or in part (audited; an Idempotency-Key makes a retry that refund)",
          },
        },
      )
  );
}
