/**
 * @module
 * The feature list. Each feature is a folder in `src/modules/` with one factory (see
 * `src/modules/feature.ts`); adding one is a line here. Privacy is built last, over what every
 * other feature contributes.
 */
import type { Core } from "./core";
import { adminFeature } from "./modules/admin/feature";
import { type AuthFeature, type AuthFeatureOptions, authFeature } from "./modules/auth/feature";
import type { ChatTurns } from "./modules/chat/contract";
import type { Feature } from "./modules/feature";
import { healthFeature } from "./modules/health/feature";
import { type PaymentsFeatureOptions, paymentsFeature } from "./modules/payments/feature";
import { type PrivacyFeature, privacyFeature } from "./modules/privacy/feature";
import { webhooksFeature } from "./modules/webhooks/feature";
import { type WhatsAppWebhookOptions, whatsappFeature } from "./modules/webhooks/whatsapp";

export interface FeatureOptions extends AuthFeatureOptions {
  /** Payments' tunables (how long a request waits for another with its Idempotency-Key). */
  payments?: PaymentsFeatureOptions;
  /** Features beyond the list (a test plugs one in the way a new folder would be). */
  extraFeatures?: readonly Feature[];
  /** The WhatsApp webhook's chat, Graph fetch and worker timings (tests pass their own). */
  whatsapp?: Partial<WhatsAppWebhookOptions>;
}

/**
 * Until the chat feature lands on this branch, WhatsApp senders get a fixed notice as their reply;
 * at merge the chat feature's `turns` replace this (`whatsappFeature(core, { chat: chat.turns })`).
 */
const noticeOnlyChat: ChatTurns = {
  converse: async () => ({
    kind: "reply",
    turn: {
      conversationId: "",
      reply: "Thanks for your message! Our assistant is not available on WhatsApp yet.",
      usage: { promptTokens: 0, completionTokens: 0 },
    },
  }),
};

export interface Features {
  /** Every feature, in the order their routes are mounted. */
  list: readonly Feature[];
  /** The handles the CLI and the tests drive directly. */
  auth: AuthFeature;
  privacy: PrivacyFeature;
}

export function createFeatures(core: Core, options: FeatureOptions = {}): Features {
  const auth = authFeature(core, options);
  const features: Feature[] = [
    healthFeature(),
    auth,
    adminFeature(core, { apiKeys: auth.apiKeys }),
    paymentsFeature(core, options.payments),
    webhooksFeature(core),
    whatsappFeature(core, { chat: noticeOnlyChat, ...options.whatsapp }),
    ...(options.extraFeatures ?? []),
  ];
  const privacy = privacyFeature(core, { account: auth.account, features });
  return { list: [...features, privacy], auth, privacy };
}
