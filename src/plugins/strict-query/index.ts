/**
 * @module
 * Whole numbers in a query string, as sent. Elysia converts a query parameter declared as an integer
 * with `Number`, which reads `0x10` as 16, `1e2` as 100, and `+5`, `5.0` or ` 10` as numbers too:
 * one value, many spellings, and a filter or cache in front that compares the text sees another
 * request than the route does. So such a parameter must be written in decimal digits only, and
 * once, or the request is 422 naming it. A date-time parameter passes Elysia's format check on a day
 * that does not exist (2026-02-30, read as March 2): it must name a real day. Every parameter a
 * route declares (but a list) is sent at most once: Elysia keeps the last of a repeated one, and a
 * filter or log in front may read the first. Checked before the
 * handler, after auth and after Elysia's own validation (an anonymous caller gets 401 first, as for
 * the body: plugins/strict-body).
 */
import { Elysia } from "elysia";
import { isCalendarDateTime } from "../../calendar";
import { AppError } from "../../errors";
import { routeLookup } from "../route-lookup";

/** What the check reads of a registered route: its method, path and query schema. */
export interface RouteQuery {
  method: string;
  path: string;
  hooks?: { query?: unknown };
}

/** One spelling a number: no leading zero (`007` is 7's second spelling; probe 91d F5). */
const DIGITS = /^(?:0|[1-9][0-9]{0,15})$/;
/**
 * The largest whole number a query parameter can carry, 2^53 − 1: a cursor must fit, and every id
 * SQLite hands out below it does (the audit log writes none past it). Fifteen digits until this
 * release: an audit log whose id sequence was moved past them in the file handed out cursors its
 * own route refused (probe 91b F2).
 */
export const MAX_QUERY_INTEGER = Number.MAX_SAFE_INTEGER;

/**
 * Digits only, of a number a query parameter can carry; a minus first where the parameter may be
 * below zero (`signed`: the audit log's cursor, since a row written into the file may have any
 * id), but not before a zero, one number's second spelling.
 */
function isQueryInteger(raw: string, signed = false): boolean {
  const digits = signed && raw.startsWith("-") ? raw.slice(1) : raw;
  if (!DIGITS.test(digits)) return false;
  const value = Number(digits);
  return value <= MAX_QUERY_INTEGER && (digits === raw || value !== 0);
}
const DECIMAL_DIGITS_MESSAGE = "Expected one whole number written in decimal digits";

type Property = {
  type?: unknown;
  format?: unknown;
  anyOf?: Property[];
  minimum?: unknown;
  maximum?: unknown;
};

/**
 * What a query parameter must be, as sent, beyond what Elysia's validation already took: sent at
 * most once (Elysia keeps the last of a repeated one, and a filter or log in front may read the
 * first), and each value as `valueOk` says.
 */
interface SentRule {
  name: string;
  message: string;
  valueOk?: (raw: string) => boolean;
}

function refuses(rule: SentRule, values: readonly string[]): boolean {
  return values.length > 1 || (rule.valueOk !== undefined && !values.every(rule.valueOk));
}

// Not inlined in the hook: an arrow calling a function there reads to Elysia as an async hook,
// awaited on every request (test/plugins/hooks-await).
function refusedRules(rules: readonly SentRule[], sent: URLSearchParams): SentRule[] {
  return rules.filter((rule) => refuses(rule, sent.getAll(rule.name)));
}

const wholeNumber = (name: string, signed: boolean): SentRule => ({
  name,
  message: DECIMAL_DIGITS_MESSAGE,
  valueOk: (raw) => isQueryInteger(raw, signed),
});

/** An integer that may be below zero, as its schema's minimum says. */
const isSigned = (property: Property): boolean => (boundsOf(property).minimum ?? 0) < 0;

// The format check takes 2026-02-30 (read as March 2), a time without an offset (read in the
// server's zone) and one with a `"` after it (read as nothing): each is refused.
const realDay = (name: string): SentRule => ({
  name,
  message: "Expected a date-time with an offset (2026-12-07T10:00:00Z) on a day that exists",
  valueOk: isCalendarDateTime,
});

const once = (name: string): SentRule => ({ name, message: "Expected once" });

/** A query schema's properties, as Elysia keeps the schema. */
function propertiesOf(schema: unknown): Record<string, Property> | undefined {
  return (schema as { properties?: Record<string, Property> } | null)?.properties;
}

/** Declared an integer: Elysia stores one as any of a string of format `integer` or the integer. */
const isInteger = (property: Property | undefined): boolean =>
  property?.type === "integer" || (property?.anyOf?.some(isInteger) ?? false);

/**
 * The rules of a query schema's properties (optional ones included): its integers, which Elysia
 * stores as it coerces them (any of a string of format `integer` or the integer itself), its
 * date-times, and once for every other but a list.
 */
function rulesOf(schema: unknown): SentRule[] {
  const properties = propertiesOf(schema);
  if (!properties) return [];
  const rules: SentRule[] = [];
  for (const name of Object.keys(properties)) {
    const property = properties[name];
    if (property && isInteger(property)) rules.push(wholeNumber(name, isSigned(property)));
    else if (property?.type === "string" && property.format === "date-time") {
      rules.push(realDay(name));
    } else if (property?.type !== "array") rules.push(once(name));
  }
  return rules;
}

/** A declared integer's bounds, as its schema (or the integer member of its union) holds them. */
function boundsOf(property: Property): { minimum?: number; maximum?: number } {
  const integer =
    property.type === "integer" ? property : property.anyOf?.find((p) => p.type === "integer");
  const bound = (value: unknown) => (typeof value === "number" ? value : undefined);
  return {
    minimum: bound(property.minimum) ?? bound(integer?.minimum),
    maximum: bound(property.maximum) ?? bound(integer?.maximum),
  };
}

function rangeMessage({ minimum, maximum }: { minimum?: number; maximum?: number }): string {
  if (minimum !== undefined && maximum !== undefined) {
    return `Expected a whole number from ${minimum} to ${maximum}`;
  }
  if (minimum !== undefined) return `Expected a whole number of at least ${minimum}`;
  return `Expected a whole number of at most ${maximum}`;
}

/**
 * Which of a route's integer query parameters are out of their range as sent. Elysia checks the
 * range while it converts the text, and the error it throws then names neither the parameter nor
 * the rule's place (`property`, path ""): the error handler asks this to name them.
 */
export function queryRangeErrors(routes: () => readonly RouteQuery[]) {
  const integersFor = routeLookup(routes, (entry) => {
    const properties = propertiesOf(entry.hooks?.query);
    if (!properties) return undefined;
    const integers = Object.entries(properties)
      .filter(([, property]) => isInteger(property))
      .map(([name, property]) => ({ name, ...boundsOf(property) }));
    return integers.length > 0 ? integers : undefined;
  });
  return (method: string, route: string, url: string): { field: string; message: string }[] => {
    const integers = integersFor(method === "HEAD" ? "GET" : method, route);
    if (integers === undefined) return [];
    const sent = new URL(url).searchParams;
    const errors: { field: string; message: string }[] = [];
    for (const integer of integers) {
      const raw = sent.get(integer.name);
      if (raw === null) continue;
      // Elysia converts `-1`, `1e3` or twenty digits and refuses the number's range before
      // strict-query's own rule runs: the rule that refuses their spelling names them here
      // (probe 27d F4).
      if (!isQueryInteger(raw, (integer.minimum ?? 0) < 0)) {
        errors.push({ field: `query/${integer.name}`, message: DECIMAL_DIGITS_MESSAGE });
        continue;
      }
      const value = Number(raw);
      if (
        (integer.minimum !== undefined && value < integer.minimum) ||
        (integer.maximum !== undefined && value > integer.maximum)
      ) {
        errors.push({ field: `query/${integer.name}`, message: rangeMessage(integer) });
      }
    }
    return errors;
  };
}

export function strictQuery({ routes }: { routes: () => readonly RouteQuery[] }) {
  const rulesFor = routeLookup(routes, (entry) => {
    const rules = rulesOf(entry.hooks?.query);
    return rules.length > 0 ? rules : undefined;
  });
  return new Elysia({ name: "palisade.strict-query" })
    .onBeforeHandle(function refuseQueryAsSent({ request, route }) {
      const method = request.method === "HEAD" ? "GET" : request.method;
      const rules = rulesFor(method, route);
      if (rules === undefined) return;
      const sent = new URL(request.url).searchParams;
      const wrong = refusedRules(rules, sent);
      if (wrong.length > 0) {
        throw new AppError(
          "VALIDATION_FAILED",
          "The request query is invalid.",
          wrong.map((rule) => ({ field: `query/${rule.name}`, message: rule.message })),
        );
      }
    })
    .as("global");
}
