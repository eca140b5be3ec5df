/**
 * @module
 * The upgrade that gives a reply the release before left half sent the place where its rest
 * begins. That release recorded only how many parts Graph had accepted, and this one reads the
 * place alone (sealed with the row): a count, unsealed, read against a cut that another release
 * makes differently sent text twice or lost it (probe 62b F2), and a forged place sent any tail of
 * any reply (probe 63b F1). So the companion of migration 0029 turns each such count into a place,
 * once, in the migration's transaction, and seals it. What it cannot know is where the release
 * before cut: it takes where this release's cut ends that many parts (invisible parts counted, as
 * that release sent them), so a reply half sent across the upgrade may repeat or skip a few words
 * at that one boundary.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import type { OutboxSeal, SealedOutboxRow } from "./outbox-seal";
import { replyPieces } from "./reply-parts";

export const OUTBOX_OFFSETS_MIGRATION = "0029_outbox_reply_offsets";

/** Why a reply half sent was given up by a second run of 0029 (its `last_error`). */
export const RERUN_REASON =
  "half sent when migration 0029 ran a second time on this file: its count of parts sent cannot be vouched for; not sent";

/** What 0029 did: the replies half sent whose rest now has a place. */
export interface OutboxOffsetsSealed {
  replies: number;
}

export function outboxOffsetSealing(seal: OutboxSeal): {
  companions: MigrationCompanions;
  sealed(): OutboxOffsetsSealed | null;
} {
  let sealed: OutboxOffsetsSealed | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const rows = sqlite
      .query<SealedOutboxRow & { sent: unknown; seal: string | null }, []>(
        `SELECT message_id AS messageId, phone_number_id AS phoneNumberId, recipient,
           sender_hash AS senderHash, kind, body, reply, reply_parts_sent AS sent, seal
         FROM whatsapp_outbox
         WHERE state = 'pending' AND reply IS NOT NULL AND reply_parts_sent > 0`,
      )
      .all();
    const place = sqlite.prepare(
      "UPDATE whatsapp_outbox SET reply_sent_chars = ?, seal = ? WHERE message_id = ?",
    );
    // A second run, on a file put back before 0029 (the log holds the first's event): its counts
    // are anyone's, and sealed they sent a reply without its first parts (probe 64 F1). The
    // replies are given up instead, as 0014 gives up what it cannot vouch for.
    const rerun =
      sqlite
        .query<{ n: number }, []>(
          "SELECT count(*) AS n FROM audit_events WHERE type = 'whatsapp.outbox_offsets_sealed'",
        )
        .get()!.n > 0;
    const giveUp = sqlite.prepare(
      `UPDATE whatsapp_outbox SET state = 'failed', recipient = NULL, body = NULL,
         lease_until = NULL, lease_owner = NULL, last_error = ?, finished_at = ?, seal = ?
       WHERE message_id = ?`,
    );
    let replies = 0;
    for (const row of rows) {
      // Only a row Palisade wrote: any other stays as it is, and is refused at its claim.
      if (!seal.intact(row) || row.reply === null) continue;
      if (rerun) {
        const closed = { ...row, recipient: null, body: null };
        giveUp.run(RERUN_REASON, Date.now(), seal.of(closed), row.messageId);
        replies++;
        continue;
      }
      const { sent } = row;
      if (typeof sent !== "number" || !Number.isSafeInteger(sent)) continue;
      const pieces = replyPieces(row.reply, undefined, { keepInvisible: true });
      if (sent >= pieces.length) continue;
      const at = pieces[sent - 1]!.next;
      place.run(at, seal.of({ ...row, replySentChars: at }), row.messageId);
      replies++;
    }
    sealed = { replies };
  };
  return { companions: new Map([[OUTBOX_OFFSETS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade placed the rest of replies half sent. */
export function outboxOffsetsSealedMessage({ replies }: OutboxOffsetsSealed): string {
  return `sealed where the rest begins of the ${replies} WhatsApp replies half sent before this release; their next part goes on from where this release cuts them`;
}
