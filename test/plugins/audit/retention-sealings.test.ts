/**
 * Retention and the events that say a file went through an upgrade's sealing: the log is never
 * left without one of each kind it held, so a file put back before a sealing, once retention has
 * passed over the first one, is still said as `db.resealed` (probe 65 F1).
 */
import { afterEach, expect, test } from "bun:test";
import type { SealingEventType } from "../../../src/plugins/audit/events";
import { buildTestApp, type TestApp } from "../../support/app";
import { cliInProcess } from "../../support/cli";
import { ManualClock } from "../../support/clock";
import { putBackBefore } from "../../support/migrations";
import { metricValue } from "../../support/payments";

const AUDIT_KEY = "retention-sealings-7d2a9c41e8b05f36a1d4c7e92b60f83e";
const DAY_MS = 24 * 60 * 60 * 1000;

let current: TestApp | null = null;
afterEach(() => {
  current?.close();
  current = null;
});

function rowsOf(app: TestApp) {
  return app.db.$client
    .query<{ id: number; type: string; detail: string }, []>(
      "SELECT id, type, detail FROM audit_events ORDER BY id",
    )
    .all()
    .map((row) => ({ ...row, detail: JSON.parse(row.detail) }));
}

test("retention that deletes the last event of a sealing writes it again on the chain, in its transaction; the chain verifies and a put-back re-run is said as db.resealed", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY }, clock });
  const app = current;
  const { audit } = app.services;
  const record = (type: SealingEventType | "auth.logout", n: number) =>
    audit.record({ type, outcome: "success", actor: "system", detail: { n } });
  record("payment.undecided_sealed", 1);
  record("payment.undecided_sealed", 2);
  record("auth.logout", 3);
  record("whatsapp.outbox_offsets_sealed", 4);
  audit.flush();
  clock.advance(10 * DAY_MS);
  record("whatsapp.outbox_offsets_sealed", 5);
  audit.flush();
  const carriedBefore = await metricValue(app, "audit_events_total", {
    type: "payment.undecided_sealed",
  });

  // The first four expire: the newest payment.undecided_sealed (row 2) goes with them, and an
  // outbox offsets' event (row 4) whose kind a later row (5) still says: each kind is carried once.
  expect(audit.prune(clock.now() - DAY_MS, clock.now())).toBe(4);
  expect(rowsOf(app).map(({ type, detail }) => ({ type, detail }))).toEqual([
    { type: "whatsapp.outbox_offsets_sealed", detail: { n: 5 } },
    { type: "payment.undecided_sealed", detail: { carriedForwardFrom: 2 } },
    { type: "whatsapp.outbox_offsets_sealed", detail: { carriedForwardFrom: 4 } },
  ]);
  expect(await metricValue(app, "audit_events_total", { type: "payment.undecided_sealed" })).toBe(
    carriedBefore + 1,
  );
  const env = { DATABASE_PATH: app.databasePath, AUDIT_SECRET_KEY: AUDIT_KEY };
  const verified = await cliInProcess(["audit:verify"], env);
  expect(verified.stderr).toBe("");
  expect(verified.code).toBe(0);

  // Everything expired later: the carried event is carried again, the chain still verifies.
  clock.advance(20 * DAY_MS);
  expect(audit.prune(clock.now() - DAY_MS, clock.now())).toBe(3);
  expect(rowsOf(app).map(({ type, detail }) => ({ type, detail }))).toEqual([
    { type: "payment.undecided_sealed", detail: { carriedForwardFrom: 6 } },
    { type: "whatsapp.outbox_offsets_sealed", detail: { carriedForwardFrom: 7 } },
  ]);
  expect((await cliInProcess(["audit:verify"], env)).code).toBe(0);

  putBackBefore(app.db.$client, 28);
  const rerun = await cliInProcess(["users:list"], env);
  expect(rerun.stderr).toContain(
    "the database file was sealed by this release before (1 earlier payment.undecided_sealed in its audit log)",
  );
  expect(rowsOf(app).filter((row) => row.type === "db.resealed")).toHaveLength(2);
});

test("retention carries a sealing event it deletes even when a later one of its kind is kept: that later row is not checked, and its type could have been changed in the file for the deletion (probe 66 F2)", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ env: { AUDIT_SECRET_KEY: AUDIT_KEY }, clock });
  const app = current;
  const { audit } = app.services;
  audit.record({ type: "payment.ledger_sealed", outcome: "success", actor: "system" });
  audit.record({ type: "auth.logout", outcome: "success", actor: "user:1" });
  audit.flush();
  clock.advance(10 * DAY_MS);
  audit.record({ type: "auth.logout", outcome: "success", actor: "user:1" });
  audit.flush();
  // Row 3 made to look like a later sealing event for the deletion, and put back after it.
  app.db.$client.run("UPDATE audit_events SET type = 'payment.ledger_sealed' WHERE id = 3");
  expect(audit.prune(clock.now() - 5 * DAY_MS, clock.now())).toBe(2);
  app.db.$client.run("UPDATE audit_events SET type = 'auth.logout' WHERE id = 3");
  expect(rowsOf(app).map(({ type, detail }) => ({ type, detail }))).toEqual([
    { type: "auth.logout", detail: {} },
    { type: "payment.ledger_sealed", detail: { carriedForwardFrom: 1 } },
  ]);
  const env = { DATABASE_PATH: app.databasePath, AUDIT_SECRET_KEY: AUDIT_KEY };
  expect((await cliInProcess(["audit:verify"], env)).code).toBe(0);
});
