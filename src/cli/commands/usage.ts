import { isCalendarDay } from "../../calendar";
import { ChatBudget, parseOwnerRef, utcDay } from "../../modules/chat/budget";
import { CliError, type Command, EXIT_USAGE, type ParsedArgs, requireFlag } from "../command";
import { terminalJson } from "../terminal";

/** `--day YYYY-MM-DD` (a real UTC day), today when absent. */
function dayFlag(args: ParsedArgs): string {
  const raw = args.flags.day;
  if (raw === undefined) return utcDay(Date.now());
  if (typeof raw !== "string" || !isCalendarDay(raw)) {
    throw new CliError("--day must be a UTC day written YYYY-MM-DD", EXIT_USAGE);
  }
  return raw;
}

function principalFlag(raw: string) {
  const owner = parseOwnerRef(raw);
  if (!owner) {
    throw new CliError(
      "--principal must be user:<id> or key:<id> (a UUID, lower case), or whatsapp:<32 hex>",
      EXIT_USAGE,
    );
  }
  return owner;
}

export const usageShow: Command = {
  name: "usage:show",
  summary:
    "Chat token usage per principal for a UTC day (--day, default today; --principal; --json)",
  usage: "usage:show [--day YYYY-MM-DD] [--principal user:ID|key:ID|whatsapp:ID] [--json]",
  run(args, context) {
    const day = dayFlag(args);
    const principal = args.flags.principal;
    if (principal === true) throw new CliError("--principal needs a value", EXIT_USAGE);
    const owner = principal === undefined ? undefined : principalFlag(principal);
    const budget = new ChatBudget(context.db().$client, context.config().chat.dailyTokenBudget);
    const rows = budget.usage(day, owner);
    if (args.flags.json) {
      for (const row of rows) context.out(terminalJson({ ...row, budget: budget.dailyTokens }));
      return 0;
    }
    if (rows.length === 0) {
      context.out(`no chat usage on ${day}`);
      return 0;
    }
    const limit = budget.dailyTokens > 0 ? `of ${budget.dailyTokens}` : "(no budget)";
    const count = (value: number | null) => value ?? "(not a count)";
    for (const row of rows) {
      context.out(
        `${row.principal}  ${row.day}  used ${count(row.usedTokens)} ${limit}  reserved ${count(row.reservedTokens)}  requests ${count(row.requests)}`,
      );
    }
    return 0;
  },
};

export const usageReset: Command = {
  name: "usage:reset",
  summary:
    "Give a principal its day's chat token budget back, reservations included (audited as chat.usage.reset)",
  usage: "usage:reset --principal user:ID|key:ID|whatsapp:ID [--day YYYY-MM-DD]",
  run(args, context) {
    const owner = principalFlag(requireFlag(args, "principal"));
    const day = dayFlag(args);
    const services = context.services();
    const budget = new ChatBudget(context.db().$client, context.config().chat.dailyTokenBudget);
    const cleared = budget.reset(owner, day, services.clock.now());
    const principal = `${owner.kind}:${owner.id}`;
    if (cleared === null) throw new CliError(`no chat usage for ${principal} on ${day}`);
    services.audit.record({
      type: "chat.usage.reset",
      outcome: "success",
      actor: "cli",
      // (A detail key naming "token" would be dropped as a secret: the counts are `cleared` and
      // `reservedCleared`.)
      detail: { principal, day, cleared: cleared.used, reservedCleared: cleared.reserved },
    });
    context.out(
      `reset ${principal} on ${day}: ${cleared.used} used and ${cleared.reserved} reserved tokens cleared`,
    );
    return 0;
  },
};
