/**
 * @module
 * The error model: one closed list of codes, one code-to-status switch, and the RFC 9457
 * problem+json body every error response carries. Services return outcomes as values; only the
 * HTTP edge throws AppError, and one onError turns everything into a problem document.
 *
 * The problem body is one TypeBox schema (ProblemSchema); the TypeScript type is derived from it,
 * and `problemResponses` attaches it to routes' error statuses so `/openapi.json` documents them.
 */
import { type Static, t } from "elysia";

export const ERROR_CODES = [
  "VALIDATION_FAILED",
  "MALFORMED_BODY",
  "UNAUTHENTICATED",
  "FORBIDDEN",
  "RATE_LIMITED",
  "QUOTA_EXCEEDED",
  "TOO_MANY_TURNS",
  "IP_BLOCKED",
  "CSRF_FAILED",
  "CROSS_SITE_REFUSED",
  "PAYLOAD_TOO_LARGE",
  "REQUEST_TIMEOUT",
  "UNSUPPORTED_MEDIA_TYPE",
  "BAD_REQUEST",
  "BAD_PATH",
  "BAD_HEADER",
  "DUPLICATE_HEADER",
  "URI_TOO_LONG",
  "BAD_SIGNATURE",
  "NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "CONFLICT",
  "UPSTREAM_UNAVAILABLE",
  "UPSTREAM_REFUSED",
  "SERVICE_UNAVAILABLE",
  "NOT_CONFIGURED",
  "INTERNAL",
  "CLIENT_CLOSED",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export function statusForCode(code: ErrorCode): number {
  switch (code) {
    case "VALIDATION_FAILED":
      return 422;
    case "UPSTREAM_REFUSED":
      // The chat model refused the request for what it holds (its 400, 413, 422: a content filter,
      // a context too long): the client's to change, not a failure of the service, so neither
      // reported to Sentry nor counted by the 5xx alert (probe 55a F3).
      return 422;
    case "MALFORMED_BODY":
    case "BAD_REQUEST":
    case "BAD_PATH":
    case "BAD_HEADER":
    case "DUPLICATE_HEADER":
      return 400;
    case "UNAUTHENTICATED":
    case "BAD_SIGNATURE":
      return 401;
    case "FORBIDDEN":
    case "IP_BLOCKED":
    case "CSRF_FAILED":
    case "CROSS_SITE_REFUSED":
      return 403;
    case "NOT_FOUND":
      return 404;
    case "METHOD_NOT_ALLOWED":
      return 405;
    case "REQUEST_TIMEOUT":
      return 408;
    case "CONFLICT":
      return 409;
    case "PAYLOAD_TOO_LARGE":
      return 413;
    case "URI_TOO_LONG":
      return 414;
    case "UNSUPPORTED_MEDIA_TYPE":
      return 415;
    case "RATE_LIMITED":
    case "QUOTA_EXCEEDED":
    case "TOO_MANY_TURNS":
      return 429;
    case "INTERNAL":
      return 500;
    case "NOT_CONFIGURED":
      // RFC 9110 §15.6.2: this server does not support what the request needs. A deployment
      // without payments or WhatsApp is a normal one, not a fault: no Retry-After, and neither
      // reported as an error nor counted by the 5xx alert (probe 43c F1).
      return 501;
    case "UPSTREAM_UNAVAILABLE":
      return 502;
    case "SERVICE_UNAVAILABLE":
      return 503;
    case "CLIENT_CLOSED":
      // nginx's status for a request whose client went away before its answer: the answer is never
      // received, only logged and counted, and a client that leaves is not a server error.
      return 499;
  }
}

/**
 * Codes that may also answer with another status: an upstream that is down for a while (the
 * circuit is open) is 503 so clients back off, where a bad answer from it is 502. A Stripe
 * webhook whose signature does not verify is 400, as Stripe's integration guide answers it (the
 * sender is not a client that could present another credential).
 */
const ALTERNATE_STATUSES: Partial<Record<ErrorCode, readonly number[]>> = {
  UPSTREAM_UNAVAILABLE: [503],
  BAD_SIGNATURE: [400],
};

/** Every status a code may answer with: its own, then its alternates. */
export function statusesForCode(code: ErrorCode): readonly number[] {
  return [statusForCode(code), ...(ALTERNATE_STATUSES[code] ?? [])];
}

const TITLES: Record<ErrorCode, string> = {
  VALIDATION_FAILED: "The request did not pass validation",
  MALFORMED_BODY: "The request body could not be parsed",
  UNAUTHENTICATED: "Authentication is required",
  FORBIDDEN: "Not allowed",
  RATE_LIMITED: "Too many requests",
  QUOTA_EXCEEDED: "A usage quota is spent",
  TOO_MANY_TURNS: "Too many chat turns in flight",
  IP_BLOCKED: "This address is blocked",
  CSRF_FAILED: "CSRF check failed",
  CROSS_SITE_REFUSED: "Cross-site request refused",
  PAYLOAD_TOO_LARGE: "The request body is too large",
  REQUEST_TIMEOUT: "The request body did not arrive in time",
  UNSUPPORTED_MEDIA_TYPE: "Unsupported content type",
  BAD_REQUEST: "Bad request",
  BAD_PATH: "The request path is not acceptable",
  BAD_HEADER: "A request header is not acceptable",
  DUPLICATE_HEADER: "A request header was sent more than once",
  URI_TOO_LONG: "The request URI is too long",
  BAD_SIGNATURE: "The signature did not verify",
  NOT_FOUND: "Not found",
  METHOD_NOT_ALLOWED: "Method not allowed",
  CONFLICT: "Conflict",
  UPSTREAM_UNAVAILABLE: "An upstream service is unavailable",
  UPSTREAM_REFUSED: "The upstream refused the request",
  SERVICE_UNAVAILABLE: "The service is unavailable",
  NOT_CONFIGURED: "This feature is not configured on this service",
  INTERNAL: "Internal error",
  CLIENT_CLOSED: "The client closed the request",
};

/** One failing field of a validation error: where, and which rule. Never the value sent. */
export const FieldErrorSchema = t.Object({
  field: t.String({ description: "Where: `body/email`, `query/limit`, …" }),
  message: t.String({ description: "Which rule failed (never the value sent)" }),
});
export type FieldError = Static<typeof FieldErrorSchema>;

const problemProperties = (codes: readonly ErrorCode[]) => ({
  type: t.String({ description: "`urn:palisade:problem:<code in kebab case>`" }),
  title: t.String(),
  status: t.Number({ minimum: 400, maximum: 599, description: "The HTTP status, repeated" }),
  detail: t.String({ description: "Safe to show; never a stack or a secret" }),
  code: t.UnionEnum(codes as [ErrorCode, ...ErrorCode[]]),
  requestId: t.String({ description: "The X-Request-Id of the response" }),
  errors: t.Optional(t.Array(FieldErrorSchema, { description: "VALIDATION_FAILED only" })),
});

/** The RFC 9457 body of every error response (`application/problem+json`). */
export const ProblemSchema = t.Object(problemProperties(ERROR_CODES), {
  description: "RFC 9457 problem details, sent as application/problem+json",
});
export type Problem = Static<typeof ProblemSchema>;

/** What each error status means on any route; the codes come from statusForCode. */
const STATUS_MEANING: Record<number, string> = {
  400: "The request is malformed (body, path, a header)",
  401: "No valid credential",
  403: "Refused: the credential may not do this, the address is blocked, or the CSRF check failed",
  404: "No such resource",
  405: "Method not allowed (see Allow)",
  408: "A large or chunked body did not arrive in time (the connection is closed)",
  409: "Conflicts with the current state",
  413: "The body is too large",
  414: "The URI is too long",
  415: "Unsupported content type",
  422: "The request did not pass validation; `errors` names the fields",
  429: "Rate limited, a quota is spent, or too many chat turns in flight (see Retry-After)",
  500: "Internal error",
  501: "The feature this route belongs to is not configured on this service (`detail` names the setting)",
  502: "An upstream service is unavailable",
  503: "The service cannot be used right now (see Retry-After)",
};

/** The codes each status can carry, worked out once: every route's schemas ask (issue #13). */
const CODES_BY_STATUS = new Map<number, ErrorCode[]>();
for (const code of ERROR_CODES) {
  for (const status of statusesForCode(code)) {
    CODES_BY_STATUS.set(status, [...(CODES_BY_STATUS.get(status) ?? []), code]);
  }
}

/**
 * Route `response` entries for error statuses: each the problem schema with `code` narrowed to the
 * codes of that status, so the document says which codes a status can carry.
 */
export function problemResponses<S extends number>(...statuses: S[]) {
  const responses = {} as Record<S, typeof ProblemSchema>;
  for (const status of statuses) {
    const codes = CODES_BY_STATUS.get(status) ?? [];
    if (codes.length === 0) throw new Error(`no error code answers ${status}`);
    responses[status] = t.Object(problemProperties(codes), {
      description: `${STATUS_MEANING[status] ?? "Error"} (application/problem+json)`,
    }) as unknown as typeof ProblemSchema;
  }
  return responses;
}

/** An error meant for the client: its code, a detail safe to show, and optional field errors. */
export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    readonly detail: string = TITLES[code],
    readonly fieldErrors?: FieldError[],
    /** Extra response headers, e.g. Retry-After on 429 or Allow on 405. */
    readonly headers?: Record<string, string>,
    /** One of the code's alternate statuses (see statusesForCode); its own status when absent. */
    status?: number,
  ) {
    super(detail);
    this.name = "AppError";
    if (status !== undefined && !statusesForCode(code).includes(status)) {
      throw new Error(`${code} cannot answer ${status}`);
    }
    this.status = status ?? statusForCode(code);
  }

  /** The service outside us that failed (`openai`, `stripe`), tagged on the error report. */
  upstream?: string;

  /**
   * Keeps what caused this answer for error reporting only (the client sees the code and detail):
   * the report carries `cause` as a linked exception and `upstream` as a tag.
   */
  causedBy(cause: unknown, upstream?: string): this {
    this.cause = cause;
    if (upstream !== undefined) this.upstream = upstream;
    return this;
  }
}

export function problemType(code: ErrorCode): string {
  return `urn:palisade:problem:${code.toLowerCase().replaceAll("_", "-")}`;
}

export function toProblem(
  code: ErrorCode,
  detail: string,
  requestId: string,
  fieldErrors?: FieldError[],
  status: number = statusForCode(code),
): Problem {
  const problem: Problem = {
    type: problemType(code),
    title: TITLES[code],
    status,
    detail,
    code,
    requestId,
  };
  if (fieldErrors && fieldErrors.length > 0) problem.errors = fieldErrors;
  return problem;
}

export const PROBLEM_CONTENT_TYPE = "application/problem+json";
