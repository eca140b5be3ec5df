/**
 * @module
 * Gives every request an id, echoed in `X-Request-Id`, logged and put in every problem document.
 * A caller's id is kept only when it is a short token of safe characters, so it can be logged and
 * echoed without escaping; anything else is replaced, never trusted.
 */
import { Elysia } from "elysia";

const SAFE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

export function acceptableRequestId(value: string | null): value is string {
  return value !== null && SAFE_REQUEST_ID.test(value);
}

export function requestId() {
  return new Elysia({ name: "palisade.request-id" })
    .decorate("requestId", "")
    .decorate("startedAt", 0)
    .onRequest(function assignRequestId(context) {
      const incoming = context.request.headers.get("x-request-id");
      const id = acceptableRequestId(incoming) ? incoming : Bun.randomUUIDv7();
      context.requestId = id;
      context.startedAt = performance.now();
      context.set.headers["x-request-id"] = id;
    })
    .as("global");
}
