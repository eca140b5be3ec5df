/**
 * Builds a real app on its own temporary SQLite file, with logs collected in memory and the
 * client's socket address chosen per request.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../src/app";
import type { Clock } from "../../src/clock";
import { type Config, loadConfig } from "../../src/config";
import { REQUEST_BUSY_TIMEOUT_MS, setBusyTimeout } from "../../src/db/busy";
import { type AppDatabase, openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { takeReadingsMark } from "../../src/db/readings-mark";
import type { FeatureOptions } from "../../src/features";
import { createLogger, type Logger } from "../../src/logging/logger";
import type { PasswordWorkLimits } from "../../src/modules/auth/password-work";
import { READING_VERSION } from "../../src/modules/auth/readings";
import type { ChatProvider } from "../../src/modules/chat/providers/provider";
import type { Feature } from "../../src/modules/feature";
import type { IpBlockSettings } from "../../src/plugins/ip-block/service";
import type { LimiterStore } from "../../src/plugins/rate-limit/store";
import type { LargeBodyReads } from "../../src/plugins/request-guard/large-bodies";
import type { RouteClass } from "../../src/plugins/route-class";
import {
  type Listenable,
  type RunningServer,
  type StartServerOptions,
  startServer,
} from "../../src/server";
import { createServices, type ServiceOptions, type Services } from "../../src/services";
import { afterQueuedImmediates } from "./wait";

export const TEST_JWT_SECRET = "test-jwt-secret-0123456789abcdefghijklmnopqrstuv";
/** A production profile that starts: strong signing secrets, nothing else. */
export const PRODUCTION_ENV = {
  APP_ENV: "production",
  JWT_SECRET_KEY: "k3J9xQ2mP7vL4nR8tW1yZ6bC5dF0gH3j",
  CSRF_SECRET_KEY: "9Oud1KKpzyCWu6VCba0vvJNF7LxfbdFw",
  AUDIT_SECRET_KEY: "a7Q2wE9rT4yU1iO6pL3kJ8hG5fD0sZxC",
  ALLOWED_HOSTS: "localhost",
  METRICS_TOKEN: "m7T2kW9xQ4vR8nZ1yL6bP5cF0gH3jD2s",
};

export const TEST_PASSWORD_HASHING = { memoryCost: 1024, timeCost: 1 };
export const TEST_CSRF_SECRET = "test-csrf-secret-0123456789abcdefghijklmnopqrstu";

export function tempDir(prefix = "palisade-test-"): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A log destination that keeps every line, parsed. */
export class LogCapture {
  readonly raw: string[] = [];
  write(line: string) {
    this.raw.push(line);
  }
  get text(): string {
    return this.raw.join("");
  }
  get lines(): string[] {
    return this.text.split("\n").filter((line) => line !== "");
  }
  get entries(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line));
  }
}

const peers = new WeakMap<Request, string>();

/** Marks a request as arriving from `address`, as the socket would say. */
export function fromPeer(request: Request, address: string): Request {
  peers.set(request, address);
  return request;
}

/** Readings of another version written again at once (no wait for a release before the mark). */
export const NO_READINGS_QUIET = { quietMs: 0, pollMs: 0 };

export interface TestAppOptions {
  /** How long readings of another version must stay unchanged before they are written again. */
  readingsQuiet?: ServiceOptions["readingsQuiet"];
  env?: Record<string, string | undefined>;
  /**
   * The client's address read as `bun run start` reads it, from the socket (`serveInProcess`);
   * `send`'s `peer` is not used then, and `app.handle`, with no socket, has none.
   */
  peerFromSocket?: boolean;
  clock?: Clock;
  ipBlockSettings?: Partial<IpBlockSettings>;
  limiter?: LimiterStore;
  /** Features beyond the list, plugged in as a new folder would be (see src/features.ts). */
  extraFeatures?: readonly Feature[];
  /** Classes for routes a test adds to the app (see plugins/route-class). */
  routeClasses?: readonly RouteClass[];
  /** The WhatsApp webhook's chat, Graph fetch and worker timings. */
  whatsapp?: FeatureOptions["whatsapp"];
  /** The chat provider (configuration picks one when absent: offline without OPENAI_API_KEY). */
  chatProvider?: ChatProvider;
  /** How long storing a chat turn waits out a lock (a test of a lock that stays passes 0). */
  chatStoreLockWaitMs?: number;
  /** Batch access lines as the service does; off by default, so each line is there at once. */
  accessLogBuffered?: boolean;
  /**
   * Start the dummy login hash when the services are built (default); src/index.ts passes false
   * and starts it once listening.
   */
  prepareLogin?: boolean;
  /** How zxcvbn is loaded at the first registration (a test makes it fail). */
  loadPasswordStrength?: FeatureOptions["loadPasswordStrength"];
  /** Bytes free where the database lives, as /ready reads them (a test fills the disk). */
  freeDiskBytes?: (directory: string) => number;
  /** How long the logger counts a repeated fault's lines instead of writing them (10 s). */
  logRepeatIntervalMs?: number;
  /** How many password hashes run and wait at once (modules/auth/password-work). */
  passwordWork?: PasswordWorkLimits;
  /** How many times the Redis client reconnects on its own before it gives up (core). */
  redisMaxRetries?: number;
  /** How large bodies are read (plugins/request-guard/large-bodies): a shorter deadline, say. */
  largeBodies?: LargeBodyReads;
  /**
   * What the auth stage asks of an admin credential, given the service's own answer: a test has a
   * revocation land right after the stage let a request by, as one committed by another process
   * does. The handlers still ask the service's own.
   */
  authStageStillAdmin?: (
    stillAdmin: Services["standing"]["stillAdmin"],
  ) => Services["standing"]["stillAdmin"];
}

export interface TestApp {
  app: ReturnType<typeof createApp>;
  config: Readonly<Config>;
  db: AppDatabase;
  logs: LogCapture;
  logger: Logger;
  services: Services;
  databasePath: string;
  close(): void;
}

/** The development profile with the test secrets, on `databasePath`; `env` overrides. */
export function testConfig(
  databasePath: string,
  env: Record<string, string | undefined> = {},
): Readonly<Config> {
  return loadConfig({
    APP_ENV: "development",
    LOG_LEVEL: "info",
    JWT_SECRET_KEY: TEST_JWT_SECRET,
    CSRF_SECRET_KEY: TEST_CSRF_SECRET,
    DATABASE_PATH: databasePath,
    ...env,
  });
}

/** A limiter store that is down: every decision and reset fails with `message`. */
export function failingLimiterStore(message: string): LimiterStore {
  return {
    check: () => Promise.reject(new Error(message)),
    giveBack: () => {},
    reset: () => Promise.reject(new Error(message)),
    prune: () => 0,
    close: () => {},
  };
}

export function buildTestApp(options: TestAppOptions = {}): TestApp {
  const dir = tempDir();
  const databasePath = join(dir.path, "palisade.db");
  const config = testConfig(databasePath, options.env);
  const logs = new LogCapture();
  const logger = createLogger({
    level: config.logLevel,
    secretValues: config.secretValues,
    destination: logs,
    repeatIntervalMs: options.logRepeatIntervalMs,
  });
  const db = openDatabase(databasePath);
  applyMigrations(db);
  // As src/index.ts serves.
  setBusyTimeout(db.$client, REQUEST_BUSY_TIMEOUT_MS);
  const services = createServices({
    config,
    db,
    logger,
    clock: options.clock,
    ipBlockSettings: options.ipBlockSettings,
    limiter: options.limiter,
    // Real argon2id, at a cost that keeps the suite fast; production uses Bun's defaults.
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    extraFeatures: options.extraFeatures,
    whatsapp: options.whatsapp,
    chatProvider: options.chatProvider,
    chatStoreLockWaitMs: options.chatStoreLockWaitMs,
    prepareLogin: options.prepareLogin,
    loadPasswordStrength: options.loadPasswordStrength,
    freeDiskBytes: options.freeDiskBytes,
    passwordWork: options.passwordWork,
    redisMaxRetries: options.redisMaxRetries,
    readingsQuiet: options.readingsQuiet,
  });
  const app = createApp({
    ...services,
    standing: options.authStageStillAdmin
      ? {
          ...services.standing,
          stillAdmin: options.authStageStillAdmin(services.standing.stillAdmin),
        }
      : services.standing,
    peerAddress: options.peerFromSocket
      ? undefined
      : (request) => peers.get(request) ?? "127.0.0.1",
    accessLogBuffered: options.accessLogBuffered ?? false,
    extraRouteClasses: options.routeClasses,
    largeBodies: options.largeBodies,
  });
  let closed = false;
  return {
    app,
    config,
    db,
    logs,
    logger,
    services,
    databasePath,
    close() {
      if (closed) return;
      closed = true;
      services.close();
      db.$client.close();
      dir.remove();
    },
  };
}

export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  /** An object is sent as JSON; a string as is. */
  body?: unknown;
  peer?: string;
}

export async function send(
  target: { app: { handle(request: Request): Promise<Response> } },
  path: string,
  options: SendOptions = {},
): Promise<Response> {
  const headers = new Headers(options.headers);
  let body: string | undefined;
  if (options.body !== undefined) {
    body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  }
  const request = new Request(`http://localhost${path}`, {
    method: options.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
  });
  if (options.peer) fromPeer(request, options.peer);
  const response = await target.app.handle(request);
  // The access-log line and request metrics are written by onAfterResponse hooks that Elysia has
  // queued by now; await them so the test can read both.
  await afterQueuedImmediates();
  return response;
}

/**
 * Serves an app on a loopback port in this process, as `bun run start` would, without taking over
 * the process's signals or exiting on shutdown.
 */
export function serveInProcess(
  target: { app: Listenable; config: Readonly<Config>; logger: Logger },
  options: Pick<StartServerOptions, "onClosed" | "drainTimeoutMs" | "onDrainTimeout"> = {},
): RunningServer {
  return startServer({
    app: target.app,
    config: { ...target.config, port: 0 },
    logger: target.logger,
    exitProcess: false,
    signals: [],
    ...options,
  });
}

/**
 * A second app on the same database file and clock: what another process of the same deployment
 * sees. Close it with `close()`.
 */
export function secondProcess(target: TestApp, clock?: Clock, peer = "10.2.2.2") {
  const services = createServices({
    config: target.config,
    db: target.db,
    logger: createLogger({ level: "info", destination: new LogCapture() }),
    clock,
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    readingsQuiet: NO_READINGS_QUIET,
  });
  // As a start does once it is over (src/index.ts), with no quiet time waited for a release before
  // the mark: a few readings are written at once.
  services.auth.keepReadings({ atStart: true });
  const app = createApp({ ...services, peerAddress: () => peer });
  return { app, services, close: () => services.close() };
}

/**
 * Services on the test app's file built with what only `createServices` takes (how the service is
 * told of a changed schema), as a start builds them; their log lines are kept. Stops (the schema
 * guard's `onSchemaChanged`) are collected in `stops`.
 */
export function servicesTold(target: TestApp, options: Partial<ServiceOptions> = {}) {
  const logs = new LogCapture();
  const stops: (readonly string[])[] = [];
  const services = createServices({
    config: target.config,
    db: target.db,
    logger: createLogger({ level: "info", destination: logs }),
    passwordHashing: TEST_PASSWORD_HASHING,
    maintenanceIntervalMs: 0,
    onSchemaChanged: (differences) => stops.push(differences),
    ...options,
  });
  return { services, logs, stops };
}
