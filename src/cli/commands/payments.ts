import type { PaymentsFeature } from "../../modules/payments/feature";
import { isStripeId } from "../../modules/payments/ids";
import type { UndecidedRefund } from "../../modules/payments/undecided-refund";
import { CliError, type Command, type CommandContext, EXIT_USAGE } from "../command";

function paymentsOf(context: CommandContext): PaymentsFeature {
  const feature = context.services().features.find((f) => f.name === "payments");
  if (!feature) throw new CliError("the payments feature is not part of this build");
  return feature as PaymentsFeature;
}

function describe(entry: UndecidedRefund): string {
  const asked =
    entry.at > 0 ? new Date(entry.at).toISOString() : "before the release that times them";
  const outcome = entry.made
    ? `found made: ${entry.made.id} (${entry.made.status}) at ${new Date(entry.made.at).toISOString()}`
    : "not known";
  return `${entry.amount} from a refunded total of ${entry.before}, asked ${asked}: ${outcome}`;
}

export const paymentsUndecided: Command = {
  name: "payments:undecided",
  summary:
    "Show a payment's refunds whose outcome Stripe never told; --clear takes them off once checked in Stripe's Dashboard (audited)",
  usage: "payments:undecided ID [--clear]",
  run(args, context) {
    const id = args.positional[0];
    if (!isStripeId("pi", id)) {
      throw new CliError("a payment intent id (pi_…) is required", EXIT_USAGE);
    }
    const { service } = paymentsOf(context);
    if (args.flags.clear !== true) {
      const entries = service.undecidedOf(id);
      if (entries === null) throw new CliError(`the ledger holds no payment ${id}`);
      if (entries.length === 0) context.out(`${id}: no refund whose outcome is not known`);
      for (const entry of entries) context.out(`${id}  ${describe(entry)}`);
      return 0;
    }
    const cleared = service.clearUndecided(id);
    if (cleared.kind === "not_found") throw new CliError(`the ledger holds no payment ${id}`);
    if (cleared.kind === "in_progress") {
      throw new CliError(`a refund of ${id} is running now: try again once it has ended`);
    }
    for (const entry of cleared.entries) context.out(`cleared  ${id}  ${describe(entry)}`);
    context.out(
      `${id}: ${cleared.entries.length} undecided refund(s) cleared; a refund Stripe made among them is recorded by its charge.refunded event`,
    );
    return 0;
  },
};
