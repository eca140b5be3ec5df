/**
 * @module
 * Responses built from one prebuilt header set.
 *
 * Every response carries the same nine or ten fixed headers (the security headers, `Vary: Origin`)
 * and a handful that differ per request (request id, rate-limit headers, CORS for an allowed
 * origin, cookies). Elysia turns the plain `set.headers` object into the response's headers one
 * property at a time; with sixteen headers that cost more than the rest of a small JSON answer
 * (measured in process: 6–7 µs against 3–4 µs for copying a prebuilt `Headers` and setting the
 * per-request ones; over HTTP bare Elysia drops from 1.0× to 0.61× with them as an object, to 0.81×
 * from a prebuilt set). So the fixed headers never go into `set.headers`: the response is built
 * on the prebuilt set, then what the request set is laid over it (it wins, as it did when the fixed
 * headers were copied in first).
 *
 * A Response copies the Headers it is given into its own. So `respond` hands it the prebuilt set
 * and lays the request's headers over the response's own copy: one copy a response, where copying
 * the set first made two (measured in process: 3.8 → 3.3 µs a JSON answer).
 */

type SetHeaders = Record<string, unknown>;

export interface ResponseHeaders {
  /** The fixed headers a response for `route` carries. */
  fixedFor(route: string): Readonly<Record<string, string>>;
  /**
   * The answer for `route`: `body` as JSON (or as text when it is a string, or none when null), with
   * the fixed headers for `route` and `set` laid over them.
   */
  respond(route: string, set: SetHeaders, body: unknown, status: number): Response;
  /**
   * Copies the fixed headers for `route` into `set` under what is already there: for the answers
   * Elysia builds itself from `set.headers` (streams, files, a handler's own Response).
   */
  fill(route: string, set: SetHeaders): void;
}

/** At most this many prebuilt sets with steady values; past it those values are set per answer. */
export const MAX_STEADY_SETS = 256;

export function createResponseHeaders(options: {
  fixed: Readonly<Record<string, string>>;
  /** Routes (as matched, not as spelt) whose fixed headers differ (the HTML docs page), and theirs. */
  byRoute?: ReadonlyMap<string, Readonly<Record<string, string>>>;
  /**
   * Two headers a stage sets on every answer whose values repeat from one answer of a route to the
   * next (the rate-limit policy and its limit): each pair of values seen is kept in a prebuilt set
   * of its own, so an answer copies them with the fixed headers instead of setting each: on
   * `/bench` 0.4–0.6 µs a request less in three sets of interleaved rounds (of ~20; at the edge of
   * this machine's noise), where the five rate-limit headers together cost ~3 µs over HTTP.
   */
  steady?: readonly [string, string];
}): ResponseHeaders {
  const { fixed, steady } = options;
  const byRoute = options.byRoute ?? new Map<string, Readonly<Record<string, string>>>();
  const prebuilt = new Headers(fixed);
  const prebuiltByRoute = new Map([...byRoute].map(([route, set]) => [route, new Headers(set)]));
  const steadySets = new Map<string, Headers>();
  const firstName = steady?.[0];
  const secondName = steady?.[1];

  /**
   * The prebuilt set for `route` with the steady values `set` carries, or undefined when there is
   * none (no such values, or the cap reached): then they are set on the answer like the others.
   */
  const steadySetFor = (route: string, set: SetHeaders): Headers | undefined => {
    if (firstName === undefined || secondName === undefined) return undefined;
    const first = set[firstName];
    const second = set[secondName];
    if (typeof first !== "string" || typeof second !== "string") return undefined;
    const key = `${route}\u0000${first}\u0000${second}`;
    let withSteady = steadySets.get(key);
    if (withSteady === undefined) {
      if (steadySets.size >= MAX_STEADY_SETS) return undefined;
      withSteady = new Headers(prebuiltByRoute.get(route) ?? prebuilt);
      withSteady.set(firstName, first);
      withSteady.set(secondName, second);
      steadySets.set(key, withSteady);
    }
    return withSteady;
  };

  return {
    fixedFor: (route) => byRoute.get(route) ?? fixed,
    respond(route, set, body, status) {
      const steadySet = steadySetFor(route, set);
      const init = { status, headers: steadySet ?? prebuiltByRoute.get(route) ?? prebuilt };
      const response =
        body === null
          ? new Response(null, init)
          : typeof body === "string"
            ? new Response(body, init)
            : Response.json(body, init);
      // Only once the answer exists: an answer that cannot be built (a body JSON cannot hold)
      // leaves `set` whole for the error answer that replaces it.
      if (steadySet !== undefined) {
        set[firstName!] = undefined;
        set[secondName!] = undefined;
      }
      layOver(response.headers, set);
      return response;
    },
    fill(route, set) {
      const own = byRoute.get(route) ?? fixed;
      for (const name in own) if (!(name in set)) set[name] = own[name];
    },
  };
}

function layOver(headers: Headers, set: SetHeaders): void {
  for (const name in set) {
    const value = set[name];
    if (value === undefined || value === null) continue;
    if (Array.isArray(value)) {
      // Several Set-Cookie lines: each its own header line, as Elysia sends them.
      headers.delete(name);
      for (const item of value) headers.append(name, String(item));
    } else headers.set(name, String(value));
  }
}
