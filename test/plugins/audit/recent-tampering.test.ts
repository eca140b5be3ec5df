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
