import type { Command } from "../command";

export const blocksList: Command = {
  name: "blocks:list",
  summary: "List the IP blocks in force",
  usage: "blocks:list",
  run(_args, context) {
    const rows = context
      .db()
      .$client.query(
        `SELECT id, address, reason, source, created_by AS createdBy, expires_at AS expiresAt
         FROM ip_blocks WHERE expires_at > ? AND lifted_at IS NULL ORDER BY created_at DESC`,
      )
      .all(Date.now()) as {
      id: number;
      address: string;
      reason: string;
      source: string;
      createdBy: string | null;
      expiresAt: number;
    }[];
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
