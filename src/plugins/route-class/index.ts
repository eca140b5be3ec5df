/**
 * @module
 * The route-class stage: looks up the request's route class once, right after the request id, and
 * puts it on the context as `routeClass` for the stages after it (IP block, rate limit, request
 * guard, CSRF). See table.ts for what a route class is and which spellings it folds.
 */
import { Elysia } from "elysia";
import type { RouteClassTable } from "./table";

export type { ResolvedRouteClass, RouteClass, RouteClassTable } from "./table";
export { createRouteClassTable, UNMATCHED_CLASS } from "./table";

export function routeClass({ table }: { table: RouteClassTable }) {
  return new Elysia({ name: "palisade.route-class" })
    .onRequest(function classifyRoute(context) {
      const { request, path } = context as unknown as { request: Request; path: string };
      (context as { routeClass?: unknown }).routeClass = table.classify(request.method, path);
    })
    .as("global");
}
