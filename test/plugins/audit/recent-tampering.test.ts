/**
 * `audit_tamper_events_recent{type}`: the tampering events the file's audit log holds from the
 * last hour, whichever process recorded them — a CLI command's `db.resealed` pages like the
 * service's own (grafana/src/alerts.ts).
 */
import { expect, test } from "bun:test";
import { TAMPER_EVENT_TYPES } from "../../../src/plugins/audit/events";
import { secondProcess, send } from "../../support/app";
import { appClosedAfter, cleanupsAfterEach } from "../../support/cleanups";
import { ManualClock } from "../../support/clock";

const cleanups = cleanupsAfterEach();

async function scrape(target: Parameters<typeof send>[0]) {
  return (await send(target, "/metrics", { peer: "127.0.0.1" })).text();
}

test("an event another process recorded is on this process's /metrics for an hour; its own counter does not have it", async () => {
  const clock = new ManualClock();
  const target = appClosedAfter(cleanups, { clock });
  const before = await scrape(target);
  // Every type is there from the start, at 0: an alert's selector finds its series.
  for (const type of TAMPER_EVENT_TYPES) {
    expect(before).toContain(`audit_tamper_events_recent{type="${type}"} 0`);
  }
  const other = secondProcess(target, clock);
  cleanups.push(other.close);
  other.services.audit.record({
    type: "db.resealed",
    outcome: "failure",
    actor: "system",
    detail: { kind: "ip.blocks_sealed", earlier: 1 },
  });
  other.services.audit.record({ type: "auth.logout", outcome: "success", actor: "user:u" });
  other.services.audit.flush();
  const after = await scrape(target);
  expect(after).toContain('audit_tamper_events_recent{type="db.resealed"} 1');
  expect(after).toContain('audit_events_total{type="db.resealed"} 0');
  clock.advance(60 * 60 * 1000 + 1);
  expect(await scrape(target)).toContain('audit_tamper_events_recent{type="db.resealed"} 0');
});

test("a row written into the file with a tampering type counts only within the last hour and five minutes ahead: one stamped years ahead fires nothing for good, and a thousand forged rows hide no real event (probes 89a F4, 89d F4)", async () => {
  const clock = new ManualClock();
  const target = appClosedAfter(cleanups, { clock });
  target.services.audit.record({
    type: "db.resealed",
    outcome: "failure",
    actor: "system",
    detail: { kind: "ip.blocks_sealed", earlier: 1 },
  });
  target.services.audit.flush();
  const sqlite = target.db.$client;
  const genuine = sqlite
    .query<{ id: number }, []>("SELECT id FROM audit_events WHERE type = 'db.resealed'")
    .get()!;
  const columns = (
    sqlite.query("SELECT name FROM pragma_table_info('audit_events')").all() as { name: string }[]
  )
    .map((column) => column.name)
    .filter((name) => !["id", "at", "type"].includes(name));
  const plant = (id: number, type: string, at: number) =>
    sqlite.run(
      `INSERT INTO audit_events (id, at, type, ${columns.join(", ")})
       SELECT ?, ?, ?, ${columns.join(", ")} FROM audit_events WHERE id = ?`,
      [id, at, type, genuine.id],
    );
  // Stamped an hour and ten years ahead: neither counts.
  plant(1_000_000, "auth.credential_tampered", clock.now() + 60 * 60_000);
  plant(1_000_001, "auth.credential_tampered", clock.now() + 10 * 365 * 24 * 60 * 60_000);
  // A thousand forged rows of another type stamped just before the real one: each counts (it is
  // tampering itself), and the real one still does.
  sqlite.transaction(() => {
    for (let i = 0; i < 1000; i++) plant(2_000_000 + i, "ip.block_tampered", clock.now() - 1);
  })();
  const metrics = await scrape(target);
  expect(metrics).toContain('audit_tamper_events_recent{type="auth.credential_tampered"} 0');
  expect(metrics).toContain('audit_tamper_events_recent{type="ip.block_tampered"} 1000');
  expect(metrics).toContain('audit_tamper_events_recent{type="db.resealed"} 1');
  // Two hours on, every one of them has resolved (the one an hour ahead counted in its own hour);
  // the one ten years ahead never fires.
  clock.advance(2 * 60 * 60_000 + 1);
  const later = await scrape(target);
  expect(later).toContain('audit_tamper_events_recent{type="auth.credential_tampered"} 0');
  expect(later).toContain('audit_tamper_events_recent{type="ip.block_tampered"} 0');
});
