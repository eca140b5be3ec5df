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
 * logged, and audited as `whatsapp.outbox_tampered` (alert `PalisadeWhatsAppOutboxTampered`).
 *
 * Not sealed: the bookkeeping (state, attempts, lease, next attempt, error, times) and the
 * conversation id (a chat turn checks the conversation's owner itself). Changing those can delay a
 * reply or give it up; not send anything else, or anywhere else (a sent row keeps no number). A
 * copy of an older row of the same file, seal and all (a rollback), is not detected: a reply
 * already sent could be sent again.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { createRowSealer, sealMatches } from "../../db/row-seal";
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
}

export interface OutboxSeal {
  /** The seal of a row with these columns. */
  of(row: SealedOutboxRow): string;
  /** Whether a stored row matches its seal; one that does not is reported. */
  intact(row: SealedOutboxRow & { id: number; seal: string | null }): boolean;
}

const KEY_LABEL = "palisade whatsapp outbox seal v1";

/** The seal keyed from `auditSecret`; `report` hears of every row `intact` finds not matching. */
export function createOutboxSeal(
  auditSecret: string,
  report: (row: { id: number; messageId: string }) => void = () => {},
): OutboxSeal {
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
    ]);
  return {
    of,
    intact(row) {
      const intact = sealMatches(of(row), row.seal);
      if (!intact) report(row);
      return intact;
    },
  };
}

/** A message id as reported: a forged row's can be any length. */
const REPORTED_ID_LENGTH = 64;

/**
 * Reports a tampered outbox row: an error line and a `whatsapp.outbox_tampered` audit event naming
 * the row (its id and inbound message id, cut to 64 characters; never its number or text). The
 * worker marks the row failed, so each is reported once.
 */
export function outboxTamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
}): (row: { id: number; messageId: string }) => void {
  return ({ id, messageId: raw }) => {
    const message = raw.length > REPORTED_ID_LENGTH ? `${raw.slice(0, REPORTED_ID_LENGTH)}…` : raw;
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

/**
 * The companion that seals every outbox row when migration 0014 is applied (in its transaction, as
 * the credentials are sealed with 0013: modules/auth/seal-upgrade.ts), and how many it sealed:
 * null until it runs, and when there were none. Replies owed before the upgrade are still sent.
 */
export function outboxSealing(seal: OutboxSeal): {
  companions: MigrationCompanions;
  sealed(): number | null;
} {
  let sealed: number | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedOutboxRow & { id: number }, []>(
        `SELECT id, message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
           sender_hash AS senderHash, kind, body, reply FROM whatsapp_outbox`,
      )
      .all();
    const update = sqlite.prepare("UPDATE whatsapp_outbox SET seal = ? WHERE id = ?");
    for (const row of rows) update.run(seal.of(row), row.id);
    sealed = rows.length > 0 ? rows.length : null;
  };
  return { companions: new Map([[OUTBOX_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed outbox rows. */
export function outboxSealedMessage(rows: number): string {
  return `sealed the ${rows} WhatsApp outbox rows stored before this release; outbox rows written into the file from now on are never sent`;
}
