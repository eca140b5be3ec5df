/**
 * @module
 * `/metrics` on a listener of its own (METRICS_PORT), one per process. Several processes share the
 * main port (`reusePort`): a scrape of that port reaches whichever process the kernel picks, so
 * Prometheus would see one process's counters at random. Here each process binds a port of its
 * own — the first free one of the METRICS_PORT range, never shared (no `reusePort`) — so
 * Prometheus scrapes every process as its own target and sums them. Bound to METRICS_HOST
 * (127.0.0.1 by default): only this host can reach it, which is what lets production serve it
 * without METRICS_TOKEN.
 *
 * The listener hands every request for `/metrics` to the app with the socket's peer, whatever its
 * Host, so the Host check, the token check, the IP block, the rate limit, the problem+json errors
 * and the request metrics apply to it as on the main port; any other path is answered here, 404
 * problem+json. The path is found without parsing the URL (Bun hands over a bare path when the Host
 * is malformed or missing), and Bun runs it with `development: false` and an `error` callback, so
 * nothing it serves is ever Bun's error page. The main port answers `/metrics` with 404 while a
 * listener is configured.
 */
import { firstLine } from "../../error-line";
import type { Logger } from "../../logging/logger";
import { lastResortErrorHandler, problemResponse } from "../error-handler/last-resort";
import { withRealPath } from "../request-guard/host";

const handedOver = new WeakMap<Request, string | null>();

/** The peer of a request the listener handed over; undefined for any other request. */
export function metricsListenerPeer(request: Request): string | null | undefined {
  return handedOver.get(request);
}

/** Whether the request came through the metrics listener. */
export function viaMetricsListener(request: Request): boolean {
  return handedOver.has(request);
}

export interface MetricsListenerOptions {
  /** The app's request handler (`app.handle`). */
  handle(request: Request): Promise<Response> | Response;
  host: string;
  ports: { first: number; last: number };
  logger: Logger;
  /** Strict-Transport-Security on its own answers, as on the app's (config.requireTls). */
  hsts: boolean;
}

export interface MetricsListener {
  url: URL;
  stop(): Promise<void>;
}

/** No port of the range could be bound. */
export class MetricsPortUnavailable extends Error {
  constructor(range: string, reason: string) {
    super(`METRICS_PORT ${range}: no port could be bound (${reason})`);
    this.name = "MetricsPortUnavailable";
  }
}

/** The path of a request withRealPath has given an absolute URL, without the query string. */
function pathOf(request: Request): string {
  const url = withRealPath(request).url;
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start < 0) return "/";
  const end = url.slice(start).search(/[?#]/);
  return end < 0 ? url.slice(start) : url.slice(start, start + end);
}

export function listenForMetrics({ handle, host, ports, logger, hsts }: MetricsListenerOptions) {
  let lastError = "";
  const answerServerError = lastResortErrorHandler(logger, hsts);
  for (let port = ports.first; port <= ports.last; port++) {
    let server: Bun.Server<unknown>;
    try {
      server = Bun.serve({
        hostname: host,
        port,
        // Never shared: a second process on this port must fail here and take the next one.
        reusePort: false,
        // Never Bun's development error page (source paths, source lines, stack).
        development: false,
        fetch: function serveMetrics(request, server) {
          const path = pathOf(request);
          // As the main port's router takes it (a trailing slash is the same route there).
          if (path !== "/metrics" && path !== "/metrics/") {
            return problemResponse("NOT_FOUND", "No route matches this path.", hsts);
          }
          handedOver.set(request, server.requestIP(request)?.address ?? null);
          return handle(request);
        },
        error: answerServerError,
      });
    } catch (error) {
      lastError = firstLine(error);
      continue;
    }
    const url = new URL("/metrics", server.url);
    logger.info({ url: url.toString() }, "metrics listening");
    return {
      url,
      async stop() {
        await server.stop(true);
      },
    } satisfies MetricsListener;
  }
  const range = ports.first === ports.last ? `${ports.first}` : `${ports.first}-${ports.last}`;
  throw new MetricsPortUnavailable(range, lastError);
}
