/**
 * @module
 * The user's rights over their data: export everything held about them, and erasure.
 *
 * Erasure ends every session and key, lets each contributor (chat, payments, as they land) delete
 * or strip what it holds, replaces the user's id in the audit log by a keyed pseudonym (dropping
 * the address and the salt that committed to both; the audit log authenticates each rewrite with
 * AUDIT_SECRET_KEY, so the chain still verifies and a rewrite by anyone else does not), and deletes
 * the account row. Features register as `PrivacyContributor`s so the export and the erasure stay
 * complete as they are added.
 */
import type { Database } from "bun:sqlite";
import type { Clock } from "../../clock";
import type { AuditLog } from "../../plugins/audit/log";
import type { ApiKeyService } from "../auth/api-keys";
import type { AuthService } from "../auth/service";

export interface PrivacyContributor {
  /** Its section's name in the export document. */
  name: string;
  export(userId: string): unknown;
  /** Deletes, or strips the personal fields of, what it holds for the user. */
  erase(userId: string): void;
  /**
   * Deletes what is older than its retention allows (chat messages past CHAT_RETENTION_DAYS);
   * bounded work per call, run by the background maintenance. Returns how many rows went.
   */
  retain?(now: number): number;
}

export interface PrivacyServiceOptions {
  sqlite: Database;
  clock: Clock;
  audit: AuditLog;
  auth: AuthService;
  apiKeys: ApiKeyService;
  contributors?: readonly PrivacyContributor[];
}

export class PrivacyService {
  constructor(private readonly options: PrivacyServiceOptions) {}

  pseudonymOf(actor: string): string {
    return this.options.audit.pseudonymOf(actor);
  }

  export(userId: string): Record<string, unknown> | null {
    const { sqlite, auth, apiKeys } = this.options;
    const user = auth.findUser(userId);
    if (!user) return null;
    const sessions = sqlite
      .query(
        `SELECT family_id AS familyId, min(created_at) AS startedAt, max(expires_at) AS expiresAt,
                max(revoked_at) AS revokedAt
         FROM refresh_tokens WHERE user_id = ? GROUP BY family_id ORDER BY startedAt`,
      )
      .all(userId);
    const keys = apiKeys.list(userId).map(({ userId: _owner, ...key }) => key);
    // An event on the account is the user's data, but its address is only theirs when their own
    // credential succeeded: a failed login or a replayed refresh token comes from whoever tried it,
    // and that third party's address must not be handed out. Those events are listed without it.
    const auditEvents = sqlite
      .query<{ detail: string; ip: string | null }, [string]>(
        `SELECT id, at, type, CASE WHEN outcome = 'success' THEN ip END AS ip, route,
                request_id AS requestId, outcome, detail
         FROM audit_events WHERE actor = ? ORDER BY id`,
      )
      .all(`user:${userId}`)
      .map((row) => ({ ...row, detail: JSON.parse(row.detail) }));
    const document: Record<string, unknown> = {
      exportedAt: new Date(this.options.clock.now()).toISOString(),
      profile: user,
      sessions,
      apiKeys: keys,
      auditEvents,
    };
    for (const contributor of this.options.contributors ?? []) {
      document[contributor.name] = contributor.export(userId);
    }
    return document;
  }

  /** Runs every contributor's retention; the maintenance task calls this. */
  retain(now: number): number {
    let removed = 0;
    for (const contributor of this.options.contributors ?? []) {
      removed += contributor.retain?.(now) ?? 0;
    }
    return removed;
  }

  erase(userId: string, meta: { ip: string | null; requestId: string | null }): boolean {
    const { sqlite, auth, apiKeys, audit } = this.options;
    if (!auth.findUser(userId)) return false;
    const actor = `user:${userId}`;
    const pseudonym = this.pseudonymOf(actor);
    sqlite
      .transaction(() => {
        auth.revokeUserSessions(userId);
        for (const key of apiKeys.list(userId)) {
          if (key.revokedAt === null) apiKeys.revoke(key.id, pseudonym);
        }
        for (const contributor of this.options.contributors ?? []) contributor.erase(userId);
        // Flushes queued events about this user first; each rewrite is authenticated.
        audit.pseudonymise(actor, pseudonym);
        sqlite.run("DELETE FROM users WHERE id = ?", [userId]);
      })
      .immediate();
    audit.record({
      type: "privacy.erased",
      outcome: "success",
      actor: pseudonym,
      requestId: meta.requestId,
    });
    return true;
  }
}
