/**
 * The wall clock stepped back (NTP, a VM resumed) while the service runs. What one process keeps
 * timed with it — the revocation feed's poll, the key cache, the blocks cache, the chat circuit —
 * waited for the clock to pass where it had been: a revocation, a block or its lift made by
 * another process took effect only after the whole step, and the circuit stayed open for it
 * (probe 83f F1–F3). Each is looked at again at once instead.
 */
import { afterEach, expect, test } from "bun:test";
import { elapsedMs } from "../src/clock";
import { conversationTamperReporter } from "../src/modules/chat/history-seal";
import { blockTamperReporter } from "../src/plugins/ip-block/seal";
import { buildTestApp, secondProcess, send, type TestApp } from "./support/app";
import { createKey, signUp } from "./support/auth";
import { asUser, chat } from "./support/chat";
import { ManualClock } from "./support/clock";
import { type OpenAiServer, startOpenAiServer } from "./support/openai-server";

const TEN_MINUTES = 10 * 60_000;

let current: TestApp | null = null;
let upstream: OpenAiServer | null = null;
afterEach(() => {
  current?.close();
  current = null;
  upstream?.stop();
  upstream = null;
});

test("elapsedMs: a step back reads as long past", () => {
  expect(elapsedMs(1_500, 1_000)).toBe(500);
  expect(elapsedMs(1_000, 1_000)).toBe(0);
  expect(elapsedMs(1_000, 1_500)).toBe(Number.POSITIVE_INFINITY);
});

test("a key revoked by another process after a step back is refused within the poll, not after the step", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ clock });
  const target = current;
  const other = secondProcess(target, clock);
  try {
    const alice = await signUp(target);
    const { key, record } = createKey(target, ["chat"], alice.userId);
    const me = () => send(target, "/api/auth/me", { headers: { "x-api-key": key } });
    expect((await me()).status).toBe(200);
    clock.advance(-TEN_MINUTES);
    other.services.apiKeys.revoke(record.id, "test");
    clock.advance(1_100);
    expect((await me()).status).toBe(401);
  } finally {
    other.close();
  }
});

test("a block added and a block lifted by another process after a step back apply within the cache's second", async () => {
  const clock = new ManualClock();
  current = buildTestApp({ clock });
  const target = current;
  const other = secondProcess(target, clock);
  try {
    const block = (address: string) =>
      other.services.ipBlocks.block({ address, reason: "test", ttlMs: 3_600_000, source: "admin" });
    block("203.0.113.8");
    const health = (peer: string) => send(target, "/api/auth/me", { peer });
    expect((await health("203.0.113.8")).status).toBe(403);
    expect((await health("203.0.113.7")).status).toBe(401);
    clock.advance(-TEN_MINUTES);
    block("203.0.113.7");
    await other.services.ipBlocks.lift("203.0.113.8", "cli");
    clock.advance(1_100);
    expect((await health("203.0.113.7")).status).toBe(403);
    expect((await health("203.0.113.8")).status).toBe(401);
  } finally {
    other.close();
  }
});

test("the chat circuit opened before a step back lets its trial through 30 s later, not after the step", async () => {
  const clock = new ManualClock();
  upstream = await startOpenAiServer();
  current = buildTestApp({
    clock,
    env: {
      OPENAI_API_KEY: upstream.apiKey,
      OPENAI_BASE_URL: upstream.url,
      OPENAI_MODEL: "m",
      OPENAI_TIMEOUT_MS: "300",
    },
  });
  const target = current;
  const alice = await signUp(target);
  upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
  for (let i = 0; i < 5; i++) await chat(target, asUser(alice), { message: `Attempt ${i}` });
  const open = await chat(target, asUser(alice), { message: "open?" });
  expect(open.status).toBe(503);
  upstream.setDefault({ kind: "reply", text: "Hello again" });
  clock.advance(-60 * 60_000);
  clock.advance(31_000);
  const trial = await chat(target, asUser(alice), { message: "healthy now?" });
  expect(trial.status).toBe(200);
});

test("forged block rows read after a step back are summarised then, not once the clock is past the last summary", () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const events: unknown[] = [];
  const reporter = blockTamperReporter({
    logger: { error: (fields) => lines.push(JSON.stringify(fields)) },
    audit: { record: (event) => events.push(event.detail) },
    clock,
  });
  const ids = (from: number, count: number) =>
    Array.from({ length: count }, (_, index) => String(from + index));
  reporter.report(ids(1, 101));
  expect(lines.at(-1)).toBe(JSON.stringify({ table: "ip_blocks", more: 1 }));
  clock.advance(-TEN_MINUTES);
  reporter.report(ids(200, 3));
  expect(lines.at(-1)).toBe(JSON.stringify({ table: "ip_blocks", more: 3 }));
  expect(events.at(-1)).toEqual({ table: "ip_blocks", more: 3 });
  // And once a minute after that, as before.
  const summaries = lines.length;
  reporter.report(ids(300, 2));
  expect(lines.length).toBe(summaries);
  clock.advance(60_000);
  reporter.report(ids(400, 1));
  expect(lines.slice(summaries)).toEqual([JSON.stringify({ table: "ip_blocks", more: 3 })]);
});

test("tampered conversations counted after a step back are summarised at once, not once the clock is past the last summary", () => {
  const clock = new ManualClock();
  const waits: number[] = [];
  const summaries: unknown[] = [];
  let run: () => void = () => {};
  const report = conversationTamperReporter({
    logger: { error: (fields) => summaries.push(fields) },
    audit: { record: () => {} },
    namedInBulk: 0,
    now: () => clock.now(),
    later: (summarise, ms) => {
      waits.push(ms);
      run = summarise;
    },
  });
  report("forged-1", true);
  run();
  expect(waits).toEqual([0]);
  clock.advance(-TEN_MINUTES);
  report("forged-2", true);
  expect(waits).toEqual([0, 0]);
  run();
  expect(summaries).toEqual([{ more: 1 }, { more: 1 }]);
  clock.advance(20_000);
  report("forged-3", true);
  expect(waits).toEqual([0, 0, 40_000]);
});
