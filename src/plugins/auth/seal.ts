/**
 * @module
 * Credential seals: what keeps someone who can write the database file, but does not hold
 * AUDIT_SECRET_KEY, from making or widening a credential.
 *
 * Every account, API key and refresh token row carries a `seal`, an HMAC (keyed from
 * AUDIT_SECRET_KEY) of the columns that decide what the credential grants. A row is trusted only
 * when its seal matches those columns, so a row written straight into the file — an API key with
 * a hash the writer chose, a password hash or role swapped in, a key's scopes or owner widened, a
 * revoked key brought back, a refresh token for another account — is refused like one that does
 * not exist, and reported (`credentialTampered`).
 *
 * What is sealed:
 * - an account: its id, address (as shown and as looked up), password hash and role — the address
 *   too, or an operator naming one account by email could be made to act on another;
 * - an API key: its id, prefix, hash, scopes, owner, expiry, revocation and origin (so every
 *   change of those rewrites the seal, in the same statement's transaction);
 * - a refresh token: its id, owner, family, hash and expiry (written once);
 * - a session (refresh family): its id, owner and revocation, so a logout, a reuse or a role
 *   change cannot be undone in the file (its access tokens would work again until they expire).
 *
 * Not sealed: a refresh token's used mark (clearing it lets whoever holds that spent token use it
 * once more without tripping reuse detection), and a copy of an older row of the same file, seal
 * and all (a rollback; only a backup restore undoes it).
 *
 * The key is AUDIT_SECRET_KEY's, derived for this one use: that key is already never rotated, and
 * a new required secret would stop every deployment at its next start.
 */
import { createRowSealer, oncePerRow, sealMatches } from "../../db/row-seal";
import type { AuditEvent } from "../audit/events";

export interface SealedAccount {
  id: string;
  /** The address as shown, and the key every lookup by address compares (null: set aside). */
  email: string;
  emailKey: string | null;
  passwordHash: string;
  role: string;
}

export interface SealedApiKey {
  id: string;
  prefix: string;
  secretHash: string;
  scopes: string;
  userId: string | null;
  expiresAt: number | null;
  revokedAt: number | null;
  origin: string;
}

export interface SealedFamily {
  id: string;
  userId: string;
  revokedAt: number | null;
}

export interface SealedRefreshToken {
  id: string;
  userId: string;
  familyId: string;
  tokenHash: string;
  expiresAt: number;
}

/** A key's lineage: the first key of the rotation chain `id` ends (its `lineage_seal` covers the pair). */
export interface SealedLineage {
  id: string;
  lineage: string;
}

/**
 * A key's rotation mark: the key a rotation replaced `id` with, or null (`successor_seal`), with
 * the key's expiry, which the rotation sets (the grace's end): the mark the key had before its
 * rotation, written back over the rotated row, does not match the expiry the rotation left.
 */
export interface SealedSuccessor {
  id: string;
  replacedBy: string | null;
  expiresAt: number | null;
}

/** A row as stored: its sealed columns and its seal (null when it has none). */
type Stored<Row> = Row & { seal: string | null };

export interface CredentialSeal {
  account(row: SealedAccount): string;
  apiKey(row: SealedApiKey): string;
  refreshToken(row: SealedRefreshToken): string;
  family(row: SealedFamily): string;
  lineage(row: SealedLineage): string;
  successor(row: SealedSuccessor): string;
  /** Whether a stored row matches its seal; one that does not is reported (`report`). */
  intact: {
    account(row: Stored<SealedAccount>): boolean;
    apiKey(row: Stored<SealedApiKey>): boolean;
    refreshToken(row: Stored<SealedRefreshToken>): boolean;
    family(row: Stored<SealedFamily>): boolean;
    /** A key's lineage as stored (`lineage`, `lineage_seal`); a key without one has none intact. */
    lineage(row: { id: string; lineage: string | null; lineageSeal: string | null }): boolean;
    /** A key's rotation mark as stored (`replaced_by`, `successor_seal`). */
    successor(row: SealedSuccessor & { successorSeal: string | null }): boolean;
  };
  /**
   * Whether the audit log records this principal (`user:<id>`, `key:<id>`) erased, reporting
   * nothing: what an operator is told of a row `intact` refuses.
   */
  erased(principal: string): boolean;
}

export type SealedTable = "users" | "api_keys" | "refresh_tokens" | "refresh_families";

/**
 * What of a key row failed, when it was not the row's own seal: its lineage (the key then reaches
 * no payments and cannot be rotated) or its rotation mark (it cannot be rotated); the key itself
 * still works in both. Or, of an account or a key, that the audit log records it erased
 * (`erased`): the row, seal and all, was copied back from before the erasure, and is refused.
 */
export type SealedPart = "lineage" | "rotation_mark" | "erased";

/** A row (or part of one) whose seal does not match: logged and audited by whoever read it. */
export type TamperReport = (table: SealedTable, id: string, part?: SealedPart) => void;

const KEY_LABEL = "palisade credential seal v1";

/**
 * The seal keyed from `auditSecret`. `report` hears of every row `intact` finds not matching
 * (the serving process's `tamperReporter`); absent, mismatches are only answered.
 */
export function createCredentialSeal(
  auditSecret: string,
  report: TamperReport = () => {},
  /**
   * Whether the audit log records this principal (`user:<id>`, `key:<id>`) erased. An erasure
   * revokes the account's keys and deletes the account (its keys' rows with it), and ids are never
   * reused, so an account row of an erased principal, or a key row of one in force, was copied back
   * into the file from before the erasure (a backup): its seal still matches, but it is refused like a forged row
   * (probe 79c F1: the erased admin signed in again and acted under the erasure's pseudonym, with
   * no address, and nothing reported it). Absent, no row is taken for erased (the upgrade's
   * sealing, which runs before the audit log exists).
   */
  erased: (principal: string) => boolean = () => false,
): CredentialSeal {
  const mac = createRowSealer(auditSecret, KEY_LABEL);
  const account = (row: SealedAccount) =>
    mac(["account", row.id, row.email, row.emailKey, row.passwordHash, row.role]);
  const apiKey = (row: SealedApiKey) =>
    mac([
      "api_key",
      row.id,
      row.prefix,
      row.secretHash,
      row.scopes,
      row.userId,
      row.expiresAt,
      row.revokedAt,
      row.origin,
    ]);
  const family = (row: SealedFamily) => mac(["family", row.id, row.userId, row.revokedAt]);
  const refreshToken = (row: SealedRefreshToken) =>
    mac(["refresh_token", row.id, row.userId, row.familyId, row.tokenHash, row.expiresAt]);
  const lineage = (row: SealedLineage) => mac(["api_key_lineage", row.id, row.lineage]);
  const successor = (row: SealedSuccessor) =>
    mac(["api_key_successor", row.id, row.replacedBy, row.expiresAt]);
  const checked = (intact: boolean, table: SealedTable, id: string, part?: SealedPart) => {
    if (!intact) report(table, id, part);
    return intact;
  };
  return {
    account,
    apiKey,
    family,
    refreshToken,
    lineage,
    successor,
    erased,
    intact: {
      account: (row) =>
        checked(sealMatches(account(row), row.seal), "users", row.id) &&
        checked(!erased(`user:${row.id}`), "users", row.id, "erased"),
      apiKey: (row) =>
        checked(sealMatches(apiKey(row), row.seal), "api_keys", row.id) &&
        // An erasure leaves its keys revoked, as they were: only one in force again was copied back.
        (row.revokedAt !== null || checked(!erased(`key:${row.id}`), "api_keys", row.id, "erased")),
      family: (row) => checked(sealMatches(family(row), row.seal), "refresh_families", row.id),
      refreshToken: (row) =>
        checked(sealMatches(refreshToken(row), row.seal), "refresh_tokens", row.id),
      lineage: (row) =>
        checked(
          row.lineage !== null &&
            sealMatches(lineage({ id: row.id, lineage: row.lineage }), row.lineageSeal),
          "api_keys",
          row.id,
          "lineage",
        ),
      successor: (row) =>
        checked(
          sealMatches(successor(row), row.successorSeal),
          "api_keys",
          row.id,
          "rotation_mark",
        ),
    },
  };
}

/**
 * Reports a tampered row once per process (db/row-seal oncePerRow): an error line and an
 * `auth.credential_tampered` audit event naming the table and the row's id (cut to 64 characters;
 * never a column's value). Every use of a forged credential is a request the rate limits count.
 */
export function tamperReporter(deps: {
  logger: { error(fields: Record<string, unknown>, message: string): void };
  audit: { record(event: AuditEvent): void };
  limit?: number;
}): TamperReport {
  // Once per row and part: a forged rotation mark reported first must not hide a row forged later.
  const once = oncePerRow<`${SealedTable}${"" | `.${SealedPart}`}`>((where, id) => {
    const [table, part] = where.split(".") as [SealedTable, SealedPart | undefined];
    deps.logger.error(
      part === undefined ? { table, id } : { table, id, part },
      part === "erased"
        ? "a credential row of an erased account or key is in the database file again, copied back from before its erasure (a backup restored over it, or rows copied from one): it is refused"
        : `a credential row${part === undefined ? "" : `'s ${PART_NAMES[part]}`} does not match its seal: it was written into the database file, not by Palisade; ${part === undefined ? "it is refused" : PART_REFUSALS[part]}`,
    );
    deps.audit.record({
      type: "auth.credential_tampered",
      outcome: "denied",
      actor: "system",
      detail: part === undefined ? { table, id } : { table, id, part },
    });
  }, deps.limit);
  return (table, id, part) => once(part === undefined ? table : `${table}.${part}`, id);
}

const PART_NAMES: Record<Exclude<SealedPart, "erased">, string> = {
  lineage: "lineage",
  rotation_mark: "rotation mark",
};

const PART_REFUSALS: Record<Exclude<SealedPart, "erased">, string> = {
  lineage: "the key reaches no payments and cannot be rotated; it still works for its other scopes",
  rotation_mark: "the key cannot be rotated; it still works",
};
