/**
 * @module
 * API key management: create (the key is returned once and only its hash kept), list, revoke,
 * rotate (a new key; the old one keeps working until the grace period ends), and the bootstrap
 * keys from API_KEYS, stored as hashes at start.
 */
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock";
import { API_KEY_SCOPES } from "../../db/schema";
import type { AuditLog } from "../../plugins/audit/log";
import { generateApiKey, hashApiKey, type KeyEnvironment, keyPrefix } from "./api-key-format";
import type { CredentialVerifier } from "./credentials";
import type { Scope } from "./principal";

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
const DEFAULT_BOOTSTRAP_SCOPES: Scope[] = ["chat", "payments"];

const COLUMNS = `id, name, prefix, scopes, user_id AS userId, created_at AS createdAt,
  expires_at AS expiresAt, last_used_at AS lastUsedAt, revoked_at AS revokedAt,
  replaced_by AS replacedBy`;

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
  ) {}

  create(spec: NewApiKey, actor: string | null): { key: string; record: ApiKeyRecord } {
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
    const row = this.sqlite
      .query<Row, [string]>(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`)
      .get(id);
    return row ? toRecord(row) : null;
  }

  /** Every key, newest first; or only the keys acting for one user. */
  list(userId?: string): ApiKeyRecord[] {
    const rows =
      userId === undefined
        ? this.sqlite
            .query<Row, []>(`SELECT ${COLUMNS} FROM api_keys ORDER BY created_at DESC`)
            .all()
        : this.sqlite
            .query<Row, [string]>(
              `SELECT ${COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at DESC`,
            )
            .all(userId);
    return rows.map(toRecord);
  }

  revoke(id: string, actor: string | null): boolean {
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
      detail: { keyId: id },
    });
    return true;
  }

  /** A new key with the same name, scopes and owner; the old one dies after `graceMs`. */
  rotate(
    id: string,
    graceMs: number,
    actor: string | null,
  ): { key: string; record: ApiKeyRecord } | null {
    const old = this.get(id);
    const now = this.clock.now();
    if (!old || old.revokedAt !== null || (old.expiresAt !== null && old.expiresAt <= now)) {
      return null;
    }
    const environment = old.prefix.startsWith("pal_test_") ? "test" : "live";
    const fresh = this.create(
      {
        name: old.name,
        scopes: old.scopes,
        userId: old.userId,
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
   * Stores the API_KEYS entries (`key` or `key:scope+scope`) as hashes, once each. The keys
   * themselves are never written anywhere.
   */
  bootstrap(entries: readonly string[]): number {
    let added = 0;
    entries.forEach((entry, index) => {
      const colon = entry.lastIndexOf(":");
      const key = colon > 0 ? entry.slice(0, colon) : entry;
      const scopes =
        colon > 0
          ? entry
              .slice(colon + 1)
              .split("+")
              .filter(isScope)
          : DEFAULT_BOOTSTRAP_SCOPES;
      const hash = hashApiKey(key);
      const exists = this.sqlite
        .query<{ n: number }, [string]>("SELECT count(*) AS n FROM api_keys WHERE secret_hash = ?")
        .get(hash)!.n;
      if (exists > 0) return;
      this.sqlite.run(
        `INSERT INTO api_keys (id, name, prefix, secret_hash, scopes, user_id, created_at)
         VALUES (?, ?, ?, ?, ?, NULL, ?)`,
        [
          Bun.randomUUIDv7(),
          `bootstrap-${index + 1}`,
          keyPrefix(key),
          hash,
          JSON.stringify(scopes),
          this.clock.now(),
        ],
      );
      added++;
    });
    return added;
  }
}
