/**
 * @module
 * The services the in-process figures run on: the development profile with the bench's secrets
 * (and the figure's own settings over it), a migrated database file, a logger whose lines go
 * nowhere, and no maintenance timer.
 */
import { openSync } from "node:fs";
import { loadConfig } from "../src/config";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import { fdDestination } from "../src/logging/fd-destination";
import { createLogger } from "../src/logging/logger";
import { createServices, type ServiceOptions } from "../src/services";
import { BENCH_CSRF_SECRET, BENCH_JWT_SECRET } from "./servers/payload";

export interface BenchServicesOptions {
  databasePath: string;
  /** Settings over the development profile (raised limits, a provider's secret…). */
  env?: Record<string, string>;
  level?: "info" | "error";
  /**
   * `fd`: written to /dev/null, a real file descriptor as production writes to stdout, for the
   * figures that include the access log's cost; `dropped`: a destination that drops each line.
   */
  logs?: "fd" | "dropped";
  /** Service options beyond the defaults (the WhatsApp feature's chat, …). */
  options?: Partial<ServiceOptions>;
}

export function benchServices({
  databasePath,
  env = {},
  level = "error",
  logs = "dropped",
  options = {},
}: BenchServicesOptions) {
  const config = loadConfig({
    APP_ENV: "development",
    LOG_LEVEL: level,
    JWT_SECRET_KEY: BENCH_JWT_SECRET,
    CSRF_SECRET_KEY: BENCH_CSRF_SECRET,
    DATABASE_PATH: databasePath,
    ...env,
  });
  const db = openDatabase(config.databasePath);
  applyMigrations(db);
  const logger = createLogger({
    level,
    secretValues: config.secretValues,
    destination: logs === "fd" ? fdDestination(openSync("/dev/null", "a")) : { write: () => {} },
  });
  const services = createServices({ config, db, logger, maintenanceIntervalMs: 0, ...options });
  return {
    config,
    db,
    logger,
    services,
    close() {
      services.close();
      db.$client.close();
    },
  };
}
