/**
 * @module
 * An error as a log line carries it under `err`: `{type, message, stack}` then the error's own
 * enumerable fields (a SQLite `code`, say), the layout pino's standard serializer gave it, so the
 * lines did not change when pino went. A `cause` chain is folded into the message
 * (`outer: inner`) and the stack (`caused by: …`) rather than nested; an AggregateError's errors
 * are listed under `aggregateErrors`. Anything without a string `message` is returned as it is.
 * The stack goes to the log only: keeping it from clients is the error handler's concern.
 */

interface ErrorLike {
  message: string;
  stack?: unknown;
  cause?: unknown;
  errors?: unknown;
  [key: string]: unknown;
}

export function isErrorLike(value: unknown): value is ErrorLike {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { message?: unknown }).message === "string"
  );
}

/** The cause to follow: an error-like `cause`, or what a VError-style `cause()` returns. */
function causeOf(error: ErrorLike): ErrorLike | undefined {
  const cause = typeof error.cause === "function" ? error.cause() : error.cause;
  return isErrorLike(cause) ? cause : undefined;
}

function messageWithCauses(error: ErrorLike): string {
  const seen = new Set<ErrorLike>();
  let text = error.message || "";
  let current = error;
  for (;;) {
    if (seen.has(current)) return `${text}: ...`;
    const cause = causeOf(current);
    if (!cause) return text;
    seen.add(current);
    // A VError-style cause() already carries its parent's message in its own.
    text = typeof current.cause === "function" ? text : `${text}: ${cause.message || ""}`;
    current = cause;
  }
}

function stackWithCauses(error: ErrorLike): string {
  const seen = new Set<ErrorLike>();
  let text = typeof error.stack === "string" ? error.stack : "";
  let current = error;
  for (;;) {
    if (seen.has(current)) return `${text}\ncauses have become circular...`;
    const cause = causeOf(current);
    if (!cause) return text;
    seen.add(current);
    text += `\ncaused by: ${typeof cause.stack === "string" ? cause.stack : ""}`;
    current = cause;
  }
}

export function serializeError(value: unknown, seen: Set<unknown> = new Set()): unknown {
  if (!isErrorLike(value)) return value;
  seen.add(value);
  const maker = (value as { constructor?: unknown }).constructor;
  const out: Record<string, unknown> = {
    type: typeof maker === "function" ? maker.name : value.name,
    message: messageWithCauses(value),
    stack: stackWithCauses(value),
  };
  if (Array.isArray(value.errors)) {
    out.aggregateErrors = value.errors.map((each) => serializeError(each, seen));
  }
  for (const key in value) {
    if (out[key] !== undefined) continue;
    const field = value[key];
    if (!isErrorLike(field)) out[key] = field;
    // Causes are already in the message and stack.
    else if (key !== "cause" && !seen.has(field)) out[key] = serializeError(field, seen);
  }
  return out;
}
