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
 * The listener answers only `GET /metrics` and hands it to the app with the socket's peer, so the
 * token check, the IP block, the rate limit and the request metrics apply to it as on the main
 * port. The main port answers `/metrics` with 404 while a listener is configured.
 */
import type { Logger } from "pino";

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

export function listenForMetrics({ handle, host, ports, logger }: MetricsListenerOptions) {
  let lastError = "";
  for (let port = ports.first; port <= ports.last; port++) {
    let server: Bun.Server<unknown>;
    try {
      server = Bun.serve({
        hostname: host,
        port,
        // Never shared: a second process on this port must fail here and take the next one.
        reusePort: false,
        fetch: function serveMetrics(request, server) {
          const { pathname } = new URL(request.url);
          if (pathname !== "/metrics") return new Response("Not Found\n", { status: 404 });
          handedOver.set(request, server.requestIP(request)?.address ?? null);
          return handle(request);
        },
      });
    } catch (error) {
      lastError = error instanceof Error ? error.message.split("\n")[0]! : String(error);
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
