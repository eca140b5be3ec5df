/**
 * @module
 * The offline provider: answers from a FAQ (see faq.ts), deterministically, with no network and no
 * key. It is what `bun run start` serves without OPENAI_API_KEY, and a real choice for FAQ bots.
 *
 * Prompt-injection hygiene: it answers only with the FAQ's own text, chosen by the newest user
 * message. The system prompt and earlier messages are never read into a reply, and the user's
 * text is never echoed. Usage is the estimate (tokens ≈ characters / 4, see ../tokens.ts): the
 * prompt's over every message it was given, the completion's over the answer.
 */
import { estimatePromptTokens, estimateTokens } from "../tokens";
import { createFaqMatcher, type Faq } from "./faq";
import type { ChatMessage, ChatProvider, Completion, CompletionOptions, Delta } from "./provider";

export const OFFLINE_PROVIDER = "offline";

function throwIfAborted(signal: AbortSignal | undefined) {
  if (signal?.aborted) throw signal.reason ?? new DOMException("Aborted", "AbortError");
}

/** The answer split into word-sized pieces, each word with the whitespace after it. */
export function wordDeltas(text: string): string[] {
  return text.match(/\S+\s*|\s+/g) ?? [];
}

export function createOfflineProvider(faq: Faq): ChatProvider {
  const matcher = createFaqMatcher(faq);
  // Every reply is one of these texts, so the longest one's estimate bounds every completion.
  const maxCompletionTokens = Math.max(...matcher.replies().map((text) => estimateTokens(text)));
  const reply = (messages: readonly ChatMessage[]): Completion => {
    const question = messages.findLast((message) => message.role === "user")?.content ?? "";
    const text = matcher.answer(question).text;
    return {
      text,
      usage: {
        promptTokens: estimatePromptTokens(messages),
        completionTokens: estimateTokens(text),
      },
    };
  };
  return {
    name: OFFLINE_PROVIDER,
    maxCompletionTokens,
    async complete(messages, options: CompletionOptions = {}) {
      throwIfAborted(options.signal);
      return reply(messages);
    },
    async *stream(messages, options: CompletionOptions = {}): AsyncGenerator<Delta> {
      throwIfAborted(options.signal);
      const { text, usage } = reply(messages);
      for (const piece of wordDeltas(text)) {
        throwIfAborted(options.signal);
        yield { kind: "text", text: piece };
      }
      throwIfAborted(options.signal);
      yield { kind: "usage", usage };
    },
  };
}
