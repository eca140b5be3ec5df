/**
 * @module
 * The per-request values the early stages put on Elysia's context. Elysia types `onRequest` and
 * `onError` contexts without decorators; this one cast keeps the rest of the code typed.
 */
import type { ResolvedClient } from "./client-ip";

export interface RequestState {
  request: Request;
  /** The request path, without the query string, as Elysia parsed it. */
  path: string;
  requestId: string;
  startedAt: number;
  client: ResolvedClient;
  clientIp: string;
  clientKey: string;
}

export function stateOf(context: object): RequestState {
  return context as RequestState;
}
