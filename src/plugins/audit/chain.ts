/**
 * @module
 * The audit hash chain. Each row's hash is SHA-256 over the previous row's hash and the row's
 * fields, in a fixed order and encoding, so a changed, removed or reordered row shows as the first
 * row whose stored hash or prev_hash no longer matches.
 */

export const GENESIS_HASH = "0".repeat(64);

export interface ChainedFields {
  at: number;
  type: string;
  route: string | null;
  requestId: string | null;
  outcome: string;
  detail: string;
  subjectCommit: string;
}

function sha256Hex(text: string): string {
  return new Bun.CryptoHasher("sha256").update(text).digest("hex");
}

export function rowHash(prevHash: string, fields: ChainedFields): string {
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

/** Commits to the personal fields without revealing them once the salt is deleted. */
export function subjectCommit(salt: string, actor: string | null, ip: string | null): string {
  return sha256Hex(JSON.stringify([salt, actor, ip]));
}

export function newSalt(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
}
