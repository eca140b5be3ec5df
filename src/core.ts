/**
 * @module
 * The core: the stateful parts of the defences that every feature builds on, made once per app
 * from config and database — metrics registry, audit log, limiter store (SQLite, or Redis with
 * REDIS_URL), IP blocker, limit enforcer, credential verifier. Features receive it whole
 * (`src/modules/feature.ts`); nothing here knows a feature.
 */
import { RedisClient } from "bun";
import { type Clock, DAY_MS, systemClock } from "./clock";
import { type Config, ConfigError } from "./config";
import { probeWritable } from "./db/busy";
import type { AppDatabase } from "./db/client";
import { checkDiskRoom } from "./db/disk-space";
import { type DatabaseFileWatch, databaseFileWatch } from "./db/file-identity";
import {
  countTriggers,
  dropForeignTriggers,
  MAX_DROPPED_WHILE_RUNNING,
  reportDroppedTriggers,
} from "./db/foreign-triggers";
import { migrationStatus } from "./db/migrate";
import { otherReadingsMarks } from "./db/readings-mark";
import { createSchemaGuard, type SchemaGuard } from "./db/schema-guard";
import type { Logger } from "./logging/logger";
import { READING_VERSION } from "./modules/auth/readings";
import type { ReadinessCheck } from "./modules/health/service";
import { AuditKeys } from "./plugins/audit/chain";
import { erasedPrincipals } from "./plugins/audit/erased-principals";
import { assertAuditKeyMatches } from "./plugins/audit/key-match";
import { type AuditLog, SqliteAuditLog } from "./plugins/audit/log";
import { registerRecentTampering } from "./plugins/audit/recent-tampering";
import { reportUnkeyedRows } from "./plugins/audit/upgrade";
import { CredentialVerifier } from "./plugins/auth/credentials";
import { forgedTokenReporter } from "./plugins/auth/forged-token";
import { type AuthMetrics, createAuthMetrics } from "./plugins/auth/metrics";
import { type CredentialSeal, createCredentialSeal, tamperReporter } from "./plugins/auth/seal";
import { type SigningKeys, signingKeys } from "./plugins/auth/tokens";
import { parseRange } from "./plugins/client-ip/resolve";
import { type CsrfMetrics, createCsrfMetrics } from "./plugins/csrf/metrics";
import { createBlockSeal } from "./plugins/ip-block/seal";
import {
  DEFAULT_IP_BLOCK_SETTINGS,
  IpBlockService,
  type IpBlockSettings,
  isPrincipalSubject,
  laterEnd,
} from "./plugins/ip-block/service";
import { registerQueryDurations } from "./plugins/metrics/database";
import { createHttpMetrics, type HttpMetrics } from "./plugins/metrics/http";
import { createMetricsRegistry, type Registry } from "./plugins/metrics/registry";
import { createLimitEnforcer, type LimitEnforcer } from "./plugins/rate-limit/enforce";
import { withLeases } from "./plugins/rate-limit/lease";
import { createRateLimitMetrics, type RateLimitMetrics } from "./plugins/rate-limit/metrics";
import { buildPolicyTable, type PolicyTable } from "./plugins/rate-limit/policies";
import { keepRedisConnected } from "./plugins/rate-limit/redis-connection";
import { createEvictionWatch } from "./plugins/rate-limit/redis-eviction";
import { startRedisLimiter } from "./plugins/rate-limit/redis-start";
import {
  assertScriptsRun,
  READY_KEY,
  RedisLimiterStore,
  withDeadline,
} from "./plugins/rate-limit/redis-store";
import { SqliteLimiterStore } from "./plugins/rate-limit/sqlite-store";
import type { LimiterStore } from "./plugins/rate-limit/store";
import { createErrorReporter, type ErrorReporter } from "./plugins/sentry";

export interface Core {
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
  /**
   * Error reporting (Sentry when SENTRY_DSN is set, else a no-op). The error handler reports every
   * 5xx; a feature reports an upstream failure it answers without throwing:
   * `errors.report(error, { requestId, route, principal, upstream: "openai" })`.
   */
  errors: ErrorReporter;
  /** Checks a key against policies; see plugins/rate-limit/enforce. */
  enforceLimits: LimitEnforcer;
  credentials: CredentialVerifier;
  /**
   * Seals credential rows and checks them (plugins/auth/seal), keyed from AUDIT_SECRET_KEY; a row
   * that fails its check is reported once per row and process.
   */
  credentialSeal: CredentialSeal;
  /** The keys access tokens are signed (current) and verified (current and previous) with. */
  signingKeys: SigningKeys;
  /** The core's own readiness: the database (writable), and Redis when the limiter uses it. */
  readiness: Record<string, ReadinessCheck>;
  /** Whether DATABASE_PATH still names the files this process has open (db/file-identity). */
  fileWatch: DatabaseFileWatch | null;
  /**
   * Connects what needs connecting (Redis) before the server takes requests; never throws. Resolves
   * to the reason the start must stop (production, a Redis that may evict the limiter's keys), or
   * null.
   */
  start(): Promise<string | null>;
  /** Sends what is still queued for error reporting; at shutdown, before close. */
  flush(timeoutMs?: number): Promise<void>;
  /** The core's share of the background clean-up (limiter, audit retention, blocks). */
  maintenance(now: number): void;
  /**
   * Whether the maintenance found the schema changed and the service is stopping for it: no
   * background task writes from then on (code that does not know the new schema would write what
   * it does not know to keep: probe 28b F1).
   */
  readonly stoppingForSchema: boolean;
  close(): void;
}

export interface CoreOptions {
  config: Readonly<Config>;
  db: AppDatabase;
  logger: Logger;
  clock?: Clock;
  limiter?: LimiterStore;
  ipBlockSettings?: Partial<IpBlockSettings>;
  /** Cache verified access tokens (default true); the benchmark turns it off to compare. */
  cacheTokens?: boolean;
  /** Bytes free on a directory's filesystem, for /ready (db/disk-space; tests pass their own). */
  freeDiskBytes?: (directory: string) => number;
  /** The schema check the start made (db/schema-guard); one of the core's own when absent. */
  schemaGuard?: SchemaGuard;
  /**
   * Told when the maintenance finds the schema changed while running (after the error line and
   * the audit event): the service stops (src/index.ts), and the background tasks are not run again.
   * Absent: only reported.
   */
  onSchemaChanged?: (differences: readonly string[]) => void;
  /**
   * How many times Bun's Redis client reconnects on its own before it gives up (its default when
   * absent); a test makes it give up at once to see the service connect it again.
   */
  redisMaxRetries?: number;
}

export function createCore(options: CoreOptions): Core {
  const { config, db, logger } = options;
  const clock = options.clock ?? systemClock;
  const sqlite = db.$client;
  const schemaGuard = options.schemaGuard ?? createSchemaGuard(sqlite, () => READING_VERSION);
  let stoppingForSchema = false;
  const registry = createMetricsRegistry();
  registerQueryDurations(registry, sqlite);
  const auditKeys = new AuditKeys(config.audit.secretKey);
  assertAuditKeyMatches(sqlite, auditKeys);
  const audit = new SqliteAuditLog({
    sqlite,
    clock,
    logger,
    registry,
    keys: auditKeys,
    secretValues: config.secretValues,
    anchorLevel: config.logLevel,
  });
  reportUnkeyedRows(sqlite, logger);
  registerRecentTampering(registry, sqlite, clock);
  // One VM: the SQLite file every process shares. Several VMs: REDIS_URL, one Redis for all.
  const redis = config.redisUrl ? redisClient(config.redisUrl, options.redisMaxRetries) : null;
  const redisConnection = redis ? keepRedisConnected(redis, { logger }) : null;
  const evictions = redis
    ? createEvictionWatch({ send: (command, args) => redis.send(command, args), logger })
    : null;
  let lookingForEvictions = false;
  // Leases let a process admit a hot key's requests without a store decision each (lease.ts).
  const limiter =
    options.limiter ??
    withLeases(redis ? new RedisLimiterStore(redis) : new SqliteLimiterStore({ sqlite }));
  const fileWatch = databaseFileWatch(sqlite);
  const readiness: Record<string, ReadinessCheck> = {
    // Ready means writable: a file another process holds locked (or that cannot be written)
    // answers reads but not a login. Takes the write lock for no work, waiting at most the short
    // busy timeout (db/busy); and a filesystem nearly full is reported before writes fail.
    database: () => {
      // The open file answers even once DATABASE_PATH no longer names it (deleted, replaced).
      const misplaced = fileWatch?.problem();
      if (misplaced) throw new Error(misplaced);
      sqlite.query("SELECT 1").values();
      probeWritable(sqlite);
      checkDiskRoom(sqlite.filename, options.freeDiskBytes);
    },
  };
  if (redis) {
    // Ready means writable here too: a Redis at its `maxmemory` (noeviction) answers PING and
    // refuses every decision, each sign-in and payment a 503 (probe 29d F5). A key of its own,
    // gone in a second.
    // And a Redis that may evict keys is not ready: a flood of new addresses evicts lockouts and
    // limits (probe 46c F2).
    readiness.redis = async () => {
      await withDeadline(
        Promise.all([
          redis.send("SET", [READY_KEY, "1", "PX", "1000"]),
          evictions!.checkReady(),
          assertScriptsRun((command, args) => redis.send(command, args)),
        ]),
        500,
        "SET",
      );
    };
  }
  const metrics = {
    http: createHttpMetrics(registry),
    rateLimit: createRateLimitMetrics(registry),
    csrf: createCsrfMetrics(registry),
    auth: createAuthMetrics(registry),
  };
  const ipBlocks = new IpBlockService({
    sqlite,
    clock,
    logger,
    audit,
    limiter,
    seal: createBlockSeal(config.audit.secretKey),
    registry,
    rateLimitMetrics: metrics.rateLimit,
    secretValues: config.secretValues,
    siteExemptRanges: [
      ...(config.trustProxy.kind === "cidrs" ? config.trustProxy.cidrs : []),
      ...config.rateLimit.allowCidrs,
    ].map(parseRange),
    settings: {
      siteBlocks: {
        ...DEFAULT_IP_BLOCK_SETTINGS.siteBlocks,
        count: config.ipBlock.ipv6SiteBlocks,
      },
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

  const enforceLimits = createLimitEnforcer({
    store: limiter,
    clock,
    logger,
    audit,
    metrics: metrics.rateLimit,
    onRefused: async ({ client, key, requestId }) => {
      // A refused principal is that principal's violation, never its address's (see ip-block).
      const principal = isPrincipalSubject(key);
      const block = principal
        ? await ipBlocks.recordPrincipalViolation(key, requestId)
        : await ipBlocks.recordViolation("ratelimit", client, requestId);
      // The block this refusal made, or one a sibling refusal made a moment before (probe 52a F1:
      // twenty at once, only the one that made it was told when it ends), in this process or
      // another on the file (54b F1: read from the file, not this process's copy); for a
      // principal, its address's block too, which refuses its next request all the same (53a F1).
      const own =
        block?.expiresAt ??
        (principal ? ipBlocks.blockedUntilNow(key) : ipBlocks.clientBlockedUntilNow(client));
      const address = principal ? ipBlocks.clientBlockedUntilNow(client) : null;
      return laterEnd(own, address);
    },
  });

  const errors = createErrorReporter({
    dsn: config.sentry.dsn,
    environment: config.appEnv,
    release: config.sentry.release,
    tracesSampleRate: config.sentry.tracesSampleRate,
    secretValues: config.secretValues,
    logger,
    registry,
    now: () => clock.now(),
  });

  const keys = signingKeys(config.jwt.secretKey, config.jwt.previousSecretKey);
  const credentialSeal = createCredentialSeal(
    config.audit.secretKey,
    tamperReporter({ logger, audit }),
    erasedPrincipals(sqlite, auditKeys),
  );
  const credentials = new CredentialVerifier({
    sqlite,
    clock,
    seal: credentialSeal,
    signingKeys: keys,
    accessTokenTtlMs: config.jwt.accessTokenExpireMinutes * 60_000,
    cacheTokens: options.cacheTokens,
    refuseTestKeys: config.appEnv === "production",
    reportForgedToken: forgedTokenReporter({ logger, audit }),
  });

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
    errors,
    enforceLimits,
    credentials,
    credentialSeal,
    signingKeys: keys,
    readiness,
    fileWatch,
    async start() {
      if (!redis || !evictions || !config.redisUrl) return null;
      return startRedisLimiter({
        redis,
        url: config.redisUrl,
        appEnv: config.appEnv,
        watch: evictions,
        logger,
      });
    },
    async flush(timeoutMs = 2000) {
      if (!(await errors.flush(timeoutMs, { final: true }))) {
        logger.warn({ timeoutMs }, "sentry: some error reports were not sent before shutdown");
      }
    },
    get stoppingForSchema() {
      return stoppingForSchema;
    },
    maintenance(now) {
      if (stoppingForSchema) return;
      // First: a trigger added to the file since the last tick stops being able to act. Too many
      // to drop on the event loop: stopped as for a changed schema; the next start drops them.
      const triggers = countTriggers(sqlite);
      if (triggers > 0 && triggers <= MAX_DROPPED_WHILE_RUNNING) {
        reportDroppedTriggers(
          dropForeignTriggers(sqlite),
          (fields, message) => logger.error(fields, message),
          (event) => audit.record(event),
        );
      }
      const changed =
        triggers > MAX_DROPPED_WHILE_RUNNING
          ? [`${triggers} triggers were added`]
          : schemaGuard.changes();
      if (changed.length > 0) {
        // Reported as tampering even when the file records a newer release's migrations (a
        // rolling upgrade does that too): such a row is as easy to write into the file as the
        // change, and must not quiet the report. The line says both.
        const newerMigrations = migrationStatus(db).fromNewerReleases;
        const readingsTaken = otherReadingsMarks(sqlite, READING_VERSION);
        logger.error(
          { differences: changed, newerMigrations },
          readingsTaken.length > 0 && changed.length === 1
            ? `a process of another release, whose readings of addresses differ (reading version ${readingsTaken[0]}), started on this file and took it: stopping (two such releases cannot serve one file together: each would let look-alikes of the other's accounts register)`
            : newerMigrations > 0
              ? "the database's schema changed while this process ran, and the file records migrations of a newer release: stopping (a rolling upgrade: restart on the newer release; otherwise restore the file from a backup)"
              : "the database's schema was changed outside Palisade while running: a changed table can make Palisade's writes silently do nothing; stopping (restore the file from a backup)",
        );
        audit.record({
          type: "db.schema_changed",
          outcome: "denied",
          actor: "system",
          detail: { differences: changed.join("; "), newerMigrations },
        });
        if (options.onSchemaChanged) {
          stoppingForSchema = true;
          options.onSchemaChanged(changed);
          return;
        }
      }
      limiter.prune(now);
      if (evictions && !lookingForEvictions) {
        lookingForEvictions = true;
        void evictions.lookForEvictions().finally(() => {
          lookingForEvictions = false;
        });
      }
      audit.prune(now - config.auditRetentionDays * DAY_MS, now);
      ipBlocks.prune(now);
    },
    close() {
      redisConnection?.stop();
      limiter.close();
      audit.close();
    },
  };
}

/**
 * Without an offline queue a command fails at once while Redis is unreachable, so the limiter
 * fails open or closed at once instead of holding requests until a reconnect. A URL the
 * configuration accepted (config/redis-url) is one Bun's client takes; were one not, it is refused
 * as the configuration refuses, in one line that does not quote the URL (its password).
 */
function redisClient(url: string, maxRetries?: number): RedisClient {
  try {
    return new RedisClient(url, {
      enableOfflineQueue: false,
      connectionTimeout: 2000,
      ...(maxRetries === undefined ? {} : { maxRetries }),
    });
  } catch {
    throw new ConfigError("REDIS_URL", "is not a URL Bun's Redis client takes");
  }
}
