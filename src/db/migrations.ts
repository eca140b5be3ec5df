/**
 * @module
 * The committed migrations (`drizzle/`), embedded in the code so that a bundle built ahead of time
 * (`bun run build`) carries them and finds no folder at run time. Each is the text of its `.sql`
 * file, listed by its journal tag; `test/db/migrations.test.ts` holds this list to the folder, so a
 * migration that `drizzle-kit generate` adds and is not listed here fails the suite.
 */
import type { MigrationMeta } from "drizzle-orm/migrator";
import m0000 from "../../drizzle/0000_users.sql" with { type: "text" };
import m0001 from "../../drizzle/0001_defences.sql" with { type: "text" };
import m0002 from "../../drizzle/0002_identity.sql" with { type: "text" };
import m0003 from "../../drizzle/0003_keyed_audit_chain.sql" with { type: "text" };
import m0004 from "../../drizzle/0004_refresh_families.sql" with { type: "text" };
import m0005 from "../../drizzle/0005_accounts_keys.sql" with { type: "text" };
import m0006 from "../../drizzle/0006_webhook_events.sql" with { type: "text" };
import m0007 from "../../drizzle/0007_payments.sql" with { type: "text" };
import m0008 from "../../drizzle/0008_whatsapp_outbox.sql" with { type: "text" };
import m0009 from "../../drizzle/0009_chat.sql" with { type: "text" };
import m0010 from "../../drizzle/0010_audit_unkeyed_index.sql" with { type: "text" };
import m0011 from "../../drizzle/0011_counters_prune_after.sql" with { type: "text" };
import m0012 from "../../drizzle/0012_webhook_events_provider_index.sql" with { type: "text" };
import m0013 from "../../drizzle/0013_credential_seals.sql" with { type: "text" };
import m0014 from "../../drizzle/0014_outbox_seals.sql" with { type: "text" };
import m0015 from "../../drizzle/0015_chat_seals.sql" with { type: "text" };
import m0016 from "../../drizzle/0016_chat_usage_day_owner.sql" with { type: "text" };
import m0017 from "../../drizzle/0017_payment_seals.sql" with { type: "text" };
import m0018 from "../../drizzle/0018_audit_erased_actors.sql" with { type: "text" };
import m0019 from "../../drizzle/0019_chat_usage_resets.sql" with { type: "text" };
import m0020 from "../../drizzle/0020_chat_reservations.sql" with { type: "text" };
import m0021 from "../../drizzle/0021_ip_block_seals.sql" with { type: "text" };
import m0022 from "../../drizzle/0022_key_lineages.sql" with { type: "text" };
import m0023 from "../../drizzle/0023_key_successor_seals.sql" with { type: "text" };
import m0024 from "../../drizzle/0024_audit_event_names.sql" with { type: "text" };
import m0025 from "../../drizzle/0025_chat_message_counts.sql" with { type: "text" };
import m0026 from "../../drizzle/0026_outbox_reply_parts.sql" with { type: "text" };
import m0027 from "../../drizzle/0027_refund_undecided.sql" with { type: "text" };
import m0028 from "../../drizzle/0028_refund_undecided_seals.sql" with { type: "text" };
import m0029 from "../../drizzle/0029_outbox_reply_offsets.sql" with { type: "text" };
import m0030 from "../../drizzle/0030_ip_blocks_created_index.sql" with { type: "text" };
import m0031 from "../../drizzle/0031_payments_owner_created_index.sql" with { type: "text" };
import m0032 from "../../drizzle/0032_audit_events_ip_index.sql" with { type: "text" };
import m0033 from "../../drizzle/0033_whatsapp_message_ids_keyed.sql" with { type: "text" };
import m0034 from "../../drizzle/0034_refresh_tokens_unused_index.sql" with { type: "text" };
import m0035 from "../../drizzle/0035_refresh_tokens_prune_indexes.sql" with { type: "text" };
import m0036 from "../../drizzle/0036_whatsapp_outbox_partial_indexes.sql" with { type: "text" };
import m0037 from "../../drizzle/0037_ip_blocks_prune_indexes.sql" with { type: "text" };
import m0038 from "../../drizzle/0038_erasure_blocks_index.sql" with { type: "text" };
import m0039 from "../../drizzle/0039_users_reading.sql" with { type: "text" };
import m0040 from "../../drizzle/0040_audit_events_type_id_index.sql" with { type: "text" };
import m0041 from "../../drizzle/0041_users_key_folds_again_index.sql" with { type: "text" };
import m0042 from "../../drizzle/0042_served_profile.sql" with { type: "text" };
import journal from "../../drizzle/meta/_journal.json" with { type: "json" };

const SQL_BY_TAG: Readonly<Record<string, string>> = {
  "0000_users": m0000,
  "0001_defences": m0001,
  "0002_identity": m0002,
  "0003_keyed_audit_chain": m0003,
  "0004_refresh_families": m0004,
  "0005_accounts_keys": m0005,
  "0006_webhook_events": m0006,
  "0007_payments": m0007,
  "0008_whatsapp_outbox": m0008,
  "0009_chat": m0009,
  "0010_audit_unkeyed_index": m0010,
  "0011_counters_prune_after": m0011,
  "0012_webhook_events_provider_index": m0012,
  "0013_credential_seals": m0013,
  "0014_outbox_seals": m0014,
  "0015_chat_seals": m0015,
  "0016_chat_usage_day_owner": m0016,
  "0017_payment_seals": m0017,
  "0018_audit_erased_actors": m0018,
  "0019_chat_usage_resets": m0019,
  "0020_chat_reservations": m0020,
  "0021_ip_block_seals": m0021,
  "0022_key_lineages": m0022,
  "0023_key_successor_seals": m0023,
  "0024_audit_event_names": m0024,
  "0025_chat_message_counts": m0025,
  "0026_outbox_reply_parts": m0026,
  "0027_refund_undecided": m0027,
  "0028_refund_undecided_seals": m0028,
  "0029_outbox_reply_offsets": m0029,
  "0030_ip_blocks_created_index": m0030,
  "0031_payments_owner_created_index": m0031,
  "0032_audit_events_ip_index": m0032,
  "0033_whatsapp_message_ids_keyed": m0033,
  "0034_refresh_tokens_unused_index": m0034,
  "0035_refresh_tokens_prune_indexes": m0035,
  "0036_whatsapp_outbox_partial_indexes": m0036,
  "0037_ip_blocks_prune_indexes": m0037,
  "0038_erasure_blocks_index": m0038,
  "0039_users_reading": m0039,
  "0040_audit_events_type_id_index": m0040,
  "0041_users_key_folds_again_index": m0041,
  "0042_served_profile": m0042,
};

/** The journal's last migration: a database whose newest applied one is this is up to date. */
export const LATEST_MIGRATION_MILLIS = Math.max(...journal.entries.map((entry) => entry.when));

/** Each migration's journal tag by its time (what drizzle records as `created_at`), oldest first. */
export const MIGRATION_TAG_BY_MILLIS: ReadonlyMap<number, string> = new Map(
  journal.entries.map((entry) => [entry.when, entry.tag]),
);

/** The migrations as drizzle's folder reader gives them (same statements, hashes and order). */
export function embeddedMigrations(): MigrationMeta[] {
  return journal.entries.map((entry) => {
    const query = SQL_BY_TAG[entry.tag];
    if (query === undefined) throw new Error(`migration ${entry.tag} is not embedded`);
    return {
      sql: query.split("--> statement-breakpoint"),
      bps: entry.breakpoints,
      folderMillis: entry.when,
      hash: new Bun.CryptoHasher("sha256").update(query).digest("hex"),
    };
  });
}
