/**
 * @module
 * The upgrade that stops storing WhatsApp message ids as Meta sends them. A `wamid.…` is base64
 * that holds the number of the person on the other side, and the release before kept it 30 days in
 * `webhook_events` (the dedupe record), `whatsapp_outbox` (`message_id`, `reply_message_id`) and
 * `whatsapp_statuses`, past the outbox's own clearing of the number once a reply is sent (probe 86a
 * F2). This release stores a keyed hash instead (whatsapp-crypto.ts messageIdKeyer), and the
 * companion of migration 0033 rewrites the ids already stored, once, in the migration's
 * transaction: a redelivery of a message received before the upgrade still finds its record, and a
 * status of a reply sent before it still finds its reply. An outbox row's seal covers its message
 * id, so a row that matched its seal is sealed again with the new id; one that did not keeps its
 * old seal and stays refused. An id already keyed is left as it is: a file put back before 0033
 * (its migration rows deleted) runs the companion again, and keying each id a second time lost
 * every message's dedupe record, so a redelivery was answered twice (probe 88b F2).
 */
import type { Database } from "bun:sqlite";
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import type { OutboxSeal, SealedOutboxRow } from "./outbox-seal";

export const MESSAGE_IDS_MIGRATION = "0033_whatsapp_message_ids_keyed";

export function messageIdKeying(
  keyMessageId: (messageId: string) => string,
  seal: OutboxSeal,
): { companions: MigrationCompanions } {
  const keyAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    keyEvents(sqlite, keyMessageId);
    keyOutbox(sqlite, keyMessageId, seal);
    keyStatuses(sqlite, keyMessageId);
  };
  return { companions: new Map([[MESSAGE_IDS_MIGRATION, keyAll]]) };
}

/**
 * An id as this release stores it (messageIdKeyer's 32 hex characters, with `:<row>` when keyed
 * apart below). No id of Meta's has that form: each begins `wamid.`.
 */
const alreadyKeyed = (value: unknown): boolean =>
  typeof value === "string" && /^[0-9a-f]{32}(:[0-9]+)?$/.test(value);

/** The key of a stored id: itself when it is one already. */
const keyedOnce = (keyMessageId: (id: string) => string, value: unknown): string =>
  alreadyKeyed(value) ? (value as string) : keyMessageId(textOf(value));

/** A value the file holds as the id: text as Palisade wrote it, anything else as its text. */
const textOf = (value: unknown): string =>
  typeof value === "string" ? value : value instanceof Uint8Array ? "" : String(value);

function keyEvents(sqlite: Database, keyMessageId: (id: string) => string): void {
  keyIdColumn(sqlite, keyMessageId, "webhook_events", "event_id", "provider = 'whatsapp'");
}

function keyStatuses(sqlite: Database, keyMessageId: (id: string) => string): void {
  keyIdColumn(sqlite, keyMessageId, "whatsapp_statuses", "message_id", "1");
}

/**
 * Rewrites `column` of `table`'s rows (those `where` selects) to its key. Two rows that key alike
 * (one written into the file as the other's key, which the unique key refuses): the first stays.
 */
function keyIdColumn(
  sqlite: Database,
  keyMessageId: (id: string) => string,
  table: "webhook_events" | "whatsapp_statuses",
  column: "event_id" | "message_id",
  where: string,
): void {
  const rows = sqlite
    .query<{ rowid: number; id: unknown }, []>(
      `SELECT rowid, ${column} AS id FROM ${table} WHERE ${where}`,
    )
    .all();
  const rewrite = sqlite.prepare(`UPDATE OR IGNORE ${table} SET ${column} = ? WHERE rowid = ?`);
  const drop = sqlite.prepare(`DELETE FROM ${table} WHERE rowid = ?`);
  for (const row of rows) {
    if (alreadyKeyed(row.id)) continue;
    if (rewrite.run(keyMessageId(textOf(row.id)), row.rowid).changes === 0) drop.run(row.rowid);
  }
}

function keyOutbox(sqlite: Database, keyMessageId: (id: string) => string, seal: OutboxSeal): void {
  const rows = sqlite
    .query<SealedOutboxRow & { id: number; replyMessageId: unknown; seal: string | null }, []>(
      `SELECT id, message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
         sender_hash AS senderHash, kind, body, reply, reply_sent_chars AS replySentChars,
         reply_message_id AS replyMessageId, seal
       FROM whatsapp_outbox`,
    )
    .all();
  const rewrite = sqlite.prepare(
    "UPDATE OR IGNORE whatsapp_outbox SET message_id = ?, reply_message_id = ?, seal = ? WHERE id = ?",
  );
  const keyApart = sqlite.prepare(
    "UPDATE whatsapp_outbox SET message_id = ?, reply_message_id = NULL WHERE id = ?",
  );
  for (const row of rows) {
    const replyKeyed = row.replyMessageId === null || alreadyKeyed(row.replyMessageId);
    if (alreadyKeyed(row.messageId) && replyKeyed) continue;
    const messageId = keyedOnce(keyMessageId, row.messageId);
    const replyMessageId =
      row.replyMessageId === null ? null : keyedOnce(keyMessageId, row.replyMessageId);
    // Only a row Palisade wrote is sealed again; any other keeps a seal that does not match.
    const resealed = seal.intact(row) ? seal.of({ ...row, messageId }) : row.seal;
    if (rewrite.run(messageId, replyMessageId, resealed, row.id).changes === 0) {
      // Its key is another row's id (written into the file so): no id of Meta's is kept either way.
      keyApart.run(`${messageId}:${row.id}`, row.id);
    }
  }
}
