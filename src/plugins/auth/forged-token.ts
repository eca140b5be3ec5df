/**
 * @module
 * Reports an access token whose signature verifies but which claims a role its account does not
 * have. Palisade signs a token with the account's role and ends the account's sessions when the
 * role changes, so such a token was signed by someone holding `JWT_SECRET_KEY` (probe 27d F3: it
 * was refused, but only counted as a revoked token). Once per account and claimed role per process
 * (db/row-seal oncePerRow): an error line and an `auth.credential_tampered` event, which pages
 * (`PalisadeCredentialTampered`), naming the account and the role claimed — never the token.
 */
import { oncePerRow } from "../../db/row-seal";
import type { AuditEvent } from "../audit/events";

export type ForgedTokenReport = (userId: string, claimedRole: string) => void;

export function forgedTokenReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
}): ForgedTokenReport {
  const once = oncePerRow<"users">((table, id, claimed) => {
    deps.logger.error(
      { table, id, claimedRole: claimed },
      "an access token signed with JWT_SECRET_KEY claims a role its account does not have: the signing key has leaked; it is refused (rotate JWT_SECRET_KEY)",
    );
    deps.audit.record({
      type: "auth.credential_tampered",
      outcome: "denied",
      actor: "system",
      detail: { table, id, claimedRole: claimed ?? "" },
    });
  });
  return (userId, claimedRole) => once("users", userId, claimedRole.slice(0, 16));
}
