/**
 * @module
 * Micro figures, in process, many iterations each: the IP-block lookup every request makes (a hit
 * among 1,000 active blocks and a miss), the access-token signature check alone (jose HS256 with
 * the claims checks, no database), an audit write (a batched refusal event, flushed every 500, and
 * a must-keep event written before `record` returns), and one request's HTTP metrics observation.
 * The limiter store, credentials and argon2id figures are in limiter.ts and auth.ts.
 */
import { Writable } from "node:stream";
import { loadConfig } from "../src/config";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import { createLogger } from "../src/logging/logger";
import { signAccessToken, signingKeys, verifyAccessToken } from "../src/plugins/auth/tokens";
import { createServices } from "../src/services";

export interface MicroResults {
  ipBlockHit: number;
  ipBlockMiss: number;
  jwtVerify: number;
  auditBatched: number;
  auditMustKeep: number;
  metricsObserve: number;
}

async function perSecond(iterations: number, fn: (i: number) => unknown): Promise<number> {
  const warm = Math.min(1_000, iterations);
  for (let i = 0; i < warm; i++) await fn(i);
  const started = performance.now();
  for (let i = 0; i < iterations; i++) await fn(i);
  return Math.round(iterations / ((performance.now() - started) / 1000));
}

export async function measureMicro(dir: string, iterations: number): Promise<MicroResults> {
  const config = loadConfig({
    APP_ENV: "development",
    JWT_SECRET_KEY: "bench-jwt-secret-0123456789abcdefghijklmnopq",
    CSRF_SECRET_KEY: "bench-csrf-secret-0123456789abcdefghijklmnop",
    DATABASE_PATH: `${dir}/micro.db`,
  });
  const db = openDatabase(config.databasePath);
  applyMigrations(db);
  const logger = createLogger({
    level: "error",
    destination: new Writable({ write: (_c, _e, d) => d() }),
  });
  const services = createServices({ config, db, logger, maintenanceIntervalMs: 0 });
  try {
    for (let i = 0; i < 1_000; i++) {
      services.ipBlocks.block({
        address: `10.9.${i >> 8}.${i & 255}`,
        reason: "bench",
        ttlMs: 3_600_000,
        source: "admin",
      });
    }
    const ipBlockHit = await perSecond(iterations, (i) =>
      services.ipBlocks.blockedUntil(`10.9.${(i % 1_000) >> 8}.${i & 255}`),
    );
    const ipBlockMiss = await perSecond(iterations, (i) =>
      services.ipBlocks.blockedUntil(`192.0.2.${i & 255}`),
    );

    const keys = signingKeys(config.jwt.secretKey, null);
    const token = await signAccessToken(
      keys.current,
      { sub: "u1", role: "user", fam: "f1" },
      Date.now(),
      3600,
    );
    const jwtVerify = await perSecond(iterations, () =>
      verifyAccessToken(keys, token, Date.now(), 3600),
    );

    const auditBatched = await perSecond(iterations, (i) => {
      services.audit.record({
        type: "ratelimit.rejected",
        outcome: "denied",
        ip: "192.0.2.1",
        route: "GET /bench",
        detail: { policy: "default" },
      });
      if (i % 500 === 499) services.audit.flush();
    });
    services.audit.flush();
    // Each is its own transaction, written before record returns: fewer of them.
    const auditMustKeep = await perSecond(Math.min(iterations / 10, 5_000), () =>
      services.audit.record({
        type: "auth.login.failed",
        outcome: "failure",
        actor: "user-1",
        ip: "192.0.2.1",
        route: "POST /api/auth/login",
      }),
    );

    const routes = ["/health", "/bench", "/api/auth/me", "/api/chat"];
    const metricsObserve = await perSecond(iterations * 10, (i) =>
      services.metrics.http.observe("GET", routes[i & 3]!, 200, 0.0004),
    );
    return { ipBlockHit, ipBlockMiss, jwtVerify, auditBatched, auditMustKeep, metricsObserve };
  } finally {
    services.close();
    db.$client.close();
  }
}
