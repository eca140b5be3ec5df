/**
 * @module
 * The database's metrics. `db_query_duration_seconds{operation,table}`: the statement timings the
 * connection collects from the moment it is opened (db/timing), rendered on this app's registry
 * (several apps on one connection, in tests, each render the same connection's figures). The WAL's
 * size and the WAL guard's TRUNCATE checkpoints (registerWalMetrics).
 */
import type { Database } from "bun:sqlite";
import { QUERY_DURATION_BUCKETS, queryTimingsOf } from "../../db/timing";
import { TRUNCATE_OUTCOMES, type TruncateOutcome, walFileBytes } from "../../db/wal-guard";
import { registerHistogram } from "./collector";
import { METRIC } from "./names";
import { Counter, everyCombination, Gauge, type Registry, startAtZero } from "./prom";

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

/**
 * `db_wal_size_bytes`, the `-wal` file's size read at each scrape (every process on the file
 * reports the same), and `db_wal_truncate_checkpoints_total{outcome}`, the WAL guard's TRUNCATE
 * checkpoints (db/wal-guard): `busy` ones rising while the size grows say a long transaction on the
 * file holds the WAL. Returns what counts the latter.
 */
export function registerWalMetrics(
  registry: Registry,
  sqlite: Database,
): (outcome: TruncateOutcome) => void {
  new Gauge({
    name: METRIC.dbWalSize,
    help: "Size of the database's -wal file in bytes (0: none)",
    registers: [registry],
    collect() {
      this.set(walFileBytes(sqlite));
    },
  });
  const checkpoints = new Counter({
    name: METRIC.dbWalTruncateCheckpoints,
    help: "TRUNCATE checkpoints of a WAL past WAL_TRUNCATE_MB, by outcome (truncated, busy)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  startAtZero(checkpoints, everyCombination({ outcome: TRUNCATE_OUTCOMES }));
  return (outcome) => checkpoints.inc({ outcome });
}
