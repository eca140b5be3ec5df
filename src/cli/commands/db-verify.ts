/**
 * @module
 * `db:verify`: a database file checked whole, as after a restore: SQLite's own `integrity_check`,
 * its migrations and schema, the audit chain (against a logged anchor when one is given, as
 * `audit:verify`), and every sealed row (seal-sweep.ts). The service refuses a tampered row only
 * when it uses it; this names every one at once, so a planted change shows before the file is put
 * back into service. The file is opened read-only and never migrated: the migrations that add a
 * seal seal what the file holds, so a verifier that migrated an older-shaped file would vouch for
 * rows planted in it (probe 31a F1).
 */
import { type Database, SQLiteError } from "bun:sqlite";
import { type AppDatabase, BUSY_TIMEOUT_MS, DatabaseOpenError } from "../../db/client";
import { atRest, fileIdentity, openForALook } from "../../db/file-look";
import { listTriggers } from "../../db/foreign-triggers";
import { type MigrationStatus, migrationStatus } from "../../db/migrate";
import { MIGRATION_TAG_BY_MILLIS } from "../../db/migrations";
import { expectedSchema, schemaDifferences } from "../../db/schema-guard";
import { firstLine } from "../../error-line";
import { checkReadings, READING_VERSION } from "../../modules/auth/readings";
import { AuditKeys } from "../../plugins/audit/chain";
import { type AuditHead, verifyAuditChain } from "../../plugins/audit/log";
import { describeFailure } from "../../plugins/audit/verify";
import { type SealFinding, type SealSweep, SWEPT_TABLES, sweepSeals } from "../../seal-sweep";
import { CliError, type Command, type CommandContext, EXIT_USAGE } from "../command";
import { checkDatabaseFile } from "../database-file";
import { shownAddress, shownId } from "../shown";
import { parseAnchor } from "./audit";

export const dbVerify: Command = {
  name: "db:verify",
  // Opened read-only by the command itself: a verifier that migrated the file would seal, as they
  // stand, the rows of a file put back into an older shape, then pass them (probe 31a F1).
  database: "none",
  summary:
    "Check DATABASE_PATH whole, read-only (integrity_check, its migrations and schema, the audit chain, every sealed row: accounts, keys, sessions, chat, payments, WhatsApp replies, blocks; accounts' readings, and accounts whose addresses read alike); names each row that fails; exits 1 on any fault, 75 when the file changed during the check",
  usage: "db:verify [--head HASH --count N]",
  run(args, context) {
    const anchor = parseAnchor(args.flags.head, args.flags.count);
    const config = context.config();
    const path = config.databasePath;
    if (path === ":memory:") {
      throw new CliError("DATABASE_PATH is :memory:, there is no file to verify", EXIT_USAGE);
    }
    checkDatabaseFile(path, "db:verify");
    if (config.audit.developmentKeyFile && !config.audit.developmentKeyOnDisk) {
      throw new CliError(
        `no audit key beside the file (${config.audit.developmentKeyFile}): copy there the key it was written with (a backup's PATH.audit-key), or set AUDIT_SECRET_KEY`,
      );
    }
    let sqlite: Database;
    // Read as it is, leaving nothing beside it: a file at rest (no -wal) is opened immutable,
    // which makes no -shm or -wal (probe 31c F1), and takes no lock: a writer that came meanwhile
    // would change pages under the check (probe 31d F1), so the file is compared after it.
    const immutable = atRest(path);
    const before = immutable ? fileIdentity(path) : null;
    try {
      sqlite = openForALook(path);
    } catch (error) {
      throw new DatabaseOpenError(path, `cannot be opened: ${firstLine(error)}`);
    }
    try {
      sqlite.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // One read transaction: with a writer running, every step reads the same snapshot.
      sqlite.run("BEGIN");
      let outcome: { verdict: number } | { error: unknown };
      try {
        outcome = { verdict: verifyFile(sqlite, config.audit.secretKey, anchor, context) };
      } catch (error) {
        outcome = { error };
      } finally {
        sqlite.run("COMMIT");
      }
      // Whatever was read from a file that changed under an unlocked read (a fault, an error, or
      // a pass) says nothing of it.
      if (before !== null && fileIdentity(path) !== before) {
        throw new CliError(
          `DATABASE_PATH ${path} changed while it was checked (a process wrote to it), so no verdict is given and the lines above say nothing of it: stop what writes to it, or verify a db:backup copy`,
          EXIT_NO_VERDICT,
        );
      }
      if ("error" in outcome) throw outcome.error;
      return outcome.verdict;
    } catch (error) {
      if (error instanceof SQLiteError && /READONLY/.test(String(error.code))) {
        // A journal or WAL a writer left mid-write: reading it means recovering it, a write.
        throw new CliError(
          `DATABASE_PATH ${path} needs recovery from a write that was cut short, which a check that writes nothing cannot make: copy it with db:backup and verify the copy`,
        );
      }
      if (error instanceof SQLiteError) {
        throw new CliError(`cannot read DATABASE_PATH ${path}: ${firstLine(error)}`);
      }
      throw error;
    } finally {
      sqlite.close();
    }
  },
};

function verifyFile(
  sqlite: Database,
  auditSecret: string,
  anchor: AuditHead | undefined,
  context: Pick<CommandContext, "out">,
): number {
  const problems = integrityProblems(sqlite);
  // Nothing read from a damaged file can be trusted either way: the first fault ends the check.
  if (problems.length > 0) {
    throw new CliError(`integrity_check failed: ${problems.slice(0, 3).join("; ")}`);
  }
  context.out("integrity ok");
  const faults: string[] = [];
  const shape = shapeFaults(sqlite);
  for (const line of shape.lines) context.out(line);
  if (shape.lines.length === 0)
    context.out(`schema as this release's ${MIGRATION_TAG_BY_MILLIS.size} migrations made it`);
  else faults.push(shape.fault);
  const orphans = foreignKeyProblems(sqlite);
  for (const line of orphans.lines) context.out(line);
  if (orphans.count > 0) {
    faults.push(
      `${orphans.count} ${orphans.count === 1 ? "row names a row" : "rows name rows"} not in the file`,
    );
  }
  const chain = verifyAuditChain(sqlite, new AuditKeys(auditSecret), { anchor });
  if (chain.ok) {
    context.out(
      `audit chain intact: ${chain.checked} rows verified; head ${chain.head.hash} count ${chain.head.count}` +
        (anchor ? `; anchor at row ${anchor.count} confirmed` : ""),
    );
  } else {
    context.out(`audit chain: ${describeFailure(chain)}`);
    faults.push("the audit chain does not verify");
  }
  if (shape.sealsReadable) {
    const sweep = sweepSeals(sqlite, auditSecret);
    for (const line of sweepLines(sweep)) context.out(line);
    if (failedRows(sweep) > 0) faults.push(findingsPhrase(sweep));
    const readings = readingsLines(sqlite);
    for (const line of readings.lines) context.out(line);
    if (readings.fault !== null) faults.push(readings.fault);
  } else {
    context.out("seals not checked: the file is not in this release's shape");
  }
  if (faults.length > 0) throw new CliError(faults.join("; "));
  return 0;
}

/**
 * What of the file's shape is not this release's, a line each: migrations it lacks or does not
 * know, tables and indexes not as the migrations made them, triggers (Palisade makes none; a start
 * drops them). `sealsReadable`: whether every sealed column is where the sweep reads it.
 */
function shapeFaults(sqlite: Database): { lines: string[]; fault: string; sealsReadable: boolean } {
  let status: MigrationStatus;
  try {
    status = migrationStatus({ $client: sqlite } as Pick<AppDatabase, "$client">);
  } catch (error) {
    return {
      lines: [`migrations: ${firstLine(error)}`],
      fault: "its migrations table was edited",
      sealsReadable: false,
    };
  }
  const known = MIGRATION_TAG_BY_MILLIS.size;
  if (status.applied < known) {
    // A start would apply the rest, and the migrations that add a seal seal the rows they cover
    // as they stand: whatever was planted in a file put back into an older shape included.
    return {
      lines: [
        `migrations: at ${status.newestTag ?? "none"}, ${status.applied} of this release's ${known}: a start of this release would migrate it, sealing as they stand the rows its newer migrations seal; verify it with the release that wrote it, or start this release on it only if the file has not been out of your hands`,
      ],
      fault: "the file is not at this release's migrations",
      sealsReadable: false,
    };
  }
  if (status.fromNewerReleases > 0) {
    return {
      lines: [
        `migrations: ${status.fromNewerReleases} from a newer release that this one does not know: verify it with that release`,
      ],
      fault: "the file was migrated by a newer release",
      sealsReadable: false,
    };
  }
  const lines = [
    ...schemaDifferences(sqlite, expectedSchema(), READING_VERSION).map(
      (difference) => `schema: ${difference}`,
    ),
    ...listTriggers(sqlite).map(
      ({ name, table, sql }) =>
        `schema: trigger ${name} on ${table} is not Palisade's (a start drops it): ${sql}`,
    ),
  ];
  return { lines, fault: "its schema is not as the migrations made it", sealsReadable: true };
}

/**
 * The accounts' readings (modules/auth/readings.ts), a line each for an account whose reading is
 * not its address's (a fault: changed in the file, and registration no longer finds its
 * look-alikes) and for each group of accounts whose addresses read alike: no fault of the file,
 * which a release that refused none of them wrote as it should, and two people may hold them, but
 * what an operator checks, since one may pass for the other. A file whose users table cannot be
 * read so (its shape changed: the schema lines say how) is said to be, and the rest of the verdict
 * given (probe 96a F5).
 */
export function readingsLines(sqlite: Database): {
  lines: string[];
  /** The first of `lines`: those that name what is a fault (and how many more were not named). */
  faultLines: number;
  fault: string | null;
  /** The line saying the readings could not be checked, when they could not. */
  notChecked: string | null;
} {
  let found: ReturnType<typeof checkReadings>;
  try {
    found = checkReadings(sqlite);
  } catch (error) {
    const notChecked = `readings: not checked: ${firstLine(error)}`;
    return { lines: [notChecked], faultLines: 0, fault: null, notChecked };
  }
  const { notTheirAddress, lookAlikes, othersNotCompared } = found;
  const lines = notTheirAddress.named.map(
    (account) =>
      `users ${shownId(account.id)}: its reading (look-alike address) is not its address's: changed in the file, and registration no longer finds its look-alikes; clear it (UPDATE users SET reading = NULL WHERE id = that id) and the service writes it again from the address within a minute`,
  );
  if (notTheirAddress.count > lines.length) {
    lines.push(`… and ${notTheirAddress.count - lines.length} more not named`);
  }
  const faultLines = lines.length;
  const named = lookAlikes.slice(0, NAMED_GROUPS).map((group) => {
    const accounts = group.named
      .map((account) => `${shownAddress(account.address)} (${shownId(account.id)})`)
      .join(", ");
    const more =
      group.count > group.named.length ? ` and ${group.count - group.named.length} more` : "";
    return `look-alike accounts: ${accounts}${more} read alike (registered before look-alikes were refused, while two releases served the file, or written into it): not a fault of the file; check one does not pass for the other`;
  });
  lines.push(...named);
  if (lookAlikes.length > named.length) {
    lines.push(
      `… and ${lookAlikes.length - named.length} more groups of look-alike accounts not named`,
    );
  }
  if (othersNotCompared > 0) {
    lines.push(
      `look-alike accounts: ${othersNotCompared} accounts whose readings are another version's were not compared: start this release on the file, which writes them again, and verify it then`,
    );
  } else if (lookAlikes.length === 0) {
    lines.push("no two accounts' addresses read alike");
  }
  const count = notTheirAddress.count;
  return {
    lines,
    faultLines,
    notChecked: null,
    fault:
      count === 0
        ? null
        : count === 1
          ? "1 account's reading is not its address's"
          : `${count} accounts' readings are not their addresses'`,
  };
}

/** Groups of look-alike accounts named one by one; past them, counted. */
const NAMED_GROUPS = 100;

/**
 * The status of a check that gave no verdict because the file changed under it: EX_TEMPFAIL, so a
 * script tells "try again" from a fault (1) (probe 31e F5).
 */
export const EXIT_NO_VERDICT = 75;

/** Rows named one by one; past them, counted. */
const ORPHANS_NAMED = 100;

/**
 * Rows whose foreign key names a row the file does not hold (`PRAGMA foreign_key_check`): written
 * into the file with foreign keys off, as a backup's rows copied in without the rows they belong
 * to (probe 93c F3: an erased user's chat messages, without their conversations, were called
 * intact). Palisade's connections enforce foreign keys, so it writes none. A line each, and the count.
 */
export function foreignKeyProblems(sqlite: Database): { lines: string[]; count: number } {
  const lines: string[] = [];
  let count = 0;
  // Row ids as SQL writes them: one past 2^53 read as a number named another row (probe 93e F5).
  try {
    const rows = sqlite.query<{ table: string; rowid: string | null; parent: string }, []>(
      `SELECT "table", CAST(rowid AS TEXT) AS rowid, parent FROM pragma_foreign_key_check`,
    );
    for (const { table, rowid, parent } of rows.iterate()) {
      count++;
      if (lines.length < ORPHANS_NAMED) {
        lines.push(
          `foreign key: ${table} row ${rowid ?? "NULL"} belongs to a ${parent} row the file does not hold (written into the file)${table === "chat_messages" ? ": no one can read it; users:purge-erased deletes it" : ""}`,
        );
      }
    }
  } catch (error) {
    // A table changed in the file so that a key names no key (the schema lines say which): the
    // rest of the verdict is still given (probe 93e F6: the check stopped db:verify there).
    return { lines: [`foreign keys: not checked: ${firstLine(error)}`], count: 0 };
  }
  if (count > lines.length) lines.push(`… and ${count - lines.length} more not named`);
  return { lines, count };
}

/** `PRAGMA integrity_check`'s complaints; none for a sound file. */
export function integrityProblems(sqlite: Database): string[] {
  const rows = sqlite
    .query<{ integrity_check: string }, []>("PRAGMA integrity_check")
    .all()
    .map((row) => row.integrity_check);
  return rows.length === 1 && rows[0] === "ok" ? [] : rows;
}

export function failedRows(sweep: SealSweep): number {
  return SWEPT_TABLES.reduce((sum, table) => sum + sweep.failed[table], 0);
}

/**
 * The rows a sweep found, in a phrase: those that do not match their seal, and those that hold a
 * time or count Palisade never writes (their seal holds: probe 44a).
 */
export function findingsPhrase(sweep: SealSweep): string {
  const { unreadable, restored } = sweep;
  const unsealed = failedRows(sweep) - unreadable - restored;
  const phrases: string[] = [];
  if (unsealed > 0) {
    phrases.push(
      unsealed === 1
        ? "1 row does not match its seal"
        : `${unsealed} rows do not match their seals`,
    );
  }
  if (unreadable > 0) {
    phrases.push(
      unreadable === 1
        ? "1 row holds a time or count Palisade never writes"
        : `${unreadable} rows hold a time or count Palisade never writes`,
    );
  }
  if (restored > 0) {
    phrases.push(restored === 1 ? `1 row is ${RESTORED}` : `${restored} rows are ${RESTORED}`);
  }
  return phrases.join(", and ");
}

/** What a sweep found, a line each: every row named (up to the sweep's limit), then the counts. */
export function sweepLines(sweep: SealSweep): string[] {
  const failed = failedRows(sweep);
  const checked = SWEPT_TABLES.reduce((sum, table) => sum + sweep.checked[table], 0);
  const counts = SWEPT_TABLES.map((table) => `${table} ${sweep.checked[table]}`).join(", ");
  if (failed === 0) return [`seals intact: ${checked} rows verified (${counts})`];
  const unnamed = failed - sweep.findings.length;
  return [
    ...sweep.findings.map(findingLine),
    ...(unnamed > 0 ? [`… and ${unnamed} more not named`] : []),
    `seals: ${failed - sweep.unreadable - sweep.restored} of ${checked} rows do not match${sweep.unreadable > 0 ? `, ${sweep.unreadable} hold a time or count Palisade never writes` : ""}${sweep.restored > 0 ? `, ${sweep.restored} ${sweep.restored === 1 ? "is" : "are"} ${RESTORED}` : ""} (${SWEPT_TABLES.filter(
      (table) => sweep.failed[table] > 0,
    )
      .map((table) => `${table} ${sweep.failed[table]}`)
      .join(
        ", ",
      )}): written into the file without AUDIT_SECRET_KEY; the service refuses each (see README, Backup and restore)`,
  ];
}

/** What a row of an erased principal is: its seal holds. */
const RESTORED = "of an erased account or key, copied back from before its erasure";

function findingLine({ table, id, part }: SealFinding): string {
  switch (part) {
    case "erased":
      return table === "chat_conversations"
        ? `${table} ${id}: ${RESTORED}, with its messages (the audit log records its owner erased): no one can read it; users:purge-erased deletes it`
        : `${table} ${id}: ${RESTORED} (the audit log records it erased): the service refuses it`;
    case "lineage":
      return `${table} ${id}: its lineage does not match its seal (the key works, but reaches no payments and cannot be rotated)`;
    case "rotation_mark":
      return `${table} ${id}: its rotation mark does not match its seal (the key works, but cannot be rotated)`;
    case "chain":
      return `${table} ${id}: does not follow the message before it in its conversation (a message deleted, moved or put back)`;
    case "times":
      return `${table} ${id}: holds a time that is none (text, a fraction, or out of range): the service reads it as tampered`;
    case "usage":
      return `${table} ${id}: holds a token count that is none: the service shows it as no usage`;
    default:
      return `${table} ${id}: does not match its seal`;
  }
}
