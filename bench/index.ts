/**
 * `bun run bench`: the limiter store's checks per second, each defence's cost per request, and the
 * whole chain's requests per second as a ratio to bare Elysia measured in the same run. Nothing is
 * asserted; the numbers are for reading (and for the README's performance section).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { openDatabase } from "../src/db/client";
import { applyMigrations } from "../src/db/migrate";
import { measureAuth } from "./auth";
import { measureChain } from "./chain";
import { measureChat } from "./chat";
import { measureQueryTiming } from "./database";
import { measureHttp, wrkAvailable } from "./http";
import { measureLimiter, measureRedisLimiter } from "./limiter";
import { measureStripeWebhook } from "./stripe-webhook";
import { measureWhatsApp } from "./whatsapp";

const quick = process.argv.includes("--quick");
const dir = mkdtempSync(join(tmpdir(), "palisade-bench-"));
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });

try {
  console.log(
    `Palisade benchmark — Bun ${Bun.version}, ${cpus().length} cores (${cpus()[0]?.model ?? "?"})\n`,
  );

  const db = openDatabase(join(dir, "limiter.db"));
  applyMigrations(db);
  const limiter = await measureLimiter(db, quick ? 20_000 : 100_000);
  db.$client.close();
  console.log("Limiter stores (SQLite: WAL, synchronous=NORMAL; 10k keys)");
  console.log("| form | checks/s | ratio |");
  console.log("| --- | ---: | ---: |");
  console.log(`| prepared UPSERT, one autocommit per check | ${fmt(limiter.autocommit)} | 1.00× |`);
  console.log(
    `| Drizzle query builder, rebuilt for every check, one autocommit per check | ${fmt(limiter.drizzle)} | ${(limiter.drizzle / limiter.autocommit).toFixed(2)}× |`,
  );
  // The same statement as a Drizzle prepared statement, against the raw one called alike.
  console.log(
    `| Drizzle prepared UPSERT (sql.placeholder), one autocommit per check | ${fmt(limiter.drizzleAutocommit)} | ${(limiter.drizzleAutocommit / limiter.rawAutocommit).toFixed(2)}× of raw (${fmt(limiter.rawAutocommit)}) |`,
  );
  console.log(
    `| Drizzle prepared UPSERT (sql.placeholder), 256 per transaction | ${fmt(limiter.drizzleBatched)} | ${(limiter.drizzleBatched / limiter.rawBatched).toFixed(2)}× of raw (${fmt(limiter.rawBatched)}) |`,
  );
  console.log(
    `| prepared UPSERT, group commit (the store) | ${fmt(limiter.grouped)} | ${(limiter.grouped / limiter.autocommit).toFixed(2)}× |`,
  );
  const redis = await measureRedisLimiter(quick ? 20_000 : 100_000);
  console.log(
    redis === null
      ? "| Redis store (REDIS_URL), grouped | skipped: redis-server not installed | |"
      : `| Redis store (REDIS_URL), grouped, Lua script per key | ${fmt(redis)} | ${(redis / limiter.autocommit).toFixed(2)}× |`,
  );

  const timing = measureQueryTiming(dir, quick ? 100_000 : 500_000);
  console.log("\nStatement timing (db_query_duration_seconds), prepared primary-key get");
  console.log("| connection | µs/statement |");
  console.log("| --- | ---: |");
  console.log(`| bun:sqlite as is | ${timing.rawUs.toFixed(3)} |`);
  console.log(
    `| timed (db/timing wrapper) | ${timing.timedUs.toFixed(3)} (+${(timing.timedUs - timing.rawUs).toFixed(3)}) |`,
  );

  const chain = await measureChain(dir, quick ? 5_000 : 30_000, 32);
  console.log(
    "\nCost of each defence, in process (app.handle, 32 in flight; µs per request over the app before it)",
  );
  console.log("| stage | µs/request |");
  console.log("| --- | ---: |");
  console.log(`| bare Elysia JSON route | ${chain.bareUs.toFixed(2)} (total) |`);
  for (const row of chain.rows) console.log(`| + ${row.stage} | ${row.usPerRequest.toFixed(2)} |`);
  console.log(
    `| whole chain | ${chain.fullUs.toFixed(2)} (total), ${(chain.fullUs - chain.bareUs).toFixed(2)} over bare |`,
  );

  const auth = await measureAuth(dir, quick ? 5_000 : 50_000);
  console.log("\nCredentials (in process)");
  console.log("| operation | rate |");
  console.log("| --- | ---: |");
  console.log(
    `| login: argon2id verify, Bun's default cost | ${auth.loginMs.toFixed(1)} ms each |`,
  );
  console.log(`| access token, cached | ${fmt(auth.tokenCached)}/s |`);
  console.log(`| access token, jose HS256 verify (cache off) | ${fmt(auth.tokenUncached)}/s |`);
  console.log(`| API key, cached | ${fmt(auth.keyCached)}/s |`);
  console.log(
    `| API key, first sight (prefix lookup + SHA-256 compare) | ${fmt(auth.keyFirstSight)}/s |`,
  );

  const stripe = await measureStripeWebhook(dir, quick ? 2_000 : 10_000, 32);
  console.log("\nWebhooks (in process)");
  console.log("| operation | rate |");
  console.log("| --- | ---: |");
  console.log(
    `| Stripe signature: constructEventAsync, 1.5 KB event | ${fmt(stripe.verifyPerSecond)}/s |`,
  );
  console.log(
    `| Stripe delivery through every defence, verified and recorded once (app.handle, 32 in flight) | ${fmt(stripe.deliveriesPerSecond)}/s${stripe.failed > 0 ? ` (${stripe.failed} not 200)` : ""} |`,
  );

  const whatsapp = await measureWhatsApp(dir, quick ? 2_000 : 10_000);
  console.log("\nWhatsApp webhook (in process; 1 KiB notifications, one text message each)");
  console.log("| operation | rate |");
  console.log("| --- | ---: |");
  console.log(
    `| X-Hub-Signature-256 check (HMAC-SHA256 + timingSafeEqual) | ${fmt(whatsapp.verifyPerSecond)}/s |`,
  );
  console.log(
    `| verified delivery through every defence, dedupe record + outbox row committed (32 in flight) | ${fmt(whatsapp.deliveriesPerSecond)}/s |`,
  );
  console.log(
    `| verified redelivery of a message already seen (32 in flight) | ${fmt(whatsapp.redeliveriesPerSecond)}/s |`,
  );

  const chat = await measureChat(dir, quick ? 1_000 : 5_000, 32, quick ? 3 : 5);
  console.log(
    "\nChat turns, offline provider, in process (app.handle, 32 in flight; median of interleaved rounds)",
  );
  console.log("| handler | turns/s | ratio |");
  console.log("| --- | ---: | ---: |");
  console.log(
    `| the chat turn behind a bare Elysia route, no defences | ${fmt(chat.bare)} | 1.00× |`,
  );
  console.log(
    `| POST /api/chat, every defence, API key (cache on) | ${fmt(chat.full)} | ${(chat.full / chat.bare).toFixed(2)}× |`,
  );

  if (wrkAvailable()) {
    const http = await measureHttp(quick ? 2 : 5, quick ? 1 : 2);
    const ratio = (n: number) => `${(n / http.bare).toFixed(2)}×`;
    console.log("\nHTTP, wrk -t1 -c64 (server on core 0, wrk on core 1; best of rounds)");
    console.log("| server | req/s | ratio |");
    console.log("| --- | ---: | ---: |");
    console.log(`| bare Elysia JSON route | ${fmt(http.bare)} | 1.00× |`);
    console.log(
      `| Palisade, every defence, public route | ${fmt(http.full)} | ${ratio(http.full)} |`,
    );
    console.log(
      `| Palisade, every defence, bearer token (cache on) | ${fmt(http.authCached)} | ${ratio(http.authCached)} |`,
    );
    console.log(
      `| Palisade, every defence, bearer token (cache off) | ${fmt(http.authUncached)} | ${ratio(http.authUncached)} |`,
    );
  } else {
    console.log("\nHTTP: skipped (needs wrk and taskset: apt-get install wrk)");
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
