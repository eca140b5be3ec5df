/**
 * @module
 * The one place a chat provider is chosen from configuration: the OpenAI-compatible upstream when
 * OPENAI_API_KEY is set (any server speaking the API: OpenAI, Azure-compatible gateways, Ollama,
 * vLLM, llama.cpp, at OPENAI_BASE_URL), else the offline FAQ responder. A FAQ that cannot be read
 * or does not validate throws a ConfigError naming CHAT_FAQ_PATH, so the start refuses with one
 * line.
 */
import type { Registry } from "prom-client";
import type { Clock } from "../../../clock";
import type { Config } from "../../../config";
import type { Logger } from "../../../logging/logger";
import { loadFaq } from "./faq";
import { createUpstreamMetrics } from "./metrics";
import { createOfflineProvider } from "./offline";
import type { ChatMessage, ChatProvider, CompletionOptions } from "./provider";

export interface ChatProviderDeps {
  logger: Logger;
  /** For the upstream provider's metrics and breaker. */
  registry: Registry;
  clock: Clock;
}

export function createChatProvider(config: Readonly<Config>, deps: ChatProviderDeps): ChatProvider {
  const { apiKey, baseUrl, model, timeoutMs } = config.openai;
  if (apiKey) {
    const metrics = createUpstreamMetrics(deps.registry, "openai");
    // The SDK is loaded now, in the background, and only when it is used: a service without a key
    // never loads it (about 110 ms and 13 MB of a start).
    const loading = import("./openai").then(({ createOpenAiProvider }) =>
      createOpenAiProvider({
        apiKey,
        baseUrl,
        model,
        timeoutMs,
        maxCompletionTokens: config.chat.maxCompletionTokens,
        logger: deps.logger,
        clock: deps.clock,
        metrics,
      }),
    );
    // A failed load is answered by the first request that awaits it, not left unhandled.
    loading.catch(() => {});
    return loadedOnUse("openai", config.chat.maxCompletionTokens, () => loading);
  }
  return createOfflineProvider(loadFaq(config.chat.faqPath));
}

/** A provider whose implementation is awaited by each call (it is loaded once, in the background). */
function loadedOnUse(
  name: string,
  maxCompletionTokens: number,
  load: () => Promise<ChatProvider>,
): ChatProvider {
  return {
    name,
    maxCompletionTokens,
    async complete(messages: readonly ChatMessage[], options?: CompletionOptions) {
      return (await load()).complete(messages, options);
    },
    async *stream(messages: readonly ChatMessage[], options?: CompletionOptions) {
      yield* (await load()).stream(messages, options);
    },
  };
}
