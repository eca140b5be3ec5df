/**
 * @module
 * The token estimate used wherever a count is needed before (or without) an upstream's own:
 * about one token per four characters, rounded up (OpenAI's rule of thumb for English). The
 * budget reserves it before a call, the context window is cut with it, and the offline provider
 * reports it as its usage.
 */
import type { ChatMessage } from "./providers/provider";

/** ⌈UTF-16 length / 4⌉; 0 for the empty string. */
export function estimateTokens(text: string): number {
  return estimateTokensOf(text.length);
}

/** The estimate of text known by its length alone (reasoning that is counted, never kept). */
export function estimateTokensOf(characters: number): number {
  return Math.ceil(characters / 4);
}

/** The prompt's estimate: the sum over its messages. */
export function estimatePromptTokens(messages: readonly ChatMessage[]): number {
  let total = 0;
  for (const message of messages) total += estimateTokens(message.content);
  return total;
}
