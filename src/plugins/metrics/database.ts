/**
 * @module
 * `db_query_duration_seconds{operation,table}`: the statement timings the connection collects from
 * the moment it is opened (db/timing), rendered on this app's registry. Several apps on one
 * connection (tests) each render the same connection's figures.
 */
import type { Database } from "bun:sqlite";
import type { Registry } from "prom-client";
import { QUERY_DURATION_BUCKETS, queryTimingsOf } from "../../db/timing";
import { registerHistogram } from "./collector";
import { METRIC } from "./names";

/** Registers the histogram; a connection not opened by openDatabase has no timings and none. */
export function registerQueryDurations(registry: Registry, sqlite: Database): void {
  const timings = queryTimingsOf(sqlite);
  if (timings === null) return;
  registerHistogram(registry, {
    name: METRIC.dbQueryDuration,
    help: "Time one SQL statement took, by operation and the table it names",
    bounds: QUERY_DURATION_BUCKETS,
    series: () => timings.series(),
  });
}
