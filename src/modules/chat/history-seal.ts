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
 *   conversation nor copied to another place in one: the id is its place in the history), the
 *   seal of the message written before it in its conversation (`previous_seal`, kept on the row;
 *   none for the first), its role, content, `incomplete` mark and token count.
 * The previous seal chains a conversation's messages in the order they were written: messages
 * deleted from the middle, or genuine ones put back after later ones (their ids freed by deleting
 * rows and lowering the id sequence), break the chain where a message's `previous_seal` is not the
 * seal of the message now before it. The oldest message read has no such check (retention deletes
 * the oldest messages). The token count is sealed because the window is cut on it.
 * A turn checks the conversation and every message it reads for the window the model will read
 * (and the one before them, for the chain) before cutting it; showing a conversation checks it and
 * all its messages. One that does not match is answered as one that
 * does not exist (`not_found`, 404, left out of the list), reported once per process
 * (`chat.conversation_tampered`), and never resealed. Deleting and erasing go by the owner columns
 * and still work on it; an erasure first gives back to its owners the conversations whose seal
 * names them under other owner columns (service.ts `reclaimSealedTo`, probe 72a F1).
 *
 * Not sealed: the times and the usage columns, and the `chat_usage` table. Not covered: deleting a
 * conversation's newest or oldest messages, or whole conversations (as retention does), and a copy
 * of an older row of the same file, seal and all (a rollback of the file: restore from a backup).
 */

import { elapsedMs } from "../../clock";
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
  /** The seal of the conversation's message written before this one; null for the first. */
  previousSeal: string | null;
  role: string;
  content: string;
  incomplete: boolean;
  tokens: number;
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
    mac([
      "chat_message",
      row.conversationId,
      row.id,
      row.previousSeal ?? "",
      row.role,
      row.content,
      row.incomplete,
      row.tokens,
    ]);
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
  /**
   * Whether messages of one conversation, in id order, each match their seal and follow one
   * another as written (each one's `previousSeal` is the seal of the one before it; the first
   * given is not asked).
   */
  chain(messages: readonly Stored<SealedMessage>[]): boolean;
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
      previousSeal: row.previousSeal,
      role: row.role,
      content: row.content,
      incomplete: row.incomplete,
      tokens: row.tokens,
      seal: row.seal,
    });
    characters += row.content.length;
  };
  const message = (row: Stored<SealedMessage>) => {
    const known = verified.get(row.id);
    if (
      known !== undefined &&
      known.seal === row.seal &&
      known.conversationId === row.conversationId &&
      known.previousSeal === row.previousSeal &&
      known.role === row.role &&
      known.incomplete === row.incomplete &&
      known.tokens === row.tokens &&
      known.content === row.content
    ) {
      return true;
    }
    if (!seal.intact.message(row)) return false;
    remember(row);
    return true;
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
    message,
    rememberConversation,
    remember,
    chain(messages) {
      for (let i = 0; i < messages.length; i++) {
        const row = messages[i]!;
        if (i > 0 && row.previousSeal !== messages[i - 1]!.seal) return false;
        if (!message(row)) return false;
      }
      return true;
    },
  };
}

/**
 * A conversation that failed its seal (its row, or a message of it): logged and audited. `bulk`:
 * found by a read of many (the list, the export), not by a turn or a read of that one.
 */
export type ConversationTamperReport = (conversationId: string, bulk?: boolean) => void;

/** Conversations remembered as reported, per process; past it the memory starts again. */
const REMEMBERED = 10_000;
/** Conversations the list and the export name one by one, per process; past them, counted. */
const NAMED_IN_BULK = 1000;
const SUMMARY_EVERY_MS = 60_000;
/** A conversation id as reported: a forged row's can be any length. */
const REPORTED_ID_LENGTH = 64;

/**
 * Reports a tampered conversation once per process (while it is among the last 10,000 named): an
 * error line and a `chat.conversation_tampered` audit event naming it (its id cut to 64 characters
 * and spelt out; never a message's content). Each later refusal of it is not reported again, so a
 * client retrying cannot flood the log.
 *
 * A tampered conversation stays in the file, and the list and the export read every one of an
 * owner's: a file holding thousands of them made each export write thousands of audit rows. So
 * those bulk reads name at most 1000 per process, and count the rest, said in one line and one
 * event (`{more: N}`, refusals not named) once the read is over, then at most once a minute. A turn
 * on a conversation, or a read of that one, is always named (those come one request at a time,
 * under the rate limits): filling the bulk allowance with forged conversations of one's own cannot
 * keep another's tampered conversation from being named when it is used.
 */
export function conversationTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
  namedInBulk?: number;
  now?: () => number;
  /** Runs the summary later (after the read that counted, at most once a minute); tests run it. */
  later?: (run: () => void, ms: number) => void;
}): ConversationTamperReport {
  const namedInBulk = deps.namedInBulk ?? NAMED_IN_BULK;
  const now = deps.now ?? Date.now;
  const later =
    deps.later ??
    ((run: () => void, ms: number) => {
      // Never what keeps a stopping process alive.
      setTimeout(run, ms).unref();
    });
  const reported = new Set<string>();
  let bulkNamed = 0;
  let unreported = 0;
  let summarisedAt = Number.NEGATIVE_INFINITY;
  let pending = false;
  const summarise = () => {
    pending = false;
    summarisedAt = now();
    deps.logger.error(
      { more: unreported },
      "more chat conversations do not match their seals (refused by the list or the export, not named one by one): they were written into the database file",
    );
    deps.audit.record({
      type: "chat.conversation_tampered",
      outcome: "denied",
      actor: "system",
      detail: { more: unreported },
    });
    unreported = 0;
  };
  return (raw, bulk = false) => {
    const conversation = spellOut(raw, REPORTED_ID_LENGTH);
    if (reported.has(conversation)) return;
    if (!bulk || bulkNamed < namedInBulk) {
      if (bulk) bulkNamed++;
      if (reported.size >= REMEMBERED) reported.clear();
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
      return;
    }
    unreported++;
    if (pending) return;
    pending = true;
    later(summarise, Math.max(0, SUMMARY_EVERY_MS - elapsedMs(now(), summarisedAt)));
  };
}
