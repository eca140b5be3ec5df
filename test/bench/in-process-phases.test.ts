/**
 * `bun run bench` is not run by the suite, and a phase that throws ends the whole run: the
 * in-process phases run here on a few requests each, so a change to what the app accepts (a
 * webhook's message now too old to answer, a route now refusing the bench's request) fails the
 * suite rather than the next benchmark run. Each phase checks its own answers and rows.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { measureAuth } from "../../bench/auth";
import { measureChain } from "../../bench/chain";
import { measureChat } from "../../bench/chat";
import { measureLimiter } from "../../bench/limiter";
import { measureMicro } from "../../bench/micro";
import { measureStripeWebhook } from "../../bench/stripe-webhook";
import { measureWhatsApp } from "../../bench/whatsapp";
import { openDatabase } from "../../src/db/client";
import { applyMigrations } from "../../src/db/migrate";
import { tempDir } from "../support/app";

const dir = tempDir("palisade-bench-phases-");
afterAll(() => dir.remove());

test("the WhatsApp phase's deliveries each leave an outbox row", async () => {
  const result = await measureWhatsApp(dir.path, 40);
  expect(result.deliveriesPerSecond).toBeGreaterThan(0);
});

test("the Stripe webhook phase's deliveries are each accepted", async () => {
  const result = await measureStripeWebhook(dir.path, 40, 8);
  expect(result.failed).toBe(0);
});

test("the chat phase's turns are each answered", async () => {
  const result = await measureChat(dir.path, 20, 4, 1);
  expect(result.full).toBeGreaterThan(0);
});

test("the defence-chain phase's requests are each answered", async () => {
  const result = await measureChain(dir.path, 100, 8, 1);
  expect(result.fullUs).toBeGreaterThan(0);
});

test("the limiter, credential and per-operation phases run", async () => {
  const db = openDatabase(join(dir.path, "limiter.db"));
  applyMigrations(db);
  try {
    expect((await measureLimiter(db, 2_000)).grouped).toBeGreaterThan(0);
  } finally {
    db.$client.close();
  }
  expect((await measureAuth(dir.path, 200, 20, 1)).keyFirstSight).toBeGreaterThan(0);
  expect((await measureMicro(dir.path, 500)).auditMustKeep).toBeGreaterThan(0);
});
