/**
 * @module
 * What a chat provider is: the one seam between conversations and whatever writes the replies
 * (the OpenAI-compatible upstream, or the offline FAQ responder). Framework-free; the chat feature
 * picks one provider from configuration (`providers/index.ts`).
 */

export type ChatRole = "system" | "user" | "assistant";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

export interface CompletionOptions {
  /** Aborts the upstream request (a client that went away, a shutdown). */
  signal?: AbortSignal;
  /** Logged with upstream failures, so an operator can find the request. */
  requestId?: string;
  /**
   * Who asked (`user:<id>`, `key:<id>`, `whatsapp:<hash>`): the circuit breaker opens only on
   * failures of more than one caller, so no one caller's requests open it for everyone.
   */
  caller?: string;
}

export interface Completion {
  text: string;
  usage: TokenUsage;
  /** The upstream's content filter cut the reply part-way: `text` is not the whole answer. */
  cut?: boolean;
}

/**
 * One piece of a streamed reply: text as it arrives, then the usage once, at the end (with `cut`
 * when the upstream's content filter ended the reply part-way). What a model streams beside the
 * reply's text (its reasoning, in whatever field) is counted as it arrives, never shown or kept:
 * the upstream bills it, so a turn that ends before its usage is charged it (probe 69f F2).
 */
export type Delta =
  | { kind: "text"; text: string }
  | { kind: "reasoning"; characters: number }
  | { kind: "usage"; usage: TokenUsage; cut?: boolean };

export interface ChatProvider {
  /** `openai` or `offline`: the label of the provider's metrics. */
  readonly name: string;
  /**
   * The most completion tokens one reply can cost: the cap sent upstream, or the offline
   * provider's longest answer. Every turn reserves it against the daily budget before the call.
   */
  readonly maxCompletionTokens: number;
  complete(messages: readonly ChatMessage[], options?: CompletionOptions): Promise<Completion>;
  stream(messages: readonly ChatMessage[], options?: CompletionOptions): AsyncIterable<Delta>;
}

/**
 * Why the upstream could not answer. `unavailable` (the circuit is open, or retries ran out on
 * 429/5xx/connection errors/timeouts) answers 503 so clients back off; `bad_response` (malformed
 * JSON, a stream cut mid-way, a non-retryable refusal) answers 502.
 */
export type UpstreamFailureKind = "unavailable" | "bad_response" | "refused";

/**
 * The caller left while the provider waited to retry, every attempt having been refused with an
 * error status: the upstream generated, and bills, nothing. An abort like any other (`AbortError`),
 * for which the turn is not charged its prompt.
 */
export class UnbilledAbort extends Error {
  constructor(readonly reason: unknown) {
    super("The caller left before a billed attempt");
    this.name = "AbortError";
  }
}

/**
 * The caller left after the upstream had opened its answer: an abort like any other (`AbortError`),
 * for which the turn is charged its prompt and what the upstream generated, as a streamed turn cut
 * short is (probes 69e F1, 69f F2, 70a F1).
 */
export class AbortedMidReply extends Error {
  constructor(
    readonly reason: unknown,
    /**
     * The characters of reply and reasoning the upstream generated for the turn, which it bills;
     * a promise while a half-open circuit's trial the caller left still reads them.
     */
    readonly billedCharacters: number | Promise<number>,
  ) {
    super("The caller left while the reply was arriving");
    this.name = "AbortError";
  }
}

export class UpstreamFailure extends Error {
  constructor(
    readonly kind: UpstreamFailureKind,
    /** Safe to log: never the user's text, never a key. */
    readonly reason: string,
    /** Seconds a client should wait (an open circuit's remaining time, an upstream Retry-After). */
    readonly retryAfterSeconds?: number,
  ) {
    super(`upstream ${kind}: ${reason}`);
    this.name = "UpstreamFailure";
  }

  /**
   * For a refusal: whether the upstream named what the message says (its content filter or
   * policy), not its size nor a setting (a context too long for the model, a 413 or 422 that may
   * be the deployment's). The same text is refused again whatever is changed but the text.
   */
  ofContent = false;

  /**
   * Whether the provider has logged it already (with what only it knows: the model, the upstream's
   * status, the attempts): the chat service logs a failure only when no provider did, so each
   * failed request is one line.
   */
  logged = false;

  /**
   * Set when the upstream had opened its answer before the request failed (a stream gone silent or
   * cut, however early): it bills the prompt and the characters of reply and reasoning it had
   * generated, this many, and so is the turn, which stores none of it. Undefined when nothing was
   * billed (an error status, no answer at all).
   */
  billedCharacters: number | undefined = undefined;
}
