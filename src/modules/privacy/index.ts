/**
 * @module
 * `/api/me`: the signed-in user's export and erasure (3 per minute per user).
 */
import { Elysia, t } from "elysia";
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

/**
 * The export's text as a body read as it is sent: each read takes pieces until it has about
 * EXPORT_CHUNK_CHARACTERS, so the database is read no faster than the client takes the answer.
 * A piece that throws (the database failing, a change found mid-way) is reported and cuts the
 * answer there: the client sees a broken download, never a document that looks whole.
 */
function exportBody(
  pieces: Iterable<string>,
  reportFailure: (error: unknown) => void,
): ReadableStream<Uint8Array> {
  const iterator = pieces[Symbol.iterator]();
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        try {
          let text = "";
          while (text.length < EXPORT_CHUNK_CHARACTERS) {
            const next = iterator.next();
            if (next.done) {
              if (text) controller.enqueue(encoder.encode(text));
              controller.close();
              return;
            }
            text += next.value;
          }
          controller.enqueue(encoder.encode(text));
        } catch (error) {
          reportFailure(error);
          // Without a reason: Bun writes a stream's error reason to stderr as a multi-line dump
          // (source lines and stack, not a JSON log line: probe 29b F4); it is logged above. The
          // connection is reset all the same.
          controller.error();
        }
      },
      cancel() {
        // The client went away: the rest is never read.
        iterator.return?.();
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
}: {
  auth: ReturnType<typeof authPlugin>;
  service: PrivacyService;
  errors: ErrorReporter;
  logger: Logger;
}) {
  return new Elysia({ name: "palisade.module.privacy", prefix: "/api/me" })
    .use(auth)
    .get(
      "/export",
      ({ principal, request, requestId }) => {
        const text = service.exportText(principal.id);
        if (!text) throw new AppError("NOT_FOUND", "The account no longer exists.");
        const body = exportBody(text, (error) => {
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
        });
        // Built here, as a stream: the document as one object would be the user's whole history
        // in memory (typed for the route's schema, which the OpenAPI document states).
        return new Response(body, {
          headers: { "content-type": "application/json; charset=utf-8" },
        }) as unknown as typeof ExportDocument.static;
      },
      {
        auth: "user",
        response: { 200: ExportDocument, ...problemResponses(404) },
        detail: { tags: ["privacy"], summary: "Export all data held about you, as JSON" },
      },
    )
    .delete(
      "",
      ({ principal, set, client, requestId }) => {
        if (!service.erase(principal.id, { ip: client.ip, requestId })) {
          throw new AppError("NOT_FOUND", "The account no longer exists.");
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
