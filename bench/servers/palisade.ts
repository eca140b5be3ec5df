/**
 * @module
 * B. Palisade as users run it: `createServices` + `createApp` with the development profile, every
 * defence on, limits raised so nothing is refused, the access log on (stdout, which the bench sends
 * to /dev/null as to a fast log sink), SQLite on a temp file. Besides the app's own routes it
 * serves the bench's: `GET /bench` (public, rate limited) and `POST /bench/protected` (bearer
 * token, body schema, rate limited). It prints a token for a user it creates, the database path,
 * and whether `POST /api/chat` exists (the offline provider answers it once chat has landed).
 *
 * `bun bench/servers/palisade.ts <full|full-nocache> <port>`; `full-nocache` turns the verified-token
 * cache off. SIGUSR2 moves this server's clock an hour on and runs the maintenance, so the bench can
 * read the limiter table after every window has passed and pruning has run without waiting for it.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../src/app";
import type { Clock } from "../../src/clock";
import { loadConfig } from "../../src/config";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { createLogger } from "../../src/logging/logger";
import { signAccessToken, signingKey } from "../../src/plugins/auth/tokens";
import { createServices } from "../../src/services";
import { benchFamily } from "../family";
import {
  BENCH_CSRF_SECRET,
  BENCH_JWT_SECRET,
  BENCH_PAYLOAD,
  BENCH_ROUTE_CLASSES,
  ProtectedBody,
} from "./payload";

const mode = process.argv[2] ?? "full";
const port = Number(process.argv[3] ?? 0);
// The largest limits the config accepts (a million a minute per principal and per 10 s burst):
// far above what one principal sends in a bench figure, so nothing is refused.
const RAISED = "1000000";

// A fresh database per start, so one round's counters never count against the next.
const dir = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "palisade-"));
const config = loadConfig({
  ...process.env,
  APP_ENV: "development",
  JWT_SECRET_KEY: BENCH_JWT_SECRET,
  CSRF_SECRET_KEY: BENCH_CSRF_SECRET,
  DATABASE_PATH: join(dir, "bench.db"),
  RATE_LIMIT_PER_MINUTE: RAISED,
  RATE_LIMIT_BURST: RAISED,
  RATE_LIMIT_CHAT: RAISED,
  IP_BLOCK_RATE_LIMIT_REFUSALS: "10000",
});
let offsetMs = 0;
const clock: Clock = { now: () => Date.now() + offsetMs };
const db = openDatabase(config.databasePath);
applyMigrations(db);
const logger = createLogger({ level: config.logLevel, secretValues: config.secretValues });
const services = createServices({
  config,
  db,
  logger,
  clock,
  cacheTokens: mode !== "full-nocache",
});
await services.start();
const app = createApp({ ...services, extraRouteClasses: BENCH_ROUTE_CLASSES })
  .get("/bench", () => BENCH_PAYLOAD, { public: true })
  .post(
    "/bench/protected",
    ({ body, principal }) => ({ ok: true, length: body.message.length, user: principal.id }),
    { auth: "user", body: ProtectedBody },
  )
  .listen({ port, hostname: "127.0.0.1" });
const chat = app.routes.some((route) => route.method === "POST" && route.path === "/api/chat");

// A token is accepted only for a family the database knows: give it one.
benchFamily(db.$client, services.credentialSeal, "bench-user", "bench-family");
const token = await signAccessToken(
  signingKey(config.jwt.secretKey),
  { sub: "bench-user", role: "user", fam: "bench-family" },
  clock.now(),
  3600,
);
process.on("SIGUSR2", () => {
  offsetMs += 60 * 60_000;
  services.runMaintenance();
  process.stderr.write("advanced\n");
});
process.on("SIGINT", () => process.exit(0));
process.stderr.write(
  `token ${token}\ndb ${config.databasePath}\nchat ${chat ? "yes" : "no"}\nready ${app.server!.port}\n`,
);
