/**
 * @module
 * `POST /webhooks/stripe`: Stripe's events, verified, applied once, never backwards.
 *
 * 1. **Signature.** The raw body — the exact text the request guard read, before any JSON parsing
 *    is trusted — goes to the SDK's `verifyHeaderAsync` with the `Stripe-Signature` header, a
 *    300-second tolerance (Stripe's default; an older timestamp is a replay) and each secret of
 *    STRIPE_WEBHOOK_SECRET in turn, so during a roll both the old and the new endpoint secret are
 *    accepted while both are listed. A missing header, a bad or stale signature, a body changed
 *    after signing: 400 BAD_SIGNATURE, counted in `webhook_signature_failures_total{provider}` and
 *    audited (`webhook.signature_failed`, with the reason and never the body). No secret
 *    configured: 501 NOT_CONFIGURED saying so.
 * 2. **Shape.** A verified event whose id is not `evt_…` or that lacks a type, time or object is
 *    400 BAD_REQUEST (counted `failed`); the ids inside it are checked by the ledger before use.
 * 3. **Exactly once.** One BEGIN IMMEDIATE transaction inserts the event id into `webhook_events`
 *    (its primary key is provider + id) and applies the effect. A redelivery — also one racing in
 *    another process — finds the row, applies nothing, and is acknowledged 200 (`duplicate`). If
 *    the transaction fails (the database locked past its timeout) nothing is recorded and the 503
 *    makes Stripe deliver again. The audit rows of the effect are written right after the commit,
 *    before the 200.
 * 4. **Order.** Moves follow modules/payments/status.ts: an older event never undoes a newer
 *    status, and a final one (`succeeded`, `canceled`, `refunded`) is never left but to `refunded`.
 *    Unknown types and payments we do not hold are acknowledged and counted `ignored`.
 */
import { Elysia, t } from "elysia";
import { type Clock, DAY_MS } from "../../clock";
import type { AppDatabase } from "../../db/client";
import { webhookEvents } from "../../db/schema";
import { AppError, problemResponses } from "../../errors";
import type { Logger } from "../../logging/logger";
import { type AuditLog, recordDone } from "../../plugins/audit/log";
import { auditedOncePerWindow, REFUSAL_AUDIT_WINDOW_MS } from "../../plugins/audit/once-per-window";
import type { authPlugin } from "../../plugins/auth";
import { READ_PARAMETERS_KEY, type ReadParameter } from "../../plugins/openapi";
import { exactBodyOf } from "../../plugins/request-guard/body";
import type { RouteClass } from "../../plugins/route-class";
import { isStripeId } from "../payments/ids";
import type { EventEffect, PaymentLedger, StripeEventLike } from "../payments/ledger";
import type { PaymentMetrics } from "../payments/metrics";
import { pruneWebhookEvents } from "./events";
import type { WebhookMetrics } from "./metrics";

export const STRIPE_SIGNATURE_TOLERANCE_S = 300;

const utf8 = new TextEncoder();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
}
export const STRIPE_WEBHOOK_PATH = "/webhooks/stripe";

export const stripeWebhookRouteClasses: readonly RouteClass[] = [
  {
    routes: [`POST ${STRIPE_WEBHOOK_PATH}`],
    policy: "webhooks",
    bodyLimit: "webhooks",
    csrfExempt: true,
    // The signature is over the bytes as sent.
    exactBytes: true,
  },
];

/**
 * The `t` of a `Stripe-Signature` header, read as the SDK reads the header (its items split on
 * commas, the key before the first `=` compared exactly) but stricter: exactly one `t`, all digits.
 * The SDK takes the last `t` and `parseInt`s it (`t=<future>a`, `t=+<future>`, `t=now,t=<future>`),
 * so any looser reading here could check one time while the SDK verifies another. Null otherwise.
 */
export function signedTimestamp(header: string): number | null {
  let found: string | null = null;
  for (const item of header.split(",")) {
    const equals = item.indexOf("=");
    if ((equals === -1 ? item : item.slice(0, equals)) !== "t") continue;
    if (found !== null) return null;
    found = equals === -1 ? "" : item.slice(equals + 1);
  }
  return found !== null && /^[0-9]{1,15}$/.test(found) ? Number(found) : null;
}

/**
 * Whether `header` signs an empty body with `secret`, checked as the SDK checks a signature
 * (HMAC-SHA256 of `<t>.` and the body, in hex, against each `v1`, in constant time). Written here
 * because the SDK refuses to verify an empty payload at all, and its refusal read as a signature
 * that failed: a signed empty body was audited as one (probe 90h F3).
 */
function signsEmptyBody(header: string, secret: string, signedAt: number): boolean {
  // Compared as the SDK compares: the hex text exactly (`Buffer.from(…, "hex")` stops at the
  // first character that is not hex and takes either case: 90j F4).
  const expected = Buffer.from(
    new Bun.CryptoHasher("sha256", secret).update(`${signedAt}.`).digest("hex"),
  );
  for (const item of header.split(",")) {
    // Read as the SDK reads an item: split on `=`, the second part the value (90m F4: `v1=…=x`).
    const [scheme, value] = item.split("=");
    if (scheme !== "v1" || value === undefined) continue;
    const given = Buffer.from(value);
    if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) return true;
  }
  return false;
}

/**
 * The event, if `header` signs `payload` with one of `secrets` within the tolerance at
 * `receivedAtMs`, either way (not older, nor dated further ahead); `malformed` when it signs a
 * body that is not JSON; null otherwise. The SDK does the comparison (constant time) and the
 * timestamp, but for an empty body (signsEmptyBody).
 */
export async function verifyStripeSignature(
  payload: string,
  header: string,
  secrets: readonly string[],
  receivedAtMs: number,
): Promise<{ event: unknown } | { malformed: true } | null> {
  // The SDK refuses a timestamp older than the tolerance but takes any in the future; a clock
  // that far ahead is not Stripe's, and a signature dated ahead would outlive the replay window.
  const signedAt = signedTimestamp(header);
  if (signedAt === null || signedAt > receivedAtMs / 1000 + STRIPE_SIGNATURE_TOLERANCE_S) {
    return null;
  }
  if (payload === "") {
    // The SDK's reading of the age: whole seconds, the current one rounded down.
    if (Math.floor(receivedAtMs / 1000) - signedAt > STRIPE_SIGNATURE_TOLERANCE_S) return null;
    return secrets.some((secret) => signsEmptyBody(header, secret, signedAt))
      ? { malformed: true }
      : null;
  }
  // Loaded at the first delivery, not at start (a service without Stripe never loads the SDK).
  const { default: StripeSdk } = await import("stripe");
  const signature = StripeSdk.webhooks.signature;
  if (signature === null) throw new Error("the Stripe SDK has no webhook signature helper");
  for (const secret of secrets) {
    try {
      await signature.verifyHeaderAsync(
        payload,
        header,
        secret,
        STRIPE_SIGNATURE_TOLERANCE_S,
        undefined,
        receivedAtMs,
      );
    } catch {
      continue; // The next secret of a roll, if any.
    }
    // Parsed here, not by the SDK's constructEventAsync, whose parse error came out as a
    // signature that failed (probe 90c): a verified body that is not JSON is a broken body. It
    // may also parse to anything, `null` included: wrapped, a verified body of the wrong shape.
    try {
      return { event: JSON.parse(payload) };
    } catch {
      return { malformed: true };
    }
  }
  return null;
}

/** The event, narrowed to what we read, or null when a verified event is not shaped like one. */
function eventShape(event: unknown): StripeEventLike | null {
  if (event === null || typeof event !== "object" || Array.isArray(event)) return null;
  const candidate = event as Record<string, unknown>;
  const data = candidate.data as { object?: unknown } | undefined;
  if (
    !isStripeId("evt", candidate.id) ||
    typeof candidate.type !== "string" ||
    candidate.type.length === 0 ||
    candidate.type.length > 100 ||
    typeof candidate.created !== "number" ||
    !Number.isInteger(candidate.created) ||
    typeof data?.object !== "object" ||
    data.object === null
  ) {
    return null;
  }
  return {
    id: candidate.id,
    type: candidate.type,
    created: candidate.created,
    data: { object: data.object as Record<string, unknown> },
  };
}

export interface StripeWebhookOptions {
  db: AppDatabase;
  clock: Clock;
  logger: Logger;
  audit: AuditLog;
  /** STRIPE_WEBHOOK_SECRET, every secret accepted; empty: the route answers 501 NOT_CONFIGURED. */
  secrets: readonly string[];
  metrics: WebhookMetrics;
  payments?: PaymentMetrics;
  /** The payments ledger the events move (sealed: modules/payments/seal.ts). */
  ledger: PaymentLedger;
}

type Applied = EventEffect | { outcome: "duplicate" };

/**
 * How long a Stripe event id is remembered. Stripe retries a delivery for up to 3 days and lets an
 * operator resend an event of the last 30 days from the Dashboard: a record kept past that would
 * catch no duplicate, and one pruned sooner would let a resent event act twice.
 */
export const STRIPE_EVENT_RETENTION_MS = 35 * DAY_MS;

/** Deletes Stripe event records past retention, oldest first, at most a batch a run. */
export function pruneStripeEvents(db: AppDatabase, now: number): void {
  pruneWebhookEvents(db, "stripe", now - STRIPE_EVENT_RETENTION_MS);
}

export function stripeWebhook(options: StripeWebhookOptions) {
  const { db, clock, logger, audit, secrets, metrics, ledger } = options;
  const firstInWindow = auditedOncePerWindow(audit, "webhook.signature_failed");

  /** Records the event id and applies its effect, in one transaction. */
  const apply = (event: StripeEventLike): Applied => {
    const now = clock.now();
    return db.transaction(
      (): Applied => {
        const inserted = db
          .insert(webhookEvents)
          .values({ provider: "stripe", eventId: event.id, type: event.type, receivedAt: now })
          // Only its own key makes an event a duplicate: a conflict on any other constraint fails
          // the delivery (Stripe retries it) rather than skipping the event.
          .onConflictDoNothing({ target: [webhookEvents.provider, webhookEvents.eventId] })
          .returning({ eventId: webhookEvents.eventId })
          .all();
        if (inserted.length === 0) return { outcome: "duplicate" };
        return ledger.applyStripeEvent(event, now);
      },
      { behavior: "immediate" },
    );
  };

  return (auth: ReturnType<typeof authPlugin>) =>
    new Elysia({ name: "palisade.module.webhooks.stripe" }).use(auth).post(
      STRIPE_WEBHOOK_PATH,
      async (context) => {
        const { body, request, clientIp, clientKey, requestId } = context;
        if (secrets.length === 0) {
          throw new AppError(
            "NOT_CONFIGURED",
            "Stripe webhooks are not configured on this service (STRIPE_WEBHOOK_SECRET is unset).",
          );
        }
        // The request guard keeps the exact bytes and text it read (exactBodyOf) while Elysia
        // parses the body; `body` is named so that Elysia reads it, and is never trusted.
        void body;
        const { text: raw, bytes } = exactBodyOf(context);
        const header = request.headers.get("stripe-signature");
        // The matched route, as every audit row names it: a trailing slash reaches this handler too.
        const route = `POST ${STRIPE_WEBHOOK_PATH}`;
        // The SDK verifies text, so the text must be exactly the bytes received: a body that
        // decodes to it from other bytes (a byte-order mark, invalid UTF-8) is not what was signed.
        const exact = sameBytes(utf8.encode(raw), bytes);
        const verified =
          header === null || !exact
            ? null
            : await verifyStripeSignature(raw, header, secrets, clock.now());
        if (verified === null) {
          metrics.signatureFailures.labels("stripe").inc();
          // Audited once per address and minute (audit/once-per-window); the metric counts each.
          const audited = firstInWindow("stripe", clientKey, clock.now(), REFUSAL_AUDIT_WINDOW_MS);
          if (audited)
            audit.record({
              type: "webhook.signature_failed",
              outcome: "denied",
              ip: clientIp,
              route,
              requestId,
              detail: {
                provider: "stripe",
                reason:
                  header === null
                    ? "missing Stripe-Signature header"
                    : exact
                      ? "no secret verified it"
                      : "body bytes are not its UTF-8 text",
              },
            });
          throw new AppError(
            "BAD_SIGNATURE",
            "The Stripe-Signature header does not verify this body.",
            undefined,
            undefined,
            400,
          );
        }
        if ("malformed" in verified) {
          metrics.events.labels("stripe", "failed").inc();
          throw new AppError("MALFORMED_BODY", "The request body is not valid JSON.");
        }
        const event = eventShape(verified.event);
        if (event === null) {
          metrics.events.labels("stripe", "failed").inc();
          throw new AppError("BAD_REQUEST", "The event is not shaped like a Stripe event.");
        }
        const applied = apply(event);
        metrics.events.labels("stripe", applied.outcome).inc();
        if (applied.outcome !== "duplicate") {
          for (const status of applied.statuses) options.payments?.payments.labels(status).inc();
          // Committed: Stripe would redeliver an event already applied if this were a 503.
          for (const entry of applied.audit)
            recordDone(audit, logger, { ...entry, ip: clientIp, route, requestId });
          if (applied.alert) {
            logger.error({ requestId, eventId: event.id, type: event.type }, applied.alert);
          }
          if (applied.outcome === "ignored") {
            logger.info(
              { requestId, eventId: event.id, type: event.type, reason: applied.reason },
              "stripe event acknowledged and ignored",
            );
          }
        }
        return { received: true as const, outcome: applied.outcome };
      },
      {
        public: true,
        response: {
          200: t.Object({
            received: t.Literal(true),
            outcome: t.UnionEnum(["processed", "duplicate", "ignored"]),
          }),
          ...problemResponses(400, 413, 415, 501, 503),
        },
        detail: {
          tags: ["webhooks"],
          summary: "Stripe events (Stripe-Signature verified over the raw body; each id once)",
          // Checked over the raw body, before it is parsed.
          [READ_PARAMETERS_KEY]: [
            {
              name: "Stripe-Signature",
              in: "header",
              required: true,
              description:
                "`t=<unix time>,v1=<HMAC-SHA256 of t.body with an endpoint secret>`, as Stripe signs events (STRIPE_WEBHOOK_SECRET)",
              schema: { type: "string" },
            },
          ] satisfies ReadParameter[],
        },
      },
    );
}
