/**
 * @module
 * Error reporting to Sentry, only when SENTRY_DSN is set. Without it the reporter is a no-op and
 * the SDK is never even imported.
 *
 * Not the SDK's global `Sentry.init`: each app gets its own `BunClient` bound to its own `Scope`
 * (the SDK's documented set-up for code that shares a process), so two apps in one process (the
 * tests) never report into each other and nothing global needs resetting. The SDK is imported
 * when the reporter is made (it takes ~0.5 s to load); what is reported before it is ready is
 * queued (at most 100 events) and sent once it is. No default integrations: nothing hooks the
 * process, `fetch` or the console; events carry what `report` puts in them, scrubbed by
 * `beforeSend` (scrub.ts).
 *
 * `report` is called by the one error handler for every 5xx (but 501 NOT_CONFIGURED, a feature
 * the deployment left off) and by features for an upstream failure they answer without throwing;
 * each event carries the request id, route, method and principal as tags. `flush` runs at
 * shutdown.
 *
 * Tracing: with SENTRY_TRACES_SAMPLE_RATE above 0, that share of requests is sent as an
 * `http.server` transaction (name `METHOD /route/pattern`, status, duration, request id), built
 * from what the access log already measures; nothing else is instrumented.
 */
import type * as SentryBun from "@sentry/bun";
import type { Logger } from "../../logging/logger";
import type { Registry } from "../metrics/prom";
import { createDeliveryWatch, failureOfDrop } from "./delivery";
import { createScrubber } from "./scrub";
import {
  createReportThrottle,
  fingerprintOf,
  type PendingRepeats,
  REPORT_INTERVAL_MS,
} from "./throttle";
import { guardedTransport } from "./transport";

export interface ErrorContext {
  requestId?: string;
  /** The route pattern (`POST /api/chat`), never the raw path. */
  route?: string;
  method?: string;
  /** `user:<id>` or `key:<id>`. */
  principal?: string;
  /** The status the client got. */
  status?: number;
  /** The problem code the client got. */
  code?: string;
  /** What failed when it was not us: `openai`, `stripe`, `whatsapp`. */
  upstream?: string;
  /**
   * The request, for its method and a few harmless headers (user-agent, content-type,
   * content-length, accept; scrubbed). Its path and query string are never sent (the route
   * pattern is) and its body is never read.
   */
  request?: Request;
  /** Anything else worth knowing; fields that name credentials or user text are dropped. */
  extra?: Record<string, unknown>;
}

/** One answered request, for a sampled transaction. */
export interface RequestTrace {
  method: string;
  /** The route pattern, or the unmatched placeholder. */
  route: string;
  status: number;
  requestId: string;
  /** Wall-clock start and end, in milliseconds since the epoch. */
  startMs: number;
  endMs: number;
}

export interface ErrorReporter {
  /** Whether events are sent anywhere (SENTRY_DSN is set). */
  readonly enabled: boolean;
  /** Whether some requests are traced (SENTRY_TRACES_SAMPLE_RATE above 0). */
  readonly tracing: boolean;
  /** Sends the request as a transaction when it falls in the sample; cheap when it does not. */
  traceRequest(trace: RequestTrace): void;
  report(error: unknown, context?: ErrorContext): void;
  /**
   * Waits until queued events are sent, at most `timeoutMs`; true when all were. `final` (at
   * shutdown) first sends the repeats counted and not yet sent (throttle.ts).
   */
  flush(timeoutMs?: number, options?: { final?: boolean }): Promise<boolean>;
}

export interface ErrorReporterOptions {
  dsn: string | null;
  environment: string;
  release: string;
  tracesSampleRate: number;
  /** Every configured secret: replaced wherever it appears in an event. */
  secretValues: readonly string[];
  logger: Logger;
  /** Where `error_reports_failed_total` is registered (delivery.ts). */
  registry?: Registry;
  /** The time, for sending one event per failure per minute (throttle.ts). */
  now?: () => number;
  /** How long an envelope waits for Sentry's answer (transport.ts). */
  sendTimeoutMs?: number;
}

const MAX_QUEUED = 100;
/** The request headers an event carries (the scrubber drops any other). */
const REPORTED_HEADERS = ["user-agent", "content-type", "content-length", "accept"] as const;

export const disabledReporter: ErrorReporter = {
  enabled: false,
  tracing: false,
  traceRequest() {},
  report() {},
  flush: async () => true,
};

/** The occurrences an error event stands for, and the failure they are (throttle.ts). */
interface StandsFor {
  fingerprint: string;
  occurrences: PendingRepeats;
}
type Report = (error: unknown, context: ErrorContext, standsFor: StandsFor) => void;
/** Error events awaiting their delivery's outcome, at most (the error queue holds 64). */
const MAX_IN_FLIGHT = 1_000;

const randomHex = (bytes: number) =>
  Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("hex");

/**
 * The SDK marks each error object it captures and drops a second capture of it; a lost event's
 * error is sent again as a copy (its prototype, message, stack, cause and own fields), not marked.
 */
function uncapturedCopy(error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const copy = Object.create(Object.getPrototypeOf(error)) as Error;
  for (const key of Object.getOwnPropertyNames(error)) {
    if (key === SENTRY_CAPTURED_MARK) continue;
    Object.defineProperty(copy, key, Object.getOwnPropertyDescriptor(error, key)!);
  }
  return copy;
}
const SENTRY_CAPTURED_MARK = "__sentry_captured__";

export function createErrorReporter(options: ErrorReporterOptions): ErrorReporter {
  const { dsn, logger } = options;
  // Registered without a DSN too (at 0): every deployment exports the same families.
  const now = options.now ?? Date.now;
  const watch = createDeliveryWatch(logger, options.registry, now);
  if (dsn === null) return disabledReporter;

  const scrub = createScrubber([...options.secretValues, dsn]);
  const throttle = createReportThrottle();
  const iso = (ms: number) => new Date(ms).toISOString();
  /** The count of repeats an event stands for, and over what time they came. */
  const withRepeats = (context: ErrorContext, pending: PendingRepeats): ErrorContext => ({
    ...context,
    extra: {
      ...context.extra,
      repeats: pending.repeats,
      repeatsFrom: iso(pending.firstAt),
      repeatsTo: iso(pending.lastAt),
    },
  });
  let queue: [unknown, ErrorContext, StandsFor][] | null = [];
  let send: Report | null = null;
  /**
   * The error events sent and not yet settled, by event id: what each stood for, counted again
   * if it is not delivered (throttle.ts lost). Bounded: an event the SDK drops before its
   * transport (none is, with every error sampled) would otherwise stay.
   */
  const inFlight = new Map<string, StandsFor>();
  function errorSettled(eventId: string, delivered: boolean) {
    const standsFor = inFlight.get(eventId);
    if (standsFor === undefined) return;
    inFlight.delete(eventId);
    if (delivered) {
      throttle.delivered(standsFor.fingerprint);
      return;
    }
    const { occurrences } = standsFor;
    throttle.lost(standsFor.fingerprint, now(), {
      ...occurrences,
      error: uncapturedCopy(occurrences.error),
    });
    scheduleDrain();
  }
  let sendTrace: ((trace: RequestTrace) => void) | null = null;
  const rate = options.tracesSampleRate;
  let flushClient: ((timeoutMs: number) => Promise<boolean>) | null = null;

  const ready = import("@sentry/bun").then(
    (Sentry) => {
      // Every drop the SDK records passes here: those before the transport's fetch (backing off
      // after a 429, a full buffer) are delivery failures no answer tells of.
      class WatchedClient extends Sentry.BunClient {
        override recordDroppedEvent(
          ...[reason, category, count = 1]: Parameters<SentryBun.BunClient["recordDroppedEvent"]>
        ): void {
          super.recordDroppedEvent(reason, category, count);
          const failure = failureOfDrop(reason, category);
          if (failure !== null) watch.lost(failure.reason, failure.kind, count);
        }
      }
      const client = new WatchedClient({
        dsn,
        environment: options.environment,
        release: options.release,
        tracesSampleRate: rate,
        // Transactions as whole events, so beforeSendTransaction (the scrubber) sees them.
        traceLifecycle: "static",
        transport: guardedTransport(Sentry, {
          watch,
          errorSettled,
          timeoutMs: options.sendTimeoutMs,
        }),
        stackParser: Sentry.defaultStackParser,
        integrations: [Sentry.linkedErrorsIntegration()],
        beforeSend: (event) => scrub(event),
        beforeSendTransaction: (event) => scrub(event),
        beforeBreadcrumb: (breadcrumb) => scrub(breadcrumb),
      });
      const base = new Sentry.Scope();
      base.setClient(client);
      client.init();
      send = function sendToSentry(error, context, standsFor) {
        const scope = base.clone();
        const tags: Record<string, string> = {};
        if (context.requestId) tags.request_id = context.requestId;
        if (context.route) tags.route = context.route;
        if (context.method) tags.method = context.method;
        if (context.principal) tags.principal = context.principal;
        if (context.status !== undefined) tags.status = String(context.status);
        if (context.code) tags.code = context.code;
        if (context.upstream) tags.upstream = context.upstream;
        scope.setTags(tags);
        if (context.principal) scope.setUser({ id: context.principal });
        if (context.extra) scope.setExtras(context.extra);
        const request = context.request;
        if (request) {
          // The route pattern, never the raw path nor the query string (either may carry a
          // credential a client put in the URL), and only harmless headers.
          const pattern = context.route?.slice(context.route.indexOf(" ") + 1);
          const headers: Record<string, string> = {};
          for (const name of REPORTED_HEADERS) {
            const value = request.headers.get(name);
            if (value !== null) headers[name] = value;
          }
          const requestData = {
            method: request.method,
            ...(pattern ? { url: pattern } : {}),
            headers,
          };
          scope.addEventProcessor((event) => ({ ...event, request: requestData }));
        }
        const eventId = scope.captureException(error);
        inFlight.set(eventId, standsFor);
        if (inFlight.size > MAX_IN_FLIGHT) {
          inFlight.delete(inFlight.keys().next().value as string);
        }
      };
      sendTrace = function sendTransaction(trace) {
        const name = `${trace.method} ${trace.route}`;
        base.captureEvent({
          type: "transaction",
          transaction: name,
          start_timestamp: trace.startMs / 1000,
          timestamp: trace.endMs / 1000,
          tags: { request_id: trace.requestId, route: name, status: String(trace.status) },
          contexts: {
            trace: {
              trace_id: randomHex(16),
              span_id: randomHex(8),
              op: "http.server",
              status: trace.status >= 500 ? "internal_error" : "ok",
              data: { "http.response.status_code": trace.status },
            },
          },
          spans: [],
        });
      };
      flushClient = async (timeoutMs) => client.flush(timeoutMs);
      const pending = queue ?? [];
      queue = null;
      for (const [error, context, standsFor] of pending) send(error, context, standsFor);
    },
    (error: unknown) => {
      queue = null;
      logger.error({ err: error }, "sentry could not be loaded; errors are not reported");
    },
  );

  function dispatch(error: unknown, context: ErrorContext, standsFor: StandsFor) {
    if (send) send(error, context, standsFor);
    else if (queue && queue.length < MAX_QUEUED) queue.push([error, context, standsFor]);
  }
  /** Repeats whose interval has ended with no new occurrence: sent as their last one. */
  let drainTimer: Timer | null = null;
  function sendDue(all: boolean) {
    try {
      for (const pending of throttle.drain(now(), all)) {
        dispatch(pending.error, withRepeats(pending.context, pending), {
          fingerprint: fingerprintOf(pending.error, pending.context),
          occurrences: { ...pending },
        });
      }
    } catch (failure) {
      logger.warn({ err: failure }, "sentry report failed");
    }
    if (!all) scheduleDrain();
  }
  /** When the drain timer fires (by `now`), while one is set. */
  let drainAt = 0;
  function scheduleDrain() {
    const at = throttle.nextDrainAt();
    if (at === null) return;
    // A lost event's retry comes sooner than the interval a timer set may be waiting for.
    if (drainTimer !== null) {
      if (at >= drainAt) return;
      clearTimeout(drainTimer);
    }
    // Never longer than an interval, even if the clock was set back since `at` was taken.
    const delay = Math.min(Math.max(0, at - now()), REPORT_INTERVAL_MS);
    drainAt = now() + delay;
    drainTimer = setTimeout(() => {
      drainTimer = null;
      sendDue(false);
    }, delay + 10);
    drainTimer.unref?.();
  }

  return {
    enabled: true,
    tracing: rate > 0,
    traceRequest(trace) {
      // Before the SDK is loaded a sampled request is simply not traced.
      if (sendTrace && Math.random() < rate) sendTrace(trace);
    },
    report(error, context = {}) {
      try {
        const fingerprint = fingerprintOf(error, context);
        const at = now();
        const admitted = throttle.admit(fingerprint, at, error, context);
        if (admitted === null) {
          scheduleDrain();
          return;
        }
        const prior = admitted.repeats;
        dispatch(error, prior ? withRepeats(context, prior) : context, {
          fingerprint,
          // This occurrence and the repeats sent with it, as one lost would be counted again.
          occurrences: {
            error,
            context,
            repeats: 1 + (prior?.repeats ?? 0),
            firstAt: prior?.firstAt ?? at,
            lastAt: at,
          },
        });
      } catch (failure) {
        // Reporting must never turn one failure into two.
        logger.warn({ err: failure }, "sentry report failed");
      }
    },
    async flush(timeoutMs = 2000, flushOptions = {}) {
      if (flushOptions.final) {
        if (drainTimer !== null) clearTimeout(drainTimer);
        drainTimer = null;
        sendDue(true);
      }
      await ready;
      return flushClient ? flushClient(timeoutMs) : true;
    },
  };
}
