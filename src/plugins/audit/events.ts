/**
 * @module
 * What an audit event is, and which ones must never be lost.
 */

/**
 * Every audit event type, a closed list like the error codes: `AuditEvent.type` is this union, so
 * recording a type that is not listed here does not compile, and the log's readers (the admin
 * query's `type` filter, dashboards, alerts) can rely on the names.
 */
export const AUDIT_EVENT_TYPES = [
  // Sign-in, sessions and authorisation (must not be lost).
  "auth.register.succeeded",
  "auth.register.duplicate",
  "auth.login.succeeded",
  "auth.login.failed",
  "auth.login.locked",
  "auth.locked_out",
  "auth.lockout_lifted",
  "auth.refresh.succeeded",
  "auth.refresh.reused",
  "auth.logout",
  "auth.forbidden",
  // A credential row whose seal does not match (written into the file, not by Palisade), and the
  // rows an upgrade sealed (plugins/auth/seal.ts).
  "auth.credential_tampered",
  "auth.credentials_sealed",
  "auth.lineages_sealed",
  "auth.successors_sealed",
  // What admins did or looked at (must not be lost).
  "admin.key.created",
  "admin.key.revoked",
  "admin.key.narrowed",
  "admin.key.rotated",
  "admin.key.scopes_changed",
  "admin.keys.listed",
  "admin.audit.queried",
  "admin.blocks.listed",
  "admin.security.summarized",
  "admin.user.role_changed",
  "admin.sessions.ending",
  "admin.sessions.ended",
  "admin.usage.queried",
  // Addresses blocked and unblocked (must not be lost).
  "ip.blocked",
  "ip.unblocked",
  // A block row whose seal does not match (blocks nothing), and the rows an upgrade sealed
  // (plugins/ip-block/seal.ts; must not be lost).
  "ip.block_tampered",
  "ip.blocks_sealed",
  // Privacy rights exercised (must not be lost).
  "privacy.erased",
  // Payments: intents, their outcomes from Stripe, refunds and disputes (must not be lost).
  "payment.intent.created",
  "payment.succeeded",
  "payment.failed",
  "payment.canceled",
  // An admin's refund asked for, written with its claim before Stripe is asked; then what Stripe
  // made of it.
  "payment.refund.requested",
  "payment.refund",
  // One asked for and answered without a refund it made (refused, blocked by an earlier one,
  // answered with an earlier one), or whose refund Stripe may have made and did not say
  // (`undecided`: settled by the payment's next refund).
  "payment.refund.not_made",
  "payment.refund.undecided",
  // An operator's clearing of a payment's refunds whose outcome Stripe never told (the CLI).
  "payment.refund.undecided_cleared",
  "payment.refunded",
  "payment.dispute.created",
  // A payments row whose seal does not match (treated as absent), and the rows an upgrade sealed
  // (modules/payments/seal.ts, undecided-seal-upgrade.ts).
  "payment.tampered",
  "payment.ledger_sealed",
  "payment.undecided_sealed",
  // Webhook deliveries whose signature did not verify (batched: a flood must not cost a write each).
  "webhook.signature_failed",
  // Chat budgets: a turn refused over the daily budget (batched), an operator's reset.
  "chat.quota_exceeded",
  "chat.usage.reset",
  // A conversation whose row, or a message of it, does not match its seal (neither continued nor
  // shown), and the history an upgrade sealed (modules/chat/history-seal.ts; must not be lost).
  "chat.conversation_tampered",
  "chat.history_sealed",
  // Refusals by the pipeline (batched).
  "ratelimit.rejected",
  "request.rejected",
  "csrf.failed",
  // WhatsApp: senders over their own limit, replies given up (batched).
  "whatsapp.sender_limited",
  "whatsapp.reply_failed",
  // An outbox row whose seal does not match (never sent), and the rows an upgrade sealed
  // (modules/webhooks/outbox-seal.ts; must not be lost).
  "whatsapp.outbox_tampered",
  "whatsapp.outbox_sealed",
  // Where the rest of replies half sent before migration 0029 begins, sealed (outbox-offsets-upgrade.ts).
  "whatsapp.outbox_offsets_sealed",
  // The log itself, and refusals past the bound of those audited each (batched).
  "audit.chain.keyed",
  "audit.refusals_unrecorded",
  // The chain's head went back below one this process logged (log.ts, logHead): must not be lost.
  "audit.chain_went_back",
  // A trigger found in the database file and dropped (db/foreign-triggers.ts), a schema found
  // changed while running (db/schema-guard.ts), and rows sealed by an upgrade the file had already
  // been through (upgrade-sealing.ts); must not be lost.
  "db.trigger_dropped",
  "db.schema_changed",
  "db.resealed",
] as const;

export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/**
 * Types an earlier release wrote and this one no longer does (migration 0022 replaced the rotation
 * seal): their rows are still in older logs, and still found by type.
 */
const RETIRED_AUDIT_EVENT_TYPES = ["auth.rotations_sealed"] as const;

const RECORDED_TYPES: ReadonlySet<string> = new Set([
  ...AUDIT_EVENT_TYPES,
  ...RETIRED_AUDIT_EVENT_TYPES,
]);

/** Whether some release of Palisade writes rows of `type`: what a filter by type can find. */
export function isRecordedAuditType(type: string): boolean {
  return RECORDED_TYPES.has(type);
}

/**
 * The events that say someone wrote into the database file (a row failing its seal, a trigger, a
 * changed table, a second sealing): each pages (grafana/src/alerts.ts), whoever recorded it.
 */
export const TAMPER_EVENT_TYPES = [
  "auth.credential_tampered",
  "whatsapp.outbox_tampered",
  "chat.conversation_tampered",
  "payment.tampered",
  "ip.block_tampered",
  "db.trigger_dropped",
  "db.schema_changed",
  "db.resealed",
  "audit.chain_went_back",
] as const satisfies readonly AuditEventType[];

/**
 * The events that say a file went through an upgrade's sealing (upgrade-sealing.ts): a second one
 * of a kind is how a file put back into its shape before that sealing is seen (`db.resealed`). So
 * retention never leaves the log without one of each kind it holds (log.ts, prune).
 */
export const SEALING_EVENT_TYPES = [
  "auth.credentials_sealed",
  "whatsapp.outbox_sealed",
  "chat.history_sealed",
  "payment.ledger_sealed",
  "ip.blocks_sealed",
  "auth.lineages_sealed",
  "auth.successors_sealed",
  "payment.undecided_sealed",
  "whatsapp.outbox_offsets_sealed",
] as const satisfies readonly AuditEventType[];

export type SealingEventType = (typeof SEALING_EVENT_TYPES)[number];

/** A detail value that is a principal as written: `user:<id>`, `key:<id>`, `whatsapp:<id>`. */
const PRINCIPAL_VALUE = /^(user|key|whatsapp):/;

/** Detail fields that hold a bare id, and the kind of principal it is. */
const ID_FIELDS: ReadonlyMap<string, "user" | "key"> = new Map([
  ["user", "user"],
  ["userId", "user"],
  ["keyId", "key"],
  ["replacedBy", "key"],
]);

/** A row named by `table` and `id` (a credential or payment failing its seal): whose id it is. */
const TABLE_ID_KINDS: ReadonlyMap<string, "user" | "key"> = new Map([
  ["users", "user"],
  ["api_keys", "key"],
]);

/**
 * The principals a detail names, each with its field: a value written as a principal, a bare id
 * in a field that holds one (`keyId`, `replacedBy`, `user`, `userId`), or the `id` of a `users` or
 * `api_keys` row a detail names by `table`. What erasure rewrites in others' events, what the
 * export withholds of them, and what `audit_event_names` indexes.
 */
export function principalsNamed(detail: Readonly<Record<string, unknown>>): [string, string][] {
  const named: [string, string][] = [];
  const rowKind = typeof detail.table === "string" ? TABLE_ID_KINDS.get(detail.table) : undefined;
  for (const [field, value] of Object.entries(detail)) {
    if (typeof value !== "string" || value === "") continue;
    const kind = field === "id" ? rowKind : ID_FIELDS.get(field);
    if (kind !== undefined && !PRINCIPAL_VALUE.test(value)) named.push([field, `${kind}:${value}`]);
    else if (PRINCIPAL_VALUE.test(value)) named.push([field, value]);
  }
  return named;
}

/**
 * The detail with the fields naming a principal in `replaced` (by `principalsNamed`) set to what
 * it maps them to; a key's `name` goes (null) with its id, as its owner may have chosen it to name
 * themselves. The same object when nothing in it is replaced.
 */
export function withPrincipalsReplaced<Detail extends Record<string, unknown>>(
  detail: Detail,
  replaced: (principal: string) => string | null,
): Detail {
  let rewritten: Record<string, unknown> | undefined;
  for (const [field, principal] of principalsNamed(detail)) {
    const replacement = replaced(principal);
    if (replacement === null) continue;
    rewritten ??= { ...detail };
    rewritten[field] = replacement;
    if (field === "keyId" && "name" in rewritten) rewritten.name = null;
  }
  return (rewritten as Detail | undefined) ?? detail;
}

/**
 * The events whose address is the subject of the action (the address blocked or unblocked), not
 * the address the actor came from: someone else's, never handed out in the actor's export.
 */
export const SUBJECT_ADDRESS_TYPES = [
  "ip.blocked",
  "ip.unblocked",
] as const satisfies readonly AuditEventType[];

export type AuditOutcome = "success" | "failure" | "denied" | "info";

export type AuditDetail = Record<string, string | number | boolean | null>;

export interface AuditEvent {
  type: AuditEventType;
  outcome: AuditOutcome;
  actor?: string | null;
  ip?: string | null;
  route?: string | null;
  requestId?: string | null;
  detail?: AuditDetail;
  /** Milliseconds since the epoch; the log's clock when absent. */
  at?: number;
}

/**
 * Events written before the response is sent, in their own transaction: who logged in, what an
 * admin changed, what was paid, which address was blocked or unblocked, who was erased, a
 * WhatsApp outbox row refused or sealed, a chat conversation refused or the history sealed, a
 * trigger dropped. The rest are batched.
 */
export function mustNotLose(type: string): boolean {
  return (
    type.startsWith("auth.") ||
    type.startsWith("admin.") ||
    type.startsWith("payment.") ||
    type.startsWith("privacy.") ||
    type.startsWith("ip.") ||
    type.startsWith("db.") ||
    type === "audit.chain_went_back" ||
    type === "whatsapp.outbox_tampered" ||
    type === "whatsapp.outbox_sealed" ||
    type === "chat.conversation_tampered" ||
    type === "chat.history_sealed"
  );
}

const SECRET_KEY = /pass(word)?|secret|token|api[-_]?key|authorization|cookie|signature/i;
const MAX_DETAIL_VALUE = 256;

/**
 * The detail as stored: keys that name a secret are dropped whatever the caller passed, and long
 * strings are cut, so the audit log can be shown to an operator as it is.
 */
export function encodeDetail(detail: AuditDetail | undefined): string {
  if (!detail) return "{}";
  const safe: AuditDetail = {};
  for (const key of Object.keys(detail).sort()) {
    if (SECRET_KEY.test(key)) continue;
    const value = detail[key]!;
    safe[key] =
      typeof value === "string" && value.length > MAX_DETAIL_VALUE
        ? `${value.slice(0, MAX_DETAIL_VALUE)}…`
        : value;
  }
  return JSON.stringify(safe);
}
