import { MAX_BLOCK_MINUTES } from "../../modules/admin/model";
import { blockSubjectOf } from "../../plugins/client-ip/resolve";
import { blockReasonProblem, MAX_BLOCK_REASON_LENGTH } from "../../plugins/ip-block/service";
import {
  CliError,
  type Command,
  EXIT_USAGE,
  parseDuration,
  requireFlag,
  requireFlagWithin,
} from "../command";

export const blocksList: Command = {
  name: "blocks:list",
  summary: "List the IP blocks in force",
  usage: "blocks:list",
  run(_args, context) {
    const rows = context.services().ipBlocks.listActive();
    if (rows.length === 0) {
      context.out("no active blocks");
      return 0;
    }
    for (const row of rows) {
      context.out(
        `${row.id}  ${row.address}  until ${new Date(row.expiresAt).toISOString()}  ${row.source}${
          row.createdBy ? ` by ${row.createdBy}` : ""
        }  ${row.reason}`,
      );
    }
    return 0;
  },
};

export const blocksAdd: Command = {
  name: "blocks:add",
  summary:
    "Block an address (an IPv6 address blocks its /64; an IPv6 /48, as a::/48, all of it) for a time, with a reason",
  usage: "blocks:add --address A --ttl 60m --reason R",
  run(args, context) {
    const subject = blockSubjectOf(requireFlag(args, "address"));
    if (subject === null) {
      throw new CliError(
        "--address must be a canonical dotted-decimal IPv4 or an IPv6 address, or an IPv6 /48",
        EXIT_USAGE,
      );
    }
    const ttlMs = parseDuration("ttl", requireFlag(args, "ttl"), MAX_BLOCK_MINUTES / (24 * 60));
    const reason = requireFlagWithin(args, "reason", MAX_BLOCK_REASON_LENGTH, blockReasonProblem);
    const block = context.services().ipBlocks.block({
      address: subject,
      reason,
      ttlMs,
      source: "admin",
      createdBy: "cli",
    });
    context.out(
      `blocked ${block.address} until ${new Date(block.expiresAt).toISOString()} (block ${block.id})`,
    );
    return 0;
  },
};

export const blocksRemove: Command = {
  name: "blocks:remove",
  summary: "Lift a block by its id",
  usage: "blocks:remove ID",
  async run(args, context) {
    const id = args.positional[0];
    if (!id) throw new CliError("the block id is required", EXIT_USAGE);
    const { ipBlocks } = context.services();
    const block = ipBlocks.activeBlock(id);
    if (!block) throw new CliError(`no block in force has the id ${id}`);
    await ipBlocks.lift(block.address, "cli");
    context.out(`lifted the block on ${block.address}`);
    return 0;
  },
};
