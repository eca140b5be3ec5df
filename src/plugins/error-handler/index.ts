/**
 * @module
 * The one place errors become responses: every failure, whether thrown by a handler, raised by
 * validation, or a route that does not exist, leaves as RFC 9457 problem+json with a stable code
 * and the request id. Unexpected errors are logged with their stack here and shown to the client
 * only as INTERNAL, without the exception's message.
 */
import { Elysia, type ValidationError } from "elysia";
import { sqliteCodeOf } from "../../db/client";
import {
  AppError,
  type ErrorCode,
  type FieldError,
  PROBLEM_CONTENT_TYPE,
  statusForCode,
  toProblem,
} from "../../errors";
import type { Logger } from "../../logging/logger";
import { type Principal, principalRef } from "../auth/principal";
import type { ResponseHeaders } from "../security-headers/response";
import type { ErrorContext } from "../sentry";
import type { SentBodyState } from "../strict-body";
import { EarlyAnswer } from "./early-answer";
import { echoedField } from "./field-name";
import { type RouteEntry, routeMethodIndex, routePatternIndex } from "./route-methods";
import { storageRefusal } from "./storage";

export interface ErrorHandlerOptions {
  logger: Logger;
  /** The app's registered routes, read once on the first miss, to tell 404 from 405. */
  routes: () => readonly RouteEntry[];
  /** Every 5xx but NOT_CONFIGURED goes here (error reporting, plugins/sentry). */
  report?: (error: unknown, context: ErrorContext) => void;
  /**
   * The fixed headers every answer carries (plugins/security-headers); without them the problem
   * carries only what the request set.
   */
  responseHeaders?: ResponseHeaders;
  /**
   * The integer query parameters of `route` out of their range as sent (plugins/strict-query):
   * Elysia's error for one names neither.
   */
  queryRangeErrors?: (method: string, route: string, url: string) => FieldError[];
}

interface Outcome {
  code: ErrorCode;
  detail: string;
  fieldErrors?: FieldError[];
  headers?: Record<string, string>;
  /** The status when the code has alternates (AppError.status); the code's own otherwise. */
  status?: number;
}

const STATUS_CODES: Record<number, ErrorCode> = {
  400: "BAD_REQUEST",
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  405: "METHOD_NOT_ALLOWED",
  409: "CONFLICT",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
  422: "VALIDATION_FAILED",
  429: "RATE_LIMITED",
  502: "UPSTREAM_UNAVAILABLE",
  503: "SERVICE_UNAVAILABLE",
};

/**
 * The rule a union states, in words: Elysia's summary of a failed union names its members' types
 * ("should be one of: 'string', 'string'" for `mode`, "'integer', 'integer'" for `limit`: probe
 * 27c F5), which tells the client nothing. Null for a union of anything else.
 */
function unionRule(schema: unknown): string | null {
  const { enum: listed, anyOf } = (schema ?? {}) as { enum?: unknown; anyOf?: unknown };
  const members: { const?: unknown; type?: unknown }[] = Array.isArray(anyOf) ? anyOf : [];
  // A t.UnionEnum lists its values (Elysia says "Expected kind 'UnionEnum'"); a union of literals
  // holds one in each member.
  const values = Array.isArray(listed) ? listed : members.map((member) => member.const);
  if (
    values.length > 0 &&
    values.every((value) => typeof value === "string" || typeof value === "number")
  ) {
    return `Expected one of: ${values.map((value) => `'${value}'`).join(", ")}`;
  }
  const types = new Set(members.map((member) => member.type));
  if (types.has("integer")) return "Expected a whole number";
  if (types.has("number")) return "Expected a number";
  return null;
}

/**
 * An answer that failed its route's response schema, as error reporting receives it: the route
 * and the failing fields' paths, never their values or the rest of the answer.
 */
export class ResponseSchemaMismatch extends Error {
  override name = "ResponseSchemaMismatch";
  constructor(
    readonly route: string | undefined,
    readonly fields: readonly string[],
  ) {
    super(`A response did not match its schema (${route ?? "no route"}): ${fields.join(", ")}`);
  }
}

/**
 * The failing fields of a schema error: JSON pointer (up to a name not fit to echo) and the rule,
 * never the value sent.
 */
export function fieldErrorsOf(error: Readonly<ValidationError>): FieldError[] {
  const seen = new Set<string>();
  const fields: FieldError[] = [];
  for (const issue of error.all) {
    const path = "path" in issue && typeof issue.path === "string" ? issue.path : "";
    const field = echoedField(error.type, path);
    if (seen.has(field)) continue;
    seen.add(field);
    // Elysia's summary of a wrong type ends "… but found: <the value sent>" (a card number sent
    // as a number, probe 32c F2): TypeBox's own message ("Expected string") names the rule alone.
    const summary = "summary" in issue && issue.summary ? issue.summary : null;
    const message =
      unionRule("schema" in issue ? issue.schema : null) ??
      (summary !== null && !summary.includes(" but found: ") ? summary : issue.message);
    fields.push({ field, message: String(message) });
  }
  return fields;
}

/** Whether the body as sent was refused whole (strict-body: not of the schema's type). */
function wholeBodyRefusal(error: Readonly<ValidationError>, sentBodyRefusal: unknown): boolean {
  return (
    error.type === "body" &&
    sentBodyRefusal instanceof AppError &&
    sentBodyRefusal.fieldErrors?.length === 1 &&
    sentBodyRefusal.fieldErrors[0]!.field === "body"
  );
}

export function errorHandler({
  logger,
  routes,
  report,
  responseHeaders,
  queryRangeErrors,
}: ErrorHandlerOptions) {
  const allowedMethods = routeMethodIndex(routes);
  const routePatternOf = routePatternIndex(routes);
  /** The answer; set.headers is emptied so Elysia does not lay it over its headers again. */
  const answer = (
    set: { headers: Record<string, unknown> },
    body: string | null,
    status: number,
  ) => {
    if (!responseHeaders) {
      return new Response(body, { status, headers: set.headers as Record<string, string> });
    }
    // A problem document or an empty answer is never HTML: the API's policy, whatever the path.
    const response = responseHeaders.respond("", set.headers, body, status);
    set.headers = {};
    return response;
  };

  return new Elysia({ name: "palisade.error-handler" })
    .onError(function toProblemResponse(context) {
      // Destructured once and the context never mentioned again: Elysia reads each hook's source,
      // and a context used whole makes every request of every route parse its cookies, query and
      // headers.
      const {
        code,
        error,
        request,
        set,
        path,
        route,
        requestId: givenId,
        answeredRequestId,
        principal,
        sentBodyRefusal,
      } = context as typeof context &
        SentBodyState & {
          path?: string;
          requestId?: string;
          answeredRequestId?: string;
          principal?: Principal;
        };
      if (error instanceof EarlyAnswer) {
        set.status = error.status;
        return answer(set, null, error.status);
      }
      const requestId = givenId || "unknown";
      // A request refused before routing (the limiter's store locked) carries the pattern of the
      // route it was aimed at, as in the access log.
      const routeOf = (): string | undefined =>
        route || (path ? routePatternOf(request.method, path) : null) || undefined;
      let outcome: Outcome;
      /** What error reporting receives: the error, unless it carries what must not leave. */
      let reported: unknown = error;

      // Elysia wraps what a parse hook throws in its ParseError; the AppError is the cause.
      const appError =
        error instanceof AppError
          ? error
          : (error as { cause?: unknown }).cause instanceof AppError
            ? ((error as { cause?: unknown }).cause as AppError)
            : null;
      const refusal = appError ? null : storageRefusal(error);
      if (appError) {
        outcome = {
          code: appError.code,
          detail: appError.detail,
          fieldErrors: appError.fieldErrors,
          headers: appError.headers,
          status: appError.status,
        };
      } else if (code === "VALIDATION" && error.type === "response") {
        // What a handler answers failed its own schema: a fault of the service (a row written
        // into the database file that no handler expects, say), never the client's request.
        const fields = fieldErrorsOf(error).map((field) => field.field);
        logger.error(
          { requestId, method: request.method, route: routeOf(), fields },
          "a response did not match its schema",
        );
        // Elysia's error holds the whole answer in its message (every row of a page, a user's
        // chat text): error reports get the fields, as the log does (probe 30b F1).
        reported = new ResponseSchemaMismatch(routeOf(), fields);
        outcome = { code: "INTERNAL", detail: "An unexpected error occurred." };
      } else if (code === "VALIDATION" && wholeBodyRefusal(error, sentBodyRefusal)) {
        // Elysia validates a body that is not an object (`[]`, `7`, `"x"`) as `{}`, and named
        // every required field missing: the check of the body as sent says what it is (90e F1).
        const asSent = sentBodyRefusal as AppError;
        outcome = { code: asSent.code, detail: asSent.detail, fieldErrors: asSent.fieldErrors };
      } else if (code === "VALIDATION") {
        // A conversion that failed (an integer query parameter out of its range) is reported by
        // Elysia as `property` with no path: named here from the query as sent.
        const named =
          error.type === "property" && route
            ? queryRangeErrors?.(request.method, route, request.url)
            : undefined;
        const byName = named !== undefined && named.length > 0;
        outcome = {
          code: "VALIDATION_FAILED",
          detail: `The request ${byName ? "query" : error.type} is invalid.`,
          fieldErrors: byName ? named : fieldErrorsOf(error),
        };
      } else if (code === "PARSE") {
        outcome = { code: "MALFORMED_BODY", detail: "The request body could not be parsed." };
      } else if (code === "NOT_FOUND") {
        const path = new URL(request.url).pathname;
        const allow = allowedMethods(path);
        outcome =
          allow.length > 0 && !allow.includes(request.method)
            ? {
                code: "METHOD_NOT_ALLOWED",
                detail: `${request.method} is not allowed here.`,
                headers: { allow: allow.join(", ") },
              }
            : { code: "NOT_FOUND", detail: "No route matches this path." };
      } else if (typeof code === "number" && STATUS_CODES[code]) {
        outcome = { code: STATUS_CODES[code]!, detail: "The request was refused." };
      } else if (code === "INVALID_COOKIE_SIGNATURE") {
        outcome = { code: "BAD_REQUEST", detail: "A signed cookie did not verify." };
      } else if (refusal) {
        // Locked past our short wait (db/busy): not a bug, and retrying shortly will work. Read-only,
        // full or failing: the client may retry too; the operator needs the stack. Either, lasting,
        // fails every request: the first line of each route pattern (never the method, which can
        // be any token a client sends) is written, the rest summed up (logging/repeats).
        const route = routeOf();
        if (refusal.busy) {
          logger
            .repeating(`database locked: ${route ?? "<unmatched>"}`)
            .warn({ requestId, method: request.method, route }, "database locked");
        } else {
          logger
            .repeating(`database unavailable: ${route ?? "<unmatched>"} ${sqliteCodeOf(error)}`)
            .error(
              { err: error, requestId, method: request.method, route },
              "database unavailable",
            );
        }
        outcome = { code: refusal.code, detail: refusal.detail, headers: refusal.headers };
      } else {
        // A fault a client can trigger at will would write its stack for every request: the
        // first of each route and error kind is written, the rest summed up (logging/repeats).
        const route = routeOf();
        const kind = error instanceof Error ? error.constructor.name : typeof error;
        logger
          .repeating(`unhandled error: ${route ?? "<unmatched>"} ${kind}`)
          .error({ err: error, requestId, method: request.method, route }, "unhandled error");
        outcome = { code: "INTERNAL", detail: "An unexpected error occurred." };
      }

      const status = outcome.status ?? statusForCode(outcome.code);
      // A feature left unconfigured is how the service was deployed, not a failure: anyone could
      // send one event a minute per route to the error tracker (probe 43c F1).
      if (status >= 500 && outcome.code !== "NOT_CONFIGURED" && report) {
        const route = routeOf();
        report(reported, {
          requestId,
          route: route ? `${request.method} ${route}` : undefined,
          method: request.method,
          principal: principal ? principalRef(principal) : undefined,
          status,
          code: outcome.code,
          upstream: appError?.upstream,
          request,
        });
      }
      set.status = status;
      if (outcome.headers) Object.assign(set.headers, outcome.headers);
      set.headers["content-type"] = PROBLEM_CONTENT_TYPE;
      return answer(
        set,
        JSON.stringify(
          toProblem(
            outcome.code,
            outcome.detail,
            answeredRequestId || requestId,
            outcome.fieldErrors,
            status,
          ),
        ),
        status,
      );
    })
    .as("global");
}
