import { hashPassword, verifyPassword } from "../src/modules/auth/passwords";
import { CredentialVerifier } from "../src/plugins/auth/credentials";
import { signAccessToken, signingKey } from "../src/plugins/auth/tokens";
import { benchFamily } from "./family";
import { benchServices } from "./services";

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

  const bench = benchServices({ databasePath: `${dir}/auth.db` });
  const { config, db, services } = bench;
  const key = signingKey(config.jwt.secretKey);
  // A token is accepted only for a family the database knows: give it one.
  benchFamily(db.$client, services.credentialSeal, "u1", "f1");
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
    seal: services.credentialSeal,
  });

  const time = async (fn: () => unknown | Promise<unknown>) => {
    for (let i = 0; i < 1000; i++) await fn();
    const t = performance.now();
    for (let i = 0; i < iterations; i++) await fn();
    return perSecond(iterations, performance.now() - t);
  };
  const tokenCached = await time(() => services.credentials.accessToken(token, "bearer"));
  const tokenUncached = await time(() => uncached.accessToken(token, "bearer"));

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

  bench.close();
  return { loginMs, tokenCached, tokenUncached, keyCached, keyFirstSight };
}
