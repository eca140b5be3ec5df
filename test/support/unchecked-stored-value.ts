/**
 * A route that answers with a value as the database file holds it, unchecked: what no route of
 * the app does any more (probe 46b F1), kept for the tests of what an answer failing its own
 * schema gives (a 500 logged and reported with its field paths, never a 422, never its values).
 */
import type { Database } from "bun:sqlite";
import { Elysia, t } from "elysia";
import type { Feature } from "../../src/modules/feature";
import { Nullable } from "../../src/plugins/openapi/types";

export const UNCHECKED_ROUTE = "/test/unchecked-keys";

/** The feature serving it; `database` is read per request (the app's is made after the feature). */
export const uncheckedStoredValue = (database: () => Database): Feature => ({
  name: "unchecked-stored-value",
  routeClasses: [{ routes: [`GET ${UNCHECKED_ROUTE}`] }],
  routes: ({ auth }) =>
    new Elysia().use(auth).get(
      UNCHECKED_ROUTE,
      () => ({
        keys: database()
          .query<{ id: string; name: string; lastUsedAt: number | null }, []>(
            "SELECT id, name, last_used_at AS lastUsedAt FROM api_keys ORDER BY id",
          )
          .all(),
      }),
      {
        auth: { role: "admin" },
        response: {
          200: t.Object({
            keys: t.Array(
              t.Object({ id: t.String(), name: t.String(), lastUsedAt: Nullable(t.Number()) }),
            ),
          }),
        },
      },
    ),
});
