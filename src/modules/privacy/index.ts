/**
 * @module
 * `/api/me`: the signed-in user's export and erasure (3 per minute per user).
 */
import { Elysia, t } from "elysia";
import { createEndsInFlight, type EndsInFlight } from "../../ends-in-flight";
import { AppError, problemResponses } from "../../errors";
import type { Logger } from "../../logging/logger";
import type { authPlugin } from "../../plugins/auth";
import { principalRef } from "../../plugins/auth/principal";
import type { RouteClass } from "../../plugins/route-class";
import type { ErrorReporter } from "../../plugins/sentry";
import { ExportDocument } from "./model";
import type { PrivacyService } from "./service";

const EXPORT_ROUTE = "GET /api/me/export";
/** How much JSON text one read of the export's answer gathers before it is sent on. */
const EXPORT_CHUNK_CHARACTERS = 64 * 1024;
/** The most time the export works on before other requests are let in (probe 38b F1). */
const EXPORT_SLICE_MS = 8;
/**
 * How long the export waits for its client to take the next chunk before it ends the answer. Bun's
 * own idle timeout (10 s) is not restarted by a slow client draining what was written, and cut a
 * steady 32 KB/s reader at ~4 MB (probe 38b F2); the export replaces it with this one, which only a
 * client taking less than a chunk in this time meets.
 */
export const EXPORT_STALL_MS = 120_000;
/**
 * Exports one process sends at once, all users together; past it 503 with Retry-After. Each holds a
 * page of a contributor's rows while its client reads (a few MB at most): a user reading four
 * bytes a second held one open for days, and 25 of them took the process from 80 to 525 MB
 * (probe 83b F3). A user has one at a time (409).
 */
export const EXPORTS_IN_FLIGHT_MAX = 8;
const EXPORT_BUSY_RETRY_AFTER_S = 30;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Bun's own idle timeout for a connection, in seconds (Bun.serve's `idleTimeout` default). */
const BUN_IDLE_TIMEOUT_S = 10;

/** Gives a connection whose idle timeout an answer turned off its timeout back. */
function idleAgain(
  server: { timeout(request: Request, seconds: number): void } | null | undefined,
  request: Request,
): void {
  try {
    server?.timeout(request, BUN_IDLE_TIMEOUT_S);
  } catch {
    // The connection is gone already.
  }
}

interface ExportBodyEvents {
  /** A piece threw: the answer is cut there. */
  failed(error: unknown): void;
  /** The client took nothing for `stallMs`: the answer is ended there. */
  stalled(): void;
  /** The client closed the connection before the end. */
  closed(): void;
  /** The service's stop ended it at its drain time (EndsInFlight). */
  interrupted(): void;
  /** It is over, however it ended (sent whole, or any of the above). */
  over?(): void;
}

/**
 * The export's text as a body read as it is sent: each read takes pieces until it has about
 * EXPORT_CHUNK_CHARACTERS, so the database is read no faster than the client takes the answer.
 * A read lets other requests in every EXPORT_SLICE_MS of work and after each chunk: Bun reads the
 * next chunk as soon as the socket takes one, so a fast client of a long history held the event
 * loop for the whole download (probe 38b F1). A piece that throws (the database failing, a change
 * found mid-way) is reported and cuts the answer there: the client sees a broken download, never a
 * document that looks whole; so does a client that stops taking it.
 */
export function exportBody(
  pieces: Iterable<string>,
  events: ExportBodyEvents,
  stallMs = EXPORT_STALL_MS,
  inFlight: EndsInFlight = createEndsInFlight(),
): ReadableStream<Uint8Array> {
  const iterator = pieces[Symbol.iterator]();
  const encoder = new TextEncoder();
  let ended = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  let forget = () => {};
  const end = () => {
    ended = true;
    clearTimeout(watchdog);
    forget();
    events.over?.();
  };
  // Without a reason: Bun writes a stream's error reason to stderr as a multi-line dump (source
  // lines and stack, not a JSON log line: probe 29b F4); each end is logged by its event. The
  // connection is reset all the same.
  const cut = (controller: ReadableStreamDefaultController<Uint8Array>) => controller.error();
  // Armed from the start, not from the first chunk: a client that never took even the first one
  // (Bun's idle timeout is off for this answer) held the export open with no bound (probe 60b).
  const armWatchdog = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    watchdog = setTimeout(() => {
      end();
      iterator.return?.();
      events.stalled();
      cut(controller);
    }, stallMs);
  };
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        armWatchdog(controller);
        forget = inFlight.add(() => {
          if (ended) return;
          end();
          iterator.return?.();
          events.interrupted();
          cut(controller);
        });
      },
      async pull(controller) {
        clearTimeout(watchdog);
        try {
          let text = "";
          let sliceStarted = performance.now();
          while (text.length < EXPORT_CHUNK_CHARACTERS) {
            const next = iterator.next();
            if (next.done) {
              if (text) controller.enqueue(encoder.encode(text));
              end();
              controller.close();
              return;
            }
            text += next.value;
            if (performance.now() - sliceStarted >= EXPORT_SLICE_MS) {
              await nextTurn();
              if (ended) return;
              sliceStarted = performance.now();
            }
          }
          controller.enqueue(encoder.encode(text));
          armWatchdog(controller);
          await nextTurn();
        } catch (error) {
          if (ended) return;
          end();
          events.failed(error);
          cut(controller);
        }
      },
      cancel() {
        if (ended) return;
        end();
        // The client went away: the rest is never read.
        iterator.return?.();
        events.closed();
      },
    },
    { highWaterMark: 0 },
  );
}

/** Export and erasure share one small per-user policy. */
export const privacyRouteClasses: readonly RouteClass[] = [
  // The export with the session cookie needs X-CSRF-Token as the erasure does: without it the
  // limiter counts the request by address, and the per-user budget would not hold (probe 33a F1).
  { routes: ["GET /api/me/export", "DELETE /api/me"], policy: "privacy", csrfOnReads: true },
];

export function privacyModule({
  auth,
  service,
  errors,
  logger,
  exportsInFlight = createEndsInFlight(),
}: {
  auth: ReturnType<typeof authPlugin>;
  service: PrivacyService;
  errors: ErrorReporter;
  logger: Logger;
  /**
   * The exports being sent, each ended at the shutdown's drain time and logged as cut by the stop,
   * not as the client's leaving (probe 55a F1: the drain's cut said "the client closed the
   * connection").
   */
  exportsInFlight?: EndsInFlight;
}) {
  // The users whose export this process is sending (EXPORTS_IN_FLIGHT_MAX).
  const exporting = new Set<string>();
  return new Elysia({ name: "palisade.module.privacy", prefix: "/api/me" })
    .use(auth)
    .get(
      "/export",
      ({ principal, request, requestId, server }) => {
        const sending = request.method !== "HEAD";
        if (sending && exporting.has(principal.id)) {
          throw new AppError(
            "CONFLICT",
            "An export of your account is still being sent: read it to its end or close it, then ask again.",
          );
        }
        if (sending && exporting.size >= EXPORTS_IN_FLIGHT_MAX) {
          throw new AppError(
            "SERVICE_UNAVAILABLE",
            "Too many exports are being sent now; retry shortly.",
            undefined,
            { "retry-after": String(EXPORT_BUSY_RETRY_AFTER_S) },
          );
        }
        const text = service.exportText(principal.id);
        if (!text) throw new AppError("NOT_FOUND", "The account no longer exists.");
        const headers = { "content-type": "application/json; charset=utf-8" };
        // A HEAD sends no body: none is read, and none is logged as not read to its end.
        if (!sending) {
          return new Response(null, { headers }) as unknown as typeof ExportDocument.static;
        }
        exporting.add(principal.id);
        const body = exportBody(
          text,
          {
            failed(error) {
              // Its 200 and headers are sent: the error handler never sees this one.
              logger.error(
                { requestId, route: EXPORT_ROUTE, code: "EXPORT_CUT", err: error },
                "privacy export cut short",
              );
              errors.report(error, {
                requestId,
                route: EXPORT_ROUTE,
                method: request.method,
                principal: principalRef(principal),
                status: 200,
                code: "EXPORT_CUT",
                request,
              });
            },
            stalled() {
              logger.warn(
                {
                  requestId,
                  route: EXPORT_ROUTE,
                  code: "EXPORT_STALLED",
                  stallMs: EXPORT_STALL_MS,
                },
                "privacy export ended before its end: the client took nothing more",
              );
            },
            closed() {
              logger.info(
                { requestId, route: EXPORT_ROUTE, code: "EXPORT_CLOSED" },
                "privacy export not read to its end: the client closed the connection",
              );
            },
            interrupted() {
              logger.warn(
                { requestId, route: EXPORT_ROUTE, code: "EXPORT_INTERRUPTED" },
                "privacy export cut by the service's stop at its drain time: the user must ask for it again",
              );
            },
            over() {
              exporting.delete(principal.id);
              // The connection's idle timeout back once the answer is over: left off, a client
              // that read an export (or had it in its socket buffer) and then sent nothing, or
              // half a request, kept the connection for good (probe 83g F2).
              idleAgain(server, request);
            },
          },
          EXPORT_STALL_MS,
          exportsInFlight,
        );
        // The export's own stall timer replaces Bun's idle timeout for this answer (EXPORT_STALL_MS).
        server?.timeout(request, 0);
        // Built here, as a stream: the document as one object would be the user's whole history
        // in memory (typed for the route's schema, which the OpenAPI document states).
        return new Response(body, { headers }) as unknown as typeof ExportDocument.static;
      },
      {
        auth: "user",
        response: { 200: ExportDocument, ...problemResponses(404, 409) },
        detail: { tags: ["privacy"], summary: "Export all data held about you, as JSON" },
      },
    )
    .delete(
      "",
      async ({ principal, set, client, request, requestId, server }) => {
        // A long history is rewritten in parts, the event loop running between them: Bun's 10 s
        // idle timeout would close the connection of an erasure that takes longer before its 204.
        server?.timeout(request, 0);
        let erased: boolean;
        try {
          erased = await service.erase(principal.id, { ip: client.ip, requestId });
        } finally {
          idleAgain(server, request);
        }
        if (!erased) throw new AppError("NOT_FOUND", "The account no longer exists.");
        if (principal.kind === "user" && principal.role === "admin" && !service.adminsRemain()) {
          logger.warn(
            { requestId, route: "DELETE /api/me" },
            "the last admin account erased itself: the admin routes are open to admin-scoped API keys only; promote one with users:role --role admin",
          );
        }
        set.status = 204;
        return undefined;
      },
      {
        auth: "user",
        response: { 204: t.Void({ description: "Erased" }), ...problemResponses(404) },
        detail: {
          tags: ["privacy"],
          summary:
            "Erase your account: sessions and keys revoked, data deleted, audit rows pseudonymised",
        },
      },
    );
}
