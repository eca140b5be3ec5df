/**
 * @module
 * Every seal in a database file checked at once: what `db:verify` and `db:backup` run.
 *
 * The service checks a sealed row when it uses it, and refuses one that does not match (a
 * credential, a conversation, a payment, a block or a WhatsApp reply written into the file without
 * AUDIT_SECRET_KEY). A row nobody uses is never checked, so a file restored from a backup could hold
 * a planted change that shows only later, as an account that cannot sign in or a block that blocks
 * nothing (probe 30d F7). This reads every sealed row of every kind, as the service reads it, and
 * names each that does not match.
 *
 * What it cannot see: a row deleted (only the audit chain and a conversation's message chain show
 * that), and a whole older row put back, seal and all (a rollback of the file).
 */
import type { Database } from "bun:sqlite";
import { type ChatSeal, createChatSeal, type SealedMessage } from "./modules/chat/history-seal";
import {
  readableConversation,
  readableTime,
  type StoredConversation,
  unreadableUsage,
} from "./modules/chat/readable-columns";
import {
  createPaymentSeal,
  reportedIdempotencyKey,
  SEALED_PAYMENT_COLUMNS,
  type SealedIdempotencyKey,
  type SealedPayment,
} from "./modules/payments/seal";
import { createOutboxSeal, type SealedOutboxRow } from "./modules/webhooks/outbox-seal";
import { AuditKeys } from "./plugins/audit/chain";
import { erasedPrincipals } from "./plugins/audit/erased-principals";
import {
  createCredentialSeal,
  type SealedAccount,
  type SealedApiKey,
  type SealedFamily,
  type SealedRefreshToken,
} from "./plugins/auth/seal";
import { createBlockSeal, SEALED_BLOCK_COLUMNS, type SealedBlock } from "./plugins/ip-block/seal";

/** A row that does not match its seal: its table, its id as the service reports it, and what of it failed. */
export interface SealFinding {
  table: SweptTable;
  id: string;
  /**
   * What failed when it is not the row's own seal: `times` and `usage` are columns no seal covers
   * that hold what Palisade never writes, which the service reads as tampered or shows as no usage
   * (modules/chat/readable-columns.ts).
   */
  part?: "lineage" | "rotation_mark" | "chain" | "times" | "usage" | "erased";
}

export type SweptTable =
  | "users"
  | "api_keys"
  | "refresh_tokens"
  | "refresh_families"
  | "chat_conversations"
  | "chat_messages"
  | "payments"
  | "payment_idempotency_keys"
  | "whatsapp_outbox"
  | "ip_blocks";

/** Every table swept, in the order the sweep reads and reports them. */
export const SWEPT_TABLES: readonly SweptTable[] = [
  "users",
  "api_keys",
  "refresh_families",
  "refresh_tokens",
  "chat_conversations",
  "chat_messages",
  "payments",
  "payment_idempotency_keys",
  "whatsapp_outbox",
  "ip_blocks",
];

export interface SealSweep {
  /** Rows read, per table. */
  checked: Record<SweptTable, number>;
  /** Rows (or parts of rows) that failed, per table. */
  failed: Record<SweptTable, number>;
  /**
   * Of them, rows whose seal holds and that hold a time or count Palisade never writes (`times`,
   * `usage`): no seal covers those columns, so "does not match its seal" would not be true of them.
   */
  unreadable: number;
  /**
   * Of them, account rows, keys in force and conversations of a principal the audit log records
   * erased: their seal holds (copied back, seal and all, from before the erasure), and the service
   * refuses them (a conversation's owner can no longer sign in).
   */
  restored: number;
  /** The first `maxFindings` failures, in the order found. */
  findings: SealFinding[];
}

/** Failures named one by one; past them, counted. */
export const DEFAULT_MAX_FINDINGS = 100;
/** An id as named: a forged row's id can be any length. */
const NAMED_ID_LENGTH = 64;

/**
 * Reads every sealed row of `sqlite` (a migrated Palisade database) and checks it against the
 * seals keyed from `auditSecret`. Rows are streamed, never all held at once: a file of millions of
 * messages is checked in bounded memory.
 */
export function sweepSeals(
  sqlite: Database,
  auditSecret: string,
  options: { maxFindings?: number } = {},
): SealSweep {
  const maxFindings = options.maxFindings ?? DEFAULT_MAX_FINDINGS;
  const zero = () =>
    Object.fromEntries(SWEPT_TABLES.map((table) => [table, 0])) as Record<SweptTable, number>;
  const sweep: SealSweep = {
    checked: zero(),
    failed: zero(),
    unreadable: 0,
    restored: 0,
    findings: [],
  };
  const fail = (table: SweptTable, rawId: unknown, part?: SealFinding["part"]) => {
    sweep.failed[table]++;
    if (part === "times" || part === "usage") sweep.unreadable++;
    if (part === "erased") sweep.restored++;
    if (sweep.findings.length >= maxFindings) return;
    const id = namedId(rawId);
    sweep.findings.push(part === undefined ? { table, id } : { table, id, part });
  };
  /** Each row `select` reads, counted for `table`. */
  const each = <Row>(table: SweptTable, select: string, check: (row: Row) => void) => {
    for (const row of sqlite.query<Row, []>(select).iterate()) {
      sweep.checked[table]++;
      check(row);
    }
  };

  // Which of a credential's checks refused it: its seal, or its principal's erasure.
  let erasedFound = false;
  const erased = erasedPrincipals(sqlite, new AuditKeys(auditSecret));
  const credentials = createCredentialSeal(
    auditSecret,
    (_table, _id, part) => {
      erasedFound ||= part === "erased";
    },
    erased,
  );
  const credentialRefused = (intact: () => boolean): SealFinding["part"] | null => {
    erasedFound = false;
    if (intact()) return null;
    return erasedFound ? "erased" : undefined;
  };
  each<SealedAccount & { seal: string | null }>(
    "users",
    `SELECT id, email, email_key AS emailKey, password_hash AS passwordHash, role, seal
     FROM users ORDER BY id`,
    (row) => {
      const refused = credentialRefused(() => credentials.intact.account(row));
      if (refused !== null) fail("users", row.id, refused);
    },
  );
  each<
    SealedApiKey & {
      seal: string | null;
      lineage: string | null;
      lineageSeal: string | null;
      replacedBy: string | null;
      successorSeal: string | null;
    }
  >(
    "api_keys",
    `SELECT id, prefix, secret_hash AS secretHash, scopes, user_id AS userId,
       expires_at AS expiresAt, revoked_at AS revokedAt, origin, seal, lineage,
       lineage_seal AS lineageSeal, replaced_by AS replacedBy, successor_seal AS successorSeal
     FROM api_keys ORDER BY id`,
    (row) => {
      // One finding a row at most, the row's own seal first: a key whose own seal fails is refused
      // whatever its lineage says.
      const refused = credentialRefused(() => credentials.intact.apiKey(row));
      if (refused !== null) fail("api_keys", row.id, refused);
      else if (!credentials.intact.lineage(row)) fail("api_keys", row.id, "lineage");
      else if (!credentials.intact.successor(row)) fail("api_keys", row.id, "rotation_mark");
    },
  );
  each<SealedFamily & { seal: string | null }>(
    "refresh_families",
    `SELECT id, user_id AS userId, revoked_at AS revokedAt, seal
     FROM refresh_families ORDER BY id`,
    (row) => {
      if (!credentials.intact.family(row)) fail("refresh_families", row.id);
    },
  );
  each<SealedRefreshToken & { seal: string | null }>(
    "refresh_tokens",
    `SELECT id, user_id AS userId, family_id AS familyId, token_hash AS tokenHash,
       expires_at AS expiresAt, seal
     FROM refresh_tokens ORDER BY id`,
    (row) => {
      if (!credentials.intact.refreshToken(row)) fail("refresh_tokens", row.id);
    },
  );

  const chat = createChatSeal(auditSecret);
  each<StoredConversation>(
    "chat_conversations",
    `SELECT id, owner_kind AS ownerKind, owner_id AS ownerId, seal, created_at AS createdAt,
       updated_at AS updatedAt
     FROM chat_conversations ORDER BY id`,
    (row) => {
      if (!chat.intact.conversation(row)) fail("chat_conversations", row.id);
      // Its owner erased: copied back, seal and all, from before the erasure (probe 93b F1).
      else if (erased(`${String(row.ownerKind)}:${String(row.ownerId)}`)) {
        fail("chat_conversations", row.id, "erased");
      } else if (!readableConversation(row)) fail("chat_conversations", row.id, "times");
    },
  );
  sweepMessages(chat, (table, select, check) => each(table, select, check), fail);

  const payment = createPaymentSeal(auditSecret);
  each<SealedPayment & { seal: string | null }>(
    "payments",
    `SELECT ${SEALED_PAYMENT_COLUMNS}, seal FROM payments ORDER BY seq`,
    (row) => {
      if (!payment.intact.payment(row)) fail("payments", row.id);
    },
  );
  each<SealedIdempotencyKey & { seal: string | null }>(
    "payment_idempotency_keys",
    `SELECT owner, key, request_hash AS requestHash, state, response, seal
     FROM payment_idempotency_keys ORDER BY owner, key`,
    (row) => {
      // Named as the service reports it: the owner and a hash of the key the client chose.
      if (!payment.intact.idempotencyKey(row)) {
        fail("payment_idempotency_keys", `${row.owner} key ${reportedIdempotencyKey(row.key)}`);
      }
    },
  );

  const outbox = createOutboxSeal(auditSecret);
  // Integer ids are named as the file holds them (idText): past 2^53 a number reads rounded.
  each<SealedOutboxRow & { id: number; idText: string; seal: string | null }>(
    "whatsapp_outbox",
    `SELECT id, CAST(id AS TEXT) AS idText, message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
       sender_hash AS senderHash, kind, body, reply, reply_sent_chars AS replySentChars, seal
     FROM whatsapp_outbox ORDER BY id`,
    (row) => {
      if (!outbox.intact(row)) fail("whatsapp_outbox", row.idText);
    },
  );

  const blocks = createBlockSeal(auditSecret);
  each<SealedBlock & { idText: string; seal: string | null }>(
    "ip_blocks",
    `SELECT ${SEALED_BLOCK_COLUMNS} FROM ip_blocks ORDER BY id`,
    (row) => {
      if (!blocks.intact(row)) fail("ip_blocks", row.idText);
    },
  );
  return sweep;
}

/**
 * An id as an operator can look it up: text cut to 64 characters (never inside a surrogate pair),
 * a number as written, and what a forged row may hold instead — a blob as SQL's `x'…'` (SQLite lets
 * a text key hold one), NULL as `NULL`.
 */
function namedId(raw: unknown): string {
  if (raw instanceof Uint8Array) {
    const hex = Buffer.from(raw).toString("hex");
    return hex.length > NAMED_ID_LENGTH ? `x'${hex.slice(0, NAMED_ID_LENGTH)}…'` : `x'${hex}'`;
  }
  if (raw === null || raw === undefined) return "NULL";
  const text = String(raw);
  if (text.length <= NAMED_ID_LENGTH) return text;
  const cut = /[\uD800-\uDBFF]/.test(text[NAMED_ID_LENGTH - 1]!)
    ? NAMED_ID_LENGTH - 1
    : NAMED_ID_LENGTH;
  return `${text.slice(0, cut)}…`;
}

type StoredMessage = Omit<SealedMessage, "incomplete"> & {
  idText: string;
  incomplete: unknown;
  seal: string | null;
  createdAt: unknown;
  promptTokens: unknown;
  completionTokens: unknown;
};

/**
 * Each message against its seal, and each conversation's messages against one another: every
 * message but a conversation's oldest must name the seal of the one before it (`previous_seal`),
 * as a turn and the history read check them. The oldest is not asked (retention deletes the oldest
 * messages), so a conversation's oldest messages deleted in the file are not seen.
 */
function sweepMessages(
  chat: ChatSeal,
  each: (table: SweptTable, select: string, check: (row: StoredMessage) => void) => void,
  fail: (table: SweptTable, id: unknown, part?: SealFinding["part"]) => void,
): void {
  let conversation: string | null = null;
  let previousSeal: string | null = null;
  each(
    "chat_messages",
    `SELECT id, CAST(id AS TEXT) AS idText, conversation_id AS conversationId,
       previous_seal AS previousSeal, role, content,
       incomplete, tokens, seal, created_at AS createdAt, prompt_tokens AS promptTokens,
       completion_tokens AS completionTokens
     FROM chat_messages ORDER BY conversation_id, id`,
    (row) => {
      const first = row.conversationId !== conversation;
      const followsBefore = first || row.previousSeal === previousSeal;
      conversation = row.conversationId;
      previousSeal = row.seal;
      // As the service reads the column (drizzle's boolean mode): what the seal covers is what is shown.
      const message = { ...row, incomplete: Number(row.incomplete) === 1 };
      const id = row.idText;
      if (!chat.intact.message(message)) fail("chat_messages", id);
      else if (!followsBefore) fail("chat_messages", id, "chain");
      else if (!readableTime(row.createdAt)) fail("chat_messages", id, "times");
      else if (unreadableUsage(row)) fail("chat_messages", id, "usage");
    },
  );
}
