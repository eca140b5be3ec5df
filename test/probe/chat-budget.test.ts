/**
 * Probe findings (branch probe-chat): the daily token budget.
 *
 * These tests FAIL on the current code; each one states what the README promises.
 *
 * 1. README "Security notes → Budgets": "the last turn admitted may take the day's usage past the
 *    budget by its completion, and the next turn is refused". Under concurrency every turn in
 *    flight is admitted on its prompt estimate alone, so the day's usage ends up past the budget
 *    by the completions of *all* of them (up to RATE_LIMIT_CHAT turns a minute), not of one.
 * 2. The OpenAI-compatible provider sends no `max_tokens` / `max_completion_tokens`, so "its
 *    completion" is unbounded: one admitted turn can spend any number of upstream tokens.
 * 3. A streamed turn whose client disconnects before the first piece arrives is not charged at
 *    all (the reservation is given back), although the upstream has already been sent (and bills)
 *    the whole prompt: a client can spend upstream prompt tokens without ever touching its budget.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chatUsage } from "../../src/db/schema";
import { createLogger } from "../../src/logging/logger";
import { createUpstreamMetrics } from "../../src/modules/chat/providers/metrics";
import { createOpenAiProvider } from "../../src/modules/chat/providers/openai";
import { createMetricsRegistry } from "../../src/plugins/metrics/registry";
import { buildTestApp, LogCapture, send, type TestApp } from "../support/app";
import { signUp } from "../support/auth";
import { asUser, gatedProvider, slowProvider } from "../support/chat";
import { ManualClock } from "../support/clock";
import { type OpenAiServer, startOpenAiServer } from "../support/openai-server";
import { waitFor } from "../support/wait";

const SYSTEM_PROMPT = "S".repeat(40); // 10 tokens
const MESSAGE = "zzz yyyyyy"; // 3 tokens; matches no FAQ entry, so the long fallback answers
const ESTIMATE = 13;
const BUDGET = ESTIMATE * 5 + ESTIMATE - 1; // room for five estimates, not six

let target: TestApp | undefined;
let upstream: OpenAiServer | undefined;
afterEach(() => {
  target?.close();
  target = undefined;
  upstream?.stop();
  upstream = undefined;
});

const env = {
  CHAT_SYSTEM_PROMPT: SYSTEM_PROMPT,
  CHAT_DAILY_TOKEN_BUDGET: String(BUDGET),
  RATE_LIMIT_CHAT: "1000",
  RATE_LIMIT_PER_MINUTE: "1000",
  RATE_LIMIT_BURST: "1000",
};

describe("probe: budget overshoot", () => {
  test("concurrent turns overshoot the budget by at most one completion (as documented)", async () => {
    const provider = gatedProvider();
    target = buildTestApp({ env, chatProvider: provider, clock: new ManualClock() });
    const alice = await signUp(target);
    // 20 turns at once: the five whose estimates fit are admitted and wait on the provider.
    const pending = Array.from({ length: 20 }, () =>
      send(target!, "/api/chat", { body: { message: MESSAGE }, headers: asUser(alice) }),
    );
    await waitFor(() => provider.waiting() >= 5);
    provider.open();
    const responses = await Promise.all(pending);
    const replies = (await Promise.all(
      responses.filter((r) => r.status === 200).map((r) => r.json()),
    )) as { usage: { promptTokens: number; completionTokens: number } }[];
    const biggestCompletion = Math.max(...replies.map((r) => r.usage.completionTokens));
    const row = target.db.select().from(chatUsage).get()!;
    // Documented bound: the budget plus the last admitted turn's completion.
    // Actual: the budget is passed by the completions of every turn admitted concurrently.
    expect(row.usedTokens).toBeLessThanOrEqual(BUDGET + biggestCompletion);
  });

  test("the OpenAI-compatible provider bounds the completion it asks for", async () => {
    upstream = await startOpenAiServer();
    const provider = createOpenAiProvider({
      apiKey: upstream.apiKey,
      baseUrl: upstream.url,
      model: "local-model",
      timeoutMs: 2_000,
      logger: createLogger({ level: "silent", destination: new LogCapture() }),
      metrics: createUpstreamMetrics(createMetricsRegistry()),
      clock: new ManualClock(),
      random: () => 0,
    });
    await provider.complete([{ role: "user", content: "write me a novel" }]);
    const body = upstream.requests[0]!.body as Record<string, unknown>;
    // Without a cap the upstream may generate any number of tokens for one admitted turn.
    expect(body.max_tokens ?? body.max_completion_tokens).toBeDefined();
  });
});

describe("probe: disconnecting before the first piece", () => {
  test("a streamed turn the client abandons before any text still counts its prompt", async () => {
    // 300 ms before each piece: the upstream has the prompt, nothing has come back yet.
    const provider = slowProvider(300);
    target = buildTestApp({
      env: { ...env, CHAT_DAILY_TOKEN_BUDGET: "100000" },
      chatProvider: provider,
      clock: new ManualClock(),
    });
    const alice = await signUp(target);
    const client = new AbortController();
    const request = new Request("http://localhost/api/chat", {
      method: "POST",
      signal: client.signal,
      headers: {
        ...asUser(alice),
        "content-type": "application/json",
        accept: "text/event-stream",
      },
      body: JSON.stringify({ message: "a".repeat(4000) }), // ~1000 prompt tokens sent upstream
    });
    const pending = target.app.handle(request).catch(() => null);
    await Bun.sleep(100);
    client.abort();
    await pending;
    await waitFor(() => provider.aborted.length > 0);
    const row = target.db.select().from(chatUsage).get();
    // The turn is over (nothing still reserved): what follows is its final charge.
    expect(row?.reservedTokens ?? 0).toBe(0);
    // Actual: used 0, requests 0 — the prompt the upstream processed is charged to nobody.
    expect(row?.usedTokens ?? 0).toBeGreaterThan(0);
  });
});
