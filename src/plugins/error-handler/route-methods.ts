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
