/**
 * @module
 * Whole numbers in a query string, as sent. Elysia converts a query parameter declared as an integer
 * with `Number`, which reads `0x10` as 16, `1e2` as 100, and `+5`, `5.0` or ` 10` as numbers too:
 * one value, many spellings, and a filter or cache in front that compares the text sees another
 * request than the route does. So such a parameter must be written in decimal digits only, and
 * once, or the request is 422 naming it. Checked before the handler, after auth and after Elysia's
 * own validation (an anonymous caller gets 401 first, as for the body: plugins/strict-body).
 */
import { Elysia } from "elysia";
import { AppError } from "../../errors";

/** What the check reads of a registered route: its method, path and query schema. */
export interface RouteQuery {
  method: string;
  path: string;
  hooks?: { query?: unknown };
}

const DIGITS = /^[0-9]{1,15}$/;

type Property = { type?: unknown; anyOf?: Property[] };

/**
 * The names of a query schema's integer properties (optional ones included). Elysia stores a query
 * integer as it coerces it: any of a string of format `integer` or the integer itself.
 */
function integerNames(schema: unknown): string[] {
  const properties = (schema as { properties?: Record<string, Property> } | null)?.properties;
  if (!properties) return [];
  const isInteger = (property: Property | undefined): boolean =>
    property?.type === "integer" || (property?.anyOf?.some(isInteger) ?? false);
  return Object.keys(properties).filter((name) => isInteger(properties[name]));
}

export function strictQuery({ routes }: { routes: () => readonly RouteQuery[] }) {
  let integers: Map<string, string[]> | null = null;
  const integersOf = (method: string, route: string): string[] | undefined => {
    if (integers === null) {
      integers = new Map();
      for (const entry of routes()) {
        const names = integerNames(entry.hooks?.query);
        if (names.length > 0) integers.set(`${entry.method} ${entry.path}`, names);
      }
    }
    return integers.get(`${method} ${route}`);
  };
  return new Elysia({ name: "palisade.strict-query" })
    .onBeforeHandle(function refuseQueryAsSent({ request, route }) {
      const method = request.method === "HEAD" ? "GET" : request.method;
      const names = integersOf(method, route);
      if (names === undefined) return;
      const sent = new URL(request.url).searchParams;
      // Sent twice, the route reads one value and a filter in front may read the other.
      const wrong = names.filter((name) => {
        const values = sent.getAll(name);
        return values.length > 1 || values.some((raw) => !DIGITS.test(raw));
      });
      if (wrong.length > 0) {
        throw new AppError(
          "VALIDATION_FAILED",
          "The request query is invalid.",
          wrong.map((name) => ({
            field: `query/${name}`,
            message: "Expected one whole number written in decimal digits",
          })),
        );
      }
    })
    .as("global");
}
