/**
 * @module
 * Route classes: what the early stages need to know about a route before Elysia routes the
 * request — its rate-limit policy, its body limit, whether it is a probe (never limited nor
 * blocked), whether it is exempt from CSRF. Each module declares the classes of its own routes
 * next to them; `createApp` puts them in one table, and the stages read only that table.
 *
 * The stages run in `onRequest`, before routing, so the table must answer for every spelling that
 * reaches a handler, not just the one registered. With `strictPath` off Elysia also routes the path
 * with a trailing slash, and it answers `HEAD` with the `GET` handler; Bun has already resolved dot
 * segments, and the request guard refuses encoded ones. `classify` folds those spellings the same
 * way, so `/api/auth/register/` and `HEAD /api/me/export` count against their routes' policies.
 * A test sends every spelling of every registered route through the real router and compares.
 */
import type { BodyLimits } from "../../config";
import type { PolicyId } from "../rate-limit/policies";

export interface RouteClass {
  /**
   * The routes of the class, as `METHOD /path`: a path as registered (`:name` matches one segment),
   * or a prefix ending in `/*`. The method may be `*` for any.
   */
  routes: readonly string[];
  /** The rate-limit policy counted on top of the default one. */
  policy?: PolicyId;
  /** Liveness, readiness and scrapes: never rate limited nor IP blocked, so probes keep answering. */
  probe?: boolean;
  /** Which of the configured body limits applies; `default` when absent. */
  bodyLimit?: Exclude<keyof BodyLimits, "server">;
  /** Called server to server and authenticated by signature, so CSRF does not apply. */
  csrfExempt?: boolean;
  /**
   * CSRF applies to its reads (GET, HEAD) too: a read the session cookie alone must not make, since
   * the rate limiter counts such a request by address and the route's own per-user budget would
   * not hold (the privacy export: probe 33a F1).
   */
  csrfOnReads?: boolean;
  /**
   * A page a browser may open from a link on another site (the API's documentation): a cross-site
   * top-level navigation reaches it. Any other route refuses one before it is counted
   * (plugins/cross-site): a page could open the API's URLs one after another in a window it opened
   * and get its visitor's address blocked (probe 49a F2).
   */
  navigable?: boolean;
  /**
   * The handler gets the body's bytes exactly as received, and their text (request-guard/body,
   * exactBodyOf): a signature is computed over them. Any other route's body is read as text, which
   * Bun decodes as it reads (plugins/request-guard).
   */
  exactBytes?: boolean;
}

/** What the stages read for one request. */
export interface ResolvedRouteClass {
  /** The class's first route: a stable name for tests and logs. */
  name: string;
  policy: PolicyId | null;
  probe: boolean;
  bodyLimit: Exclude<keyof BodyLimits, "server">;
  csrfExempt: boolean;
  csrfOnReads: boolean;
  navigable: boolean;
  exactBytes: boolean;
}

interface Pattern {
  method: string;
  segments: readonly string[];
  prefix: boolean;
  resolved: ResolvedRouteClass;
}

/** The class of requests that match no declared route (they end in 404 or 405). */
export const UNMATCHED_CLASS: ResolvedRouteClass = Object.freeze({
  name: "<unmatched>",
  policy: null,
  probe: false,
  bodyLimit: "default",
  csrfExempt: false,
  csrfOnReads: false,
  navigable: false,
  exactBytes: false,
});

export interface RouteClassTable {
  classify(method: string, path: string): ResolvedRouteClass;
  /** Every declared route pattern with its class, for the test that walks the routes. */
  readonly declared: readonly { route: string; resolved: ResolvedRouteClass }[];
}

function parseRoute(route: string): { method: string; path: string } {
  const space = route.indexOf(" ");
  if (space < 1 || !route.startsWith("/", space + 1)) {
    throw new Error(`route class entry "${route}" is not "METHOD /path"`);
  }
  return { method: route.slice(0, space), path: route.slice(space + 1) };
}

export function createRouteClassTable(classes: readonly RouteClass[]): RouteClassTable {
  const exact = new Map<string, ResolvedRouteClass>();
  // The same entries by method, then path: no "METHOD path" string is built per request.
  const exactByMethod = new Map<string, Map<string, ResolvedRouteClass>>();
  const patterns: Pattern[] = [];
  const declared: { route: string; resolved: ResolvedRouteClass }[] = [];

  for (const routeClass of classes) {
    const resolved: ResolvedRouteClass = Object.freeze({
      name: routeClass.routes[0] ?? "<empty>",
      policy: routeClass.policy ?? null,
      probe: routeClass.probe ?? false,
      bodyLimit: routeClass.bodyLimit ?? "default",
      csrfExempt: routeClass.csrfExempt ?? false,
      csrfOnReads: routeClass.csrfOnReads ?? false,
      navigable: routeClass.navigable ?? false,
      exactBytes: routeClass.exactBytes ?? false,
    });
    for (const route of routeClass.routes) {
      const { method, path } = parseRoute(route);
      declared.push({ route, resolved });
      const prefix = path.endsWith("/*");
      if (!prefix && !path.includes(":") && method !== "*") {
        if (exact.has(route)) throw new Error(`route class entry "${route}" is declared twice`);
        exact.set(route, resolved);
        const paths = exactByMethod.get(method) ?? new Map<string, ResolvedRouteClass>();
        exactByMethod.set(method, paths.set(path, resolved));
        continue;
      }
      const segments = (prefix ? path.slice(0, -2) : path).split("/");
      patterns.push({ method, segments, prefix, resolved });
    }
  }
  // Longer patterns first, so a specific route wins over a prefix that covers it.
  patterns.sort(
    (a, b) => b.segments.length - a.segments.length || Number(a.prefix) - Number(b.prefix),
  );

  // The patterns each method can match, in the order above; a method no pattern names can match
  // only the `*` ones. Built once, so the lists never grow with what clients send.
  const anyMethod = patterns.filter((pattern) => pattern.method === "*");
  const patternsByMethod = new Map<string, readonly Pattern[]>();
  for (const { method } of patterns) {
    if (method === "*" || patternsByMethod.has(method)) continue;
    patternsByMethod.set(
      method,
      patterns.filter((pattern) => pattern.method === "*" || pattern.method === method),
    );
  }

  const matches = (pattern: Pattern, segments: readonly string[]): boolean => {
    const wanted = pattern.segments;
    if (pattern.prefix ? segments.length <= wanted.length : segments.length !== wanted.length) {
      return false;
    }
    for (let i = 0; i < wanted.length; i++) {
      const part = wanted[i]!;
      if (part.startsWith(":") ? segments[i] === "" : part !== segments[i]) return false;
    }
    return true;
  };

  return {
    declared,
    classify(rawMethod, rawPath) {
      // Elysia answers HEAD with the GET handler and routes "/x/" to "/x" (strictPath off).
      const method = rawMethod === "HEAD" ? "GET" : rawMethod;
      const path = rawPath.length > 1 && rawPath.endsWith("/") ? rawPath.slice(0, -1) : rawPath;
      const found = exactByMethod.get(method)?.get(path);
      if (found) return found;
      const candidates = patternsByMethod.get(method) ?? anyMethod;
      if (candidates.length === 0) return UNMATCHED_CLASS;
      const segments = path.split("/");
      for (const pattern of candidates) {
        if (matches(pattern, segments)) return pattern.resolved;
      }
      return UNMATCHED_CLASS;
    },
  };
}
