import type { Command } from "../command";
import { configCheck } from "./config";
import { dbMigrate } from "./db";

/** Every operator command, in the order the help screen lists them. */
export const COMMANDS: readonly Command[] = [configCheck, dbMigrate];
