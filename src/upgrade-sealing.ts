/**
 * @module
 * What an upgrade seals. A release that adds a seal to rows already stored (credentials with
 * migration 0013, the WhatsApp outbox with 0014, the chat history with 0015, payments with 0017,
 * address blocks and lockouts with 0021, API key lineages with 0022, their rotation marks with 0023,
 * payments' undecided refunds with 0028, where the rest of WhatsApp replies half sent begins with 0029)
 * seals those rows (and 0033, which stores WhatsApp message ids keyed, reseals the outbox rows it
 * rewrites) in a
 * companion of its migration, in the migration's own transaction (db/migrate.ts). Whoever applied
 * it — the start, or the first CLI command to open the file — says so at once, one warning line per
 * kind of row, and records the audit event once its services exist: a second sealing of the same
 * file is the sign that someone put the file back into its older shape to have their rows sealed.
 * So a sealing whose kind the file's audit log has already recorded is also said as an error and
 * audited as `db.resealed`, which pages (grafana/src/alerts.ts, PalisadeDatabaseTampered).
 */
import type { Database } from "bun:sqlite";
import { systemClock } from "./clock";
import type { AppDatabase } from "./db/client";
import { finds } from "./db/finds";
import type { MigrationCompanions } from "./db/migrate";
import { firstLine } from "./error-line";
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
import { messageIdKeying } from "./modules/webhooks/message-id-upgrade";
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
import { messageIdKeyer } from "./modules/webhooks/whatsapp-crypto";
import { AuditKeys } from "./plugins/audit/chain";
import type { AuditEvent, SealingEventType } from "./plugins/audit/events";
import { hasAuditKeyColumn, holdsAuditRows } from "./plugins/audit/key-match";
import { SqliteAuditLog } from "./plugins/audit/log";
import {
  KEYED_CHAIN_MIGRATION,
  keyLegacyRows,
  type LegacyUpgrade,
  legacyKeyedEvent,
  legacyKeyedMessage,
} from "./plugins/audit/upgrade";
import { describeFailure, verifyAuditChain } from "./plugins/audit/verify";
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
  /**
   * Reads what the audit log says of earlier sealings: run in the migrations' transaction before
   * the first of them (`applyMigrations`'s `beforeApplying`), so no other writer can change it
   * between that reading and the sealings.
   */
  beforeMigrating(sqlite: Database): void;
  /** What the migrations applied by this process sealed, each kind of row once its migration ran. */
  sealed(): UpgradeSealed[];
  /** The sealings among `sealed` the log shows (or cannot rule out) were made before: `db.resealed`. */
  resealed(sealed: readonly UpgradeSealed[]): (UpgradeSealed & { message: string })[];
  /**
   * Writes what the migrations sealed, and `db.resealed`, on the audit log of a file that holds
   * one, in the migrations' transaction after the last of them (`applyMigrations`'s
   * `afterApplying`): they commit together or not at all. Written after the commit, they were
   * lost to a crash, a kill or a refusal in between, or to a write the file was made to refuse (an
   * id sequence set near its end), and the start after found the first sealing's event and
   * recorded nothing (probe 67 F1–F3). A new log's first row is the start's to write: a start
   * passes it (`newLogFirst`, its key: key-match's NEW_LOG_KEYED) and it goes first; a command
   * passes none, and on a new log the start after it records them late. Recorded once its
   * services existed, a start's were missing from the file meanwhile, and processes starting
   * together on a new file each recorded them again, late (probe 79b F1).
   */
  recordInMigration(sqlite: Database, logger: Logger, newLogFirst?: AuditEvent): void;
  /** Whether `recordInMigration` wrote them: then no one records them again. */
  recordedInMigration(): boolean;
} {
  const credentialSeal = createCredentialSeal(auditSecret);
  const credentials = credentialSealing(credentialSeal);
  const outboxSeal = createOutboxSeal(auditSecret);
  const outbox = outboxSealing(outboxSeal);
  const outboxOffsets = outboxOffsetSealing(outboxSeal);
  // Not a sealing of its own: it reseals outbox rows whose seal matched, with their id keyed.
  const messageIds = messageIdKeying(messageIdKeyer(auditSecret), outboxSeal);
  const chat = chatSealing(createChatSeal(auditSecret));
  const paymentSeal = createPaymentSeal(auditSecret);
  const ledger = paymentSealing(paymentSeal);
  const undecided = undecidedSealing(paymentSeal);
  const blocks = blockSealing(createBlockSeal(auditSecret));
  const lineages = lineageSealing(credentialSeal);
  const successors = successorSealing(credentialSeal);
  const auditKeys = new AuditKeys(auditSecret);
  let legacyKeyed: LegacyUpgrade | null = null;
  let before: AuditLogBeforeMigrating | null = null;
  let recorded = false;
  return {
    beforeMigrating(sqlite) {
      before = auditLogBeforeMigrating(sqlite, auditKeys);
    },
    recordInMigration(sqlite, logger, newLogFirst) {
      const newLog = !holdsAuditRows(sqlite);
      if (newLog && newLogFirst === undefined) return;
      const sealed = this.sealed();
      const events = [
        ...(newLog && newLogFirst !== undefined ? [newLogFirst] : []),
        ...[...sealed, ...this.resealed(sealed)].map(({ event }) => event),
      ];
      const audit = new SqliteAuditLog({
        sqlite,
        clock: systemClock,
        logger,
        keys: auditKeys,
      });
      // Throws what the file refuses, which undoes the whole upgrade.
      audit.writeWith(events);
      recorded = true;
    },
    recordedInMigration: () => recorded,
    resealed(sealed) {
      return before === null ? [] : resealings(before, sealed);
    },
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
      ...messageIds.companions,
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

/** What the audit log said before the migrations ran: earlier sealings, and whether it verified. */
interface AuditLogBeforeMigrating {
  earlier: ReadonlyMap<string, number>;
  /** Why the chain did not verify, or null (it did, or the file is older than the keyed chain). */
  fault: string | null;
}

function auditLogBeforeMigrating(sqlite: Database, keys: AuditKeys): AuditLogBeforeMigrating {
  const exists = finds(
    sqlite,
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_events') AS found",
  );
  // A new file: nothing sealed before.
  if (!exists) return { earlier: new Map(), fault: null };
  const earlier = new Map(
    sqlite
      .query<{ type: string; n: number }, []>(
        "SELECT type, count(*) AS n FROM audit_events GROUP BY type",
      )
      .all()
      .map(({ type, n }) => [type, n]),
  );
  if (!hasAuditKeyColumn(sqlite)) return { earlier, fault: null };
  // The whole chain, once per upgrade: an earlier sealing's event whose type was changed in the
  // file for the upgrade, and changed back after, is not counted above, but it fails its row's
  // hash here (probe 66 F1).
  try {
    const result = verifyAuditChain(sqlite, keys);
    return { earlier, fault: result.ok ? null : describeFailure(result) };
  } catch (error) {
    return { earlier, fault: firstLine(error) };
  }
}

/**
 * The sealings among `sealed` that the file's audit log had already recorded an event of before
 * the migrations ran, or whose log did not verify then (an earlier one may be hidden in it), each
 * as what to say and audit. Only someone who could write the file gets a file through one
 * release's sealing twice.
 */
function resealings(
  before: AuditLogBeforeMigrating,
  sealed: readonly UpgradeSealed[],
): (UpgradeSealed & { message: string })[] {
  const said: (UpgradeSealed & { message: string })[] = [];
  for (const { event, fields } of sealed) {
    const earlier = before.earlier.get(event.type) ?? 0;
    if (earlier === 0 && before.fault === null) continue;
    const detail =
      before.fault === null
        ? { kind: event.type, earlier, ...fields }
        : { kind: event.type, earlier, chain: "broken", ...fields };
    const message =
      earlier > 0
        ? `the database file was sealed by this release before (${earlier} earlier ${event.type} in its audit log): someone put it back into its older shape so that rows written into it would be sealed; restore it from a backup taken before, and find who could write it`
        : `the database file's audit log did not verify as this release sealed it (${before.fault}): an earlier ${event.type} may be hidden in it, of a file put back into its older shape so that rows written into it would be sealed; audit:verify names the row; restore it from a backup taken before, and find who could write it`;
    said.push({
      message,
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
 * that this process did not just record (`recordedNow`): each to be recorded now, late. A reading
 * command that migrated a file whose audit log was still empty leaves one unrecorded (it must not
 * write a new log's first row; the start after it has nothing left to migrate: probe 64 F2); so
 * did an earlier release's start or command refused after migrating (63a F2; a refusal now undoes
 * the migration) and an earlier release's retention (it now carries them forward). Without its
 * event, a second run of that sealing on a file put back before it would not be said as
 * `db.resealed`. Recorded by the start, once its key is known to be the log's.
 */
export function unrecordedSealings(
  sqlite: Database,
  appliedTags: readonly string[],
  recordedNow: readonly UpgradeSealed[],
): { message: string | null; events: AuditEvent[] } {
  const justRecorded = new Set<string>(recordedNow.map(({ event }) => event.type));
  const late: string[] = [];
  const events: AuditEvent[] = [];
  for (const tag of appliedTags) {
    const type = SEALING_EVENT_BY_MIGRATION.get(tag);
    if (type === undefined || justRecorded.has(type)) continue;
    if (finds(sqlite, "SELECT EXISTS (SELECT 1 FROM audit_events WHERE type = ?) AS found", type)) {
      continue;
    }
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
      : `the audit log holds no event of the sealings of ${late.join(", ")}, which the database went through (migrated by a command before the first start, or an earlier release's start refused after migrating or retention removed the event): recorded now, so that a second sealing of this file is seen`;
  return { message, events };
}

/**
 * Records the triggers a start or command dropped (db/foreign-triggers.ts) before it is refused
 * for a changed schema (db/schema-guard.ts), which stops it before its services exist. Its
 * migrations, and what their companions sealed, were undone with the refusal. Only on a log that
 * holds rows, whose key was checked (a new log's first row is the start's to write); said, not
 * thrown, when the file cannot take them: the refusal follows either way.
 */
export function recordBeforeRefusing(
  sqlite: Database,
  keys: AuditKeys,
  logger: Logger,
  events: readonly AuditEvent[],
): void {
  if (events.length === 0) return;
  try {
    if (!holdsAuditRows(sqlite)) return;
    const audit = new SqliteAuditLog({ sqlite, clock: systemClock, logger, keys });
    for (const event of events) audit.record(event);
    audit.flush();
  } catch (error) {
    logger.error(
      { err: error, events: events.map((event) => event.type) },
      "the upgrade's audit events could not be recorded before the refusal",
    );
  }
}

/**
 * Writes a new audit log's first row (`first`: the start's key) unless the log holds one: for a
 * start on a file migrated without it (by a command), before its services write (API_KEYS' keys
 * were the first rows, and the key was never pinned: probe 79b F2). In one transaction, so of
 * processes starting together one writes it.
 */
export function pinNewAuditLog(
  sqlite: Database,
  keys: AuditKeys,
  logger: Logger,
  first: AuditEvent,
): void {
  const audit = new SqliteAuditLog({ sqlite, clock: systemClock, logger, keys });
  sqlite
    .transaction(() => {
      if (!holdsAuditRows(sqlite)) audit.writeWith([first]);
    })
    .immediate();
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
