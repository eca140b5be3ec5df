/**
 * @module
 * Outbox seals: what keeps someone who can write the database file, but does not hold
 * AUDIT_SECRET_KEY, from making Palisade send WhatsApp messages of their choosing from the
 * business's number.
 *
 * The worker sends a row's reply to its recipient with the Graph access token. Without a seal, a
 * row written into the file (pending, due) was a message sent: any text to any number, from the
 * business's verified number; a pending row's recipient changed was a sender's chat reply (their
 * conversation continued) delivered to another number. So every outbox row carries a `seal`, an
 * HMAC (db/row-seal.ts, its own key label) over what decides what is sent and to whom: the inbound
 * message id, the business number, the recipient, the sender's hash (whose conversation a chat
 * turn continues), the kind, the inbound text and the reply. The intake seals the row it writes;
 * the worker checks the seal of every row it claims before a chat turn or a send, and reseals
 * each change it makes to those columns. A row that does not match is never sent and never
 * answered by chat: it is marked failed (its number and text cleared, as for any reply given up),
 * logged, and audited as `whatsapp.outbox_tampered` (alert `PalisadeDatabaseTampered`).
 *
 * Sealed too, once a part of a long reply is sent: where its rest begins. Not sealed: the
 * bookkeeping (state, attempts, lease, next attempt, error, times, the count of a long reply's
 * parts sent, which only numbers them) and the conversation id (a chat turn checks the
 * conversation's owner itself). Changing those can delay a reply or give it up, or send it again
 * from its first part to the same number; not send anything else, or anywhere else (a sent row
 * keeps no number). A
 * copy of an older row of the same file, seal and all (a rollback), is not detected: a reply
 * already sent could be sent again.
 */

import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { createRowSealer, sealMatches } from "../../db/row-seal";
import { spellOut } from "../../logging/spell-out";
import type { AuditEvent } from "../../plugins/audit/events";

/** The columns an outbox row's seal covers. */
export interface SealedOutboxRow {
  messageId: string;
  phoneNumberId: string;
  recipient: string | null;
  senderHash: string;
  kind: string;
  body: string | null;
  reply: string | null;
  /**
   * Where in a long reply the rest not yet sent begins (outbox.ts); sealed once a part is sent: a
   * forged one sent any tail of the reply, cut mid-word, a one-message reply too (probe 63b F1).
   * A row with none is sealed as before it existed.
   */
  replySentChars?: number | null;
}

export interface OutboxSeal {
  /** The seal of a row with these columns. */
  of(row: SealedOutboxRow): string;
  /** Whether a stored row matches its seal (the worker reports one that does not). */
  intact(row: SealedOutboxRow & { seal: string | null }): boolean;
}

const KEY_LABEL = "palisade whatsapp outbox seal v1";

/** The seal keyed from `auditSecret`. */
export function createOutboxSeal(auditSecret: string): OutboxSeal {
  const mac = createRowSealer(auditSecret, KEY_LABEL);
  const of = (row: SealedOutboxRow) =>
    mac([
      "whatsapp_outbox",
      row.messageId,
      row.phoneNumberId,
      row.recipient,
      row.senderHash,
      row.kind,
      row.body,
      row.reply,
      ...(row.replySentChars == null ? [] : ["reply_sent_chars", row.replySentChars]),
    ]);
  return { of, intact: (row) => sealMatches(of(row), row.seal) };
}

/** A message id as reported: a forged row's can be any length. */
const REPORTED_ID_LENGTH = 64;

/**
 * Reports a tampered outbox row: an error line and a `whatsapp.outbox_tampered` audit event naming
 * the row (its id and inbound message id as the file holds it, a keyed hash for a row Palisade
 * wrote, cut to 64 characters; never its number or text). The
 * worker reports a row once it has marked it failed, so each is reported once, whichever process
 * refused it.
 */
export function outboxTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
}): (row: { id: number | string; messageId: string }) => void {
  return ({ id, messageId: raw }) => {
    const message = spellOut(raw, REPORTED_ID_LENGTH);
    deps.logger.error(
      { outboxId: id, message },
      "a WhatsApp outbox row does not match its seal: it was written into the database file, not by Palisade; it is not sent",
    );
    deps.audit.record({
      type: "whatsapp.outbox_tampered",
      outcome: "denied",
      actor: "system",
      detail: { outbox: id, message },
    });
  };
}

export const OUTBOX_SEALS_MIGRATION = "0014_outbox_seals";

/** Why a reply owed when migration 0014 ran was given up (its `last_error`). */
export const OWED_AT_UPGRADE_REASON =
  "owed when outbox seals were added: a row from before them cannot be told from one written into the file; not sent";

/** Why a finished row that still held a number or a text when migration 0014 ran was cleared. */
export const UNFINISHED_AT_UPGRADE_REASON =
  "held a number or a text when outbox seals were added, as no row Palisade finished does; cleared, not sent";

/** What the upgrade did: rows sealed, and of them the replies still owed, given up unsent. */
export interface OutboxSealedOnUpgrade {
  rows: number;
  givenUp: number;
}

/**
 * The companion that seals every outbox row when migration 0014 is applied (in its transaction, as
 * the credentials are sealed with 0013: modules/auth/seal-upgrade.ts), and what it did: null until
 * it runs (zeros when there were no rows).
 *
 * Only what cannot send is sealed: every row is sealed with no number and no text. A reply still
 * owed (a pending row) is given up, not sealed for sending: in a file someone put back into its
 * pre-0014 shape, a pending row could be anyone's message to anyone, and a message sent is not
 * undone (an account sealed by mistake can still be revoked). It is marked failed, its number and
 * text cleared, as a reply given up at any other time. A finished row that still holds a number or
 * a text is no row Palisade finished (it clears both), and sealed as it is it would send once its
 * unsealed state was put back to pending: it is cleared too. A graceful stop sends what it can, so
 * an upgrade made once `whatsapp_outbox_pending` is 0 gives up nothing.
 */
export function outboxSealing(seal: OutboxSeal): {
  companions: MigrationCompanions;
  sealed(): OutboxSealedOnUpgrade | null;
} {
  let sealed: OutboxSealedOnUpgrade | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedOutboxRow & { id: number; state: string }, []>(
        `SELECT id, message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
           sender_hash AS senderHash, kind, body, reply, state FROM whatsapp_outbox`,
      )
      .all();
    // By the message id (unique): an id past 2^53 is read rounded (another row's, or none).
    const sealRow = sqlite.prepare("UPDATE whatsapp_outbox SET seal = ? WHERE message_id = ?");
    const close = sqlite.prepare(
      `UPDATE whatsapp_outbox SET state = 'failed', recipient = NULL, body = NULL,
         lease_until = NULL, lease_owner = NULL, last_error = ?, finished_at = ?, seal = ?
       WHERE message_id = ?`,
    );
    const now = Date.now();
    let givenUp = 0;
    for (const row of rows) {
      const closed = { ...row, recipient: null, body: null };
      if (row.state === "pending") {
        close.run(OWED_AT_UPGRADE_REASON, now, seal.of(closed), row.messageId);
        givenUp++;
      } else if (row.recipient !== null || row.body !== null) {
        close.run(UNFINISHED_AT_UPGRADE_REASON, now, seal.of(closed), row.messageId);
        givenUp++;
      } else sealRow.run(seal.of(row), row.messageId);
    }
    sealed = { rows: rows.length, givenUp };
  };
  return { companions: new Map([[OUTBOX_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed outbox rows. */
export function outboxSealedMessage({ rows, givenUp }: OutboxSealedOnUpgrade): string {
  const owed =
    givenUp > 0
      ? `; ${givenUp} replies still owed were given up unsent (a row from before seals cannot be told from one written into the file)`
      : "";
  return `sealed the ${rows} WhatsApp outbox rows stored before this release${owed}; outbox rows written into the file from now on are never sent`;
}
