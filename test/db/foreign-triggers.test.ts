/**
 * Triggers someone wrote into the database file. Palisade's schema has none; a trigger is code that
 * runs inside Palisade's own writes, and `RAISE(IGNORE)` skips a write without an error: an audit
 * event, a logout. Every one is dropped and reported (an error line with its definition, a
 * `db.trigger_dropped` audit event): by the background maintenance while the service runs, and by
 * every start and CLI command before the migrations. An audit event a trigger skips fails the
 * write, loudly, rather than vanishing from a chain that still verifies.
 */
import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../src/db/client";
import { DROPPED_TRIGGER_MESSAGE, MAX_DROPPED_WHILE_RUNNING } from "../../src/db/foreign-triggers";
import { applyMigrations } from "../../src/db/migrate";
import { AuditKeys } from "../../src/plugins/audit/chain";
import { verifyAuditChain } from "../../src/plugins/audit/log";
import { send, servicesTold, type TestApp, tempDir } from "../support/app";
import { bearer, STRONG_PASSWORD, signUp } from "../support/auth";
import { appClosedAfter, cleanupsAfterEach } from "../support/cleanups";
import { cliInProcess } from "../support/cli";
import { startService } from "../support/process";

const cleanups = cleanupsAfterEach();

const HIDE_LOGINS = `CREATE TRIGGER hide_logins BEFORE INSERT ON audit_events
  WHEN NEW.type = 'auth.login.succeeded' BEGIN SELECT RAISE(IGNORE); END`;
const KEEP_SESSIONS = `CREATE TRIGGER keep_sessions BEFORE UPDATE ON refresh_families
  WHEN NEW.revoked_at IS NOT NULL BEGIN SELECT RAISE(IGNORE); END`;

const triggers = (sqlite: Database) =>
  sqlite.query("SELECT name FROM sqlite_master WHERE type = 'trigger'").all();

const auditedDrops = (sqlite: Database) =>
  sqlite
    .query<{ detail: string }, []>(
      "SELECT detail FROM audit_events WHERE type = 'db.trigger_dropped' ORDER BY id",
    )
    .all()
    .map((row) => JSON.parse(row.detail));

const app = (): TestApp => appClosedAfter(cleanups);

const login = (target: TestApp, email: string) =>
  send(target, "/api/auth/login", { body: { email, password: STRONG_PASSWORD }, peer: "10.3.3.3" });

describe("while the service runs", () => {
  test("an audit event a trigger skips fails the request instead of vanishing; the maintenance drops the trigger", async () => {
    const target = app();
    const alice = await signUp(target);
    target.db.$client.run(HIDE_LOGINS);

    const hidden = await login(target, alice.email);
    expect(hidden.status).toBe(500);
    expect(((await hidden.json()) as { code: string }).code).toBe("INTERNAL");

    target.services.runMaintenance();
    expect(triggers(target.db.$client)).toEqual([]);
    const logged = target.logs.entries.find((entry) => entry.msg === DROPPED_TRIGGER_MESSAGE);
    expect(logged).toMatchObject({ trigger: "hide_logins", table: "audit_events" });
    expect(String(logged!.sql)).toContain("RAISE(IGNORE)");
    target.services.audit.flush();
    expect(auditedDrops(target.db.$client)).toEqual([
      { table: "audit_events", trigger: "hide_logins" },
    ]);

    const shown = await login(target, alice.email);
    expect(shown.status).toBe(200);
    const logins = target.db.$client
      .query<{ n: number }, []>(
        "SELECT count(*) AS n FROM audit_events WHERE type = 'auth.login.succeeded'",
      )
      .get()!.n;
    // The sign-up's login and this one; the hidden one was refused, not lost from a valid chain.
    expect(logins).toBe(2);
    expect(
      verifyAuditChain(target.db.$client, new AuditKeys(target.config.audit.secretKey)).ok,
    ).toBe(true);
  });

  test("a trigger that kept sessions alive through a logout is gone by the next maintenance; the next logout takes", async () => {
    const target = app();
    const alice = await signUp(target);
    target.db.$client.run(KEEP_SESSIONS);
    target.services.runMaintenance();
    expect(triggers(target.db.$client)).toEqual([]);
    const out = await send(target, "/api/auth/logout", {
      body: { refreshToken: alice.refreshToken },
      headers: bearer(alice.accessToken),
    });
    expect(out.status).toBe(204);
    const refresh = await send(target, "/api/auth/refresh", {
      body: { refreshToken: alice.refreshToken },
    });
    expect(refresh.status).toBe(401);
  });

  test("a trigger whose name, table and definition break or reorder a line is reported with them spelt out", () => {
    const target = app();
    // Bidi overrides and a line separator in the names (quoted identifiers), a line separator and
    // a paragraph separator in the definition's comment: each would reorder or split what the
    // operator reads.
    target.db.$client.run(`CREATE TABLE "notes\u2028x" (id INTEGER)`);
    target.db.$client.run(
      `CREATE TRIGGER "evil\u202ekcah" BEFORE INSERT ON "notes\u2028x" BEGIN SELECT 1; /* a\u2029b\u2028c */ END`,
    );
    target.services.runMaintenance();
    expect(triggers(target.db.$client)).toEqual([]);
    const logged = target.logs.entries.find((entry) => entry.msg === DROPPED_TRIGGER_MESSAGE);
    expect(logged).toMatchObject({ trigger: "evil\\u202ekcah", table: "notes\\u2028x" });
    expect(String(logged!.sql)).toContain("/* a\\u2029b\\u2028c */");
    expect(String(logged!.sql)).not.toMatch(/[\u2028\u2029\u202e]/);
    target.services.audit.flush();
    expect(auditedDrops(target.db.$client)).toEqual([
      { table: "notes\\u2028x", trigger: "evil\\u202ekcah" },
    ]);
  });
});

test("an audit sequence raised past any id in the file fails the audited request and says why", async () => {
  const target = app();
  const alice = await signUp(target);
  target.db.$client.run(
    "UPDATE sqlite_sequence SET seq = 9223372036854775807 WHERE name = 'audit_events'",
  );
  const refused = await login(target, alice.email);
  expect(refused.status).toBe(500);
  expect(target.logs.text).toContain(
    "the audit log's id sequence (sqlite_sequence) is 9223372036854775807, past any id Palisade writes",
  );
});

test("an audit row written at a larger id than the sequence is named as what spends the ids (probe 58e F1)", async () => {
  const target = app();
  const alice = await signUp(target);
  target.services.audit.flush();
  target.db.$client.run(
    `INSERT INTO audit_events SELECT 9223372036854775807, ${Object.keys(
      target.db.$client.query("SELECT * FROM audit_events LIMIT 1").get() as object,
    )
      .filter((column) => column !== "id")
      .join(", ")} FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)`,
  );
  target.db.$client.run("UPDATE sqlite_sequence SET seq = 5 WHERE name = 'audit_events'");
  const refused = await login(target, alice.email);
  expect(refused.status).toBe(500);
  expect(target.logs.text).toContain(
    "the audit log's largest id is 9223372036854775807, past any id Palisade writes: a row was written there",
  );
  expect(target.logs.text).not.toContain("id sequence (sqlite_sequence) is 5");
});

test("an audit sequence written as a text that is not a number is read as SQLite reads it, 0: audited requests go on (probe 58f F3)", async () => {
  const target = app();
  const alice = await signUp(target);
  target.db.$client.run("UPDATE sqlite_sequence SET seq = 'abc' WHERE name = 'audit_events'");
  expect((await login(target, alice.email)).status).toBe(200);
});

describe("many triggers", () => {
  const addTriggers = (sqlite: Database, count: number) =>
    sqlite.transaction(() => {
      for (let i = 0; i < count; i++) {
        sqlite.run(
          `CREATE TRIGGER t${i} BEFORE INSERT ON ip_blocks BEGIN SELECT RAISE(IGNORE); END`,
        );
      }
    })();

  test("a CLI command drops them all; the first 20 are reported one by one, the rest in one line and one event", async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const path = join(dir.path, "many.db");
    const db = openDatabase(path);
    applyMigrations(db);
    addTriggers(db.$client, 25);
    db.$client.close();
    const result = await cliInProcess(["db:migrate"], { DATABASE_PATH: path });
    expect(result.code).toBe(0);
    const lines = result.stderr.split("\n");
    expect(lines).toHaveLength(21);
    expect(lines[20]).toBe(`${DROPPED_TRIGGER_MESSAGE} (and 5 more like it)`);
    const file = new Database(path, { readonly: true });
    cleanups.push(() => file.close());
    expect(triggers(file)).toEqual([]);
    const events = auditedDrops(file);
    expect(events).toHaveLength(21);
    expect(events[20]).toEqual({ more: 5 });
  });

  test("more than a running service drops on its event loop: it stops instead, and drops none", () => {
    const target = app();
    const { services, stops } = servicesTold(target);
    cleanups.push(() => services.close());
    addTriggers(target.db.$client, MAX_DROPPED_WHILE_RUNNING + 1);
    services.runMaintenance();
    expect(stops).toEqual([[`${MAX_DROPPED_WHILE_RUNNING + 1} triggers were added`]]);
    expect(triggers(target.db.$client)).toHaveLength(MAX_DROPPED_WHILE_RUNNING + 1);
  });
});

describe("before the migrations", () => {
  test("a CLI command drops them, says so on stderr and audits each", async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const path = join(dir.path, "cli.db");
    const db = openDatabase(path);
    applyMigrations(db);
    db.$client.run(HIDE_LOGINS);
    db.$client.run(KEEP_SESSIONS);
    db.$client.close();

    const result = await cliInProcess(["db:migrate"], { DATABASE_PATH: path });
    expect(result.code).toBe(0);
    const lines = result.stderr.split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toStartWith(
      `${DROPPED_TRIGGER_MESSAGE}: hide_logins on audit_events: CREATE TRIGGER`,
    );
    // The definition's line breaks are spelt out: one line each.
    expect(lines[0]).toContain("\\x0a");
    expect(lines[1]).toStartWith(`${DROPPED_TRIGGER_MESSAGE}: keep_sessions on refresh_families`);

    const file = new Database(path, { readonly: true });
    cleanups.push(() => file.close());
    expect(triggers(file)).toEqual([]);
    expect(auditedDrops(file)).toEqual([
      { table: "audit_events", trigger: "hide_logins" },
      { table: "refresh_families", trigger: "keep_sessions" },
    ]);
    const again = await cliInProcess(["db:migrate"], { DATABASE_PATH: path });
    expect(again.stderr).toBe("");
  });

  test("the real start drops them before serving, logs each and audits it", async () => {
    const dir = tempDir();
    cleanups.push(dir.remove);
    const path = join(dir.path, "start.db");
    const db = openDatabase(path);
    applyMigrations(db);
    // A trigger whose name needs quoting is dropped too.
    db.$client.run(`CREATE TRIGGER "odd ""name""" BEFORE INSERT ON users BEGIN SELECT 1; END`);
    db.$client.close();

    const service = await startService({ DATABASE_PATH: path });
    try {
      const line = service
        .stdout()
        .split("\n")
        .find((l) => l.includes(DROPPED_TRIGGER_MESSAGE));
      expect(line).toBeDefined();
      expect(JSON.parse(line!)).toMatchObject({
        level: "error",
        trigger: 'odd "name"',
        table: "users",
      });
      const health = await fetch(new URL("/health", service.url));
      expect(health.status).toBe(200);
    } finally {
      expect(await service.stop()).toBe(0);
    }
    const file = new Database(path, { readonly: true });
    cleanups.push(() => file.close());
    expect(triggers(file)).toEqual([]);
    expect(auditedDrops(file)).toEqual([{ table: "users", trigger: 'odd "name"' }]);
  });
});
