/**
 * @module
 * Something derived from each registered route's declaration (its body schema, its query schema),
 * looked up by method and matched route. The table is built at the first lookup, not when the
 * plugin is made: the routes register after the plugins that read them.
 */

/** A registered route as these lookups read it. */
export interface RegisteredRoute {
  method: string;
  path: string;
}

export function routeLookup<Entry extends RegisteredRoute, T>(
  routes: () => readonly Entry[],
  derive: (entry: Entry) => T | undefined,
): (method: string, route: string) => T | undefined {
  // By method, then route: no key is built per lookup.
  let table: Map<string, Map<string, T>> | null = null;
  return (method, route) => {
    if (table === null) {
      table = new Map();
      for (const entry of routes()) {
        const derived = derive(entry);
        if (derived === undefined) continue;
        let byRoute = table.get(entry.method);
        if (byRoute === undefined) {
          byRoute = new Map();
          table.set(entry.method, byRoute);
        }
        byRoute.set(entry.path, derived);
      }
    }
    return table.get(method)?.get(route);
  };
}
