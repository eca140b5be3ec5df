/**
 * @module
 * Statements prepared by their first use, not when the service that owns them is built. Building
 * and preparing a Drizzle statement costs ~0.5–3 ms of CPU the first time (the query builder is
 * still cold at start), and a start built some thirty that neither `/health` nor an idle service
 * runs (chat, payments, webhooks, audit writes, API-key lookups): ~20 ms of every start
 * (issue #13). Each one is prepared once, by the first call that needs it, and is then a plain
 * property: later uses cost what a prepared statement always did.
 */

type Builders<T> = { [K in keyof T]: () => T[K] };

/** An object whose properties are built (once each) on first read, from `builders`. */
export function preparedOnUse<T extends object>(builders: Builders<T>): T {
  const statements = {} as T;
  for (const name of Object.keys(builders) as (keyof T & string)[]) {
    Object.defineProperty(statements, name, {
      configurable: true,
      enumerable: true,
      get() {
        const value = builders[name]();
        // From now on a data property: no getter, no check, on every later use.
        Object.defineProperty(statements, name, { value, enumerable: true });
        return value;
      },
    });
  }
  return statements;
}
