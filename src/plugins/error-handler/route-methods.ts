/**
 * @module
 * Which methods a path answers to, for 405 responses and their `Allow` header. Built once from the
 * app's registered routes the first time a request misses.
 */

export interface RouteEntry {
  method: string;
  path: string;
}

function patternToRegExp(path: string): RegExp {
  const source = path
    .split("/")
    .map((segment) => {
      if (segment === "*") return ".*";
      if (segment.startsWith(":")) return segment.endsWith("?") ? "[^/]*" : "[^/]+";
      return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return new RegExp(`^${source}/?$`);
}

export function routeMethodIndex(routes: () => readonly RouteEntry[]) {
  let compiled: { pattern: RegExp; method: string }[] | null = null;
  return function allowedMethods(path: string): string[] {
    compiled ??= routes()
      .filter((route) => route.method !== "ALL" && route.method !== "WS")
      .map((route) => ({ pattern: patternToRegExp(route.path), method: route.method }));
    const methods = new Set<string>();
    for (const route of compiled) if (route.pattern.test(path)) methods.add(route.method);
    if (methods.has("GET")) methods.add("HEAD");
    return [...methods].sort();
  };
}

/**
 * The registered route pattern a request would be routed to, for requests an early stage refused
 * before Elysia routed them (IP block, rate limit, request guard, CSRF): their metrics, access-log
 * line and error report carry the route they were aimed at. `null` when no route matches the
 * method and path (they stay `<unmatched>`). Built once, the first time it is asked; asked only
 * for requests Elysia did not route.
 */
export function routePatternIndex(routes: () => readonly RouteEntry[]) {
  let compiled: { pattern: RegExp; method: string; path: string }[] | null = null;
  return function routePatternOf(method: string, path: string): string | null {
    compiled ??= routes()
      .filter((route) => route.method !== "WS")
      .map((route) => ({
        pattern: patternToRegExp(route.path),
        method: route.method,
        path: route.path,
      }))
      // As Elysia's router prefers them: static paths, then parameters, then wildcards.
      .sort((a, b) => rank(a.path) - rank(b.path));
    // Elysia answers HEAD with the GET handler when no HEAD route is registered.
    let headFallback: string | null = null;
    for (const route of compiled) {
      if (!route.pattern.test(path)) continue;
      if (route.method === method || route.method === "ALL") return route.path;
      if (method === "HEAD" && route.method === "GET") headFallback ??= route.path;
    }
    return headFallback;
  };
}

function rank(path: string): number {
  return path.includes("*") ? 2 : path.includes(":") ? 1 : 0;
}
