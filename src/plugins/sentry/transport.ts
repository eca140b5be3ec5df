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
import type { DeliveryWatch } from "./delivery";

type Sentry = Pick<typeof SentryBun, "createTransport" | "suppressTracing">;
type TransportOptions = Parameters<typeof SentryBun.createTransport>[0] & {
  url: string;
  headers?: Record<string, string>;
};

/** Sentry's ingestion answers within a second; ten is a host that is not answering. */
export const SEND_TIMEOUT_MS = 10_000;

/** `watch` is told what became of each envelope sent (delivery.ts). */
export function guardedTransport(
  sentry: Sentry,
  watch: DeliveryWatch,
  timeoutMs = SEND_TIMEOUT_MS,
) {
  return (options: TransportOptions) =>
    sentry.createTransport(options, (request) =>
      sentry.suppressTracing(() =>
        fetch(options.url, {
          method: "POST",
          body: request.body,
          headers: options.headers,
          redirect: "error",
          signal: AbortSignal.timeout(timeoutMs),
        }).then(
          (response) => {
            watch.answered(response.status);
            return {
              statusCode: response.status,
              headers: {
                "x-sentry-rate-limits": response.headers.get("X-Sentry-Rate-Limits"),
                "retry-after": response.headers.get("Retry-After"),
              },
            };
          },
          (error: unknown) => {
            watch.lost(
              error instanceof Error && error.name === "TimeoutError" ? "timeout" : "network",
            );
            throw error;
          },
        ),
      ),
    );
}
