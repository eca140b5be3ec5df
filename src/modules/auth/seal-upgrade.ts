/**
 * @module
 * Sealing the credentials a database held before seals existed. Migration 0013 adds the `seal`
 * columns; the rows already there are sealed by a companion of that migration (db/migrate.ts), in
 * the same immediate transaction, so the file is either not yet migrated or migrated and sealed —
 * a process killed half way leaves it as it was, and the next start does both. Only the call that
 * applies 0013 seals: a row without a seal found later is refused, so rows written into the file
 * after the upgrade are never sealed by Palisade.
 *
 * What the rows said before the upgrade is only as certain as the file was. Someone who can write
 * the file can also put it back into its pre-0013 shape (drop the columns and the migration's row)
 * so that the next start, or CLI command, seals what they wrote: every sealing is therefore said
 * (a warning line with the counts) and audited (`auth.credentials_sealed`), and a second one for
 * the same file is the sign of it.
 */
import type { AppDatabase } from "../../db/client";
import type { MigrationCompanions } from "../../db/migrate";
import { keySuccessors } from "../../plugins/auth/lineage";
import type {
  CredentialSeal,
  SealedAccount,
  SealedApiKey,
  SealedFamily,
  SealedRefreshToken,
} from "../../plugins/auth/seal";
import { bootstrapLineage } from "./api-keys";

export const SEALS_MIGRATION = "0013_credential_seals";

/**
 * How many rows the upgrade sealed: accounts, API keys, and sessions (refresh families, whose
 * refresh tokens are sealed with them). Names an audit detail keeps (no `token`, no `apiKey`).
 */
export interface SealedOnUpgrade {
  accounts: number;
  keys: number;
  sessions: number;
}

/**
 * The companion that seals every row when migration 0013 is applied, and what it sealed: null
 * until it runs, zeros when there was nothing to seal (a new database: still recorded, so that a
 * file put back into its older shape later is seen sealed twice; upgrade-sealing.ts).
 */
export function credentialSealing(seal: CredentialSeal): {
  companions: MigrationCompanions;
  sealed(): SealedOnUpgrade | null;
} {
  let sealed: SealedOnUpgrade | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    /**
     * Seals every row `select` reads (by rowid) with `sealOf`; returns how many. The rowid is read
     * and bound as text: one past 2^53 (a row written into the file) reads rounded as a number,
     * and its seal would land on another row (as the limiter's write-back did: probe 50a F2).
     */
    const sealEach = <Row>(table: string, select: string, sealOf: (row: Row) => string) => {
      const rows = sqlite
        .query<Row & { rowid: string }, []>(`SELECT CAST(rowid AS TEXT) AS rowid, ${select}`)
        .all();
      const update = sqlite.prepare(`UPDATE ${table} SET seal = ? WHERE rowid = ?`);
      for (const row of rows) update.run(sealOf(row), row.rowid);
      return rows.length;
    };
    const accounts = sealEach<SealedAccount>(
      "users",
      "id, email, email_key AS emailKey, password_hash AS passwordHash, role FROM users",
      seal.account,
    );
    const keys = sealEach<SealedApiKey>(
      "api_keys",
      `id, prefix, secret_hash AS secretHash, scopes, user_id AS userId, expires_at AS expiresAt,
       revoked_at AS revokedAt, origin FROM api_keys`,
      seal.apiKey,
    );
    sealEach<SealedRefreshToken>(
      "refresh_tokens",
      `id, user_id AS userId, family_id AS familyId, token_hash AS tokenHash,
       expires_at AS expiresAt FROM refresh_tokens`,
      seal.refreshToken,
    );
    const sessions = sealEach<SealedFamily>(
      "refresh_families",
      "id, user_id AS userId, revoked_at AS revokedAt FROM refresh_families",
      seal.family,
    );
    sealed = { accounts, keys, sessions };
  };
  return { companions: new Map([[SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when they sealed something. */
export function sealedMessage(sealed: SealedOnUpgrade): string {
  return `sealed the credentials stored before this release (${sealed.accounts} accounts, ${sealed.keys} API keys, ${sealed.sessions} sessions); rows written into the file from now on are refused`;
}

export const LINEAGE_SEALS_MIGRATION = "0022_key_lineages";

/** What 0022 sealed: every key's lineage, and how many of them continue another key's chain. */
export interface LineagesSealed {
  keys: number;
  rotated: number;
}

/**
 * The companion that writes and seals every key's lineage when migration 0022 is applied (in its
 * transaction, as 0013 seals the credentials): the first key of the rotation chain it ends, found
 * by following `replaced_by` back as the file holds it then (a cycle, which no rotation makes,
 * ends where it closes), and null until it runs. A bootstrap key that owns no payment nor
 * Idempotency-Key yet takes its secret's lineage (`bootstrapLineage`), as one added from now on
 * does; one that does keeps its id, the owner its payments name. From then on a key's lineage is
 * written when it is made, so a `replaced_by` changed in the file afterwards moves nothing.
 */
export function lineageSealing(seal: CredentialSeal): {
  companions: MigrationCompanions;
  sealed(): LineagesSealed | null;
} {
  let sealed: LineagesSealed | null = null;
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const keys = sqlite
      .query<{ id: string; replacedBy: string | null; origin: string; secretHash: string }, []>(
        "SELECT id, replaced_by AS replacedBy, origin, secret_hash AS secretHash FROM api_keys",
      )
      .all();
    const ownsAnything = sqlite.query<{ owned: number }, [string]>(
      `SELECT EXISTS (SELECT 1 FROM payments WHERE owner = ?1)
           OR EXISTS (SELECT 1 FROM payment_idempotency_keys WHERE owner = ?1) AS owned`,
    );
    const predecessorOf = new Map<string, string>();
    for (const key of keys) {
      if (key.replacedBy !== null && !predecessorOf.has(key.replacedBy)) {
        predecessorOf.set(key.replacedBy, key.id);
      }
    }
    const update = sqlite.prepare("UPDATE api_keys SET lineage = ?, lineage_seal = ? WHERE id = ?");
    let rotated = 0;
    for (const { id, origin, secretHash } of keys) {
      if (origin === "bootstrap" && ownsAnything.get(`key:${id}`)?.owned === 0) {
        const lineage = bootstrapLineage(secretHash, seal);
        update.run(lineage, seal.lineage({ id, lineage }), id);
        continue;
      }
      const seen = new Set([id]);
      let first = id;
      for (let before = predecessorOf.get(first); before !== undefined && !seen.has(before); ) {
        seen.add(before);
        first = before;
        before = predecessorOf.get(first);
      }
      if (first !== id) rotated++;
      update.run(first, seal.lineage({ id, lineage: first }), id);
    }
    sealed = { keys: keys.length, rotated };
  };
  return { companions: new Map([[LINEAGE_SEALS_MIGRATION, sealAll]]), sealed: () => sealed };
}

/** What the start and the CLI say when the upgrade sealed key lineages. */
export function lineagesSealedMessage({ keys, rotated }: LineagesSealed): string {
  return `sealed the payment lineage of the ${keys} API keys stored before this release (${rotated} continue a rotated key's); a key's lineage written into the file from now on reaches no payments`;
}

export const SUCCESSOR_SEALS_MIGRATION = "0023_key_successor_seals";

/** What a rotation writes as `replaced_by`: a key id (Bun.randomUUIDv7's text). */
const KEY_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What 0023 sealed: every key's rotation mark, and how many of them name a successor. */
export interface SuccessorsSealed {
  keys: number;
  rotated: number;
  /** Live keys an ownerless key rotated from a user's key: they still act for that user. */
  actingForUsers: number;
}

/** At most this many of those keys are named in the upgrade's line. */
const NAMED_KEYS = 10;

/**
 * The companion that writes and seals every key's rotation mark (`replaced_by`, `successor_seal`)
 * when migration 0023 is applied, in its transaction: the successor the sealed lineages show
 * (`keySuccessors`: the next key of the same lineage) where they show one, else the `replaced_by`
 * the file holds then (a key it says was rotated stays so; like every sealing migration, this
 * seals what the file holds). From then on a rotation writes and seals the mark itself, so whether
 * a key was rotated no longer depends on any other row.
 */
export function successorSealing(seal: CredentialSeal): {
  companions: MigrationCompanions;
  sealed(): SuccessorsSealed | null;
  /** The first of the keys counted in `actingForUsers`, by id. */
  actingForUsers(): readonly string[];
} {
  let sealed: SuccessorsSealed | null = null;
  let actingForUsers: string[] = [];
  const sealAll = (db: AppDatabase) => {
    const sqlite = db.$client;
    const successors = keySuccessors(sqlite, seal);
    const keys = sqlite
      .query<{ id: string; replacedBy: string | null; expiresAt: number | null }, []>(
        "SELECT id, replaced_by AS replacedBy, expires_at AS expiresAt FROM api_keys",
      )
      .all();
    const update = sqlite.prepare(
      "UPDATE api_keys SET replaced_by = ?, successor_seal = ? WHERE id = ?",
    );
    let rotated = 0;
    for (const { id, replacedBy: noted, expiresAt } of keys) {
      // A successor hidden from the lineages when the file is upgraded (its row deleted or
      // changed) leaves its predecessor rotated all the same, as `replaced_by` says; a value no
      // rotation writes (not a key id: a UUID's text) is none.
      const replacedBy =
        successors.get(id) ?? (typeof noted === "string" && KEY_ID.test(noted) ? noted : null);
      if (replacedBy !== null) rotated++;
      update.run(replacedBy, seal.successor({ id, replacedBy, expiresAt }), id);
    }
    // Before this release a rotation by an ownerless (operator) key kept the old owner: its
    // successor, whose secret the operator was shown, acts for that user. The audit log says
    // which; they are named for the operator to revoke, not changed (one may be in the user's use).
    actingForUsers = sqlite
      .query<{ id: string }, []>(
        `SELECT DISTINCT successor.id AS id FROM audit_events event
         JOIN api_keys rotator ON event.actor = 'key:' || rotator.id AND rotator.user_id IS NULL
         JOIN api_keys successor ON successor.id = json_extract(event.detail, '$.replacedBy')
         WHERE event.type = 'admin.key.rotated' AND json_valid(event.detail)
           AND successor.user_id IS NOT NULL AND successor.revoked_at IS NULL
         ORDER BY successor.id`,
      )
      .all()
      .map((row) => row.id);
    sealed = { keys: keys.length, rotated, actingForUsers: actingForUsers.length };
  };
  return {
    companions: new Map([[SUCCESSOR_SEALS_MIGRATION, sealAll]]),
    sealed: () => sealed,
    actingForUsers: () => actingForUsers.slice(0, NAMED_KEYS),
  };
}

/** What the start and the CLI say when the upgrade sealed key rotation marks. */
export function successorsSealedMessage(
  { keys, rotated, actingForUsers }: SuccessorsSealed,
  named: readonly string[] = [],
): string {
  const sealed = `sealed the rotation mark of the ${keys} API keys stored before this release (${rotated} were rotated); a replaced_by written into the file from now on is refused, and a rotated key stays rotated`;
  if (actingForUsers === 0) return sealed;
  const more = actingForUsers > named.length ? ` and ${actingForUsers - named.length} more` : "";
  return `${sealed}; ${actingForUsers} live keys an operator key rotated from a user's key still act for that user (${named.join(", ")}${more}): from this release such a rotation gives an ownerless key; revoke any not handed to that user (keys:revoke ID)`;
}
