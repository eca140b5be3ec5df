/**
 * @module
 * `db:verify`: a database file checked whole, as after a restore: SQLite's own `integrity_check`,
 * the audit chain (against a logged anchor when one is given, as `audit:verify`), and every sealed
 * row (seal-sweep.ts). The service refuses a tampered row only when it uses it; this names every
 * one at once, so a planted change shows before the file is put back into service.
 */
import type { Database } from "bun:sqlite";
import { AuditKeys } from "../../plugins/audit/chain";
import { verifyAuditChain } from "../../plugins/audit/log";
import { describeFailure } from "../../plugins/audit/verify";
import { type SealFinding, type SealSweep, SWEPT_TABLES, sweepSeals } from "../../seal-sweep";
import { CliError, type Command } from "../command";
import { parseAnchor } from "./audit";

export const dbVerify: Command = {
  name: "db:verify",
  summary:
    "Check DATABASE_PATH whole (integrity_check, the audit chain, every sealed row: accounts, keys, sessions, chat, payments, WhatsApp replies, blocks); names each row that fails; exits 1 on any fault",
  usage: "db:verify [--head HASH --count N]",
  run(args, context) {
    const anchor = parseAnchor(args.flags.head, args.flags.count);
    const config = context.config();
    const sqlite = context.db().$client;
    const problems = integrityProblems(sqlite);
    // Nothing read from a damaged file can be trusted either way: the first fault ends the check.
    if (problems.length > 0) {
      throw new CliError(`integrity_check failed: ${problems.slice(0, 3).join("; ")}`);
    }
    context.out("integrity ok");
    const faults: string[] = [];
    const chain = verifyAuditChain(sqlite, new AuditKeys(config.audit.secretKey), { anchor });
    if (chain.ok) {
      context.out(
        `audit chain intact: ${chain.checked} rows verified; head ${chain.head.hash} count ${chain.head.count}` +
          (anchor ? `; anchor at row ${anchor.count} confirmed` : ""),
      );
    } else {
      context.out(`audit chain: ${describeFailure(chain)}`);
      faults.push("the audit chain does not verify");
    }
    const sweep = sweepSeals(sqlite, config.audit.secretKey);
    for (const line of sweepLines(sweep)) context.out(line);
    const failed = failedRows(sweep);
    if (failed > 0)
      faults.push(`${failed} ${failed === 1 ? "row does" : "rows do"} not match their seals`);
    if (faults.length > 0) throw new CliError(faults.join("; "));
    return 0;
  },
};

/** `PRAGMA integrity_check`'s complaints; none for a sound file. */
export function integrityProblems(sqlite: Database): string[] {
  const rows = sqlite
    .query<{ integrity_check: string }, []>("PRAGMA integrity_check")
    .all()
    .map((row) => row.integrity_check);
  return rows.length === 1 && rows[0] === "ok" ? [] : rows;
}

export function failedRows(sweep: SealSweep): number {
  return SWEPT_TABLES.reduce((sum, table) => sum + sweep.failed[table], 0);
}

/** What a sweep found, a line each: every row named (up to the sweep's limit), then the counts. */
export function sweepLines(sweep: SealSweep): string[] {
  const failed = failedRows(sweep);
  const checked = SWEPT_TABLES.reduce((sum, table) => sum + sweep.checked[table], 0);
  const counts = SWEPT_TABLES.map((table) => `${table} ${sweep.checked[table]}`).join(", ");
  if (failed === 0) return [`seals intact: ${checked} rows verified (${counts})`];
  const unnamed = failed - sweep.findings.length;
  return [
    ...sweep.findings.map(findingLine),
    ...(unnamed > 0 ? [`… and ${unnamed} more not named`] : []),
    `seals: ${failed} of ${checked} rows do not match (${SWEPT_TABLES.filter(
      (table) => sweep.failed[table] > 0,
    )
      .map((table) => `${table} ${sweep.failed[table]}`)
      .join(
        ", ",
      )}): written into the file without AUDIT_SECRET_KEY; the service refuses each (see README, Backup and restore)`,
  ];
}

function findingLine({ table, id, part }: SealFinding): string {
  switch (part) {
    case "lineage":
      return `${table} ${id}: its lineage does not match its seal (the key works, but reaches no payments and cannot be rotated)`;
    case "rotation_mark":
      return `${table} ${id}: its rotation mark does not match its seal (the key works, but cannot be rotated)`;
    case "chain":
      return `${table} ${id}: does not follow the message before it in its conversation (a message deleted, moved or put back)`;
    default:
      return `${table} ${id}: does not match its seal`;
  }
}
