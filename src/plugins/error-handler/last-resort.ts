/**
 * @module
 * Answers for the two places a request can be answered outside the app's error handler: Bun's own
 * `error` callback on every `Bun.serve` the service runs (the main server and the metrics
 * listener), and the metrics listener's refusal of any path but `/metrics`. Always RFC 9457
 * problem+json with a fresh request id; never Bun's error page (which shows source paths, source
 * lines and the stack), never a stack or a message of ours.
 */
import { type ErrorCode, PROBLEM_CONTENT_TYPE, statusForCode, toProblem } from "../../errors";
import type { Logger } from "../../logging/logger";
import { API_CSP, buildSecurityHeaders } from "../security-headers";

/**
 * With the security headers every other answer carries (`hsts` where the service is reached over
 * TLS): the metrics listener's 404 sent only nosniff and no-store (probe 71b F3).
 */
export function problemResponse(code: ErrorCode, detail: string, hsts: boolean): Response {
  const requestId = Bun.randomUUIDv7();
  const status = statusForCode(code);
  return new Response(JSON.stringify(toProblem(code, detail, requestId, undefined, status)), {
    status,
    headers: {
      ...buildSecurityHeaders(hsts, API_CSP),
      vary: "Origin",
      "content-type": PROBLEM_CONTENT_TYPE,
      "x-request-id": requestId,
    },
  });
}

/** Bun.serve's `error` callback: the error is logged (scrubbed), the client gets a bare 500. */
export function lastResortErrorHandler(logger: Logger, hsts: boolean) {
  return function answerServerError(error: unknown): Response {
    const response = problemResponse("INTERNAL", "An unexpected error occurred.", hsts);
    logger.error(
      { err: error, requestId: response.headers.get("x-request-id") },
      "request failed outside the app",
    );
    return response;
  };
}
