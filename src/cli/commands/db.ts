/**
 * @module
 * Database commands: migrations, and the online backup.
 *
 * `db:backup PATH` copies DATABASE_PATH with `VACUUM INTO`, which reads one consistent snapshot in
 * a read transaction: safe while the service runs and writes (WAL lets the writers go on), and the
 * copy is a plain, compacted database file with no `-wal` to carry along. The copy is written to a
 * temporary file next to PATH, checked (`PRAGMA integrity_check`, then the audit chain with the
 * configured AUDIT_SECRET_KEY, as `audit:verify` does) and only then linked to PATH, which fails
 * if PATH exists: a failed backup leaves nothing behind that looks like a backup, and an existing
 * file is never overwritten. Its seals are then swept and its accounts' readings checked as
 * `db:verify` does: a copy with rows that fail their seals, an account whose reading is not its
 * address's, or readings that cannot be checked (the users table not in this release's shape) is
 * still linked (it is the file as the service holds it) and the command exits 3. In
 * development, where the audit key lives in `DATABASE_PATH.audit-key`, that file is copied to
 * `PATH.audit-key` so the copy verifies on its own.
 */
import { Database, SQLiteError } from "bun:sqlite";
import {
  copyFileSync,
  existsSync,
  linkSync,
  lstatSync,
  readdirSync,
  statSync,
  unlinkSync,
} from "node:fs";
import { constants as osConstants } from "node:os";
import { basename, dirname, join } from "node:path";
import { BUSY_TIMEOUT_MS, createOwnerOnly, DatabaseOpenError, writeRefusal } from "../../db/client";
import { fullFilesystem } from "../../db/disk-space";
import { atRest, fileIdentity, openForALook } from "../../db/file-look";
import { migrationStatus } from "../../db/migrate";
import { MIGRATION_TAG_BY_MILLIS } from "../../db/migrations";
import { firstLine } from "../../error-line";
import { AuditKeys } from "../../plugins/audit/chain";
import { verifyAuditChain } from "../../plugins/audit/log";
import { describeFailure } from "../../plugins/audit/verify";
import { sweepSeals } from "../../seal-sweep";
import { stopSignals } from "../../stop-signals";
import { CliError, type Command, EXIT_USAGE } from "../command";
import {
  failedRows,
  findingsPhrase,
  integrityProblems,
  readingsLines,
  sweepLines,
} from "./db-verify";

export const dbMigrate: Command = {
  name: "db:migrate",
  database: "makes",
  summary: "Apply pending migrations to DATABASE_PATH (the server also does this at start)",
  usage: "db:migrate",
  run(_args, context) {
    const db = context.db();
    // Named by the newest migration's tag: a count of rows would also count a duplicated or
    // foreign row.
    const status = migrationStatus(db);
    context.out(
      `database ${context.config().databasePath} is at migration ${status.newestTag ?? "none"} (${status.applied} of ${MIGRATION_TAG_BY_MILLIS.size})` +
        (status.fromNewerReleases > 0
          ? `, and ${status.fromNewerReleases} from a newer release that this one does not know`
          : ""),
    );
    return 0;
  },
};

/** The files SQLite keeps beside a database, named after it. */
const SQLITE_COMPANION = /-(journal|wal|shm)$/;

/** `db:backup`'s status when the copy is written but holds what `db:verify` faults (seals, readings). */
export const EXIT_WRITTEN_WITH_FINDINGS = 3;

export const dbBackup: Command = {
  name: "db:backup",
  summary:
    "Write a consistent copy of DATABASE_PATH to PATH while the service runs (VACUUM INTO), then check it (integrity_check, audit chain, seals and readings: exit 3 when rows fail their seals or an account's reading is not its address's); never overwrites PATH",
  usage: "db:backup PATH",
  async run(args, context) {
    const [target, extra] = args.positional;
    if (target === undefined || target === "" || extra !== undefined) {
      throw new CliError("expects one PATH to write the backup to", EXIT_USAGE);
    }
    const config = context.config();
    const source = config.databasePath;
    if (source === ":memory:") {
      throw new CliError("DATABASE_PATH is :memory:, there is no file to back up", EXIT_USAGE);
    }
    // A path that names no file was refused before the configuration was read (cli/run.ts).
    const companion = SQLITE_COMPANION.exec(basename(target));
    if (companion !== null) {
      // SQLite takes such a file beside its database for that database's own: a `-journal` for a
      // write cut short (every connection then refused the live file as locked, and the next open
      // deleted the backup), a `-wal` for its log (probe 46c F4).
      throw new CliError(
        `${target} ends in ${companion[0]}, the name SQLite gives the ${companion[1] === "journal" ? "journal" : companion[1] === "wal" ? "write-ahead log" : "shared memory"} it keeps beside a database: choose another name`,
        EXIT_USAGE,
      );
    }
    const keyTarget = `${target}.audit-key`;
    for (const path of [target, ...(config.audit.developmentKeyFile ? [keyTarget] : [])]) {
      // lstat: a symbolic link is there even when what it names is not.
      if (lstatSync(path, { throwIfNoEntry: false }) !== undefined) {
        throw new CliError(`${path} exists; refusing to overwrite it`);
      }
    }
    for (const suffix of ["-wal", "-journal"]) {
      // An earlier file's log left there: SQLite replays it into the copy at its first open, after
      // the copy was checked (probe 47b F1: rows the source never had, or a copy that fails).
      if (lstatSync(`${target}${suffix}`, { throwIfNoEntry: false }) !== undefined) {
        throw new CliError(
          `${target}${suffix} exists, left by an earlier file of that name: SQLite would replay it into the backup; remove it or choose another name`,
        );
      }
    }
    if (!existsSync(dirname(target)) || !statSync(dirname(target)).isDirectory()) {
      throw new CliError(`the directory of ${target} does not exist`);
    }

    for (const name of removeStalePartials(dirname(target))) {
      context.err(`removed ${name}, a partial copy an interrupted backup left`);
    }
    const temporary = join(
      dirname(target),
      `.${basename(target)}.${process.pid}.${Buffer.from(crypto.getRandomValues(new Uint8Array(4))).toString("hex")}${PARTIAL_SUFFIX}`,
    );
    const stop = stopRequests();
    try {
      snapshot(source, temporary);
      await stop.honour();
      const rows = verifyCopy(temporary, config.audit.secretKey);
      await stop.honour();
      try {
        // link() refuses an existing name, so a file created at PATH meanwhile is not replaced.
        linkSync(temporary, target);
      } catch (error) {
        throw new CliError(`cannot write ${target} (${(error as NodeJS.ErrnoException).code})`);
      }
      if (config.audit.developmentKeyFile) {
        try {
          copyFileSync(config.audit.developmentKeyFile, keyTarget, 1 /* COPYFILE_EXCL */);
        } catch (error) {
          // A copy that cannot be verified without its key is not left to look like a backup.
          unlinkSync(target);
          throw new CliError(
            `cannot write ${keyTarget} (${(error as NodeJS.ErrnoException).code}); no backup written`,
          );
        }
      }
      const tampered = failedRows(rows.seals);
      const { readings } = rows;
      context.out(
        `backup written to ${target}: integrity ok, audit chain intact (${rows.checked} rows; head ${rows.head.hash} count ${rows.head.count})` +
          (tampered === 0 ? ", seals intact" : "") +
          (readings.fault === null && readings.notChecked === null ? ", readings intact" : "") +
          (config.audit.developmentKeyFile ? `; development audit key copied to ${keyTarget}` : ""),
      );
      if (tampered === 0 && readings.fault === null && readings.notChecked === null) return 0;
      // Written all the same: it is the file as the service holds it, and the newest copy there
      // is. The exit status is what a cron job or a systemd unit sees.
      if (tampered > 0) {
        for (const line of sweepLines(rows.seals)) context.err(line);
        context.err(
          rows.seals.unreadable === 0 && rows.seals.restored === 0
            ? `the copy holds ${tampered === 1 ? "1 row that does not match its seal" : `${tampered} rows that do not match their seals`}, as DATABASE_PATH does: run db:verify on it`
            : `the copy holds what DATABASE_PATH holds (${findingsPhrase(rows.seals)}): run db:verify on it`,
        );
      }
      if (readings.fault !== null) {
        // Unsealed, so the seal sweep passes them (modules/auth/readings): a reading changed in
        // the file lets that account's look-alikes register until it is written again.
        for (const line of readings.lines.slice(0, readings.faultLines)) context.err(line);
        context.err(`in the copy, as in DATABASE_PATH, ${readings.fault}: run db:verify on it`);
      }
      if (readings.notChecked !== null) {
        // The users table is not as this release made it, which a start refuses: the copy is
        // no backup to restore without a look (probe 97a F1).
        context.err(readings.notChecked);
        context.err(
          "the copy's readings could not be checked, as DATABASE_PATH's cannot: its users table is not in this release's shape; run db:verify on it",
        );
      }
      return EXIT_WRITTEN_WITH_FINDINGS;
    } finally {
      stop.release();
      // With the journal SQLite keeps beside a copy it could not finish (probe 83e F4: a backup
      // into a full directory left `….partial-journal` there, one more each night).
      for (const leftover of [temporary, ...JOURNALS.map((suffix) => `${temporary}${suffix}`)]) {
        try {
          unlinkSync(leftover);
        } catch {}
      }
    }
  },
};

const PARTIAL_SUFFIX = ".partial";
/** What SQLite may leave beside a copy it was writing. */
const JOURNALS = ["-journal", "-wal", "-shm"] as const;
/** `.NAME.PID.HEX.partial`: a copy being written, named by the process writing it; its journal. */
const PARTIAL_NAME = /^\..+\.([1-9]\d{0,6})\.[0-9a-f]{8}\.partial(?:-journal|-wal|-shm)?$/;
/** Linux's `pid_max` at most: process ids are below it, and a name at or past it no backup wrote. */
const PID_LIMIT = 4_194_304;

/**
 * A partial copy this long untouched is no backup in progress: one writes its copy continuously,
 * then checks it (minutes at most, for files far past what one VM serves).
 */
export const STALE_PARTIAL_MS = 60 * 60 * 1000;

/**
 * Removes the partial copies in `directory` that a backup killed outright (SIGKILL, a crash) left:
 * the whole file, hashes and audit log, under a name `ls` hides (probe 31a F4); their names. Only
 * a regular file this user owns, untouched for an hour, whose process is not running here: a
 * process in another PID namespace (a container sharing the directory) looks gone, and its copy
 * in progress was removed under it (probe 31c F2); and a link or another user's file with such a
 * name is not ours to remove.
 */
function removeStalePartials(directory: string, now = Date.now()): string[] {
  const removed: string[] = [];
  const ownUid = process.getuid?.();
  for (const name of readdirSync(directory)) {
    const pid = PARTIAL_NAME.exec(name)?.[1];
    if (pid === undefined || Number(pid) >= PID_LIMIT) continue;
    const path = join(directory, name);
    const entry = lstatSync(path, { throwIfNoEntry: false });
    if (
      entry === undefined ||
      !entry.isFile() ||
      (ownUid !== undefined && entry.uid !== ownUid) ||
      now - entry.mtimeMs < STALE_PARTIAL_MS ||
      processRuns(Number(pid))
    ) {
      continue;
    }
    try {
      unlinkSync(path);
      removed.push(name);
    } catch {}
  }
  return removed;
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it runs, as another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A stop signalled during the backup (systemd's stop or timeout, Ctrl-C) ends it at its next
 * step, its partial copy removed, instead of killing it with the copy left behind. The copy and
 * its checks are synchronous, so the signal is heard between them.
 */
function stopRequests(): { honour(): Promise<void>; release(): void } {
  let stopped: NodeJS.Signals | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    stopped ??= signal;
  };
  // Those the service stops on: a backup started ignoring SIGHUP (`nohup`) or SIGINT keeps on.
  const signals = stopSignals();
  for (const signal of signals) process.on(signal, onSignal);
  return {
    async honour() {
      // A signal that arrived during a synchronous step is handled on the next turn of the loop.
      await new Promise((resolve) => setImmediate(resolve));
      if (stopped !== null) {
        throw new CliError(
          `stopped by ${stopped}; no backup written`,
          128 + (osConstants.signals[stopped] ?? 0),
        );
      }
    },
    release() {
      for (const signal of signals) process.off(signal, onSignal);
    },
  };
}

/**
 * `VACUUM INTO` from a connection of its own (no migrations: the source is copied as it is).
 * A file at rest on read-only storage (neither it nor its directory writable, so SQLite cannot
 * make the `-shm` a WAL file is read through) is read as db:verify reads it: immutable, nothing
 * made beside it, and no lock taken, so a copy of a file that changed meanwhile is not kept
 * (probe 43c F4).
 */
function snapshot(source: string, temporary: string): void {
  const readOnly =
    atRest(source) && (writeRefusal(source) ?? writeRefusal(dirname(source))) !== null;
  const before = readOnly ? fileIdentity(source) : null;
  let sqlite: Database;
  try {
    sqlite = readOnly
      ? openForALook(source)
      : new Database(source, { readwrite: true, create: false, strict: true });
  } catch (error) {
    throw new DatabaseOpenError(source, `cannot be opened: ${firstLine(error)}`);
  }
  try {
    sqlite.run(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // The copy holds every hash and the audit log: readable by its owner only (VACUUM INTO writes
    // into an empty file it is given).
    try {
      createOwnerOnly(temporary);
    } catch (error) {
      throw new CliError(`cannot write ${temporary} (${(error as NodeJS.ErrnoException).code})`);
    }
    sqlite.query("VACUUM INTO ?").run(temporary);
    if (before !== null && fileIdentity(source) !== before) {
      throw new CliError(
        `DATABASE_PATH ${source} changed while it was copied (a process wrote to it); no backup written: try again`,
      );
    }
  } catch (error) {
    if (error instanceof SQLiteError) {
      // The copy is what grows: a full filesystem where it is written is said as that, not as
      // a failure to read the database (probe 83c F7).
      const full = fullFilesystem(String(error.code ?? ""), dirname(temporary));
      if (full !== null) {
        throw new CliError(`cannot write the copy ${temporary}: ${full} (${firstLine(error)})`);
      }
      throw new CliError(`cannot read DATABASE_PATH ${source}: ${firstLine(error)}`);
    }
    throw error;
  } finally {
    sqlite.close();
  }
}

/**
 * integrity_check and the audit chain on the copy, a CliError naming the first fault; then every
 * seal, whose findings are the caller's to say (the copy is still the file as it is).
 */
function verifyCopy(path: string, auditSecret: string) {
  const copy = new Database(path, { readonly: true, strict: true });
  try {
    const problems = integrityProblems(copy);
    if (problems.length > 0) {
      throw new CliError(`the copy failed integrity_check: ${problems.slice(0, 3).join("; ")}`);
    }
    const result = verifyAuditChain(copy, new AuditKeys(auditSecret));
    if (!result.ok) {
      throw new CliError(`the copy's audit chain: ${describeFailure(result)}`);
    }
    return { ...result, seals: sweepSeals(copy, auditSecret), readings: readingsLines(copy) };
  } catch (error) {
    if (error instanceof SQLiteError) {
      throw new CliError(`the copy cannot be checked: ${firstLine(error)}`);
    }
    throw error;
  } finally {
    copy.close();
  }
}
