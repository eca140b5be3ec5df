/**
 * @module
 * The one place a chat provider is chosen from configuration: the offline FAQ responder when no
 * OPENAI_API_KEY is set. (The OpenAI-compatible provider, `./openai`, is chosen here when the key
 * is set; it lands on its own branch and is wired in at merge:
 * `createOpenAiProvider({ apiKey, baseUrl, model, timeoutMs, logger, clock,
 * metrics: createUpstreamMetrics(registry) })`.) A FAQ that cannot be read or does not validate
 * throws a ConfigError naming CHAT_FAQ_PATH, so the start refuses with one line.
 */
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Clock } from "../../../clock";
import type { Config } from "../../../config";
import { loadFaq } from "./faq";
import { createOfflineProvider } from "./offline";
import type { ChatProvider } from "./provider";

export interface ChatProviderDeps {
  logger: Logger;
  /** For the upstream provider's metrics and breaker. */
  registry: Registry;
  clock: Clock;
}

export function createChatProvider(config: Readonly<Config>, deps: ChatProviderDeps): ChatProvider {
  if (config.openai.apiKey) {
    deps.logger.warn(
      "OPENAI_API_KEY is set but this build has no OpenAI provider yet; answering from the FAQ",
    );
  }
  return createOfflineProvider(loadFaq(config.chat.faqPath));
}
