import { Database } from "bun:sqlite";
import { afterEach, describe, expect, test } from "bun:test";
import { createLogger } from "../../../src/logging/logger";
import { AuditKeys, newSalt, subjectCommit } from "../../../src/plugins/audit/chain";
import {
  AUDIT_EVENT_TYPES,
  type AuditEvent,
  type AuditEventType,
} from "../../../src/plugins/audit/events";
import { SqliteAuditLog, verifyAuditChain as verifyWith } from "../../../src/plugins/audit/log";
import { createMetricsRegistry } from "../../../src/plugins/metrics/registry";
import { buildTestApp, LogCapture, send, type TestApp } from "../../support/app";
import { ManualClock } from "../../support/clock";
import { runToExit } from "../../support/process";
import { waitFor } from "../../support/wait";

const keys = new AuditKeys("audit-unit-test-key-0123456789abcdefghijklmnop");
const verifyAuditChain = (sqlite: Parameters<typeof verifyWith>[0]) => {
  const { head: _head, ...rest } = verifyWith(sqlite, keys) as { head?: unknown } & Record<
    string,
    unknown
  >;
  return rest;
};

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function auditOn(options: { flushIntervalMs?: number; flushBatchSize?: number } = {}) {
  current = buildTestApp();
  const clock = new ManualClock();
  const registry = createMetricsRegistry();
  const logs = new LogCapture();
  const log = new SqliteAuditLog({
    sqlite: current.db.$client,
    clock,
    logger: createLogger({ level: "info", destination: logs }),
    registry,
    keys,
    ...options,
  });
  const count = () =>
    (current!.db.$client.query("SELECT count(*) AS n FROM audit_events").get() as { n: number }).n;
  return { log, clock, count, sqlite: current.db.$client, registry, logs };
}

describe("writing", () => {
  test("ordinary events are batched and written after the flush interval", async () => {
    const { log, count } = auditOn({ flushIntervalMs: 30 });
    log.record({ type: "ratelimit.rejected", outcome: "denied", ip: "192.0.2.1" });
    log.record({ type: "csrf.failed", outcome: "denied" });
    expect(count()).toBe(0);
    const started = performance.now();
    await waitFor(() => count() === 2, { what: "the batch to be written" });
    // Not before the interval (a timer's slack is at most a millisecond early).
    expect(performance.now() - started).toBeGreaterThanOrEqual(28);
    expect(count()).toBe(2);
  });

  test("a full batch is written at once", () => {
    const { log, count } = auditOn({ flushIntervalMs: 60_000, flushBatchSize: 3 });
    for (let i = 0; i < 3; i++) log.record({ type: "request.rejected", outcome: "denied" });
    expect(count()).toBe(3);
  });

  test("must-not-lose events are written before record returns, after what was queued", () => {
    const { log, count, sqlite } = auditOn({ flushIntervalMs: 60_000 });
    log.record({ type: "csrf.failed", outcome: "denied" });
    log.record({ type: "auth.login.failed", outcome: "failure", actor: "a@example.test" });
    expect(count()).toBe(2);
    const types = sqlite.query("SELECT type FROM audit_events ORDER BY id").values().flat();
    expect(types).toEqual(["csrf.failed", "auth.login.failed"]);
  });

  test("a must-not-lose event the file cannot take fails its caller; the queued events that were to go with it are kept", async () => {
    const { log, count, sqlite, registry } = auditOn({ flushIntervalMs: 60_000 });
    log.record({ type: "csrf.failed", outcome: "denied" });
    log.record({ type: "ratelimit.rejected", outcome: "denied", ip: "192.0.2.1" });
    // A full disk, for the must-not-lose event's transaction only (not the busy case).
    sqlite.run(
      "CREATE TRIGGER full_disk BEFORE INSERT ON audit_events WHEN NEW.type = 'auth.locked_out' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    );
    expect(() =>
      log.record({ type: "auth.locked_out", outcome: "denied", actor: "key:k1" }),
    ).toThrow("database or disk is full");
    expect(count()).toBe(0);
    sqlite.run("DROP TRIGGER full_disk");
    log.flush();
    const types = sqlite.query("SELECT type FROM audit_events ORDER BY id").values().flat();
    expect(types).toEqual(["csrf.failed", "ratelimit.rejected"]);
    // Counted as written: the event the file could not take is not.
    const metrics = await registry.metrics();
    expect(metrics).toContain('audit_events_total{type="csrf.failed"} 1');
    expect(metrics).toContain('audit_events_total{type="auth.locked_out"} 0');
  });

  test("a must-not-lose event inside a caller's transaction leaves the queue for the flush; a rollback keeps it", async () => {
    const { log, count, sqlite, registry } = auditOn({ flushIntervalMs: 60_000 });
    log.record({ type: "csrf.failed", outcome: "denied" });
    expect(() =>
      sqlite.transaction(() => {
        log.record({ type: "ip.blocked", outcome: "success", ip: "192.0.2.9" });
        // What a full disk does at the caller's COMMIT.
        throw new Error("database or disk is full");
      })(),
    ).toThrow("database or disk is full");
    expect(count()).toBe(0);
    log.flush();
    const types = sqlite.query("SELECT type FROM audit_events ORDER BY id").values().flat();
    expect(types).toEqual(["csrf.failed"]);
    // The block's event went with its rolled-back transaction: once that has ended, not counted.
    await Bun.sleep(0);
    expect(await registry.metrics()).toContain('audit_events_total{type="ip.blocked"} 0');
    sqlite.transaction(() => log.record({ type: "ip.blocked", outcome: "success" }))();
    await Bun.sleep(0);
    expect(await registry.metrics()).toContain('audit_events_total{type="ip.blocked"} 1');
  });

  test("close flushes the queue", () => {
    const { log, count } = auditOn({ flushIntervalMs: 60_000 });
    log.record({ type: "csrf.failed", outcome: "denied" });
    log.close();
    expect(count()).toBe(1);
  });

  test("secret-named detail keys never reach the table; long values are cut", () => {
    const { log, sqlite } = auditOn();
    log.record({
      type: "admin.key.created",
      outcome: "success",
      detail: {
        name: "bot",
        apiKey: "pal_live_x",
        password: "p",
        token: "t",
        note: "n".repeat(400),
      },
    });
    const { detail } = sqlite.query("SELECT detail FROM audit_events").get() as { detail: string };
    const parsed = JSON.parse(detail);
    expect(Object.keys(parsed).sort()).toEqual(["name", "note"]);
    expect(parsed.note.length).toBe(257);
  });

  test("events are counted in audit_events_total by type", async () => {
    const { log, registry } = auditOn();
    log.record({ type: "auth.login.failed", outcome: "failure" });
    log.record({ type: "auth.login.failed", outcome: "failure" });
    expect(await registry.metrics()).toContain('audit_events_total{type="auth.login.failed"} 2');
  });
});

describe("the hash chain", () => {
  function seeded() {
    const audit = auditOn();
    for (let i = 0; i < 5; i++) {
      audit.log.record({
        type: "admin.key.created",
        outcome: "success",
        actor: `admin${i}@example.test`,
        ip: `192.0.2.${i}`,
        detail: { n: i },
      });
    }
    return audit;
  }

  test("an untouched log verifies", () => {
    const { sqlite } = seeded();
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 5 });
  });

  test("an edited field breaks the chain at that row", () => {
    const { sqlite } = seeded();
    sqlite.run("UPDATE audit_events SET outcome = 'failure' WHERE id = 3");
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 3, checked: 2 });
  });

  test("an edited actor or address is caught through its commitment", () => {
    const { sqlite } = seeded();
    sqlite.run("UPDATE audit_events SET actor = 'someone-else' WHERE id = 2");
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 2 });
  });

  test("a deleted row breaks the chain at the row after it", () => {
    const { sqlite } = seeded();
    sqlite.run("DELETE FROM audit_events WHERE id = 2");
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 3 });
  });

  test("a re-hashed edit is still caught by the next row", () => {
    const { sqlite } = seeded();
    sqlite.run(
      `UPDATE audit_events SET hash = (CASE WHEN substr(hash, 1, 1) = 'f' THEN '0' ELSE 'f' END)
         || substr(hash, 2) WHERE id = 4`,
    );
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 4 });
  });

  test("pseudonymising through the log keeps the chain intact; the same rewrite by hand does not", () => {
    const { sqlite, log } = seeded();
    expect(log.pseudonymise("admin1@example.test", log.pseudonymOf("admin1@example.test"))).toBe(1);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 5 });
    sqlite.run(
      "UPDATE audit_events SET actor = 'erased:1a2b', ip = NULL, subject_salt = NULL WHERE id = 3",
    );
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 3 });
  });

  test("an edited detail is caught through its commitment, and so is a detail and commitment moved to another row", () => {
    const { sqlite } = seeded();
    sqlite.run(`UPDATE audit_events SET detail = '{"n":7}' WHERE id = 2`);
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 2 });
    sqlite.run(`UPDATE audit_events SET detail = '{"n":1}' WHERE id = 2`);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 5 });
    // Row 4's commitment, salt and detail copied onto row 2: the row hash covers the commitment.
    sqlite.run(
      `UPDATE audit_events SET (detail, subject_salt, subject_commit, actor, ip) =
         (SELECT detail, subject_salt, subject_commit, actor, ip FROM audit_events WHERE id = 4)
       WHERE id = 2`,
    );
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 2 });
  });

  test("a detail naming an erased actor is rewritten with an authenticated record; by hand it is not", () => {
    const { sqlite, log } = seeded();
    log.record({
      type: "admin.usage.queried",
      outcome: "success",
      actor: "admin0@example.test",
      ip: "192.0.2.50",
      detail: { principal: "user:u-1", day: "2026-01-01" },
    });
    log.record({
      type: "admin.key.created",
      outcome: "success",
      actor: "admin0@example.test",
      detail: { keyId: "k-1", name: "alice laptop" },
    });
    log.flush();
    // Erasure finds them by the names written with them, not by reading every row.
    expect(
      sqlite.query("SELECT name, event_id AS id FROM audit_event_names ORDER BY id").all(),
    ).toEqual([
      { name: "user:u-1", id: 6 },
      { name: "key:k-1", id: 7 },
    ]);
    const pseudonym = log.pseudonymOf("user:u-1");
    expect(log.pseudonymise("user:u-1", pseudonym)).toBe(1);
    expect(log.pseudonymise("key:k-1", pseudonym)).toBe(1);
    const rows = sqlite
      .query("SELECT actor, ip, detail FROM audit_events WHERE id > 5 ORDER BY id")
      .all();
    expect(rows).toEqual([
      {
        actor: "admin0@example.test",
        ip: "192.0.2.50",
        detail: JSON.stringify({ day: "2026-01-01", principal: pseudonym }),
      },
      {
        actor: "admin0@example.test",
        ip: null,
        detail: JSON.stringify({ keyId: pseudonym, name: null }),
      },
    ]);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 7 });
    expect(sqlite.query("SELECT count(*) AS n FROM audit_event_names").get()).toEqual({ n: 0 });
    // The same rewrite of another row's detail by hand: refused.
    sqlite.run(
      `UPDATE audit_events SET detail = '{"n":"${pseudonym}"}', subject_salt = NULL WHERE id = 2`,
    );
    expect(verifyAuditChain(sqlite)).toMatchObject({ ok: false, badId: 2 });
  });

  test("rows written before details were committed still verify; erasure rewrites their actor and address, not their detail", () => {
    const { sqlite, log } = seeded();
    // Rows 6 and 7 as the release before wrote them: the detail in the row hash, the commitment
    // over actor and address only.
    const last = sqlite.query("SELECT hash FROM audit_events WHERE id = 5").get() as {
      hash: string;
    };
    let prevHash = last.hash;
    for (const [id, actor, detail] of [
      [6, "user:u-2", '{"n":6}'],
      [7, "admin0@example.test", '{"principal":"user:u-2"}'],
    ] as const) {
      const salt = newSalt();
      const fields = {
        id,
        at: 1_700_000_000_000 + id,
        type: "admin.key.created",
        route: null,
        requestId: null,
        outcome: "success",
        detail,
        subjectCommit: subjectCommit(salt, actor, "192.0.2.9"),
      };
      const hash = keys.rowHash(prevHash, fields);
      sqlite.run(
        `INSERT INTO audit_events (id, at, type, actor, ip, route, request_id, outcome, detail,
           subject_salt, subject_commit, prev_hash, hash, key_id)
         VALUES (?, ?, ?, ?, '192.0.2.9', NULL, NULL, 'success', ?, ?, ?, ?, ?, ?)`,
        [
          id,
          fields.at,
          fields.type,
          actor,
          detail,
          salt,
          fields.subjectCommit,
          prevHash,
          hash,
          keys.keyId,
        ],
      );
      prevHash = hash;
    }
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 7 });
    // A new row follows them on the same chain.
    log.record({ type: "admin.key.created", outcome: "success", actor: "x", detail: { n: 8 } });
    log.flush();
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 8 });
    const pseudonym = log.pseudonymOf("user:u-2");
    expect(log.pseudonymise("user:u-2", pseudonym)).toBe(1);
    const rows = sqlite
      .query("SELECT actor, ip, detail FROM audit_events WHERE id IN (6, 7) ORDER BY id")
      .all();
    expect(rows).toEqual([
      { actor: pseudonym, ip: null, detail: '{"n":6}' },
      { actor: "admin0@example.test", ip: "192.0.2.9", detail: '{"principal":"user:u-2"}' },
    ]);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 8 });
  });

  test("retention deletes old rows from the start and leaves a checkpoint that verifies", () => {
    const { log, clock, sqlite } = auditOn();
    for (let i = 0; i < 4; i++)
      log.record({ type: "admin.key.created", outcome: "success", detail: { i, keyId: `k${i}` } });
    clock.advance(10 * 24 * 60 * 60 * 1000);
    for (let i = 0; i < 3; i++)
      log.record({ type: "admin.key.revoked", outcome: "success", detail: { i, keyId: `n${i}` } });
    const cutoff = clock.now() - 24 * 60 * 60 * 1000;
    expect(log.prune(cutoff, clock.now(), 3)).toBe(3);
    expect(log.prune(cutoff, clock.now(), 3)).toBe(1);
    expect(log.prune(cutoff, clock.now(), 3)).toBe(0);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 3 });
    // The names the deleted rows' details gave go with them.
    expect(
      sqlite.query("SELECT name FROM audit_event_names ORDER BY name").values().flat(),
    ).toEqual(["key:n0", "key:n1", "key:n2"]);
    // New rows continue the chain after the checkpoint even if every old row is gone.
    log.record({ type: "admin.key.rotated", outcome: "success" });
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 4 });
    // Deleting the oldest kept row by hand, without a checkpoint, is caught.
    sqlite.run("DELETE FROM audit_events WHERE id = (SELECT min(id) FROM audit_events)");
    expect(verifyAuditChain(sqlite).ok).toBe(false);
  });

  test("retention stops at the first row still inside retention: a row stamped while the clock stood back takes no recent rows with it (probe 27e F1)", () => {
    const { log, clock, sqlite } = auditOn();
    log.record({ type: "admin.key.created", outcome: "success" });
    log.flush();
    clock.advance(10 * 24 * 60 * 60 * 1000);
    for (let i = 0; i < 3; i++) log.record({ type: "auth.login.succeeded", outcome: "success" });
    // Written with the clock set 200 days back, after recent rows.
    log.record({ type: "auth.logout", outcome: "success", at: clock.now() - 200 * 86_400_000 });
    log.record({ type: "auth.login.failed", outcome: "failure" });
    log.flush();
    const cutoff = clock.now() - 24 * 60 * 60 * 1000;
    expect(log.prune(cutoff, clock.now())).toBe(1);
    expect(log.prune(cutoff, clock.now())).toBe(0);
    expect(sqlite.query("SELECT type FROM audit_events ORDER BY id").values().flat()).toEqual([
      "auth.login.succeeded",
      "auth.login.succeeded",
      "auth.login.succeeded",
      "auth.logout",
      "auth.login.failed",
    ]);
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 5 });
  });

  test("a first row stamped in the future holds retention back, and says so once (probe 27g F2)", () => {
    const { log, clock, sqlite, logs } = auditOn();
    const year = 365 * 86_400_000;
    log.record({ type: "auth.logout", outcome: "success", at: clock.now() + 5 * year });
    log.record({ type: "auth.login.failed", outcome: "failure" });
    log.flush();
    clock.advance(200 * 86_400_000);
    const cutoff = clock.now() - 90 * 86_400_000;
    expect(log.prune(cutoff, clock.now())).toBe(0);
    expect(log.prune(cutoff, clock.now())).toBe(0);
    expect(sqlite.query("SELECT count(*) AS n FROM audit_events").get()).toEqual({ n: 2 });
    const held = logs.entries.filter((entry) =>
      String(entry.msg).startsWith("audit retention waits"),
    );
    expect(held).toHaveLength(1);
    expect(held[0]).toMatchObject({ level: "warn", id: 1 });
  });

  test("two logs on one file (two processes) append to one chain", () => {
    const { log, sqlite } = auditOn();
    const other = new SqliteAuditLog({
      sqlite,
      clock: new ManualClock(),
      logger: createLogger({ level: "info", destination: new LogCapture() }),
      keys,
    });
    for (let i = 0; i < 4; i++) {
      (i % 2 ? log : other).record({ type: "auth.login.succeeded", outcome: "success" });
    }
    expect(verifyAuditChain(sqlite)).toEqual({ ok: true, checked: 4 });
  });
});

describe("a database locked until the process stops", () => {
  test("the events it could not write are named in the log by type and request id", () => {
    current = buildTestApp();
    const logs = new LogCapture();
    const log = new SqliteAuditLog({
      sqlite: current.db.$client,
      clock: new ManualClock(),
      logger: createLogger({ level: "info", destination: logs }),
      keys,
    });
    const other = new Database(current.databasePath);
    other.run("PRAGMA busy_timeout = 0");
    other.run("BEGIN IMMEDIATE");
    try {
      current.db.$client.run("PRAGMA busy_timeout = 0");
      log.record({ type: "ratelimit.rejected", outcome: "denied", requestId: "req-a" });
      expect(() =>
        log.record({ type: "payment.refund", outcome: "success", requestId: "req-b" }),
      ).toThrow();
      log.close();
    } finally {
      other.run("ROLLBACK");
      other.close();
    }
    const lost = logs.entries.find(
      (entry) => entry.msg === "audit events lost at shutdown: the database stayed locked",
    );
    expect(lost).toMatchObject({
      lost: 2,
      types: { "payment.refund": 1, "ratelimit.rejected": 1 },
      requestIds: expect.arrayContaining(["req-a", "req-b"]),
    });
  });
});

describe("CLI", () => {
  test("audit:tail prints recent events and audit:verify passes, then fails after an edit", async () => {
    const { log, sqlite } = auditOn();
    log.record({ type: "auth.login.failed", outcome: "failure", actor: "eve@example.test" });
    log.record({ type: "ip.blocked", outcome: "success", ip: "192.0.2.9" });
    const env = {
      DATABASE_PATH: current!.databasePath,
      AUDIT_SECRET_KEY: "audit-unit-test-key-0123456789abcdefghijklmnop",
    };
    const tail = await runToExit(["bun", "run", "src/cli/index.ts", "audit:tail"], env);
    expect(tail.code).toBe(0);
    const lines = tail.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain("auth.login.failed");
    expect(lines[0]).toContain("actor=eve@example.test");
    expect(lines[1]).toContain("ip=192.0.2.9");
    const json = await runToExit(["bun", "run", "src/cli/index.ts", "audit:tail", "--json"], env);
    expect(JSON.parse(json.stdout.split("\n")[0]!)).toMatchObject({ type: "auth.login.failed" });

    const ok = await runToExit(["bun", "run", "src/cli/index.ts", "audit:verify"], env);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("audit chain intact: 2 rows verified");

    sqlite.run("UPDATE audit_events SET type = 'auth.login.succeeded' WHERE id = 1");
    const broken = await runToExit(["bun", "run", "src/cli/index.ts", "audit:verify"], env);
    expect(broken.code).toBe(1);
    expect(broken.stderr.trim()).toBe(
      "palisade audit:verify: chain broken at row 1 (its fields were altered); 0 rows before it verified",
    );
  });

  test("blocks:list shows the blocks in force", async () => {
    current = buildTestApp();
    current.services.ipBlocks.block({
      address: "192.0.2.44",
      reason: "manual test",
      ttlMs: 60_000,
      source: "admin",
      createdBy: "ops",
    });
    const env = { DATABASE_PATH: current.databasePath };
    const result = await runToExit(["bun", "run", "src/cli/index.ts", "blocks:list"], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("192.0.2.44");
    expect(result.stdout).toContain("admin by ops  manual test");
  });
});

describe("event types", () => {
  test("are a closed list: an unlisted type does not compile", () => {
    const { log, count } = auditOn({ flushIntervalMs: 60_000 });
    // @ts-expect-error: "auth.made_up" is not in AUDIT_EVENT_TYPES (tsc --noEmit fails if it were)
    const unlisted: AuditEvent = { type: "auth.made_up", outcome: "info" };
    expect(AUDIT_EVENT_TYPES).not.toContain(unlisted.type as AuditEventType);
    for (const type of AUDIT_EVENT_TYPES) log.record({ type, outcome: "info" });
    log.close();
    expect(count()).toBe(AUDIT_EVENT_TYPES.length);
    expect(new Set(AUDIT_EVENT_TYPES).size).toBe(AUDIT_EVENT_TYPES.length);
  });
});

describe("a database locked for a while (probe 85f F5)", () => {
  test("a deferred flush is said when it starts, then once every 10 s with the tries since, not at every try", () => {
    const { log, clock, sqlite, logs } = auditOn({ flushIntervalMs: 60_000 });
    const other = new Database(current!.databasePath);
    other.run("PRAGMA busy_timeout = 0");
    other.run("BEGIN IMMEDIATE");
    try {
      sqlite.run("PRAGMA busy_timeout = 0");
      log.record({ type: "ratelimit.rejected", outcome: "denied", ip: "192.0.2.1" });
      // Seven tries a second for 25 s.
      for (let i = 0; i < 175; i++) {
        log.flush();
        clock.advance(1000 / 7);
      }
    } finally {
      other.run("ROLLBACK");
      other.close();
    }
    const said = logs.entries.filter(
      (entry) => entry.msg === "audit flush deferred: the database is locked",
    );
    expect(said.map((entry) => entry.tries)).toEqual([1, 70, 70]);
    log.flush();
    expect((sqlite.query("SELECT count(*) AS n FROM audit_events").get() as { n: number }).n).toBe(
      1,
    );
    log.close();
  });
});

test("a refused request's path is kept in its row cut to 256 characters, scrubbed whole first (probe 89b F2: a 3,000-character path made each refusal's row ~1 KB)", async () => {
  // A configured secret: the scrubber knows its value.
  const secret = "Tq7vXz2LmW9pRk4sYb8nHc3dJf6gAe1u";
  current = buildTestApp({
    env: { RATE_LIMIT_PER_MINUTE: "1", RATE_LIMIT_BURST: "1", METRICS_TOKEN: secret },
  });
  const target = current;
  // The secret straddles the cut: nothing of it may stay.
  const path = `/${"p".repeat(240)}${secret}${"q".repeat(3000)}`;
  for (let i = 0; i < 2; i++) await send(target, path, { peer: "203.0.113.90" });
  target.services.audit.flush();
  const row = target.db.$client
    .query<{ route: string }, []>(
      "SELECT route FROM audit_events WHERE type = 'ratelimit.rejected' ORDER BY id DESC LIMIT 1",
    )
    .get()!;
  expect(row.route.length).toBeLessThanOrEqual(256 + 1);
  expect(row.route).toStartWith(`GET /${"p".repeat(240)}`);
  expect(row.route).not.toContain(secret.slice(0, 8));
});
