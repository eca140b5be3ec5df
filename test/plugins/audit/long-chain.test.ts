/**
 * Verification reads the chain a page (1,000 rows) at a time inside one read transaction. A chain
 * longer than a page must verify whole, a fault on either side of a page boundary must be found at
 * its row, and retention (which verifies the rows it deletes first) must work across pages.
 */
import { afterEach, expect, test } from "bun:test";
import { createLogger } from "../../../src/logging/logger";
import { AuditKeys } from "../../../src/plugins/audit/chain";
import { SqliteAuditLog, verifyAuditChain } from "../../../src/plugins/audit/log";
import { buildTestApp, LogCapture, type TestApp } from "../../support/app";
import { ManualClock } from "../../support/clock";

const keys = new AuditKeys("audit-unit-test-key-0123456789abcdefghijklmnop");
const ROWS = 2_500;

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function longChain() {
  current = buildTestApp();
  const clock = new ManualClock();
  const log = new SqliteAuditLog({
    sqlite: current.db.$client,
    clock,
    logger: createLogger({ level: "info", destination: new LogCapture() }),
    keys,
    flushBatchSize: 1_000_000,
  });
  for (let i = 0; i < ROWS; i++) {
    log.record({
      type: "request.rejected",
      outcome: "success",
      actor: `user:${i}`,
      ip: "192.0.2.1",
    });
    clock.advance(1);
  }
  log.flush();
  return { log, clock, sqlite: current.db.$client };
}

test("a chain longer than one page verifies whole, and its head is the last row", () => {
  const { sqlite } = longChain();
  const result = verifyAuditChain(sqlite, keys);
  const last = sqlite.query("SELECT hash FROM audit_events WHERE id = ?").get(ROWS) as {
    hash: string;
  };
  expect(result).toEqual({ ok: true, checked: ROWS, head: { hash: last.hash, count: ROWS } });
});

test("an edit on either side of a page boundary is found at its row", () => {
  const { sqlite } = longChain();
  for (const id of [1000, 1001, 2001]) {
    sqlite.run("UPDATE audit_events SET outcome = 'failure' WHERE id = ?", [id]);
    expect(verifyAuditChain(sqlite, keys)).toMatchObject({ ok: false, badId: id, checked: id - 1 });
    sqlite.run("UPDATE audit_events SET outcome = 'success' WHERE id = ?", [id]);
  }
  // A row deleted right at a boundary leaves a gap the next page starts with.
  sqlite.run("DELETE FROM audit_events WHERE id = 1001");
  expect(verifyAuditChain(sqlite, keys)).toMatchObject({ ok: false, badId: 1002, checked: 1000 });
});

test("retention over more than a page deletes from the start behind a checkpoint that verifies", () => {
  const { log, clock, sqlite } = longChain();
  const start = clock.now() - ROWS;
  // Rows older than start + 1,500 ms: the first 1,500.
  expect(log.prune(start + 1_500, clock.now())).toBe(1_500);
  const count = sqlite.query("SELECT count(*) AS n, min(id) AS first FROM audit_events").get();
  expect(count).toEqual({ n: ROWS - 1_500, first: 1_501 });
  expect(verifyAuditChain(sqlite, keys)).toMatchObject({ ok: true, checked: ROWS - 1_500 });
});
