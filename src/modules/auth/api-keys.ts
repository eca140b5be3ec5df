/**
 * @module
 * API key management: create (the key is returned once and only its hash kept), list, revoke,
 * rotate (a new key; the old one keeps working until the grace period ends), and the bootstrap
 * keys from API_KEYS, reconciled with the variable at every start.
 *
 * Owners: a key acts for the user who made it (or the one named with `keys:create --owner`) and may
 * hold no scope that user's role does not allow (`ROLE_SCOPES`): checked at creation, applied to the
 * stored scopes when the role changes (`boundToRole`: narrowed, or revoked when nothing is left,
 * audited), and again at every use by the verifier. Ownerless keys are operator keys: the
 * bootstrap keys, whose power is whatever API_KEYS says, and keys made by `keys:create` without
 * `--owner` or through the API by a bootstrap key; they are bounded by their own scopes only.
 */
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock";
import { type BootstrapKey, ConfigError } from "../../config";
import { API_KEY_SCOPES } from "../../db/schema";
import type { AuditLog } from "../../plugins/audit/log";
import {
  generateApiKey,
  hashApiKey,
  type KeyEnvironment,
  keyPrefix,
} from "../../plugins/auth/api-key-format";
import type { CredentialVerifier } from "../../plugins/auth/credentials";
import { boundScopes, ROLE_SCOPES, type Role, type Scope } from "../../plugins/auth/principal";

export interface ApiKeyRecord {
  id: string;
  name: string;
  prefix: string;
  scopes: Scope[];
  userId: string | null;
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  revokedAt: number | null;
  replacedBy: string | null;
  /** The owner's email when the key has an owner. */
  ownerEmail: string | null;
  origin: "api" | "bootstrap";
}

export interface NewApiKey {
  name: string;
  scopes: Scope[];
  userId: string | null;
  expiresAt?: number | null;
  environment?: KeyEnvironment;
}

export const MAX_ROTATION_GRACE_MS = 7 * 24 * 60 * 60 * 1000;
export const DEFAULT_ROTATION_GRACE_MS = 60 * 60 * 1000;

/** Why a key may not be created as asked; the edge turns it into a 422 or a CLI usage error. */
export type KeyRefusal =
  | { code: "SCOPES_EXCEED_ROLE"; role: Role; scopes: Scope[] }
  | { code: "TEST_KEY_IN_PRODUCTION" }
  | { code: "NO_OWNER" };

export interface ApiKeyServiceOptions {
  /** Production: no `pal_test_` key is created or rotated. */
  refuseTestKeys?: boolean;
}

const COLUMNS = `k.id, k.name, k.prefix, k.scopes, k.user_id AS userId, k.created_at AS createdAt,
  k.expires_at AS expiresAt, k.last_used_at AS lastUsedAt, k.revoked_at AS revokedAt,
  k.replaced_by AS replacedBy, u.email AS ownerEmail, k.origin
  FROM api_keys k LEFT JOIN users u ON u.id = k.user_id`;

type Row = Omit<ApiKeyRecord, "scopes"> & { scopes: string };

function toRecord(row: Row): ApiKeyRecord {
  return { ...row, scopes: JSON.parse(row.scopes) as Scope[] };
}

export function isScope(value: string): value is Scope {
  return (API_KEY_SCOPES as readonly string[]).includes(value);
}

export class ApiKeyService {
  constructor(
    private readonly sqlite: Database,
    private readonly clock: Clock,
    private readonly audit: AuditLog,
    private readonly credentials: CredentialVerifier,
    private readonly options: ApiKeyServiceOptions = {},
  ) {}

  /** Why `spec` may not be created, or null: the owner's role must allow every scope. */
  refusal(spec: NewApiKey): KeyRefusal | null {
    if (this.options.refuseTestKeys && spec.environment === "test") {
      return { code: "TEST_KEY_IN_PRODUCTION" };
    }
    if (spec.userId === null) return null;
    const owner = this.sqlite
      .query<{ role: Role }, [string]>("SELECT role FROM users WHERE id = ?")
      .get(spec.userId);
    if (!owner) return { code: "NO_OWNER" };
    const beyond = spec.scopes.filter((scope) => !ROLE_SCOPES[owner.role].includes(scope));
    return beyond.length > 0
      ? { code: "SCOPES_EXCEED_ROLE", role: owner.role, scopes: beyond }
      : null;
  }

  /** Creates the key; the caller has asked `refusal` first (a refused spec is a bug here). */
  create(spec: NewApiKey, actor: string | null): { key: string; record: ApiKeyRecord } {
    const refused = this.refusal(spec);
    if (refused) throw new Error(`API key refused: ${refused.code}`);
    const now = this.clock.now();
    const key = generateApiKey(spec.environment ?? "live");
    const id = Bun.randomUUIDv7();
    this.sqlite.run(
      `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, expires_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [
        id,
        spec.name,
        keyPrefix(key),
        hashApiKey(key),
        JSON.stringify(spec.scopes),
        spec.userId,
        now,
        spec.expiresAt ?? null,
      ],
    );
    this.audit.record({
      type: "admin.key.created",
      outcome: "success",
      actor,
      detail: { keyId: id, name: spec.name, scopes: spec.scopes.join(",") },
    });
    return { key, record: this.get(id)! };
  }

  get(id: string): ApiKeyRecord | null {
    const row = this.sqlite.query<Row, [string]>(`SELECT ${COLUMNS} WHERE k.id = ?`).get(id);
    return row ? toRecord(row) : null;
  }

  /** Every key, newest first; or only the keys acting for one user. */
  list(userId?: string): ApiKeyRecord[] {
    const rows =
      userId === undefined
        ? this.sqlite.query<Row, []>(`SELECT ${COLUMNS} ORDER BY k.created_at DESC`).all()
        : this.sqlite
            .query<Row, [string]>(
              `SELECT ${COLUMNS} WHERE k.user_id = ? ORDER BY k.created_at DESC`,
            )
            .all(userId);
    return rows.map(toRecord);
  }

  revoke(id: string, actor: string | null, reason?: string): boolean {
    const changed = this.sqlite.run(
      "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
      [this.clock.now(), id],
    ).changes;
    if (changed === 0) return false;
    this.credentials.revoke("key", id);
    this.audit.record({
      type: "admin.key.revoked",
      outcome: "success",
      actor,
      detail: reason ? { keyId: id, reason } : { keyId: id },
    });
    return true;
  }

  /**
   * After the owner's role changed: each active key keeps only the scopes the role allows; a key
   * left with none is revoked. Each change is audited with the old and new scopes.
   */
  boundToRole(userId: string, role: Role, actor: string | null): void {
    for (const key of this.list(userId)) {
      if (key.revokedAt !== null) continue;
      const kept = boundScopes(key.scopes, role);
      if (kept.length === key.scopes.length) continue;
      if (kept.length === 0) {
        this.revoke(key.id, actor, "owner_role_changed");
        continue;
      }
      this.sqlite.run("UPDATE api_keys SET scopes = ? WHERE id = ?", [
        JSON.stringify(kept),
        key.id,
      ]);
      this.credentials.revoke("key", key.id);
      this.audit.record({
        type: "admin.key.narrowed",
        outcome: "success",
        actor,
        detail: {
          keyId: key.id,
          from: key.scopes.join(","),
          to: kept.join(","),
          reason: "owner_role_changed",
        },
      });
    }
  }

  /** A new key with the same name, scopes and owner; the old one dies after `graceMs`. */
  /**
   * Issues the key's successor. It keeps the old key's owner; an ownerless (operator) key rotated
   * by someone who acts for a user becomes that user's, bounded by their role, as a key they
   * created would be — otherwise rotation would hand an admin user an admin key that outlives
   * their demotion. Bootstrap keys are not rotated here: API_KEYS is their truth.
   */
  rotate(
    id: string,
    graceMs: number,
    actor: string | null,
    actingUserId: string | null = null,
  ): { key: string; record: ApiKeyRecord } | null {
    const old = this.get(id);
    const now = this.clock.now();
    if (!old || old.revokedAt !== null || (old.expiresAt !== null && old.expiresAt <= now)) {
      return null;
    }
    if (old.origin === "bootstrap") return null;
    const ownerId = old.userId ?? actingUserId;
    const environment = old.prefix.startsWith("pal_test_") ? "test" : "live";
    // In production a pal_test_ key is not an active key: there is nothing to rotate.
    if (environment === "test" && this.options.refuseTestKeys) return null;
    const ownerRole =
      ownerId === null
        ? null
        : (this.sqlite
            .query<{ role: Role }, [string]>("SELECT role FROM users WHERE id = ?")
            .get(ownerId)?.role ?? null);
    if (ownerId !== null && ownerRole === null) return null;
    const scopes = boundScopes(old.scopes, ownerRole);
    if (scopes.length === 0) return null;
    const fresh = this.create(
      {
        name: old.name,
        scopes,
        userId: ownerId,
        expiresAt: old.expiresAt,
        environment,
      },
      actor,
    );
    const graceEnds = Math.min(now + graceMs, old.expiresAt ?? Number.POSITIVE_INFINITY);
    this.sqlite.run("UPDATE api_keys SET expires_at = ?, replaced_by = ? WHERE id = ?", [
      graceEnds,
      fresh.record.id,
      id,
    ]);
    // Cached copies of the old key carry its old expiry: drop them everywhere.
    this.credentials.revoke("key", id);
    this.audit.record({
      type: "admin.key.rotated",
      outcome: "success",
      actor,
      detail: { keyId: id, replacedBy: fresh.record.id, graceSeconds: Math.round(graceMs / 1000) },
    });
    return fresh;
  }

  /**
   * Makes the bootstrap keys follow API_KEYS: an entry not yet stored is added (as a hash), a
   * stored one whose scopes changed is updated, and a stored bootstrap key no longer listed is
   * revoked; each change is audited (actor `system`) and dropped from every process's cache. A
   * bootstrap key revoked through the API or CLI stays revoked while it is still listed (a leaked
   * key must not come back at the next restart). An entry that is already a key made through the
   * API or CLI, or that shares its first 16 characters with one, is refused with a ConfigError
   * naming API_KEYS. One immediate transaction, so processes starting together agree.
   */
  reconcileBootstrap(entries: readonly BootstrapKey[]): BootstrapOutcome {
    const outcome: BootstrapOutcome = { added: 0, updated: 0, revoked: 0, stillRevoked: [] };
    const changedKeys: string[] = [];
    this.sqlite
      .transaction(() => {
        const stored = this.sqlite
          .query<
            {
              id: string;
              secretHash: string;
              prefix: string;
              scopes: string;
              origin: string;
              revokedAt: number | null;
            },
            []
          >(
            `SELECT id, secret_hash AS secretHash, prefix, scopes, origin, revoked_at AS revokedAt
             FROM api_keys`,
          )
          .all();
        const byHash = new Map(stored.map((row) => [row.secretHash, row]));
        const byPrefix = new Map(stored.map((row) => [row.prefix, row]));
        const listed = new Set<string>();
        const now = this.clock.now();
        entries.forEach((entry, index) => {
          const hash = hashApiKey(entry.key);
          listed.add(hash);
          const row = byHash.get(hash);
          const scopes = JSON.stringify(entry.scopes);
          if (row && row.origin !== "bootstrap") {
            throw new ConfigError(
              "API_KEYS",
              `entry ${index + 1} is a key created through the API or CLI; remove it from API_KEYS`,
            );
          }
          if (!row && byPrefix.has(keyPrefix(entry.key))) {
            throw new ConfigError(
              "API_KEYS",
              `entry ${index + 1} shares its first 16 characters with a stored API key; use another key`,
            );
          }
          if (!row) {
            const id = Bun.randomUUIDv7();
            this.sqlite.run(
              `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at, origin)
               VALUES (?, ?, ?, ?, ?, NULL, ?, 'bootstrap')`,
              [id, `bootstrap-${index + 1}`, keyPrefix(entry.key), hash, scopes, now],
            );
            this.audit.record({
              type: "admin.key.created",
              outcome: "success",
              actor: "system",
              detail: { keyId: id, scopes: entry.scopes.join(","), reason: "api_keys_added" },
            });
            outcome.added++;
            return;
          }
          if (row.revokedAt !== null) {
            outcome.stillRevoked.push(index + 1);
            return;
          }
          if (row.scopes !== scopes) {
            this.sqlite.run("UPDATE api_keys SET scopes = ? WHERE id = ?", [scopes, row.id]);
            changedKeys.push(row.id);
            this.audit.record({
              type: "admin.key.scopes_changed",
              outcome: "success",
              actor: "system",
              detail: {
                keyId: row.id,
                from: (JSON.parse(row.scopes) as string[]).join(","),
                to: entry.scopes.join(","),
                reason: "api_keys_changed",
              },
            });
            outcome.updated++;
          }
        });
        for (const row of stored) {
          if (row.origin !== "bootstrap" || row.revokedAt !== null || listed.has(row.secretHash)) {
            continue;
          }
          this.revoke(row.id, "system", "removed_from_api_keys");
          outcome.revoked++;
        }
      })
      .immediate();
    for (const id of changedKeys) this.credentials.revoke("key", id);
    return outcome;
  }
}

export interface BootstrapOutcome {
  added: number;
  updated: number;
  revoked: number;
  /** API_KEYS entries (1-based) whose key was revoked and so stays revoked. */
  stillRevoked: number[];
}
