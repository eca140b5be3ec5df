import type { Command } from "../command";
import { alertsConfig } from "./alerts";
import { auditTail, auditTop, auditVerify } from "./audit";
import { blocksAdd, blocksList, blocksRemove } from "./blocks";
import { configCheck } from "./config";
import { dbBackup, dbMigrate } from "./db";
import { dbVerify } from "./db-verify";
import { keysCreate, keysList, keysRevoke } from "./keys";
import { paymentsUndecided } from "./payments";
import { usageReset, usageShow } from "./usage";
import {
  sessionsEnd,
  usersCreate,
  usersErase,
  usersList,
  usersPurgeErased,
  usersRole,
} from "./users";

/** Every operator command, in the order the help screen lists them. */
export const COMMANDS: readonly Command[] = [
  usersCreate,
  usersRole,
  usersList,
  usersErase,
  usersPurgeErased,
  sessionsEnd,
  keysCreate,
  keysList,
  keysRevoke,
  blocksList,
  blocksAdd,
  blocksRemove,
  auditTail,
  auditVerify,
  auditTop,
  alertsConfig,
  usageShow,
  usageReset,
  paymentsUndecided,
  configCheck,
  dbMigrate,
  dbBackup,
  dbVerify,
];
