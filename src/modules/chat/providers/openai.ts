/**
 * @module
 * The OpenAI-compatible provider: the official `openai` SDK pointed at `OPENAI_BASE_URL` (OpenAI,
 * Azure-compatible gateways, Ollama, vLLM, llama.cpp all speak `/v1/chat/completions`).
 *
 * How it fails, and why:
 * - **Retries are ours, not the SDK's** (`maxRetries: 0`): one logical request makes at most 3
 *   attempts, retrying 408/429/5xx, connection errors and timeouts. Our loop lets the waits use the
 *   injected randomness, cap what an upstream may ask for (the SDK honours up to 60 s, too long for
 *   someone waiting on a reply), count attempts for the log, and stop at once on a caller abort.
 *   Waits: `Retry-After-Ms` / `Retry-After` (seconds or an HTTP date) when sent, plus up to 10 %
 *   jitter (within the cap) so clients told the same time do not return together; otherwise
 *   500 ms × 2^(n−1) with equal jitter (250–500 ms, then 500–1000 ms). An upstream asking for more
 *   than 10 s is not waited for: the request fails `unavailable` at once with that wait.
 * - **Streams only**: a turn answered whole is read as a stream too (`complete`), so that a slow
 *   generation is never taken for an upstream's failure (probe 69b F1).
 * - **Timeout**: `timeoutMs` bounds each attempt until the stream opens (an error's body: until it
 *   has arrived whole), then the silence between two chunks (an upstream gone silent mid-stream).
 * - **Circuit breaker** (circuit-breaker.ts) around each logical request, so it sees one verdict per
 *   request, never one per attempt. 4xx refusals prove the upstream is up and count as successes;
 *   malformed answers, cut streams and exhausted retries count as failures; a caller abort counts
 *   as nothing.
 * - **Errors** are `UpstreamFailure`: `unavailable` (→ 503) for an open circuit, exhausted retries and
 *   timeouts; `bad_response` (→ 502) for 400/401/403/404-style refusals, a body that is not the
 *   completion shape, an SSE chunk that is not JSON, a stream that ends without a finish_reason. A
 *   caller abort is thrown as the signal's reason (an `AbortError`), not as an upstream failure.
 * - **Logs**: each failed request once, with request id, provider, model, upstream status, attempts
 *   and a reason we wrote. Never the messages, never the upstream's error text (OpenAI echoes part
 *   of a wrong key in it), never the key. The SDK's own console logging is off.
 * - **Usage**: the upstream's `usage` (the stream's final chunk with
 *   `stream_options.include_usage`); servers that send none, or a count that cannot be one of that
 *   text (past 10^8, under a fortieth of the estimate: zero for text that is not empty), get an
 *   estimate of one token per four characters (`estimateTokens`) of the reply and of any reasoning
 *   streamed beside it (counted as it arrives, never kept), never zero; a completion is never
 *   counted past the cap the request carried, nor a prompt past what its messages can be
 *   (`promptCeiling`).
 * - **Length**: every request carries CHAT_MAX_COMPLETION_TOKENS as the reply's cap
 *   (`completionCapField`: `max_completion_tokens` for api.openai.com, `max_tokens` elsewhere), so
 *   the completion a turn reserves against its budget is a real bound; a reply longer than 32
 *   characters a capped token (at least 64 Ki characters) is not kept: `bad_response` (→ 502; a
 *   stream is cut there, what arrived stored incomplete).
 * - **Bytes**: what the upstream sends is bounded as it arrives, before the SDK holds or parses it
 *   (`upstreamBounds`): an error's JSON body, and each line of a stream, at eight bytes a character of that
 *   reply plus 1 MiB; a whole stream at sixteen times that and at one event a character (plus
 *   1,024). Past a bound the request is closed and fails `bad_response` at once, never retried (probe
 *   54a F1: an endless body or SSE line was held until the timeout, 1.2 GB by 13 s, and events with
 *   nothing in them reset the stream's silence timer without end).
 */
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError } from "openai";
import {
  boundedFetch,
  UpstreamBodyTimeout,
  UpstreamEncodingRefused,
  UpstreamTooLarge,
} from "../../../bounded-fetch";
import type { Clock } from "../../../clock";
import { systemClock } from "../../../clock";
import type { Logger } from "../../../logging/logger";
import { NOT_NOW_STATUSES, retryAfterMs } from "../../../retry-after";
import { showsSomething, visiblePart } from "../../../visible-text";
import { estimateTokens, estimateTokensOf } from "../tokens";
import { CircuitBreaker, type CircuitPermit } from "./circuit-breaker";
import type { UpstreamMetrics } from "./metrics";
import {
  AbortedMidReply,
  type ChatMessage,
  type ChatProvider,
  type Completion,
  type CompletionOptions,
  type Delta,
  type TokenUsage,
  UnbilledAbort,
  UpstreamFailure,
  type UpstreamFailureKind,
} from "./provider";

const PROVIDER = "openai";
/** One request and at most two retries. */
export const MAX_ATTEMPTS = 3;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 4_000;
/** The longest an upstream's Retry-After is waited for; beyond it the request fails at once. */
export const MAX_RETRY_WAIT_MS = 10_000;
/**
 * The longest wait passed on to clients from an upstream's Retry-After: an hour, so an upstream
 * that asks for years (broken, or not the operator's to trust) does not tell clients to never come
 * back; the circuit breaker decides when the upstream is tried again anyway.
 */
export const MAX_TOLD_RETRY_AFTER_S = 3600;

/** The seconds a client is told to wait for an upstream that asked `ms`. */
function toldWait(ms: number): number {
  return Math.min(MAX_TOLD_RETRY_AFTER_S, Math.max(1, Math.ceil(ms / 1000)));
}

export interface OpenAiProviderOptions {
  /** Any non-empty string for servers that ignore it (Ollama, vLLM, llama.cpp). */
  apiKey: string;
  /** `OPENAI_BASE_URL`, up to and including `/v1`; the SDK's default (api.openai.com) when absent. */
  baseUrl?: string | null;
  model: string;
  /** Per attempt: to the full body, or for a stream to its opening and then between chunks. */
  timeoutMs: number;
  logger: Logger;
  metrics: UpstreamMetrics;
  /** The circuit breaker's time and HTTP-date Retry-After. @default systemClock */
  clock?: Clock;
  /** Backoff jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /** CHAT_MAX_COMPLETION_TOKENS: the cap sent with every request. @default 1024 */
  maxCompletionTokens?: number;
}

/**
 * The request field that caps a reply's length at this server. OpenAI's own API takes
 * `max_completion_tokens` (its reasoning models refuse the deprecated `max_tokens`); the servers
 * that speak its API elsewhere (Ollama, LM Studio, llama.cpp, vLLM, gateways) all take `max_tokens`,
 * and some ignore `max_completion_tokens`, which would leave the reply uncapped.
 */
export function completionCapField(
  baseUrl: string | null | undefined,
): "max_completion_tokens" | "max_tokens" {
  if (!baseUrl) return "max_completion_tokens";
  try {
    return new URL(baseUrl).hostname === "api.openai.com" ? "max_completion_tokens" : "max_tokens";
  } catch {
    return "max_tokens";
  }
}

/** When an upstream reports no usage: the prompt as one text, estimated like everywhere else. */
function estimatePromptTokens(messages: readonly ChatMessage[]): number {
  return estimateTokens(messages.map((message) => message.content).join(""));
}

/** A failed attempt, classified: may it be retried, and what does the breaker learn from it. */
interface AttemptFailure {
  kind: UpstreamFailureKind;
  retryable: boolean;
  /** Does this failure say the upstream is unwell (breaker failure) or merely refused us. */
  upstreamFault: boolean;
  status?: number;
  reason: string;
  headers?: Headers;
  /** A refusal of what the message says (UpstreamFailure.ofContent). */
  ofContent?: boolean;
  /** No answer (or no whole error body) within the attempt's timeout. */
  timedOut?: boolean;
}

/**
 * How long to wait before attempt `attempt + 1`, or why not to. The upstream's own wait wins when
 * it sends one (`retry-after-ms`, then `retry-after` in seconds or as an HTTP date).
 */
export function retryDelay(
  attempt: number,
  headers: Headers | undefined,
  now: number,
  random: () => number,
): { kind: "wait"; ms: number } | { kind: "give_up"; retryAfterSeconds: number } {
  const asked = requestedWaitMs(headers, now);
  if (asked !== undefined) {
    if (asked > MAX_RETRY_WAIT_MS) {
      return { kind: "give_up", retryAfterSeconds: toldWait(asked) };
    }
    return {
      kind: "wait",
      ms: Math.min(MAX_RETRY_WAIT_MS, Math.round(asked * (1 + 0.1 * random()))),
    };
  }
  const exponential = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1));
  return { kind: "wait", ms: Math.round(exponential / 2 + (exponential / 2) * random()) };
}

/** The wait an upstream asked for, in milliseconds, if it asked for a usable one. */
export function requestedWaitMs(headers: Headers | undefined, now: number): number | undefined {
  const ms = headers?.get("retry-after-ms");
  if (ms && /^\d+(\.\d+)?$/.test(ms.trim())) return Number(ms.trim());
  return retryAfterMs(headers?.get("retry-after"), now);
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("This operation was aborted", "AbortError");
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * How an upstream refuses a request for what it holds (its text, its size): the upstream up, and any
 * user able to cause them, so answered 422 and counted apart (`refused`), never paging anyone as an
 * outage. A 413 or 422 says so by its status; a 400 only by its error code, since OpenRouter and
 * LiteLLM answer a wrong model 400 too (probe 57a F1: every turn told to change its message, and
 * nothing paged). A 401, 403, 404 or any other 400 (a wrong key, model or URL) fails every request
 * alike: 502.
 */
const SIZE_REFUSAL_STATUSES = new Set([413, 422]);
/** The 400 codes that name what the message says (UpstreamFailure.ofContent). */
const TEXT_REFUSAL_CODES = new Set([
  "content_filter",
  "content_policy_violation",
  "invalid_prompt",
  // Alibaba DashScope's content inspection of the input or output (probe 88d F2).
  "data_inspection_failed",
]);
/**
 * Portkey's "guardrail checks failed, request denied" (446), and 451, which gateways answer a
 * blocked content with: a policy on the message's text (a PII check, a banned word), any user's to
 * cause, so a refusal of the text, never the upstream's failure (probe 88d F2: five such from three
 * accounts opened the circuit for everyone; 88g F4 for 451) — unless it names a quota or a rate
 * limit (88f F2, 88g F2).
 */
const TEXT_REFUSAL_STATUSES: ReadonlySet<number> = new Set([446, 451]);
/** The 400 codes that name its size, or a setting that may be the deployment's. */
const SIZE_REFUSAL_CODES = new Set(["context_length_exceeded", "string_above_max_length"]);

/** What a refusal of the request is of (its text, its size), or null when it is none. */
function refusalOf(error: APIError & { status: number }): "text" | "size" | null {
  const code = error.status === 400 && typeof error.code === "string" ? error.code : null;
  if (code !== null && TEXT_REFUSAL_CODES.has(code)) return "text";
  // One naming a quota or a rate limit is the gateway's account, not the text (probe 88f F2).
  if (TEXT_REFUSAL_STATUSES.has(error.status)) return namesAFailure(error) ? null : "text";
  if (SIZE_REFUSAL_STATUSES.has(error.status)) return "size";
  return refusalByCode(code);
}

/**
 * Whether an error names a rate limit, a quota or an overload: by its code or type (a name, or a
 * status such as 429 or 503), read in its body one level in as well (probe 88g F2: a numeric code
 * and a nested body were not read).
 */
function namesAFailure(error: APIError): boolean {
  const body: unknown = error.error;
  const inner = isRecord(body) && isRecord(body.error) ? body.error : undefined;
  const values: unknown[] = [error.code, error.type];
  for (const record of [body, inner]) {
    if (isRecord(record)) values.push(record.code, record.type, record.status);
  }
  return values.some((value) => {
    const name = streamedName(value);
    if (name !== null && isFailureName(name)) return true;
    const status = streamedStatus(value);
    return status !== null && (status >= 500 || STREAMED_LATER_STATUSES.has(status));
  });
}

/** A code or type that names a rate limit, a quota or an overload, in any of their spellings. */
function isFailureName(name: string): boolean {
  return STREAMED_FAILURE_NAMES.has(name) || /quota|rate_?limit|overload/.test(name);
}

function refusalByCode(code: string | null): "text" | "size" | null {
  if (code === null) return null;
  if (TEXT_REFUSAL_CODES.has(code)) return "text";
  return SIZE_REFUSAL_CODES.has(code) ? "size" : null;
}

/**
 * What an error event sent once the stream had begun (a 200, then `data: {"error": {...}}`;
 * LiteLLM, vLLM, TGI and other gateways do), which the SDK throws with no status, says:
 *
 * - `text` or `size`: a refusal of what the request holds, as the same refusal before a stream
 *   is, never the upstream's failure (probes 86b F1, 86e F2, 87a F3: such turns opened the
 *   circuit for everyone): a refusal's code or type in any case, a 413 or 422 as `code` or
 *   `status` (a number or its digits: LiteLLM sends `"400"`, vLLM `400`), TGI's
 *   `Input validation error: …` (a bare string, its type beside it);
 * - `rejected`: the upstream turned the request away (the key, the model, the URL, the account:
 *   401, 403, 404, a 400 naming no refusal, `invalid_request_error`, or a code that names one),
 *   502 as that answer before a stream is, and proof the upstream is up (probe 87a F4: a model not
 *   found was taken for a refusal);
 * - null: a failure, counted by the circuit: a 5xx or any other 4xx (402 out of credit, 408, 409,
 *   410, 425, 429), a code naming an overload, a quota or a rate limit (whatever else it says), or
 *   anything unrecognised.
 *
 * A nested `{"error": {"error": {...}}}` is read one level in, and format characters (a zero-width
 * space) are not part of a name.
 */
function streamedRefusalOf(error: unknown): "text" | "size" | "rejected" | null {
  if (!(error instanceof APIError) || error.status !== undefined) return null;
  const outer: unknown = error.error;
  const body = isRecord(outer) && isRecord(outer.error) ? outer.error : outer;
  if (typeof body === "string") return TGI_VALIDATION.test(body.trim()) ? "size" : null;
  if (!isRecord(body)) return null;
  // Both levels of a nested body are read (probe 88g F3: the outer 402 of {"status": 402, "error":
  // {"code": "content_filter"}} was dropped), and `status_code` as `status`.
  const levels = outer === body ? [body] : [body, outer as Record<string, unknown>];
  const names = levels
    .flatMap((level) => [level.code, level.type])
    .map(streamedName)
    .filter((name) => name !== null);
  const statuses = levels
    .flatMap((level) => [level.code, level.status, level.status_code])
    .map(streamedStatus)
    .filter((code) => code !== null);
  if (
    names.some(isFailureName) ||
    // A status that answers no request is a failure: every 5xx and "not now" among them.
    statuses.some((status) => !ANSWERED_STATUSES.has(status))
  ) {
    return null;
  }
  if (
    names.some((name) => REJECTED_NAMES.has(name)) ||
    statuses.some((status) => REJECTED_STATUSES.has(status))
  ) {
    return "rejected";
  }
  for (const name of names) {
    const refusal = refusalByCode(name);
    if (refusal !== null) return refusal;
  }
  // As the same status before the stream: 413 and 422 refuse the request's size; a 400 naming no
  // refusal, or a request the upstream calls invalid, is turned away (a wrong model behind
  // LiteLLM, billing off at Gemini: probe 87e F3 found them told to every user as theirs to
  // reword; Mistral's too-long prompt, 87e F4); any other 4xx is the upstream's failure (a 402 out
  // of credit, a 410 model gone: 87c F5).
  if (statuses.length > 0) {
    if (statuses.every((status) => TEXT_REFUSAL_STATUSES.has(status))) return "text";
    if (statuses.every((status) => SIZE_REFUSAL_STATUSES.has(status))) return "size";
    return statuses.every((status) => status === 400) ? "rejected" : null;
  }
  return names.some((name) => INVALID_REQUEST_NAMES.has(name)) ? "rejected" : null;
}

/** The types an upstream names a request it finds invalid by (OpenAI, Ollama; Mistral). */
const INVALID_REQUEST_NAMES: ReadonlySet<string> = new Set([
  "invalid_request_error",
  "invalid_request_message_error",
]);

/** TGI's refusal of an input too long (or otherwise invalid), sent as a bare string. */
const TGI_VALIDATION = /^input validation error\b/i;
/** Codes and types an error event names a failure by: counted, whatever else it says. */
const STREAMED_FAILURE_NAMES: ReadonlySet<string> = new Set([
  "rate_limit_exceeded",
  "rate_limit_error",
  "insufficient_quota",
  "server_error",
  "api_error",
  "overloaded_error",
  "service_unavailable",
  "timeout",
]);
/** Codes and types of an upstream that is up and turned the request away for its own reasons. */
const REJECTED_NAMES: ReadonlySet<string> = new Set([
  "invalid_api_key",
  "authentication_error",
  "permission_error",
  "permission_denied",
  "model_not_found",
  "not_found_error",
]);
const REJECTED_STATUSES: ReadonlySet<number> = new Set([401, 403, 404]);
/**
 * The statuses that are an answer to this request (a refusal, or the request turned away), before
 * a stream or in one; any other (402 out of credit, 410 model gone) is a failure whatever code
 * beside it names a refusal (probe 88f F2: `data_inspection_failed` with a 402 was a 422).
 */
const ANSWERED_STATUSES: ReadonlySet<number> = new Set([
  400,
  ...REJECTED_STATUSES,
  ...SIZE_REFUSAL_STATUSES,
  ...TEXT_REFUSAL_STATUSES,
]);
/** "Not now" (NOT_NOW_STATUSES) and 409 Conflict: the upstream's state, not the request's. */
const STREAMED_LATER_STATUSES: ReadonlySet<number> = new Set([...NOT_NOW_STATUSES, 409]);

/** A code or type as a name: text, without format characters, trimmed, in lower case. */
function streamedName(value: unknown): string | null {
  if (typeof value !== "string") return null;
  const name = value
    .replace(/\p{Cf}/gu, "")
    .trim()
    .toLowerCase();
  return name === "" ? null : name;
}

/** A code or status as an HTTP status: a whole number 100-599, or its three digits. */
function streamedStatus(value: unknown): number | null {
  const digits = typeof value === "string" ? value.replace(/\p{Cf}/gu, "").trim() : null;
  const status = digits !== null && /^\d{3}$/.test(digits) ? Number(digits) : value;
  return typeof status === "number" && Number.isInteger(status) && status >= 100 && status < 600
    ? status
    : null;
}

/**
 * The text a stream chunk's choice adds to the reply: its content, or the model's refusal, which
 * OpenAI streams in `delta.refusal` as it answers it in `message.refusal` (the JSON answer showed
 * the refusal, the stream an empty reply, stored and charged: probe 60b F4). Empty when neither.
 */
function deltaText(choice: Record<string, unknown>): string {
  if (!isRecord(choice.delta)) return "";
  const { content, refusal } = choice.delta;
  if (typeof content === "string" && content !== "") return content;
  // Mistral's reasoning models stream a list: `thinking` parts, then the answer's `text` parts
  // (probe 70e F1: the answer was dropped, never progress, never charged).
  const parts = Array.isArray(content) ? textParts(content) : "";
  if (parts !== "") return parts;
  return typeof refusal === "string" ? refusal : "";
}

/** The answer's text in a `content` list: its `text` parts, joined. */
function textParts(content: unknown[]): string {
  return partsText(content, (part) => (part.type === "text" ? [part.text] : []));
}

/** The fields one server or another streams a model's reasoning in, as plain text. */
const REASONING_FIELDS = ["reasoning_content", "reasoning", "thinking"] as const;

/** The `text` (or `summary`) of each part of a list, joined: OpenRouter's `reasoning_details`. */
function partsText(parts: unknown[], ofPart: (part: Record<string, unknown>) => unknown[]): string {
  let text = "";
  for (const part of parts) {
    if (!isRecord(part)) continue;
    for (const value of ofPart(part)) if (typeof value === "string") text += value;
  }
  return text;
}

/**
 * The model's reasoning in a stream chunk's delta, once for each shape a server streams it in:
 * `reasoning_content` (DeepSeek, vLLM, llama.cpp), `reasoning` (Ollama, OpenRouter, newer vLLM),
 * `thinking`, OpenRouter's `reasoning_details` (the same text again, as `reasoning.text` or
 * `reasoning.summary` parts) and Mistral's `thinking` parts of a `content` list. Servers send one
 * text in several of them at once (OpenRouter, vLLM during its rename), so they are alternatives of
 * one another, never summed (probe 70c F2: OpenRouter's reasoning was charged nine times over).
 */
function reasoningShapes(delta: Record<string, unknown>): string[] {
  const shapes: string[] = [];
  for (const field of REASONING_FIELDS) {
    const value = delta[field];
    if (typeof value === "string") shapes.push(value);
  }
  if (Array.isArray(delta.reasoning_details)) {
    shapes.push(partsText(delta.reasoning_details, (part) => [part.text, part.summary]));
  }
  if (Array.isArray(delta.content)) {
    shapes.push(
      partsText(delta.content, (part) =>
        part.type !== "thinking"
          ? []
          : Array.isArray(part.thinking)
            ? [partsText(part.thinking, (inner) => [inner.text])]
            : [part.thinking],
      ),
    );
  }
  return shapes;
}

/**
 * The characters of the model's reasoning a stream chunk's choice carries (`reasoningShapes`, the
 * longest of them). Never shown, but billed: an upstream that reports no usage, or a turn that ends
 * before its usage, is charged them by estimate (probes 69f F2, 70a F3).
 */
function reasoningCharacters(choice: Record<string, unknown>): number {
  if (!isRecord(choice.delta)) return 0;
  return (
    Math.max(0, ...reasoningShapes(choice.delta).map((shape) => shape.length)) +
    toolCallText(choice.delta).length
  );
}

/**
 * The text of the tool calls a delta streams (`tool_calls[].function`, the older `function_call`):
 * Palisade asks for none, but a gateway may answer with them, and what the model generated is
 * billed, and is progress, like its reasoning; never the reply (probe 80c F2: 50 KB of them were
 * charged nothing, and the empty reply was stored as an answer).
 */
function toolCallText(delta: Record<string, unknown>): string {
  const calls = Array.isArray(delta.tool_calls) ? delta.tool_calls : [delta.function_call];
  let text = "";
  for (const call of calls) {
    const called = isRecord(call) && isRecord(call.function) ? call.function : call;
    if (!isRecord(called)) continue;
    if (typeof called.name === "string") text += called.name;
    if (typeof called.arguments === "string") text += called.arguments;
  }
  return text;
}

/**
 * The choice of a chunk that is the reply: the one with index 0 (or none). Palisade asks for one
 * choice; an upstream that sends others (`n`, or a server that numbers them its own way) had their
 * text joined into the reply (probe 89f F4).
 */
function replyChoice(chunk: Record<string, unknown>): unknown {
  if (!Array.isArray(chunk.choices)) return undefined;
  return chunk.choices.find(
    (choice) => isRecord(choice) && (choice.index === 0 || choice.index === undefined),
  );
}

/** The characters of reply and of reasoning a chunk's choice carries. */
function generatedCharacters(chunk: unknown): number {
  const choice = isRecord(chunk) ? replyChoice(chunk) : undefined;
  return isRecord(choice) ? reasoningCharacters(choice) + deltaText(choice).length : 0;
}

/** The characters generated in the chunks read of a stream. */
function generatedIn(read: readonly IteratorResult<unknown>[]): number {
  let characters = 0;
  for (const next of read) if (!next.done) characters += generatedCharacters(next.value);
  return characters;
}

/**
 * What a half-open circuit's trial had the upstream generate, once it has its verdict: what it read
 * until its answer, or until it failed (its failure's count).
 */
function billedByTrial(trial: Promise<{ read: IteratorResult<unknown>[] }>): Promise<number> {
  return trial.then(
    ({ read }) => generatedIn(read),
    (failure) => (failure instanceof UpstreamFailure ? (failure.billedCharacters ?? 0) : 0),
  );
}

/**
 * Whether a stream chunk answers, as a half-open trial is decided: text of the reply that shows
 * something (a leading `"\n"`, which many servers send first, decided it: an upstream that sent
 * one and then stalled had the circuit closed at every trial, probe 82j F1; so did a zero-width
 * space, 82k F3), or its finish.
 */
function answers(chunk: unknown): boolean {
  const choice = isRecord(chunk) ? replyChoice(chunk) : undefined;
  if (!isRecord(choice)) return false;
  return showsSomething(deltaText(choice)) || finishes(choice);
}

/**
 * Whether a choice carries the reply's finish: a non-empty `finish_reason` that does not say the
 * reply was not finished. An empty one is none: some servers send `""` on every chunk before the
 * last, and read as a finish, a stream cut after them was a whole answer, stored complete (probe
 * 82h F3); a half-open trial closed the circuit on it (82h F1). Nor is vLLM's `abort` (its engine
 * dropped the request: shutdown, scale-down), an `error`, a cancellation or the text `null`: read as
 * finishes, an upstream aborting every request closed the circuit at each trial and was never
 * counted a failure, and a reply it cut part-way was a 200 stored whole (probe 82k F1, F2). Any
 * other reason, one OpenAI does not document included (TGI's `eos_token`), is the upstream's finish.
 */
function finishes(choice: Record<string, unknown>): boolean {
  return isFinish(finishReason(choice));
}

/** `finishes`, given the reason as `finishReason` reads it. */
function isFinish(reason: string | null): reason is string {
  return reason !== null && reason !== "" && !UNFINISHED.has(reason);
}

/**
 * A choice's `finish_reason` as compared: with nothing in it that shows nothing (space, zero-width
 * characters: probe 82m F1) and in lower case (`LENGTH`, Gemini's `MAX_TOKENS` passed through by a
 * gateway, were not read as the cap's cut: probe 82l F2), or null when it has none.
 */
function finishReason(choice: Record<string, unknown>): string | null {
  const reason = choice.finish_reason;
  return typeof reason === "string" ? visiblePart(reason).toLowerCase() : null;
}

/**
 * The reasons that say the reply was not finished: the upstream gave up on it (vLLM's `abort` when
 * its engine drops a request, a cancellation, an error, a timeout; `null` and `None` written as
 * text). Named whole, not by how they begin: Cohere's `ERROR_TOXIC` is its filter's cut and
 * `ERROR_LIMIT` its context's, which one user's messages bring about (probe 82m F2). A list, as
 * every such list is, of the names met so far (probes 82k F1, 82l F1, 82m F1).
 */
const UNFINISHED = new Set([
  "abort",
  "aborted",
  "cancel",
  "cancelled",
  "canceled",
  "user_cancel",
  "error",
  "failed",
  "failure",
  "interrupted",
  "timeout",
  "timed_out",
  "null",
  "none",
]);

/**
 * Whether a stream chunk carries anything of the answer: text of the reply, of its refusal or of
 * its reasoning that is not only whitespace, a finish OpenAI documents, or the usage's counts.
 * Chunks with nothing in them do not end the upstream's silence: one sent just inside the timeout
 * held a turn open for as long as the event bound let it, weeks (probe 56a note).
 */
function progresses(chunk: unknown): boolean {
  if (!isRecord(chunk)) return false;
  return readUsage(chunk.usage) !== undefined || carriesWork(chunk);
}

/**
 * Whether a chunk carries something the model produced (`progresses` but the usage): what extends a
 * half-open trial's wait for its answer.
 */
function carriesWork(chunk: Record<string, unknown>): boolean {
  const choice = replyChoice(chunk);
  if (!isRecord(choice)) return false;
  const reason = finishReason(choice);
  if (reason !== null && FINISHES.has(reason)) return true;
  if (!isRecord(choice.delta)) return false;
  const { content, refusal } = choice.delta;
  // Only what the answer is made of: a role, an unknown field, an empty list or object is not
  // (probe 57a F3: each of them held a turn as the empty chunks had). Reasoning is, in every shape
  // it is counted in (probe 70c F1: a model reasoning in `reasoning_details` timed out mid-thought).
  const parts = Array.isArray(content) ? textParts(content) : undefined;
  return [
    content,
    parts,
    refusal,
    ...reasoningShapes(choice.delta),
    toolCallText(choice.delta),
  ].some((value) => typeof value === "string" && showsSomething(value));
}

/** The finishes OpenAI's API documents: any other (an empty one) is no finish. */
const FINISHES = new Set(["stop", "length", "content_filter", "tool_calls", "function_call"]);

/** `work`, or the caller's abort as soon as `signal` aborts (the work goes on). */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** Why the bounded fetch refused an answer (bounded-fetch.ts), or undefined for any other error. */
function refusedAnswer(error: unknown): string | undefined {
  if (error instanceof UpstreamTooLarge) return "reply longer than its cap";
  if (error instanceof UpstreamEncodingRefused)
    return "answer compressed though asked for identity";
  return undefined;
}

/** What an SDK error means for us. Reasons are ours: the upstream's message is never kept. */
function classify(error: unknown): AttemptFailure {
  const refused = refusedAnswer(error);
  if (refused !== undefined) {
    // The same upstream would send the same again: not retried.
    return { kind: "bad_response", retryable: false, upstreamFault: true, reason: refused };
  }
  if (error instanceof APIConnectionTimeoutError || error instanceof UpstreamBodyTimeout) {
    return {
      kind: "unavailable",
      retryable: true,
      upstreamFault: true,
      reason: "timeout",
      timedOut: true,
    };
  }
  if (error instanceof APIConnectionError) {
    return {
      kind: "unavailable",
      retryable: true,
      upstreamFault: true,
      reason: "connection failed",
    };
  }
  if (error instanceof APIError && typeof error.status === "number") {
    const status = error.status;
    const headers = error.headers instanceof Headers ? error.headers : undefined;
    // "Not now" rather than "no", and a conflict (the OpenAI SDK retries one too): a 409 or 425
    // was a refusal, 502 "unusable answer" and never tried again (probe 84i F1).
    if (NOT_NOW_STATUSES.has(status) || status === 409 || status >= 500) {
      const reason = status === 429 ? "rate limited by upstream" : `upstream status ${status}`;
      return { kind: "unavailable", retryable: true, upstreamFault: true, status, reason, headers };
    }
    const refusal = refusalOf(error as APIError & { status: number });
    // The statuses that show the upstream up and answering this request (as in a stream,
    // streamedRefusalOf): any other 4xx (a 402 out of credit, a 410 model gone) is its failure,
    // counted, where before a stream it was taken as proof the upstream was up, so an account out
    // of credit never opened the circuit and every turn reached it (probe 88a F3).
    const answered =
      ANSWERED_STATUSES.has(status) && !(TEXT_REFUSAL_STATUSES.has(status) && namesAFailure(error));
    return {
      // A refusal of what the request holds is the client's to change (422); any other (a wrong
      // key, model or URL) fails every request alike (502).
      kind: refusal !== null ? "refused" : "bad_response",
      retryable: false,
      upstreamFault: refusal === null && !answered,
      status,
      reason: `upstream refused the request (status ${status})`,
      ofContent: refusal === "text",
    };
  }
  return {
    kind: "bad_response",
    retryable: false,
    upstreamFault: true,
    reason: "unexpected error",
  };
}

/** Said of a timeout the circuit breaker does not count: the upstream was busy, not down. */
const WHILE_BUSY =
  "; another stream progressed meanwhile (busy upstream, not counted by the circuit breaker)";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Past this a reported count is not a count of tokens (1e308 is an integer too). */
const MAX_REPORTED_TOKENS = 100_000_000;

function isCount(value: unknown): value is number {
  return (
    typeof value === "number" &&
    Number.isSafeInteger(value) &&
    value >= 0 &&
    value <= MAX_REPORTED_TOKENS
  );
}

/**
 * A reported count, or the estimate where the report cannot be a count of that text: none, or
 * under a fortieth of the estimate, more than 160 characters a token (OpenAI's tokenizers' longest
 * tokens, runs of spaces or dashes, hold 128; a server that always says 0 or 1 would switch the
 * budget off).
 */
function believed(reported: number | undefined, estimate: number): number {
  return reported !== undefined && reported * 40 >= estimate && (reported > 0 || estimate === 0)
    ? reported
    : estimate;
}

/**
 * Tokens a prompt template and an upstream's own instructions may add to the messages: a chat
 * template's markers are a few tokens a message, a model's default system prompt tens, a
 * gateway's added context (search results) a few thousand.
 */
const TOKENS_PER_MESSAGE = 16;
const ADDED_PROMPT_TOKENS = 32_768;

/**
 * The most prompt tokens the messages can be: a token is at least one byte of text, and a UTF-16
 * unit at most three bytes of UTF-8, plus what a template and the upstream add. A count past it is
 * not one of this prompt (probe 70e: 99,999,999 a turn was shown to the client and counted in
 * `chat_tokens_total`); the turn is charged the ceiling, as a completion is charged its cap.
 */
function promptCeiling(messages: readonly ChatMessage[]): number {
  let units = 0;
  for (const message of messages) units += message.content.length;
  return units * 3 + messages.length * TOKENS_PER_MESSAGE + ADDED_PROMPT_TOKENS;
}

/**
 * What a turn is charged: the upstream's usage where it can be the usage of this text, the
 * estimate where not, and never more completion tokens than the request allowed (the cap it
 * carried).
 */
function chargedUsage(
  reported: TokenUsage | undefined,
  messages: readonly ChatMessage[],
  generated: number,
  maxCompletionTokens: number,
): TokenUsage {
  return {
    promptTokens: Math.min(
      promptCeiling(messages),
      believed(reported?.promptTokens, estimatePromptTokens(messages)),
    ),
    completionTokens: Math.min(
      maxCompletionTokens,
      believed(reported?.completionTokens, estimateTokensOf(generated)),
    ),
  };
}

/**
 * The longest reply kept, in characters: the completion cap asks the upstream for at most that
 * many tokens, and no token holds more than 128 characters (OpenAI's longest, runs of spaces or
 * dashes); past it the upstream is not keeping to the cap, and what it sends is not stored, shown
 * or held in memory without bound. At 32 characters a token, a reply of long tokens the user asked
 * for ("print lines of 80 '='", within the cap) failed as the upstream's fault, and five opened the
 * circuit for everyone (probe 82d F2).
 */
export function replyBound(maxCompletionTokens: number): number {
  return Math.max(65_536, maxCompletionTokens * LONGEST_TOKEN_CHARACTERS);
}

const LONGEST_TOKEN_CHARACTERS = 128;
/** Characters a token of ordinary text holds at most on average: what bytes and events are sized by. */
const TEXT_TOKEN_CHARACTERS = 32;

export interface UpstreamBounds {
  /** Bytes of an error's JSON body, or of one line of a stream. */
  bodyBytes: number;
  /** Bytes of a whole stream. */
  streamBytes: number;
  /** Events of a stream (chunks the SDK hands over). */
  streamEvents: number;
}

/**
 * What an upstream keeping to the cap can send for one reply: its text at 32 characters a token
 * with every character escaped as `\uXXXX` (six bytes) or spent on a reasoning field beside it, and
 * 1 MiB of envelope (ids, usage); in a stream, each event carries at least one character (of the
 * reply or of its reasoning), plus the role, finish and usage chunks, each event at most a few
 * hundred bytes. A reply of the longest tokens (runs of one character, a byte each, one token an
 * event) is well within these; sized by them, the bytes held for a turn would be four times as many.
 */
export function upstreamBounds(maxCompletionTokens: number): UpstreamBounds {
  const chars = Math.max(65_536, maxCompletionTokens * TEXT_TOKEN_CHARACTERS);
  const bodyBytes = chars * 8 + 1024 * 1024;
  return { bodyBytes, streamBytes: bodyBytes * 16, streamEvents: chars + 1024 };
}

/** The upstream's usage when it is well-formed, else undefined. */
function readUsage(value: unknown): TokenUsage | undefined {
  if (!isRecord(value)) return undefined;
  const { prompt_tokens: prompt, completion_tokens: completion } = value;
  if (!isCount(prompt) || !isCount(completion)) return undefined;
  return { promptTokens: prompt, completionTokens: completion };
}

/**
 * The finish of a reply the upstream's output filter withheld (Azure OpenAI answers it 200 with no
 * content): a refusal of the request's content, like its 400, not an unusable answer. As a 502 and
 * a breaker failure, five at once from one user opened the circuit for everyone (probe 57a F5).
 */
const CONTENT_FILTERED = new Set([
  "content_filter",
  "content_filtered",
  "safety",
  "recitation",
  "prohibited_content",
  "blocklist",
  "spii",
  "guardrail_intervened",
  "error_toxic",
]);
/**
 * The finish of a reply the completion cap (`max_completion_tokens`), or the model's context, ended
 * part-way, in the names OpenAI, Gemini, Mistral, Cohere, the Responses API and Anthropic's
 * `pause_turn` give it (probe 82m F3: these were stored as whole answers).
 */
const CAPPED = new Set([
  "length",
  "max_tokens",
  "max_output_tokens",
  "model_length",
  "error_limit",
  "pause_turn",
]);
/** A reply the content filter withheld whole: a refusal of what the message says. */
function withheldReply(): UpstreamFailure {
  const failure = new UpstreamFailure("refused", "reply withheld by the upstream's content filter");
  failure.ofContent = true;
  return failure;
}

export function createOpenAiProvider(options: OpenAiProviderOptions): ChatProvider {
  const { model, timeoutMs, logger, metrics } = options;
  const clock = options.clock ?? systemClock;
  const random = options.random ?? Math.random;
  const maxCompletionTokens = options.maxCompletionTokens ?? 1024;
  const maxReplyChars = replyBound(maxCompletionTokens);
  const bounds = upstreamBounds(maxCompletionTokens);
  const cap = { [completionCapField(options.baseUrl)]: maxCompletionTokens };
  const client = new OpenAI({
    apiKey: options.apiKey,
    baseURL: options.baseUrl ?? undefined,
    timeout: timeoutMs,
    maxRetries: 0,
    logLevel: "off",
    fetch: boundedFetch({
      bodyBytes: bounds.bodyBytes,
      streamBytes: bounds.streamBytes,
      bodyDeadlineMs: timeoutMs,
    }),
    // The configured URL is where a conversation may go (https in production). A redirect
    // re-sent it, system prompt and history, to the host it named, over any scheme (fetch drops
    // only Authorization across origins; probe 43b note): refused as the Graph client refuses
    // one, a connection failure.
    fetchOptions: { redirect: "error" },
  });
  /**
   * When a stream of this process last received something of an answer. A request that timed out
   * while another made progress met an upstream that is up but busy (one that serves a request at
   * a time, queueing the others without an answer): no failure for the circuit breaker, which one
   * user's parallel long answers otherwise opened for everyone (probe 69e F2); and no success
   * either (re-probe 69f F1: one stream trickling for minutes beside an upstream that answered no
   * new request kept resetting the count), but said in its log line. A trial is never judged busy.
   */
  let lastProgressAt = Number.NEGATIVE_INFINITY;
  const othersProgressedSince = (at: number) => lastProgressAt > at;
  /** The breaker's verdict on a failed request: none when the upstream was only busy. */
  const verdictOf = (upstreamFault: boolean, busy: boolean) =>
    busy ? "none" : upstreamFault ? "failure" : "success";

  const breaker = new CircuitBreaker({
    clock,
    onStateChange(state, previous) {
      metrics.circuitOpen.labels(PROVIDER).set(state === "closed" ? 0 : 1);
      const line = { provider: PROVIDER, model, state, previous };
      if (state === "open") logger.error(line, "chat upstream circuit opened");
      else logger.info(line, "chat upstream circuit changed state");
    },
  });
  metrics.circuitOpen.labels(PROVIDER).set(0);

  function logFailure(
    failure: UpstreamFailure,
    requestId: string | undefined,
    attempts: number,
    status?: number,
  ) {
    const line = {
      requestId: requestId ?? null,
      provider: PROVIDER,
      model,
      upstreamStatus: status ?? null,
      attempts,
      kind: failure.kind,
      reason: failure.reason,
    };
    if (failure.kind === "bad_response") logger.error(line, "chat upstream failed");
    else logger.warn(line, "chat upstream failed");
    failure.logged = true;
  }

  /** Takes a breaker permit, or throws (and logs) the refusal. */
  function admit(requestId: string | undefined, caller: string | undefined): CircuitPermit {
    const decision = breaker.acquire(caller);
    if (decision.kind === "allowed") return decision.permit;
    const failure = new UpstreamFailure("unavailable", "circuit open", decision.retryAfterSeconds);
    logFailure(failure, requestId, 0);
    throw failure;
  }

  function observe(startedAt: number) {
    metrics.requestDuration.labels(PROVIDER).observe((performance.now() - startedAt) / 1000);
  }

  /** Ends a logical request in failure: the breaker's verdict, one log line, the error to throw. */
  function fail(
    permit: CircuitPermit,
    failure: UpstreamFailure,
    verdict: "failure" | "success" | "none",
    context: { requestId: string | undefined; attempts: number; status?: number },
  ): UpstreamFailure {
    if (verdict === "failure") permit.failure();
    else if (verdict === "success") permit.success();
    else permit.release();
    logFailure(failure, context.requestId, context.attempts, context.status);
    return failure;
  }

  /**
   * The caller went away before the request ended. The breaker is told nothing: a request is one
   * call with its retries, and its caller's leaving must not turn an attempt the retry would have
   * mended into a failure (five impatient callers of a recovering upstream opened the circuit for
   * everyone: re-probe 15d F1). An attempt that had failed by then is still said: one log line for
   * the request, and the failed attempts are counted (`upstream_attempt_failures_total`), so an
   * outage whose clients give up before the retries end still shows.
   */
  function abandoned(
    permit: CircuitPermit,
    signal: AbortSignal | undefined,
    abort: unknown,
    lastFailed: AttemptFailure | null,
    failedAttempts: number,
    requestId: string | undefined,
  ): unknown {
    permit.release();
    if (lastFailed !== null) {
      const failure = new UpstreamFailure(
        lastFailed.kind,
        `${lastFailed.reason}; the caller left before the request ended`,
      );
      logFailure(failure, requestId, failedAttempts, lastFailed.status);
    }
    return signal?.aborted ? abortReason(signal) : abort;
  }

  /**
   * Runs `attempt` (one HTTP request) up to MAX_ATTEMPTS times and returns its value, or throws the
   * request's UpstreamFailure (logged, breaker told) or the caller's abort (see `abandoned`).
   * Failed attempts are observed here; a successful one is observed by its caller, which knows
   * when the response ends.
   */
  async function withRetries<T>(
    permit: CircuitPermit,
    signal: AbortSignal | undefined,
    requestId: string | undefined,
    attempt: () => Promise<T>,
  ): Promise<{ value: T; attempts: number }> {
    let lastFailed: AttemptFailure | null = null;
    // Whether every attempt so far was answered with an error status (nothing generated, nothing
    // billed); a timeout or a cut connection may have been billed.
    let everyAttemptRefused = true;
    for (let attempts = 1; ; attempts++) {
      const startedAt = performance.now();
      let failed: AttemptFailure;
      try {
        return { value: await attempt(), attempts };
      } catch (error) {
        observe(startedAt);
        if (signal?.aborted) {
          throw abandoned(permit, signal, error, lastFailed, attempts - 1, requestId);
        }
        failed = classify(error);
      }
      metrics.attemptFailures.labels(PROVIDER, failed.kind).inc();
      lastFailed = failed;
      if (failed.status === undefined) everyAttemptRefused = false;
      let retryAfterSeconds: number | undefined;
      // A half-open circuit's trial is one attempt: its verdict is owed soon, and every other
      // caller is refused while it runs.
      if (failed.retryable && attempts < (permit.trial ? 1 : MAX_ATTEMPTS)) {
        const delay = retryDelay(attempts, failed.headers, clock.now(), random);
        if (delay.kind === "wait") {
          try {
            await sleep(delay.ms, signal);
          } catch (abort) {
            const left = abandoned(permit, signal, abort, failed, attempts, requestId);
            // Left while waiting, with nothing in flight: when every attempt was refused with a
            // status, the upstream billed nothing, and the turn is not charged (probe 26e F5).
            throw everyAttemptRefused ? new UnbilledAbort(left) : left;
          }
          continue;
        }
        retryAfterSeconds = delay.retryAfterSeconds;
      } else {
        const asked = requestedWaitMs(failed.headers, clock.now());
        if (asked !== undefined) retryAfterSeconds = toldWait(asked);
      }
      const busy = !permit.trial && failed.timedOut === true && othersProgressedSince(startedAt);
      if (busy) metrics.busyTimeouts.labels(PROVIDER).inc();
      const failure = new UpstreamFailure(
        failed.kind,
        busy ? `${failed.reason}${WHILE_BUSY}` : failed.reason,
        retryAfterSeconds,
      );
      failure.ofContent = failed.ofContent === true;
      throw fail(permit, failure, verdictOf(failed.upstreamFault, busy), {
        requestId,
        attempts,
        status: failed.status,
      });
    }
  }

  function toRequest(messages: readonly ChatMessage[]) {
    return messages.map((message) => ({ role: message.role, content: message.content }));
  }

  /**
   * A turn answered whole (the JSON route, WhatsApp): read from the upstream as a stream all the
   * same, and handed on once it has finished. Asked as a JSON reply, an upstream generating a long
   * answer slowly (a local model on a CPU: 1,024 tokens at 20 a second) was a timeout when the
   * whole body took longer than `timeoutMs`, retried twice and counted a failure: one user asking
   * for long answers opened the circuit for everyone, and kept it open by taking each trial, while
   * each such turn cost the upstream three generations and its owner nothing (probe 69b F1, F2).
   * As a stream, only silence is a timeout (as for a streamed turn), a generation that progresses
   * runs to its end (within the stream's bound), and a trial is decided by its first answer.
   * A request that fails, or whose caller leaves, once the upstream opened its answer says what it
   * generated (`billedCharacters`, set by `stream`): the upstream bills it, and so does the turn.
   */
  async function complete(
    messages: readonly ChatMessage[],
    opts: CompletionOptions = {},
  ): Promise<Completion> {
    let text = "";
    let end: Extract<Delta, { kind: "usage" }> | undefined;
    for await (const delta of stream(messages, opts)) {
      if (delta.kind === "usage") end = delta;
      else if (delta.kind === "text") text += delta.text;
    }
    // A stream that ends without throwing has given its usage last.
    const { usage, cut } = end!;
    return cut ? { text, usage, cut } : { text, usage };
  }

  async function* stream(
    messages: readonly ChatMessage[],
    opts: CompletionOptions = {},
  ): AsyncGenerator<Delta> {
    const { signal, requestId, caller } = opts;
    if (signal?.aborted) throw abortReason(signal);
    const permit = admit(requestId, caller);
    // Our own abort, for a stream gone silent or a consumer that stopped reading; the caller's
    // signal is joined to it, except for a half-open circuit's trial (see `trialStream`).
    const own = new AbortController();
    let callers = permit.trial ? undefined : signal;
    const joined = callers ? AbortSignal.any([callers, own.signal]) : own.signal;
    let startedAt = performance.now();
    const trialStarted = startedAt;
    let settled = false;
    // A trial's verdict is `trialStream`'s to give until it returns; the stream then ends as any
    // other.
    let awaitingTrial = permit.trial;
    try {
      const opened = withRetries(permit, callers, requestId, () => {
        startedAt = performance.now();
        return client.chat.completions.create(
          {
            model,
            messages: toRequest(messages),
            stream: true,
            stream_options: { include_usage: true },
            ...cap,
          },
          { signal: joined },
        );
      });
      const trial = permit.trial
        ? trialStream(opened, permit, own, signal, requestId, trialStarted)
        : undefined;
      const { iterator, read, attempts } = trial
        ? await untilAborted(trial, signal).catch((error) => {
            // Left while the trial still reads for its verdict: charged what the trial reads
            // until then, when it has it (probe 70a F1: it was the prompt alone).
            if (!signal?.aborted) throw error;
            throw new AbortedMidReply(error, billedByTrial(trial));
          })
        : await opened.then(({ value, attempts }) => ({
            iterator: value[Symbol.asyncIterator]() as AsyncIterator<unknown>,
            read: [] as IteratorResult<unknown>[],
            attempts,
          }));
      awaitingTrial = false;
      if (permit.trial && signal) {
        // Decided: from now on the caller's leaving, or the shutdown, ends it as any other stream.
        callers = signal;
        signal.addEventListener("abort", () => own.abort(), { once: true });
        if (signal.aborted) own.abort();
      }
      const pending = read;
      let text = "";
      // Characters received beside the text (reasoning): billed, so counted into an estimate.
      let reasoning = 0;
      let finished = false;
      let usage: TokenUsage | undefined;
      let idle = false;
      let events = 0;
      let filtered = false;
      let capped = false;
      // The upstream's silence since its last chunk with something in it (progresses).
      let silentMs = 0;
      // When this stream last progressed (or opened): another's progress after it is another's.
      let silentSince = performance.now();
      // However it trickles: a second a capped token, after the timeout (probe 57a F3: a space or
      // a reasoning character every 29 s kept the silence timer from ever firing).
      const streamEndsBy = performance.now() + timeoutMs + maxCompletionTokens * 1000;
      let broken: string | undefined;
      let complete = false;
      let refusedInStream: "text" | "size" | "rejected" | null = null;
      while (true) {
        // Only the upstream's silence is timed, not the time our consumer takes with a delta.
        const waitStarted = performance.now();
        const timer = setTimeout(
          () => {
            idle = true;
            own.abort();
          },
          Math.max(0, Math.min(timeoutMs - silentMs, streamEndsBy - waitStarted)),
        );
        let next: IteratorResult<unknown>;
        try {
          next = pending.shift() ?? (await iterator.next());
        } catch (error) {
          refusedInStream = streamedRefusalOf(error);
          if (refusedInStream !== null) break;
          broken =
            refusedAnswer(error) ??
            (error instanceof SyntaxError
              ? "malformed chunk"
              : error instanceof APIError && error.status === undefined
                ? "error event in stream"
                : "stream cut");
          break;
        } finally {
          clearTimeout(timer);
        }
        if (next.done) break;
        if (progresses(next.value)) {
          silentMs = 0;
          lastProgressAt = performance.now();
          silentSince = lastProgressAt;
        } else silentMs += performance.now() - waitStarted;
        if (++events > bounds.streamEvents) {
          broken = "stream longer than its cap";
          break;
        }
        const chunk = next.value;
        if (!isRecord(chunk)) {
          broken = "malformed chunk";
          break;
        }
        // A count is the turn's only once the reply has finished, in the finish's chunk or after
        // it: one sent earlier (a prompt's alone, a running total) charged a fraction of a reply
        // the upstream then went silent on (probe 90m F3).
        const finishedBefore = finished;
        const chunkUsage = readUsage(chunk.usage);
        const choice = replyChoice(chunk);
        // Only the usage is read after the reply's first finish: text after it was appended (probe
        // 89f F4), reasoning after it charged up to the completion cap (89g F3), and a later finish
        // marked a whole reply cut (89g F2; 69e F4 the other way).
        if (isRecord(choice) && !finished) {
          const thought = reasoningCharacters(choice);
          if (thought > 0) {
            reasoning += thought;
            yield { kind: "reasoning", characters: thought };
          }
          const delta = deltaText(choice);
          if (delta !== "") {
            if (text.length + delta.length > maxReplyChars) {
              broken = "reply longer than its cap";
              break;
            }
            text += delta;
            yield { kind: "text", text: delta };
          }
          const reason = finishReason(choice);
          if (isFinish(reason)) {
            finished = true;
            // Once cut by the filter, cut: a later finish does not make the reply whole (69e F4).
            if (CONTENT_FILTERED.has(reason)) filtered = true;
            // Cut at the completion cap (CHAT_MAX_COMPLETION_TOKENS) mid-sentence: a fragment too,
            // stored as one (probe 80c F1: it was stored as a whole answer).
            if (CAPPED.has(reason)) capped = true;
          }
        }
        if (finished && chunkUsage !== undefined) usage = chunkUsage;
        // Finished, and a count came in a chunk after the finish's (OpenAI's last): the turn is
        // over, whatever the upstream does next. Waiting for its `[DONE]`, an upstream that held
        // the connection turned a whole reply into a timeout, a failure (probe 90k F2). Not at a
        // count in the finish's own chunk: a running total there was followed by the final one.
        if (finishedBefore && chunkUsage !== undefined) {
          complete = true;
          break;
        }
      }
      // A stream left mid-way (a malformed chunk, a reply past its cap), or past its end: the
      // upstream stops sending.
      if (broken !== undefined || complete) own.abort();
      observe(startedAt);
      // The SDK ends a stream quietly when its request is aborted: find out whose abort it was (a
      // trial's caller is not joined: the trial's end is its verdict whatever the caller did).
      // The stream had opened: the upstream bills the prompt and what it generated.
      const generated = text.length + reasoning;
      if (callers?.aborted) throw new AbortedMidReply(abortReason(callers), generated);
      let failure: UpstreamFailure | undefined;
      // Silent after the reply's finish, with no count yet: the reply is whole, charged its
      // estimate; the silence is no failure of the upstream's to count (probe 90k F2).
      const stalled = idle && !finished;
      const busy = stalled && !permit.trial && othersProgressedSince(silentSince);
      if (busy) metrics.busyTimeouts.labels(PROVIDER).inc();
      if (stalled)
        failure = new UpstreamFailure("unavailable", `timeout mid-stream${busy ? WHILE_BUSY : ""}`);
      else if (refusedInStream === "rejected") {
        failure = new UpstreamFailure(
          "bad_response",
          "upstream rejected the request in its stream",
        );
      } else if (refusedInStream !== null) {
        failure = new UpstreamFailure("refused", "upstream refused the request in its stream");
        failure.ofContent = refusedInStream === "text";
      } else if (broken) failure = new UpstreamFailure("bad_response", broken);
      else if (!finished)
        failure = new UpstreamFailure("bad_response", "stream cut before a finish_reason");
      // Finished with no text: a refusal of this message. Withheld whole by the content filter,
      // of what it says. Otherwise (only tool calls, a reasoning model that spent its cap
      // thinking, a model told to say nothing) no answer to show or keep as history, where it was
      // stored as one (probe 80c F2); the upstream answered what it was asked, and as a bad
      // response five from one user opened the circuit for everyone (probe 80d F1). Cut by the
      // filter part-way: kept, and said to be cut (stored incomplete), so the history does not
      // hold a fragment as a whole answer (probe 69b F3).
      else if (text === "")
        failure = filtered ? withheldReply() : new UpstreamFailure("refused", "reply with no text");
      settled = true;
      if (failure) {
        // Opened, then silent or cut, however early: the prompt was billed (probe 70a F2).
        failure.billedCharacters = generated;
        metrics.attemptFailures.labels(PROVIDER, failure.kind).inc();
        // Rejected in the stream (the key, the model): up, as a 4xx before the stream proves it.
        const upstreamFault = failure.kind !== "refused" && refusedInStream !== "rejected";
        throw fail(permit, failure, verdictOf(upstreamFault, busy), {
          requestId,
          attempts,
          status: 200,
        });
      }
      permit.success();
      if (attempts > 1) {
        const line = { requestId: requestId ?? null, provider: PROVIDER, model, attempts };
        logger.info(line, "chat upstream answered after a retry");
      }
      const charged = chargedUsage(usage, messages, text.length + reasoning, maxCompletionTokens);
      yield filtered || capped
        ? { kind: "usage", usage: charged, cut: true }
        : { kind: "usage", usage: charged };
    } finally {
      // A consumer that stops reading, or a caller abort: close the upstream request, no verdict
      // (a trial's was given at its first chunk, or is still awaited by `trialStream`, which
      // closes the request itself once it has it).
      if (!settled && !awaitingTrial) {
        own.abort();
        permit.release();
      }
    }
  }

  /**
   * A half-open circuit's trial stream, to its verdict: opened in one attempt, and decided by the
   * first chunk that answers (text, or a finish) — success — or by failing to give one within
   * `timeoutMs` of the attempt's start or of its last piece of reasoning (silence, empty, usage or
   * role-only chunks, an error, a cut): failure (re-probe 15h F1, F3); still reasoning past twice
   * `timeoutMs`, success. It is not joined to its caller, who may leave at any time and is
   * answered its abort at once: the trial still owes everyone its verdict, so a caller cannot free
   * it undecided to take and leave again (re-probes 15e F2, 15f F1); and it never runs past its
   * answer for that verdict (re-probe 15g F1). A caller who left by then has the request closed;
   * what was read before the answer is handed on to be relayed.
   */
  async function trialStream(
    opened: Promise<{ value: AsyncIterable<unknown>; attempts: number }>,
    permit: CircuitPermit,
    own: AbortController,
    caller: AbortSignal | undefined,
    requestId: string | undefined,
    startedAt: number,
  ): Promise<{
    iterator: AsyncIterator<unknown>;
    read: IteratorResult<unknown>[];
    attempts: number;
  }> {
    const { value, attempts } = await opened;
    const iterator = value[Symbol.asyncIterator]();
    let late = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waitUntil = (at: number) => {
      clearTimeout(timer);
      timer = setTimeout(
        () => {
          late = true;
          own.abort();
        },
        Math.max(0, at - performance.now()),
      );
    };
    waitUntil(startedAt + timeoutMs);
    // Reasoning is the upstream at work: it extends the wait for the answer as it extends a turn's
    // (a trial that waited for text from its start failed on a healthy reasoning model, and a
    // user whose prompts made it think past the timeout held the circuit open for everyone:
    // probe 82d F1), without deciding it (decided by it, an upstream that reasons once and then
    // fails every request had the circuit closed at each trial: probe 82h F2). Still reasoning
    // past twice the timeout, it is up: the trial succeeds, so no prompt holds the circuit
    // half-open, everyone else refused, for longer than that and one silence.
    const thinksLongEnoughAt = startedAt + 2 * timeoutMs;
    const read: IteratorResult<unknown>[] = [];
    let tooLong = false;
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) throw new Error("ended before it answered");
        // Held until the trial's verdict: bounded as a stream's events are (probe 69e F3: 2.4
        // million empty events held 450 MB).
        if (read.length >= bounds.streamEvents) {
          tooLong = true;
          own.abort();
          throw new Error("longer than its cap");
        }
        read.push(next);
        if (answers(next.value)) break;
        if (isRecord(next.value) && carriesWork(next.value)) {
          const now = performance.now();
          if (now >= thinksLongEnoughAt) break;
          waitUntil(now + timeoutMs);
        }
      }
    } catch (error) {
      // An error event is read as in any stream (streamedRefusalOf): a refusal of the request's
      // text or size, or the upstream turning it away (a key, a model), is an answer, so the trial
      // shows the upstream up. Counted as a failed trial, one user's refused text held the circuit
      // open for everyone (probe 88a F2).
      const inStream = tooLong || late ? null : streamedRefusalOf(error);
      const failure =
        inStream === "rejected"
          ? new UpstreamFailure("bad_response", "upstream rejected the request in its stream")
          : inStream !== null
            ? new UpstreamFailure("refused", "upstream refused the request in its stream")
            : tooLong
              ? new UpstreamFailure("bad_response", "stream longer than its cap")
              : late
                ? new UpstreamFailure("unavailable", "no answer within the timeout")
                : new UpstreamFailure("bad_response", "stream cut before it answered");
      if (inStream === "text" || inStream === "size") failure.ofContent = inStream === "text";
      // Opened: the prompt and what was read are billed (probe 70a F1: a failed trial's reasoning
      // was charged nothing).
      failure.billedCharacters = generatedIn(read);
      metrics.attemptFailures.labels(PROVIDER, failure.kind).inc();
      // A trial that gave no answer never closes the circuit, however busy the upstream is with
      // streams begun before it opened (re-probe 69f F1).
      const verdict = inStream === null ? "failure" : "success";
      throw fail(permit, failure, verdict, { requestId, attempts, status: 200 });
    } finally {
      clearTimeout(timer);
    }
    permit.success();
    if (caller?.aborted) own.abort();
    return { iterator, read, attempts };
  }

  return { name: PROVIDER, maxCompletionTokens, complete, stream };
}
