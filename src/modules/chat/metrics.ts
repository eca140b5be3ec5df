/**
 * @module
 * The chat metrics: `chat_requests_total{provider,outcome}` and `chat_tokens_total{kind}`. Made
 * once per registry (a second chat feature on the same registry gets the same counters).
 *
 * Outcomes: `ok` (a full reply), `incomplete` (the client went away, or the upstream cut the
 * stream after some text: what arrived was stored), `quota` (over the daily budget),
 * `concurrent` (the principal had CHAT_MAX_CONCURRENT_TURNS turns in flight already: 429),
 * `upstream_error` (the provider failed: 502/503), `not_found` (another's or no conversation),
 * `owner_gone` (the user was erased, or the key revoked, while the turn was prepared: 401),
 * `invalid` (a message the rules refuse), `error` (the provider failed unexpectedly: 500).
 *
 * `chat_reservations_reclaimed_total`: turns whose budget reservations the maintenance gave back
 * because their process stopped mid-turn (or their storing failed): a crash or a stalled process
 * shows here.
 */

import { METRIC } from "../../plugins/metrics/names";
import {
  counterIn,
  everyCombination,
  type Registry,
  startAtZero,
} from "../../plugins/metrics/prom";

export const CHAT_OUTCOMES = [
  "ok",
  "incomplete",
  "quota",
  "concurrent",
  "upstream_error",
  "not_found",
  "owner_gone",
  "invalid",
  "error",
] as const;
export type ChatOutcome = (typeof CHAT_OUTCOMES)[number];

export interface ChatMetrics {
  request(provider: string, outcome: ChatOutcome): void;
  tokens(promptTokens: number, completionTokens: number): void;
  reclaimed(turns: number): void;
}

const REQUESTS = METRIC.chatRequests;
const TOKENS = METRIC.chatTokens;
const RECLAIMED = METRIC.chatReservationsReclaimed;

/** `provider`: the provider's name, whose series start at 0 (every outcome). */
export function chatMetrics(registry: Registry, provider: string): ChatMetrics {
  const requests = counterIn<"provider" | "outcome">(registry, {
    name: REQUESTS,
    help: "Chat turns, by provider and outcome",
    labelNames: ["provider", "outcome"],
  });
  const tokens = counterIn<"kind">(registry, {
    name: TOKENS,
    help: "Chat tokens spent, by kind (prompt, completion)",
    labelNames: ["kind"],
  });
  const reclaimed = counterIn(registry, {
    name: RECLAIMED,
    help: "Chat turns whose budget reservations were given back: their process stopped mid-turn, or their storing failed",
  });
  startAtZero(requests, everyCombination({ provider: [provider], outcome: CHAT_OUTCOMES }));
  startAtZero(tokens, everyCombination({ kind: ["prompt", "completion"] }));
  return {
    request: (provider, outcome) => requests.inc({ provider, outcome }),
    reclaimed: (turns) => reclaimed.inc(turns),
    tokens(promptTokens, completionTokens) {
      if (promptTokens > 0) tokens.inc({ kind: "prompt" }, promptTokens);
      if (completionTokens > 0) tokens.inc({ kind: "completion" }, completionTokens);
    },
  };
}
