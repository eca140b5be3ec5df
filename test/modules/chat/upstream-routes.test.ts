/**
 * `POST /api/chat` through the whole app with the OpenAI-compatible provider chosen by
 * configuration (OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_TIMEOUT_MS), as users run it: the real
 * SDK against the local OpenAI-wire server (test/support/openai-server.ts). What the client sees
 * (status, problem code, Retry-After, SSE events), what the upstream received, what is stored,
 * logged, counted and reported to Sentry.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { chatMessages, chatUsage } from "../../../src/db/schema";
import { buildTestApp, send, serveInProcess, type TestApp } from "../../support/app";
import { bearer, signUp } from "../../support/auth";
import {
  asUser,
  chat,
  chatThenLeave,
  parseSse,
  SSE,
  streamFirstChunkThenHangUp,
} from "../../support/chat";
import { ManualClock } from "../../support/clock";
import {
  type OpenAiServer,
  startOpenAiServer,
  type UpstreamStep,
} from "../../support/openai-server";
import { type SentryServer, startSentryServer } from "../../support/sentry-server";
import { waitFor } from "../../support/wait";

const SYSTEM_PROMPT = "You are the Palisade test assistant.";
/** Text a user wrote: must never reach a log line or a Sentry event. */
const SECRET_MESSAGE = "my private question about invoice 7731-zebra";

let upstream: OpenAiServer | undefined;
let target: TestApp | undefined;
let sentry: SentryServer | undefined;
afterEach(() => {
  target?.close();
  upstream?.stop();
  sentry?.stop();
  target = upstream = sentry = undefined;
});

async function setUp(env: Record<string, string> = {}, clock?: ManualClock) {
  upstream = await startOpenAiServer();
  target = buildTestApp({
    clock,
    env: {
      OPENAI_API_KEY: upstream.apiKey,
      OPENAI_BASE_URL: upstream.url,
      OPENAI_MODEL: "local-test-model",
      OPENAI_TIMEOUT_MS: "300",
      CHAT_SYSTEM_PROMPT: SYSTEM_PROMPT,
      ...env,
    },
  });
  const alice = await signUp(target);
  return { upstream, target, alice };
}

/**
 * The tokens `session`'s user was charged for a turn it left after about `received` pieces of an
 * upstream sending one every 50 ms (-2: before the upstream's first piece), once settled.
 */
async function usedAfterLeaving(
  app: TestApp,
  server: OpenAiServer,
  serverUrl: URL,
  session: { accessToken: string; userId: string },
  received: number,
  headers: Record<string, string> = {},
): Promise<number> {
  const usedBy = () =>
    app.db
      .select()
      .from(chatUsage)
      .all()
      .find((row) => row.ownerKind === "user" && row.ownerId === session.userId);
  const index = server.requests.length;
  await chatThenLeave(
    serverUrl,
    asUser(session),
    { message: "The same question" },
    async () => {
      await waitFor(() => server.requests.length > index, { what: "the upstream request" });
      await Bun.sleep(received * 50 + 25);
    },
    headers,
  );
  await waitFor(() => usedBy()?.reservedTokens === 0, { what: "the reservation ended" });
  return usedBy()!.usedTokens;
}

const assistantRows = (app: TestApp) =>
  app.db.select().from(chatMessages).where(eq(chatMessages.role, "assistant")).all();

interface Problem {
  code: string;
  status: number;
  requestId: string;
}

async function metricsText(app: TestApp): Promise<string> {
  return (await send(app, "/metrics")).text();
}

/** Log lines about the chat upstream, for the request id, never the text nor the key. */
function expectCleanFailureLogs(app: TestApp, server: OpenAiServer, requestId: string) {
  const lines = app.logs.entries.filter((e) => e.msg === "chat upstream failed");
  // One line for the failed request, however many attempts it took (probe 15b: it was two).
  expect(lines.filter((line) => line.requestId === requestId)).toHaveLength(1);
  expect(app.logs.text).not.toContain(SECRET_MESSAGE);
  expect(app.logs.text).not.toContain("7731-zebra");
  expect(app.logs.text).not.toContain(server.apiKey);
}

describe("POST /api/chat through the OpenAI provider chosen by configuration", () => {
  test("JSON: the upstream's reply and usage; system prompt, then context, then the message", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({
      kind: "reply",
      text: "First answer.",
      usage: { prompt: 11, completion: 3 },
    });
    const first = await chat(target, asUser(alice), { message: "First question" });
    expect(first.status).toBe(200);
    const body = (await first.json()) as {
      conversationId: string;
      reply: string;
      usage: { promptTokens: number; completionTokens: number };
    };
    expect(body.reply).toBe("First answer.");
    expect(body.usage).toEqual({ promptTokens: 11, completionTokens: 3 });
    expect(upstream.requests).toHaveLength(1);
    expect(upstream.requests[0]!.authorized).toBe(true);
    expect(upstream.requests[0]!.body.model).toBe("local-test-model");
    expect(upstream.requests[0]!.body.messages).toEqual([
      { role: "system", content: SYSTEM_PROMPT },
      { role: "user", content: "First question" },
    ]);

    upstream.enqueue({ kind: "reply", text: "Second answer." });
    const second = await chat(target, asUser(alice), {
      message: "Second question",
      conversationId: body.conversationId,
    });
    expect(second.status).toBe(200);
    expect(((await second.json()) as { conversationId: string }).conversationId).toBe(
      body.conversationId,
    );
    expect(upstream.requests[1]!.body.messages).toEqual([
      { role: "system", content: SYSTEM_PROMPT },
      { role: "user", content: "First question" },
      { role: "assistant", content: "First answer." },
      { role: "user", content: "Second question" },
    ]);
    // The usage row holds the upstream's own counts for the first turn.
    const [usage] = target.db.select().from(chatUsage).all();
    expect(usage!.reservedTokens).toBe(0);
  });

  test("the context sent upstream is bounded by CHAT_CONTEXT_MESSAGES and CHAT_CONTEXT_TOKENS", async () => {
    const { upstream, target, alice } = await setUp({
      CHAT_CONTEXT_MESSAGES: "2",
      // "Reply two." is 3 tokens, "Question two" 3: both fit in 6, a third message would not.
      CHAT_CONTEXT_TOKENS: "6",
    });
    upstream.enqueue(
      { kind: "reply", text: "Reply one." },
      { kind: "reply", text: "Reply two." },
      { kind: "reply", text: "Reply three." },
    );
    const first = await chat(target, asUser(alice), { message: "Question one" });
    const { conversationId } = (await first.json()) as { conversationId: string };
    await chat(target, asUser(alice), { message: "Question two", conversationId });
    expect(upstream.requests[1]!.body.messages).toHaveLength(4);
    const third = await chat(target, asUser(alice), { message: "Question three", conversationId });
    expect(third.status).toBe(200);
    expect(upstream.requests[2]!.body.messages).toEqual([
      { role: "system", content: SYSTEM_PROMPT },
      { role: "user", content: "Question two" },
      { role: "assistant", content: "Reply two." },
      { role: "user", content: "Question three" },
    ]);

    // A token bound smaller than the newest message drops the whole context.
    target.close();
    upstream.stop();
    const again = await setUp({ CHAT_CONTEXT_TOKENS: "2" });
    const one = await chat(again.target, asUser(again.alice), { message: "Question one" });
    const id = ((await one.json()) as { conversationId: string }).conversationId;
    await chat(again.target, asUser(again.alice), { message: "Question two", conversationId: id });
    expect(again.upstream.requests[1]!.body.messages).toEqual([
      { role: "system", content: SYSTEM_PROMPT },
      { role: "user", content: "Question two" },
    ]);
  });

  test("SSE: deltas in order, then done with the usage of the final chunk; the stored reply is their concatenation", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({
      kind: "reply",
      chunks: ["Alpha ", "beta ", "gamma ", "delta."],
      usage: { prompt: 17, completion: 4 },
    });
    const response = await chat(target, asUser(alice), { message: "Stream it" }, SSE);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const events = parseSse(await response.text());
    expect(events.slice(0, -1)).toEqual(
      ["Alpha ", "beta ", "gamma ", "delta."].map((delta) => ({
        event: "message",
        data: { delta },
      })),
    );
    const done = events.at(-1)!;
    expect(done.event).toBe("done");
    const { conversationId, usage } = done.data as {
      conversationId: string;
      usage: { promptTokens: number; completionTokens: number };
    };
    expect(usage).toEqual({ promptTokens: 17, completionTokens: 4 });
    expect(upstream.requests[0]!.stream).toBe(true);
    expect(upstream.requests[0]!.body.stream_options).toEqual({ include_usage: true });

    const [stored] = assistantRows(target);
    expect(stored).toMatchObject({
      conversationId,
      content: "Alpha beta gamma delta.",
      incomplete: false,
      promptTokens: 17,
      completionTokens: 4,
    });
    expect(await metricsText(target)).toContain(
      'chat_requests_total{provider="openai",outcome="ok"} 1',
    );
  });

  test("the model's refusal is the reply, JSON and streamed alike: a stream's refusal was an empty reply, stored and charged (probe 60b F4)", async () => {
    const { upstream, target, alice } = await setUp();
    const refusal = "I can't help with that request.";
    upstream.enqueue({ kind: "refusal", text: refusal }, { kind: "refusal", text: refusal });
    const json = await chat(target, asUser(alice), { message: "Refuse it" });
    expect(json.status).toBe(200);
    expect(((await json.json()) as { reply: string }).reply).toBe(refusal);
    const streamed = await chat(target, asUser(alice), { message: "Refuse it" }, SSE);
    expect(streamed.status).toBe(200);
    const events = parseSse(await streamed.text());
    const deltas = events
      .filter((event) => event.event === "message")
      .map((event) => (event.data as { delta: string }).delta);
    expect(deltas.join("")).toBe(refusal);
    expect(events.at(-1)!.event).toBe("done");
    expect(assistantRows(target).map((row) => row.content)).toEqual([refusal, refusal]);
  });

  test("a client that disconnects mid-stream over a real socket aborts the upstream request; what arrived is stored incomplete", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "5000" });
    upstream.enqueue({
      kind: "reply",
      chunks: ["one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight "],
      pauseMs: 150,
    });
    const server = serveInProcess(target);
    try {
      const { status, first } = await streamFirstChunkThenHangUp(
        server.url,
        asUser(alice),
        "Stream slowly",
      );
      expect(status).toBe(200);
      expect(first).toStartWith('data: {"delta":"one "}');

      await upstream.waitForAbort(0);
      await waitFor(() => assistantRows(target).length === 1, { what: "the partial reply" });
      const [stored] = assistantRows(target);
      expect(stored!.incomplete).toBe(true);
      expect(stored!.content).toStartWith("one ");
      expect(stored!.content.length).toBeLessThan(
        "one two three four five six seven eight ".length,
      );
      const [usage] = target.db.select().from(chatUsage).all();
      expect(usage!.reservedTokens).toBe(0);
      expect(usage!.usedTokens).toBeGreaterThan(0);
      expect(await metricsText(target)).toContain(
        'chat_requests_total{provider="openai",outcome="incomplete"} 1',
      );
    } finally {
      await server.shutdown("test");
    }
  });

  test("a client that leaves while a refused upstream is retried is not charged; one that leaves mid-request is (probe 26e F5)", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "5000" });
    const server = serveInProcess(target);
    const usage = () => target.db.select().from(chatUsage).all()[0];
    try {
      // 429, asked to wait 2 s: the client leaves during the wait. Nothing was generated.
      upstream.enqueue({ kind: "error", status: 429, retryAfter: "2" });
      await chatThenLeave(server.url, asUser(alice), { message: "Hello" }, async () => {
        await waitFor(() => upstream.requests.length === 1, { what: "the refused attempt" });
        await Bun.sleep(100);
      });
      await waitFor(() => usage()?.reservedTokens === 0, { what: "the reservation ended" });
      expect(usage()).toMatchObject({ usedTokens: 0, reservedTokens: 0 });

      // The upstream is generating (the reply comes in 2 s) when the client leaves: the prompt
      // was sent, and is billed.
      upstream.enqueue({ kind: "reply", text: "late", delayMs: 2_000 });
      // The refused request was not retried once its client left: this is the second request.
      await chatThenLeave(server.url, asUser(alice), { message: "Hello again" }, () =>
        waitFor(() => upstream.requests.length === 2, { what: "the generating attempt" }),
      );
      await waitFor(() => usage()?.reservedTokens === 0, { what: "the reservation ended" });
      expect(usage()!.usedTokens).toBeGreaterThan(0);
    } finally {
      await server.shutdown("test");
    }
  }, 20_000);

  test("a turn whose client leaves mid-answer, JSON or streamed, is charged the prompt and what it received: reply text (probe 69e F1) or reasoning (probe 69f F2)", async () => {
    const { upstream, target } = await setUp({ OPENAI_TIMEOUT_MS: "5000" });
    const server = serveInProcess(target);
    // Forty pieces of 24 characters, 50 ms apart, of the reply or of reasoning before a word.
    const pieces = Array.from({ length: 40 }, (_, i) => `considering option ${i}. `.padEnd(24));
    const answers: [string, UpstreamStep][] = [
      ["text", { kind: "reply", chunks: pieces, pauseMs: 50, delayMs: 200 }],
      [
        "reasoning",
        { kind: "reply", reasoning: pieces, chunks: ["Answer."], pauseMs: 50, delayMs: 200 },
      ],
    ];
    try {
      for (const [what, answer] of answers) {
        upstream.setDefault(answer);
        const [early, json, streamed] = [
          await signUp(target),
          await signUp(target),
          await signUp(target),
        ];
        const promptOnly = await usedAfterLeaving(target, upstream, server.url, early, -2);
        // About twenty pieces: ~480 characters, ~120 tokens by the estimate.
        const afterJson = await usedAfterLeaving(target, upstream, server.url, json, 20);
        const afterStream = await usedAfterLeaving(target, upstream, server.url, streamed, 20, SSE);
        expect([what, promptOnly > 0]).toEqual([what, true]);
        expect([what, afterJson > promptOnly + 60]).toEqual([what, true]);
        expect([what, afterStream > promptOnly + 60]).toEqual([what, true]);
      }
      // Nothing of a JSON turn left is stored; a streamed one keeps the reply text it handed on.
      expect(assistantRows(target).map((row) => row.incomplete)).toEqual([true]);
    } finally {
      await server.shutdown("test");
    }
  }, 30_000);

  test("a turn whose upstream goes silent while reasoning fails as before and is charged the prompt and the reasoning; a finished one without usage is estimated with it (probe 69f F2)", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "200" });
    // 4 pieces of 16 characters: 16 tokens of reasoning; then silence past the timeout.
    const thoughts = [
      "first, the facts",
      "then the options",
      "then the choice.",
      "and its reasons.",
    ];
    const silent: UpstreamStep = {
      kind: "reply",
      reasoning: thoughts,
      chunks: ["Never"],
      pauses: [2_000],
    };
    upstream.enqueue(silent, silent);
    const json = await chat(target, asUser(alice), { message: "Hello" });
    expect(json.status).toBe(503);
    await upstream.waitForAbort(0);
    // A stream that failed before any reply text is answered with the failure's own status.
    const streamed = await chat(target, asUser(alice), { message: "Hello" }, SSE);
    expect(streamed.status).toBe(503);
    expect(((await streamed.json()) as Problem).code).toBe("UPSTREAM_UNAVAILABLE");
    await upstream.waitForAbort(1);
    expect(upstream.requests).toHaveLength(2);
    expect(assistantRows(target)).toHaveLength(0);
    const [usage] = target.db.select().from(chatUsage).all();
    expect(usage!.reservedTokens).toBe(0);
    expect(await metricsText(target)).toMatch(
      /chat_tokens_total\{[^}]*kind="completion"[^}]*\} 32\n/,
    );

    // Finished, with no usage reported: the reply's 5 characters and the reasoning's 64, 18 tokens.
    upstream.enqueue({ kind: "reply", reasoning: thoughts, chunks: ["Done."], usage: false });
    const finished = await chat(target, asUser(alice), { message: "Hello" });
    expect(finished.status).toBe(200);
    const body = (await finished.json()) as { reply: string; usage: { completionTokens: number } };
    expect(body.reply).toBe("Done.");
    expect(body.usage.completionTokens).toBe(18);
  });

  test("a turn whose upstream opened its answer, then went silent or was cut before any text, is charged its prompt; one never answered is not (probe 70a F2)", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "200" });
    const bob = await signUp(target);
    const carol = await signUp(target);
    const usedBy = (userId: string) =>
      target.db
        .select()
        .from(chatUsage)
        .all()
        .find((row) => row.ownerId === userId);
    // Opened (its first chunk names the role), then silent past the timeout.
    upstream.enqueue({ kind: "reply", chunks: ["Too ", "late."], pauseMs: 2_000 });
    expect((await chat(target, asUser(alice), { message: "Hello" })).status).toBe(503);
    // Opened, then ended with no finish.
    upstream.enqueue({ kind: "cut", afterChunks: 0 });
    expect((await chat(target, asUser(bob), { message: "Hello" }, SSE)).status).toBe(502);
    // Never answered, any attempt: nothing generated, nothing billed.
    upstream.setDefault({ kind: "hang" });
    expect((await chat(target, asUser(carol), { message: "Hello" })).status).toBe(503);
    for (const session of [alice, bob]) {
      expect(usedBy(session.userId)).toMatchObject({ reservedTokens: 0, requests: 1 });
      expect(usedBy(session.userId)!.usedTokens).toBeGreaterThan(0);
    }
    expect(usedBy(carol.userId)).toMatchObject({ usedTokens: 0, reservedTokens: 0 });
    expect(assistantRows(target)).toHaveLength(0);
  });

  test("429 with Retry-After, then success: 200 after waiting what the upstream asked", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue(
      { kind: "error", status: 429, retryAfter: "1" },
      { kind: "reply", text: "Ok." },
    );
    const response = await chat(target, asUser(alice), { message: "Hello" });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { reply: string }).reply).toBe("Ok.");
    expect(upstream.requests).toHaveLength(2);
    const waited = upstream.requests[1]!.receivedAt - upstream.requests[0]!.receivedAt;
    expect(waited).toBeGreaterThanOrEqual(950);
  });

  test("500 twice, then success: 200 after two retries", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue(
      { kind: "error", status: 500 },
      { kind: "error", status: 500 },
      { kind: "reply", text: "Third time lucky." },
    );
    const response = await chat(target, asUser(alice), { message: "Hello" });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { reply: string }).reply).toBe("Third time lucky.");
    expect(upstream.requests).toHaveLength(3);
  });

  test("three 500s: 503 UPSTREAM_UNAVAILABLE with Retry-After, logged with the request id only", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
    expect(response.status).toBe(503);
    expect(Number(response.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    const problem = (await response.json()) as Problem;
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(upstream.requests).toHaveLength(3);
    expect(assistantRows(target)).toHaveLength(0);
    expectCleanFailureLogs(target, upstream, problem.requestId);
    const metrics = await metricsText(target);
    expect(metrics).toContain('chat_requests_total{provider="openai",outcome="upstream_error"} 1');
    expect(metrics).toMatch(/upstream_request_duration_seconds_count\{provider="openai"\} 3/);
    // The reservation was given back.
    expect(target.db.select().from(chatUsage).all()[0]!.reservedTokens).toBe(0);
  });

  test("the upstream's requests are exported at 0 from the start, as its failures are: the failure alerts' ratio is never over its requests (probe 85f F4)", async () => {
    const { upstream, target, alice } = await setUp();
    const before = await metricsText(target);
    expect(before).toContain('upstream_request_duration_seconds_count{provider="openai"} 0');
    expect(before).toContain(
      'upstream_attempt_failures_total{provider="openai",kind="unavailable"} 0',
    );
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    expect((await chat(target, asUser(alice), { message: "Hello" })).status).toBe(503);
    const after = await metricsText(target);
    expect(after).toContain('upstream_request_duration_seconds_count{provider="openai"} 3');
    expect(after).toContain(
      'upstream_attempt_failures_total{provider="openai",kind="unavailable"} 3',
    );
  });

  test("five failed requests of three users or more open the circuit: the sixth is 503 at once, no upstream request", async () => {
    const { upstream, target, alice } = await setUp();
    const bob = await signUp(target);
    const carol = await signUp(target);
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    for (let i = 0; i < 5; i++) {
      const response = await chat(target, asUser([alice, bob, carol][i % 3]!), {
        message: `Attempt ${i}`,
      });
      expect(response.status).toBe(503);
    }
    expect(upstream.requests).toHaveLength(15);
    const started = performance.now();
    const sixth = await chat(target, asUser(alice), { message: "Sixth" });
    expect(performance.now() - started).toBeLessThan(250);
    expect(sixth.status).toBe(503);
    expect((await sixth.json()) as Problem).toMatchObject({ code: "UPSTREAM_UNAVAILABLE" });
    const retryAfter = Number(sixth.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(20);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(upstream.requests).toHaveLength(15);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
  });

  test("two users' failed requests never open the circuit for everyone, whatever the upstream answers them; a third user's failure then does (probes 87a F3, 87c F1)", async () => {
    const { upstream, target, alice } = await setUp({ RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" });
    const bob = await signUp(target);
    const carol = await signUp(target);
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    for (let i = 0; i < 8; i++) {
      const caller = i % 2 === 0 ? alice : bob;
      expect((await chat(target, asUser(caller), { message: `Mine ${i}` })).status).toBe(503);
    }
    expect(upstream.requests).toHaveLength(24);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // A third user's failure in the same streak: the upstream is down for more than a few.
    expect((await chat(target, asUser(carol), { message: "Mine too" })).status).toBe(503);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
    const refused = await chat(target, asUser(carol), { message: "Again" });
    expect(refused.status).toBe(503);
    expect(upstream.requests).toHaveLength(27);
  });

  test("malformed upstream JSON: 502 UPSTREAM_UNAVAILABLE, one attempt, nothing stored", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({ kind: "malformed" });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
    expect(response.status).toBe(502);
    expect(response.headers.get("content-type")).toStartWith("application/problem+json");
    const problem = (await response.json()) as Problem;
    expect(problem).toMatchObject({ code: "UPSTREAM_UNAVAILABLE", status: 502 });
    expect(upstream.requests).toHaveLength(1);
    expect(assistantRows(target)).toHaveLength(0);
    expectCleanFailureLogs(target, upstream, problem.requestId);
  });

  test("an upstream body without end: 502 UPSTREAM_UNAVAILABLE at its byte bound, one attempt, nothing stored (probe 54a F1)", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({ kind: "flood", shape: "json", maxBytes: 64 * 1024 * 1024 });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
    expect(response.status).toBe(502);
    const problem = (await response.json()) as Problem;
    expect(problem).toMatchObject({ code: "UPSTREAM_UNAVAILABLE", status: 502 });
    expect(upstream.requests).toHaveLength(1);
    await upstream.waitForAbort(0);
    expect(assistantRows(target)).toHaveLength(0);
    expectCleanFailureLogs(target, upstream, problem.requestId);
  });

  test("a wrong key: 502, and OpenAI's error text quoting the key never reaches the logs", async () => {
    upstream = await startOpenAiServer();
    target = buildTestApp({
      env: {
        OPENAI_API_KEY: "sk-wrong-key-that-must-not-leak",
        OPENAI_BASE_URL: upstream.url,
        OPENAI_TIMEOUT_MS: "300",
      },
    });
    const bob = await signUp(target);
    const response = await chat(target, asUser(bob), { message: SECRET_MESSAGE });
    expect(response.status).toBe(502);
    const problem = (await response.json()) as Problem;
    expect(upstream.requests[0]!.authorized).toBe(false);
    expect(target.logs.text).not.toContain("sk-wrong-key-that-must-not-leak");
    expect(target.logs.text).not.toContain(SECRET_MESSAGE);
    expect(
      target.logs.entries.some(
        (e) => e.msg === "chat upstream failed" && e.requestId === problem.requestId,
      ),
    ).toBe(true);
  });

  test("a stream cut mid-way: 200, the deltas, then event: error with a 502 problem; the part is stored incomplete", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({ kind: "cut", text: "Partial answer that never ends", afterChunks: 2 });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    expect(events.map((e) => e.event)).toEqual(["message", "message", "error"]);
    expect(events.slice(0, 2).map((e) => (e.data as { delta: string }).delta)).toEqual([
      "Partial ",
      "answer ",
    ]);
    const problem = events[2]!.data as Problem;
    expect(problem).toMatchObject({ code: "UPSTREAM_UNAVAILABLE", status: 502 });
    expect(response.headers.get("x-request-id")).toBe(problem.requestId);
    const [stored] = assistantRows(target);
    expect(stored).toMatchObject({ content: "Partial answer ", incomplete: true });
    expectCleanFailureLogs(target, upstream, problem.requestId);
    expect(await metricsText(target)).toContain(
      'chat_requests_total{provider="openai",outcome="incomplete"} 1',
    );
  });

  test("a stream cut after half of a surrogate pair stores what the client was sent, and nothing when that half was all (probe 54a F3)", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({ kind: "cut", text: "abc \ud83d", afterChunks: 2 });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    expect(events.map((e) => e.event)).toEqual(["message", "error"]);
    expect((events[0]!.data as { delta: string }).delta).toBe("abc ");
    expect(assistantRows(target)).toEqual([
      expect.objectContaining({ content: "abc ", incomplete: true }),
    ]);

    upstream.enqueue({ kind: "cut", text: "\ud83d", afterChunks: 1 });
    const alone = await chat(target, asUser(alice), { message: SECRET_MESSAGE }, SSE);
    expect(alone.status).toBe(502);
    expect(alone.headers.get("content-type")).toStartWith("application/problem+json");
    // Nothing of the second turn is kept: no conversation the client was told failed.
    expect(assistantRows(target)).toHaveLength(1);
    expect(target.db.$client.query("SELECT count(*) AS n FROM chat_conversations").get()).toEqual({
      n: 1,
    });
  });

  test("a connection reset mid-stream is the same: event: error, the part stored incomplete", async () => {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({ kind: "cut", text: "Reset right here now", afterChunks: 1, abrupt: true });
    const response = await chat(target, asUser(alice), { message: "Hello" }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    expect(events.map((e) => e.event)).toEqual(["message", "error"]);
    expect((events[1]!.data as Problem).code).toBe("UPSTREAM_UNAVAILABLE");
    expect(assistantRows(target)[0]).toMatchObject({ content: "Reset ", incomplete: true });
  });

  test("a stream that goes silent after its first piece: event: error with a 503 problem, the part stored incomplete", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "200" });
    upstream.enqueue({
      kind: "reply",
      chunks: ["Fast ", "then ", "stalled."],
      pauses: [0, 0, 2_000],
    });
    const response = await chat(target, asUser(alice), { message: "Hello" }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    expect(events.map((e) => e.event)).toEqual(["message", "message", "error"]);
    expect(events[2]!.data as Problem).toMatchObject({
      code: "UPSTREAM_UNAVAILABLE",
      status: 503,
    });
    await upstream.waitForAbort(0);
    expect(assistantRows(target)[0]).toMatchObject({ content: "Fast then ", incomplete: true });
    const line = target.logs.entries.find((e) => e.msg === "chat upstream failed")!;
    expect(line).toMatchObject({ reason: "timeout mid-stream", attempts: 1 });
  });

  test("a stream silent before its first piece: the real status, 503 problem+json with Retry-After", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "200" });
    upstream.enqueue({ kind: "reply", chunks: ["Too ", "late."], pauseMs: 2_000 });
    const response = await chat(target, asUser(alice), { message: "Hello" }, SSE);
    expect(response.status).toBe(503);
    expect(response.headers.get("content-type")).toStartWith("application/problem+json");
    expect(response.headers.get("retry-after")).not.toBeNull();
    expect(((await response.json()) as Problem).code).toBe("UPSTREAM_UNAVAILABLE");
    expect(assistantRows(target)).toHaveLength(0);
    expect(target.db.select().from(chatUsage).all()[0]!.reservedTokens).toBe(0);
  });

  test("a reply generated slowly, longer than OPENAI_TIMEOUT_MS in all but never silent that long, answers a JSON turn in one request; five leave the circuit closed (probe 69b F1)", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "300" });
    upstream.setDefault({
      kind: "reply",
      chunks: ["One ", "word ", "at ", "a ", "time."],
      pauseMs: 120,
    });
    for (let turn = 0; turn < 5; turn++) {
      const response = await chat(target, asUser(alice), { message: `Long answer ${turn}` });
      expect(response.status).toBe(200);
      expect(((await response.json()) as { reply: string }).reply).toBe("One word at a time.");
    }
    // One request a turn: nothing timed out, nothing was retried, no failure counted.
    expect(upstream.requests).toHaveLength(5);
    expect(target.logs.entries.filter((e) => e.msg === "chat upstream failed")).toEqual([]);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    const bob = await signUp(target);
    expect((await chat(target, asUser(bob), { message: "Hello" })).status).toBe(200);
  }, 20_000);

  test("a JSON turn whose upstream goes silent after some text: 503, nothing stored, not retried, charged the prompt and the text the upstream billed (probe 69b F2)", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "200" });
    upstream.enqueue({
      kind: "reply",
      chunks: ["Fast ", "then ", "stalled."],
      pauses: [0, 0, 2_000],
    });
    const response = await chat(target, asUser(alice), { message: "Hello" });
    expect(response.status).toBe(503);
    expect(((await response.json()) as Problem).code).toBe("UPSTREAM_UNAVAILABLE");
    await upstream.waitForAbort(0);
    expect(upstream.requests).toHaveLength(1);
    expect(assistantRows(target)).toHaveLength(0);
    const [usage] = target.db.select().from(chatUsage).all();
    // The prompt's estimate and "Fast then " (10 characters, 3 tokens by the estimate).
    expect(usage!.reservedTokens).toBe(0);
    expect(usage!.usedTokens).toBeGreaterThan(3);
    const text = await metricsText(target);
    expect(text).toMatch(/chat_tokens_total\{[^}]*kind="completion"[^}]*\} 3/);
  });

  /**
   * Three turns on one conversation: the first two as `cut` (JSON, then streamed), the third a
   * whole answer; what the conversation's page says of each assistant message.
   */
  async function storedAfter(cut: [UpstreamStep, UpstreamStep]) {
    const { upstream, target, alice } = await setUp();
    upstream.enqueue(...cut, { kind: "reply", chunks: ["Whole ", "answer."] });
    const json = await chat(target, asUser(alice), { message: "One" });
    expect(json.status).toBe(200);
    const { conversationId, reply } = (await json.json()) as {
      conversationId: string;
      reply: string;
    };
    const streamed = await chat(target, asUser(alice), { message: "Two", conversationId }, SSE);
    const events = parseSse(await streamed.text()).map((e) => e.event);
    await chat(target, asUser(alice), { message: "Three", conversationId });
    const page = await send(target, `/api/chat/conversations/${conversationId}`, {
      headers: asUser(alice),
    });
    const { messages } = (await page.json()) as {
      messages: { role: string; content: string; incomplete: boolean }[];
    };
    const stored = messages
      .filter((m) => m.role === "assistant")
      .map((m) => [m.content, m.incomplete]);
    return { reply, events, stored };
  }

  test("a reply the upstream's content filter cut part-way is answered as it came and stored as cut short, JSON and streamed (probe 69b F3)", async () => {
    const { reply, events, stored } = await storedAfter([
      { kind: "reply", chunks: ["Partly ", "filtered"], finishReason: "content_filter" },
      // A later finish saying "stop" does not make the cut reply whole (probe 69e F4).
      {
        kind: "reply",
        chunks: ["Also ", "cut"],
        finishReason: "content_filter",
        thenFinish: "stop",
      },
    ]);
    expect(reply).toBe("Partly filtered");
    expect(events).toEqual(["message", "message", "done"]);
    expect(stored).toEqual([
      ["Partly filtered", true],
      ["Also cut", true],
      ["Whole answer.", false],
    ]);
  });

  test("only the first choice is the reply, and nothing after its finish: another choice's text and text sent after the finish are neither answered nor stored (probe 89f F4)", async () => {
    const { reply, stored } = await storedAfter([
      { kind: "reply", chunks: ["zero ", "zero2"], otherChoice: "ONE-SECRET " },
      { kind: "reply", chunks: ["Finished ", "here."], afterFinish: " and more after" },
    ]);
    expect(reply).toBe("zero zero2");
    expect(stored).toEqual([
      ["zero zero2", false],
      ["Finished here.", false],
      ["Whole answer.", false],
    ]);
  });

  test("an upstream that holds the connection after the reply's finish and count ends no turn in a timeout: the reply is whole, answered at once, no failure counted (probe 90k F2)", async () => {
    const { reply, events, stored } = await storedAfter([
      { kind: "reply", chunks: ["Held ", "open."], holdOpen: true },
      // No count at all, then silence: whole too, charged its estimate.
      { kind: "reply", chunks: ["Also ", "whole."], usage: false, holdOpen: true },
    ]);
    expect(reply).toBe("Held open.");
    expect(events).toEqual(["message", "message", "done"]);
    expect(stored).toEqual([
      ["Held open.", false],
      ["Also whole.", false],
      ["Whole answer.", false],
    ]);
    const metrics = await (await send(target!, "/metrics", { peer: "127.0.0.1" })).text();
    expect(metrics).toContain(
      'upstream_attempt_failures_total{provider="openai",kind="unavailable"} 0',
    );
  });

  test("the count charged is one sent with the finish or after it, the last such: a running total on the finish's chunk, or a count before the reply, is not the turn's (probe 90m F3)", async () => {
    const { upstream, target, alice } = await setUp();
    const reply = "Twelve characters and more of a whole reply.";
    upstream.enqueue(
      // A running total on the finish, then the final count, then the connection held.
      {
        kind: "reply",
        chunks: [reply],
        finishUsage: { prompt: 20, completion: 5 },
        usage: { prompt: 20, completion: 11 },
        holdOpen: true,
      },
      // A prompt's count before the reply, then a finish with none, then silence: the estimate.
      {
        kind: "reply",
        chunks: [reply],
        earlyUsage: { prompt: 50, completion: 1 },
        usage: false,
        holdOpen: true,
      },
    );
    const charged = async () => {
      const response = await chat(target, asUser(alice), { message: "One" });
      expect(response.status).toBe(200);
      return ((await response.json()) as { usage: { completionTokens: number } }).usage;
    };
    expect((await charged()).completionTokens).toBe(11);
    // One token a four characters of the reply: not the 1 counted before it.
    expect((await charged()).completionTokens).toBe(Math.ceil(reply.length / 4));
  });

  test("the first finish is the reply's: a later finish does not mark a whole reply cut, and reasoning after it is not charged (probe 89g F2, F3)", async () => {
    const { stored } = await storedAfter([
      { kind: "reply", chunks: ["Hello ", "there."], thenFinish: "content_filter" },
      { kind: "reply", chunks: ["Also ", "whole."], thenFinish: "length" },
    ]);
    expect(stored).toEqual([
      ["Hello there.", false],
      ["Also whole.", false],
      ["Whole answer.", false],
    ]);
    // No usage from the upstream: the turn is charged its estimate, the reply's alone.
    const { upstream, target, alice } = await setUp();
    upstream.enqueue({
      kind: "reply",
      chunks: ["Short."],
      usage: false,
      reasoningAfterFinish: Array.from({ length: 50 }, () => "r".repeat(4000)),
    });
    const response = await chat(target, asUser(alice), { message: "One" });
    expect(response.status).toBe(200);
    const { usage } = (await response.json()) as { usage: { completionTokens: number } };
    expect(usage.completionTokens).toBeLessThan(10);
  });

  test("a reply the completion cap ended mid-sentence (finish_reason length) is answered as it came and stored as cut short, JSON and streamed (probe 80c F1)", async () => {
    const { reply, events, stored } = await storedAfter([
      { kind: "reply", chunks: ["First open ", "the settings and then"], finishReason: "length" },
      { kind: "reply", chunks: ["Streamed and ", "then"], finishReason: "length" },
    ]);
    expect(reply).toBe("First open the settings and then");
    expect(events).toEqual(["message", "message", "done"]);
    expect(stored).toEqual([
      ["First open the settings and then", true],
      ["Streamed and then", true],
      ["Whole answer.", false],
    ]);
  });

  test("the cap's cut in other spellings (LENGTH, a gateway's MAX_TOKENS) is stored as cut short too (probe 82l F2)", async () => {
    const { stored } = await storedAfter([
      { kind: "reply", chunks: ["Capped ", "in capitals"], finishReason: "LENGTH" },
      { kind: "reply", chunks: ["Capped as ", "Gemini says"], finishReason: " MAX_TOKENS" },
    ]);
    expect(stored).toEqual([
      ["Capped in capitals", true],
      ["Capped as Gemini says", true],
      ["Whole answer.", false],
    ]);
  });

  test("an answer with no text (only tool calls, or an empty finish) is 422 and stored nowhere; the tool calls generated are charged (probe 80c F2)", async () => {
    const { upstream, target, alice } = await setUp();
    const argument = `{"query":"${"x".repeat(990)}"}`;
    upstream.enqueue(
      {
        kind: "reply",
        chunks: [],
        toolCalls: Array.from({ length: 20 }, () => argument),
        finishReason: "tool_calls",
        usage: false,
      },
      { kind: "reply", chunks: [], finishReason: "stop", usage: false },
    );
    for (const headers of [undefined, SSE]) {
      const response = await chat(target, asUser(alice), { message: "Hello" }, headers);
      // Streamed too: no event was sent before the answer failed, so it is the problem document.
      expect(response.status).toBe(422);
      expect(((await response.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    }
    expect(assistantRows(target)).toHaveLength(0);
    const [usage] = target.db.select().from(chatUsage).all();
    expect(usage!.reservedTokens).toBe(0);
    // 20 KB of arguments generated: charged by estimate, at most the completion cap (1,024).
    expect(usage!.usedTokens).toBeGreaterThan(1024);
  });

  test("answers with no text from an upstream that is up do not open its circuit for everyone (probe 80d F1)", async () => {
    const { upstream, target, alice } = await setUp();
    const bob = await signUp(target);
    // A reasoning model that spent its whole completion cap thinking, five times over.
    for (let i = 0; i < 5; i++) {
      upstream.enqueue({
        kind: "reply",
        chunks: [],
        reasoning: ["thinking ".repeat(50)],
        finishReason: "length",
      });
    }
    upstream.setDefault({ kind: "reply", chunks: ["Hello ", "Bob."] });
    for (let i = 0; i < 5; i++) {
      expect((await chat(target, asUser(alice), { message: `Think about ${i}` })).status).toBe(422);
    }
    const answered = await chat(target, asUser(bob), { message: "Hi" });
    expect(answered.status).toBe(200);
    expect(((await answered.json()) as { reply: string }).reply).toBe("Hello Bob.");
  });

  test("a refusal sent as an error event once the stream has begun is 422 as the 400 is, and never opens the circuit for everyone (probe 86b F1)", async () => {
    const { upstream, target, alice } = await setUp();
    const bob = await signUp(target);
    const refusals = ["context_length_exceeded", "content_filter", "string_above_max_length"];
    for (let i = 0; i < 6; i++) {
      const code = refusals[i % refusals.length]!;
      upstream.enqueue({
        kind: "malformed",
        body: JSON.stringify({ error: { message: "no", type: "invalid_request_error", code } }),
      });
      const response = await chat(target, asUser(alice), { message: `Long ${i}` });
      expect({ code, status: response.status }).toEqual({ code, status: 422 });
      expect(((await response.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    }
    // Asked as a stream: refused before any text, so the same 422, not a 200 then an error event.
    upstream.enqueue({
      kind: "malformed",
      body: JSON.stringify({ error: { message: "no", code: "context_length_exceeded" } }),
    });
    const streamed = await chat(target, asUser(alice), { message: "S" }, SSE);
    expect(streamed.status).toBe(422);
    expect(((await streamed.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    upstream.setDefault({ kind: "reply", chunks: ["Hello ", "Bob."] });
    const answered = await chat(target, asUser(bob), { message: "Hi" });
    expect(answered.status).toBe(200);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // The shapes gateways send a refusal in once streaming (probe 86e F2): a size status as a
    // text code or a number, the filter as a type or in capitals.
    for (const error of [
      { message: "too long", code: "413" },
      { message: "bad", object: "error", code: 422 },
      { message: "filtered", type: "content_filter" },
      { message: "filtered", code: "CONTENT_FILTER" },
    ]) {
      upstream.enqueue({ kind: "malformed", body: JSON.stringify({ error }) });
      const response = await chat(target, asUser(alice), { message: "Shape" });
      expect({ error, status: response.status }).toEqual({ error, status: 422 });
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // Any other error event is the upstream's failure, as before.
    upstream.enqueue({
      kind: "malformed",
      body: JSON.stringify({ error: { message: "overloaded", type: "server_error" } }),
    });
    expect((await chat(target, asUser(alice), { message: "Again" })).status).toBe(502);
  });

  test("more shapes of an error event once streaming (probe 87a F3, F4): refusals are 422 and never counted; an upstream turning the request away is 502 and proves it up; a failure is counted", async () => {
    const { upstream, target, alice } = await setUp({ RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" });
    const event = (body: unknown) =>
      upstream.enqueue({ kind: "malformed", body: JSON.stringify(body) });
    // Refusals, each six times over: the circuit never opens on them.
    for (const body of [
      { error: { error: { code: "content_filter" } } },
      {
        error: "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096",
        error_type: "validation",
      },
      { error: { message: "filtered", code: "\u200bcontent_filter" } },
    ]) {
      for (let i = 0; i < 6; i++) {
        event(body);
        const response = await chat(target, asUser(alice), { message: `Refused ${i}` });
        expect({ body, status: response.status }).toEqual({ body, status: 422 });
      }
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // The upstream turned the request away (a model not found, the key): 502, the upstream up.
    for (const error of [
      // As before the stream: a 400 naming no refusal, an invalid request (a wrong model behind
      // LiteLLM, billing off at Gemini, Mistral's too-long prompt: probe 87e F3, F4).
      { message: "Invalid model name passed in model=gpt-x", code: "400" },
      { message: "enable billing", code: 400, status: "FAILED_PRECONDITION" },
      { message: "bad", type: "invalid_request_error", code: null },
      { message: "too large", type: "invalid_request_message_error", code: "3051" },
      { message: "model not found", code: 404 },
      { message: "no such model", type: "invalid_request_error", code: "model_not_found" },
      { message: "key", code: "401", status: 400 },
      { message: "key", type: "authentication_error" },
      { message: "key", code: 403 },
      { message: "gone", code: "404" },
    ]) {
      event({ error });
      const response = await chat(target, asUser(alice), { message: "Rejected" });
      expect({ error, status: response.status }).toEqual({ error, status: 502 });
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // Failures, whatever else they say: five in a row, of three users or more, open the circuit.
    const bob = await signUp(target);
    const carol = await signUp(target);
    const failures = [
      { message: "slow down", code: "rate_limit_exceeded", status: 400 },
      { message: "filtered?", code: 500, type: "content_filter" },
      { message: "odd", code: 400.5 },
      { message: "busy", code: 429 },
      // Out of credit, a model gone: every user's failure, not one user's text (probe 87c F5).
      { message: "Insufficient credits", code: 402 },
      { message: "gone", code: 410 },
      { message: "conflict", status: "409" },
    ];
    for (const [i, error] of failures.entries()) {
      event({ error });
      const caller = i === failures.length - 1 ? carol : i === failures.length - 2 ? bob : alice;
      const response = await chat(target, asUser(caller), { message: "Failed" });
      expect({ error, status: response.status }).toEqual({ error, status: 502 });
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
  });

  test("a half-open trial that meets a refusal of its text in the stream is 422 and closes the circuit: the upstream answered (probe 88a F2)", async () => {
    const clock = new ManualClock();
    const { upstream, target, alice } = await setUp(
      { RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" },
      clock,
    );
    const bob = await signUp(target);
    const carol = await signUp(target);
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    for (let i = 0; i < 5; i++) {
      await chat(target, asUser([alice, bob, carol][i % 3]!), { message: `Down ${i}` });
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
    clock.advance(30_000);
    upstream.enqueue({
      kind: "malformed",
      body: JSON.stringify({ error: { message: "no", code: "content_policy_violation" } }),
    });
    const trial = await chat(target, asUser(alice), { message: "Refused as the trial" });
    expect(trial.status).toBe(422);
    expect(((await trial.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // Not barred: the refusal was no failed trial.
    upstream.setDefault({ kind: "reply", text: "Back." });
    expect((await chat(target, asUser(alice), { message: "Hello" })).status).toBe(200);
  });

  test("a 4xx before the stream that no request's text explains (a 402 out of credit) is the upstream's failure: 502, not retried, and counted, so it opens the circuit (probe 88a F3)", async () => {
    const { upstream, target, alice } = await setUp({ RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" });
    const bob = await signUp(target);
    const carol = await signUp(target);
    upstream.setDefault({ kind: "error", status: 402, message: "Insufficient credits" });
    for (let i = 0; i < 5; i++) {
      const response = await chat(target, asUser([alice, bob, carol][i % 3]!), {
        message: `No credit ${i}`,
      });
      expect(response.status).toBe(502);
    }
    expect(upstream.requests).toHaveLength(5);
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
    const refused = await chat(target, asUser(alice), { message: "Sixth" });
    expect(refused.status).toBe(503);
    expect(upstream.requests).toHaveLength(5);
  });

  test("a gateway's guardrail refusing the text (Portkey's 446, DashScope's data_inspection_failed), before or in the stream, is 422 and never counted (probe 88d F2)", async () => {
    const { upstream, target, alice } = await setUp({ RATE_LIMIT_ALLOW_CIDRS: "127.0.0.0/8" });
    const bob = await signUp(target);
    const carol = await signUp(target);
    const refusals: UpstreamStep[] = [
      { kind: "error", status: 446, message: "Guardrail checks failed (request denied)" },
      { kind: "error", status: 400, code: "data_inspection_failed", message: "inappropriate" },
      {
        kind: "malformed",
        body: JSON.stringify({ error: { message: "x", code: "data_inspection_failed" } }),
      },
      { kind: "malformed", body: JSON.stringify({ error: { message: "denied", code: 446 } }) },
      // 451, as gateways answer a blocked content (probe 88g F4).
      {
        kind: "malformed",
        body: JSON.stringify({ error: { code: "content_filter", status: 451 } }),
      },
    ];
    for (let i = 0; i < 10; i++) {
      upstream.enqueue(refusals[i % refusals.length]!);
      const response = await chat(target, asUser([alice, bob, carol][i % 3]!), {
        message: `Guarded ${i}`,
      });
      expect({ i, status: response.status }).toEqual({ i, status: 422 });
      expect(((await response.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 0');
    // A 446 that names a quota, and a refusal's code beside a 402, are the upstream's failures:
    // 502 and counted, five of three users opening the circuit (probe 88f F2).
    const failures: UpstreamStep[] = [
      { kind: "error", status: 446, code: "insufficient_quota", message: "quota" },
      {
        kind: "malformed",
        body: JSON.stringify({ error: { code: "data_inspection_failed", status: 402 } }),
      },
      // Read in any spelling, one level in, and beside a nested body (probe 88g F2, F3).
      { kind: "error", status: 446, code: "quota_exceeded", message: "quota" },
      {
        kind: "malformed",
        body: JSON.stringify({ error: { status: 402, error: { code: "content_filter" } } }),
      },
      {
        kind: "malformed",
        body: JSON.stringify({ error: { code: "data_inspection_failed", status_code: 402 } }),
      },
    ];
    for (let i = 0; i < 5; i++) {
      upstream.enqueue(failures[i % failures.length]!);
      const response = await chat(target, asUser([alice, bob, carol][i % 3]!), {
        message: `Failed ${i}`,
      });
      expect({ i, status: response.status }).toEqual({ i, status: 502 });
    }
    expect(await metricsText(target)).toContain('upstream_circuit_open{provider="openai"} 1');
  });

  test("an upstream that never answers: 503 once every attempt timed out", async () => {
    const { upstream, target, alice } = await setUp({ OPENAI_TIMEOUT_MS: "150" });
    upstream.setDefault({ kind: "hang" });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).not.toBeNull();
    const problem = (await response.json()) as Problem;
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(upstream.requests).toHaveLength(3);
    await waitFor(() => upstream!.requests.every((r) => r.aborted), { what: "every hang closed" });
    expectCleanFailureLogs(target, upstream, problem.requestId);
    const line = target.logs.entries.find((e) => e.msg === "chat upstream failed")!;
    expect(line).toMatchObject({ provider: "openai", reason: "timeout", attempts: 3 });
  });

  test("the daily budget is settled with the upstream's real usage, JSON and streamed, never past the reservation", async () => {
    const { upstream, target, alice } = await setUp({
      CHAT_DAILY_TOKEN_BUDGET: "300",
      CHAT_MAX_COMPLETION_TOKENS: "100",
    });
    upstream.enqueue(
      { kind: "reply", text: "Short.", usage: { prompt: 40, completion: 20 } },
      { kind: "reply", chunks: ["a ", "b"], usage: { prompt: 50, completion: 30 } },
    );
    expect((await chat(target, asUser(alice), { message: "One" })).status).toBe(200);
    let [usage] = target.db.select().from(chatUsage).all();
    expect(usage).toMatchObject({ usedTokens: 60, reservedTokens: 0, requests: 1 });
    await (await chat(target, asUser(alice), { message: "Two" }, SSE)).text();
    [usage] = target.db.select().from(chatUsage).all();
    expect(usage).toMatchObject({ usedTokens: 140, reservedTokens: 0 });

    // The upstream reports more than the turn reserved: it is charged its reservation (the
    // budget's bound), with a warning, and the next turn no longer fits.
    upstream.enqueue({ kind: "reply", text: "Big.", usage: { prompt: 500, completion: 200 } });
    expect((await chat(target, asUser(alice), { message: "Three" })).status).toBe(200);
    [usage] = target.db.select().from(chatUsage).all();
    expect(usage!.usedTokens).toBeGreaterThan(140);
    expect(usage!.usedTokens).toBeLessThanOrEqual(300);
    expect(target.logs.text).toContain("chat usage passed its reservation");
    const refused = await chat(target, asUser(alice), { message: "Four" });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as Problem).code).toBe("QUOTA_EXCEEDED");
    expect(upstream.requests).toHaveLength(3);
  });
});

describe("upstream failures reach Sentry with the request id, never the text or the key", () => {
  async function setUpWithSentry() {
    sentry = startSentryServer();
    return setUp({ SENTRY_DSN: sentry.dsn() });
  }

  type SentryEvent = { tags: Record<string, string>; user?: { id: string } };

  /**
   * The one event the failed turn reported, tagged with its request id, route, 502 and the
   * upstream, by a user; what Sentry received, as text, never holds the message or the key.
   */
  async function expectOneUpstreamEvent(
    { target, upstream }: Awaited<ReturnType<typeof setUpWithSentry>>,
    requestId: string,
    userId: string,
  ): Promise<string> {
    expect(await target.services.errors.flush(5000)).toBe(true);
    await waitFor(() => sentry!.events().length === 1, { what: "one event" });
    const event = sentry!.events()[0] as SentryEvent;
    expect(event.tags).toMatchObject({
      request_id: requestId,
      route: "POST /api/chat",
      status: "502",
      code: "UPSTREAM_UNAVAILABLE",
      upstream: "openai",
      principal: `user:${userId}`,
    });
    const raw = sentry!.envelopes.map((e) => e.raw).join("\n");
    expect(raw).not.toContain(SECRET_MESSAGE);
    expect(raw).not.toContain(upstream.apiKey);
    return raw;
  }

  test("a 502 from a malformed upstream", async () => {
    const set = await setUpWithSentry();
    const { upstream, target, alice } = set;
    upstream.enqueue({ kind: "malformed" });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
    expect(response.status).toBe(502);
    const { requestId } = (await response.json()) as Problem;
    const raw = await expectOneUpstreamEvent(set, requestId, alice.userId);
    expect(raw).not.toContain("7731-zebra");
    expect(raw).toContain("malformed chunk");
  });

  test("an event: error mid-stream, answered after the 200", async () => {
    const set = await setUpWithSentry();
    const { upstream, target, alice } = set;
    upstream.enqueue({ kind: "cut", text: "Partial answer that never ends", afterChunks: 2 });
    const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    const problem = events.at(-1)!.data as Problem;
    expect(events.at(-1)!.event).toBe("error");
    const raw = await expectOneUpstreamEvent(set, problem.requestId, alice.userId);
    expect(raw).not.toContain("Partial answer");
  });

  test("a refusal of the message's content (the upstream's 400, 413, 422) is 422 UPSTREAM_REFUSED, JSON or streamed: a warning, not reported, not a 5xx (probe 55a F3)", async () => {
    const { upstream, target, alice } = await setUpWithSentry();
    for (const status of [400, 413, 422]) {
      upstream.enqueue({ kind: "error", status, code: "content_filter" });
      const response = await chat(target, asUser(alice), { message: SECRET_MESSAGE });
      expect(response.status).toBe(422);
      expect(response.headers.get("content-type")).toStartWith("application/problem+json");
      expect((await response.json()) as Problem).toMatchObject({
        code: "UPSTREAM_REFUSED",
        status: 422,
      });
    }
    upstream.enqueue({ kind: "error", status: 400, code: "context_length_exceeded" });
    const streamed = await chat(target, asUser(alice), { message: SECRET_MESSAGE }, SSE);
    expect(streamed.status).toBe(422);
    expect(((await streamed.json()) as Problem).code).toBe("UPSTREAM_REFUSED");
    expect(assistantRows(target)).toHaveLength(0);
    const failed = target.logs.entries.filter((entry) => entry.msg === "chat upstream failed");
    expect(failed.map((entry) => [entry.level, entry.kind])).toEqual(
      Array.from({ length: 4 }, () => ["warn", "refused"]),
    );
    await target.services.errors.flush(2000);
    expect(sentry!.events()).toHaveLength(0);
    const metrics = await metricsText(target);
    expect(metrics).toContain(
      'http_requests_total{method="POST",route="/api/chat",status="422"} 4',
    );
    expect(metrics).toContain(
      'upstream_attempt_failures_total{provider="openai",kind="refused"} 4',
    );
  });

  test("a client that goes away is not an error: nothing is reported", async () => {
    const { upstream, target, alice } = await setUpWithSentry();
    upstream.enqueue({ kind: "reply", chunks: ["one ", "two ", "three "], pauseMs: 100 });
    const response = await chat(target, asUser(alice), { message: "Hello" }, SSE);
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    await waitFor(() => assistantRows(target).length === 1, { what: "the partial reply" });
    await target.services.errors.flush(2000);
    expect(sentry!.events()).toHaveLength(0);
  });
});

describe("a reply that is not well-formed Unicode (probe 37b F1)", () => {
  test("is stored well-formed: the conversation reads back, nothing is reported tampered, and a pair split across streamed pieces stays one character", async () => {
    const { upstream, target, alice } = await setUp();
    const headers = { ...bearer(alice.accessToken), "content-type": "application/json" };
    upstream.enqueue({ kind: "reply", text: "hello \ud83d tail" });
    const plain = await send(target, "/api/chat", {
      headers,
      body: JSON.stringify({ message: "first" }),
    });
    expect(plain.status).toBe(200);
    const first = (await plain.json()) as { conversationId: string; reply: string };
    expect(first.reply).toBe("hello \ufffd tail");
    // A lone low surrogate, an emoji whose two halves come in two pieces, and a high surrogate
    // ending the reply.
    upstream.enqueue({ kind: "reply", chunks: ["a \ude00 b \ud83d", "\ude00 c\ud83d"] });
    const streamed = await send(target, "/api/chat", {
      headers: { ...headers, accept: "text/event-stream" },
      body: JSON.stringify({ message: "second", conversationId: first.conversationId }),
    });
    expect(streamed.status).toBe(200);
    // The client is sent what is stored, piece by piece: no lone surrogate (probe 43b note).
    const deltas = (await streamed.text())
      .split("\n\n")
      .filter((event) => event.startsWith("data: "))
      .map((event) => (JSON.parse(event.slice(6)) as { delta: string }).delta);
    expect(deltas.every((delta) => delta.isWellFormed())).toBe(true);
    expect(deltas.join("")).toBe("a \ufffd b \u{1F600} c\ufffd");
    const read = await send(target, `/api/chat/conversations/${first.conversationId}`, {
      headers: bearer(alice.accessToken),
    });
    expect(read.status).toBe(200);
    const { messages } = (await read.json()) as { messages: { role: string; content: string }[] };
    expect(messages.filter((m) => m.role === "assistant").map((m) => m.content)).toEqual([
      "hello \ufffd tail",
      "a \ufffd b \u{1F600} c\ufffd",
    ]);
    target.services.audit.flush();
    const tampered = target.db.$client
      .query("SELECT count(*) AS n FROM audit_events WHERE type = 'chat.conversation_tampered'")
      .get();
    expect(tampered).toEqual({ n: 0 });
  });
});
