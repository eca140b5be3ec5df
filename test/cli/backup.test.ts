import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { buildTestApp, tempDir } from "../support/app";
import { createKey } from "../support/auth";
import { cliInProcess } from "../support/cli";
import { REPO_ROOT, runToExit, type ServiceProcess, startService } from "../support/process";

const cli = cliInProcess;

const count = (path: string, sql: string): number => {
  const db = new Database(path, { readonly: true });
  try {
    return Number(db.query(sql).values()[0]![0]);
  } finally {
    db.close();
  }
};

let cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step();
  cleanup = [];
});

function workDir() {
  const dir = tempDir("palisade-backup-");
  cleanup.push(dir.remove);
  return dir.path;
}

describe("db:backup", () => {
  test("copies the database while the service keeps writing; the copy passes integrity_check and audit:verify", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const service: ServiceProcess = await startService({
      DATABASE_PATH: databasePath,
      LOG_LEVEL: "info",
      RATE_LIMIT_REGISTER: "100000",
      RATE_LIMIT_PER_MINUTE: "100000",
      RATE_LIMIT_BURST: "100000",
    });
    cleanup.push(() => service.stop());

    // Registrations write a user row and an audit row each, in the service's own process.
    const total = 16;
    let answered = 0;
    const writes = Promise.all(
      Array.from({ length: total }, async (_, i) => {
        const response = await fetch(new URL("/api/auth/register", service.url), {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ email: `user${i}@example.test`, password: `Correct-Horse-${i}!` }),
        });
        answered++;
        return response.status;
      }),
    );
    // Back up in the middle of the stream of writes.
    const deadline = Date.now() + 15_000;
    while (answered < 3 && Date.now() < deadline) await Bun.sleep(5);
    const before = answered;
    const target = join(dir, "backup.db");
    const backup = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
    const statuses = await writes;

    expect(backup.stderr).toBe("");
    expect(backup.code).toBe(0);
    expect(backup.stdout).toContain(
      `backup written to ${target}: integrity ok, audit chain intact`,
    );
    expect(statuses).toEqual(Array(total).fill(201));
    expect(before).toBeLessThan(total); // the service was still writing when the backup started
    // Every hash and the audit log: the copy, the live file and its WAL are their owner's only,
    // whatever the umask (probe 26f F1).
    const modeOf = (path: string) => statSync(path).mode & 0o777;
    expect(modeOf(target)).toBe(0o600);
    expect(modeOf(databasePath)).toBe(0o600);
    expect(modeOf(`${databasePath}-wal`)).toBe(0o600);

    // The copy holds what was committed when it was taken, and is consistent with itself.
    const users = count(target, "SELECT count(*) FROM users");
    expect(users).toBeGreaterThanOrEqual(before);
    expect(users).toBeLessThanOrEqual(total);
    expect(
      count(target, "SELECT count(*) FROM audit_events WHERE type = 'auth.register.succeeded'"),
    ).toBe(users);
    const copy = new Database(target, { readonly: true });
    expect(copy.query("PRAGMA integrity_check").values()).toEqual([["ok"]]);
    copy.close();
    // Nothing is left next to the backup but the copy and its development key.
    expect(
      readdirSync(dir)
        .filter((name) => name.startsWith("backup"))
        .sort(),
    ).toEqual(["backup.db", "backup.db.audit-key"]);
    expect(readFileSync(`${target}.audit-key`, "utf8")).toBe(
      readFileSync(`${databasePath}.audit-key`, "utf8"),
    );

    const verified = await cli(["audit:verify"], { DATABASE_PATH: target });
    expect(verified.stderr).toBe("");
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^audit chain intact: \d+ rows verified/);
  }, 30_000);

  test("with AUDIT_SECRET_KEY set, the copy verifies under the same key and no key file is written", async () => {
    const dir = workDir();
    const databasePath = join(dir, "prod.db");
    const env = {
      DATABASE_PATH: databasePath,
      AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC",
    };
    // db:migrate starts the chain (the keyed-upgrade event) on a fresh file.
    expect((await cli(["db:migrate"], env)).code).toBe(0);
    expect((await cli(["users:create", "--email", "a@example.test"], env)).code).toBe(0);
    const target = join(dir, "copy.db");
    const backup = await cli(["db:backup", target], env);
    expect(backup.code).toBe(0);
    expect(existsSync(`${target}.audit-key`)).toBe(false);
    expect(count(target, "SELECT count(*) FROM users")).toBe(1);
    expect((await cli(["audit:verify"], { ...env, DATABASE_PATH: target })).code).toBe(0);
    // Under another key the same copy does not verify: the check is real.
    const other = await cli(["audit:verify"], {
      DATABASE_PATH: target,
      AUDIT_SECRET_KEY: "Q1w2E3r4T5y6U7i8O9p0AsDfGhJkLzXc",
    });
    expect(count(target, "SELECT count(*) FROM audit_events")).toBeGreaterThan(0);
    expect(other.code).toBe(1);
  });

  test("a key file name taken by a dangling link refuses the backup in one line and leaves no copy (probe 26g F3)", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    const target = join(dir, "copy.db");
    symlinkSync(join(dir, "nowhere"), `${target}.audit-key`);
    const backup = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
    expect(backup.code).toBe(1);
    expect(backup.stderr).toBe(
      `palisade db:backup: ${target}.audit-key exists; refusing to overwrite it`,
    );
    expect(existsSync(target)).toBe(false);
  });

  test("a database other users can read is said at start, once (probe 26g F4)", async () => {
    const dir = workDir();
    const databasePath = join(dir, "old.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    chmodSync(databasePath, 0o644);
    const service = await startService({ DATABASE_PATH: databasePath, LOG_LEVEL: "info" });
    cleanup.push(() => service.stop());
    const warnings = service
      .stdout()
      .split("\n")
      .filter((line) => line.includes("DATABASE_PATH is readable or writable by other users"));
    expect(warnings).toHaveLength(1);
    expect(JSON.parse(warnings[0]!)).toMatchObject({ level: "warn", mode: "0644" });
  });

  test("refuses an existing target and leaves it as it was", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    const target = join(dir, "taken.db");
    writeFileSync(target, "yesterday's backup");
    const result = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`palisade db:backup: ${target} exists; refusing to overwrite it`);
    expect(readFileSync(target, "utf8")).toBe("yesterday's backup");
  });

  test("a target named as SQLite names the files beside a database is refused, and nothing is written (probe 46c F4)", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    for (const [suffix, what] of [
      ["-journal", "journal"],
      ["-wal", "write-ahead log"],
      ["-shm", "shared memory"],
    ] as const) {
      // The live file's own companion, and one of another database at rest.
      for (const target of [`${databasePath}${suffix}`, join(dir, `restored.db${suffix}`)]) {
        // The live file's -wal and -shm may be there (the command's own look at it): left as found.
        const before = existsSync(target) ? readFileSync(target) : null;
        const result = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
        expect({ target, code: result.code, stderr: result.stderr }).toEqual({
          target,
          code: 2,
          stderr: `palisade db:backup: ${target} ends in ${suffix}, the name SQLite gives the ${what} it keeps beside a database: choose another name`,
        });
        expect([target, existsSync(target) ? readFileSync(target) : null]).toEqual([
          target,
          before,
        ]);
      }
    }
    // The live file still opens: no journal beside it makes it read as locked.
    expect((await cli(["users:list"], { DATABASE_PATH: databasePath })).code).toBe(0);
  });

  test("a target beside an earlier file's -wal or -journal is refused, and nothing is written (probe 47b F1)", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    for (const suffix of ["-wal", "-journal"]) {
      const target = join(dir, `drill${suffix.replace("-", "")}.db`);
      writeFileSync(`${target}${suffix}`, "an earlier file's log");
      const result = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
      expect({ code: result.code, stderr: result.stderr }).toEqual({
        code: 1,
        stderr: `palisade db:backup: ${target}${suffix} exists, left by an earlier file of that name: SQLite would replay it into the backup; remove it or choose another name`,
      });
      expect(existsSync(target)).toBe(false);
      expect(readFileSync(`${target}${suffix}`, "utf8")).toBe("an earlier file's log");
    }
  });

  test("a corrupt source fails with one line, exit 1, and leaves no file behind", async () => {
    const dir = workDir();
    const databasePath = join(dir, "corrupt.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    db.$client.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT)");
    const insert = db.$client.query("INSERT INTO filler (body) VALUES (?)");
    for (let i = 0; i < 500; i++) insert.run("x".repeat(400));
    db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    const { rootpage } = db.$client
      .query<{ rootpage: number }, []>("SELECT rootpage FROM sqlite_master WHERE name = 'filler'")
      .get()!;
    db.$client.close();
    // Overwrite the filler table's root and the pages after it with garbage (the middle of the
    // file, as this test first did, falls on other pages as the schema grows: empty index pages
    // a copy may never read).
    const bytes = readFileSync(databasePath);
    const pageSize = bytes.readUInt16BE(16);
    const start = (rootpage - 1) * pageSize;
    bytes.fill(0xa5, start, start + pageSize * 8);
    writeFileSync(databasePath, bytes);

    const target = join(dir, "copy.db");
    const result = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
    expect(result.code).toBe(1);
    expect(result.stderr.split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/^palisade db:backup: .*malformed/);
    expect(readdirSync(dir).filter((name) => name.includes("copy"))).toEqual([]);
  });

  test("stopped by a signal while it copies, it ends at its next step with its partial copy removed (probe 31a F4)", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    // Enough rows that the copy takes a moment to write.
    db.$client.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT)");
    const insert = db.$client.query("INSERT INTO filler (body) VALUES (?)");
    db.$client.transaction(() => {
      for (let i = 0; i < 60_000; i++) insert.run(`${i} ${"x".repeat(600)}`);
    })();
    db.$client.run("PRAGMA wal_checkpoint(TRUNCATE)");
    db.$client.close();
    const target = join(dir, "copy.db");
    const proc = Bun.spawn(["bun", "run", "src/cli/index.ts", "db:backup", target], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        DATABASE_PATH: databasePath,
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    cleanup.push(() => {
      if (proc.exitCode === null) proc.kill("SIGKILL");
    });
    const partial = () => readdirSync(dir).filter((name) => name.endsWith(".partial"));
    const deadline = Date.now() + 10_000;
    while (partial().length === 0 && proc.exitCode === null && Date.now() < deadline) {
      await Bun.sleep(2);
    }
    expect(partial()).toHaveLength(1);
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(143);
    expect((await new Response(proc.stderr).text()).trim()).toBe(
      "palisade db:backup: stopped by SIGTERM; no backup written",
    );
    expect(readdirSync(dir).filter((name) => name.includes("copy"))).toEqual([]);
  }, 30_000);

  test("a partial copy left by a backup killed outright is removed by the next, one of a running backup is not", async () => {
    const dir = workDir();
    const databasePath = join(dir, "live.db");
    const db = openDatabase(databasePath);
    applyMigrations(db);
    db.$client.close();
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    const stale = `.palisade-2026-11-30.db.${gone.pid}.0badc0de.partial`;
    const running = `.palisade-2026-12-01.db.${process.pid}.0badc0de.partial`;
    // Its process gone from here, but written to a moment ago: a backup of another PID namespace
    // (a container sharing the directory) may be writing it (probe 31c F2).
    const fresh = `.palisade-2026-12-01.db.${gone.pid}.0ddba11a.partial`;
    const linked = `.palisade-2026-11-29.db.${gone.pid}.0badc0de.partial`;
    const anHourAgo = new Date(Date.now() - 61 * 60 * 1000);
    writeFileSync(join(dir, stale), "a whole copy, hashes and all");
    writeFileSync(join(dir, running), "being written");
    writeFileSync(join(dir, fresh), "being written elsewhere");
    symlinkSync(join(dir, "live.db"), join(dir, linked));
    for (const name of [stale, running]) utimesSync(join(dir, name), anHourAgo, anHourAgo);
    const target = join(dir, "palisade-2026-12-01.db");
    const result = await cli(["db:backup", target], { DATABASE_PATH: databasePath });
    expect(result.code).toBe(0);
    expect(result.stderr).toBe(`removed ${stale}, a partial copy an interrupted backup left`);
    expect(existsSync(join(dir, stale))).toBe(false);
    expect(existsSync(join(dir, running))).toBe(true);
    expect(existsSync(join(dir, fresh))).toBe(true);
    expect(lstatSync(join(dir, linked)).isSymbolicLink()).toBe(true);
  });

  test("a file that is not SQLite is refused the same way", async () => {
    const dir = workDir();
    const databasePath = join(dir, "notes.db");
    writeFileSync(databasePath, "not a database at all, just some text ".repeat(200));
    const result = await cli(["db:backup", join(dir, "copy.db")], { DATABASE_PATH: databasePath });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^palisade db:backup: DATABASE_PATH .* is not a usable SQLite database: it does not start as one/,
    );
    expect(existsSync(join(dir, "copy.db"))).toBe(false);
    // Said before the configuration is read: no development audit key beside it (probe 45a F4).
    expect(existsSync(`${databasePath}.audit-key`)).toBe(false);
  });

  test("usage errors exit 2; a missing source exits 1 (the real entry point)", async () => {
    const dir = workDir();
    const env = { DATABASE_PATH: join(dir, "absent.db") };
    const usage = await runToExit(["bun", "run", "src/cli/index.ts", "db:backup"], env);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim()).toBe("palisade db:backup: expects one PATH to write the backup to");
    const missing = await cli(["db:backup", join(dir, "copy.db")], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(
      `palisade db:backup: DATABASE_PATH ${env.DATABASE_PATH} names no file: db:backup reads an existing database and makes none (check the path)`,
    );
    const memory = await cli(["db:backup", join(dir, "copy.db")], { DATABASE_PATH: ":memory:" });
    expect(memory.code).toBe(2);
  });
});

describe("what a restore brings back", () => {
  test("a key rotated since the backup is listed `replaced by` in the moved file, so the restore's comparison revokes it; left, it works again with no end (probe 84d F1)", async () => {
    const target = buildTestApp();
    try {
      const env = { DATABASE_PATH: target.databasePath };
      const { record } = createKey(target, ["payments"]);
      const backupPath = join(workDir(), "nightly.db");
      expect((await cli(["db:backup", backupPath], env)).code).toBe(0);
      // Rotated after the backup with no grace, as for a leaked key.
      const successor = target.services.apiKeys.rotate(record.id, 0, "test")!.record;
      const lineOf = async (path: string) =>
        (await cli(["keys:list"], { DATABASE_PATH: path })).stdout
          .split("\n")
          .find((line) => line.startsWith(record.id))!;
      const moved = await lineOf(target.databasePath);
      expect(moved).toContain("  expired  ");
      expect(moved).toEndWith(`  replaced by ${successor.id}`);
      // The backup holds it as it was: active, with no end and no successor.
      const restored = await lineOf(backupPath);
      expect(restored).toContain("  active  ");
      expect(restored).toContain("expires -");
      expect(restored).not.toContain("replaced by");
      expect((await cli(["keys:revoke", record.id], { DATABASE_PATH: backupPath })).code).toBe(0);
      expect(await lineOf(backupPath)).toContain("  revoked  ");
    } finally {
      target.close();
    }
  });
});
