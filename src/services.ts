/**
 * @module
 * One running app's state: the core (the defences' stateful parts, `src/core.ts`) and the features
 * built on it (`src/features.ts`), with the background maintenance that keeps both tidy. `createApp`
 * takes this; `start()` connects Redis and starts the features' workers; `stop()` lets their work in
 * flight finish; `close()` stops the tasks, closes the features, then the core, flushing what is
 * queued.
 */
import { type Core, type CoreOptions, createCore } from "./core";
import { backgroundCheckpoints } from "./db/background-checkpoint";
import { busyTimeoutOf, isDatabaseBusy, setBusyTimeout } from "./db/busy";
import { startDatabaseFileWatch } from "./db/file-identity";
import { startWalGuard } from "./db/wal-guard";
import { createFeatures, type FeatureOptions } from "./features";
import type { ApiKeyService } from "./modules/auth/api-keys";
import type { AuthService } from "./modules/auth/service";
import type { Feature } from "./modules/feature";
import type { ReadinessCheck } from "./modules/health/service";
import type { PrivacyService } from "./modules/privacy/service";
import type { CredentialStanding } from "./plugins/auth";
import { registerWalMetrics } from "./plugins/metrics/database";

export interface Services extends Core {
  features: readonly Feature[];
  /** The auth feature's accounts and sessions (the CLI and tests drive them directly). */
  auth: AuthService;
  apiKeys: ApiKeyService;
  /** A credential as the database reads it now (see the auth feature). */
  standing: CredentialStanding;
  privacy: PrivacyService;
  /** Every readiness check: the core's and each feature's. */
  readiness: Record<string, ReadinessCheck>;
  /**
   * Makes the stored bootstrap keys match API_KEYS when `deferBootstrapKeys` left it for later: a
   * start calls it once it listens (modules/auth/feature.ts).
   */
  applyBootstrapKeys(): void;
  /** Runs the background tasks once now (tests call this instead of waiting for timers). */
  runMaintenance(): void;
  /**
   * Connects the core (Redis), then starts the features' background work (workers). Resolves to
   * the reason the start must stop (the core's), with nothing started, or null.
   */
  start(): Promise<string | null>;
  /** At shutdown, before `close()`: lets the features' background work in flight finish. */
  stop(): Promise<void>;
  /** At an exit that does not wait for `stop()`: logs what each feature leaves undone. */
  reportUndone(why: string): void;
  /**
   * At shutdown, when the drain time is up: the features end what is in flight readably; resolves
   * once what they let finish (a chat turn being stored) has.
   */
  endInFlight(): Promise<void>;
}

export interface ServiceOptions extends CoreOptions, FeatureOptions {
  /** Background task period; 0 disables the timer (tests drive maintenance themselves). */
  maintenanceIntervalMs?: number;
  /** The background checkpointer's script, when not beside db/background-checkpoint (src/index.ts). */
  checkpointWorkerUrl?: URL;
}

export function createServices(options: ServiceOptions): Services {
  const core = createCore(options);
  const { clock, logger, audit } = core;
  const features = createFeatures(core, options);
  const readiness: Record<string, ReadinessCheck> = { ...core.readiness };
  for (const feature of features.list) Object.assign(readiness, feature.readiness);

  const sqlite = options.db.$client;
  let backgroundStopped = false;
  /**
   * The features' own background work (the WhatsApp outbox's worker) stops claiming as the
   * maintenance does once the schema changed under the process, not only when the shutdown's drain
   * is over: a newer release's rows are not worked on by code that does not know them (probe 28c
   * F1). Work in flight finishes as at shutdown.
   */
  const stopBackgroundForSchema = () => {
    if (backgroundStopped || !core.stoppingForSchema) return;
    backgroundStopped = true;
    for (const feature of features.list) {
      feature
        .stop?.()
        .catch((error) => logger.error({ err: error }, "stopping background work failed"));
    }
  };
  const runMaintenance = () => {
    const now = clock.now();
    // Once one task has waited out the busy timeout, the lock is known to be held: the rest of the
    // run tries without waiting, so the event loop waits for a lock once a run, not once a task.
    let waitedMs: number | null = null;
    let deferred = 0;
    try {
      for (const task of [core.maintenance, ...features.list.map((f) => f.maintenance)]) {
        if (core.stoppingForSchema) break;
        try {
          task?.(now);
        } catch (error) {
          if (!isDatabaseBusy(error)) {
            logger.error({ err: error }, "maintenance failed");
            continue;
          }
          // Locked by another process: the next run tries again.
          deferred++;
          if (waitedMs === null) {
            waitedMs = busyTimeoutOf(sqlite);
            setBusyTimeout(sqlite, 0);
          }
        }
      }
    } finally {
      if (waitedMs !== null) setBusyTimeout(sqlite, waitedMs);
    }
    stopBackgroundForSchema();
    if (deferred > 0)
      logger.warn({ tasks: deferred }, "maintenance deferred: the database is locked");
    // The anchor that lets audit:verify notice deleted newest rows; logged when the head moved.
    audit.logHead();
  };
  const intervalMs = options.maintenanceIntervalMs ?? 10_000;
  const timer = intervalMs > 0 ? setInterval(runMaintenance, intervalMs) : null;
  timer?.unref();
  // Background work like the maintenance: off where the maintenance is (tests drive it).
  const checkpoints =
    intervalMs > 0 && sqlite.filename && sqlite.filename !== ":memory:"
      ? backgroundCheckpoints({
          path: sqlite.filename,
          logger,
          workerUrl: options.checkpointWorkerUrl,
        })
      : null;
  const countTruncateCheckpoint = registerWalMetrics(core.registry, sqlite);
  // A database deleted or replaced while serving is said at once, not only at /ready.
  const stopFileWatch = startDatabaseFileWatch(
    core.fileWatch,
    logger,
    intervalMs > 0 ? undefined : 0,
  );
  const stopWalGuard =
    intervalMs > 0
      ? startWalGuard(sqlite, {
          limitBytes: options.config.walTruncateBytes,
          logger,
          onLook: checkpoints ? (walBytes) => checkpoints.consider(walBytes) : undefined,
          onTruncateCheckpoint: countTruncateCheckpoint,
        })
      : () => {};

  return {
    ...core,
    features: features.list,
    auth: features.auth.service,
    apiKeys: features.auth.apiKeys,
    applyBootstrapKeys: () => features.auth.applyBootstrapKeys(),
    standing: features.auth.standing,
    privacy: features.privacy.service,
    readiness,
    runMaintenance,
    async start() {
      const refused = await core.start();
      if (refused !== null) return refused;
      for (const feature of features.list) await feature.start?.();
      return null;
    },
    async stop() {
      await Promise.all([...features.list.map((feature) => feature.stop?.()), checkpoints?.stop()]);
    },
    reportUndone(why) {
      for (const feature of features.list) feature.reportUndone?.(why);
      audit.reportQueued(why);
    },
    async endInFlight() {
      await Promise.all(features.list.map((feature) => feature.endInFlight?.()));
    },
    close() {
      if (timer) clearInterval(timer);
      stopWalGuard();
      stopFileWatch();
      // Not stopped already (a test closing without stop()): ended without waiting.
      void checkpoints?.stop();
      for (const feature of features.list) feature.close?.();
      core.close();
    },
  };
}
