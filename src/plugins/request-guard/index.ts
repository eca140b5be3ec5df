/**
 * @module
 * The request guard: refuses, before any parsing, what no honest client sends (over-long URLs,
 * encoded traversal and NUL in the path, control characters in headers, repeated single-valued
 * headers, bodies that are not JSON, bodies over the route class's limit, read from the route-class table), and reads JSON bodies
 * itself so a chunked body is cut off at the limit while it streams. Bun.serve's
 * `maxRequestBodySize` is the outer bound for everything.
 *
 * It does not look for "SQL injection patterns" in user text: that breaks real messages and
 * protects nothing that parameterised queries (used everywhere) do not.
 */
import { Elysia } from "elysia";
import type { BodyLimits } from "../../config";
import { AppError } from "../../errors";
import { trimOptionalWhitespace } from "../../optional-whitespace";
import type { AuditLog } from "../audit/log";
import { auditedOncePerWindow, REFUSAL_AUDIT_WINDOW_MS } from "../audit/once-per-window";
import { LARGE_BODIES_POLICY_LABEL, type RateLimitMetrics } from "../rate-limit/metrics";
import type { RequestState } from "../request-state";
import { createSentBodyCheck, type RouteBody, type SentBodyState } from "../strict-body";
import {
  keepExactBody,
  MAX_BODY_DEPTH,
  MAX_BODY_VALUES,
  readExactWithin,
  readTextWithin,
  scanJsonText,
  TOO_DEEP,
  TOO_MANY_VALUES,
} from "./body";
import {
  BODY_MEDIA_TYPE,
  checkContentType,
  checkDeclaredLength,
  checkHeaders,
  checkParams,
  checkUrl,
  DEFAULT_GUARD_LIMITS,
  type GuardLimits,
  hasBody,
  type Refusal,
} from "./checks";
import { createHostCheck } from "./host";
import { type LargeBodyReads, largeBodyReads, SMALL_BODY_BYTES } from "./large-bodies";

export interface RequestGuardOptions {
  bodyLimits: BodyLimits;
  /** Host names `Host` may name (ALLOWED_HOSTS); null: any well-formed host. */
  allowedHosts?: readonly string[] | null;
  audit: AuditLog;
  limits?: GuardLimits;
  /**
   * The app's registered routes: each JSON body is checked against its route's strict schema as
   * soon as it is parsed (plugins/strict-body). Absent: no such check.
   */
  routes?: () => readonly RouteBody[];
  /** The time, for auditing each address's refusals once a minute (audit/once-per-window). */
  now?: () => number;
  /** How large bodies are read: within 20 s, 64 MiB of them at once, unless given (tests). */
  largeBodies?: LargeBodyReads;
  /**
   * Counts a large body refused 429 past its client's or network's share, with the limiter's
   * refusals (`rate_limit_rejections_total{policy="large_bodies"}`): a 429 RATE_LIMITED the
   * dashboards and PalisadeRateLimitSpike did not see.
   */
  rateLimitMetrics?: RateLimitMetrics;
}

export function requestGuard({
  bodyLimits,
  audit,
  limits = DEFAULT_GUARD_LIMITS,
  allowedHosts = null,
  routes,
  now = Date.now,
  largeBodies = largeBodyReads(),
  rateLimitMetrics,
}: RequestGuardOptions) {
  const firstInWindow = auditedOncePerWindow(audit, "request.rejected");
  const checkSentBody = routes ? createSentBodyCheck({ routes }) : undefined;
  // Owned by this guard, so each app remembers its own hosts.
  const checkHost = createHostCheck(allowedHosts === null ? null : new Set(allowedHosts));
  const refuse = (state: RequestState, refusal: Refusal): never => {
    const { request, path, clientIp, clientKey, requestId } = state;
    // Audited once per address, code and minute: a flood from rotating addresses writes a bounded
    // number of rows (audit/once-per-window); every refusal is still in the access log.
    if (firstInWindow(refusal.code, clientKey, now(), REFUSAL_AUDIT_WINDOW_MS)) {
      audit.record({
        type: "request.rejected",
        outcome: "denied",
        ip: clientIp,
        route: `${request.method} ${path}`,
        requestId,
        detail: { code: refusal.code, reason: refusal.reason },
      });
    }
    throw new AppError(refusal.code, `Refused: ${refusal.reason}.`);
  };

  return new Elysia({ name: "palisade.request-guard" })
    .onRequest(function guardRequest(context) {
      const { request, path, clientIp, clientKey, requestId, routeClass } =
        context as unknown as RequestState;
      const headers = request.headers;
      const refusal =
        checkUrl(request.url, limits) ??
        checkHeaders(headers) ??
        checkHost(request) ??
        (hasBody(request)
          ? (checkDeclaredLength(headers, bodyLimits[routeClass.bodyLimit]) ??
            checkContentType(headers))
          : null);
      if (refusal) {
        refuse({ request, path, clientIp, clientKey, requestId } as RequestState, refusal);
      }
    })
    .onTransform(function refuseDotSegmentParams(context) {
      // Destructured, never handed on whole: Elysia reads which context properties a hook names
      // and parses only those (cookies, headers, query) for every route (test/plugins/request-parsing).
      const { params, request, path, clientIp, clientKey, requestId } =
        context as unknown as RequestState & { params?: Record<string, string> };
      const refusal = checkParams(params);
      if (refusal)
        refuse({ request, path, clientIp, clientKey, requestId } as RequestState, refusal);
    })
    .onParse(async function parseJsonWithinLimit(context, contentType) {
      // Elysia passes the header's media type as sent, cut at `;` but not trimmed: media types
      // are case-insensitive and may be followed by whitespace (RFC 9110 §8.3.1), as the guard
      // compared them. Any other spelling would reach the route as text, or as no body at all.
      if (
        contentType !== BODY_MEDIA_TYPE &&
        trimOptionalWhitespace(contentType).toLowerCase() !== BODY_MEDIA_TYPE
      ) {
        return;
      }
      const { request, routeClass, route, clientKey } = context as unknown as RequestState & {
        route: string;
      };
      const limit = bodyLimits[routeClass.bodyLimit];
      // A large body, or one sent chunked (its length unknown), must arrive in time, within a
      // budget of such bodies at once, a chunked one charged as it arrives (./large-bodies.ts); a
      // small declared one is read as it comes.
      const declared = request.headers.get("content-length");
      const size = declared === null ? null : Number(declared);
      const bounded = size === null || size > SMALL_BODY_BYTES;
      let text: string;
      const waitStarted = performance.now();
      try {
        if (routeClass.exactBytes) {
          // Webhook signatures are computed over the bytes, what was sent (exactBodyOf).
          const exact = await (bounded
            ? largeBodies.read(size, clientKey, (account) =>
                readExactWithin(request, limit, account),
              )
            : readExactWithin(request, limit));
          text = exact.text;
          keepExactBody(context, exact);
        } else if (bounded) {
          text = await largeBodies.read(size, clientKey, (account) =>
            readTextWithin(request, limit, account),
          );
        } else {
          // Declared and small: Bun's own text(), as readTextWithin reads a declared body.
          text = await request.text();
        }
      } catch (error) {
        // The connection closed before the body arrived (the client went, or a stop cut it): no
        // answer can reach it, and the request failed for that alone. 499, nginx's "client closed
        // request", as a chat turn its client left is; it was logged 400, a malformed body
        // (probe 31a F5). Bun aborts the signal only then; the signal is read on failure only.
        if (request.signal.aborted) {
          throw new AppError("CLIENT_CLOSED", "The connection closed before the body arrived.");
        }
        if (error instanceof AppError && error.code === "RATE_LIMITED") {
          rateLimitMetrics?.rejections.labels(LARGE_BODIES_POLICY_LABEL).inc();
        }
        throw error;
      } finally {
        (context as unknown as RequestState).bodyWaitMs = performance.now() - waitStarted;
      }
      if (text === "") return undefined;
      // A signed webhook's body is parsed by its handler once its signature verifies (the bytes
      // and text are kept: exactBodyOf), never here: parsed first, an unsigned 261 KB body of
      // 87,000 values held the event loop ~15 ms before its 401 (probe 89d F5).
      if (routeClass.exactBytes) return text;
      const keysSent = scanJsonText(text, MAX_BODY_DEPTH, MAX_BODY_VALUES);
      if (keysSent === TOO_DEEP) {
        throw new AppError("VALIDATION_FAILED", "The request body is invalid.", [
          { field: "body", message: `Nested more than ${MAX_BODY_DEPTH} levels deep` },
        ]);
      }
      if (keysSent === TOO_MANY_VALUES) {
        throw new AppError("VALIDATION_FAILED", "The request body is invalid.", [
          { field: "body", message: `Holds more than ${MAX_BODY_VALUES} values` },
        ]);
      }
      let sent: unknown;
      try {
        sent = JSON.parse(text);
      } catch {
        throw new AppError("MALFORMED_BODY", "The request body is not valid JSON.");
      }
      if (checkSentBody) {
        // Now, as sent: Elysia's validation converts and cleans what it is handed. The refusal
        // waits for its place in the order (plugins/strict-body).
        const refusal = checkSentBody(request.method, route, sent, keysSent);
        if (refusal !== undefined) (context as SentBodyState).sentBodyRefusal = refusal;
      }
      return sent;
    })
    .as("global");
}
