/**
 * @module
 * Start: config → database → migrations → app → listen → API_KEYS applied. SIGTERM, SIGINT and SIGHUP drain in-flight
 * requests, then close the database. A configuration or database that cannot work stops the start
 * with one line naming the cause and exit code 2.
 */
import { existsSync, readFileSync } from "node:fs";
import { createApp } from "./app";
import { terminalSafe } from "./cli/terminal";
import { ConfigError, databasePathOf, loadConfig } from "./config";
import { leftoverDevelopmentKey } from "./config/development-key";
import { executableEnvironment } from "./config/parse";
import { looseSecretFileMessage } from "./config/secret-file-modes";
import { isDatabaseBusy, REQUEST_BUSY_TIMEOUT_MS, setBusyTimeout } from "./db/busy";
import {
  BUSY_TIMEOUT_MS,
  DatabaseOpenError,
  databaseFileMode,
  openDatabase,
  refuseForeignDatabase,
} from "./db/client";
import {
  type DroppedTrigger,
  dropForeignTriggers,
  droppedTriggerEvents,
  reportDroppedTriggers,
} from "./db/foreign-triggers";
import { applyMigrations, type MigrationStatus, migrationsFailed } from "./db/migrate";
import {
  assertSchemaUnchanged,
  createSchemaGuard,
  SchemaChangedError,
  schemaChangedMessage,
} from "./db/schema-guard";
import { recordServedProfile } from "./db/served-profile";
import { namedFirstLine } from "./error-line";
import { createLogger } from "./logging/logger";
import { READING_VERSION } from "./modules/auth/readings";
import { AuditKeys } from "./plugins/audit/chain";
import { refuseKeyBesideKeyedLog } from "./plugins/audit/key-file-look";
import { assertAuditKeyMatchesBeforeMigrating, NEW_LOG_KEYED } from "./plugins/audit/key-match";
import {
  listenForMetrics,
  type MetricsListener,
  MetricsPortUnavailable,
} from "./plugins/metrics/listener";
import { watchScriptRunner } from "./script-runner";
import { PortUnavailable, startServer } from "./server";
import { createServices } from "./services";
import { stopSignals } from "./stop-signals";
import {
  pinNewAuditLog,
  recordBeforeRefusing,
  unrecordedSealings,
  upgradeSealing,
} from "./upgrade-sealing";

const EXIT_BAD_CONFIG = 2;

function fail(message: string): never {
  // One line whatever it quotes (a path or a value as the operator gave it): its controls and the
  // characters that break or reorder a line spelt out.
  process.stderr.write(`palisade: ${terminalSafe(message)}\n`);
  process.exit(EXIT_BAD_CONFIG);
}

/** Defined (true) by `bun run build` in the production executable only (scripts/build.ts). */
declare const PALISADE_EXECUTABLE: boolean | undefined;
// The executable is the production form: a start that names no profile is a production start, so
// one missing its settings refuses (naming what is missing) instead of serving the development
// profile with generated secrets. It reads no `.env` either (scripts/build.ts).
const environment =
  typeof PALISADE_EXECUTABLE !== "undefined" ? executableEnvironment(process.env) : process.env;

// A stop signalled while the service starts is carried out once it listens: killed by the default
// action between its migrations and its first audit write, a first start left the file sealed with
// no record of the sealing, the record that shows a later second sealing for what it is (probe 31a
// F2). Signalled again, the start is not waited for.
let stopSignalledDuringStart: NodeJS.Signals | null = null;
let started = false;
const duringStart = (signal: NodeJS.Signals) => {
  // A signal that waited out a synchronous step may be handed over once the server listens: the
  // server's own handler has it then.
  if (started) return;
  if (stopSignalledDuringStart !== null) {
    process.stderr.write(`palisade: ${signal} again while starting: exiting now\n`);
    process.exit(1);
  }
  stopSignalledDuringStart = signal;
};
for (const signal of stopSignals()) process.on(signal, duringStart);

// The `bun run` this service may have been started by is watched from here (src/script-runner.ts):
// one killed while the service starts (after this first look) is found, and the service stops once
// it listens, as for a stop signalled during the start.
let runnerGone: number | null = null;
let onRunnerGone = (parent: number) => {
  runnerGone = parent;
};
watchScriptRunner({
  env: process.env,
  parentId: () => process.ppid,
  commandLineOf: (pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8");
    } catch {
      return null;
    }
  },
  onGone: (parent) => onRunnerGone(parent),
});

// Before the configuration, which in development makes an audit key beside the file: a file that
// holds another application's tables is refused with nothing written to it or beside it.
try {
  refuseForeignDatabase(databasePathOf(environment));
} catch (error) {
  if (error instanceof DatabaseOpenError) fail(error.message);
  throw error;
}

let config: ReturnType<typeof loadConfig>;
try {
  // No development key made beside a log written with another (probe 93a F3), as the CLI.
  config = loadConfig(environment, { beforeMakingDevelopmentKey: refuseKeyBesideKeyedLog });
} catch (error) {
  if (error instanceof ConfigError) fail(`refusing to start: ${error.message}`);
  throw error;
}

const logger = createLogger({ level: config.logLevel, secretValues: config.secretValues });
for (const { name, suggestion } of config.unknownVariables) {
  logger.warn(
    { variable: name, suggestion },
    `unknown variable ${name}: did you mean ${suggestion}?`,
  );
}

for (const loose of config.looseSecretFiles) {
  logger.warn(
    { variable: loose.variable, [loose.problem]: loose.detail },
    looseSecretFileMessage(loose),
  );
}

if (config.generatedSecrets.length > 0) {
  const names = config.generatedSecrets.join(", ");
  const banner = `WARNING: ${names} not set; generated random development secrets for this run only. Tokens will not survive a restart. Never run like this in production.`;
  process.stderr.write(
    `\n${"!".repeat(banner.length)}\n${banner}\n${"!".repeat(banner.length)}\n\n`,
  );
  logger.warn({ generated: config.generatedSecrets }, "development secrets generated");
}

// The profile is APP_ENV's alone: a deployment that set only NODE_ENV=production (what Node and
// Bun tooling reads) and every secret was served as development, /docs and localhost origins
// included, with nothing said (probe 82a F6).
if (config.appEnvDefaulted) {
  const nodeProduction = environment.NODE_ENV === "production";
  logger.warn(
    { appEnv: config.appEnv, ...(nodeProduction ? { nodeEnv: "production" } : {}) },
    nodeProduction
      ? "APP_ENV is not set: serving the development profile although NODE_ENV=production; Palisade's profile is APP_ENV's alone: set APP_ENV=production"
      : "APP_ENV is not set: serving the development profile (/docs, localhost origins, development secrets); set APP_ENV=staging or production for a deployment",
  );
}

if (config.audit.developmentKeyFile) {
  logger.warn(
    { file: config.audit.developmentKeyFile },
    "AUDIT_SECRET_KEY not set; using the development audit key kept next to the database",
  );
}

if (config.appEnv !== "development") {
  const leftover = leftoverDevelopmentKey(config.databasePath, config.audit.secretKey);
  if (leftover?.sameKey) {
    logger.warn(
      { file: leftover.file },
      "AUDIT_SECRET_KEY is the development audit key file's beside the database: whoever holds the file or a development backup holds the key; keep the key only in AUDIT_SECRET_KEY and move the file off this host",
    );
  } else if (leftover) {
    logger.warn(
      { file: leftover.file },
      "a development audit key file lies beside the database; it is not AUDIT_SECRET_KEY, and keys only rows written in development: remove it once no copy needs verifying with it",
    );
  }
}

let db: ReturnType<typeof openDatabase>;
const keys = new AuditKeys(config.audit.secretKey);
let migrations: MigrationStatus;
let droppedTriggers: DroppedTrigger[] = [];
// Rows stored before their seals existed are sealed with the migrations that add them.
const sealing = upgradeSealing(config.audit.secretKey);
// A start that makes the database is said: after a first start, it means the file was deleted or
// moved, and the service would otherwise start over empty without a word (probe 83c F3).
const madeNow = config.databasePath !== ":memory:" && !existsSync(config.databasePath);
try {
  db = openDatabase(config.databasePath);
  // Before the migrations, which a trigger in the file would run inside too; said at once.
  droppedTriggers = dropForeignTriggers(db.$client);
  reportDroppedTriggers(droppedTriggers, (fields, message) => logger.error(fields, message), null);
  // Another key is refused before its migrations seal anything with it (probe 63a F3).
  const opened = db.$client;
  migrations = applyMigrations(
    db,
    sealing.companions,
    () => {
      assertAuditKeyMatchesBeforeMigrating(opened, keys);
      sealing.beforeMigrating(opened);
    },
    // A file the schema guard refuses is not migrated, nor sealed (probe 66 F3); what the
    // sealings did is recorded with them (probe 67).
    () => {
      assertSchemaUnchanged(opened);
      sealing.recordInMigration(opened, logger, NEW_LOG_KEYED);
    },
  );
} catch (error) {
  if (error instanceof DatabaseOpenError) fail(error.message);
  if (error instanceof SchemaChangedError) {
    recordBeforeRefusing(db!.$client, keys, logger, droppedTriggerEvents(droppedTriggers));
    fail(`refusing to start: ${schemaChangedMessage(config.databasePath, error.differences, 0)}`);
  }
  if (error instanceof ConfigError) fail(`refusing to start: ${error.message}`);
  fail(migrationsFailed(config.databasePath, error));
}

// A file an earlier release made under the usual umask (0644): every hash and the audit log,
// readable by every local user. Left as the operator set it, but said (new files are 0600).
if (madeNow) {
  logger.warn(
    { file: config.databasePath },
    "no database at DATABASE_PATH: a new empty one was made; on a first start that is expected, otherwise the database was deleted or moved: stop, put it back (or restore a backup) and start again",
  );
}

const databaseMode = databaseFileMode(config.databasePath);
if (databaseMode !== null && (databaseMode & 0o077) !== 0) {
  logger.warn(
    { file: config.databasePath, mode: databaseMode.toString(8).padStart(4, "0") },
    "DATABASE_PATH is readable or writable by other users: chmod 600 it and its -wal and -shm",
  );
}

// Said at once, before anything else can fail: a start that stops later must not have sealed
// rows without a word (the audit event follows once the services exist).
const sealedOnUpgrade = sealing.sealed();
for (const { fields, message } of sealedOnUpgrade) if (message) logger.warn(fields, message);
const resealed = sealing.resealed(sealedOnUpgrade);
for (const again of resealed) logger.error(again.fields, again.message);

// Every table and index as the migrations made them: a table rebuilt with a constraint that
// ignores conflicts would make Palisade's own writes silently do nothing (db/schema-guard).
// Another release's readings' mark is no refusal: this start takes the file once it is over
// (below).
let servedReadings: string | null = null;
/** How long after the start the readings are looked at: a stop signalled during it is handed over. */
const READINGS_TAKEN_AFTER_MS = 100;
const schemaGuard = createSchemaGuard(db.$client, () => servedReadings);
const schemaDifferences = schemaGuard.changes();
if (schemaDifferences.length > 0) {
  recordBeforeRefusing(db.$client, keys, logger, droppedTriggerEvents(droppedTriggers));
  fail(
    `refusing to start: ${schemaChangedMessage(config.databasePath, schemaDifferences, migrations.fromNewerReleases)}`,
  );
}

const newerMigrations = migrations.fromNewerReleases;
if (newerMigrations > 0) {
  logger.warn(
    { newerMigrations },
    `the database was migrated by a newer release: ${newerMigrations} of its migrations are unknown to this one, whose writes its schema may refuse`,
  );
}

// A new log's first row is this start's key, before anything its services write (its migrations
// wrote it when they ran now).
try {
  pinNewAuditLog(db.$client, keys, logger, NEW_LOG_KEYED);
} catch (error) {
  fail(`refusing to start: ${config.databasePath}: ${namedFirstLine(error)}`);
}

let services: ReturnType<typeof createServices>;
try {
  // The unknown-email login's dummy argon2id hash is started once listening (below), not while the
  // start still needs the CPU: on one core it made the first /health ~75 ms later.
  services = createServices({
    config,
    db,
    logger,
    prepareLogin: false,
    // Until the readings are looked at, once the start is over (below; probe 95e F1).
    registrationsAfterReadings: true,
    // API_KEYS is checked now and applied once the ports are bound (below): a start refused for a
    // port taken revoked the running processes' bootstrap keys for good (probe 89c F1).
    deferBootstrapKeys: true,
    schemaGuard,
    migratedNow: migrations.appliedNow,
    // A schema changed while running stops the service, exit 2: the next start refuses the file.
    onSchemaChanged: () => {
      process.exitCode = 2;
      process.kill(process.pid, "SIGTERM");
    },
    // Beside this file in the source, and where the executable holds it (scripts/build.ts).
    checkpointWorkerUrl: new URL("./db/checkpoint-worker.ts", import.meta.url),
  });
} catch (error) {
  // API_KEYS checked against the stored keys (a key already made through the API, a prefix clash).
  if (error instanceof ConfigError) fail(`refusing to start: ${error.message}`);
  // Anything else the file refused while the services started (API_KEYS applied, an id sequence
  // written into the file) in one line too, never a source listing (probe 58c F2).
  fail(`refusing to start: ${config.databasePath}: ${namedFirstLine(error)}`);
}
for (const event of droppedTriggerEvents(droppedTriggers)) services.audit.record(event);
if (sealing.recordedInMigration()) {
  services.audit.countWritten([...sealedOnUpgrade, ...resealed].map(({ event }) => event));
} else {
  for (const sealed of [...sealedOnUpgrade, ...resealed]) services.audit.record(sealed.event);
}
const late = unrecordedSealings(db.$client, migrations.appliedTags, sealedOnUpgrade);
if (late.message !== null) logger.warn({ migrations: late.events.length }, late.message);
for (const event of late.events) services.audit.record(event);
// A Redis that may evict the limiter's keys refuses a production start (plugins/rate-limit/redis-start).
const startRefused = await services.start();
if (startRefused !== null) fail(`refusing to start: ${startRefused}`);
// Serving: a statement waits for another process's write lock briefly, never seconds (db/busy).
setBusyTimeout(db.$client, REQUEST_BUSY_TIMEOUT_MS);
const app = createApp(services);
// Before the main port: a process that cannot take a metrics port of its own must not serve.
let metricsListener: MetricsListener | null = null;
if (config.metricsListener) {
  try {
    metricsListener = listenForMetrics({
      handle: app.handle,
      ...config.metricsListener,
      logger,
      hsts: config.requireTls,
    });
  } catch (error) {
    if (error instanceof MetricsPortUnavailable) fail(`refusing to start: ${error.message}`);
    throw error;
  }
}
let running: ReturnType<typeof startServer>;
try {
  running = startServer({
    app,
    config,
    logger,
    // API_KEYS applied once the port is bound, before any request is answered or the start said
    // (probe 89c F1), waiting out another connection's lock as a start does.
    onBound: () => {
      setBusyTimeout(db.$client, BUSY_TIMEOUT_MS);
      try {
        services.applyBootstrapKeys();
      } catch (error) {
        // Another process's key made meanwhile (checked above): refused as before the listen.
        if (error instanceof ConfigError) fail(`refusing to start: ${error.message}`);
        fail(`refusing to start: ${config.databasePath}: ${namedFirstLine(error)}`);
      }
      // For the operator commands run without APP_ENV (db/served-profile.ts); a lock held past the
      // wait leaves the last start's, said.
      try {
        recordServedProfile(db.$client, config.appEnv, services.clock.now());
      } catch (error) {
        logger.warn(
          { err: error },
          "the profile this start serves could not be recorded in the database; operator commands run without APP_ENV read the last one recorded",
        );
      }
      setBusyTimeout(db.$client, REQUEST_BUSY_TIMEOUT_MS);
    },
    onDrainTimeout: () => services.endInFlight(),
    onForcedExit: () => services.reportUndone("the stop was signalled again"),
    onClosed: async () => {
      await metricsListener?.stop();
      // Background work first (a WhatsApp reply in flight is sent and marked), then the reports
      // still queued leave (at most 2 s), then the database.
      await services.stop();
      await services.flush();
      services.close();
      db.$client.close();
    },
  });
} catch (error) {
  if (error instanceof PortUnavailable) fail(`refusing to start: ${error.message}`);
  throw error;
}
// The server handles the signals from here on.
started = true;
onRunnerGone = (parent) => {
  logger.warn(
    { parent },
    "the `bun run` that started this service has exited without stopping it (killed): stopping, as on SIGTERM",
  );
  void running.shutdown("script runner gone");
};
if (runnerGone !== null) onRunnerGone(runnerGone);
if (stopSignalledDuringStart !== null) {
  logger.warn(
    { signal: stopSignalledDuringStart },
    "stop signalled during the start: stopping now that it has started",
  );
  void running.shutdown(stopSignalledDuringStart);
}
// Every login, and /ready's logins check, waits for it (a login arriving first starts it itself).
void services.auth.prepared();
// The accounts' readings of another version are written again, taking the file from a release that
// reads addresses otherwise, whose processes stop (modules/auth/readings-upkeep.ts): once the start
// is over and a stop asked for during it has been handed over, and only if none was. Taken before
// the port was bound, a start refused for it had stopped the running service and served nothing
// (probe 95a F2); taken in the start, a start signalled to stop did the same (95b F2).
// Tried with a serving request's wait for the lock, again a second later while another connection
// holds it: waiting out the start's 5 s on the event loop held every request, and failed the start.
let readingsLockedSaid = false;
const keepReadingsOnceStarted = () => {
  if (running.stopping()) {
    services.auth.readingsNotLookedAtStart();
    return;
  }
  try {
    services.auth.keepReadings({ atStart: true });
    servedReadings = READING_VERSION;
  } catch (error) {
    if (isDatabaseBusy(error)) {
      if (!readingsLockedSaid) {
        readingsLockedSaid = true;
        logger.warn(
          {},
          "the accounts' readings could not be looked at: the database is locked; trying again every second (registrations wait meanwhile if the file is another release's)",
        );
      }
      setTimeout(keepReadingsOnceStarted, 1_000);
      return;
    }
    logger.error(
      { err: error },
      "the accounts' readings could not be kept of this release's version (the file could not be taken for them): stopping",
    );
    process.exitCode = 2;
    void running.shutdown("readings not kept");
  }
};
setTimeout(keepReadingsOnceStarted, READINGS_TAKEN_AFTER_MS);
// The executable starts with JavaScriptCore's tier-up thresholds raised (scripts/build.ts): the
// start's run-once loops stay in the interpreter instead of being compiled by the optimising JIT,
// whose code and memory the service would keep for nothing. Serving, code is compiled as usual.
Bun.unsafe.setJITPolicy(1);
