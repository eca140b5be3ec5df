/**
 * Streaming (`Accept: text/event-stream`) and upstream failures: the SSE format and the stored
 * reply, a client that goes away (the provider's signal aborts, what arrived is stored as
 * incomplete), a streamed request's real duration in the access log and the histogram, and how
 * an UpstreamFailure reaches the client (503 with Retry-After, 502, an error event mid-stream).
 */
import { Database } from "bun:sqlite";
import { afterEach, describe, expect, spyOn, test } from "bun:test";
import { eq } from "drizzle-orm";
import { chatMessages, chatUsage } from "../../../src/db/schema";
import { loadFaq } from "../../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../../src/modules/chat/providers/offline";
import type { ChatProvider } from "../../../src/modules/chat/providers/provider";
import { buildTestApp, send, serveInProcess, type TestApp } from "../../support/app";
import { signUp } from "../../support/auth";
import {
  asUser,
  chat,
  failingProvider,
  parseSse,
  recordingProvider,
  SSE,
  slowProvider,
  streamFirstChunkThenHangUp,
  UpstreamFailure,
} from "../../support/chat";
import { afterQueuedImmediates, waitFor } from "../../support/wait";

let target: TestApp | undefined;
afterEach(() => target?.close());

const assistantRows = (app: TestApp) =>
  app.db.select().from(chatMessages).where(eq(chatMessages.role, "assistant")).all();

describe("Server-Sent Events", () => {
  test("deltas as data lines, then a done event; the full reply is stored", async () => {
    target = buildTestApp({ chatProvider: recordingProvider() });
    const alice = await signUp(target);
    const response = await chat(target, asUser(alice), { message: "How do I sign up?" }, SSE);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
    expect(response.headers.get("cache-control")).toBe("no-store");
    const events = parseSse(await response.text());
    const deltas = events.filter((e) => e.event === "message");
    expect(deltas.length).toBeGreaterThan(10);
    for (const delta of deltas) expect(Object.keys(delta.data as object)).toEqual(["delta"]);
    const reply = deltas.map((e) => (e.data as { delta: string }).delta).join("");
    expect(reply).toContain("POST /api/auth/register");
    const done = events.at(-1)!;
    expect(done.event).toBe("done");
    const { conversationId, usage } = done.data as {
      conversationId: string;
      usage: { promptTokens: number; completionTokens: number };
    };
    expect(usage.completionTokens).toBe(Math.ceil(reply.length / 4));

    await waitFor(() => assistantRows(target!).length === 1);
    const [stored] = assistantRows(target);
    expect(stored).toMatchObject({ conversationId, content: reply, incomplete: false });
    expect(stored!.completionTokens).toBe(usage.completionTokens);
  });

  test("a client that disconnects over a real socket aborts the provider; the part received is stored incomplete", async () => {
    const provider = slowProvider(40);
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    const server = serveInProcess(target);
    try {
      const { status, first } = await streamFirstChunkThenHangUp(
        server.url,
        asUser(alice),
        "How do I sign up?",
      );
      expect(status).toBe(200);
      expect(first).toStartWith("data: ");

      await waitFor(() => assistantRows(target!).length === 1);
      const [stored] = assistantRows(target);
      expect(stored!.incomplete).toBe(true);
      expect(stored!.content.length).toBeGreaterThan(0);
      expect("Create an account with POST /api/auth/register").toStartWith(
        stored!.content.slice(0, 10),
      );
      // The full answer is ~70 words at 40 ms each: far from done when the client left.
      expect(stored!.content.length).toBeLessThan(100);
      await waitFor(() => provider.aborted.length === 1);
      expect(provider.aborted).toEqual([true]);
      // The user's message is kept with the partial reply; the usage was settled, not leaked.
      const usage = target.db.select().from(chatUsage).all();
      expect(usage[0]!.reservedTokens).toBe(0);
      expect(usage[0]!.usedTokens).toBeGreaterThan(0);
    } finally {
      await server.shutdown("test");
    }
  });

  test("a client that leaves before the first piece of the reply, streamed or not, is 499 CLIENT_CLOSED in the access log and metrics: no 500, no error line (probe 15b)", async () => {
    // The first piece would come 10 s on; the client leaves as soon as its turn has reserved.
    target = buildTestApp({ chatProvider: slowProvider(10_000) });
    const alice = await signUp(target);
    const server = serveInProcess(target);
    try {
      for (const accept of [SSE, {}]) {
        const client = new AbortController();
        const sent = fetch(new URL("/api/chat", server.url), {
          method: "POST",
          headers: { ...asUser(alice), ...accept, "content-type": "application/json" },
          body: JSON.stringify({ message: "How do I sign up?" }),
          signal: client.signal,
        }).catch((error: Error) => error.name);
        await waitFor(() => (target!.db.select().from(chatUsage).get()?.reservedTokens ?? 0) > 0);
        client.abort();
        expect(await sent).toBe("AbortError");
        await waitFor(() => target!.db.select().from(chatUsage).get()!.reservedTokens === 0);
      }
      const chatLines = () =>
        target!.logs.entries.filter((entry) => entry.route === "/api/chat" && "status" in entry);
      await waitFor(() => chatLines().length === 2);
      expect(chatLines().map((entry) => entry.status)).toEqual([499, 499]);
      expect(target.logs.entries.filter((entry) => entry.level === "error")).toEqual([]);
      const metrics = await (await send(target, "/metrics")).text();
      expect(metrics).toContain(
        'http_requests_total{method="POST",route="/api/chat",status="499"} 2',
      );
      expect(metrics).not.toContain('route="/api/chat",status="500"');
    } finally {
      await server.shutdown("test");
    }
  });

  test("a streamed turn whose client had gone before its handler ran calls no upstream and stores nothing: 499, nothing charged (probe 86b F3)", async () => {
    const provider = recordingProvider();
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    for (const accept of [SSE, {}]) {
      const request = new Request("http://localhost/api/chat", {
        method: "POST",
        headers: { ...asUser(alice), ...accept, "content-type": "application/json" },
        body: JSON.stringify({ message: "How do I sign up?" }),
        signal: AbortSignal.abort(),
      });
      const response = await target.app.handle(request);
      expect({ accept, status: response.status }).toEqual({ accept, status: 499 });
    }
    expect(provider.signals.every((signal) => signal?.aborted === true)).toBe(true);
    expect(target.db.select().from(chatMessages).all()).toEqual([]);
    const usage = target.db.select().from(chatUsage).all();
    expect(usage.map((row) => [row.usedTokens, row.reservedTokens])).toEqual(
      usage.map(() => [0, 0]),
    );
  });

  test("a stream still open when the shutdown's drain time is up ends with an error event (503, send again), not a cut connection; what arrived is stored incomplete (probe 15b, finding 2)", async () => {
    const provider = slowProvider(40);
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    const server = serveInProcess(target, {
      drainTimeoutMs: 200,
      onDrainTimeout: () => target!.services.endInFlight(),
    });
    const response = await fetch(new URL("/api/chat", server.url), {
      method: "POST",
      headers: { ...asUser(alice), ...SSE, "content-type": "application/json" },
      body: JSON.stringify({ message: "How do I sign up?" }),
    });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = decoder.decode((await reader.read()).value);
    // Nothing but the logger writes to the process's output (probe 26e F1: Elysia printed
    // "isn't running" and a stack when stopped a second time after the streams had ended).
    const printed = spyOn(console, "log");
    const stopped = server.shutdown("test");
    // The whole body arrives and ends cleanly: the read never fails.
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    await stopped;
    expect(printed).not.toHaveBeenCalled();
    printed.mockRestore();
    const events = parseSse(text);
    expect(events.filter((event) => event.event === "done")).toEqual([]);
    const last = events.at(-1)!;
    expect(last.event).toBe("error");
    expect(last.data).toMatchObject({ status: 503, code: "SERVICE_UNAVAILABLE" });
    expect(target.logs.entries.map((entry) => entry.msg)).not.toContain(
      "drain timed out; closing connections",
    );
    await waitFor(() => assistantRows(target!).length === 1);
    expect(assistantRows(target)[0]!.incomplete).toBe(true);
    await waitFor(() => provider.aborted.length === 1);
    expect(target.db.select().from(chatUsage).get()!.reservedTokens).toBe(0);
  });

  test("a turn whose upstream has answered and whose storing waits out a lock when the drain time is up is stored, charged once and answered before the cut, streamed or not (probe 28e F1)", async () => {
    const offline = createOfflineProvider(loadFaq(null));
    let locker: Database | null = null;
    let answered = 0;
    const bothAsked = Promise.withResolvers<void>();
    // Answers at once, but once both turns have asked (so that neither still needs the lock to
    // reserve: a turn that met it there was refused, and the test timed out one run in ten), takes
    // the write lock from another connection for 800 ms: each turn's storing waits for it, past
    // the shutdown's 200 ms drain.
    const takeLock = async () => {
      answered++;
      if (answered === 2 && locker === null) {
        locker = new Database(target!.databasePath);
        locker.exec("BEGIN IMMEDIATE");
        setTimeout(() => locker?.exec("COMMIT"), 800);
        bothAsked.resolve();
      }
      await bothAsked.promise;
    };
    const provider: ChatProvider = {
      ...offline,
      complete: async (messages, options) => {
        await takeLock();
        return offline.complete(messages, options);
      },
      async *stream(messages, options) {
        await takeLock();
        yield* offline.stream(messages, options);
      },
    };
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    const server = serveInProcess(target, {
      drainTimeoutMs: 200,
      onDrainTimeout: () => target!.services.endInFlight(),
    });
    try {
      const turns = [SSE, {}].map((accept) =>
        fetch(new URL("/api/chat", server.url), {
          method: "POST",
          headers: { ...asUser(alice), ...accept, "content-type": "application/json" },
          body: JSON.stringify({ message: "How do I sign up?" }),
        }),
      );
      await waitFor(() => answered === 2);
      await server.shutdown("test");
      const [streamed, whole] = await Promise.all(turns);
      expect(streamed!.status).toBe(200);
      const events = parseSse(await streamed!.text());
      expect(events.at(-1)!.event).toBe("done");
      expect(events.filter((event) => event.event === "error")).toEqual([]);
      expect(whole!.status).toBe(200);
      expect(await whole!.json()).toMatchObject({ reply: expect.any(String) });
      // Both stored whole, and charged: nothing held, two requests counted.
      expect(assistantRows(target).map((row) => row.incomplete)).toEqual([false, false]);
      const usage = target.db.select().from(chatUsage).get()!;
      expect(usage.reservedTokens).toBe(0);
      expect(usage.requests).toBe(2);
      expect(usage.usedTokens).toBeGreaterThan(0);
    } finally {
      (locker as Database | null)?.close();
    }
  });

  test("a turn still waiting for its first piece when the drain time is up is answered 503 with Retry-After, streamed or not, and logged (re-probe 15c F4)", async () => {
    // The first piece would come 10 s on; the provider counts the turns it is holding.
    const slow = slowProvider(10_000);
    let held = 0;
    const provider: ChatProvider = {
      ...slow,
      complete: (messages, options) => {
        held++;
        return slow.complete(messages, options);
      },
      stream: (messages, options) => {
        held++;
        return slow.stream(messages, options);
      },
    };
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    const server = serveInProcess(target, {
      drainTimeoutMs: 200,
      onDrainTimeout: () => target!.services.endInFlight(),
    });
    const turns = [SSE, {}].map((accept) =>
      fetch(new URL("/api/chat", server.url), {
        method: "POST",
        headers: { ...asUser(alice), ...accept, "content-type": "application/json" },
        body: JSON.stringify({ message: "How do I sign up?" }),
      }),
    );
    await waitFor(() => held === 2);
    await server.shutdown("test");
    for (const response of await Promise.all(turns)) {
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBe("5");
      expect(await response.json()).toMatchObject({ code: "SERVICE_UNAVAILABLE" });
    }
    const chatLines = target.logs.entries.filter(
      (entry) => entry.route === "/api/chat" && "status" in entry,
    );
    expect(chatLines.map((entry) => entry.status)).toEqual([503, 503]);
    expect(target.db.select().from(chatUsage).get()!.reservedTokens).toBe(0);
    expect(assistantRows(target)).toEqual([]);
  });

  test("cancelling the body (app.handle) does the same", async () => {
    const provider = slowProvider(30);
    target = buildTestApp({ chatProvider: provider });
    const alice = await signUp(target);
    const response = await chat(target, asUser(alice), { message: "rate limits" }, SSE);
    const reader = response.body!.getReader();
    await reader.read();
    await reader.read();
    await reader.cancel();
    await waitFor(() => assistantRows(target!).length === 1);
    expect(assistantRows(target)[0]!.incomplete).toBe(true);
    await waitFor(() => provider.aborted.length === 1);
    expect(provider.aborted).toEqual([true]);
  });

  test("the access log and the duration histogram record the stream's end, not its first byte", async () => {
    // ~50 deltas at 12 ms: the stream takes well over 300 ms (at 6 ms it once took 294 ms on a
    // busy machine: a precondition, not the behaviour, failed), its first byte a few.
    target = buildTestApp({ chatProvider: slowProvider(12) });
    const alice = await signUp(target);
    const started = performance.now();
    const response = await chat(target, asUser(alice), { message: "How do I sign up?" }, SSE);
    await response.text();
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(300);
    await afterQueuedImmediates();
    await waitFor(() =>
      target!.logs.entries.some((e) => e.msg === "request" && e.route === "/api/chat"),
    );
    const line = target.logs.entries.find((e) => e.msg === "request" && e.route === "/api/chat")!;
    expect(line.durationMs as number).toBeGreaterThanOrEqual(300);
    expect(line.status).toBe(200);

    const metrics = await (await send(target, "/metrics")).text();
    const sum =
      /http_request_duration_seconds_sum\{method="POST",route="\/api\/chat"\} ([\d.e-]+)/.exec(
        metrics,
      );
    expect(Number(sum![1])).toBeGreaterThanOrEqual(0.3);
    expect(metrics).toMatch(
      /http_request_duration_seconds_bucket\{le="0.25",method="POST",route="\/api\/chat"\} 0/,
    );
  });
});

describe("upstream failures", () => {
  const setup = async (failure: Error, afterText?: string) => {
    target = buildTestApp({ chatProvider: failingProvider(failure, afterText) });
    return signUp(target);
  };

  test("unavailable: 503 UPSTREAM_UNAVAILABLE with Retry-After; nothing stored, the budget given back", async () => {
    const alice = await setup(new UpstreamFailure("unavailable", "circuit open", 7));
    const secret = "my private question about invoices";
    const response = await chat(target!, asUser(alice), { message: secret });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("7");
    const problem = (await response.json()) as { code: string; requestId: string };
    expect(problem.code).toBe("UPSTREAM_UNAVAILABLE");
    expect(target!.db.select().from(chatMessages).all()).toHaveLength(0);
    expect(target!.db.select().from(chatUsage).get()!.reservedTokens).toBe(0);
    expect(target!.db.select().from(chatUsage).get()!.usedTokens).toBe(0);
    // Logged with the request id and the reason, never the user's text.
    const logged = target!.logs.entries.find((e) => e.msg === "chat upstream failed")!;
    expect(logged).toMatchObject({ requestId: problem.requestId, kind: "unavailable" });
    expect(target!.logs.text).not.toContain(secret);
    const metrics = await (await send(target!, "/metrics")).text();
    expect(metrics).toContain('chat_requests_total{provider="openai",outcome="upstream_error"} 1');
  });

  test("bad_response: 502; also when streaming fails before the first byte", async () => {
    const alice = await setup(new UpstreamFailure("bad_response", "malformed JSON"));
    const json = await chat(target!, asUser(alice), { message: "hi" });
    expect(json.status).toBe(502);
    expect(((await json.json()) as { code: string }).code).toBe("UPSTREAM_UNAVAILABLE");
    const streamed = await chat(target!, asUser(alice), { message: "hi" }, SSE);
    expect(streamed.status).toBe(502);
    expect(streamed.headers.get("content-type")).toStartWith("application/problem+json");
  });

  test("a failure mid-stream is an error event with the problem; what arrived is stored incomplete", async () => {
    const alice = await setup(new UpstreamFailure("bad_response", "stream cut"), "Partial answer ");
    const response = await chat(target!, asUser(alice), { message: "hi" }, SSE);
    expect(response.status).toBe(200);
    const events = parseSse(await response.text());
    expect(events[0]).toEqual({ event: "message", data: { delta: "Partial answer " } });
    const error = events.at(-1)!;
    expect(error.event).toBe("error");
    expect(error.data).toMatchObject({ code: "UPSTREAM_UNAVAILABLE", status: 502 });
    expect(events.some((e) => e.event === "done")).toBe(false);
    await waitFor(() => assistantRows(target!).length === 1);
    expect(assistantRows(target!)[0]).toMatchObject({
      content: "Partial answer ",
      incomplete: true,
    });
  });

  test("a reply cut short is stored and counted by estimate, never past the completion cap (probe 34a F1)", async () => {
    const long = "x".repeat(4_000);
    target = buildTestApp({
      chatProvider: {
        name: "openai",
        maxCompletionTokens: 50,
        async complete() {
          throw new UpstreamFailure("bad_response", "unused");
        },
        async *stream() {
          yield { kind: "text", text: long };
          throw new UpstreamFailure("bad_response", "stream cut");
        },
      },
    });
    const alice = await signUp(target);
    const response = await chat(target, asUser(alice), { message: "hi" }, SSE);
    expect(parseSse(await response.text()).at(-1)!.event).toBe("error");
    await waitFor(() => assistantRows(target!).length === 1);
    expect(assistantRows(target)[0]).toMatchObject({
      content: long,
      incomplete: true,
      completionTokens: 50,
    });
    const metrics = await (await send(target, "/metrics")).text();
    expect(metrics).toContain('chat_tokens_total{kind="completion"} 50');
  });

  test("an unexpected provider error is 500 INTERNAL without its message", async () => {
    const alice = await setup(new Error("sk-secret-in-a-message"));
    const response = await chat(target!, asUser(alice), { message: "hi" });
    expect(response.status).toBe(500);
    expect(await response.text()).not.toContain("sk-secret");
    expect(target!.db.select().from(chatUsage).get()!.reservedTokens).toBe(0);
    const metrics = await (await send(target!, "/metrics")).text();
    expect(metrics).toContain('chat_requests_total{provider="openai",outcome="error"} 1');
  });
});
