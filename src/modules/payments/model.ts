import { t } from "elysia";
import { JsonInteger } from "../../plugins/openapi/json-integer";
import { Nullable } from "../../plugins/openapi/types";
import { PAYMENT_INTENT_ID_PATTERN } from "./ids";

/** Stripe's own metadata limits. */
export const METADATA_MAX_KEYS = 20;
export const METADATA_KEY_MAX_LENGTH = 40;
export const METADATA_VALUE_MAX_LENGTH = 500;
export const DESCRIPTION_MAX_LENGTH = 500;
export const MIN_AMOUNT = 50;

/**
 * The body of `POST /api/payments/intents`. The amount's upper bound (PAYMENT_MAX_AMOUNT), the
 * currency list (PAYMENT_CURRENCIES), the email rule and the metadata key length are checked in
 * the handler, against configuration and modules/auth/email.ts. Unknown fields are refused.
 */
export const IntentBody = t.Object(
  {
    amount: JsonInteger({
      minimum: MIN_AMOUNT,
      description: "Minor units (cents); at most PAYMENT_MAX_AMOUNT",
    }),
    currency: t.String({
      minLength: 3,
      maxLength: 3,
      pattern: "^[A-Za-z]{3}$",
      description: "ISO 4217, any case; one of PAYMENT_CURRENCIES",
    }),
    description: t.Optional(
      t.String({
        maxLength: DESCRIPTION_MAX_LENGTH,
        description: "No control character but newline and tab",
      }),
    ),
    customerEmail: t.Optional(
      t.String({ maxLength: 320, description: "Validated like account emails" }),
    ),
    metadata: t.Optional(
      // An empty value unsets its key at Stripe: stored here, Palisade's record and Stripe's intent
      // told two stories (probe 89e F3).
      t.Record(t.String(), t.String({ minLength: 1, maxLength: METADATA_VALUE_MAX_LENGTH }), {
        maxProperties: METADATA_MAX_KEYS,
        description: `At most ${METADATA_MAX_KEYS} keys of 1–${METADATA_KEY_MAX_LENGTH} characters (characters that show, NFC, words apart by one space; no square brackets), string values of 1–${METADATA_VALUE_MAX_LENGTH} characters (no control character but newline and tab; an empty one would unset its key at Stripe)`,
      }),
    ),
  },
  { additionalProperties: false },
);

export const IdempotencyHeaders = t.Object({
  "idempotency-key": t.String({
    minLength: 1,
    maxLength: 255,
    // Printable ASCII but the comma: fetch joins a header sent twice with ", ", so the request
    // guard reads a comma in Idempotency-Key as a duplicate (400 DUPLICATE_HEADER).
    pattern: "^[\\x20-\\x2B\\x2D-\\x7E]+$",
    description:
      "1–255 printable ASCII characters, no comma; the same key and body replay the first result",
  }),
});

/** The refund route's: optional, the same shape; with it a retry returns the refund asked under it. */
export const OptionalIdempotencyHeaders = t.Object({
  "idempotency-key": t.Optional(IdempotencyHeaders.properties["idempotency-key"]),
});

export const CreatedIntent = t.Object({
  id: t.String({ description: "Stripe's PaymentIntent id, `pi_…`" }),
  clientSecret: t.String({ description: "For Stripe.js on the client: confirms this intent" }),
  status: t.String(),
  amount: JsonInteger(),
  currency: t.String(),
});

export const Payment = t.Object({
  id: t.String(),
  amount: JsonInteger(),
  currency: t.String(),
  status: t.String(),
  amountRefunded: JsonInteger(),
  description: Nullable(t.String()),
  customerEmail: Nullable(t.String()),
  metadata: Nullable(t.Record(t.String(), t.String())),
  disputed: t.Boolean(),
  createdAt: t.String({ format: "date-time" }),
  updatedAt: t.String({ format: "date-time" }),
});

export const PaymentPage = t.Object({
  payments: t.Array(Payment),
  nextCursor: Nullable(JsonInteger()),
});

export const PaymentListQuery = t.Object({
  cursor: t.Optional(t.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100 })),
});

export const PaymentIdParams = t.Object({
  id: t.String({ pattern: PAYMENT_INTENT_ID_PATTERN, maxLength: 255, description: "`pi_…`" }),
});

export const RefundBody = t.Object(
  {
    amount: t.Optional(
      JsonInteger({
        minimum: 1,
        description: "Minor units; the whole remaining amount when absent",
      }),
    ),
  },
  { additionalProperties: false },
);

export const RefundResult = t.Object({
  refund: t.Object({ id: t.String(), amount: JsonInteger(), status: t.String() }),
  payment: Payment,
});
