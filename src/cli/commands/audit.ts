import { recentAuditEvents, verifyAuditChain } from "../../plugins/audit/log";
import { CliError, type Command, EXIT_USAGE } from "../command";

export const auditTail: Command = {
  name: "audit:tail",
  summary: "Print the most recent audit events, oldest first (--limit N, default 20; --json)",
  usage: "audit:tail [--limit N] [--json]",
  run(args, context) {
    const raw = args.flags.limit ?? "20";
    const limit = Number(raw);
    if (typeof raw !== "string" || !Number.isInteger(limit) || limit < 1 || limit > 10_000) {
      throw new CliError("--limit must be a whole number from 1 to 10000", EXIT_USAGE);
    }
    for (const row of recentAuditEvents(context.db().$client, limit)) {
      if (args.flags.json) {
        const { subjectSalt: _salt, subjectCommit: _commit, ...shown } = row;
        context.out(JSON.stringify(shown));
        continue;
      }
      context.out(
        [
          new Date(row.at).toISOString(),
          row.type,
          row.outcome,
          `actor=${row.actor ?? "-"}`,
          `ip=${row.ip ?? "-"}`,
          `route=${row.route ?? "-"}`,
          `request=${row.requestId ?? "-"}`,
          row.detail,
        ].join("  "),
      );
    }
    return 0;
  },
};

export const auditVerify: Command = {
  name: "audit:verify",
  summary: "Check the audit log's hash chain; exits 1 at the first edited or removed row",
  usage: "audit:verify",
  run(_args, context) {
    const result = verifyAuditChain(context.db().$client);
    if (!result.ok) {
      throw new CliError(
        `chain broken at row ${result.badId} (${result.reason}); ${result.checked} rows before it verified`,
      );
    }
    context.out(`audit chain intact: ${result.checked} rows verified`);
    return 0;
  },
};
