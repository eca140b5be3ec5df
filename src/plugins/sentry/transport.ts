/**
 * @module
 * The transport events leave by: the SDK's fetch transport, except that a redirect from the DSN's
 * host is not followed, and an answer must come within a time. The SDK's own follows one redirect
 * to whatever host and scheme it names, sending the event there (fetch drops only `Authorization`
 * across origins, and the DSN's key travels in a header of its own), as the chat provider's and
 * Stripe's clients did before they were told not to (probe 43b's class). And it waits for an
 * answer without end: a host that accepts the connection and never answers held each event in the
 * SDK's buffer until it was full, and every later event was dropped, unlogged (probe 57a F4). A
 * redirect or no answer in time is a failed send: the SDK drops the event as it drops one the
 * network refused.
 */
import type * as SentryBun from "@sentry/bun";
import { type DeliveryWatch, failureOfStatus, type ReportKind } from "./delivery";

type Sentry = Pick<typeof SentryBun, "createTransport" | "suppressTracing">;
type TransportOptions = Parameters<typeof SentryBun.createTransport>[0] & {
  url: string;
  headers?: Record<string, string>;
};
type Envelope = Parameters<ReturnType<typeof SentryBun.createTransport>["send"]>[0];

/** Sentry's ingestion answers within a second; ten is a host that is not answering. */
export const SEND_TIMEOUT_MS = 10_000;
/** Envelopes waiting for Sentry's answer at once, error events apart from the rest. */
export const ERROR_QUEUE_SIZE = 64;
export const TRACE_QUEUE_SIZE = 32;
/** Client reports (the SDK's own counts of what it dropped): one a minute at most. */
const OTHER_QUEUE_SIZE = 8;

export interface TransportHooks {
  /** Told what became of each envelope sent (delivery.ts). */
  watch: DeliveryWatch;
  /**
   * Told of each error event's envelope once settled: whether Sentry took it (a 2xx), or it was
   * refused, not answered or dropped unsent (a full queue, backing off after a 429).
   */
  errorSettled?: (eventId: string, delivered: boolean) => void;
  timeoutMs?: number;
}

/** What an envelope carries: an error event, a transaction, or neither (a client report). */
function kindOf(envelope: Envelope): ReportKind | null {
  const types = envelope[1].map((item) => (item[0] as { type?: string }).type);
  if (types.includes("event")) return "error";
  return types.includes("transaction") ? "transaction" : null;
}

/**
 * Error events, transactions and the rest leave by queues of their own: with one queue of 64, a flood of
 * sampled transactions filled it, and the error a real failure made was dropped unsent (probe 89a
 * F1: a 503 during a `GET /health` flood never reached Sentry).
 */
export function guardedTransport(sentry: Sentry, hooks: TransportHooks) {
  const { watch, errorSettled, timeoutMs = SEND_TIMEOUT_MS } = hooks;
  return (options: TransportOptions) => {
    const makeRequest = (kind: ReportKind | null) => (request: { body: string | Uint8Array }) =>
      sentry.suppressTracing(() =>
        fetch(options.url, {
          method: "POST",
          body: request.body,
          headers: options.headers,
          redirect: "error",
          signal: AbortSignal.timeout(timeoutMs),
        }).then(
          (response) => {
            if (kind !== null) watch.answered(response.status, kind);
            return {
              statusCode: response.status,
              headers: {
                "x-sentry-rate-limits": response.headers.get("X-Sentry-Rate-Limits"),
                "retry-after": response.headers.get("Retry-After"),
              },
            };
          },
          (error: unknown) => {
            if (kind !== null) {
              watch.lost(
                error instanceof Error && error.name === "TimeoutError" ? "timeout" : "network",
                kind,
              );
            }
            throw error;
          },
        ),
      );
    const queue = (kind: ReportKind | null, bufferSize: number) =>
      sentry.createTransport({ ...options, bufferSize }, makeRequest(kind));
    const errors = queue("error", ERROR_QUEUE_SIZE);
    const transactions = queue("transaction", TRACE_QUEUE_SIZE);
    const other = queue(null, OTHER_QUEUE_SIZE);
    return {
      send(envelope: Envelope) {
        const kind = kindOf(envelope);
        if (kind !== "error") return (kind === "transaction" ? transactions : other).send(envelope);
        const eventId = (envelope[0] as { event_id?: string }).event_id;
        const settled = (delivered: boolean) => {
          if (eventId !== undefined) errorSettled?.(eventId, delivered);
        };
        return errors.send(envelope).then(
          (response) => {
            // No status: dropped unsent (a full queue, backing off after a 429).
            const status = response.statusCode;
            settled(status !== undefined && failureOfStatus(status) === null);
            return response;
          },
          (error: unknown) => {
            settled(false);
            throw error;
          },
        );
      },
      flush: async (timeout?: number) =>
        (await Promise.all([errors, transactions, other].map((each) => each.flush(timeout)))).every(
          Boolean,
        ),
    };
  };
}
