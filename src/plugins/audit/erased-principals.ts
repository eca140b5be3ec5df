/**
 * @module
 * Whether the audit log records a principal (`user:<id>`, `key:<id>`) erased, for the credential
 * seals (plugins/auth/seal.ts `erased`) and `db:verify`.
 *
 * Two records say so: the erasure's row of `audit_erased_actors` (keyed by the principal's keyed
 * pseudonym, which no one without AUDIT_SECRET_KEY can make for a living one), and, for an account,
 * the `privacy.erased` event, whose actor is that same pseudonym. The first is no part of the
 * hash chain: someone with the file deleted it, and the erased admin copied back from a backup
 * signed in again (probe 80a F1). The event is: deleted from the middle of the log, it breaks the
 * chain (`audit:verify`); only the newest rows, or retention, take it without a trace (README,
 * Audit log).
 */
import type { Database } from "bun:sqlite";
import type { AuditKeys } from "./chain";

export function erasedPrincipals(
  sqlite: Database,
  keys: AuditKeys,
): (principal: string) => boolean {
  const recorded = sqlite.query<{ one: number }, [string]>(
    "SELECT 1 AS one FROM audit_erased_actors WHERE actor_key = ?1",
  );
  const erasureEvent = sqlite.query<{ one: number }, [string]>(
    "SELECT 1 AS one FROM audit_events WHERE actor = ?1 AND type = 'privacy.erased' LIMIT 1",
  );
  // A keyed HMAC each is most of a check's cost (~10 µs here, where the two lookups are ~4): kept
  // per principal, as the audit log keeps its actors' keys, and emptied when full.
  const pseudonyms = new Map<string, string>();
  return (principal) => {
    let pseudonym = pseudonyms.get(principal);
    if (pseudonym === undefined) {
      if (pseudonyms.size >= PSEUDONYMS_KEPT) pseudonyms.clear();
      pseudonym = keys.pseudonym(principal);
      pseudonyms.set(principal, pseudonym);
    }
    return recorded.get(pseudonym) !== null || erasureEvent.get(pseudonym) !== null;
  };
}

/** How many principals' pseudonyms one reader keeps. */
const PSEUDONYMS_KEPT = 4096;
