/**
 * @module
 * What every bench server answers, so the four stacks serve the same bytes: the JSON payload of the
 * public route, the protected route's body schema, and the chat echo bare Elysia stands in with for
 * Palisade's offline chat provider. `bench/servers/express.mjs` (Node, no TypeScript) repeats them.
 */
import { type Elysia, t } from "elysia";
import { JsonInteger } from "../../src/plugins/openapi/json-integer";

export const BENCH_PAYLOAD = { id: 42, name: "palisade", tags: ["a", "b"], ok: true };

/**
 * `POST /bench/protected`: what the protected route validates, declared as the app's own body schemas
 * are (an integer of a JSON body is `JsonInteger`, src/plugins/openapi/json-integer.ts).
 */
export const ProtectedBody = t.Object({
  message: t.String({ minLength: 1, maxLength: 500 }),
  count: JsonInteger({ minimum: 0, maximum: 1000 }),
});

/** The body wrk sends to the protected route and to the chat route (bench/lua/post.lua). */
export const BENCH_POST_BODY = '{"message":"How do I reset my password?","count":3}';

/** The JWT secret the bench servers verify with (HS256); bench-only. */
export const BENCH_JWT_SECRET = "bench-jwt-secret-0123456789abcdefghijklmnopq";

/** The CSRF secret of every Palisade the bench builds; bench-only. */
export const BENCH_CSRF_SECRET = "bench-csrf-secret-0123456789abcdefghijklmnop";

export function echoChat(message: string) {
  return {
    conversationId: "bench-conversation",
    reply: message,
    usage: { promptTokens: 8, completionTokens: 8, totalTokens: 16 },
  };
}

/**
 * A's routes with no defence (the body parsed, not validated): bare Elysia (bare.ts) and bare
 * Elysia answering with Palisade's response shape (shape.ts) serve these.
 */
export function bareRoutes(app: Elysia) {
  return app
    .get("/health", () => ({ status: "ok" }))
    .get("/bench", () => BENCH_PAYLOAD)
    .post("/bench/protected", ({ body }) => ({
      ok: true,
      length: (body as { message: string }).message.length,
    }))
    .post("/api/chat", ({ body }) => echoChat((body as { message: string }).message));
}

/**
 * The bench routes' class, declared as a module declares its own routes' (src/plugins/route-class):
 * the default policy and body limit. An undeclared route gets the same class, found by scanning
 * every route pattern instead of one look-up, which no route of the app itself pays.
 */
export const BENCH_ROUTE_CLASSES = [{ routes: ["GET /bench", "POST /bench/protected"] }];
