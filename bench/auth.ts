/**
 * Credential costs: an argon2id login (Bun's default parameters, as in production), access-token
 * verification with and without the verified-token cache, and API-key verification (cached, and
 * the prefix lookup plus hash compare of a first sight).
 */
import { Writable } from "node:stream";
import { loadConfig } from "../src/config";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import { createLogger } from "../src/logging/logger";
import { hashPassword, verifyPassword } from "../src/modules/auth/passwords";
import { CredentialVerifier } from "../src/plugins/auth/credentials";
import { signAccessToken, signingKey } from "../src/plugins/auth/tokens";
import { createServices } from "../src/services";
import { benchFamily } from "./family";

function perSecond(count: number, ms: number) {
  return Math.round(count / (ms / 1000));
}

export async function measureAuth(
  dir: string,
  iterations: number,
  firstSights = 2_000,
  logins = 10,
) {
  const hash = await hashPassword("violet-Harbor-quantum-73!");
  let started = performance.now();
  for (let i = 0; i < logins; i++) await verifyPassword("violet-Harbor-quantum-73!", hash);
  const loginMs = (performance.now() - started) / logins;

  const config = loadConfig({
    APP_ENV: "development",
    JWT_SECRET_KEY: "bench-jwt-secret-0123456789abcdefghijklmnopq",
    CSRF_SECRET_KEY: "bench-csrf-secret-0123456789abcdefghijklmnop",
    DATABASE_PATH: `${dir}/auth.db`,
  });
  const db = openDatabase(config.databasePath);
  applyMigrations(db);
  const logger = createLogger({
    level: "error",
    destination: new Writable({ write: (_c, _e, d) => d() }),
  });
  const services = createServices({ config, db, logger, maintenanceIntervalMs: 0 });
  const key = signingKey(config.jwt.secretKey);
  // A token is accepted only for a family the database knows: give it one.
  benchFamily(db.$client, "u1", "f1");
  const token = await signAccessToken(
    key,
    { sub: "u1", role: "user", fam: "f1" },
    Date.now(),
    3600,
  );
  const uncached = new CredentialVerifier({
    sqlite: db.$client,
    clock: services.clock,
    signingKeys: { current: key, previous: null },
    accessTokenTtlMs: 3_600_000,
    cacheTokens: false,
  });

  const time = async (fn: () => unknown | Promise<unknown>) => {
    for (let i = 0; i < 1000; i++) await fn();
    const t = performance.now();
    for (let i = 0; i < iterations; i++) await fn();
    return perSecond(iterations, performance.now() - t);
  };
  const tokenCached = await time(() => services.credentials.verifyAccessToken(token, "bearer"));
  const tokenUncached = await time(() => uncached.verifyAccessToken(token, "bearer"));

  const { key: apiKey } = services.apiKeys.create(
    { name: "bench", scopes: ["chat"], userId: null },
    "bench",
  );
  const keyCached = await time(() => services.credentials.verifyApiKey(apiKey));
  // First sights: many keys, each verified once, so every check misses the cache.
  const keys = Array.from(
    { length: firstSights },
    (_, i) =>
      services.apiKeys.create({ name: `bench-${i}`, scopes: ["chat"], userId: null }, "bench").key,
  );
  started = performance.now();
  for (const each of keys) services.credentials.verifyApiKey(each);
  const keyFirstSight = perSecond(keys.length, performance.now() - started);

  services.close();
  db.$client.close();
  return { loginMs, tokenCached, tokenUncached, keyCached, keyFirstSight };
}
