/**
 * @module
 * The per-request values the early stages put on Elysia's context. Route handlers see them typed:
 * the auth plugin, which every module uses, declares them with `requestStateTypes()` (decorated
 * placeholders that the early stages overwrite on each request before any handler runs). Elysia
 * types `onRequest` and `onError` contexts without decorators, so hooks read them as
 * `const { path, client } = context as unknown as RequestState`.
 *
 * Always destructure what a hook needs, never hand the whole context to a function: Elysia reads
 * each hook's source to decide what to parse per request, and a context passed whole makes it parse
 * everything (cookies, query, headers) for every request (measured: +7 µs a request with cookies).
 */
import { Elysia } from "elysia";
import type { ResolvedClient } from "./client-ip";
import type { LimitCharge } from "./rate-limit/enforce";
import type { ResolvedRouteClass } from "./route-class/table";

export interface RequestState {
  request: Request;
  /** The request path, without the query string, as Elysia parsed it. */
  path: string;
  /** The id the request is recorded under: logs, audit, Sentry. */
  requestId: string;
  /** The id its answer carries (`X-Request-Id`, problem documents): see the request-id stage. */
  answeredRequestId: string;
  /** What the route-class table says about this request's route (policy, body limit, probe…). */
  routeClass: ResolvedRouteClass;
  startedAt: number;
  client: ResolvedClient;
  clientIp: string;
  clientKey: string;
  /**
   * What the rate-limit stage charged this request when its store decided it (a lease's permit is
   * not kept): a handler that refuses the request before any work of its own gives it back.
   */
  limitCharge?: LimitCharge;
  /**
   * How long the request guard waited for the JSON body to arrive, in ms: the client's time, not
   * the service's, left out of the request-duration histogram (access-log).
   */
  bodyWaitMs?: number;
}

/** The fields the early stages set, as a handler reads them. */
export type RequestStateFields = Omit<RequestState, "request" | "path">;

/**
 * Declares the request state's types to the routes of whoever uses it. The values here are
 * placeholders: the request-id, route-class and client-ip stages set the real ones in `onRequest`,
 * before routing, on every request.
 */
export function requestStateTypes() {
  const placeholders = {
    requestId: "",
    answeredRequestId: "",
    routeClass: undefined,
    startedAt: 0,
    client: undefined,
    clientIp: "",
    clientKey: "",
    limitCharge: undefined,
  } as unknown as RequestStateFields;
  return new Elysia({ name: "palisade.request-state" }).decorate(placeholders);
}
