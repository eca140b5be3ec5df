/**
 * Which AUDIT_SECRET_KEY a process may migrate and write a database file with (plugins/audit/
 * key-match.ts), when what names the log's key in the file is not what a start wrote: a log whose
 * rows retention removed, leaving its checkpoints (probe 64 F4), and a log whose rows' key ids were
 * all rewritten (64 F5). Each on a file with a migration pending, whose companion would seal rows
 * with the key it is given.
 */
import { afterEach, expect, test } from "bun:test";
import { openDatabase } from "../../../src/db/client";
import type { AuditEventType } from "../../../src/plugins/audit/events";
import { buildTestApp, type TestApp } from "../../support/app";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { migrationTagsFrom, putBackBefore } from "../../support/migrations";

const SERVICE_KEY = "key-match-service-2b9e4f71c06d3a85e1f4b7c2d9a06e38";
const OTHER_KEY = "key-match-another-8c1d5e93a72f4b06d8e3c1a59f27b4e0";
const DAY_MS = 24 * 60 * 60 * 1000;
/** The migration left pending: it adds a column, and its companion seals rows with the key. */
const PENDING = 29;
/** How many migrations a migrate applies to such a file: that one and every later one. */
const APPLIED_BY_MIGRATE = migrationTagsFrom(PENDING).length;

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

/** A file whose audit log holds a few keyed rows; `shape` changes it before 0029 is put back. */
function logWith(shape: (app: TestApp, clock: ManualClock) => void): string {
  const clock = new ManualClock();
  current = buildTestApp({ env: { AUDIT_SECRET_KEY: SERVICE_KEY }, clock });
  const app = current;
  const record = (type: AuditEventType, n: number) =>
    app.services.audit.record({ type, outcome: "success", actor: "user:bob", detail: { n } });
  for (let n = 1; n <= 4; n++) record("auth.logout", n);
  app.services.audit.flush();
  shape(app, clock);
  app.services.audit.flush();
  putBackBefore(app.db.$client, PENDING);
  // Left open (closing removes its folder): idle, as a service between requests.
  return app.databasePath;
}

/** A CLI command on the file at `path` with `key` as AUDIT_SECRET_KEY. */
function runAs(path: string, key: string, command: string) {
  return cliInProcess([command], { DATABASE_PATH: path, AUDIT_SECRET_KEY: key });
}

function migrationsApplied(path: string): number {
  const file = openDatabase(path);
  try {
    return (
      file.$client.query<{ n: number }, []>("SELECT count(*) AS n FROM __drizzle_migrations").get()
        ?.n ?? 0
    );
  } finally {
    file.$client.close();
  }
}

test("a log retention emptied, holding its checkpoint alone, still refuses another key before migrating (probe 64 F4)", async () => {
  const path = logWith((app, clock) => {
    clock.advance(10 * DAY_MS);
    expect(app.services.audit.prune(clock.now() - DAY_MS, clock.now())).toBe(4);
  });
  const file = openDatabase(path);
  expect(
    file.$client
      .query(
        "SELECT (SELECT count(*) FROM audit_events) AS rows, (SELECT count(*) FROM audit_checkpoints WHERE key_id IS NOT NULL) AS checkpoints",
      )
      .get(),
  ).toEqual({ rows: 0, checkpoints: 1 });
  file.$client.close();
  const before = migrationsApplied(path);

  const refused = await runAs(path, OTHER_KEY, "users:list");
  expect(refused.code).toBe(2);
  expect(refused.stderr).toStartWith("palisade users:list: AUDIT_SECRET_KEY is not the key");
  expect(refused.stderr).toContain("the newest checkpoint, id 1,");
  expect(migrationsApplied(path)).toBe(before);

  const served = await runAs(path, SERVICE_KEY, "users:list");
  expect(served.code).toBe(0);
  expect(migrationsApplied(path)).toBe(before + APPLIED_BY_MIGRATE);
});

test("a log whose every key id was rewritten takes the key its rows' hashes are made with, and audit:verify names the rewrite; another key is still refused (probe 64 F5)", async () => {
  const path = logWith((app) => {
    app.db.$client.run("UPDATE audit_events SET key_id = 'ffffffffffffffff'");
  });
  const before = migrationsApplied(path);

  const refused = await runAs(path, OTHER_KEY, "audit:verify");
  expect(refused.code).toBe(2);
  expect(refused.stderr).toContain("AUDIT_SECRET_KEY is not the key");
  expect(migrationsApplied(path)).toBe(before);

  const verified = await runAs(path, SERVICE_KEY, "audit:verify");
  expect(verified.code).toBe(1);
  expect(verified.stderr).toContain("row 1");
  expect(verified.stderr).toContain("keyed with another AUDIT_SECRET_KEY (key id ffffffffffffffff");
  expect(migrationsApplied(path)).toBe(before + APPLIED_BY_MIGRATE);
});

test("another key's refusal names a key id the file holds as a BLOB as x'…', as audit:verify does (probe 82j F2)", async () => {
  const path = logWith((app) => {
    app.db.$client.run(
      "UPDATE audit_events SET key_id = CAST(key_id AS BLOB) WHERE id = (SELECT max(id) FROM audit_events)",
    );
  });
  const refused = await runAs(path, OTHER_KEY, "audit:verify");
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/names x'[0-9a-f]+/);
  expect(refused.stderr).not.toMatch(/names \d+,\d+/);
});

test("a log whose key ids and newest rows' hashes were both rewritten refuses every key: none is shown to be its own", async () => {
  const path = logWith((app) => {
    app.db.$client.run(
      "UPDATE audit_events SET key_id = 'ffffffffffffffff', hash = (CASE WHEN substr(hash, 1, 1) = 'a' THEN 'b' ELSE 'a' END) || substr(hash, 2)",
    );
  });
  const refused = await runAs(path, SERVICE_KEY, "users:list");
  expect(refused.code).toBe(2);
  expect(refused.stderr).toContain("the log's newest rows were changed in the file");
});

test("a row written into the file with another key's id (which a refusal prints) does not let that key migrate; a row with the right key's id and a forged hash does not stop the right key (probe 65 F4)", async () => {
  const path = logWith(() => {});
  const other = { DATABASE_PATH: path, AUDIT_SECRET_KEY: OTHER_KEY };
  const first = await cliInProcess(["users:list"], other);
  expect(first.code).toBe(2);
  const printedId = /(?:whose id is|this key's id,) ([0-9a-f]{16})/.exec(first.stderr)?.[1];
  expect(printedId).toBeString();
  const before = migrationsApplied(path);
  const file = openDatabase(path);
  const plant = (keyId: string) =>
    file.$client.run(
      `INSERT INTO audit_events (at, type, outcome, detail, subject_commit, prev_hash, hash, key_id)
       VALUES (0, 'auth.logout', 'success', '{}', 'x', 'x', 'x', ?)`,
      [keyId],
    );
  plant(printedId!);
  const serviceKeyId = file.$client
    .query<{ keyId: string }, []>("SELECT key_id AS keyId FROM audit_events WHERE id = 1")
    .get()!.keyId;
  plant(serviceKeyId);
  file.$client.close();

  const refused = await cliInProcess(["users:list"], other);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toContain("AUDIT_SECRET_KEY is not the key");
  expect(migrationsApplied(path)).toBe(before);
  const served = await runAs(path, SERVICE_KEY, "users:list");
  expect(served.code).toBe(0);
  expect(migrationsApplied(path)).toBe(before + APPLIED_BY_MIGRATE);
});
