/**
 * @module
 * The feature list. Each feature is a folder in `src/modules/` with one factory (see
 * `src/modules/feature.ts`); adding one is a line here. Privacy is built last, over what every
 * other feature contributes.
 */
import type { Core } from "./core";
import { adminFeature } from "./modules/admin/feature";
import { type AuthFeature, type AuthFeatureOptions, authFeature } from "./modules/auth/feature";
import { type ChatFeature, chatFeature } from "./modules/chat/feature";
import type { ChatProvider } from "./modules/chat/providers/provider";
import type { Feature } from "./modules/feature";
import { healthFeature } from "./modules/health/feature";
import { type PaymentsFeatureOptions, paymentsFeature } from "./modules/payments/feature";
import { type PrivacyFeature, privacyFeature } from "./modules/privacy/feature";
import { webhooksFeature } from "./modules/webhooks/feature";
import { type WhatsAppWebhookOptions, whatsappFeature } from "./modules/webhooks/whatsapp";
import { parsePrincipalRef } from "./plugins/auth/principal";

export interface FeatureOptions extends AuthFeatureOptions {
  /** Payments' tunables (how long a request waits for another with its Idempotency-Key). */
  payments?: PaymentsFeatureOptions;
  /** The chat provider; configuration picks it when absent (tests and the bench pass one). */
  chatProvider?: ChatProvider;
  /** Features beyond the list (a test plugs one in the way a new folder would be). */
  extraFeatures?: readonly Feature[];
  /** The WhatsApp webhook's chat, Graph fetch and worker timings (tests pass their own). */
  whatsapp?: Partial<WhatsAppWebhookOptions>;
  /** The migrations this start applied (`applyMigrations`'s `appliedNow`). */
  migratedNow?: readonly string[];
  /** How long storing a chat turn waits out another connection's lock (tests of one that stays). */
  chatStoreLockWaitMs?: number;
}

export interface Features {
  /** Every feature, in the order their routes are mounted. */
  list: readonly Feature[];
  /** The handles the CLI and the tests drive directly. */
  auth: AuthFeature;
  privacy: PrivacyFeature;
  /** The chat's turns, budgets and conversations (the WhatsApp webhook calls `chat.turns`). */
  chat: ChatFeature;
}

export function createFeatures(core: Core, options: FeatureOptions = {}): Features {
  const auth = authFeature(core, options);
  // Whether a principal reference still names an account (a user not erased). A request
  // authenticated just before its user's erasure — or, by a process not yet told, up to a second
  // after it — must not write the user's id or data again: asked inside the storing transaction.
  const accountStands = (reference: string): boolean => {
    const named = parsePrincipalRef(reference);
    return named?.kind !== "user" || auth.service.findUser(named.id) !== null;
  };
  const chat = chatFeature(core, {
    provider: options.chatProvider,
    // A turn stores its conversation only for an owner the account feature still has.
    ownerExists: (owner) => {
      if (owner.kind === "user") return auth.service.findUser(owner.id) !== null;
      if (owner.kind === "key") return auth.apiKeys.isActive(owner.id);
      return true;
    },
    migratedNow: options.migratedNow,
    storeLockWaitMs: options.chatStoreLockWaitMs,
  });
  const features: Feature[] = [
    healthFeature(core),
    auth,
    adminFeature(core, { apiKeys: auth.apiKeys, standing: auth.standing }),
    // An ownerless key's payments belong to the first key of its rotation chain, which may be
    // revoked while its successor pays: only an account is asked after.
    paymentsFeature(core, {
      ...options.payments,
      ownerStands: accountStands,
      standing: auth.standing,
    }),
    webhooksFeature(core),
    chat,
    whatsappFeature(core, { chat: chat.turns, ...options.whatsapp }),
    ...(options.extraFeatures ?? []),
  ];
  const privacy = privacyFeature(core, { account: auth.account, features });
  return { list: [...features, privacy], auth, privacy, chat };
}
