/**
 * @module
 * The keyed audit chain. Each row's hash is HMAC-SHA256, keyed with a key derived from
 * AUDIT_SECRET_KEY, over the row's id, the previous row's hash and the row's fields in a fixed
 * order and encoding. Without the key nobody can compute a valid hash, so an edited, inserted,
 * deleted, reordered or re-chained row shows as the first row whose id, prev_hash or hash no longer
 * matches. Retention checkpoints and erasure rewrites carry MACs under the same key, so they cannot
 * be forged either. Keys are separated by purpose (chain, pseudonyms) with HMAC-based derivation.
 *
 * `legacyRowHash` is the unkeyed SHA-256 chain used before AUDIT_SECRET_KEY existed; it is only
 * read when an old database is upgraded (see upgrade.ts).
 */
import { sealMatches } from "../../db/row-seal";
import { withPrincipalsReplaced } from "./events";

export const GENESIS_HASH = "0".repeat(64);

/** What every pseudonym erasure gives an actor starts with. */
export const PSEUDONYM_PREFIX = "erased:";

export interface ChainedFields {
  id: number;
  at: number;
  type: string;
  route: string | null;
  requestId: string | null;
  outcome: string;
  detail: string;
  subjectCommit: string;
}

export interface CheckpointFields {
  createdAt: number;
  lastDeletedId: number;
  lastHash: string;
  deletedCount: number;
}

function hmacHex(key: string | Buffer, text: string): string {
  return new Bun.CryptoHasher("sha256", key).update(text).digest("hex");
}

function sha256Hex(text: string): string {
  return new Bun.CryptoHasher("sha256").update(text).digest("hex");
}

/** The keys the audit log derives from AUDIT_SECRET_KEY, and the MACs made with them. */
export class AuditKeys {
  /** Names the key in each row (not secret: a hash), so a wrong key is told apart from tampering. */
  readonly keyId: string;
  private readonly chainKey: Buffer;
  private readonly pseudonymKey: Buffer;

  constructor(secret: string) {
    const derive = (purpose: string) =>
      new Bun.CryptoHasher("sha256", secret).update(purpose).digest();
    this.chainKey = derive("palisade audit chain v1");
    this.pseudonymKey = derive("palisade audit pseudonym v1");
    this.keyId = derive("palisade audit key id v1").toString("hex").slice(0, 16);
  }

  rowHash(prevHash: string, fields: ChainedFields): string {
    const { id, at, type, route, requestId, outcome, detail, subjectCommit: commit } = fields;
    const common = [this.keyId, id, prevHash, at, type, route, requestId, outcome];
    return hmacHex(
      this.chainKey,
      JSON.stringify(
        commitsToDetail(commit)
          ? // The detail is covered by the commitment instead, so erasure can rewrite ids in it.
            ["row with detail committed", ...common, commit]
          : ["row", ...common, detail, commit],
      ),
    );
  }

  /**
   * Authenticates an erasure's rewrite of a row's actor and address (its salt dropped), and of its
   * detail where the row commits to it.
   */
  erasureMac(row: ErasedFields): string {
    const { id, subjectCommit: commit, actor, ip, detail } = row;
    return hmacHex(
      this.chainKey,
      JSON.stringify(
        commitsToDetail(commit)
          ? ["erasure with detail", this.keyId, id, commit, actor, ip, detail]
          : ["erasure", this.keyId, id, commit, actor, ip],
      ),
    );
  }

  /** Authenticates the pseudonym an erasure recorded for an actor (`audit_erased_actors`). */
  erasedActorMac(actorKey: string, pseudonym: string): string {
    return hmacHex(
      this.chainKey,
      JSON.stringify(["erased actor", this.keyId, actorKey, pseudonym]),
    );
  }

  /** Whether `mac` is the erasure's for this actor key and pseudonym (compared in constant time). */
  vouchesForErasedActor(actorKey: string, pseudonym: string, mac: string): boolean {
    return sealMatches(this.erasedActorMac(actorKey, pseudonym), mac);
  }

  checkpointMac(checkpoint: CheckpointFields): string {
    return hmacHex(
      this.chainKey,
      JSON.stringify([
        "checkpoint",
        this.keyId,
        checkpoint.createdAt,
        checkpoint.lastDeletedId,
        checkpoint.lastHash,
        checkpoint.deletedCount,
      ]),
    );
  }

  /** A stable pseudonym for an erased actor that cannot be recomputed from the id without the key. */
  pseudonym(actor: string): string {
    return `${PSEUDONYM_PREFIX}${hmacHex(this.pseudonymKey, actor).slice(0, 24)}`;
  }
}

/** The unkeyed hash of rows written before the chain was keyed (anyone could recompute it). */
export function legacyRowHash(prevHash: string, fields: Omit<ChainedFields, "id">): string {
  return sha256Hex(
    JSON.stringify([
      prevHash,
      fields.at,
      fields.type,
      fields.route,
      fields.requestId,
      fields.outcome,
      fields.detail,
      fields.subjectCommit,
    ]),
  );
}

/** What an erasure rewrites of a row, and the commitment it rewrites it under. */
export interface ErasedFields {
  id: number;
  subjectCommit: string;
  actor: string | null;
  ip: string | null;
  detail: string;
}

/** Marks a commitment that covers the detail too (rows written since erasure rewrites details). */
const DETAIL_COMMITTED = "d:";

/** Whether the row's commitment covers its detail (and its hash does not). */
export function commitsToDetail(subjectCommit: string): boolean {
  // A value written into the file as a BLOB (or a number) commits to nothing: the row is then
  // reported as altered, and erased all the same, rather than failing the erasure, `audit:verify`
  // and every maintenance run with a TypeError (probe 41b F3).
  return typeof subjectCommit === "string" && subjectCommit.startsWith(DETAIL_COMMITTED);
}

/**
 * A stored detail with the fields naming `actor` (`principalsNamed`) replaced by its pseudonym; as
 * it was when none does (or it is not a stored detail's JSON object).
 */
export function detailWithout(detail: string, actor: string, pseudonym: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(detail);
  } catch {
    return detail;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return detail;
  const fields = parsed as Record<string, unknown>;
  const rewritten = withPrincipalsReplaced(fields, (named) => (named === actor ? pseudonym : null));
  return rewritten === fields ? detail : JSON.stringify(rewritten);
}

/**
 * Commits to the personal fields without revealing them once the salt is deleted: actor and
 * address, and the detail, which may name other people (a key's id, the user an admin looked up).
 * Rows written before details were committed (`detail` undefined) commit to actor and address.
 */
export function subjectCommit(
  salt: string,
  actor: string | null,
  ip: string | null,
  detail?: string,
): string {
  return detail === undefined
    ? sha256Hex(JSON.stringify([salt, actor, ip]))
    : `${DETAIL_COMMITTED}${sha256Hex(JSON.stringify(["with detail", salt, actor, ip, detail]))}`;
}

/** Whether a row still matches the commitment its salt makes, in whichever form it was written. */
export function matchesCommit(row: {
  subjectSalt: string;
  subjectCommit: string;
  actor: string | null;
  ip: string | null;
  detail: string;
}): boolean {
  const detail = commitsToDetail(row.subjectCommit) ? row.detail : undefined;
  return subjectCommit(row.subjectSalt, row.actor, row.ip, detail) === row.subjectCommit;
}

export function newSalt(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
}
