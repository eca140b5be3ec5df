/**
 * @module
 * A local OpenAI-compatible server for tests: `POST /v1/chat/completions` on 127.0.0.1 (a free
 * port), speaking the wire format the official SDK reads, JSON and SSE.
 *
 * ```ts
 * const upstream = await startOpenAiServer();             // answers every request with a reply
 * upstream.enqueue({ kind: "error", status: 429, retryAfter: "1" }, { kind: "reply", text: "Hi" });
 * const provider = createOpenAiProvider({ apiKey: upstream.apiKey, baseUrl: upstream.url, ... });
 * ... upstream.requests[0].body.messages, upstream.requests[1].aborted ...
 * upstream.stop();
 * ```
 *
 * Each request takes the next queued step (`enqueue`), or the default step (`setDefault`, a reply
 * unless changed) when the queue is empty. Steps:
 * - `reply`: a chat.completion (JSON), or for `stream: true` chunks of the text (one per word, or
 *   `chunks`) with `pauseMs` between them, a finish chunk, a usage-only chunk when the client asked
 *   for `stream_options.include_usage`, then `data: [DONE]`; `pauses` sets the pause before each
 *   delta on its own (a stall mid-stream); `reasoning` streams those pieces of the model's reasoning
 *   first, `pauseMs` apart, in the shape `reasoningShape` names (`delta.reasoning_content` as vLLM
 *   and DeepSeek send it by default; `delta.reasoning` as Ollama does; OpenRouter's
 *   `reasoning_details` list beside the same text in `reasoning`; Mistral's `thinking` parts of a
 *   `content` list). `usage: false` sends no usage at all
 *   (as some local servers do); `delayMs` waits before answering. A JSON reply comes after the
 *   time its stream would take (`delayMs` and every pause), as a server generating it whole sends it.
 * - `error`: an OpenAI-style error body with `status`, and `Retry-After` / `retry-after-ms` headers.
 * - `hang`: never answers; the request ends only when the client gives up.
 * - `malformed`: 200 with a body that is not JSON (`body` to choose it, `contentType`); in a
 *   stream, a first chunk that is not JSON.
 * - `wrong_shape`: 200 with valid JSON that is not a completion (`{"ok":true}`).
 * - `cut`: a stream that sends `afterChunks` deltas and then ends with no finish_reason and no
 *   `[DONE]`: `abrupt: true` resets the connection, else the body ends cleanly.
 * - `flood`: 200 and bytes without end (until the client leaves, or `maxBytes`), in blocks of
 *   `blockBytes` with `pauseMs` between them: `shape: "json"` a completion body whose content never
 *   closes; `"line"` one SSE `data:` line whose content never closes; `"events"` SSE events
 *   without end, each a well-formed chunk with no choices (nothing of a reply, never a finish);
 *   `status` answers it as an error (a body that trickles with `blockBytes: 1` and `pauseMs`).
 *
 * Every request is recorded (`requests`): its body, headers without `authorization`, whether it
 * carried the expected key, whether it asked to stream, and whether the client went away before
 * the response ended (`aborted`).
 */

export type UpstreamStep =
  | {
      kind: "reply";
      text?: string;
      /** Stream deltas, instead of splitting `text` by words. */
      chunks?: string[];
      /** Before the response (JSON) or its first byte (stream). */
      delayMs?: number;
      /** Between two stream chunks. */
      pauseMs?: number;
      /** Per delta, before it: overrides `pauseMs` (an upstream that goes silent mid-stream). */
      pauses?: number[];
      /** `false`: no usage in the response; else these counts (default: words in and out). */
      usage?: false | { prompt: number; completion: number };
      finishReason?: string;
      /** In a stream, a second finish chunk after the first, with this reason. */
      thenFinish?: string;
      /** In a stream, reasoning pieces sent before the reply's, each in a chunk of its own. */
      reasoning?: string[];
      /** The shape the reasoning comes in. @default "reasoning_content" */
      reasoningShape?: ReasoningShape;
      /** Each reply piece as a `text` part of a `content` list, as Mistral's reasoning models send it. */
      textParts?: boolean;
      /** In a stream, tool-call argument pieces sent before the reply's, each in a chunk of its own. */
      toolCalls?: string[];
      /** In a stream, after each reply piece, a piece of another choice (index 1) in the same chunk. */
      otherChoice?: string;
      /** In a stream, text sent in a chunk after the finish. */
      afterFinish?: string;
      /** In a stream, reasoning pieces sent after the finish, each in a chunk of its own. */
      reasoningAfterFinish?: string[];
      /** In a stream, no `[DONE]` after the last chunk: the connection is held for a minute. */
      holdOpen?: boolean;
      /** In a stream, a count sent before the reply (in a chunk of its own, no choices). */
      earlyUsage?: { prompt: number; completion: number };
      /** In a stream, a count on the finish's own chunk (a running total, as some servers send). */
      finishUsage?: { prompt: number; completion: number };
    }
  | {
      kind: "error";
      status: number;
      retryAfter?: string;
      retryAfterMs?: string;
      message?: string;
      /** The error body's `code` (`context_length_exceeded`, `model_not_found`, …); null if absent. */
      code?: string;
    }
  | {
      /** 200, a completion whose reply the upstream's content filter withheld (no content). */
      kind: "filtered";
    }
  | {
      /**
       * 200, the model's refusal as OpenAI sends it: `message.refusal` with no content, or streamed
       * in `delta.refusal` pieces.
       */
      kind: "refusal";
      text: string;
    }
  | { kind: "hang" }
  | { kind: "malformed"; body?: string; contentType?: string }
  | { kind: "wrong_shape" }
  | { kind: "cut"; afterChunks?: number; abrupt?: boolean; text?: string }
  | {
      kind: "flood";
      shape: "json" | "line" | "events";
      /** Sent gzip-compressed, `Content-Encoding: gzip`, whatever the client accepts. */
      gzip?: boolean;
      /** For `events`: each event's JSON (a chunk with nothing in it by default). */
      event?: string;
      /** The answer's status (200 by default): an error whose body never ends, or trickles. */
      status?: number;
      blockBytes?: number;
      pauseMs?: number;
      maxBytes?: number;
    };

export type ReasoningShape = "reasoning_content" | "reasoning" | "reasoning_details" | "thinking";

/** A stream delta carrying `piece` of the model's reasoning, as servers of each shape send it. */
function reasoningDelta(shape: ReasoningShape, piece: string): Record<string, unknown> {
  switch (shape) {
    case "reasoning_content":
      return { reasoning_content: piece };
    case "reasoning":
      return { reasoning: piece };
    case "reasoning_details":
      // As OpenRouter sends it: the same text in `reasoning` and in a part of `reasoning_details`.
      return {
        reasoning: piece,
        reasoning_details: [{ type: "reasoning.text", text: piece, format: "unknown", index: 0 }],
      };
    case "thinking":
      return { content: [{ type: "thinking", thinking: [{ type: "text", text: piece }] }] };
  }
}

export interface RecordedRequest {
  method: string;
  path: string;
  // biome-ignore lint/suspicious/noExplicitAny: the body is whatever the client sent, read by tests.
  body: any;
  /** Lower-cased names, `authorization` left out. */
  headers: Record<string, string>;
  /** Carried `Authorization: Bearer <apiKey>`. */
  authorized: boolean;
  stream: boolean;
  /** performance.now() when the request arrived. */
  receivedAt: number;
  /** The client closed the connection before the response ended. */
  aborted: boolean;
  /** Bytes of the response body handed to the connection (counted for `flood` steps). */
  bytesSent: number;
}

export interface OpenAiServer {
  /** Base URL for OPENAI_BASE_URL / the SDK's baseURL, ending in `/v1`. */
  url: string;
  /** The key it accepts; any other gets a 401 as OpenAI sends it. */
  apiKey: string;
  requests: RecordedRequest[];
  enqueue(...steps: UpstreamStep[]): void;
  setDefault(step: UpstreamStep): void;
  /** Resolves once `count` requests have arrived. */
  waitForRequests(count: number, timeoutMs?: number): Promise<void>;
  /** Resolves once request `index` was aborted by its client. */
  waitForAbort(index: number, timeoutMs?: number): Promise<void>;
  stop(): void;
}

export interface OpenAiServerOptions {
  apiKey?: string;
  /** The default step's reply text. */
  reply?: string;
}

const encoder = new TextEncoder();

function words(text: string): number {
  return text.split(/\s+/).filter((word) => word !== "").length;
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline)
      throw new Error(`openai-server: timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

function waitOrAbort(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

type Action = { pauseMs: number } & ({ write: string } | { end: "close" | "reset" });

export async function startOpenAiServer(options: OpenAiServerOptions = {}): Promise<OpenAiServer> {
  const apiKey = options.apiKey ?? "sk-local-test-0123456789";
  const queue: UpstreamStep[] = [];
  let fallback: UpstreamStep = {
    kind: "reply",
    text: options.reply ?? "Hello from the local model.",
  };
  const requests: RecordedRequest[] = [];
  let sequence = 0;

  function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
    return Response.json(body, { status, headers });
  }

  function errorBody(status: number, message: string, type: string, code: string | null) {
    return { error: { message, type, param: null, code }, status };
  }

  function completionId(): string {
    sequence += 1;
    return `chatcmpl-local${sequence}`;
  }

  const FLOOD_HEADS = {
    json: '{"id":"chatcmpl-flood","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"',
    line: 'data: {"id":"chatcmpl-flood","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"',
    events: "",
  };
  const EMPTY_EVENT =
    'data: {"id":"chatcmpl-flood","object":"chat.completion.chunk","choices":[]}\n\n';

  function flood(
    step: Extract<UpstreamStep, { kind: "flood" }>,
    record: RecordedRequest,
  ): Response {
    const blockBytes = step.blockBytes ?? 64 * 1024;
    const block = encoder.encode(
      step.shape === "events"
        ? (step.event === undefined ? EMPTY_EVENT : `data: ${step.event}\n\n`).repeat(
            Math.max(1, Math.floor(blockBytes / EMPTY_EVENT.length)),
          )
        : "a".repeat(blockBytes),
    );
    let head: Uint8Array | null = encoder.encode(FLOOD_HEADS[step.shape]);
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (head !== null) {
          controller.enqueue(head);
          head = null;
          return;
        }
        if (step.pauseMs) await Bun.sleep(step.pauseMs);
        if (record.aborted) return;
        if (step.maxBytes !== undefined && record.bytesSent >= step.maxBytes) {
          controller.close();
          return;
        }
        controller.enqueue(block);
        record.bytesSent += block.length;
      },
      cancel() {
        record.aborted = true;
      },
    });
    const type = step.shape === "json" ? "application/json" : "text/event-stream";
    const headers: Record<string, string> = { "content-type": type };
    if (step.gzip) headers["content-encoding"] = "gzip";
    const sent = step.gzip
      ? body.pipeThrough(
          new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
        )
      : body;
    return new Response(sent, { status: step.status ?? 200, headers });
  }

  function sse(actions: Action[], record: RecordedRequest): Response {
    let ended = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const action = actions.shift();
        if (!action) {
          ended = true;
          controller.close();
          return;
        }
        if (action.pauseMs > 0) await Bun.sleep(action.pauseMs);
        if (record.aborted) return;
        if ("write" in action) controller.enqueue(encoder.encode(action.write));
        else if (action.end === "close") {
          ended = true;
          controller.close();
        } else {
          ended = true;
          // No reason: Bun resets the connection without printing an error.
          controller.error();
        }
      },
      cancel() {
        if (!ended) record.aborted = true;
      },
    });
    return new Response(body, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
    });
  }

  function streamActions(
    // biome-ignore lint/suspicious/noExplicitAny: the request body as sent.
    body: any,
    step: Extract<UpstreamStep, { kind: "reply" | "cut" | "malformed" }>,
  ): Action[] {
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    const model = String(body.model);
    const includeUsage = body.stream_options?.include_usage === true;
    const chunk = (choices: unknown[], usage?: unknown) =>
      `data: ${JSON.stringify({
        id,
        object: "chat.completion.chunk",
        created,
        model,
        system_fingerprint: null,
        choices,
        ...(includeUsage ? { usage: usage ?? null } : {}),
      })}\n\n`;
    const asParts = step.kind === "reply" && step.textParts === true;
    const delta = (content: string) =>
      chunk([
        {
          index: 0,
          delta: { content: asParts ? [{ type: "text", text: content }] : content },
          logprobs: null,
          finish_reason: null,
        },
      ]);
    const first = chunk([
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
    ]);
    const delay = step.kind === "reply" ? (step.delayMs ?? 0) : 0;
    const pause = step.kind === "reply" ? (step.pauseMs ?? 0) : 0;
    if (step.kind === "malformed") {
      return [
        { pauseMs: 0, write: `data: ${step.body ?? "{not json"}\n\n` },
        { pauseMs: 0, end: "close" },
      ];
    }
    const text = step.text ?? "Hello from the local model.";
    const pieces =
      step.kind === "reply" && step.chunks ? step.chunks : (text.match(/\S+\s*/g) ?? []);
    if (step.kind === "cut") {
      const sent = pieces.slice(0, step.afterChunks ?? 1);
      return [
        { pauseMs: 0, write: first },
        ...sent.map((piece) => ({ pauseMs: 0, write: delta(piece) })),
        { pauseMs: 20, end: step.abrupt ? "reset" : "close" },
      ];
    }
    const actions: Action[] = [{ pauseMs: delay, write: first }];
    if (step.kind === "reply") {
      const shape = step.reasoningShape ?? "reasoning_content";
      for (const thought of step.reasoning ?? []) {
        const delta = reasoningDelta(shape, thought);
        actions.push({
          pauseMs: pause,
          write: chunk([{ index: 0, delta, logprobs: null, finish_reason: null }]),
        });
      }
      for (const [i, piece] of (step.toolCalls ?? []).entries()) {
        const call =
          i === 0
            ? { id: "call_1", type: "function", function: { name: "lookup", arguments: piece } }
            : { function: { arguments: piece } };
        actions.push({
          pauseMs: pause,
          write: chunk([
            {
              index: 0,
              delta: { tool_calls: [{ index: 0, ...call }] },
              logprobs: null,
              finish_reason: null,
            },
          ]),
        });
      }
    }
    if (step.kind === "reply" && step.earlyUsage !== undefined) {
      actions.push({ pauseMs: 0, write: chunk([], usageOf(body, "", step.earlyUsage)) });
    }
    const pauses = step.kind === "reply" ? step.pauses : undefined;
    const other = step.kind === "reply" ? step.otherChoice : undefined;
    pieces.forEach((piece, i) => {
      actions.push({ pauseMs: pauses?.[i] ?? pause, write: delta(piece) });
      if (other !== undefined) {
        actions.push({
          pauseMs: 0,
          write: chunk([
            { index: 1, delta: { content: other }, logprobs: null, finish_reason: null },
          ]),
        });
      }
    });
    const finishUsage = step.kind === "reply" ? step.finishUsage : undefined;
    actions.push({
      pauseMs: pause,
      write: chunk(
        [{ index: 0, delta: {}, logprobs: null, finish_reason: step.finishReason ?? "stop" }],
        finishUsage === undefined ? undefined : usageOf(body, pieces.join(""), finishUsage),
      ),
    });
    if (step.kind === "reply" && step.afterFinish !== undefined) {
      actions.push({ pauseMs: 0, write: delta(step.afterFinish) });
    }
    for (const thought of step.kind === "reply" ? (step.reasoningAfterFinish ?? []) : []) {
      actions.push({
        pauseMs: 0,
        write: chunk([
          {
            index: 0,
            delta: reasoningDelta("reasoning_content", thought),
            logprobs: null,
            finish_reason: null,
          },
        ]),
      });
    }
    if (step.kind === "reply" && step.thenFinish !== undefined) {
      actions.push({
        pauseMs: 0,
        write: chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: step.thenFinish }]),
      });
    }
    if (includeUsage && step.usage !== false) {
      const usage = usageOf(body, pieces.join(""), step.usage);
      actions.push({ pauseMs: 0, write: chunk([], usage) });
    }
    const hold = step.kind === "reply" && step.holdOpen === true;
    actions.push({ pauseMs: hold ? 60_000 : 0, write: "data: [DONE]\n\n" });
    return actions;
  }

  /** A `chat.completion` body answering `body` with `choices`. */
  // biome-ignore lint/suspicious/noExplicitAny: the request body as sent.
  function completion(body: any, choices: unknown[], extra: Record<string, unknown> = {}) {
    return {
      id: completionId(),
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: String(body.model),
      choices,
      ...extra,
    };
  }

  function usageOf(
    // biome-ignore lint/suspicious/noExplicitAny: the request body as sent.
    body: any,
    reply: string,
    counts?: { prompt: number; completion: number },
  ) {
    const prompt =
      counts?.prompt ??
      (Array.isArray(body.messages)
        ? body.messages.reduce(
            (sum: number, m: { content?: unknown }) => sum + words(String(m.content ?? "")),
            0,
          )
        : 0);
    const completion = counts?.completion ?? words(reply);
    return {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    };
  }

  async function answer(request: Request, record: RecordedRequest): Promise<Response> {
    if (!record.authorized) {
      const presented = (request.headers.get("authorization") ?? "").replace(/^Bearer\s+/i, "");
      // OpenAI names the key it was given in this message: a test proves it never reaches our logs.
      return json(
        401,
        errorBody(
          401,
          `Incorrect API key provided: ${presented}.`,
          "invalid_request_error",
          "invalid_api_key",
        ),
      );
    }
    const step = queue.shift() ?? fallback;
    const body = record.body;
    switch (step.kind) {
      case "error": {
        const headers: Record<string, string> = {};
        if (step.retryAfter !== undefined) headers["retry-after"] = step.retryAfter;
        if (step.retryAfterMs !== undefined) headers["retry-after-ms"] = step.retryAfterMs;
        const type =
          step.status === 429
            ? "rate_limit_error"
            : step.status >= 500
              ? "server_error"
              : "invalid_request_error";
        return json(
          step.status,
          errorBody(
            step.status,
            step.message ?? `Local error ${step.status}`,
            type,
            step.code ?? null,
          ),
          headers,
        );
      }
      case "filtered": {
        const finish = { index: 0, logprobs: null, finish_reason: "content_filter" };
        if (!record.stream) {
          return json(
            200,
            completion(body, [
              { ...finish, message: { role: "assistant", content: null, refusal: null } },
            ]),
          );
        }
        const chunk = (choices: unknown[]) =>
          `data: ${JSON.stringify({ id: "chatcmpl-filtered", object: "chat.completion.chunk", choices })}\n\n`;
        return sse(
          [
            { pauseMs: 0, write: chunk([{ index: 0, delta: { role: "assistant", content: "" } }]) },
            { pauseMs: 0, write: chunk([{ ...finish, delta: {} }]) },
            { pauseMs: 0, write: "data: [DONE]\n\n" },
          ],
          record,
        );
      }
      case "refusal": {
        const usage = usageOf(body, step.text, undefined);
        if (!record.stream) {
          return json(
            200,
            completion(
              body,
              [
                {
                  index: 0,
                  logprobs: null,
                  finish_reason: "stop",
                  message: { role: "assistant", content: null, refusal: step.text },
                },
              ],
              { usage },
            ),
          );
        }
        const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
          `data: ${JSON.stringify({ id: "chatcmpl-refusal", object: "chat.completion.chunk", choices, ...extra })}\n\n`;
        const pieces = step.text.split(/(?<= )/);
        return sse(
          [
            {
              pauseMs: 0,
              write: chunk([
                { index: 0, delta: { role: "assistant", content: null, refusal: "" } },
              ]),
            },
            ...pieces.map((piece) => ({
              pauseMs: 0,
              write: chunk([{ index: 0, delta: { refusal: piece } }]),
            })),
            { pauseMs: 0, write: chunk([{ index: 0, delta: {}, finish_reason: "stop" }]) },
            { pauseMs: 0, write: chunk([], { usage }) },
            { pauseMs: 0, write: "data: [DONE]\n\n" },
          ],
          record,
        );
      }
      case "hang":
        await new Promise<void>((resolve) =>
          request.signal.addEventListener("abort", () => resolve()),
        );
        return new Response(null, { status: 499 });
      case "wrong_shape":
        return json(200, { ok: true });
      case "flood":
        return flood(step, record);
      case "malformed":
        if (record.stream) return sse(streamActions(body, step), record);
        return new Response(step.body ?? '{"id": "chatcmpl-broken", "choices": [', {
          headers: { "content-type": step.contentType ?? "application/json" },
        });
      case "cut":
        if (record.stream) return sse(streamActions(body, step), record);
        return new Response('{"id":"chatcmpl-cut","object":"chat.completion","choices":[{"ind', {
          headers: { "content-type": "application/json" },
        });
      case "reply": {
        if (record.stream) return sse(streamActions(body, step), record);
        // A JSON reply comes once it is generated whole: after the time its stream would take.
        const pieces = step.chunks?.length ?? 1;
        const generating = Array.from(
          { length: pieces },
          (_, i) => step.pauses?.[i] ?? step.pauseMs ?? 0,
        ).reduce((sum, ms) => sum + ms, step.delayMs ?? 0);
        if (generating > 0) await waitOrAbort(generating, request.signal);
        if (request.signal.aborted) return new Response(null, { status: 499 });
        const text = step.text ?? step.chunks?.join("") ?? "Hello from the local model.";
        return json(200, {
          id: completionId(),
          object: "chat.completion",
          created: Math.floor(Date.now() / 1000),
          model: String(body.model),
          system_fingerprint: null,
          choices: [
            {
              index: 0,
              message: { role: "assistant", content: text, refusal: null },
              logprobs: null,
              finish_reason: step.finishReason ?? "stop",
            },
          ],
          ...(step.usage === false ? {} : { usage: usageOf(body, text, step.usage) }),
        });
      }
    }
  }

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(request) {
      const url = new URL(request.url);
      if (request.method !== "POST" || url.pathname !== "/v1/chat/completions") {
        return json(404, errorBody(404, "Unknown route", "invalid_request_error", "unknown_url"));
      }
      const headers: Record<string, string> = {};
      request.headers.forEach((value, name) => {
        if (name !== "authorization") headers[name] = value;
      });
      let body: unknown;
      try {
        body = await request.json();
      } catch {
        return json(
          400,
          errorBody(400, "We could not parse the JSON body", "invalid_request_error", null),
        );
      }
      const record: RecordedRequest = {
        method: request.method,
        path: url.pathname,
        body,
        headers,
        authorized: request.headers.get("authorization") === `Bearer ${apiKey}`,
        stream: (body as { stream?: unknown })?.stream === true,
        receivedAt: performance.now(),
        aborted: false,
        bytesSent: 0,
      };
      requests.push(record);
      request.signal.addEventListener("abort", () => {
        record.aborted = true;
      });
      return answer(request, record);
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}/v1`,
    apiKey,
    requests,
    enqueue: (...steps) => {
      queue.push(...steps);
    },
    setDefault: (step) => {
      fallback = step;
    },
    waitForRequests: (count, timeoutMs = 5_000) =>
      until(() => requests.length >= count, timeoutMs, `${count} requests`),
    waitForAbort: (index, timeoutMs = 5_000) =>
      until(() => requests[index]?.aborted === true, timeoutMs, `request ${index} to be aborted`),
    stop: () => {
      server.stop(true);
    },
  };
}
