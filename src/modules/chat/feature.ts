/**
 * @module
 * The chat feature: `POST /api/chat` and the conversation routes, the daily budgets and their
 * admin view, the chat metrics, and what chat holds about a user. The provider is injected (the
 * app passes the one configuration picks, `providers/index.ts`; tests pass their own); `turns` is
 * what other features (the WhatsApp webhook) call for a turn with the same budget and storage.
 */
import type { Core } from "../../core";
import { createEndsInFlight } from "../../ends-in-flight";
import { keyChain } from "../../plugins/auth/lineage";
import type { Feature } from "../feature";
import { ChatBudget } from "./budget";
import type { ChatOwner, ChatTurns } from "./contract";
import { conversationTamperReporter, createChatSeal } from "./history-seal";
import { chatModule, chatRouteClasses } from "./index";
import { chatMetrics } from "./metrics";
import { chatContributor } from "./privacy";
import { createChatProvider } from "./providers";
import type { ChatProvider } from "./providers/provider";
import { ChatService } from "./service";

export interface ChatFeatureOptions {
  /** The provider; the one configuration picks when absent (offline without OPENAI_API_KEY). */
  provider?: ChatProvider;
  /** Whether a conversation's owner is still there (not erased, not revoked): see ChatService. */
  ownerExists?: (owner: ChatOwner) => boolean;
  /** The migrations this start applied (a recount follows the one that added the counts). */
  migratedNow?: readonly string[];
  /** How long storing a turn waits out another connection's lock (tests of a lock that stays). */
  storeLockWaitMs?: number;
}

/** The migration that added each conversation's message count. */
export const MESSAGE_COUNTS_MIGRATION = "0025_chat_message_counts";
/**
 * How long after that migration its process counts every conversation's messages again: by then
 * the processes of the older release have stopped (at their next maintenance tick, 10 s, then a
 * drain of 10 s and the outbox's wait for a lock, 30 s at most), and the turns they stored and the
 * messages their retention deleted in between, which they did not count, are counted.
 */
export const RECOUNT_AFTER_MIGRATION_MS = 2 * 60_000;

export interface ChatFeature extends Feature {
  turns: ChatTurns;
  service: ChatService;
  budget: ChatBudget;
}

export function chatFeature(core: Core, options: ChatFeatureOptions = {}): ChatFeature {
  const { config, db, clock, logger, audit, registry, errors } = core;
  const provider = options.provider ?? createChatProvider(config, { logger, registry, clock });
  const budget = new ChatBudget(db.$client, config.chat.dailyTokenBudget, {
    ownerExists: options.ownerExists,
    concurrentTurns: config.chat.concurrentTurns,
  });
  const metrics = chatMetrics(registry, provider.name);
  const service = new ChatService({
    sqlite: db.$client,
    provider,
    chat: config.chat,
    retentionDays: config.chatRetentionDays,
    clock,
    logger,
    audit,
    metrics,
    budget,
    // Keyed from AUDIT_SECRET_KEY like the outbox seal (webhooks/whatsapp.ts); the reporter's
    // memory of what it reported is this feature's, so each app (and test) has its own.
    seal: createChatSeal(config.audit.secretKey),
    reportTampered: conversationTamperReporter({ logger, audit }),
    ownerExists: options.ownerExists,
    storeLockWaitMs: options.storeLockWaitMs,
  });
  const inFlight = createEndsInFlight();
  let recountAt = options.migratedNow?.includes(MESSAGE_COUNTS_MIGRATION)
    ? clock.now() + RECOUNT_AFTER_MIGRATION_MS
    : null;
  return {
    name: "chat",
    turns: service,
    service,
    budget,
    routeClasses: chatRouteClasses,
    routes: ({ auth }) =>
      chatModule({
        auth,
        inFlight,
        service,
        budget,
        audit,
        errors,
        now: () => clock.now(),
        chainOf: (keyId, userId) => keyChain(db.$client, core.credentialSeal, keyId, userId),
      }),
    endInFlight: () => {
      inFlight.endAll();
      return service.storesSettled();
    },
    // The first mark at start, so that a process counts itself as reaching the database from
    // then on, not from its first maintenance run 10 s later (./reservations.ts).
    start: () => {
      try {
        budget.reclaim(clock.now());
      } catch (error) {
        logger.warn({ err: error }, "chat reservations: the first mark could not be written");
      }
    },
    maintenance: (now) => {
      if (recountAt !== null && now >= recountAt) {
        const corrected = service.recountMessages();
        recountAt = null;
        if (corrected > 0) {
          logger.warn(
            { conversations: corrected },
            "chat message counts corrected after the upgrade: turns stored or messages deleted by a process of the older release",
          );
        }
      }
      const reclaimed = budget.reclaim(now);
      if (reclaimed.turns === 0) return;
      metrics.reclaimed(reclaimed.turns);
      logger.warn(
        reclaimed,
        "chat reservations given back: turns of a process that stopped, or whose storing failed",
      );
    },
    privacy: [chatContributor(service)],
  };
}
