/**
 * @module
 * Stripe's object ids, checked before use wherever they come from: a client's path parameter, a
 * Stripe response, a webhook event. A prefix names the object (`pi_` PaymentIntent, `evt_` event,
 * `ch_` charge, `re_` refund, `dp_` dispute), then letters, digits and underscores. Stripe documents
 * ids as up to 255 characters; anything else is not an id we ever send on or store.
 */

export const STRIPE_ID_MAX_LENGTH = 255;

export type StripeIdKind = "pi" | "evt" | "ch" | "re" | "dp";

const PATTERNS: Record<StripeIdKind, RegExp> = {
  pi: /^pi_[A-Za-z0-9_]{1,252}$/,
  evt: /^evt_[A-Za-z0-9_]{1,251}$/,
  ch: /^(?:ch|py)_[A-Za-z0-9_]{1,252}$/,
  re: /^(?:re|pyr)_[A-Za-z0-9_]{1,251}$/,
  dp: /^(?:dp|du)_[A-Za-z0-9_]{1,252}$/,
};

/** The pattern as a JSON-schema string, for path parameters (`pi_…`). */
export const PAYMENT_INTENT_ID_PATTERN = "^pi_[A-Za-z0-9_]{1,252}$";

export function isStripeId(kind: StripeIdKind, value: unknown): value is string {
  return typeof value === "string" && PATTERNS[kind].test(value);
}

/** A PaymentIntent's client secret: `pi_…_secret_…`, for that intent. */
export function isClientSecretOf(intentId: string, value: unknown): value is string {
  return (
    typeof value === "string" &&
    value.length <= 512 &&
    value.startsWith(`${intentId}_secret_`) &&
    /^[A-Za-z0-9_]+$/.test(value)
  );
}
