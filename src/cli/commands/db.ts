import type { Command } from "../command";

export const dbMigrate: Command = {
  name: "db:migrate",
  summary: "Apply pending migrations to DATABASE_PATH (the server also does this at start)",
  usage: "db:migrate",
  run(_args, context) {
    const db = context.db();
    const applied = db.$client.query("SELECT count(*) FROM __drizzle_migrations").values()[0]![0];
    context.out(`database ${context.config().databasePath} is at migration ${applied}`);
    return 0;
  },
};
