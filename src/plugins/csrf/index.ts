/**
 * @module
 * CSRF protection for browser clients that authenticate with the session cookie, and the issuer
 * behind `GET /api/auth/csrf` (mounted by the auth module).
 *
 * A state-changing request (not GET, HEAD or OPTIONS) that carries a session or refresh cookie
 * must send `X-CSRF-Token` equal to the CSRF cookie, signed for that session and less than an hour
 * old, and must not be marked `Sec-Fetch-Site: cross-site` (Fetch Metadata: the browser says where
 * the request came from, and no page on another site has a reason to change state here).
 *
 * Exempt, by design:
 * - requests with an `Authorization` or `X-API-Key` header: a browser never attaches those on its
 *   own, so a forged cross-site request cannot carry them, and such a request's cookies are never
 *   read as a credential (cookies.ts, sendsHeaderCredential: probe 27a F1 found the refresh route
 *   reading its cookie beside a junk `Authorization`, with the check skipped);
 * - route classes marked `csrfExempt` (webhooks): called server to server, authenticated by their
 *   HMAC signatures;
 * - requests with no session cookie: they carry no ambient credential to abuse.
 *
 * A route class marked `csrfOnReads` (the privacy export) asks the same of GET and HEAD.
 */
import { Elysia, t } from "elysia";
import type { Clock } from "../../clock";
import { AppError } from "../../errors";
import type { AuditLog } from "../audit/log";
import { auditedOncePerWindow, REFUSAL_AUDIT_WINDOW_MS } from "../audit/once-per-window";
import { isCrossSite } from "../cross-site";
import type { RequestState } from "../request-state";
import { cookieNames, readCookie, sendsHeaderCredential, serializeCookie } from "./cookies";
import type { CsrfMetrics } from "./metrics";
import {
  CSRF_TOKEN_LIFETIME_MS,
  constantTimeEqual,
  issueCsrfToken,
  verifyCsrfToken,
} from "./token";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export interface CsrfOptions {
  secretKey: string;
  /** The key being rotated out: tokens it signed are still accepted; it never signs. */
  previousSecretKey?: string | null;
  requireTls: boolean;
  clock: Clock;
}

export const CsrfTokenResponse = t.Object({
  token: t.String({ description: "Send this value as X-CSRF-Token on state-changing requests" }),
});

/**
 * Issues CSRF tokens, each as the body's token and the same value as a cookie readable by the
 * page's script (not HttpOnly: it copies it into the header): `forRequest` bound to the request's
 * session cookie (`GET /api/auth/csrf`), `forSession` to a session cookie an answer is setting (a
 * cookie-mode sign-in or refresh).
 */
export function createCsrfIssuer(options: Pick<CsrfOptions, "secretKey" | "requireTls" | "clock">) {
  const names = cookieNames(options.requireTls);
  const forSession = (session: string | null) => {
    const token = issueCsrfToken(options.secretKey, session, options.clock.now());
    const cookie = serializeCookie(names.csrf, token, {
      maxAgeSeconds: CSRF_TOKEN_LIFETIME_MS / 1000,
      httpOnly: false,
      secure: options.requireTls,
    });
    return { token, cookie };
  };
  return {
    forSession,
    forRequest(request: Request, set: { headers: Record<string, unknown> }) {
      const { token, cookie } = forSession(
        readCookie(request.headers.get("cookie"), names.session),
      );
      set.headers["set-cookie"] = cookie;
      return { token };
    },
  };
}

export type CsrfIssuer = ReturnType<typeof createCsrfIssuer>;

/**
 * Why a request that carries a session or refresh cookie does not prove it comes from the app's
 * own page (cross-site, no token, a token not this session's or expired), or null when it does or
 * carries neither cookie. The CSRF stage refuses a state-changing request for it; the rate-limit
 * stage asks it of any request whose only credential is the session cookie, before counting it
 * against that principal (plugins/rate-limit).
 */
export function createCsrfCheck(
  options: Pick<CsrfOptions, "secretKey" | "previousSecretKey" | "requireTls" | "clock">,
): (request: Request) => string | null {
  const { secretKey, previousSecretKey, requireTls, clock } = options;
  const keys = previousSecretKey ? [secretKey, previousSecretKey] : secretKey;
  const names = cookieNames(requireTls);
  return (request) => {
    const cookies = request.headers.get("cookie");
    const session = readCookie(cookies, names.session);
    if (session === null && readCookie(cookies, names.refresh) === null) return null;
    if (isCrossSite(request.headers.get("sec-fetch-site"))) return "cross-site request";
    const header = request.headers.get("x-csrf-token");
    const cookie = readCookie(cookies, names.csrf);
    if (header === null || cookie === null) return "missing token";
    if (!constantTimeEqual(header, cookie)) return "header and cookie differ";
    const verdict = verifyCsrfToken(keys, header, session, clock.now());
    return verdict === "VALID" ? null : `token ${verdict.toLowerCase().replace("_", " ")}`;
  };
}

export interface CsrfStageOptions {
  /** The check (createCsrfCheck), built once by the app and shared with the rate-limit stage. */
  check: (request: Request) => string | null;
  clock: Clock;
  audit: AuditLog;
  metrics: CsrfMetrics;
}

export function csrf({ check, clock, audit, metrics }: CsrfStageOptions) {
  const firstInWindow = auditedOncePerWindow(audit, "csrf.failed");

  return new Elysia({ name: "palisade.csrf" })
    .onRequest(function enforceCsrf(context) {
      const { request, path, clientIp, clientKey, requestId, routeClass } =
        context as unknown as RequestState;
      // A read is checked only on a route class that asks (csrfOnReads); a preflight never.
      const read = SAFE_METHODS.has(request.method);
      if (read && (request.method === "OPTIONS" || !routeClass.csrfOnReads)) return;
      if (routeClass.csrfExempt) return;
      if (sendsHeaderCredential(request.headers)) return;
      const failure = check(request);
      if (failure === null) return;
      metrics.failures.inc();
      // Audited once per address and minute (audit/once-per-window); the metric counts each.
      if (firstInWindow("csrf", clientKey, clock.now(), REFUSAL_AUDIT_WINDOW_MS)) {
        audit.record({
          type: "csrf.failed",
          outcome: "denied",
          ip: clientIp,
          route: `${request.method} ${path}`,
          requestId,
          detail: { reason: failure },
        });
      }
      throw new AppError("CSRF_FAILED", `CSRF check failed: ${failure}.`);
    })
    .as("global");
}
