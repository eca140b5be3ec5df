/**
 * @module
 * Chat history seals: what keeps someone who can write the database file, but does not hold
 * AUDIT_SECRET_KEY, from putting words in the model's mouth.
 *
 * The model reads a conversation's newest messages before each reply, so without a seal a message
 * written into the file ("As I said, please pay to IBAN X") steered the next reply, which Palisade
 * then gave the genuine user — from the business's WhatsApp number for a WhatsApp sender; a
 * conversation's owner changed in the file let another principal continue (and read) it. So every
 * conversation and message row carries a `seal`, an HMAC (db/row-seal.ts, its own key label):
 * - a conversation: its id, owner kind and owner id;
 * - a message: its conversation id and its own id (so it can be neither moved to another
 *   conversation nor copied to another place in one: the id is its place in the history), its
 *   role, content and `incomplete` mark.
 * A turn checks the conversation and every message in the window the model will read; showing a
 * conversation checks it and all its messages. One that does not match is answered as one that
 * does not exist (`not_found`, 404, left out of the list), reported once per process
 * (`chat.conversation_tampered`), and never resealed. Deleting and erasing go by the owner columns
 * and still work on it.
 *
 * Not sealed: the times, token counts and usage (bookkeeping: changing a message's token estimate
 * can only drop messages from the window, as deleting them can), and the `chat_usage` table. Not
 * covered: deleting messages or conversations (as retention does), and a copy of an older row of
 * the same file, seal and all (a rollback of the file: restore from a backup).
 */

import { createRowSealer, sealMatches } from "../../db/row-seal";
import { spellOut } from "../../logging/spell-out";
import type { AuditEvent } from "../../plugins/audit/events";

/** The columns a conversation's seal covers. */
export interface SealedConversation {
  id: string;
  ownerKind: string;
  ownerId: string;
}

/** The columns a message's seal covers (`incomplete` as the service reads it: stored 1 is true). */
export interface SealedMessage {
  id: number;
  conversationId: string;
  role: string;
  content: string;
  incomplete: boolean;
}

type Stored<Row> = Row & { seal: string | null };

export interface ChatSeal {
  conversation(row: SealedConversation): string;
  message(row: SealedMessage): string;
  /** Whether a stored row matches its seal. */
  intact: {
    conversation(row: Stored<SealedConversation>): boolean;
    message(row: Stored<SealedMessage>): boolean;
  };
}

const KEY_LABEL = "palisade chat seal v1";

/** The seal keyed from `auditSecret`. */
export function createChatSeal(auditSecret: string): ChatSeal {
  const mac = createRowSealer(auditSecret, KEY_LABEL);
  const conversation = (row: SealedConversation) =>
    mac(["chat_conversation", row.id, row.ownerKind, row.ownerId]);
  const message = (row: SealedMessage) =>
    mac(["chat_message", row.conversationId, row.id, row.role, row.content, row.incomplete]);
  return {
    conversation,
    message,
    intact: {
      conversation: (row) => sealMatches(conversation(row), row.seal),
      message: (row) => sealMatches(message(row), row.seal),
    },
  };
}

/** Rows (of each kind) a check remembers as verified; past it the memory starts again. */
const VERIFIED_ROWS = 4096;
/** Characters of content it remembers at most (about 8 MB), whatever the messages' length. */
const VERIFIED_CHARACTERS = 4_000_000;

/**
 * Checks rows against their seals, remembering the messages it verified or sealed. A turn reads
 * its conversation and the window of up to CHAT_CONTEXT_MESSAGES newest messages, all but the
 * last turn's two read by the turn before: an HMAC (and its compare) for each made reading a full
 * window three times as slow (210 against 66 µs, in a turn of ~400 µs; measured in process), so a
 * row whose sealed columns and seal are exactly those of one verified (or sealed) before passes
 * without a new HMAC — it is that row, as Palisade wrote it. Anything else is computed afresh. One
 * per feature instance: a test's app, or a process, has its own memory.
 */
export interface HistoryCheck {
  conversation(row: Stored<SealedConversation>): boolean;
  message(row: Stored<SealedMessage>): boolean;
  /** Remembers a conversation just sealed (by this process, with this seal) as verified. */
  rememberConversation(row: Stored<SealedConversation>): void;
  /** Remembers a message just sealed (by this process, with this seal) as verified. */
  remember(row: Stored<SealedMessage>): void;
}

export function historyCheck(seal: ChatSeal): HistoryCheck {
  const conversations = new Map<string, Stored<SealedConversation>>();
  const rememberConversation = (row: Stored<SealedConversation>) => {
    if (conversations.size >= VERIFIED_ROWS) conversations.clear();
    const { id, ownerKind, ownerId, seal } = row;
    conversations.set(id, { id, ownerKind, ownerId, seal });
  };
  const verified = new Map<number, Stored<SealedMessage>>();
  let characters = 0;
  const remember = (row: Stored<SealedMessage>) => {
    if (verified.size >= VERIFIED_ROWS || characters >= VERIFIED_CHARACTERS) {
      verified.clear();
      characters = 0;
    }
    verified.set(row.id, {
      id: row.id,
      conversationId: row.conversationId,
      role: row.role,
      content: row.content,
      incomplete: row.incomplete,
      seal: row.seal,
    });
    characters += row.content.length;
  };
  return {
    conversation(row) {
      const known = conversations.get(row.id);
      if (
        known !== undefined &&
        known.seal === row.seal &&
        known.ownerKind === row.ownerKind &&
        known.ownerId === row.ownerId
      ) {
        return true;
      }
      if (!seal.intact.conversation(row)) return false;
      rememberConversation(row);
      return true;
    },
    message(row) {
      const known = verified.get(row.id);
      if (
        known !== undefined &&
        known.seal === row.seal &&
        known.conversationId === row.conversationId &&
        known.role === row.role &&
        known.incomplete === row.incomplete &&
        known.content === row.content
      ) {
        return true;
      }
      if (!seal.intact.message(row)) return false;
      remember(row);
      return true;
    },
    rememberConversation,
    remember,
  };
}

/** A conversation that failed its seal (its row, or a message of it): logged and audited. */
export type ConversationTamperReport = (conversationId: string) => void;

/** Conversations remembered as reported, per process; past it the memory starts again. */
const REPORTED_LIMIT = 1000;
/** A conversation id as reported: a forged row's can be any length. */
const REPORTED_ID_LENGTH = 64;

/**
 * Reports a tampered conversation once per process: an error line and a
 * `chat.conversation_tampered` audit event naming it (its id cut to 64 characters; never a
 * message's content). Each later turn or read refuses it again without a report, so a client
 * retrying cannot flood the log; once 1000 have been reported the memory is cleared, so reports
 * go on (one may then be reported again).
 */
export function conversationTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
  limit?: number;
}): ConversationTamperReport {
  const limit = deps.limit ?? REPORTED_LIMIT;
  const reported = new Set<string>();
  return (raw) => {
    const conversation = spellOut(raw, REPORTED_ID_LENGTH);
    if (reported.has(conversation)) return;
    if (reported.size >= limit) reported.clear();
    reported.add(conversation);
    deps.logger.error(
      { conversation },
      "a chat conversation does not match its seal: it, or a message in it, was written into the database file, not by Palisade; it is neither continued nor shown",
    );
    deps.audit.record({
      type: "chat.conversation_tampered",
      outcome: "denied",
      actor: "system",
      detail: { conversation },
    });
  };
}
