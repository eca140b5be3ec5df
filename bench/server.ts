/**
 * A server for the HTTP benchmark, run in its own process: `bare` is Elysia with one JSON route;
 * `full` is the Palisade app (every defence) with the same route, public at `/bench` and behind a
 * bearer token at `/bench-auth` (it prints a token); `full-nocache` the same without the
 * verified-token cache.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Elysia } from "elysia";
import { createApp } from "../src/app";
import { loadConfig } from "../src/config";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import { createLogger } from "../src/logging/logger";
import { signAccessToken, signingKey } from "../src/plugins/auth/tokens";
import { createServices } from "../src/services";
import { benchFamily } from "./family";

const mode = process.argv[2];
const port = Number(process.argv[3] ?? 0);
const payload = { id: 42, name: "palisade", tags: ["a", "b"], ok: true };

if (mode === "bare") {
  const app = new Elysia().get("/bench", () => payload).listen({ port, hostname: "127.0.0.1" });
  process.stderr.write(`ready ${app.server!.port}\n`);
} else {
  const dir = mkdtempSync(join(tmpdir(), "palisade-bench-"));
  const config = loadConfig({
    ...process.env,
    DATABASE_PATH: join(dir, "bench.db"),
    RATE_LIMIT_PER_MINUTE: "1000000",
    RATE_LIMIT_BURST: "1000000",
  });
  const db = openDatabase(config.databasePath);
  applyMigrations(db);
  const logger = createLogger({ level: config.logLevel, secretValues: config.secretValues });
  const services = createServices({ config, db, logger, cacheTokens: mode !== "full-nocache" });
  const app = createApp(services)
    .get("/bench", () => payload, { public: true })
    .get("/bench-auth", () => payload, { auth: "user" })
    .listen({ port, hostname: "127.0.0.1" });
  // A token is accepted only for a family the database knows: give it one.
  benchFamily(db.$client, "bench-user", "bench-family");
  const token = await signAccessToken(
    signingKey(config.jwt.secretKey),
    { sub: "bench-user", role: "user", fam: "bench-family" },
    Date.now(),
    3600,
  );
  process.stderr.write(`token ${token}\nready ${app.server!.port}\n`);
}
process.on("SIGINT", () => process.exit(0));
