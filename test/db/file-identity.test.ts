/**
 * The file watch in process (test/startup/database-file.test.ts runs it in real services): each
 * problem named, said once while it lasts, and its end said.
 */
import { Database } from "bun:sqlite";
import { expect, test } from "bun:test";
import { copyFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { databaseFileWatch, startDatabaseFileWatch } from "../../src/db/file-identity";
import { tempDir } from "../support/app";
import { waitFor } from "../support/wait";

function openedIn(dir: string): Database {
  const sqlite = new Database(join(dir, "app.db"), { create: true });
  sqlite.run("PRAGMA journal_mode = WAL");
  sqlite.run("CREATE TABLE t (x)");
  sqlite.run("INSERT INTO t VALUES (1)");
  return sqlite;
}

test("no watch for :memory:; none of a file's problems while it is in place", () => {
  expect(databaseFileWatch(new Database(":memory:"))).toBeNull();
  const dir = tempDir();
  const sqlite = openedIn(dir.path);
  try {
    expect(databaseFileWatch(sqlite)!.problem()).toBeNull();
  } finally {
    sqlite.close();
    dir.remove();
  }
});

test("each change named: the -shm replaced, the file replaced, the file gone", () => {
  const dir = tempDir();
  const sqlite = openedIn(dir.path);
  const path = join(dir.path, "app.db");
  try {
    const watch = databaseFileWatch(sqlite)!;
    copyFileSync(`${path}-shm`, `${path}.shm-copy`);
    renameSync(`${path}.shm-copy`, `${path}-shm`);
    expect(watch.problem()).toStartWith("the database's -shm file was deleted or replaced");
    copyFileSync(path, `${path}.copy`);
    renameSync(`${path}.copy`, path);
    expect(watch.problem()).toStartWith("DATABASE_PATH names another file");
    rmSync(path);
    expect(watch.problem()).toStartWith("DATABASE_PATH no longer names a file");
  } finally {
    sqlite.close();
    dir.remove();
  }
});

test("the timer says a problem once while it lasts, and when it ends", async () => {
  const said: { level: string; message: string }[] = [];
  const logger = {
    error: (message: string) => said.push({ level: "error", message }),
    info: (message: string) => said.push({ level: "info", message }),
  };
  let problem: string | null = null;
  const stop = startDatabaseFileWatch({ problem: () => problem }, logger as never, 10);
  try {
    problem = "the file is gone";
    await waitFor(() => said.length === 1, { what: "the error", timeoutMs: 2_000 });
    await Bun.sleep(50);
    expect(said).toEqual([{ level: "error", message: "the file is gone" }]);
    problem = null;
    await waitFor(() => said.length === 2, { what: "its end", timeoutMs: 2_000 });
    expect(said[1]).toEqual({ level: "info", message: "the database files are in place again" });
  } finally {
    stop();
  }
  expect(startDatabaseFileWatch(null, logger as never)).toBeInstanceOf(Function);
});
