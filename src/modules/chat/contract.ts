/**
 * @module
 * What the chat feature offers other features (the WhatsApp webhook): one turn of a conversation
 * for an owner, with the same context, budget, storage and metrics as `POST /api/chat`.
 */
import type { TokenUsage } from "./providers/provider";

/**
 * Who a conversation belongs to: a user, an API key, or a WhatsApp sender (its number as a keyed
 * hash). Budgets are counted per owner.
 */
export interface ChatOwner {
  kind: "user" | "key" | "whatsapp";
  id: string;
  /**
   * A key's: the other keys of its rotation chain (plugins/auth/lineage `keyChain`), whose
   * conversations it reads, continues and deletes as its own; a new one is still its own id's.
   */
  chain?: readonly string[];
}

export interface ChatTurnInput {
  owner: ChatOwner;
  /** Already validated: 1..4000 characters after trimming, no control characters but \n and \t. */
  message: string;
  /** Continue this conversation (it must be the owner's); a new one when absent. */
  conversationId?: string;
  requestId: string;
  signal?: AbortSignal;
}

export interface ChatTurn {
  conversationId: string;
  reply: string;
  usage: TokenUsage;
}

/**
 * A turn's outcome as a value; upstream failures are thrown as UpstreamFailure, but for the
 * upstream's refusal of what the message says (`refused`: asking again gets the same answer).
 */
export type ChatTurnOutcome =
  | { kind: "reply"; turn: ChatTurn }
  /** The upstream refused the message for what it says (its content filter or policy). */
  | { kind: "refused" }
  | { kind: "not_found" }
  | { kind: "over_budget"; retryAfterSeconds: number }
  /** The owner has CHAT_MAX_CONCURRENT_TURNS turns in flight already: asking again later may pass. */
  | { kind: "too_many_turns" }
  /** The owner was erased (or its key revoked) while the turn was prepared: nothing is kept. */
  | { kind: "owner_gone" };

export interface ChatTurns {
  converse(input: ChatTurnInput): Promise<ChatTurnOutcome>;
}
