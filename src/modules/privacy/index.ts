/**
 * @module
 * `/api/me`: the signed-in user's export and erasure (3 per minute per user).
 */
import { Elysia, t } from "elysia";
import { AppError, problemResponses } from "../../errors";
import type { authPlugin } from "../../plugins/auth";
import type { RouteClass } from "../../plugins/route-class";
import { ExportDocument } from "./model";
import type { PrivacyService } from "./service";

/** Export and erasure share one small per-user policy. */
export const privacyRouteClasses: readonly RouteClass[] = [
  { routes: ["GET /api/me/export", "DELETE /api/me"], policy: "privacy" },
];

export function privacyModule({
  auth,
  service,
}: {
  auth: ReturnType<typeof authPlugin>;
  service: PrivacyService;
}) {
  return new Elysia({ name: "palisade.module.privacy", prefix: "/api/me" })
    .use(auth)
    .get(
      "/export",
      ({ principal }) => {
        const document = service.export(principal.id);
        if (!document) throw new AppError("NOT_FOUND", "The account no longer exists.");
        return document as typeof ExportDocument.static;
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
