/**
 * Helpers for the chat tests: providers that wrap the real offline one to record what they were
 * sent, wait on a gate, go slowly or fail as an upstream would; an SSE reader; request shortcuts.
 */
import { loadFaq } from "../../src/modules/chat/providers/faq";
import { createOfflineProvider } from "../../src/modules/chat/providers/offline";
import {
  type ChatMessage,
  type ChatProvider,
  type CompletionOptions,
  type Delta,
  UpstreamFailure,
} from "../../src/modules/chat/providers/provider";
import { send, type TestApp } from "./app";
import { bearer } from "./auth";

export interface RecordingProvider extends ChatProvider {
  /** Every prompt the provider was sent, in order. */
  calls: ChatMessage[][];
  /** Every signal it was handed. */
  signals: (AbortSignal | undefined)[];
}

/** The shipped offline provider, recording each call's messages and signal. */
export function recordingProvider(base: ChatProvider = createOfflineProvider(loadFaq(null))) {
  const provider: RecordingProvider = {
    name: base.name,
    maxCompletionTokens: base.maxCompletionTokens,
    calls: [],
    signals: [],
    complete(messages, options) {
      provider.calls.push([...messages]);
      provider.signals.push(options?.signal);
      return base.complete(messages, options);
    },
    stream(messages, options) {
      provider.calls.push([...messages]);
      provider.signals.push(options?.signal);
      return base.stream(messages, options);
    },
  };
  return provider;
}

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The offline provider, `delayMs` between each word, honouring the signal as an upstream does. */
export function slowProvider(delayMs: number, base = createOfflineProvider(loadFaq(null))) {
  const aborted: boolean[] = [];
  const provider: ChatProvider & { aborted: boolean[] } = {
    name: base.name,
    maxCompletionTokens: base.maxCompletionTokens,
    aborted,
    complete: async (messages, options) => {
      await sleepUnlessAborted(delayMs, options?.signal);
      return base.complete(messages, options);
    },
    async *stream(messages: readonly ChatMessage[], options: CompletionOptions = {}) {
      try {
        for await (const delta of base.stream(messages, options)) {
          await sleepUnlessAborted(delayMs, options.signal);
          yield delta;
        }
      } finally {
        aborted.push(options.signal?.aborted === true);
      }
    },
  };
  return provider;
}

/** Holds every call until `open()`; for proving what is decided before the upstream answers. */
export function gatedProvider(base = createOfflineProvider(loadFaq(null))) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let waiting = 0;
  const provider: ChatProvider & { open(): void; waiting(): number } = {
    name: base.name,
    maxCompletionTokens: base.maxCompletionTokens,
    open: () => open(),
    waiting: () => waiting,
    async complete(messages, options) {
      waiting++;
      await gate;
      return base.complete(messages, options);
    },
    async *stream(messages, options) {
      waiting++;
      await gate;
      yield* base.stream(messages, options);
    },
  };
  return provider;
}

/** Fails every call as an upstream would; `afterText` streams that much first. */
export function failingProvider(
  failure: UpstreamFailure | Error,
  afterText?: string,
): ChatProvider {
  return {
    name: "openai",
    maxCompletionTokens: 1024,
    async complete() {
      throw failure;
    },
    async *stream(): AsyncGenerator<Delta> {
      if (afterText) yield { kind: "text", text: afterText };
      throw failure;
    },
  };
}

export { UpstreamFailure };

export interface SseEvent {
  event: string;
  data: unknown;
}

/** Parses a whole Server-Sent Events body into its events (`message` when unnamed). */
export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = [];
  for (const block of text.split("\n\n")) {
    if (block.trim() === "") continue;
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    events.push({ event, data: JSON.parse(data.join("\n")) });
  }
  return events;
}

/** POST /api/chat with a credential's headers. */
export function chat(
  target: TestApp,
  credential: Record<string, string>,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return send(target, "/api/chat", { body, headers: { ...credential, ...headers } });
}

export function asUser(session: { accessToken: string }) {
  return bearer(session.accessToken);
}

export function asKey(key: string) {
  return { "x-api-key": key };
}

export const SSE = { accept: "text/event-stream" };

/**
 * A streamed turn over a real socket (`serverUrl` from serveInProcess) that reads the first chunk
 * and hangs up, as a browser tab closed mid-answer: its status and the first chunk's text.
 */
export async function streamFirstChunkThenHangUp(
  serverUrl: URL,
  credential: Record<string, string>,
  message: string,
): Promise<{ status: number; first: string }> {
  const abort = new AbortController();
  const response = await fetch(new URL("/api/chat", serverUrl), {
    method: "POST",
    headers: { ...credential, ...SSE, "content-type": "application/json" },
    body: JSON.stringify({ message }),
    signal: abort.signal,
  });
  const { value } = await response.body!.getReader().read();
  abort.abort();
  return { status: response.status, first: new TextDecoder().decode(value) };
}

/**
 * A turn over a real socket (`serverUrl` from serveInProcess) whose client leaves once `leaveWhen`
 * resolves, whatever it was answered by then, as a browser tab closed mid-request; resolves once
 * the request has ended on the client's side. `headers` adds to the credential's (`SSE`).
 */
export async function chatThenLeave(
  serverUrl: URL,
  credential: Record<string, string>,
  body: { message: string; conversationId?: string },
  leaveWhen: () => Promise<unknown>,
  headers: Record<string, string> = {},
): Promise<void> {
  const leaving = new AbortController();
  const answer = fetch(new URL("/api/chat", serverUrl), {
    method: "POST",
    headers: { ...credential, ...headers, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal: leaving.signal,
  })
    .then((response) => response.text())
    .catch(() => null);
  await leaveWhen();
  leaving.abort();
  await answer;
}

/**
 * A conversation of `turns` turns (`turn 0` …), the clock a minute on every ten so no limit
 * refuses one; its id.
 */
export async function conversation(
  target: TestApp,
  clock: { advance(ms: number): void },
  credential: Record<string, string>,
  turns: number,
): Promise<string> {
  let id: string | undefined;
  for (let i = 0; i < turns; i++) {
    if (i > 0 && i % 10 === 0) clock.advance(60_000);
    const response = await chat(target, credential, { message: `turn ${i}`, conversationId: id });
    if (response.status !== 200)
      throw new Error(`turn ${i}: ${response.status} ${await response.text()}`);
    id = ((await response.json()) as { conversationId: string }).conversationId;
  }
  return id!;
}
