/**
 * A table rebuilt in the file with a constraint that ignores what conflicts with it (a generated
 * column under `UNIQUE … ON CONFLICT IGNORE`) makes Palisade's own writes silently do nothing: a
 * second key revocation, a logout, a role change. No seal and no trigger sees it. Every table and
 * index the migrations make must be in the file as they make it: a start refuses the file (exit 2),
 * a CLI command too (exit 1), and a running service that finds its schema changed reports it and
 * stops. Objects the migrations do not make are left alone.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { createSchemaGuard } from "../../src/db/schema-guard";
import { buildTestApp, servicesTold, type TestApp, tempDir } from "../support/app";
import { createKey, signUp } from "../support/auth";
import { asUser, chat } from "../support/chat";
import { cleanupsAfterEach, migratedDatabaseFile } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { runToExit, startService } from "../support/process";

const cleanups = cleanupsAfterEach();

/**
 * Rebuilds `table` as the probe did: the same columns, rows and indexes, plus a generated column
 * and a constraint that makes a write setting it a second time do nothing.
 */
function rebuildIgnoring(sqlite: Database, table: string, generated: string): void {
  const { sql } = sqlite
    .query<{ sql: string }, [string]>(
      "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
    )
    .get(table)!;
  const indexes = sqlite
    .query<{ sql: string }, [string]>(
      "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
    )
    .all(table);
  const columns = sqlite
    .query<{ name: string }, []>(`PRAGMA table_info("${table}")`)
    .all()
    .map((c) => `"${c.name}"`)
    .join(", ");
  // The column first (columns come before table constraints), the constraint last.
  const open = sql.indexOf("(") + 1;
  const rebuilt = `${sql.slice(0, open)}\n\t"ignored" integer GENERATED ALWAYS AS (${generated}) VIRTUAL,${sql.slice(open, sql.lastIndexOf(")"))},\n\tUNIQUE ("ignored") ON CONFLICT IGNORE\n)`;
  sqlite.run("PRAGMA foreign_keys = OFF");
  sqlite.transaction(() => {
    sqlite.run(`ALTER TABLE "${table}" RENAME TO "${table}_old"`);
    sqlite.run(rebuilt);
    sqlite.run(`INSERT INTO "${table}" (${columns}) SELECT ${columns} FROM "${table}_old"`);
    sqlite.run(`DROP TABLE "${table}_old"`);
    for (const index of indexes) sqlite.run(index.sql);
  })();
}

/** The details of the `db.schema_changed` events in the file. */
function schemaChangedEvents(sqlite: Database): unknown[] {
  return sqlite
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'db.schema_changed'",
    )
    .all()
    .map((row) => JSON.parse(row.detail));
}

const migratedFile = () => migratedDatabaseFile(cleanups);

// An edit of sqlite_master itself: bun:sqlite refuses it, the sqlite3 shell does not (.ci/run
// installs it; the tests that need it are skipped where it is missing, except in CI).
const sqlite3 = Bun.which("sqlite3");
if (process.env.CI === "true" && sqlite3 === null) {
  throw new Error("sqlite3 not installed; .ci/run installs it with apt-get");
}

/** A migrated file on which the sqlite3 shell ran `statements` with writable_schema on. */
function fileEditedBySqlite3(statements: string): string {
  const { path, db } = migratedFile();
  db.$client.close();
  const edit = Bun.spawnSync([
    sqlite3!,
    path,
    `PRAGMA writable_schema = ON; ${statements} PRAGMA writable_schema = OFF;`,
  ]);
  expect(edit.exitCode).toBe(0);
  return path;
}

describe("a start or a CLI command on a file whose schema was changed", () => {
  test("the start refuses it in one line naming the table; the CLI too", async () => {
    const { path, db } = migratedFile();
    rebuildIgnoring(db.$client, "api_keys", "CASE WHEN revoked_at IS NOT NULL THEN 1 END");
    db.$client.close();

    const start = await runToExit(["bun", "run", "src/index.ts"], {
      DATABASE_PATH: path,
      PORT: "0",
    });
    expect(start.code).toBe(2);
    // The rebuilt table, and the index its added constraint brought.
    expect(start.stderr.trim().split("\n").at(-1)).toBe(
      `palisade: refusing to start: DATABASE_PATH ${path}: the schema was changed outside Palisade (table api_keys is not as its migrations made it; index sqlite_autoindex_api_keys_2 on api_keys is not one of its migrations'); a changed table can make Palisade's writes silently do nothing: restore the file from a backup`,
    );
    const listed = await cliInProcess(["keys:list"], { DATABASE_PATH: path });
    expect(listed.code).toBe(1);
    expect(listed.stderr).toContain("table api_keys is not as its migrations made it");
  });

  test("a missing index is a change too; objects the migrations do not make are left alone", () => {
    const { db } = migratedFile();
    cleanups.push(() => db.$client.close());
    const guard = createSchemaGuard(db.$client);
    db.$client.run("CREATE TABLE notes (id integer)");
    db.$client.run("CREATE INDEX notes_id ON notes (id)");
    db.$client.run("CREATE VIEW recent_users AS SELECT id FROM users");
    expect(guard.differences()).toEqual([]);
    db.$client.run("DROP INDEX refresh_families_user");
    expect(guard.differences()).toEqual(["index refresh_families_user is missing"]);
  });
});

describe("what the migrations do not make", () => {
  test("any index on one of Palisade's tables, and a table referring to one, are refused; names shown escaped", () => {
    const { db } = migratedFile();
    cleanups.push(() => db.$client.close());
    const guard = createSchemaGuard(db.$client);
    const changes: [string, string][] = [
      [
        "CREATE UNIQUE INDEX x_dispute ON webhook_events (provider) WHERE type = 'charge.dispute.created'",
        "index x_dispute on webhook_events is not one of its migrations'",
      ],
      // Fails every write that sets revoked_at: a logout.
      [
        "CREATE INDEX x_fam ON refresh_families (CASE WHEN revoked_at IS NOT NULL THEN json('x') END)",
        "index x_fam on refresh_families is not one of its migrations'",
      ],
      [
        "CREATE INDEX plain_extra ON webhook_events (type)",
        "index plain_extra on webhook_events is not one of its migrations'",
      ],
      // Stops an erasure.
      [
        "CREATE TABLE hold (u TEXT REFERENCES users (id) ON DELETE RESTRICT)",
        "table hold refers to users and is not one of its migrations'",
      ],
      [
        `CREATE INDEX "odd\n\u001b[2J${"A".repeat(100)}" ON users (role)`,
        `index odd\\u000a\\u001b[2J${"A".repeat(56)}... on users is not one of its migrations'`,
      ],
      // Whatever the case of the table it names: SQLite's is not case-sensitive.
      [
        "CREATE TABLE hold2 (u TEXT REFERENCES USERS (id) ON DELETE RESTRICT)",
        "table hold2 refers to USERS and is not one of its migrations'",
      ],
      // Unicode that would reorder or break the operator's line is spelt out too.
      [
        'CREATE INDEX "a\u202eevil\u2028x" ON users (role)',
        "index a\\u202eevil\\u2028x on users is not one of its migrations'",
      ],
    ];
    for (const [statement, difference] of changes) {
      db.$client.run(statement);
      expect(guard.differences()).toEqual([difference]);
      const name = /(?:INDEX|TABLE) ("[^"]*"|\S+)/.exec(statement)![1]!;
      db.$client.run(`DROP ${statement.includes("TABLE") ? "TABLE" : "INDEX"} ${name}`);
    }
    expect(guard.differences()).toEqual([]);
  });

  test.skipIf(sqlite3 === null)(
    "a trigger whose schema entry says Trigger (SQLite runs it, and neither finds nor drops it) is refused",
    async () => {
      const path = fileEditedBySqlite3(
        `CREATE TRIGGER keep_sessions BEFORE UPDATE OF revoked_at ON refresh_families BEGIN SELECT RAISE(IGNORE); END;
         UPDATE sqlite_master SET type = 'Trigger' WHERE type = 'trigger';`,
      );
      const start = await runToExit(["bun", "run", "src/index.ts"], {
        DATABASE_PATH: path,
        PORT: "0",
      });
      expect(start.code).toBe(2);
      expect(start.stderr).toContain(
        'keep_sessions has the schema kind "Trigger", written into sqlite_master',
      );
    },
  );
});

describe("names SQLite keeps for itself", () => {
  test.skipIf(sqlite3 === null)(
    "a unique index renamed sqlite_… in sqlite_master is refused like any other",
    () => {
      const path = fileEditedBySqlite3(
        `CREATE UNIQUE INDEX zz_evt ON audit_events (type) WHERE type = 'auth.login.failed';
         UPDATE sqlite_master SET name = 'sqlite_zz_evt', sql = replace(sql, 'zz_evt', 'sqlite_zz_evt')
           WHERE name = 'zz_evt';`,
      );
      const file = new Database(path);
      cleanups.push(() => file.close());
      expect(createSchemaGuard(file).differences()).toEqual([
        "index sqlite_zz_evt on audit_events is not one of its migrations'",
      ]);
    },
  );

  test.skipIf(sqlite3 === null)(
    "a table renamed sqlite_stat1 with a foreign key to users is refused",
    () => {
      const path = fileEditedBySqlite3(
        `CREATE TABLE tmpx (tbl, idx, stat, u TEXT REFERENCES users (id) ON DELETE RESTRICT);
       UPDATE sqlite_master SET name = 'sqlite_stat1', tbl_name = 'sqlite_stat1',
         sql = 'CREATE TABLE sqlite_stat1 (tbl, idx, stat, u TEXT REFERENCES users (id) ON DELETE RESTRICT)'
         WHERE name = 'tmpx';`,
      );
      const file = new Database(path);
      cleanups.push(() => file.close());
      expect(createSchemaGuard(file).differences()).toEqual([
        "table sqlite_stat1 refers to users and is not one of its migrations'",
      ]);
    },
  );
});

describe("while the service runs", () => {
  function app(): TestApp {
    const target = buildTestApp();
    cleanups.push(() => target.close());
    return target;
  }

  test("the maintenance finds a table rebuilt under it: an error line, a db.schema_changed audit event, and the service is told to stop", () => {
    const target = app();
    const { services, logs, stops } = servicesTold(target);
    cleanups.push(() => services.close());
    services.runMaintenance();
    expect(stops).toEqual([]);

    createKey(target, ["chat"]);
    rebuildIgnoring(
      target.db.$client,
      "refresh_families",
      "CASE WHEN revoked_at IS NOT NULL THEN 1 END",
    );
    services.runMaintenance();
    const found = [
      "table refresh_families is not as its migrations made it",
      "index sqlite_autoindex_refresh_families_2 on refresh_families is not one of its migrations'",
    ];
    expect(stops).toEqual([found]);
    const line = logs.entries.find((entry) =>
      String(entry.msg).startsWith(
        "the database's schema was changed outside Palisade while running",
      ),
    );
    expect(line).toMatchObject({ level: "error", differences: found });
    services.audit.flush();
    expect(schemaChangedEvents(target.db.$client)).toEqual([
      { differences: found.join("; "), newerMigrations: 0 },
    ]);
  });

  test("a newer release migrating the file under a running one (or a row claiming so) stops it, reported all the same", () => {
    const target = app();
    const { services, logs, stops } = servicesTold(target);
    cleanups.push(() => services.close());
    services.runMaintenance();
    // What a newer release's migration does: a column added, and its row recorded.
    target.db.$client.run("ALTER TABLE users ADD `nickname` text");
    target.db.$client.run(
      'INSERT INTO "__drizzle_migrations" ("hash", "created_at") VALUES (\'newer\', 9999999999999)',
    );
    services.runMaintenance();
    expect(stops).toEqual([["table users is not as its migrations made it"]]);
    expect(logs.entries.find((entry) => entry.level === "error")).toMatchObject({
      msg: "the database's schema changed while this process ran, and the file records migrations of a newer release: stopping (a rolling upgrade: restart on the newer release; otherwise restore the file from a backup)",
      newerMigrations: 1,
    });
    services.audit.flush();
    expect(schemaChangedEvents(target.db.$client)).toEqual([
      { differences: "table users is not as its migrations made it", newerMigrations: 1 },
    ]);
  });

  test("a process stopping for a changed schema runs no background task after it, in that run or a later one: an aged message is left to the newer release", async () => {
    const target = buildTestApp({ env: { CHAT_RETENTION_DAYS: "1" } });
    cleanups.push(() => target.close());
    const { services, stops } = servicesTold(target);
    cleanups.push(() => services.close());
    const alice = await signUp(target);
    expect((await chat(target, asUser(alice), { message: "hello" })).status).toBe(200);
    const messages = () =>
      target.db.$client.query<{ n: number }, []>("SELECT count(*) AS n FROM chat_messages").get()!
        .n;
    target.db.$client.run("UPDATE chat_messages SET created_at = created_at - 2 * 86400000");
    target.db.$client.run("ALTER TABLE chat_conversations ADD `folder` text");
    services.runMaintenance();
    expect(stops).toHaveLength(1);
    expect(messages()).toBe(2);
    services.runMaintenance();
    expect(stops).toHaveLength(1);
    expect(messages()).toBe(2);
    // What retention does to them when nothing stops it.
    target.db.$client.run("ALTER TABLE chat_conversations DROP COLUMN `folder`");
    const unstopped = servicesTold(target).services;
    cleanups.push(() => unstopped.close());
    unstopped.runMaintenance();
    expect(messages()).toBe(0);
  });

  test("the real service stops with exit 2 once its maintenance sees the change, and will not start again", async () => {
    const { path, db } = migratedFile();
    db.$client.close();
    const service = await startService({ DATABASE_PATH: path });
    let code: number | null = null;
    try {
      const file = new Database(path);
      file.run("PRAGMA busy_timeout = 5000");
      rebuildIgnoring(file, "users", "CASE WHEN role = 'user' THEN 1 END");
      file.close();
      // The maintenance runs every 10 s.
      code = await Promise.race([service.proc.exited, Bun.sleep(20_000).then(() => null)]);
    } finally {
      if (code === null) await service.stop();
    }
    expect(code).toBe(2);
    expect(service.stdout()).toContain(
      "the database's schema was changed outside Palisade while running",
    );
    const again = await runToExit(["bun", "run", "src/index.ts"], {
      DATABASE_PATH: path,
      PORT: "0",
    });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("table users is not as its migrations made it");
  }, 30_000);
});
