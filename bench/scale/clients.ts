/**
 * @module
 * Child process of the scale figure: Palisade's app (every defence, limits raised, access log to
 * /dev/null) on a temp database takes one request from each of `count` distinct client addresses
 * (`X-Forwarded-For` from a trusted loopback proxy), 64 in flight, then prints one JSON line: RSS
 * before and after (a second after a full GC, and right after it), peak RSS, the limiter table's
 * rows, database and WAL sizes.
 * Run alone so that its RSS is only the app's: `bun bench/scale/clients.ts <count> <dir>`.
 */
import { existsSync, openSync, statSync } from "node:fs";
import { join } from "node:path";
import { createApp } from "../../src/app";
import { loadConfig } from "../../src/config";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { fdDestination } from "../../src/logging/fd-destination";
import { createLogger } from "../../src/logging/logger";
import { createServices } from "../../src/services";
import { settleDeferredWork } from "../deferred";
import { memoryOf } from "../proc";
import {
  BENCH_CSRF_SECRET,
  BENCH_JWT_SECRET,
  BENCH_PAYLOAD,
  BENCH_ROUTE_CLASSES,
} from "../servers/payload";

const count = Number(process.argv[2] ?? 1_000_000);
const dir = process.argv[3]!;
const config = loadConfig({
  APP_ENV: "development",
  LOG_LEVEL: "info",
  JWT_SECRET_KEY: BENCH_JWT_SECRET,
  CSRF_SECRET_KEY: BENCH_CSRF_SECRET,
  DATABASE_PATH: join(dir, "clients.db"),
  TRUST_PROXY: "loopback",
});
const db = openDatabase(config.databasePath);
applyMigrations(db);
const logger = createLogger({
  level: config.logLevel,
  secretValues: config.secretValues,
  destination: fdDestination(openSync("/dev/null", "a")),
});
// Maintenance runs as in production (every 10 s): within the run no window ends, so nothing is
// pruned and every client's row is still there at the end.
const services = createServices({ config, db, logger });
const app = createApp({
  ...services,
  peerAddress: () => "127.0.0.1",
  extraRouteClasses: BENCH_ROUTE_CLASSES,
}).get("/bench", () => BENCH_PAYLOAD, { public: true });
const address = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

// The unknown-email login's dummy argon2id hash is made at start (64 MB while it runs): let it
// finish, as it has on a server that has been up a moment, before the first reading.
await services.auth.prepared();
/**
 * RSS a second after a full GC. Right after one, RSS still holds what the GC freed: the allocator
 * hands freed pages back to the system in the background, within about a second (measured here
 * after a million clients: 148 MB right after the GC, 125 MB 250 ms later, 114 MB after a second,
 * 113 MB after five). The idle figure after a start is read a second later for the same reason.
 */
const settledMemory = async () => {
  Bun.gc(true);
  const rightAfterGc = memoryOf(process.pid)!;
  await Bun.sleep(1000);
  return { settled: memoryOf(process.pid)!, rightAfterGc };
};
const before = (await settledMemory()).settled;
const started = performance.now();
let next = 0;
let refused = 0;
const worker = async () => {
  while (next < count) {
    const i = next++;
    const response = await app.handle(
      new Request("http://localhost/bench", { headers: { "x-forwarded-for": address(i) } }),
    );
    if (response.status !== 200) refused++;
    await response.arrayBuffer();
  }
};
await Promise.all(Array.from({ length: 64 }, worker));
await settleDeferredWork();
const seconds = (performance.now() - started) / 1000;
const { settled: after, rightAfterGc } = await settledMemory();
const rows = (
  db.$client.query("SELECT count(*) AS n FROM rate_limit_counters").get() as { n: number }
).n;
const size = (path: string) => (existsSync(path) ? statSync(path).size : 0);
process.stdout.write(
  `${JSON.stringify({
    count,
    refused,
    seconds,
    rssBeforeKb: before.rssKb,
    rssAfterKb: after.rssKb,
    rssRightAfterGcKb: rightAfterGc.rssKb,
    peakKb: after.peakKb,
    rows,
    dbBytes: size(config.databasePath),
    walBytes: size(`${config.databasePath}-wal`),
  })}\n`,
);
services.close();
db.$client.close();
process.exit(0);
