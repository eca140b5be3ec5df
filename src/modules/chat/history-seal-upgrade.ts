/**
 * @module
 * Sealing the chat history a database held before chat seals existed. Migration 0015 adds the
 * `seal` columns; the conversations and messages already there are sealed by a companion of that
 * migration (db/migrate.ts), in the same immediate transaction, as the credentials are with 0013
 * (modules/auth/seal-upgrade.ts): the file is either not yet migrated or migrated and sealed.
 * Only the call that applies 0015 seals, so a row written into the file afterwards is refused.
 * Someone who puts the file back into its pre-0015 shape gets their rows sealed by the next start
 * or command, which says so and audits it again (`chat.history_sealed`): a second such event for
 * one file is the sign of it.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import type { ChatSeal, SealedConversation, SealedMessage } from "./history-seal";

export const CHAT_SEALS_MIGRATION = "0015_chat_seals";

/** What the upgrade sealed. */
export interface ChatSealedOnUpgrade {
  conversations: number;
  messages: number;
}

/**
 * The companion that seals every conversation and message when migration 0015 is applied, and
 * what it sealed: null until it runs (zeros when there was nothing: a new database).
 */
export function chatSealing(seal: ChatSeal): {
  companions: MigrationCompanions;
  sealed(): ChatSealedOnUpgrade | null;
} {
  let sealed: ChatSealedOnUpgrade | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const conversations = sqlite
      .query<SealedConversation, []>(
        "SELECT id, owner_kind AS ownerKind, owner_id AS ownerId FROM chat_conversations",
      )
      .all();
    const sealConversation = sqlite.prepare("UPDATE chat_conversations SET seal = ? WHERE id = ?");
    for (const row of conversations) sealConversation.run(seal.conversation(row), row.id);
    const messages = sqlite
      .query<
        Omit<SealedMessage, "incomplete" | "previousSeal"> & {
          incomplete: unknown;
          idText: string;
        },
        []
      >(
        `SELECT id, CAST(id AS TEXT) AS idText, conversation_id AS conversationId, role, content,
           incomplete, tokens
         FROM chat_messages ORDER BY conversation_id, id`,
      )
      .all();
    // By the id as stored (text, compared as the integer it spells): past 2^53 the number is read
    // rounded, and the seal went onto another message or none.
    const sealMessage = sqlite.prepare(
      "UPDATE chat_messages SET seal = ?, previous_seal = ? WHERE id = CAST(? AS INTEGER)",
    );
    // Each conversation's messages chained in the order they were written (their ids).
    let conversation: string | null = null;
    let previousSeal: string | null = null;
    for (const row of messages) {
      if (row.conversationId !== conversation) {
        conversation = row.conversationId;
        previousSeal = null;
      }
      // As drizzle reads the column (boolean mode): what the seal covers is what is shown.
      const incomplete = Number(row.incomplete) === 1;
      const sealed = seal.message({ ...row, incomplete, previousSeal });
      sealMessage.run(sealed, previousSeal, row.idText);
      previousSeal = sealed;
    }
    sealed = { conversations: conversations.length, messages: messages.length };
  };
  return { companions: new Map([[CHAT_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed chat history. */
export function chatSealedMessage({ conversations, messages }: ChatSealedOnUpgrade): string {
  return `sealed the ${conversations} chat conversations (${messages} messages) stored before this release; conversations and messages written into the file from now on are neither continued nor shown`;
}
