/**
 * @module
 * What an upgrade seals. A release that adds a seal to rows already stored (credentials with
 * migration 0013, the WhatsApp outbox with 0014, the chat history with 0015, payments with 0017,
 * address blocks and lockouts with 0021, API key lineages with 0022, their rotation marks with 0023,
 * payments' undecided refunds with 0028, where the rest of WhatsApp replies half sent begins with 0029)
 * seals those rows in a
 * companion of its migration, in the migration's own transaction (db/migrate.ts). Whoever applied
 * it — the start, or the first CLI command to open the file — says so at once, one warning line per
 * kind of row, and records the audit event once its services exist: a second sealing of the same
 * file is the sign that someone put the file back into its older shape to have their rows sealed.
 * So a sealing whose kind the file's audit log has already recorded is also said as an error and
 * audited as `db.resealed`, which pages (grafana/src/alerts.ts, PalisadeDatabaseTampered).
 */
import type { Database } from "bun:sqlite";
import type { AppDatabase } from "./db/client";
import type { MigrationCompanions } from "./db/migrate";
import type { Logger } from "./logging/logger";
import {
  credentialSealing,
  LINEAGE_SEALS_MIGRATION,
  lineageSealing,
  lineagesSealedMessage,
  SEALS_MIGRATION,
  SUCCESSOR_SEALS_MIGRATION,
  sealedMessage,
  successorSealing,
  successorsSealedMessage,
} from "./modules/auth/seal-upgrade";
import { createChatSeal } from "./modules/chat/history-seal";
import {
  CHAT_SEALS_MIGRATION,
  chatSealedMessage,
  chatSealing,
} from "./modules/chat/history-seal-upgrade";
import {
  createPaymentSeal,
  PAYMENT_SEALS_MIGRATION,
  paymentSealing,
  paymentsSealedMessage,
} from "./modules/payments/seal";
import {
  UNDECIDED_SEALS_MIGRATION,
  undecidedSealedMessage,
  undecidedSealing,
} from "./modules/payments/undecided-seal-upgrade";
import {
  OUTBOX_OFFSETS_MIGRATION,
  outboxOffsetSealing,
  outboxOffsetsSealedMessage,
} from "./modules/webhooks/outbox-offsets-upgrade";
import {
  createOutboxSeal,
  OUTBOX_SEALS_MIGRATION,
  outboxSealedMessage,
  outboxSealing,
} from "./modules/webhooks/outbox-seal";
import { AuditKeys } from "./plugins/audit/chain";
import type { AuditEvent, SealingEventType } from "./plugins/audit/events";
import { holdsKeyedRows } from "./plugins/audit/key-match";
import { SqliteAuditLog } from "./plugins/audit/log";
import {
  KEYED_CHAIN_MIGRATION,
  keyLegacyRows,
  type LegacyUpgrade,
  legacyKeyedEvent,
  legacyKeyedMessage,
} from "./plugins/audit/upgrade";
import { createCredentialSeal } from "./plugins/auth/seal";
import {
  BLOCK_SEALS_MIGRATION,
  blockSealing,
  blocksSealedMessage,
  createBlockSeal,
} from "./plugins/ip-block/seal";

/** One kind of row an upgrade sealed: the line to say, its fields, and the event to audit. */
export interface UpgradeSealed {
  /**
   * The line to say; null when the migration found nothing to seal (a new file). Its event is
   * still recorded: it is what shows a second sealing of the same file for what it is.
   */
  message: string | null;
  fields: Record<string, string | number>;
  event: AuditEvent;
}

export function upgradeSealing(auditSecret: string): {
  companions: MigrationCompanions;
  /** What the migrations applied by this process sealed, each kind of row once its migration ran. */
  sealed(): UpgradeSealed[];
} {
  const credentialSeal = createCredentialSeal(auditSecret);
  const credentials = credentialSealing(credentialSeal);
  const outboxSeal = createOutboxSeal(auditSecret);
  const outbox = outboxSealing(outboxSeal);
  const outboxOffsets = outboxOffsetSealing(outboxSeal);
  const chat = chatSealing(createChatSeal(auditSecret));
  const paymentSeal = createPaymentSeal(auditSecret);
  const ledger = paymentSealing(paymentSeal);
  const undecided = undecidedSealing(paymentSeal);
  const blocks = blockSealing(createBlockSeal(auditSecret));
  const lineages = lineageSealing(credentialSeal);
  const successors = successorSealing(credentialSeal);
  const auditKeys = new AuditKeys(auditSecret);
  let legacyKeyed: LegacyUpgrade | null = null;
  return {
    companions: new Map([
      [
        KEYED_CHAIN_MIGRATION,
        (db: AppDatabase) => {
          legacyKeyed = keyLegacyRows(db.$client, auditKeys);
        },
      ],
      ...credentials.companions,
      ...outbox.companions,
      ...chat.companions,
      ...ledger.companions,
      ...blocks.companions,
      ...lineages.companions,
      ...successors.companions,
      ...undecided.companions,
      ...outboxOffsets.companions,
    ]),
    sealed() {
      const said: UpgradeSealed[] = [];
      if (legacyKeyed !== null) {
        const event = legacyKeyedEvent(legacyKeyed);
        said.push({
          message: legacyKeyedMessage(legacyKeyed),
          fields: { rows: legacyKeyed.keyed },
          event,
        });
      }
      const counts = credentials.sealed();
      if (counts) said.push(sealedOf("auth.credentials_sealed", sealedMessage(counts), counts));
      const rows = outbox.sealed();
      if (rows) said.push(sealedOf("whatsapp.outbox_sealed", outboxSealedMessage(rows), rows));
      const history = chat.sealed();
      if (history) said.push(sealedOf("chat.history_sealed", chatSealedMessage(history), history));
      const paid = ledger.sealed();
      if (paid) said.push(sealedOf("payment.ledger_sealed", paymentsSealedMessage(paid), paid));
      const blocked = blocks.sealed();
      if (blocked) said.push(sealedOf("ip.blocks_sealed", blocksSealedMessage(blocked), blocked));
      const lineage = lineages.sealed();
      if (lineage) {
        said.push(sealedOf("auth.lineages_sealed", lineagesSealedMessage(lineage), lineage));
      }
      const marks = successors.sealed();
      if (marks) {
        said.push(
          sealedOf(
            "auth.successors_sealed",
            successorsSealedMessage(marks, successors.actingForUsers()),
            marks,
          ),
        );
      }
      const refunds = undecided.sealed();
      if (refunds) {
        said.push(sealedOf("payment.undecided_sealed", undecidedSealedMessage(refunds), refunds));
      }
      const halfSent = outboxOffsets.sealed();
      if (halfSent) {
        said.push(
          sealedOf(
            "whatsapp.outbox_offsets_sealed",
            outboxOffsetsSealedMessage(halfSent),
            halfSent,
          ),
        );
      }
      return said;
    },
  };
}

/**
 * The sealings among `sealed` that the file's audit log has already recorded an event of, each as
 * what to say and audit: read before this process records its own. Only someone who could write
 * the file (who cannot forge the audit log's rows, only leave them) gets a file through one
 * release's sealing twice.
 */
export function resealings(
  sqlite: Database,
  sealed: readonly UpgradeSealed[],
): (UpgradeSealed & { message: string })[] {
  const earlierOf = sqlite.query<{ earlier: number }, [string]>(
    "SELECT count(*) AS earlier FROM audit_events WHERE type = ?",
  );
  const said: (UpgradeSealed & { message: string })[] = [];
  for (const { event, fields } of sealed) {
    const earlier = earlierOf.get(event.type)?.earlier ?? 0;
    if (earlier === 0) continue;
    const detail = { kind: event.type, earlier, ...fields };
    said.push({
      message: `the database file was sealed by this release before (${earlier} earlier ${event.type} in its audit log): someone put it back into its older shape so that rows written into it would be sealed; restore it from a backup taken before, and find who could write it`,
      fields: detail,
      event: { type: "db.resealed", outcome: "failure", actor: "system", detail },
    });
  }
  return said;
}

/** Each migration whose companion seals rows, and the event its sealing is recorded as. */
const SEALING_EVENT_BY_MIGRATION: ReadonlyMap<string, SealingEventType> = new Map([
  [SEALS_MIGRATION, "auth.credentials_sealed"],
  [OUTBOX_SEALS_MIGRATION, "whatsapp.outbox_sealed"],
  [CHAT_SEALS_MIGRATION, "chat.history_sealed"],
  [PAYMENT_SEALS_MIGRATION, "payment.ledger_sealed"],
  [BLOCK_SEALS_MIGRATION, "ip.blocks_sealed"],
  [LINEAGE_SEALS_MIGRATION, "auth.lineages_sealed"],
  [SUCCESSOR_SEALS_MIGRATION, "auth.successors_sealed"],
  [UNDECIDED_SEALS_MIGRATION, "payment.undecided_sealed"],
  [OUTBOX_OFFSETS_MIGRATION, "whatsapp.outbox_offsets_sealed"],
]);

/**
 * The sealings the migrations table records as applied that the audit log holds no event of, and
 * that this process did not just record (`recordedNow`): each to be recorded now, late. Two ways
 * leave one unrecorded: a reading command that migrated a file whose audit log was still empty
 * (it must not write a new log's first row; the start after it has nothing left to migrate: probe
 * 64 F2), and a start or command refused after migrating (the schema guard: 63a F2). Without its
 * event, a second run of that sealing on a file put back before it would not be said as
 * `db.resealed`. So is an event retention has removed. Recorded by the start, once its key is known
 * to be the log's.
 */
export function unrecordedSealings(
  sqlite: Database,
  appliedTags: readonly string[],
  recordedNow: readonly UpgradeSealed[],
): { message: string | null; events: AuditEvent[] } {
  const justRecorded = new Set<string>(recordedNow.map(({ event }) => event.type));
  const recorded = sqlite.query<{ found: number }, [string]>(
    "SELECT EXISTS (SELECT 1 FROM audit_events WHERE type = ?) AS found",
  );
  const late: string[] = [];
  const events: AuditEvent[] = [];
  for (const tag of appliedTags) {
    const type = SEALING_EVENT_BY_MIGRATION.get(tag);
    if (type === undefined || justRecorded.has(type)) continue;
    if (recorded.get(type)?.found === 1) continue;
    late.push(tag);
    events.push({
      type,
      outcome: "success",
      actor: "system",
      detail: { migration: tag, recordedLate: true },
    });
  }
  const message =
    late.length === 0
      ? null
      : `the audit log holds no event of the sealings of ${late.join(", ")}, which the database went through (migrated by a command before the first start, by a start refused after migrating, or the event since removed by retention): recorded now, so that a second sealing of this file is seen`;
  return { message, events };
}

/**
 * Records what a start or command said of the file before it is refused for a changed schema
 * (db/schema-guard.ts), which stops it before its services exist: the sealings its migrations ran,
 * a second sealing (`db.resealed`), the triggers dropped. Left to a later start they were lost
 * (probe 65 F5: a file put back before a sealing, with an index planted so that the start would
 * be refused, was sealed again with no event; the next start found the first sealing's event and
 * recorded nothing). Only on a log that holds keyed rows, whose key was checked before migrating:
 * a new log's first row is the start's to write, and a log from before keys the start's to key.
 * Said, not thrown, when the file cannot take them: the refusal follows either way.
 */
export function recordBeforeRefusing(
  sqlite: Database,
  keys: AuditKeys,
  logger: Logger,
  events: readonly AuditEvent[],
): void {
  if (events.length === 0) return;
  try {
    if (!holdsKeyedRows(sqlite)) return;
    const audit = new SqliteAuditLog({ sqlite, clock: { now: () => Date.now() }, logger, keys });
    for (const event of events) audit.record(event);
    audit.flush();
  } catch (error) {
    logger.error(
      { err: error, events: events.map((event) => event.type) },
      "the upgrade's audit events could not be recorded before the refusal",
    );
  }
}

/** What one kind of row's sealing says: its line, the counts as its fields and as the event's detail. */
function sealedOf(type: SealingEventType, message: string, counts: object): UpgradeSealed {
  const fields = { ...counts } as Record<string, number>;
  return {
    message: Object.values(fields).every((count) => count === 0) ? null : message,
    fields,
    event: { type, outcome: "success", actor: "system", detail: { ...fields } },
  };
}
