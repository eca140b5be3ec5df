import { storedTimeText, storedValueText } from "../../db/stored-values";
import {
  DEFAULT_TOP,
  MAX_TOP,
  parseSince,
  presentSummary,
  type SummaryCategory,
  summarizeSecurity,
} from "../../modules/admin/security-summary";
import { AuditKeys } from "../../plugins/audit/chain";
import { type AuditHead, recentAuditEvents, verifyAuditChain } from "../../plugins/audit/log";
import { describeFailure, rowVouched } from "../../plugins/audit/verify";
import { CliError, type Command, EXIT_USAGE, wholeNumberFlag } from "../command";
import { terminalJson } from "../terminal";

export const auditTail: Command = {
  name: "audit:tail",
  summary: "Print the most recent audit events, oldest first (--limit N, default 20; --json)",
  usage: "audit:tail [--limit N] [--json]",
  run(args, context) {
    const limit = wholeNumberFlag("limit", args.flags.limit ?? "20", 10_000);
    // Each row checked alone, as the admin API marks it: a row changed in the file was printed
    // as genuine (probe 84j F3).
    const keys = new AuditKeys(context.config().audit.secretKey);
    for (const row of recentAuditEvents(context.db().$client, limit)) {
      const tampered = !rowVouched(keys, row);
      if (args.flags.json) {
        const {
          subjectSalt: _salt,
          subjectCommit: _commit,
          keyId: _key,
          erasureMac: _erasure,
          ...shown
        } = row;
        context.out(terminalJson({ ...shown, tampered }));
        continue;
      }
      context.out(
        // As the file holds them: a row written there with a time that is none is the one the
        // operator is looking for, not one to stop at (probe 46b F2).
        [
          storedTimeText(row.at),
          storedValueText(row.type),
          storedValueText(row.outcome),
          `actor=${storedValueText(row.actor) ?? "-"}`,
          `ip=${storedValueText(row.ip) ?? "-"}`,
          `route=${storedValueText(row.route) ?? "-"}`,
          `request=${storedValueText(row.requestId) ?? "-"}`,
          storedValueText(row.detail),
          ...(tampered
            ? ["TAMPERED (does not match its hash: changed in the database file; see audit:verify)"]
            : []),
        ].join("  "),
      );
    }
    return 0;
  },
};

export const auditVerify: Command = {
  name: "audit:verify",
  summary:
    "Check the audit log's keyed hash chain (needs AUDIT_SECRET_KEY); with --head H --count N from a logged anchor, also that no newer row was deleted; exits 1 at the first fault",
  usage: "audit:verify [--head HASH --count N]",
  run(args, context) {
    const anchor = parseAnchor(args.flags.head, args.flags.count);
    const keys = new AuditKeys(context.config().audit.secretKey);
    const result = verifyAuditChain(context.db().$client, keys, { anchor });
    if (!result.ok) {
      throw new CliError(describeFailure(result));
    }
    context.out(
      `audit chain intact: ${result.checked} rows verified; head ${result.head.hash} count ${result.head.count}` +
        (anchor ? `; anchor at row ${anchor.count} confirmed` : ""),
    );
    return 0;
  },
};

export function parseAnchor(
  head: string | true | undefined,
  count: string | true | undefined,
): AuditHead | undefined {
  if (head === undefined && count === undefined) return undefined;
  if (typeof head !== "string" || !/^[0-9a-f]{64}$/.test(head)) {
    throw new CliError("--head must be the 64 hex characters of a logged auditHead", EXIT_USAGE);
  }
  if (typeof count !== "string" || !/^\d{1,15}$/.test(count)) {
    throw new CliError("--count must be the logged auditCount, a whole number", EXIT_USAGE);
  }
  return { hash: head, count: Number(count) };
}

export const auditTop: Command = {
  name: "audit:top",
  summary:
    "Top addresses and principals by failed logins, rate-limit refusals and webhook signature failures (--since 24h|7d|ISO, at most 30 days; --limit N; --json)",
  usage: "audit:top [--since 24h] [--limit 10] [--json]",
  async run(args, context) {
    const now = Date.now();
    const rawSince = args.flags.since;
    if (rawSince === true) throw new CliError("--since needs a value", EXIT_USAGE);
    const since = parseSince(rawSince, now);
    if (!since.ok) throw new CliError(`--since: ${since.message}`, EXIT_USAGE);
    const limit = wholeNumberFlag("limit", args.flags.limit ?? String(DEFAULT_TOP), MAX_TOP);
    const keys = new AuditKeys(context.config().audit.secretKey);
    const summary = await summarizeSecurity(
      context.db().$client,
      { since: since.at, until: now, top: limit },
      (row) => rowVouched(keys, row),
    );
    if (args.flags.json) {
      context.out(terminalJson(presentSummary(summary)));
      return 0;
    }
    context.out(
      `from ${new Date(summary.since).toISOString()} to ${new Date(summary.until).toISOString()}`,
    );
    if (summary.tampered > 0) {
      context.out(
        `${summary.tampered} events left out: they do not match their hash (changed in the database file; see audit:verify)`,
      );
    }
    for (const [category, title] of CATEGORY_TITLES) {
      const { total, addresses, principals } = summary.categories[category];
      context.out("");
      context.out(`${title}: ${total}`);
      for (const [what, rows] of [
        ["address", addresses],
        ["principal", principals],
      ] as const) {
        if (rows.length === 0) continue;
        context.out(`  by ${what}`);
        for (const row of rows) context.out(`    ${String(row.count).padStart(7)}  ${row.value}`);
      }
    }
    return 0;
  },
};

const CATEGORY_TITLES: readonly [SummaryCategory, string][] = [
  ["failedLogins", "failed logins"],
  ["rateLimitRefusals", "rate-limit refusals"],
  ["signatureFailures", "webhook signature failures"],
];
