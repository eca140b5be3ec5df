/**
 * The OpenAI-compatible provider through the real `openai` SDK against a local server that speaks
 * the wire protocol (test/support/openai-server.ts): replies, streams, usage, retries, timeouts, the
 * circuit breaker, caller aborts seen at the server, failures, logs and metrics.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createLogger } from "../../../src/logging/logger";
import { createChatProvider } from "../../../src/modules/chat/providers";
import { createUpstreamMetrics } from "../../../src/modules/chat/providers/metrics";
import {
  completionCapField,
  createOpenAiProvider,
  MAX_RETRY_WAIT_MS,
  MAX_TOLD_RETRY_AFTER_S,
  replyBound,
  requestedWaitMs,
  retryDelay,
  upstreamBounds,
} from "../../../src/modules/chat/providers/openai";
import {
  AbortedMidReply,
  type ChatMessage,
  type ChatProvider,
  type Delta,
  UpstreamFailure,
} from "../../../src/modules/chat/providers/provider";
import { estimateTokens } from "../../../src/modules/chat/tokens";
import { createMetricsRegistry, type Registry } from "../../../src/plugins/metrics/registry";
import { LogCapture, testConfig } from "../../support/app";
import { ManualClock } from "../../support/clock";
import { type OpenAiServer, startOpenAiServer } from "../../support/openai-server";
import { startRedirectingUpstream } from "../../support/redirecting-upstream";
import { waitFor } from "../../support/wait";

const SECRET_TEXT = "my card ends in 4242 and my secret plan is zebra-omelette";
const MESSAGES: ChatMessage[] = [
  { role: "system", content: "You are the Palisade helper." },
  { role: "user", content: "What is Palisade?" },
  { role: "assistant", content: "A hardened chatbot backend." },
  { role: "user", content: SECRET_TEXT },
];

let upstream: OpenAiServer;
let logs: LogCapture;
let registry: Registry;
let clock: ManualClock;
let provider: ChatProvider;

function build(
  overrides: { apiKey?: string; timeoutMs?: number; maxCompletionTokens?: number } = {},
): ChatProvider {
  return createOpenAiProvider({
    apiKey: overrides.apiKey ?? upstream.apiKey,
    baseUrl: upstream.url,
    model: "local-model",
    timeoutMs: overrides.timeoutMs ?? 2_000,
    logger: createLogger({ level: "debug", destination: logs }),
    metrics: createUpstreamMetrics(registry, "openai"),
    clock,
    random: () => 0,
    maxCompletionTokens: overrides.maxCompletionTokens,
  });
}

/** A provider at another base URL than the test upstream's, with any key and a 1 s timeout. */
function providerAt(baseUrl: string): ChatProvider {
  return createOpenAiProvider({
    apiKey: "sk-any",
    baseUrl,
    model: "local-model",
    timeoutMs: 1_000,
    logger: createLogger({ level: "debug", destination: logs }),
    metrics: createUpstreamMetrics(registry, "openai"),
    clock,
    random: () => 0,
  });
}

beforeEach(async () => {
  upstream = await startOpenAiServer();
  logs = new LogCapture();
  registry = createMetricsRegistry();
  clock = new ManualClock();
  provider = build();
});

afterEach(() => {
  upstream.stop();
});

async function failureOf(promise: Promise<unknown>): Promise<UpstreamFailure> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof UpstreamFailure) return error;
    throw error;
  }
  throw new Error("expected an UpstreamFailure");
}

async function collect(deltas: AsyncIterable<Delta>): Promise<Delta[]> {
  const out: Delta[] = [];
  for await (const delta of deltas) out.push(delta);
  return out;
}

/** Consumes a stream, keeping what arrived before it threw. */
async function collectUntilError(
  deltas: AsyncIterable<Delta>,
): Promise<{ received: Delta[]; error: unknown }> {
  const received: Delta[] = [];
  try {
    for await (const delta of deltas) received.push(delta);
  } catch (error) {
    return { received, error };
  }
  return { received, error: undefined };
}

function textOf(deltas: Delta[]): string {
  return deltas.map((delta) => (delta.kind === "text" ? delta.text : "")).join("");
}

function failureLines() {
  return logs.entries.filter((entry) => entry.msg === "chat upstream failed");
}

describe("replies", () => {
  test("complete sends the messages in order, system prompt first as given, and returns text and usage", async () => {
    upstream.enqueue({
      kind: "reply",
      text: "Palisade guards chatbots.",
      usage: { prompt: 41, completion: 5 },
    });
    const completion = await provider.complete(MESSAGES, { requestId: "req-1" });
    expect(completion).toEqual({
      text: "Palisade guards chatbots.",
      usage: { promptTokens: 41, completionTokens: 5 },
    });
    expect(upstream.requests).toHaveLength(1);
    const [request] = upstream.requests;
    expect(request?.path).toBe("/v1/chat/completions");
    expect(request?.authorized).toBe(true);
    expect(request?.body.model).toBe("local-model");
    expect(request?.body.messages).toEqual(MESSAGES);
    // Asked as a stream, as every turn is (probe 69b F1), with its usage in the last chunk.
    expect(request?.body.stream).toBe(true);
    expect(request?.body.stream_options).toEqual({ include_usage: true });
  });

  test("stream yields the text as it arrives, then the usage from the final chunk, last", async () => {
    upstream.enqueue({
      kind: "reply",
      chunks: ["Pali", "sade ", "guards."],
      usage: { prompt: 17, completion: 3 },
    });
    const deltas = await collect(provider.stream(MESSAGES));
    expect(deltas).toEqual([
      { kind: "text", text: "Pali" },
      { kind: "text", text: "sade " },
      { kind: "text", text: "guards." },
      { kind: "usage", usage: { promptTokens: 17, completionTokens: 3 } },
    ]);
    const [request] = upstream.requests;
    expect(request?.body.stream).toBe(true);
    expect(request?.body.stream_options).toEqual({ include_usage: true });
    expect(request?.body.messages).toEqual(MESSAGES);
  });

  test("an upstream that sends no usage gets an estimate of a token per four characters, not zero", async () => {
    const messages: ChatMessage[] = [
      { role: "system", content: "abcd" },
      { role: "user", content: "efghijklm" },
    ];
    upstream.enqueue({ kind: "reply", text: "0123456789", usage: false });
    const completion = await provider.complete(messages);
    // 13 prompt characters → 4 tokens; 10 reply characters → 3 tokens.
    expect(completion.usage).toEqual({ promptTokens: 4, completionTokens: 3 });

    upstream.enqueue({ kind: "reply", chunks: ["01234", "56789"], usage: false });
    const deltas = await collect(provider.stream(messages));
    expect(deltas.at(-1)).toEqual({
      kind: "usage",
      usage: { promptTokens: 4, completionTokens: 3 },
    });
    expect(estimateTokens("")).toBe(0);
    expect(estimateTokens("abcde")).toBe(2);
  });

  test("streamed reasoning, in either field, is counted as it arrives and into an estimated usage, never as text (probe 69f F2)", async () => {
    const messages: ChatMessage[] = [{ role: "user", content: "efghijklm" }];
    for (const reasoningShape of ["reasoning_content", "reasoning"] as const) {
      upstream.enqueue({
        kind: "reply",
        reasoning: ["Think", "ing hard."],
        reasoningShape,
        chunks: ["0123456789"],
        usage: false,
      });
      const deltas = await collect(provider.stream(messages));
      // 14 characters of reasoning and 10 of reply: 6 tokens, where the reply alone is 3.
      expect(deltas).toEqual([
        { kind: "reasoning", characters: 5 },
        { kind: "reasoning", characters: 9 },
        { kind: "text", text: "0123456789" },
        { kind: "usage", usage: { promptTokens: 3, completionTokens: 6 } },
      ]);
    }
    upstream.enqueue({ kind: "reply", reasoning: ["Thinking hard."], text: "0123456789" });
    const completion = await provider.complete(messages);
    expect(completion.text).toBe("0123456789");
  });

  test("reasoning in other shapes (OpenRouter's reasoning_details, Mistral's thinking parts) is counted too, once, never as text (probes 70a F3, 70c F2)", async () => {
    const messages: ChatMessage[] = [{ role: "user", content: "efghijklm" }];
    const thoughts = Array.from({ length: 10 }, () => "x".repeat(100));
    for (const reasoningShape of ["reasoning_details", "thinking"] as const) {
      upstream.enqueue({
        kind: "reply",
        reasoning: thoughts,
        reasoningShape,
        chunks: ["0123456789"],
        usage: false,
      });
      const completion = await provider.complete(messages);
      expect(completion.text).toBe("0123456789");
      // 1,000 characters of reasoning and 10 of reply, 253 tokens (the reply alone was 3):
      // OpenRouter's text sent twice, in `reasoning` and in `reasoning_details`, is counted once.
      expect([reasoningShape, completion.usage.completionTokens]).toEqual([reasoningShape, 253]);
    }
  });

  test("reasoning in any of its shapes is progress: a model reasoning longer than the timeout in all, never silent that long, answers (probe 70c F1)", async () => {
    provider = build({ timeoutMs: 300 });
    const thoughts = Array.from({ length: 6 }, () => "a thought. ");
    const shapes = ["reasoning_content", "reasoning", "reasoning_details", "thinking"] as const;
    for (const reasoningShape of shapes) {
      upstream.enqueue({
        kind: "reply",
        reasoning: thoughts,
        reasoningShape,
        pauseMs: 150,
        chunks: ["Answer."],
      });
      const completion = await provider.complete(MESSAGES);
      expect([reasoningShape, completion.text]).toEqual([reasoningShape, "Answer."]);
    }
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 0');
  });

  test("a reply streamed as text parts of a content list, as Mistral's reasoning models send it, is the reply: shown, progress, charged (probe 70e F1)", async () => {
    provider = build({ timeoutMs: 300 });
    upstream.enqueue({
      kind: "reply",
      reasoning: ["Let me think."],
      reasoningShape: "thinking",
      textParts: true,
      chunks: Array.from({ length: 6 }, (_, i) => `part${i} `),
      pauseMs: 150,
      usage: false,
    });
    const deltas = await collect(provider.stream(MESSAGES));
    expect(textOf(deltas)).toBe("part0 part1 part2 part3 part4 part5 ");
    // 13 characters of reasoning and 36 of reply: 13 tokens.
    expect(deltas.at(-1)).toMatchObject({ kind: "usage", usage: { completionTokens: 13 } });
  });

  test("a stream that opened and then failed says the prompt was billed, and what was generated; one that never opened says nothing was (probe 70a F2)", async () => {
    provider = build({ timeoutMs: 300 });
    upstream.enqueue({ kind: "reply", chunks: ["never"], pauses: [2_000] });
    const opened = await failureOf(provider.complete(MESSAGES));
    expect([opened.kind, opened.billedCharacters]).toEqual(["unavailable", 0]);
    upstream.enqueue({
      kind: "reply",
      reasoning: ["a".repeat(40)],
      chunks: ["x"],
      pauses: [2_000],
    });
    const reasoned = await failureOf(provider.complete(MESSAGES));
    expect(reasoned.billedCharacters).toBe(40);
    upstream.enqueue({ kind: "cut", text: "Some text here", afterChunks: 2 });
    const cut = await failureOf(provider.complete(MESSAGES));
    expect([cut.kind, cut.billedCharacters]).toEqual(["bad_response", "Some text ".length]);
    upstream.setDefault({ kind: "error", status: 500, retryAfterMs: "0" });
    const refused = await failureOf(provider.complete(MESSAGES));
    expect(refused.billedCharacters).toBeUndefined();
  });
});

describe("what an upstream reports that cannot be so (probe 26e F2, F3)", () => {
  const messages: ChatMessage[] = [{ role: "user", content: "efghijklm" }];

  test("zero tokens for text that is not empty, or a count past 10^8, is replaced by the estimate; a prompt count past the messages' ceiling is that ceiling", async () => {
    for (const usage of [
      { prompt: 0, completion: 0 },
      { prompt: 1e308, completion: 1e308 },
      { prompt: 2 ** 60, completion: -1 },
    ]) {
      upstream.enqueue({ kind: "reply", text: "0123456789", usage });
      expect((await provider.complete(messages)).usage).toEqual({
        promptTokens: 3,
        completionTokens: 3,
      });
      upstream.enqueue({ kind: "reply", chunks: ["01234", "56789"], usage });
      const deltas = await collect(provider.stream(messages));
      expect(deltas.at(-1)).toEqual({
        kind: "usage",
        usage: { promptTokens: 3, completionTokens: 3 },
      });
    }
    // Under a fortieth of the estimate cannot be a count of the text (probe 26g F2): 1 token for
    // 400 characters is estimated (100), while 1 for a 9-character prompt (estimate 3) stands; over
    // the cap the request carried (1,024) is the cap.
    const long = "word ".repeat(80);
    upstream.enqueue({ kind: "reply", text: long, usage: { prompt: 1, completion: 1 } });
    expect((await provider.complete(messages)).usage).toEqual({
      promptTokens: 1,
      completionTokens: 100,
    });
    upstream.enqueue({
      kind: "reply",
      text: "short",
      usage: { prompt: 5, completion: 99_999_999 },
    });
    expect((await provider.complete(messages)).usage).toEqual({
      promptTokens: 5,
      completionTokens: 1024,
    });
    upstream.enqueue({ kind: "reply", chunks: [long], usage: { prompt: 1, completion: 1 } });
    const under = await collect(provider.stream(messages));
    expect(under.at(-1)).toEqual({
      kind: "usage",
      usage: { promptTokens: 1, completionTokens: 100 },
    });
    // A prompt count past what the messages can be (a byte a token, three bytes a character, and
    // 16 a message plus 32,768 a template or gateway may add) is charged that ceiling (probe 70e):
    // 27 + 16 + 32,768 for this 9-character prompt, JSON or streamed.
    const ceiling = 9 * 3 + 16 + 32_768;
    for (const prompt of [99_999_999, ceiling + 1]) {
      upstream.enqueue({ kind: "reply", text: "short", usage: { prompt, completion: 2 } });
      expect((await provider.complete(messages)).usage).toEqual({
        promptTokens: ceiling,
        completionTokens: 2,
      });
      upstream.enqueue({ kind: "reply", chunks: ["short"], usage: { prompt, completion: 2 } });
      expect((await collect(provider.stream(messages))).at(-1)).toEqual({
        kind: "usage",
        usage: { promptTokens: ceiling, completionTokens: 2 },
      });
    }
    upstream.enqueue({ kind: "reply", text: "short", usage: { prompt: ceiling, completion: 2 } });
    expect((await provider.complete(messages)).usage.promptTokens).toBe(ceiling);
    // A real count is kept, and zero for an empty reply is one.
    upstream.enqueue({ kind: "reply", text: "0123456789", usage: { prompt: 7, completion: 9 } });
    expect((await provider.complete(messages)).usage).toEqual({
      promptTokens: 7,
      completionTokens: 9,
    });
    // An honest count of long tokens stands (probe 26h F1): 4,000 dashes are 62 of OpenAI's tokens.
    upstream.enqueue({
      kind: "reply",
      text: "-".repeat(4_000),
      usage: { prompt: 7, completion: 62 },
    });
    expect((await provider.complete(messages)).usage).toEqual({
      promptTokens: 7,
      completionTokens: 62,
    });
    // An empty reply is no answer (probe 80c F2): refused, whatever count it came with.
    upstream.enqueue({ kind: "reply", chunks: [], usage: { prompt: 7, completion: 0 } });
    const { received, error } = await collectUntilError(provider.stream(messages));
    expect(received).toEqual([]);
    expect((error as UpstreamFailure).kind).toBe("refused");
    expect(failureLines().at(-1)).toMatchObject({ reason: "reply with no text" });
  });

  test("a reply of the longest tokens within the cap is a reply: five leave the circuit closed (probe 82d F2)", async () => {
    // 600 tokens of 128 dashes each, as OpenAI's tokenizer holds them, under the default cap of
    // 1,024: 76,800 characters, past the 32 a token the bound used to allow.
    const dashes = "-".repeat(128);
    for (let i = 0; i < 5; i++) {
      upstream.enqueue({
        kind: "reply",
        chunks: Array.from({ length: 600 }, () => dashes),
        usage: { prompt: 9, completion: 600 },
      });
      const { text, usage } = await provider.complete(messages);
      expect(text).toHaveLength(600 * 128);
      expect(usage.completionTokens).toBe(600);
    }
    expect(failureLines()).toEqual([]);
    upstream.enqueue({ kind: "reply", text: "still closed" });
    expect((await provider.complete(messages)).text).toBe("still closed");
  });

  test("a reply longer than its cap allows is not kept: 502 bad_response, a stream cut there", async () => {
    const bound = replyBound(1024);
    // 128 characters a token, OpenAI's longest (probe 82d F2).
    expect(bound).toBe(131_072);
    upstream.enqueue({ kind: "reply", text: "x".repeat(bound + 1) });
    const failure = await failureOf(provider.complete(messages));
    expect(failure.kind).toBe("bad_response");
    // Exactly the bound is a reply.
    upstream.enqueue({ kind: "reply", text: "y".repeat(bound) });
    expect((await provider.complete(messages)).text).toHaveLength(bound);

    const piece = "z".repeat(bound / 4);
    upstream.enqueue({ kind: "reply", chunks: [piece, piece, piece, piece, "!", "more"] });
    const { received, error } = await collectUntilError(provider.stream(messages));
    expect(textOf(received)).toHaveLength(bound);
    expect(error).toBeInstanceOf(UpstreamFailure);
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(failureLines().at(-1)).toMatchObject({ reason: "reply longer than its cap" });
  });
});

describe("the upstream's bytes (probe 54a F1)", () => {
  const bounds = upstreamBounds(1024);
  /** Bytes the loopback connection's buffers may hold beyond what was read when it was closed. */
  const inFlight = 24 * 1024 * 1024;

  test("the bounds at the default cap: a reply's 64 Ki characters escaped, and room for the envelope", () => {
    expect(bounds).toEqual({
      bodyBytes: 65_536 * 8 + 1024 * 1024,
      streamBytes: (65_536 * 8 + 1024 * 1024) * 16,
      streamEvents: 65_536 + 1024,
    });
  });

  test("a completion body without end is cut at its bound, at once and not retried: 502, the request closed", async () => {
    // It would otherwise end at 64 MiB, as a body that is not JSON.
    upstream.enqueue({ kind: "flood", shape: "json", maxBytes: 64 * 1024 * 1024 });
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(failure.kind).toBe("bad_response");
    expect(failureLines()).toEqual([
      expect.objectContaining({ reason: "reply longer than its cap", attempts: 1 }),
    ]);
    await upstream.waitForAbort(0);
    expect(upstream.requests).toHaveLength(1);
    expect(upstream.requests[0]!.bytesSent).toBeLessThan(bounds.bodyBytes + inFlight);
  });

  test("one stream line without end is cut at its bound: the stream fails 502, the request closed", async () => {
    upstream.enqueue({ kind: "flood", shape: "line", maxBytes: 64 * 1024 * 1024 });
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(received).toEqual([]);
    expect(error).toBeInstanceOf(UpstreamFailure);
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(failureLines()).toEqual([
      expect.objectContaining({ reason: "reply longer than its cap", attempts: 1 }),
    ]);
    await upstream.waitForAbort(0);
    expect(upstream.requests[0]!.bytesSent).toBeLessThan(bounds.bodyBytes + inFlight);
  });

  test("events without end that carry nothing of a reply are cut at the event bound, not read until the upstream stops", async () => {
    // Each event comes well within the silence timeout, so only their number ends it.
    upstream.enqueue({ kind: "flood", shape: "events", maxBytes: 16 * 1024 * 1024 });
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(received).toEqual([]);
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(failureLines()).toEqual([
      expect.objectContaining({ reason: "stream longer than its cap" }),
    ]);
    await upstream.waitForAbort(0);
  });

  test("an answer that trickles, an error's body included, is bounded by the attempt's timeout: retried, then unavailable, each request closed (probe 56a F1)", async () => {
    provider = build({ timeoutMs: 300 });
    // A byte every 50 ms: 20 s for the whole body, were it read to its end.
    const trickle = (status: number) =>
      ({
        kind: "flood",
        shape: "json",
        status,
        blockBytes: 1,
        pauseMs: 50,
        maxBytes: 400,
      }) as const;
    for (const [i, status] of [500, 429].entries()) {
      upstream.setDefault(trickle(status));
      const started = performance.now();
      const failure = await failureOf(provider.complete(MESSAGES));
      expect([status, failure.kind]).toEqual([status, "unavailable"]);
      expect(performance.now() - started).toBeLessThan(6_000);
      expect(upstream.requests).toHaveLength(3 * (i + 1));
    }
    upstream.setDefault(trickle(502));
    const { error } = await collectUntilError(provider.stream(MESSAGES));
    expect((error as UpstreamFailure).kind).toBe("unavailable");
    expect(upstream.requests).toHaveLength(9);
    // An error labelled as a stream is an error all the same: read whole, under the deadline
    // (probe 57a F2).
    upstream.setDefault({ ...trickle(429), shape: "line" });
    const labelled = await collectUntilError(provider.stream(MESSAGES));
    expect((labelled.error as UpstreamFailure).kind).toBe("unavailable");
    expect(upstream.requests).toHaveLength(12);
    // A 200 that trickles what is no stream of events: a turn answered whole asks for a stream
    // too (probe 69b F1), so it is an unusable answer, closed at once and not retried.
    upstream.setDefault(trickle(200));
    const started = performance.now();
    const opened = await failureOf(provider.complete(MESSAGES));
    expect(opened.kind).toBe("bad_response");
    expect(performance.now() - started).toBeLessThan(6_000);
    expect(upstream.requests).toHaveLength(13);
    for (let index = 0; index < 13; index++) await upstream.waitForAbort(index);
  }, 40_000);

  test("events with nothing in them, each just inside the timeout, do not end the upstream's silence: the stream times out (probe 56a note)", async () => {
    provider = build({ timeoutMs: 300 });
    // One empty event every 100 ms, for a minute were it read on.
    upstream.enqueue({
      kind: "flood",
      shape: "events",
      blockBytes: 100,
      pauseMs: 100,
      maxBytes: 60_000,
    });
    const started = performance.now();
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(received).toEqual([]);
    expect((error as UpstreamFailure).kind).toBe("unavailable");
    expect(failureLines().at(-1)).toMatchObject({ reason: "timeout mid-stream" });
    expect(performance.now() - started).toBeLessThan(3_000);
    await upstream.waitForAbort(0);
  });

  test("answers are asked for uncompressed and never inflated: one compressed all the same fails at once, JSON or streamed (probe 56a note: a gzip body grew in one step)", async () => {
    // 64 MiB of one letter: about 64 KiB compressed.
    for (const shape of ["json", "line"] as const) {
      upstream.enqueue({ kind: "flood", shape, gzip: true, maxBytes: 64 * 1024 * 1024 });
    }
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(failure.kind).toBe("bad_response");
    const { error } = await collectUntilError(provider.stream(MESSAGES));
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(failureLines().map((line) => line.reason)).toEqual([
      "answer compressed though asked for identity",
      "answer compressed though asked for identity",
    ]);
    expect(upstream.requests.map((request) => request.headers["accept-encoding"])).toEqual([
      "identity",
      "identity",
    ]);
  });

  test("a role, an unknown field, an empty finish or empty usage is nothing of the answer either (probe 57a F3)", async () => {
    provider = build({ timeoutMs: 300 });
    for (const event of [
      '{"choices":[{"index":0,"delta":{"role":"assistant"}}]}',
      '{"choices":[{"index":0,"delta":{"x":"y","tool_calls":[{}]},"finish_reason":""}],"usage":{}}',
      '{"choices":[{"index":0,"delta":{"content":"","reasoning_content":" "}}]}',
    ]) {
      upstream.enqueue({
        kind: "flood",
        shape: "events",
        event,
        blockBytes: 100,
        pauseMs: 100,
        maxBytes: 60_000,
      });
      const { error } = await collectUntilError(provider.stream(MESSAGES));
      expect([event, (error as UpstreamFailure).kind]).toEqual([event, "unavailable"]);
    }
    expect(failureLines().map((line) => line.reason)).toEqual([
      "timeout mid-stream",
      "timeout mid-stream",
      "timeout mid-stream",
    ]);
  });

  test("a stream that trickles text just inside the silence timeout ends at a second a capped token after it (probe 57a F3)", async () => {
    provider = build({ timeoutMs: 300, maxCompletionTokens: 1 });
    // A letter every 100 ms, for a minute were it read on: each ends the silence.
    upstream.enqueue({
      kind: "flood",
      shape: "events",
      event: '{"choices":[{"index":0,"delta":{"content":"a"}}]}',
      blockBytes: 100,
      pauseMs: 100,
      maxBytes: 60_000,
    });
    const started = performance.now();
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    // Past the 300 ms of silence a letter would have ended.
    expect(received.length).toBeGreaterThan(5);
    expect((error as UpstreamFailure).kind).toBe("unavailable");
    // 300 ms and a second for the one capped token.
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  test("a reply at its bound in characters JSON escapes at six bytes each is kept, whole and streamed", async () => {
    const escaped = "\u0001".repeat(replyBound(1024));
    upstream.enqueue({ kind: "reply", text: escaped });
    expect((await provider.complete(MESSAGES)).text).toBe(escaped);
    upstream.enqueue({ kind: "reply", chunks: [escaped.slice(0, 30_000), escaped.slice(30_000)] });
    const deltas = await collect(provider.stream(MESSAGES));
    expect(textOf(deltas)).toBe(escaped);
  });
});

describe("retries", () => {
  test("429 with Retry-After: 1 is waited for, then the retry succeeds", async () => {
    upstream.enqueue(
      { kind: "error", status: 429, retryAfter: "1" },
      { kind: "reply", text: "after the wait" },
    );
    const completion = await provider.complete(MESSAGES);
    expect(completion.text).toBe("after the wait");
    expect(upstream.requests).toHaveLength(2);
    const gap = (upstream.requests[1]?.receivedAt ?? 0) - (upstream.requests[0]?.receivedAt ?? 0);
    expect(gap).toBeGreaterThanOrEqual(950);
    expect(gap).toBeLessThan(3_000);
    expect(failureLines()).toHaveLength(0);
  });

  test("a 408, 409 or 425 (not now, rather than no) is tried again, as a 429 is (probe 84i F1)", async () => {
    for (const status of [408, 409, 425]) {
      const before = upstream.requests.length;
      upstream.enqueue(
        { kind: "error", status, retryAfter: "0" },
        { kind: "reply", text: `after a ${status}` },
      );
      expect((await provider.complete(MESSAGES)).text).toBe(`after a ${status}`);
      expect(upstream.requests.length - before).toBe(2);
    }
  });

  test("retry-after-ms is honoured, for a stream as well", async () => {
    upstream.enqueue(
      { kind: "error", status: 503, retryAfterMs: "400" },
      { kind: "reply", text: "streamed" },
    );
    const deltas = await collect(provider.stream(MESSAGES));
    expect(textOf(deltas)).toBe("streamed");
    const gap = (upstream.requests[1]?.receivedAt ?? 0) - (upstream.requests[0]?.receivedAt ?? 0);
    expect(gap).toBeGreaterThanOrEqual(380);
    expect(gap).toBeLessThan(2_000);
  });

  test("500 then success: one retry after the jittered backoff", async () => {
    upstream.enqueue({ kind: "error", status: 500 }, { kind: "reply", text: "recovered" });
    expect((await provider.complete(MESSAGES)).text).toBe("recovered");
    expect(upstream.requests).toHaveLength(2);
    const gap = (upstream.requests[1]?.receivedAt ?? 0) - (upstream.requests[0]?.receivedAt ?? 0);
    // random() = 0: the first backoff is 500 ms × ½.
    expect(gap).toBeGreaterThanOrEqual(240);
    expect(gap).toBeLessThan(1_500);
    expect(logs.entries.filter((e) => e.msg === "chat upstream answered after a retry")).toEqual([
      expect.objectContaining({ provider: "openai", attempts: 2 }),
    ]);
  });

  test("three failed attempts: gives up after exactly 3, as one unavailable failure logged once", async () => {
    upstream.enqueue(
      { kind: "error", status: 500 },
      { kind: "error", status: 502 },
      { kind: "error", status: 503 },
      { kind: "reply", text: "never asked for" },
    );
    const failure = await failureOf(provider.complete(MESSAGES, { requestId: "req-exhausted" }));
    expect(failure.kind).toBe("unavailable");
    await Bun.sleep(300);
    expect(upstream.requests).toHaveLength(3);
    const lines = failureLines();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: "warn",
      requestId: "req-exhausted",
      provider: "openai",
      model: "local-model",
      upstreamStatus: 503,
      attempts: 3,
      kind: "unavailable",
    });
  });

  test("an upstream nobody listens on: connection errors are retried, then unavailable", async () => {
    const gone = await startOpenAiServer();
    gone.stop();
    const unreachable = providerAt(gone.url);
    const failure = await failureOf(
      unreachable.complete(MESSAGES, { requestId: "req-refused-conn" }),
    );
    expect(failure.kind).toBe("unavailable");
    expect(failure.reason).toBe("connection failed");
    expect(failureLines().at(-1)).toMatchObject({ attempts: 3, upstreamStatus: null });
  });

  test("an upstream that redirects is not followed: the conversation never reaches the host it names (probe 43b note)", async () => {
    const upstream = startRedirectingUpstream();
    try {
      const redirected = providerAt(`${upstream.url}/v1`);
      const failure = await failureOf(
        redirected.complete(MESSAGES, { requestId: "req-redirected" }),
      );
      expect(failure.kind).toBe("unavailable");
      const streamed = await collectUntilError(
        redirected.stream(MESSAGES, { requestId: "req-redirected-stream" }),
      );
      expect(streamed.error).toBeInstanceOf(UpstreamFailure);
      expect(upstream.elsewhere).toEqual([]);
    } finally {
      upstream.stop();
    }
  });

  test("an upstream asking for a wait beyond the cap is not waited for: unavailable at once with its Retry-After", async () => {
    upstream.enqueue({ kind: "error", status: 429, retryAfter: "120" });
    const started = performance.now();
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(failure.kind).toBe("unavailable");
    expect(failure.retryAfterSeconds).toBe(120);
    expect(upstream.requests).toHaveLength(1);
  });

  test("non-retryable refusals after a single attempt: of the request's content (413, 422, a 400 whose code says so, a reply the content filter withheld) refused, a warning; others (a 400 without such a code, 401, 403, 404) bad_response, an error (probes 55a F3, 57a F1, F5)", async () => {
    const steps = [
      { kind: "error", status: 400, code: "content_filter" },
      { kind: "error", status: 400, code: "context_length_exceeded" },
      { kind: "error", status: 413 },
      { kind: "error", status: 422 },
      { kind: "filtered" },
      // A wrong model as OpenRouter and LiteLLM answer it: every request alike, an outage.
      { kind: "error", status: 400, code: "model_not_found" },
      { kind: "error", status: 400 },
      { kind: "error", status: 403 },
      { kind: "error", status: 404 },
    ] as const;
    for (const step of steps) upstream.enqueue(step);
    const failures = [];
    for (const _ of steps) failures.push(await failureOf(provider.complete(MESSAGES)));
    expect(failures.map((failure): string => failure.kind)).toEqual([
      ...Array.from({ length: 5 }, () => "refused"),
      ...Array.from({ length: 4 }, () => "bad_response"),
    ]);
    // Of what the message says (a content filter), or of its size or a setting that may be the
    // deployment's (probe 58c F3: a WhatsApp sender was told to rephrase for a model's context).
    expect(failures.map((failure) => failure.ofContent)).toEqual([
      true,
      false,
      false,
      false,
      true,
      false,
      false,
      false,
      false,
    ]);
    const wrongKey = build({ apiKey: "sk-wrong-key-must-not-be-logged" });
    expect((await failureOf(wrongKey.complete(MESSAGES))).kind).toBe("bad_response");
    expect(upstream.requests).toHaveLength(10);
    expect(failureLines().map((line) => [line.upstreamStatus, line.kind, line.level])).toEqual([
      [400, "refused", "warn"],
      [400, "refused", "warn"],
      [413, "refused", "warn"],
      [422, "refused", "warn"],
      [200, "refused", "warn"],
      [400, "bad_response", "error"],
      [400, "bad_response", "error"],
      [403, "bad_response", "error"],
      [404, "bad_response", "error"],
      [401, "bad_response", "error"],
    ]);
    // A reply withheld whole is refused streamed too.
    upstream.enqueue({ kind: "filtered" });
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(received).toEqual([]);
    expect((error as UpstreamFailure).kind).toBe("refused");
    expect((error as UpstreamFailure).ofContent).toBe(true);
  });

  test("refusals never open the circuit: a user's withheld replies cannot take chat down for everyone (probe 57a F5)", async () => {
    for (let i = 0; i < 8; i++) upstream.enqueue({ kind: "filtered" });
    await Promise.all(Array.from({ length: 8 }, () => failureOf(provider.complete(MESSAGES))));
    upstream.enqueue({ kind: "reply", text: "still here" });
    expect((await provider.complete(MESSAGES)).text).toBe("still here");
  });

  test("a timeout is retried, and three timeouts are unavailable; each timed-out request is closed", async () => {
    provider = build({ timeoutMs: 200 });
    upstream.setDefault({ kind: "hang" });
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(failure.kind).toBe("unavailable");
    expect(failure.reason).toBe("timeout");
    expect(upstream.requests).toHaveLength(3);
    for (const index of [0, 1, 2]) await upstream.waitForAbort(index);
  });

  test("a stream that opens and then goes silent past the timeout is unavailable", async () => {
    provider = build({ timeoutMs: 200 });
    upstream.enqueue({ kind: "reply", chunks: ["one ", "two"], pauseMs: 600 });
    const { error } = await collectUntilError(provider.stream(MESSAGES));
    expect(error).toBeInstanceOf(UpstreamFailure);
    expect((error as UpstreamFailure).kind).toBe("unavailable");
    await upstream.waitForAbort(0);
    expect(upstream.requests).toHaveLength(1);
  });

  test("Retry-After is read as seconds, as an HTTP date against the clock, and as retry-after-ms", () => {
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    const headers = (values: Record<string, string>) => new Headers(values);
    expect(requestedWaitMs(headers({ "retry-after": "3" }), now)).toBe(3_000);
    expect(
      requestedWaitMs(headers({ "retry-after": new Date(now + 5_000).toUTCString() }), now),
    ).toBe(5_000);
    expect(
      requestedWaitMs(headers({ "retry-after": new Date(now - 5_000).toUTCString() }), now),
    ).toBe(0);
    expect(requestedWaitMs(headers({ "retry-after-ms": "250", "retry-after": "9" }), now)).toBe(
      250,
    );
    expect(requestedWaitMs(headers({ "retry-after": "soon" }), now)).toBeUndefined();
    expect(retryDelay(1, headers({ "retry-after": "2" }), now, () => 0.5)).toEqual({
      kind: "wait",
      ms: 2_100,
    });
    expect(retryDelay(1, undefined, now, () => 0)).toEqual({ kind: "wait", ms: 250 });
    // Jitter never takes a wait past the cap.
    expect(
      retryDelay(1, headers({ "retry-after": String(MAX_RETRY_WAIT_MS / 1000) }), now, () => 0.9),
    ).toEqual({
      kind: "wait",
      ms: MAX_RETRY_WAIT_MS,
    });
    expect(retryDelay(2, undefined, now, () => 0.999)).toEqual({ kind: "wait", ms: 1_000 });
    expect(
      retryDelay(1, headers({ "retry-after": String(MAX_RETRY_WAIT_MS / 1000 + 1) }), now, () => 0),
    ).toEqual({
      kind: "give_up",
      retryAfterSeconds: MAX_RETRY_WAIT_MS / 1000 + 1,
    });
    // What clients are told is at most an hour, however long the upstream asked (probe 26e F4).
    for (const asked of ["99999999", "Fri, 01 Jan 2100 00:00:00 GMT"]) {
      expect(retryDelay(1, headers({ "retry-after": asked }), now, () => 0)).toEqual({
        kind: "give_up",
        retryAfterSeconds: MAX_TOLD_RETRY_AFTER_S,
      });
    }
  });

  test("a 503 asking for years is passed on to the client as an hour", async () => {
    upstream.enqueue({ kind: "error", status: 503, retryAfter: "99999999" });
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(failure.kind).toBe("unavailable");
    expect(failure.retryAfterSeconds).toBe(MAX_TOLD_RETRY_AFTER_S);
  });
});

describe("circuit breaker", () => {
  async function openTheCircuit() {
    for (let i = 0; i < 5; i++) {
      upstream.enqueue({ kind: "malformed" });
      expect((await failureOf(provider.complete(MESSAGES))).kind).toBe("bad_response");
    }
  }

  test("five failed requests open it: the sixth fails at once with no request reaching the server", async () => {
    await openTheCircuit();
    expect(upstream.requests).toHaveLength(5);
    const failure = await failureOf(provider.complete(MESSAGES, { requestId: "req-refused" }));
    expect(failure.kind).toBe("unavailable");
    expect(failure.reason).toBe("circuit open");
    expect(failure.retryAfterSeconds).toBe(30);
    const streamed = await collectUntilError(provider.stream(MESSAGES));
    expect((streamed.error as UpstreamFailure).reason).toBe("circuit open");
    expect(upstream.requests).toHaveLength(5);
    expect(failureLines().at(-2)).toMatchObject({
      requestId: "req-refused",
      attempts: 0,
      reason: "circuit open",
    });
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 1');
  });

  test("retries count once: four requests that each exhausted three attempts leave it closed", async () => {
    upstream.setDefault({ kind: "error", status: 429, retryAfterMs: "1" });
    for (let i = 0; i < 4; i++) await failureOf(provider.complete(MESSAGES));
    expect(upstream.requests).toHaveLength(12);
    await failureOf(provider.complete(MESSAGES));
    expect(upstream.requests).toHaveLength(15);
    // The fifth failed request opened it.
    await failureOf(provider.complete(MESSAGES));
    expect(upstream.requests).toHaveLength(15);
  });

  test("a success between failures resets the count", async () => {
    for (let i = 0; i < 4; i++) upstream.enqueue({ kind: "malformed" });
    upstream.enqueue({ kind: "reply" });
    for (let i = 0; i < 4; i++) upstream.enqueue({ kind: "malformed" });
    for (let i = 0; i < 9; i++) await provider.complete(MESSAGES).catch(() => undefined);
    upstream.enqueue({ kind: "reply", text: "still closed" });
    expect((await provider.complete(MESSAGES)).text).toBe("still closed");
    expect(upstream.requests).toHaveLength(10);
  });

  test("half-open after 30 s: one trial at a time, concurrent callers refused at once, success closes it", async () => {
    await openTheCircuit();
    clock.advance(29_000);
    expect((await failureOf(provider.complete(MESSAGES))).retryAfterSeconds).toBe(1);
    expect(upstream.requests).toHaveLength(5);
    clock.advance(1_000);

    upstream.enqueue({ kind: "reply", text: "trial passed", delayMs: 400 });
    const trial = provider.complete(MESSAGES);
    await upstream.waitForRequests(6);
    const others = await Promise.allSettled([
      provider.complete(MESSAGES),
      provider.complete(MESSAGES),
      collect(provider.stream(MESSAGES)),
    ]);
    for (const other of others) {
      expect(other.status).toBe("rejected");
      const reason = (other as PromiseRejectedResult).reason;
      expect(reason).toBeInstanceOf(UpstreamFailure);
      expect(reason.kind).toBe("unavailable");
    }
    expect(upstream.requests).toHaveLength(6);
    expect((await trial).text).toBe("trial passed");
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 0');

    const after = await Promise.all([provider.complete(MESSAGES), provider.complete(MESSAGES)]);
    expect(after).toHaveLength(2);
    expect(upstream.requests).toHaveLength(8);
  });

  test("a failed trial, one attempt (a trial is not retried), re-opens it for another 30 s", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "error", status: 500 });
    expect((await failureOf(provider.complete(MESSAGES))).kind).toBe("unavailable");
    expect(upstream.requests).toHaveLength(6);
    const refused = await failureOf(provider.complete(MESSAGES));
    expect(refused.reason).toBe("circuit open");
    expect(refused.retryAfterSeconds).toBe(30);
    expect(upstream.requests).toHaveLength(6);
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 1');
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", text: "back" });
    expect((await provider.complete(MESSAGES)).text).toBe("back");
  });

  test("a trial's reasoning is billed: a failed trial says what it read, a caller who leaves one is charged what it reads until its verdict (probe 70a F1)", async () => {
    provider = build({ timeoutMs: 1_000 });
    await openTheCircuit();
    clock.advance(30_000);
    // Silence past the timeout, then reasoning: the trial has failed by then.
    const thoughts = (count: number) => Array.from({ length: count }, () => "r".repeat(20));
    upstream.enqueue({ kind: "reply", reasoning: thoughts(5), delayMs: 1_500 });
    const failed = await failureOf(provider.complete(MESSAGES));
    expect([failed.kind, failed.billedCharacters ?? 0]).toEqual(["unavailable", 0]);
    expect(await circuitIs(1)).toBe(true);

    clock.advance(30_000);
    upstream.enqueue({
      kind: "reply",
      reasoning: thoughts(8),
      pauseMs: 50,
      chunks: ["answer"],
      delayMs: 300,
    });
    const leave = new AbortController();
    const left = provider.complete(MESSAGES, { signal: leave.signal }).catch((error) => error);
    await upstream.waitForRequests(7);
    await Bun.sleep(100);
    leave.abort();
    const aborted = await left;
    // Answered at once; its charge is what the trial read until its verdict (its answer, the
    // reasoning before it extending its wait), once it has it.
    expect(aborted).toBeInstanceOf(AbortedMidReply);
    expect(await (aborted as AbortedMidReply).billedCharacters).toBe(160 + "answer".length);
    expect(await circuitIs(0)).toBe(true);
  });

  test("a trial is decided by the upstream's reasoning as by its text: a model that thinks past the timeout before answering closes the circuit (probe 82d F1)", async () => {
    provider = build({ timeoutMs: 1_000 });
    // Reasoning for 2 s (a piece every 200 ms), then the answer: a turn while the circuit is
    // closed, as it is in a trial.
    const thinking = {
      kind: "reply" as const,
      reasoning: Array.from({ length: 10 }, () => "thinking "),
      pauseMs: 200,
      chunks: ["The answer is 42."],
    };
    upstream.enqueue(thinking);
    expect((await provider.complete(MESSAGES)).text).toBe("The answer is 42.");
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue(thinking);
    expect((await provider.complete(MESSAGES)).text).toBe("The answer is 42.");
    expect(await circuitIs(0)).toBe(true);
    upstream.enqueue({ kind: "reply", text: "closed" });
    expect((await provider.complete(MESSAGES)).text).toBe("closed");
  }, 15_000);

  /** One stream event, `count` times `pauseMs` apart, then the stream ends (no `[DONE]`). */
  const events = (event: Record<string, unknown>, count = 1, pauseMs = 0) =>
    ({
      kind: "flood",
      shape: "events",
      event: JSON.stringify({ id: "c", object: "chat.completion.chunk", ...event }),
      blockBytes: 1,
      pauseMs,
      maxBytes: count * (JSON.stringify(event).length + 60),
    }) as const;

  test("a trial is not decided by a chunk that carries no answer: a usage chunk alone, an empty finish (probe 82h F1)", async () => {
    provider = build({ timeoutMs: 1_000 });
    await openTheCircuit();
    for (const chunk of [
      { choices: [], usage: { prompt_tokens: 10, completion_tokens: 0 } },
      { choices: [{ index: 0, delta: { role: "assistant" }, finish_reason: "" }] },
    ]) {
      clock.advance(30_000);
      upstream.enqueue(events(chunk));
      const failed = await failureOf(provider.complete(MESSAGES));
      expect([failed.kind, failed.reason]).toEqual([
        "bad_response",
        "stream cut before it answered",
      ]);
      expect(await circuitIs(1)).toBe(true);
    }
  });

  test("a trial is not decided by text that shows nothing: an upstream that sends a line break or a zero-width space and then stalls keeps the circuit open (probes 82j F1, 82k F3)", async () => {
    provider = build({ timeoutMs: 500 });
    await openTheCircuit();
    for (const first of ["\n\n", "\u200b", "\u00a0\ufeff"]) {
      clock.advance(30_000);
      upstream.enqueue({ kind: "reply", chunks: [first, "late"], pauses: [0, 2_000] });
      const failed = await failureOf(provider.complete(MESSAGES));
      expect([failed.kind, failed.reason]).toEqual(["unavailable", "no answer within the timeout"]);
      expect(await circuitIs(1)).toBe(true);
    }
  }, 15_000);

  test("a trial whose upstream aborts the request (vLLM's finish_reason abort) fails: the circuit stays open (probe 82k F1)", async () => {
    provider = build({ timeoutMs: 500 });
    await openTheCircuit();
    for (const reason of ["abort", "null", "error"]) {
      clock.advance(30_000);
      upstream.enqueue({ kind: "reply", chunks: [], finishReason: reason });
      const failed = await failureOf(provider.complete(MESSAGES));
      expect(failed.kind).toBe("bad_response");
      expect(await circuitIs(1)).toBe(true);
    }
  });

  test("a trial whose upstream reasons and then fails fails: the circuit stays open for an upstream that does so every time (probe 82h F2)", async () => {
    provider = build({ timeoutMs: 500 });
    await openTheCircuit();
    for (let round = 0; round < 2; round++) {
      clock.advance(30_000);
      // A piece of reasoning, then silence past the timeout.
      upstream.enqueue({
        kind: "reply",
        reasoning: ["thinking it over"],
        chunks: ["late"],
        pauses: [2_000],
      });
      const failed = await failureOf(provider.complete(MESSAGES));
      expect(failed.kind).toBe("unavailable");
      expect(await circuitIs(1)).toBe(true);
      // And refused at once until the next trial.
      expect((await failureOf(provider.complete(MESSAGES))).reason).toBe("circuit open");
    }
  }, 15_000);

  test("a trial still reasoning past twice the timeout is an upstream at work: it closes the circuit, so no prompt holds everyone refused longer", async () => {
    provider = build({ timeoutMs: 400 });
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({
      kind: "reply",
      reasoning: Array.from({ length: 30 }, () => "still thinking "),
      pauseMs: 100,
      chunks: ["done"],
    });
    const trial = provider.complete(MESSAGES);
    await upstream.waitForRequests(6);
    // Decided within about twice the timeout, while the model still thinks (3 s in all).
    await waitFor(() => circuitIs(0), {
      timeoutMs: 1_500,
      intervalMs: 25,
      what: "the trial to close the circuit",
    });
    expect((await trial).text).toBe("done");
  }, 15_000);

  test("a trial holds no more events than a stream may carry before its verdict: past them it fails, the request closed (probe 69e F3)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    // Events with nothing of a reply in them, each within the silence timeout: held until the
    // trial's first answer, they were held without bound (2.4 million, 450 MB).
    upstream.enqueue({ kind: "flood", shape: "events", maxBytes: 16 * 1024 * 1024 });
    const failure = await failureOf(provider.complete(MESSAGES));
    expect([failure.kind, failure.reason]).toEqual(["bad_response", "stream longer than its cap"]);
    await upstream.waitForAbort(5);
    expect(upstream.requests[5]!.bytesSent).toBeLessThan(16 * 1024 * 1024);
    expect(await circuitIs(1)).toBe(true);
  });

  /** A long answer that progresses for 4 s: a piece every 100 ms. */
  const LONG_ANSWER = {
    kind: "reply",
    chunks: Array.from({ length: 40 }, (_, i) => `piece${i} `),
    pauseMs: 100,
  } as const;

  test("timeouts while another stream makes progress are a busy upstream, not a failed one: five leave it closed; with no progress anywhere five open it (probe 69e F2)", async () => {
    provider = build({ timeoutMs: 300 });
    // An upstream that serves one request at a time: one long answer progresses, the requests
    // queued behind it get no answer at all.
    upstream.enqueue(LONG_ANSWER);
    const long = provider.complete(MESSAGES);
    await upstream.waitForRequests(1);
    upstream.setDefault({ kind: "hang" });
    const queued = await Promise.all(
      Array.from({ length: 5 }, () => failureOf(provider.complete(MESSAGES))),
    );
    expect(queued.map((failure) => failure.kind)).toEqual(Array(5).fill("unavailable"));
    // Said so, and no verdict: a failure before them still counts after them (re-probe 69f F1).
    expect(queued.every((failure) => failure.reason.includes("busy upstream"))).toBe(true);
    expect(await circuitIs(0)).toBe(true);
    expect(await registry.metrics()).toContain('upstream_busy_timeouts_total{provider="openai"} 5');
    expect((await long).text).toStartWith("piece0 piece1");
    // Nothing progressing: the same five timeouts are the upstream's failures.
    const stalled = await Promise.all(
      Array.from({ length: 5 }, () => failureOf(provider.complete(MESSAGES))),
    );
    expect(stalled.map((failure) => failure.kind)).toEqual(Array(5).fill("unavailable"));
    expect(await circuitIs(1)).toBe(true);
    expect(await registry.metrics()).toContain('upstream_busy_timeouts_total{provider="openai"} 5');
  }, 30_000);

  test("a trial that gets no answer fails, however busy another stream keeps the upstream: it never closes the circuit (re-probe 69f F1)", async () => {
    provider = build({ timeoutMs: 300 });
    upstream.enqueue(LONG_ANSWER);
    // Read on in the background: its pieces are the progress the trial's wait sees.
    const leave = new AbortController();
    const long = collect(provider.stream(MESSAGES, { signal: leave.signal })).catch(() => null);
    await upstream.waitForRequests(1);
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "hang" });
    const trial = await failureOf(provider.complete(MESSAGES));
    expect(trial.kind).toBe("unavailable");
    expect(await circuitIs(1)).toBe(true);
    leave.abort();
    await long;
  }, 20_000);

  const circuitIs = async (open: 0 | 1) =>
    (await registry.metrics()).includes(`upstream_circuit_open{provider="openai"} ${open}`);

  /** A trial caller that streams and goes away once the upstream has its request (the sixth). */
  async function streamAndLeaveBeforeItsRequestIsAnswered() {
    const controller = new AbortController();
    const pending = collect(provider.stream(MESSAGES, { signal: controller.signal })).catch(
      (error: unknown) => error,
    );
    await upstream.waitForRequests(6);
    controller.abort();
    expect(((await pending) as Error).name).toBe("AbortError");
  }

  /** Until the trial has failed: the circuit open for 30 s again (the trial's timeout is 2 s here). */
  async function untilTheTrialFailed() {
    await waitFor(
      async () => {
        const refused = await failureOf(provider.complete(MESSAGES));
        return refused.reason === "circuit open" && refused.retryAfterSeconds === 30;
      },
      { timeoutMs: 8_000, intervalMs: 50, what: "the trial's failure to open the circuit" },
    );
  }

  /** A caller that streams, reads the first delta ("a ") and goes away. */
  async function readFirstDeltaAndLeave() {
    const controller = new AbortController();
    try {
      for await (const delta of provider.stream(MESSAGES, { signal: controller.signal })) {
        expect(delta).toEqual({ kind: "text", text: "a " });
        controller.abort();
      }
    } catch {
      // The caller's abort.
    }
  }

  test("a streamed trial whose caller leaves is read to its end for its verdict: a healthy upstream closes the circuit (re-probes 15e F2, 15f F1)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", chunks: ["a ", "b ", "c ", "d ", "e "], pauseMs: 100 });
    await readFirstDeltaAndLeave();
    await waitFor(() => circuitIs(0), { what: "the trial to close the circuit" });
    upstream.enqueue({ kind: "reply", text: "open to all" });
    expect((await provider.complete(MESSAGES)).text).toBe("open to all");
  });

  test("a trial is decided by its first chunk, not held to its stream's end: a long reply its caller left does not keep everyone refused (re-probe 15g F1)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    // Ten chunks a second apart: ten seconds of stream nobody reads after the first.
    upstream.enqueue({
      kind: "reply",
      chunks: Array.from({ length: 10 }, (_, i) => (i === 0 ? "a " : `w${i} `)),
      pauseMs: 1_000,
    });
    await readFirstDeltaAndLeave();
    expect(await circuitIs(0)).toBe(true);
    upstream.enqueue({ kind: "reply", text: "not kept waiting" });
    expect((await provider.complete(MESSAGES)).text).toBe("not kept waiting");
  });

  test("a streamed trial whose caller leaves before its first chunk is still decided: an upstream silent past the timeout opens the circuit again (re-probe 15f F1)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", text: "too late", delayMs: 10_000 });
    await streamAndLeaveBeforeItsRequestIsAnswered();
    // One attempt (a trial is not retried), silent for the timeout (2 s here): open for 30 s again.
    await untilTheTrialFailed();
    expect(upstream.requests).toHaveLength(6);
  });

  test("a streamed trial is decided by a chunk that answers: empty chunks, then silence, fail it within one timeout of its start (re-probe 15h F1, F3)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", chunks: ["", "", "late"], pauses: [0, 200, 10_000] });
    await streamAndLeaveBeforeItsRequestIsAnswered();
    await untilTheTrialFailed();
  });

  test("a JSON trial whose caller leaves gets its abort, and the upstream's answer still closes the circuit (re-probe 15f F1)", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", text: "late but fine", delayMs: 300 });
    const controller = new AbortController();
    const pending = provider.complete(MESSAGES, { signal: controller.signal });
    await upstream.waitForRequests(6);
    controller.abort();
    expect(((await pending.catch((e: unknown) => e)) as Error).name).toBe("AbortError");
    await waitFor(() => circuitIs(0), { what: "the trial to close the circuit" });
  });

  test("a streamed trial that succeeds closes it; refusals do not count as failures", async () => {
    await openTheCircuit();
    clock.advance(30_000);
    upstream.enqueue({ kind: "reply", text: "streamed trial" });
    expect(textOf(await collect(provider.stream(MESSAGES)))).toBe("streamed trial");
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 0');
  });

  test("refusals (4xx) show the upstream is up: they never open it", async () => {
    upstream.setDefault({ kind: "error", status: 400 });
    for (let i = 0; i < 6; i++) await failureOf(provider.complete(MESSAGES));
    expect(upstream.requests).toHaveLength(6);
  });
});

/** Waits until the upstream's failed attempts, as counted, reach `count`. */
async function attemptFailuresReach(count: number) {
  await waitFor(async () =>
    (await registry.metrics()).includes(
      `upstream_attempt_failures_total{provider="openai",kind="unavailable"} ${count}`,
    ),
  );
}

describe("caller aborts", () => {
  test("aborting a complete closes the upstream request, throws the abort, and is no upstream failure", async () => {
    upstream.setDefault({ kind: "hang" });
    for (let i = 0; i < 5; i++) {
      const controller = new AbortController();
      const pending = provider.complete(MESSAGES, { signal: controller.signal });
      await upstream.waitForRequests(i + 1);
      controller.abort();
      const error = await pending.catch((caught: unknown) => caught);
      expect(error).not.toBeInstanceOf(UpstreamFailure);
      expect((error as Error).name).toBe("AbortError");
      await upstream.waitForAbort(i);
    }
    // Five aborts did not open the circuit, and none was logged as an upstream failure.
    upstream.setDefault({ kind: "reply", text: "still here" });
    expect((await provider.complete(MESSAGES)).text).toBe("still here");
    expect(failureLines()).toHaveLength(0);
  });

  test("aborting during a slow stream closes the upstream request mid-stream", async () => {
    upstream.enqueue({ kind: "reply", chunks: ["a ", "b ", "c ", "d ", "e ", "f "], pauseMs: 150 });
    const controller = new AbortController();
    const received: Delta[] = [];
    let caught: unknown;
    try {
      for await (const delta of provider.stream(MESSAGES, { signal: controller.signal })) {
        received.push(delta);
        controller.abort();
      }
    } catch (error) {
      caught = error;
    }
    expect(received).toEqual([{ kind: "text", text: "a " }]);
    expect((caught as Error).name).toBe("AbortError");
    await upstream.waitForAbort(0);
    expect(failureLines()).toHaveLength(0);
  });

  test("a consumer that stops reading a stream closes the upstream request", async () => {
    upstream.enqueue({ kind: "reply", chunks: ["a ", "b ", "c ", "d "], pauseMs: 150 });
    for await (const delta of provider.stream(MESSAGES)) {
      expect(delta).toEqual({ kind: "text", text: "a " });
      break;
    }
    await upstream.waitForAbort(0);
  });

  test("an abort during the backoff wait stops the retries at once; the failed attempt is said and counted", async () => {
    upstream.enqueue({ kind: "error", status: 429, retryAfter: "5" });
    const controller = new AbortController();
    const pending = provider.complete(MESSAGES, { signal: controller.signal, requestId: "r-429" });
    await upstream.waitForRequests(1);
    await attemptFailuresReach(1);
    const started = performance.now();
    controller.abort();
    expect(((await pending.catch((e: unknown) => e)) as Error).name).toBe("AbortError");
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(upstream.requests).toHaveLength(1);
    expect(failureLines()).toEqual([
      expect.objectContaining({
        requestId: "r-429",
        attempts: 1,
        upstreamStatus: 429,
        reason: expect.stringMatching(/; the caller left before the request ended$/),
      }),
    ]);
  });

  test("callers that leave while a recovering upstream is retried never open the circuit, and every failed attempt is counted (re-probes 15c F1, 15d F1)", async () => {
    upstream.setDefault({ kind: "error", status: 500 });
    for (let i = 0; i < 6; i++) {
      const controller = new AbortController();
      const pending = provider.complete(MESSAGES, { signal: controller.signal });
      // The first attempt has failed and the retry waits: the caller gives up then.
      await attemptFailuresReach(i + 1);
      controller.abort();
      expect(((await pending.catch((e: unknown) => e)) as Error).name).toBe("AbortError");
    }
    // Six callers left, one failure line each; the breaker was told nothing.
    expect(failureLines()).toHaveLength(6);
    expect(await registry.metrics()).toContain('upstream_circuit_open{provider="openai"} 0');
    expect(await registry.metrics()).toContain(
      'upstream_attempt_failures_total{provider="openai",kind="unavailable"} 6',
    );
    // The upstream recovers: a patient caller is answered.
    upstream.setDefault({ kind: "reply", text: "recovered" });
    expect((await provider.complete(MESSAGES)).text).toBe("recovered");
  });

  test("an already aborted signal sends nothing", async () => {
    const controller = new AbortController();
    controller.abort();
    expect(
      (
        (await provider
          .complete(MESSAGES, { signal: controller.signal })
          .catch((e: unknown) => e)) as Error
      ).name,
    ).toBe("AbortError");
    const streamed = await collectUntilError(
      provider.stream(MESSAGES, { signal: controller.signal }),
    );
    expect((streamed.error as Error).name).toBe("AbortError");
    expect(upstream.requests).toHaveLength(0);
  });
});

describe("bad responses", () => {
  test("a 200 whose body is not JSON is bad_response, not retried", async () => {
    upstream.enqueue({ kind: "malformed" });
    const failure = await failureOf(provider.complete(MESSAGES));
    expect(failure.kind).toBe("bad_response");
    expect(upstream.requests).toHaveLength(1);
  });

  test("a 200 with JSON of the wrong shape, or plain text, is bad_response", async () => {
    upstream.enqueue(
      { kind: "wrong_shape" },
      { kind: "malformed", body: "hello", contentType: "text/plain" },
    );
    expect((await failureOf(provider.complete(MESSAGES))).kind).toBe("bad_response");
    expect((await failureOf(provider.complete(MESSAGES))).kind).toBe("bad_response");
    expect(upstream.requests).toHaveLength(2);
  });

  test("a stream closed before its finish_reason is bad_response, after the text that did arrive", async () => {
    upstream.enqueue({ kind: "cut", text: "one two three four", afterChunks: 2 });
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(textOf(received)).toBe("one two ");
    expect(received.some((delta) => delta.kind === "usage")).toBe(false);
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(upstream.requests).toHaveLength(1);
  });

  test("a stream whose chunks carry an empty finish_reason and that ends without a finish is bad_response, not a whole answer (probe 82h F3)", async () => {
    const piece = {
      id: "c",
      object: "chat.completion.chunk",
      choices: [{ index: 0, delta: { content: "half " }, finish_reason: "" }],
    };
    upstream.enqueue({
      kind: "flood",
      shape: "events",
      event: JSON.stringify(piece),
      blockBytes: 1,
      maxBytes: 3 * (JSON.stringify(piece).length + 8),
    });
    const { received, error } = await collectUntilError(provider.stream(MESSAGES));
    expect(textOf(received)).toBe("half half half ");
    expect(error).toBeInstanceOf(UpstreamFailure);
    expect([(error as UpstreamFailure).kind, (error as UpstreamFailure).reason]).toEqual([
      "bad_response",
      "stream cut before a finish_reason",
    ]);
  });

  test("a reply the upstream aborted part-way (finish_reason abort) is bad_response, a failure five of which open the circuit, never a whole answer (probe 82k F1, F2)", async () => {
    // vLLM's, and the other spellings of not finishing (probe 82l F1), padded or in capitals;
    // the first five open the circuit.
    for (const reason of [" abort", "\u200babort", "Cancel", "timed_out", "None"]) {
      upstream.enqueue({
        kind: "reply",
        chunks: ["The first half of an answer, and"],
        finishReason: reason,
      });
      const { received, error } = await collectUntilError(provider.stream(MESSAGES));
      expect(textOf(received)).toBe("The first half of an answer, and");
      expect([(error as UpstreamFailure).kind, (error as UpstreamFailure).reason]).toEqual([
        "bad_response",
        "stream cut before a finish_reason",
      ]);
    }
    expect((await failureOf(provider.complete(MESSAGES))).reason).toBe("circuit open");
    // A finish OpenAI does not document, but which says the reply ended, is one.
    provider = build();
    // A filter's cut in Cohere's name, which one user's messages bring about: kept as cut, never
    // the upstream's failure (probe 82m F2); the cap's under other names too (82m F3).
    for (const reason of [
      "ERROR_TOXIC",
      "ERROR_TOXIC",
      "RECITATION",
      "guardrail_intervened",
      "ERROR_LIMIT",
      "max_output_tokens",
    ]) {
      upstream.enqueue({ kind: "reply", text: "Part of it", finishReason: reason });
      expect(await provider.complete(MESSAGES)).toMatchObject({ text: "Part of it", cut: true });
    }
    // Six of them, and the circuit is still closed.
    upstream.enqueue({ kind: "reply", text: "Whole.", finishReason: "eos_token" });
    expect((await provider.complete(MESSAGES)).text).toBe("Whole.");
  });

  test("a stream whose connection is reset mid-way is bad_response", async () => {
    upstream.enqueue({ kind: "cut", text: "one two three", afterChunks: 1, abrupt: true });
    const { received, error } = await collectUntilError(
      provider.stream(MESSAGES, { requestId: "req-cut" }),
    );
    expect(textOf(received)).toBe("one ");
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect(failureLines().at(-1)).toMatchObject({
      requestId: "req-cut",
      level: "error",
      kind: "bad_response",
    });
  });

  test("an error event or a chunk that is not an object mid-stream is bad_response", async () => {
    upstream.enqueue(
      {
        kind: "malformed",
        body: JSON.stringify({ error: { message: "overloaded", type: "server_error" } }),
      },
      { kind: "malformed", body: "42" },
    );
    const event = await collectUntilError(provider.stream(MESSAGES));
    expect((event.error as UpstreamFailure).kind).toBe("bad_response");
    expect((event.error as UpstreamFailure).reason).toBe("error event in stream");
    const scalar = await collectUntilError(provider.stream(MESSAGES));
    expect((scalar.error as UpstreamFailure).reason).toBe("malformed chunk");
  });

  test("an SSE chunk that is not JSON is bad_response", async () => {
    upstream.enqueue({ kind: "malformed", body: "{this is not json" });
    const { error } = await collectUntilError(provider.stream(MESSAGES));
    expect((error as UpstreamFailure).kind).toBe("bad_response");
    expect((error as UpstreamFailure).reason).toBe("malformed chunk");
  });
});

describe("logs and metrics", () => {
  test("failure lines carry the request id and never the message text nor the API key", async () => {
    const wrongKey = "sk-wrong-key-echoed-by-upstream-0001";
    const failing = build({ apiKey: wrongKey });
    await failureOf(failing.complete(MESSAGES, { requestId: "req-401" }));
    upstream.enqueue({ kind: "error", status: 500, message: `could not handle: ${SECRET_TEXT}` });
    upstream.enqueue({ kind: "error", status: 500 }, { kind: "error", status: 500 });
    await failureOf(provider.complete(MESSAGES, { requestId: "req-500" }));
    upstream.enqueue({ kind: "cut", afterChunks: 1 });
    await collectUntilError(provider.stream(MESSAGES, { requestId: "req-stream" }));

    const lines = failureLines();
    expect(lines.map((line) => line.requestId)).toEqual(["req-401", "req-500", "req-stream"]);
    for (const line of lines) {
      expect(line).toMatchObject({ provider: "openai", model: "local-model" });
      expect(typeof line.attempts).toBe("number");
      expect(typeof line.reason).toBe("string");
      expect(typeof line.upstreamStatus).toBe("number");
    }
    expect(logs.text).not.toContain("zebra-omelette");
    expect(logs.text).not.toContain(wrongKey);
    expect(logs.text).not.toContain(upstream.apiKey);
  });

  test("request durations and the circuit gauge are exported under the contract's names", async () => {
    upstream.enqueue({ kind: "error", status: 500 }, { kind: "reply" });
    await provider.complete(MESSAGES);
    await collect(provider.stream(MESSAGES));
    const text = await registry.metrics();
    expect(text).toContain("# TYPE upstream_request_duration_seconds histogram");
    expect(text).toContain('upstream_request_duration_seconds_bucket{le="0.05",provider="openai"}');
    expect(text).toContain('upstream_request_duration_seconds_bucket{le="60",provider="openai"} 3');
    expect(text).toContain('upstream_request_duration_seconds_count{provider="openai"} 3');
    expect(text).toContain("# TYPE upstream_circuit_open gauge");
    expect(text).toContain('upstream_circuit_open{provider="openai"} 0');
  });

  test("two providers on one registry share the series instead of failing to register", () => {
    expect(() => build()).not.toThrow();
    expect(createUpstreamMetrics(registry, "openai").circuitOpen).toBe(
      createUpstreamMetrics(registry, "openai").circuitOpen,
    );
  });
});

describe("the reply's length is capped", () => {
  test("CHAT_MAX_COMPLETION_TOKENS goes with every request, whole and streamed, as max_tokens", async () => {
    const configured = createChatProvider(
      testConfig(":memory:", {
        OPENAI_API_KEY: upstream.apiKey,
        OPENAI_BASE_URL: upstream.url,
        CHAT_MAX_COMPLETION_TOKENS: "77",
      }),
      { logger: createLogger({ level: "silent", destination: logs }), registry, clock },
    );
    expect(configured.maxCompletionTokens).toBe(77);
    await configured.complete([{ role: "user", content: "write me a novel" }]);
    await collect(configured.stream([{ role: "user", content: "and another" }]));
    expect(upstream.requests).toHaveLength(2);
    for (const request of upstream.requests) {
      const body = request.body as Record<string, unknown>;
      // The field every OpenAI-compatible server honours; not both (one may be refused).
      expect(body.max_tokens).toBe(77);
      expect(body).not.toHaveProperty("max_completion_tokens");
    }
  });

  test("the default cap is 1024", async () => {
    expect(provider.maxCompletionTokens).toBe(1024);
    await provider.complete(MESSAGES);
    expect((upstream.requests[0]!.body as Record<string, unknown>).max_tokens).toBe(1024);
  });

  test("OpenAI's own API gets max_completion_tokens (its reasoning models refuse max_tokens)", () => {
    expect(completionCapField(null)).toBe("max_completion_tokens");
    expect(completionCapField("https://api.openai.com/v1")).toBe("max_completion_tokens");
    expect(completionCapField("http://127.0.0.1:11434/v1")).toBe("max_tokens");
    expect(completionCapField("https://api.openai.com.example.net/v1")).toBe("max_tokens");
  });
});
