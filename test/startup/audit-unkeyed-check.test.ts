/**
 * Every start asks whether audit rows written before the chain was keyed exist
 * (plugins/audit/upgrade). On a keyed database the answer must come from the partial index of
 * unkeyed rows, not from a scan of the whole audit table (which grows without bound: ~200 ms of
 * every start at a million rows), and must still be right either way.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { UNKEYED_CHECK } from "../../src/plugins/audit/upgrade";
import { tempDir } from "../support/app";

const dirs: { remove(): void }[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) dir.remove();
});

function migrated() {
  const dir = tempDir();
  dirs.push(dir);
  const db = openDatabase(join(dir.path, "palisade.db"));
  applyMigrations(db);
  return db.$client;
}

const INSERT_ROW = `INSERT INTO audit_events (at, type, outcome, detail, subject_commit, prev_hash, hash, key_id)
   VALUES (1, 'test', 'success', '{}', 'c', 'p', 'h', ?)`;

test("the start's unkeyed-rows check reads the partial index, not the audit table", () => {
  const sqlite = migrated();
  const plan = sqlite
    .query<{ detail: string }, []>(`EXPLAIN QUERY PLAN ${UNKEYED_CHECK}`)
    .all()
    .map((row) => row.detail);
  expect(plan).toContain("SCAN audit_events USING INDEX audit_events_unkeyed");
  expect(plan).not.toContain("SCAN audit_events");
  sqlite.close();
});

test("the check finds an unkeyed row among keyed ones, and nothing on a keyed table", () => {
  const sqlite = migrated();
  const found = () => sqlite.query<{ found: number }, []>(UNKEYED_CHECK).get()!.found;
  for (let i = 0; i < 50; i++) sqlite.run(INSERT_ROW, ["k1"]);
  expect(found()).toBe(0);
  sqlite.run(INSERT_ROW, [null]);
  expect(found()).toBe(1);
  sqlite.run("UPDATE audit_events SET key_id = 'k1' WHERE key_id IS NULL");
  expect(found()).toBe(0);
  sqlite.run(
    "INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count) VALUES (1, 0, 'h', 0)",
  );
  expect(found()).toBe(1);
  sqlite.close();
});
