import type { Command } from "../command";
import { auditTail, auditVerify } from "./audit";
import { blocksList } from "./blocks";
import { configCheck } from "./config";
import { dbMigrate } from "./db";

/** Every operator command, in the order the help screen lists them. */
export const COMMANDS: readonly Command[] = [
  auditTail,
  auditVerify,
  blocksList,
  configCheck,
  dbMigrate,
];
