/**
 * @module
 * What an upgrade seals. A release that adds a seal to rows already stored (credentials with
 * migration 0013, the WhatsApp outbox with 0014) seals those rows in a companion of its migration,
 * in the migration's own transaction (db/migrate.ts). Whoever applied it — the start, or the first
 * CLI command to open the file — says so at once, one warning line per kind of row, and records
 * the audit event once its services exist: a second sealing of the same file is the sign that
 * someone put the file back into its older shape to have their rows sealed.
 */
import type { MigrationCompanions } from "./db/migrate";
import { credentialSealing, sealedMessage } from "./modules/auth/seal-upgrade";
import {
  createOutboxSeal,
  outboxSealedMessage,
  outboxSealing,
} from "./modules/webhooks/outbox-seal";
import type { AuditEvent } from "./plugins/audit/events";
import { createCredentialSeal } from "./plugins/auth/seal";

/** One kind of row an upgrade sealed: the line to say, its fields, and the event to audit. */
export interface UpgradeSealed {
  message: string;
  fields: Record<string, number>;
  event: AuditEvent;
}

export function upgradeSealing(auditSecret: string): {
  companions: MigrationCompanions;
  /** What the migrations applied by this process sealed; empty when they sealed nothing. */
  sealed(): UpgradeSealed[];
} {
  const credentials = credentialSealing(createCredentialSeal(auditSecret));
  const outbox = outboxSealing(createOutboxSeal(auditSecret));
  return {
    companions: new Map([...credentials.companions, ...outbox.companions]),
    sealed() {
      const said: UpgradeSealed[] = [];
      const counts = credentials.sealed();
      if (counts) {
        said.push({
          message: sealedMessage(counts),
          fields: { ...counts },
          event: {
            type: "auth.credentials_sealed",
            outcome: "success",
            actor: "system",
            detail: { ...counts },
          },
        });
      }
      const outboxRows = outbox.sealed();
      if (outboxRows) {
        said.push({
          message: outboxSealedMessage(outboxRows),
          fields: { ...outboxRows },
          event: {
            type: "whatsapp.outbox_sealed",
            outcome: "success",
            actor: "system",
            detail: { ...outboxRows },
          },
        });
      }
      return said;
    },
  };
}
