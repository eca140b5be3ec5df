/**
 * The service started again on an existing database file with another environment: what a restart
 * (or another process with other settings) sees. Migrations run as at start; close() closes this
 * start's services and connection, never the file.
 */

import { createApp } from "../../src/app";
import type { Clock } from "../../src/clock";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { takeReadingsMark } from "../../src/db/readings-mark";
import { createLogger } from "../../src/logging/logger";
import { READING_VERSION } from "../../src/modules/auth/readings";
import { createServices } from "../../src/services";
import { LogCapture, NO_READINGS_QUIET, TEST_PASSWORD_HASHING, testConfig } from "./app";

export function startOn(
  databasePath: string,
  env: Record<string, string | undefined> = {},
  clock?: Clock,
) {
  const config = testConfig(databasePath, env);
  const logs = new LogCapture();
  const logger = createLogger({
    level: "info",
    secretValues: config.secretValues,
    destination: logs,
  });
  const db = openDatabase(databasePath);
  applyMigrations(db);
  let services: ReturnType<typeof createServices>;
  try {
    services = createServices({
      config,
      db,
      logger,
      clock,
      passwordHashing: TEST_PASSWORD_HASHING,
      maintenanceIntervalMs: 0,
      readingsQuiet: NO_READINGS_QUIET,
    });
  } catch (error) {
    db.$client.close();
    throw error;
  }
  // As a start does once it is over (src/index.ts), with no quiet time waited for a release before
  // the mark: a few readings are written at once.
  services.auth.keepReadings({ atStart: true });
  const app = createApp({ ...services, peerAddress: () => "10.3.3.3", accessLogBuffered: false });
  return {
    app,
    services,
    db,
    logs,
    close() {
      services.close();
      db.$client.close();
    },
  };
}
