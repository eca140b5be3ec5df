/**
 * @module
 * The CLI runner: finds the command, prints help, and turns every expected failure (bad usage, bad
 * configuration, a command's CliError) into one line on stderr and a non-zero exit code.
 */
import { type Config, ConfigError, databasePathOf, loadConfig } from "../config";
import type { Environment } from "../config/env-source";
import { namesProfile } from "../config/parse";
import {
  type AppDatabase,
  DatabaseOpenError,
  openDatabase,
  refuseForeignDatabase,
} from "../db/client";
import {
  dropForeignTriggers,
  droppedTriggerEvents,
  reportDroppedTriggers,
} from "../db/foreign-triggers";
import { applyMigrations, type MigrationStatus, migrationsFailed } from "../db/migrate";
import { otherReadingsMarks } from "../db/readings-mark";
import {
  assertSchemaUnchanged,
  createSchemaGuard,
  SchemaChangedError,
  schemaChangedMessage,
} from "../db/schema-guard";
import { servedProfileOf } from "../db/served-profile";
import { namedFirstLine } from "../error-line";
import { fdDestination } from "../logging/fd-destination";
import { createLogger } from "../logging/logger";
import { READING_VERSION } from "../modules/auth/readings";
import { AuditKeys } from "../plugins/audit/chain";
import { refuseKeyBesideKeyedLog } from "../plugins/audit/key-file-look";
import { assertAuditKeyMatchesBeforeMigrating, holdsKeyedRows } from "../plugins/audit/key-match";
import { createServices, type Services } from "../services";
import { recordBeforeRefusing, upgradeSealing } from "../upgrade-sealing";
import {
  CliError,
  type Command,
  type CommandContext,
  EXIT_USAGE,
  misuseOf,
  optionsOf,
  parseArgs,
} from "./command";
import { checkDatabaseFile } from "./database-file";
import { terminalSafe } from "./terminal";

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  readStdin(): Promise<string>;
}

export function helpText(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "Palisade operator commands",
    "",
    "Usage: bun run cli <command> [options]",
    "       bun run cli <command> --help",
    "",
    "Commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Configuration comes from the same environment as the server (see .env.example).",
  ].join("\n");
}

export async function runCli(
  argv: readonly string[],
  env: Environment,
  rawIo: CliIo,
  commands: readonly Command[],
): Promise<number> {
  const io: CliIo = {
    out: (line) => rawIo.out(terminalSafe(line)),
    err: (line) => rawIo.err(terminalSafe(line)),
    readStdin: rawIo.readStdin,
  };
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    for (const line of helpText(commands).split("\n")) io.out(line);
    return name === undefined ? EXIT_USAGE : 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    io.err(`palisade: unknown command "${name}"; run "bun run cli help" for the list`);
    return EXIT_USAGE;
  }
  const options = optionsOf(command);
  const args = parseArgs(rest, (name) => options.get(name));
  const misuse = misuseOf(command, args, options);
  if (misuse !== null) {
    io.err(`palisade ${command.name}: ${misuse}; usage: bun run cli ${command.usage}`);
    return EXIT_USAGE;
  }
  if (args.flags.help) {
    io.out(`Usage: bun run cli ${command.usage}`);
    io.out("");
    io.out(command.summary);
    return 0;
  }

  let config: Readonly<Config> | null = null;
  let db: AppDatabase | null = null;
  let services: Services | null = null;
  // Before the configuration is read: in development that makes the audit key beside the path.
  /** Checks the file; the deployed profile that served it when none is named here, else null. */
  const requireDatabaseFile = (): string | null => {
    const path = databasePathOf(env);
    const database = command.database ?? "reads";
    if (path === ":memory:" || database === "none") return null;
    if (database === "reads") checkDatabaseFile(path, command.name);
    // One that makes the database: a file that holds another's is refused (exit 1).
    else refuseForeignDatabase(path);
    return judgedAsServed(path);
  };
  // No profile named here, on a file a deployed profile serves: the development profile's rules
  // (an 8-character password, a test-mode key) are not applied to it unsaid (probe 86d F3). A
  // command that makes something is refused; one that reads goes on, said.
  const judgedAsServed = (path: string): string | null => {
    // A file not there (one a command makes) has none: the look finds nothing.
    const served = servedProfileOf(path);
    if (served !== "production" && served !== "staging") return null;
    // Named here, the profile is the operator's choice; the file's audit key still is not made.
    if (namesProfile(env)) return served;
    const said = `DATABASE_PATH ${path} was last served with APP_ENV=${served} and no APP_ENV is set here`;
    if (command.database === "makes") {
      throw new CliError(
        `${said}: ${command.name} would apply the development profile's rules to it; set APP_ENV=${served} (APP_ENV=development applies them anyway, with the service's AUDIT_SECRET_KEY)`,
      );
    }
    io.err(
      `warning: ${said}: ${command.name} reads it with the development profile; set APP_ENV=${served}`,
    );
    return served;
  };
  const context: CommandContext = {
    config: () => {
      // A command that opens no database makes no key file beside a path that may be mistyped;
      // nor does one on a file a deployed profile served, whose log is keyed with
      // AUDIT_SECRET_KEY (probe 92c F4: the key made there failed every later command and start).
      if (config) return config;
      const servedDeployed = requireDatabaseFile();
      const loaded = loadConfig(env, {
        developmentKey:
          command.database === "none" || servedDeployed !== null ? "if there" : "load or make",
        // No key made beside a log written with another (probe 92g F3, 93a F3).
        beforeMakingDevelopmentKey: refuseKeyBesideKeyedLog,
      });
      // Without AUDIT_SECRET_KEY there is no key its log is written with here: read with one made
      // for this run, every row showed as changed in the file (probe 92e F4), and a development
      // key file beside it is none either (92f F2: one made there, or left, did the same).
      if (servedDeployed !== null && loaded.audit.developmentKeyFile !== null) {
        throw new CliError(
          `DATABASE_PATH ${loaded.databasePath} was last served with APP_ENV=${servedDeployed}, whose audit log is keyed with AUDIT_SECRET_KEY, which is not set here: set APP_ENV=${servedDeployed} and the service's secrets`,
        );
      }
      config = loaded;
      return config;
    },
    db: () => {
      if (!db) {
        const path = context.config().databasePath;
        db = openDatabase(path);
        // Any command may be the first to open a file from before seals: it seals, as a start does.
        const secretKey = context.config().audit.secretKey;
        const sealing = upgradeSealing(secretKey);
        // And it drops what a start drops before migrating (db/foreign-triggers.ts).
        const dropped = dropForeignTriggers(db.$client);
        reportDroppedTriggers(
          dropped,
          ({ trigger, table, sql, more }: Record<string, unknown>, message: string) =>
            io.err(more === undefined ? `${message}: ${trigger} on ${table}: ${sql}` : message),
          null,
        );
        // Another key is refused before its migrations seal anything with it (probe 63a F3); a
        // command that migrates nothing (`audit:verify` naming a wrong key) goes on.
        const sqlite = db.$client;
        const keys = new AuditKeys(secretKey);
        // Problems only, on stderr, as the command's services log them.
        const logger = createLogger({ level: "warn", destination: fdDestination(2) });
        const refuse = (differences: readonly string[], newerMigrations: number) => {
          recordBeforeRefusing(sqlite, keys, logger, droppedTriggerEvents(dropped));
          return new CliError(schemaChangedMessage(path, differences, newerMigrations), 1);
        };
        let migrated: MigrationStatus;
        try {
          migrated = applyMigrations(
            db,
            sealing.companions,
            () => {
              assertAuditKeyMatchesBeforeMigrating(sqlite, keys);
              sealing.beforeMigrating(sqlite);
            },
            // A file the schema guard refuses is not migrated, nor sealed (probe 66 F3); what the
            // sealings did is recorded with them (probe 67).
            () => {
              assertSchemaUnchanged(sqlite);
              sealing.recordInMigration(sqlite, logger);
            },
          );
        } catch (error) {
          if (error instanceof ConfigError) throw error;
          if (error instanceof SchemaChangedError) throw refuse(error.differences, 0);
          // One line, as the start says it: a tampered migrations table, or a migration that failed.
          throw new CliError(migrationsFailed(path, error), 1);
        }
        const changedSchema = createSchemaGuard(db.$client).differences();
        if (changedSchema.length > 0) throw refuse(changedSchema, migrated.fromNewerReleases);
        // Another release serves the file by readings of its own (db/readings-mark.ts): a command's
        // registration would not see its accounts' look-alikes. A command never takes a file nor
        // writes readings again (modules/auth/readings-upkeep.ts): a start does.
        const otherReadings = otherReadingsMarks(sqlite, READING_VERSION);
        if (otherReadings.length > 0) {
          throw new CliError(
            `DATABASE_PATH ${path}: its accounts' readings (look-alike addresses) are another release's (reading version ${otherReadings[0]}, this one's ${READING_VERSION}), which may be serving it: run this command with that release, or start this release on the file first`,
            1,
          );
        }
        const sealed = sealing.sealed();
        const resealed = sealing.resealed(sealed);
        for (const { message } of [...sealed, ...resealed]) if (message) io.err(message);
        // Audited as the start audits it, through the same services (the chain's upgrade first),
        // by every command that applied the migration, a reading one too: a sealing that found
        // nothing and was not recorded left a second run of it, on a file put back before it, with
        // no earlier one to be told from (probe 62a F1). But a reading command does not write the
        // first row of a new log (the start pins its key: 63a F4): on a log with no keyed row it
        // records only a sealing that sealed something, as before (an old log that migration
        // 0003 keyed has keyed rows by now). One unkeyed row planted beside keyed ones does not
        // count (63a F1: it kept the first sealing unrecorded).
        if (!sealing.recordedInMigration()) {
          const records = command.database === "makes" || holdsKeyedRows(db.$client);
          for (const { event, message } of [...sealed, ...resealed]) {
            if (message !== null || records) context.services().audit.record(event);
          }
        }
        for (const event of droppedTriggerEvents(dropped)) context.services().audit.record(event);
      }
      return db;
    },
    services: () => {
      services ??= createServices({
        config: context.config(),
        db: context.db(),
        // Operators read the command's own output; only problems go to stderr.
        logger: createLogger({ level: "warn", destination: fdDestination(2) }),
        maintenanceIntervalMs: 0,
        prepareLogin: false,
        // API_KEYS is the start's to apply: a command's environment may not carry it.
        reconcileBootstrapKeys: false,
      });
      return services;
    },
    out: io.out,
    err: io.err,
    readStdin: io.readStdin,
  };
  try {
    return await command.run(args, context);
  } catch (error) {
    if (error instanceof CliError) {
      io.err(`palisade ${command.name}: ${error.message}`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      io.err(`palisade ${command.name}: ${error.message}`);
      return EXIT_USAGE;
    }
    if (error instanceof DatabaseOpenError) {
      io.err(`palisade ${command.name}: ${error.message}`);
      return 1;
    }
    // Anything else (the file locked past the busy timeout, a disk full, a write the file refuses)
    // is one line too, never a stack trace with a source listing (probe 58a F2).
    io.err(`palisade ${command.name}: failed: ${namedFirstLine(error).slice(0, 500)}`);
    return 1;
  } finally {
    (services as Services | null)?.close();
    (db as AppDatabase | null)?.$client.close();
  }
}
