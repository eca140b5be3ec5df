/**
 * @module
 * Listening and graceful shutdown. On SIGTERM, SIGINT or SIGHUP the server stops accepting
 * connections, lets in-flight requests finish (up to a drain timeout, or until the signal comes
 * again, after which they are cut), runs the closers (flush logs, close the database) and exits 0.
 */
import type { Config } from "./config";
import { firstLine } from "./error-line";
import type { Logger } from "./logging/logger";
import { lastResortErrorHandler } from "./plugins/error-handler/last-resort";
import { stopSignals } from "./stop-signals";

/** The slice of an Elysia app this module drives. */
export interface Listenable {
  listen(options: Bun.Serve.Options<unknown> | Record<string, unknown>): unknown;
  stop(closeActiveConnections?: boolean): Promise<unknown>;
  server: Bun.Server<unknown> | null;
}

export interface StartServerOptions {
  app: Listenable;
  config: Pick<Readonly<Config>, "host" | "port" | "bodyLimits" | "requireTls">;
  logger: Logger;
  /** Runs after the last request has been answered. */
  onClosed?: () => void | Promise<void>;
  /**
   * Runs when the drain time is up with requests still in flight, just before their connections
   * are cut: what is in flight (a chat turn, a chat reply) ends itself readably instead
   * (services.endInFlight). What it returns is waited for before the cut: a turn whose upstream
   * has answered finishes storing, and is answered, first.
   */
  onDrainTimeout?: () => void | Promise<void>;
  /**
   * Runs when a stop signalled again exits the process without closing: logs what is left undone
   * (services.reportUndone), as the graceful stop logs what it could not finish.
   */
  onForcedExit?: () => void;
  /**
   * Runs once the port is bound, before the `listening` line and before any request is answered
   * (in the same turn): what a start does only once it is sure to serve (src/index.ts).
   */
  onBound?: () => void;
  /** How long in-flight requests may take to finish once shutdown starts. */
  drainTimeoutMs?: number;
  /** Exit the process after shutdown; tests that drive shutdown in-process pass false. */
  exitProcess?: boolean;
  signals?: readonly NodeJS.Signals[];
}

export interface RunningServer {
  url: URL;
  shutdown(reason: string): Promise<void>;
  /** Whether a shutdown has begun (a stop signalled, or asked for). */
  stopping(): boolean;
}

/** The main listener cannot be bound: the start refuses with one line naming PORT and HOST. */
export class PortUnavailable extends Error {
  constructor(host: string, port: number, reason: string) {
    super(`PORT ${port} on HOST ${host} cannot be bound (${reason})`);
    this.name = "PortUnavailable";
  }
}

/**
 * An IPv4 or IPv6 address as written, not a name to resolve (config already refused anything
 * else). Not node:net's isIP: loading node:net at every start costs idle memory for one check.
 */
function isAddressLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}

/** `app.listen`, with a failure to bind as a PortUnavailable naming the system's reason. */
function listenOrExplain(
  app: StartServerOptions["app"],
  config: StartServerOptions["config"],
  options: Parameters<StartServerOptions["app"]["listen"]>[0],
): void {
  try {
    app.listen(options);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    const reason =
      typeof code === "string" && /^[A-Z_]{2,32}$/.test(code)
        ? code
        : firstLine(error).slice(0, 200);
    // Bun reports a host name that does not resolve as EADDRINUSE or ENOENT: with a name, say so.
    throw new PortUnavailable(
      config.host,
      config.port,
      isAddressLiteral(config.host)
        ? reason
        : `${reason}, or HOST does not resolve to an address of this machine`,
    );
  }
}

/** The exit status of a stop forced by a signal after the drain, before the closers ran. */
export const EXIT_FORCED = 1;

/** How long streams ended at the drain timeout have to send their last event before the cut. */
const STREAM_END_GRACE_MS = 500;

export function startServer(options: StartServerOptions): RunningServer {
  const { app, config, logger } = options;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const signals = options.signals ?? stopSignals();

  listenOrExplain(app, config, {
    hostname: config.host,
    port: config.port,
    maxRequestBodySize: config.bodyLimits.server,
    // Several processes may share one port; the kernel spreads connections between them.
    reusePort: true,
    // Never Bun's development error page (source paths, source lines, stack), whatever NODE_ENV
    // says; what escapes the app's own error handler is a bare problem+json 500.
    development: false,
    error: lastResortErrorHandler(logger, config.requireTls),
  });
  const server = app.server!;
  const url = server.url;

  let shuttingDown: Promise<void> | null = null;
  /** Where a stop is: a second signal cuts the drain short, a third ends the process at once. */
  let phase: "serving" | "draining" | "cutting" | "closing" = "serving";
  let forced = false;
  let cutNow = () => {};
  const cutRequested = new Promise<void>((resolve) => {
    cutNow = resolve;
  });
  const shutdown = (reason: string): Promise<void> => {
    shuttingDown ??= (async () => {
      phase = "draining";
      logger.info({ reason, pending: server.pendingRequests }, "shutting down");
      let drainedYet = false;
      const drained = app.stop(false).then(() => {
        drainedYet = true;
        return true;
      });
      const timedOut = Promise.race([Bun.sleep(drainTimeoutMs), cutRequested]).then(() => false);
      if (!(await Promise.race([drained, timedOut]))) {
        phase = "cutting";
        if (options.onDrainTimeout) {
          // The streams end themselves with their last event; their bytes get a moment to leave,
          // once the turns being stored are (each within its wait for a lock).
          const ended = Promise.resolve(options.onDrainTimeout());
          await Promise.race([drained, ended.then(() => Bun.sleep(STREAM_END_GRACE_MS))]);
        }
        // The streams' last events may have let the drain finish meanwhile: then Elysia has let go
        // of the server, and its stop would print "isn't running" with a stack into the log.
        if (!drainedYet) {
          if (server.pendingRequests > 0) {
            logger.warn(
              { pending: server.pendingRequests },
              forced ? "closing connections" : "drain timed out; closing connections",
            );
          }
          // Bun's own stop: the drain Elysia awaits then ends, and its stop hooks run once.
          await server.stop(true);
          await drained;
        }
      }
      phase = "closing";
      // Elysia runs after-response hooks (the access line, request metrics) on the turn after the
      // answer is sent: let the last answers' hooks run before anything closes.
      await new Promise((resolve) => setImmediate(resolve));
      await options.onClosed?.();
      logger.info("shutdown complete");
      // The access lines of requests that finished while draining are still batched.
      logger.flush();
      for (const signal of signals) process.off(signal, onSignal);
      // 0, unless what asked for the shutdown set another code (a schema changed while running).
      if (options.exitProcess ?? true) process.exit(process.exitCode ?? 0);
    })();
    return shuttingDown;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (phase === "serving") {
      void shutdown(signal);
    } else if (phase === "draining") {
      // An operator who sends the signal again wants it over: what is in flight is ended now, as
      // at the drain timeout (streams get their last event, turns being stored finish storing).
      logger.warn(
        { signal, pending: server.pendingRequests },
        "stop signalled again: ending what is in flight now; a further signal exits at once",
      );
      forced = true;
      cutNow();
    } else {
      // What is left may wait on a lock or on Stripe; the operator has said twice not to wait.
      logger.error(
        { signal, pending: server.pendingRequests },
        `stop signalled again while ${phase === "cutting" ? "ending what was in flight" : "closing"}: exiting now, without closing (audit rows still queued are written in one attempt, or logged as lost)`,
      );
      options.onForcedExit?.();
      logger.flush();
      if (options.exitProcess ?? true) process.exit(EXIT_FORCED);
    }
  };
  for (const signal of signals) process.on(signal, onSignal);
  // Announced only once the signals are handled: a supervisor (or a test) that stops the service
  // as soon as it reads this line must get the graceful shutdown, not the default exit.
  options.onBound?.();
  logger.info({ url: url.toString() }, "listening");

  return { url, shutdown, stopping: () => phase !== "serving" };
}
