/**
 * Database files for the WAL guard's tests: a file as the service opens it, `processes` connections
 * to it as the service makes them (each another process), one plain connection (another process,
 * a reader), and rows of filler to grow the WAL. Everything is closed and removed after each test.
 */
import { Database } from "bun:sqlite";
import { afterEach } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { setBusyTimeout } from "../../src/db/busy";
import { openDatabase } from "../../src/db/client";
import { tempDir } from "./app";

export function walTestFiles() {
  let dir: ReturnType<typeof tempDir> | null = null;
  const open: Database[] = [];
  afterEach(() => {
    for (const sqlite of open.splice(0)) sqlite.close();
    dir?.remove();
    dir = null;
  });
  return {
    /** The service's connections (50 ms busy timeout, as it serves) and another plain one. */
    database(processes = 1) {
      dir = tempDir("palisade-wal-");
      const path = join(dir.path, "palisade.db");
      const connections = Array.from({ length: processes }, () => {
        const sqlite = openDatabase(path).$client;
        setBusyTimeout(sqlite, 50);
        open.push(sqlite);
        return sqlite;
      });
      connections[0]!.run("CREATE TABLE filler (id INTEGER PRIMARY KEY, data BLOB)");
      const other = new Database(path);
      setBusyTimeout(other, 50);
      open.push(other);
      return { path, connections, other };
    },
    /** A plain connection to another file in the same directory (after `database`). */
    beside(name: string) {
      const sqlite = new Database(join(dir!.path, name));
      open.push(sqlite);
      return sqlite;
    },
    /** Left to the test to close (it closes it itself). */
    untrack(sqlite: Database) {
      open.splice(open.indexOf(sqlite), 1);
    },
  };
}

export const walSize = (path: string) => statSync(`${path}-wal`).size;

/** Writes about `bytes` of new rows, one small transaction at a time. */
export function writeFiller(sqlite: Database, bytes: number) {
  const insert = sqlite.prepare("INSERT INTO filler (data) VALUES (randomblob(4000))");
  for (let done = 0; done < bytes; done += 4000) insert.run();
}
