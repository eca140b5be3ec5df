import type { Command } from "../command";
import { auditTail, auditVerify } from "./audit";
import { blocksAdd, blocksList, blocksRemove } from "./blocks";
import { configCheck } from "./config";
import { dbBackup, dbMigrate } from "./db";
import { keysCreate, keysList, keysRevoke } from "./keys";
import { usageReset, usageShow } from "./usage";
import { usersCreate, usersRole } from "./users";

/** Every operator command, in the order the help screen lists them. */
export const COMMANDS: readonly Command[] = [
  usersCreate,
  usersRole,
  keysCreate,
  keysList,
  keysRevoke,
  blocksList,
  blocksAdd,
  blocksRemove,
  auditTail,
  auditVerify,
  usageShow,
  usageReset,
  configCheck,
  dbMigrate,
  dbBackup,
];
