/**
 * @module
 * Security headers on every response, errors and early refusals included. The header set is
 * built once, as a `Headers` object, and each response is built from a copy of it with the
 * request's own headers laid over (./response.ts): a handler's answer here, an error or early
 * refusal by the error handler, anything Elysia builds itself (streams, files) from `set.headers`
 * after the fixed headers are copied in. (Elysia's own `.headers()` defaults are copied per
 * request as an object, which is what this avoids, and are not applied to the docs page's
 * prebuilt response.)
 *
 * Compared with helmet's defaults:
 * - Content-Security-Policy: helmet's is for HTML pages (`default-src 'self'` …). An API returns
 *   no page to render, so ours is `default-src 'none'; frame-ancestors 'none'`: nothing may load
 *   and nothing may frame it. The HTML docs page gets its own, allowing only its script's CDN.
 * - X-Frame-Options: helmet sends SAMEORIGIN; nothing should frame an API, so DENY (the legacy twin
 *   of frame-ancestors 'none').
 * - Strict-Transport-Security: helmet always sends it; we send it only in profiles served over TLS
 *   (staging, production), since on plain-HTTP development it would pin localhost to HTTPS.
 * - Permissions-Policy: helmet sends none; we deny camera, microphone, geolocation and payment.
 * - Cross-Origin-Opener-Policy and Cross-Origin-Resource-Policy: same-origin, as helmet.
 *   CORP does not affect CORS requests from the allowed origins, only no-cors embedding.
 * - Referrer-Policy no-referrer, X-Content-Type-Options nosniff: as helmet.
 * - Omitted: Origin-Agent-Cluster, X-DNS-Prefetch-Control, X-Download-Options,
 *   X-Permitted-Cross-Domain-Policies and X-XSS-Protection. They only affect HTML documents, old
 *   Internet Explorer, Flash or Acrobat, none of which reads a JSON API; each header costs on every
 *   response (measured: ~0.13 µs a header here), so only headers that protect something are sent.
 * - Cache-Control: no-store on every response (helmet leaves caching alone): API answers carry
 *   personal data and tokens, and an intermediary must not keep them.
 * Bun sends no X-Powered-By or Server header, and neither do we.
 */
import { Elysia } from "elysia";
import { createResponseHeaders, type ResponseHeaders } from "./response";

export type { ResponseHeaders } from "./response";

export const API_CSP =
  "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const DOCS_CDN = "https://cdn.jsdelivr.net";
/**
 * The docs page's one script, Scalar's bundle at a version named here: `@latest` ran whatever was
 * published next, and the policy allowed any file of the CDN (any npm package) on the origin whose
 * cookies are the sessions (probe 71b F1). An npm version is never published twice; the CDN itself
 * is still trusted (no integrity hash: computing one needs the file, which this build never
 * fetches). Raise it with a release.
 */
export const DOCS_SCRIPT = `${DOCS_CDN}/npm/@scalar/api-reference@1.40.0/dist/browser/standalone.js`;
export const DOCS_CSP = [
  "default-src 'none'",
  `script-src ${DOCS_SCRIPT}`,
  `style-src 'unsafe-inline' ${DOCS_CDN}`,
  `font-src ${DOCS_CDN} https://fonts.scalar.com data:`,
  "img-src 'self' data: https:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join("; ");

export interface SecurityHeadersOptions {
  /** Send Strict-Transport-Security: only where the service is reached over TLS. */
  hsts: boolean;
  /** Paths that serve HTML (the docs page) and get the HTML policy. */
  htmlPaths?: readonly string[];
  /** Two headers whose values repeat across a route's answers, kept prebuilt (response.ts). */
  steady?: readonly [string, string];
}

export function buildSecurityHeaders(hsts: boolean, csp: string): Record<string, string> {
  const headers: Record<string, string> = {
    "content-security-policy": csp,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "no-store",
  };
  if (hsts) headers["strict-transport-security"] = "max-age=31536000; includeSubDomains";
  return headers;
}

/** The prebuilt header sets: the API's everywhere, the HTML policy on the HTML routes. */
export function securityResponseHeaders({
  hsts,
  htmlPaths = [],
  steady,
}: SecurityHeadersOptions): ResponseHeaders {
  const html = buildSecurityHeaders(hsts, DOCS_CSP);
  return createResponseHeaders({
    fixed: buildSecurityHeaders(hsts, API_CSP),
    byRoute: new Map(htmlPaths.map((path) => [path, html])),
    steady,
  });
}

/** A fixed header every answer built from the prebuilt set carries. */
const MARKER = "x-content-type-options";

/** What Elysia builds a JSON body from (Response.json), and the text bodies it sends as they are. */
function isPlainBody(value: unknown): value is object | string {
  if (typeof value === "string") return true;
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === Array.prototype || proto === null;
}

/**
 * Sends every answer a handler returns with the security headers. A JSON or text answer is built
 * here from the prebuilt set (the common case, and the cheap one); anything else (a stream, a file,
 * a handler's own Response, cookies set through Elysia's cookie jar) gets the fixed headers copied
 * into `set.headers` and is built by Elysia as before. Errors and early refusals are built by the
 * error handler from the same set, so a 403, 413 or 429 carries them too.
 */
export function securityHeaders(responses: ResponseHeaders) {
  return (
    new Elysia({ name: "palisade.security-headers" })
      // By the route the request matched, not its path: `/docs/` is the docs page too.
      .mapResponse(function sendWithSecurityHeaders({ responseValue, set, route }) {
        const headers = set.headers as Record<string, unknown>;
        // Built from the prebuilt set already (the error handler's problem documents).
        if (responseValue instanceof Response && responseValue.headers.has(MARKER)) return;
        if (
          typeof set.status !== "number" ||
          !isPlainBody(responseValue) ||
          (set.cookie !== undefined && Object.keys(set.cookie).length > 0) ||
          ("redirect" in set && set.redirect)
        ) {
          responses.fill(route, headers);
          return;
        }
        const response = responses.respond(route, headers, responseValue, set.status);
        // Built: Elysia must not lay set.headers over it a second time.
        set.headers = {};
        return response;
      })
      .as("global")
  );
}
