/**
 * Rate-limit refusals (those that can block and those that block nobody alike, since probe 89b F2)
 * are audited once per key and window, and the keys remembered for that are bounded: a flood
 * cycling through more keys than the bound must not be audited once per request again.
 */
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { openDatabase } from "../../../src/db/client";
import { applyMigrations } from "../../../src/db/migrate";
import { createLogger } from "../../../src/logging/logger";
import type { AuditEvent } from "../../../src/plugins/audit/events";
import type { AuditLog } from "../../../src/plugins/audit/log";
import { createMetricsRegistry } from "../../../src/plugins/metrics/registry";
import { createLimitEnforcer } from "../../../src/plugins/rate-limit/enforce";
import { createRateLimitMetrics } from "../../../src/plugins/rate-limit/metrics";
import type { Policy } from "../../../src/plugins/rate-limit/policies";
import { SqliteLimiterStore } from "../../../src/plugins/rate-limit/sqlite-store";
import { LogCapture, tempDir } from "../../support/app";
import { ManualClock } from "../../support/clock";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0)) cleanup();
});

/** One request a minute per key; refusals block nobody. */
const POLICY: Policy = {
  id: "default",
  limit: 1,
  windowMs: 60_000,
  burstLimit: 1,
  failClosed: false,
};

function enforcer(auditedKeys: number) {
  const dir = tempDir();
  const db = openDatabase(join(dir.path, "limits.db"));
  applyMigrations(db);
  const store = new SqliteLimiterStore({ sqlite: db.$client });
  cleanups.push(() => {
    store.close();
    db.$client.close();
    dir.remove();
  });
  const clock = new ManualClock();
  const audited: AuditEvent[] = [];
  const audit = {
    record: (event: AuditEvent) => audited.push(event),
    beforeClose: () => {},
  } as unknown as AuditLog;
  const registry = createMetricsRegistry();
  const metrics = createRateLimitMetrics(registry);
  const enforce = createLimitEnforcer({
    store,
    clock,
    logger: createLogger({ level: "warn", destination: new LogCapture() }),
    audit,
    metrics,
    auditedKeys,
  });
  const request = async (ip: string, policy: Policy = POLICY) => {
    const client = { ip, key: ip } as Parameters<typeof enforce>[2]["client"];
    try {
      await enforce([policy], `ip:${ip}`, { method: "GET", path: "/x", client, requestId: "r" });
      return 200;
    } catch {
      return 429;
    }
  };
  const refusals = async () => (await metrics.rejections.get()).values[0]?.value ?? 0;
  return { request, audited, clock, refusals };
}

test("a flood cycling through more keys than are remembered is audited at most once per remembered key", async () => {
  const { request, audited, refusals } = enforcer(100);
  const addresses = Array.from({ length: 150 }, (_, i) => `203.0.113.${i}`);
  for (const ip of addresses) expect(await request(ip)).toBe(200);
  for (let pass = 0; pass < 3; pass++) {
    for (const ip of addresses) expect(await request(ip)).toBe(429);
  }
  // 450 refusals, all counted; 100 audited, one each for the first 100 keys.
  expect(await refusals()).toBe(450);
  expect(audited).toHaveLength(100);
  expect(new Set(audited.map((event) => event.ip)).size).toBe(100);
});

test("once the remembered keys' windows pass they are forgotten and new keys are audited again", async () => {
  const { request, audited, clock } = enforcer(2);
  for (const ip of ["198.51.100.1", "198.51.100.2", "198.51.100.3"]) {
    await request(ip);
    await request(ip);
    await request(ip);
  }
  expect(audited.map((event) => event.ip)).toEqual(["198.51.100.1", "198.51.100.2"]);
  // Past the window (and the minute after it that the sliding estimate still weighs).
  clock.advance(121_000);
  for (const ip of ["198.51.100.3", "198.51.100.3", "198.51.100.3"]) await request(ip);
  expect(audited.map((event) => event.ip)).toEqual([
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
  ]);
});

test("a flood on one policy does not keep another policy's refusals out of the audit log", async () => {
  const { request, audited } = enforcer(50);
  const login: Policy = { ...POLICY, id: "login" };
  for (let i = 0; i < 60; i++) {
    await request(`203.0.113.${i}`);
    await request(`203.0.113.${i}`);
  }
  expect(audited).toHaveLength(50);
  // The default policy's bound is full; a refused login is still audited.
  await request("198.51.100.9", login);
  await request("198.51.100.9", login);
  expect(audited.at(-1)).toMatchObject({ ip: "198.51.100.9", detail: { policy: "login" } });
});
