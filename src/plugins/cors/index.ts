/**
 * @module
 * CORS for the configured origins only. Written here rather than taken from @elysiajs/cors because
 * that plugin (1.4) sends `Access-Control-Allow-Credentials` and the allowed headers on every
 * response, and answers every preflight with the requested method and headers, whatever the
 * origin; here a disallowed origin gets no CORS header at all.
 *
 * Origins are compared exactly, as the serialised origin the browser sends: no wildcard, no
 * suffix match (so `https://example.com.evil.test` is not `https://example.com`), no `null`.
 * Every response says `Vary: Origin`, since its CORS headers depend on it.
 */
import { Elysia } from "elysia";
import { EarlyAnswer } from "../error-handler/early-answer";
import { createHostCheck } from "../request-guard/host";

export const CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"];
export const CORS_ALLOWED_HEADERS = [
  "authorization",
  "content-type",
  "idempotency-key",
  "x-api-key",
  "x-csrf-token",
  "x-request-id",
];
export const CORS_EXPOSED_HEADERS = [
  "x-request-id",
  "x-ratelimit-limit",
  "x-ratelimit-remaining",
  "x-ratelimit-reset",
  "ratelimit",
  "ratelimit-policy",
  "retry-after",
];
const PREFLIGHT_MAX_AGE_SECONDS = 600;

interface CorsOptions {
  allowedOrigins: readonly string[];
}

interface PreflightOptions extends CorsOptions {
  /** Host names `Host` may name (ALLOWED_HOSTS); null: any well-formed host. */
  allowedHosts?: readonly string[] | null;
}

/**
 * Attaches the CORS response headers for an allowed origin. It only adds headers, so it runs at
 * the start of the chain: a refusal by the IP block, the limiter or the guard still carries them,
 * and a browser client can read its 429 instead of seeing a network error.
 */
export function corsHeaders({ allowedOrigins }: CorsOptions) {
  const allowed = new Set(allowedOrigins);
  const exposeHeaders = CORS_EXPOSED_HEADERS.join(", ");
  return new Elysia({ name: "palisade.cors-headers", seed: allowedOrigins })
    .onRequest(function applyCorsHeaders({ request, set }) {
      set.headers.vary = "Origin";
      const origin = request.headers.get("origin");
      if (origin === null || !allowed.has(origin)) return;
      set.headers["access-control-allow-origin"] = origin;
      set.headers["access-control-allow-credentials"] = "true";
      set.headers["access-control-expose-headers"] = exposeHeaders;
    })
    .as("global");
}

/** The method a preflight asks for, or null for a request that is not one. */
function preflightMethod(request: Request): string | null {
  if (request.method !== "OPTIONS") return null;
  return request.headers.get("access-control-request-method");
}

/**
 * Answers the preflights of an allowed origin asking for an allowed method (the methods, headers
 * and max age) before the rate limit: a browser sends one, with no credential, for each URL and
 * method its page calls, so counted they spent the address's budget for the page's real requests,
 * which are counted per principal, and their refusals blocked everyone behind the address (probe
 * 46a F4: one signed-in user's page of 26 conversations blocked the office). Only for a `Host` the
 * request guard would pass: any other goes on through the chain, counted, to the guard's 400.
 */
export function corsPreflight({ allowedOrigins, allowedHosts = null }: PreflightOptions) {
  const allowed = new Set(allowedOrigins);
  const hostRefusal = createHostCheck(allowedHosts === null ? null : new Set(allowedHosts));
  const allowMethods = CORS_METHODS.join(", ");
  const allowHeaders = CORS_ALLOWED_HEADERS.join(", ");
  const allowedMethodSet = new Set(CORS_METHODS);

  return new Elysia({ name: "palisade.cors-preflight", seed: [allowedOrigins, allowedHosts] })
    .onRequest(function answerPreflight({ request, set }) {
      const method = preflightMethod(request);
      // Case-sensitive, as methods are (RFC 9110 §9.1): a browser asks for `POST`, never `post`.
      if (method === null || !allowedMethodSet.has(method)) return;
      const origin = request.headers.get("origin");
      if (origin === null || !allowed.has(origin) || hostRefusal(request) !== null) return;
      delete set.headers["access-control-expose-headers"];
      set.headers["access-control-allow-methods"] = allowMethods;
      set.headers["access-control-allow-headers"] = allowHeaders;
      set.headers["access-control-max-age"] = String(PREFLIGHT_MAX_AGE_SECONDS);
      throw new EarlyAnswer(204);
    })
    .as("global");
}

/**
 * Answers every other preflight, at the CORS stage of the chain (after the limiter, which counts
 * it, and the guard): a bare 204 that permits nothing, without the CORS headers an allowed origin's
 * answers carry (an allowed origin asking for another method got `Access-Control-Allow-Origin` and
 * `-Credentials` here: harmless without the methods, but not nothing).
 */
export function corsBarePreflight() {
  return new Elysia({ name: "palisade.cors-bare-preflight" })
    .onRequest(function answerOtherPreflight({ request, set }) {
      if (preflightMethod(request) === null) return;
      delete set.headers["access-control-allow-origin"];
      delete set.headers["access-control-allow-credentials"];
      delete set.headers["access-control-expose-headers"];
      throw new EarlyAnswer(204);
    })
    .as("global");
}
