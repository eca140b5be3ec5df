import { signAccessToken, signingKeys, verifyAccessToken } from "../src/plugins/auth/tokens";
import { benchServices } from "./services";

export interface MicroResults {
  ipBlockHit: number;
  ipBlockMiss: number;
  /** A new address each time, blocks in force elsewhere: its indexed read and its place in memory. */
  ipBlockNewAddress: number;
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
  const bench = benchServices({ databasePath: `${dir}/micro.db` });
  const { config, services } = bench;
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
    // Past the 50,000 subjects a process remembers, as a flood of new addresses goes.
    const ipBlockNewAddress = await perSecond(Math.max(iterations, 120_000), (i) =>
      services.ipBlocks.blockedUntil(`172.${16 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}`),
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
    return {
      ipBlockHit,
      ipBlockMiss,
      ipBlockNewAddress,
      jwtVerify,
      auditBatched,
      auditMustKeep,
      metricsObserve,
    };
  } finally {
    bench.close();
  }
}
