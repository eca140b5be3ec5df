import { count } from "drizzle-orm";
import { integer, sqliteTable } from "drizzle-orm/sqlite-core";
import type { Command } from "../command";

/** Drizzle's own record of applied migrations (its migrator creates it; not in db/schema). */
const drizzleMigrations = sqliteTable("__drizzle_migrations", { id: integer("id").primaryKey() });

export const dbMigrate: Command = {
  name: "db:migrate",
  summary: "Apply pending migrations to DATABASE_PATH (the server also does this at start)",
  usage: "db:migrate",
  run(_args, context) {
    const db = context.db();
    const applied = db.select({ n: count() }).from(drizzleMigrations).get()!.n;
    context.out(`database ${context.config().databasePath} is at migration ${applied}`);
    return 0;
  },
};
