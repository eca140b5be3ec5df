/**
 * @module
 * The stateful parts of one running app, built from config and database: metrics registry, audit
 * log, limiter store (SQLite, or Redis with REDIS_URL), IP blocker, credential verifier, accounts,
 * API keys, privacy, and the background tasks that keep them tidy. `createApp` takes these as
 * dependencies; `start()` connects Redis; `close()` stops the tasks and flushes what is queued.
 */
import { RedisClient } from "bun";
import type { Logger } from "pino";
import { type Clock, systemClock } from "./clock";
import type { Config } from "./config";
import { isDatabaseBusy, probeWritable } from "./db/busy";
import type { AppDatabase } from "./db/client";
import { ApiKeyService } from "./modules/auth/api-keys";
import type { PasswordHashing } from "./modules/auth/passwords";
import { AuthService } from "./modules/auth/service";
import type { ReadinessCheck } from "./modules/health/service";
import { type PrivacyContributor, PrivacyService } from "./modules/privacy/service";
import { AuditKeys } from "./plugins/audit/chain";
import { type AuditLog, SqliteAuditLog } from "./plugins/audit/log";
import { keyLegacyAuditRows } from "./plugins/audit/upgrade";
import { CredentialVerifier } from "./plugins/auth/credentials";
import { type AuthMetrics, createAuthMetrics } from "./plugins/auth/metrics";
import { signingKeys } from "./plugins/auth/tokens";
import { type CsrfMetrics, createCsrfMetrics } from "./plugins/csrf/metrics";
import {
  DEFAULT_IP_BLOCK_SETTINGS,
  IpBlockService,
  type IpBlockSettings,
  isPrincipalSubject,
} from "./plugins/ip-block/service";
import { createHttpMetrics, type HttpMetrics } from "./plugins/metrics/http";
import { createMetricsRegistry, type Registry } from "./plugins/metrics/registry";
import { createLimitEnforcer, type LimitEnforcer } from "./plugins/rate-limit/enforce";
import { createRateLimitMetrics, type RateLimitMetrics } from "./plugins/rate-limit/metrics";
import { buildPolicyTable, type PolicyTable } from "./plugins/rate-limit/policies";
import { RedisLimiterStore } from "./plugins/rate-limit/redis-store";
import { SqliteLimiterStore } from "./plugins/rate-limit/sqlite-store";
import type { LimiterStore } from "./plugins/rate-limit/store";

const DAY_MS = 24 * 60 * 60 * 1000;
const REDIS_START_WAIT_MS = 500;

export interface Services {
  config: Readonly<Config>;
  db: AppDatabase;
  logger: Logger;
  clock: Clock;
  registry: Registry;
  audit: AuditLog;
  limiter: LimiterStore;
  policies: PolicyTable;
  metrics: {
    http: HttpMetrics;
    rateLimit: RateLimitMetrics;
    csrf: CsrfMetrics;
    auth: AuthMetrics;
  };
  ipBlocks: IpBlockService;
  /** Checks a key against policies; see plugins/rate-limit/enforce. */
  enforceLimits: LimitEnforcer;
  credentials: CredentialVerifier;
  auth: AuthService;
  apiKeys: ApiKeyService;
  privacy: PrivacyService;
  /** Connects what needs connecting (Redis) before the server takes requests; never throws. */
  start(): Promise<void>;
  /** What `/ready` checks: the database, and Redis when the limiter uses it. */
  readiness: Record<string, ReadinessCheck>;
  /** Runs the background tasks once now (tests call this instead of waiting for timers). */
  runMaintenance(): void;
  close(): void;
}

export interface ServiceOptions {
  config: Readonly<Config>;
  db: AppDatabase;
  logger: Logger;
  clock?: Clock;
  limiter?: LimiterStore;
  ipBlockSettings?: Partial<IpBlockSettings>;
  /** What chat, payments and later features hold about users, for export and erasure. */
  privacyContributors?: readonly PrivacyContributor[];
  /** Cache verified access tokens (default true); the benchmark turns it off to compare. */
  cacheTokens?: boolean;
  /** argon2id cost; Bun's defaults when absent. Tests lower it. */
  passwordHashing?: PasswordHashing;
  /** Prepare the unknown-email login's dummy hash now (default true; the CLI serves no logins). */
  prepareLogin?: boolean;
  /** Background task period; 0 disables the timer (tests drive maintenance themselves). */
  maintenanceIntervalMs?: number;
}

export function createServices(options: ServiceOptions): Services {
  const { config, db, logger } = options;
  const clock = options.clock ?? systemClock;
  const sqlite = db.$client;
  const registry = createMetricsRegistry();
  const auditKeys = new AuditKeys(config.audit.secretKey);
  const audit = new SqliteAuditLog({ sqlite, clock, logger, registry, keys: auditKeys });
  keyLegacyAuditRows(sqlite, auditKeys, audit, logger);
  // One VM: the SQLite file every process shares. Several VMs: REDIS_URL, one Redis for all.
  // Without an offline queue a command fails at once while Redis is unreachable, so the limiter
  // fails open or closed at once instead of holding requests until a reconnect.
  const redis = config.redisUrl
    ? new RedisClient(config.redisUrl, { enableOfflineQueue: false, connectionTimeout: 2000 })
    : null;
  const limiter =
    options.limiter ?? (redis ? new RedisLimiterStore(redis) : new SqliteLimiterStore({ sqlite }));
  const readiness: Record<string, ReadinessCheck> = {
    // Ready means writable: a file another process holds locked (or that cannot be written)
    // answers reads but not a login. Takes the write lock for no work, waiting at most the short
    // busy timeout (db/busy).
    database: () => {
      sqlite.query("SELECT 1").values();
      probeWritable(sqlite);
    },
  };
  if (redis) {
    readiness.redis = async () => {
      await redis.send("PING", []);
    };
  }
  const ipBlocks = new IpBlockService({
    sqlite,
    clock,
    logger,
    audit,
    limiter,
    registry,
    settings: {
      thresholds: {
        ratelimit: {
          ...DEFAULT_IP_BLOCK_SETTINGS.thresholds.ratelimit,
          count: config.ipBlock.rateLimitRefusals,
        },
        login: {
          ...DEFAULT_IP_BLOCK_SETTINGS.thresholds.login,
          count: config.ipBlock.failedLogins,
        },
        principal: {
          ...DEFAULT_IP_BLOCK_SETTINGS.thresholds.principal,
          count: config.ipBlock.rateLimitRefusals,
        },
      },
      ...options.ipBlockSettings,
    },
  });

  const metrics = {
    http: createHttpMetrics(registry),
    rateLimit: createRateLimitMetrics(registry),
    csrf: createCsrfMetrics(registry),
    auth: createAuthMetrics(registry),
  };
  const enforceLimits = createLimitEnforcer({
    store: limiter,
    clock,
    logger,
    audit,
    metrics: metrics.rateLimit,
    onRefused: async ({ client, key, requestId }) => {
      // A refused principal is that principal's violation, never its address's (see ip-block).
      if (isPrincipalSubject(key)) await ipBlocks.recordPrincipalViolation(key, requestId);
      else await ipBlocks.recordViolation("ratelimit", client, requestId);
    },
  });

  const keys = signingKeys(config.jwt.secretKey, config.jwt.previousSecretKey);
  const credentials = new CredentialVerifier({
    sqlite,
    clock,
    signingKeys: keys,
    accessTokenTtlMs: config.jwt.accessTokenExpireMinutes * 60_000,
    cacheTokens: options.cacheTokens,
    refuseTestKeys: config.appEnv === "production",
  });
  const apiKeys = new ApiKeyService(sqlite, clock, audit, credentials, {
    refuseTestKeys: config.appEnv === "production",
  });
  const auth = new AuthService({
    sqlite,
    config,
    clock,
    logger,
    audit,
    limiter,
    ipBlocks,
    credentials,
    apiKeys,
    signingKey: keys.current,
    passwordHashing: options.passwordHashing,
    prepareLogin: options.prepareLogin,
  });
  const privacy = new PrivacyService({
    sqlite,
    clock,
    audit,
    auth,
    apiKeys,
    contributors: options.privacyContributors,
  });
  // API_KEYS is the truth for bootstrap keys: added, re-scoped and revoked to match it.
  const bootstrap = apiKeys.reconcileBootstrap(config.apiKeys);
  if (bootstrap.added + bootstrap.updated + bootstrap.revoked > 0) {
    const { added, updated, revoked } = bootstrap;
    logger.info({ added, updated, revoked }, "bootstrap API keys reconciled with API_KEYS");
  }
  if (bootstrap.stillRevoked.length > 0) {
    logger.warn(
      { entries: bootstrap.stillRevoked },
      "API_KEYS lists keys that were revoked; they stay revoked: remove them from API_KEYS",
    );
  }

  const runMaintenance = () => {
    const now = clock.now();
    try {
      limiter.prune(now);
      audit.prune(now - config.auditRetentionDays * DAY_MS, now);
      privacy.retain(now);
      auth.pruneSessions(now);
      ipBlocks.prune(now);
    } catch (error) {
      // Locked by another process: the next run tries again; nothing waits for the lock.
      if (isDatabaseBusy(error)) logger.warn("maintenance deferred: the database is locked");
      else logger.error({ err: error }, "maintenance failed");
    }
    // The anchor that lets audit:verify notice deleted newest rows; logged when the head moved.
    audit.logHead();
  };
  const intervalMs = options.maintenanceIntervalMs ?? 10_000;
  const timer = intervalMs > 0 ? setInterval(runMaintenance, intervalMs) : null;
  timer?.unref();

  return {
    config,
    db,
    logger,
    clock,
    registry,
    audit,
    limiter,
    policies: buildPolicyTable(config.rateLimit),
    metrics,
    ipBlocks,
    enforceLimits,
    async start() {
      if (!redis) return;
      // Waits a moment for Redis, never for long: the service starts either way, and the client
      // keeps reconnecting in the background while the limiter fails open or closed by policy.
      const connected = redis.connect().then(
        () => true,
        () => false,
      );
      const timedOut = Bun.sleep(REDIS_START_WAIT_MS).then(() => false);
      if (!(await Promise.race([connected, timedOut]))) {
        logger.error(
          { redis: "unreachable" },
          "redis unreachable at start; the limiter fails open or closed by policy until it is back",
        );
      }
    },
    readiness,
    credentials,
    auth,
    apiKeys,
    privacy,
    runMaintenance,
    close() {
      if (timer) clearInterval(timer);
      limiter.close();
      audit.close();
    },
  };
}
