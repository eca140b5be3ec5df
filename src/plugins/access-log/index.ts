/**
 * @module
 * One JSON line per request, after the response is sent: request id, method, route pattern,
 * status, duration and client address. Client-supplied text (the path of an unmatched request, the
 * user agent) goes through logSafe, so it cannot forge or split a line.
 */
import { Elysia } from "elysia";
import { type Logger, logSafe } from "../../logging/logger";

export const UNMATCHED_ROUTE = "<unmatched>";

export function statusOf(response: unknown, fallback: number | string | undefined): number {
  if (response instanceof Response) return response.status;
  return typeof fallback === "number" ? fallback : 200;
}

export function accessLog({ logger }: { logger: Logger }) {
  return new Elysia({ name: "palisade.access-log" })
    .onAfterResponse(function logRequest(context) {
      const { request, set, route } = context;
      const { requestId, startedAt, clientIp } = context as unknown as {
        requestId: string;
        startedAt: number;
        clientIp: string;
      };
      const status = statusOf(context.responseValue, set.status);
      const entry = {
        requestId,
        method: request.method,
        route: route || UNMATCHED_ROUTE,
        path: route ? undefined : logSafe(new URL(request.url).pathname),
        status,
        durationMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
        clientIp,
        userAgent: logSafe(request.headers.get("user-agent")),
      };
      if (status >= 500) logger.error(entry, "request");
      else if (status >= 400) logger.warn(entry, "request");
      else logger.info(entry, "request");
    })
    .as("global");
}
