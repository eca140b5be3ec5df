/**
 * @module
 * The transport events leave by: the SDK's fetch transport, except that a redirect from the DSN's
 * host is not followed. The SDK's own follows one to whatever host and scheme it names, sending
 * the event there (fetch drops only `Authorization` across origins, and the DSN's key travels in
 * a header of its own), as the chat provider's and Stripe's clients did before they were told
 * not to (probe 43b's class). A redirect is a failed send: the SDK drops the event as it drops
 * one the network refused.
 */
import type * as SentryBun from "@sentry/bun";
import type { DeliveryOutcome } from "./delivery";

type Sentry = Pick<typeof SentryBun, "createTransport" | "suppressTracing">;
type TransportOptions = Parameters<typeof SentryBun.createTransport>[0] & {
  url: string;
  headers?: Record<string, string>;
};

/** `delivered` is told what became of each envelope (delivery.ts). */
export function noRedirectTransport(
  sentry: Sentry,
  delivered: (outcome: DeliveryOutcome) => void = () => {},
) {
  return (options: TransportOptions) =>
    sentry.createTransport(options, (request) =>
      sentry.suppressTracing(() =>
        fetch(options.url, {
          method: "POST",
          body: request.body,
          headers: options.headers,
          redirect: "error",
        }).then(
          (response) => {
            delivered({ status: response.status });
            return {
              statusCode: response.status,
              headers: {
                "x-sentry-rate-limits": response.headers.get("X-Sentry-Rate-Limits"),
                "retry-after": response.headers.get("Retry-After"),
              },
            };
          },
          (error: unknown) => {
            delivered({ status: null });
            throw error;
          },
        ),
      ),
    );
}
