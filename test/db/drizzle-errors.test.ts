/**
 * Queries go through Drizzle. Its query builder rethrows bun:sqlite's error as is; `db.run(sql)`
 * and nested transactions (savepoints) wrap it in a DrizzleError whose `cause` is the SQLiteError.
 * Either way a locked or read-only database must still be recognised as the store being
 * unavailable (503 with Retry-After, deferred audit writes), never mistaken for a bug (500).
 */
import { Database, SQLiteError } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/bun-sqlite";
import { isDatabaseBusy, setBusyTimeout } from "../../src/db/busy";
import { drizzleOf, isStoreUnavailable, openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { ipBlocks } from "../../src/db/schema";
import { tempDir } from "../support/app";

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    return error;
  }
  throw new Error("expected the statement to fail");
}

const block = { address: "203.0.113.9", reason: "test", source: "admin" as const, createdAt: 1 };

describe("SQLite failures through Drizzle", () => {
  test("another connection's write lock is busy and unavailable, wrapped by Drizzle or not", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      const db = openDatabase(path);
      applyMigrations(db);
      setBusyTimeout(db.$client, 0);
      const holder = new Database(path);
      holder.run("BEGIN EXCLUSIVE");
      try {
        const wrapped = caught(() =>
          db.run(sql`insert into ip_blocks (address, reason, source, created_at, expires_at)
                     values ('203.0.113.9', 'test', 'admin', 1, 2)`),
        );
        expect(wrapped).not.toBeInstanceOf(SQLiteError);
        expect((wrapped as Error).cause).toBeInstanceOf(SQLiteError);
        expect(isDatabaseBusy(wrapped)).toBe(true);
        expect(isStoreUnavailable(wrapped)).toBe(true);

        const direct = caught(() =>
          db
            .insert(ipBlocks)
            .values({ ...block, expiresAt: 2 })
            .run(),
        );
        expect(direct).toBeInstanceOf(SQLiteError);
        expect(isDatabaseBusy(direct)).toBe(true);
        expect(isStoreUnavailable(direct)).toBe(true);
      } finally {
        holder.run("ROLLBACK");
        holder.close();
      }
      // Once the lock is gone the same statement works: nothing was left half done.
      db.insert(ipBlocks)
        .values({ ...block, expiresAt: 2 })
        .run();
      expect(db.select().from(ipBlocks).all()).toHaveLength(1);
      db.$client.close();
    } finally {
      dir.remove();
    }
  });

  test("a read-only file is unavailable (not busy), wrapped by Drizzle or not", () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "app.db");
      const writable = openDatabase(path);
      applyMigrations(writable);
      writable.$client.close();
      const readonly = new Database(path, { readonly: true });
      const db = drizzle({ client: readonly });
      const wrapped = caught(() =>
        db.run(sql`insert into ip_blocks (address, reason, source, created_at, expires_at)
                   values ('203.0.113.9', 'test', 'admin', 1, 2)`),
      );
      expect(wrapped).not.toBeInstanceOf(SQLiteError);
      expect(isStoreUnavailable(wrapped)).toBe(true);
      expect(isDatabaseBusy(wrapped)).toBe(false);
      const direct = caught(() =>
        db
          .insert(ipBlocks)
          .values({ ...block, expiresAt: 2 })
          .run(),
      );
      expect(isStoreUnavailable(direct)).toBe(true);
      readonly.close();
    } finally {
      dir.remove();
    }
  });

  test("a statement that is wrong stays a bug (500), wrapped or not", () => {
    const db = drizzleOf(new Database(":memory:"));
    const wrapped = caught(() => db.run(sql`insert into no_such_table values (1)`));
    expect(isStoreUnavailable(wrapped)).toBe(false);
    expect(isDatabaseBusy(wrapped)).toBe(false);
  });

  test("a service handed the raw connection shares the Drizzle instance openDatabase made", () => {
    const db = openDatabase(":memory:");
    expect(drizzleOf(db.$client)).toBe(db);
    db.$client.close();
  });
});
