import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { DatabaseOpenError, openDatabase, whyUnusable } from "../../src/db/client";
import { applyMigrations, MIGRATIONS_FOLDER } from "../../src/db/migrate";
import { users } from "../../src/db/schema";
import { tempDir } from "../support/app";
import { makeOthersFiles, makeStoppedFirstStart, OTHERS_FILES } from "../support/database-files";

const migrationCount = () =>
  readdirSync(MIGRATIONS_FOLDER).filter((f) => f.endsWith(".sql")).length;

describe("openDatabase", () => {
  test("sets WAL, synchronous=NORMAL, its checkpoint size, a busy timeout and foreign keys", () => {
    const dir = tempDir();
    try {
      const db = openDatabase(join(dir.path, "nested", "dir", "app.db"));
      const pragma = (name: string) => db.$client.query(`PRAGMA ${name}`).values()[0]![0];
      expect(pragma("journal_mode")).toBe("wal");
      expect(pragma("synchronous")).toBe(1); // NORMAL
      expect(pragma("busy_timeout")).toBe(5000);
      expect(pragma("foreign_keys")).toBe(1);
      // A checkpoint every 16 MB of WAL, and a reset WAL cut back to 32 MB.
      expect(pragma("wal_autocheckpoint")).toBe(4000);
      expect(pragma("journal_size_limit")).toBe(32 * 1024 * 1024);
      db.$client.close();
    } finally {
      dir.remove();
    }
  });

  test("a file that is not SQLite is a one-line start error naming DATABASE_PATH", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "corrupt.db");
      writeFileSync(path, "this is not a database, just text ".repeat(200));
      let error: unknown;
      try {
        openDatabase(path);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(DatabaseOpenError);
      const message = (error as Error).message;
      expect(message).toStartWith(`DATABASE_PATH ${path}`);
      expect(message).toContain("not a usable SQLite database");
      expect(message).not.toContain("\n");
    } finally {
      dir.remove();
    }
  });

  test("a file another connection holds locked is said to be locked, not unusable (probe 26f F7)", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "locked.db");
      const holder = openDatabase(path);
      holder.$client.run("BEGIN IMMEDIATE");
      let error: unknown;
      try {
        openDatabase(path);
      } catch (caught) {
        error = caught;
      }
      holder.$client.run("ROLLBACK");
      holder.$client.close();
      expect(error).toBeInstanceOf(DatabaseOpenError);
      expect((error as Error).message).toStartWith(
        `DATABASE_PATH ${path} is locked by another connection (`,
      );
      expect((error as Error).message).toEndWith("): try again when it is done");
    } finally {
      dir.remove();
    }
  }, 20_000);

  test("a read-only file is said to be read-only (root cannot make one with a mode: the error as SQLite gives it)", () => {
    const readonly = Object.assign(new Error("attempt to write a readonly database"), {
      code: "SQLITE_READONLY",
    });
    expect(
      whyUnusable(
        new Error("not writable: attempt to write a readonly database", { cause: readonly }),
      ),
    ).toBe(
      "is read-only (not writable: attempt to write a readonly database): Palisade and its commands write to it; use a writable copy",
    );
    expect(whyUnusable(new Error("file is not a database"))).toBe(
      "is not a usable SQLite database: file is not a database",
    );
  });

  test("a file holding another application's tables is refused in one line naming DATABASE_PATH, with nothing written to it or beside it (probe 43c F2)", () => {
    const dir = tempDir();
    try {
      const plain = join(dir.path, "other.db");
      const other = new Database(plain);
      other.run("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
      other.run("INSERT INTO customers (name) VALUES ('Important Co')");
      other.close();
      // Another drizzle-made application's: a migrations table, but none of Palisade's migrations.
      const drizzleMade = join(dir.path, "drizzle-made.db");
      const made = new Database(drizzleMade);
      made.run("PRAGMA journal_mode = WAL");
      made.run("CREATE TABLE notes (body TEXT)");
      made.run(
        "CREATE TABLE __drizzle_migrations (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)",
      );
      made.run("INSERT INTO __drizzle_migrations (hash, created_at) VALUES ('x', 1700000000000)");
      made.close();
      for (const path of [plain, drizzleMade]) {
        const before = readFileSync(path);
        expect(() => openDatabase(path)).toThrow(
          new DatabaseOpenError(
            path,
            "holds no Palisade database (another application's tables): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)",
          ),
        );
        expect(readFileSync(path).equals(before)).toBe(true);
      }
      expect(readdirSync(dir.path).sort()).toEqual(["drizzle-made.db", "other.db"]);
      // Palisade's own tables without their record of migrations: altered, said as the CLI says it.
      const altered = join(dir.path, "altered.db");
      const db = openDatabase(altered);
      applyMigrations(db);
      db.$client.run("DROP TABLE __drizzle_migrations");
      db.$client.close();
      expect(() => openDatabase(altered)).toThrow(
        "holds Palisade's tables but no record of its migrations: the file was altered; restore it from a backup",
      );
    } finally {
      dir.remove();
    }
  });

  test("a file of another's views or triggers, one its header marks as an application's, and a migrations table not as Palisade's migrator makes it are refused, with nothing written to them or beside them (probe 44b F2, F3)", () => {
    const dir = tempDir();
    try {
      const paths = makeOthersFiles(dir.path);
      const before = paths.map((path) => readFileSync(path));
      paths.forEach((path, at) => {
        expect(() => openDatabase(path)).toThrow(
          new DatabaseOpenError(
            path,
            `holds no Palisade database (${OTHERS_FILES[at]!.holds}): Palisade makes its database only at a path that names no file or in an empty file, and writes nothing to another's (check the path)`,
          ),
        );
        expect(readFileSync(path).equals(before[at]!)).toBe(true);
      });
      expect(readdirSync(dir.path).sort()).toEqual(OTHERS_FILES.map((file) => file.name).sort());
    } finally {
      dir.remove();
    }
  });

  test("an empty file, one whose first migration stopped half way, and Palisade's own are opened and migrated as before", () => {
    const dir = tempDir();
    try {
      const empty = join(dir.path, "empty.db");
      writeFileSync(empty, "");
      const halfWay = join(dir.path, "half-way.db");
      makeStoppedFirstStart(halfWay);
      for (const path of [empty, halfWay, empty]) {
        const db = openDatabase(path);
        applyMigrations(db);
        expect(db.select().from(users).all()).toEqual([]);
        db.$client.close();
      }
    } finally {
      dir.remove();
    }
  });

  test("an unwritable path is a one-line start error", () => {
    const dir = tempDir();
    try {
      const blocker = join(dir.path, "a-file");
      writeFileSync(blocker, "");
      // The parent "directory" is a regular file: no user, root included, can create the database.
      expect(() => openDatabase(join(blocker, "app.db"))).toThrow(DatabaseOpenError);
      expect(() => openDatabase(join(blocker, "app.db"))).toThrow(/cannot be opened/);
    } finally {
      dir.remove();
    }
  });
});

describe("migrations", () => {
  test("create every table on an empty database", () => {
    const dir = tempDir();
    try {
      const db = openDatabase(join(dir.path, "app.db"));
      applyMigrations(db);
      const tables = db.$client
        .query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .values()
        .flat();
      expect(tables).toContain("users");
      expect(tables).toContain("__drizzle_migrations");
      const applied = db.$client.query("SELECT count(*) FROM __drizzle_migrations").values();
      expect(applied[0]![0]).toBe(migrationCount());
      db.$client.close();
    } finally {
      dir.remove();
    }
  });

  test("on an existing database apply nothing twice and keep the data", () => {
    const dir = tempDir();
    const path = join(dir.path, "app.db");
    try {
      const first = openDatabase(path);
      applyMigrations(first);
      const now = new Date();
      first
        .insert(users)
        .values({
          id: "u1",
          email: "kept@example.test",
          passwordHash: "x",
          createdAt: now,
          updatedAt: now,
        })
        .run();
      first.$client.close();

      const second = openDatabase(path);
      applyMigrations(second);
      const applied = second.$client.query("SELECT count(*) FROM __drizzle_migrations").values();
      expect(applied[0]![0]).toBe(migrationCount());
      const row = second.select().from(users).where(eq(users.id, "u1")).get();
      expect(row?.email).toBe("kept@example.test");
      second.$client.close();
    } finally {
      dir.remove();
    }
  });

  test("the users table refuses a second account with the same email key (normalised, case-folded)", () => {
    const dir = tempDir();
    try {
      const db = openDatabase(join(dir.path, "app.db"));
      applyMigrations(db);
      const now = new Date();
      const row = { passwordHash: "x", createdAt: now, updatedAt: now };
      db.insert(users)
        .values({ id: "a", email: "Ann@example.test", emailKey: "ann@example.test", ...row })
        .run();
      expect(() =>
        db
          .insert(users)
          .values({ id: "b", email: "ann@example.test", emailKey: "ann@example.test", ...row })
          .run(),
      ).toThrow(/UNIQUE/);
      db.$client.close();
    } finally {
      dir.remove();
    }
  });
});
