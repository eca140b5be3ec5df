/**
 * @module
 * The last stage: after each response, one access-log line and the request metrics, in a single
 * `onAfterResponse` hook (each such hook costs every request).
 *
 * The line carries request id, method, route pattern, status, duration and client address, in
 * the logger's layout on the logger's own destination, but is serialised here: a general logger's
 * path (redaction by path, formatters) cost ~7 µs a line on this machine; the line is one string
 * built from fields we choose (line.ts). Lines are written in the logger's batches (up to 100 ms
 * or 4 KB; written before any other line of the logger, and at shutdown). Client-supplied text that can hold a secret (the path of an unmatched request, the user
 * agent, an unknown method) is scrubbed whole with the same secret scrubber (the path also
 * decoded, logging/scrub), then goes through logSafe and is JSON-escaped, so it cannot forge or
 * split a line and a secret cut at the length limit leaves nothing of itself. The other fields
 * cannot hold one: the request id was refused at the door if it looked like a secret
 * (request-id), and the rest are ours (route pattern, status, address, numbers).
 *
 * `route` is the matched pattern. A request an early stage refused (IP block, rate limit, request
 * guard, CSRF) was never routed by Elysia; it carries the pattern of the route it was aimed at
 * (error-handler/route-methods), and only a request that matches no route is `<unmatched>`.
 *
 * A streamed response (SSE) is measured to the end of its body, not to its first byte: the
 * handler registers it (stream-end.ts) and the line and the histogram wait for its end. The line's
 * `durationMs` is the whole request; the histogram leaves out the time its body took to arrive
 * (the request guard's `bodyWaitMs`), which the client decides.
 */
import { Elysia } from "elysia";
import { PIPE_BUF } from "../../logging/line-buffer";
import { type LogDestination, type Logger, logSafe, secretScrubber } from "../../logging/logger";
import { scrubUrlPart } from "../../logging/scrub";
import { type RouteEntry, routePatternIndex } from "../error-handler/route-methods";
import type { HttpMetrics } from "../metrics/http";
import type { RequestState } from "../request-state";
import type { RequestTrace } from "../sentry";
import { createAccessLine, isoTimeCache, memoizeText } from "./line";
import { streamEndOf } from "./stream-end";

export { streamedResponse } from "./stream-end";

export const UNMATCHED_ROUTE = "<unmatched>";

/**
 * Client text is cut at 512 characters before its control characters are escaped, so a value of
 * tabs grows sevenfold in the line: a client could make its access line longer than PIPE_BUF,
 * which a pipe shared by several processes may split into another process's line. Such a line is
 * built again with each client value cut to this many (escaped) characters: three of them, at
 * most 3 bytes a character in the line, stay far under 4 KB.
 */
export const SHORTENED_CLIENT_TEXT = 128;

/** `logged` (logSafe's output) cut to `max` characters, never inside one of its `\uXXXX` escapes. */
export function cutLogged(logged: string | undefined, max = SHORTENED_CLIENT_TEXT) {
  if (logged === undefined || logged.length <= max) return logged;
  let end = max;
  const lastEscape = logged.lastIndexOf("\\u", end);
  if (lastEscape !== -1 && lastEscape + 6 > end) end = lastEscape;
  return `${logged.slice(0, end)}…`;
}

function shortened<T extends { method: string; path?: string; userAgent?: string }>(fields: T): T {
  return {
    ...fields,
    method: cutLogged(fields.method)!,
    path: cutLogged(fields.path),
    userAgent: cutLogged(fields.userAgent),
  };
}

/** Whether a line is longer than PIPE_BUF bytes. */
function overPipeBuf(line: string): boolean {
  // A character is at most 3 bytes here (JSON escapes what is not), so most lines skip the count.
  return line.length * 3 > PIPE_BUF && Buffer.byteLength(line) > PIPE_BUF;
}
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

export function accessLog(options: AccessLogOptions) {
  const { logger, http, secretValues = [], buffered = true, trace } = options;
  const routePatternOf = routePatternIndex(options.routes ?? (() => []));
  const destination: LogDestination = buffered ? logger.batched : logger.destination;
  const scrub = secretScrubber(secretValues);
  const scrubPath = (path: string) => scrubUrlPart(path, scrub);
  const bindings = logger.bindings();
  const service = typeof bindings.service === "string" ? bindings.service : "palisade";
  const clockText = isoTimeCache();
  const accessLine = createAccessLine();
  const userAgentText = memoizeText((agent) => logSafe(agent, scrub));

  return new Elysia({ name: "palisade.access-log" })
    .onStop(() => destination.flush?.())
    .onAfterResponse(function observeRequest(context) {
      const {
        request,
        startedAt,
        bodyWaitMs,
        requestId,
        clientIp,
        path,
        route,
        responseValue,
        set,
      } = context as unknown as RequestState & {
        route: string;
        responseValue: unknown;
        set: { status?: number | string };
      };
      const status = statusOf(responseValue, set.status);
      // A 503 is the service declining to serve (a queue or budget full, a lock waited out, a
      // stop, an upstream's circuit open), each cause logged by the stage that chose it, and a 501
      // a feature not configured: their access lines are warnings. As errors, a login flood's
      // were 87k lines in 30 s (probe 30e F8), and anyone could write one a request to an
      // unconfigured webhook (probe 31b F3); an alert on error lines paged with no fault to find.
      const streamEnd = streamEndOf(request);
      const observe = () => {
        const seconds = (performance.now() - startedAt) / 1000;
        const routeLabel = route || routePatternOf(request.method, path) || UNMATCHED_ROUTE;
        const method = KNOWN_METHODS.has(request.method) ? request.method : "OTHER";
        // The service's time: a body sent slowly is the client's, and any client could otherwise
        // fill the slow buckets, and page PalisadeLatencyP99High, at will (probe 89a F3).
        http.observe(method, routeLabel, status, seconds - (bodyWaitMs ?? 0) / 1000);
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

        const level =
          status >= 500 && status !== 501 && status !== 503
            ? "error"
            : status >= 400
              ? "warn"
              : "info";
        if (!logger.isLevelEnabled(level)) return;
        const fields = {
          level,
          time: clockText(),
          service,
          requestId,
          // Bun passes any token as a method, so an unknown one is client text like the rest.
          method: KNOWN_METHODS.has(request.method)
            ? request.method
            : logSafe(scrub(request.method))!,
          route: routeLabel,
          // A request Elysia did not route (refused early, or no route) also logs its path, scrubbed.
          path: route ? undefined : logSafe(path, scrubPath),
          status,
          durationMs: Math.round(seconds * 1e6) / 1000,
          clientIp,
          userAgent: userAgentText(request.headers.get("user-agent")),
        };
        const line = accessLine(fields);
        destination.write(overPipeBuf(line) ? accessLine(shortened(fields)) : line);
      };
      if (streamEnd) streamEnd.then(observe);
      else observe();
    })
    .as("global");
}
