/**
 * The cost of timing every statement (db/timing): the same prepared primary-key `get` on a
 * connection with and without the wrapper, alternated so both see the same cache and CPU state.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { timeQueries } from "../src/db/timing";

export interface DatabaseBench {
  rawUs: number;
  timedUs: number;
}

function open(path: string): Database {
  const sqlite = new Database(path, { create: true, strict: true });
  sqlite.run("PRAGMA journal_mode = WAL");
  return sqlite;
}

export function measureQueryTiming(dir: string, iterations: number): DatabaseBench {
  const path = join(dir, "timing.db");
  const setup = open(path);
  setup.run("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
  setup.transaction(() => {
    for (let i = 1; i <= 1000; i++) setup.run("INSERT INTO items (name) VALUES (?)", [`item ${i}`]);
  })();
  setup.close();

  const raw = open(path);
  const timed = open(path);
  timeQueries(timed, ["items"]);
  const sql = "SELECT name FROM items WHERE id = ?";
  const statements = { raw: raw.prepare(sql), timed: timed.prepare(sql) };
  const totals = { raw: 0, timed: 0 };
  for (let round = 0; round < 6; round++) {
    for (const kind of ["raw", "timed"] as const) {
      const statement = statements[kind];
      const started = performance.now();
      for (let i = 0; i < iterations; i++) statement.get((i % 1000) + 1);
      // The first round warms both up and is not counted.
      if (round > 0) totals[kind] += performance.now() - started;
    }
  }
  raw.close();
  timed.close();
  const perCall = (ms: number) => (ms * 1000) / (iterations * 5);
  return { rawUs: perCall(totals.raw), timedUs: perCall(totals.timed) };
}
