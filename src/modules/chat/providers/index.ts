/**
 * @module
 * The one place a chat provider is chosen from configuration: the OpenAI-compatible upstream when
 * OPENAI_API_KEY is set (any server speaking the API: OpenAI, Azure-compatible gateways, Ollama,
 * vLLM, llama.cpp, at OPENAI_BASE_URL), else the offline FAQ responder. A FAQ that cannot be read
 * or does not validate throws a ConfigError naming CHAT_FAQ_PATH, so the start refuses with one
 * line.
 */
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Clock } from "../../../clock";
import type { Config } from "../../../config";
import { loadFaq } from "./faq";
import { createUpstreamMetrics } from "./metrics";
import { createOfflineProvider } from "./offline";
import { createOpenAiProvider } from "./openai";
import type { ChatProvider } from "./provider";

export interface ChatProviderDeps {
  logger: Logger;
  /** For the upstream provider's metrics and breaker. */
  registry: Registry;
  clock: Clock;
}

export function createChatProvider(config: Readonly<Config>, deps: ChatProviderDeps): ChatProvider {
  const { apiKey, baseUrl, model, timeoutMs } = config.openai;
  if (apiKey) {
    return createOpenAiProvider({
      apiKey,
      baseUrl,
      model,
      timeoutMs,
      maxCompletionTokens: config.chat.maxCompletionTokens,
      logger: deps.logger,
      clock: deps.clock,
      metrics: createUpstreamMetrics(deps.registry),
    });
  }
  return createOfflineProvider(loadFaq(config.chat.faqPath));
}
