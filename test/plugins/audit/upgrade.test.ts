/**
 * Upgrading a database written before the chain was keyed: a real file migrated to 0002 with rows
 * in the old unkeyed form (one erased the old way, behind an old checkpoint), then migrated with a
 * key (migration 0003's companion keys them) and started. And what someone with a keyed file but
 * not the key gets from turning its log back into the unkeyed form (probe 65 F2, F3): nothing keyed,
 * no other key taken.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadConfig } from "../../../src/config";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { applyMigrationsFrom } from "../../../src/db/migrate-from-folder";
import { createLogger } from "../../../src/logging/logger";
import {
  GENESIS_HASH,
  legacyRowHash,
  newSalt,
  subjectCommit,
} from "../../../src/plugins/audit/chain";
import { createServices } from "../../../src/services";
import { upgradeSealing } from "../../../src/upgrade-sealing";
import { LogCapture, tempDir } from "../../support/app";
import { cliInProcess } from "../../support/cli";
import { migrationsUpTo } from "../../support/migrations";

const AUDIT_KEY = "upgrade-test-key-4e8a1c7f3b9d2065ee17a3c8b5f90d42";
const dirs: { remove(): void }[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) dir.remove();
});

/** A database at migration 0002 holding `n` rows written the old way, rows 1–2 pruned. */
function legacyDatabase(options: { breakRow?: number } = {}) {
  const dir = tempDir();
  dirs.push(dir);
  const folder = migrationsUpTo(dir.path, 2);
  const path = join(dir.path, "palisade.db");
  const db = openDatabase(path);
  applyMigrationsFrom(db, folder);
  const sqlite = db.$client;
  let prev = GENESIS_HASH;
  for (let i = 1; i <= 6; i++) {
    const salt = newSalt();
    const actor = i % 2 ? "user:alice" : "user:bob";
    const ip = `192.0.2.${i}`;
    const fields = {
      at: 1_700_000_000_000 + i,
      type: "auth.login.succeeded",
      route: "/api/auth/login",
      requestId: `r${i}`,
      outcome: "success",
      detail: "{}",
      subjectCommit: subjectCommit(salt, actor, ip),
    };
    const hash = legacyRowHash(prev, fields);
    sqlite.run(
      `INSERT INTO audit_events (at, type, actor, ip, route, request_id, outcome, detail,
         subject_salt, subject_commit, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        fields.at,
        fields.type,
        actor,
        ip,
        fields.route,
        fields.requestId,
        fields.outcome,
        "{}",
        salt,
        fields.subjectCommit,
        prev,
        hash,
      ],
    );
    prev = hash;
  }
  // Old retention: rows 1-2 gone behind an unauthenticated checkpoint.
  const second = sqlite.query("SELECT hash FROM audit_events WHERE id = 2").get() as {
    hash: string;
  };
  sqlite.run("DELETE FROM audit_events WHERE id <= 2");
  sqlite.run(
    "INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count) VALUES (1, 2, ?, 2)",
    [second.hash],
  );
  // Old erasure: Bob's rows lost actor, address and salt.
  sqlite.run(
    "UPDATE audit_events SET actor = 'erased:0123', ip = NULL, subject_salt = NULL WHERE actor = 'user:bob'",
  );
  if (options.breakRow) {
    sqlite.run("UPDATE audit_events SET outcome = 'failure' WHERE id = ?", [options.breakRow]);
  }
  sqlite.close();
  return path;
}

async function verify(path: string) {
  return cliInProcess(["audit:verify"], { DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY });
}

/** A start as src/index.ts makes it: migrated with the upgrade's companions, what they did said and audited. */
function start(path: string) {
  const config = loadConfig({ DATABASE_PATH: path, AUDIT_SECRET_KEY: AUDIT_KEY });
  const logs = new LogCapture();
  const logger = createLogger({ level: "info", destination: logs });
  const db = openDatabase(path);
  const sealing = upgradeSealing(AUDIT_KEY);
  applyMigrations(db, sealing.companions);
  const services = createServices({ config, db, logger, maintenanceIntervalMs: 0 });
  for (const { message, fields, event } of sealing.sealed()) {
    if (message) logger.warn(fields, message);
    services.audit.record(event);
  }
  const close = () => {
    services.close();
    db.$client.close();
  };
  return { services, db, logs, close };
}

test("the start that migrates an old file keys its rows and says so; then the chain verifies", async () => {
  const path = legacyDatabase();
  const app = start(path);
  app.services.audit.record({ type: "auth.logout", outcome: "success", actor: "user:alice" });
  app.close();
  expect(app.logs.text).toContain(
    "keyed 4 audit rows written before AUDIT_SECRET_KEY existed (their unkeyed chain was intact)",
  );
  const after = await verify(path);
  expect(after.stderr).toBe("");
  expect(after.code).toBe(0);

  const db = openDatabase(path);
  const keyed = db.$client
    .query("SELECT id, outcome, detail FROM audit_events WHERE type = 'audit.chain.keyed'")
    .get() as { id: number; outcome: string; detail: string };
  db.$client.close();
  expect(keyed.id).toBe(7);
  expect(keyed.outcome).toBe("success");
  expect(JSON.parse(keyed.detail)).toEqual({
    firstBrokenId: null,
    legacyChainIntact: true,
    rows: 4,
  });

  // A second start has nothing left to key.
  const again = start(path);
  again.close();
  expect(again.logs.text).not.toContain("keyed 4");
  expect((await verify(path)).code).toBe(0);
});

test("a command that is the first to migrate an old file keys its rows, says so and records it; the start after keys nothing", async () => {
  const path = legacyDatabase();
  const first = await verify(path);
  expect(first.stderr).toContain(
    "keyed 4 audit rows written before AUDIT_SECRET_KEY existed (their unkeyed chain was intact)",
  );
  expect(first.code).toBe(0);
  const app = start(path);
  app.close();
  expect(app.logs.text).not.toContain("audit rows written before");
  expect(app.logs.text).not.toContain("without a key");
  const db = openDatabase(path);
  expect(
    db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'audit.chain.keyed'")
      .get(),
  ).toEqual({ n: 1 });
  db.$client.close();
  expect((await verify(path)).code).toBe(0);
});

test("an old chain that was already broken is keyed but recorded as broken", async () => {
  const path = legacyDatabase({ breakRow: 4 });
  const app = start(path);
  app.close();
  const db = openDatabase(path);
  const keyed = db.$client
    .query("SELECT outcome, detail FROM audit_events WHERE type = 'audit.chain.keyed'")
    .get() as { outcome: string; detail: string };
  db.$client.close();
  expect(keyed.outcome).toBe("failure");
  expect(JSON.parse(keyed.detail)).toMatchObject({ legacyChainIntact: false, firstBrokenId: 4 });
});

test("rows turned back into the unkeyed form after the upgrade are not keyed again", async () => {
  const path = legacyDatabase();
  start(path).close();
  const db = openDatabase(path);
  db.$client.run("UPDATE audit_events SET key_id = NULL WHERE id = 5");
  db.$client.close();
  const app = start(path);
  app.close();
  expect(app.logs.text).toContain(
    "audit rows or checkpoints without a key in a log keyed since migration 0003",
  );
  const result = await verify(path);
  expect(result.code).toBe(1);
  expect(result.stderr).toContain("row 5");
});

test("an unkeyed checkpoint forged after the upgrade is not keyed at the next start", async () => {
  const path = legacyDatabase();
  const first = start(path);
  for (let i = 0; i < 6; i++) {
    first.services.audit.record({ type: "request.rejected", outcome: "denied", ip: "192.0.2.1" });
  }
  first.close();
  // Someone with the file but not the key deletes the oldest rows and leaves a checkpoint in the
  // unkeyed form, hoping the upgrade keys it.
  const db = openDatabase(path);
  const cut = db.$client
    .query("SELECT id, hash FROM audit_events ORDER BY id LIMIT 1 OFFSET 4")
    .get() as {
    id: number;
    hash: string;
  };
  db.$client.run("DELETE FROM audit_events WHERE id <= ?", [cut.id]);
  db.$client.run(
    `INSERT INTO audit_checkpoints (created_at, last_deleted_id, last_hash, deleted_count, key_id, mac)
     VALUES (?, ?, ?, ?, NULL, NULL)`,
    [Date.now(), cut.id, cut.hash, cut.id],
  );
  db.$client.close();
  const restarted = start(path);
  restarted.close();
  expect(restarted.logs.text).toContain("without a key in a log keyed since migration 0003");
  const result = await verify(path);
  expect(result.code).toBe(1);
  expect(result.stderr).toContain("checkpoint");
});

describe("a keyed log turned back into the unkeyed form in the file (probe 65)", () => {
  const OTHER_KEY = "upgrade-test-other-9b3f1e6a2c8d4057aa31e9c4d7b06f25";
  const as = (path: string, key: string, command = "users:list") =>
    cliInProcess([command], { DATABASE_PATH: path, AUDIT_SECRET_KEY: key });
  /** An upgraded, started file with a few more rows, whose log `rewrite` then changes. */
  function keyedThenRewritten(rewrite: (sqlite: import("bun:sqlite").Database) => void) {
    const path = legacyDatabase();
    const app = start(path);
    for (let i = 0; i < 3; i++) {
      app.services.audit.record({ type: "auth.logout", outcome: "success", actor: "user:alice" });
    }
    app.close();
    const db = openDatabase(path);
    rewrite(db.$client);
    db.$client.close();
    return path;
  }

  test("every key id removed (hashes kept): another key is refused, the service's key is taken, audit:verify names the rows (F3)", async () => {
    const path = keyedThenRewritten((sqlite) => {
      sqlite.run("UPDATE audit_events SET key_id = NULL");
      sqlite.run("UPDATE audit_checkpoints SET key_id = NULL");
    });
    const refused = await as(path, OTHER_KEY);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(
      "AUDIT_SECRET_KEY cannot be checked against this database's audit log",
    );
    const served = await as(path, AUDIT_KEY);
    expect(served.code).toBe(0);
    const verified = await as(path, AUDIT_KEY, "audit:verify");
    expect(verified.code).toBe(1);
    expect(verified.stderr).toContain("chain broken at checkpoint 1");
    const db = openDatabase(path);
    // Nothing was keyed again: the rows are as the file left them.
    expect(
      db.$client.query("SELECT count(*) AS n FROM audit_events WHERE key_id IS NOT NULL").get(),
    ).toEqual({ n: 0 });
    db.$client.close();
  });

  test("the whole log rewritten in the unkeyed form, its chain recomputed without the key: no key is taken, nothing keyed (F2)", async () => {
    const path = keyedThenRewritten((sqlite) => {
      const rows = sqlite
        .query(
          `SELECT id, at, type, route, request_id AS requestId, outcome, detail,
                  subject_commit AS subjectCommit FROM audit_events ORDER BY id`,
        )
        .all() as (Parameters<typeof legacyRowHash>[1] & { id: number })[];
      let prev = GENESIS_HASH;
      for (const row of rows) {
        const hash = legacyRowHash(prev, row);
        sqlite.run(
          "UPDATE audit_events SET key_id = NULL, erasure_mac = NULL, prev_hash = ?, hash = ? WHERE id = ?",
          [prev, hash, row.id],
        );
        prev = hash;
      }
      sqlite.run("DELETE FROM audit_checkpoints");
    });
    for (const key of [AUDIT_KEY, OTHER_KEY]) {
      const refused = await as(path, key);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain("the log was rewritten in the file");
    }
    const db = openDatabase(path);
    expect(
      db.$client.query("SELECT count(*) AS n FROM audit_events WHERE key_id IS NOT NULL").get(),
    ).toEqual({ n: 0 });
    db.$client.close();
  });
});
