/**
 * @module
 * The last stage: after each response, one access-log line and the request metrics, in a single
 * `onAfterResponse` hook (each such hook costs every request).
 *
 * The line carries request id, method, route pattern, status, duration and client address, in
 * pino's layout on pino's own destination, but is serialised here: pino's general path (redaction
 * by path, formatters) costs ~7 µs a line on this machine against ~0.5 µs for one JSON.stringify
 * of a flat object whose fields we choose. The same secret scrubber runs over it. Lines are written
 * in batches of up to 100 ms (flushed when the app stops). Client-supplied
 * text (the path of an unmatched request, the user agent) is scrubbed whole (the path also
 * decoded, logging/scrub), then goes through logSafe, so it cannot forge or split a line and a
 * secret cut at the length limit leaves nothing of itself.
 *
 * `route` is the matched pattern. A request an early stage refused (IP block, rate limit, request
 * guard, CSRF) was never routed by Elysia; it carries the pattern of the route it was aimed at
 * (error-handler/route-methods), and only a request that matches no route is `<unmatched>`.
 *
 * A streamed response (SSE) is measured to the end of its body, not to its first byte: the
 * handler registers it (stream-end.ts) and the line and the histogram wait for its end.
 */
import { Elysia } from "elysia";
import pino from "pino";
import { bufferLines } from "../../logging/line-buffer";
import { type Logger, logSafe, secretScrubber } from "../../logging/logger";
import { scrubUrlPart } from "../../logging/scrub";
import { type RouteEntry, routePatternIndex } from "../error-handler/route-methods";
import type { HttpMetrics } from "../metrics/http";
import type { RequestState } from "../request-state";
import type { RequestTrace } from "../sentry";
import { streamEndOf } from "./stream-end";

export { streamedResponse } from "./stream-end";

export const UNMATCHED_ROUTE = "<unmatched>";
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

export function statusOf(response: unknown, fallback: number | string | undefined): number {
  if (response instanceof Response) return response.status;
  return typeof fallback === "number" ? fallback : 200;
}

export interface AccessLogOptions {
  logger: Logger;
  http: HttpMetrics;
  secretValues?: readonly string[];
  /** Batch lines (see logging/line-buffer); tests that read each line at once turn it off. */
  buffered?: boolean;
  /** Sampled request tracing (plugins/sentry); absent when tracing is off. */
  trace?: (trace: RequestTrace) => void;
  /** The app's registered routes, for the route of a request refused before routing. */
  routes?: () => readonly RouteEntry[];
}

interface Destination {
  write(line: string): unknown;
}

export function accessLog(options: AccessLogOptions) {
  const { logger, http, secretValues = [], buffered = true, trace } = options;
  const routePatternOf = routePatternIndex(options.routes ?? (() => []));
  const stream = (logger as unknown as Record<symbol, Destination>)[pino.symbols.streamSym]!;
  const destination = buffered
    ? bufferLines(stream)
    : { write: (line: string) => stream.write(line), flush() {} };
  const scrub = secretScrubber(secretValues);
  const scrubPath = (path: string) => scrubUrlPart(path, scrub);
  const bindings = logger.bindings();
  const service = typeof bindings.service === "string" ? bindings.service : "palisade";

  return new Elysia({ name: "palisade.access-log" })
    .onStop(() => destination.flush())
    .onAfterResponse(function observeRequest(context) {
      const { request, startedAt, requestId, clientIp, path, route, responseValue, set } =
        context as unknown as RequestState & {
          route: string;
          responseValue: unknown;
          set: { status?: number | string };
        };
      const status = statusOf(responseValue, set.status);
      const streamEnd = streamEndOf(request);
      const observe = () => {
        const seconds = (performance.now() - startedAt) / 1000;
        const routeLabel = route || routePatternOf(request.method, path) || UNMATCHED_ROUTE;
        const method = KNOWN_METHODS.has(request.method) ? request.method : "OTHER";
        http.observe(method, routeLabel, status, seconds);
        if (trace) {
          const endMs = Date.now();
          trace({
            method,
            route: routeLabel,
            status,
            requestId,
            startMs: endMs - seconds * 1000,
            endMs,
          });
        }

        const level = status >= 500 ? "error" : status >= 400 ? "warn" : "info";
        if (!logger.isLevelEnabled(level)) return;
        const line = JSON.stringify({
          level,
          time: new Date().toISOString(),
          service,
          requestId,
          method: logSafe(request.method),
          route: routeLabel,
          // A request Elysia did not route (refused early, or no route) also logs its path, scrubbed.
          path: route ? undefined : logSafe(path, scrubPath),
          status,
          durationMs: Math.round(seconds * 1e6) / 1000,
          clientIp,
          userAgent: logSafe(request.headers.get("user-agent"), scrub),
          msg: "request",
        });
        destination.write(`${scrub(line)}\n`);
      };
      if (streamEnd) streamEnd.then(observe);
      else observe();
    })
    .as("global");
}
